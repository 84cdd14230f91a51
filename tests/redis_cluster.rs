//! A real Redis Cluster for tests: 3 primaries + 3 replicas of Debian's
//! `redis-server` on free loopback ports, in a temporary directory,
//! append-only with `appendfsync always`, created with `redis-cli --cluster
//! create`. Start-up is bounded; the nodes are killed when the [`Cluster`]
//! is dropped — and, for the shared cluster that lives in a static (never
//! dropped), by a watchdog shell that shuts them down once this test
//! process is gone.
//!
//! `.ci/run` installs `redis-server` when it is missing; tests skip (with
//! a message saying so) only where it is not installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a cluster may take to form (≈ 2 s here when idle).
const START_BOUND: Duration = Duration::from_secs(60);

/// Nodes: 3 primaries, each with one replica.
const NODES: usize = 6;

/// A running cluster on loopback.
pub struct Cluster {
    /// Client ports of the six nodes (cluster bus: port + 10000).
    pub ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    watchdog: Child,
    /// Watchdogs of nodes added after the start ([`Cluster::add_shard`]).
    extra_watchdogs: Vec<Child>,
}

/// Whether `redis-server` and `redis-cli` can run here; prints why not.
pub fn installed() -> bool {
    let ok = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok("redis-server") && ok("redis-cli") {
        return true;
    }
    eprintln!(
        "SKIPPED: redis-server/redis-cli are not installed (`apt-get install -y redis-server`; \
         .ci/run installs them), so the Redis Cluster tests cannot run here"
    );
    false
}

/// Six ports whose cluster bus ports (+10000) are free too.
fn free_ports() -> Vec<u16> {
    free_ports_n(NODES, &[])
}

/// `n` ports, not in `taken`, whose cluster bus ports are free too.
///
/// All below Linux's ephemeral range (32768–60999 by default), bus ports
/// included: a node the tests kill and restart must get its ports back,
/// and while it is down any outgoing connection of the test binary (gRPC,
/// Redis, the other clusters' buses) or any listener bound to port 0 can
/// be given a port from that range. Seen once: a restart in
/// `decisions_land_on_their_own_cluster_…` ("node 43674 exited: exit
/// status: 1", 2026-12-06; the node's log was gone with the test's
/// directory, so a taken port is the likely cause, not a confirmed one).
fn free_ports_n(n: usize, taken: &[u16]) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    let mut seed = (std::process::id() as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64,
        );
    while ports.len() < n {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Nodes 10000–22767, their buses (+10000) 20000–32767.
        let port = 10_000 + ((seed >> 33) % 12_768) as u16;
        if ports.contains(&port) || taken.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

/// `redis-cli -p port args...`, bounded by `timeout`, its stdout.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .args(["10", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Starts a cluster, or `None` when redis-server is not installed.
    /// Panics if an installed redis-server does not form a cluster in
    /// time.
    pub fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        // Another engineer's (or test's) node may take a port between our
        // check and its bind: try again with other ports.
        for attempt in 0..3 {
            match Self::try_start() {
                Ok(c) => return Some(c),
                Err(e) if attempt < 2 => eprintln!("cluster start failed ({e}); retrying"),
                Err(e) => panic!("redis cluster did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// The cluster all tests that only need distinct users share (one
    /// start-up for the lot). Never dropped: the watchdog stops it.
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    /// Held by every test that changes or asserts the cluster-wide shared
    /// model (consent, the seed, a sharing user's deletion, the shared
    /// cap, part folds) for its whole length: the tests share one
    /// cluster, so they share its one shared model, and a replica folds
    /// (or prunes) every part that changed in its poll, other tests'
    /// parts included. Tests of distinct users alone need no lock.
    pub fn shared_model_lock() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.path().join(port.to_string())
    }

    fn spawn_node(dir: &Path, port: u16) -> std::io::Result<Child> {
        std::fs::create_dir_all(dir)?;
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1000"])
            // A replica may always take over: the failover tests kill
            // primaries shortly after start.
            .args(["--cluster-replica-validity-factor", "0"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            // Replicas sync at once instead of after 5 s.
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    fn try_start() -> Result<Self, String> {
        let ports = free_ports();
        let dir = tempfile::Builder::new()
            .prefix("redis-cluster-")
            .tempdir_in(tmp_root())
            .map_err(|e| e.to_string())?;
        let mut nodes = Vec::new();
        for &port in &ports {
            let child = Self::spawn_node(&dir.path().join(port.to_string()), port)
                .map_err(|e| format!("spawning redis-server: {e}"))?;
            nodes.push(Some(child));
        }
        let watchdog = Self::watchdog(&ports, dir.path())?;
        let mut cluster = Cluster {
            ports,
            nodes,
            dir,
            watchdog,
            extra_watchdogs: Vec::new(),
        };
        let deadline = Instant::now() + START_BOUND;
        for &port in &cluster.ports.clone() {
            cluster.wait_for(deadline, || {
                cli(port, &["ping"]).is_some_and(|s| s.contains("PONG"))
            })?;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("timeout")
            .args(["30", "redis-cli", "--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        cluster.wait_ready(deadline)?;
        Ok(cluster)
    }

    /// A shell that shuts the nodes down (by port, so restarted nodes too)
    /// and removes their directory once this process has exited.
    fn watchdog(ports: &[u16], dir: &Path) -> Result<Child, String> {
        let shutdown: String = ports
            .iter()
            .map(|p| format!("redis-cli -p {p} shutdown nosave >/dev/null 2>&1; "))
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {shutdown} rm -rf '{dir}'",
            pid = std::process::id(),
            dir = dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())
    }

    fn wait_for(&mut self, deadline: Instant, mut ok: impl FnMut() -> bool) -> Result<(), String> {
        while !ok() {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(child) = node
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!("node {} exited: {status}", self.ports[i]));
                }
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for the cluster".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Every running node sees `cluster_state:ok`, and every replica's
    /// link to its primary is up (else `WAIT 1` would fail at first).
    pub fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let running: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect();
        self.wait_for(deadline, || {
            running.iter().all(|&p| {
                let state = cli(p, &["cluster", "info"]).unwrap_or_default();
                let repl = cli(p, &["info", "replication"]).unwrap_or_default();
                state.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        })
    }

    /// Seed addresses for a client: every node.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.serving(key)
            .unwrap_or_else(|| panic!("no healthy primary serves {key}"))
    }

    /// The port of the healthy primary that serves `key`'s slot, if one
    /// does (during a failover, none does for a moment).
    /// A node that does not answer (a loaded machine: `cli` gives up
    /// after 10 s) counts as no answer, not a panic: the failover waits
    /// ask again, and say why if they give up.
    pub fn serving(&self, key: &str) -> Option<u16> {
        let any = self.running()[0];
        let slot: u16 = cli(any, &["cluster", "keyslot", key])?
            .trim()
            .parse()
            .expect("a slot number");
        let nodes = cli(any, &["cluster", "nodes"])?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("ip:port@bus");
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return Some(port);
                }
            }
        }
        None
    }

    /// The port of a running replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> Option<u16> {
        let nodes = cli(primary, &["cluster", "nodes"])?;
        let id = nodes
            .lines()
            .find(|l| l.contains("myself"))?
            .split_whitespace()
            .next()?
            .to_string();
        nodes.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 3 && f[2].contains("slave") && !f[2].contains("fail") && f[3] == id)
                .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())
                .flatten()
        })
    }

    /// [`Cluster::replica_of`], asked again for up to 10 s: right after
    /// start-up (or a restart) the primary's own view of the cluster may
    /// not list its replica yet, though the replica's link is up (gossip;
    /// seen once on a loaded machine).
    pub fn wait_replica_of(&self, primary: u16) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.replica_of(primary);
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A primary other than `not` that has a replica, waited for (up to
    /// 10 s): right after the start, or under CI load, a node's view of the
    /// cluster may not list its replica yet, or flag it `fail?` for a
    /// moment (a `find` over [`Cluster::replica_of`] once found none in a
    /// CI run of session 24).
    pub fn other_primary_with_replica(&self, not: u16) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .ports
                .iter()
                .copied()
                .find(|&p| p != not && self.replica_of(p).is_some());
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ports of nodes this harness has running.
    pub fn running(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// SIGKILL: the node stops at once, as in a crash.
    pub fn kill(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("our port");
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`stopped`) or SIGCONT: a node that hangs without closing
    /// its connections — its replication stream stalls, as a replica's
    /// does on a dead disk or a long GC-like pause.
    pub fn freeze(&self, port: u16, stopped: bool) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("our port");
        let pid = self.nodes[i].as_ref().expect("a running node").id();
        let signal = if stopped { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Kills the primary serving `key` with its replica frozen first
    /// (SIGSTOP), so no election comes until `freeze(replica, false)`: a
    /// slot range with no primary for as long as a test needs. Returns
    /// (primary, replica).
    pub fn kill_primary_with_its_replica_frozen(&mut self, key: &str) -> (u16, u16) {
        let primary = self.primary_of(key);
        let replica = self
            .wait_replica_of(primary)
            .expect("the primary has a replica");
        self.freeze(replica, true);
        self.kill(primary);
        (primary, replica)
    }

    /// Starts a killed node again on its directory (its nodes.conf and
    /// append-only file), as an operator would after a crash.
    pub fn restart(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("our port");
        assert!(self.nodes[i].is_none(), "node {port} is running");
        let child = Self::spawn_node(&self.node_dir(port), port).expect("restart redis-server");
        self.nodes[i] = Some(child);
    }
}

impl Cluster {
    /// A node's cluster id.
    pub fn node_id(&self, port: u16) -> String {
        cli(port, &["cluster", "myid"])
            .expect("cluster myid")
            .trim()
            .to_string()
    }

    /// Adds a shard: a new primary (no slots yet) and its replica, joined
    /// with CLUSTER MEET and REPLICATE; returns the primary's port once
    /// every node knows it and the replica's link is up. Bounded like the
    /// start.
    pub fn add_shard(&mut self) -> Result<u16, String> {
        let new = free_ports_n(2, &self.ports);
        let watchdog = Self::watchdog(&new, &self.dir.path().join("extra"))?;
        self.extra_watchdogs.push(watchdog);
        for &port in &new {
            let child = Self::spawn_node(&self.node_dir(port), port)
                .map_err(|e| format!("spawning redis-server: {e}"))?;
            self.ports.push(port);
            self.nodes.push(Some(child));
        }
        let deadline = Instant::now() + START_BOUND;
        for &port in &new {
            self.wait_for(deadline, || {
                cli(port, &["ping"]).is_some_and(|s| s.contains("PONG"))
            })?;
        }
        let existing = self.running()[0].to_string();
        let (primary, replica) = (new[0], new[1]);
        // CLUSTER MEET and REPLICATE, as `redis-cli --cluster add-node`
        // does, without its check that every node agrees on the
        // configuration first (which failed under load while gossip
        // caught up with the first node).
        for port in [primary, replica] {
            cli(port, &["cluster", "meet", "127.0.0.1", &existing])
                .filter(|r| r.contains("OK"))
                .ok_or_else(|| format!("cluster meet from {port}"))?;
        }
        let id = self.node_id(primary);
        let ports = self.running();
        self.wait_for(deadline, || {
            // Every node knows the new primary, and it is out of handshake.
            ports.iter().all(|&p| {
                cli(p, &["cluster", "nodes"]).is_some_and(|n| {
                    n.lines()
                        .any(|l| l.starts_with(id.as_str()) && !l.contains("handshake"))
                })
            })
        })?;
        cli(replica, &["cluster", "replicate", &id])
            .filter(|r| r.contains("OK"))
            .ok_or_else(|| format!("cluster replicate {id} on {replica}"))?;
        self.wait_ready(deadline)?;
        Ok(primary)
    }

    /// Moves `slot` from the primary on `from` to the one on `to` as
    /// `redis-cli --cluster reshard` does (IMPORTING/MIGRATING, MIGRATE,
    /// SETSLOT NODE), but one key at a time with `pause` between keys, so
    /// that clients meet the half-moved slot (ASK, TRYAGAIN).
    pub fn move_slot(&self, slot: u16, from: u16, to: u16, pause: Duration) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let out = cli(port, args).unwrap_or_else(|| panic!("{args:?} on {port}"));
            assert!(!out.starts_with("ERR"), "{args:?} on {port}: {out}");
            out
        };
        ok(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        ok(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys = ok(from, &["cluster", "getkeysinslot", &slot, "1"]);
            let Some(key) = keys.lines().next().filter(|k| !k.is_empty()) else {
                break;
            };
            let to_port = to.to_string();
            ok(
                from,
                &[
                    "migrate",
                    "127.0.0.1",
                    &to_port,
                    "",
                    "0",
                    "5000",
                    "keys",
                    key,
                ],
            );
            std::thread::sleep(pause);
        }
        for port in [to, from] {
            ok(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        for port in self.running() {
            if port != to && port != from {
                // Replicas refuse SETSLOT; the primaries learn it here, the
                // rest by gossip.
                let _ = cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
            }
        }
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        cli(self.running()[0], &["cluster", "keyslot", key])
            .expect("cluster keyslot")
            .trim()
            .parse()
            .expect("a slot number")
    }
}

impl Cluster {
    /// What each running node sees of the cluster, and the end of every
    /// node's log (killed ones too): the text a failed failover assertion
    /// prints, so that a rare CI failure says why no replica took over.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for &port in &self.running() {
            let nodes = cli(port, &["cluster", "nodes"]).unwrap_or_else(|| "(no answer)".into());
            out.push_str(&format!("--- cluster nodes as {port} sees them:\n{nodes}"));
        }
        for &port in &self.ports {
            let log =
                std::fs::read_to_string(self.node_dir(port).join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            out.push_str(&format!("--- last lines of {port}'s log:\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Cluster {
    /// Waits until the killed primary `killed`'s `replica` serves `key`
    /// (the cluster's own failover); returns whether the harness had to
    /// force it.
    ///
    /// Why the fallback: Redis's election can stall on a loaded machine
    /// (Valkey's own election tests see it: valkey-io/valkey#984). CI once
    /// failed the failover test with "no new primary within 30 s", an
    /// assertion that then could not tell a stalled election from a store
    /// whose PING still failed; the two are asserted apart now. chaff's
    /// part — acknowledged clicks survive, the client finds the new
    /// primary — is what these tests pin, not Redis's election: after
    /// `patience` with no new primary the harness does what an operator
    /// would, `CLUSTER FAILOVER TAKEOVER` on the replica, and says so with
    /// the report on the process's stderr itself (not the test's captured
    /// output, so a CI log shows it on a passing run too). Panics, with
    /// the report, if even that gives no new primary within 15 s.
    ///
    /// It blocks (std sleeps): call it from an async test through
    /// `tokio::task::block_in_place`, which needs the multi-thread runtime.
    pub fn await_failover(&self, key: &str, killed: u16, replica: u16, patience: Duration) -> bool {
        let promoted = |c: &Self| c.serving(key).is_some_and(|p| p != killed);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if promoted(self) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = self.report();
        // The report takes a while to gather: the election may have ended
        // meanwhile, and TAKEOVER sent to a primary would be refused.
        if promoted(self) {
            return false;
        }
        let answer = cli(replica, &["cluster", "failover", "takeover"]);
        {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "no replica of {killed} promoted within {patience:?}: forced CLUSTER FAILOVER \
                 TAKEOVER on {replica} (it answered {answer:?})\n{report}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !promoted(self) {
            assert!(
                Instant::now() < deadline,
                "no new primary for {key} within {patience:?}, nor 15 s after TAKEOVER \
                 on {replica} (it answered {answer:?})\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            let mut node = node;
            let _ = node.kill();
            let _ = node.wait();
        }
        for w in std::iter::once(&mut self.watchdog).chain(&mut self.extra_watchdogs) {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Temporary cluster directories go under the crate's `target/tmp` (the
/// shared machine's /tmp is small).
fn tmp_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    let _ = std::fs::create_dir_all(&root);
    root
}

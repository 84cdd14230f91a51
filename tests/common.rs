//! Starting real servers for tests, and messages written for the tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chaff::engine::{Engine, Settings};
use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub type Client = ChaffClient<Channel>;

/// An in-process server on 127.0.0.1 with its own data directory (sled),
/// or over a real Redis Cluster ([`On`]).
pub struct TestServer {
    pub addr: SocketAddr,
    /// The engine served (for [`TestServer::settle_delivered`]); weak, so
    /// that a storage reopen can drop it.
    engine: std::sync::Weak<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    /// Put before every user id by [`TestServer::u`]: empty on sled and on
    /// a cluster of the test's own; unique per server on the cluster the
    /// tests share, so that parallel tests never see each other's users.
    prefix: String,
    /// A cluster of this server's own ([`On::RedisAlone`]), killed when
    /// the server is dropped.
    _cluster: Option<crate::redis_cluster::Cluster>,
}

/// The store a server-level test runs on: each semantics test runs once
/// on sled and once on Redis ([`on_both_stores!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// A sled data directory in a tempdir (the default store).
    Sled,
    /// The Redis Cluster this test binary shares
    /// (`redis_cluster::Cluster::shared`), as `chaff serve --store
    /// redis://… --redis-replicas 1` runs on it; the server's users are
    /// prefixed ([`TestServer::u`]), so tests run in parallel without a
    /// flush. Only for tests that change no cluster-wide state.
    Redis,
    /// A cluster of the test's own (≈ 2 s to start): for tests of
    /// cluster-wide state — the shared model and the seed, the operator's
    /// lists, ListUsers over every user, a clock moved months ahead (whose
    /// background sweeps fold and trim every user in the cluster).
    RedisAlone,
}

impl On {
    /// A server with the default settings.
    pub async fn start(self) -> TestServer {
        self.start_with(Settings::default()).await
    }

    /// [`TestServer::start_pure`] on this store.
    pub async fn start_pure(self) -> TestServer {
        self.start_with(Settings {
            learn_delivered: false,
            ..Settings::default()
        })
        .await
    }

    /// [`TestServer::start_with`] on this store.
    pub async fn start_with(self, settings: Settings) -> TestServer {
        self.start_trusted(settings, |_| chaff::service::guard::Trust::open())
            .await
    }

    /// [`TestServer::start_trusted`] on this store.
    pub async fn start_trusted(
        self,
        settings: Settings,
        trust: impl FnOnce(&Path) -> Arc<chaff::service::guard::Trust>,
    ) -> TestServer {
        match self {
            On::Sled => TestServer::start_trusted(settings, trust).await,
            On::Redis | On::RedisAlone => {
                TestServer::start_redis(self == On::RedisAlone, settings, trust).await
            }
        }
    }
}

/// Each server-level test body once per store: `NAME::on_sled` and
/// `NAME::on_redis`. `Redis` runs the Redis variant on the shared cluster,
/// `RedisAlone` on a cluster of its own ([`On`] says which tests need
/// that). The Redis variant skips, saying so, only where redis-server is
/// not installed (`.ci/run` installs it).
macro_rules! on_both_stores {
    ($redis:ident, $name:ident, async |$on:ident| $body:block) => {
        on_both_stores!($redis, $name, tokio::test, async |$on| $body);
    };
    ($redis:ident, $name:ident, $test:meta, async |$on:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($on: $crate::common::On) $body
            #[$test]
            async fn on_sled() {
                run($crate::common::On::Sled).await
            }
            #[$test]
            async fn on_redis() {
                if $crate::redis_cluster::installed() {
                    run($crate::common::On::$redis).await
                }
            }
        }
    };
}
pub(crate) use on_both_stores;

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    /// A server whose Score changes no model (`learn_delivered` off): for
    /// tests that observe a model through Score while pinning what clicks
    /// do. Learning from delivered mail is the default and has its own
    /// tests (tests/one_sided.rs, src/engine/tests.rs).
    pub async fn start_pure() -> Self {
        Self::start_with(Settings {
            learn_delivered: false,
            ..Settings::default()
        })
        .await
    }

    pub async fn start_with(settings: Settings) -> Self {
        Self::start_trusted(settings, |_| chaff::service::guard::Trust::open()).await
    }

    /// A server whose data directory is `data` (which the caller owns).
    pub async fn start_in(data: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = chaff::service::guard::Trust::open();
        Self::start_at(dir, Some(data.to_path_buf()), Settings::default(), trust).await
    }

    /// [`TestServer::start_in`] with [`TestServer::start_pure`]'s settings.
    pub async fn start_pure_in(data: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = chaff::service::guard::Trust::open();
        let settings = Settings {
            learn_delivered: false,
            ..Settings::default()
        };
        Self::start_at(dir, Some(data.to_path_buf()), settings, trust).await
    }

    /// A server whose trust (keys, TLS, limits) `trust` builds from the
    /// data directory.
    pub async fn start_trusted(
        settings: Settings,
        trust: impl FnOnce(&Path) -> Arc<chaff::service::guard::Trust>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = trust(dir.path());
        Self::start_at(dir, None, settings, trust).await
    }

    async fn start_at(
        dir: tempfile::TempDir,
        data: Option<std::path::PathBuf>,
        settings: Settings,
        trust: Arc<chaff::service::guard::Trust>,
    ) -> Self {
        let path = data.unwrap_or_else(|| dir.path().to_path_buf());
        let store = open_store(&path).await;
        let engine = Arc::new(Engine::new(store, settings).unwrap());
        Self::serve(dir, engine, trust).await
    }

    /// Serves `engine` on a fresh loopback port.
    async fn serve(
        dir: tempfile::TempDir,
        engine: Arc<Engine>,
        trust: Arc<chaff::service::guard::Trust>,
    ) -> Self {
        let weak = Arc::downgrade(&engine);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            chaff::service::serve_with(engine, listener, stopped, Duration::from_secs(5), trust)
                .await
                .unwrap();
        });
        Self {
            addr,
            engine: weak,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            prefix: String::new(),
            _cluster: None,
        }
    }

    /// The engine over a Redis Cluster — the shared one, or one of its own
    /// when `alone` — built as `chaff serve --store redis://…
    /// --redis-replicas 1` builds it (off the runtime's workers: the Redis
    /// backend blocks), served by the same `serve_with` as on sled.
    async fn start_redis(
        alone: bool,
        settings: Settings,
        trust: impl FnOnce(&Path) -> Arc<chaff::service::guard::Trust>,
    ) -> Self {
        use crate::redis_cluster::Cluster;
        use chaff::store::redis_cluster::{RedisBackend, RedisConfig};
        static SERVERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (cluster, seeds, prefix) = if alone {
            let cluster = tokio::task::spawn_blocking(Cluster::start)
                .await
                .unwrap()
                .expect("redis-server is installed");
            let seeds = cluster.seeds();
            (Some(cluster), seeds, String::new())
        } else {
            let seeds = tokio::task::spawn_blocking(|| Cluster::shared().map(Cluster::seeds))
                .await
                .unwrap()
                .expect("redis-server is installed");
            let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (None, seeds, format!("srv{n}-"))
        };
        let engine = tokio::task::spawn_blocking(move || {
            let mut config = RedisConfig::new(seeds);
            config.replicas = 1;
            let backend = RedisBackend::connect(config).expect("connect to the test cluster");
            Engine::new(backend, settings).unwrap()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let trust = trust(dir.path());
        let mut server = Self::serve(dir, Arc::new(engine), trust).await;
        server.prefix = prefix;
        server._cluster = cluster;
        server
    }

    /// The id the test's user `name` has on this server: `name` itself on
    /// sled, unique to this server on the shared cluster. Leaked, so that
    /// it reads like the literal it replaces (a few bytes per test).
    pub fn u(&self, name: &str) -> &'static str {
        if self.prefix.is_empty() {
            return Box::leak(name.to_string().into_boxed_str());
        }
        Box::leak(format!("{}{name}", self.prefix).into_boxed_str())
    }

    /// Waits until the background learner of delivered mail has learned
    /// what Score queued (for servers whose keys cannot call GetStats; see
    /// [`settle_delivered`]).
    pub fn settle_delivered(&self) {
        if let Some(engine) = self.engine.upgrade() {
            assert!(engine.settle_delivered(Duration::from_secs(20)));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Opens the store in `path`, waiting while an earlier handle of it in
/// this process still holds sled's file lock. Dropping a `Store` does not
/// release the lock at once: each of sled's log writes runs on its own
/// thread pool with a clone of the database's file (`vendor/sled/src/
/// pagecache/iobuf.rs`, `threadpool::spawn`), and that clone is dropped
/// only after the write has woken the flush waiting for it. A test that
/// stops a server and starts another on the same directory at once could
/// find the lock held (measured: 2 reopens in 300 on this loaded machine)
/// and failed at start-up (the backup test's restart). A new `chaff serve`
/// process never sees this: the lock goes with the old process.
async fn open_store(path: &Path) -> Store {
    open_store_waiting(path, 32 << 20)
}

/// [`open_store`]'s wait, for a caller outside the runtime (a test that
/// opens a backup the engine just wrote and closed).
pub fn open_store_waiting(path: &Path, cache_bytes: u64) -> Store {
    for _ in 0..500 {
        match Store::open(path, cache_bytes) {
            Err(chaff::error::Error::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked for 5 s", path.display());
}

pub async fn connect(url: &str) -> Client {
    arm_watchdog();
    let mut last = None;
    for _ in 0..50 {
        match ChaffClient::connect(url.to_string()).await {
            Ok(c) => {
                return c
                    .max_encoding_message_size(usize::MAX)
                    .max_decoding_message_size(64 << 20);
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// The `chaff serve` binary as a child process, for tests that signal it.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
}

impl ServerProcess {
    pub fn start(data: &Path) -> Self {
        Self::start_args(data, &[])
    }

    /// [`ServerProcess::start`] with Score changing no model (see
    /// [`TestServer::start_pure`]).
    pub fn start_pure(data: &Path) -> Self {
        Self::start_args(data, &["--learn-delivered", "false"])
    }

    /// With extra `chaff serve` flags; the first stdout line gives the
    /// address (`http://`, even when the port speaks TLS).
    pub fn start_args(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--shutdown-grace",
                "300ms",
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chaff serve");
        let addr = listening_addr(&mut child);
        Self { addr, child }
    }

    /// SIGTERM, then wait: a clean exit is expected.
    pub fn terminate(mut self) {
        sigterm(&self.child);
        let exit = self.child.wait().unwrap();
        assert!(
            exit.success(),
            "chaff serve exited with {exit:?} after SIGTERM"
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Sends SIGTERM (a service manager's stop) to a `chaff serve` child.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A test that fails (panics) before it stops its server must not leave
/// the process running: kill it if it has not exited.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `chaff serve` at the default log level with its log in a pipe, for
/// tests that read what it logged.
pub struct LogServer {
    server: ServerProcess,
}

impl LogServer {
    /// With `--log-format json`.
    pub fn start(data: &Path) -> Self {
        Self::start_format(data, "json")
    }

    /// With `--log-format` `text` (what people read) or `json`.
    pub fn start_format(data: &Path, format: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
            .args(["--shutdown-grace", "300ms", "--data"])
            .arg(data)
            .env_remove("CHAFF_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chaff serve");
        let addr = listening_addr(&mut child);
        Self {
            server: ServerProcess { child, addr },
        }
    }

    pub fn url(&self) -> &str {
        &self.server.addr
    }

    /// SIGTERM, a clean exit, and everything the server logged.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let mut stderr = self.server.child.stderr.take().unwrap();
        sigterm(&self.server.child);
        let mut log = String::new();
        stderr.read_to_string(&mut log).unwrap();
        let exit = self.server.child.wait().unwrap();
        assert!(exit.success(), "chaff serve exited with {exit:?}: {log}");
        log
    }
}

pub const SPAM: &[u8] = b"From: \"Pharma Deals\" <promo@pills.example>\r\n\
Subject: Cheap pills, 90% discount today\r\n\
Message-ID: <s1@pills.example>\r\n\
Content-Type: text/plain\r\n\
\r\n\
Buy cheap pills now! Viagra and more at http://pills.example/buy. Limited offer, act now.\r\n";

pub const SPAM2: &[u8] = b"From: offers@winner.example\r\n\
Subject: You are a winner: claim your prize\r\n\
Message-ID: <s2@winner.example>\r\n\
\r\n\
Claim your cash prize now, limited offer, click http://winner.example/claim to act now.\r\n";

pub const HAM: &[u8] = b"From: Bob <bob@work.example>\r\n\
Subject: Notes from the quarterly planning meeting\r\n\
Message-ID: <h1@work.example>\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hi team, the notes from Tuesday's planning meeting are attached. Please review the agenda\r\n\
for next week and send comments on the budget section.\r\n";

pub const HAM2: &[u8] = b"From: Carol <carol@work.example>\r\n\
Subject: Re: budget review meeting\r\n\
Message-ID: <h2@work.example>\r\n\
\r\n\
Thanks Bob, I reviewed the budget section of the notes; comments inline before the meeting.\r\n";

/// Sets (or, with `None`, only reads) whether `user` shares their
/// training with the shared model.
pub async fn share(c: &mut Client, user: &str, on: Option<bool>) -> proto::UserInfo {
    c.update_user(proto::UpdateUserRequest {
        user_id: user.into(),
        share_training: on,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn train(
    c: &mut Client,
    user: &str,
    msg: &[u8],
    label: proto::Label,
    id: &str,
) -> proto::TrainResponse {
    c.train(proto::TrainRequest {
        user_id: user.into(),
        message: msg.to_vec(),
        label: label.into(),
        message_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn score(c: &mut Client, user: &str, msg: &[u8]) -> proto::ScoreResponse {
    c.score(proto::ScoreRequest {
        user_id: user.into(),
        message: msg.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn user(c: &mut Client, user: &str) -> proto::UserInfo {
    c.get_user(proto::GetUserRequest {
        user_id: user.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Everything observable about a user: its info and the scores of the test
/// messages. Two equal snapshots mean the user is in the same state.
pub async fn observe(c: &mut Client, u: &str) -> (proto::UserInfo, Vec<(u64, i32)>) {
    let mut scores = Vec::new();
    for m in [SPAM, SPAM2, HAM, HAM2] {
        let s = score(c, u, m).await;
        scores.push((s.spam_probability.to_bits(), s.verdict));
        // What Score queued for the background learner is part of the
        // state the next observation sees (as when it learned inline).
        settle_delivered(c).await;
    }
    (user(c, u).await, scores)
}

/// Waits (at most 20 s, polling GetStats) until the server's background
/// learner of delivered mail has nothing queued: a test that reads counts
/// or scores after Score calls this first, as Score only queues that
/// learning. Panics if it does not settle.
pub async fn settle_delivered(c: &mut Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = c
            .get_stats(proto::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.delivered_queued == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered-mail learner still has {} queued after 20 s",
            s.delivered_queued
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `http://` address a `chaff serve` just spawned with piped stdout
/// listens on: the first line it prints (`chaff listening on ADDR`).
/// A server that neither prints it nor exits within [`START_LIMIT`] is hung:
/// its threads' stacks are printed, it is killed, and the test fails.
fn listening_addr(child: &mut Child) -> String {
    arm_watchdog();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        let _ = tx.send((read, line));
    });
    let Ok((read, line)) = rx.recv_timeout(START_LIMIT) else {
        print_stacks(child.id());
        let _ = child.kill();
        panic!(
            "chaff serve (pid {}) printed no address and did not exit within {START_LIMIT:?}: hung at start-up (its stacks are above)",
            child.id()
        );
    };
    read.unwrap();
    let addr = line
        .trim()
        .strip_prefix("chaff listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    format!("http://{addr}")
}

/// How long a spawned `chaff serve` may take to print its address: far
/// beyond a start on a busy machine (under a second here), short of CI's
/// patience.
pub const START_LIMIT: Duration = Duration::from_secs(120);

/// Arms, once per test binary, a watchdog for hangs no single wait can see
/// (a call a server never answers): past `CHAFF_TEST_WATCHDOG_S` seconds
/// (default 1,200; the whole suite takes 2–5 minutes here) it prints the
/// stacks of every child process and of this one, kills the children and
/// aborts, so a
/// hang fails the run with the evidence instead of running into CI's time
/// limit in silence. Armed by [`connect`] and every `chaff serve` spawn.
pub fn arm_watchdog() {
    static ARMED: std::sync::Once = std::sync::Once::new();
    ARMED.call_once(|| {
        let limit = std::env::var("CHAFF_TEST_WATCHDOG_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1200);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(limit));
            let me = std::process::id();
            say(&format!(
                "watchdog: the test binary has run {limit} s; stacks of it and its children follow"
            ));
            for pid in children_of(me) {
                print_stacks(pid);
            }
            print_stacks(me);
            // An abort runs no destructor: the children go first (those
            // the tests started while the stacks were read, too).
            for pid in children_of(me) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            say(&format!(
                "watchdog: aborting after {limit} s (CHAFF_TEST_WATCHDOG_S)"
            ));
            std::process::abort();
        });
    });
}

/// Every thread's stack of process `pid`, to stderr: gdb's backtraces
/// where gdb is installed, else each thread's name and kernel wait channel.
pub fn print_stacks(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    say(&format!("=== stacks of pid {pid}: {cmdline}"));
    // gdb writes straight to this process's stdout and stderr: through a
    // pipe read by this process, which gdb stops while it reads the
    // stacks, more than a pipe's worth of backtrace would never end.
    let gdb = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status();
    if gdb.is_ok_and(|s| s.success()) {
        return;
    }
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        say(&format!(
            "thread {:?} {} waiting in {}",
            task.file_name(),
            read("comm").trim(),
            read("wchan")
        ));
    }
}

/// A line to this process's stderr as it is: `eprintln!` in a test's
/// threads goes to the harness's capture, which an abort throws away.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The pids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the comm may hold spaces, so after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// The gRPC health status of `service` at `url` ("" asks for the server as
/// a whole, as Kubernetes and `grpc_health_probe` do).
pub async fn health(url: &str, service: &str) -> i32 {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

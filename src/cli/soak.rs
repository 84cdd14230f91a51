//! `chaff soak`: the crash soak. Starts the real `chaff serve` (this same
//! binary) on a data directory, drives concurrent clicks, settings and list
//! changes for many users, SIGKILLs the server at a random moment, and
//! checks the directory against the soak's own record of every reply.
//!
//! # What is checked, and against what
//!
//! The soak keeps an independent record: for each user, the label and
//! shared flag of each of its messages, its settings (consent included) and
//! its block list, changed only by acknowledged replies. A call whose reply
//! never came (the kill) is *in doubt*: the soak accepts either its old or
//! its new state for exactly that key, and nothing else. To make that exact,
//! the soak never has two calls in flight on one key (one message, one list
//! entry), and a settings change excludes the user's clicks (consent decides
//! whether a click is shared). Once a user has a call in doubt, no more
//! calls go to it until the next check.
//!
//! After each kill, before the server runs again:
//!
//! 1. **Ledger, settings, lists**: a copy of the killed directory is opened
//!    with the library's store (the original is left for the server's own
//!    recovery), and every key of every user must equal the record, or for
//!    in-doubt keys one of the two allowed states (which then becomes the
//!    record).
//! 2. **Replay**: the copy's ledger entries the record accepts are written
//!    into a fresh directory as single clicks (no snapshots, no journal of
//!    the original), which a second `chaff serve` opens.
//! 3. **Server**: the original restarts on the killed directory. Its
//!    GetUser counts must equal the record; its token counts, GetShared and
//!    the Score of probe messages (each user's, bit for bit: probability,
//!    log-odds, tokens, verdict, action, shares) must equal the replay's.
//!
//! A click's learn weight (full, or light when the model was already
//! confidently right) depends on the model at the moment of the click,
//! which concurrent clicks make unpredictable for a client; so the replay
//! takes the weight from the ledger, and the check is that the models
//! (snapshots plus journal, and the shared contributions) are exactly the
//! sum of the ledger, while the ledger is exactly the record.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use tonic::Code;
use tonic::transport::Channel;

use chaff::policy::ListKind;
use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::service::status::{label_to_wire, settings_to_wire};
use chaff::store::{Op, Store};
use chaff::types::{Label, MessageId, Owner, UserId};

/// The prefix of `chaff::fault::SLOW_CHECKPOINT` (a module only test
/// builds have, so the name is repeated here).
const SLOW_CHECKPOINT: &str = "fault-injection-slow-checkpoint";

type Client = ChaffClient<Channel>;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Kill-and-check cycles.
    #[arg(long, default_value_t = 20)]
    cycles: u32,
    /// Each cycle's load runs a random time between --min-run and --max-run
    /// before the SIGKILL.
    #[arg(long, default_value = "500ms", value_parser = super::parse_duration)]
    min_run: Duration,
    /// See --min-run.
    #[arg(long, default_value = "4s", value_parser = super::parse_duration)]
    max_run: Duration,
    /// Calls kept in flight (at least 32 to press group commit and the
    /// per-user locks).
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// Users `soak-0` … `soak-<N-1>`.
    #[arg(long, default_value_t = 32)]
    users: usize,
    /// The first N users get half of all calls, so many callers hammer each
    /// of them at once (and their models checkpoint often).
    #[arg(long, default_value_t = 4)]
    hot_users: usize,
    /// Messages per user (ids `m0` …); clicks pick among them, so the same
    /// message is learned, relearned the other way and forgotten often.
    #[arg(long, default_value_t = 48)]
    messages: usize,
    /// Words per message of the hot users (others have 40). Larger messages
    /// grow the journal faster, so the hot users' models are folded into
    /// snapshots (checkpoints) every few dozen clicks; 1500 does that.
    #[arg(long, default_value_t = 40)]
    hot_words: usize,
    /// Name the hot users `fault-injection-slow-checkpoint-N`: a server
    /// built with the `fault-injection` feature (test builds; `cargo build
    /// --features fault-injection`) then pauses inside each of their
    /// checkpoints and logs its steps, so kills land inside checkpoints and
    /// the soak counts those that did; every other cycle the soak waits for
    /// a checkpoint to start and kills inside it. With a build without the
    /// feature the names change nothing and the count stays 0.
    #[arg(long)]
    slow_checkpoints: bool,
    /// Seed of the random choices (ops, timings); printed, so a failing run
    /// can be repeated. Default: random.
    #[arg(long)]
    seed: Option<u64>,
    /// Working directory (created; `data/`, the checked copy, the replay and
    /// `server.log` go there). Default: a temporary directory, removed at
    /// the end unless the soak finds a discrepancy.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object per cycle and a summary object.
    #[arg(long)]
    json: bool,
}

/// What the record says of one message: its label and whether the click
/// went into the shared model (under the consent still current).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Learned {
    label: Label,
    shared: bool,
}

/// A call whose reply never came, and the state its key has if it was
/// applied (the old state is the record's).
#[derive(Clone, Debug)]
enum InDoubt {
    Message { n: usize, post: Option<Learned> },
    Settings { post: proto::UserSettings },
    Block { n: usize, post: bool },
}

struct UserRec {
    settings: proto::UserSettings,
    messages: Vec<Option<Learned>>,
    blocks: Vec<bool>,
    busy_messages: Vec<bool>,
    busy_blocks: Vec<bool>,
    /// A call of this user is in doubt: no more calls until the check.
    frozen: bool,
    in_doubt: Vec<InDoubt>,
    /// The snapshot's last sequence number at the previous check, to count
    /// the checkpoints the engine took in between.
    snapshot_seq: u64,
}

struct User {
    id: String,
    /// Clicks and list changes take it shared, settings changes exclusive.
    order: tokio::sync::RwLock<()>,
    rec: Mutex<UserRec>,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    in_doubt: AtomicU64,
    trains: AtomicU64,
    forgets: AtomicU64,
    settings: AtomicU64,
    lists: AtomicU64,
    scores: AtomicU64,
}

struct Soak {
    users: Vec<User>,
    /// Words per message, per user.
    words: Vec<usize>,
    hot: usize,
    killed: AtomicBool,
    counters: Counters,
    discrepancies: Mutex<Vec<String>>,
}

impl Soak {
    fn wrong(&self, what: String) {
        self.discrepancies.lock().push(what);
    }
}

/// splitmix64: small, seedable, good enough to pick ops and timings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "va", "ze", "bru", "cha", "dex", "fon", "gil",
    "hup", "jor", "kev", "lum", "mox", "nip", "orb", "pax", "quil",
];

/// Message `n` of user `user`: spammy words for even `n`, hammy for odd,
/// plus a few of the user's own words, so the models and the shared model
/// have evidence both ways and probe scores are far from 0.5.
fn message(user: usize, n: usize, count: usize) -> Vec<u8> {
    let mut rng = Rng(((user as u64) << 32) ^ n as u64 ^ 0x5EED);
    let lean = if n.is_multiple_of(2) { 0 } else { 12 };
    let mut words = Vec::new();
    for _ in 0..count.max(3) {
        let a = lean + rng.below(12);
        let b = rng.below(SYLLABLES.len());
        let c = rng.below(SYLLABLES.len());
        words.push(format!("{}{}{}", SYLLABLES[a], SYLLABLES[b], SYLLABLES[c]));
    }
    for i in 0..4 {
        words.push(format!("u{user}w{}", (n + i) % 9));
    }
    format!(
        "From: sender{}@soak{}.example\r\nTo: soak-{user}@mail.example\r\nSubject: {} {} {}\r\nMessage-ID: <m{n}.{user}@soak.example>\r\n\r\n{}\r\n",
        n % 5,
        n % 3,
        words[0],
        words[1],
        words[2],
        words.join(" ")
    )
    .into_bytes()
}

/// A message no user trained: probes the models (and the shared one).
fn probe(user: usize, k: usize, count: usize) -> Vec<u8> {
    message(user, 10_000 + k, count)
}

fn block_entry(n: usize) -> String {
    format!("blk{n}.soak.example")
}

fn default_settings() -> proto::UserSettings {
    settings_to_wire(&chaff::policy::UserSettings::default())
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.cycles == 0 || args.users == 0 || args.messages == 0 || args.concurrency == 0 {
        bail!("--cycles, --users, --messages and --concurrency must be at least 1");
    }
    if args.min_run > args.max_run {
        bail!("--min-run must not be longer than --max-run");
    }
    let seed = args.seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random seed");
        u64::from_le_bytes(b)
    });
    let (dir, temp) = match &args.dir {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("chaff-soak-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let data = dir.join("data");
    if data.exists() {
        bail!(
            "{} exists; the soak starts from an empty data directory (remove it or pick another --dir)",
            data.display()
        );
    }
    let exe = std::env::current_exe().context("finding the chaff binary")?;
    if !args.json {
        println!(
            "soak: seed {seed}, {} cycles, {} users ({} hot), {} messages each, {} in flight, dir {}",
            args.cycles,
            args.users,
            args.hot_users.min(args.users),
            args.messages,
            args.concurrency,
            dir.display()
        );
    }
    let hot = args.hot_users.min(args.users);
    let soak = Arc::new(Soak {
        words: (0..args.users)
            .map(|u| if u < hot { args.hot_words } else { 40 })
            .collect(),
        users: (0..args.users)
            .map(|u| User {
                id: if u < hot && args.slow_checkpoints {
                    format!("{SLOW_CHECKPOINT}-{u}")
                } else {
                    format!("soak-{u}")
                },
                order: tokio::sync::RwLock::new(()),
                rec: Mutex::new(UserRec {
                    settings: default_settings(),
                    messages: vec![None; args.messages],
                    blocks: vec![false; 8],
                    busy_messages: vec![false; args.messages],
                    busy_blocks: vec![false; 8],
                    frozen: false,
                    in_doubt: Vec::new(),
                    snapshot_seq: 0,
                }),
            })
            .collect(),
        hot,
        killed: AtomicBool::new(false),
        counters: Counters::default(),
        discrepancies: Mutex::new(Vec::new()),
    });
    let mut rng = Rng(seed);
    let mut server = Server::start(&exe, &data, &dir.join("server.log")).await?;
    let mut totals = Totals::default();
    for cycle in 1..=args.cycles {
        soak.killed.store(false, Ordering::SeqCst);
        let before = soak.counters.acked.load(Ordering::Relaxed);
        let doubt_before = soak.counters.in_doubt.load(Ordering::Relaxed);
        let run_for = args.min_run + (args.max_run - args.min_run).mul_f64(rng.unit());
        let channels = server.channels(4).await?;
        let mut workers = Vec::new();
        for w in 0..args.concurrency {
            let soak = soak.clone();
            let client = channels[w % channels.len()].clone();
            let wseed = rng.next();
            workers.push(tokio::spawn(async move {
                worker(soak, client, Rng(wseed)).await;
            }));
        }
        tokio::time::sleep(run_for).await;
        if args.slow_checkpoints && cycle.is_multiple_of(2) {
            // Every other cycle, aim: wait (up to 5 s) for a checkpoint to
            // start, then kill at a random point of its two pauses.
            let log = dir.join("server.log");
            if wait_for_checkpoint(&log, Duration::from_secs(5)).await {
                let pause = Duration::from_millis(30);
                tokio::time::sleep((pause * 2).mul_f64(rng.unit())).await;
            }
        }
        // Flag first: an error seen while the flag is down came from a
        // live server, and is a discrepancy.
        soak.killed.store(true, Ordering::SeqCst);
        server.kill()?;
        for w in workers {
            w.await.context("a soak worker panicked")?;
        }
        let landed = killed_in_checkpoint(&dir.join("server.log"));
        let acked = soak.counters.acked.load(Ordering::Relaxed) - before;
        let doubt = soak.counters.in_doubt.load(Ordering::Relaxed) - doubt_before;

        let check = check(&soak, &dir, &data).context("checking the killed data directory")?;
        server = Server::start(&exe, &data, &dir.join("server.log")).await?;
        let replay = Server::start(&exe, &dir.join("replay"), &dir.join("replay.log")).await?;
        let scored = compare(&soak, &server, &replay, cycle).await?;
        drop(replay);
        let _ = fs::remove_dir_all(dir.join("replay"));

        totals.acked += acked;
        totals.in_doubt += doubt;
        totals.applied += check.applied;
        totals.keys += check.keys;
        totals.scores += scored;
        totals.checkpoints += check.checkpoints;
        match landed {
            Some("starting") => totals.killed_before_write += 1,
            Some(_) => totals.killed_after_write += 1,
            None => {}
        }
        let wrong = soak.discrepancies.lock().len();
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "cycle": cycle, "ran_ms": run_for.as_millis() as u64, "acked": acked,
                    "in_doubt": doubt, "in_doubt_applied": check.applied,
                    "keys_checked": check.keys, "scores_compared": scored,
                    "checkpoints": check.checkpoints, "killed_in_checkpoint": landed,
                    "discrepancies": wrong,
                })
            );
        } else {
            println!(
                "cycle {cycle}/{}: killed after {:.2} s; {acked} calls acknowledged, {doubt} in doubt ({} applied); \
                 {} keys, {scored} scores checked; {} model snapshots renewed{}; {wrong} discrepancies so far",
                args.cycles,
                run_for.as_secs_f64(),
                check.applied,
                check.keys,
                check.checkpoints,
                landed.map_or(String::new(), |step| format!(
                    " (killed inside one: {})",
                    if step == "starting" {
                        "before its write"
                    } else {
                        "after its write"
                    }
                )),
            );
        }
        if wrong > 0 {
            break;
        }
    }
    drop(server);
    let c = &soak.counters;
    let wrong = soak.discrepancies.lock().clone();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "seed": seed, "cycles": args.cycles, "acked": totals.acked,
                "trains": c.trains.load(Ordering::Relaxed), "forgets": c.forgets.load(Ordering::Relaxed),
                "settings": c.settings.load(Ordering::Relaxed), "lists": c.lists.load(Ordering::Relaxed),
                "scores": c.scores.load(Ordering::Relaxed),
                "in_doubt": totals.in_doubt, "in_doubt_applied": totals.applied,
                "keys_checked": totals.keys, "scores_compared": totals.scores,
                "checkpoints": totals.checkpoints,
                "killed_in_checkpoint_before_write": totals.killed_before_write,
                "killed_in_checkpoint_after_write": totals.killed_after_write,
                "discrepancies": wrong.len(),
            })
        );
    } else {
        println!(
            "soak: {} acknowledged calls checked ({} Train, {} Forget, {} UpdateUser, {} list, {} Score), \
             {} in doubt ({} applied), {} keys and {} scores compared over the cycles, \
             {} model snapshots renewed under load (users × cycles), {} kills inside a checkpoint ({} before its write, {} after); {} discrepancies",
            totals.acked,
            c.trains.load(Ordering::Relaxed),
            c.forgets.load(Ordering::Relaxed),
            c.settings.load(Ordering::Relaxed),
            c.lists.load(Ordering::Relaxed),
            c.scores.load(Ordering::Relaxed),
            totals.in_doubt,
            totals.applied,
            totals.keys,
            totals.scores,
            totals.checkpoints,
            totals.killed_before_write + totals.killed_after_write,
            totals.killed_before_write,
            totals.killed_after_write,
            wrong.len()
        );
    }
    if !wrong.is_empty() {
        for w in wrong.iter().take(20) {
            eprintln!("discrepancy: {w}");
        }
        if let Some(t) = temp {
            // Keep the evidence.
            let kept = t.keep();
            eprintln!("soak: directory kept for inspection: {}", kept.display());
        }
        bail!(
            "{} discrepancies (seed {seed}; rerun with --seed {seed})",
            wrong.len()
        );
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    acked: u64,
    in_doubt: u64,
    applied: u64,
    keys: u64,
    scores: u64,
    checkpoints: u64,
    killed_before_write: u64,
    killed_after_write: u64,
}

/// Polls the server's log until a checkpoint step is logged after the
/// call, or `limit` passes; whether one was.
async fn wait_for_checkpoint(log: &Path, limit: Duration) -> bool {
    let count = |log: &Path| {
        fs::read_to_string(log)
            .map(|t| t.matches("fault injection: checkpoint starting").count())
            .unwrap_or(0)
    };
    let before = count(log);
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if count(log) > before {
            return true;
        }
    }
    false
}

/// Whether the kill landed inside a slow checkpoint (`--slow-checkpoints`),
/// from the steps the killed server logged: `Some("starting")` if a
/// checkpoint had not written its snapshot yet, `Some("written")` if it had
/// but had not returned.
fn killed_in_checkpoint(log: &Path) -> Option<&'static str> {
    let text = fs::read_to_string(log).ok()?;
    let mut open: BTreeMap<String, &'static str> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.split("fault injection: checkpoint ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let step = words.next().unwrap_or("");
        let who: String = words
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        match step {
            "starting" => open.insert(who, "starting"),
            "written" => open.insert(who, "written"),
            _ => open.remove(&who),
        };
    }
    open.values().copied().max_by_key(|s| *s == "written")
}

/// A `chaff serve` child process; SIGKILLed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(exe: &Path, data: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--stats-interval", "0s", "--cache-mb", "32"])
            // The record holds acknowledged calls; what Score learns from
            // delivered mail is never acknowledged (write-behind), so the
            // soak does not model it yet and turns it off.
            .args(["--learn-delivered", "false", "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting chaff serve")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            // Keep reading so the server never writes into a closed pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            read.map(|_| line)
        })
        .await??;
        let Some(addr) = line.trim().strip_prefix("chaff listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "chaff serve on {} did not start (first line {line:?}); see {}",
                data.display(),
                log.display()
            );
        };
        Ok(Self {
            url: format!("http://{addr}"),
            child,
        })
    }

    /// `n` connections, so the calls do not all funnel through one
    /// HTTP/2 connection task.
    async fn channels(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.client().await?);
        }
        Ok(out)
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let channel = tonic::transport::Endpoint::from_shared(self.url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        Ok(ChaffClient::new(channel))
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL chaff serve")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn call<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("soak: no reply in 20 s")),
    }
}

enum Kind {
    Train,
    Forget,
    Settings,
    Block,
    Score,
}

async fn worker(soak: Arc<Soak>, mut client: Client, mut rng: Rng) {
    while !soak.killed.load(Ordering::SeqCst) {
        let u = if soak.hot > 0 && rng.below(2) == 0 {
            rng.below(soak.hot)
        } else {
            rng.below(soak.users.len())
        };
        let kind = match rng.below(100) {
            0..=54 => Kind::Train,
            55..=71 => Kind::Forget,
            72..=79 => Kind::Settings,
            80..=91 => Kind::Block,
            _ => Kind::Score,
        };
        match kind {
            Kind::Train | Kind::Forget => message_op(&soak, &mut client, &mut rng, u, kind).await,
            Kind::Settings => settings_op(&soak, &mut client, &mut rng, u).await,
            Kind::Block => block_op(&soak, &mut client, &mut rng, u).await,
            Kind::Score => {
                let user = &soak.users[u];
                if user.rec.lock().frozen {
                    continue;
                }
                let r = call(client.score(proto::ScoreRequest {
                    user_id: user.id.clone(),
                    message: probe(u, rng.below(3), soak.words[u]),
                    ..Default::default()
                }))
                .await;
                match r {
                    Ok(_) => {
                        soak.counters.scores.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => unexpected(&soak, &user.id, "Score", &s),
                }
            }
        }
    }
}

/// An error reply: expected only once the server is being killed.
fn unexpected(soak: &Soak, user: &str, what: &str, s: &tonic::Status) {
    if !soak.killed.load(Ordering::SeqCst) {
        soak.wrong(format!(
            "{what} for {user} failed while the server was up: {:?} {}",
            s.code(),
            s.message()
        ));
    }
}

/// Picks a free key among `busy` and marks it, or None if a few tries find
/// none (other callers have them).
fn pick(busy: &mut [bool], rng: &mut Rng) -> Option<usize> {
    for _ in 0..8 {
        let n = rng.below(busy.len());
        if !busy[n] {
            busy[n] = true;
            return Some(n);
        }
    }
    None
}

async fn message_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize, kind: Kind) {
    let user = &soak.users[u];
    let _order = user.order.read().await;
    let (n, prior, consent) = {
        let mut rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        let Some(n) = pick(&mut rec.busy_messages, rng) else {
            return;
        };
        (n, rec.messages[n], rec.settings.share_training)
    };
    let msg_id = format!("m{n}");
    let (result, post) = match kind {
        Kind::Train => {
            // Mostly the label the message leans to, sometimes the other:
            // relearn flips.
            let spammy = n.is_multiple_of(2);
            let spam = if rng.below(5) == 0 { !spammy } else { spammy };
            let label = if spam { Label::Spam } else { Label::Ham };
            let post = match prior {
                Some(p) if p.label == label => Some(p),
                _ => Some(Learned {
                    label,
                    shared: consent,
                }),
            };
            let r = call(client.train(proto::TrainRequest {
                user_id: user.id.clone(),
                message: message(u, n, soak.words[u]),
                label: label_to_wire(label).into(),
                message_id: msg_id.clone(),
            }))
            .await
            .map(|reply| {
                let want = match prior {
                    None => proto::TrainOutcome::Learned,
                    Some(p) if p.label == label => proto::TrainOutcome::AlreadyLearned,
                    Some(_) => proto::TrainOutcome::Relearned,
                };
                if reply.outcome != want as i32 || reply.message_id != msg_id {
                    soak.wrong(format!(
                        "Train {} {msg_id} as {label:?}: outcome {} id {:?}, the record wants {want:?}",
                        user.id, reply.outcome, reply.message_id
                    ));
                }
                soak.counters.trains.fetch_add(1, Ordering::Relaxed);
            });
            (r, post)
        }
        _ => {
            let r = call(client.forget(proto::ForgetRequest {
                user_id: user.id.clone(),
                message_id: msg_id.clone(),
            }))
            .await;
            let r = match (r, prior) {
                (Ok(reply), Some(p)) => {
                    if reply.forgotten_label != label_to_wire(p.label) as i32 {
                        soak.wrong(format!(
                            "Forget {} {msg_id}: label {}, the record has {:?}",
                            user.id, reply.forgotten_label, p.label
                        ));
                    }
                    Ok(())
                }
                (Ok(_), None) => {
                    soak.wrong(format!(
                        "Forget {} {msg_id} succeeded; the record has it not learned",
                        user.id
                    ));
                    Ok(())
                }
                (Err(s), None) if s.code() == Code::NotFound => Ok(()),
                (Err(s), _) => Err(s),
            };
            if r.is_ok() {
                soak.counters.forgets.fetch_add(1, Ordering::Relaxed);
            }
            (r, None)
        }
    };
    let mut rec = user.rec.lock();
    rec.busy_messages[n] = false;
    match result {
        Ok(()) => {
            rec.messages[n] = post;
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "a click", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Message { n, post });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn settings_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize) {
    let user = &soak.users[u];
    let _order = user.order.write().await;
    let prior = {
        let rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        rec.settings
    };
    let mut post = prior;
    let mut req = proto::UpdateUserRequest {
        user_id: user.id.clone(),
        ..Default::default()
    };
    if rng.below(2) == 0 {
        post.share_training = !prior.share_training;
        req.share_training = Some(post.share_training);
    } else {
        // Thresholds in thousandths: 0.5 <= spam <= reject <= 1.
        let spam = 500 + rng.below(450);
        let reject = spam + rng.below(1001 - spam);
        post.spam_threshold = spam as f64 / 1000.0;
        post.reject_threshold = reject as f64 / 1000.0;
        post.handling_mode = 1 + rng.below(3) as i32;
        req.spam_threshold = Some(post.spam_threshold);
        req.reject_threshold = Some(post.reject_threshold);
        req.handling_mode = post.handling_mode;
    }
    let r = call(client.update_user(req)).await;
    let mut rec = user.rec.lock();
    match r {
        Ok(info) => {
            if info.settings != Some(post) {
                soak.wrong(format!(
                    "UpdateUser {}: settings {:?}, the record wants {post:?}",
                    user.id, info.settings
                ));
            }
            apply_settings(&mut rec, post);
            soak.counters.settings.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "UpdateUser", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Settings { post });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// New settings in the record; turning consent off takes every click of
/// the user out of the shared model.
fn apply_settings(rec: &mut UserRec, post: proto::UserSettings) {
    if rec.settings.share_training && !post.share_training {
        for l in rec.messages.iter_mut().flatten() {
            l.shared = false;
        }
    }
    rec.settings = post;
}

async fn block_op(soak: &Soak, client: &mut Client, rng: &mut Rng, u: usize) {
    let user = &soak.users[u];
    let _order = user.order.read().await;
    let (n, prior) = {
        let mut rec = user.rec.lock();
        if rec.frozen {
            return;
        }
        let Some(n) = pick(&mut rec.busy_blocks, rng) else {
            return;
        };
        (n, rec.blocks[n])
    };
    let add = rng.below(2) == 0;
    let req = proto::ListEntryRequest {
        user_id: user.id.clone(),
        kind: proto::ListKind::Block.into(),
        entry: block_entry(n),
        ..Default::default()
    };
    let r = if add {
        call(client.add_list_entry(req)).await
    } else {
        call(client.remove_list_entry(req)).await
    };
    let mut rec = user.rec.lock();
    rec.busy_blocks[n] = false;
    match r {
        Ok(reply) => {
            if reply.changed != (add != prior) {
                soak.wrong(format!(
                    "{} block entry {} for {}: changed = {}, the record had it {}",
                    if add { "adding" } else { "removing" },
                    block_entry(n),
                    user.id,
                    reply.changed,
                    if prior { "present" } else { "absent" }
                ));
            }
            rec.blocks[n] = add;
            soak.counters.lists.fetch_add(1, Ordering::Relaxed);
            soak.counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        Err(s) => {
            unexpected(soak, &user.id, "a list change", &s);
            rec.frozen = true;
            rec.in_doubt.push(InDoubt::Block { n, post: add });
            soak.counters.in_doubt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Checked {
    keys: u64,
    applied: u64,
    checkpoints: u64,
}

/// Step 1 and 2 of the module docs: reads a copy of the killed directory,
/// settles the calls in doubt, checks every key against the record, and
/// writes the replay directory.
fn check(soak: &Soak, dir: &Path, data: &Path) -> anyhow::Result<Checked> {
    let copy = dir.join("checked");
    let replay_dir = dir.join("replay");
    let _ = fs::remove_dir_all(&copy);
    let _ = fs::remove_dir_all(&replay_dir);
    copy_dir(data, &copy)?;
    let store = Store::open(&copy, 32 << 20)
        .with_context(|| format!("opening the killed directory's copy {}", copy.display()))?;
    let replay = Store::open(&replay_dir, 32 << 20)?;
    let mut out = Checked {
        keys: 0,
        applied: 0,
        checkpoints: 0,
    };
    for user in &soak.users {
        let uid = UserId::new(user.id.clone())?;
        let mut rec = user.rec.lock();
        let in_doubt = std::mem::take(&mut rec.in_doubt);
        rec.frozen = false;

        // Settings and consent.
        let (settings, consent) = store.settings(&uid)?.unwrap_or_default();
        let seen = settings_to_wire(&settings);
        out.keys += 1;
        let doubt_settings = in_doubt.iter().find_map(|d| match d {
            InDoubt::Settings { post } => Some(*post),
            _ => None,
        });
        if seen != rec.settings {
            match doubt_settings {
                Some(post) if post == seen => {
                    apply_settings(&mut rec, post);
                    out.applied += 1;
                }
                _ => soak.wrong(format!(
                    "{}: settings {seen:?} on disk, the record has {:?}{}",
                    user.id,
                    rec.settings,
                    doubt_settings.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
                )),
            }
        }
        if settings.share_training != (consent != 0) {
            soak.wrong(format!(
                "{}: share_training {} but consent id {consent}",
                user.id, settings.share_training
            ));
        }

        // Ledger.
        for n in 0..rec.messages.len() {
            out.keys += 1;
            let mid = MessageId::new(format!("m{n}"))?;
            let entry = store.ledger_get(&uid, &mid)?;
            let seen = entry.as_ref().map(|e| Learned {
                label: e.label,
                shared: e.shared != 0 && e.shared == consent,
            });
            let doubt = in_doubt.iter().find_map(|d| match d {
                InDoubt::Message { n: m, post } if *m == n => Some(*post),
                _ => None,
            });
            if seen != rec.messages[n] {
                match doubt {
                    Some(post) if post == seen => {
                        rec.messages[n] = post;
                        out.applied += 1;
                    }
                    _ => soak.wrong(format!(
                        "{} m{n}: ledger has {seen:?}, the record {:?}{}",
                        user.id,
                        rec.messages[n],
                        doubt.map_or(String::new(), |p| format!(" (or {p:?} in doubt)"))
                    )),
                }
            } else if doubt.is_some_and(|post| post == seen && post != rec.messages[n]) {
                out.applied += 1;
            }
            // Replay what the record accepts, weight and tokens from the
            // ledger (the client cannot know the weight), as one click.
            if let (Some(mut e), Some(l)) = (entry, rec.messages[n]) {
                let learn = Op::Learn(e.label, e.weight, e.tokens.clone());
                let shared_ops = if l.shared {
                    vec![learn.clone()]
                } else {
                    vec![]
                };
                if !l.shared {
                    e.shared = 0;
                }
                replay.record_click(
                    &Owner::User(uid.clone()),
                    &mid,
                    Some(&e),
                    &[learn],
                    &shared_ops,
                )?;
            }
        }
        replay.put_settings(&uid, &settings, consent, false)?;

        // Block list.
        let entries: Vec<String> = store
            .list_entries(&Owner::User(uid.clone()), ListKind::Block)?
            .iter()
            .map(ToString::to_string)
            .collect();
        for n in 0..rec.blocks.len() {
            out.keys += 1;
            let seen = entries.contains(&block_entry(n));
            let doubt = in_doubt.iter().find_map(|d| match d {
                InDoubt::Block { n: m, post } if *m == n => Some(*post),
                _ => None,
            });
            if seen != rec.blocks[n] {
                match doubt {
                    Some(post) if post == seen => {
                        rec.blocks[n] = post;
                        out.applied += 1;
                    }
                    _ => soak.wrong(format!(
                        "{}: block entry {} is {} on disk, the record has it {}",
                        user.id,
                        block_entry(n),
                        if seen { "present" } else { "absent" },
                        if rec.blocks[n] { "present" } else { "absent" },
                    )),
                }
            }
        }
        if entries.len() != rec.blocks.iter().filter(|b| **b).count() {
            soak.wrong(format!("{}: unexpected block entries {entries:?}", user.id));
        }

        // Checkpoints the engine took since the last check.
        let snap = store.snapshot_seq(&uid)?;
        if snap != rec.snapshot_seq {
            out.checkpoints += 1;
            rec.snapshot_seq = snap;
        }
    }
    replay.flush()?;
    drop(replay);
    drop(store);
    fs::remove_dir_all(&copy)?;
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Step 3 of the module docs: the restarted server against the record and
/// the replay. Returns how many scores were compared.
async fn compare(soak: &Soak, server: &Server, replay: &Server, cycle: u32) -> anyhow::Result<u64> {
    let mut a = server.client().await?;
    let mut b = replay.client().await?;
    let mut scored = 0;
    let mut shared_spam = 0;
    let mut shared_ham = 0;
    for (u, user) in soak.users.iter().enumerate() {
        let (spam, ham) = {
            let rec = user.rec.lock();
            let count = |label| {
                rec.messages
                    .iter()
                    .flatten()
                    .filter(|l| l.label == label)
                    .count() as u64
            };
            let shared = |label| {
                rec.messages
                    .iter()
                    .flatten()
                    .filter(|l| l.shared && l.label == label)
                    .count() as u64
            };
            shared_spam += shared(Label::Spam);
            shared_ham += shared(Label::Ham);
            (count(Label::Spam), count(Label::Ham))
        };
        let get = |id: &str| proto::GetUserRequest {
            user_id: id.to_string(),
        };
        let ia = call(a.get_user(get(&user.id))).await?;
        let ib = call(b.get_user(get(&user.id))).await?;
        if (ia.spam_learned, ia.ham_learned) != (spam, ham) {
            soak.wrong(format!(
                "cycle {cycle}: {} counts {}/{} (spam/ham) after restart, the record has {spam}/{ham}",
                user.id, ia.spam_learned, ia.ham_learned
            ));
        }
        if ia != ib {
            soak.wrong(format!(
                "cycle {cycle}: {} GetUser {ia:?} after restart, the replay {ib:?}",
                user.id
            ));
        }
        for k in 0..3 {
            let req = proto::ScoreRequest {
                user_id: user.id.clone(),
                message: if k < 2 {
                    message(u, k, soak.words[u])
                } else {
                    probe(u, 0, soak.words[u])
                },
                message_id: format!("probe{k}"),
                ..Default::default()
            };
            let sa = call(a.score(req.clone())).await?;
            let sb = call(b.score(req)).await?;
            scored += 1;
            if score_key(&sa) != score_key(&sb) {
                soak.wrong(format!(
                    "cycle {cycle}: {} probe {k} scores {:?} after restart, the replay {:?}",
                    user.id,
                    score_key(&sa),
                    score_key(&sb)
                ));
            }
        }
    }
    let ga = call(a.get_shared(proto::GetSharedRequest {})).await?;
    let gb = call(b.get_shared(proto::GetSharedRequest {})).await?;
    if (ga.spam_learned, ga.ham_learned) != (shared_spam, shared_ham) {
        soak.wrong(format!(
            "cycle {cycle}: shared model has {}/{} (spam/ham) messages, the record {shared_spam}/{shared_ham}",
            ga.spam_learned, ga.ham_learned
        ));
    }
    if ga != gb {
        soak.wrong(format!(
            "cycle {cycle}: GetShared {ga:?} after restart, the replay {gb:?}"
        ));
    }
    Ok(scored)
}

/// What must be identical between the restarted server's and the replay's
/// Score: the probability and log-odds bit for bit, and what follows.
fn score_key(s: &proto::ScoreResponse) -> impl PartialEq + std::fmt::Debug {
    let e = s.explanation.clone().unwrap_or_default();
    (
        s.spam_probability.to_bits(),
        s.spam_log_odds.to_bits(),
        s.tokens_known,
        s.tokens_used,
        s.verdict,
        s.action,
        e.user_share.to_bits(),
        e.shared_share.to_bits(),
        (e.spam_learned, e.ham_learned),
        BTreeMap::from_iter(
            e.spam_features
                .iter()
                .chain(&e.ham_features)
                .map(|f| (f.name.clone(), f.spam_probability.to_bits())),
        ),
    )
}

//! `chaff soak`: the crash soak. Starts the real `chaff serve` (this same
//! binary) on a data directory, drives concurrent clicks, settings and list
//! changes and DeleteUsers for many users, and the operator's seeds, seed
//! clears and operator-wide list changes, SIGKILLs the server at a random
//! moment, and checks the directory against the soak's own record of every
//! reply.
//!
//! # What is checked, and against what
//!
//! The soak keeps an independent record: for each user, the label and
//! shared flag of each of its messages, its settings (consent included),
//! its block list and whether a DeleteUser was its last write; the label
//! of each seed message; each operator-wide list entry — changed only by
//! acknowledged replies. A call whose reply never came (the kill) is *in
//! doubt*: the soak accepts either its old or its new state for exactly
//! that key (for a DeleteUser the whole user, for a ClearSeed the whole
//! seed), and nothing else. To make that exact, the soak never has two
//! calls in flight on one key (one message, one list entry, one seed
//! message), a settings change excludes the user's clicks (consent decides
//! whether a click is shared), a DeleteUser every other call of its user
//! and a ClearSeed every seed call. Once a user has a call in doubt, no
//! more calls go to it until the next check (likewise the seed, and the
//! operator lists).
//!
//! What Score learns from delivered mail is never acknowledged: the
//! workload scores probes no call clicks, and the check accepts each
//! implicit ledger entry it finds (once found, it must stay) and replays
//! it, so the models must still be exactly the sum of the ledger.
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
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use tonic::Code;
use tonic::transport::Channel;

use chaff::policy::ListKind;
use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::service::status::{label_to_wire, list_kind_to_wire, settings_to_wire};
use chaff::store::{Op, Store};
use chaff::types::{Label, MessageId, Owner, UserId};

use check::{check, compare};
use workload::worker;

mod check;
mod legacy;
mod workload;

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
    /// Whether the server learns delivered mail as ham (`chaff serve
    /// --learn-delivered`; on by default there as here). Score's learning
    /// is never acknowledged: the check accepts each implicit ledger entry
    /// of a probe it finds (or its absence) and replays what it found, so
    /// the models must still be exactly the sum of the ledger.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    learn_delivered: bool,
    /// Start from a data directory written in store format 5 (an old
    /// format, by the old encoders kept for tests): every user
    /// has half its messages learned, every other user's model snapshotted,
    /// all in format 5. Each user's records are rewritten in the current format as
    /// they are clicked and checkpointed, so the kills land inside that
    /// in-place upgrade; the check reports how many format-5 records are
    /// left after each kill. Scores are compared with the header's own
    /// prior and the thin-ham cap off (`--header-strength 0.1
    /// --thin-ham-exponent 0`): the upgrade counts the old ham as
    /// delivered, the replay as clicked. Needs a build with the
    /// `fault-injection` feature (test builds have it).
    #[arg(long, value_name = "5")]
    from_format: Option<u32>,
    /// End each cycle with a clean stop instead of a bare SIGKILL: SIGTERM
    /// (in-flight calls finish, models are snapshotted, the store closes,
    /// and sled's close relocates pages and punches unused log segments out
    /// of its file), then SIGKILL at a random point of that shutdown if the
    /// server still runs. The first cycle lets the shutdown finish and
    /// times it; later cycles kill inside the fastest clean stop timed so
    /// far (one that outruns the kill stops cleanly, and is timed). Checks
    /// as after a kill.
    #[arg(long)]
    stop_first: bool,
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
    Message {
        n: usize,
        post: Option<Learned>,
    },
    Settings {
        post: proto::UserSettings,
    },
    Block {
        n: usize,
        post: bool,
    },
    /// DeleteUser: the whole user is gone, or nothing of it is.
    Delete,
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
    /// A DeleteUser was the user's last write: the store must hold no
    /// record of the user but logged decisions (model, journal, ledger,
    /// dictionary, settings, lists, shared part).
    empty: bool,
    /// Ids of what Score learned from delivered mail (implicit ledger
    /// entries) that a check found: never acknowledged, so accepted when
    /// found, and from then on they must stay (until a DeleteUser).
    implicit: std::collections::BTreeSet<String>,
}

impl UserRec {
    fn new(messages: usize) -> Self {
        UserRec {
            settings: default_settings(),
            messages: vec![None; messages],
            blocks: vec![false; BLOCK_ENTRIES],
            busy_messages: vec![false; messages],
            busy_blocks: vec![false; BLOCK_ENTRIES],
            frozen: false,
            in_doubt: Vec::new(),
            snapshot_seq: 0,
            empty: false,
            implicit: Default::default(),
        }
    }

    /// An acknowledged (or found) DeleteUser: nothing of the user is left.
    fn delete(&mut self) {
        let keep_seq = self.snapshot_seq;
        *self = UserRec::new(self.messages.len());
        self.snapshot_seq = keep_seq;
        self.empty = true;
    }
}

/// Block-list entries per user (`blk0.soak.example` …).
const BLOCK_ENTRIES: usize = 8;

/// The operator's seed messages (`s0` …), each seeded, relearned the other
/// way, or cleared with the whole seed.
const SEED_MESSAGES: usize = 24;

/// Entries per operator-wide list kind (allow, block, trusted).
const OPERATOR_ENTRIES: usize = 8;
const OPERATOR_KINDS: [ListKind; 3] = [ListKind::Allow, ListKind::Block, ListKind::Trusted];

/// A call on the seed whose reply never came.
#[derive(Clone, Copy, Debug)]
enum SeedDoubt {
    Message { n: usize, post: Label },
    Clear,
}

/// What the record says of the operator's seed and lists. Seeds take
/// `order` shared, ClearSeed exclusive (it changes every seed message).
struct Operator {
    order: tokio::sync::RwLock<()>,
    rec: Mutex<OperatorRec>,
}

struct OperatorRec {
    seed: Vec<Option<Label>>,
    busy_seed: Vec<bool>,
    /// `OPERATOR_KINDS.len() × OPERATOR_ENTRIES`, kind-major.
    lists: Vec<bool>,
    busy_lists: Vec<bool>,
    /// A seed call is in doubt: no more seed calls until the check.
    seed_frozen: bool,
    seed_doubt: Vec<SeedDoubt>,
    /// An operator list change is in doubt (entry, new presence): no more
    /// list changes until the check.
    lists_frozen: bool,
    list_doubt: Vec<(usize, bool)>,
}

/// Operator list entry `i` (kind-major): its kind and text.
fn operator_entry(i: usize) -> (ListKind, String) {
    let kind = OPERATOR_KINDS[i / OPERATOR_ENTRIES];
    (
        kind,
        format!("op{}{}.soak.example", kind.as_str(), i % OPERATOR_ENTRIES),
    )
}

/// Seed message `n`: the operator's corpus, words like the users'.
fn seed_message(n: usize) -> Vec<u8> {
    message(SEED_AUTHOR, n, 40)
}

/// The author number of seed messages in [`message`] (no user has it).
const SEED_AUTHOR: usize = 999_999;

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
    deletes: AtomicU64,
    seeds: AtomicU64,
    clears: AtomicU64,
    operator_lists: AtomicU64,
}

struct Soak {
    users: Vec<User>,
    operator: Operator,
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

/// Probe messages per user that workload Scores pick among: each may be
/// learned once from its delivery (`--learn-delivered`).
const PROBES: usize = 12;

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
                rec: Mutex::new(UserRec::new(args.messages)),
            })
            .collect(),
        operator: Operator {
            order: tokio::sync::RwLock::new(()),
            rec: Mutex::new(OperatorRec {
                seed: vec![None; SEED_MESSAGES],
                busy_seed: vec![false; SEED_MESSAGES],
                lists: vec![false; OPERATOR_KINDS.len() * OPERATOR_ENTRIES],
                busy_lists: vec![false; OPERATOR_KINDS.len() * OPERATOR_ENTRIES],
                seed_frozen: false,
                seed_doubt: Vec::new(),
                lists_frozen: false,
                list_doubt: Vec::new(),
            }),
        },
        hot,
        killed: AtomicBool::new(false),
        counters: Counters::default(),
        discrepancies: Mutex::new(Vec::new()),
    });
    let mut rng = Rng(seed);
    let legacy_at_start = match args.from_format {
        Some(format) => Some(legacy::write(&soak, &data, format)?),
        None => None,
    };
    if let (Some(n), false) = (legacy_at_start, args.json) {
        println!(
            "soak: the data directory starts in format {}: {n} user records (ledger, journal, snapshots) in it",
            args.from_format.unwrap_or(0)
        );
    }
    let learn = args.learn_delivered;
    // An upgraded directory counts the ham learned before store format 8
    // as delivered, where the replay (rebuilt from the ledger in today's
    // format) counts those clicks as clicked. Three rules read that split:
    // the header's own prior, the thin-ham cap on never-seen tokens and
    // the ham side's pooled prior (session 29). With the header's `s` the
    // body's and the other two off, the split changes
    // no score (`classify::blend`'s test
    // `the_split_between_clicked_and_delivered_ham_moves_no_score_once_the_rules_that_read_it_are_off`),
    // so the scores still say whether the counts survived (as in the
    // format-6 upgrade's kill test, tests/soak.rs); every user scores over
    // the seeded shared model, whose blend reads the split as the user's
    // own score does. With the cap on, a user whose ham was all learned
    // before the upgrade scored apart from the replay once in session 26
    // (docs/FAULTS.md).
    let scoring: &[&str] = if args.from_format.is_some() {
        &[
            "--header-strength",
            "0.1",
            "--thin-ham-exponent",
            "0",
            "--thin-ham-pool",
            "0",
        ]
    } else {
        &[]
    };
    let mut server = Server::start(&exe, &data, &dir.join("server.log"), learn, scoring).await?;
    let mut totals = Totals::default();
    // `--stop-first`: how long the fastest clean shutdown so far took.
    let mut shutdown_took: Option<Duration> = None;
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
        if args.stop_first {
            let after = shutdown_took.map(|took| took.mul_f64(rng.unit()));
            let started = Instant::now();
            if server.stop_then_kill(after).await? {
                totals.killed_in_shutdown += 1;
            } else {
                totals.stopped_cleanly += 1;
                // The fastest clean stop so far: a kill timed against a
                // slower first stop (a cold start's snapshots) would miss
                // every later, quicker shutdown.
                let took = started.elapsed();
                shutdown_took = Some(shutdown_took.map_or(took, |t| t.min(took)));
            }
        } else {
            server.kill()?;
        }
        for w in workers {
            w.await.context("a soak worker panicked")?;
        }
        let landed = killed_in_checkpoint(&dir.join("server.log"));
        let in_delete = killed_in_delete(&dir.join("server.log"));
        let acked = soak.counters.acked.load(Ordering::Relaxed) - before;
        let doubt = soak.counters.in_doubt.load(Ordering::Relaxed) - doubt_before;

        let check = check(&soak, &dir, &data, args.from_format.is_some())
            .context("checking the killed data directory")?;
        // Compared with Score's learning off, so probes change no model;
        // then the load goes on with it as asked.
        let restarted =
            Server::start(&exe, &data, &dir.join("compare.log"), false, scoring).await?;
        let replay = Server::start(
            &exe,
            &dir.join("replay"),
            &dir.join("replay.log"),
            false,
            scoring,
        )
        .await?;
        let scored = compare(&soak, &restarted, &replay, cycle).await?;
        drop(replay);
        let _ = fs::remove_dir_all(dir.join("replay"));
        server = if learn {
            drop(restarted);
            Server::start(&exe, &data, &dir.join("server.log"), true, scoring).await?
        } else {
            restarted
        };

        totals.acked += acked;
        totals.in_doubt += doubt;
        totals.applied += check.applied;
        totals.keys += check.keys;
        totals.scores += scored;
        totals.checkpoints += check.checkpoints;
        totals.implicit += check.implicit;
        totals.killed_in_delete += u64::from(in_delete);
        if check.legacy_records.is_some() {
            totals.legacy_records = check.legacy_records;
            if check.legacy_records.is_some_and(|n| n > 0) {
                totals.kills_with_legacy_records += 1;
            }
        }
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
                    "killed_in_delete": in_delete,
                    "implicit_found": check.implicit, "legacy_records": check.legacy_records,
                    "discrepancies": wrong,
                })
            );
        } else {
            println!(
                "cycle {cycle}/{}: killed after {:.2} s; {acked} calls acknowledged, {doubt} in doubt ({} applied); \
                 {} keys, {scored} scores checked; {} implicit entries found; {} model snapshots renewed{}{}{}; \
                 {wrong} discrepancies so far",
                args.cycles,
                run_for.as_secs_f64(),
                check.applied,
                check.keys,
                check.implicit,
                check.checkpoints,
                landed.map_or(String::new(), |step| format!(
                    " (killed inside one: {})",
                    if step == "starting" {
                        "before its write"
                    } else {
                        "after its write"
                    }
                )),
                if in_delete {
                    "; killed inside a DeleteUser"
                } else {
                    ""
                },
                check.legacy_records.map_or(String::new(), |n| format!(
                    "; {n} format-{} records left",
                    args.from_format.unwrap_or(0)
                )),
            );
        }
        if wrong > 0 {
            break;
        }
    }
    drop(server);
    if args.stop_first && !args.json {
        println!(
            "soak: {} cycles ended by SIGTERM and a SIGKILL inside the shutdown, {} by a clean stop",
            totals.killed_in_shutdown, totals.stopped_cleanly
        );
    }
    let c = &soak.counters;
    let wrong = soak.discrepancies.lock().clone();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "seed": seed, "cycles": args.cycles, "acked": totals.acked,
                "trains": c.trains.load(Ordering::Relaxed), "forgets": c.forgets.load(Ordering::Relaxed),
                "settings": c.settings.load(Ordering::Relaxed), "lists": c.lists.load(Ordering::Relaxed),
                "deletes": c.deletes.load(Ordering::Relaxed), "seeds": c.seeds.load(Ordering::Relaxed),
                "seed_clears": c.clears.load(Ordering::Relaxed),
                "operator_lists": c.operator_lists.load(Ordering::Relaxed),
                "scores": c.scores.load(Ordering::Relaxed), "implicit_found": totals.implicit,
                "legacy_records_at_start": legacy_at_start,
                "legacy_records_left": totals.legacy_records,
                "kills_with_legacy_records": totals.kills_with_legacy_records,
                "in_doubt": totals.in_doubt, "in_doubt_applied": totals.applied,
                "keys_checked": totals.keys, "scores_compared": totals.scores,
                "checkpoints": totals.checkpoints,
                "killed_in_checkpoint_before_write": totals.killed_before_write,
                "killed_in_checkpoint_after_write": totals.killed_after_write,
                "killed_in_delete": totals.killed_in_delete,
                "killed_in_shutdown": totals.killed_in_shutdown,
                "stopped_cleanly": totals.stopped_cleanly,
                "discrepancies": wrong.len(),
            })
        );
    } else {
        println!(
            "soak: {} acknowledged calls checked ({} Train, {} Forget, {} UpdateUser, {} list, {} DeleteUser, \
             {} SeedShared, {} ClearSeed, {} operator list, {} Score), {} implicit entries found, \
             {} in doubt ({} applied), {} keys and {} scores compared over the cycles, \
             {} model snapshots renewed under load (users × cycles), {} kills inside a checkpoint ({} before its write, {} after), {} inside a DeleteUser; {} discrepancies",
            totals.acked,
            c.trains.load(Ordering::Relaxed),
            c.forgets.load(Ordering::Relaxed),
            c.settings.load(Ordering::Relaxed),
            c.lists.load(Ordering::Relaxed),
            c.deletes.load(Ordering::Relaxed),
            c.seeds.load(Ordering::Relaxed),
            c.clears.load(Ordering::Relaxed),
            c.operator_lists.load(Ordering::Relaxed),
            c.scores.load(Ordering::Relaxed),
            totals.implicit,
            totals.in_doubt,
            totals.applied,
            totals.keys,
            totals.scores,
            totals.checkpoints,
            totals.killed_before_write + totals.killed_after_write,
            totals.killed_before_write,
            totals.killed_after_write,
            totals.killed_in_delete,
            wrong.len()
        );
        if let (Some(start), Some(left)) = (legacy_at_start, totals.legacy_records) {
            println!(
                "soak: format-{} records: {start} at the start, {left} left at the last check; {} of {} kills found some left",
                args.from_format.unwrap_or(0),
                totals.kills_with_legacy_records,
                args.cycles
            );
        }
    }
    if !wrong.is_empty() {
        for w in wrong.iter().take(20) {
            eprintln!("discrepancy: {w}");
        }
        // All of them, one a line, beside the evidence.
        let list = dir.join("discrepancies.txt");
        if fs::write(&list, wrong.join("\n") + "\n").is_ok() && wrong.len() > 20 {
            eprintln!("soak: all {} in {}", wrong.len(), list.display());
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
    implicit: u64,
    killed_in_delete: u64,
    /// `--from-format`: old-format records left at the last check, and
    /// how many kills found some left (landed inside the upgrade).
    legacy_records: Option<u64>,
    kills_with_legacy_records: u64,
    /// `--stop-first`: cycles whose SIGKILL found the server still
    /// shutting down, and those that ended by themselves.
    killed_in_shutdown: u64,
    stopped_cleanly: u64,
}

/// Polls the server's log until a checkpoint (or a slow user's deletion)
/// starts after the call, or `limit` passes; whether one did.
async fn wait_for_checkpoint(log: &Path, limit: Duration) -> bool {
    let count = |log: &Path| {
        fs::read_to_string(log)
            .map(|t| {
                t.matches("fault injection: checkpoint starting").count()
                    + t.matches("fault injection: delete started").count()
            })
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

/// Whether the kill landed inside a slow user's DeleteUser
/// (`--slow-checkpoints`): between its first atomic batch and its end.
fn killed_in_delete(log: &Path) -> bool {
    let Ok(text) = fs::read_to_string(log) else {
        return false;
    };
    let mut open = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.split("fault injection: delete ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let step = words.next().unwrap_or("");
        let who = words.nth(1).unwrap_or("").to_string();
        if step == "started" {
            open.insert(who);
        } else {
            open.remove(&who);
        }
    }
    !open.is_empty()
}

/// A `chaff serve` child process; SIGKILLed when dropped.
struct Server {
    child: Child,
    url: String,
}

/// How long a restarted `chaff serve` may take to print its address (a
/// start here takes well under a second).
const START_LIMIT: Duration = Duration::from_secs(120);

impl Server {
    /// `learn`: `--learn-delivered`; `scoring`: more `chaff serve` flags
    /// (the same for the server and the replay it is compared with).
    async fn start(
        exe: &Path,
        data: &Path,
        log: &Path,
        learn: bool,
        scoring: &[&str],
    ) -> anyhow::Result<Self> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--stats-interval", "0s", "--cache-mb", "32"])
            .args(["--learn-delivered", if learn { "true" } else { "false" }])
            // The soak tests durability, not overload: on a loaded machine
            // a Score may wait past the default 50 ms for a read slot and
            // be refused (tests/overload.rs tests that), so calls queue.
            .args(["--max-queue-wait", "20s", "--max-queued-calls", "1024"])
            .args(scoring)
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting chaff serve")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let reading = tokio::task::spawn_blocking(move || {
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
        });
        // A start that hangs (a deadlock in recovery, say) is a finding,
        // not a soak that never ends: killing the server ends the read.
        let addr = match tokio::time::timeout(START_LIMIT, reading).await {
            Ok(read) => {
                let line = read??;
                match line.trim().strip_prefix("chaff listening on ") {
                    Some(addr) => Ok(addr.to_string()),
                    None => Err(format!("did not start (first line {line:?})")),
                }
            }
            Err(_) => Err(format!(
                "printed no address within {START_LIMIT:?}: hung at start-up"
            )),
        };
        let addr = match addr {
            Ok(addr) => addr,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "chaff serve on {} {why}; see {}",
                    data.display(),
                    log.display()
                );
            }
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

    /// SIGTERM, then SIGKILL `after` it (never, with `None`) if the server
    /// has not exited by then, and reap; whether the SIGKILL was needed.
    async fn stop_then_kill(&mut self, after: Option<Duration>) -> anyhow::Result<bool> {
        let pid = libc::pid_t::try_from(self.child.id()).context("chaff serve's pid")?;
        // SAFETY: kill(2) on our own child, not yet reaped (so the pid is
        // still ours).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIGTERM chaff serve");
        }
        let limit = after.unwrap_or(Duration::from_secs(120));
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if after.is_none() {
            anyhow::bail!("chaff serve did not stop within {limit:?} of SIGTERM");
        }
        self.kill()?;
        Ok(true)
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

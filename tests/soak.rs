//! The crash soak, short: `chaff soak` SIGKILLs the real server three times
//! under 32 concurrent clicks, settings and list changes, DeleteUsers,
//! seeds and operator list changes (Score learning from delivered mail),
//! and checks after each restart that nothing acknowledged was lost and
//! nothing else half-applied (the 20-cycle run and its figures:
//! docs/FAULTS.md). The same from a format 5 directory, so the kills land
//! inside its in-place upgrade to format 6. And a SIGKILL while a format 3
//! directory is being upgraded at start-up.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chaff::classify::{Model, Weight};
use chaff::store::{LedgerEntry, Op, Store};
use chaff::tokenize::{TOKENIZER_VERSION, Tokenizer};
use chaff::types::{Label, MessageId, UserId};

use crate::common::*;

/// Runs `chaff soak` with `args` and returns its summary (the last JSON line).
fn soak(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .arg("soak")
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--concurrency", "32"])
        .args(args)
        .output()
        .expect("run chaff soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaff soak failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    println!("{stdout}");
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap()
}

/// Three short cycles, 12 users. Slow checkpoints and large messages for
/// the two hot users: their models are snapshotted every few dozen
/// clicks, with pauses around the write (the test build has the
/// `fault-injection` feature).
const SHORT: [&str; 15] = [
    "--cycles",
    "3",
    "--min-run",
    "700ms",
    "--max-run",
    "1500ms",
    "--users",
    "12",
    "--hot-users",
    "2",
    "--messages",
    "24",
    "--hot-words",
    "1500",
    "--slow-checkpoints",
];

#[test]
fn three_sigkills_under_load_lose_nothing_acknowledged_and_half_apply_nothing() {
    let s = soak(&SHORT);
    assert_eq!(s["discrepancies"], 0, "{s}");
    // The kills landed under load: calls were acknowledged, and some were
    // in flight (in doubt) at each kill.
    assert!(s["acked"].as_u64().unwrap() >= 50, "{s}");
    assert!(s["in_doubt"].as_u64().unwrap() >= 3, "{s}");
    // The operator's calls and deletions were in the mix, and Score
    // learned from delivered probes (entries the checks found).
    for kind in ["deletes", "seeds", "operator_lists", "implicit_found"] {
        assert!(s[kind].as_u64().unwrap() >= 1, "{kind}: {s}");
    }
    // Every key of every user, each cycle: settings, 24 messages, 8 list
    // entries; the operator's 24 seed messages and 3 × 8 list entries;
    // and 3 probe scores per user compared with the replay.
    assert_eq!(
        s["keys_checked"],
        3 * (12 * (1 + 24 + 8) + 24 + 3 * 8),
        "{s}"
    );
    assert_eq!(s["scores_compared"], 3 * 12 * 3, "{s}");
}

#[test]
fn sigkills_during_the_in_place_upgrade_from_format_5_lose_nothing_and_half_apply_nothing() {
    // The directory starts in format 5 (written by the old encoders): its
    // records are rewritten in format 6 as users are clicked and
    // checkpointed, under load, while the soak kills the server. Each
    // check compares with a replay written directly in format 6.
    let s = soak(&[&["--from-format", "5"][..], &SHORT].concat());
    assert_eq!(s["discrepancies"], 0, "{s}");
    let (start, left) = (
        s["legacy_records_at_start"].as_u64().unwrap(),
        s["legacy_records_left"].as_u64().unwrap(),
    );
    // 12 users × 12 clicks (ledger + journal), snapshots of every other user.
    assert!(start >= 12 * 12, "{s}");
    // The kills landed inside the upgrade: old records were left at every
    // check, and the upgrade went on between them.
    assert_eq!(s["kills_with_legacy_records"], 3, "{s}");
    assert!(left > 0 && left < start, "{s}");
    assert!(s["acked"].as_u64().unwrap() >= 50, "{s}");
}

#[test]
fn sigkills_inside_a_clean_shutdown_lose_nothing_acknowledged() {
    // SIGTERM, then SIGKILL at a random point of the shutdown: inside the
    // in-flight calls' grace, the models' snapshots, or sled's close, which
    // relocates pages and punches unused log segments out of its file
    // (vendor/sled/PATCHES.md). The first cycle stops cleanly and times it.
    // Six cycles: a kill lands at a random point of the fastest clean
    // stop so far, so a cycle whose shutdown outruns it stops cleanly.
    let mut args = SHORT.to_vec();
    args[1] = "6";
    args.push("--stop-first");
    let s = soak(&args);
    assert_eq!(s["discrepancies"], 0, "{s}");
    assert!(s["stopped_cleanly"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["killed_in_shutdown"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["acked"].as_u64().unwrap() >= 50, "{s}");
}

/// A message of user `u`: words from a small vocabulary leaning spammy
/// (even `n`) or hammy (odd), so models score probes away from 0.5.
fn fixture_message(u: usize, n: usize) -> Vec<u8> {
    let lean = if n.is_multiple_of(2) {
        "offer"
    } else {
        "meeting"
    };
    let words: Vec<String> = (0..120)
        .map(|i| format!("{lean}{}", (i * 7 + n * 13 + u) % 97))
        .collect();
    format!(
        "From: a{u}@fixture.example\r\nSubject: {lean} {n}\r\nMessage-ID: <f{u}.{n}@fixture.example>\r\n\r\n{}\r\n",
        words.join(" ")
    )
    .into_bytes()
}

/// Click `n` of user `u`: spam for even `n`, ham for odd, the message's
/// token ids, and its ledger entry at `weight`.
fn fixture_click(
    tokenizer: &Tokenizer,
    u: usize,
    n: usize,
    weight: Weight,
) -> (Label, Vec<chaff::tokenize::TokenId>, LedgerEntry) {
    let label = if n.is_multiple_of(2) {
        Label::Spam
    } else {
        Label::Ham
    };
    let ids = tokenizer.tokenize(&fixture_message(u, n)).ids;
    let entry = LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens: ids.clone(),
        weight,
        shared: 0,
        implicit: false,
    };
    (label, ids, entry)
}

/// Writes `users` × `clicks` clicks as today's store writes them, with
/// `weight` as a full message's weight; every other user's model is folded
/// into a snapshot halfway. Format 3 used weight 8 for a full message.
fn write_clicks(path: &Path, users: usize, clicks: usize, weight: Weight, format: Option<u32>) {
    let store = Store::open(path, 16 << 20).unwrap();
    let tokenizer = Tokenizer::default();
    for u in 0..users {
        let user = UserId::new(format!("old-{u}")).unwrap();
        let mut model = Model::default();
        for n in 0..clicks {
            let (label, ids, entry) = fixture_click(&tokenizer, u, n, weight);
            model.learn_weighted(&ids, label, weight);
            let msg = MessageId::new(format!("f{n}")).unwrap();
            let ops = [Op::Learn(label, weight, ids)];
            // An old directory is written in the old encodings; the
            // reference in today's.
            let seq = match format {
                Some(_) => store.record_legacy_for_tests(&user, &msg, &entry, &ops),
                None => store.record(&user, &msg, Some(&entry), &ops),
            }
            .unwrap();
            if u.is_multiple_of(2) && n == clicks / 2 {
                match format {
                    Some(_) => store.checkpoint_legacy_for_tests(&user, &model, seq),
                    None => store.checkpoint(&user, &model, seq),
                }
                .unwrap();
            }
        }
    }
    match format {
        Some(v) => store.mark_format_for_tests(v).unwrap(),
        None => store.flush().unwrap(),
    }
}

/// `chaff serve` on `data` with its log (`--log info`) and stdout lines
/// sent to a channel as they come.
fn spawn_logged(data: &Path) -> (Child, mpsc::Receiver<String>) {
    arm_watchdog();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    (child, rx)
}

/// How long a wait for a server's log line may take in all (not per line:
/// the server logs its statistics every minute, so a per-line timeout
/// never fires).
const LINE_LIMIT: Duration = Duration::from_secs(120);

/// Waits for a line containing one of `any`; returns it. Lines of stdout
/// and stderr reach `rx` through two threads, so their order across the
/// two streams is not the order the server wrote them in: wait for lines
/// of both streams with [`wait_for_all`].
fn wait_for(rx: &mpsc::Receiver<String>, any: &[&str]) -> String {
    let deadline = Instant::now() + LINE_LIMIT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("no line with any of {any:?} within {LINE_LIMIT:?}: {e}"));
        if any.iter().any(|a| line.contains(a)) {
            return line;
        }
    }
}

/// SIGKILLs `chaff serve` at points spread over the start-up upgrade of
/// `old` from format `from`, restarting each time, until a start finds
/// nothing left to upgrade; `timing` (a copy) measures how long the
/// upgrade takes here first, from the line before the work to the line
/// after it. Asserts that at least one kill landed inside it.
fn kill_during_upgrade(old: &Path, timing: &Path, from: u32) {
    let upgrading = format!("upgrading data directory from format {from}");
    let upgraded = format!("upgraded data directory from format {from}");
    const LISTENING: &str = "chaff listening on";
    let (mut child, rx) = spawn_logged(timing);
    wait_for(&rx, &[&upgrading]);
    let started = Instant::now();
    wait_for(&rx, &[&upgraded]);
    let took = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();

    let mut inside = 0;
    for eighth in [0u32, 2, 4, 6, 1, 3, 5, 7] {
        let (mut child, rx) = spawn_logged(old);
        // `upgrading` (stderr) is written the whole upgrade before LISTENING
        // (stdout), so the two readers cannot swap them.
        if wait_for(&rx, &[&upgrading, LISTENING]).contains(LISTENING) {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(took * eighth / 8);
        child.kill().unwrap();
        child.wait().unwrap();
        // Every line the killed server wrote (the readers end at EOF).
        if !rx.iter().any(|l| l.contains(&upgraded)) {
            inside += 1;
        }
    }
    assert!(
        inside >= 1,
        "no kill landed inside the upgrade ({took:?} long)"
    );
    println!("upgrade from format {from} took {took:?}; {inside} kills landed inside it");
}

/// Waits until a line containing each of `all` has come, in any order;
/// returns when each came, measured from `since`.
fn wait_for_all(rx: &mpsc::Receiver<String>, all: &[&str], since: Instant) -> Vec<Duration> {
    let deadline = Instant::now() + LINE_LIMIT;
    let mut came = vec![None; all.len()];
    while came.iter().any(Option::is_none) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("no line with each of {all:?} within {LINE_LIMIT:?}: {e}"));
        for (want, when) in all.iter().zip(&mut came) {
            if when.is_none() && line.contains(want) {
                *when = Some(since.elapsed());
            }
        }
    }
    came.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_sigkill_during_the_format_3_upgrade_loses_nothing_and_a_restart_completes_it() {
    let (users, clicks) = (40, 30);
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let timing = root.path().join("timing");
    let reference = root.path().join("reference");
    write_clicks(&old, users, clicks, Weight(8), Some(3));
    write_clicks(&timing, users, clicks, Weight(8), Some(3));
    write_clicks(&reference, users, clicks, Weight::FULL, None);

    kill_during_upgrade(&old, &timing, 3);

    // A restart completes the upgrade: every user as in the reference
    // written in today's format and units, scores bit for bit.
    assert_same_users(&old, &reference, users, clicks).await;
}

/// The format-8 upgrade checkpoints each user with all their ham counted
/// as delivered, then writes the format key: kills inside it leave a
/// directory that opens, a restart completes it, and every user answers
/// as the same clicks in today's format (the defaults do not read the
/// split; that all ham reads as delivered: `store::tests_split`).
#[tokio::test]
async fn a_sigkill_during_the_format_7_upgrade_loses_nothing_and_a_restart_completes_it() {
    let (users, clicks) = (60, 30);
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let timing = root.path().join("timing");
    let reference = root.path().join("reference");
    // Format 7's records are today's but for the snapshot's byte and
    // the journal's delivered kinds, which the upgrade reads either way:
    // today's records, marked format 7.
    for dir in [&old, &timing, &reference] {
        write_clicks(dir, users, clicks, Weight::FULL, None);
    }
    for dir in [&old, &timing] {
        Store::open(dir, 16 << 20)
            .unwrap()
            .mark_format_for_tests(7)
            .unwrap();
    }

    kill_during_upgrade(&old, &timing, 7);

    // The scores below cannot tell an upgraded user from one the upgrade
    // skipped (the defaults read no split here, and a skipped user's ham
    // reads as clicked, as the reference's does): the models must say
    // that every user was checkpointed with all their ham delivered. On a
    // copy, after a start that finishes the upgrade (every kill may have
    // landed inside it), so no store of this test holds `old`'s lock.
    let (mut child, rx) = spawn_logged(&old);
    wait_for(&rx, &["chaff listening on"]);
    child.kill().unwrap();
    child.wait().unwrap();
    let check = root.path().join("check");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&old)
        .arg(&check)
        .status()
        .unwrap();
    assert!(copied.success());
    {
        let store = Store::open(&check, 16 << 20).unwrap();
        for u in 0..users {
            let id = UserId::new(format!("old-{u}")).unwrap();
            let loaded = store.load_model(&id).unwrap().unwrap();
            let ham = loaded.model.weights().1;
            assert_eq!(
                (loaded.model.clicked_ham_weight(), loaded.journal_entries),
                (0, 0),
                "{id}: all {ham} of its ham delivered, its journal folded"
            );
        }
    }

    assert_same_users(&old, &reference, users, clicks).await;
}

#[tokio::test]
async fn sigkills_while_a_format_5_directory_opens_leave_it_equal_to_the_same_clicks_in_format_6() {
    // Opening a format-5 directory rewrites its format key (one atomic
    // write, not flushed by itself); its records are rewritten later, in
    // place (the soak's --from-format test). Kills spread over start-up.
    const LISTENING: &str = "chaff listening on";
    const UPGRADED: &str = "upgraded data directory from format 5";
    let (users, clicks) = (40, 30);
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let timing = root.path().join("timing");
    let reference = root.path().join("reference");
    write_clicks(&old, users, clicks, Weight::FULL, Some(5));
    write_clicks(&timing, users, clicks, Weight::FULL, Some(5));
    write_clicks(&reference, users, clicks, Weight::FULL, None);

    // When the format key is rewritten, and when the server listens, here:
    // on a copy, from the spawn.
    // (The two lines come on stderr and stdout: in either order here.)
    let started = Instant::now();
    let (mut child, rx) = spawn_logged(&timing);
    let [upgraded, took] = wait_for_all(&rx, &[UPGRADED, LISTENING], started)[..] else {
        unreachable!()
    };
    child.kill().unwrap();
    child.wait().unwrap();
    println!("format key rewritten after {upgraded:?}, listening after {took:?}");

    // Kills at later and later points of start-up, restarting each time,
    // until one lands after the format key's write (which nothing flushes
    // until the first click's flush or sled's background flush): from
    // then on a start may find the directory upgraded and log nothing.
    // A quarter of the measured time later each kill for the first 16;
    // then half as late again each time, up to a minute: a loaded machine
    // may start more slowly than the timing run did (a fresh-clone run
    // of .ci/run once saw all 16 kills land before the write, the last at
    // 3.75× its measured time).
    let (mut before, mut after) = (0, 0);
    let mut delay = Duration::ZERO;
    // What the last start said, for a failure's message: a fresh-clone
    // run (session 36) met 28 kills up to 43 s after the spawn without
    // the upgrade's line, the format key written at 89 ms in the timing
    // run; why was not recorded.
    let mut last: Vec<String> = Vec::new();
    for attempt in 1u32.. {
        let (mut child, rx) = spawn_logged(&old);
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        last = rx.iter().collect();
        last.push(format!("(exit: {status}, killed after {delay:?})"));
        if last.iter().any(|l| l.contains(UPGRADED)) {
            after += 1;
            break;
        }
        before += 1;
        delay = if attempt < 16 {
            upgraded * attempt / 4
        } else {
            delay.mul_f64(1.5)
        };
        if delay > Duration::from_secs(60) {
            break;
        }
    }
    assert!(
        before >= 1 && after == 1,
        "kills before / after the format key's write: {before} / {after} (it came {upgraded:?} after the spawn); the last start said:\n{}",
        last.join("\n")
    );
    assert_same_users(&old, &reference, users, clicks).await;
    println!("{before} kills landed before the format key's write, then one after it");
}

/// Every user `write_clicks` wrote into `old` (opened, so upgraded) as in
/// `reference` (the same clicks in today's format): GetUser equal, Score
/// bit for bit; then an old click moved to the other class and another
/// forgotten (read from the old ledger entries), with the same replies and
/// the same models after. Score learns no delivered mail here, so the
/// models change only by those clicks.
async fn assert_same_users(old: &Path, reference: &Path, users: usize, clicks: usize) {
    // The upgrade reads the old ham as delivered, the reference's is
    // clicked: the ham side's pooled prior, which reads that split, is off
    // so the scores say whether the counts survived.
    let pure = ["--learn-delivered", "false", "--thin-ham-pool", "0"];
    let upgraded = ServerProcess::start_args(old, &pure);
    let expected = ServerProcess::start_args(reference, &pure);
    let mut a = connect(&upgraded.addr).await;
    let mut b = connect(&expected.addr).await;
    for u in 0..users {
        let id = format!("old-{u}");
        let got = user(&mut a, &id).await;
        assert_eq!(got, user(&mut b, &id).await, "{id}");
        assert_eq!(
            (got.spam_learned, got.ham_learned),
            (clicks as u64 / 2, clicks as u64 / 2)
        );
        let probe = fixture_message(u, clicks + u % 2);
        // Bit for bit: probability and log-odds.
        let same_score = async |a: &mut Client, b: &mut Client| {
            let (sa, sb) = (score(a, &id, &probe).await, score(b, &id, &probe).await);
            assert_eq!(
                (sa.spam_probability.to_bits(), sa.spam_log_odds.to_bits()),
                (sb.spam_probability.to_bits(), sb.spam_log_odds.to_bits()),
                "{id}"
            );
            sa
        };
        let sa = same_score(&mut a, &mut b).await;
        assert!(
            sa.tokens_known > 0,
            "{id}: the probe shares words with the model"
        );
        let old_click = fixture_message(u, 0);
        let ham = chaff::proto::Label::Ham;
        let ta = train(&mut a, &id, &old_click, ham, "f0").await;
        let tb = train(&mut b, &id, &old_click, ham, "f0").await;
        assert_eq!(ta, tb, "{id}");
        assert_eq!(ta.outcome, chaff::proto::TrainOutcome::Relearned as i32);
        let forget = |id: &str| chaff::proto::ForgetRequest {
            user_id: id.into(),
            message_id: "f1".into(),
        };
        let fa = a.forget(forget(&id)).await.unwrap().into_inner();
        let fb = b.forget(forget(&id)).await.unwrap().into_inner();
        assert_eq!(fa, fb, "{id}");
        assert_eq!(user(&mut a, &id).await, user(&mut b, &id).await, "{id}");
        same_score(&mut a, &mut b).await;
    }
    upgraded.kill();
    expected.kill();
}

#[tokio::test]
async fn a_list_reply_that_changed_nothing_still_waits_for_the_disk() {
    // "Already there" may rest on another caller's add whose flush has not
    // finished; replying without waiting acknowledged an entry a SIGKILL
    // could still take away. Found reading the soak's list path.
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let waits = |s: chaff::proto::ServerStats| s.durable_waits;
    let entry = |user: &str| chaff::proto::ListEntryRequest {
        user_id: user.into(),
        kind: chaff::proto::ListKind::Block.into(),
        entry: "spam.example".into(),
        ..Default::default()
    };
    let stats = || chaff::proto::GetStatsRequest {};
    assert!(
        c.add_list_entry(entry("alice"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    let before = waits(c.get_stats(stats()).await.unwrap().into_inner());
    let again = c.add_list_entry(entry("alice")).await.unwrap().into_inner();
    assert!(!again.changed);
    let after_add = waits(c.get_stats(stats()).await.unwrap().into_inner());
    assert_eq!(after_add, before + 1, "an unchanged add waits for a flush");
    let gone = c
        .remove_list_entry(entry("bob"))
        .await
        .unwrap()
        .into_inner();
    assert!(!gone.changed);
    let after_remove = waits(c.get_stats(stats()).await.unwrap().into_inner());
    assert_eq!(
        after_remove,
        after_add + 1,
        "an unchanged remove waits for a flush"
    );
    server.stop().await;
}

/// Writes `users` users as a format-6 server leaves them after a prune
/// (the click and checkpoint code is format 6's): `clicks` clicks each,
/// then a snapshot of a model without a third of their tokens (what a
/// prune writes), then one more click in the journal. With `format`, the
/// directory is marked that format (6: upgraded at the next start).
fn write_pruned(path: &Path, users: usize, clicks: usize, format: Option<u32>) {
    let store = Store::open(path, 16 << 20).unwrap();
    let tokenizer = Tokenizer::default();
    for u in 0..users {
        let user = UserId::new(format!("pruned-{u}")).unwrap();
        let mut model = Model::default();
        for n in 0..=clicks {
            let (label, ids, entry) = fixture_click(&tokenizer, u, n, Weight::FULL);
            let msg = MessageId::new(format!("p{n}")).unwrap();
            let ops = [Op::Learn(label, Weight::FULL, ids.clone())];
            let seq = store.record(&user, &msg, Some(&entry), &ops).unwrap();
            let kept: Vec<_> = ids.into_iter().filter(|id| id.0 % 3 != 0).collect();
            model.learn_weighted(&kept, label, Weight::FULL);
            if n + 1 == clicks {
                store.checkpoint(&user, &model, seq).unwrap();
            }
        }
    }
    match format {
        Some(v) => store.mark_format_for_tests(v).unwrap(),
        None => store.flush().unwrap(),
    }
}

#[tokio::test]
async fn a_sigkill_during_the_format_6_upgrade_leaves_a_directory_that_opens_and_a_restart_completes_it()
 {
    let (users, clicks) = (60, 30);
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let timing = root.path().join("timing");
    let reference = root.path().join("reference");
    write_pruned(&old, users, clicks, Some(6));
    write_pruned(&timing, users, clicks, Some(6));
    // The same records, never upgraded (format 7 from the start): the
    // compaction changes no model, so scores must match bit for bit.
    write_pruned(&reference, users, clicks, None);

    kill_during_upgrade(&old, &timing, 6);

    // The upgrade to format 8 reads every old model's ham as delivered,
    // where the reference's is clicked; with the header's own prior, the
    // thin-ham cap and the ham side's pooled prior off that split changes
    // no score (the premise
    // `classify::blend` pins), so the scores say whether the counts
    // survived.
    let same_prior = [
        "--header-strength",
        "0.1",
        "--thin-ham-exponent",
        "0",
        "--thin-ham-pool",
        "0",
    ];
    let upgraded = ServerProcess::start_args(&old, &same_prior);
    let expected = ServerProcess::start_args(&reference, &same_prior);
    let mut a = connect(&upgraded.addr).await;
    let mut b = connect(&expected.addr).await;
    for u in 0..users {
        let id = format!("pruned-{u}");
        let got = user(&mut a, &id).await;
        assert_eq!(got, user(&mut b, &id).await, "{id}");
        let probe = fixture_message(u, clicks + 1 + u % 2);
        let (sa, sb) = (
            score(&mut a, &id, &probe).await,
            score(&mut b, &id, &probe).await,
        );
        assert_eq!(
            sa.spam_probability.to_bits(),
            sb.spam_probability.to_bits(),
            "{id}"
        );
        assert!(sa.tokens_known > 0, "{id}");
    }
    upgraded.kill();
    expected.kill();
}

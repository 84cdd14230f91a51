//! `chaff compact` (`store`'s `rewrite.rs`): the real command on a real
//! data directory written through the engine with prunes (so sled holds
//! rewritten records): it keeps every record and shrinks the files, it
//! refuses a directory in use, and a SIGKILL at each of its steps leaves a
//! directory that opens holding exactly the original records.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chaff::engine::{Engine, Settings};
use chaff::store::{DONE_MARKER, Recovered, Store};
use chaff::types::{Label, MessageId, UserId};

use crate::mailgen;

/// Every record of every tree, read with sled itself (after a
/// [`Store::open`] has settled any interrupted compaction).
type Dump = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

fn dump(dir: &Path) -> Dump {
    drop(open(dir));
    let db = (0..500)
        .find_map(|_| {
            let db = sled::Config::new().path(dir).open().ok();
            if db.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            db
        })
        .expect("sled opens the directory");
    let mut out = Dump::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let records = tree
            .iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        out.insert(name.to_vec(), records);
    }
    out
}

/// [`Store::open`], waiting for the lock an earlier handle's threads hold
/// a moment after it is dropped.
fn open(dir: &Path) -> Store {
    crate::common::open_store_waiting(dir, 16 << 20)
}

/// Three users, 120 clicks each, under a cap far below what they learn:
/// pruned again and again (each prune rewrites the snapshot, ledger and
/// dictionary), as a busy server's directory.
fn write_fixture(dir: &Path) {
    let settings = Settings {
        max_user_tokens: Some(1500),
        learn_delivered: false,
        ..Settings::default()
    };
    let engine = Engine::new(open(dir), settings).unwrap();
    for u in 0..3 {
        let user = UserId::new(format!("compact-{u}")).unwrap();
        for i in 0..120 {
            let (bytes, label) = if i % 2 == 0 {
                (mailgen::spam(u as u64, i), Label::Spam)
            } else {
                (mailgen::ham(u as u64, i), Label::Ham)
            };
            let id = MessageId::new(format!("m{i}")).unwrap();
            engine.train(&user, &bytes, label, Some(id)).unwrap();
        }
    }
    engine.shutdown().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

fn compact(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["compact", "--json", "--data"])
        .arg(dir)
        .output()
        .unwrap()
}

/// `dir` with `suffix` appended to its name.
fn beside_raw(dir: &Path, suffix: &str) -> std::path::PathBuf {
    dir.with_file_name(format!(
        "{}{suffix}",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

fn beside(dir: &Path, suffix: &str) -> std::path::PathBuf {
    dir.with_file_name(format!(
        "{}.{suffix}",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn chaff_compact_keeps_every_record_and_shrinks_a_pruned_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    write_fixture(&dir);
    // The API keys live beside sled's files (`keys.json`), and an
    // operator's file may too: both go along.
    let keys = b"{\"keys\": []}\n";
    std::fs::write(dir.join("keys.json"), keys).unwrap();
    std::fs::create_dir(dir.join("notes")).unwrap();
    std::fs::write(dir.join("notes/why"), b"kept").unwrap();
    let before = dump(&dir);
    assert!(before.values().map(Vec::len).sum::<usize>() > 300);
    // What compact is still for since a clean close punches unused log
    // segments out of the file: the file's length, not only its blocks.
    let log_len = |d: &Path| std::fs::metadata(d.join("db")).unwrap().len();
    let len_before = log_len(&dir);

    let out = compact(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let (disk_before, disk_after) = (
        report["disk_before"].as_u64().unwrap(),
        report["disk_after"].as_u64().unwrap(),
    );
    println!("{report}");
    assert!(
        disk_after < disk_before * 3 / 4,
        "{disk_before} -> {disk_after} bytes"
    );
    assert_eq!(
        chaff::store::disk_usage(&dir).unwrap(),
        disk_after,
        "the reported size is the directory's"
    );
    assert!(
        log_len(&dir) < len_before,
        "sled's log file is {} bytes long, was {len_before}",
        log_len(&dir)
    );
    assert!(!beside(&dir, "compact-old").exists());
    assert!(!beside(&dir, "compact-new").exists());
    assert!(!dir.join(DONE_MARKER).exists());
    assert_eq!(dump(&dir), before);
    assert_eq!(std::fs::read(dir.join("keys.json")).unwrap(), keys);
    assert_eq!(std::fs::read(dir.join("notes/why")).unwrap(), b"kept");

    // The compacted directory serves: the engine reads its users back.
    let engine = Engine::new(open(&dir), Settings::default()).unwrap();
    let user = UserId::new("compact-1").unwrap();
    assert!(engine.user_summary(&user).unwrap().tokens > 0);
    let id = MessageId::new("m119").unwrap();
    engine.forget(&user, &id).unwrap();
    engine.shutdown().unwrap();
}

#[test]
fn chaff_compact_refuses_a_directory_a_server_holds() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    write_fixture(&dir);
    let before = dump(&dir);
    let held = open(&dir);
    let out = compact(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("another chaff process"), "{stderr}");
    assert!(!beside(&dir, "compact-new").exists());
    drop(held);
    assert_eq!(dump(&dir), before);
}

#[test]
fn a_sigkill_at_each_step_of_chaff_compact_leaves_a_directory_that_opens_with_the_original_records()
{
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    write_fixture(&pristine);
    let before = dump(&pristine);
    // Each step, and what the next open must do about a kill there: before
    // the copy is verified and marked it is thrown away; from the first
    // rename on, the swap is finished.
    let cases = [
        ("copied", Recovered::RolledBack),
        ("verified", Recovered::RolledBack),
        ("original-aside", Recovered::Finished),
        ("swapped", Recovered::Finished),
    ];
    for (step, expected) in cases {
        let dir = root.path().join(format!("at-{step}"));
        copy_dir(&pristine, &dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["compact", "--data"])
            .arg(&dir)
            .env(chaff::fault::COMPACT_STOP_ENV, step)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stop = format!("fault injection: compact stopped at {step}");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            let done = line.contains(&stop);
            seen.push(line);
            if done {
                break;
            }
        }
        assert!(
            seen.last().is_some_and(|l| l.contains(&stop)),
            "{step}: {seen:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Between the renames the directory's name is really missing.
        assert_eq!(dir.exists(), step != "original-aside", "{step}");

        // What settling does, on a copy of the three names as the kill
        // left them; the directory itself is settled by a plain open.
        let twin = root.path().join(format!("twin-{step}"));
        for suffix in ["", ".compact-old", ".compact-new"] {
            let from = beside_raw(&dir, suffix);
            if from.exists() {
                copy_dir(&from, &beside_raw(&twin, suffix));
            }
        }
        assert_eq!(
            chaff::store::recover(&twin).unwrap(),
            Some(expected),
            "{step}"
        );
        assert_eq!(dump(&twin), before, "{step}: settled by recover");
        assert_eq!(dump(&dir), before, "{step}: settled by opening");
        assert!(!beside(&dir, "compact-old").exists(), "{step}");
        assert!(!beside(&dir, "compact-new").exists(), "{step}");
        assert!(!dir.join(DONE_MARKER).exists(), "{step}");
        // And a compaction after the kill completes.
        let out = compact(&dir);
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(dump(&dir), before, "{step}: compacted after the kill");
    }
}

/// The `F` record of a directory, read with sled itself (no upgrade), and
/// the key and value bytes of its dictionary records (`K`).
fn format_and_dictionary(dir: &Path) -> (Vec<u8>, u64) {
    let db = sled::Config::new().path(dir).open().unwrap();
    let tree = db.open_tree("chaff").unwrap();
    let format = tree.get(b"F").unwrap().unwrap().to_vec();
    let dict = tree
        .scan_prefix(b"K")
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.len() + v.len()) as u64
        })
        .sum();
    (format, dict)
}

/// The spam probability main printed for `user` in `format6-main.json`,
/// parsed by Rust from the digits as written (serde_json's own float
/// parser, without its `float_roundtrip` feature, can be one ulp off).
fn probability_as_written(raw: &str, user: &str) -> f64 {
    let from = raw
        .find(&format!("\"{user}\""))
        .expect("user in the fixture");
    let key = "\"spam_probability\":";
    let at = from + raw[from..].find(key).expect("a probability") + key.len();
    let digits: String = raw[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-'))
        .collect();
    digits.parse().unwrap()
}

/// A fixture directory `NAME.tar.gz` of tests/fixtures unpacked into a
/// fresh temporary directory; also the fixtures' folder.
fn unpack_fixture(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(fixtures.join(format!("{name}.tar.gz")))
        .arg("-C")
        .arg(root.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar {name}");
    (root, fixtures)
}

/// `tests/fixtures/format6-main.tar.gz` was written by main's chaff (store
/// format 6, `make-format6-main.sh` beside it): two users, 40 clicks each,
/// pruned under a 600-token cap, closed cleanly; `format6-main.json` is
/// what that chaff answered for it. Opened by this chaff through the real
/// server, it is upgraded in place to format 8 (the dictionaries lose the
/// pruned ids), answers the same counts and bit-identical scores, Forget
/// works, and `chaff compact` then keeps every record.
#[tokio::test]
async fn a_format_6_directory_written_by_main_is_upgraded_in_place_and_answers_as_main_did() {
    use crate::common::{ServerProcess, connect, score, user};
    let (root, fixtures) = unpack_fixture("format6-main");
    let raw = std::fs::read_to_string(fixtures.join("format6-main.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let dir = root.path().join("format6-main");
    let (format, dict_before) = format_and_dictionary(&dir);
    assert_eq!(format, 6u32.to_be_bytes(), "the fixture is format 6");

    // Main scored without the ham side's pooled prior (session 29), which
    // reads the upgraded ham as delivered; off, the scores are main's.
    let server = ServerProcess::start_args(&dir, &["--thin-ham-pool", "0"]);
    let mut c = connect(&server.addr).await;
    for u in 0..2 {
        let id = format!("user-{u}");
        let want = &expected[&id];
        let got = user(&mut c, &id).await;
        assert_eq!(got.tokens, want["user"]["tokens"].as_u64().unwrap(), "{id}");
        assert_eq!(got.spam_learned, 20, "{id}");
        assert_eq!(got.ham_learned, 20, "{id}");
        let probe = std::fs::read(root.path().join(format!("probes/u{u}-40.eml"))).unwrap();
        let s = score(&mut c, &id, &probe).await;
        assert_eq!(
            s.spam_probability.to_bits(),
            probability_as_written(&raw, &id).to_bits(),
            "{id}"
        );
        assert_eq!(
            u64::from(s.tokens_known),
            want["score"]["tokens_known"].as_u64().unwrap()
        );
    }
    let forgot = c
        .forget(chaff::proto::ForgetRequest {
            user_id: "user-0".into(),
            message_id: "<m0.38@fixture.example>".into(),
        })
        .await;
    assert!(forgot.is_ok(), "{forgot:?}");
    assert_eq!(user(&mut c, "user-0").await.spam_learned, 19);
    server.terminate();

    let (format, dict_after) = format_and_dictionary(&dir);
    assert_eq!(format, 8u32.to_be_bytes(), "upgraded in place");
    assert!(
        dict_after < dict_before,
        "the dictionaries lose the pruned ids: {dict_before} -> {dict_after} bytes"
    );
    let before = dump(&dir);
    let out = compact(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&dir), before);
}

/// The spam probabilities main printed for `user` in a fixture's JSON, in
/// order, parsed from the digits as written (see
/// [`probability_as_written`]).
fn probabilities_as_written(raw: &str, user: &str) -> Vec<f64> {
    let from = raw
        .find(&format!("\"{user}\""))
        .expect("user in the fixture");
    // The next user's section starts a line.
    let to = raw[from..]
        .find("\n\"user-")
        .map_or(raw.len(), |at| from + at);
    let key = "\"spam_probability\":";
    raw[from..to]
        .match_indices(key)
        .map(|(at, _)| {
            let digits: String = raw[from + at + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-'))
                .collect();
            digits.parse().unwrap()
        })
        .collect()
}

/// `tests/fixtures/format7-main.tar.gz` was written by main's chaff (store
/// format 7, which kept no split between clicked and delivered ham;
/// `make-format7-main.sh` beside it): user-0 clicked 20 Spam and 20 Not
/// spam, user-1 20 Spam and had 20 ham learned from delivered mail;
/// `format7-main.json` is what main answered with its defaults. Opened by
/// this chaff with the header prior's ramp on, it is upgraded to format 8
/// with all that ham counted as delivered, so both users score as main did
/// without the ramp, to the last bits — user-0's Not spam clicks included (read
/// as clicked, they would give the header its smaller prior in full; the
/// ramp is the default since session 15).
#[tokio::test]
async fn a_format_7_directory_written_by_main_opens_with_all_its_ham_delivered() {
    use crate::common::{ServerProcess, connect, score, user};
    let (root, fixtures) = unpack_fixture("format7-main");
    let raw = std::fs::read_to_string(fixtures.join("format7-main.json")).unwrap();
    let dir = root.path().join("format7-main");
    assert_eq!(format_and_dictionary(&dir).0, 7u32.to_be_bytes());
    let ramp = [
        "--learn-delivered",
        "false",
        "--header-strength",
        "0.02",
        "--header-strength-ramp",
        "10",
        // Main had no pooled prior on the ham side (session 29): with all
        // the old ham delivered it would apply here.
        "--thin-ham-pool",
        "0",
    ];
    let server = ServerProcess::start_args(&dir, &ramp);
    let mut c = connect(&server.addr).await;
    for u in 0..2 {
        let id = format!("user-{u}");
        let got = user(&mut c, &id).await;
        assert_eq!((got.spam_learned, got.ham_learned), (20, 20), "{id}");
        let want = probabilities_as_written(&raw, &id);
        assert_eq!(want.len(), 3);
        for (p, want) in want.iter().enumerate() {
            let probe =
                std::fs::read(root.path().join(format!("probes/probe-u{u}-{p}.eml"))).unwrap();
            let s = score(&mut c, &id, &probe).await;
            // Main pooled header and body; today's default (the header's
            // veto) sums the body's logarithms before the header's, so the
            // same evidence can differ in the last bits. Read as clicked,
            // the old ham moves a probe in the third decimal.
            assert!(
                (s.spam_probability - want).abs() <= 1e-12 * want.abs(),
                "{id} probe {p}: {} against main's {want}",
                s.spam_probability
            );
        }
    }
    server.terminate();
    assert_eq!(format_and_dictionary(&dir).0, 8u32.to_be_bytes());
}

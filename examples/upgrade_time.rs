//! What the store upgrades at open cost at a provider's scale: format 6 → 7
//! (every user compacted) and 7 → 8 (every user checkpointed with their ham
//! counted as delivered), `src/store/upgrade.rs`, docs/OPERATIONS.md
//! ("Store format 8").
//!
//! ```sh
//! cargo run --release --example upgrade_time -- CORPUS_INDEX USERS [CLICKS [DIR [FORMATS]]]
//! ```
//!
//! Writes USERS users (`user-N`) into a fresh directory DIR/base (default:
//! a temporary directory), each with CLICKS clicks (default 20) of corpus
//! messages (user `u` learns messages `u·CLICKS ..`, wrapping around the
//! corpus, with their gold labels), through the store's own click and
//! checkpoint code: a snapshot after the first half, the second half in
//! the journal, as the engine leaves a user between two checkpoints. The
//! clicks are today's records (format 8): formats 6 and 7 wrote the same
//! records but for the snapshot's delivered ham weight and the journal's
//! delivered marks, which both upgrades read either way (what the
//! upgrade tests do too: `store::tests_compact`, tests/soak.rs). Then, on a
//! copy of that directory each (`cp -a`, so the files are in the page
//! cache: a warm start), marked format 8, 7 and 6 in turn, times
//! `Store::open` (the server's 256 MiB page cache), which runs no
//! upgrade, the 7 → 8 upgrade, or 6 → 7 then 7 → 8. Prints the directory's
//! size (`du`), each open's seconds and users per second, and the upgrade
//! log's lines (INFO, with the progress lines a long upgrade writes).
//! FORMATS (e.g. `7`, or `8,7,6`, the default) picks which; one format
//! alone is measured on DIR/base itself, without a copy (half the disk).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chaff::classify::{Model, Weight};
use chaff::store::{LedgerEntry, Op, Store};
use chaff::tokenize::{TOKENIZER_VERSION, TokenId, Tokenizer};
use chaff::types::{Label, MessageId, UserId};

#[path = "common/mod.rs"]
mod common;
use common::du;

/// `chaff serve`'s default `--cache-mb`.
const CACHE_BYTES: u64 = 256 << 20;

/// Opens `dir`, waiting for a closed store's background flusher to let go
/// of the directory's lock.
fn reopen(dir: &Path) -> Store {
    for _ in 0..1000 {
        match Store::open(dir, CACHE_BYTES) {
            Ok(s) => return s,
            Err(chaff::error::Error::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
    panic!("{} stayed locked", dir.display());
}

/// Opens `dir` and times the open that succeeds: one refused because the
/// last store's flusher still holds the lock fails before any upgrade.
fn timed_open(dir: &Path) -> (Store, f64) {
    for _ in 0..1000 {
        let started = Instant::now();
        match Store::open(dir, CACHE_BYTES) {
            Ok(s) => return (s, started.elapsed().as_secs_f64()),
            Err(chaff::error::Error::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
    panic!("{} stayed locked", dir.display());
}

/// Waits until `dir` is closed (its lock free), then drops the store.
fn wait_closed(dir: &Path) {
    drop(reopen(dir));
    std::thread::sleep(Duration::from_millis(200));
}

fn write_users(dir: &Path, corpus: &[(Label, Vec<TokenId>)], users: usize, clicks: usize) {
    let store = reopen(dir);
    let started = Instant::now();
    for u in 0..users {
        let user = UserId::new(format!("user-{u}")).unwrap();
        let mut model = Model::default();
        for n in 0..clicks {
            let (label, ids) = &corpus[(u * clicks + n) % corpus.len()];
            let entry = LedgerEntry {
                label: *label,
                tokenizer_version: TOKENIZER_VERSION,
                tokens: ids.clone(),
                weight: Weight::FULL,
                shared: 0,
                implicit: false,
            };
            model.learn_weighted(ids, *label, Weight::FULL);
            let msg = MessageId::new(format!("m{n}")).unwrap();
            let ops = [Op::Learn(*label, Weight::FULL, ids.clone())];
            let seq = store.record(&user, &msg, Some(&entry), &ops).unwrap();
            if n + 1 == clicks / 2 {
                store.checkpoint(&user, &model, seq).unwrap();
            }
        }
        if u % 256 == 255 {
            store.flush().unwrap();
        }
        if u % 1000 == 999 {
            eprintln!(
                "written {} users ({:.0} s)",
                u + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.flush().unwrap();
    drop(store);
    wait_closed(dir);
}

fn copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "CORPUS_INDEX USERS [CLICKS [DIR [FORMATS]]]";
    let index = PathBuf::from(args.get(1).expect(usage));
    let users: usize = args.get(2).expect(usage).parse().expect("USERS");
    let clicks: usize = args.get(3).map_or(20, |n| n.parse().expect("CLICKS"));
    let tmp = tempfile::tempdir().unwrap();
    let root = args.get(4).map_or(tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&root).unwrap();
    // The upgrades' start, progress and finish lines, as `chaff serve
    // --log info` prints them.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();

    let tokenizer = Tokenizer::default();
    let corpus: Vec<(Label, Vec<TokenId>)> = chaff::eval::read_index(&index)
        .expect("corpus")
        .iter()
        .take(users * clicks)
        .map(|m| {
            let bytes = std::fs::read(&m.path).expect("message");
            (m.gold, tokenizer.tokenize(&bytes).ids)
        })
        .collect();
    let base = root.join("base");
    let _ = std::fs::remove_dir_all(&base);
    let started = Instant::now();
    write_users(&base, &corpus, users, clicks);
    let tokens: usize = corpus.iter().map(|(_, t)| t.len()).sum();
    println!(
        "{users} users × {clicks} clicks ({} corpus messages, {:.0} tokens a message) written in {:.1} s; directory {:.1} MB (du)",
        corpus.len(),
        tokens as f64 / corpus.len() as f64,
        started.elapsed().as_secs_f64(),
        du(&base) as f64 / 1e6
    );

    // One format asked for: measured on the directory itself, no copy
    // (half the disk, for the largest N).
    let formats: Vec<u32> = args.get(5).map_or(vec![8, 7, 6], |f| {
        f.split(',').map(|n| n.parse().expect("FORMATS")).collect()
    });
    let work = if formats.len() == 1 {
        base.clone()
    } else {
        root.join("work")
    };
    let mut took = Vec::new();
    for &format in &formats {
        if work != base {
            copy(&base, &work);
        }
        if format < 8 {
            // Not waited for by opening it again: that open would upgrade.
            reopen(&work).mark_format_for_tests(format).unwrap();
        }
        let size = du(&work);
        let (store, secs) = timed_open(&work);
        drop(store);
        wait_closed(&work);
        println!(
            "open of format {format} ({:.1} MB): {secs:.2} s, {:.0} users/s; after it {:.1} MB",
            size as f64 / 1e6,
            users as f64 / secs,
            du(&work) as f64 / 1e6
        );
        took.push(secs);
    }
    if let (Some(7), Some(6)) = (formats.get(1), formats.get(2)) {
        let alone = took[2] - took[1];
        println!(
            "format 6 to 7 alone (open of 6 less open of 7): {alone:.2} s, {:.0} users/s",
            users as f64 / alone
        );
    }
    if work != base {
        let _ = std::fs::remove_dir_all(&work);
    }
}

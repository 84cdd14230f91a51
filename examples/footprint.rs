//! Measures what chaff keeps per model token, in memory and on disk.
//!
//! ```sh
//! cargo run --release --example footprint -- CORPUS_INDEX USERS [DIR [EVERY [MAX_USER_TOKENS [compact]]]]
//! ```
//!
//! Trains every message of the corpus (TREC index) for each of USERS users
//! (with EVERY > 1, user `u` learns message `i` only when `i % EVERY == u %
//! EVERY`: many users' worth of distinct mailboxes in less disk). MAX_USER_TOKENS
//! is the per-user quota (`--max-user-tokens`; default the server's, 0 = no cap:
//! every learned token stays in the model, what bytes per model token compares;
//! `default` = the server's). With `compact` last, the closed directory is then
//! also rewritten as `chaff compact` does (`Store::rewrite_dir`) and measured again.
//! through the engine, durably, as clicks would, with each message's own id;
//! shuts the engine down cleanly (models snapshotted, journal folded); then
//! reports the stored tokens (the sum of the users' model sizes), the data
//! directory's size on disk (`du`), bytes per stored token, and the live
//! records by kind, and how many prunes (and compactions of the pruned
//! users' ledger and dictionary, store format 7) the quota ran. It also reloads one model from disk and counts the heap
//! bytes its in-memory form takes (a counting allocator), the figure the
//! model cache's estimate is based on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use chaff::engine::{Engine, Settings};
use chaff::store::Store;
use chaff::types::{MessageId, UserId};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[path = "common/mod.rs"]
mod common;
use common::du;

fn reopen(dir: &std::path::Path) -> Store {
    for _ in 0..500 {
        if let Ok(s) = Store::open(dir, 64 << 20) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("cannot reopen {}", dir.display());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let index = std::path::PathBuf::from(args.get(1).expect("CORPUS_INDEX USERS [DIR]"));
    let users: usize = args.get(2).map_or(1, |n| n.parse().expect("USERS"));
    let every: usize = args.get(4).map_or(1, |n| n.parse().expect("EVERY"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .get(3)
        .map_or(tmp.path().to_path_buf(), std::path::PathBuf::from);
    let corpus = chaff::eval::read_index(&index).expect("corpus");
    let messages: Vec<_> = corpus
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                std::fs::read(&m.path).expect("message"),
                m.gold,
            )
        })
        .collect();

    let mut settings = Settings::default();
    if let Some(cap) = args.get(5).filter(|c| *c != "default") {
        let cap: usize = cap.parse().expect("MAX_USER_TOKENS");
        settings.max_user_tokens = (cap > 0).then_some(cap);
    }
    let engine = Engine::new(reopen(&dir), settings).unwrap();
    let ids: Vec<UserId> = (0..users)
        .map(|u| UserId::new(format!("user-{u}")).unwrap())
        .collect();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for chunk in ids.chunks(users.div_ceil(2).max(1)) {
            let (engine, messages) = (&engine, &messages);
            s.spawn(move || {
                for user in chunk {
                    let u: usize = user.as_str()[5..].parse().expect("user-N");
                    let mine = messages
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % every == u % every)
                        .map(|(_, m)| m);
                    for (id, bytes, label) in mine {
                        let id = MessageId::new(id.clone()).unwrap();
                        engine.train(user, bytes, *label, Some(id)).unwrap();
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let tokens: u64 = ids
        .iter()
        .map(|u| engine.user_summary(u).unwrap().tokens)
        .sum();
    let quota = engine.stats().quota;
    let closing = std::time::Instant::now();
    engine.shutdown().unwrap();
    drop(engine);
    println!(
        "clean shutdown (snapshots, journal folded, sled closed) took {:.2} s",
        closing.elapsed().as_secs_f64()
    );

    let store = reopen(&dir);
    let usage = store.usage().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let loaded = store.load_model(&ids[0]).unwrap().unwrap();
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let model_tokens = loaded.model.token_count();
    drop(loaded);
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let disk = du(&dir);

    let learned: usize = (0..users)
        .map(|u| {
            (0..messages.len())
                .filter(|i| i % every == u % every)
                .count()
        })
        .sum();
    println!(
        "trained {learned} messages for {users} user(s) in {secs:.1} s ({:.0}/s)",
        learned as f64 / secs
    );
    println!("stored tokens (sum of model sizes): {tokens}");
    println!(
        "prunes: {} ({} tokens); compactions after them (store format 7): {} taking {:.1} ms in all, {:.1} ms each",
        quota.prunes,
        quota.pruned_tokens,
        quota.compactions,
        quota.compact_micros as f64 / 1e3,
        quota.compact_micros as f64 / 1e3 / quota.compactions.max(1) as f64
    );
    println!(
        "disk: {disk} bytes (du -s -B1 {}) = {:.1} bytes per stored token",
        dir.display(),
        disk as f64 / tokens as f64
    );
    let mut parts: Vec<_> = std::fs::read_dir(&dir)
        .expect("data directory")
        .map(|e| e.expect("entry").path())
        .collect();
    parts.sort();
    for part in parts {
        println!(
            "  {}: {} bytes",
            part.file_name().unwrap().to_string_lossy(),
            du(&part)
        );
    }
    let live: u64 = usage.iter().map(|(_, _, k, v)| k + v).sum();
    println!(
        "live records: {live} bytes = {:.1} per stored token; space amplification {:.2}x",
        live as f64 / tokens as f64,
        disk as f64 / live as f64
    );
    for (kind, n, k, v) in &usage {
        println!(
            "  {kind}: {n} records, {k} key bytes, {v} value bytes ({:.1} per stored token)",
            (k + v) as f64 / tokens as f64
        );
    }
    if args.get(6).is_some_and(|a| a == "compact") {
        let started = std::time::Instant::now();
        let done = Store::rewrite_dir(&dir, 64 << 20, &mut |_| {}).expect("compact");
        let secs = started.elapsed().as_secs_f64();
        let after = du(&dir);
        println!(
            "compacted (chaff compact) in {secs:.1} s: {} records; disk {} -> {after} bytes (du -s -B1) = {:.1} bytes per stored token; space amplification {:.2}x",
            done.records,
            done.disk_before,
            after as f64 / tokens as f64,
            after as f64 / live as f64
        );
    }
    println!(
        "memory: one reloaded model of {model_tokens} tokens takes {heap} heap bytes = {:.1} per token",
        heap as f64 / model_tokens as f64
    );
}

//! Measures what a user's model costs in memory once loaded, against the
//! model cache's estimate of it (`engine::cache::model_bytes`).
//!
//! ```sh
//! cargo run --release --example slot_cost -- [USERS [MESSAGES [WORDS [MODEL_MEMORY_MIB]]]]
//! ```
//!
//! Trains USERS users (default 50,000) with MESSAGES clicks each (default
//! 1; 0 gives each user a setting instead, so an empty model) of WORDS
//! distinct words (default 12), shuts the engine down, opens a
//! new engine over the same directory (sled's cache at 1 MiB, so it adds
//! little), and scores one message for every user, which loads each
//! user's slot (model, policy, locks, the users map's entry). It then
//! prints, per resident user: the heap bytes allocated (a counting
//! allocator), the resident set size's growth (`/proc/self/statm`, which
//! also counts the allocator's own overhead), and the cache's estimate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use chaff::engine::{Engine, Settings};
use chaff::policy::settings::SettingsUpdate;
use chaff::store::Store;
use chaff::types::{Label, MessageId, UserId};

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

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn reopen(dir: &std::path::Path, cache: u64) -> Store {
    for _ in 0..500 {
        if let Ok(s) = Store::open(dir, cache) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("cannot reopen {}", dir.display());
}

fn message(user: usize, n: usize, words: usize) -> Vec<u8> {
    // Letters only: the tokenizer keeps them as words.
    let word = |mut k: u64| {
        let mut w = String::new();
        for _ in 0..7 {
            w.push((b'a' + (k % 26) as u8) as char);
            k /= 26;
        }
        w
    };
    let seed = (user as u64).wrapping_mul(1_000_003) ^ (n as u64) << 40;
    let body: Vec<String> = (0..words as u64)
        .map(|w| word(seed.wrapping_add(w).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20))
        .collect();
    format!(
        "From: a{user}@example.com\r\nSubject: note {n}\r\n\r\n{}\r\n",
        body.join(" ")
    )
    .into_bytes()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("USERS MESSAGES WORDS are numbers"))
        .collect();
    let users = args.first().copied().unwrap_or(50_000);
    let messages = args.get(1).copied().unwrap_or(1);
    let words = args.get(2).copied().unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<UserId> = (0..users)
        .map(|u| UserId::new(format!("user-{u}@mail.example")).unwrap())
        .collect();
    {
        let settings = Settings {
            learn_delivered: false,
            ..Settings::default()
        };
        let engine = Engine::new(reopen(dir.path(), 8 << 20), settings).unwrap();
        for (u, user) in ids.iter().enumerate() {
            if messages == 0 {
                // A user with settings only: a slot with an empty model
                // and no dictionary, what the fixed cost is read from.
                let update = SettingsUpdate {
                    spam_threshold: Some(0.95),
                    ..SettingsUpdate::default()
                };
                engine.update_settings(user, &update).unwrap();
            }
            for n in 0..messages {
                let id = MessageId::new(format!("m{n}")).unwrap();
                let label = if n % 2 == 0 { Label::Spam } else { Label::Ham };
                engine
                    .train(user, &message(u, n, words), label, Some(id))
                    .unwrap();
            }
        }
        engine.shutdown().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The store alone: what loading each user's model leaves in the
    // store's own memory (the token dictionaries' cache), apart from the
    // engine's slot.
    let dicts_per_user = {
        let store = reopen(dir.path(), 1 << 20);
        store.load_model(&ids[0]).unwrap();
        let before = LIVE.load(Ordering::Relaxed);
        for user in &ids[1..] {
            drop(store.load_model(user).unwrap());
        }
        (LIVE.load(Ordering::Relaxed) - before) as f64 / (users - 1) as f64
    };
    // The same with the dictionary cache bounded to 64 KiB: what loading
    // users keeps past its bound (nothing, if it is a bound).
    let past_bound = {
        let store = reopen(dir.path(), 1 << 20);
        store.set_dict_cache_bytes(64 << 10);
        store.load_model(&ids[0]).unwrap();
        let before = LIVE.load(Ordering::Relaxed);
        for user in &ids[1..] {
            drop(store.load_model(user).unwrap());
        }
        (LIVE.load(Ordering::Relaxed) - before) as f64 / (users - 1) as f64
    };
    std::thread::sleep(std::time::Duration::from_millis(300));

    let mut settings = Settings {
        learn_delivered: false,
        ..Settings::default()
    };
    if let Some(mib) = args.get(3) {
        settings.model_memory = mib << 20;
    }
    let engine = Engine::new(reopen(dir.path(), 1 << 20), settings).unwrap();
    let probe = message(usize::MAX, 0, words);
    // One user first, so lazily built state (thread locals, the shared
    // model's empty parts) is not charged to the users measured.
    engine.score(&ids[0], &probe[..]).unwrap();
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let est0 = engine.stats().cache.resident_bytes;
    for user in &ids[1..] {
        engine.score(user, &probe[..]).unwrap();
    }
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let stats = engine.stats().cache;
    let n = (users - 1) as f64;
    let tokens: u64 = ids[1..]
        .iter()
        .map(|u| engine.user_summary(u).unwrap().tokens)
        .sum();
    println!(
        "{users} users, {messages} message(s) of {words} words each: {:.1} tokens a user; {} resident",
        tokens as f64 / n,
        stats.resident_users
    );
    println!("per user loaded: heap {:.0} B", (heap1 - heap0) as f64 / n);
    let n = stats.resident_users.max(1) as f64;
    println!(
        "per resident user: heap {:.0} B, RSS {:.0} B, cache estimate {:.0} B",
        (heap1 - heap0) as f64 / n,
        rss1.saturating_sub(rss0) as f64 / n,
        (stats.resident_bytes - est0) as f64 / n
    );
    println!(
        "of which the store keeps (token dictionary cache, loading the model with no engine): {dicts_per_user:.0} B; with that cache bounded to 64 KiB: {past_bound:.1} B"
    );
}

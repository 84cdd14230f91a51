//! The model cache on a real sled directory: a tiny budget forces
//! evictions, and nothing a user did may be lost or changed by them.

use super::*;
use crate::types::Label;
use crate::types::MessageId;

fn engine_with_budget(dir: &std::path::Path, model_memory: usize) -> Engine {
    let store = Store::open(dir, 16 << 20).unwrap();
    let settings = Settings {
        model_memory,
        ..Settings::default()
    };
    Engine::new(store, settings).unwrap()
}

fn user(i: usize) -> UserId {
    UserId::new(format!("u{i}")).unwrap()
}

fn message(i: usize, words: &str) -> Vec<u8> {
    format!(
        "From: s{i}@example.org\r\nSubject: note {i} {words}\r\n\r\n{words} number{i} word{} word{}\r\n",
        i % 7,
        i % 13
    )
    .into_bytes()
}

fn id(i: usize) -> Option<MessageId> {
    Some(MessageId::new(format!("m{i}")).unwrap())
}

/// What a user looks like from outside: counts, tokens, two scores.
fn observe(e: &Engine, u: &UserId) -> (UserSummary, f64, f64) {
    let s = e.score(u, &message(0, "cheap pills")).unwrap().probability;
    let h = e
        .score(u, &message(1, "meeting agenda"))
        .unwrap()
        .probability;
    (e.user_summary(u).unwrap(), s, h)
}

/// Trains `users` users the same way on `e`, including relearns and
/// forgets, which read the ledger of a possibly evicted user.
fn train_all(e: &Engine, users: usize) {
    for round in 0..6 {
        for u in 0..users {
            let i = round * 100 + u;
            let (words, label) = if i % 2 == 0 {
                ("cheap pills offer", Label::Spam)
            } else {
                ("meeting agenda notes", Label::Ham)
            };
            e.train(&user(u), &message(i, words), label, id(i)).unwrap();
        }
        if round == 3 {
            for u in 0..users {
                let i = 100 + u;
                e.train(&user(u), &message(i, "flip"), Label::Spam, id(i))
                    .unwrap();
                e.forget(&user(u), &id(200 + u).unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn evicted_users_come_back_exactly_as_they_were() {
    let (roomy_dir, tight_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let roomy = engine_with_budget(roomy_dir.path(), 1 << 30);
    // Room for about two of these small models.
    let tight = engine_with_budget(tight_dir.path(), 2 * model_bytes(40));
    train_all(&roomy, 8);
    train_all(&tight, 8);
    let stats = tight.stats().cache;
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.misses > 8, "evicted users were reloaded: {stats:?}");
    assert!(stats.resident_users < 8, "{stats:?}");
    assert_eq!(roomy.stats().cache.evictions, 0);
    for u in 0..8 {
        assert_eq!(
            observe(&tight, &user(u)),
            observe(&roomy, &user(u)),
            "user {u}"
        );
    }
}

#[test]
fn concurrent_clicks_under_a_tiny_budget_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(engine_with_budget(dir.path(), model_bytes(10)));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for n in 0..40 {
                    // Two threads per user, so clicks of one user overlap.
                    let u = user((t + n) % 3);
                    let i = t * 1000 + n;
                    let label = if n % 2 == 0 { Label::Spam } else { Label::Ham };
                    e.train(&u, &message(i, "words here"), label, id(i))
                        .unwrap();
                    e.score(&user(n % 5), &message(n, "x")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(e.stats().cache.evictions > 0);
    let learned: u64 = (0..3)
        .map(|u| {
            let s = e.user_summary(&user(u)).unwrap();
            s.spam_learned + s.ham_learned
        })
        .sum();
    assert_eq!(learned, 160);
    // Memory agrees with storage: a fresh engine sees the same users.
    let seen: Vec<_> = (0..3).map(|u| observe(&e, &user(u))).collect();
    e.shutdown().unwrap();
    drop(e);
    let store = crate::store::open_waiting(dir.path(), 16 << 20);
    let e = Engine::new(store, Settings::default()).unwrap();
    for (u, before) in seen.iter().enumerate() {
        assert_eq!(&observe(&e, &user(u)), before, "user {u}");
    }
}

#[test]
fn hits_and_misses_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_budget(dir.path(), 1 << 30);
    e.score(&user(0), b"hello").unwrap();
    assert_eq!(e.stats().cache.absent, 1);
    e.train(&user(0), &message(0, "a"), Label::Spam, id(0))
        .unwrap();
    e.score(&user(0), b"hello").unwrap();
    let s = e.stats().cache;
    // Train looks the slot up twice (before and under the writer lock).
    assert_eq!((s.misses, s.hits, s.resident_users), (1, 2, 1));
    assert!(s.resident_bytes >= model_bytes(1) as u64);
}

/// [`cache::SLOT_BYTES`] was measured with a 216-byte `UserSlot`
/// (`examples/slot_cost.rs`); a slot grown past that makes the cache's
/// charge for idle users too low again, as it was when two empty lists
/// sat inline (632 bytes, charged 512, costing 1,079).
#[test]
fn a_slot_is_as_small_as_its_charge_assumes() {
    let slot = std::mem::size_of::<super::UserSlot>();
    assert!(
        slot <= 224,
        "UserSlot is {slot} bytes; re-measure cache::SLOT_BYTES with `cargo run --release --example slot_cost -- 20000 0`"
    );
    assert!(std::mem::size_of::<crate::policy::lists::List>() <= 8);
    assert!(
        slot + 16 + 2 * std::mem::size_of::<(UserId, Arc<super::UserSlot>)>() < cache::SLOT_BYTES
    );
}

//! The per-user quota on a real sled directory: a model past its cap is
//! pruned after the click, the pruned model is what storage reloads, and
//! Forget of a click whose tokens were pruned keeps the model consistent.

use super::*;
use crate::types::{Label, MessageId};

fn engine(dir: &std::path::Path, cap: Option<usize>) -> Engine {
    let store = crate::store::open_waiting(dir, 16 << 20);
    let settings = Settings {
        max_user_tokens: cap,
        ..Settings::default()
    };
    Engine::new(store, settings).unwrap()
}

/// A message of its own words: `n`'s tokens overlap no other message's
/// body tokens.
fn message(n: usize) -> Vec<u8> {
    let words: Vec<String> = (0..8).map(|w| format!("w{n}x{w}")).collect();
    format!(
        "From: a@example.org\r\nSubject: s{n}\r\n\r\n{}\r\n",
        words.join(" ")
    )
    .into_bytes()
}

fn id(n: usize) -> Option<MessageId> {
    Some(MessageId::new(format!("m{n}")).unwrap())
}

fn label(n: usize) -> Label {
    if n.is_multiple_of(2) {
        Label::Spam
    } else {
        Label::Ham
    }
}

#[test]
fn a_model_past_its_cap_is_pruned_after_the_click_and_reloads_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let u = UserId::new("q").unwrap();
    let cap = 60;
    let (summary, probe) = {
        let e = engine(dir.path(), Some(cap));
        for n in 0..30 {
            e.train(&u, &message(n), label(n), id(n)).unwrap();
            let tokens = e.user_summary(&u).unwrap().tokens as usize;
            assert!(tokens <= cap, "{tokens} tokens after click {n}, cap {cap}");
        }
        let stats = e.stats().quota;
        assert!(stats.prunes > 0 && stats.pruned_tokens > 0, "{stats:?}");
        let summary = e.user_summary(&u).unwrap();
        let probe = e.score(&u, &message(29)).unwrap().probability;
        e.shutdown().unwrap();
        (summary, probe)
    };
    assert_eq!((summary.spam_learned, summary.ham_learned), (15, 15));
    let e = engine(dir.path(), Some(cap));
    assert_eq!(e.user_summary(&u).unwrap(), summary);
    assert_eq!(e.score(&u, &message(29)).unwrap().probability, probe);
    // Without a cap the same clicks keep every token.
    let dir2 = tempfile::tempdir().unwrap();
    let e2 = engine(dir2.path(), None);
    for n in 0..30 {
        e2.train(&u, &message(n), label(n), id(n)).unwrap();
    }
    assert!(e2.user_summary(&u).unwrap().tokens as usize > 2 * cap);
}

#[test]
fn forget_and_relearn_of_clicks_whose_tokens_were_pruned_keep_the_model_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let u = UserId::new("q").unwrap();
    let e = engine(dir.path(), Some(40));
    for n in 0..20 {
        e.train(&u, &message(n), label(n), id(n)).unwrap();
    }
    // The oldest clicks' own tokens are gone by now.
    let m0 = e.user_summary(&u).unwrap();
    assert!(m0.tokens <= 40);
    // Relearn one old click with the other label, forget the others.
    e.train(&u, &message(0), Label::Ham, id(0)).unwrap();
    for n in 1..20 {
        e.forget(&u, &id(n).unwrap()).unwrap();
    }
    e.forget(&u, &id(0).unwrap()).unwrap();
    let s = e.user_summary(&u).unwrap();
    assert_eq!((s.spam_learned, s.ham_learned, s.tokens), (0, 0, 0));
    e.shutdown().unwrap();
    drop(e);
    let e = engine(dir.path(), Some(40));
    assert_eq!(e.user_summary(&u).unwrap().tokens, 0);
}

#[test]
fn the_shared_model_past_its_cap_is_pruned_and_stays_the_exact_sum() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let cap = 50;
    let e = Engine::new(
        store,
        Settings {
            max_shared_tokens: Some(cap),
            ..Settings::default()
        },
    )
    .unwrap();
    for n in 0..20 {
        e.seed(&message(n), label(n), id(n)).unwrap();
        let tokens = e.shared_summary().tokens as usize;
        assert!(tokens <= cap, "{tokens} shared tokens after seed {n}");
    }
    assert!(e.stats().quota.prunes > 0);
    let s = e.shared_summary();
    assert_eq!((s.spam_learned, s.ham_learned), (10, 10));
    // The sum is still exactly the operator's part: clearing the seed
    // leaves nothing behind.
    e.clear_seed().unwrap();
    assert_eq!(e.shared_summary().tokens, 0);
    assert_eq!(e.stats().cache.shared_bytes, 0);
}

/// A message of its own words and four of ten common ones: the common
/// words are pruned as weak and old, then brought back by later clicks —
/// the case where a Forget of an older click used to take a later click's
/// counts (docs/PERFORMANCE.md, "Pruned tokens and the ledger").
fn overlapping(n: usize) -> Vec<u8> {
    let mut words: Vec<String> = (0..6).map(|w| format!("o{n}y{w}")).collect();
    words.extend((0..4).map(|k| format!("common{}", (n + k * 3) % 10)));
    format!(
        "From: b@example.org\r\nSubject: t{n}\r\n\r\n{}\r\n",
        words.join(" ")
    )
    .into_bytes()
}

/// Each token's counts in `model`, sorted by id.
fn counts(model: &crate::classify::Model) -> Vec<(u64, crate::classify::Counts)> {
    let mut v: Vec<_> = model.iter_stamped().map(|(id, c, _)| (id.0, c)).collect();
    v.sort_unstable_by_key(|(id, _)| *id);
    v
}

/// The model the ledger entries of `live` clicks name: each one's ids
/// under its label and weight.
fn ledger_sum(e: &Engine, u: &UserId, live: &[usize]) -> crate::classify::Model {
    let mut sum = crate::classify::Model::default();
    for n in live {
        let entry = e.store().ledger_get(u, &id(*n).unwrap()).unwrap().unwrap();
        sum.learn_weighted(&entry.tokens, entry.label, entry.weight);
    }
    sum
}

#[test]
fn after_prunes_the_model_is_the_sum_of_its_ledger_and_each_forget_takes_out_exactly_its_click() {
    // Without the compaction after each prune the first assertion fails:
    // entries still name the pruned tokens (checked).
    let dir = tempfile::tempdir().unwrap();
    let u = UserId::new("exact").unwrap();
    let e = engine(dir.path(), Some(40));
    let clicks = 40;
    for n in 0..clicks {
        e.train(&u, &overlapping(n), label(n), id(n)).unwrap();
    }
    let q = e.stats().quota;
    assert!(q.prunes > 3, "{q:?}");
    let mut live: Vec<usize> = (0..clicks).collect();
    let model = || e.store().load_model(&u).unwrap().unwrap().model;
    assert_eq!(counts(&model()), counts(&ledger_sum(&e, &u, &live)));
    // Oldest first: the clicks whose tokens were pruned and came back.
    while let Some(n) = live.first().copied() {
        live.remove(0);
        e.forget(&u, &id(n).unwrap()).unwrap();
        assert_eq!(
            counts(&model()),
            counts(&ledger_sum(&e, &u, &live)),
            "after forgetting click {n}"
        );
    }
    let s = e.user_summary(&u).unwrap();
    assert_eq!((s.spam_learned, s.ham_learned, s.tokens), (0, 0, 0));
    assert!(e.stats().quota.compactions > 0);
}

#[test]
fn a_consenting_user_s_forget_after_prunes_still_takes_exactly_its_click_out_of_the_shared_model() {
    // The shared part is undone with the entry's ids: a shared click's
    // entry keeps the ids the user's model pruned (without that exception
    // the shared model keeps tokens no click backs: checked).
    let dir = tempfile::tempdir().unwrap();
    let u = UserId::new("sharer").unwrap();
    let e = engine(dir.path(), Some(40));
    e.update_settings(
        &u,
        &crate::policy::settings::SettingsUpdate {
            share_training: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    let clicks = 30;
    for n in 0..clicks {
        e.train(&u, &overlapping(n), label(n), id(n)).unwrap();
    }
    assert!(e.stats().quota.prunes > 0);
    let shared = e.shared_summary();
    assert_eq!((shared.spam_learned, shared.ham_learned), (15, 15));
    for n in 0..clicks {
        e.forget(&u, &id(n).unwrap()).unwrap();
    }
    let shared = e.shared_summary();
    assert_eq!(
        (shared.spam_learned, shared.ham_learned, shared.tokens),
        (0, 0, 0)
    );
    assert_eq!(e.user_summary(&u).unwrap().tokens, 0);
}

//! The per-user quota on a real sled directory: a model past its cap is
//! pruned after the click, the pruned model is what storage reloads, and
//! Forget of a click whose tokens were pruned keeps the model consistent.

use super::*;
use crate::types::{Label, MessageId};

fn engine(dir: &std::path::Path, cap: Option<usize>) -> Engine {
    let store = Store::open(dir, 16 << 20).unwrap();
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

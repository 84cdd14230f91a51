//! The background learner of delivered mail (`delivered.rs`): a click
//! wins over learning still queued, a full queue drops and counts, the
//! worker learns what Score queued.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{engine, user};
use super::*;
use crate::classify::Model;
use crate::types::{Label, MessageId};

const SPAM: &[u8] = b"From: promo@pills.example\r\nSubject: cheap pills now\r\nMessage-ID: <s1@pills.example>\r\n\r\nbuy cheap pills viagra discount offer\r\n";
const HAM: &[u8] = b"From: bob@work.example\r\nSubject: meeting notes\r\nMessage-ID: <h1@work.example>\r\n\r\nthe quarterly meeting notes are attached, see agenda\r\n";

fn ham(i: usize) -> Vec<u8> {
    format!(
        "From: bob@work.example\r\nSubject: notes {i}\r\nMessage-ID: <h{i}@work.example>\r\n\r\nminutes of meeting {i}, the agenda and budget{i}\r\n"
    )
    .into_bytes()
}

fn model(e: &Engine, u: &UserId) -> Model {
    e.slot(u).unwrap().unwrap().model.read().clone()
}

/// A click on mail whose delivery learning is still queued — or already
/// taken by the worker, not yet written — wins: the worker skips it, and
/// the model is exactly the click's alone, whichever id the click names.
/// Forget does the same for a message not yet learned.
#[test]
fn a_click_wins_over_delivered_learning_not_yet_written() {
    for taken_first in [false, true] {
        for id in [Some("webmail-7"), None] {
            let id = id.map(|s| MessageId::new(s).unwrap());
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (queued, clicked_only) = (engine(a.path()), engine(b.path()));
            queued.queue_delivered_without_worker();
            let u = user("alice");
            for e in [&queued, &clicked_only] {
                e.train(&u, SPAM, Label::Spam, None).unwrap();
            }
            let before = model(&queued, &u);
            queued.evaluate(&u, HAM, &Envelope::default()).unwrap();
            assert_eq!(model(&queued, &u), before, "Score only queued it");
            assert_eq!(queued.stats().delivered.queued, 1);
            let batch = if taken_first {
                queued.take_delivered()
            } else {
                Vec::new()
            };
            let t = queued.train(&u, HAM, Label::Spam, id.clone()).unwrap();
            assert_eq!(t.outcome, TrainOutcome::Learned);
            clicked_only
                .train(&u, HAM, Label::Spam, id.clone())
                .unwrap();
            let batch = if taken_first {
                batch
            } else {
                queued.take_delivered()
            };
            queued.learn_delivered_batch(batch);
            let case = format!("taken first {taken_first}, id {id:?}");
            assert_eq!(model(&queued, &u), model(&clicked_only, &u), "{case}");
            let derived = derive_message_id(HAM);
            let key = id.clone().unwrap_or(derived.clone());
            assert!(
                !queued
                    .store()
                    .ledger_get(&u, &key)
                    .unwrap()
                    .unwrap()
                    .implicit
            );
            if key != derived {
                assert_eq!(queued.store().ledger_get(&u, &derived).unwrap(), None);
            }
            let stats = queued.stats().delivered;
            assert_eq!((stats.queued, stats.learned), (0, 0), "{case}");
        }
    }

    // Forget of a message whose delivery is still queued: not learned later.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    e.queue_delivered_without_worker();
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    e.evaluate(&u, HAM, &Envelope::default()).unwrap();
    let before = model(&e, &u);
    assert!(
        e.forget(&u, &derive_message_id(HAM)).is_err(),
        "nothing learned yet"
    );
    let batch = e.take_delivered();
    assert!(batch.is_empty(), "the Forget took it out of the queue");
    e.learn_delivered_batch(batch);
    assert_eq!(model(&e, &u), before);
}

/// A full queue drops what Score offers it, counts it, and Score learns
/// nothing inline meanwhile; what was queued is learned later.
#[test]
fn a_full_queue_drops_and_counts_and_score_does_not_learn_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path(), 16 << 20).unwrap();
    let settings = Settings {
        delivered_queue: 2,
        ..Settings::default()
    };
    let e = Engine::new(store, settings).unwrap();
    e.queue_delivered_without_worker();
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    let before = model(&e, &u);
    for i in 0..5 {
        e.evaluate(&u, &ham(i), &Envelope::default()).unwrap();
    }
    assert_eq!(model(&e, &u), before);
    let s = e.stats().delivered;
    assert_eq!((s.queued, s.learned, s.dropped), (2, 0, 3));
    let batch = e.take_delivered();
    e.learn_delivered_batch(batch);
    let s = e.stats().delivered;
    assert_eq!((s.queued, s.learned, s.dropped), (0, 2, 3));
    assert_eq!(model(&e, &u).ham_learned(), 2);
    for i in 0..2 {
        let entry = e.store().ledger_get(&u, &derive_message_id(&ham(i)));
        assert!(entry.unwrap().unwrap().implicit, "message {i}");
    }
}

/// With the worker running, Score's queued learning lands soon after,
/// once per message; shutdown stops it, and later deliveries are dropped.
#[test]
fn the_worker_learns_what_score_queued_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(engine(dir.path()));
    e.start_delivered_learner();
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    for _ in 0..3 {
        e.evaluate(&u, HAM, &Envelope::default()).unwrap();
    }
    assert!(e.settle_delivered(Duration::from_secs(10)));
    assert_eq!(model(&e, &u).ham_learned(), 1);
    let s = e.stats().delivered;
    assert_eq!((s.queued, s.learned, s.dropped), (0, 1, 0));
    e.shutdown().unwrap();
    e.evaluate(&u, &ham(9), &Envelope::default()).unwrap();
    assert_eq!(e.stats().delivered.dropped, 1);
    assert_eq!(model(&e, &u).ham_learned(), 1);
}

/// The model keeps the ham it learned from delivered mail apart from the
/// ham the user clicked (what `Params::header_strength_ramp`
/// reads): delivery adds to the delivered side, and a click on that mail
/// (under the caller's id or chaff's), its Forget or a *Spam* click on it
/// takes it off again; only *Not spam* clicks count as clicked ham.
#[test]
fn delivered_ham_is_kept_apart_from_clicked_ham() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    let mut delivered = Vec::new();
    for i in 1..=4 {
        let read = e.read(&ham(i)).unwrap();
        let id = derive_message_id(&ham(i));
        assert!(e.learn_delivered(&u, &read, &id).unwrap());
        let entry = e.store().ledger_get(&u, &id).unwrap().unwrap();
        delivered.push(u64::from(entry.weight.0));
    }
    let m = model(&e, &u);
    assert_eq!(m.weights().1, delivered.iter().sum::<u64>());
    assert_eq!(m.clicked_ham_weight(), 0, "delivered mail is not a click");

    // A Not spam click on new mail, and on delivered mail under the
    // caller's id and under chaff's: clicked ham, and the delivered
    // learning they replace is off the delivered side.
    let mut clicked = 0;
    for (i, id) in [(10, None), (1, Some("webmail-1")), (2, None)] {
        let id = id.map(|s| MessageId::new(s).unwrap());
        e.train(&u, &ham(i), Label::Ham, id.clone()).unwrap();
        let key = id.unwrap_or_else(|| derive_message_id(&ham(i)));
        clicked += u64::from(e.store().ledger_get(&u, &key).unwrap().unwrap().weight.0);
    }
    let m = model(&e, &u);
    assert_eq!(m.clicked_ham_weight(), clicked);
    assert_eq!(m.weights().1 - clicked, delivered[2] + delivered[3]);

    // Forgotten, or clicked Spam: off the delivered side, not the clicked.
    e.forget(&u, &derive_message_id(&ham(3))).unwrap();
    e.train(&u, &ham(4), Label::Spam, None).unwrap();
    let m = model(&e, &u);
    assert_eq!(m.clicked_ham_weight(), clicked);
    assert_eq!(m.weights().1, clicked, "no delivered ham left");
}

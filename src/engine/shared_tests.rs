//! The shared model through the engine, on real sled directories: consent,
//! exact removal (compared against engines that never saw the clicks),
//! poisoning resistance, cold start, and the bit-identity of scores when
//! nothing is shared.

use super::tests::{engine, user};
use super::*;
use crate::policy::settings::SettingsUpdate;
use crate::types::{Label, MessageId, Verdict};

/// A small message of a family: shared words, its own Message-ID.
fn message(from: &str, subject: &str, body: &str, id: &str) -> Vec<u8> {
    format!("From: {from}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\r\n{body}\r\n")
        .into_bytes()
}

fn spam(i: usize) -> Vec<u8> {
    message(
        "deals@pills.example",
        "cheap pills discount",
        &format!("buy cheap viagra pills now, huge discount offer, order today {i}"),
        &format!("s{i}@pills.example"),
    )
}

fn ham(i: usize) -> Vec<u8> {
    message(
        "carol@work.example",
        "agenda for the planning meeting",
        &format!("the quarterly planning meeting notes and budget agenda are attached {i}"),
        &format!("h{i}@work.example"),
    )
}

const NEWSLETTER: &str = "weekly digest from the gardening club: pruning roses, autumn bulbs";

fn newsletter(copy: usize) -> Vec<u8> {
    message(
        "news@garden.example",
        "Garden club weekly digest",
        &format!("{NEWSLETTER} issue{copy}"),
        &format!("n{copy}@garden.example"),
    )
}

fn consent(e: &Engine, u: &UserId, on: bool) {
    e.update_settings(
        u,
        &SettingsUpdate {
            share_training: Some(on),
            ..Default::default()
        },
    )
    .unwrap();
}

fn id(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

/// Two engines on fresh directories: one for the history with the clicks
/// to be removed, one for the history that never had them.
fn two_engines() -> (tempfile::TempDir, Engine, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (engine(&dir.path().join("a")), engine(&dir.path().join("b")));
    (dir, a, b)
}

/// Common history: two consenting users and a seed.
fn background(e: &Engine) {
    for (u, n) in [("bob", 0), ("carol", 10)] {
        let u = user(u);
        consent(e, &u, true);
        e.train(&u, &spam(n), Label::Spam, None).unwrap();
        e.train(&u, &ham(n), Label::Ham, None).unwrap();
    }
    e.seed(&spam(20), Label::Spam, Some(id("corpus/1")))
        .unwrap();
    e.seed(&ham(20), Label::Ham, Some(id("corpus/2"))).unwrap();
}

#[test]
fn revoking_consent_leaves_the_shared_model_as_if_the_user_never_shared() {
    let (_dir, with, without) = two_engines();
    let alice = user("alice");
    for e in [&with, &without] {
        background(e);
    }
    consent(&with, &alice, true);
    for i in 30..33 {
        with.train(&alice, &spam(i), Label::Spam, None).unwrap();
    }
    with.train(&alice, &newsletter(0), Label::Spam, None)
        .unwrap();
    assert_ne!(with.shared_model(), without.shared_model());
    consent(&with, &alice, false);
    assert_eq!(with.shared_model(), without.shared_model());
    assert!(!with.user_settings(&alice).unwrap().share_training);
    // The user's own model keeps every click.
    assert_eq!(with.user_summary(&alice).unwrap().spam_learned, 4);
    // Forgetting a click shared before the revoke does not touch the
    // shared model again.
    with.forget(&alice, &id("<n0@garden.example>")).unwrap();
    assert_eq!(with.shared_model(), without.shared_model());
}

#[test]
fn forget_takes_exactly_that_click_out_of_the_shared_model() {
    let (_dir, with, without) = two_engines();
    let alice = user("alice");
    for e in [&with, &without] {
        background(e);
        consent(e, &alice, true);
        e.train(&alice, &ham(40), Label::Ham, None).unwrap();
    }
    let t = with.train(&alice, &spam(41), Label::Spam, None).unwrap();
    assert_ne!(with.shared_model(), without.shared_model());
    with.forget(&alice, &t.message_id).unwrap();
    assert_eq!(with.shared_model(), without.shared_model());
}

#[test]
fn a_flipped_click_moves_in_the_shared_model_exactly() {
    let (_dir, flipped, direct) = two_engines();
    let alice = user("alice");
    for e in [&flipped, &direct] {
        background(e);
        consent(e, &alice, true);
    }
    flipped
        .train(&alice, &newsletter(1), Label::Spam, None)
        .unwrap();
    let moved = flipped
        .train(&alice, &newsletter(1), Label::Ham, None)
        .unwrap();
    assert_eq!(moved.outcome, TrainOutcome::Relearned);
    direct
        .train(&alice, &newsletter(1), Label::Ham, None)
        .unwrap();
    assert_eq!(flipped.shared_model(), direct.shared_model());
}

#[test]
fn delete_user_removes_everything_of_theirs_and_their_shared_part() {
    let (_dir, with, without) = two_engines();
    let alice = user("alice");
    for e in [&with, &without] {
        background(e);
    }
    consent(&with, &alice, true);
    with.train(&alice, &spam(50), Label::Spam, None).unwrap();
    with.train(&alice, &ham(50), Label::Ham, None).unwrap();
    with.add_list_entry(
        &ListRef {
            owner: crate::types::Owner::User(alice.clone()),
            kind: crate::policy::ListKind::Block,
        },
        &"pills.example".parse().unwrap(),
    )
    .unwrap();
    assert!(with.delete_user(&alice).unwrap());
    assert_eq!(with.shared_model(), without.shared_model());
    assert_eq!(
        with.user_summary(&alice).unwrap(),
        without.user_summary(&alice).unwrap()
    );
    assert_eq!(with.user_settings(&alice).unwrap(), UserSettings::default());
    assert!(!with.store.user_exists(&alice).unwrap());
    assert!(
        with.store
            .ledger_get(&alice, &id("<s50@pills.example>"))
            .unwrap()
            .is_none()
    );
    // Deleting again finds nothing; the user can start over.
    assert!(!with.delete_user(&alice).unwrap());
    let again = with.train(&alice, &spam(50), Label::Spam, None).unwrap();
    assert_eq!(again.outcome, TrainOutcome::Learned);
}

#[test]
fn decisions_scored_just_before_a_delete_are_not_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let alice = user("alice");
    e.train(&alice, &spam(1), Label::Spam, None).unwrap();
    e.train(&alice, &ham(1), Label::Ham, None).unwrap();
    // Queued for the log (written ~20 ms later), then the user is deleted.
    for i in 0..20 {
        e.evaluate(&alice, &spam(100 + i), &Envelope::default())
            .unwrap();
    }
    assert!(e.delete_user(&alice).unwrap());
    // Well past the writer's linger: nothing of alice's came back.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!e.store.user_exists(&alice).unwrap());
}

#[test]
fn clearing_the_seed_leaves_exactly_the_users_contributions() {
    let (_dir, seeded, never) = two_engines();
    for e in [&seeded, &never] {
        let bob = user("bob");
        consent(e, &bob, true);
        e.train(&bob, &spam(1), Label::Spam, None).unwrap();
    }
    for i in 0..5 {
        let s = seeded.seed(&spam(60 + i), Label::Spam, None).unwrap();
        assert_eq!(s.outcome, TrainOutcome::Learned);
    }
    let again = seeded.seed(&spam(60), Label::Spam, None).unwrap();
    assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
    assert_eq!(seeded.shared_summary().seed_spam, 5);
    assert_eq!(seeded.clear_seed().unwrap(), (5, 0));
    assert_eq!(seeded.shared_model(), never.shared_model());
    assert_eq!(seeded.shared_summary().seed_spam, 0);
    // The seed's ledger went with it: seeding again learns afresh.
    let fresh = seeded.seed(&spam(60), Label::Spam, None).unwrap();
    assert_eq!(fresh.outcome, TrainOutcome::Learned);
}

#[test]
fn clicks_of_users_who_do_not_consent_never_reach_the_shared_model() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    background(&e);
    let before = e.shared_model();
    let dave = user("dave");
    e.train(&dave, &spam(70), Label::Spam, None).unwrap();
    e.train(&dave, &ham(70), Label::Ham, None).unwrap();
    e.train(&dave, &ham(70), Label::Spam, None).unwrap();
    consent(&e, &dave, true);
    consent(&e, &dave, false);
    e.forget(&dave, &id("<s70@pills.example>")).unwrap();
    assert_eq!(e.shared_model(), before);
    assert_eq!(e.user_summary(&dave).unwrap().spam_learned, 1);
}

#[test]
fn after_re_consent_only_later_clicks_are_shared() {
    let (_dir, with, without) = two_engines();
    let alice = user("alice");
    for e in [&with, &without] {
        background(e);
    }
    consent(&with, &alice, true);
    with.train(&alice, &spam(80), Label::Spam, None).unwrap();
    consent(&with, &alice, false);
    consent(&with, &alice, true);
    for e in [&with, &without] {
        consent(e, &alice, true);
        e.train(&alice, &ham(81), Label::Ham, None).unwrap();
    }
    assert_eq!(with.shared_model(), without.shared_model());
    // The click from the earlier consent is not in the shared part, so
    // flipping or forgetting it must not take anything out of it.
    with.train(&alice, &spam(80), Label::Ham, None).unwrap();
    without
        .train(
            &alice,
            &spam(80),
            Label::Ham,
            Some(id("<s80@pills.example>")),
        )
        .unwrap();
    assert_eq!(with.shared_model(), without.shared_model());
}

#[test]
fn one_user_with_1000_hostile_clicks_cannot_flip_a_newsletter_50_users_read_as_ham() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    for i in 0..50 {
        let u = user(&format!("reader{i}"));
        consent(&e, &u, true);
        e.train(&u, &newsletter(0), Label::Ham, None).unwrap();
    }
    let hostile = user("mallory");
    consent(&e, &hostile, true);
    for copy in 1..=1000 {
        e.train(&hostile, &newsletter(copy), Label::Spam, None)
            .unwrap();
    }
    let ids = e.settings.tokenizer.tokenize(&newsletter(0)).ids;
    let shared = e.shared_model();
    let theirs = e
        .shared
        .read()
        .contribution(&Owner::User(hostile.clone()))
        .unwrap()
        .clone();
    for t in &ids {
        let s = shared.get(*t).unwrap_or_default();
        let mine = theirs.get(*t).unwrap_or_default();
        if mine.spam > 0 {
            assert!(s.ham > s.spam, "token {t:?}: {s:?}");
        }
    }
    // The flood was real: far more than the cap let through.
    let flooded = ids
        .iter()
        .filter(|t| {
            theirs.get(**t).unwrap_or_default().spam >= 10 * crate::classify::shared::TOKEN_CAP
        })
        .count();
    assert!(flooded > 5, "the test needs a real flood ({flooded})");
    let fresh = user("newcomer");
    consent(&e, &fresh, true);
    let scored = e.score(&fresh, &newsletter(5000)).unwrap();
    assert_eq!(scored.verdict, Verdict::Ham, "{scored:?}");
    assert!(scored.user_share < 0.01);
    // Durable across a restart, snapshot and journal (1,000 clicks are
    // far more journal entries than the part has tokens: checkpoint_due),
    // and still the same shared model.
    e.shutdown().unwrap();
    drop(e);
    let e = engine(dir.path());
    assert_eq!(e.shared_model(), shared);
    assert_eq!(
        e.score(&fresh, &newsletter(5000)).unwrap().verdict,
        Verdict::Ham
    );
}

#[test]
fn a_new_user_is_protected_by_the_shared_model_from_the_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    for i in 0..5 {
        let u = user(&format!("u{i}"));
        consent(&e, &u, true);
        e.train(&u, &spam(i), Label::Spam, None).unwrap();
        e.train(&u, &ham(i), Label::Ham, None).unwrap();
    }
    let newcomer = user("newcomer");
    let s = e.score(&newcomer, &spam(99)).unwrap();
    assert_eq!(s.verdict, Verdict::Spam, "{s:?}");
    assert_eq!(s.user_share, 0.0);
    let h = e.score(&newcomer, &ham(99)).unwrap();
    assert_eq!(h.verdict, Verdict::Ham, "{h:?}");
    // The policy path (Score RPC) uses the same blend and explains it.
    let ev = e
        .evaluate(&newcomer, &spam(99), &Envelope::default())
        .unwrap();
    assert_eq!(ev.scored, s);
    assert_eq!(ev.record.user_share, 0.0);
    // Named, though the newcomer has no model: the shared model's features.
    assert!(!ev.record.spam_features.is_empty());
    assert!(
        ev.record
            .spam_features
            .iter()
            .all(|f| !f.name.starts_with("token:")),
        "{:?}",
        ev.record.spam_features
    );
}

#[test]
fn with_nothing_shared_scores_are_bit_identical_to_the_users_own_model() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (alice, bob) = (user("alice"), user("bob"));
    for i in 0..3 {
        e.train(&alice, &spam(i), Label::Spam, None).unwrap();
        e.train(&alice, &ham(i), Label::Ham, None).unwrap();
    }
    // Bob shares; only his own part is in the shared model, and it is left
    // out of his prior: for him, too, nothing is shared.
    consent(&e, &bob, true);
    e.train(&bob, &spam(5), Label::Spam, None).unwrap();
    for (u, m) in [
        (&alice, spam(9)),
        (&alice, ham(9)),
        (&alice, newsletter(1)),
        (&bob, spam(9)),
    ] {
        let v = e.score_views(u, &m).unwrap();
        let own = {
            let slot = e.slot(u).unwrap().unwrap();
            let tokens = e.settings.tokenizer.tokenize(&m);
            slot.model.read().score(&tokens.ids, &e.settings.params)
        };
        if *u == alice {
            // Alice's prior is Bob's click: only tokens he saw may differ.
            continue;
        }
        assert_eq!(v.blended.log_odds.to_bits(), own.log_odds.to_bits());
        assert_eq!(v.blended.probability.to_bits(), own.probability.to_bits());
        assert_eq!(v.blended, v.user_only);
        assert_eq!(v.shared_only.probability, 0.5);
    }
    // With no shared model at all, Alice's score is her own, bit for bit.
    consent(&e, &bob, false);
    for m in [spam(9), ham(9), newsletter(1)] {
        let v = e.score_views(&alice, &m).unwrap();
        assert_eq!(v.blended.log_odds.to_bits(), v.user_only.log_odds.to_bits());
        assert_eq!(v.blended, v.user_only);
        assert_eq!(e.score(&alice, &m).unwrap(), v.user_only);
        assert_eq!(v.blended.user_share, 1.0);
    }
}

#[test]
fn score_views_leave_the_users_own_shared_part_out_of_the_shared_view() {
    let (_dir, shared, private) = two_engines();
    let alice = user("alice");
    consent(&shared, &alice, true);
    for e in [&shared, &private] {
        background(e);
        e.train(&alice, &spam(90), Label::Spam, None).unwrap();
        e.train(&alice, &ham(90), Label::Ham, None).unwrap();
    }
    assert_ne!(shared.shared_model(), private.shared_model());
    // Alice's shared clicks are in her own model already: her shared and
    // blended views must be what they would be had she never shared.
    for m in [spam(99), ham(99), newsletter(3)] {
        assert_eq!(
            shared.score_views(&alice, &m).unwrap(),
            private.score_views(&alice, &m).unwrap()
        );
    }
    let v = shared.score_views(&alice, &spam(99)).unwrap();
    assert_eq!(v.shared_only.verdict, Verdict::Spam);
    assert_eq!(v.shared_only.user_share, 0.0);
    assert!(
        v.blended.user_share > 0.0 && v.blended.user_share < 1.0,
        "{v:?}"
    );
    assert_eq!(shared.score(&alice, &spam(99)).unwrap(), v.blended);
}

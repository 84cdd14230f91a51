//! The Redis Cluster store (`store::redis_cluster`) against a real
//! cluster: click semantics (the same table as on sled), two clients over
//! one cluster, a primary killed under a stream of clicks, and a cluster
//! that goes down and comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaff::classify::{Model, SharedModel, Weight};
use chaff::engine::{Engine, Settings, TrainOutcome};
use chaff::error::Error;
use chaff::policy::{Entry, ListKind, UserSettings};
use chaff::store::redis_cluster::{
    CachedModel, ClickOutcome, Clicked, RedisConfig, RedisStore, Refresh, SharedRefresh, SharedView,
};
use chaff::store::{LedgerEntry, Store};
use chaff::tokenize::{TOKENIZER_VERSION, TokenId};
use chaff::types::{Label, MessageId, Owner, UserId};

use crate::redis_cluster::Cluster;

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn msg(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

fn entry(label: Label, weight: Weight, tokens: &[u64]) -> LedgerEntry {
    let mut tokens: Vec<TokenId> = tokens.iter().map(|&t| TokenId(t)).collect();
    tokens.sort();
    LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens,
        weight,
        shared: 0,
        implicit: false,
    }
}

async fn connect(cluster: &Cluster) -> RedisStore {
    RedisStore::connect(RedisConfig::new(cluster.seeds()))
        .await
        .expect("connect to the test cluster")
}

/// One step of the semantics table and what either backend must answer.
#[derive(Clone, Copy, Debug)]
enum Step {
    Train(&'static str, Label),
    Forget(&'static str),
    /// Score delivered the message to the inbox: learned as ham from its
    /// delivery (an implicit ledger entry), if the rule allows.
    Deliver(&'static str),
}

/// What a step answers, in terms both backends share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Learned,
    AlreadyLearned,
    Relearned,
    Forgotten(Label),
    NotFound,
    /// Delivered mail was learned.
    Delivered,
    /// Delivered mail was not learned (in the ledger already, or the user
    /// never clicked).
    NotDelivered,
}

use Label::{Ham, Spam};

/// The click semantics: learn, the same click again (no change), a flip
/// (moves exactly), Forget (exact), Forget of what is not learned. Each
/// row: the step, its answer, the user's (spam, ham) learned after it.
const TABLE: &[(Step, Answer, (u64, u64))] = &[
    (Step::Train("m1", Spam), Answer::Learned, (1, 0)),
    (Step::Train("m1", Spam), Answer::AlreadyLearned, (1, 0)),
    (Step::Train("m2", Ham), Answer::Learned, (1, 1)),
    (Step::Train("m1", Ham), Answer::Relearned, (0, 2)),
    (Step::Train("m1", Ham), Answer::AlreadyLearned, (0, 2)),
    (Step::Train("m1", Spam), Answer::Relearned, (1, 1)),
    (Step::Forget("m1"), Answer::Forgotten(Spam), (0, 1)),
    (Step::Forget("m1"), Answer::NotFound, (0, 1)),
    (Step::Forget("never"), Answer::NotFound, (0, 1)),
    (Step::Train("m1", Ham), Answer::Learned, (0, 2)),
    (Step::Forget("m2"), Answer::Forgotten(Ham), (0, 1)),
    (Step::Forget("m1"), Answer::Forgotten(Ham), (0, 0)),
];

/// Learning from delivered mail (`engine/clicks.rs`, `learn_delivered`):
/// never a user's first learning; a click over it is a first click
/// (LEARNED, even with the same label, never ALREADY_LEARNED); it never
/// replaces a click, nor itself; Forget removes it.
const DELIVERED_TABLE: &[(Step, Answer, (u64, u64))] = &[
    (Step::Deliver("d0"), Answer::NotDelivered, (0, 0)),
    (Step::Train("m1", Spam), Answer::Learned, (1, 0)),
    (Step::Deliver("d1"), Answer::Delivered, (1, 1)),
    (Step::Deliver("d1"), Answer::NotDelivered, (1, 1)),
    (Step::Train("d1", Ham), Answer::Learned, (1, 1)),
    (Step::Train("d1", Ham), Answer::AlreadyLearned, (1, 1)),
    (Step::Deliver("d1"), Answer::NotDelivered, (1, 1)),
    (Step::Deliver("d2"), Answer::Delivered, (1, 2)),
    (Step::Deliver("d3"), Answer::Delivered, (1, 3)),
    (Step::Train("d2", Spam), Answer::Learned, (2, 2)),
    (Step::Deliver("m1"), Answer::NotDelivered, (2, 2)),
    (Step::Forget("d3"), Answer::Forgotten(Ham), (2, 1)),
    (Step::Forget("d2"), Answer::Forgotten(Spam), (1, 1)),
    (Step::Deliver("d2"), Answer::Delivered, (1, 2)),
];

/// The message a table row's name stands for: distinct words per name,
/// some shared, so flips and forgets move shared counts too.
fn message_text(name: &str) -> String {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: {name} offer\r\nMessage-ID: <{name}@example.com>\r\n\r\nwords {name}alpha {name}beta common shared\r\n"
    )
}

fn tokens_of(name: &str) -> Vec<u64> {
    let base = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
        << 8;
    vec![base + 1, base + 2, 42, 43]
}

/// Runs a table through the engine on a real sled directory: the
/// reference the Redis store must match.
fn run_table_on_sled(table: &[(Step, Answer, (u64, u64))], u: &UserId) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        Store::open(dir.path(), 8 << 20).unwrap(),
        Settings::default(),
    )
    .unwrap();
    let counts = |engine: &Engine| {
        let s = engine.user_summary(u).unwrap();
        (s.spam_learned, s.ham_learned)
    };
    for (i, &(step, want, want_counts)) in table.iter().enumerate() {
        let (answer, got) = match step {
            Step::Train(m, label) => {
                let t = engine
                    .train(u, message_text(m).as_bytes(), label, Some(msg(m)))
                    .unwrap();
                let a = match t.outcome {
                    TrainOutcome::Learned => Answer::Learned,
                    TrainOutcome::AlreadyLearned => Answer::AlreadyLearned,
                    TrainOutcome::Relearned => Answer::Relearned,
                };
                (a, (t.spam_learned, t.ham_learned))
            }
            Step::Forget(m) => match engine.forget(u, &msg(m)) {
                Ok(f) => (Answer::Forgotten(f.label), (f.spam_learned, f.ham_learned)),
                Err(Error::NotLearned { .. }) => (Answer::NotFound, counts(&engine)),
                Err(e) => panic!("row {i}: {e}"),
            },
            Step::Deliver(m) => {
                let read = engine.read(message_text(m).as_bytes()).unwrap();
                let a = match engine.learn_delivered(u, &read, &msg(m)).unwrap() {
                    true => Answer::Delivered,
                    false => Answer::NotDelivered,
                };
                (a, counts(&engine))
            }
        };
        assert_eq!((answer, got), (want, want_counts), "row {i}: {step:?}");
    }
}

#[test]
fn the_click_table_holds_on_sled() {
    run_table_on_sled(TABLE, &user("table-sled"));
}

#[test]
fn the_delivered_mail_table_holds_on_sled() {
    run_table_on_sled(DELIVERED_TABLE, &user("delivered-sled"));
}

/// The weight delivered mail is learned with for these class weights
/// (`engine::clicks::delivered_weight`): what the ham side lacks of the
/// spam side, between the lightest weight and one message.
fn delivered_weight((spam, ham): (u64, u64)) -> Weight {
    let gap = spam.saturating_sub(ham);
    Weight(gap.clamp(u64::from(Weight::DELIVERED.0), u64::from(Weight::FULL.0)) as u32)
}

/// Runs a table on the Redis store, checking the model against one built
/// by hand on `Model` after every step.
async fn run_table_on_redis(
    store: &RedisStore,
    table: &[(Step, Answer, (u64, u64))],
    u: &UserId,
) -> Model {
    let mut expect = Model::default();
    let mut learned: std::collections::HashMap<&str, (Label, Weight)> = Default::default();
    let mut last_version = 0;
    for (i, &(step, want, counts)) in table.iter().enumerate() {
        let name = match step {
            Step::Train(m, _) | Step::Forget(m) | Step::Deliver(m) => m,
        };
        let ids: Vec<TokenId> = entry(Spam, Weight::FULL, &tokens_of(name)).tokens;
        let (answer, clicked) = match step {
            Step::Train(m, label) => {
                let c = store
                    .train(u, &msg(m), &entry(label, Weight::FULL, &tokens_of(m)))
                    .await
                    .unwrap();
                let a = match c.outcome {
                    ClickOutcome::Learned => Answer::Learned,
                    ClickOutcome::AlreadyLearned => Answer::AlreadyLearned,
                    ClickOutcome::Relearned => Answer::Relearned,
                    ClickOutcome::Forgotten(_) => panic!("row {i}: train answered forgotten"),
                };
                (a, Some(c))
            }
            Step::Forget(m) => match store.forget(u, &msg(m)).await {
                Ok(c) => match c.outcome {
                    ClickOutcome::Forgotten(l) => (Answer::Forgotten(l), Some(c)),
                    other => panic!("row {i}: forget answered {other:?}"),
                },
                Err(Error::NotLearned { .. }) => (Answer::NotFound, None),
                Err(e) => panic!("row {i}: {e}"),
            },
            Step::Deliver(m) => {
                let weight = delivered_weight(expect.weights());
                match store
                    .learn_delivered(u, &msg(m), &ids, Weight::FULL)
                    .await
                    .unwrap()
                {
                    Some(w) => {
                        assert_eq!(w, weight, "row {i}: delivered mail's weight");
                        let e = store.ledger_get(u, &msg(m)).await.unwrap().unwrap();
                        assert!(e.implicit && e.label == Ham && e.shared == 0, "row {i}");
                        (Answer::Delivered, None)
                    }
                    None => (Answer::NotDelivered, None),
                }
            }
        };
        // The reference model moves as the engine moves the sled one.
        match (step, answer) {
            (Step::Train(m, label), Answer::Learned | Answer::Relearned) => {
                if let Some((old, w)) = learned.get(m) {
                    expect.unlearn_weighted(&ids, *old, *w);
                }
                expect.learn_weighted(&ids, label, Weight::FULL);
                learned.insert(m, (label, Weight::FULL));
            }
            (Step::Forget(m), Answer::Forgotten(label)) => {
                let (old, w) = learned.remove(m).unwrap();
                assert_eq!(old, label, "row {i}");
                expect.unlearn_weighted(&ids, label, w);
            }
            (Step::Deliver(m), Answer::Delivered) => {
                let w = delivered_weight(expect.weights());
                expect.learn_weighted(&ids, Ham, w);
                learned.insert(m, (Ham, w));
            }
            _ => {}
        }
        let loaded = store.load_model(u).await.unwrap().unwrap_or_default();
        assert_eq!(answer, want, "row {i}: {step:?}");
        assert_eq!(
            (loaded.model.spam_learned(), loaded.model.ham_learned()),
            counts,
            "row {i}: {step:?}"
        );
        assert_eq!(loaded.model, expect, "row {i}: {step:?}: model not exact");
        if let Some(Clicked {
            version,
            spam_learned,
            ham_learned,
            ..
        }) = clicked
        {
            assert_eq!((spam_learned, ham_learned), counts, "row {i}: reply counts");
            // Only a change moves the version; ALREADY_LEARNED does not.
            let moved = !matches!(answer, Answer::AlreadyLearned);
            assert_eq!(version > last_version, moved, "row {i}: version");
        }
        last_version = loaded.version;
    }
    expect
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_click_table_holds_on_redis_with_exact_models() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let end = run_table_on_redis(&store, TABLE, &user("table-redis")).await;
    // Everything forgotten: the model is empty again, exactly.
    assert_eq!(end, Model::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivered_mail_table_holds_on_redis_with_exact_models() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    run_table_on_redis(&store, DELIVERED_TABLE, &user("delivered-redis")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_mail_weighs_at_most_the_callers_ceiling_and_leaves_the_rest_of_the_gap() {
    // A very short message fills only part of the gap to the spam side
    // (`engine::clicks::delivered_ceiling`): the script takes the gap from
    // the counts it sees and the ceiling from the caller, and the next,
    // ordinary message fills what is left.
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let u = user("delivered-ceiling");
    store
        .train(&u, &msg("spam"), &entry(Spam, Weight::FULL, &[1, 2, 3]))
        .await
        .unwrap();
    let short = store
        .learn_delivered(&u, &msg("short"), &[TokenId(5)], Weight(20))
        .await
        .unwrap();
    assert_eq!(short, Some(Weight(20)), "held to the ceiling");
    let entry = store.ledger_get(&u, &msg("short")).await.unwrap();
    assert_eq!(entry.map(|e| e.weight), Some(Weight(20)), "as recorded");
    let next = store
        .learn_delivered(&u, &msg("next"), &[TokenId(6)], Weight::FULL)
        .await
        .unwrap();
    assert_eq!(
        next,
        Some(Weight(Weight::FULL.0 - 20)),
        "the rest of the gap"
    );
    let loaded = store.load_model(&u).await.unwrap().expect("a model");
    let full = u64::from(Weight::FULL.0);
    assert_eq!(loaded.model.weights(), (full, full));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_under_the_callers_id_replaces_delivered_mail_learned_under_the_derived_id() {
    // Score knew only the id chaff derives; the click names the message
    // its own way. The click replaces the delivery's learning in the same
    // script: the model ends as if only the click had happened.
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let u = user("delivered-derived");
    let first = entry(Spam, Weight::FULL, &[1]);
    store.train(&u, &msg("first"), &first).await.unwrap();
    let ids: Vec<TokenId> = [5, 6].map(TokenId).to_vec();
    let w = store
        .learn_delivered(&u, &msg("derived"), &ids, Weight::FULL)
        .await
        .unwrap();
    assert_eq!(w, Some(Weight::FULL), "the ham side lacked a whole message");
    let click = entry(Ham, Weight::FULL, &[5, 6]);
    let c = store
        .train_click(&u, &msg("callers"), Some(&msg("derived")), &click)
        .await
        .unwrap();
    assert_eq!(
        (c.outcome, c.previous_weight),
        (ClickOutcome::Learned, None)
    );
    assert_eq!((c.spam_learned, c.ham_learned), (1, 1));
    assert_eq!(store.ledger_get(&u, &msg("derived")).await.unwrap(), None);
    let mut expect = Model::default();
    expect.learn(&first.tokens, Spam);
    expect.learn(&click.tokens, Ham);
    let got = store.load_model(&u).await.unwrap().unwrap().model;
    assert_eq!(got, expect);
    // A derived id holding a click is never replaced.
    store.train(&u, &msg("clicked"), &first).await.unwrap();
    let c = store
        .train_click(&u, &msg("other"), Some(&msg("clicked")), &click)
        .await
        .unwrap();
    assert_eq!(c.outcome, ClickOutcome::Learned);
    assert!(
        store
            .ledger_get(&u, &msg("clicked"))
            .await
            .unwrap()
            .is_some()
    );
    let got = store.load_model(&u).await.unwrap().unwrap().model;
    assert_eq!((got.spam_learned(), got.ham_learned()), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_undoes_the_first_click_with_its_own_weight() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let u = user("flip-weights");
    let light = entry(Ham, Weight::LIGHT, &[1, 2, 3]);
    store.train(&u, &msg("m"), &light).await.unwrap();
    assert_eq!(store.ledger_get(&u, &msg("m")).await.unwrap(), Some(light));
    let full = entry(Spam, Weight::FULL, &[1, 2, 3]);
    let c = store.train(&u, &msg("m"), &full).await.unwrap();
    assert_eq!(c.outcome, ClickOutcome::Relearned);
    assert_eq!(c.previous_weight, Some(Weight::LIGHT));
    let mut expect = Model::default();
    expect.learn_weighted(&full.tokens, Spam, Weight::FULL);
    let loaded = store.load_model(&u).await.unwrap().unwrap();
    assert_eq!(loaded.model, expect);
    assert_eq!(loaded.model.weights(), (u64::from(Weight::FULL.0), 0));
    // A low-weight click reports its weight when clicked again.
    let low = entry(Spam, Weight::LOW, &[9]);
    store.train(&u, &msg("low"), &low).await.unwrap();
    let again = store.train(&u, &msg("low"), &low).await.unwrap();
    assert_eq!(
        (again.outcome, again.previous_weight),
        (ClickOutcome::AlreadyLearned, Some(Weight::LOW))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_whose_ids_look_like_hash_tags_do_not_share_keys() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let (a, b) = (user("x}:l"), user("x"));
    store
        .train(&a, &msg("m"), &entry(Spam, Weight::FULL, &[5]))
        .await
        .unwrap();
    assert_eq!(store.load_model(&b).await.unwrap(), None);
    assert_eq!(store.ledger_get(&b, &msg("m")).await.unwrap(), None);
    assert!(store.load_model(&a).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_through_one_client_is_in_the_other_clients_next_read() {
    // Two chaff replicas: separate connections to one cluster. B holds a
    // model; after A's click is acknowledged, B's next read (one round
    // trip) has it.
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let (a, b) = (connect(cluster).await, connect(cluster).await);
    let u = user("two-replicas");
    let mut held = CachedModel::default();
    assert_eq!(b.refresh(&u, &mut held).await.unwrap(), Refresh::Fresh);
    let mut expect = Model::default();
    for i in 0..20u64 {
        let e = entry(if i % 2 == 0 { Spam } else { Ham }, Weight::FULL, &[i, 100]);
        let c = a.train(&u, &msg(&format!("m{i}")), &e).await.unwrap();
        expect.learn(&e.tokens, e.label);
        assert_eq!(b.refresh(&u, &mut held).await.unwrap(), Refresh::Applied(1));
        assert_eq!(held.model, expect, "click {i}");
        assert_eq!(held.version, c.version);
        // Nothing new: an empty reply.
        assert_eq!(b.refresh(&u, &mut held).await.unwrap(), Refresh::Fresh);
    }
    // A folds the journal into a snapshot; B, holding an older version
    // than the snapshot, reloads it; a reader at the snapshot's version
    // only reads what came after.
    let mut stale = CachedModel::default();
    b.refresh(&u, &mut stale).await.unwrap();
    let c = a
        .train(&u, &msg("late"), &entry(Spam, Weight::FULL, &[7]))
        .await
        .unwrap();
    let folded = a.load_model(&u).await.unwrap().unwrap();
    assert_eq!(folded.version, c.version);
    assert!(
        a.checkpoint(&u, &folded.model, folded.version)
            .await
            .unwrap()
    );
    assert!(
        !a.checkpoint(&u, &folded.model, folded.version)
            .await
            .unwrap()
    );
    assert_eq!(b.refresh(&u, &mut stale).await.unwrap(), Refresh::Reloaded);
    assert_eq!(stale.model, folded.model);
    assert_eq!(stale.journal_entries, 0);
    a.forget(&u, &msg("m0")).await.unwrap();
    assert_eq!(
        b.refresh(&u, &mut stale).await.unwrap(),
        Refresh::Applied(1)
    );
    let mut fresh = CachedModel::default();
    assert_eq!(b.refresh(&u, &mut fresh).await.unwrap(), Refresh::Reloaded);
    assert_eq!(fresh.model, stale.model);
    // The forgotten click was in the snapshot: undone exactly.
    expect.learn(&[TokenId(7)], Spam);
    expect.unlearn(&[TokenId(0), TokenId(100)], Spam);
    assert_eq!(fresh.model, expect);
}

fn sharing(on: bool) -> UserSettings {
    UserSettings {
        share_training: on,
        ..UserSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard orders this test among the others, not tasks within it.
#[allow(clippy::await_holding_lock)]
async fn revoking_consent_on_one_client_drops_exactly_that_part_from_the_others_shared_model() {
    let _alone = Cluster::shared_model_lock();
    // Two chaff replicas over one cluster: A takes clicks and settings, B
    // reads the shared model. B's copy is the capped sum of the parts
    // (checked against `SharedModel` built by hand), fresh in one round
    // trip when nothing changed, and without a contributor right after A
    // revokes that contributor's consent.
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let (a, b) = (connect(cluster).await, connect(cluster).await);
    let (u1, u2, u3) = (user("share-1"), user("share-2"), user("share-3"));
    let (o1, o2) = (Owner::User(u1.clone()), Owner::User(u2.clone()));
    for u in [&u1, &u2] {
        let id = a.generate_id().await.unwrap();
        a.put_settings(u, &sharing(true), id, false).await.unwrap();
        assert_eq!(a.settings(u).await.unwrap(), Some((sharing(true), id)));
    }
    let mut expect = SharedModel::default();
    // u1 marks one campaign spam six times: capped at three messages.
    for i in 0..6 {
        let e = entry(Spam, Weight::FULL, &[7, 100 + i]);
        a.train(&u1, &msg(&format!("c{i}")), &e).await.unwrap();
        expect.apply(&o1, true, Spam, Weight::FULL, &e.tokens);
    }
    let e2 = entry(Ham, Weight::FULL, &[7, 8]);
    a.train(&u2, &msg("n1"), &e2).await.unwrap();
    expect.apply(&o2, true, Ham, Weight::FULL, &e2.tokens);
    // u3 does not share: nothing of theirs is in it.
    a.train(&u3, &msg("x"), &entry(Spam, Weight::FULL, &[7, 9]))
        .await
        .unwrap();

    let mut view = SharedView::default();
    assert!(matches!(
        b.refresh_shared(&mut view).await.unwrap(),
        SharedRefresh::Changed { .. }
    ));
    assert_eq!(view.model.total(), expect.total());
    assert_eq!(
        view.model.total().get(TokenId(7)).unwrap().spam,
        3 * Weight::FULL.0,
        "one user's say on a token is capped"
    );
    assert_eq!(
        b.refresh_shared(&mut view).await.unwrap(),
        SharedRefresh::Fresh
    );

    // A relearn of a shared click moves it in the part exactly.
    let flipped = entry(Spam, Weight::FULL, &[7, 8]);
    a.train(&u2, &msg("n1"), &flipped).await.unwrap();
    expect.apply(&o2, false, Ham, Weight::FULL, &e2.tokens);
    expect.apply(&o2, true, Spam, Weight::FULL, &flipped.tokens);
    assert_eq!(
        b.refresh_shared(&mut view).await.unwrap(),
        SharedRefresh::Changed { parts: 1 }
    );
    assert_eq!(view.model.total(), expect.total());

    // Revoke on A: B's next read has exactly u2's part.
    a.put_settings(&u1, &sharing(false), 0, true).await.unwrap();
    expect.remove(&o1);
    assert_eq!(
        b.refresh_shared(&mut view).await.unwrap(),
        SharedRefresh::Changed { parts: 1 }
    );
    assert_eq!(view.model.total(), expect.total());
    assert!(view.model.contribution(&o1).is_none());
    // After the revoke, u1's clicks and Forgets leave the shared model
    // alone (the dropped part is not undone twice), and readers are not
    // even told.
    a.train(&u1, &msg("after"), &entry(Spam, Weight::FULL, &[7]))
        .await
        .unwrap();
    a.forget(&u1, &msg("c0")).await.unwrap();
    assert_eq!(
        b.refresh_shared(&mut view).await.unwrap(),
        SharedRefresh::Fresh
    );
    assert_eq!(view.model.total(), expect.total());
    // Consent given again starts a new part from nothing: an earlier click
    // (shared under the old consent) undone now is not taken out of it.
    let id = a.generate_id().await.unwrap();
    a.put_settings(&u1, &sharing(true), id, false)
        .await
        .unwrap();
    a.forget(&u1, &msg("c1")).await.unwrap();
    let again = entry(Ham, Weight::FULL, &[9]);
    a.train(&u1, &msg("again"), &again).await.unwrap();
    expect.apply(&o1, true, Ham, Weight::FULL, &again.tokens);
    b.refresh_shared(&mut view).await.unwrap();
    assert_eq!(view.model.total(), expect.total());

    // A reader starting now reads the directory; one holding a part folded
    // into a snapshot reloads it; both agree.
    assert!(b.checkpoint_part(&mut view, &o2).await.unwrap());
    assert_eq!(view.part(&o2).unwrap().journal_entries, 0);
    let mut fresh = SharedView::default();
    a.refresh_shared(&mut fresh).await.unwrap();
    assert_eq!(fresh.model.total(), expect.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_settings_mirror_the_sled_store() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let u = user("lists");
    let who = Owner::User(u.clone());
    assert_eq!(store.settings(&u).await.unwrap(), None);
    let settings = UserSettings {
        spam_threshold: 0.8,
        ..UserSettings::default()
    };
    store.put_settings(&u, &settings, 0, false).await.unwrap();
    assert_eq!(store.settings(&u).await.unwrap(), Some((settings, 0)));
    let entries: Vec<Entry> = ["b@example.com", "*.example.org", "192.0.2.0/24"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    for e in &entries {
        assert!(
            store
                .set_list_entry(&who, ListKind::Block, e, true)
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_list_entry(&who, ListKind::Block, e, true)
                .await
                .unwrap()
        );
    }
    let mut sorted = entries.clone();
    sorted.sort_by_key(|e| e.to_string());
    assert_eq!(
        store.list_entries(&who, ListKind::Block).await.unwrap(),
        sorted
    );
    assert!(
        store
            .list_entries(&who, ListKind::Allow)
            .await
            .unwrap()
            .is_empty()
    );
    // The operator's lists are their own.
    let op: Entry = "news@example.net".parse().unwrap();
    assert!(
        store
            .set_list_entry(&Owner::Operator, ListKind::Trusted, &op, true)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .list_entries(&Owner::Operator, ListKind::Trusted)
            .await
            .unwrap(),
        vec![op]
    );
    assert!(
        store
            .list_entries(&who, ListKind::Trusted)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .set_list_entry(&who, ListKind::Block, &entries[0], false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_list_entry(&who, ListKind::Block, &entries[0], false)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .list_entries(&who, ListKind::Block)
            .await
            .unwrap()
            .len(),
        2
    );
    // The same on sled, for the order: by the entry's text.
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), 8 << 20).unwrap();
    for e in &entries {
        sled.set_list_entry(&who, ListKind::Block, e, true).unwrap();
    }
    assert_eq!(sled.list_entries(&who, ListKind::Block).unwrap(), sorted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_is_a_capped_stream_found_by_time_and_trimmed_by_age() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let mut config = RedisConfig::new(cluster.seeds());
    config.decisions_per_user = 100;
    let store = RedisStore::connect(config).await.unwrap();
    let (u, other) = (user("decisions"), user("decisions-other"));
    let json = |t: u64| format!("{{\"t\":{t}}}").into_bytes();
    let records: Vec<(u64, Vec<u8>)> = (1..=5).map(|i| (i * 1000, json(i * 1000))).collect();
    store
        .append_decisions(records.iter().map(|(t, j)| (&u, *t, j.as_slice())))
        .await
        .unwrap();
    // Another replica's clock is behind: filed at the newest time, kept.
    let late = json(2500);
    store
        .append_decisions([(&u, 2500, late.as_slice()), (&other, 9000, &b"{}"[..])])
        .await
        .unwrap();
    let read = |j: &[u8]| Ok(Some(String::from_utf8(j.to_vec()).unwrap()));
    let found = store
        .find_decisions(&u, 2000, 4000, 10, read)
        .await
        .unwrap();
    assert_eq!(found, ["{\"t\":4000}", "{\"t\":3000}", "{\"t\":2000}"]);
    let newest = store
        .find_decisions(&u, 0, u64::MAX / 2, 2, read)
        .await
        .unwrap();
    assert_eq!(newest, ["{\"t\":2500}", "{\"t\":5000}"]);
    // A reader that skips records still gets `limit` of the rest.
    let odd = store
        .find_decisions(&u, 0, u64::MAX / 2, 2, |j: &[u8]| {
            Ok((j != b"{\"t\":5000}").then(|| j.to_vec()))
        })
        .await
        .unwrap();
    assert_eq!(odd.len(), 2);
    // Retention: the sweep finds who has old decisions; trimming removes
    // those and keeps at most `keep`.
    let old = store.users_with_decisions_before(2500).await.unwrap();
    assert!(old.contains(&u) && !old.contains(&other), "{old:?}");
    assert_eq!(store.trim_decisions(&u, 2500, 1000).await.unwrap(), 2);
    assert_eq!(store.trim_decisions(&u, 0, 2).await.unwrap(), 2);
    let left = store
        .find_decisions(&u, 0, u64::MAX / 2, 100, read)
        .await
        .unwrap();
    assert_eq!(left, ["{\"t\":2500}", "{\"t\":5000}"]);
    // The cap: every append trims to about `decisions_per_user`.
    let many: Vec<(u64, Vec<u8>)> = (0..1000).map(|i| (10_000 + i, json(i))).collect();
    for chunk in many.chunks(50) {
        store
            .append_decisions(chunk.iter().map(|(t, j)| (&u, *t, j.as_slice())))
            .await
            .unwrap();
    }
    let kept = store
        .find_decisions(&u, 0, u64::MAX / 2, 5000, read)
        .await
        .unwrap()
        .len();
    assert!((100..=250).contains(&kept), "{kept} decisions kept");
}

/// Clicks for `u` until `stop`, one at a time (as one mailbox's clicks
/// arrive); returns the messages whose click was acknowledged and all
/// that were tried.
async fn click_stream(
    store: RedisStore,
    u: UserId,
    stop: tokio::sync::watch::Receiver<bool>,
    tried_so_far: Arc<AtomicU64>,
    acked_so_far: Arc<AtomicU64>,
) -> (Vec<u64>, u64) {
    let (mut acked, mut tried) = (Vec::new(), 0u64);
    while !*stop.borrow() {
        let i = tried;
        tried += 1;
        tried_so_far.store(tried, Ordering::SeqCst);
        let e = entry(Spam, Weight::FULL, &[i, 1_000_000]);
        match store.train(&u, &msg(&format!("m{i}")), &e).await {
            Ok(c) => {
                assert_eq!(c.outcome, ClickOutcome::Learned, "m{i}");
                acked.push(i);
                acked_so_far.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                assert!(e.is_storage(), "a failover error is storage trouble: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acked, tried)
}

/// Waits, up to `bound`, for the store's readiness probe to answer once
/// `replica` serves the dead primary's slots (`forced`: the harness had
/// to force it); fails with the cluster's report.
async fn store_ready(
    store: &RedisStore,
    cluster: &Cluster,
    replica: u16,
    forced: bool,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    loop {
        let ping = store.ping().await;
        if ping.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{replica} serves the slot (forced: {forced}) but the store's readiness probe \
             still fails {bound:?} later: {ping:?}\n{}",
            cluster.report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stream of clicks runs while the primary of the user's slot is killed
/// and its replica takes over: every click the store acknowledged is in
/// the ledger afterwards, and the model is exactly the ledger's sum.
///
/// Failed once (a full `.ci/run`, session 34): "acknowledged click m0 was
/// lost", m0 being the stream's first click; not reproduced since in 8
/// runs of every Redis test (three at a time, a CPU hog beside) nor in 17
/// runs of this test alone under CPU and fsync load. One of those 17 met
/// another race, fixed here: under load no click had been acknowledged
/// when a fixed pause ran out and the primary was killed. Since session
/// 36 a click's `WAIT` goes in the click's own pipeline (`durable.rs`:
/// redis-rs may send a `WAIT` sent after it over another connection),
/// which closes one way the loss could happen, not shown to be the one
/// that did. A failure now lists every lost click and prints the
/// cluster's report, so that the next one can tell a harness race from a
/// durability gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_click_survives_the_failover_of_its_primary() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let store = connect(&cluster).await;
    let u = user("failover");
    let primary = cluster.primary_of("{u:failover}:m");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tried_so_far = Arc::new(AtomicU64::new(0));
    let acked_so_far = Arc::new(AtomicU64::new(0));
    let clicks = tokio::spawn(click_stream(
        store.clone(),
        u.clone(),
        stop,
        tried_so_far.clone(),
        acked_so_far.clone(),
    ));
    let replica = cluster
        .wait_replica_of(primary)
        .expect("the primary has a replica");
    // Clicks acknowledged before the kill, whatever the machine's load (a
    // fixed pause alone once saw none acknowledged yet).
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_so_far.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "no click acknowledged in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(primary);
    let tried_at_kill = tried_so_far.load(Ordering::SeqCst);
    // The replica takes over (node timeout 1 s), and the store finds it:
    // its readiness probe (CLUSTER INFO on every primary of its slot map)
    // answers.
    let forced = tokio::task::block_in_place(|| {
        cluster.await_failover("{u:failover}:m", primary, replica, Duration::from_secs(30))
    });
    store_ready(&store, &cluster, replica, forced, Duration::from_secs(30)).await;
    // The new primary has no replica now, so its clicks cannot be
    // confirmed (WAIT 1 fails: UNAVAILABLE, not acknowledged) until the
    // operator brings the crashed node back, which rejoins as a replica.
    cluster.restart(primary);
    cluster
        .wait_ready(Instant::now() + Duration::from_secs(30))
        .expect("the old primary rejoins as a replica");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_tx.send(true).unwrap();
    let (acked, tried) = clicks.await.unwrap();
    assert!(
        acked.iter().any(|&i| i + 1 < tried_at_kill),
        "no click acknowledged before the kill"
    );
    assert!(
        acked.iter().any(|&i| i > tried_at_kill),
        "clicks did not resume after the failover ({} acknowledged of {tried})",
        acked.len()
    );
    // Every acknowledged click is in the ledger, and the model is exactly
    // the sum of the ledger: nothing half-applied.
    let mut expect = Model::default();
    let mut in_ledger = 0;
    let mut lost = Vec::new();
    for i in 0..tried {
        match store.ledger_get(&u, &msg(&format!("m{i}"))).await.unwrap() {
            Some(e) => {
                expect.learn(&e.tokens, e.label);
                in_ledger += 1;
            }
            None if acked.contains(&i) => lost.push(i),
            None => {}
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged clicks lost: {lost:?} of {} acknowledged, {tried} tried, {tried_at_kill} \
         before the kill (primary {primary}, replica {replica}, forced: {forced})\n{}",
        acked.len(),
        cluster.report()
    );
    let model = store.load_model(&u).await.unwrap().unwrap().model;
    assert_eq!(model, expect);
    assert!(in_ledger >= acked.len());
    eprintln!(
        "failover: {} clicks acknowledged, {in_ledger} in the ledger, {tried} tried, {} before the kill",
        acked.len(),
        tried_at_kill
    );
}

/// An election that comes long after the primary died (its replica hung
/// for 10 s: a loaded machine, a stalled disk) is found by the store as
/// soon as it happens, and until then, once the cluster has marked the
/// primary failed, the readiness probe says the cluster is down, in
/// bounded time. A slot map refreshed before the
/// promotion and then kept would leave the store pointed at the dead node
/// (the half of a CI failure, "no new primary within 30 s", that its old
/// assertion could not tell from Redis's own election); a probe of PING
/// alone said ready all along (the refreshed map leaves the failed node
/// out, and the primaries left answer PING while refusing every key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_finds_a_primary_elected_long_after_the_old_one_died() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let store = connect(&cluster).await;
    let u = user("late-election");
    let key = "{u:late-election}:m";
    // Acknowledged only once the replica has it (WAIT 1).
    let e = entry(Spam, Weight::FULL, &[1, 2, 3]);
    let c = store.train(&u, &msg("before"), &e).await.unwrap();
    assert_eq!(c.outcome, ClickOutcome::Learned);
    // The replica hangs, so no election: the slot range stays unserved.
    let (primary, replica) = cluster.kill_primary_with_its_replica_frozen(key);
    // Until the cluster marks the primary failed (node timeout 1 s, then
    // the vote) the probe may still answer: redis-rs skips the dead node
    // after its first failure, and the others report ok. Then it must
    // fail, every time, in bounded time.
    let deadline = Instant::now() + Duration::from_secs(15);
    let probe = async || {
        let t = Instant::now();
        let ping = store.ping().await;
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "a probe hung {:?}: {ping:?}",
            t.elapsed()
        );
        ping
    };
    loop {
        match probe().await {
            Err(e) if e.to_string().contains("cluster_state:fail") => break,
            Err(e) => assert!(e.is_storage(), "{e}"),
            Ok(()) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the probe never said the cluster is down\n{}",
            cluster.report()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let err = probe()
            .await
            .expect_err("the slot range has no primary: the probe must say so");
        assert!(err.is_storage(), "{err}");
    }
    cluster.freeze(replica, false);
    let forced = tokio::task::block_in_place(|| {
        cluster.await_failover(key, primary, replica, Duration::from_secs(30))
    });
    store_ready(&store, &cluster, replica, forced, Duration::from_secs(10)).await;
    // Every primary reporting the cluster up does not mean each node has
    // taken the new primary yet: under load (CI) one read answered
    // CLUSTERDOWN right after the probe passed. What this pins is the
    // click, so the read may retry a storage failure for a few seconds,
    // as any client retries UNAVAILABLE.
    let deadline = Instant::now() + Duration::from_secs(10);
    let model = loop {
        match store.load_model(&u).await {
            Ok(m) => break m.expect("the model").model,
            Err(e) if e.is_storage() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the model could not be read 10 s after the failover: {e}"),
        }
    };
    let mut expect = Model::default();
    expect.learn(&e.tokens, e.label);
    assert_eq!(model, expect, "the acknowledged click survived");
}

/// Runs `click` until a replica confirms it (15 s at most): what a client
/// does with UNAVAILABLE "… replicas confirmed it", a safe retry.
async fn until_confirmed<F, Fut>(mut click: F) -> Clicked
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Clicked, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match click().await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline && e.to_string().contains("replicas confirmed") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("not confirmed within 15 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_clicks_and_a_down_cluster_answer_unavailable_in_bounded_time_and_recover() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let mut config = RedisConfig::new(cluster.seeds());
    config.op_timeout = Duration::from_secs(2);
    config.wait = Duration::from_millis(300);
    let store = RedisStore::connect(config).await.unwrap();
    let u = user("outage");
    store
        .train(&u, &msg("before"), &entry(Ham, Weight::FULL, &[1]))
        .await
        .unwrap();

    // The user's shard loses its replica: a click still reaches the
    // primary, but WAIT 1 (sent to that primary only) is not met, so it is
    // not acknowledged: UNAVAILABLE, quickly.
    let primary = cluster.primary_of("{u:outage}:m");
    let replica = cluster.wait_replica_of(primary).expect("a replica");
    cluster.kill(replica);
    let started = Instant::now();
    let err = store
        .train(&u, &msg("unconfirmed"), &entry(Spam, Weight::FULL, &[3]))
        .await
        .expect_err("no replica confirms it");
    assert!(err.to_string().contains("replicas confirmed"), "{err}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Once the replica is back, the retry is safe: the primary has the
    // click, so it answers ALREADY_LEARNED, now confirmed.
    cluster.restart(replica);
    cluster
        .wait_ready(Instant::now() + Duration::from_secs(60))
        .expect("replica back");
    // The replica may need a moment after its link is up before it
    // confirms within the 300 ms wait (seen on a loaded machine, right
    // after its resync): retry as a client would, for a bounded time.
    let (m, e) = (msg("unconfirmed"), entry(Spam, Weight::FULL, &[3]));
    let retry = until_confirmed(|| store.train(&u, &m, &e)).await;
    assert_eq!(retry.outcome, ClickOutcome::AlreadyLearned);
    // The same for the Forget, with one difference: a Forget that reached
    // the primary but was not confirmed has removed the entry, so its
    // retry answers NOT_FOUND — that retry is the confirmation.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut unconfirmed = false;
    loop {
        match store.forget(&u, &m).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && e.to_string().contains("replicas confirmed") => {
                unconfirmed = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(Error::NotLearned { .. }) if unconfirmed => break,
            Err(e) => panic!("Forget not confirmed within 15 s: {e}"),
        }
    }
    assert!(store.ledger_get(&u, &m).await.unwrap().is_none());

    // The whole cluster goes down.
    let ports = cluster.running();
    for &p in &ports {
        cluster.kill(p);
    }
    for what in ["train", "read"] {
        let started = Instant::now();
        let err = match what {
            "train" => store
                .train(&u, &msg("during"), &entry(Spam, Weight::FULL, &[2]))
                .await
                .map(|_| ()),
            _ => store.load_model(&u).await.map(|_| ()),
        }
        .expect_err("the cluster is down");
        let took = started.elapsed();
        assert!(matches!(err, Error::Storage(_)), "{what}: {err}");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable, "{what}");
        assert!(took < Duration::from_secs(4), "{what} took {took:?}");
    }
    // The operator brings the nodes back on their data: the same client
    // recovers, and nothing acknowledged before the outage is lost.
    for &p in &ports {
        cluster.restart(p);
    }
    cluster
        .wait_ready(Instant::now() + Duration::from_secs(60))
        .expect("cluster back");
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match store
            .train(&u, &msg("after"), &entry(Spam, Weight::FULL, &[2]))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no recovery within 30 s: {e}"),
        }
    };
    assert_eq!(after.outcome, ClickOutcome::Learned);
    assert_eq!((after.spam_learned, after.ham_learned), (1, 1));
    assert_eq!(
        store
            .ledger_get(&u, &msg("before"))
            .await
            .unwrap()
            .map(|e| e.label),
        Some(Ham)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_onto_a_new_primary_while_clicks_flow_keeps_every_acknowledged_click() {
    // A shard is added (primary + replica) and, while six tasks click
    // (one user each), the slots of four users are moved onto it one key
    // at a time: clients meet half-moved slots (the click script's keys split
    // between two nodes: TRYAGAIN; all moved: ASK). Every click must be
    // acknowledged within `op_timeout` (redis-rs retries both), and after
    // the move every user's ledger and model hold exactly those clicks.
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let started = Instant::now();
    // The new shard joins first (its primary owns no slots yet), so that a
    // failure to start it stops the test before any click is in flight.
    let new = cluster
        .add_shard()
        .unwrap_or_else(|e| panic!("a new shard joins: {e}"));
    let store = connect(&cluster).await;
    let users: Vec<UserId> = (0..6).map(|i| user(&format!("reshard-{i}"))).collect();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Stops the clicks however the test ends (a panic too).
    struct StopOnDrop(tokio::sync::watch::Sender<bool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(true);
        }
    }
    let stop_tx = StopOnDrop(stop_tx);
    let mut tasks = Vec::new();
    for u in &users {
        let (store, u, mut stop) = (store.clone(), u.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while !*stop.borrow_and_update() {
                let e = entry(
                    if i.is_multiple_of(3) { Ham } else { Spam },
                    Weight::FULL,
                    &[i, 7],
                );
                match store.train(&u, &msg(&format!("m{i}")), &e).await {
                    Ok(c) => {
                        assert_eq!(c.outcome, ClickOutcome::Learned, "m{i}");
                        acked.push(i);
                    }
                    Err(err) => failed.push((i, err.to_string())),
                }
                i += 1;
            }
            (acked, failed, i)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moves: Vec<(u16, u16)> = users[..4]
        .iter()
        .map(|u| {
            let key = format!("{{u:{u}}}:m");
            (cluster.slot_of(&key), cluster.primary_of(&key))
        })
        .collect();
    let cluster = tokio::task::spawn_blocking(move || {
        for &(slot, from) in &moves {
            cluster.move_slot(slot, from, new, Duration::from_millis(150));
        }
        cluster
    })
    .await
    .unwrap();
    for u in &users[..4] {
        assert_eq!(
            cluster.primary_of(&format!("{{u:{u}}}:m")),
            new,
            "{u} moved"
        );
    }
    // Clicks go on against the new layout for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.0.send(true).unwrap();
    for (u, task) in users.iter().zip(tasks) {
        let (acked, failed, tried) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "{u}: {} of {tried} clicks failed during the move: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        let mut expect = Model::default();
        for &i in &acked {
            let e = store
                .ledger_get(u, &msg(&format!("m{i}")))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{u}: acknowledged click m{i} lost"));
            expect.learn(&e.tokens, e.label);
        }
        let held = store.load_model(u).await.unwrap().unwrap();
        assert_eq!(
            held.model, expect,
            "{u}: model is not the sum of its clicks"
        );
        assert_eq!(
            held.model.spam_learned() + held.model.ham_learned(),
            acked.len() as u64
        );
        eprintln!("reshard: {u}: {} clicks acknowledged", acked.len());
    }
    eprintln!("reshard test: {:?}", started.elapsed());
}

/// Rewrites a user's keys as a build from before the undo window
/// (session 9; `git show db3ac90^:src/store/redis_cluster/mod.rs`,
/// `encode_ledger`) wrote them: every ledger value and every journal
/// value with the 18-byte header (label, weight, tokenizer version, kind,
/// shared id: no click time, bytes 18..22 of today's), and no time
/// indexes (`:lt`, `:dt`), which did not exist. Raw HSET / XADD, as the
/// old code's scripts wrote.
async fn rewrite_as_before_the_undo_window(cluster: &Cluster, u: &str) {
    let client = redis::cluster::ClusterClient::new(cluster.seeds()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let tag = format!("{{u:{u}}}");
    let strip = |v: &[u8]| -> Vec<u8> {
        assert!(v.len() >= 22, "a 22-byte header");
        [&v[..18], &v[22..]].concat()
    };
    let ledger: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(format!("{tag}:l"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!ledger.is_empty());
    for (id, value) in &ledger {
        let _: i64 = redis::cmd("HSET")
            .arg(format!("{tag}:l"))
            .arg(id)
            .arg(strip(value))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{tag}:lt"))
        .arg(format!("{tag}:dt"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let journal: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(format!("{tag}:j"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!journal.is_empty());
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{tag}:j"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for (id, fields) in &journal {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(format!("{tag}:j")).arg(id);
        for pair in fields.chunks(2) {
            let value = if pair[0] == b"k" {
                pair[1].clone()
            } else {
                strip(&pair[1])
            };
            xadd.arg(&pair[0]).arg(value);
        }
        let _: String = xadd.query_async(&mut conn).await.unwrap();
    }
}

/// A raw ledger value and its time-index score (clicks' `:lt`).
async fn raw_entry(cluster: &Cluster, u: &str, m: &str) -> (Vec<u8>, Option<f64>) {
    let client = redis::cluster::ClusterClient::new(cluster.seeds()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let tag = format!("{{u:{u}}}");
    let value: Vec<u8> = redis::cmd("HGET")
        .arg(format!("{tag}:l"))
        .arg(m)
        .query_async(&mut conn)
        .await
        .unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{tag}:lt"))
        .arg(m)
        .query_async(&mut conn)
        .await
        .unwrap();
    (value, score)
}

/// Two reads of one ledger hold the same entries, each timed within a
/// minute of the other: an entry still without a time is read as timed
/// now, and two reads may fall in different seconds (a fresh-clone CI
/// run once met m2 and m3 a second apart between an export and a backup).
fn same_entries<E: PartialEq + std::fmt::Debug>(
    got: &[(MessageId, u64, E)],
    want: &[(MessageId, u64, E)],
) {
    assert_eq!(got.len(), want.len(), "{got:?} / {want:?}");
    for ((gid, gt, ge), (wid, wt, we)) in got.iter().zip(want) {
        assert_eq!((gid, ge), (wid, we));
        assert!(gt.abs_diff(*wt) <= 60, "{gid:?} timed {gt}, then {wt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_entries_written_before_the_undo_window_are_undone_exactly_and_upgraded_in_place() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let a = connect(cluster).await;
    let u = user("pre-window");
    let clicks = [
        ("m0", entry(Spam, Weight::FULL, &[1, 2, 3])),
        ("m1", entry(Spam, Weight::FULL, &[2, 4])),
        ("m2", entry(Ham, Weight::FULL, &[5, 6])),
        ("m3", entry(Ham, Weight::FULL, &[6, 7, 8])),
    ];
    for (m, e) in &clicks {
        a.train(&u, &msg(m), e).await.unwrap();
    }
    // Delivered mail, learned from its delivery (kind 'i').
    assert!(
        a.learn_delivered(&u, &msg("d0"), &[TokenId(9), TokenId(10)], Weight::FULL)
            .await
            .unwrap()
            .is_some()
    );
    let before = a.load_model(&u).await.unwrap().unwrap();
    let delivered = a.ledger_get(&u, &msg("d0")).await.unwrap().unwrap();
    rewrite_as_before_the_undo_window(cluster, "pre-window").await;
    assert_eq!(raw_entry(cluster, "pre-window", "m0").await.1, None);

    // A replica of this build reads the old journal and ledger as they
    // were: the same model, the same entries.
    let b = connect(cluster).await;
    let mut held = CachedModel::default();
    b.refresh(&u, &mut held).await.unwrap();
    assert_eq!(held.model, before.model, "the old journal reads");
    for (m, e) in &clicks {
        assert_eq!(
            b.ledger_get(&u, &msg(m)).await.unwrap().as_ref(),
            Some(e),
            "{m}"
        );
    }
    assert_eq!(
        b.ledger_get(&u, &msg("d0")).await.unwrap(),
        Some(delivered.clone())
    );

    // Old entries are undoable (read as clicked now): Forget and a flip
    // are exact, the same label again changes nothing, a click over old
    // delivered mail replaces it.
    let mut expect = before.model.clone();
    let c = b.forget(&u, &msg("m0")).await.unwrap();
    assert_eq!(c.outcome, ClickOutcome::Forgotten(Spam));
    expect.unlearn(&clicks[0].1.tokens, Spam);
    let c = b
        .train(&u, &msg("m1"), &entry(Ham, Weight::FULL, &[2, 4]))
        .await
        .unwrap();
    assert_eq!(c.outcome, ClickOutcome::Relearned);
    expect.unlearn(&clicks[1].1.tokens, Spam);
    expect.learn(&clicks[1].1.tokens, Ham);
    let c = b.train(&u, &msg("m2"), &clicks[2].1).await.unwrap();
    assert_eq!(c.outcome, ClickOutcome::AlreadyLearned);
    let c = b
        .train(&u, &msg("d0"), &entry(Spam, Weight::FULL, &[9, 10]))
        .await
        .unwrap();
    assert_eq!(c.outcome, ClickOutcome::Learned);
    expect.unlearn_weighted(&delivered.tokens, Ham, delivered.weight);
    expect.learn(&[TokenId(9), TokenId(10)], Spam);
    b.refresh(&u, &mut held).await.unwrap();
    assert_eq!(held.model, expect, "every undo was exact");
    assert_eq!(a.load_model(&u).await.unwrap().unwrap().model, expect);

    // Export and backup carry the old entries, timed now (so a copy's
    // window starts where the cluster's does).
    let now_s = chaff::decisions::now_ms() / 1000;
    let export = b.read_user_export(&u).await.unwrap();
    let ledger: Vec<(String, u64)> = export
        .ledger
        .iter()
        .map(|(id, t, _)| (id.as_str().to_string(), *t))
        .collect();
    assert_eq!(
        ledger.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["d0", "m1", "m2", "m3"]
    );
    for (id, t) in &ledger {
        assert!(t.abs_diff(now_s) <= 60, "{id} timed {t}, now {now_s}");
    }
    let (copy, _) = b.backup_user(&u).await.unwrap();
    same_entries(&copy.unwrap().export.ledger, &export.ledger);

    // The upgrade stamps exactly the two entries still old (m2, m3), with
    // now, into the undo window's index; a second run finds none.
    let (old, _) = raw_entry(cluster, "pre-window", "m3").await;
    assert_eq!(old[18], b'H', "the body follows the 18-byte header");
    let done = a.upgrade_ledgers(|_| {}).await.unwrap();
    assert_eq!(done.stamped, 2, "{done:?}");
    assert!(done.ledgers >= 1 && done.primaries_done == done.primaries);
    for m in ["m2", "m3"] {
        let (value, score) = raw_entry(cluster, "pre-window", m).await;
        let t = u64::from(u32::from_be_bytes(value[18..22].try_into().unwrap()));
        assert!(t.abs_diff(now_s) <= 60, "{m} stamped {t}");
        assert_eq!(score, Some(t as f64), "{m} indexed at its time");
    }
    assert_eq!(a.upgrade_ledgers(|_| {}).await.unwrap().stamped, 0);
    same_entries(
        &a.read_user_export(&u).await.unwrap().ledger,
        &export.ledger,
    );

    // From now on they are clicks like any: one window later the sweep
    // folds them and their undo is refused, counts kept.
    let day = 86_400_000u64;
    let clocked = connect(cluster).await;
    let at = |days: u64| {
        let t = now_s * 1000 + days * day;
        chaff::store::Clock::new(move || t)
    };
    clocked.set_undo_window(Duration::from_millis(90 * day), at(89));
    assert_eq!(clocked.fold_ledgers_of("pre-window").await.unwrap(), 0);
    clocked.set_undo_window(Duration::from_millis(90 * day), at(91));
    assert!(clocked.fold_ledgers_of("pre-window").await.unwrap() >= 2);
    assert!(matches!(
        clocked.forget(&u, &msg("m3")).await,
        Err(Error::BeyondUndoWindow { .. })
    ));
    assert_eq!(a.load_model(&u).await.unwrap().unwrap().model, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clicked_and_delivered_ham_split_is_read_back_by_a_new_client_from_journal_and_snapshot()
 {
    // A chaff replica started after these clicks (a restart) has only the
    // cluster: the split must come back with the counts, from the journal
    // records (delivered mail's values are kind `i`) and from a snapshot.
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let a = connect(cluster).await;
    let u = user("split-restart");
    a.train(&u, &msg("s1"), &entry(Spam, Weight::FULL, &[1, 2]))
        .await
        .unwrap();
    let mut delivered = 0u64;
    for i in 0..4u64 {
        let w = a
            .learn_delivered(&u, &msg(&format!("d{i}")), &[TokenId(10 + i)], Weight::FULL)
            .await
            .unwrap()
            .expect("learned");
        delivered += u64::from(w.0);
    }
    a.train(&u, &msg("h1"), &entry(Ham, Weight::FULL, &[20]))
        .await
        .unwrap();
    // A Spam click over delivered mail takes its weight out of both.
    let d3 = a.ledger_get(&u, &msg("d3")).await.unwrap().unwrap();
    delivered -= u64::from(d3.weight.0);
    a.train(&u, &msg("d3"), &entry(Spam, Weight::FULL, &[13]))
        .await
        .unwrap();
    let check = |m: &Model, delivered: u64, what: &str| {
        assert_eq!(m.delivered_ham_weight(), delivered, "{what}");
        assert_eq!(m.clicked_ham_weight(), 64, "{what}: h1 alone");
    };
    let b = connect(cluster).await;
    let from_journal = b.load_model(&u).await.unwrap().unwrap();
    check(&from_journal.model, delivered, "from the journal");
    assert!(
        b.checkpoint(&u, &from_journal.model, from_journal.version)
            .await
            .unwrap()
    );
    // Forget one delivered message after the snapshot.
    let d0 = a.ledger_get(&u, &msg("d0")).await.unwrap().unwrap();
    a.forget(&u, &msg("d0")).await.unwrap();
    let c = connect(cluster).await;
    let mut held = CachedModel::default();
    assert_eq!(c.refresh(&u, &mut held).await.unwrap(), Refresh::Reloaded);
    check(
        &held.model,
        delivered - u64::from(d0.weight.0),
        "from the snapshot and a record after it",
    );
}

//! The Redis Cluster store (`store::redis_cluster`) against a real
//! cluster: click semantics (the same table as on sled), two clients over
//! one cluster, a primary killed under a stream of clicks, and a cluster
//! that goes down and comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaff::classify::{Model, Weight};
use chaff::engine::{Engine, Settings, TrainOutcome};
use chaff::error::Error;
use chaff::store::redis_cluster::{
    CachedModel, ClickOutcome, Clicked, RedisConfig, RedisStore, Refresh,
};
use chaff::store::{LedgerEntry, Store};
use chaff::tokenize::{TOKENIZER_VERSION, TokenId};
use chaff::types::{Label, MessageId, UserId};

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
}

/// What a step answers, in terms both backends share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Learned,
    AlreadyLearned,
    Relearned,
    Forgotten(Label),
    NotFound,
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

#[test]
fn the_click_table_holds_on_sled() {
    // The same table through the engine on a real sled directory: the
    // reference the Redis store must match.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        Store::open(dir.path(), 8 << 20).unwrap(),
        Settings::default(),
    )
    .unwrap();
    let u = user("table-sled");
    for (i, &(step, want, counts)) in TABLE.iter().enumerate() {
        let (answer, got) = match step {
            Step::Train(m, label) => {
                let t = engine
                    .train(&u, message_text(m).as_bytes(), label, Some(msg(m)))
                    .unwrap();
                let a = match t.outcome {
                    TrainOutcome::Learned => Answer::Learned,
                    TrainOutcome::AlreadyLearned => Answer::AlreadyLearned,
                    TrainOutcome::Relearned => Answer::Relearned,
                };
                (a, (t.spam_learned, t.ham_learned))
            }
            Step::Forget(m) => match engine.forget(&u, &msg(m)) {
                Ok(f) => (Answer::Forgotten(f.label), (f.spam_learned, f.ham_learned)),
                Err(Error::NotLearned { .. }) => {
                    let s = engine.user_summary(&u).unwrap();
                    (Answer::NotFound, (s.spam_learned, s.ham_learned))
                }
                Err(e) => panic!("row {i}: {e}"),
            },
        };
        assert_eq!((answer, got), (want, counts), "row {i}: {step:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_click_table_holds_on_redis_with_exact_models() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let store = connect(cluster).await;
    let u = user("table-redis");
    // The model every step must leave, built by hand on `Model`.
    let mut expect = Model::default();
    let mut learned: std::collections::HashMap<&str, Label> = Default::default();
    let mut last_version = 0;
    for (i, &(step, want, counts)) in TABLE.iter().enumerate() {
        let (answer, clicked) = match step {
            Step::Train(m, label) => {
                let c = store
                    .train(&u, &msg(m), &entry(label, Weight::FULL, &tokens_of(m)))
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
            Step::Forget(m) => match store.forget(&u, &msg(m)).await {
                Ok(c) => match c.outcome {
                    ClickOutcome::Forgotten(l) => (Answer::Forgotten(l), Some(c)),
                    other => panic!("row {i}: forget answered {other:?}"),
                },
                Err(Error::NotLearned { .. }) => (Answer::NotFound, None),
                Err(e) => panic!("row {i}: {e}"),
            },
        };
        // The reference model moves as the engine moves the sled one.
        let name = match step {
            Step::Train(m, _) | Step::Forget(m) => m,
        };
        let ids: Vec<TokenId> = entry(Spam, Weight::FULL, &tokens_of(name)).tokens;
        match (step, answer) {
            (Step::Train(m, label), Answer::Learned) => {
                expect.learn(&ids, label);
                learned.insert(m, label);
            }
            (Step::Train(m, label), Answer::Relearned) => {
                expect.unlearn(&ids, learned[m]);
                expect.learn(&ids, label);
                learned.insert(m, label);
            }
            (Step::Forget(m), Answer::Forgotten(label)) => {
                expect.unlearn(&ids, label);
                learned.remove(m);
            }
            _ => {}
        }
        let loaded = store.load_model(&u).await.unwrap().unwrap();
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
            last_version = version;
        }
    }
    // Everything forgotten: the model is empty again, exactly.
    assert_eq!(expect, Model::default());
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

/// Clicks for `u` until `stop`, one at a time (as one mailbox's clicks
/// arrive); returns the messages whose click was acknowledged and all
/// that were tried.
async fn click_stream(
    store: RedisStore,
    u: UserId,
    stop: tokio::sync::watch::Receiver<bool>,
    tried_so_far: Arc<AtomicU64>,
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
            }
            Err(e) => {
                assert!(e.is_storage(), "a failover error is storage trouble: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acked, tried)
}

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
    let clicks = tokio::spawn(click_stream(
        store.clone(),
        u.clone(),
        stop,
        tried_so_far.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(primary);
    let tried_at_kill = tried_so_far.load(Ordering::SeqCst);
    // The replica takes over (node timeout 1 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no new primary within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cluster.serving("{u:failover}:m");
        if now.is_some_and(|p| p != primary) && store.ping().await.is_ok() {
            break;
        }
    }
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
    for i in 0..tried {
        match store.ledger_get(&u, &msg(&format!("m{i}"))).await.unwrap() {
            Some(e) => {
                expect.learn(&e.tokens, e.label);
                in_ledger += 1;
            }
            None => assert!(!acked.contains(&i), "acknowledged click m{i} was lost"),
        }
    }
    let model = store.load_model(&u).await.unwrap().unwrap().model;
    assert_eq!(model, expect);
    assert!(in_ledger >= acked.len());
    eprintln!(
        "failover: {} clicks acknowledged, {in_ledger} in the ledger, {tried} tried, {} before the kill",
        acked.len(),
        tried_at_kill
    );
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
    let replica = cluster.replica_of(primary).expect("a replica");
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
    // Its link being up is not yet the primary counting it for WAIT (the
    // resync and first ACK can take a moment on a loaded machine: seen as
    // `NotReplicated { acked: 0 }` here): retry, as a client would, while
    // the answer is that one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let retry = loop {
        match store
            .train(&u, &msg("unconfirmed"), &entry(Spam, Weight::FULL, &[3]))
            .await
        {
            Err(e) if e.to_string().contains("replicas confirmed") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(retry.outcome, ClickOutcome::AlreadyLearned);
    store.forget(&u, &msg("unconfirmed")).await.unwrap();

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

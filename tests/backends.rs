//! The engine's click and score semantics on both storage backends: each
//! test runs once on a real sled directory and once on the real Redis
//! Cluster of `redis_cluster.rs` (skipped, saying so, only where
//! redis-server is not installed). Plus two `chaff serve --store redis://`
//! processes over one cluster.

use std::sync::atomic::{AtomicU64, Ordering};

use chaff::classify::Weight;
use chaff::engine::{Engine, Settings, TrainOutcome};
use chaff::error::Error;
use chaff::store::{LedgerEntry, Op, Store};
use chaff::tokenize::TokenId;
use chaff::types::{Label, MessageId, Owner, UserId};

use crate::common::{HAM, HAM2, SPAM, SPAM2};

/// An engine on one backend, and what keeps that backend alive.
struct Fixture {
    engine: Engine,
    _dir: Option<tempfile::TempDir>,
    /// Users are unique per fixture: the Redis cluster is shared by tests.
    prefix: String,
}

impl Fixture {
    fn sled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        Self {
            engine: Engine::new(store, settings()).unwrap(),
            _dir: Some(dir),
            prefix: "sled".into(),
        }
    }

    /// `None` (test skipped) only where redis-server is not installed.
    fn redis(test: &str) -> Option<Self> {
        let cluster = crate::redis_cluster::Cluster::shared()?;
        Some(Self {
            engine: redis_engine(&cluster.seeds()),
            _dir: None,
            prefix: unique(test),
        })
    }

    fn user(&self, name: &str) -> UserId {
        UserId::new(format!("{}-{name}", self.prefix)).unwrap()
    }

    /// A click as an older release (tokenizer `version`) wrote it, counted
    /// in the stored model as that release counted it.
    fn old_click(&self, user: &UserId, id: &MessageId, label: Label, version: u32) {
        let tokens = vec![TokenId(11), TokenId(12)];
        let entry = LedgerEntry {
            label,
            tokenizer_version: version,
            tokens: tokens.clone(),
            weight: Weight::FULL,
            shared: 0,
            implicit: false,
        };
        let store = self.engine.store();
        match store.shared_clicks() {
            Some(clicks) => {
                clicks.train(user, id, &entry).unwrap();
            }
            None => {
                let ops = [Op::Learn(label, Weight::FULL, tokens)];
                store
                    .record_click(&Owner::User(user.clone()), id, Some(&entry), &ops, &[])
                    .unwrap();
                store.flush().unwrap();
            }
        }
    }
}

/// Delivered-mail learning off: it is not on the Redis store yet, and the
/// semantics compared here are the clicks'.
fn settings() -> Settings {
    Settings {
        learn_delivered: false,
        ..Settings::default()
    }
}

fn redis_engine(seeds: &[String]) -> Engine {
    let backend = chaff::store::redis_cluster::RedisBackend::connect(
        chaff::store::redis_cluster::RedisConfig::new(seeds.iter().cloned()),
    )
    .expect("connect to the test cluster");
    Engine::new(backend, settings()).unwrap()
}

fn unique(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn id(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

fn counts(e: &Engine, u: &UserId) -> (u64, u64) {
    let s = e.user_summary(u).unwrap();
    (s.spam_learned, s.ham_learned)
}

/// Each test body once per backend: `NAME::on_sled` and `NAME::on_redis`.
macro_rules! on_both {
    ($name:ident, |$f:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run($f: Fixture) $body
            #[test]
            fn on_sled() {
                run(Fixture::sled());
            }
            #[test]
            fn on_redis() {
                if let Some(f) = Fixture::redis(stringify!($name)) {
                    run(f);
                }
            }
        }
    };
}

on_both!(a_click_is_learned_and_counted, |f| {
    let u = f.user("u");
    let t = f
        .engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    assert_eq!(t.outcome, TrainOutcome::Learned);
    assert_eq!((t.spam_learned, t.ham_learned), (1, 0));
    assert_eq!(counts(&f.engine, &u), (1, 0));
});

on_both!(the_same_click_again_changes_nothing, |f| {
    let u = f.user("u");
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    f.engine.train(&u, HAM, Label::Ham, Some(id("h1"))).unwrap();
    let before = f.engine.score(&u, SPAM2).unwrap();
    let t = f
        .engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    assert_eq!(t.outcome, TrainOutcome::AlreadyLearned);
    assert_eq!((t.spam_learned, t.ham_learned), (1, 1));
    assert_eq!(f.engine.score(&u, SPAM2).unwrap(), before);
});

on_both!(a_flipped_click_moves_the_message_exactly, |f| {
    let u = f.user("flip");
    let reference = f.user("ref");
    // The flip ends where learning only the new label does.
    f.engine
        .train(&u, HAM2, Label::Ham, Some(id("h2")))
        .unwrap();
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("m")))
        .unwrap();
    let t = f.engine.train(&u, SPAM, Label::Ham, Some(id("m"))).unwrap();
    assert_eq!(t.outcome, TrainOutcome::Relearned);
    assert_eq!((t.spam_learned, t.ham_learned), (0, 2));
    f.engine
        .train(&reference, HAM2, Label::Ham, Some(id("h2")))
        .unwrap();
    let judged = f
        .engine
        .train(&reference, SPAM, Label::Ham, Some(id("m")))
        .unwrap();
    assert_eq!(judged.outcome, TrainOutcome::Learned);
    for m in [SPAM, SPAM2, HAM, HAM2] {
        let (a, b) = (
            f.engine.score(&u, m).unwrap(),
            f.engine.score(&reference, m).unwrap(),
        );
        assert_eq!(a.tokens_known, b.tokens_known);
    }
    assert_eq!(counts(&f.engine, &u), counts(&f.engine, &reference));
});

on_both!(forget_restores_the_state_before_the_click, |f| {
    let u = f.user("u");
    f.engine.train(&u, HAM, Label::Ham, Some(id("h1"))).unwrap();
    f.engine
        .train(&u, SPAM2, Label::Spam, Some(id("s2")))
        .unwrap();
    let before = (counts(&f.engine, &u), f.engine.score(&u, SPAM).unwrap());
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    assert_ne!(f.engine.score(&u, SPAM).unwrap(), before.1);
    let gone = f.engine.forget(&u, &id("s1")).unwrap();
    assert_eq!(gone.label, Label::Spam);
    assert_eq!((gone.spam_learned, gone.ham_learned), (1, 1));
    assert_eq!(
        (counts(&f.engine, &u), f.engine.score(&u, SPAM).unwrap()),
        before
    );
    // Again, or a message never learned: NOT_FOUND.
    for m in ["s1", "never"] {
        assert!(
            matches!(f.engine.forget(&u, &id(m)), Err(Error::NotLearned { .. })),
            "{m}"
        );
    }
});

on_both!(scores_reflect_clicks, |f| {
    let u = f.user("u");
    let untrained = f.engine.score(&u, SPAM2).unwrap();
    assert_eq!(untrained.tokens_known, 0);
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    f.engine.train(&u, HAM, Label::Ham, Some(id("h1"))).unwrap();
    let spam = f.engine.score(&u, SPAM2).unwrap();
    let ham = f.engine.score(&u, HAM2).unwrap();
    assert!(spam.tokens_known > 0);
    assert!(
        spam.probability > ham.probability,
        "spam {spam:?} vs ham {ham:?}"
    );
});

on_both!(
    a_click_of_another_tokenizer_version_is_forgotten_without_undoing_its_tokens,
    |f| {
        // The current model never counted such a click as this release would
        // (`undo` in engine/clicks.rs, the click script on Redis): forgetting
        // or relearning it leaves the counts alone.
        let u = f.user("u");
        let old = id("old");
        f.old_click(
            &u,
            &old,
            Label::Spam,
            chaff::tokenize::TOKENIZER_VERSION - 1,
        );
        f.engine.train(&u, HAM, Label::Ham, Some(id("h1"))).unwrap();
        let before = (counts(&f.engine, &u), f.engine.score(&u, SPAM).unwrap());
        assert_eq!(f.engine.forget(&u, &old).unwrap().label, Label::Spam);
        assert_eq!(
            (counts(&f.engine, &u), f.engine.score(&u, SPAM).unwrap()),
            before
        );
        assert!(matches!(
            f.engine.forget(&u, &old),
            Err(Error::NotLearned { .. })
        ));
        // Relearned: the new click is learned, the old one not undone.
        let older = id("older");
        f.old_click(
            &u,
            &older,
            Label::Spam,
            chaff::tokenize::TOKENIZER_VERSION - 1,
        );
        let (spam, ham) = counts(&f.engine, &u);
        let t = f.engine.train(&u, HAM2, Label::Ham, Some(older)).unwrap();
        assert_eq!(t.outcome, TrainOutcome::Relearned);
        assert_eq!((t.spam_learned, t.ham_learned), (spam, ham + 1));
    }
);

/// Two `chaff serve --store redis://…` processes over one cluster: what one
/// acknowledges, the other's next Score and GetUser see; what the Redis
/// store does not hold yet is refused, naming it.
#[tokio::test]
async fn two_servers_over_one_cluster_see_each_others_clicks_at_once() {
    use crate::common::{ServerProcess, connect, score, train, user};
    use chaff::proto;
    let Some(cluster) = crate::redis_cluster::Cluster::shared() else {
        return;
    };
    let store = format!(
        "redis://{}",
        cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--store", store.as_str(), "--redis-replicas", "1"];
    let a = ServerProcess::start_args(da.path(), &flags);
    let b = ServerProcess::start_args(db.path(), &flags);
    let (mut ca, mut cb) = (connect(&a.addr).await, connect(&b.addr).await);
    let u = unique("two-servers");
    // B holds the user's (empty) model in its cache before the clicks.
    assert_eq!(score(&mut cb, &u, SPAM2).await.tokens_known, 0);
    for (m, label, mid) in [
        (SPAM, proto::Label::Spam, "s1"),
        (HAM, proto::Label::Ham, "h1"),
    ] {
        let t = train(&mut ca, &u, m, label, mid).await;
        assert_eq!(t.outcome, proto::TrainOutcome::Learned as i32);
        // Immediately after A's reply, B's answers count the click.
        let info = user(&mut cb, &u).await;
        assert_eq!(
            (info.spam_learned, info.ham_learned),
            (t.spam_learned, t.ham_learned)
        );
    }
    let (s, h) = (
        score(&mut cb, &u, SPAM2).await,
        score(&mut cb, &u, HAM2).await,
    );
    assert!(s.tokens_known > 0);
    assert!(s.spam_probability > h.spam_probability, "{s:?} {h:?}");
    // A Forget through B, seen by A.
    cb.forget(proto::ForgetRequest {
        user_id: u.clone(),
        message_id: "s1".into(),
    })
    .await
    .unwrap();
    assert_eq!(user(&mut ca, &u).await.spam_learned, 0);
    // Not on the Redis store yet: refused, naming what.
    let refused = ca
        .update_user(proto::UpdateUserRequest {
            user_id: u.clone(),
            share_training: Some(true),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("not on the redis store"),
        "{}",
        refused.message()
    );
    a.terminate();
    b.terminate();
}

/// The Redis backend blocks on its own runtime; from an async worker
/// thread tokio refuses that with a panic — the assertion that storage
/// never stalls a runtime worker (the service runs every engine call on
/// the blocking pool).
#[tokio::test]
async fn redis_calls_from_an_async_worker_are_refused() {
    use chaff::store::Backend;
    use chaff::store::redis_cluster::{RedisBackend, RedisConfig};
    let Some(cluster) = crate::redis_cluster::Cluster::shared() else {
        return;
    };
    let seeds = cluster.seeds();
    let backend =
        tokio::task::spawn_blocking(move || RedisBackend::connect(RedisConfig::new(seeds)))
            .await
            .unwrap()
            .unwrap();
    // From a blocking-pool thread it works ...
    let b = std::sync::Arc::new(backend);
    let from_pool = b.clone();
    tokio::task::spawn_blocking(move || from_pool.shared_clicks().unwrap().ping())
        .await
        .unwrap()
        .unwrap();
    // ... from this worker thread it panics.
    let on_worker = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.shared_clicks().unwrap().ping()
    }));
    let message = on_worker.expect_err("blocking on a runtime worker must panic");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains("runtime"), "{text}");
}

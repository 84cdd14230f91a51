//! The engine's semantics on both storage backends — clicks and scores,
//! delivered mail, settings and lists, the decision log, the shared model
//! with consent, DeleteUser and ListUsers: each test runs once on a real
//! sled directory and once on the real Redis Cluster of `redis_cluster.rs`
//! (skipped, saying so, only where redis-server is not installed). Plus
//! two engines, and two `chaff serve --store redis://` processes, over one
//! cluster.

use std::sync::atomic::{AtomicU64, Ordering};

use chaff::classify::Weight;
use chaff::decisions::DecisionRecord;
use chaff::engine::{
    DecisionQuery, Engine, Envelope, ListRef, Settings, TrainOutcome, derive_message_id,
};
use chaff::error::Error;
use chaff::policy::settings::SettingsUpdate;
use chaff::policy::{Entry, HandlingMode, ListKind, RuleKind};
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
    /// The Redis store under the engine (a clone: the same connections
    /// and undo window), for what only this fixture's users may see.
    redis: Option<chaff::store::redis_cluster::RedisStore>,
}

impl Fixture {
    fn sled(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        Self {
            engine: Engine::new(store, settings).unwrap(),
            _dir: Some(dir),
            prefix: "sled".into(),
            redis: None,
        }
    }

    /// `None` (test skipped) only where redis-server is not installed.
    fn redis(test: &str, settings: Settings) -> Option<Self> {
        let cluster = crate::redis_cluster::Cluster::shared()?;
        let backend = chaff::store::redis_cluster::RedisBackend::connect(
            chaff::store::redis_cluster::RedisConfig::new(cluster.seeds()),
        )
        .expect("connect to the test cluster");
        let store = backend.store().clone();
        Some(Self {
            engine: Engine::new(backend, settings).unwrap(),
            _dir: None,
            prefix: unique(test),
            redis: Some(store),
        })
    }

    /// Waits for the engine's first background sweep, which the decision
    /// log's writer runs before it logs anything: a test that moves its
    /// clock ahead must not have that sweep (`fold_ledger`, over the
    /// whole shared cluster) fold other tests' users with its clock.
    fn settle(&self) {
        let u = self.user("settle");
        self.engine.evaluate(&u, HAM, &Envelope::default()).unwrap();
        assert_eq!(decisions(&self.engine, &u, "", 1).len(), 1);
    }

    /// The background undo-window sweep (`Engine::fold_ledger`, hourly in
    /// a server), over this fixture's users only on the shared cluster:
    /// its clock is not the other tests'. How many entries it folded.
    fn fold(&self) -> u64 {
        match &self.redis {
            None => self.engine.fold_ledger().unwrap(),
            Some(store) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(store.fold_ledgers_of(&format!("{}-", self.prefix)))
                .unwrap(),
        }
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
                clicks.train(user, id, None, &entry).unwrap();
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

/// Delivered-mail learning off where the semantics compared are the
/// clicks' alone (`on_both!(…, delivered, …)` turns it on).
fn settings() -> Settings {
    Settings {
        learn_delivered: false,
        ..Settings::default()
    }
}

fn with_delivered() -> Settings {
    Settings::default()
}

fn redis_engine_with(seeds: &[String], settings: Settings) -> Engine {
    let backend = chaff::store::redis_cluster::RedisBackend::connect(
        chaff::store::redis_cluster::RedisConfig::new(seeds.iter().cloned()),
    )
    .expect("connect to the test cluster");
    Engine::new(backend, settings).unwrap()
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

/// Each test body once per backend: `NAME::on_sled` and `NAME::on_redis`
/// (with `settings()`, or the settings named before the closure).
macro_rules! on_both {
    ($name:ident, |$f:ident| $body:block) => {
        on_both!($name, settings(), |$f| $body);
    };
    ($name:ident, $settings:expr, |$f:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run($f: Fixture) $body
            #[test]
            fn on_sled() {
                run(Fixture::sled($settings));
            }
            #[test]
            fn on_redis() {
                if let Some(f) = Fixture::redis(stringify!($name), $settings) {
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

/// A message made only of this test's own words (no headers, whose
/// tokens other tests' messages share), and its tokens: the shared model
/// is one per cluster, which other tests fill too, so a test checks
/// exactly its own contribution, and leaves nothing another test's scores
/// could see.
fn unique_message(prefix: &str, tag: &str) -> (Vec<u8>, Vec<TokenId>) {
    let n = short(&format!("{prefix}{tag}"));
    let text = format!("qq{n}a qq{n}b qq{n}c\r\n");
    let ids = chaff::tokenize::Tokenizer::default()
        .tokenize(text.as_bytes())
        .ids;
    assert!(!ids.is_empty());
    (text.into_bytes(), ids)
}

/// A short word for `s` (FNV-1a, as hex with letters `g`–`p` for the
/// digits): a unique prefix is too long for a token or a domain label, and
/// a word of many digits would be tokenized as its number pattern, which
/// other tests' words share (two "unique" messages then had the same
/// tokens, about one run in ten).
fn short(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:x}")
        .bytes()
        .map(|b| match b {
            b'0'..=b'9' => char::from(b'g' + (b - b'0')),
            b => char::from(b),
        })
        .collect()
}

/// The spam counts the shared model holds for each of `ids`.
fn shared_spam(e: &Engine, ids: &[TokenId]) -> Vec<u32> {
    let total = e.shared_model();
    ids.iter()
        .map(|t| total.get(*t).map_or(0, |c| c.spam))
        .collect()
}

fn share(e: &Engine, u: &UserId, on: bool) {
    e.update_settings(
        u,
        &SettingsUpdate {
            share_training: Some(on),
            ..Default::default()
        },
    )
    .unwrap();
}

/// Waits (10 s at most) for the decision log's background writer.
fn decisions(e: &Engine, u: &UserId, sender: &str, want: usize) -> Vec<DecisionRecord> {
    let query = DecisionQuery::new(0, 0, sender.into(), String::new(), 0).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = e.find_decisions(u, &query).unwrap();
        if found.len() >= want || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn stored_model(e: &Engine, u: &UserId) -> chaff::classify::Model {
    e.store().load_model(u).unwrap().expect("a model").model
}

on_both!(
    a_click_replaces_the_delivered_learning_exactly,
    with_delivered(),
    |f| {
        // As engine/tests.rs' test of the same name on sled: a click on
        // delivered mail — either label, with the caller's id or none —
        // leaves exactly the model of the click alone.
        let cases = [
            (Label::Spam, Some("webmail-7")),
            (Label::Spam, None),
            (Label::Ham, Some("webmail-7")),
            (Label::Ham, None),
        ];
        for (n, (label, caller)) in cases.into_iter().enumerate() {
            let mid = caller.map(id);
            let delivered = f.user(&format!("delivered{n}"));
            let clicked_only = f.user(&format!("clicked{n}"));
            for u in [&delivered, &clicked_only] {
                f.engine.train(u, SPAM, Label::Spam, None).unwrap();
            }
            f.engine
                .evaluate(&delivered, HAM, &Envelope::default())
                .unwrap();
            let derived = derive_message_id(HAM);
            let entry = f.engine.store().ledger_get(&delivered, &derived).unwrap();
            assert!(entry.is_some_and(|e| e.implicit), "delivered mail learned");
            assert_eq!(counts(&f.engine, &delivered), (1, 1));

            let t = f.engine.train(&delivered, HAM, label, mid.clone()).unwrap();
            assert_eq!(t.outcome, TrainOutcome::Learned, "{label:?} {mid:?}");
            f.engine
                .train(&clicked_only, HAM, label, mid.clone())
                .unwrap();
            assert_eq!(
                stored_model(&f.engine, &delivered),
                stored_model(&f.engine, &clicked_only),
                "{label:?} {mid:?}"
            );
            let key = mid.unwrap_or(derived.clone());
            let ledger = |u| f.engine.store().ledger_get(u, &key).unwrap().unwrap();
            assert!(!ledger(&delivered).implicit);
            assert_eq!(ledger(&delivered), ledger(&clicked_only));
            if key != derived {
                assert_eq!(
                    f.engine.store().ledger_get(&delivered, &derived).unwrap(),
                    None
                );
            }
            let again = f.engine.train(&delivered, HAM, label, Some(key)).unwrap();
            assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
        }
    }
);

/// A message of `words` distinct made-up words from its own sender, for
/// the sizes below: nothing in one is in another.
fn message_of(subject: &str, words: usize) -> Vec<u8> {
    let word = |i: usize| {
        let l = |n: usize| char::from(b'a' + (n % 26) as u8);
        format!("qz{}{}{}", l(i), l(i / 26), l(i / 676))
    };
    let body: Vec<String> = (0..words).map(|i| word(i + subject.len() * 1000)).collect();
    format!(
        "From: {subject}@{subject}.example\r\nSubject: {subject} {subject}s {subject}ing\r\nMessage-ID: <1@{subject}.example>\r\n\r\n{}\r\n",
        body.join(" ")
    )
    .into_bytes()
}

on_both!(
    a_near_empty_delivered_message_weighs_its_share_and_the_next_fills_the_gap,
    with_delivered(),
    |f| {
        // `engine::clicks::delivered_ceiling`, inline (no worker: on Redis
        // the engine's own path, `learn_delivered_shared`): after one long
        // clicked spam, an empty-bodied ham weighs a share of one message,
        // not the whole gap, and the next ordinary ham fills what is left.
        // Before, the empty one took the whole message and the next 3/64.
        let u = f.user("u");
        f.engine
            .train(&u, &message_of("offer", 400), Label::Spam, None)
            .unwrap();
        let weight = |msg: &[u8]| {
            f.engine.evaluate(&u, msg, &Envelope::default()).unwrap();
            let entry = f.engine.store().ledger_get(&u, &derive_message_id(msg));
            entry.unwrap().expect("learned as delivered mail").weight
        };
        let empty = weight(&message_of("lunch", 0));
        assert!(
            Weight::DELIVERED < empty && empty < Weight::FULL,
            "the empty ham: {empty:?}"
        );
        let next = weight(&message_of("minutes", 60));
        assert_eq!(
            Weight(empty.0 + next.0),
            Weight::FULL,
            "the next ham: {next:?}"
        );
    }
);

on_both!(
    delivered_mail_is_not_a_first_learning_and_forget_removes_it,
    with_delivered(),
    |f| {
        let u = f.user("u");
        // Nothing clicked yet: delivered mail teaches nothing.
        f.engine.evaluate(&u, HAM, &Envelope::default()).unwrap();
        assert_eq!(counts(&f.engine, &u), (0, 0));
        f.engine.train(&u, SPAM, Label::Spam, None).unwrap();
        let before = stored_model(&f.engine, &u);
        f.engine.evaluate(&u, HAM2, &Envelope::default()).unwrap();
        assert_eq!(counts(&f.engine, &u), (1, 1));
        // Scored again: learned once.
        f.engine.evaluate(&u, HAM2, &Envelope::default()).unwrap();
        assert_eq!(counts(&f.engine, &u), (1, 1));
        let gone = f.engine.forget(&u, &derive_message_id(HAM2)).unwrap();
        assert_eq!(gone.label, Label::Ham);
        assert_eq!(stored_model(&f.engine, &u), before);
    }
);

on_both!(settings_and_lists_are_kept_and_decide_delivery, |f| {
    let (u, other) = (f.user("u"), f.user("other"));
    assert_eq!(
        f.engine.user_settings(&u).unwrap().mode,
        HandlingMode::Quarantine
    );
    let set = f
        .engine
        .update_settings(
            &u,
            &SettingsUpdate {
                mode: Some(HandlingMode::Reject),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(set.settings.mode, HandlingMode::Reject);
    assert!(set.changed);
    assert_eq!(
        f.engine.user_settings(&u).unwrap().mode,
        HandlingMode::Reject
    );
    assert_eq!(
        f.engine.user_settings(&other).unwrap().mode,
        HandlingMode::Quarantine
    );

    let block = ListRef {
        owner: Owner::User(u.clone()),
        kind: ListKind::Block,
    };
    let (domain, net): (Entry, Entry) = (
        "winner.example".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
    );
    assert!(f.engine.add_list_entry(&block, &domain).unwrap());
    assert!(!f.engine.add_list_entry(&block, &domain).unwrap());
    assert!(f.engine.add_list_entry(&block, &net).unwrap());
    // The sled store's order: by the entry's text.
    assert_eq!(
        f.engine.list_entries(&block).unwrap(),
        vec![net.clone(), domain.clone()]
    );
    let allow = ListRef {
        owner: Owner::User(u.clone()),
        kind: ListKind::Allow,
    };
    assert!(f.engine.list_entries(&allow).unwrap().is_empty());

    let rule = |u: &UserId| {
        f.engine
            .evaluate(u, SPAM2, &Envelope::default())
            .unwrap()
            .decision
            .rule
            .kind()
    };
    assert_eq!(rule(&u), RuleKind::BlockList);
    assert_eq!(rule(&other), RuleKind::Model);
    assert!(f.engine.remove_list_entry(&block, &domain).unwrap());
    assert!(!f.engine.remove_list_entry(&block, &domain).unwrap());
    assert_eq!(rule(&u), RuleKind::Model);
    assert_eq!(f.engine.list_entries(&block).unwrap(), vec![net]);

    // The operator's lists are their own.
    let operator = ListRef {
        owner: Owner::Operator,
        kind: ListKind::Block,
    };
    let entry: Entry = "operator-block.example".parse().unwrap();
    assert!(f.engine.add_list_entry(&operator, &entry).unwrap());
    assert!(f.engine.list_entries(&operator).unwrap().contains(&entry));
    assert!(!f.engine.list_entries(&block).unwrap().contains(&entry));
    assert!(f.engine.remove_list_entry(&operator, &entry).unwrap());
});

on_both!(the_decision_log_finds_what_score_decided, |f| {
    let (u, other) = (f.user("u"), f.user("other"));
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    for (m, queue_id) in [(SPAM2, "queue-1"), (HAM, "queue-2")] {
        let envelope = Envelope {
            message_id: Some(id(queue_id)),
            ..Envelope::default()
        };
        f.engine.evaluate(&u, m, &envelope).unwrap();
    }
    let found = decisions(&f.engine, &u, "", 2);
    let ids: Vec<_> = found.iter().map(|r| r.message_id.as_str()).collect();
    // Newest first.
    assert_eq!(ids, ["queue-2", "queue-1"]);
    let from_winner = decisions(&f.engine, &u, "winner.example", 1);
    assert_eq!(from_winner.len(), 1);
    assert_eq!(from_winner[0].message_id, id("queue-1"));
    assert!(decisions(&f.engine, &other, "", 0).is_empty());
});

on_both!(
    revoking_consent_takes_exactly_that_users_clicks_out_of_the_shared_model,
    |f| {
        let _alone = crate::redis_cluster::Cluster::shared_model_lock();
        let (a, b) = (f.user("a"), f.user("b"));
        let (ma, ta) = unique_message(&f.prefix, "a");
        let (mb, tb) = unique_message(&f.prefix, "b");
        let (ma2, ta2) = unique_message(&f.prefix, "a2");
        assert!(
            ta.iter().all(|t| !tb.contains(t)),
            "a's and b's words differ"
        );
        share(&f.engine, &a, true);
        share(&f.engine, &b, true);
        assert!(f.engine.user_settings(&a).unwrap().share_training);
        f.engine
            .train(&a, &ma, Label::Spam, Some(id("ma")))
            .unwrap();
        f.engine
            .train(&b, &mb, Label::Spam, Some(id("mb")))
            .unwrap();
        assert!(shared_spam(&f.engine, &ta).iter().all(|&c| c > 0));
        let b_part = shared_spam(&f.engine, &tb);
        assert!(b_part.iter().all(|&c| c > 0));

        share(&f.engine, &a, false);
        assert!(shared_spam(&f.engine, &ta).iter().all(|&c| c == 0));
        assert_eq!(shared_spam(&f.engine, &tb), b_part);
        // After the revoke a's clicks are a's alone; a's model keeps them.
        f.engine
            .train(&a, &ma2, Label::Spam, Some(id("ma2")))
            .unwrap();
        assert!(shared_spam(&f.engine, &ta2).iter().all(|&c| c == 0));
        assert_eq!(counts(&f.engine, &a), (2, 0));
        // A Forget takes a sharing user's click out of the shared model.
        f.engine.forget(&b, &id("mb")).unwrap();
        assert!(shared_spam(&f.engine, &tb).iter().all(|&c| c == 0));
    }
);

on_both!(delete_user_removes_everything_the_user_stored, |f| {
    let _alone = crate::redis_cluster::Cluster::shared_model_lock();
    let (u, keep) = (f.user("u"), f.user("keep"));
    let (m, tokens) = unique_message(&f.prefix, "deleted");
    share(&f.engine, &u, true);
    f.engine.train(&u, &m, Label::Spam, Some(id("m"))).unwrap();
    f.engine.train(&u, HAM, Label::Ham, Some(id("h"))).unwrap();
    f.engine.train(&keep, SPAM, Label::Spam, None).unwrap();
    let block = ListRef {
        owner: Owner::User(u.clone()),
        kind: ListKind::Block,
    };
    let entry: Entry = "winner.example".parse().unwrap();
    f.engine.add_list_entry(&block, &entry).unwrap();
    f.engine.evaluate(&u, SPAM2, &Envelope::default()).unwrap();
    assert_eq!(decisions(&f.engine, &u, "", 1).len(), 1);
    assert!(shared_spam(&f.engine, &tokens).iter().all(|&c| c > 0));

    assert!(f.engine.delete_user(&u).unwrap());
    assert_eq!(counts(&f.engine, &u), (0, 0));
    let settings = f.engine.user_settings(&u).unwrap();
    assert!(!settings.share_training);
    assert!(f.engine.list_entries(&block).unwrap().is_empty());
    assert!(decisions(&f.engine, &u, "", 0).is_empty());
    assert!(shared_spam(&f.engine, &tokens).iter().all(|&c| c == 0));
    assert_eq!(f.engine.store().ledger_get(&u, &id("m")).unwrap(), None);
    assert!(!f.engine.delete_user(&u).unwrap(), "deleting again");
    assert_eq!(counts(&f.engine, &keep), (1, 0));
    // Learning again starts from nothing, and is not shared.
    let t = f.engine.train(&u, &m, Label::Spam, Some(id("m"))).unwrap();
    assert_eq!(t.outcome, TrainOutcome::Learned);
    assert_eq!((t.spam_learned, t.ham_learned), (1, 0));
    assert!(shared_spam(&f.engine, &tokens).iter().all(|&c| c == 0));
});

on_both!(list_users_pages_in_the_store_order, |f| {
    let names = ["bb", "a", "c10", "c2"];
    for n in names {
        f.engine.train(&f.user(n), SPAM, Label::Spam, None).unwrap();
    }
    let prefix = format!("{}-", f.prefix);
    let first = f.engine.list_users(&prefix, None, 3).unwrap();
    let listed: Vec<_> = first.users.iter().map(|l| l.user.clone()).collect();
    // By the id's length, then its bytes.
    assert_eq!(listed, [f.user("a"), f.user("bb"), f.user("c2")]);
    assert_eq!(first.users[0].spam_learned, 1);
    let rest = f
        .engine
        .list_users(&prefix, first.next_after.as_ref(), 3)
        .unwrap();
    let listed: Vec<_> = rest.users.iter().map(|l| l.user.clone()).collect();
    assert_eq!(listed, [f.user("c10")]);
    assert_eq!(rest.next_after, None);
});

/// The shared model's (spam, ham) counts for each of `ids`.
fn shared_counts(e: &Engine, ids: &[TokenId]) -> Vec<(u32, u32)> {
    let total = e.shared_model();
    ids.iter()
        .map(|t| total.get(*t).map_or((0, 0), |c| (c.spam, c.ham)))
        .collect()
}

on_both!(
    seeding_learns_once_moves_exactly_and_a_clear_drops_it_all,
    |f| {
        let _alone = crate::redis_cluster::Cluster::shared_model_lock();
        let (m, tokens) = unique_message(&f.prefix, "seed");
        let mid = id(&format!("{}-seed", f.prefix));
        let seeded = f.engine.seed(&m, Label::Spam, Some(mid.clone())).unwrap();
        assert_eq!(seeded.outcome, TrainOutcome::Learned);
        let as_spam = shared_counts(&f.engine, &tokens);
        assert!(as_spam.iter().all(|&(s, h)| s > 0 && h == 0), "{as_spam:?}");
        let again = f.engine.seed(&m, Label::Spam, Some(mid.clone())).unwrap();
        assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
        assert_eq!(shared_counts(&f.engine, &tokens), as_spam);
        // The other label moves it, exactly.
        let moved = f.engine.seed(&m, Label::Ham, Some(mid.clone())).unwrap();
        assert_eq!(moved.outcome, TrainOutcome::Relearned);
        let as_ham = shared_counts(&f.engine, &tokens);
        assert!(as_ham.iter().all(|&(s, h)| s == 0 && h > 0), "{as_ham:?}");
        assert!(f.engine.shared_summary().seed_ham >= 1);
        // A clear drops the whole seed; seeding again starts from nothing.
        f.engine.clear_seed().unwrap();
        assert!(
            shared_counts(&f.engine, &tokens)
                .iter()
                .all(|&c| c == (0, 0))
        );
        assert_eq!(
            f.engine.shared_summary().seed_spam + f.engine.shared_summary().seed_ham,
            0
        );
        let fresh = f.engine.seed(&m, Label::Spam, Some(mid)).unwrap();
        assert_eq!(fresh.outcome, TrainOutcome::Learned);
        assert_eq!(shared_counts(&f.engine, &tokens), as_spam);
        f.engine.clear_seed().unwrap();
    }
);

on_both!(an_export_imported_again_gives_back_the_same_user, |f| {
    let u = f.user("u");
    f.engine
        .train(&u, SPAM, Label::Spam, Some(id("s1")))
        .unwrap();
    f.engine.train(&u, HAM, Label::Ham, Some(id("h1"))).unwrap();
    f.engine
        .update_settings(
            &u,
            &SettingsUpdate {
                mode: Some(HandlingMode::Reject),
                ..Default::default()
            },
        )
        .unwrap();
    let block = ListRef {
        owner: Owner::User(u.clone()),
        kind: ListKind::Block,
    };
    f.engine
        .add_list_entry(&block, &"winner.example".parse().unwrap())
        .unwrap();
    f.engine.evaluate(&u, HAM2, &Envelope::default()).unwrap();
    assert_eq!(decisions(&f.engine, &u, "", 1).len(), 1);
    let state = |e: &Engine| {
        (
            e.user_summary(&u).unwrap(),
            e.user_settings(&u).unwrap(),
            e.list_entries(&block).unwrap(),
            decisions(e, &u, "", 1),
            e.score(&u, SPAM2).unwrap(),
            e.store().ledger_get(&u, &id("s1")).unwrap(),
        )
    };
    let before = state(&f.engine);

    let bytes = f.engine.export_user(&u).unwrap().expect("an export");
    let exported = chaff::store::export::decode(&bytes).unwrap();
    assert_eq!(exported.ledger.len(), 2);
    assert_eq!(exported.decisions.len(), 1);
    let imported = f.engine.import_user(&u, &bytes, true).unwrap();
    assert!(imported.replaced);
    assert_eq!(
        (imported.messages, imported.decisions, imported.list_entries),
        (2, 1, 1)
    );
    assert_eq!(state(&f.engine), before);
    // The imported ledger undoes a click exactly.
    let gone = f.engine.forget(&u, &id("s1")).unwrap();
    assert_eq!(gone.label, Label::Spam);
    assert_eq!((gone.spam_learned, gone.ham_learned), (0, 1));
    // Nothing stored: nothing to export.
    assert_eq!(f.engine.export_user(&f.user("nobody")).unwrap(), None);
});

/// Two engines over one cluster act as two chaff replicas: what one
/// changes — settings, lists, consent, the operator's lists — holds for
/// the other's next Score (the shared model and the operator's lists
/// within the poll interval, `SHARED_POLL`).
#[test]
fn settings_lists_and_consent_changed_on_one_replica_hold_on_the_other() {
    let _alone = crate::redis_cluster::Cluster::shared_model_lock();
    let Some(cluster) = crate::redis_cluster::Cluster::shared() else {
        return;
    };
    let (a, b) = (
        redis_engine_with(&cluster.seeds(), settings()),
        redis_engine_with(&cluster.seeds(), settings()),
    );
    let prefix = unique("two-engines");
    let u = UserId::new(format!("{prefix}-u")).unwrap();
    let (m, tokens) = unique_message(&prefix, "m");
    // B holds the user's slot (policy included) before A changes anything.
    b.train(&u, HAM, Label::Ham, Some(id("h"))).unwrap();
    let rule = |e: &Engine| {
        e.evaluate(&u, SPAM2, &Envelope::default())
            .unwrap()
            .decision
            .rule
            .kind()
    };
    assert_eq!(rule(&b), RuleKind::Model);
    let block = ListRef {
        owner: Owner::User(u.clone()),
        kind: ListKind::Block,
    };
    a.add_list_entry(&block, &"winner.example".parse().unwrap())
        .unwrap();
    assert_eq!(
        rule(&b),
        RuleKind::BlockList,
        "B's next Score sees A's entry"
    );
    a.update_settings(
        &u,
        &SettingsUpdate {
            mode: Some(HandlingMode::Reject),
            ..Default::default()
        },
    )
    .unwrap();
    b.score(&u, HAM).unwrap();
    assert_eq!(b.user_settings(&u).unwrap().mode, HandlingMode::Reject);

    // Consent given on A, a click on B is shared; A's copy has it after
    // a poll, and after a revoke on B, neither has it.
    share(&a, &u, true);
    b.train(&u, &m, Label::Spam, Some(id("m"))).unwrap();
    let seen = |e: &Engine, want_shared: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            e.score(&u, HAM).unwrap(); // a Score polls when due
            let all = shared_spam(e, &tokens)
                .iter()
                .all(|&c| (c > 0) == want_shared);
            if all || std::time::Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert!(seen(&b, true), "the click was shared under A's consent");
    assert!(seen(&a, true), "A's copy of the shared model has B's click");
    share(&b, &u, false);
    assert!(seen(&b, false));
    assert!(seen(&a, false), "A's copy drops the revoked part");

    // The operator's lists too: a block entry for a domain only this
    // test sends from.
    let tag = format!("op{}", short(&prefix));
    let from_tag =
        format!("From: news@{tag}.example\r\nSubject: notes\r\n\r\nhello\r\n").into_bytes();
    let operator = ListRef {
        owner: Owner::Operator,
        kind: ListKind::Block,
    };
    let entry: Entry = format!("{tag}.example").parse().unwrap();
    let ruled = |e: &Engine| {
        e.evaluate(&u, &from_tag, &Envelope::default())
            .unwrap()
            .decision
            .rule
            .kind()
    };
    assert_eq!(ruled(&b), RuleKind::Model);
    a.add_list_entry(&operator, &entry).unwrap();
    assert_eq!(ruled(&a), RuleKind::BlockList);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ruled(&b) != RuleKind::BlockList {
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw the operator's entry"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    a.remove_list_entry(&operator, &entry).unwrap();
}

/// Two `chaff serve --store redis://…` processes over one cluster: what one
/// acknowledges, the other's next Score and GetUser see.
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
    // Backup on Redis: tests/redis_ops.rs.
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

const DAY_MS: u64 = 86_400_000;

/// Each test body once per backend with a clock the test moves (unix ms):
/// `NAME::on_sled` and `NAME::on_redis`. The clock starts at the system's
/// time: the cluster is shared, and other tests' engines sweep it with the
/// system clock, so this test's clicks must not look older than theirs.
macro_rules! on_both_clocked {
    ($name:ident, $settings:expr, |$f:ident, $now:ident| $body:block) => {
        mod $name {
            use super::*;
            use std::sync::Arc;
            fn run($f: Fixture, $now: Arc<AtomicU64>) $body
            fn clocked() -> (Settings, Arc<AtomicU64>) {
                let start = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let now = Arc::new(AtomicU64::new(start));
                let clock = now.clone();
                let settings = Settings {
                    clock: chaff::store::Clock::new(move || clock.load(Ordering::SeqCst)),
                    ..$settings
                };
                (settings, now)
            }
            #[test]
            fn on_sled() {
                let (settings, now) = clocked();
                run(Fixture::sled(settings), now);
            }
            #[test]
            fn on_redis() {
                let (settings, now) = clocked();
                if let Some(f) = Fixture::redis(stringify!($name), settings) {
                    f.settle();
                    run(f, now);
                }
            }
        }
    };
}

/// The ledger entries an export of `u` carries, by message id.
fn exported_ledger(
    e: &Engine,
    u: &UserId,
) -> std::collections::BTreeMap<String, chaff::store::export::Learned> {
    let bytes = e.export_user(u).unwrap().expect("an export");
    chaff::store::export::decode(&bytes)
        .unwrap()
        .ledger
        .into_iter()
        .map(|(id, _, learned)| (id.to_string(), learned))
        .collect()
}

on_both_clocked!(
    a_click_older_than_the_undo_window_keeps_its_counts_and_cannot_be_undone,
    settings(),
    |f, now| {
        // As tests/ledger.rs through the service on sled.
        let u = f.user("u");
        f.engine
            .train(&u, SPAM, Label::Spam, Some(id("old")))
            .unwrap();
        f.engine
            .train(&u, HAM, Label::Ham, Some(id("recent-ham")))
            .unwrap();
        now.fetch_add(89 * DAY_MS, Ordering::SeqCst);
        f.engine
            .train(&u, SPAM2, Label::Spam, Some(id("recent")))
            .unwrap();
        f.engine
            .train(&u, HAM2, Label::Ham, Some(id("recent2")))
            .unwrap();
        // Day 89: everything is still inside the window.
        f.engine.forget(&u, &id("recent-ham")).unwrap();
        // Day 91: "old" is beyond it, "recent" is not.
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        let state = |e: &Engine| (counts(e, &u), e.score(&u, SPAM).unwrap());
        let before = state(&f.engine);
        let beyond = |r: Result<_, Error>| match r {
            Err(e @ Error::BeyondUndoWindow { label, window, .. }) => {
                assert_eq!(label, Label::Spam);
                assert_eq!(window, std::time::Duration::from_secs(90 * 86_400));
                assert!(e.to_string().contains("90d"), "{e}");
            }
            Err(e) => panic!("expected beyond the undo window, got {e:?}"),
            Ok(_) => panic!("expected beyond the undo window, got Ok"),
        };
        beyond(f.engine.forget(&u, &id("old")).map(drop));
        assert_eq!(state(&f.engine), before, "counts stay");
        // Moving it to the other class is refused the same way; the same
        // label again is still harmless.
        beyond(
            f.engine
                .train(&u, SPAM, Label::Ham, Some(id("old")))
                .map(drop),
        );
        let again = f
            .engine
            .train(&u, SPAM, Label::Spam, Some(id("old")))
            .unwrap();
        assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
        assert_eq!(state(&f.engine), before, "counts stay");
        beyond(f.engine.store().ledger_get(&u, &id("old")).map(drop));
        // Folded (in passing by a click on Redis, or by the sweep): the
        // entry keeps its label only; the answers are the same.
        f.fold();
        let ledger = exported_ledger(&f.engine, &u);
        assert!(
            matches!(
                ledger["old"],
                chaff::store::export::Learned::Folded(Label::Spam)
            ),
            "{:?}",
            ledger["old"]
        );
        assert!(matches!(
            ledger["recent"],
            chaff::store::export::Learned::Live(_)
        ));
        beyond(f.engine.forget(&u, &id("old")).map(drop));
        assert_eq!(state(&f.engine), before, "counts stay");
        // A recent click is still undone exactly.
        let gone = f.engine.forget(&u, &id("recent")).unwrap();
        assert_eq!(gone.label, Label::Spam);
        assert_eq!(counts(&f.engine, &u), (1, 1));
        // A message never learned is still NOT_FOUND, not a window matter.
        assert!(matches!(
            f.engine.forget(&u, &id("never")),
            Err(Error::NotLearned { .. })
        ));
    }
);

on_both_clocked!(
    the_background_sweep_folds_clicks_no_later_click_touched,
    settings(),
    |f, now| {
        let u = f.user("u");
        for (m, label, name) in [
            (SPAM, Label::Spam, "a"),
            (HAM, Label::Ham, "b"),
            (SPAM2, Label::Spam, "c"),
        ] {
            f.engine.train(&u, m, label, Some(id(name))).unwrap();
        }
        let model = stored_model(&f.engine, &u);
        now.fetch_add(89 * DAY_MS, Ordering::SeqCst);
        assert_eq!(f.fold(), 0, "inside the window");
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        assert_eq!(f.fold(), 3);
        assert_eq!(f.fold(), 0, "nothing left");
        for (name, learned) in exported_ledger(&f.engine, &u) {
            assert!(
                matches!(learned, chaff::store::export::Learned::Folded(_)),
                "{name}: {learned:?}"
            );
        }
        assert_eq!(stored_model(&f.engine, &u), model, "counts stay");
        assert!(matches!(
            f.engine.forget(&u, &id("b")),
            Err(Error::BeyondUndoWindow {
                label: Label::Ham,
                ..
            })
        ));
    }
);

on_both_clocked!(
    delivered_mail_leaves_the_ledger_after_its_own_shorter_window,
    with_delivered(),
    |f, now| {
        let u = f.user("u");
        f.engine
            .train(&u, SPAM, Label::Spam, Some(id("c")))
            .unwrap();
        f.engine.evaluate(&u, HAM, &Envelope::default()).unwrap();
        let derived = derive_message_id(HAM);
        let ledger = |m: &MessageId| f.engine.store().ledger_get(&u, m).unwrap();
        assert!(ledger(&derived).is_some_and(|e| e.implicit));
        assert_eq!(counts(&f.engine, &u), (1, 1));
        let model = stored_model(&f.engine, &u);
        // Day 13: inside both windows (14 days for delivered mail).
        now.fetch_add(13 * DAY_MS, Ordering::SeqCst);
        assert_eq!(f.fold(), 0, "inside both windows");
        assert!(ledger(&derived).is_some());
        // Day 15: the delivered entry is past its window; the click, as
        // old, is still undoable.
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        assert_eq!(ledger(&derived), None);
        assert_eq!(f.fold(), 1, "the delivered entry only");
        assert!(!f.engine.store().ledger_contains(&u, &derived).unwrap());
        assert!(ledger(&id("c")).is_some_and(|e| !e.implicit));
        assert_eq!(stored_model(&f.engine, &u), model, "counts stay");
        // A click on that mail now is a first click, beside the delivered
        // learning, which stays.
        let t = f.engine.train(&u, HAM, Label::Ham, None).unwrap();
        assert_eq!(t.outcome, TrainOutcome::Learned);
        assert_eq!((t.spam_learned, t.ham_learned), (1, 2));
    }
);

on_both_clocked!(
    a_backup_keeps_each_clicks_time_and_its_folded_clicks,
    settings(),
    |f, now| {
        // A backup is a sled directory that goes on where the source
        // stood: a click past the window (folded or not) is still beyond
        // it on the copy, a recent one still undone exactly.
        let u = f.user("u");
        f.engine
            .train(&u, SPAM, Label::Spam, Some(id("old")))
            .unwrap();
        f.engine
            .train(&u, HAM, Label::Ham, Some(id("old-ham")))
            .unwrap();
        now.fetch_add(89 * DAY_MS, Ordering::SeqCst);
        f.engine
            .train(&u, SPAM2, Label::Spam, Some(id("recent")))
            .unwrap();
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        assert_eq!(f.fold(), 2, "the two old clicks folded");
        let dir = tempfile::tempdir().unwrap();
        let copy_dir = dir.path().join("backup");
        f.engine.backup_to(&copy_dir).unwrap();
        let clock = now.clone();
        let copy = Engine::new(
            crate::common::open_store_waiting(&copy_dir, 8 << 20),
            Settings {
                clock: chaff::store::Clock::new(move || clock.load(Ordering::SeqCst)),
                ..settings()
            },
        )
        .unwrap();
        assert_eq!(exported_ledger(&copy, &u), exported_ledger(&f.engine, &u));
        assert_eq!(counts(&copy, &u), (2, 1));
        assert!(matches!(
            copy.forget(&u, &id("old")),
            Err(Error::BeyondUndoWindow {
                label: Label::Spam,
                ..
            })
        ));
        assert_eq!(copy.forget(&u, &id("recent")).unwrap().label, Label::Spam);
        assert_eq!(counts(&copy, &u), (1, 1));
    }
);

/// A message of `n` distinct words of this test's own (see
/// [`unique_message`]; letters only, from [`short`]).
fn many_words(prefix: &str, tag: &str, n: usize) -> Vec<u8> {
    let s = short(&format!("{prefix}{tag}"));
    let mut text = String::new();
    for i in 0..n {
        let (hi, lo) = (i / 26, i % 26);
        let w = format!(
            "{}{}",
            char::from(b'a' + (hi % 26) as u8),
            char::from(b'a' + lo as u8)
        );
        text.push_str(&format!("qq{s}w{w} "));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A user quota of 20 tokens, pruned as soon as a click passes it.
fn capped() -> Settings {
    Settings {
        max_user_tokens: Some(20),
        ..settings()
    }
}

on_both!(
    a_model_past_its_quota_is_pruned_and_forgetting_pruned_clicks_leaves_it_empty,
    capped(),
    |f| {
        let u = f.user("u");
        for i in 0..6 {
            let m = many_words(&f.prefix, &format!("m{i}"), 8);
            let label = if i % 2 == 0 { Label::Spam } else { Label::Ham };
            f.engine
                .train(&u, &m, label, Some(id(&format!("m{i}"))))
                .unwrap();
        }
        let model = stored_model(&f.engine, &u);
        assert!(model.token_count() <= 20, "{} tokens", model.token_count());
        assert_eq!((model.spam_learned(), model.ham_learned()), (3, 3));
        assert_eq!(
            f.engine.user_summary(&u).unwrap().tokens,
            model.token_count() as u64
        );
        // Every click forgotten, pruned tokens and all: the counts end at
        // zero, never below, and nothing is left.
        for i in 0..6 {
            f.engine.forget(&u, &id(&format!("m{i}"))).unwrap();
        }
        let model = stored_model(&f.engine, &u);
        assert_eq!(model.token_count(), 0);
        assert_eq!(model.weights(), (0, 0));
        assert_eq!(counts(&f.engine, &u), (0, 0));
    }
);

/// The Redis backend of a second engine over the shared test cluster.
fn second_engine(settings: Settings) -> Option<Engine> {
    let cluster = crate::redis_cluster::Cluster::shared()?;
    Some(redis_engine_with(&cluster.seeds(), settings))
}

#[test]
fn a_prune_on_one_replica_is_the_model_every_replica_scores_with() {
    let Some(f) = Fixture::redis("prune_two_replicas", capped()) else {
        return;
    };
    let other = second_engine(settings()).unwrap();
    let u = f.user("u");
    let first = many_words(&f.prefix, "first", 8);
    f.engine
        .train(&u, &first, Label::Spam, Some(id("first")))
        .unwrap();
    // The other replica holds the model before the prune.
    assert!(other.score(&u, &first).unwrap().tokens_known > 0);
    for i in 0..5 {
        let m = many_words(&f.prefix, &format!("m{i}"), 8);
        let label = if i % 2 == 0 { Label::Ham } else { Label::Spam };
        f.engine
            .train(&u, &m, label, Some(id(&format!("m{i}"))))
            .unwrap();
    }
    let pruned = f.engine.user_summary(&u).unwrap();
    assert!(pruned.tokens <= 20, "{pruned:?}");
    // The next read on the other replica reloads the pruned model.
    let seen = other.user_summary(&u).unwrap();
    assert_eq!(seen, pruned);
    assert_eq!(stored_model(&other, &u).token_count() as u64, pruned.tokens);
}

#[test]
fn a_sharing_users_part_journal_is_folded_when_due() {
    let _alone = crate::redis_cluster::Cluster::shared_model_lock();
    let Some(f) = Fixture::redis("part_fold", settings()) else {
        return;
    };
    let store = f.redis.clone().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let u = f.user("u");
    let who = Owner::User(u.clone());
    share(&f.engine, &u, true);
    // A message moved between the labels: each move journals two
    // entries per token (and one per op) against a part of that many
    // tokens, due past `CHECKPOINT_MIN_ENTRIES` (32,768).
    let m = many_words(&f.prefix, "flip", 600);
    let ids = chaff::tokenize::Tokenizer::default().tokenize(&m).ids;
    let t = ids.len() as u64 + 1;
    let due = (chaff::store::CHECKPOINT_MIN_ENTRIES - t).div_ceil(2 * t) as usize + 1;
    let labels = [Label::Spam, Label::Ham];
    let mut n = 0;
    while rt.block_on(store.part_versions(&who)).unwrap().1 == 0 {
        assert!(n <= due, "no fold after {n} clicks ({} tokens)", ids.len());
        f.engine
            .train(&u, &m, labels[n % 2], Some(id("flip")))
            .unwrap();
        n += 1;
    }
    let (v, sv) = rt.block_on(store.part_versions(&who)).unwrap();
    assert_eq!(v, sv, "folded up to the last click");
    assert_eq!(n, due, "not before it was due");
    // A replica that loads the shared model now reads the snapshot: the
    // message under its last label, as the folding replica holds it.
    let other = second_engine(settings()).unwrap();
    assert_eq!(shared_counts(&other, &ids), shared_counts(&f.engine, &ids));
    let last = labels[(n - 1) % 2];
    assert!(
        shared_counts(&other, &ids)
            .iter()
            .all(|&(s, h)| match last {
                Label::Spam => s > 0 && h == 0,
                Label::Ham => h > 0 && s == 0,
            })
    );
    share(&f.engine, &u, false);
}

#[test]
fn the_shared_model_is_pruned_to_its_cap_on_redis() {
    let _alone = crate::redis_cluster::Cluster::shared_model_lock();
    let Some(f) = Fixture::redis(
        "shared_cap",
        Settings {
            max_shared_tokens: Some(10),
            ..settings()
        },
    ) else {
        return;
    };
    let u = f.user("u");
    share(&f.engine, &u, true);
    // The first click also runs any prune queued at start (the cluster's
    // shared model is other tests' too); the second one's part must be
    // queued by the poll that brings it.
    let m = many_words(&f.prefix, "shared", 30);
    f.engine.train(&u, &m, Label::Spam, Some(id("m"))).unwrap();
    let m2 = many_words(&f.prefix, "shared2", 30);
    f.engine
        .train(&u, &m2, Label::Spam, Some(id("m2")))
        .unwrap();
    let total = f.engine.shared_model().token_count();
    assert!(total <= 10, "{total} tokens");
    share(&f.engine, &u, false);
}

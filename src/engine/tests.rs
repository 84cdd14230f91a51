//! Engine semantics on a real sled directory.

use super::*;
use crate::classify::Weight;
use crate::mail::sender::HeaderFacts;
use crate::store::CHECKPOINT_MIN_ENTRIES;
use crate::types::{Label, MessageId, Verdict};

const SPAM: &[u8] = b"From: promo@pills.example\r\nSubject: cheap pills now\r\nMessage-ID: <s1@pills.example>\r\n\r\nbuy cheap pills viagra discount offer\r\n";
const HAM: &[u8] = b"From: bob@work.example\r\nSubject: meeting notes\r\nMessage-ID: <h1@work.example>\r\n\r\nthe quarterly meeting notes are attached, see agenda\r\n";

/// An engine over `dir`. Tests that reopen a directory in the same process
/// retry briefly: sled releases its file lock from a background thread
/// shortly after the last handle drops, so an immediate reopen can fail.
pub(super) fn engine(dir: &std::path::Path) -> Engine {
    let store = crate::store::open_waiting(dir, 16 << 20);
    Engine::new(store, Settings::default()).unwrap()
}

pub(super) fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn state(e: &Engine, u: &UserId) -> (UserSummary, f64, f64) {
    let s = e.score(u, SPAM).unwrap().probability;
    let h = e.score(u, HAM).unwrap().probability;
    (e.user_summary(u).unwrap(), s, h)
}

#[test]
fn untrained_user_scores_neutral_unsure() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let s = e.score(&user("nobody"), SPAM).unwrap();
    assert_eq!(s.probability, 0.5);
    assert_eq!(s.verdict, Verdict::Unsure);
}

#[test]
fn training_separates_spam_from_ham() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    e.train(&u, HAM, Label::Ham, None).unwrap();
    assert!(e.score(&u, SPAM).unwrap().probability > 0.9);
    assert!(e.score(&u, HAM).unwrap().probability < 0.1);
}

#[test]
fn users_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let before = state(&e, &user("bob"));
    e.train(&user("alice"), SPAM, Label::Spam, None).unwrap();
    e.train(&user("alice"), HAM, Label::Ham, None).unwrap();
    assert_eq!(state(&e, &user("bob")), before);
}

#[test]
fn repeated_click_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    e.train(&u, HAM, Label::Ham, None).unwrap();
    let first = e.train(&u, SPAM, Label::Spam, None).unwrap();
    assert_eq!(first.outcome, TrainOutcome::Learned);
    let before = state(&e, &u);
    let again = e.train(&u, SPAM, Label::Spam, None).unwrap();
    assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
    assert_eq!(state(&e, &u), before);
}

#[test]
fn flipped_click_equals_learning_only_the_new_class() {
    let dir = tempfile::tempdir().unwrap();
    let flipped = engine(&dir.path().join("a"));
    let direct = engine(&dir.path().join("b"));
    let u = user("alice");
    for e in [&flipped, &direct] {
        e.train(&u, HAM, Label::Ham, None).unwrap();
    }
    flipped.train(&u, SPAM, Label::Ham, None).unwrap();
    let moved = flipped.train(&u, SPAM, Label::Spam, None).unwrap();
    assert_eq!(moved.outcome, TrainOutcome::Relearned);
    direct.train(&u, SPAM, Label::Spam, None).unwrap();
    assert_eq!(state(&flipped, &u), state(&direct, &u));
    assert_eq!((moved.spam_learned, moved.ham_learned), (1, 1));
}

#[test]
fn forget_restores_the_exact_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    e.train(&u, HAM, Label::Ham, None).unwrap();
    let before = state(&e, &u);
    let t = e.train(&u, SPAM, Label::Spam, None).unwrap();
    assert_ne!(state(&e, &u), before);
    let f = e.forget(&u, &t.message_id).unwrap();
    assert_eq!(f.label, Label::Spam);
    assert_eq!(state(&e, &u), before);
    // Forgetting twice is an error, not a negative count.
    assert!(matches!(
        e.forget(&u, &t.message_id),
        Err(Error::NotLearned { .. })
    ));
    assert_eq!(state(&e, &u), before);
}

#[test]
fn a_confidently_right_click_is_learned_light_and_forgotten_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    let id = |s: &str| MessageId::new(s).unwrap();
    for i in 0..3 {
        e.train(&u, SPAM, Label::Spam, Some(id(&format!("s{i}"))))
            .unwrap();
        e.train(&u, HAM, Label::Ham, Some(id(&format!("h{i}"))))
            .unwrap();
    }
    // The ledger (on disk, what Forget reads) records each click's weight.
    let weight = |m: &str| e.store.ledger_get(&u, &id(m)).unwrap().unwrap().weight;
    assert_eq!(weight("s0"), Weight::FULL);
    assert!(e.score(&u, SPAM).unwrap().log_odds >= e.settings.params.confident_log_odds);
    let before = state(&e, &u);
    let t = e.train(&u, SPAM, Label::Spam, Some(id("again"))).unwrap();
    // The click is learned (it counts as a message), at light weight, and
    // is not a trusted-sender low-effect click.
    assert_eq!((t.outcome, t.spam_learned), (TrainOutcome::Learned, 4));
    assert!(!t.low_effect);
    assert_eq!(weight("again"), Weight::LIGHT);
    assert_ne!(state(&e, &u), before);
    let again = e.train(&u, SPAM, Label::Spam, Some(id("again"))).unwrap();
    assert_eq!(
        (again.outcome, again.low_effect),
        (TrainOutcome::AlreadyLearned, false)
    );
    e.forget(&u, &id("again")).unwrap();
    assert_eq!(state(&e, &u), before);
}

#[test]
fn forget_unknown_message_or_user_is_not_learned() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let m = MessageId::new("nope").unwrap();
    assert!(matches!(
        e.forget(&user("ghost"), &m),
        Err(Error::NotLearned { .. })
    ));
    e.train(&user("alice"), HAM, Label::Ham, None).unwrap();
    assert!(matches!(
        e.forget(&user("alice"), &m),
        Err(Error::NotLearned { .. })
    ));
}

#[test]
fn message_id_comes_from_header_then_digest() {
    assert_eq!(derive_message_id(SPAM).as_str(), "<s1@pills.example>");
    let a = derive_message_id(b"no headers here");
    let b = derive_message_id(b"no headers here!");
    assert!(a.as_str().starts_with("xxh3:"));
    assert_ne!(a, b);
}

/// A header block longer than the header cap is searched for its
/// Message-ID only in its first `MESSAGE_ID_SEARCH_BYTES` (a 4 MiB block was
/// parsed whole on every Score); past that the message is named by digest.
#[test]
fn a_message_id_is_looked_for_only_in_the_first_256_kib_of_headers() {
    use super::score::MESSAGE_ID_SEARCH_BYTES;
    let pad = |n: usize| format!("X-Pad: {}\r\n", "x".repeat(n)).repeat(64);
    let early = format!(
        "Message-ID: <early@b.example>\r\n{}\r\nbody\r\n",
        pad(64 * 1024)
    );
    assert!(early.len() > 4 * MESSAGE_ID_SEARCH_BYTES);
    assert_eq!(
        derive_message_id(early.as_bytes()).as_str(),
        "<early@b.example>"
    );
    let late = format!(
        "{}Message-ID: <late@b.example>\r\n\r\nbody\r\n",
        pad(64 * 1024)
    );
    let id = derive_message_id(late.as_bytes());
    assert!(id.as_str().starts_with("xxh3:"), "{id:?}");
}

/// `Engine::read` and `evaluate` take the header facts and a derived id
/// from the tokenizer's parse; they must be what parsing the header block
/// apart gives, including where the tokenizer has no parse of the bytes as
/// they are (repaired separator, garbage) and where the header block is
/// longer than the header cap.
#[test]
fn facts_and_ids_from_the_tokenizers_parse_equal_a_parse_of_their_own() {
    let long_header = format!(
        "From: a@b.example\r\nX-Pad: {}\r\nSubject: late\r\nMessage-ID: <late@b.example>\r\n\r\nbody\r\n",
        "x".repeat(300 * 1024)
    );
    // Over the scan cap with its header block whole: parsed from a prefix.
    let long_body = format!(
        "From: a@b.example\r\nSubject: long\r\nMessage-ID: <long@b.example>\r\n\r\n{}\r\n",
        "words ".repeat(100 * 1024)
    );
    let messages: [&[u8]; 9] = [
        SPAM,
        HAM,
        // mail-parser's parse() finds a message with no headers here, its
        // parse_headers() none: the facts and ids must still agree.
        b"\r\nbody after an empty header block\r\n",
        b"junk line\r\n\r\nbody\r\n",
        b"From: a@b.example\r\nSubject: no separator\r\nMessage-ID: <ns@b.example>\r\nbody starts here\r\n",
        b"Received-SPF: pass (example.com: 192.0.2.1 is permitted) client-ip=192.0.2.1;\r\nAuthentication-Results: mx.example; dkim=pass header.d=b.example; dmarc=pass\r\nFrom: \"A\" <a@b.example>\r\nList-Unsubscribe: <https://b.example/u>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nhi\r\n",
        b"\x00\xff garbage, not a message",
        long_header.as_bytes(),
        long_body.as_bytes(),
    ];
    let tk = crate::tokenize::Tokenizer::default();
    let max = tk.limits().max_header_bytes;
    for m in messages {
        let (tokens, (facts, id)) = tk.tokenize_with(m, |parsed| {
            (
                HeaderFacts::read(m, parsed, max, &Default::default()),
                derive_message_id_from(m, parsed),
            )
        });
        assert_eq!(tokens, tk.tokenize(m));
        assert_eq!(
            facts,
            HeaderFacts::from_message(m, max, &Default::default())
        );
        assert_eq!(id, derive_message_id(m));
    }
    // The messages above reach both paths.
    let shared = |m: &[u8]| tk.tokenize_with(m, |parsed| parsed.is_some()).1;
    assert!(shared(SPAM) && !shared(messages[4]) && shared(long_body.as_bytes()));
}

#[test]
fn caller_message_id_wins_over_header() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let id = MessageId::new("uid-42").unwrap();
    let t = e
        .train(&user("alice"), SPAM, Label::Spam, Some(id.clone()))
        .unwrap();
    assert_eq!(t.message_id, id);
    e.forget(&user("alice"), &id).unwrap();
}

#[test]
fn oversized_message_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        max_message_bytes: 100,
        ..Settings::default()
    };
    let e = Engine::new(Store::open(dir.path(), 16 << 20).unwrap(), settings).unwrap();
    let big = vec![b'a'; 101];
    let err = e.score(&user("alice"), &big).unwrap_err();
    assert!(matches!(
        err,
        Error::MessageTooLarge {
            size: 101,
            limit: 100
        }
    ));
    assert!(e.train(&user("alice"), &big, Label::Spam, None).is_err());
    assert_eq!(e.user_summary(&user("alice")).unwrap().spam_learned, 0);
}

#[test]
fn state_survives_reopen_across_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let u = user("alice");
    let expected;
    // 300 clicks of 150 words each (from a 500-word vocabulary, so the
    // model stays far smaller than its journal): ≥ 45,000 journal entries,
    // enough to cross at least one checkpoint and leave a tail after it.
    const CLICKS: usize = 300;
    const WORDS: usize = 150;
    assert!((CLICKS * WORDS) as u64 > CHECKPOINT_MIN_ENTRIES);
    {
        let e = engine(dir.path());
        for i in 0..CLICKS {
            let body: Vec<String> = (0..WORDS)
                .map(|k| format!("w{}", (i * 7 + k) % 500))
                .collect();
            let msg = format!("Subject: note {i}\r\n\r\n{}\r\n", body.join(" "));
            let label = if i % 3 == 0 { Label::Spam } else { Label::Ham };
            e.train(
                &u,
                msg.as_bytes(),
                label,
                Some(MessageId::new(format!("m{i}")).unwrap()),
            )
            .unwrap();
        }
        e.forget(&u, &MessageId::new("m3").unwrap()).unwrap();
        expected = state(&e, &u);
        // No shutdown(): as after a crash, the journal tail must replay.
    }
    {
        // A snapshot was taken (else the journal would hold every click's
        // entries) and a journal tail follows it.
        let store = crate::store::open_waiting(dir.path(), 8 << 20);
        let loaded = store.load_model(&u).unwrap().unwrap();
        assert!(
            (1..CHECKPOINT_MIN_ENTRIES).contains(&loaded.journal_entries),
            "{}",
            loaded.journal_entries
        );
    }
    let e = engine(dir.path());
    assert_eq!(state(&e, &u), expected);
    e.shutdown().unwrap();
    drop(e);
    let e = engine(dir.path());
    assert_eq!(state(&e, &u), expected);
}

#[test]
fn a_model_from_another_tokenizer_version_is_never_mixed_in() {
    use crate::classify::Model;
    use crate::store::{LedgerEntry, Op};
    use crate::tokenize::TokenId;
    let dir = tempfile::tempdir().unwrap();
    let u = user("alice");
    let old_id = MessageId::new("old").unwrap();
    {
        // A user trained by tokenizer version 1, written as that release would.
        let store = Store::open(dir.path(), 16 << 20).unwrap();
        let old_tokens = vec![TokenId(1), TokenId(2)];
        let entry = LedgerEntry {
            label: Label::Spam,
            tokenizer_version: 1,
            tokens: old_tokens.clone(),
            weight: Weight::FULL,
            shared: 0,
            implicit: false,
        };
        let seq = store
            .record(
                &u,
                &old_id,
                Some(&entry),
                &[Op::Learn(Label::Spam, Weight::FULL, old_tokens.clone())],
            )
            .unwrap();
        let mut v1 = Model::from_parts((0, 0), (0, 0), 1, []);
        v1.learn(&old_tokens, Label::Spam);
        store.checkpoint(&u, &v1, seq).unwrap();
    }
    let e = engine(dir.path());
    let fresh = e.user_summary(&u).unwrap();
    assert_eq!(
        (fresh.spam_learned, fresh.tokens, fresh.tokenizer_version),
        (0, 0, TOKENIZER_VERSION)
    );
    e.train(&u, HAM, Label::Ham, None).unwrap();
    let before = state(&e, &u);
    // Forgetting the old click removes it from the ledger and nothing else.
    assert_eq!(e.forget(&u, &old_id).unwrap().label, Label::Spam);
    assert_eq!(state(&e, &u), before);
    assert!(matches!(
        e.forget(&u, &old_id),
        Err(Error::NotLearned { .. })
    ));
}

#[test]
fn in_process_scoring_and_the_score_rpc_give_one_verdict_under_custom_thresholds() {
    use crate::policy::settings::SettingsUpdate;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("strict");
    // Nothing learned: every score is 0.5, which a 0.5 threshold calls spam
    // and the classifier's own cutoffs (0.2, 0.8) call unsure.
    e.update_settings(
        &u,
        &SettingsUpdate {
            spam_threshold: Some(0.5),
            ..Default::default()
        },
    )
    .unwrap();
    let read = e.read(SPAM).unwrap();
    // What `chaff eval` calls in-process ...
    let replay = e.score(&u, &read).unwrap();
    let (online, _) = e
        .score_then_train(&u, &read, Label::Spam, None, |_| false)
        .unwrap();
    let views = e.score_views(&u, SPAM).unwrap();
    // ... and what the Score RPC calls.
    let rpc = e.evaluate(&u, SPAM, &Envelope::default()).unwrap();
    assert_eq!(rpc.scored.probability, 0.5);
    assert_eq!(rpc.scored.verdict, Verdict::Spam);
    assert_eq!(rpc.decision.verdict, Verdict::Spam);
    for (name, s) in [
        ("score of a read message", &replay),
        ("score_then_train", &online),
        ("score", &e.score(&u, SPAM).unwrap()),
        ("score_views", &views.blended),
    ] {
        assert_eq!(s.verdict, rpc.scored.verdict, "{name}");
    }
    // A user with default settings is still read against the defaults.
    let other = e.score(&user("default"), SPAM).unwrap();
    assert_eq!(other.verdict, Verdict::Unsure);
}

#[test]
fn decision_queries_get_the_default_limit_and_refuse_what_is_out_of_bounds() {
    let q = DecisionQuery::new(5, 0, " ".into(), String::new(), 0).unwrap();
    assert_eq!(q.limit, DEFAULT_FIND_LIMIT);
    assert_eq!((q.since_ms, q.until_ms), (5, u64::MAX));
    assert_eq!((q.sender, q.subject), (None, None));
    let max = DecisionQuery::new(0, 9, "a@b.example".into(), "Hi".into(), 1000).unwrap();
    assert_eq!(max.limit, MAX_FIND_LIMIT);
    assert_eq!(max.until_ms, 9);
    assert_eq!(max.sender.as_deref(), Some("a@b.example"));
    let over = DecisionQuery::new(0, 0, String::new(), String::new(), 1001).unwrap_err();
    assert!(over.to_string().contains("maximum 1000"), "{over}");
    let negative = DecisionQuery::new(-1, 0, String::new(), String::new(), 0).unwrap_err();
    assert!(
        negative.to_string().contains("cannot be negative"),
        "{negative}"
    );
    assert!(DecisionQuery::new(0, -1, String::new(), String::new(), 0).is_err());
    let backwards = DecisionQuery::new(2000, 1000, String::new(), String::new(), 0).unwrap_err();
    assert!(backwards.to_string().contains("is before"), "{backwards}");
    assert!(DecisionQuery::new(1000, 1000, String::new(), String::new(), 0).is_ok());
    let two_ats = DecisionQuery::new(0, 0, "a@b@c".into(), String::new(), 0).unwrap_err();
    assert!(two_ats.to_string().contains("more than one @"), "{two_ats}");
}

/// Mail delivered to a user who has clicked is learned as ham at
/// [`Weight::DELIVERED`], once, under the id chaff derives, whatever
/// queue id the pipeline gave it; a user who never clicked learns nothing.
#[test]
fn delivered_mail_is_learned_lightly_once_the_user_has_clicked() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    let queue = |id: &str| Envelope {
        message_id: Some(MessageId::new(id).unwrap()),
        ..Envelope::default()
    };
    let derived = derive_message_id(HAM);
    e.evaluate(&u, HAM, &queue("q1")).unwrap();
    assert_eq!(e.store().ledger_get(&u, &derived).unwrap(), None);
    assert!(e.user_summary(&u).unwrap().ham_learned == 0);

    e.train(&u, SPAM, Label::Spam, None).unwrap();
    let rpc = e.evaluate(&u, HAM, &queue("q2")).unwrap();
    assert_eq!(rpc.decision.action, crate::policy::Action::Deliver);
    let entry = e.store().ledger_get(&u, &derived).unwrap().unwrap();
    assert!(entry.implicit);
    // The ham side is empty and the spam side one message: it fills it.
    assert_eq!((entry.label, entry.weight), (Label::Ham, Weight::FULL));
    assert_eq!(
        e.store()
            .ledger_get(&u, &MessageId::new("q2").unwrap())
            .unwrap(),
        None
    );
    let model = e.slot(&u).unwrap().unwrap().model.read().clone();
    assert_eq!((model.spam_learned(), model.ham_learned()), (1, 1));
    assert_eq!(model.weights().1, u64::from(Weight::FULL.0));

    // Scored again (a retry, a second recipient copy): learned once.
    e.evaluate(&u, HAM, &queue("q3")).unwrap();
    assert_eq!(*e.slot(&u).unwrap().unwrap().model.read(), model);
}

/// A click on delivered mail — either label, with the caller's own id or
/// none — leaves exactly the model of the click alone.
#[test]
fn a_click_replaces_the_delivered_learning_exactly() {
    for (label, id) in [
        (Label::Spam, Some("webmail-7")),
        (Label::Spam, None),
        (Label::Ham, Some("webmail-7")),
        (Label::Ham, None),
    ] {
        let id = id.map(|s| MessageId::new(s).unwrap());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (delivered, clicked_only) = (engine(a.path()), engine(b.path()));
        let u = user("alice");
        for e in [&delivered, &clicked_only] {
            e.train(&u, SPAM, Label::Spam, None).unwrap();
        }
        delivered.evaluate(&u, HAM, &Envelope::default()).unwrap();
        let derived = derive_message_id(HAM);
        assert!(
            delivered
                .store()
                .ledger_get(&u, &derived)
                .unwrap()
                .is_some()
        );

        let t = delivered.train(&u, HAM, label, id.clone()).unwrap();
        assert_eq!(t.outcome, TrainOutcome::Learned, "{label:?} {id:?}");
        clicked_only.train(&u, HAM, label, id.clone()).unwrap();
        let model = |e: &Engine| e.slot(&u).unwrap().unwrap().model.read().clone();
        assert_eq!(model(&delivered), model(&clicked_only), "{label:?} {id:?}");
        let key = id.unwrap_or(derived.clone());
        let entry = delivered.store().ledger_get(&u, &key).unwrap().unwrap();
        assert!(!entry.implicit);
        assert_eq!(
            entry,
            clicked_only.store().ledger_get(&u, &key).unwrap().unwrap()
        );
        if key != derived {
            assert_eq!(delivered.store().ledger_get(&u, &derived).unwrap(), None);
        }
        // And the click is now a click: again is harmless.
        let again = delivered.train(&u, HAM, label, Some(key)).unwrap();
        assert_eq!(again.outcome, TrainOutcome::AlreadyLearned);
    }
}

/// Mail filed as spam is not learned, and with `learn_delivered` off
/// nothing delivered is.
#[test]
fn only_delivered_mail_is_learned_and_only_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("alice");
    e.train(&u, SPAM, Label::Spam, None).unwrap();
    e.train(&u, HAM, Label::Ham, None).unwrap();
    let copy = b"From: promo@pills.example\r\nSubject: cheap pills now\r\nMessage-ID: <s2@pills.example>\r\n\r\nbuy cheap pills viagra discount offer\r\n";
    let rpc = e.evaluate(&u, copy, &Envelope::default()).unwrap();
    assert_ne!(rpc.decision.action, crate::policy::Action::Deliver);
    assert_eq!(
        e.store().ledger_get(&u, &derive_message_id(copy)).unwrap(),
        None
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let settings = Settings {
        learn_delivered: false,
        ..Settings::default()
    };
    let off = Engine::new(store, settings).unwrap();
    off.train(&u, SPAM, Label::Spam, None).unwrap();
    off.evaluate(&u, HAM, &Envelope::default()).unwrap();
    assert_eq!(
        off.store().ledger_get(&u, &derive_message_id(HAM)).unwrap(),
        None
    );
    assert_eq!(off.user_summary(&u).unwrap().ham_learned, 0);
}

/// A delivered message far shorter than the model's mean message fills
/// less of the gap (an empty body after one clicked spam must not count as
/// a whole message of ham); ordinary and long messages, and a model with
/// nothing learned, get one message.
#[test]
fn delivered_ceiling_scales_down_only_messages_a_twentieth_of_the_mean_or_shorter() {
    use super::clicks::{SHORT_DELIVERED, delivered_ceiling};
    let ids = |n: u64| (0..n).map(crate::tokenize::TokenId).collect::<Vec<_>>();
    assert_eq!(
        delivered_ceiling(1, &crate::classify::Model::default()),
        Weight::FULL
    );
    // One clicked spam of 400 tokens: the mean is 400 words a message.
    let mut model = crate::classify::Model::default();
    model.learn(&ids(400), Label::Spam);
    let short = (SHORT_DELIVERED * 400.0) as usize;
    assert_eq!(short, 20);
    assert_eq!(delivered_ceiling(400, &model), Weight::FULL);
    assert_eq!(delivered_ceiling(short, &model), Weight::FULL);
    assert_eq!(
        delivered_ceiling(short / 2, &model),
        Weight(Weight::FULL.0 / 2)
    );
    assert_eq!(delivered_ceiling(1, &model), Weight::DELIVERED);
    assert_eq!(delivered_ceiling(0, &model), Weight::DELIVERED);
    // The mean is the whole model's: with a 100-token ham learned as
    // well it is 250, and a twentieth of it 12.5 tokens.
    let mut both = model.clone();
    both.learn(&ids(100), Label::Ham);
    assert_eq!(delivered_ceiling(13, &both), Weight::FULL);
    assert_eq!(delivered_ceiling(6, &both), Weight(31));
    assert_eq!(delivered_ceiling(6, &model), Weight(19));
    // The gap is filled up to the ceiling, never past it.
    let full = u64::from(Weight::FULL.0);
    let half = delivered_ceiling(short / 2, &model);
    assert_eq!(super::clicks::delivered_weight((full, 0), half), half);
    assert_eq!(
        super::clicks::delivered_weight((full, full - 10), half),
        Weight(10)
    );
}

/// Delivered mail fills what the ham side lacks of the spam side, one
/// message at most and a twentieth at least.
#[test]
fn delivered_weight_fills_the_gap_between_light_and_full() {
    use super::clicks::delivered_weight;
    let full = u64::from(Weight::FULL.0);
    assert_eq!(delivered_weight((full, 0), Weight::FULL), Weight::FULL);
    assert_eq!(delivered_weight((10 * full, 0), Weight::FULL), Weight::FULL);
    assert_eq!(
        delivered_weight((full, full - 10), Weight::FULL),
        Weight(10)
    );
    assert_eq!(
        delivered_weight((full, full), Weight::FULL),
        Weight::DELIVERED
    );
    assert_eq!(
        delivered_weight((0, 5 * full), Weight::FULL),
        Weight::DELIVERED
    );
}

/// The replay's `score_then_train` offers Score's log-odds as the learn
/// weight; while the user's model is one-sided Score read the one-sided s
/// (`robinson::strength`), so the click must weigh what `train_read`
/// weighs, from the body's s (`Engine::click_weight`). Reusing the
/// one-sided score weighed these clicks 64 against 3.
#[test]
fn a_replayed_click_on_a_one_sided_model_weighs_what_a_plain_click_weighs() {
    let u = user("one-sided");
    let words = ["buy", "cheap", "pills", "viagra", "discount", "offer"];
    let mut weights = Vec::new();
    for k in 0..14 {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (engine(&dir.path().join("a")), engine(&dir.path().join("b")));
        a.train(&u, SPAM, Label::Spam, None).unwrap();
        b.train(&u, SPAM, Label::Spam, None).unwrap();
        // Variants that share less and less with the first spam.
        let from = if k >= 7 {
            "promo@pills.example"
        } else {
            "other@elsewhere.example"
        };
        let msg = format!(
            "From: {from}\r\nSubject: cheap pills now\r\nMessage-ID: <v{k}@pills.example>\r\n\r\n{} zzz{k}\r\n",
            words[..k.min(6)].join(" ")
        );
        let read = a.read(msg.as_bytes()).unwrap();
        let id = MessageId::new(format!("m{k}")).unwrap();
        a.score_then_train(&u, &read, Label::Spam, Some(id.clone()), |_| true)
            .unwrap();
        b.train_read(&u, &read, Label::Spam, Some(id.clone()))
            .unwrap();
        let replayed = a.store.ledger_get(&u, &id).unwrap().unwrap().weight;
        let plain = b.store.ledger_get(&u, &id).unwrap().unwrap().weight;
        weights.push((k, replayed.0, plain.0));
    }
    assert!(weights.iter().all(|(_, r, p)| r == p), "{weights:?}");
}

#[test]
fn an_update_that_changes_nothing_reads_and_stores_no_user() {
    use crate::policy::settings::SettingsUpdate;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("noop-update");
    let got = e.update_settings(&u, &SettingsUpdate::default()).unwrap();
    assert_eq!(got.settings, e.user_settings(&u).unwrap());
    assert!(!got.changed, "a read changes nothing");
    assert!(!e.delete_user(&u).unwrap(), "no user was stored");
}

#[test]
fn an_update_says_whether_it_changed_the_settings() {
    use crate::policy::HandlingMode;
    use crate::policy::settings::SettingsUpdate;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let u = user("changed");
    let reject = SettingsUpdate {
        mode: Some(HandlingMode::Reject),
        ..Default::default()
    };
    let first = e.update_settings(&u, &reject).unwrap();
    assert!(first.changed);
    assert_eq!(first.settings.mode, HandlingMode::Reject);
    // The same values again: stored as they were, nothing changed.
    let again = e.update_settings(&u, &reject).unwrap();
    assert_eq!((again.changed, &again.settings), (false, &first.settings));
    // A user's first settings are a change even when they are the
    // defaults: the user is stored from then on.
    let fresh = user("fresh");
    let defaults = SettingsUpdate {
        mode: Some(e.user_settings(&fresh).unwrap().mode),
        ..Default::default()
    };
    assert!(e.update_settings(&fresh, &defaults).unwrap().changed);
    assert!(!e.update_settings(&fresh, &defaults).unwrap().changed);
    let share = SettingsUpdate {
        share_training: Some(true),
        ..Default::default()
    };
    assert!(e.update_settings(&u, &share).unwrap().changed);
    assert!(!e.update_settings(&u, &share).unwrap().changed);
}

/// Entries an older build accepted, under rules since made stricter, still
/// read back after an upgrade: the user's scoring goes on, the entries are
/// listed, match as they did, and can be removed (review of session 24: a
/// strict read made `foo-.example` a decoding error that failed every
/// Score of its user, and `xn--zz.example` on an operator list stopped the
/// server from starting).
#[test]
fn list_entries_an_older_build_stored_read_back_and_can_be_removed() {
    use crate::policy::{Entry, ListKind};
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let block = ListRef {
        owner: Owner::User(alice.clone()),
        kind: ListKind::Block,
    };
    let trusted = ListRef {
        owner: Owner::Operator,
        kind: ListKind::Trusted,
    };
    let old = ["foo-.example", "::ffff:192.0.2.9"].map(|t| Entry::stored(t).unwrap());
    assert!(
        "foo-.example".parse::<Entry>().is_err(),
        "refused if added today"
    );
    {
        let e = engine(dir.path());
        for entry in &old {
            assert!(e.add_list_entry(&block, entry).unwrap());
        }
        let punycode = Entry::stored("xn--zz.example").unwrap();
        assert!(e.add_list_entry(&trusted, &punycode).unwrap());
    }
    let e = engine(dir.path());
    let listed: Vec<String> = e
        .list_entries(&block)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    e.score(&alice, &e.read(SPAM).unwrap()).unwrap();
    for entry in &old {
        assert!(e.remove_list_entry(&block, entry).unwrap(), "{entry}");
    }
    assert!(e.list_entries(&block).unwrap().is_empty());
}

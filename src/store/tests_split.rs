//! The clicked/delivered ham split (format 8) on a real sled directory:
//! read back from the journal, from a snapshot and the records after it,
//! through a fold, an export, a repair, and the upgrade from format 7.

use super::tests::open_again;
use super::*;
use crate::classify::{Model, Weight};
use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, MessageId, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn msg(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

fn entry(label: Label, t: &[u64], weight: Weight, implicit: bool) -> LedgerEntry {
    LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens: t.iter().map(|&x| TokenId(x)).collect(),
        weight,
        shared: 0,
        implicit,
    }
}

/// A user's history as the engine writes it, applied to `mirror` as the
/// engine applies it in memory: a spam click, delivered mail (a journal
/// pointer), a *Not spam* click, more delivered mail replaced by a *Spam*
/// click (explicit ops: the delivered learning undone, marked).
fn history(store: &Store, alice: &UserId, mirror: &mut Model) {
    let light = Weight(3);
    let mut click = |m: &str, e: Option<LedgerEntry>, ops: Vec<Op>| {
        store.record(alice, &msg(m), e.as_ref(), &ops).unwrap();
        for op in &ops {
            op.apply(mirror);
        }
    };
    let spam = entry(Label::Spam, &[1, 2], Weight::FULL, false);
    click("s1", Some(spam.clone()), vec![Op::learn_entry(spam)]);
    let d1 = entry(Label::Ham, &[3, 4], Weight::FULL, true);
    click("d1", Some(d1.clone()), vec![Op::learn_entry(d1)]);
    let h1 = entry(Label::Ham, &[5], Weight::FULL, false);
    click("h1", Some(h1.clone()), vec![Op::learn_entry(h1)]);
    let d2 = entry(Label::Ham, &[6], light, true);
    click("d2", Some(d2.clone()), vec![Op::learn_entry(d2.clone())]);
    let s2 = entry(Label::Spam, &[6], Weight::FULL, false);
    click(
        "d2",
        Some(s2.clone()),
        vec![Op::unlearn_entry(d2), Op::learn_entry(s2)],
    );
}

#[test]
fn delivered_ham_is_read_back_from_the_journal_and_from_a_snapshot_with_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let mut mirror = Model::default();
    {
        let store = open_again(dir.path());
        history(&store, &alice, &mut mirror);
        store.flush().unwrap();
    }
    // Delivered: d1 (64); d2 (3) was replaced by a click. Clicked: h1.
    assert_eq!(mirror.delivered_ham_weight(), 64);
    assert_eq!(mirror.clicked_ham_weight(), 64);
    let store = open_again(dir.path());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(loaded.model.delivered_ham_weight(), 64, "from the journal");
    assert_eq!(loaded.model.clicked_ham_weight(), 64);
    // Checkpointed, then a Forget of the delivered mail after it.
    store
        .checkpoint(&alice, &loaded.model, loaded.last_seq)
        .unwrap();
    let d1 = store.ledger_get(&alice, &msg("d1")).unwrap().unwrap();
    let ops = [Op::unlearn_entry(d1)];
    store.record(&alice, &msg("d1"), None, &ops).unwrap();
    ops[0].apply(&mut mirror);
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(loaded.model, mirror);
    assert_eq!(
        loaded.model.delivered_ham_weight(),
        0,
        "the snapshot's 64, less the Forget replayed after it"
    );
    assert_eq!(loaded.model.clicked_ham_weight(), 64);
    // And from a snapshot alone.
    store
        .checkpoint(&alice, &loaded.model, loaded.last_seq)
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(loaded.journal_entries, 0, "nothing after the snapshot");
    assert_eq!(loaded.model.clicked_ham_weight(), 64);
    assert_eq!(loaded.model.delivered_ham_weight(), 0);
}

#[test]
fn a_fold_that_makes_a_delivered_pointer_explicit_keeps_it_marked() {
    // Delivered mail past its window leaves the ledger; the journal
    // pointer to its entry is rewritten as ops first, and those ops must
    // still say "delivered".
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_800_000_000_000));
    let clock = {
        let now = now.clone();
        Clock::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let alice = user("alice");
    {
        let store = open_again(dir.path());
        store.set_undo_window(std::time::Duration::from_secs(90 * 86_400), clock);
        let spam = entry(Label::Spam, &[1], Weight::FULL, false);
        store
            .record(
                &alice,
                &msg("s"),
                Some(&spam),
                &[Op::learn_entry(spam.clone())],
            )
            .unwrap();
        let d = entry(Label::Ham, &[2], Weight(5), true);
        store
            .record(&alice, &msg("d"), Some(&d), &[Op::learn_entry(d.clone())])
            .unwrap();
        now.fetch_add(15 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(store.fold_ledger().unwrap(), 1, "the delivered mail");
        assert!(!store.ledger_contains(&alice, &msg("d")).unwrap());
        store.flush().unwrap();
    }
    let store = open_again(dir.path());
    let model = store.load_model(&alice).unwrap().unwrap().model;
    assert_eq!(model.weights(), (64, 5));
    assert_eq!(model.delivered_ham_weight(), 5);
    assert_eq!(model.clicked_ham_weight(), 0);
}

/// Marks a directory written today as format 7, whose models kept no
/// split (what `mark_format_for_tests` does for the older formats).
fn mark_format_7(store: &Store) {
    store
        .tree()
        .unwrap()
        .insert(FORMAT_KEY, &7u32.to_be_bytes())
        .unwrap();
    store.flush().unwrap();
}

/// Opens a directory [`mark_format_7`] marked: the upgrade runs, and the
/// directory is format 8 after it.
fn open_upgraded(dir: &std::path::Path) -> Store {
    let store = open_again(dir);
    let format = store.tree().unwrap().get(FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
    store
}

#[test]
fn a_format_7_directory_opens_with_all_its_ham_delivered_and_new_clicks_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    {
        let store = open_again(dir.path());
        let mut mirror = Model::default();
        history(&store, &alice, &mut mirror);
        // Alice also has a snapshot with records after it; Bob only a
        // journal.
        let loaded = store.load_model(&alice).unwrap().unwrap();
        store
            .checkpoint(&alice, &loaded.model, loaded.last_seq)
            .unwrap();
        let h = entry(Label::Ham, &[9], Weight::FULL, false);
        store
            .record(&alice, &msg("h2"), Some(&h), &[Op::learn_entry(h.clone())])
            .unwrap();
        store
            .record(&bob, &msg("h"), Some(&h), &[Op::learn_entry(h.clone())])
            .unwrap();
        mark_format_7(&store);
    }
    let store = open_upgraded(dir.path());
    for (u, ham) in [(&alice, 192), (&bob, 64)] {
        let loaded = store.load_model(u).unwrap().unwrap();
        assert_eq!(loaded.model.weights().1, ham, "{u}");
        assert_eq!(loaded.model.clicked_ham_weight(), 0, "{u}: all delivered");
        assert_eq!(loaded.journal_entries, 0, "{u}: the journal was folded");
    }
    // A Forget of an old Not spam click takes its weight out of what
    // counts as delivered too, so a new click after it counts in full.
    let h1 = store.ledger_get(&alice, &msg("h1")).unwrap().unwrap();
    store
        .record(&alice, &msg("h1"), None, &[Op::unlearn_entry(h1)])
        .unwrap();
    let h3 = entry(Label::Ham, &[10], Weight::FULL, false);
    store
        .record(
            &alice,
            &msg("h3"),
            Some(&h3),
            &[Op::learn_entry(h3.clone())],
        )
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    let model = store.load_model(&alice).unwrap().unwrap().model;
    assert_eq!(model.weights().1, 192);
    assert_eq!(
        model.clicked_ham_weight(),
        64,
        "the click after the upgrade"
    );
}

/// A damaged model must not keep a format-7 directory from opening:
/// `chaff repair`, which opens it, is how that user is mended.
#[test]
fn a_damaged_model_does_not_stop_the_format_7_upgrade_and_repair_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    {
        let store = open_again(dir.path());
        let mut mirror = Model::default();
        history(&store, &alice, &mut mirror);
        let h = entry(Label::Ham, &[9], Weight::FULL, false);
        store
            .record(&bob, &msg("h"), Some(&h), &[Op::learn_entry(h.clone())])
            .unwrap();
        assert!(
            store
                .damage_record_for_tests(b'J', &alice)
                .unwrap()
                .is_some()
        );
        mark_format_7(&store);
    }
    let store = open_upgraded(dir.path());
    let bob_model = store.load_model(&bob).unwrap().unwrap().model;
    assert_eq!(bob_model.clicked_ham_weight(), 0, "bob was upgraded");
    let err = store.load_model(&alice).unwrap_err().to_string();
    assert!(err.contains("chaff repair --user alice"), "{err}");
    store.rebuild_model(&alice).unwrap();
    assert!(store.load_model(&alice).unwrap().is_some(), "mended");
}

#[test]
fn an_export_and_a_repair_keep_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let (src, dst) = (
        open_again(&dir.path().join("src")),
        open_again(&dir.path().join("dst")),
    );
    let mut mirror = Model::default();
    history(&src, &alice, &mut mirror);
    src.flush().unwrap();
    let bytes = export::encode(&src.read_user_export(&alice).unwrap());
    dst.write_user_import(&alice, &export::decode(&bytes).unwrap(), 0)
        .unwrap();
    dst.flush().unwrap();
    let model = dst.load_model(&alice).unwrap().unwrap().model;
    assert_eq!(model, mirror);
    assert_eq!(model.delivered_ham_weight(), mirror.delivered_ham_weight());
    // `chaff repair` recounts from the ledger: delivered entries count as
    // delivered.
    src.rebuild_model(&alice).unwrap();
    let model = src.load_model(&alice).unwrap().unwrap().model;
    assert_eq!(model.delivered_ham_weight(), 64);
    assert_eq!(model.clicked_ham_weight(), 64);
}

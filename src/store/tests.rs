//! Storage tests on a real sled directory.

use super::*;
use crate::classify::Model;
use crate::classify::Weight;
use crate::tokenize::TokenId;
use crate::types::{Label, MessageId, Owner, UserId};

/// [`Store::usage`] by record kind: (records, key bytes, value bytes).
pub(super) fn usage_by_kind(store: &Store) -> std::collections::BTreeMap<char, (u64, u64, u64)> {
    store
        .usage()
        .unwrap()
        .into_iter()
        .map(|(c, n, k, v)| (c, (n, k, v)))
        .collect()
}

/// Opens the store in `path` again after a handle of it was dropped.
pub(super) fn open_again(path: &std::path::Path) -> Store {
    open_waiting(path, 8 << 20)
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn msg(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

fn ids(v: &[u64]) -> Vec<TokenId> {
    v.iter().map(|&x| TokenId(x)).collect()
}

fn learn<W: Writes>(store: &Store<W>, u: &UserId, m: &str, label: Label, t: &[u64]) -> u64 {
    let entry = LedgerEntry {
        label,
        tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
        tokens: ids(t),
        weight: Weight::FULL,
        shared: 0,
        implicit: false,
    };
    store
        .record(
            u,
            &msg(m),
            Some(&entry),
            &[Op::Learn(label, Weight::FULL, ids(t))],
        )
        .unwrap()
}

/// Formats 2–5 as they were written, frozen here (the codec keeps their
/// encoders only to read and upgrade them): a user's click as one batch of
/// a ledger entry with 64-bit ids and a journal record of ops, and a
/// checkpoint as a `W` snapshot with sorted ids.
mod format_5 {
    use super::*;

    pub fn click(
        tree: &Tree,
        u: &UserId,
        m: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        seq: u64,
    ) {
        let mut batch = Batch::default();
        let key = ledger_key(&Owner::User(u.clone()), m);
        match entry {
            Some(e) => batch.insert(key, codec::encode_ledger(e)),
            None => batch.remove(key),
        }
        batch.insert(journal_key(u, seq), codec::encode_ops(ops));
        tree.apply_batch(batch).unwrap();
    }

    pub fn checkpoint(tree: &Tree, u: &UserId, model: &Model, seq: u64) {
        let mut batch = Batch::default();
        for item in tree.range(journal_key(u, 0)..=journal_key(u, seq)) {
            batch.remove(item.unwrap().0);
        }
        batch.insert(
            user_prefix(MODEL, u),
            codec::encode_snapshot_format_4(model, seq),
        );
        tree.apply_batch(batch).unwrap();
    }

    /// A data directory as format `format` leaves it: the raw sled
    /// database with only the format key.
    pub fn directory(path: &std::path::Path, format: u32) -> (Db, Tree) {
        let db = sled::Config::new().path(path).open().unwrap();
        let tree = db.open_tree("chaff").unwrap();
        tree.insert(FORMAT_KEY, &format.to_be_bytes()).unwrap();
        (db, tree)
    }
}

#[test]
fn unknown_user_has_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    assert!(store.load_model(&user("nobody")).unwrap().is_none());
}

#[test]
fn journal_replays_into_the_model_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    {
        let store = open_again(dir.path());
        learn(&store, &alice, "m1", Label::Spam, &[1, 2]);
        learn(&store, &alice, "m2", Label::Ham, &[2, 3]);
        store.flush().unwrap();
    }
    let store = open_again(dir.path());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    let mut expect = Model::default();
    expect.learn(&ids(&[1, 2]), Label::Spam);
    expect.learn(&ids(&[2, 3]), Label::Ham);
    assert_eq!(loaded.model, expect);
    // Two ops of two ids each: an entry per id and one per op.
    assert_eq!(loaded.journal_entries, 6);
    assert_eq!(
        store.ledger_get(&alice, &msg("m1")).unwrap().unwrap().label,
        Label::Spam
    );
}

#[test]
fn checkpoint_folds_journal_and_later_records_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    learn(&store, &alice, "m1", Label::Spam, &[1]);
    let seq = learn(&store, &alice, "m2", Label::Ham, &[2]);
    let model = store.load_model(&alice).unwrap().unwrap().model;
    store.checkpoint(&alice, &model, seq).unwrap();
    let after = store.load_model(&alice).unwrap().unwrap();
    assert_eq!((after.journal_entries, after.last_seq), (0, seq));
    assert_eq!(after.model, model);
    learn(&store, &alice, "m3", Label::Spam, &[3]);
    let later = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(later.journal_entries, 2);
    assert_eq!(later.model.spam_learned(), 2);
}

#[test]
fn users_do_not_share_keys_even_when_ids_prefix_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let (a, ab) = (user("a"), user("ab"));
    learn(&store, &ab, "m", Label::Spam, &[1]);
    assert!(store.load_model(&a).unwrap().is_none());
    assert!(store.ledger_get(&a, &msg("bm")).unwrap().is_none());
}

#[test]
fn removing_a_ledger_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    learn(&store, &alice, "m1", Label::Spam, &[1]);
    store
        .record(
            &alice,
            &msg("m1"),
            None,
            &[Op::Unlearn(Label::Spam, Weight::FULL, ids(&[1]))],
        )
        .unwrap();
    assert!(store.ledger_get(&alice, &msg("m1")).unwrap().is_none());
    assert_eq!(
        store.load_model(&alice).unwrap().unwrap().model,
        Model::default()
    );
}

#[test]
fn a_file_as_data_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, 8 << 20)
        .err()
        .expect("opening a file as a data directory fails");
    assert!(
        err.to_string().contains("cannot open data directory"),
        "{err}"
    );
}

#[test]
fn a_format_3_directory_is_upgraded_to_the_same_models_in_format_4_units() {
    // Format 3 counted a message as 8 units: write records as it would
    // have (a full click at 8, a trusted-sender click at 1), then mark the
    // directory format 3.
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let (w3_full, w3_low) = (Weight(8), Weight(1));
    let click = |tree: &Tree, m: &str, label, w, t: &[u64], seq| {
        let entry = LedgerEntry {
            label,
            tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
            tokens: ids(t),
            weight: w,
            shared: 0,
            implicit: false,
        };
        let ops = [Op::Learn(label, w, ids(t))];
        format_5::click(tree, &alice, &msg(m), Some(&entry), &ops, seq);
    };
    {
        let (db, tree) = format_5::directory(dir.path(), 3);
        click(&tree, "m1", Label::Spam, w3_full, &[1, 2], 1);
        let mut folded = Model::default();
        folded.learn_weighted(&ids(&[1, 2]), Label::Spam, w3_full);
        format_5::checkpoint(&tree, &alice, &folded, 1);
        click(&tree, "m2", Label::Spam, w3_low, &[2, 3], 2);
        db.flush().unwrap();
    }
    let store = open_again(dir.path());
    let mut expect = Model::default();
    expect.learn(&ids(&[1, 2]), Label::Spam);
    expect.learn_weighted(&ids(&[2, 3]), Label::Spam, Weight(Weight::FULL.0 / 8));
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
    let weight = |m| store.ledger_get(&alice, &msg(m)).unwrap().unwrap().weight;
    assert_eq!(weight("m1"), Weight::FULL);
    assert_eq!(weight("m2"), Weight(Weight::FULL.0 / 8));
    assert_eq!(
        store
            .tree()
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        FORMAT_VERSION.to_be_bytes()
    );
}

#[test]
fn a_replay_store_reads_back_what_it_wrote() {
    // For throwaway replays: the same records, only the wait for the disk
    // is skipped.
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let store = ReplayStore::open_replay(dir.path(), 8 << 20).unwrap();
    learn(&store, &alice, "m1", Label::Spam, &[1, 2]);
    store.flush().unwrap();
    let mut expect = Model::default();
    expect.learn(&ids(&[1, 2]), Label::Spam);
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
}

#[test]
fn a_replay_store_reads_held_clicks_exactly_as_the_service_store() {
    // Clicks wait in memory (replay.rs) before reaching sled, a batch of
    // PENDING_CLICKS at a time: every read must still see each of them,
    // in order, before and after the batch boundary.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let synced = Store::open(a.path(), 8 << 20).unwrap();
    let replay = ReplayStore::open_replay(b.path(), 8 << 20).unwrap();
    let alice = user("alice");
    let clicks = replay::PENDING_CLICKS as u64 + 10;
    /// The same clicks on either store.
    fn write<W: Writes>(store: &Store<W>, alice: &UserId, clicks: u64) {
        for i in 0..clicks {
            let label = if i % 3 == 0 { Label::Spam } else { Label::Ham };
            learn(store, alice, &format!("m{i}"), label, &[i, i + 1, 1_000]);
        }
        // Relabel the first and the last click, and forget one, as the
        // engine does: the new ledger state plus the ops that get there.
        for (m, t) in [("m0", 0), (&*format!("m{}", clicks - 1), clicks - 1)] {
            let entry = LedgerEntry {
                label: Label::Ham,
                tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
                tokens: ids(&[t, t + 1, 1_000]),
                weight: Weight::FULL,
                shared: 0,
                implicit: false,
            };
            let old = store.ledger_get(alice, &msg(m)).unwrap().unwrap();
            let ops = [
                Op::Unlearn(old.label, old.weight, old.tokens.clone()),
                Op::Learn(Label::Ham, Weight::FULL, ids(&[t, t + 1, 1_000])),
            ];
            store.record(alice, &msg(m), Some(&entry), &ops).unwrap();
        }
        let old = store.ledger_get(alice, &msg("m5")).unwrap().unwrap();
        let undo = [Op::Unlearn(old.label, old.weight, old.tokens)];
        store.record(alice, &msg("m5"), None, &undo).unwrap();
    }
    write(&synced, &alice, clicks);
    write(&replay, &alice, clicks);
    let last = format!("m{}", clicks - 1);
    for m in ["m0", "m1", "m5", "m200", &last] {
        assert_eq!(
            replay.ledger_get(&alice, &msg(m)).unwrap(),
            synced.ledger_get(&alice, &msg(m)).unwrap(),
            "{m}"
        );
    }
    assert_eq!(replay.ledger_get(&alice, &msg("m5")).unwrap(), None);
    let p = replay.load_model(&alice).unwrap().unwrap();
    let s = synced.load_model(&alice).unwrap().unwrap();
    assert_eq!(p.model, s.model);
    assert_eq!(p.journal_entries, s.journal_entries);
    // 177 ham clicks, m0 relabelled from spam, m5 (ham) forgotten.
    assert_eq!(p.model.ham_learned(), 177 + 1 - 1);
}

#[test]
fn a_journal_record_without_ops_still_counts_towards_a_checkpoint() {
    // A Forget of a click learned by another tokenizer version undoes
    // nothing, but its record is journalled: it must count, or a clean
    // shutdown (which folds only a journal with entries) would leave it.
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    store.record(&alice, &msg("old"), None, &[]).unwrap();
    assert_eq!(
        store.load_model(&alice).unwrap().unwrap().journal_entries,
        1
    );
}

#[test]
fn a_format_5_directory_opens_as_format_6_with_the_same_models_and_ledger() {
    // Today's main (format 5) wrote 64-bit ids everywhere; format 6 numbers
    // them in a dictionary. Open a format-5 directory (snapshot, journal
    // after it, a relabel and a Forget), then keep clicking and
    // checkpointing in format 6 over the old records.
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let entry = |label, t: &[u64]| LedgerEntry {
        label,
        tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
        tokens: ids(t),
        weight: Weight::FULL,
        shared: 0,
        implicit: false,
    };
    let mut expect = Model::default();
    {
        let (db, tree) = format_5::directory(dir.path(), 5);
        let (m1, m2, m3) = (
            entry(Label::Spam, &[1, 2]),
            entry(Label::Ham, &[2, 3]),
            entry(Label::Spam, &[9]),
        );
        format_5::click(
            &tree,
            &alice,
            &msg("m1"),
            Some(&m1),
            &[Op::Learn(Label::Spam, Weight::FULL, ids(&[1, 2]))],
            1,
        );
        expect.learn(&ids(&[1, 2]), Label::Spam);
        format_5::checkpoint(&tree, &alice, &expect, 1);
        format_5::click(
            &tree,
            &alice,
            &msg("m2"),
            Some(&m2),
            &[Op::Learn(Label::Ham, Weight::FULL, ids(&[2, 3]))],
            2,
        );
        format_5::click(
            &tree,
            &alice,
            &msg("m3"),
            Some(&m3),
            &[Op::Learn(Label::Spam, Weight::FULL, ids(&[9]))],
            3,
        );
        // m3 forgotten: its ledger entry removed, its counts unlearned.
        format_5::click(
            &tree,
            &alice,
            &msg("m3"),
            None,
            &[Op::Unlearn(Label::Spam, Weight::FULL, ids(&[9]))],
            4,
        );
        expect.learn(&ids(&[2, 3]), Label::Ham);
        db.flush().unwrap();
    }
    let store = open_again(dir.path());
    let format = store.tree().unwrap().get(FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(loaded.model, expect);
    assert_eq!(loaded.last_seq, 4);
    assert_eq!(
        store.ledger_get(&alice, &msg("m1")).unwrap(),
        Some(entry(Label::Spam, &[1, 2]))
    );
    assert_eq!(store.ledger_get(&alice, &msg("m3")).unwrap(), None);
    // Relabel an old-format entry exactly, then fold everything into a
    // format-6 snapshot (its ids numbered in the same batch), and reopen.
    let old = store.ledger_get(&alice, &msg("m2")).unwrap().unwrap();
    let seq = store
        .record(
            &alice,
            &msg("m2"),
            Some(&entry(Label::Spam, &[2, 3])),
            &[
                Op::Unlearn(old.label, old.weight, old.tokens),
                Op::Learn(Label::Spam, Weight::FULL, ids(&[2, 3])),
            ],
        )
        .unwrap();
    expect.unlearn(&ids(&[2, 3]), Label::Ham);
    expect.learn(&ids(&[2, 3]), Label::Spam);
    store.checkpoint(&alice, &expect, seq).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    let snapshot = store
        .tree()
        .unwrap()
        .get(user_prefix(MODEL, &alice))
        .unwrap()
        .unwrap();
    assert!(codec::snapshot_is_v6(&snapshot));
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
    assert_eq!(
        store.ledger_get(&alice, &msg("m1")).unwrap(),
        Some(entry(Label::Spam, &[1, 2]))
    );
    assert_eq!(
        store.ledger_get(&alice, &msg("m2")).unwrap(),
        Some(entry(Label::Spam, &[2, 3]))
    );
}

#[test]
fn a_directory_written_by_main_in_format_5_opens_with_its_delivered_mail_and_recency() {
    // The bytes today's main (format 5) writes, spelled out from its
    // documented encodings (`codec::encode_ledger`, `encode_ops`,
    // `encode_snapshot` as main has them), not produced by this branch's
    // encoders, so a change to those cannot move the fixture with it:
    // - ledger: label `S`/`H`, tokenizer version, id count, id gaps
    //   (varints), then optional weight, shared id and the trailing `i` of
    //   mail learned from its delivery;
    // - journal: op count, then per op kind (`+` full weight, `*` weighted),
    //   label, [weight], ids;
    // - snapshot `X` (format 4): version u32 BE, applied sequence u64 BE,
    //   spam/ham learned, spam/ham weights, ids, counts, then the recency
    //   section: clock and each token's age.
    //
    // seq 1: click m1, spam, tokens 1 and 2; seq 2: delivered mail d1 learned
    // as ham at weight 3, tokens 2 and 300; a checkpoint at seq 2; seq 3:
    // click m3, ham, token 5 (in the journal after the snapshot).
    let tv = crate::tokenize::TOKENIZER_VERSION as u8;
    assert_eq!(tv, 2, "the fixture spells tokenizer version 2");
    let m1_ledger: &[u8] = b"S\x02\x02\x01\x01";
    let d1_ledger: &[u8] = b"H\x02\x02\x02\xAA\x02\x03\x00i";
    let m3_ledger: &[u8] = b"H\x02\x01\x05";
    let m3_journal: &[u8] = b"\x01+H\x01\x05";
    let snapshot: &[u8] = &[
        b'X', 0, 0, 0, 2, // tokenizer version
        0, 0, 0, 0, 0, 0, 0, 2, // applied sequence
        1, 1, 64, 3, // spam, ham learned; spam, ham weights
        3, 1, 1, 0xAA, 0x02, // ids 1, 2, 300
        64, 0, 64, 3, 0, 3, // counts
        2, 1, 0, 0, // clock 2; ages of 1, 2, 300
    ];
    // The fixture is what main's encoders write (the codec keeps them to
    // read format 5); checked here so the two cannot drift apart silently.
    let entry = |label, t: &[u64], weight, implicit| LedgerEntry {
        label,
        tokenizer_version: 2,
        tokens: ids(t),
        weight,
        shared: 0,
        implicit,
    };
    let m1 = entry(Label::Spam, &[1, 2], Weight::FULL, false);
    let d1 = entry(Label::Ham, &[2, 300], Weight::DELIVERED, true);
    let m3 = entry(Label::Ham, &[5], Weight::FULL, false);
    assert_eq!(codec::encode_ledger(&m1), m1_ledger);
    assert_eq!(codec::encode_ledger(&d1), d1_ledger);
    assert_eq!(codec::encode_ledger(&m3), m3_ledger);
    assert_eq!(
        codec::encode_ops(&[Op::Learn(Label::Ham, Weight::FULL, ids(&[5]))]),
        m3_journal
    );
    let mut expect = Model::default();
    expect.learn(&ids(&[1, 2]), Label::Spam);
    expect.learn_weighted(&ids(&[2, 300]), Label::Ham, Weight::DELIVERED);
    assert_eq!(codec::encode_snapshot_format_4(&expect, 2), snapshot);
    expect.learn(&ids(&[5]), Label::Ham);

    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    {
        let (db, tree) = format_5::directory(dir.path(), 5);
        let u = Owner::User(alice.clone());
        tree.insert(ledger_key(&u, &msg("m1")), m1_ledger).unwrap();
        tree.insert(ledger_key(&u, &msg("d1")), d1_ledger).unwrap();
        tree.insert(ledger_key(&u, &msg("m3")), m3_ledger).unwrap();
        tree.insert(user_prefix(MODEL, &alice), snapshot).unwrap();
        tree.insert(journal_key(&alice, 3), m3_journal).unwrap();
        db.flush().unwrap();
    }
    let store = open_again(dir.path());
    let format = store.tree().unwrap().get(FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
    let check = |store: &Store| {
        let loaded = store.load_model(&alice).unwrap().unwrap();
        assert_eq!(loaded.model, expect);
        assert_eq!(loaded.last_seq, 3);
        // The recency the quota's pruning reads came along.
        assert_eq!(loaded.model.clock(), 3);
        // Format 5 kept no split: the format-8 upgrade counts all of it
        // as delivered.
        assert_eq!(loaded.model.clicked_ham_weight(), 0);
        for (t, seen) in [(1, 1), (2, 2), (300, 2), (5, 3)] {
            assert_eq!(loaded.model.seen(TokenId(t)), Some(seen), "token {t}");
        }
    };
    check(&store);
    assert_eq!(store.ledger_get(&alice, &msg("m1")).unwrap(), Some(m1));
    assert_eq!(
        store.ledger_get(&alice, &msg("d1")).unwrap(),
        Some(d1),
        "delivered mail stays marked as such"
    );
    assert_eq!(store.ledger_get(&alice, &msg("m3")).unwrap(), Some(m3));
    // Checkpointed in format 6 and reopened: the same model and stamps.
    let loaded = store.load_model(&alice).unwrap().unwrap();
    store.checkpoint(&alice, &loaded.model, 3).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    let snap = store
        .tree()
        .unwrap()
        .get(user_prefix(MODEL, &alice))
        .unwrap()
        .unwrap();
    assert!(codec::snapshot_is_v6(&snap));
    check(&store);
    // Past the undo window (the old entries are timed by the upgrade):
    // the clicks fold, the delivered mail is dropped, the counts stay.
    let later = Clock::new(|| Clock::system().now_ms() + 91 * 86_400_000);
    store.set_undo_window(DEFAULT_UNDO_WINDOW, later);
    assert_eq!(store.fold_ledger().unwrap(), 3);
    assert!(matches!(
        store.ledger_get(&alice, &msg("m1")),
        Err(Error::BeyondUndoWindow {
            label: Label::Spam,
            ..
        })
    ));
    assert!(!store.ledger_contains(&alice, &msg("d1")).unwrap());
    check(&store);
}

#[test]
fn a_user_s_ids_are_numbered_once_and_records_name_numbers() {
    // The dictionary is what makes format 6 small: an id used by many
    // clicks is stored once, and a ledger entry of small numbers costs
    // about a byte or two per token, not 7-8.
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    let big: Vec<u64> = (0..400u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    learn(&store, &alice, "m1", Label::Spam, &big);
    learn(&store, &alice, "m2", Label::Ham, &big);
    let usage = usage_by_kind(&store);
    assert_eq!(usage[&'K'].0, 1, "one dictionary record: m2 added no ids");
    assert!(usage[&'K'].2 >= 400 * 8);
    let per_entry = usage[&'L'].2 / 2;
    assert!(
        per_entry < 400 * 2,
        "ledger entry of 400 tokens took {per_entry} bytes"
    );
    drop(store);
    let store = open_again(dir.path());
    let mut sorted = ids(&big);
    sorted.sort();
    assert_eq!(
        store
            .ledger_get(&alice, &msg("m2"))
            .unwrap()
            .unwrap()
            .tokens,
        sorted
    );
}

#[test]
fn a_first_learn_journals_a_pointer_that_a_later_relabel_or_forget_makes_explicit() {
    // A first learn's journal record names the message instead of listing
    // its tokens again; relabelling or forgetting the message before the
    // next checkpoint must leave a journal that still replays to the exact
    // model (the pointer rewritten with the ops it stood for).
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let mut expect = Model::default();
    {
        let store = open_again(dir.path());
        learn(&store, &alice, "m1", Label::Spam, &[1, 2, 3]);
        learn(&store, &alice, "m2", Label::Ham, &[3, 4]);
        learn(&store, &alice, "m3", Label::Ham, &[5]);
        let pointers = store
            .tree()
            .unwrap()
            .scan_prefix(user_prefix(JOURNAL, &alice))
            .filter(|r| {
                let (k, v) = r.as_ref().unwrap();
                codec::learn_pointer(k, v).unwrap().is_some()
            })
            .count();
        assert_eq!(pointers, 3);
        // m1 relabelled as ham, m2 forgotten.
        let e1 = store.ledger_get(&alice, &msg("m1")).unwrap().unwrap();
        let ham1 = LedgerEntry {
            label: Label::Ham,
            ..e1.clone()
        };
        let relabel = [
            Op::Unlearn(e1.label, e1.weight, e1.tokens.clone()),
            Op::Learn(Label::Ham, e1.weight, e1.tokens.clone()),
        ];
        store
            .record(&alice, &msg("m1"), Some(&ham1), &relabel)
            .unwrap();
        let e2 = store.ledger_get(&alice, &msg("m2")).unwrap().unwrap();
        let forget = [Op::Unlearn(e2.label, e2.weight, e2.tokens)];
        store.record(&alice, &msg("m2"), None, &forget).unwrap();
        store.flush().unwrap();
    }
    expect.learn(&ids(&[1, 2, 3]), Label::Ham);
    expect.learn(&ids(&[5]), Label::Ham);
    let store = open_again(dir.path());
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(loaded.model, expect);
    assert_eq!(loaded.model.ham_learned(), 2);
    assert_eq!(loaded.model.spam_learned(), 0);
}

#[test]
fn folding_drops_old_clicks_tokens_keeps_their_counts_and_journal_replays_exactly() {
    // A click beyond the undo window is folded to its label and time; if
    // its journal record is still a pointer to the entry, that record is
    // made explicit in the same batch, so the model replays to the same
    // counts after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_800_000_000_000));
    let day = 86_400_000;
    let clock = |now: &std::sync::Arc<std::sync::atomic::AtomicU64>| {
        let now = now.clone();
        Clock::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let window = std::time::Duration::from_secs(90 * 86_400);
    let alice = user("alice");
    let mut expect = Model::default();
    {
        let store = open_again(dir.path());
        store.set_undo_window(window, clock(&now));
        let many: Vec<u64> = (100..400).collect();
        learn(&store, &alice, "old", Label::Spam, &many);
        now.fetch_add(60 * day, std::sync::atomic::Ordering::SeqCst);
        learn(&store, &alice, "new", Label::Ham, &[1, 2]);
        expect.learn(&ids(&many), Label::Spam);
        expect.learn(&ids(&[1, 2]), Label::Ham);
        assert_eq!(
            store.fold_ledger().unwrap(),
            0,
            "nothing is 90 days old yet"
        );
        now.fetch_add(31 * day, std::sync::atomic::Ordering::SeqCst);
        let before = store
            .tree()
            .unwrap()
            .get(ledger_key(&Owner::User(alice.clone()), &msg("old")))
            .unwrap()
            .unwrap()
            .len();
        assert_eq!(store.fold_ledger().unwrap(), 1);
        assert_eq!(
            store.fold_ledger().unwrap(),
            0,
            "folding twice folds nothing more"
        );
        let after = store
            .tree()
            .unwrap()
            .get(ledger_key(&Owner::User(alice.clone()), &msg("old")))
            .unwrap()
            .unwrap()
            .len();
        assert!(
            after < 16 && after < before / 10,
            "{before} -> {after} bytes"
        );
        match store.ledger_get(&alice, &msg("old")) {
            Err(Error::BeyondUndoWindow {
                label, window: w, ..
            }) => {
                assert_eq!((label, w), (Label::Spam, window));
            }
            other => panic!("expected BeyondUndoWindow, got {other:?}"),
        }
        assert_eq!(
            store
                .ledger_get(&alice, &msg("new"))
                .unwrap()
                .unwrap()
                .label,
            Label::Ham
        );
        store.flush().unwrap();
    }
    let store = open_again(dir.path());
    store.set_undo_window(window, clock(&now));
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
    assert!(matches!(
        store.ledger_get(&alice, &msg("old")),
        Err(Error::BeyondUndoWindow { .. })
    ));
}

/// Flips one bit of the value stored under `key`, as a damaged disk or a
/// bit flip before the write would leave it (sled's own log checksums
/// would not see this: the damaged value is what sled was given).
fn flip_a_bit(store: &Store, key: &[u8], at: usize) {
    let tree = store.tree().unwrap();
    let mut value = tree.get(key).unwrap().unwrap().to_vec();
    let at = at.min(value.len() - 1);
    value[at] ^= 0x10;
    tree.insert(key, value).unwrap();
}

#[test]
fn a_damaged_snapshot_is_reported_by_name_and_repair_rebuilds_it_from_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    let mut expect = Model::default();
    for (i, label) in [Label::Spam, Label::Ham, Label::Spam]
        .into_iter()
        .enumerate()
    {
        let t: Vec<u64> = (0..50).map(|j| (i as u64) * 1000 + j).chain([7]).collect();
        learn(&store, &alice, &format!("m{i}"), label, &t);
        expect.learn(&ids(&t), label);
    }
    let seq = store.load_model(&alice).unwrap().unwrap().last_seq;
    store.checkpoint(&alice, &expect, seq).unwrap();
    // Damage the middle of the snapshot (a count).
    let key = user_prefix(MODEL, &alice);
    let len = store.tree().unwrap().get(&key).unwrap().unwrap().len();
    flip_a_bit(&store, &key, len / 2);
    let err = store.load_model(&alice).expect_err("damaged snapshot");
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    for needle in [
        "snapshot of user alice",
        "checksum",
        "backup",
        "chaff repair --user alice",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::DataLoss);
    let rebuilt = store.rebuild_model(&alice).unwrap();
    assert_eq!((rebuilt.learned, rebuilt.folded), (3, 0));
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
}

#[test]
fn a_damaged_ledger_entry_or_journal_record_is_named_never_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    let alice = user("alice");
    learn(&store, &alice, "m1", Label::Spam, &[1, 2, 3]);
    learn(&store, &alice, "m2", Label::Ham, &[3, 4]);
    // A journal record (here the pointer of m2's click): the model is not
    // loaded with a wrong count.
    let last = store
        .tree()
        .unwrap()
        .scan_prefix(user_prefix(JOURNAL, &alice))
        .last()
        .unwrap()
        .unwrap()
        .0;
    flip_a_bit(&store, &last, 3);
    let err = store
        .load_model(&alice)
        .expect_err("damaged journal record");
    assert!(err.to_string().contains("journal record"), "{err}");
    // Repair recounts from the ledger, which is intact.
    store.rebuild_model(&alice).unwrap();
    let mut expect = Model::default();
    expect.learn(&ids(&[1, 2, 3]), Label::Spam);
    expect.learn(&ids(&[3, 4]), Label::Ham);
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, expect);
    // A damaged ledger entry: Forget/relearn of it and a rebuild say which.
    let key = ledger_key(&Owner::User(alice.clone()), &msg("m1"));
    flip_a_bit(&store, &key, 8);
    let err = store
        .ledger_get(&alice, &msg("m1"))
        .expect_err("damaged entry");
    assert!(err.to_string().contains("message m1"), "{err}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::DataLoss);
    let err = store
        .rebuild_model(&alice)
        .expect_err("cannot rebuild from a damaged ledger");
    assert!(err.to_string().contains("backup"), "{err}");
    assert_eq!(
        store.load_model(&alice).unwrap().unwrap().model,
        expect,
        "left as it was"
    );
    assert!(store.ledger_get(&alice, &msg("m2")).unwrap().is_some());
}

#[test]
fn listing_users_finds_every_kind_of_record_in_key_order_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_again(dir.path());
    // A learner, a user only ever scored (decisions only), one with only
    // settings, one with only a list entry, and tenant users.
    learn(&store, &user("bob"), "m1", Label::Spam, &[1, 2]);
    store
        .append_decisions([(&user("scored-only"), 1_000, &b"{}"[..])])
        .unwrap();
    store
        .append_decisions([(&user("scored-only"), 5_000, &b"{}"[..])])
        .unwrap();
    store
        .put_settings(
            &user("al"),
            &crate::policy::UserSettings::default(),
            0,
            false,
        )
        .unwrap();
    store
        .set_list_entry(
            &Owner::User(user("acme/zed")),
            crate::policy::ListKind::Block,
            &"spam.example".parse().unwrap(),
            true,
        )
        .unwrap();
    learn(&store, &user("acme/ann"), "m1", Label::Ham, &[3]);
    // The operator's records are nobody's user.
    store
        .set_list_entry(
            &Owner::Operator,
            crate::policy::ListKind::Block,
            &"op.example".parse().unwrap(),
            true,
        )
        .unwrap();

    let names = |v: Vec<UserId>| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    let all = names(store.list_users("", None, 100).unwrap());
    assert_eq!(all, ["al", "bob", "acme/ann", "acme/zed", "scored-only"]);

    // Pages of two continue exactly where the last one ended.
    let mut paged = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = store.list_users("", after.as_ref(), 2).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(names(page));
    }
    assert_eq!(paged, all);

    assert_eq!(
        names(store.list_users("acme/", None, 100).unwrap()),
        ["acme/ann", "acme/zed"]
    );
    assert_eq!(
        names(
            store
                .list_users("acme/", Some(&user("acme/ann")), 100)
                .unwrap()
        ),
        ["acme/zed"]
    );
    assert_eq!(
        store.last_decision_ms(&user("scored-only")).unwrap(),
        Some(5_000)
    );
    assert_eq!(store.last_decision_ms(&user("bob")).unwrap(), None);
}

#[test]
fn a_backup_copy_hands_out_ids_above_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (src_path, dst_path) = (dir.path().join("src"), dir.path().join("dst"));
    let src = open_again(&src_path);
    let u = user("u");
    for i in 0..50 {
        learn(&src, &u, &format!("m{i}"), Label::Spam, &[i]);
    }
    // A long-lived source has handed out more ids than sled's generator
    // jumps ahead by when a database is reopened (1,000,000).
    for _ in 0..2_500_000 {
        src.generate_id().unwrap();
    }
    learn(&src, &u, "late", Label::Spam, &[7]);
    // A snapshot at the source's high sequence number.
    let loaded = src.load_model(&u).unwrap().unwrap();
    src.checkpoint(&u, &loaded.model, loaded.last_seq).unwrap();
    let dest = open_again(&dst_path);
    src.copy_user_to(&u, &dest).unwrap();
    src.carry_ids_to(&dest).unwrap();
    dest.flush().unwrap();
    drop(dest);
    // A click on the restored copy must land after that snapshot, or the
    // next load would skip it.
    let dest = open_again(&dst_path);
    learn(&dest, &u, "new", Label::Ham, &[999]);
    dest.flush().unwrap();
    drop(dest);
    let dest = open_again(&dst_path);
    let m = dest.load_model(&u).unwrap().unwrap().model;
    assert_eq!((m.spam_learned(), m.ham_learned()), (51, 1));
}

#[test]
fn a_format_6_snapshot_keeps_every_tokens_last_seen_stamp_and_the_clock() {
    // The quota prunes oldest first by these stamps (`recency.rs`): a
    // checkpoint in format 6 must not reset them to "all equally old".
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let mut model = Model::default();
    model.learn(&ids(&[1, 2, 3]), Label::Spam);
    model.learn(&ids(&[3, 4]), Label::Ham);
    model.learn(&ids(&[5]), Label::Spam);
    {
        let store = open_again(dir.path());
        let seq = learn(&store, &alice, "m", Label::Spam, &[9]);
        model.learn(&ids(&[9]), Label::Spam);
        store.checkpoint(&alice, &model, seq).unwrap();
        store.flush().unwrap();
    }
    let store = open_again(dir.path());
    let raw = store
        .tree()
        .unwrap()
        .get(user_prefix(MODEL, &alice))
        .unwrap()
        .unwrap();
    assert!(codec::snapshot_is_v6(&raw));
    let back = store.load_model(&alice).unwrap().unwrap().model;
    assert_eq!(back.clock(), model.clock());
    assert!(model.clock() > 0);
    for t in [1, 2, 3, 4, 5, 9] {
        assert_eq!(back.seen(TokenId(t)), model.seen(TokenId(t)), "token {t}");
    }
    assert_ne!(back.seen(TokenId(1)), back.seen(TokenId(5)));
}

#[test]
fn learning_from_delivered_mail_is_marked_in_format_6_and_folded_away_past_the_window() {
    // An implicit entry keeps its flag in format 6; past the undo window it
    // is dropped, not folded: no click to refuse, and its counts stay.
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_800_000_000_000));
    let clock = {
        let now = now.clone();
        Clock::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let window = std::time::Duration::from_secs(90 * 86_400);
    let store = open_again(dir.path());
    store.set_undo_window(window, clock);
    let alice = user("alice");
    let delivered = LedgerEntry {
        label: Label::Ham,
        tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
        tokens: ids(&[7, 8]),
        weight: Weight(Weight::FULL.0 / 16),
        shared: 0,
        implicit: true,
    };
    let ops = [Op::Learn(Label::Ham, delivered.weight, ids(&[7, 8]))];
    store
        .record(&alice, &msg("d"), Some(&delivered), &ops)
        .unwrap();
    learn(&store, &alice, "c", Label::Spam, &[1]);
    store.flush().unwrap();
    assert_eq!(
        store.ledger_get(&alice, &msg("d")).unwrap(),
        Some(delivered.clone())
    );
    let counts = store.load_model(&alice).unwrap().unwrap().model;
    now.fetch_add(91 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.ledger_get(&alice, &msg("d")).unwrap(), None);
    assert!(store.ledger_contains(&alice, &msg("d")).unwrap());
    assert_eq!(store.fold_ledger().unwrap(), 2);
    assert!(
        !store.ledger_contains(&alice, &msg("d")).unwrap(),
        "dropped"
    );
    assert!(matches!(
        store.ledger_get(&alice, &msg("c")),
        Err(Error::BeyondUndoWindow { .. })
    ));
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, counts);
}

/// Delivered mail's entries have their own, shorter window: past it (and
/// inside the clicks' window) they are dropped by the fold, counts kept,
/// while a click as old is still undoable.
#[test]
fn delivered_mail_leaves_the_ledger_after_its_own_shorter_window() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_800_000_000_000));
    let clock = {
        let now = now.clone();
        Clock::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let store = open_again(dir.path());
    store.set_undo_window(DEFAULT_UNDO_WINDOW, clock);
    assert_eq!(
        crate::store::DEFAULT_DELIVERED_UNDO_WINDOW,
        std::time::Duration::from_secs(14 * 86_400)
    );
    let alice = user("alice");
    let delivered = LedgerEntry {
        label: Label::Ham,
        tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
        tokens: ids(&[7, 8]),
        weight: Weight(Weight::FULL.0 / 16),
        shared: 0,
        implicit: true,
    };
    let ops = [Op::Learn(Label::Ham, delivered.weight, ids(&[7, 8]))];
    store
        .record(&alice, &msg("d"), Some(&delivered), &ops)
        .unwrap();
    learn(&store, &alice, "c", Label::Spam, &[1]);
    store.flush().unwrap();
    let counts = store.load_model(&alice).unwrap().unwrap().model;
    let day = 86_400_000;
    now.fetch_add(13 * day, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.fold_ledger().unwrap(), 0, "inside both windows");
    assert_eq!(
        store.ledger_get(&alice, &msg("d")).unwrap(),
        Some(delivered.clone())
    );
    now.fetch_add(2 * day, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.ledger_get(&alice, &msg("d")).unwrap(), None);
    assert_eq!(store.fold_ledger().unwrap(), 1, "the delivered entry only");
    assert!(!store.ledger_contains(&alice, &msg("d")).unwrap());
    let click = store.ledger_get(&alice, &msg("c")).unwrap().unwrap();
    assert!(!click.implicit, "the click, as old, is still undoable");
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, counts);

    // Never longer than the clicks' window.
    store.set_delivered_undo_window(std::time::Duration::from_secs(365 * 86_400));
    store
        .record(&alice, &msg("d2"), Some(&delivered), &ops)
        .unwrap();
    now.fetch_add(91 * day, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.ledger_get(&alice, &msg("d2")).unwrap(), None);
}

#[test]
fn an_export_carries_click_times_folded_clicks_and_delivered_mail_into_format_6() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_800_000_000_000));
    let clock = |now: &std::sync::Arc<std::sync::atomic::AtomicU64>| {
        let now = now.clone();
        Clock::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let window = std::time::Duration::from_secs(90 * 86_400);
    let (src, dst) = (
        open_again(&dir.path().join("src")),
        open_again(&dir.path().join("dst")),
    );
    src.set_undo_window(window, clock(&now));
    dst.set_undo_window(window, clock(&now));
    // Delivered mail as long as clicks here (its own default is shorter).
    src.set_delivered_undo_window(window);
    dst.set_delivered_undo_window(window);
    let alice = user("alice");
    learn(&src, &alice, "old", Label::Spam, &[1, 2]);
    now.fetch_add(60 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    let delivered = LedgerEntry {
        label: Label::Ham,
        tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
        tokens: ids(&[3]),
        weight: Weight(Weight::FULL.0 / 16),
        shared: 0,
        implicit: true,
    };
    src.record(
        &alice,
        &msg("d"),
        Some(&delivered),
        &[Op::Learn(Label::Ham, delivered.weight, ids(&[3]))],
    )
    .unwrap();
    now.fetch_add(31 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(src.fold_ledger().unwrap(), 1);
    src.flush().unwrap();
    let bytes = export::encode(&src.read_user_export(&alice).unwrap());
    let e = export::decode(&bytes).unwrap();
    dst.write_user_import(&alice, &e, 0).unwrap();
    dst.flush().unwrap();
    assert_eq!(
        dst.ledger_get(&alice, &msg("d")).unwrap(),
        Some(delivered),
        "still inside the window: 31 days old"
    );
    assert!(
        matches!(
            dst.ledger_get(&alice, &msg("old")),
            Err(Error::BeyondUndoWindow {
                label: Label::Spam,
                ..
            })
        ),
        "folded in the source, folded in the copy"
    );
    now.fetch_add(60 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        dst.ledger_get(&alice, &msg("d")).unwrap(),
        None,
        "the click time came along: 91 days old now"
    );
    assert_eq!(
        dst.load_model(&alice).unwrap().unwrap().model,
        src.load_model(&alice).unwrap().unwrap().model
    );
}

/// Files sled keeps in `blobs/` (values too large for its log).
fn blob_files(dir: &std::path::Path) -> usize {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(entries) => entries.count(),
        Err(_) => 0,
    }
}

#[test]
fn a_clean_close_leaves_no_replaced_snapshot_blobs_behind() {
    // A 100k-token snapshot is over sled's blob threshold, so sled keeps
    // it in a file of its own; each checkpoint replaces it. sled removed a
    // replaced blob only when the log segment of the replacing write was
    // retired, which a clean close did not do: `blobs/` kept every
    // snapshot replaced since (docs/PERFORMANCE.md, "Storage footprint").
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let model = |round: u64| {
        let mut m = Model::default();
        for chunk in (0..100_000u64).collect::<Vec<_>>().chunks(500) {
            let t: Vec<u64> = chunk.iter().map(|i| i * 7919 + 1).collect();
            m.learn(&ids(&t), Label::Spam);
        }
        m.learn(&ids(&[10_000_000 + round]), Label::Ham);
        m
    };
    // Counted once reopened: a dropped store closes when its background
    // flusher lets go, which `open_again` waits for.
    {
        let store = open_again(dir.path());
        store.checkpoint(&alice, &model(0), 1).unwrap();
        store.flush().unwrap();
    }
    let store = open_again(dir.path());
    let after_one = blob_files(dir.path());
    assert!(after_one >= 1, "the snapshot is not a blob: nothing tested");
    for round in 1..5 {
        store.checkpoint(&alice, &model(round), round + 1).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    let store = open_again(dir.path());
    // The live snapshot's blobs only (one or two, as sled last wrote its
    // node), not one more per replaced snapshot.
    let after_five = blob_files(dir.path());
    assert!(
        after_five <= after_one,
        "replaced blobs left: {after_five} files"
    );
    assert_eq!(store.load_model(&alice).unwrap().unwrap().model, model(4));
}

/// Bytes the file system has allocated to sled's log file (`du`), and its
/// length.
fn log_file_blocks(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("db")).unwrap();
    (meta.blocks() * 512, meta.len())
}

/// Waits until no store holds `dir` (sled's lock on its log file is
/// free), without opening it: sled lets go of the file only after its
/// close has run.
fn wait_closed(dir: &std::path::Path) {
    let log = std::fs::File::open(dir.join("db")).unwrap();
    for _ in 0..500 {
        if log.try_lock().is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} stayed locked for 5 s", dir.display());
}

#[test]
fn a_clean_close_gives_unused_log_segments_back_and_every_record_reopens() {
    // Rewriting models leaves sled's log file full of segments nothing
    // points to: sled reuses some, and a segment it relocated a page out
    // of after the page had already moved it never frees. The close now
    // relocates what sled's cleaner queued and punches every segment
    // nothing needs out of the file (vendor/sled/PATCHES.md); the file
    // keeps its length, the disk gets the blocks back.
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<UserId> = (0..48).map(|u| user(&format!("u{u}"))).collect();
    // 3,000 tokens a user: a snapshot well under sled's blob threshold,
    // so it lives in the log itself.
    let model = |u: u64, round: u64| {
        let mut m = Model::default();
        let t: Vec<u64> = (0..3_000u64)
            .map(|i| i * 7919 + u * 1_000_003 + 1)
            .collect();
        m.learn(&ids(&t), Label::Spam);
        m.learn(&ids(&[10_000_000 + round]), Label::Ham);
        m
    };
    let mut round = 0;
    for reopen in 0..3 {
        let store = open_again(dir.path());
        for (u, alice) in users.iter().enumerate() {
            if reopen > 0 {
                // What the last close and the open after it kept.
                assert_eq!(
                    store.load_model(alice).unwrap().unwrap().model,
                    model(u as u64, round),
                    "user {u} after reopen {reopen}"
                );
            }
        }
        for _ in 0..12 {
            round += 1;
            for (u, alice) in users.iter().enumerate() {
                store
                    .checkpoint(alice, &model(u as u64, round), round)
                    .unwrap();
            }
            store.flush().unwrap();
        }
        drop(store);
        // Wait for the close (the background flusher lets go), then look,
        // before any open: an open punches the segments sled's recovery
        // finds free too, which hid a close that punched nothing of its
        // own (the close's own punch disabled, the test passed).
        wait_closed(dir.path());
        let (allocated, length) = log_file_blocks(dir.path());
        eprintln!("after close {reopen}: {allocated} bytes allocated of {length}");
        // What a close keeps here is the newest segments and the live
        // records: 2.1-3.1 MB in runs of this test, whatever the file's
        // length, which depends on how well sled reused its segments
        // (4.2-13.1 MB). Without the patch every byte stays allocated
        // (6.3-7.9 of 6.3-7.9 MB at the first close, 5 runs failed of 5);
        // without only the close's own punch (relocation kept), 6.5-7.9 of
        // 6.5-7.9 MB (5 of 5 failed once looked at before a reopen), in
        // the release profile too. A release run that kept every byte
        // while debug passed (2026-12-06) was a stale sled build, not this
        // close (vendor/sled/PATCHES.md, "The patch level").
        assert!(
            allocated * 10 <= length * 6 || allocated <= 3_584 * 1024,
            "the log file keeps {allocated} of its {length} bytes after a clean close"
        );
    }
    let store = open_again(dir.path());
    for (u, alice) in users.iter().enumerate() {
        assert_eq!(
            store.load_model(alice).unwrap().unwrap().model,
            model(u as u64, round)
        );
    }
}

#[test]
fn a_delete_user_interrupted_after_its_first_batch_is_finished_when_the_store_opens() {
    // The crash soak found it: a SIGKILL after DeleteUser's first batch
    // (model, settings, lists gone) and before the ledger's deletion left
    // the clicks in the ledger with no model counting them.
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    {
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        learn(&store, &alice, "m1", Label::Spam, &[1, 2, 3]);
        learn(&store, &alice, "m2", Label::Ham, &[3, 4]);
        learn(&store, &bob, "m1", Label::Spam, &[5]);
        store.delete_user(&alice).unwrap();
        // The crash: finish_delete_user never ran.
        store.flush().unwrap();
        assert!(store.ledger_get(&alice, &msg("m1")).unwrap().is_some());
    }
    let store = open_again(dir.path());
    assert_eq!(store.user_records(&alice).unwrap(), vec![]);
    assert!(store.ledger_get(&alice, &msg("m1")).unwrap().is_none());
    assert!(!store.user_exists(&alice).unwrap());
    // Only the interrupted deletion is finished.
    assert!(store.ledger_get(&bob, &msg("m1")).unwrap().is_some());
    assert_eq!(
        store
            .load_model(&bob)
            .unwrap()
            .unwrap()
            .model
            .spam_learned(),
        1
    );
    // A finished deletion leaves no mark behind: the next open has none.
    drop(store);
    let store = open_again(dir.path());
    assert_eq!(store.finish_interrupted_deletes().unwrap(), 0);
}

//! Format 7: compacting a user after a prune, and the upgrade of a
//! format-6 directory that does it for every user (`compact.rs`).

use super::*;
use crate::classify::{Model, Weight};
use crate::policy::UserSettings;
use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, MessageId, Owner, UserId};

use super::tests::{open_again, usage_by_kind};

fn ids(v: &[u64]) -> Vec<TokenId> {
    v.iter().map(|&x| TokenId(x)).collect()
}

fn msg(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

/// A click as the store writes it (format 6 and 7 alike), shared under
/// `shared` (0: not shared); learns it into `model` too.
fn click(
    store: &Store,
    model: &mut Model,
    u: &UserId,
    m: &str,
    label: Label,
    t: &[u64],
    shared: u64,
) {
    let entry = LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens: ids(t),
        weight: Weight::FULL,
        shared,
        implicit: false,
    };
    model.learn(&ids(t), label);
    store
        .record(
            u,
            &msg(m),
            Some(&entry),
            &[Op::Learn(label, Weight::FULL, ids(t))],
        )
        .unwrap();
}

fn dict_ids(store: &Store, u: &UserId) -> Vec<u64> {
    store
        .with_dict(&Owner::User(u.clone()), |d| {
            Ok(d.ids().iter().map(|id| id.0).collect())
        })
        .unwrap()
}

fn entry_ids(store: &Store, u: &UserId, m: &str) -> Vec<u64> {
    let e = store.ledger_get(u, &msg(m)).unwrap().unwrap();
    e.tokens.iter().map(|id| id.0).collect()
}

fn counts(model: &Model) -> Vec<(u64, crate::classify::Counts)> {
    let mut v: Vec<_> = model.iter_stamped().map(|(id, c, _)| (id.0, c)).collect();
    v.sort_unstable_by_key(|(id, _)| *id);
    v
}

/// What a format-6 directory holds after a prune, written by the store's
/// click and checkpoint code (unchanged since format 6, so the bytes are
/// today's main's): alice's clicks m1–m3, a prune of tokens 2, 4 and 6
/// (the snapshot without them, as `engine::quota` writes it), then m4,
/// which brings 2 back, in the journal. m3 is shared under alice's current
/// consent (9). Bob was never pruned. Returns alice's model.
fn format_6_after_a_prune(store: &Store) -> Model {
    let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    let settings = UserSettings {
        share_training: true,
        ..UserSettings::default()
    };
    store.put_settings(&alice, &settings, 9, false).unwrap();
    let mut model = Model::default();
    click(store, &mut model, &alice, "m1", Label::Spam, &[1, 2, 3], 0);
    click(store, &mut model, &alice, "m2", Label::Ham, &[3, 4, 5], 0);
    click(store, &mut model, &alice, "m3", Label::Spam, &[6, 7], 9);
    model.remove_tokens(&ids(&[2, 4, 6]));
    let seq = store.generate_id().unwrap();
    store.checkpoint(&alice, &model, seq).unwrap();
    click(store, &mut model, &alice, "m4", Label::Spam, &[2, 8], 0);
    let mut bobs = Model::default();
    click(store, &mut bobs, &bob, "b1", Label::Ham, &[10, 11], 0);
    store.flush().unwrap();
    model
}

#[test]
fn a_format_6_directory_with_pruned_tokens_opens_compacted_with_them_dropped_and_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    let expect = {
        let store = open_again(dir.path());
        let model = format_6_after_a_prune(&store);
        assert_eq!(dict_ids(&store, &alice), [1, 2, 3, 4, 5, 6, 7, 8]);
        store
            .tree()
            .unwrap()
            .insert(FORMAT_KEY, &6u32.to_be_bytes())
            .unwrap();
        store.flush().unwrap();
        model
    };
    let store = open_again(dir.path());
    let format = store.tree().unwrap().get(FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
    // The model's ids first, then 6, which only the shared m3 still names.
    assert_eq!(dict_ids(&store, &alice), [1, 2, 3, 5, 7, 8, 6]);
    // 2 was pruned, then m4 brought it back before this compaction: the
    // model has it now, so m1 keeps it (the rule needs no record of the
    // victims; the engine compacts right after each prune, before any
    // click can bring one back).
    assert_eq!(entry_ids(&store, &alice, "m1"), [1, 2, 3]);
    assert_eq!(entry_ids(&store, &alice, "m2"), [3, 5]);
    assert_eq!(
        entry_ids(&store, &alice, "m3"),
        [6, 7],
        "shared: kept whole"
    );
    assert_eq!(
        entry_ids(&store, &alice, "m4"),
        [2, 8],
        "2 came back with m4"
    );
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(counts(&loaded.model), counts(&expect));
    assert_eq!(loaded.journal_entries, 0, "the journal was folded");
    assert_eq!(
        (loaded.model.spam_learned(), loaded.model.ham_learned()),
        (3, 1)
    );
    // Bob had nothing pruned: same ids, same model.
    assert_eq!(dict_ids(&store, &bob), [10, 11]);
    assert_eq!(entry_ids(&store, &bob, "b1"), [10, 11]);
    // Compacting again changes nothing (the upgrade may be re-run).
    let again = store.compact_user(&alice).unwrap();
    assert_eq!(
        (again.dict_before, again.dict_after, again.entries),
        (7, 7, 0)
    );
    // Forget m2 with what its entry names now: exactly its click's counts
    // leave the model (4, pruned, is no longer among them).
    let m2 = store.ledger_get(&alice, &msg("m2")).unwrap().unwrap();
    store
        .record(
            &alice,
            &msg("m2"),
            None,
            &[Op::Unlearn(m2.label, m2.weight, m2.tokens)],
        )
        .unwrap();
    drop(store);
    let store = open_again(dir.path());
    let mut rest = expect.clone();
    rest.unlearn(&ids(&[3, 5]), Label::Ham);
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(counts(&loaded.model), counts(&rest));
}

#[test]
fn after_consent_is_revoked_a_compaction_trims_the_formerly_shared_entries() {
    let dir = tempfile::tempdir().unwrap();
    let alice = UserId::new("alice").unwrap();
    let store = open_again(dir.path());
    format_6_after_a_prune(&store);
    let first = store.compact_user(&alice).unwrap();
    assert_eq!((first.dict_before, first.dict_after), (8, 7));
    assert_eq!((first.entries, first.ids_dropped), (4, 1), "4 from m2");
    store
        .put_settings(&alice, &UserSettings::default(), 0, true)
        .unwrap();
    let second = store.compact_user(&alice).unwrap();
    assert_eq!((second.dict_after, second.ids_dropped), (6, 1));
    assert_eq!(entry_ids(&store, &alice, "m3"), [7]);
    assert_eq!(dict_ids(&store, &alice), [1, 2, 3, 5, 7, 8]);
}

#[test]
fn a_dictionary_written_anew_keeps_each_record_under_sled_s_blob_threshold() {
    // A large model compacted: its dictionary is written in 1024-id
    // records, read back in order, and the numbers still name the ids.
    let dir = tempfile::tempdir().unwrap();
    let alice = UserId::new("alice").unwrap();
    let store = open_again(dir.path());
    let mut model = Model::default();
    let many: Vec<u64> = (1..=3000u64).map(|i| i * 7919).collect();
    click(&store, &mut model, &alice, "big", Label::Spam, &many, 0);
    click(&store, &mut model, &alice, "small", Label::Ham, &[5, 6], 0);
    let gone: Vec<u64> = many.iter().copied().step_by(2).collect();
    model.remove_tokens(&ids(&gone));
    let seq = store.generate_id().unwrap();
    store.checkpoint(&alice, &model, seq).unwrap();
    let done = store.compact_user(&alice).unwrap();
    assert_eq!((done.dict_before, done.dict_after), (3002, 1502));
    let usage = usage_by_kind(&store);
    assert_eq!(usage[&'K'].0, 2, "1502 ids in records of 1024");
    drop(store);
    let store = open_again(dir.path());
    let kept: Vec<u64> = many.iter().copied().skip(1).step_by(2).collect();
    assert_eq!(entry_ids(&store, &alice, "big"), kept);
    let loaded = store.load_model(&alice).unwrap().unwrap();
    assert_eq!(counts(&loaded.model), counts(&model));
}

/// One damaged user must not keep a format-6 directory closed: with the
/// upgrade aborting on the first record that did not read back, every
/// user's mail filtering stayed down, and `chaff repair` (which opens the
/// directory first) could not mend the one user.
#[test]
fn a_damaged_user_does_not_stop_the_format_6_upgrade_and_repair_mends_them() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, carol, dave) = (
        UserId::new("alice").unwrap(),
        UserId::new("carol").unwrap(),
        UserId::new("dave").unwrap(),
    );
    {
        let store = open_again(dir.path());
        format_6_after_a_prune(&store);
        // Carol: pruned like alice, then a journal record, damaged.
        let mut model = Model::default();
        click(&store, &mut model, &carol, "c1", Label::Spam, &[1, 2], 0);
        model.remove_tokens(&ids(&[2]));
        let seq = store.generate_id().unwrap();
        store.checkpoint(&carol, &model, seq).unwrap();
        click(&store, &mut model, &carol, "c2", Label::Ham, &[3], 0);
        assert!(
            store
                .damage_record_for_tests(b'J', &carol)
                .unwrap()
                .is_some()
        );
        // Dave: a damaged ledger entry (no repair reads past it).
        click(
            &store,
            &mut Model::default(),
            &dave,
            "d1",
            Label::Ham,
            &[4],
            0,
        );
        assert!(
            store
                .damage_record_for_tests(b'L', &dave)
                .unwrap()
                .is_some()
        );
        store.mark_format_for_tests(6).unwrap();
    }
    let store = open_again(dir.path());
    let format = store.tree().unwrap().get(FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
    // The others were upgraded: alice compacted, as without the damage.
    assert_eq!(dict_ids(&store, &alice), [1, 2, 3, 5, 7, 8, 6]);
    assert_eq!(entry_ids(&store, &alice, "m2"), [3, 5]);
    // Carol was left as she was, and her error names the repair.
    assert_eq!(dict_ids(&store, &carol), [1, 2, 3]);
    assert_eq!(entry_ids(&store, &carol, "c1"), [1, 2], "not compacted");
    let err = store.load_model(&carol).unwrap_err().to_string();
    assert!(err.contains("chaff repair --user carol"), "{err}");
    store.rebuild_model(&carol).unwrap();
    let mended = store.load_model(&carol).unwrap().unwrap().model;
    assert_eq!((mended.spam_learned(), mended.ham_learned()), (1, 1));
    // Dave was left too; his model (a journal pointer to the damaged
    // entry) cannot be rebuilt from his ledger: the backup, as said.
    assert!(matches!(
        store.load_model(&dave),
        Err(Error::Corrupt { .. })
    ));
    let err = store.rebuild_model(&dave).unwrap_err().to_string();
    assert!(
        err.contains("restore the data directory from a backup"),
        "{err}"
    );
    // And a compaction of carol now (the engine's, after her next prune)
    // works on the mended model.
    store.compact_user(&carol).unwrap();
}

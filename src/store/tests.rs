//! Storage tests on a real sled directory.

use super::*;
use crate::classify::Model;
use crate::classify::Weight;
use crate::tokenize::TokenId;
use crate::types::{Label, MessageId, Owner, UserId};

/// Opens the store in `path`, waiting while a just-dropped handle of it
/// still holds sled's file lock (its background flusher lets go at its next
/// tick; on a loaded machine that can be after the test reopens).
fn open_again(path: &std::path::Path) -> Store {
    for _ in 0..500 {
        match Store::open(path, 8 << 20) {
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked for 5 s", path.display());
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

fn learn(store: &Store, u: &UserId, m: &str, label: Label, t: &[u64]) -> u64 {
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
    let click = |store: &Store, m: &str, label, w, t: &[u64]| {
        let entry = LedgerEntry {
            label,
            tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
            tokens: ids(t),
            weight: w,
            shared: 0,
            implicit: false,
        };
        store
            .record(
                &alice,
                &msg(m),
                Some(&entry),
                &[Op::Learn(label, w, ids(t))],
            )
            .unwrap()
    };
    {
        let store = open_again(dir.path());
        let seq = click(&store, "m1", Label::Spam, w3_full, &[1, 2]);
        let mut folded = Model::default();
        folded.learn_weighted(&ids(&[1, 2]), Label::Spam, w3_full);
        store.checkpoint(&alice, &folded, seq).unwrap();
        click(&store, "m2", Label::Spam, w3_low, &[2, 3]);
        store
            .tree()
            .unwrap()
            .insert(FORMAT_KEY, &3u32.to_be_bytes())
            .unwrap();
        store.flush().unwrap();
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
fn a_replay_store_reads_pending_clicks_exactly_as_the_store() {
    // Clicks wait in memory (pending.rs) before reaching sled, a batch of
    // PENDING_CLICKS at a time: every read must still see each of them,
    // in order, before and after the batch boundary.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let synced = Store::open(a.path(), 8 << 20).unwrap();
    let pending = ReplayStore::open(b.path(), 8 << 20).unwrap();
    let alice = user("alice");
    let who = Owner::User(alice.clone());
    let clicks = pending::PENDING_CLICKS as u64 + 10;
    for store in [&synced as &dyn Backend, &pending] {
        for i in 0..clicks {
            let label = if i % 3 == 0 { Label::Spam } else { Label::Ham };
            let tokens = ids(&[i, i + 1, 1_000]);
            let entry = LedgerEntry {
                label,
                tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
                tokens: tokens.clone(),
                weight: Weight::FULL,
                shared: 0,
                implicit: false,
            };
            let ops = [Op::Learn(label, Weight::FULL, tokens)];
            store
                .record_click(&who, &msg(&format!("m{i}")), Some(&entry), &ops, &[])
                .unwrap();
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
            let old = store.ledger_get(&alice, &msg(m)).unwrap().unwrap();
            let ops = [
                Op::Unlearn(old.label, old.weight, old.tokens.clone()),
                Op::Learn(Label::Ham, Weight::FULL, ids(&[t, t + 1, 1_000])),
            ];
            store
                .record_click(&who, &msg(m), Some(&entry), &ops, &[])
                .unwrap();
        }
        let old = store.ledger_get(&alice, &msg("m5")).unwrap().unwrap();
        let undo = [Op::Unlearn(old.label, old.weight, old.tokens)];
        store
            .record_click(&who, &msg("m5"), None, &undo, &[])
            .unwrap();
    }
    let last = format!("m{}", clicks - 1);
    for m in ["m0", "m1", "m5", "m200", &last] {
        let read = |s: &dyn Backend| s.ledger_get(&alice, &msg(m)).unwrap();
        assert_eq!(read(&pending), read(&synced), "{m}");
    }
    assert_eq!(pending.ledger_get(&alice, &msg("m5")).unwrap(), None);
    let model = |s: &dyn Backend| s.load_model(&alice).unwrap().unwrap();
    let (p, s) = (model(&pending), model(&synced));
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

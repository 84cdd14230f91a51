//! `chaff soak --from-format 5`: the soak's data directory starts written
//! in store format 5, by the old encoders the library keeps for tests
//! (`Store::record_legacy_for_tests`), so the kills land inside the
//! in-place upgrade. That upgrade rewrites the format key at
//! open (one write) and each user's records as they are next clicked or
//! checkpointed; until then both formats are read side by side.

use super::*;

/// Writes the old directory: every user has the first half of its
/// messages learned (the label each leans to, not shared), and every other
/// user's model is snapshotted halfway, all in format `format`; the record
/// starts with those clicks. Returns how many records are in the old
/// format.
#[cfg(feature = "fault-injection")]
pub(super) fn write(soak: &Soak, data: &Path, format: u32) -> anyhow::Result<u64> {
    use chaff::classify::{Model, Weight};
    use chaff::store::LedgerEntry;
    use chaff::tokenize::{TOKENIZER_VERSION, Tokenizer};

    if format != 5 {
        bail!(
            "--from-format {format}: the soak writes format 5 only (the newest format upgraded in place)"
        );
    }
    let store = Store::open(data, 32 << 20)?;
    let tokenizer = Tokenizer::default();
    for (u, user) in soak.users.iter().enumerate() {
        let uid = UserId::new(user.id.clone())?;
        let mut rec = user.rec.lock();
        let learned = rec.messages.len().div_ceil(2);
        let mut model = Model::default();
        for n in 0..learned {
            let label = if n.is_multiple_of(2) {
                Label::Spam
            } else {
                Label::Ham
            };
            let ids = tokenizer.tokenize(&message(u, n, soak.words[u])).ids;
            let entry = LedgerEntry {
                label,
                tokenizer_version: TOKENIZER_VERSION,
                tokens: ids.clone(),
                weight: Weight::FULL,
                shared: 0,
                implicit: false,
            };
            model.learn_weighted(&ids, label, Weight::FULL);
            let mid = MessageId::new(format!("m{n}"))?;
            let ops = [Op::Learn(label, Weight::FULL, ids)];
            let seq = store.record_legacy_for_tests(&uid, &mid, &entry, &ops)?;
            if u.is_multiple_of(2) && n == learned / 2 {
                store.checkpoint_legacy_for_tests(&uid, &model, seq)?;
            }
            rec.messages[n] = Some(Learned {
                label,
                shared: false,
            });
        }
        rec.snapshot_seq = store.snapshot_seq(&uid)?;
    }
    store.mark_format_for_tests(format)?;
    Ok(store.older_format_records()?)
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn write(_: &Soak, _: &Path, _: u32) -> anyhow::Result<u64> {
    bail!(
        "--from-format needs a build with the `fault-injection` feature (cargo build --features fault-injection): \
         the old format's encoders are kept for tests only"
    )
}

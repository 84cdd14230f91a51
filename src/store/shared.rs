//! The shared model's parts (each contributor's snapshot and journal) and
//! the operator's seed id.

use sled::Batch;

use super::codec::{self};
use super::keys::*;
use super::{LoadedModel, Snapshot, Store};
use crate::classify::Model;
use crate::error::Error;
use crate::types::Owner;

impl<W: super::Writes> Store<W> {
    /// Every contributor's shared part (snapshot plus journal), for
    /// rebuilding the shared model at start.
    pub fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        let mut parts: std::collections::BTreeMap<Owner, LoadedModel> = Default::default();
        for item in self.tree()?.scan_prefix([CONTRIBUTION]) {
            let (key, value) = item?;
            let (who, _) = decode_contributor(&key)?;
            let (model, last_seq) = codec::decode_snapshot(&value)?;
            parts.insert(
                who,
                LoadedModel {
                    model,
                    last_seq,
                    journal_entries: 0,
                },
            );
        }
        for item in self.tree()?.scan_prefix([CONTRIBUTION_JOURNAL]) {
            let (key, value) = item?;
            let (who, rest) = decode_contributor(&key)?;
            let seq = u64::from_be_bytes(rest.try_into().map_err(|_| Error::Corrupt {
                what: "shared contribution journal key".into(),
            })?);
            let part = parts.entry(who).or_insert_with(|| LoadedModel {
                model: Model::default(),
                last_seq: 0,
                journal_entries: 0,
            });
            // A crash between a snapshot and the removal of what it folded
            // in cannot happen (one batch), but be exact regardless.
            if seq <= part.last_seq {
                continue;
            }
            for op in codec::decode_ops(&value)? {
                op.apply(&mut part.model);
                part.journal_entries += op.entries();
            }
            part.last_seq = seq;
        }
        Ok(parts.into_iter().collect())
    }

    /// Folds a contributor's journal up to `last_seq` into a snapshot of
    /// `part`, atomically (as [`Store::checkpoint`] for models).
    pub fn checkpoint_contribution(&self, who: &Owner, snapshot: Snapshot) -> Result<(), Error> {
        #[cfg(feature = "fault-injection")]
        crate::fault::checkpoint_step(who, "starting");
        let mut batch = Batch::default();
        let last_seq = snapshot.last_seq;
        for item in self
            .tree()?
            .range(contribution_journal_key(who, 0)..=contribution_journal_key(who, last_seq))
        {
            batch.remove(item?.0);
        }
        let bytes = codec::encode_snapshot_parts(snapshot.head, last_seq, snapshot.tokens);
        batch.insert(contributor_prefix(CONTRIBUTION, who), bytes);
        self.tree()?.apply_batch(batch)?;
        #[cfg(feature = "fault-injection")]
        {
            crate::fault::checkpoint_step(who, "written");
            crate::fault::checkpoint_step(who, "done");
        }
        Ok(())
    }

    /// Adds the removal of `who`'s whole shared part to `batch`.
    pub(super) fn clear_contribution(&self, who: &Owner, batch: &mut Batch) -> Result<(), Error> {
        batch.remove(contributor_prefix(CONTRIBUTION, who));
        for item in self
            .tree()?
            .scan_prefix(contributor_prefix(CONTRIBUTION_JOURNAL, who))
        {
            batch.remove(item?.0);
        }
        Ok(())
    }

    /// The current seed id, if the operator ever seeded.
    pub fn seed_id(&self) -> Result<Option<u64>, Error> {
        Ok(match self.tree()?.get(SEED_ID_KEY)? {
            Some(v) => Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                Error::Corrupt {
                    what: "seed id".into(),
                }
            })?)),
            None => None,
        })
    }

    /// Makes `id` the seed id, and when `clear`, removes the operator's
    /// shared part in the same batch. Not flushed: with `clear`, the engine
    /// drops the seed from memory once this returns, then calls
    /// [`Store::finish_seed_clear`] for the old seed's ledger (entries under
    /// an old seed id are ignored anyway, so an interrupted clear is still
    /// a complete one).
    pub fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.insert(SEED_ID_KEY, &id.to_be_bytes());
        if clear {
            self.clear_contribution(&Owner::Operator, &mut batch)?;
        }
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The rest of a seed clear: the old seed's ledger, then a flush.
    pub fn finish_seed_clear(&self) -> Result<(), Error> {
        self.delete_prefix(&contributor_prefix(LEDGER, &Owner::Operator))?;
        self.delete_dict(&Owner::Operator)?;
        self.flush()
    }
}

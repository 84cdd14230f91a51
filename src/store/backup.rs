//! Online backup: copying the store, user by user, into a new data
//! directory while the server serves (`Engine::backup_to`, `chaff backup`).

use sled::Batch;

use super::Store;
use super::keys::*;
use super::users::USER_FAMILIES;
use crate::error::Error;
use crate::types::{Owner, UserId};

/// Records copied per batch: sled's memory grows with batch size.
const COPY_CHUNK: usize = 512;

impl Store {
    /// Copies every record under `prefix` into `dest`, in bounded batches.
    fn copy_prefix(&self, dest: &Store, prefix: &[u8]) -> Result<u64, Error> {
        let mut batch = Batch::default();
        let (mut n, mut copied) = (0, 0u64);
        for item in self.tree()?.scan_prefix(prefix) {
            let (k, v) = item?;
            batch.insert(k, v);
            n += 1;
            copied += 1;
            if n == COPY_CHUNK {
                dest.tree()?.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        dest.tree()?.apply_batch(batch)?;
        Ok(copied)
    }

    /// Copies every record of `user` into `dest`. The caller holds the
    /// user's writer lock, so no click of theirs is half in the copy.
    pub fn copy_user_to(&self, user: &UserId, dest: &Store) -> Result<u64, Error> {
        let mut copied = 0;
        for kind in USER_FAMILIES {
            copied += self.copy_prefix(dest, &user_prefix(kind, user))?;
        }
        // The token dictionary the copied ledger, journal and snapshot name
        // their tokens by (format 6); it changes only under the same lock.
        copied += self.copy_prefix(dest, &contributor_prefix(DICT, &Owner::User(user.clone())))?;
        Ok(copied)
    }

    /// Copies the operator's records (seed ledger, seed contribution and
    /// its journal, seed id, operator lists) into `dest`. The caller holds
    /// the seed lock.
    pub fn copy_operator_to(&self, dest: &Store) -> Result<u64, Error> {
        let mut copied = 0;
        for kind in [LEDGER, LIST, CONTRIBUTION, CONTRIBUTION_JOURNAL] {
            copied += self.copy_prefix(dest, &[kind, 0, 0])?;
        }
        copied += self.copy_prefix(dest, &contributor_prefix(DICT, &Owner::Operator))?;
        if let Some(v) = self.tree()?.get(SEED_ID_KEY)? {
            dest.tree()?.insert(SEED_ID_KEY, v)?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Makes every id `dest` hands out from now on larger than every id
    /// this store has handed out (journal sequence numbers, consent and
    /// seed ids in the copied records), by raising its id offset. Carries
    /// the format-6 upgrade time (`U`) too: the copied ledger entries
    /// written before it are timed by it for the undo window, as here.
    pub fn carry_ids_to(&self, dest: &Store) -> Result<(), Error> {
        let floor = self.generate_id()?;
        dest.tree()?.insert(ID_OFFSET_KEY, &floor.to_be_bytes())?;
        if let Some(upgraded) = self.tree()?.get(UPGRADED_KEY)? {
            dest.tree()?.insert(UPGRADED_KEY, upgraded)?;
        }
        Ok(())
    }
}

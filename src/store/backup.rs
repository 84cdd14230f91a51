//! Online backup: copying the store, user by user, into a new data
//! directory while the server serves (`Engine::backup_to`, `chaff backup`).
//!
//! Two sources: a sled store is copied record by record (`copy_*`); a
//! store shared by replicas (the Redis Cluster) is read user by user in
//! the export format and written here with what an import drops kept —
//! the shared ids, the consent id, the user's shared part, the operator's
//! seed (`restore_*`) — so that both backups are the same kind of thing: a
//! sled data directory `chaff serve --data` serves as it is.

use sled::Batch;

use super::Snapshot;
use super::Store;
use super::export::{Learned, UserExport};
use super::keys::*;
use super::users::USER_FAMILIES;
use crate::classify::Model;
use crate::error::Error;
use crate::policy::{Entry, ListKind};
use crate::types::{MessageId, Owner, UserId};

/// One user as a backup from another store carries them: everything an
/// export holds, plus what an import would drop.
#[derive(Debug, Default)]
pub struct UserCopy {
    /// Model, settings, lists, ledger (shared ids as stored), decisions.
    pub export: UserExport,
    /// The consent id the user's settings carry (0: never shared).
    pub consent: u64,
    /// The user's part of the shared model, when it holds anything.
    pub part: Option<Model>,
}

/// The operator's records as a backup from another store carries them.
#[derive(Debug, Default)]
pub struct OperatorCopy {
    /// The seed id, if the operator ever seeded.
    pub seed_id: Option<u64>,
    /// The seed's ledger (shared ids as stored: the seed id).
    pub ledger: Vec<(MessageId, u64, Learned)>,
    /// The seed's part of the shared model, when it holds anything.
    pub part: Option<Model>,
    /// The operator's allow/block lists.
    pub lists: Vec<(ListKind, Entry)>,
}

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

    /// Writes one user read from another store (a backup of a Redis
    /// Cluster): the export's records with their shared ids, the settings
    /// with their consent id, and the user's shared part. Returns the
    /// records written. Not flushed (the backup flushes once at the end).
    pub fn restore_user(&self, user: &UserId, copy: &UserCopy) -> Result<u64, Error> {
        self.write_user_records(user, &copy.export, copy.consent, true)?;
        let e = &copy.export;
        let mut records = (e.ledger.len() + e.decisions.len() + e.lists.len()) as u64
            + u64::from(e.model.is_some())
            + u64::from(e.settings.is_some());
        if let Some(part) = copy.part.as_ref().filter(|p| holds_anything(p)) {
            self.checkpoint_contribution(&Owner::User(user.clone()), Snapshot::encode(part, 0))?;
            records += 1;
        }
        Ok(records)
    }

    /// Writes the operator's records read from another store: the seed
    /// id, the seed's ledger and part, the operator's lists. Returns the
    /// records written.
    pub fn restore_operator(&self, copy: &OperatorCopy) -> Result<u64, Error> {
        let who = Owner::Operator;
        self.write_ledger_records(&who, &copy.ledger, true)?;
        let mut records = copy.ledger.len() as u64;
        if let Some(part) = copy.part.as_ref().filter(|p| holds_anything(p)) {
            self.checkpoint_contribution(&who, Snapshot::encode(part, 0))?;
            records += 1;
        }
        let mut batch = Batch::default();
        if let Some(id) = copy.seed_id {
            batch.insert(SEED_ID_KEY, &id.to_be_bytes());
            records += 1;
        }
        for (kind, entry) in &copy.lists {
            let mut key = list_prefix(&who, *kind);
            key.extend_from_slice(entry.to_string().as_bytes());
            batch.insert(key, &[][..]);
            records += 1;
        }
        self.tree()?.apply_batch(batch)?;
        Ok(records)
    }

    /// Makes every id this store hands out from now on larger than
    /// `floor` (the source's consent and seed ids), as
    /// [`Store::carry_ids_to`] does for a sled source.
    pub fn raise_ids_above(&self, floor: u64) -> Result<(), Error> {
        self.tree()?.insert(ID_OFFSET_KEY, &floor.to_be_bytes())?;
        Ok(())
    }
}

/// Whether a shared part holds any message (an emptied part is not
/// written: on sled, a part is removed rather than kept empty).
fn holds_anything(part: &Model) -> bool {
    part.spam_learned() + part.ham_learned() > 0 || part.token_count() > 0
}

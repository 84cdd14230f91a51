//! The store of an in-process replay (`chaff eval`): a [`Backend`] of its
//! own over a throwaway sled [`Store`], so that the production store has
//! no unsynced mode.
//!
//! Why: a corpus replay learns thousands of messages a second on one
//! thread and keeps nothing, so it neither waits for the disk (its
//! [`Backend::flush`] does nothing) nor hands sled one batch per click:
//! clicks collect in memory (`pending.rs` says why that matters) and reach
//! sled [`PENDING_CLICKS`](super::pending::PENDING_CLICKS) at a time, with
//! the same keys and values the service writes, so a replay's results are
//! the service's, bit for bit.
//!
//! Reads stay exact: a click's ledger entry is read back from memory until
//! it is applied, and every other operation applies what is pending before
//! it reads or writes the tree, so scans, snapshots and deletions see every
//! click in order.

use std::path::Path;

use parking_lot::Mutex;

use super::backend::{Aggregate, Backend};
use super::export::UserExport;
use super::keys::ledger_key;
use super::pending::Pending;
use super::{LedgerEntry, LoadedModel, Op, Snapshot, Store};
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{MessageId, Owner, UserId};

/// A throwaway store for replays: never durable, never for data anyone
/// keeps (sled removes its files when it is closed).
pub struct ReplayStore {
    store: Store,
    /// Clicks not yet in the tree.
    pending: Mutex<Pending>,
}

impl ReplayStore {
    /// Opens a throwaway store in `path` (created if needed).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        Ok(Self {
            store: Store::open_throwaway(path, cache_bytes)?,
            pending: Mutex::default(),
        })
    }

    /// The store with every pending click applied, so whatever reads or
    /// writes it next sees every click in order.
    fn applied(&self) -> Result<&Store, Error> {
        let mut pending = self.pending.lock();
        Self::apply(&self.store, &mut pending)?;
        Ok(&self.store)
    }

    /// Applies pending clicks as one batch. The caller holds the pending
    /// lock until the tree has them, so a reader never finds a click in
    /// neither place; if sled refuses the batch, they stay pending.
    fn apply(store: &Store, pending: &mut Pending) -> Result<(), Error> {
        if let Some(batch) = pending.batch() {
            store.apply_batch(batch)?;
            pending.clear();
        }
        Ok(())
    }
}

impl Backend for ReplayStore {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn holds(&self, _what: Aggregate) -> bool {
        true
    }
    fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        self.applied()?.load_model(user)
    }
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        let key = ledger_key(who, msg);
        match self.pending.lock().ledger(&key) {
            Some(Some(bytes)) => return Ok(Some(super::codec::decode_ledger(bytes)?)),
            Some(None) => return Ok(None),
            None => {}
        }
        self.store.ledger_at(&key)
    }
    fn record_click(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error> {
        let (seq, ledger, journal) = self.store.click_records(who, msg, entry, ops, shared_ops)?;
        let mut pending = self.pending.lock();
        if pending.push(ledger, journal) {
            Self::apply(&self.store, &mut pending)?;
        }
        Ok(seq)
    }
    fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error> {
        self.applied()?.write_checkpoint(user, snapshot)
    }
    /// Nothing waits for the disk, and pending clicks stay pending (every
    /// read sees them anyway): applying them here, after every click,
    /// would undo the batching.
    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    fn generate_id(&self) -> Result<u64, Error> {
        self.store.generate_id()
    }
    fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        self.applied()?.user_exists(user)
    }
    fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.applied()?.delete_user(user)
    }
    fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        let store = self.applied()?;
        store.delete_prefix(&super::keys::user_prefix(super::keys::LEDGER, user))?;
        store.delete_prefix(&super::keys::user_prefix(super::keys::DECISION, user))
    }
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        self.applied()?.list_users(prefix, after, limit)
    }
    fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        self.applied()?.last_decision_ms(user)
    }
    fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        self.applied()?.settings(user)
    }
    fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        self.applied()?
            .put_settings(user, settings, consent, clear_shared)
    }
    fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        self.applied()?.list_entries(owner, kind)
    }
    fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        self.applied()?
            .set_list_entry_unflushed(owner, kind, entry, present)
    }
    fn append_decisions(&self, records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error> {
        Backend::append_decisions(self.applied()?, records)
    }
    fn find_decisions(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        Backend::find_decisions(self.applied()?, user, since_ms, until_ms, limit, take)
    }
    fn trim_decisions(&self, user: &UserId, before_ms: u64, keep: usize) -> Result<usize, Error> {
        self.applied()?.trim_decisions(user, before_ms, keep)
    }
    fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        self.applied()?.users_with_decisions_before(before_ms)
    }
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        self.applied()?.load_contributions()
    }
    fn checkpoint_contribution(&self, who: &Owner, snapshot: Snapshot) -> Result<(), Error> {
        self.applied()?.checkpoint_contribution(who, snapshot)
    }
    fn seed_id(&self) -> Result<Option<u64>, Error> {
        self.applied()?.seed_id()
    }
    fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        self.applied()?.set_seed_id(id, clear)
    }
    fn finish_seed_clear(&self) -> Result<(), Error> {
        let store = self.applied()?;
        store.delete_prefix(&super::keys::contributor_prefix(
            super::keys::LEDGER,
            &Owner::Operator,
        ))
    }
    fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        self.applied()?.read_user_export(user)
    }
    fn write_user_import(&self, user: &UserId, e: &UserExport, consent: u64) -> Result<(), Error> {
        self.applied()?.write_user_import(user, e, consent)
    }
}

//! The store of an in-process replay (`chaff eval`): [`ReplayStore`], a
//! [`Backend`] over a sled [`Store`] opened for throwaway data
//! ([`Store::open_unsynced`]).
//!
//! Why: a corpus replay learns thousands of messages a second on one
//! thread and keeps nothing, so it neither waits for the disk nor hands
//! sled one batch per click: clicks collect in memory (`pending.rs`) and
//! reach sled many at a time, with the same keys and values the service
//! writes, so a replay's results are the service's, bit for bit.
//!
//! Its own type so that nothing but a replay can hold such a store through
//! the interface. The write-behind itself still lives inside `Store`
//! (format 6 numbers a click's tokens under the user's dictionary lock and
//! hands the writes to the pending batch there); moving it out into this
//! file, so that the production store has no unsynced mode, is left to do
//! (docs/ARCHITECTURE.md, "Storage interface").

use std::path::Path;

use super::backend::{Aggregate, Backend};
use super::export::UserExport;
use super::{CommitStats, LedgerEntry, LoadedModel, Op, Snapshot, Store};
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{MessageId, Owner, UserId};

/// A throwaway store for replays: never durable, never for data anyone
/// keeps (sled removes its files when it is closed).
pub struct ReplayStore(Store);

impl ReplayStore {
    /// Opens a throwaway store in `path` (created if needed).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        Ok(Self(Store::open_unsynced(path, cache_bytes)?))
    }
}

/// Every method is the throwaway `Store`'s (whose `flush` does not wait).
impl Backend for ReplayStore {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn holds(&self, what: Aggregate) -> bool {
        Backend::holds(&self.0, what)
    }
    fn set_undo_window(&self, window: std::time::Duration, clock: super::Clock) {
        self.0.set_undo_window(window, clock)
    }
    fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        self.0.load_model(user)
    }
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        self.0.contributor_ledger_get(who, msg)
    }
    fn ledger_contains(&self, user: &UserId, msg: &MessageId) -> Result<bool, Error> {
        self.0.ledger_contains(user, msg)
    }
    fn record_click(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error> {
        self.0.record_click(who, msg, entry, ops, shared_ops)
    }
    fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error> {
        self.0.write_checkpoint(user, snapshot)
    }
    fn fold_ledger(&self) -> Result<u64, Error> {
        self.0.fold_ledger()
    }
    fn flush(&self) -> Result<(), Error> {
        self.0.flush()
    }
    fn generate_id(&self) -> Result<u64, Error> {
        self.0.generate_id()
    }
    fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        self.0.user_exists(user)
    }
    fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.0.delete_user(user)
    }
    fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.0.finish_delete_user(user)
    }
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        self.0.list_users(prefix, after, limit)
    }
    fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        self.0.last_decision_ms(user)
    }
    fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        self.0.settings(user)
    }
    fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        self.0.put_settings(user, settings, consent, clear_shared)
    }
    fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        self.0.list_entries(owner, kind)
    }
    fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        self.0.set_list_entry(owner, kind, entry, present)
    }
    fn append_decisions(&self, records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error> {
        Backend::append_decisions(&self.0, records)
    }
    fn find_decisions(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        Backend::find_decisions(&self.0, user, since_ms, until_ms, limit, take)
    }
    fn trim_decisions(&self, user: &UserId, before_ms: u64, keep: usize) -> Result<usize, Error> {
        self.0.trim_decisions(user, before_ms, keep)
    }
    fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        self.0.users_with_decisions_before(before_ms)
    }
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        self.0.load_contributions()
    }
    fn checkpoint_contribution(&self, who: &Owner, snapshot: Snapshot) -> Result<(), Error> {
        self.0.checkpoint_contribution(who, snapshot)
    }
    fn seed_id(&self) -> Result<Option<u64>, Error> {
        self.0.seed_id()
    }
    fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        self.0.set_seed_id(id, clear)
    }
    fn finish_seed_clear(&self) -> Result<(), Error> {
        self.0.finish_seed_clear()
    }
    fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        self.0.read_user_export(user)
    }
    fn write_user_import(&self, user: &UserId, e: &UserExport, consent: u64) -> Result<(), Error> {
        self.0.write_user_import(user, e, consent)
    }
    fn commit_stats(&self) -> CommitStats {
        self.0.commit_stats()
    }
}

//! The storage interface the engine runs on: [`Backend`], by aggregate, with
//! sled ([`Store`]) as the default implementation (also `chaff eval`'s
//! throwaway store, [`ReplayStore`](super::ReplayStore): the same code over a
//! write-behind, `replay.rs`), and a Redis
//! Cluster one (`redis_cluster::RedisBackend`, feature `redis`).
//!
//! # Why this shape
//!
//! The methods are what the engine calls, grouped by what they keep
//! (models + ledger + click commit; users; settings and lists; the decision
//! log; the shared model; export), not one per key: a backend decides its
//! own layout and atomic unit. Two ways of making a click atomic exist, and
//! the interface says which one a backend uses rather than hiding it:
//!
//! - **one writer per store** (sled): the engine's per-user writer lock
//!   orders "read the ledger, then change it", and [`Backend::record_click`]
//!   writes the result as one atomic batch;
//! - **a store shared by replicas** (Redis Cluster): no process-local lock
//!   can order clicks made through other chaff processes, so the store
//!   itself checks the ledger and applies the click in one atomic step
//!   ([`SharedClicks`], returned by [`Backend::shared_clicks`]), and each
//!   replica keeps its cached models fresh with one round trip per Score
//!   ([`SharedClicks::changes_since`]).
//!
//! An aggregate a backend does not hold yet ([`Backend::holds`]) answers
//! [`Error::NotOnStore`] (FAILED_PRECONDITION, naming it) for its writes
//! and explicit reads; the engine never falls back to another store.
//!
//! # Sync, not async
//!
//! The methods block. The engine is synchronous (CPU-heavy tokenizing,
//! parking_lot locks held across a ledger read and its batch) and the
//! service already runs every engine call on tokio's blocking pool; sled is
//! synchronous. The Redis backend runs its async client on a small runtime
//! of its own and blocks on it (`Handle::block_on`) from those blocking
//! threads, which tokio allows; from a runtime worker thread tokio refuses
//! it with a panic ("Cannot start a runtime from within a runtime"), the
//! assertion that no async worker is ever stalled on storage. An async
//! trait would have made every engine method async for one backend, moved
//! locks across await points, and cost sled's hot paths a future per call.
//! docs/ARCHITECTURE.md, "Storage interface".

use crate::classify::{Model, SharedModel, Weight};
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{Label, MessageId, Owner, UserId};

use super::export::UserExport;
use super::{CommitStats, LedgerEntry, LoadedModel, Op, Snapshot, Store, Writes};

/// What a backend can keep, for [`Backend::holds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// User models, the ledger and clicks.
    Models,
    /// Listing users, DeleteUser, when a user was last scored.
    Users,
    /// Delivery settings, consent, allow/block/trusted lists.
    Policy,
    /// The decision log support searches.
    Decisions,
    /// The shared model and the operator's seed.
    Shared,
    /// Per-user export and import.
    Export,
    /// An online copy into a new data directory (`chaff backup`).
    Backup,
}

impl Aggregate {
    /// How an operator reads it in an error message.
    pub fn describe(self) -> &'static str {
        match self {
            Aggregate::Models => "user models and clicks",
            Aggregate::Users => "user listing and deletion",
            Aggregate::Policy => "settings and allow/block/trusted lists",
            Aggregate::Decisions => "the decision log",
            Aggregate::Shared => "the shared model and the seed",
            Aggregate::Export => "user export and import",
            Aggregate::Backup => "backup",
        }
    }
}

/// What a click did, on a store that decides it ([`SharedClicks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickOutcome {
    /// Not learned before: learned now.
    Learned,
    /// Learned before with the same label: nothing changed.
    AlreadyLearned,
    /// Learned before with the other label: moved, exactly.
    Relearned,
    /// Forget: the click was undone; it had this label.
    Forgotten(Label),
}

/// A click's outcome and the user's counts right after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clicked {
    pub outcome: ClickOutcome,
    /// The user's version (last journal record) after the click: a reader
    /// holding it is up to date with this click.
    pub version: u64,
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// The weight the message had been learned with, when it had been
    /// (ALREADY_LEARNED of a trusted sender's mail reports a low effect).
    pub previous_weight: Option<Weight>,
}

/// What changed in a user's model since a version a replica holds
/// ([`SharedClicks::changes_since`]).
#[derive(Debug)]
pub enum ModelChanges {
    /// Nothing: the held model is current.
    Fresh,
    /// Apply these ops, in order; the model is then at `version`, with
    /// `entries` more journal entries since its snapshot.
    Records {
        ops: Vec<Op>,
        version: u64,
        entries: u64,
    },
    /// The held version was folded away (or is unknown): replace the held
    /// model with this one.
    Reload(LoadedModel),
}

/// A user's (or the operator's) settings and lists as a store shared by
/// replicas holds them, at a version every change raises: a replica
/// holding that version knows it holds them all
/// ([`SharedClicks::changes_with_policy`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredPolicy {
    /// 0: nothing ever stored.
    pub version: u64,
    /// Settings and consent id, if ever set.
    pub settings: Option<(UserSettings, u64)>,
    /// Every list entry, each list in the store's order.
    pub lists: Vec<(ListKind, Entry)>,
}

impl StoredPolicy {
    /// One list's entries.
    pub fn list(&self, kind: ListKind) -> Vec<Entry> {
        self.lists
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// What changed in a user's model and in their settings and lists since
/// the versions a replica holds: the one round trip before a Score.
#[derive(Debug)]
pub struct UserChanges {
    pub model: ModelChanges,
    /// `None`: the policy version held is current.
    pub policy: Option<StoredPolicy>,
}

/// A change to one contributor's part of the shared model, for a
/// replica's in-memory copy (`classify::SharedModel`), which computes the
/// capped sum itself.
#[derive(Debug)]
pub enum PartChange {
    /// Apply these ops to the part held.
    Apply { who: Owner, ops: Vec<Op> },
    /// The part is this model now (after a fold the replica had not seen,
    /// a revoke, a deletion: then empty).
    Replace { who: Owner, model: Model },
    /// The contributor is gone from the shared model.
    Remove { who: Owner },
}

impl PartChange {
    /// Applies the change to a copy of the shared model.
    pub fn apply_to(self, model: &mut SharedModel) {
        match self {
            PartChange::Apply { who, ops } => {
                for op in &ops {
                    let (learn, label, w, ids) = op.parts();
                    model.apply(&who, learn, label, w, ids);
                }
            }
            // An empty part (revoked, deleted) is no contributor at all,
            // as on sled, where it is removed.
            PartChange::Replace { who, model: part }
                if part.token_count() == 0 && part.weights() == (0, 0) =>
            {
                model.remove(&who);
            }
            PartChange::Replace { who, model: part } => model.replace_part(who, part),
            PartChange::Remove { who } => {
                model.remove(&who);
            }
        }
    }
}

/// What changed in the shared model and the operator's lists since a
/// replica last asked ([`SharedClicks::shared_update`]).
#[derive(Debug, Default)]
pub struct SharedUpdate {
    /// How many parts changed (already applied to the caller's copy).
    pub parts: usize,
    /// The operator's lists, when they changed.
    pub operator: Option<StoredPolicy>,
}

/// Clicks on a store that several chaff processes share: the store checks
/// the ledger and applies a click in one atomic step, and replicas read
/// what changed since the version they hold.
pub trait SharedClicks: Send + Sync {
    /// Learns `entry` for `msg` (Train): LEARNED, ALREADY_LEARNED (same
    /// label; nothing changes), or RELEARNED (the earlier click undone
    /// exactly, if the current tokenizer made it). Acknowledged: durable
    /// as the backend promises it when this returns. `derived`: the id
    /// chaff derives for the message when the caller names it otherwise;
    /// delivered mail learned under it is replaced by this click, in the
    /// same atomic step.
    fn train(
        &self,
        user: &UserId,
        msg: &MessageId,
        derived: Option<&MessageId>,
        entry: &LedgerEntry,
    ) -> Result<Clicked, Error>;

    /// Learns delivered mail as ham (`Engine::learn_delivered`'s rules,
    /// applied atomically by the store from the counts it sees): the
    /// weight it was learned with, or `None` when it was not (a user who
    /// never clicked, or a message already in the ledger). `ceiling` is the
    /// most the message may weigh (`engine::clicks::delivered_ceiling`,
    /// from the message's size).
    fn learn_delivered(
        &self,
        user: &UserId,
        msg: &MessageId,
        tokens: &[crate::tokenize::TokenId],
        ceiling: Weight,
    ) -> Result<Option<Weight>, Error>;

    /// Seeds one message into the shared model under the operator's
    /// current seed id (LEARNED, ALREADY_LEARNED or RELEARNED, as a
    /// click), atomically with the seed's ledger.
    fn seed(&self, msg: &MessageId, entry: &LedgerEntry) -> Result<Clicked, Error>;

    /// [`SharedClicks::changes_since`], and the user's settings and lists
    /// when their version is not `policy_version`, in the same round trip.
    fn changes_with_policy(
        &self,
        user: &UserId,
        version: u64,
        policy_version: u64,
    ) -> Result<UserChanges, Error>;

    /// The user's settings and lists as stored now.
    fn policy(&self, user: &UserId) -> Result<StoredPolicy, Error>;

    /// What changed in the shared model and the operator's lists since
    /// this process last asked. Polled, not asked per Score: `None` when
    /// the last poll is more recent than the backend's interval, or
    /// another thread is polling now; `force` asks regardless of the
    /// interval (after this replica's own sharing click or revoke).
    ///
    /// The parts' changes are applied to `copy` (this process's shared
    /// model; its write lock is taken once, after the store was read) in
    /// the same step as the backend records the versions they bring, so
    /// the copy holds each part at exactly the version recorded. That is
    /// what lets the backend then fold a part's journal from the copy when
    /// it has grown past `checkpoint_due` (the sled engine does the same
    /// from its own copy, `Engine::checkpoint_contribution`).
    fn shared_update(
        &self,
        force: bool,
        copy: &parking_lot::RwLock<SharedModel>,
    ) -> Result<Option<SharedUpdate>, Error>;

    /// Replaces the user's model in the store with `model` — the model at
    /// exactly `version`, pruned to the quota (`engine/quota.rs`) — at a
    /// new version, which every replica then reloads. Returns the new
    /// version, or `None` if the model has moved past `version` (a click
    /// through another replica): nothing was written, and the next refresh
    /// queues the prune again.
    fn prune(&self, user: &UserId, model: &Model, version: u64) -> Result<Option<u64>, Error>;

    /// Undoes a click exactly; [`Error::NotLearned`] if there is none.
    fn forget(&self, user: &UserId, msg: &MessageId) -> Result<Clicked, Error>;

    /// What changed since `version` (0: nothing held), in one round trip.
    fn changes_since(&self, user: &UserId, version: u64) -> Result<ModelChanges, Error>;

    /// Folds the journal up to `version` into a snapshot of `model` (the
    /// user's model at exactly that version). False if another replica
    /// folded as far already.
    fn checkpoint(&self, user: &UserId, model: &Model, version: u64) -> Result<bool, Error>;

    /// Answers when the store can serve: readiness.
    fn ping(&self) -> Result<(), Error>;
}

/// The error for an aggregate `store` does not hold.
pub fn not_on(store: &'static str, what: Aggregate) -> Error {
    Error::NotOnStore {
        store,
        what: what.describe(),
    }
}

/// Durable storage as the engine uses it. Every method blocks (module
/// docs). Implementations: [`Store`] (sled, the default), the eval replay
/// store, and the Redis Cluster backend.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name in messages and logs (`sled`, `redis`).
    fn name(&self) -> &'static str;

    /// Whether this backend keeps `what`; the engine neither reads nor
    /// writes an aggregate a backend does not hold, and answers
    /// [`Error::NotOnStore`] for it.
    fn holds(&self, what: Aggregate) -> bool;

    /// `Some` for a store shared by several chaff processes, which makes
    /// clicks atomic itself (module docs); `None` for a store this process
    /// alone writes, where the engine's writer lock orders a user's clicks.
    fn shared_clicks(&self) -> Option<&dyn SharedClicks> {
        None
    }

    /// The sled store underneath, for what only a sled data directory can
    /// do: an online backup into a new directory, and reopening the
    /// directory after a failed write (`service`). `None` for a throwaway
    /// replay store, whose directory is removed when it is closed.
    fn sled(&self) -> Option<&Store> {
        None
    }

    /// Copies everything this store holds into `dest`, a new sled data
    /// directory, for a store the engine's writer locks do not guard (one
    /// shared by replicas reads each user consistently itself). Returns the
    /// users and records copied. A sled store is copied by the engine
    /// instead, under its writer locks (`Engine::backup_to`).
    fn backup_into(&self, _dest: &Store) -> Result<(u64, u64), Error> {
        Err(not_on(self.name(), Aggregate::Backup))
    }

    // ---- models, ledger and the click commit ----

    /// How long a click can be undone exactly, and the clock clicks are
    /// timed by (`--undo-window`). Every backend that keeps a ledger
    /// honours it (sled and its replay store, Redis); the default does
    /// nothing.
    fn set_undo_window(&self, _window: std::time::Duration, _clock: super::Clock) {}

    /// The same for entries of delivered mail (`--delivered-undo-window`,
    /// at most the undo window); ignored where the undo window is.
    fn set_delivered_undo_window(&self, _window: std::time::Duration) {}

    /// Whether the user's ledger holds anything for this message (a click
    /// or delivered mail, of any age).
    fn ledger_contains(&self, user: &UserId, msg: &MessageId) -> Result<bool, Error>;

    /// Folds ledger entries older than the undo window; how many.
    fn fold_ledger(&self) -> Result<u64, Error>;

    /// The user's model (snapshot plus journal), `None` for a user with
    /// nothing stored.
    fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error>;

    /// What the user's ledger holds for this message.
    fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        self.contributor_ledger_get(&Owner::User(user.clone()), msg)
    }

    /// A user's or the operator's (seed) ledger entry for this message.
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error>;

    /// One click as one atomic write: the ledger's new state for `msg`
    /// (`None` removes it), the model's ops and the shared part's ops.
    /// Returns the journal sequence number. Not durable until
    /// [`Backend::flush`]. Only for stores one process writes.
    fn record_click(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error>;

    /// Folds the user's journal up to the snapshot's sequence number into it.
    fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error>;

    /// After a prune of `user`'s model, once its snapshot is written: drops
    /// the pruned tokens' ids from the user's ledger entries and renumbers
    /// their dictionary, atomically (sled: `compact.rs`), so a Forget is
    /// exact again and the dictionary shrinks with the model. The default
    /// does nothing: a store with its own format (Redis) keeps pruned ids
    /// in its entries, as sled did before format 7.
    fn compact_user(&self, _user: &UserId) -> Result<super::Compacted, Error> {
        Ok(super::Compacted::default())
    }

    /// Makes every write so far durable (group commit for sled).
    fn flush(&self) -> Result<(), Error>;

    /// A fresh id above every id handed out before: consent and seed ids.
    fn generate_id(&self) -> Result<u64, Error>;

    // ---- users ----

    /// Whether anything at all is stored for the user.
    fn user_exists(&self, user: &UserId) -> Result<bool, Error>;
    /// Deletes what makes the user score and share (the fast part).
    fn delete_user(&self, user: &UserId) -> Result<(), Error>;
    /// The rest of a deletion (ledger, decisions), then a flush.
    fn finish_delete_user(&self, user: &UserId) -> Result<(), Error>;
    /// Users whose id starts with `prefix`, after `after`, at most `limit`.
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error>;
    /// When the user's newest logged decision was made (ms), if any.
    fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error>;

    // ---- settings and lists ----

    /// The user's settings and consent id, if ever set.
    fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error>;
    /// Stores settings and consent; with `clear_shared`, drops the user's
    /// shared part in the same atomic write.
    fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error>;
    /// Every entry on one list.
    fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error>;
    /// Adds or removes an entry durably; whether the list changed.
    fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error>;

    // ---- the decision log ----

    /// Appends decisions: (user, time in ms, JSON).
    fn append_decisions(&self, records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error>;
    /// The user's decisions in `[since_ms, until_ms]`, newest first, each
    /// handed to `take`, which says whether it counts; stops after `limit`
    /// counted.
    fn find_decisions(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error>;
    /// Deletes decisions older than `before_ms` and all but the newest `keep`.
    fn trim_decisions(&self, user: &UserId, before_ms: u64, keep: usize) -> Result<usize, Error>;
    /// Users with a decision older than `before_ms`.
    fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error>;

    // ---- the shared model ----

    /// Every contributor's part, to rebuild the shared model at start.
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error>;
    /// Folds a contributor's journal into a snapshot of its part.
    fn checkpoint_contribution(&self, who: &Owner, snapshot: Snapshot) -> Result<(), Error>;
    /// The current seed id, if the operator ever seeded.
    fn seed_id(&self) -> Result<Option<u64>, Error>;
    /// Makes `id` the seed id; with `clear`, drops the seed's part.
    fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error>;
    /// The rest of a seed clear (the old seed's ledger), then a flush.
    fn finish_seed_clear(&self) -> Result<(), Error>;

    // ---- export and import ----

    /// Everything stored for the user, as the export format carries it.
    fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error>;
    /// Writes an export's records for a user with nothing stored.
    fn write_user_import(&self, user: &UserId, e: &UserExport, consent: u64) -> Result<(), Error>;

    // ---- operations ----

    /// Durability waits and the flushes that served them (zero where
    /// durability is per write, as on Redis).
    fn commit_stats(&self) -> CommitStats {
        CommitStats::default()
    }

    /// How long storage flushes took.
    fn flush_times(&self) -> crate::metrics::LatencySnapshot {
        crate::metrics::LatencySnapshot::default()
    }
}

/// sled: everything, written by this process alone (the service's
/// [`Store`], or a throwaway [`ReplayStore`](super::ReplayStore)).
impl<W: Writes> Backend for Store<W> {
    fn name(&self) -> &'static str {
        "sled"
    }
    fn holds(&self, _what: Aggregate) -> bool {
        true
    }
    fn sled(&self) -> Option<&Store> {
        W::as_durable(self)
    }
    fn set_undo_window(&self, window: std::time::Duration, clock: super::Clock) {
        Store::set_undo_window(self, window, clock)
    }
    fn set_delivered_undo_window(&self, window: std::time::Duration) {
        Store::set_delivered_undo_window(self, window)
    }
    fn ledger_contains(&self, user: &UserId, msg: &MessageId) -> Result<bool, Error> {
        Store::ledger_contains(self, user, msg)
    }
    fn fold_ledger(&self) -> Result<u64, Error> {
        Store::fold_ledger(self)
    }
    fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        Store::load_model(self, user)
    }
    fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        Store::ledger_get(self, user, msg)
    }
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        Store::contributor_ledger_get(self, who, msg)
    }
    fn record_click(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error> {
        Store::record_click(self, who, msg, entry, ops, shared_ops)
    }
    fn compact_user(&self, user: &UserId) -> Result<super::Compacted, Error> {
        Store::compact_user(self, user)
    }
    fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error> {
        Store::write_checkpoint(self, user, snapshot)
    }
    fn flush(&self) -> Result<(), Error> {
        Store::flush(self)
    }
    fn generate_id(&self) -> Result<u64, Error> {
        Store::generate_id(self)
    }
    fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        Store::user_exists(self, user)
    }
    fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        Store::delete_user(self, user)
    }
    fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        Store::finish_delete_user(self, user)
    }
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        Store::list_users(self, prefix, after, limit)
    }
    fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        Store::last_decision_ms(self, user)
    }
    fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        Store::settings(self, user)
    }
    fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        Store::put_settings(self, user, settings, consent, clear_shared)
    }
    fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        Store::list_entries(self, owner, kind)
    }
    fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        Store::set_list_entry(self, owner, kind, entry, present)
    }
    fn append_decisions(&self, records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error> {
        Store::append_decisions(self, records.iter().map(|(u, t, j)| (u, *t, j.as_slice())))
    }
    fn find_decisions(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        Store::find_decisions(self, user, since_ms, until_ms, limit, |json| {
            Ok(take(json)?.then_some(()))
        })
        .map(drop)
    }
    fn trim_decisions(&self, user: &UserId, before_ms: u64, keep: usize) -> Result<usize, Error> {
        Store::trim_decisions(self, user, before_ms, keep)
    }
    fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        Store::users_with_decisions_before(self, before_ms)
    }
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        Store::load_contributions(self)
    }
    fn checkpoint_contribution(&self, who: &Owner, snapshot: Snapshot) -> Result<(), Error> {
        Store::checkpoint_contribution(self, who, snapshot)
    }
    fn seed_id(&self) -> Result<Option<u64>, Error> {
        Store::seed_id(self)
    }
    fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        Store::set_seed_id(self, id, clear)
    }
    fn finish_seed_clear(&self) -> Result<(), Error> {
        Store::finish_seed_clear(self)
    }
    fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        Store::read_user_export(self, user)
    }
    fn write_user_import(&self, user: &UserId, e: &UserExport, consent: u64) -> Result<(), Error> {
        Store::write_user_import(self, user, e, consent)
    }
    fn commit_stats(&self) -> CommitStats {
        Store::commit_stats(self)
    }
    fn flush_times(&self) -> crate::metrics::LatencySnapshot {
        Store::flush_times(self)
    }
}

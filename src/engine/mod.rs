//! The use cases: score a message, learn a click, undo a click, describe a
//! user. Plain Rust over the tokenizer, classifier and store; the gRPC layer
//! and the CLI are thin adapters over this. A file per use case:
//!
//! - `score.rs` — **the scoring pipeline**, one function for every score
//!   (read → model → blend → decide → record); start reading there;
//! - `clicks.rs` — Train, relearn, Forget: the click path and its commit;
//! - `delivered.rs` — learning from delivered mail, queued by Score for a
//!   background worker in the server;
//! - `users.rs` — user admin: summary, settings, lists, the decision log
//!   search, DeleteUser;
//! - `shared.rs` — the shared model's parts and the operator's seed;
//! - `cache.rs` — which user models stay in memory;
//! - `replicas.rs` — the click path and the per-Score model refresh on a
//!   store shared by several chaff processes (Redis Cluster);
//! - this file — the [`Engine`] itself, its per-user slots and locks,
//!   construction and shutdown.
//!
//! # Concurrency
//!
//! Each user has a slot holding the in-memory [`Model`] behind an `RwLock`
//! and a writer `Mutex`. Scoring takes the read lock only for the pure
//! classifier call. Clicks for one user are serialised by the writer lock,
//! which is held across that user's ledger read and batch so that "check the
//! ledger, then change it" cannot interleave; the model's write lock is taken
//! only to apply the written change in memory, so scoring never waits on
//! disk. Different users never contend.
//!
//! The flush that makes a click durable happens *after* the writer lock is
//! released, through the store's group commit: a user's next click can write
//! while the previous one waits, and both share one flush. Every reply that
//! reports stored state (LEARNED, ALREADY_LEARNED, RELEARNED, Forget and its
//! NOT_FOUND) waits for a flush that started after its ledger read, so what
//! was acknowledged survives a crash even when it was another click's write
//! that the reply observed.
//!
//! The shared model (`shared.rs`) lives in memory behind one `RwLock` that
//! scoring reads beside the user's model; a shared click takes its write
//! lock only to apply the already-recorded change. A user's part of it is
//! changed only under that user's writer lock, the operator's under the
//! seed lock. No thread ever holds two write locks at once.
//!
//! The locks are `parking_lot`'s, which do not poison: a request that
//! panics under one (a bug) fails alone, and the next request takes the lock
//! as usual rather than failing on it forever (the service answers the
//! panicking request INTERNAL, `service::catch_panic`). Storage writes are
//! atomic batches, so storage is never half-changed; an in-memory change a
//! panic cut short stays so until that model is next loaded from storage.
//!
//! All methods block (storage I/O, CPU-heavy tokenizing): async callers run
//! them on a blocking pool.
//!
//! # Storage
//!
//! The engine runs on the storage interface, [`Backend`] (`store`): sled by
//! default, where this process is the only writer and the writer lock above
//! orders a user's clicks; or a store shared by several chaff processes
//! (Redis Cluster), where the store makes each click atomic itself and every
//! Score first brings the user's cached model up to date in one round trip
//! (`replicas.rs`). What a backend does not hold yet is answered
//! [`Error::NotOnStore`], never read from anywhere else.

mod backup;
mod cache;
mod clicks;
mod delivered;
mod export;
mod listing;
mod quota;
mod replicas;
mod score;
mod shared;
mod users;

pub use backup::BackedUp;
pub use cache::{BYTES_PER_TOKEN, CacheStats, DEFAULT_MODEL_MEMORY, model_bytes, parse_bytes};
pub use clicks::{Forgotten, TrainOutcome, Trained};
pub use delivered::{DEFAULT_DELIVERED_QUEUE, DeliveredStats};
pub use export::{Imported, MAX_IMPORT_BYTES};
pub use listing::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, UserListing, UsersPage};
pub use quota::{DEFAULT_MAX_SHARED_TOKENS, DEFAULT_MAX_USER_TOKENS, QuotaStats};
pub use score::{
    Delivery, Depth, Envelope, Evaluated, Input, Outcome, ReadMessage, ScoreViews, Scored,
    TOP_FEATURES, derive_message_id, derive_message_id_from,
};
pub use shared::{Seeded, SharedSummary};
pub use users::{
    DEFAULT_FIND_LIMIT, DecisionQuery, ListRef, MAX_FIND_LIMIT, SettingsUpdated, UserSummary,
};

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use rustc_hash::FxHashMap;
use tracing::warn;

use crate::classify::{Model, Params, SharedModel};
use crate::decisions::{DecisionLog, Retention};
use crate::error::Error;
use crate::policy::{List, ListKind, UserSettings};
/// The engine's unit tests run on sled directories (`use super::*`).
#[cfg(test)]
use crate::store::Store;
use crate::store::{Aggregate, Backend, CommitStats, LoadedModel, not_on};
use crate::tokenize::{TOKENIZER_VERSION, Tokenizer};
use crate::types::{Owner, UserId};

/// Default largest message accepted: 10 MiB, larger than almost all mail
/// providers accept, small enough to bound memory per request.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// What the engine needs besides storage.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_message_bytes: usize,
    pub params: Params,
    pub tokenizer: Tokenizer,
    /// How long and how many Score decisions are kept for support.
    pub retention: Retention,
    /// Estimated bytes of user models kept in memory; least recently used
    /// models beyond it are dropped and reloaded on demand (`cache`).
    pub model_memory: usize,
    /// How long a click can be undone exactly (Forget, or a relearn as the
    /// other class); older ledger entries are folded in the background
    /// (`Store::fold_ledger`) and keep only their label and time.
    pub undo_window: std::time::Duration,
    /// The same for mail learned from its delivery (implicit ledger
    /// entries), dropped from the ledger past it by the same fold, counts
    /// kept; at most `undo_window` in effect
    /// (`store::DEFAULT_DELIVERED_UNDO_WINDOW`).
    pub delivered_undo_window: std::time::Duration,
    /// What "now" is for the undo window: the system clock, or a test's.
    pub clock: crate::store::Clock,
    /// A user model past this many tokens is pruned back under it
    /// (`quota`, `classify::prune`); `None`: no cap.
    pub max_user_tokens: Option<usize>,
    /// The shared model's own cap, on its sum `S` (`quota`); `None`: no
    /// cap.
    pub max_shared_tokens: Option<usize>,
    /// Pruning is left to the caller's background task
    /// ([`Engine::prune_pending`], as the server does) rather than run
    /// after the click that queued it (replays, for determinism).
    pub prune_in_background: bool,
    /// Learn mail delivered to the inbox as ham, lightly, for users who
    /// have taught chaff something (`Engine::learn_delivered`). Most users
    /// only ever click *Spam*; without this their model knows no ham.
    pub learn_delivered: bool,
    /// Delivered messages waiting for the background learner before new
    /// ones are dropped (`delivered`); used once the server starts it
    /// ([`Engine::start_delivered_learner`]).
    pub delivered_queue: usize,
    /// How often a serving sled store seals a generation in the background
    /// (`Store::seal_generation`, off the request path; `None`: only at a
    /// clean stop). A damaged log is then caught at the next open even
    /// after a crash, for everything written before the last seal.
    pub seal_every: Option<std::time::Duration>,
    /// What the border MTA writes, so policy reads its authentication
    /// results and no one else's (`mail::auth::Border`).
    pub border: crate::mail::auth::Border,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            params: Params::default(),
            tokenizer: Tokenizer::default(),
            retention: Retention::default(),
            model_memory: DEFAULT_MODEL_MEMORY,
            undo_window: crate::store::DEFAULT_UNDO_WINDOW,
            delivered_undo_window: crate::store::DEFAULT_DELIVERED_UNDO_WINDOW,
            clock: crate::store::Clock::system(),
            max_user_tokens: Some(DEFAULT_MAX_USER_TOKENS),
            max_shared_tokens: Some(DEFAULT_MAX_SHARED_TOKENS),
            prune_in_background: false,
            learn_delivered: true,
            delivered_queue: DEFAULT_DELIVERED_QUEUE,
            seal_every: None,
            border: Default::default(),
        }
    }
}

/// Counters for operators (see [`Engine::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub cache: CacheStats,
    pub commit: CommitStats,
    pub decisions: crate::decisions::DecisionStats,
    pub quota: QuotaStats,
    pub delivered: DeliveredStats,
}

/// Where the user's writes stand relative to its last snapshot.
struct WriterState {
    last_seq: u64,
    /// Journal entries since the last snapshot ([`checkpoint_due`]);
    /// `u64::MAX` forces a snapshot at the next click.
    journal_entries: u64,
    /// DeleteUser retired this slot: a caller that was waiting for the lock
    /// must fetch the user's slot again rather than write through this one.
    retired: bool,
}

/// A user's delivery settings and lists, held in memory beside the model
/// so scoring reads no storage.
#[derive(Debug, Default)]
struct UserPolicy {
    settings: UserSettings,
    /// The current consent id (0: not sharing): a click goes into the
    /// shared model under it, and is still there only while it is current.
    consent: u64,
    allow: List,
    block: List,
    /// The version of these in a store shared by replicas (0: none
    /// stored, or sled, which does not version them): the per-Score
    /// refresh brings them again when the store's differs (`replicas.rs`).
    version: u64,
}

struct UserSlot {
    model: RwLock<Model>,
    writer: Mutex<WriterState>,
    policy: RwLock<UserPolicy>,
    /// Recency and memory charge, for the model cache.
    cache: cache::Entry,
}

/// Operator-wide lists, loaded at start and changed through the engine.
#[derive(Debug, Default)]
struct OperatorLists {
    allow: List,
    block: List,
    trusted: List,
}

/// The service's state: storage, settings and the hot models.
pub struct Engine {
    /// The storage interface (sled, a replay's store, or Redis Cluster).
    store: Arc<dyn Backend>,
    settings: Settings,
    users: RwLock<FxHashMap<UserId, Arc<UserSlot>>>,
    cache: cache::Cache,
    operator: RwLock<OperatorLists>,
    decisions: DecisionLog,
    /// The shared model and every contributor's part of it.
    shared: RwLock<SharedModel>,
    /// Where each contributor's part stands against its last snapshot.
    positions: Mutex<FxHashMap<Owner, Position>>,
    /// The current seed id (0: never seeded); the lock orders the
    /// operator's writes.
    seed: Mutex<u64>,
    /// Users whose models passed `max_user_tokens`, waiting for a prune.
    quota: quota::Quota,
    /// Delivered mail waiting to be learned, and the worker learning it.
    delivered: delivered::Learner,
}

/// A contribution's journal position (as [`WriterState`] for models).
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    last_seq: u64,
    journal_entries: u64,
}

impl Engine {
    /// The engine over an open store: loads the operator's lists and the
    /// shared model and starts the decision log writer — each only if the
    /// store holds it ([`Backend::holds`]).
    pub fn new(store: impl Backend, settings: Settings) -> Result<Self, Error> {
        Self::with_store(Arc::new(store), settings)
    }

    /// [`Engine::new`] over a store chosen at run time (`chaff eval`'s
    /// replay or durable store).
    pub fn with_store(store: Arc<dyn Backend>, settings: Settings) -> Result<Self, Error> {
        let load = |kind| -> Result<List, Error> {
            if !store.holds(Aggregate::Policy) {
                return Ok(List::default());
            }
            Ok(List::from_entries(
                store.list_entries(&Owner::Operator, kind)?,
            ))
        };
        let operator = OperatorLists {
            allow: load(ListKind::Allow)?,
            block: load(ListKind::Block)?,
            trusted: load(ListKind::Trusted)?,
        };
        let (shared, positions, seed) = if store.holds(Aggregate::Shared) {
            let (shared, positions) = shared::load(&*store)?;
            (shared, positions, store.seed_id()?.unwrap_or(0))
        } else {
            Default::default()
        };
        store.set_undo_window(settings.undo_window, settings.clock.clone());
        store.set_delivered_undo_window(settings.delivered_undo_window);
        let decisions = if store.holds(Aggregate::Decisions) {
            DecisionLog::start(store.clone(), settings.retention.clone())
        } else {
            DecisionLog::off()
        };
        let cache = cache::Cache::new(settings.model_memory);
        if let Some(sled) = store.sled() {
            // The token dictionaries' share of --model-memory (cache.rs).
            sled.set_dict_cache_bytes(cache.dict_bytes());
        }
        cache.charge_shared(shared.stored_tokens());
        let shared_bytes = model_bytes(shared.stored_tokens());
        if shared.stored_tokens() > 0 && shared_bytes > settings.model_memory / 2 {
            warn!(
                shared_mib = shared_bytes >> 20,
                model_memory_mib = settings.model_memory >> 20,
                "the shared model takes over half of --model-memory; user models get the rest"
            );
        }
        let delivered = delivered::Learner::new(settings.delivered_queue);
        Ok(Self {
            store,
            cache,
            settings,
            users: RwLock::new(FxHashMap::default()),
            operator: RwLock::new(operator),
            decisions,
            shared: RwLock::new(shared),
            positions: Mutex::new(positions),
            seed: Mutex::new(seed),
            quota: quota::Quota::default(),
            delivered,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The storage this engine runs on (the service reopens a sled store
    /// after a storage failure, and probes a shared one; see `service`).
    pub fn store(&self) -> &dyn Backend {
        &*self.store
    }

    /// [`Error::NotOnStore`] unless the store holds `what`.
    pub(crate) fn needs(&self, what: Aggregate) -> Result<(), Error> {
        if self.store.holds(what) {
            Ok(())
        } else {
            Err(not_on(self.store.name(), what))
        }
    }

    /// A user's settings until they change them: the defaults, with the
    /// classifier's spam cutoff as the spam threshold (the same value unless
    /// a replay tunes `Params`, as `chaff eval --spam-cutoff` does).
    pub(crate) fn default_user_settings(&self) -> UserSettings {
        UserSettings {
            spam_threshold: self.settings.params.spam_cutoff,
            ..UserSettings::default()
        }
    }

    fn default_policy(&self) -> UserPolicy {
        UserPolicy {
            settings: self.default_user_settings(),
            ..UserPolicy::default()
        }
    }

    /// The user's slot, loading the model from disk on first use; `None`
    /// for a user with nothing stored (so scoring mail for unknown
    /// recipients does not fill memory with empty models).
    fn slot(&self, user: &UserId) -> Result<Option<Arc<UserSlot>>, Error> {
        self.slot_via(user, || self.load_slot(user), Some, Option::is_some)
    }

    /// [`Engine::slot`], with an empty slot for a user with nothing stored:
    /// for writes, which create the user.
    fn slot_or_new(&self, user: &UserId) -> Result<Arc<UserSlot>, Error> {
        self.slot_via(user, || self.load_or_new_slot(user), |slot| slot, |_| true)
    }

    /// The user's slot from the map (`cached`), else from `load` (whose
    /// result `found` says whether it is one).
    fn slot_via<T>(
        &self,
        user: &UserId,
        load: impl FnOnce() -> Result<T, Error>,
        cached: impl Fn(Arc<UserSlot>) -> T,
        found: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        if let Some(slot) = self.cached_slot(user) {
            return Ok(cached(slot));
        }
        let slot = {
            // Load without holding the map lock: disk reads must not stall
            // other users. Loads of one user are serialised, and the map is
            // checked again under that lock (see `cache`).
            let _loading = self.cache.load_lock(user);
            if let Some(slot) = self.cached_slot(user) {
                return Ok(cached(slot));
            }
            load()?
        };
        if !found(&slot) {
            self.cache.absent();
            return Ok(slot);
        }
        self.cache.miss();
        self.evict_over_budget(user);
        Ok(slot)
    }

    fn cached_slot(&self, user: &UserId) -> Option<Arc<UserSlot>> {
        let users = self.users.read();
        let slot = users.get(user)?;
        self.cache.hit(&slot.cache);
        Some(slot.clone())
    }

    /// Reads the user's model and policy and puts a slot in the map; `None`
    /// if neither is stored. The caller holds the user's load lock.
    fn load_slot(&self, user: &UserId) -> Result<Option<Arc<UserSlot>>, Error> {
        let (loaded, policy) = self.load_user(user)?;
        if loaded.is_none() && policy.is_none() {
            return Ok(None);
        }
        Ok(Some(self.install_slot(user, loaded, policy)))
    }

    /// [`Engine::load_slot`], with an empty model and default policy for
    /// what is not stored.
    fn load_or_new_slot(&self, user: &UserId) -> Result<Arc<UserSlot>, Error> {
        let (loaded, policy) = self.load_user(user)?;
        Ok(self.install_slot(user, loaded, policy))
    }

    /// Puts a slot for what was loaded in the map.
    fn install_slot(
        &self,
        user: &UserId,
        loaded: Option<LoadedModel>,
        policy: Option<UserPolicy>,
    ) -> Arc<UserSlot> {
        let (mut model, last_seq, mut journal_entries) = match loaded {
            Some(l) => (l.model, l.last_seq, l.journal_entries),
            None => (Model::default(), 0, 0),
        };
        if model.tokenizer_version() != TOKENIZER_VERSION {
            // Statistics of another tokenizer describe other token ids:
            // mixing them with new ones would score garbage. Start over and
            // say so; the ledger keeps each message's version, so undoing
            // an old click later leaves the new model alone.
            warn!(
                user = user.as_str(),
                stored = model.tokenizer_version(),
                current = TOKENIZER_VERSION,
                learned = model.spam_learned() + model.ham_learned(),
                "model was built by another tokenizer version; starting a fresh model for this user"
            );
            model = Model::default();
            // Snapshot the fresh model at the next click.
            journal_entries = u64::MAX;
        }
        let tokens = model.token_count();
        let slot = Arc::new(UserSlot {
            model: RwLock::new(model),
            writer: Mutex::new(WriterState {
                last_seq,
                journal_entries,
                retired: false,
            }),
            policy: RwLock::new(policy.unwrap_or_else(|| self.default_policy())),
            cache: cache::Entry::default(),
        });
        self.cache.charge(&slot.cache, tokens);
        self.cache.touch(&slot.cache);
        self.users.write().insert(user.clone(), slot.clone());
        slot
    }

    /// Drops least recently used slots that no request holds until the
    /// models in memory fit the budget again. `keep` (the user just served)
    /// stays. Nothing is written: storage already holds every slot's state
    /// (see `cache`).
    fn evict_over_budget(&self, keep: &UserId) {
        let Some((mut excess, _pass)) = self.cache.over_budget() else {
            return;
        };
        let mut by_age: Vec<(u64, UserId)> = self
            .users
            .read()
            .iter()
            .filter(|(user, _)| *user != keep)
            .map(|(user, slot)| (cache::Cache::last_used(&slot.cache), user.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(age, _)| *age);
        let mut dropped = Vec::new();
        {
            let mut users = self.users.write();
            for (_, user) in by_age {
                if excess == 0 {
                    break;
                }
                // Only the map holds it, and the write lock stops anyone
                // from taking it now: no request can be using this slot.
                let idle = users.get(&user).is_some_and(|s| Arc::strong_count(s) == 1);
                if idle && let Some(slot) = users.remove(&user) {
                    excess = excess.saturating_sub(self.cache.discharge(&slot.cache));
                    dropped.push(slot);
                }
            }
        }
        self.cache.pass_done(!dropped.is_empty());
        // Freeing big maps takes a while; not under the map lock.
        drop(dropped);
    }

    /// Model cache and group commit counters, for the periodic stats line.
    pub fn stats(&self) -> EngineStats {
        let users = self.users.read().len();
        EngineStats {
            cache: self.cache.stats(users),
            commit: self.store.commit_stats(),
            decisions: self.decisions.stats(),
            quota: self.quota.stats(),
            delivered: self.delivered.stats(),
        }
    }

    /// Runs `f` under the user's writer lock, on the slot that is the
    /// user's now (created if need be): one retired by
    /// [`Engine::delete_user`] while the caller waited is fetched again.
    fn with_writer<T>(
        &self,
        user: &UserId,
        f: impl FnOnce(&UserSlot, &mut WriterState) -> Result<T, Error>,
    ) -> Result<T, Error> {
        loop {
            let slot = self.slot_or_new(user)?;
            let mut writer = slot.writer.lock();
            if !writer.retired {
                return f(&slot, &mut writer);
            }
        }
    }

    /// [`Engine::with_writer`] for a user chaff knows; `None` (and `f` not
    /// run) for one with nothing stored.
    fn with_known_writer<T>(
        &self,
        user: &UserId,
        f: impl FnOnce(&UserSlot, &mut WriterState) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        loop {
            let Some(slot) = self.slot(user)? else {
                return Ok(None);
            };
            let mut writer = slot.writer.lock();
            if !writer.retired {
                return f(&slot, &mut writer).map(Some);
            }
        }
    }

    /// Snapshots every user with journal records and flushes: a clean
    /// shutdown leaves nothing to replay at the next start.
    pub fn shutdown(&self) -> Result<(), Error> {
        // First, so what it learns is in the snapshots below.
        self.stop_delivered_learner();
        let slots: Vec<(UserId, Arc<UserSlot>)> = self
            .users
            .read()
            .iter()
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        for (user, slot) in slots {
            let mut writer = slot.writer.lock();
            // A user deleted while we waited for the lock must stay deleted.
            if writer.retired {
                continue;
            }
            if writer.journal_entries > 0 {
                self.checkpoint_locked(&user, &slot, &mut writer)?;
            }
            self.checkpoint_contribution(&Owner::User(user))?;
        }
        {
            let _seed = self.seed.lock();
            self.checkpoint_contribution(&Owner::Operator)?;
        }
        self.decisions.close();
        self.store.flush()?;
        // What a later open checks sled's recovery against.
        if let Some(sled) = self.store.sled() {
            sled.seal_generation()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cache;
#[cfg(test)]
mod tests_delivered;
#[cfg(test)]
mod tests_quota;

#[cfg(test)]
mod shared_tests;

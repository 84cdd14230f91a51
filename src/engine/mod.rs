//! The use cases: score a message, learn a click, undo a click, describe a
//! user. Plain Rust over the tokenizer, classifier and store; the gRPC layer
//! and the CLI are thin adapters over this.
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

mod cache;
mod delivery;
mod shared;

pub use cache::{BYTES_PER_TOKEN, CacheStats, DEFAULT_MODEL_MEMORY, model_bytes, parse_bytes};
pub use delivery::{
    DEFAULT_FIND_LIMIT, DecisionQuery, Envelope, Evaluated, ListRef, MAX_FIND_LIMIT, TOP_FEATURES,
};
pub use shared::{ScoreViews, Seeded, SharedSummary};

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use rustc_hash::FxHashMap;
use tracing::warn;

use crate::classify::{self, Cutoffs, Model, Params, SharedModel, Weight};
use crate::decisions::{DecisionLog, Retention};
use crate::error::Error;
use crate::mail::sender::{HeaderFacts, Unsubscribe};
use crate::policy::{List, ListKind, UserSettings};
use crate::store::{CommitStats, LedgerEntry, LoadedModel, Op, Snapshot, Store, checkpoint_due};
use crate::tokenize::{LimitHit, TOKENIZER_VERSION, Tokenizer, Tokens};
use crate::types::{Label, MessageId, Owner, UserId, Verdict};

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
    /// What "now" is for the undo window: the system clock, or a test's.
    pub clock: crate::store::Clock,
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
            clock: crate::store::Clock::system(),
        }
    }
}

/// A scored message.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub probability: f64,
    /// `logit(probability)` without rounding at the extremes; for ranking.
    pub log_odds: f64,
    pub verdict: Verdict,
    pub tokens_known: u32,
    pub tokens_used: u32,
    pub limits_hit: Vec<LimitHit>,
    /// How much of the decision came from the user's own statistics, in
    /// `[0, 1]`; the rest (`1 − user_share`) came from the shared model
    /// (see `classify::blend`). 1 when the shared model took no part.
    pub user_share: f64,
}

/// What a Train call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOutcome {
    Learned,
    /// Same message, same label: nothing changed.
    AlreadyLearned,
    /// Was learned with the other label and moved.
    Relearned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trained {
    pub outcome: TrainOutcome,
    pub message_id: MessageId,
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// The click was spam on an authenticated trusted sender's mail: it
    /// was recorded at [`Weight::LOW`], so it moved the model little.
    pub low_effect: bool,
    /// The message's unsubscribe target, when the click was low-effect:
    /// the caller should offer the user *Unsubscribe* instead.
    pub unsubscribe: Option<Unsubscribe>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    pub label: Label,
    pub spam_learned: u64,
    pub ham_learned: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub spam_learned: u64,
    pub ham_learned: u64,
    pub tokens: u64,
    pub tokenizer_version: u32,
}

/// A message read once (tokens, the header facts policy needs, the id a
/// click without one gets), for scoring and learning it without reading it
/// again: [`Engine::read`].
#[derive(Clone, Debug)]
pub struct ReadMessage {
    tokens: Tokens,
    headers: HeaderFacts,
    derived_id: MessageId,
}

/// Counters for operators (see [`Engine::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub cache: CacheStats,
    pub commit: CommitStats,
    pub decisions: crate::decisions::DecisionStats,
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
    store: Store,
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
}

/// A contribution's journal position (as [`WriterState`] for models).
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    last_seq: u64,
    journal_entries: u64,
}

impl Engine {
    /// The engine over an open store: loads the operator's lists and starts
    /// the decision log writer.
    pub fn new(store: Store, settings: Settings) -> Result<Self, Error> {
        let load = |kind| -> Result<List, Error> {
            Ok(List::from_entries(
                store.list_entries(&Owner::Operator, kind)?,
            ))
        };
        let operator = OperatorLists {
            allow: load(ListKind::Allow)?,
            block: load(ListKind::Block)?,
            trusted: load(ListKind::Trusted)?,
        };
        let (shared, positions) = shared::load(&store)?;
        let seed = store.seed_id()?.unwrap_or(0);
        store.set_undo_window(settings.undo_window, settings.clock.clone());
        let decisions = DecisionLog::start(store.clone(), settings.retention.clone());
        Ok(Self {
            store,
            cache: cache::Cache::new(settings.model_memory),
            settings,
            users: RwLock::new(FxHashMap::default()),
            operator: RwLock::new(operator),
            decisions,
            shared: RwLock::new(shared),
            positions: Mutex::new(positions),
            seed: Mutex::new(seed),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The storage this engine runs on (the service reopens it after a
    /// storage failure; see `service`).
    pub fn store(&self) -> &Store {
        &self.store
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

    /// The cutoffs the verdicts of the user in `slot` are read against
    /// (the defaults' for a user with no slot): the one rule for every
    /// scoring entry point, so in-process replays and the Score RPC agree.
    fn cutoffs(&self, slot: Option<&UserSlot>) -> Cutoffs {
        let ham = self.settings.params.ham_cutoff;
        match slot {
            Some(slot) => slot.policy.read().settings.cutoffs(ham),
            None => Cutoffs {
                ham,
                spam: self.settings.params.spam_cutoff,
            },
        }
    }

    fn check_size(&self, message: &[u8]) -> Result<(), Error> {
        let limit = self.settings.max_message_bytes;
        if message.len() > limit {
            return Err(Error::MessageTooLarge {
                size: message.len(),
                limit,
            });
        }
        Ok(())
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
        let loaded = self.store.load_model(user)?;
        let policy = self.load_policy(user)?;
        if loaded.is_none() && policy.is_none() {
            return Ok(None);
        }
        Ok(Some(self.install_slot(user, loaded, policy)))
    }

    /// [`Engine::load_slot`], with an empty model and default policy for
    /// what is not stored.
    fn load_or_new_slot(&self, user: &UserId) -> Result<Arc<UserSlot>, Error> {
        let loaded = self.store.load_model(user)?;
        let policy = self.load_policy(user)?;
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
                %user,
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
        let mut f = Some(f);
        loop {
            let slot = self.slot_or_new(user)?;
            let mut writer = slot.writer.lock();
            if writer.retired {
                continue;
            }
            let f = f.take().expect("runs once");
            return f(&slot, &mut writer);
        }
    }

    /// [`Engine::with_writer`] for a user chaff knows; `None` (and `f` not
    /// run) for one with nothing stored.
    fn with_known_writer<T>(
        &self,
        user: &UserId,
        f: impl FnOnce(&UserSlot, &mut WriterState) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let mut f = Some(f);
        loop {
            let Some(slot) = self.slot(user)? else {
                return Ok(None);
            };
            let mut writer = slot.writer.lock();
            if writer.retired {
                continue;
            }
            let f = f.take().expect("runs once");
            return f(&slot, &mut writer).map(Some);
        }
    }

    /// Scores a message for its recipient: the user's model blended with
    /// the shared model (`classify::blend`). Never fails on the message's
    /// content; only on size and storage.
    pub fn score(&self, user: &UserId, message: &[u8]) -> Result<Scored, Error> {
        // Tokens only: the header facts and derived id of a full read are
        // for learning.
        self.check_size(message)?;
        self.score_tokens(user, self.settings.tokenizer.tokenize(message))
    }

    /// Reads a message once for [`Engine::score_read`] and
    /// [`Engine::train_read`]: what a replay that scores and then learns
    /// each message needs, without tokenizing it twice. Needs no user and
    /// takes no lock, so many messages can be read in parallel.
    pub fn read(&self, message: &[u8]) -> Result<ReadMessage, Error> {
        self.check_size(message)?;
        let tokenizer = &self.settings.tokenizer;
        let max_header_bytes = tokenizer.limits().max_header_bytes;
        let (tokens, (headers, derived_id)) = tokenizer.tokenize_with(message, |parsed| {
            (
                HeaderFacts::read(message, parsed, max_header_bytes),
                derive_message_id_from(message, parsed),
            )
        });
        Ok(ReadMessage {
            tokens,
            headers,
            derived_id,
        })
    }

    /// [`Engine::score`] of a message already read.
    pub fn score_read(&self, user: &UserId, message: &ReadMessage) -> Result<Scored, Error> {
        self.score_tokens(user, message.tokens.clone())
    }

    fn score_tokens(&self, user: &UserId, tokens: Tokens) -> Result<Scored, Error> {
        let slot = self.slot(user)?;
        let out = self.blend(user, slot.as_deref(), &tokens.ids, None);
        let cutoffs = self.cutoffs(slot.as_deref());
        Ok(scored(out.blended, cutoffs, tokens.limits_hit))
    }

    /// Scores many messages in parallel (rayon's pool, one task per
    /// message); results in input order. On failure, the index of a failed
    /// item and its error.
    pub fn score_batch(&self, items: &[(UserId, Vec<u8>)]) -> Result<Vec<Scored>, (usize, Error)> {
        use rayon::prelude::*;
        items
            .par_iter()
            .enumerate()
            .map(|(i, (user, message))| self.score(user, message).map_err(|e| (i, e)))
            .collect()
    }

    /// [`Engine::evaluate`] for many messages in parallel, like
    /// [`Engine::score_batch`].
    pub fn evaluate_batch(
        &self,
        items: &[(UserId, Vec<u8>, Envelope)],
    ) -> Result<Vec<Evaluated>, (usize, Error)> {
        use rayon::prelude::*;
        items
            .par_iter()
            .enumerate()
            .map(|(i, (user, message, env))| self.evaluate(user, message, env).map_err(|e| (i, e)))
            .collect()
    }

    /// Learns a click. `message_id` is the caller's; when `None`, one is
    /// derived from the message (see [`derive_message_id`]). Returns once the
    /// change is on disk.
    pub fn train(
        &self,
        user: &UserId,
        message: &[u8],
        label: Label,
        message_id: Option<MessageId>,
    ) -> Result<Trained, Error> {
        // Read before taking any lock: tokenizing is the expensive part.
        self.train_read(user, &self.read(message)?, label, message_id)
    }

    /// [`Engine::train`] of a message already read.
    pub fn train_read(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
    ) -> Result<Trained, Error> {
        self.train_scored(user, message, label, message_id, None)
    }

    /// The online replay step (TREC's immediate feedback) for a message
    /// already read: scores it for `user` as [`Engine::score_read`] does,
    /// then, if `learn` says so given that score, learns it as `label` as
    /// [`Engine::train_read`] does. The same outcome as the two calls; but
    /// when nothing shared took part in the score, the learn weight
    /// (`classify::learn_weight`, which scores with the user's model alone)
    /// comes from that score instead of scoring the message a second time —
    /// the largest cost of a replay's learning after storage.
    pub fn score_then_train(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
        learn: impl FnOnce(&Scored) -> bool,
    ) -> Result<(Scored, Option<Trained>), Error> {
        let slot = self.slot(user)?;
        let out = self.blend(user, slot.as_deref(), &message.tokens.ids, None);
        let cutoffs = self.cutoffs(slot.as_deref());
        drop(slot);
        let own_log_odds = out.user_alone.then_some(out.blended.score.log_odds);
        let scored = scored(out.blended, cutoffs, message.tokens.limits_hit.clone());
        if !learn(&scored) {
            return Ok((scored, None));
        }
        let trained = self.train_scored(user, message, label, message_id, own_log_odds)?;
        Ok((scored, Some(trained)))
    }

    /// [`Engine::train_read`], with the user's own log-odds for the message
    /// if the caller just computed them (see [`Engine::score_then_train`]).
    fn train_scored(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
        own_log_odds: Option<f64>,
    ) -> Result<Trained, Error> {
        let message_id = message_id.unwrap_or_else(|| message.derived_id.clone());
        let ids = &message.tokens.ids;
        let headers = &message.headers;
        let slot = self.slot_or_new(user)?;
        let trusted = label == Label::Spam && self.is_trusted(&slot, headers);
        // How much the click teaches: low for a trusted sender (policy),
        // else judged by the user's model as it stands (a relearn is judged
        // with the old label still counted, so a correction weighs fully).
        let weight = if trusted {
            Weight::LOW
        } else if let Some(log_odds) = own_log_odds {
            classify::learn_weight_for(log_odds, label, &self.settings.params)
        } else {
            classify::learn_weight(&slot.model.read(), ids, label, &self.settings.params)
        };
        drop(slot);
        let trained = self.with_writer(user, |slot, writer| {
            // Read under the writer lock, which consent changes also take.
            let consent = slot.policy.read().consent;
            let previous = match self.store.ledger_get(user, &message_id) {
                // Too old to undo, but learned as this very label: clicking
                // twice stays harmless.
                Err(Error::BeyondUndoWindow { label: old, .. }) if old == label => {
                    let model = slot.model.read();
                    return Ok(Trained {
                        outcome: TrainOutcome::AlreadyLearned,
                        message_id: message_id.clone(),
                        spam_learned: model.spam_learned(),
                        ham_learned: model.ham_learned(),
                        low_effect: false,
                        unsubscribe: None,
                    });
                }
                other => other?,
            };
            let (outcome, ops, mut shared_ops) = match previous {
                Some(prev) if prev.label == label => {
                    let model = slot.model.read();
                    let low_effect = prev.weight == Weight::LOW;
                    return Ok(Trained {
                        outcome: TrainOutcome::AlreadyLearned,
                        message_id: message_id.clone(),
                        spam_learned: model.spam_learned(),
                        ham_learned: model.ham_learned(),
                        low_effect,
                        unsubscribe: headers.unsubscribe.clone().filter(|_| low_effect),
                    });
                }
                // Unlearn what the ledger says was learned (not what this
                // request's bytes tokenize to), so the move is exact even if
                // the caller sends a different rendering of the message.
                Some(prev) => {
                    let shared_ops = undo_shared(&prev, consent);
                    let mut ops = undo(prev);
                    ops.push(Op::Learn(label, weight, ids.clone()));
                    (TrainOutcome::Relearned, ops, shared_ops)
                }
                None => (
                    TrainOutcome::Learned,
                    vec![Op::Learn(label, weight, ids.clone())],
                    Vec::new(),
                ),
            };
            if consent != 0 {
                shared_ops.push(Op::Learn(label, weight, ids.clone()));
            }
            let entry = LedgerEntry {
                label,
                tokenizer_version: TOKENIZER_VERSION,
                tokens: ids.clone(),
                weight,
                shared: consent,
            };
            self.commit(
                user,
                slot,
                writer,
                &message_id,
                Some(&entry),
                &ops,
                &shared_ops,
            )?;
            let model = slot.model.read();
            Ok(Trained {
                outcome,
                message_id: message_id.clone(),
                spam_learned: model.spam_learned(),
                ham_learned: model.ham_learned(),
                low_effect: trusted,
                unsubscribe: headers.unsubscribe.clone().filter(|_| trusted),
            })
        });
        // Outside the writer lock, so the user's next click can write while
        // this one waits; whatever the reply reports (even ALREADY_LEARNED,
        // which may rest on another click's write) is durable first.
        self.store.flush()?;
        // The click may have grown the model past the budget.
        self.evict_over_budget(user);
        trained
    }

    /// Undoes an earlier learn exactly, from the ledger alone.
    pub fn forget(&self, user: &UserId, message_id: &MessageId) -> Result<Forgotten, Error> {
        let not_learned = || Error::NotLearned {
            user: user.to_string(),
            message_id: message_id.to_string(),
        };
        let forgotten = self.with_known_writer(user, |slot, writer| {
            let prev = self
                .store
                .ledger_get(user, message_id)?
                .ok_or_else(not_learned)?;
            let label = prev.label;
            let consent = slot.policy.read().consent;
            let shared_ops = undo_shared(&prev, consent);
            let ops = undo(prev);
            self.commit(user, slot, writer, message_id, None, &ops, &shared_ops)?;
            let model = slot.model.read();
            Ok(Forgotten {
                label,
                spam_learned: model.spam_learned(),
                ham_learned: model.ham_learned(),
            })
        });
        // As in `train`: outside the writer lock, and also before NOT_FOUND
        // (the entry may be gone by another click's unflushed Forget).
        self.store.flush()?;
        forgotten?.ok_or_else(not_learned)
    }

    /// Writes a click, applies it in memory, then snapshots the model if
    /// enough clicks have accumulated. The caller holds the user's writer
    /// lock, and flushes ([`Store::flush`]) after releasing it, before
    /// replying.
    ///
    /// The memory model follows sled's logical state, not its durable state:
    /// once the batch is applied the ledger says "learned", so the model must
    /// count it too, even if the flush then fails — otherwise a retried click
    /// would answer ALREADY_LEARNED against a model that never counted it.
    /// Only the reply waits for the flush. `shared_ops` change the user's
    /// part of the shared model, in the same batch.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        message_id: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        let seq = self
            .store
            .record_click(&who, message_id, entry, ops, shared_ops)?;
        {
            let mut model = slot.model.write();
            for op in ops {
                op.apply(&mut model);
            }
        }
        let shared_due = self.apply_shared(&who, shared_ops, seq);
        writer.last_seq = seq;
        // A record with no ops (a Forget of a click from another tokenizer
        // version) still counts, so shutdown folds it like any other.
        let entries = ops.iter().map(Op::entries).sum::<u64>().max(1);
        writer.journal_entries = writer.journal_entries.saturating_add(entries);
        let tokens = slot.model.read().token_count();
        self.cache.charge(&slot.cache, tokens);
        if checkpoint_due(writer.journal_entries, tokens) {
            self.checkpoint_locked(user, slot, writer)?;
        }
        if shared_due {
            self.checkpoint_contribution(&who)?;
        }
        Ok(())
    }

    fn checkpoint_locked(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
    ) -> Result<(), Error> {
        // Encode under the read lock (scoring goes on; our writer lock keeps
        // clicks out), write after releasing it.
        let snapshot = Snapshot::encode(&slot.model.read(), writer.last_seq);
        self.store.write_checkpoint(user, snapshot)?;
        writer.journal_entries = 0;
        Ok(())
    }

    /// Folds ledger entries older than the undo window now (the decision
    /// log's sweep does it hourly): their tokens go, their counts stay.
    /// Returns how many were folded.
    pub fn fold_ledger(&self) -> Result<u64, Error> {
        self.store.fold_ledger()
    }

    /// What chaff knows of a user; zeros for a user it has never trained.
    pub fn user_summary(&self, user: &UserId) -> Result<UserSummary, Error> {
        Ok(match self.slot(user)? {
            Some(slot) => {
                let m = slot.model.read();
                UserSummary {
                    spam_learned: m.spam_learned(),
                    ham_learned: m.ham_learned(),
                    tokens: m.token_count() as u64,
                    tokenizer_version: m.tokenizer_version(),
                }
            }
            None => UserSummary {
                spam_learned: 0,
                ham_learned: 0,
                tokens: 0,
                tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
            },
        })
    }

    /// Snapshots every user with journal records and flushes: a clean
    /// shutdown leaves nothing to replay at the next start.
    pub fn shutdown(&self) -> Result<(), Error> {
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
        self.store.flush()
    }
}

/// The ops that take a ledger entry's contribution out of the current
/// model: none when an older tokenizer produced it (the current model never
/// counted it, see [`Engine::slot`]).
fn undo(prev: LedgerEntry) -> Vec<Op> {
    if prev.tokenizer_version == TOKENIZER_VERSION {
        vec![Op::Unlearn(prev.label, prev.weight, prev.tokens)]
    } else {
        Vec::new()
    }
}

/// The ops that take a ledger entry's click out of its contributor's
/// shared part: none unless it was shared under the consent (or seed) id
/// that is still current — after a revoke the part was cleared whole.
fn undo_shared(prev: &LedgerEntry, current: u64) -> Vec<Op> {
    if prev.shared != 0 && prev.shared == current && prev.tokenizer_version == TOKENIZER_VERSION {
        vec![Op::Unlearn(prev.label, prev.weight, prev.tokens.clone())]
    } else {
        Vec::new()
    }
}

/// A [`Scored`] from a blended score, its verdict read against `cutoffs`
/// (the user's: [`Engine::cutoffs`]).
fn scored(b: classify::Blended, cutoffs: Cutoffs, limits_hit: Vec<LimitHit>) -> Scored {
    Scored {
        probability: b.score.probability,
        log_odds: b.score.log_odds,
        verdict: classify::verdict(b.score.probability, cutoffs),
        tokens_known: b.score.tokens_known,
        tokens_used: b.score.tokens_used,
        limits_hit,
        user_share: b.user_share,
    }
}

/// The id a click is recorded under when the caller gives none: the
/// Message-ID header as `<id>`, else an xxh3-128 digest of the bytes.
pub fn derive_message_id(message: &[u8]) -> MessageId {
    derive_message_id_from(message, None)
}

/// [`derive_message_id`], from the tokenizer's parse of `message` when
/// there is one (`Tokenizer::tokenize_with`), so its header block is not
/// parsed again.
pub fn derive_message_id_from(
    message: &[u8],
    parsed: Option<&mail_parser::Message<'_>>,
) -> MessageId {
    // The tokenizer's parser: the default one parses every Received header
    // into a structure, a large share of reading a header block.
    let parse_now;
    let headers = match parsed {
        Some(m) => Some(m),
        None => {
            parse_now = crate::tokenize::message_parser().parse_headers(message);
            parse_now.as_ref()
        }
    };
    let from_header = headers
        .and_then(|m| m.message_id().map(|id| format!("<{}>", id.trim())))
        .and_then(|id| MessageId::new(id).ok());
    from_header.unwrap_or_else(|| {
        let digest = xxhash_rust::xxh3::xxh3_128(message);
        MessageId::new(format!("xxh3:{digest:032x}")).expect("a digest is a valid id")
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cache;

#[cfg(test)]
mod shared_tests;

//! The Redis Cluster store behind the storage interface
//! ([`Backend`] + [`SharedClicks`]): what `chaff serve --store redis://…`
//! runs on.
//!
//! It holds user models and clicks (train, relearn, Forget, delivered
//! mail, the per-Score refresh, checkpoints), settings and lists (fresh on
//! every replica through the same per-Score round trip), the decision log,
//! the shared model with consent (polled: [`SHARED_POLL`]), and users
//! (DeleteUser, ListUsers), the operator's seed, export and import, and
//! the backup into a new sled data directory (`backup.rs`).
//!
//! The interface is synchronous (`store::backend` says why); redis-rs is
//! async. The backend owns a small tokio runtime (one worker thread, which
//! drives the cluster connections) and blocks on it with
//! `Handle::block_on` from the calling thread: the engine's callers run on
//! tokio's blocking pool or plain threads. Called from a runtime worker,
//! tokio refuses with a panic ("Cannot start a runtime from within a
//! runtime") — the assertion that storage never stalls an async worker.
//! Owning the runtime also lets tests and tools without one use the store.

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::Value;

use super::policy::parse_policy;
use super::{
    Keys, RedisConfig, RedisStore, SharedHeld, apply_records, array, bytes, corrupt, int,
    record_ops,
};
use crate::classify::{Model, SharedModel, Weight};
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::store::backend::{
    Aggregate, Backend, Clicked, ModelChanges, PartChange, SharedClicks, SharedUpdate,
    StoredPolicy, UserChanges,
};
use crate::store::codec;
use crate::store::export::UserExport;
use crate::store::{LedgerEntry, LoadedModel, Op, Snapshot, StorageError, Store};
use crate::tokenize::TokenId;
use crate::types::{MessageId, Owner, UserId};

const NAME: &str = "redis";

/// How often a replica asks the cluster what changed in the shared model
/// and the operator's lists (at most; a Score triggers it, never waits for
/// another thread's poll). A sharing click or a revoke through this
/// replica polls at once; through another replica it reaches this one's
/// scores within about this long. Every Score polling would double its
/// round trips for a model that changes with a few sharing users' clicks.
pub const SHARED_POLL: Duration = Duration::from_millis(100);

/// A Redis Cluster as the engine's store.
pub struct RedisBackend {
    store: RedisStore,
    /// `None` only while being dropped (shut down without blocking, so the
    /// backend may be dropped anywhere, also inside an async task).
    runtime: Option<tokio::runtime::Runtime>,
    /// Where this process's copy of the shared model and of the operator's
    /// lists stands ([`SharedClicks::shared_update`]).
    poll: Mutex<Poll>,
}

/// What [`RedisBackend`] knows of the shared model and the operator's
/// lists the engine holds.
#[derive(Default)]
struct Poll {
    shared: SharedHeld,
    operator_version: u64,
    last: Option<Instant>,
}

impl RedisBackend {
    /// Connects to the cluster (bounded by the config's timeouts). Blocks:
    /// call it off the async runtime (`spawn_blocking`).
    pub fn connect(config: RedisConfig) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaff-redis")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(StorageError::from(sled::Error::Io(e))))?;
        let store = runtime.block_on(RedisStore::connect(config))?;
        // The cluster's shape, before anything is served from it
        // (`topology.rs`): refused when chaff cannot work on it, a warning
        // for primaries short of replicas (their clicks wait in vain).
        for warning in runtime.block_on(store.check_shape())? {
            tracing::warn!("redis cluster: {warning}");
        }
        Ok(Self {
            store,
            runtime: Some(runtime),
            poll: Mutex::new(Poll::default()),
        })
    }

    /// This backend with the decision log on a Redis Cluster of its own
    /// (`chaff serve --decision-store redis://…`), reached through `nodes`
    /// with this backend's timeouts and `--redis-replicas` (for
    /// DeleteUser's `WAIT`): see [`RedisStore::with_decision_store`].
    /// Connecting is bounded as for the click cluster; a decision cluster
    /// that does not answer here is an error (a misconfigured address is
    /// caught at start). Once connected, a decision cluster that is down
    /// fails no Score: decisions are written by the decision log's
    /// background writer, which drops and logs what it cannot write.
    /// Blocks: call it off the async runtime.
    pub fn with_decision_store(mut self, nodes: Vec<String>) -> Result<Self, Error> {
        let config = RedisConfig {
            nodes,
            ..self.store.config().clone()
        };
        let log = self.block_on(RedisStore::connect(config))?;
        self.store = self.store.clone().with_decision_store(log);
        Ok(self)
    }

    /// The async store underneath (figures, tests).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Runs `fut` to completion on the backend's runtime, blocking this
    /// thread (never a runtime worker's: tokio panics there).
    fn block_on<T>(&self, fut: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the backend is dropped")
            .handle()
            .block_on(fut)
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RedisStore {
    /// What changed in the user's model since `version`, in one round trip
    /// (`read.lua`), as ops for a held model to apply (or a model to
    /// replace it with).
    pub async fn changes_since(&self, user: &UserId, version: u64) -> Result<ModelChanges, Error> {
        Ok(self.changes(user, version, None).await?.model)
    }

    /// [`RedisStore::changes_since`], and with `policy_version` the user's
    /// settings and lists when their version differs, in the same round
    /// trip.
    pub async fn changes(
        &self,
        user: &UserId,
        version: u64,
        policy_version: Option<u64>,
    ) -> Result<UserChanges, Error> {
        let keys = Keys::of(user);
        let reply: Value = self
            .bounded("a model read", async {
                let mut call = self.scripts.read.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .arg(version);
                if let Some(held) = policy_version {
                    call.key(&keys.policy).arg(held);
                }
                self.invoke(super::READ, &call).await
            })
            .await?;
        let parts = array(&reply, "model read reply")?;
        let part = |i: usize| parts.get(i).ok_or_else(|| corrupt("model read reply"));
        let now = int(part(0)?, "version")?;
        let model = match int(part(1)?, "read mode")? {
            0 => ModelChanges::Fresh,
            1 => {
                let mut ops = Vec::new();
                let mut entries = 0u64;
                for record in array(part(3)?, "journal records")? {
                    let these = record_ops(record)?;
                    entries += these.iter().map(Op::entries).sum::<u64>().max(1);
                    ops.extend(these);
                }
                ModelChanges::Records {
                    ops,
                    version: now,
                    entries,
                }
            }
            2 => {
                let snapshot = bytes(part(2)?, "snapshot")?;
                let mut model = if snapshot.is_empty() {
                    Model::default()
                } else {
                    codec::decode_snapshot(snapshot)?.0
                };
                let entries = apply_records(&mut model, array(part(3)?, "journal records")?)?;
                ModelChanges::Reload(LoadedModel {
                    model,
                    last_seq: now,
                    journal_entries: entries,
                })
            }
            _ => return Err(corrupt("read mode")),
        };
        let policy = match (policy_version, parts.get(5)) {
            (Some(_), Some(fields)) => {
                let mut policy = parse_policy(array(fields, "policy hash")?)?;
                // The version read in the same step, also for a hash that
                // is gone (0).
                policy.version = int(part(4)?, "policy version")?;
                Some(policy)
            }
            _ => None,
        };
        Ok(UserChanges { model, policy })
    }
}

impl RedisBackend {
    /// Polls the shared model's parts and the operator's lists (see
    /// [`SharedClicks::shared_update`]), applies the parts' changes to
    /// `copy`, then folds the journals of the parts that are due from it;
    /// the caller holds `poll`.
    fn poll_locked(
        &self,
        poll: &mut Poll,
        copy: &RwLock<SharedModel>,
    ) -> Result<SharedUpdate, Error> {
        let changes = self
            .block_on(self.store.shared_changes(&mut poll.shared))?
            .unwrap_or_default();
        let parts = changes.len();
        let changed: Vec<Owner> = changes
            .iter()
            .filter_map(|change| match change {
                PartChange::Apply { who, .. } | PartChange::Replace { who, .. } => {
                    Some(who.clone())
                }
                PartChange::Remove { .. } => None,
            })
            .collect();
        if parts > 0 {
            let mut shared = copy.write();
            for change in changes {
                change.apply_to(&mut shared);
            }
        }
        // A fold that fails costs nothing but a longer journal: the poll
        // (and the Score that made it) goes on; the part's next change
        // tries again.
        if let Err(e) = self.fold_due_parts(poll, copy, &changed) {
            tracing::warn!(error = %e, "shared model: folding a part's journal failed");
        }
        let version = self.block_on(self.store.policy_version(&Owner::Operator))?;
        let operator = if version != poll.operator_version {
            let policy = self.block_on(self.store.policy(&Owner::Operator))?;
            poll.operator_version = policy.version;
            Some(policy)
        } else {
            None
        };
        poll.last = Some(Instant::now());
        Ok(SharedUpdate { parts, operator })
    }

    /// Folds every part of `changed` whose journal has grown past
    /// `checkpoint_due` (the entries applied since its snapshot against
    /// its size in `copy`), from `copy`, which holds it at exactly the
    /// version `poll` records. Any replica may fold a part (the script
    /// refuses a version not newer than the snapshot there); a part the
    /// copy pruned to the shared cap is stored pruned, as on sled.
    fn fold_due_parts(
        &self,
        poll: &mut Poll,
        copy: &RwLock<SharedModel>,
        changed: &[Owner],
    ) -> Result<(), Error> {
        let due = {
            let shared = copy.read();
            poll.shared.due(changed, |who| {
                shared.contribution(who).map_or(0, Model::token_count)
            })
        };
        for who in due {
            // Copied under the read lock, encoded after it.
            let Some(part) = copy.read().contribution(&who).cloned() else {
                continue;
            };
            self.block_on(
                self.store
                    .checkpoint_held_part(&mut poll.shared, &who, &part),
            )?;
        }
        Ok(())
    }
}

impl SharedClicks for RedisBackend {
    fn train(
        &self,
        user: &UserId,
        msg: &MessageId,
        derived: Option<&MessageId>,
        entry: &LedgerEntry,
    ) -> Result<Clicked, Error> {
        self.block_on(self.store.train_click(user, msg, derived, entry))
    }
    fn learn_delivered(
        &self,
        user: &UserId,
        msg: &MessageId,
        tokens: &[TokenId],
        ceiling: Weight,
    ) -> Result<Option<Weight>, Error> {
        self.block_on(self.store.learn_delivered(user, msg, tokens, ceiling))
    }
    fn changes_with_policy(
        &self,
        user: &UserId,
        version: u64,
        policy_version: u64,
    ) -> Result<UserChanges, Error> {
        self.block_on(self.store.changes(user, version, Some(policy_version)))
    }
    fn seed(&self, msg: &MessageId, entry: &LedgerEntry) -> Result<Clicked, Error> {
        self.block_on(self.store.seed(msg, entry))
    }
    fn policy(&self, user: &UserId) -> Result<StoredPolicy, Error> {
        self.block_on(self.store.policy(&Owner::User(user.clone())))
    }
    fn shared_update(
        &self,
        force: bool,
        copy: &RwLock<SharedModel>,
    ) -> Result<Option<SharedUpdate>, Error> {
        let mut poll = if force {
            self.poll.lock()
        } else {
            // Never wait for another thread's poll: a Score goes on with
            // the copy it has.
            let Some(poll) = self.poll.try_lock() else {
                return Ok(None);
            };
            if poll.last.is_some_and(|t| t.elapsed() < SHARED_POLL) {
                return Ok(None);
            }
            poll
        };
        self.poll_locked(&mut poll, copy).map(Some)
    }
    fn prune(&self, user: &UserId, model: &Model, version: u64) -> Result<Option<u64>, Error> {
        self.block_on(self.store.prune(user, model, version))
    }
    fn forget(&self, user: &UserId, msg: &MessageId) -> Result<Clicked, Error> {
        self.block_on(self.store.forget(user, msg))
    }
    fn changes_since(&self, user: &UserId, version: u64) -> Result<ModelChanges, Error> {
        self.block_on(self.store.changes_since(user, version))
    }
    fn checkpoint(&self, user: &UserId, model: &Model, version: u64) -> Result<bool, Error> {
        self.block_on(self.store.checkpoint(user, model, version))
    }
    fn ping(&self) -> Result<(), Error> {
        self.block_on(self.store.ping())
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }
    fn holds(&self, _what: Aggregate) -> bool {
        true
    }
    /// A logical copy, user by user, each read consistently by the store
    /// (`backup.rs`); sled writes happen on this (blocking) thread.
    fn backup_into(&self, dest: &Store) -> Result<(u64, u64), Error> {
        self.block_on(self.store.backup_into(dest))
    }
    fn shared_clicks(&self) -> Option<&dyn SharedClicks> {
        Some(self)
    }
    fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        Ok(match self.changes_since(user, 0)? {
            ModelChanges::Fresh => None,
            ModelChanges::Reload(loaded) => Some(loaded),
            ModelChanges::Records {
                ops,
                version,
                entries,
            } => {
                let mut model = Model::default();
                for op in &ops {
                    op.apply(&mut model);
                }
                Some(LoadedModel {
                    model,
                    last_seq: version,
                    journal_entries: entries,
                })
            }
        })
    }
    fn ledger_contains(&self, user: &UserId, msg: &MessageId) -> Result<bool, Error> {
        Ok(self.block_on(self.store.ledger_get(user, msg))?.is_some())
    }
    /// Every user's entries past their windows, folded (clicks) or
    /// dropped (delivered mail): a scan of every primary for the users'
    /// time indexes (`RedisStore::fold_ledgers`). Each click also folds a
    /// few of its own user's in passing.
    fn fold_ledger(&self) -> Result<u64, Error> {
        self.block_on(self.store.fold_ledgers())
    }
    fn set_undo_window(&self, window: std::time::Duration, clock: crate::store::Clock) {
        self.store.set_undo_window(window, clock);
    }
    fn set_delivered_undo_window(&self, window: std::time::Duration) {
        self.store.set_delivered_undo_window(window);
    }
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        match who {
            Owner::User(user) => self.block_on(self.store.ledger_get(user, msg)),
            Owner::Operator => self.block_on(self.store.seed_ledger_get(msg)),
        }
    }
    /// Never called by the engine on this store: clicks go through
    /// [`SharedClicks`], which checks the ledger atomically.
    fn record_click(
        &self,
        _who: &Owner,
        _msg: &MessageId,
        _entry: Option<&LedgerEntry>,
        _ops: &[Op],
        _shared_ops: &[Op],
    ) -> Result<u64, Error> {
        Err(Error::NotOnStore {
            store: NAME,
            what: "a click decided outside the store",
        })
    }
    /// Never called by the engine on this store: see
    /// [`SharedClicks::checkpoint`].
    fn write_checkpoint(&self, _user: &UserId, _snapshot: Snapshot) -> Result<(), Error> {
        Err(Error::NotOnStore {
            store: NAME,
            what: "a checkpoint without the model's version",
        })
    }
    /// Nothing to do: each click waited for its replicas (`WAIT`) before
    /// it was acknowledged.
    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    fn generate_id(&self) -> Result<u64, Error> {
        self.block_on(self.store.generate_id())
    }
    fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        self.block_on(self.store.user_exists(user))
    }
    /// Everything at once (`delete.lua`), durable (`WAIT`) before it
    /// returns; the rest ([`Backend::finish_delete_user`]) only catches
    /// decisions logged meanwhile.
    fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.block_on(self.store.delete_user(user)).map(drop)
    }
    fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.block_on(self.store.delete_decisions(user))
    }
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        self.block_on(self.store.list_users(prefix, after, limit))
    }
    fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        self.block_on(self.store.last_decision_ms(user))
    }
    fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        self.block_on(self.store.settings(user))
    }
    fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        self.block_on(
            self.store
                .put_settings(user, settings, consent, clear_shared),
        )
    }
    fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        self.block_on(self.store.list_entries(owner, kind))
    }
    fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        self.block_on(self.store.set_list_entry(owner, kind, entry, present))
    }
    fn append_decisions(&self, records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error> {
        self.block_on(
            self.store
                .append_decisions(records.iter().map(|(u, t, j)| (u, *t, j.as_slice()))),
        )
    }
    fn find_decisions(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.block_on(
            self.store
                .find_decisions(user, since_ms, until_ms, limit, |json| {
                    Ok(take(json)?.then_some(()))
                }),
        )
        .map(drop)
    }
    fn trim_decisions(&self, user: &UserId, before_ms: u64, keep: usize) -> Result<usize, Error> {
        self.block_on(self.store.trim_decisions(user, before_ms, keep))
    }
    fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        self.block_on(self.store.users_with_decisions_before(before_ms))
    }
    /// Every part, read from the directory: the engine's copy at start;
    /// [`SharedClicks::shared_update`] continues from there.
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        let mut poll = self.poll.lock();
        let changes = self
            .block_on(self.store.shared_changes(&mut poll.shared))?
            .unwrap_or_default();
        let mut parts: std::collections::HashMap<Owner, Model> = Default::default();
        for change in changes {
            match change {
                PartChange::Apply { who, ops } => {
                    let part = parts.entry(who).or_default();
                    for op in &ops {
                        op.apply(part);
                    }
                }
                PartChange::Replace { who, model } => {
                    parts.insert(who, model);
                }
                PartChange::Remove { who } => {
                    parts.remove(&who);
                }
            }
        }
        Ok(parts
            .into_iter()
            .map(|(who, model)| {
                (
                    who,
                    // Journal entries 0: parts are folded by the store's
                    // readers (`checkpoint_part`), not by the engine.
                    LoadedModel {
                        model,
                        last_seq: 0,
                        journal_entries: 0,
                    },
                )
            })
            .collect())
    }
    /// Nothing to do: the engine holds no journal position for a part on
    /// this store (see [`Backend::load_contributions`]).
    fn checkpoint_contribution(&self, _who: &Owner, _snapshot: Snapshot) -> Result<(), Error> {
        Ok(())
    }
    fn seed_id(&self) -> Result<Option<u64>, Error> {
        self.block_on(self.store.seed_id())
    }
    /// Sets the seed id if there is none (another replica's stays), or
    /// with `clear` drops the whole seed in one step (`seed.lua`).
    fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        self.block_on(self.store.set_seed_id(id, clear)).map(drop)
    }
    /// Nothing left: [`Backend::set_seed_id`] deleted the seed's ledger
    /// in the same step.
    fn finish_seed_clear(&self) -> Result<(), Error> {
        Ok(())
    }
    fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        self.block_on(self.store.read_user_export(user))
    }
    fn write_user_import(&self, user: &UserId, e: &UserExport, consent: u64) -> Result<(), Error> {
        self.block_on(self.store.write_user_import(user, e, consent))
    }
}

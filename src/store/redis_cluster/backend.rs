//! The Redis Cluster store behind the storage interface
//! ([`Backend`] + [`SharedClicks`]): what `chaff serve --store redis://…`
//! runs on.
//!
//! It holds user models and clicks (train, relearn, Forget, the per-Score
//! refresh, checkpoints) and nothing else yet: every other aggregate
//! answers [`Error::NotOnStore`] (FAILED_PRECONDITION), never another
//! store's data.
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

use redis::Value;

use super::{Keys, RedisConfig, RedisStore, apply_records, array, bytes, corrupt, int, record_ops};
use crate::classify::Model;
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::store::backend::{Aggregate, Backend, Clicked, ModelChanges, SharedClicks, not_on};
use crate::store::codec;
use crate::store::export::UserExport;
use crate::store::{LedgerEntry, LoadedModel, Op, Snapshot, StorageError};
use crate::types::{MessageId, Owner, UserId};

const NAME: &str = "redis";

/// A Redis Cluster as the engine's store.
pub struct RedisBackend {
    store: RedisStore,
    /// `None` only while being dropped (shut down without blocking, so the
    /// backend may be dropped anywhere, also inside an async task).
    runtime: Option<tokio::runtime::Runtime>,
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
        Ok(Self {
            store,
            runtime: Some(runtime),
        })
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

    fn not_held<T>(&self, what: Aggregate) -> Result<T, Error> {
        Err(not_on(NAME, what))
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
        let keys = Keys::of(user);
        let reply: Value = self
            .bounded("a model read", async {
                let mut conn = self.conn.clone();
                let mut call = self.scripts.read.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .arg(version);
                Ok(call.invoke_async(&mut conn).await?)
            })
            .await?;
        let parts = array(&reply, "model read reply")?;
        let part = |i: usize| parts.get(i).ok_or_else(|| corrupt("model read reply"));
        let now = int(part(0)?, "version")?;
        match int(part(1)?, "read mode")? {
            0 => Ok(ModelChanges::Fresh),
            1 => {
                let mut ops = Vec::new();
                let mut entries = 0u64;
                for record in array(part(3)?, "journal records")? {
                    let these = record_ops(record)?;
                    entries += these.iter().map(Op::entries).sum::<u64>().max(1);
                    ops.extend(these);
                }
                Ok(ModelChanges::Records {
                    ops,
                    version: now,
                    entries,
                })
            }
            2 => {
                let snapshot = bytes(part(2)?, "snapshot")?;
                let mut model = if snapshot.is_empty() {
                    Model::default()
                } else {
                    codec::decode_snapshot(snapshot)?.0
                };
                let entries = apply_records(&mut model, array(part(3)?, "journal records")?)?;
                Ok(ModelChanges::Reload(LoadedModel {
                    model,
                    last_seq: now,
                    journal_entries: entries,
                }))
            }
            _ => Err(corrupt("read mode")),
        }
    }
}

impl SharedClicks for RedisBackend {
    fn train(&self, user: &UserId, msg: &MessageId, entry: &LedgerEntry) -> Result<Clicked, Error> {
        self.block_on(self.store.train(user, msg, entry))
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
    fn holds(&self, what: Aggregate) -> bool {
        what == Aggregate::Models
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
    /// Nothing to fold: the Redis ledger keeps every click's tokens (no
    /// undo window yet).
    fn fold_ledger(&self) -> Result<u64, Error> {
        Ok(0)
    }
    fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        match who {
            Owner::User(user) => self.block_on(self.store.ledger_get(user, msg)),
            Owner::Operator => self.not_held(Aggregate::Shared),
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
        self.not_held(Aggregate::Policy)
    }
    fn user_exists(&self, _user: &UserId) -> Result<bool, Error> {
        self.not_held(Aggregate::Users)
    }
    fn delete_user(&self, _user: &UserId) -> Result<(), Error> {
        self.not_held(Aggregate::Users)
    }
    fn finish_delete_user(&self, _user: &UserId) -> Result<(), Error> {
        self.not_held(Aggregate::Users)
    }
    fn list_users(
        &self,
        _prefix: &str,
        _after: Option<&UserId>,
        _limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        self.not_held(Aggregate::Users)
    }
    fn last_decision_ms(&self, _user: &UserId) -> Result<Option<u64>, Error> {
        self.not_held(Aggregate::Decisions)
    }
    fn settings(&self, _user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        self.not_held(Aggregate::Policy)
    }
    fn put_settings(
        &self,
        _user: &UserId,
        _settings: &UserSettings,
        _consent: u64,
        _clear_shared: bool,
    ) -> Result<(), Error> {
        self.not_held(Aggregate::Policy)
    }
    fn list_entries(&self, _owner: &Owner, _kind: ListKind) -> Result<Vec<Entry>, Error> {
        self.not_held(Aggregate::Policy)
    }
    fn set_list_entry(
        &self,
        _owner: &Owner,
        _kind: ListKind,
        _entry: &Entry,
        _present: bool,
    ) -> Result<bool, Error> {
        self.not_held(Aggregate::Policy)
    }
    fn append_decisions(&self, _records: &[(UserId, u64, Vec<u8>)]) -> Result<(), Error> {
        self.not_held(Aggregate::Decisions)
    }
    fn find_decisions(
        &self,
        _user: &UserId,
        _since_ms: u64,
        _until_ms: u64,
        _limit: usize,
        _take: &mut dyn FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.not_held(Aggregate::Decisions)
    }
    fn trim_decisions(
        &self,
        _user: &UserId,
        _before_ms: u64,
        _keep: usize,
    ) -> Result<usize, Error> {
        self.not_held(Aggregate::Decisions)
    }
    fn users_with_decisions_before(&self, _before_ms: u64) -> Result<Vec<UserId>, Error> {
        self.not_held(Aggregate::Decisions)
    }
    fn load_contributions(&self) -> Result<Vec<(Owner, LoadedModel)>, Error> {
        self.not_held(Aggregate::Shared)
    }
    fn checkpoint_contribution(&self, _who: &Owner, _snapshot: Snapshot) -> Result<(), Error> {
        self.not_held(Aggregate::Shared)
    }
    fn seed_id(&self) -> Result<Option<u64>, Error> {
        self.not_held(Aggregate::Shared)
    }
    fn set_seed_id(&self, _id: u64, _clear: bool) -> Result<(), Error> {
        self.not_held(Aggregate::Shared)
    }
    fn finish_seed_clear(&self) -> Result<(), Error> {
        self.not_held(Aggregate::Shared)
    }
    fn read_user_export(&self, _user: &UserId) -> Result<UserExport, Error> {
        self.not_held(Aggregate::Export)
    }
    fn write_user_import(
        &self,
        _user: &UserId,
        _e: &UserExport,
        _consent: u64,
    ) -> Result<(), Error> {
        self.not_held(Aggregate::Export)
    }
}

//! A Redis Cluster store for clicks and user models (issue #18,
//! groundwork): what the sled ledger and journal do for one process, on a
//! sharded cluster that several stateless chaff replicas share.
//!
//! The engine runs on it through the storage interface ([`RedisBackend`],
//! `backend.rs`; `chaff serve --store redis://…`); `docs/SCALING.md` says
//! what is built and what is left.
//!
//! # Layout (per user, every key under one hash tag, so one shard)
//!
//! | key              | type   | holds                                              |
//! |------------------|--------|----------------------------------------------------|
//! | `{u:<user>}:m`   | hash   | `v` version (last journal record), `sv` version the snapshot folds, `sl`/`hl` spam/ham learned, `sw`/`hw` weights |
//! | `{u:<user>}:l`   | hash   | message id → ledger value (header + the sled ledger encoding) |
//! | `{u:<user>}:j`   | stream | one record per click, id `<version>-0`: `k` kind, `u` the ledger value unlearned, `l` the one learned |
//! | `{u:<user>}:s`   | string | the model snapshot (the sled snapshot encoding) at version `sv` |
//!
//! `<user>` is the id with `%`, `{` and `}` percent-escaped, so the tag is
//! the whole id and no two users' keys meet. A ledger value starts with a
//! fixed 9-byte header (label byte, weight u32 BE, tokenizer version u32
//! BE) that the click script reads; Lua numbers are doubles, so the script
//! never touches 64-bit token ids — it moves whole ledger values into the
//! journal and the reader decodes them in Rust.
//!
//! # Why this shape
//!
//! - A click is one Lua script (`click.lua`, run with EVALSHA; redis-rs
//!   loads it on every primary on NOSCRIPT, so new shards and promoted
//!   replicas get it): ledger check, counts, journal append, atomically on
//!   the user's shard. Its cost does not grow with the model, and no token
//!   is a key of its own (Stalwart's per-token round trips; Rspamd's
//!   per-token hashes, ≈ 101 bytes a token).
//! - Reading a model is one round trip whatever changed (`read.lua`): the
//!   journal records past the version a reader holds, or the snapshot plus
//!   the records after it; an up-to-date reader gets an empty reply. Never
//!   one request per token.
//! - Durability: after every click (also ALREADY_LEARNED and NOT_FOUND,
//!   which may rest on another client's click), `WAIT <replicas> <ms>` is
//!   sent to the primary of the user's slot only (redis-rs would send a
//!   keyless `WAIT` to every primary). WAIT counts the writes sent on the
//!   same connection, and redis-rs multiplexes one connection per node, so
//!   it covers this click. A click not confirmed in time is an error
//!   (UNAVAILABLE); a retry is safe, the ledger answers ALREADY_LEARNED.
//! - Every operation is bounded in time (`RedisConfig::op_timeout`):
//!   redis-rs can hang on start-up connect and stall while reconnecting.
//!
//! The shared model, lists, settings and the decision log are not here
//! yet; ledger values keep the `shared` id so that nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, Slot,
    SlotAddr,
};
use redis::{Script, Value};

mod backend;

pub use super::backend::{ClickOutcome, Clicked};
pub use backend::RedisBackend;

use super::StorageError;
use super::codec::{self, LedgerEntry, Op};
use crate::classify::{Model, Weight};
use crate::error::Error;
use crate::tokenize::TOKENIZER_VERSION;
use crate::types::{Label, MessageId, UserId};

/// How to reach the cluster and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Seed nodes (`redis://host:port`). Give all of them: with a single
    /// seed, redis-rs has been seen to take minutes to notice a failover
    /// (redis-rs#1005).
    pub nodes: Vec<String>,
    /// Replicas that must confirm a click (`WAIT`) before it is
    /// acknowledged; 0 skips the wait (a primary's crash can then lose
    /// acknowledged clicks that its replica had not received).
    pub replicas: u32,
    /// How long `WAIT` may block for those replicas.
    pub wait: Duration,
    /// Per-node connect timeout.
    pub connect_timeout: Duration,
    /// Upper bound of any one operation, retries and reconnects included:
    /// past it the caller gets UNAVAILABLE instead of a stalled request.
    pub op_timeout: Duration,
}

impl RedisConfig {
    /// Defaults for a cluster with one replica per primary: clicks wait
    /// for that replica up to 1 s; nothing waits more than 5 s.
    pub fn new(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            replicas: 1,
            wait: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(5),
        }
    }
}

/// A user's model as a reader holds it, and the version it reflects, so
/// that [`RedisStore::refresh`] fetches only what changed. The default is
/// an empty model at version 0 (nothing held yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedModel {
    pub model: Model,
    /// The last journal record applied (0: nothing yet).
    pub version: u64,
    /// Journal entries ([`Op::entries`]) applied since the snapshot: what
    /// [`super::checkpoint_due`] weighs.
    pub journal_entries: u64,
}

/// What a [`RedisStore::refresh`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing changed since the held version.
    Fresh,
    /// This many journal records were applied to the held model.
    Applied(usize),
    /// The held version was folded away (or is unknown): the model was
    /// rebuilt from the snapshot and the records after it.
    Reloaded,
}

/// `MEMORY USAGE` of a user's keys, by key (0 for a key that is not
/// there): what a user costs the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBytes {
    pub meta: u64,
    pub ledger: u64,
    pub journal: u64,
    pub snapshot: u64,
}

impl KeyBytes {
    pub fn total(&self) -> u64 {
        self.meta + self.ledger + self.journal + self.snapshot
    }
}

/// The scripts, hashed once; EVALSHA falls back to loading them on every
/// primary when a node answers NOSCRIPT.
struct Scripts {
    click: Script,
    read: Script,
    checkpoint: Script,
}

/// A connection to a Redis Cluster holding users' ledgers, journals and
/// model snapshots. Cheap to clone: clones share one multiplexed
/// connection per node.
#[derive(Clone)]
pub struct RedisStore {
    conn: ClusterConnection,
    config: Arc<RedisConfig>,
    scripts: Arc<Scripts>,
}

/// The click script's reply; `outcome` is `None` for a Forget of a
/// message that was not learned.
struct RawClick {
    outcome: Option<ClickOutcome>,
    version: u64,
    spam_learned: u64,
    ham_learned: u64,
    previous_weight: Option<Weight>,
}

impl RawClick {
    fn with_outcome(&self, outcome: ClickOutcome) -> Result<Clicked, Error> {
        Ok(Clicked {
            outcome,
            version: self.version,
            spam_learned: self.spam_learned,
            ham_learned: self.ham_learned,
            previous_weight: self.previous_weight,
        })
    }
}

/// A user's four keys.
struct Keys {
    meta: String,
    ledger: String,
    journal: String,
    snapshot: String,
}

impl Keys {
    fn of(user: &UserId) -> Self {
        let mut tag = String::with_capacity(user.as_str().len() + 6);
        tag.push_str("{u:");
        for c in user.as_str().chars() {
            match c {
                '%' => tag.push_str("%25"),
                '{' => tag.push_str("%7B"),
                '}' => tag.push_str("%7D"),
                c => tag.push(c),
            }
        }
        tag.push('}');
        Self {
            meta: format!("{tag}:m"),
            ledger: format!("{tag}:l"),
            journal: format!("{tag}:j"),
            snapshot: format!("{tag}:s"),
        }
    }

    /// The primary of the user's slot: where `WAIT` must go.
    fn primary(&self) -> RoutingInfo {
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
            Slot::for_key(&self.meta),
            SlotAddr::Master,
        )))
    }
}

/// Ledger values carry a fixed header the click script reads.
const HEADER: usize = 9;

fn encode_ledger(entry: &LedgerEntry) -> Vec<u8> {
    let body = codec::encode_ledger(entry);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(entry.label.to_byte());
    out.extend_from_slice(&entry.weight.0.to_be_bytes());
    out.extend_from_slice(&entry.tokenizer_version.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_ledger(value: &[u8]) -> Result<LedgerEntry, Error> {
    let body = value
        .get(HEADER..)
        .ok_or_else(|| corrupt("ledger header"))?;
    codec::decode_ledger(body)
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt {
        what: format!("redis cluster: {what}"),
    }
}

fn int(v: &Value, what: &str) -> Result<u64, Error> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(|_| corrupt(what)),
        _ => Err(corrupt(what)),
    }
}

fn bytes<'a>(v: &'a Value, what: &str) -> Result<&'a [u8], Error> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        Value::Nil => Ok(&[]),
        _ => Err(corrupt(what)),
    }
}

fn array<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], Error> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(corrupt(what)),
    }
}

/// The ops of one journal record (`XRANGE` entry: `[id, [field, value,
/// ...]]`): the unlearned value first, then the learned one.
fn record_ops(record: &Value) -> Result<Vec<Op>, Error> {
    let parts = array(record, "journal record")?;
    let fields = array(
        parts.get(1).ok_or_else(|| corrupt("journal record"))?,
        "journal fields",
    )?;
    let (mut unlearn, mut learn) = (None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(corrupt("journal fields"));
        };
        match bytes(name, "journal field")? {
            b"u" => unlearn = Some(decode_ledger(bytes(value, "journal value")?)?),
            b"l" => learn = Some(decode_ledger(bytes(value, "journal value")?)?),
            _ => {}
        }
    }
    let mut ops = Vec::with_capacity(2);
    if let Some(e) = unlearn {
        ops.push(Op::Unlearn(e.label, e.weight, e.tokens));
    }
    if let Some(e) = learn {
        ops.push(Op::Learn(e.label, e.weight, e.tokens));
    }
    Ok(ops)
}

/// Applies journal records to a model; returns the entries they counted.
fn apply_records(model: &mut Model, records: &[Value]) -> Result<u64, Error> {
    let mut entries = 0;
    for record in records {
        let ops = record_ops(record)?;
        // A record counts even with no ops, as in the sled store.
        entries += ops.iter().map(Op::entries).sum::<u64>().max(1);
        for op in &ops {
            op.apply(model);
        }
    }
    Ok(entries)
}

impl RedisStore {
    /// Connects to the cluster, within `connect_timeout` per node and
    /// `op_timeout` overall (the client's start-up connect can otherwise
    /// hang: redis-rs#1953).
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        if config.nodes.is_empty() {
            return Err(Error::InvalidArgument(
                "a Redis Cluster store needs at least one node address".into(),
            ));
        }
        // A response may legitimately take the whole WAIT; one more second
        // covers the round trip. Few retries: `op_timeout` bounds the rest.
        let client = ClusterClientBuilder::new(config.nodes.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.wait + Duration::from_secs(1))
            .overall_response_timeout(Some(config.op_timeout))
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        let conn = tokio::time::timeout(config.op_timeout, client.get_async_connection())
            .await
            .map_err(|_| StorageError::redis_timeout("connecting", config.op_timeout))??;
        Ok(Self {
            conn,
            config: Arc::new(config),
            scripts: Arc::new(Scripts {
                click: Script::new(include_str!("click.lua")),
                read: Script::new(include_str!("read.lua")),
                checkpoint: Script::new(include_str!("checkpoint.lua")),
            }),
        })
    }

    /// The configuration this store was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Runs `fut` within `op_timeout`.
    async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let limit = self.config.op_timeout;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| Error::Storage(StorageError::redis_timeout(what, limit)))?
    }

    /// Learns a message for a user (a Train click), checking the ledger,
    /// moving the counts and journalling the change in one script on the
    /// user's shard; then waits for the replicas. `entry` is what to learn:
    /// label, weight, tokens, tokenizer version and shared id, as the
    /// engine builds it for the sled ledger.
    pub async fn train(
        &self,
        user: &UserId,
        msg: &MessageId,
        entry: &LedgerEntry,
    ) -> Result<Clicked, Error> {
        let raw = self.click(user, msg, &encode_ledger(entry)).await?;
        raw.with_outcome(raw.outcome.ok_or_else(|| corrupt("click reply"))?)
    }

    /// Undoes a click exactly, from the ledger alone.
    /// [`Error::NotLearned`] (NOT_FOUND) for a message the user never
    /// learned or already forgot.
    pub async fn forget(&self, user: &UserId, msg: &MessageId) -> Result<Clicked, Error> {
        let raw = self.click(user, msg, &[]).await?;
        match raw.outcome {
            Some(outcome @ ClickOutcome::Forgotten(_)) => raw.with_outcome(outcome),
            None => Err(Error::NotLearned {
                user: user.to_string(),
                message_id: msg.to_string(),
            }),
            Some(_) => Err(corrupt("click reply")),
        }
    }

    async fn click(&self, user: &UserId, msg: &MessageId, new: &[u8]) -> Result<RawClick, Error> {
        let keys = Keys::of(user);
        let reply: Value = self
            .bounded("a click", async {
                let mut conn = self.conn.clone();
                let mut call = self.scripts.click.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.ledger)
                    .key(&keys.journal)
                    .arg(msg.as_str())
                    .arg(new)
                    .arg(&TOKENIZER_VERSION.to_be_bytes()[..]);
                Ok(call.invoke_async(&mut conn).await?)
            })
            .await?;
        let parts = array(&reply, "click reply")?;
        let [code, version, spam, ham, head] = parts else {
            return Err(corrupt("click reply"));
        };
        let head = bytes(head, "click reply")?;
        let previous = match head {
            [label, w @ ..] if w.len() == 4 => Some((
                Label::from_byte(*label).ok_or_else(|| corrupt("ledger label"))?,
                Weight(u32::from_be_bytes(w.try_into().expect("4 bytes"))),
            )),
            [] => None,
            _ => return Err(corrupt("click reply")),
        };
        let outcome = match (int(code, "click code")?, previous) {
            (0, None) => None,
            (1, Some(_)) => Some(ClickOutcome::AlreadyLearned),
            (2, None) => Some(ClickOutcome::Learned),
            (3, Some(_)) => Some(ClickOutcome::Relearned),
            (4, Some((label, _))) => Some(ClickOutcome::Forgotten(label)),
            _ => return Err(corrupt("click reply")),
        };
        // Wait even when nothing changed: ALREADY_LEARNED or NOT_FOUND may
        // rest on another replica's click that is not yet replicated.
        self.wait_replicas(&keys).await?;
        Ok(RawClick {
            outcome,
            version: int(version, "version")?,
            spam_learned: int(spam, "spam learned")?,
            ham_learned: int(ham, "ham learned")?,
            previous_weight: previous.map(|(_, w)| w),
        })
    }

    /// `WAIT replicas ms` on the primary of the user's slot.
    async fn wait_replicas(&self, keys: &Keys) -> Result<(), Error> {
        let wanted = self.config.replicas;
        if wanted == 0 {
            return Ok(());
        }
        let wait = self.config.wait;
        let acked = self
            .bounded("waiting for replicas", async {
                let mut conn = self.conn.clone();
                let mut cmd = redis::cmd("WAIT");
                cmd.arg(wanted).arg(wait.as_millis() as u64);
                let v = conn.route_command(cmd, keys.primary()).await?;
                match v {
                    Value::Int(n) => Ok(n),
                    _ => Err(corrupt("WAIT reply")),
                }
            })
            .await?;
        if acked < i64::from(wanted) {
            return Err(StorageError::not_replicated(wanted, acked, wait).into());
        }
        Ok(())
    }

    /// What the ledger holds for this message, if anything.
    pub async fn ledger_get(
        &self,
        user: &UserId,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        let keys = Keys::of(user);
        let v: Option<Vec<u8>> = self
            .bounded("a ledger read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGET")
                    .arg(&keys.ledger)
                    .arg(msg.as_str())
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        v.map(|v| decode_ledger(&v)).transpose()
    }

    /// Brings a held model up to date in one round trip: nothing when it is
    /// fresh, else the journal records past its version (or the snapshot
    /// and the records after it, when those were folded away).
    pub async fn refresh(&self, user: &UserId, held: &mut CachedModel) -> Result<Refresh, Error> {
        let keys = Keys::of(user);
        let reply: Value = self
            .bounded("a model read", async {
                let mut conn = self.conn.clone();
                let mut call = self.scripts.read.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .arg(held.version);
                Ok(call.invoke_async(&mut conn).await?)
            })
            .await?;
        let parts = array(&reply, "model read reply")?;
        let version = int(
            parts.first().ok_or_else(|| corrupt("model read reply"))?,
            "version",
        )?;
        let mode = int(
            parts.get(1).ok_or_else(|| corrupt("model read reply"))?,
            "read mode",
        )?;
        let payload = |i: usize| parts.get(i).ok_or_else(|| corrupt("model read reply"));
        match mode {
            0 => Ok(Refresh::Fresh),
            1 => {
                let records = array(payload(3)?, "journal records")?;
                // Decode into a copy first: a damaged record leaves the held
                // model as it was.
                let mut model = held.model.clone();
                let entries = apply_records(&mut model, records)?;
                held.model = model;
                held.version = version;
                held.journal_entries += entries;
                Ok(Refresh::Applied(records.len()))
            }
            2 => {
                let snapshot = bytes(payload(2)?, "snapshot")?;
                let mut model = if snapshot.is_empty() {
                    Model::default()
                } else {
                    codec::decode_snapshot(snapshot)?.0
                };
                let entries = apply_records(&mut model, array(payload(3)?, "journal records")?)?;
                *held = CachedModel {
                    model,
                    version,
                    journal_entries: entries,
                };
                Ok(Refresh::Reloaded)
            }
            _ => Err(corrupt("read mode")),
        }
    }

    /// The user's model, or `None` for a user with nothing stored.
    pub async fn load_model(&self, user: &UserId) -> Result<Option<CachedModel>, Error> {
        let mut held = CachedModel::default();
        self.refresh(user, &mut held).await?;
        Ok((held.version > 0).then_some(held))
    }

    /// Folds the journal up to `version` into a snapshot of `model`, which
    /// must be the user's model at exactly that version (as a
    /// [`CachedModel`] holds it). False when a snapshot at that version or
    /// newer is already there (another replica folded first).
    pub async fn checkpoint(
        &self,
        user: &UserId,
        model: &Model,
        version: u64,
    ) -> Result<bool, Error> {
        let keys = Keys::of(user);
        let snapshot = codec::encode_snapshot(model, version);
        let written: i64 = self
            .bounded("a checkpoint", async {
                let mut conn = self.conn.clone();
                let mut call = self.scripts.checkpoint.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .arg(snapshot)
                    .arg(version);
                Ok(call.invoke_async(&mut conn).await?)
            })
            .await?;
        Ok(written == 1)
    }

    /// Bytes the cluster spends on a user's keys (`MEMORY USAGE` of each,
    /// all samples): for capacity figures, not for serving.
    pub async fn memory_usage(&self, user: &UserId) -> Result<KeyBytes, Error> {
        let keys = Keys::of(user);
        let mut bytes = [0u64; 4];
        for (key, out) in [&keys.meta, &keys.ledger, &keys.journal, &keys.snapshot]
            .into_iter()
            .zip(&mut bytes)
        {
            *out = self
                .bounded("MEMORY USAGE", async {
                    let mut conn = self.conn.clone();
                    let mut cmd = redis::cmd("MEMORY");
                    cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
                    match conn.route_command(cmd, keys.primary()).await? {
                        Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
                        Value::Nil => Ok(0),
                        _ => Err(corrupt("MEMORY USAGE reply")),
                    }
                })
                .await?;
        }
        let [meta, ledger, journal, snapshot] = bytes;
        Ok(KeyBytes {
            meta,
            ledger,
            journal,
            snapshot,
        })
    }

    /// Answers when every primary answers PING: a readiness probe.
    pub async fn ping(&self) -> Result<(), Error> {
        self.bounded("PING", async {
            let mut conn = self.conn.clone();
            conn.route_command(
                redis::cmd("PING"),
                RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                )),
            )
            .await?;
            Ok(())
        })
        .await
    }
}

//! A Redis Cluster store (issue #18): what the sled store does for one
//! process — models, ledger and journal, settings and lists, the decision
//! log, the shared model and the seed — on a sharded cluster that several
//! stateless chaff replicas share.
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
//! | `{u:<user>}:l`   | hash   | message id → ledger value (header + the sled ledger encoding; a click past the undo window: the header alone) |
//! | `{u:<user>}:lt`, `:dt` | zset | message id by time, for the ledger entries that still carry tokens (clicks, delivered mail): what the undo window folds next (`window.rs`) |
//! | `{u:<user>}:j`   | stream | one record per click, id `<version>-0`: `k` kind, `u` the ledger value unlearned, `l` the one learned |
//! | `{u:<user>}:s`   | string | the model snapshot (the sled snapshot encoding, with the delivered ham weight since format 8; an older one reads all ham as delivered) at version `sv` |
//! | `{u:<user>}:p`   | hash   | policy: `s` settings (store encoding), `c` consent id (8 bytes BE), `v` version, `<list>:<entry>` list entries |
//! | `{u:<user>}:pm`, `:pj`, `:ps` | hash, stream, string | the user's part of the shared model: meta (`v`, `sv`), journal, snapshot — the same shape as the model's |
//! | `{u:<user>}:d`   | stream | the decision log, id `<time ms>-<n>`, capped (`MAXLEN ~`) |
//! | `{o}:p`, `{o}:pm`, `{o}:l`, … | | the operator's lists (`c`: the seed id), the seed's shared part and ledger |
//! | `{shared}:d`, `{shared}:f` | hash, stream | the shared model's directory (contributor → part version) and its feed of changes |
//! | `{g}:id`         | string | the id counter (consent ids) |
//!
//! `<user>` is the id with `%`, `{` and `}` percent-escaped, so the tag is
//! the whole id and no two users' keys meet. A ledger value starts with a
//! fixed 22-byte header (label byte, weight u32 BE, tokenizer version u32
//! BE, kind `c` click, `i` delivered mail or `f` a click folded past the
//! undo window, shared id u64 BE, time unix s u32 BE) that the
//! click script reads and writes; Lua numbers are doubles, so the script
//! never touches 64-bit token ids — it moves whole ledger values into the
//! journal and the reader decodes them in Rust. The header is what counts
//! for label, weight, kind and shared id: the script sets the weight of
//! delivered mail and the shared id from what it sees, atomically.
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
//! - Durability: every click (also ALREADY_LEARNED and NOT_FOUND, which
//!   may rest on another client's click) is sent with `WAIT <replicas>
//!   <ms>` in one pipeline to the primary of the user's slot, so the WAIT
//!   counts the replicas of the connection that ran the click
//!   (`durable.rs`). A click that node does not run (the slot moves,
//!   NOSCRIPT) and every other waited write go as a single command, then
//!   `WAIT` to the primary of the slot only (redis-rs would send a keyless
//!   `WAIT` to every primary) and, while the slot moves, also to the node
//!   the write ran on. A click not confirmed in
//!   time is an error (UNAVAILABLE); a retry is safe, the ledger answers
//!   ALREADY_LEARNED.
//! - Every operation is bounded in time (`RedisConfig::op_timeout`):
//!   redis-rs can hang on start-up connect and stall while reconnecting.
//! - The shared model is each contributor's part under the contributor's
//!   own tag, changed by the click script in the same step as the click
//!   (so consent is read and applied atomically), plus a directory and a
//!   feed on one `{shared}` slot that readers poll in one round trip
//!   (`shared.rs`). Lists and settings: `policy.rs`; the decision log:
//!   `decisions.rs`; the operator's seed: `seed.rs`; deleting and listing
//!   users: `users.rs`; export and import: `export.rs`; the backup into a
//!   sled directory: `backup.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{Script, Value};

mod backend;

pub use super::backend::{ClickOutcome, Clicked};
pub use backend::RedisBackend;

use super::StorageError;
use super::codec::{self, LedgerEntry, Op};
use crate::classify::{Model, Weight};
use crate::error::Error;
use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, MessageId, Owner, UserId};

mod backup;
mod decisions;
mod durable;
mod export;
mod policy;
mod prune;
mod seed;
mod shared;
mod topology;
mod upgrade;
mod users;
mod window;

use durable::ScriptCall;
use window::{Stored, UndoWindow, decode_ledger, encode_ledger};

pub use shared::{PartHeld, SharedHeld, SharedRefresh, SharedView};
pub use upgrade::UpgradeProgress;

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
    /// Decisions kept per user, about (`XADD … MAXLEN ~`: whole stream
    /// nodes are trimmed, so up to ~100 more): the decision log's
    /// `Retention::per_user`.
    pub decisions_per_user: usize,
    /// Entries of the shared model's feed kept, about: a reader that falls
    /// further behind (or starts) reads the whole directory once instead.
    pub shared_feed_len: usize,
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
            decisions_per_user: 1000,
            shared_feed_len: 100_000,
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

/// Whether a script call was refused because its slot is moving (so it
/// did not run): TRYAGAIN, ASK, MOVED.
fn moving(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{Ask, Moved, TryAgain};
    matches!(e.kind(), redis::ErrorKind::Server(TryAgain | Ask | Moved))
}

/// The scripts' sources: also loaded on every node when one answers
/// NOSCRIPT ([`RedisStore::again`]).
const CLICK: &str = concat!(include_str!("ledger_value.lua"), include_str!("click.lua"));
const READ: &str = include_str!("read.lua");
const CHECKPOINT: &str = include_str!("checkpoint.lua");
const POLICY: &str = include_str!("policy.lua");
const NOTE: &str = include_str!("note.lua");
const SHARED_READ: &str = include_str!("shared_read.lua");
const DECIDE: &str = include_str!("decide.lua");
const LIST: &str = include_str!("list.lua");
const DELETE: &str = include_str!("delete.lua");
const SEED: &str = include_str!("seed.lua");

/// The scripts, hashed once; EVALSHA falls back to loading them on every
/// primary when a node answers NOSCRIPT.
struct Scripts {
    click: Script,
    read: Script,
    checkpoint: Script,
    policy: Script,
    note: Script,
    shared_read: Script,
    decide: Script,
    list: Script,
    delete: Script,
    seed: Script,
}

/// A connection to a Redis Cluster holding users' ledgers, journals and
/// model snapshots. Cheap to clone: clones share one multiplexed
/// connection per node.
#[derive(Clone)]
pub struct RedisStore {
    conn: ClusterConnection,
    config: Arc<RedisConfig>,
    scripts: Arc<Scripts>,
    /// The undo windows and their clock (`window.rs`).
    window: UndoWindow,
    /// Cluster node id → address, for the WAIT on the node that ran a
    /// write (`durable.rs`).
    nodes: durable::NodeAddresses,
    /// The decision log's own cluster (`--decision-store`), or `None`:
    /// this one (`decisions.rs`, [`RedisStore::with_decision_store`]).
    log: Option<Arc<RedisStore>>,
    /// This store is the decision log's own cluster: its failures say so
    /// (`StorageError::is_decision_store`).
    is_log: bool,
}

/// The click script's reply; `outcome` is `None` for a Forget of a
/// message that was not learned.
struct RawClick {
    /// The script's code (`click.lua`).
    code: i64,
    version: u64,
    spam_learned: u64,
    ham_learned: u64,
    previous: Option<(Label, Weight)>,
}

impl RawClick {
    /// The reply as a [`Clicked`]. A click that replaced delivered mail's
    /// entry (code 5) is a first click: LEARNED, no previous weight.
    fn with_outcome(&self, outcome: ClickOutcome) -> Result<Clicked, Error> {
        let replaced_delivered = self.code == 5;
        Ok(Clicked {
            outcome,
            version: self.version,
            spam_learned: self.spam_learned,
            ham_learned: self.ham_learned,
            previous_weight: self
                .previous
                .filter(|_| !replaced_delivered)
                .map(|(_, w)| w),
        })
    }
}

/// The hash tag of a user's keys: `{u:<id>}`, with `%`, `{` and `}`
/// percent-escaped so that the tag is the whole id.
fn user_tag(user: &UserId) -> String {
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
    tag
}

/// The user a key's tag names (the inverse of [`user_tag`]), for keys
/// found by a scan.
fn user_of_key(key: &str) -> Option<UserId> {
    let inner = key.strip_prefix("{u:")?;
    let inner = &inner[..inner.find('}')?];
    let mut id = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(i) = rest.find('%') {
        id.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        id.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    id.push_str(rest);
    UserId::stored(&id).ok()
}

/// A user's keys.
struct Keys {
    meta: String,
    ledger: String,
    journal: String,
    snapshot: String,
    /// Settings, consent and lists.
    policy: String,
    /// The user's part of the shared model.
    part: PartKeys,
    decisions: String,
    /// The times of ledger entries that still carry tokens, clicks and
    /// delivered mail (zsets, `window.rs`).
    times: String,
    delivered_times: String,
    /// The operator's seed: the click script keeps no model journal.
    seed: bool,
}

/// One contributor's part of the shared model, under its own tag: the
/// same shape as a user model (meta `v`/`sv`, journal, snapshot), so the
/// same scripts read and fold it.
struct PartKeys {
    meta: String,
    journal: String,
    snapshot: String,
}

impl PartKeys {
    fn with_tag(tag: &str) -> Self {
        Self {
            meta: format!("{tag}:pm"),
            journal: format!("{tag}:pj"),
            snapshot: format!("{tag}:ps"),
        }
    }

    fn of(who: &Owner) -> Self {
        Self::with_tag(&owner_tag(who))
    }
}

/// The tag of an owner's keys: the user's, or `{o}` for the operator.
fn owner_tag(who: &Owner) -> String {
    match who {
        Owner::User(u) => user_tag(u),
        Owner::Operator => "{o}".into(),
    }
}

impl Keys {
    fn of(user: &UserId) -> Self {
        Self::with_tag(&user_tag(user))
    }

    /// The operator's keys (`{o}`): the seed's ledger and shared part, and
    /// the lists.
    fn operator() -> Self {
        Self {
            seed: true,
            ..Self::with_tag(&owner_tag(&Owner::Operator))
        }
    }

    fn with_tag(tag: &str) -> Self {
        let tag = tag.to_string();
        Self {
            meta: format!("{tag}:m"),
            ledger: format!("{tag}:l"),
            journal: format!("{tag}:j"),
            snapshot: format!("{tag}:s"),
            policy: format!("{tag}:p"),
            part: PartKeys::with_tag(&tag),
            decisions: format!("{tag}:d"),
            times: format!("{tag}:lt"),
            delivered_times: format!("{tag}:dt"),
            seed: false,
        }
    }

    /// The primary of the user's slot: where `WAIT` must go.
    fn primary(&self) -> RoutingInfo {
        primary_of(&self.meta)
    }
}

/// The primary serving `key`'s slot.
fn primary_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
        Slot::for_key(key),
        SlotAddr::Master,
    )))
}

/// A command sent where `to` routes it. redis-rs hands a routed command's
/// error reply back as a value (`Value::ServerError`); here it is the error
/// it is (a storage failure: UNAVAILABLE), so that a node's refusal is
/// never taken for a reply of the wrong shape, that is for corrupt data (a
/// WAIT reaching a primary just demoted by a failover did that: the
/// failover test, session 13).
pub(super) async fn route(
    conn: &mut ClusterConnection,
    cmd: redis::Cmd,
    to: RoutingInfo,
) -> Result<Value, Error> {
    Ok(conn.route_command(cmd, to).await?.extract_error()?)
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
    // Delivered mail's values are kind `i`: their ops are marked, so the
    // model's clicked/delivered split is read back with the counts.
    if let Some(e) = unlearn {
        ops.push(Op::unlearn_entry(e));
    }
    if let Some(e) = learn {
        ops.push(Op::learn_entry(e));
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

/// The click script's reply, parsed.
struct ParsedClick {
    raw: RawClick,
    /// The user's part of the shared model is at this version (0: none).
    part_version: u64,
    /// The user shares (consent) now.
    sharing: bool,
}

impl std::ops::Deref for ParsedClick {
    type Target = RawClick;
    fn deref(&self) -> &RawClick {
        &self.raw
    }
}

fn parse_click(reply: &Value) -> Result<ParsedClick, Error> {
    let parts = array(reply, "click reply")?;
    let [code, version, spam, ham, head, part_version, sharing] = parts else {
        return Err(corrupt("click reply"));
    };
    let previous = match bytes(head, "click reply")? {
        [label, w @ ..] if w.len() == 4 => Some((
            Label::from_byte(*label).ok_or_else(|| corrupt("ledger label"))?,
            Weight(u32::from_be_bytes(w.try_into().expect("4 bytes"))),
        )),
        [] => None,
        _ => return Err(corrupt("click reply")),
    };
    Ok(ParsedClick {
        raw: RawClick {
            code: match code {
                Value::Int(n) => *n,
                _ => return Err(corrupt("click code")),
            },
            version: int(version, "version")?,
            spam_learned: int(spam, "spam learned")?,
            ham_learned: int(ham, "ham learned")?,
            previous,
        },
        part_version: int(part_version, "part version")?,
        sharing: int(sharing, "sharing")? == 1,
    })
}

/// What `read.lua` answered.
enum Read {
    /// Nothing changed since the held version.
    Fresh,
    /// The journal records after the held version, up to `version`.
    Records { version: u64, records: Vec<Value> },
    /// The held version was folded away (or is unknown): the snapshot
    /// (empty: none) and the records after it, up to `version`.
    Reload {
        version: u64,
        snapshot: Vec<u8>,
        records: Vec<Value>,
    },
}

/// A snapshot as stored; empty bytes are the empty model.
fn decode_snapshot(snapshot: &[u8]) -> Result<Model, Error> {
    if snapshot.is_empty() {
        Ok(Model::default())
    } else {
        Ok(codec::decode_snapshot(snapshot)?.0)
    }
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
                click: Script::new(CLICK),
                read: Script::new(READ),
                checkpoint: Script::new(CHECKPOINT),
                policy: Script::new(POLICY),
                note: Script::new(NOTE),
                shared_read: Script::new(SHARED_READ),
                decide: Script::new(DECIDE),
                list: Script::new(LIST),
                delete: Script::new(DELETE),
                seed: Script::new(SEED),
            }),
            window: UndoWindow::default(),
            nodes: Default::default(),
            log: None,
            is_log: false,
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
        let result = tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| Error::Storage(StorageError::redis_timeout(what, limit)))
            .and_then(|r| r);
        match result {
            Err(Error::Storage(e)) if self.is_log => Err(Error::Storage(e.in_decision_store())),
            other => other,
        }
    }

    /// Runs a script call again while its slot is being moved between
    /// primaries (nothing ran, so running it again is safe):
    ///
    /// - `TRYAGAIN`: the script's keys are split between the two nodes.
    ///   redis-rs retries it only a few times within ~1 s; moving a slot's
    ///   keys can take longer (the reshard test saw clicks fail that way).
    /// - `ASK` or `MOVED` left over when redis-rs ran out of its retries
    ///   following redirections (seen once in the reshard test): the
    ///   script did not run where the redirection came from.
    /// - `NOSCRIPT` from the node the slot moves to: redis-rs follows the
    ///   ASK there but loads the script only on the primaries of its slot
    ///   map, where a new primary without slots is not yet (seen in the
    ///   reshard test). The script is loaded on every node, once, then run
    ///   again.
    ///
    /// The caller's [`RedisStore::bounded`] still bounds it all by
    /// `op_timeout`.
    async fn again<T, F, Fut>(&self, source: &str, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut pause = Duration::from_millis(10);
        let mut loaded = false;
        // Its own bound too, on the wall clock: tokio's timers (the
        // caller's bound, the pause) stop working while a runtime shuts
        // down, and a loop of instant refusals must not spin then.
        let give_up = std::time::Instant::now() + self.config.op_timeout;
        loop {
            match call().await {
                Err(e) if moving(&e) => {
                    if std::time::Instant::now() >= give_up {
                        let after = self.config.op_timeout;
                        return Err(Error::Storage(StorageError::slot_moving(e, after)));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e)
                    if !loaded
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.load_everywhere(source).await?;
                    loaded = true;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Runs a prepared script call through [`RedisStore::again`] (its
    /// retries while a slot moves, and the reload after NOSCRIPT), on a
    /// clone of the cluster connection: how every script here is called.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        source: &str,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.again(source, || {
            let mut conn = self.conn.clone();
            async move { call.invoke_async(&mut conn).await }
        })
        .await
    }

    /// `SCRIPT LOAD` on every node `CLUSTER NODES` lists (primaries with
    /// or without slots, and replicas), skipping nodes that fail.
    async fn load_everywhere(&self, source: &str) -> Result<(), Error> {
        let conn = self.conn.clone();
        let text = self.cluster_nodes().await?;
        let mut loads = tokio::task::JoinSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || !topology::live_flags(f[2]) {
                continue;
            }
            let addr = f[1].split(['@', ',']).next().unwrap_or_default();
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_string(),
                port,
            });
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(source);
            let mut conn = conn.clone();
            loads.spawn(async move {
                let _ = conn.route_command(cmd, route).await;
            });
        }
        // On every node at once, waiting at most a connect timeout: one
        // node that hangs (a frozen replica) must not keep the script from
        // the others — such as the node a moving slot's keys went to, where
        // the caller is about to run it (seen in the slot-move test:
        // every click there timed out while a replica was frozen).
        let _ = tokio::time::timeout(self.config.connect_timeout, async {
            while loads.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }

    /// Learns a message for a user (a Train click), checking the ledger,
    /// moving the counts and journalling the change in one script on the
    /// user's shard; then waits for the replicas. `entry` is what to learn:
    /// label, weight, tokens and tokenizer version, as the engine builds it
    /// for the sled ledger. Its `shared` id is not used: the script shares
    /// the click when the consent it reads on the user's shard says so, in
    /// the same step (a revoke cannot slip between the check and the
    /// write), and records that consent id in the ledger.
    ///
    /// An entry learned from the message's delivery ([`Self::learn_delivered`])
    /// is replaced as if it had never been: the answer is LEARNED, never
    /// ALREADY_LEARNED, whatever its label (`engine/clicks.rs`). The caller
    /// judges the click's weight with that entry undone, as the engine does.
    pub async fn train(
        &self,
        user: &UserId,
        msg: &MessageId,
        entry: &LedgerEntry,
    ) -> Result<Clicked, Error> {
        self.train_click(user, msg, None, entry).await
    }

    /// [`Self::train`] of a message the caller names `msg` while chaff
    /// derives `derived` for it: when `msg` is not in the ledger and
    /// `derived` holds an entry learned from the message's delivery (Score
    /// knew only the derived id), that entry is replaced by the click, in
    /// the same script (the sled engine does it in a second batch).
    pub async fn train_click(
        &self,
        user: &UserId,
        msg: &MessageId,
        derived: Option<&MessageId>,
        entry: &LedgerEntry,
    ) -> Result<Clicked, Error> {
        let mut entry_click;
        let entry = if entry.implicit {
            // A click is never an implicit entry.
            entry_click = entry.clone();
            entry_click.implicit = false;
            &entry_click
        } else {
            entry
        };
        let derived = derived.map_or("", MessageId::as_str);
        let raw = self.click(user, msg, Some(entry), derived).await?;
        let outcome = match (raw.code, raw.previous) {
            // Too old to undo, and not this label: refused, nothing changed.
            (7, Some((label, _))) => return Err(self.window.beyond(msg, label)),
            (1, Some(_)) => ClickOutcome::AlreadyLearned,
            (2, None) | (5, _) => ClickOutcome::Learned,
            (3, Some(_)) => ClickOutcome::Relearned,
            _ => return Err(corrupt("click reply")),
        };
        raw.with_outcome(outcome)
    }

    /// Undoes a click (or delivered mail's entry) exactly, from the ledger
    /// alone, and takes it out of the user's shared part if it was shared
    /// under the consent still current. [`Error::NotLearned`] (NOT_FOUND)
    /// for a message the user never learned or already forgot.
    pub async fn forget(&self, user: &UserId, msg: &MessageId) -> Result<Clicked, Error> {
        let raw = self.click(user, msg, None, "").await?;
        match (raw.code, raw.previous) {
            (4, Some((label, _))) => raw.with_outcome(ClickOutcome::Forgotten(label)),
            (7, Some((label, _))) => Err(self.window.beyond(msg, label)),
            (0, None) => Err(Error::NotLearned {
                user: user.to_string(),
                message_id: msg.to_string(),
            }),
            _ => Err(corrupt("click reply")),
        }
    }

    /// Learns mail delivered to the user's inbox as ham, as
    /// `Engine::learn_delivered` does: only when the user has learned
    /// something and `msg` is not in the ledger (delivered mail never
    /// replaces a click, nor itself), at the weight
    /// `engine::clicks::delivered_weight` gives for the user's counts —
    /// computed by the script from the counts it sees, so concurrent
    /// replicas agree — and at most `ceiling`, the caller's reading of the
    /// message's size (`engine::clicks::delivered_ceiling`). Never shared,
    /// and not waited for (as on sled, where it is not flushed: nothing was
    /// acknowledged). Returns the weight it was learned with, or `None`
    /// when it was not.
    pub async fn learn_delivered(
        &self,
        user: &UserId,
        msg: &MessageId,
        tokens: &[TokenId],
        ceiling: Weight,
    ) -> Result<Option<Weight>, Error> {
        let entry = LedgerEntry {
            label: Label::Ham,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: tokens.to_vec(),
            // The script sets the weight (in the header, which counts).
            weight: Weight::DELIVERED,
            shared: 0,
            implicit: true,
        };
        let keys = Keys::of(user);
        // Not waited for: nothing is acknowledged to anyone, as on sled.
        let call = self.click_call(&keys, msg, Some(&entry), "", Some(ceiling));
        let reply = self
            .bounded("a click", self.invoke(CLICK, &call.invocation()))
            .await?;
        let raw = parse_click(&reply)?;
        match raw.code {
            0 => Ok(None),
            6 => {
                let e = self
                    .ledger_get(user, msg)
                    .await?
                    .ok_or_else(|| corrupt("delivered mail's entry"))?;
                Ok(Some(e.weight))
            }
            _ => Err(corrupt("click reply")),
        }
    }

    /// `click.lua`'s call on `keys`: learn `new` (timed now by the undo
    /// window's clock), or Forget (`None`). `ceiling`: delivered mail
    /// only, the most it may weigh (`None`: one message).
    fn click_call(
        &self,
        keys: &Keys,
        msg: &MessageId,
        new: Option<&LedgerEntry>,
        derived: &str,
        ceiling: Option<Weight>,
    ) -> ScriptCall<'_> {
        let cutoffs = self.window.cutoffs();
        let new = new.map_or_else(Vec::new, |e| encode_ledger(e, cutoffs.now_s));
        let mut call = ScriptCall::of(&self.scripts.click);
        call.key(&keys.meta)
            .key(&keys.ledger)
            .key(&keys.journal)
            .key(&keys.policy)
            .key(&keys.part.meta)
            .key(&keys.part.journal)
            .key(&keys.times)
            .key(&keys.delivered_times)
            .arg(msg.as_str())
            .arg(&new[..])
            .arg(&TOKENIZER_VERSION.to_be_bytes()[..])
            .arg(derived)
            .arg(Weight::DELIVERED.0)
            .arg(ceiling.map_or(Weight::FULL.0, |c| {
                c.0.clamp(Weight::DELIVERED.0, Weight::FULL.0)
            }))
            .arg(if keys.seed { "1" } else { "0" })
            .arg(cutoffs.click_s)
            .arg(cutoffs.delivered_s)
            .arg(window::FOLD_PER_CLICK)
            .arg(cutoffs.now_s);
        call
    }

    /// [`Self::click_call`] of a click, a Forget or a seeded message, held
    /// by `config.replicas` replicas when it returns (else UNAVAILABLE; a
    /// retry is safe). Waited for even when nothing changed:
    /// ALREADY_LEARNED or NOT_FOUND may rest on an earlier click not yet
    /// replicated. The script and its `WAIT` go in one pipeline
    /// ([`Self::durably`], `durable.rs`); when the node does not run it
    /// (the slot moves, the script is not loaded there), as every other
    /// write: the call, then [`Self::wait_replicas`].
    async fn run_click_waited(
        &self,
        keys: &Keys,
        msg: &MessageId,
        new: Option<&LedgerEntry>,
        derived: &str,
    ) -> Result<Value, Error> {
        let call = self.click_call(keys, msg, new, derived, None);
        if let Some(reply) = self
            .bounded("a click", self.durably(&call, &keys.meta))
            .await?
        {
            return Ok(reply);
        }
        let reply = self
            .bounded("a click", self.invoke(CLICK, &call.invocation()))
            .await?;
        self.wait_replicas(keys).await?;
        Ok(reply)
    }

    async fn click(
        &self,
        user: &UserId,
        msg: &MessageId,
        new: Option<&LedgerEntry>,
        derived: &str,
    ) -> Result<RawClick, Error> {
        let keys = Keys::of(user);
        let reply = self.run_click_waited(&keys, msg, new, derived).await?;
        let raw = parse_click(&reply)?;
        // A sharing user's part moved (or may have, by an earlier click
        // whose note was lost): tell the shared model's readers. A retried
        // click notes again, so a note lost with a failed reply heals.
        if raw.sharing && raw.part_version > 0 {
            self.note_part(&Owner::User(user.clone()), raw.part_version)
                .await?;
        }
        Ok(raw.raw)
    }

    /// `WAIT replicas ms` on the primary of the user's slot.
    async fn wait_replicas(&self, keys: &Keys) -> Result<(), Error> {
        self.wait_for(&keys.meta).await
    }

    /// What the ledger holds for this message, if anything, judged by the
    /// undo window as on sled: a click older than the window is
    /// [`Error::BeyondUndoWindow`], delivered mail's entry past its window
    /// reads as nothing (`window.rs`).
    pub async fn ledger_get(
        &self,
        user: &UserId,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        self.ledger_get_judged(user, msg).await
    }

    /// The ledger value under `keys` (a user's, or the operator's seed
    /// ledger) for this message, if any, as stored.
    async fn ledger_stored(&self, keys: &Keys, msg: &MessageId) -> Result<Option<Stored>, Error> {
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
        let now_s = self.window.cutoffs().now_s;
        v.map(|v| window::decode_stored(&v, now_s)).transpose()
    }

    /// Brings a held model up to date in one round trip: nothing when it is
    /// fresh, else the journal records past its version (or the snapshot
    /// and the records after it, when those were folded away).
    pub async fn refresh(&self, user: &UserId, held: &mut CachedModel) -> Result<Refresh, Error> {
        let keys = Keys::of(user);
        match self
            .read_model(&keys.meta, &keys.snapshot, &keys.journal, held.version)
            .await?
        {
            Read::Fresh => Ok(Refresh::Fresh),
            Read::Records { version, records } => {
                // Decode into a copy first: a damaged record leaves the held
                // model as it was.
                let mut model = held.model.clone();
                let entries = apply_records(&mut model, &records)?;
                held.model = model;
                held.version = version;
                held.journal_entries += entries;
                Ok(Refresh::Applied(records.len()))
            }
            Read::Reload {
                version,
                snapshot,
                records,
            } => {
                let mut model = decode_snapshot(&snapshot)?;
                let entries = apply_records(&mut model, &records)?;
                *held = CachedModel {
                    model,
                    version,
                    journal_entries: entries,
                };
                Ok(Refresh::Reloaded)
            }
        }
    }

    /// `read.lua` on a model's keys (a user's, or a shared part's).
    async fn read_model(
        &self,
        meta: &str,
        snapshot: &str,
        journal: &str,
        since: u64,
    ) -> Result<Read, Error> {
        let reply: Value = self
            .bounded("a model read", async {
                let mut call = self.scripts.read.prepare_invoke();
                call.key(meta).key(snapshot).key(journal).arg(since);
                self.invoke(READ, &call).await
            })
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(corrupt("model read reply"));
        };
        let version = int(
            parts.first().ok_or_else(|| corrupt("model read reply"))?,
            "version",
        )?;
        let mode = int(
            parts.get(1).ok_or_else(|| corrupt("model read reply"))?,
            "read mode",
        )?;
        if mode == 0 {
            return Ok(Read::Fresh);
        }
        if parts.len() != 4 {
            return Err(corrupt("model read reply"));
        }
        let records = match parts.pop() {
            Some(Value::Array(records)) => records,
            _ => return Err(corrupt("journal records")),
        };
        match mode {
            1 => Ok(Read::Records { version, records }),
            2 => Ok(Read::Reload {
                version,
                snapshot: bytes(&parts[2], "snapshot")?.to_vec(),
                records,
            }),
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
        self.fold(&keys.meta, &keys.snapshot, &keys.journal, model, version)
            .await
    }

    /// `checkpoint.lua` on a model's keys (a user's, or a shared part's).
    async fn fold(
        &self,
        meta: &str,
        snapshot: &str,
        journal: &str,
        model: &Model,
        version: u64,
    ) -> Result<bool, Error> {
        let bytes = codec::encode_snapshot(model, version);
        let written: i64 = self
            .bounded("a checkpoint", async {
                let mut call = self.scripts.checkpoint.prepare_invoke();
                call.key(meta)
                    .key(snapshot)
                    .key(journal)
                    .arg(bytes)
                    .arg(version);
                self.invoke(CHECKPOINT, &call).await
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
                    match route(&mut conn, cmd, keys.primary()).await? {
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

    /// Answers when every primary the client is connected to answers and
    /// reports the cluster up (`CLUSTER INFO`'s `cluster_state:ok`): a
    /// readiness probe.
    ///
    /// Why not PING alone: redis-rs sends a multi-node command only to the
    /// nodes it holds a connection to, and after the first failed request
    /// to a dead primary it drops that node's connection. The primaries
    /// left answer PING while every key is refused (CLUSTERDOWN) until a
    /// replica takes over — a probe that said ready then (it did, in the
    /// late-election test) would keep a load balancer sending traffic to a
    /// service that can serve none of it. The same skip leaves a window
    /// this probe cannot see either: between a primary's death and the
    /// cluster marking it failed (`cluster-node-timeout`, then the vote),
    /// the others still report `ok`; requests to its slots fail then, and
    /// each such failure sets NOT_SERVING until the next probe.
    pub async fn ping(&self) -> Result<(), Error> {
        self.bounded("CLUSTER INFO", async {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("INFO");
            // No response policy: each primary's answer, by address.
            let answers = conn
                .route_command(
                    cmd,
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await?;
            let Value::Map(answers) = answers else {
                return Err(corrupt("CLUSTER INFO replies"));
            };
            for (node, answer) in answers {
                let node = match &node {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                };
                let text = match answer.extract_error()? {
                    Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    Value::VerbatimString { text, .. } => text,
                    Value::SimpleString(s) => s,
                    _ => return Err(corrupt("CLUSTER INFO reply")),
                };
                let state = text
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_state:"))
                    .map(str::trim)
                    .ok_or_else(|| corrupt("CLUSTER INFO without cluster_state"))?;
                if state != "ok" {
                    return Err(StorageError::cluster_down(node, state.to_string()).into());
                }
            }
            Ok(())
        })
        .await
    }
}

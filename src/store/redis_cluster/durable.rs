//! Waiting for replicas after a write (`WAIT`), on the node that ran it.
//!
//! A click (Train, Forget, a seeded message) sends its script and the
//! `WAIT` in one pipeline to the primary of the user's slot
//! ([`RedisStore::durably`]): one connection, one node, so the count is of
//! replicas holding that click, whatever redis-rs did to reach the node.
//! (redis-rs resends the pair together after ASK, MOVED or TRYAGAIN.) A
//! click that does not run even so — ASK, MOVED, TRYAGAIN or CLUSTERDOWN
//! left after redis-rs's retries, or NOSCRIPT — and every other waited
//! write send the `WAIT` after the write ([`RedisStore::wait_for`]), as
//! below.
//!
//! # Why this shape (`wait_for`)
//!
//! `WAIT n ms` counts the replicas that have every write sent *on the same
//! connection* before it, so it must go to the node that ran the write.
//! Normally that is the primary of the key's slot in redis-rs's slot map,
//! which is where a slot-routed `WAIT` goes. While a slot moves
//! (IMPORTING/MIGRATING), redis-rs follows an ASK and runs the write on the
//! importing node, but a slot-routed `WAIT` still goes to the old primary,
//! which had nothing to replicate for this connection and answers at once:
//! the click would be acknowledged before any replica of the node holding
//! it has it (docs/SCALING.md, "What is left" 4, as it stood).
//!
//! redis-rs does not say which node answered, so after the write a tiny
//! script (`where.lua`: `CLUSTER MYID`) is sent with the same key — it
//! goes where the write went, ASK included — and its node id is mapped to
//! an address (`CLUSTER NODES`, cached). `WAIT` then goes both to that
//! address and to the slot's primary in the map, concurrently, and the
//! smaller count decides. Both, because the keys may move between the
//! write and the script (the write ran on the old primary, the script on
//! the new one); the two `WAIT`s land on the same connection when they are
//! the same node, where the second answers as soon as the first does.
//! Cost: one more small round trip per write, overlapped with the `WAIT`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Script, ToRedisArgs, Value};

use super::{RedisStore, StorageError, bytes, corrupt, primary_of, route};
use crate::error::Error;

/// `where.lua`: the id of the node a key's commands reach now.
const WHERE: &str = include_str!("where.lua");
static WHERE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WHERE));

/// Cluster node id → (host, port), from `CLUSTER NODES`; read again when
/// an id is missing or a `WAIT` by address fails.
pub(super) type NodeAddresses = Arc<Mutex<HashMap<String, (String, u16)>>>;

/// Node id → address of every node a `CLUSTER NODES` reply lists with an
/// address (the addresses redis-rs connects to: the cluster's own).
fn parse_nodes(text: &str) -> HashMap<String, (String, u16)> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[2].contains("noaddr") {
            continue;
        }
        let addr = f[1].split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = port.parse::<u16>()
            && !host.is_empty()
        {
            out.insert(f[0].to_string(), (host.to_string(), port));
        }
    }
    out
}

/// One call of a script: its keys and arguments, sent either as redis-rs's
/// [`redis::ScriptInvocation`] (redis-rs follows a redirect and loads the
/// script on NOSCRIPT) or as a bare `EVALSHA` in a pipeline
/// ([`RedisStore::durably`]), built once for both.
pub(super) struct ScriptCall<'a> {
    script: &'a Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'a> ScriptCall<'a> {
    /// A call of `script`, keys and arguments to be added.
    pub(super) fn of(script: &'a Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The call as redis-rs's invocation.
    pub(super) fn invocation(&self) -> redis::ScriptInvocation<'a> {
        let mut call = self.script.prepare_invoke();
        for key in &self.keys {
            call.key(&key[..]);
        }
        for arg in &self.args {
            call.arg(&arg[..]);
        }
        call
    }

    /// The call as one `EVALSHA` command.
    fn evalsha(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(&key[..]);
        }
        for arg in &self.args {
            cmd.arg(&arg[..]);
        }
        cmd
    }
}

/// Whether a script call answered with `e` did not run on the node asked
/// (so it may be sent again by another path): the slot is moving or moved
/// (redis-rs retries those a few times, then gives up with the last
/// answer), the cluster is down, or the node lacks the script.
fn not_run_here(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{Ask, ClusterDown, Moved, NoScript, TryAgain};
    matches!(
        e.kind(),
        redis::ErrorKind::Server(Ask | Moved | TryAgain | NoScript | ClusterDown)
    )
}

impl RedisStore {
    /// Runs `call` (whose first key is `key`) and `WAIT replicas ms` **in
    /// one pipeline** to the primary of `key`'s slot: both go over one
    /// connection to one node, so the `WAIT` counts the replicas that hold
    /// this call's writes, never a count from another connection. The
    /// call's reply once enough replicas hold it; UNAVAILABLE if not (a
    /// retry is safe). `None` when the node did not run the call (module
    /// docs): the caller sends it the usual way, and waits after it.
    ///
    /// Why not a `WAIT` sent after the call returned: redis-rs, when the
    /// connection to a slot's primary is being repaired, sends a
    /// slot-routed command to another node of the shard or to a random
    /// one, and a refresh of the slot map may replace a node's connection
    /// between two commands; a `WAIT` on a connection that sent no write
    /// answers at once with the number of replicas connected. Either can
    /// count replicas that do not hold the write.
    ///
    /// Why the usual path when the node did not run it: that path is the
    /// one the reshard and failover tests were built on (redis-rs's own
    /// `SCRIPT LOAD` on NOSCRIPT, [`RedisStore::again`]'s retries while a
    /// slot moves, the `WAIT` on the node that ran it, `wait_for`).
    /// Session 35 sent the pipeline again instead, retrying in place, and
    /// a user's first click once did not finish within 5 s in the reshard
    /// test (docs/SCALING.md).
    pub(super) async fn durably(
        &self,
        call: &ScriptCall<'_>,
        key: &str,
    ) -> Result<Option<Value>, Error> {
        let wanted = self.config.replicas;
        let mut pipe = redis::pipe();
        pipe.add_command(call.evalsha());
        if wanted > 0 {
            pipe.add_command(
                redis::cmd("WAIT")
                    .arg(wanted)
                    .arg(self.config.wait.as_millis() as u64)
                    .clone(),
            );
        }
        let count = pipe.cmd_iter().count();
        let slot = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
            Slot::for_key(key),
            SlotAddr::Master,
        ));
        let mut conn = self.conn.clone();
        let mut replies = match conn.route_pipeline(pipe, 0, count, slot).await {
            Ok(replies) => replies,
            Err(e) if not_run_here(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let acked = if count == 2 { replies.pop() } else { None };
        let reply = replies
            .pop()
            .ok_or_else(|| corrupt("a pipeline without a reply"))?;
        let reply = match reply.extract_error() {
            Ok(reply) => reply,
            Err(e) if not_run_here(&e) => {
                tracing::debug!(error = %e, "a click not run in its pipeline: sent again as a single command");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if wanted > 0 {
            let acked = match acked.map(Value::extract_error) {
                Some(Ok(Value::Int(n))) => n,
                // A node that refuses WAIT (a primary just demoted) or
                // answers without a count: no replica is known to hold it.
                Some(Ok(other)) => {
                    tracing::warn!(reply = ?other, "WAIT answered without a count; counted as no replica");
                    0
                }
                Some(Err(e)) => return Err(e.into()),
                None => 0,
            };
            if acked < i64::from(wanted) {
                return Err(StorageError::not_replicated(wanted, acked, self.config.wait).into());
            }
        }
        Ok(Some(reply))
    }

    /// `WAIT replicas ms` on the node that ran the last write to `key` and
    /// on the primary of `key`'s slot (module docs): the writes sent there
    /// on this connection so far are on that many replicas, or the caller
    /// gets an error (UNAVAILABLE; a retry is safe).
    pub(super) async fn wait_for(&self, key: &str) -> Result<(), Error> {
        let wanted = self.config.replicas;
        if wanted == 0 {
            return Ok(());
        }
        let (on_primary, on_runner) = self
            .bounded("waiting for replicas", async {
                Ok(tokio::join!(self.wait_on(primary_of(key)), async {
                    let (host, port) = self.node_holding(key).await?;
                    let route =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    let acked = self.wait_on(route).await;
                    if acked.is_err() {
                        // The node may have moved: map the ids again next time.
                        self.nodes.lock().clear();
                    }
                    acked
                }))
            })
            .await?;
        let acked = on_primary?.min(on_runner?);
        if acked < i64::from(wanted) {
            return Err(StorageError::not_replicated(wanted, acked, self.config.wait).into());
        }
        Ok(())
    }

    /// One `WAIT` on the node `route` names: the replicas it counts.
    async fn wait_on(&self, route_to: RoutingInfo) -> Result<i64, Error> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.config.replicas)
            .arg(self.config.wait.as_millis() as u64);
        // A primary demoted by a failover answers WAIT with an error
        // (`route`: UNAVAILABLE, the click not acknowledged).
        match route(&mut conn, cmd, route_to).await? {
            Value::Int(n) => Ok(n),
            other => {
                // No count: no replica is known to hold the click.
                tracing::warn!(reply = ?other, "WAIT answered without a count; counted as no replica");
                Ok(0)
            }
        }
    }

    /// The address of the node `key`'s commands reach now (`where.lua`,
    /// routed as a write to `key` is, ASK included).
    async fn node_holding(&self, key: &str) -> Result<(String, u16), Error> {
        let mut call = WHERE_SCRIPT.prepare_invoke();
        call.key(key);
        let id: String = self.invoke(WHERE, &call).await?;
        if let Some(addr) = self.nodes.lock().get(&id) {
            return Ok(addr.clone());
        }
        let mut conn = self.conn.clone();
        let reply = route(
            &mut conn,
            redis::cmd("CLUSTER").arg("NODES").clone(),
            primary_of(key),
        )
        .await?;
        let text = match &reply {
            Value::VerbatimString { text, .. } => text.as_bytes(),
            other => bytes(other, "CLUSTER NODES reply")?,
        };
        let text = std::str::from_utf8(text).map_err(|_| corrupt("CLUSTER NODES reply"))?;
        let nodes = parse_nodes(text);
        let addr = nodes.get(&id).cloned();
        *self.nodes.lock() = nodes;
        addr.ok_or_else(|| corrupt("the node that ran a write is not in CLUSTER NODES"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_nodes;

    #[test]
    fn cluster_nodes_lines_give_each_nodes_address() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 10.0.0.2:6379@16379,redis-b.example master - 0 1 2 connected 5461-10922
c3 :0@0 master,noaddr - 1 1 3 disconnected
d4 :6381@16381 master,fail - 0 0 4 connected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes["a1"], ("127.0.0.1".to_string(), 30001));
        assert_eq!(nodes["b2"], ("10.0.0.2".to_string(), 6379));
        assert!(!nodes.contains_key("c3"));
        assert!(!nodes.contains_key("d4"), "no host: no address to route to");
    }
}

//! Waiting for replicas after a write (`WAIT`), on the node that ran it.
//!
//! # Why this shape
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
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Script, Value};

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

impl RedisStore {
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

//! The start-up look at the cluster's shape (`CLUSTER NODES`): every slot
//! served by a primary, and primaries with the replicas `--redis-replicas`
//! waits for. Why at start: a cluster with a slot range unserved answered
//! "ClusterDown" naming nothing, and one with fewer replicas than the
//! server waits for let it start SERVING and then answer every click
//! UNAVAILABLE — though each was written — with no hint that the setting
//! and the cluster disagree. Unserved slots refuse the start; missing
//! replicas are a warning (a replica down for a while must not stop every
//! Score, and a new cluster's gossip may not yet show its replicas).

use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::{RedisStore, bytes, corrupt, route};
use crate::error::Error;

/// Whether a node with these `CLUSTER NODES` flags (comma-separated) is
/// up: not agreed failed (`fail`), and with an address. Whole flags, not
/// substrings: `nofailover` (a setting) is not a failure, and `fail?` is one
/// node's suspicion, which a start must not be refused for.
pub(super) fn live_flags(flags: &str) -> bool {
    !flags
        .split(',')
        .any(|t| matches!(t, "fail" | "noaddr" | "handshake"))
}

/// Redis Cluster's slots, 0..16384.
const SLOTS: usize = 16384;

/// What `CLUSTER NODES` says about the cluster's shape.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Shape {
    /// Slot ranges (inclusive) that no live primary serves.
    pub unserved: Vec<(usize, usize)>,
    /// Live primaries serving slots, each with its live replicas.
    pub primaries: Vec<(String, u32)>,
}

impl Shape {
    /// Reads a `CLUSTER NODES` reply: `id addr flags master-id ping pong
    /// epoch link slot…` per line, a slot as `N`, `A-B` or (migrating)
    /// `[…]`, which is skipped.
    pub(super) fn parse(text: &str) -> Shape {
        let nodes: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 8)
            .collect();
        let has = |f: &[&str], flag: &str| f[2].split(',').any(|t| t == flag);
        let live = |f: &[&str]| live_flags(f[2]);
        let mut served = vec![false; SLOTS];
        let mut primaries = Vec::new();
        for f in nodes.iter().filter(|f| has(f, "master") && live(f)) {
            let mut serves = false;
            for range in &f[8..] {
                if range.starts_with('[') {
                    continue;
                }
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    for s in served.iter_mut().take(b.min(SLOTS - 1) + 1).skip(a) {
                        *s = true;
                    }
                    serves = true;
                }
            }
            if serves {
                let replicas = nodes
                    .iter()
                    .filter(|r| has(r, "slave") && r[3] == f[0] && live(r))
                    .count() as u32;
                let addr = f[1].split(['@', ',']).next().unwrap_or_default();
                primaries.push((addr.to_string(), replicas));
            }
        }
        let mut unserved = Vec::new();
        let mut slot = 0;
        while slot < SLOTS {
            if served[slot] {
                slot += 1;
                continue;
            }
            let start = slot;
            while slot < SLOTS && !served[slot] {
                slot += 1;
            }
            unserved.push((start, slot - 1));
        }
        Shape {
            unserved,
            primaries,
        }
    }

    /// The refusal for a cluster chaff cannot work on (slots no primary
    /// serves); otherwise warnings, one per primary short of replicas, or
    /// one for all when none has enough (then every click will fail).
    pub(super) fn check(&self, replicas: u32) -> Result<Vec<String>, String> {
        if !self.unserved.is_empty() {
            let ranges: Vec<String> = self
                .unserved
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            return Err(format!(
                "slots {} have no live primary (CLUSTER NODES): the users there could be neither scored nor clicked; assign them (redis-cli --cluster fix) or bring their shard back",
                ranges.join(", ")
            ));
        }
        let short: Vec<String> = self
            .primaries
            .iter()
            .filter(|(_, have)| *have < replicas)
            .map(|(addr, have)| format!("{addr} has {have}"))
            .collect();
        if !short.is_empty() && short.len() == self.primaries.len() {
            return Ok(vec![format!(
                "--redis-replicas {replicas}: every click waits for {replicas} replica(s) of its shard, but no primary has that many ({}): every click will be answered UNAVAILABLE; add replicas, or lower --redis-replicas (0: acknowledge on the primary alone)",
                short.join(", ")
            )]);
        }
        Ok(short
            .into_iter()
            .map(|s| {
                format!("primary {s} replica(s), fewer than --redis-replicas {replicas}: clicks of its users are answered UNAVAILABLE (written, not acknowledged) until it has them")
            })
            .collect())
    }
}

impl RedisStore {
    /// `CLUSTER NODES` as one primary sees it.
    pub(super) async fn cluster_nodes(&self) -> Result<String, Error> {
        let mut conn = self.conn.clone();
        let nodes = route(
            &mut conn,
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await?;
        let text = match &nodes {
            Value::VerbatimString { text, .. } => text.as_bytes(),
            other => bytes(other, "CLUSTER NODES reply")?,
        };
        Ok(std::str::from_utf8(text)
            .map_err(|_| corrupt("CLUSTER NODES reply"))?
            .to_string())
    }

    /// The start-up check ([`Shape::check`]): an error for a cluster chaff
    /// cannot work on, else warnings. A shape with something to say is read
    /// again for up to two seconds first: a cluster just created or just
    /// failed over may not have gossiped its slots and replicas yet.
    pub async fn check_shape(&self) -> Result<Vec<String>, Error> {
        let mut tries = 10;
        loop {
            let text = self.cluster_nodes().await?;
            let checked = Shape::parse(&text).check(self.config.replicas);
            tries -= 1;
            match checked {
                Ok(warnings) if warnings.is_empty() => return Ok(warnings),
                _ if tries > 0 => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Ok(warnings) => return Ok(warnings),
                Err(refusal) => return Err(Error::InvalidArgument(refusal)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
r1 127.0.0.1:7003@17003 slave a1 0 0 1 connected
r2 127.0.0.1:7004@17004 slave a2 0 0 2 connected
r3 127.0.0.1:7005@17005 slave,fail a3 0 0 3 connected
";

    #[test]
    fn nofailover_and_a_suspicion_are_not_failures() {
        let set = NODES
            .replace("myself,master", "myself,master,nofailover")
            .replace("slave a1", "slave,nofailover a1")
            .replace(
                "a2 127.0.0.1:7001@17001 master",
                "a2 127.0.0.1:7001@17001 master,fail?",
            );
        let shape = Shape::parse(&set);
        assert!(shape.unserved.is_empty(), "{shape:?}");
        assert_eq!(shape.primaries[0], ("127.0.0.1:7000".to_string(), 1));
    }

    #[test]
    fn a_cluster_short_of_replicas_or_slots_is_named_at_start() {
        let shape = Shape::parse(NODES);
        assert!(shape.unserved.is_empty());
        assert_eq!(shape.primaries.len(), 3);
        // One primary's replica failed: a warning naming it.
        let w = shape.check(1).unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("primary 127.0.0.1:7002 has 0 replica(s)"),
            "{w:?}"
        );
        assert!(shape.check(0).unwrap().is_empty());
        // No primary has two: every click will fail, said once.
        let w = shape.check(2).unwrap();
        assert!(
            w.len() == 1 && w[0].contains("no primary has that many"),
            "{w:?}"
        );
        // Slots nobody serves are named.
        let gap = NODES.replace("10923-16383", "10923-16000");
        let e = Shape::parse(&gap).check(1).unwrap_err();
        assert!(e.contains("slots 16001-16383 have no live primary"), "{e}");
        let failed = NODES.replace(
            "a2 127.0.0.1:7001@17001 master",
            "a2 127.0.0.1:7001@17001 master,fail",
        );
        let e = Shape::parse(&failed).check(0).unwrap_err();
        assert!(e.contains("slots 5461-10922"), "{e}");
    }
}

//! The decision log over the cluster: one stream per user under the
//! user's tag (`{u:<user>}:d`), each record under an id whose milliseconds
//! are the decision's time, so a support query by time is one ID range.
//! Capped at about `RedisConfig::decisions_per_user` records by every
//! append (`XADD … MAXLEN ~`); retention by age is
//! [`RedisStore::trim_decisions`], swept over
//! [`RedisStore::users_with_decisions_before`] as the sled store's is
//! (`decisions.rs`). Appends are not waited for: the log is for support,
//! and sled's background flush likewise bounds what a crash loses.

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::{DECIDE, Keys, RedisStore, array, bytes, corrupt, int, route, user_of_key};
use crate::error::Error;
use crate::types::UserId;

/// Records read per round trip while a query filters.
const PAGE: usize = 200;

/// The milliseconds of a stream id (`<ms>-<seq>`).
pub(super) fn id_ms(id: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(id)
        .ok()
        .and_then(|s| s.split_once('-'))
        .and_then(|(ms, _)| ms.parse().ok())
        .ok_or_else(|| corrupt("decision id"))
}

impl RedisStore {
    /// This store with its decision log on `log`, another cluster
    /// (`chaff serve --decision-store redis://…`): every decision is
    /// appended, found, trimmed, swept, exported, backed up and deleted
    /// there, and nothing of the log is written here. Why: one decision
    /// is written per Score, and on the click cluster those writes (under
    /// `appendfsync always`, an fsync per event-loop pass) share the
    /// primaries that every Score's model read waits on
    /// (docs/SCALING.md, capacity lever 3).
    pub fn with_decision_store(mut self, log: RedisStore) -> Self {
        // The log's own log is itself: no chain.
        let log = RedisStore {
            log: None,
            is_log: true,
            ..log
        };
        self.log = Some(Arc::new(log));
        self
    }

    /// Where the decision log is: the decision cluster, or this one.
    pub(super) fn log(&self) -> &RedisStore {
        self.log.as_deref().unwrap_or(self)
    }

    /// Whether the decision log has a cluster of its own.
    pub fn has_decision_store(&self) -> bool {
        self.log.is_some()
    }

    /// Appends decisions, each user's in one script (not waited for). The
    /// users' scripts are sent at once, not one after another: on a
    /// multiplexed connection each primary then runs many in one pass of
    /// its event loop, and with `appendfsync always` a pass that writes
    /// costs one fsync, which every reply of that pass — the Scores' model
    /// reads included — waits for.
    pub async fn append_decisions<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a UserId, u64, &'a [u8])>,
    ) -> Result<(), Error> {
        let log = self.log().clone();
        let mut by_user: BTreeMap<UserId, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for (user, time_ms, json) in records {
            by_user
                .entry(user.clone())
                .or_default()
                .push((time_ms, json.to_vec()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (user, records) in by_user {
            let store = log.clone();
            tasks.spawn(async move { store.append_user_decisions(&user, &records).await });
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            let done = done.unwrap_or_else(|e| Err(corrupt(&format!("a decision append: {e}"))));
            if result.is_ok() {
                result = done;
            }
        }
        result
    }

    /// One user's decisions, in one script.
    async fn append_user_decisions(
        &self,
        user: &UserId,
        records: &[(u64, Vec<u8>)],
    ) -> Result<(), Error> {
        let cap = self.config.decisions_per_user;
        let keys = Keys::of(user);
        self.bounded("a decision append", async {
            let mut call = self.scripts.decide.prepare_invoke();
            call.key(&keys.decisions).arg(cap);
            for (time_ms, json) in records {
                call.arg(*time_ms).arg(json.as_slice());
            }
            let _: i64 = self.invoke(DECIDE, &call).await?;
            Ok(())
        })
        .await
    }

    /// The user's decisions from `since_ms` to `until_ms` (inclusive),
    /// newest first, as `read` decodes them (`None` skips a record), at
    /// most `limit`.
    pub async fn find_decisions<T>(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        mut read: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    ) -> Result<Vec<T>, Error> {
        if let Some(log) = &self.log {
            return Box::pin(log.find_decisions(user, since_ms, until_ms, limit, read)).await;
        }
        let keys = Keys::of(user);
        let start = format!("{since_ms}-0");
        let mut end = format!("{until_ms}-{}", u64::MAX);
        let mut out = Vec::new();
        while out.len() < limit {
            let page: Vec<Value> = self
                .bounded("a decision query", async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("XREVRANGE")
                        .arg(&keys.decisions)
                        .arg(&end)
                        .arg(&start)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            for record in &page {
                let parts = array(record, "decision record")?;
                let fields = array(
                    parts.get(1).ok_or_else(|| corrupt("decision record"))?,
                    "decision fields",
                )?;
                if let [_, json] = fields
                    && let Some(found) = read(bytes(json, "decision")?)?
                {
                    out.push(found);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            if page.len() < PAGE {
                break;
            }
            let last = array(page.last().expect("a full page"), "decision record")?;
            let id = String::from_utf8(
                bytes(last.first().ok_or_else(|| corrupt("decision id"))?, "id")?.to_vec(),
            )
            .map_err(|_| corrupt("decision id"))?;
            end = format!("({id}");
        }
        Ok(out)
    }

    /// Deletes the user's decisions older than `before_ms` and all but the
    /// newest `keep` (exactly). Returns how many were deleted.
    pub async fn trim_decisions(
        &self,
        user: &UserId,
        before_ms: u64,
        keep: usize,
    ) -> Result<usize, Error> {
        if let Some(log) = &self.log {
            return Box::pin(log.trim_decisions(user, before_ms, keep)).await;
        }
        let keys = Keys::of(user);
        self.bounded("a decision trim", async {
            let mut conn = self.conn.clone();
            let old: usize = redis::cmd("XTRIM")
                .arg(&keys.decisions)
                .arg("MINID")
                .arg(format!("{before_ms}-0"))
                .query_async(&mut conn)
                .await?;
            let over: usize = redis::cmd("XTRIM")
                .arg(&keys.decisions)
                .arg("MAXLEN")
                .arg(keep)
                .query_async(&mut conn)
                .await?;
            Ok(old + over)
        })
        .await
    }

    /// Every user with a decision older than `before_ms`, for the periodic
    /// retention sweep: a `SCAN` of every primary for decision streams,
    /// then each stream's oldest id. The cost grows with the keyspace, not
    /// with what expired: hourly, as on sled, it is a background cost.
    pub async fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        if let Some(log) = &self.log {
            return Box::pin(log.users_with_decisions_before(before_ms)).await;
        }
        let mut users = Vec::new();
        for key in self
            .scan_primaries("a decision sweep", "{u:*}:d", Some("stream"))
            .await?
        {
            let Some(user) = user_of_key(&key) else {
                continue;
            };
            let first: Vec<Value> = self
                .bounded("a decision sweep", async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            if let Some(record) = first.first() {
                let id = array(record, "decision record")?
                    .first()
                    .ok_or_else(|| corrupt("decision record"))?;
                if id_ms(bytes(id, "decision id")?)? < before_ms {
                    users.push(user);
                }
            }
        }
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// The names of the keys matching `pattern` (and of type `of_type`,
    /// when given) on every primary: a `SCAN` of each one's keyspace, for
    /// the operator's listing and the background sweeps, never a request's
    /// path. `what` names the work in a timeout's error.
    pub(super) async fn scan_primaries(
        &self,
        what: &'static str,
        pattern: &str,
        of_type: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut found = Vec::new();
        for (host, port) in self.primaries().await? {
            let mut cursor = "0".to_string();
            loop {
                let (next, keys) = self
                    .scan_step(what, (&host, port), &cursor, pattern, of_type, 1000)
                    .await?;
                found.extend(keys);
                cursor = next;
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// One `SCAN` step on the primary at `node`: the next cursor ("0" when
    /// done) and the names of the keys matching `pattern` (and of type
    /// `of_type`, when given), about `count` keys looked at. For callers
    /// that act on each step's keys as they go ([`Self::upgrade_ledgers`])
    /// and for [`Self::scan_primaries`].
    pub(super) async fn scan_step(
        &self,
        what: &'static str,
        (host, port): (&str, u16),
        cursor: &str,
        pattern: &str,
        of_type: Option<&str>,
        count: usize,
    ) -> Result<(String, Vec<String>), Error> {
        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        });
        let reply = self
            .bounded(what, async {
                let mut conn = self.conn.clone();
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                if let Some(of_type) = of_type {
                    cmd.arg("TYPE").arg(of_type);
                }
                route(&mut conn, cmd, to).await
            })
            .await?;
        let [next, keys] = array(&reply, "SCAN reply")? else {
            return Err(corrupt("SCAN reply"));
        };
        let keys = array(keys, "SCAN keys")?
            .iter()
            .map(|key| {
                std::str::from_utf8(bytes(key, "key")?)
                    .map(str::to_string)
                    .map_err(|_| corrupt("SCAN key"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = String::from_utf8(bytes(next, "SCAN cursor")?.to_vec())
            .map_err(|_| corrupt("SCAN cursor"))?;
        Ok((next, keys))
    }

    /// The primaries' addresses (`CLUSTER SLOTS`: each range's first node).
    pub(super) async fn primaries(&self) -> Result<Vec<(String, u16)>, Error> {
        let reply = self
            .bounded("CLUSTER SLOTS", async {
                let mut conn = self.conn.clone();
                route(
                    &mut conn,
                    redis::cmd("CLUSTER").arg("SLOTS").clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
            })
            .await?;
        let mut out = Vec::new();
        for range in array(&reply, "CLUSTER SLOTS reply")? {
            let node = array(
                array(range, "slot range")?
                    .get(2)
                    .ok_or_else(|| corrupt("slot range"))?,
                "slot node",
            )?;
            let [host, port, ..] = node else {
                return Err(corrupt("slot node"));
            };
            let host = String::from_utf8(bytes(host, "node host")?.to_vec())
                .map_err(|_| corrupt("node host"))?;
            let port = u16::try_from(int(port, "node port")?).map_err(|_| corrupt("node port"))?;
            if !out.contains(&(host.clone(), port)) {
                out.push((host, port));
            }
        }
        Ok(out)
    }
}

//! Users over the cluster: whether one has anything stored, deleting one
//! with everything they stored (their part of the shared model included),
//! when they were last scored, and listing them.

use redis::Value;

use super::{DELETE, Keys, RedisStore, array, bytes, corrupt, int, user_of_key};
use crate::error::Error;
use crate::store::listing_order;
use crate::types::{Owner, UserId};

impl RedisStore {
    /// Whether anything of the user's is stored: a model, a ledger,
    /// settings or lists, decisions. (A deleted user's part of the shared
    /// model stays as an empty version marker, and does not count.)
    pub async fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        let keys = Keys::of(user);
        let n: u64 = self
            .bounded("a user lookup", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("EXISTS")
                    .arg(&keys.meta)
                    .arg(&keys.ledger)
                    .arg(&keys.policy)
                    .arg(&keys.decisions)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        if n == 0
            && let Some(log) = &self.log
        {
            // A user only ever scored has nothing but decisions.
            return Box::pin(log.user_exists(user)).await;
        }
        Ok(n > 0)
    }

    /// Deletes everything of the user's in one script on their shard
    /// (`delete.lua`), waits for the replicas, then tells the shared
    /// model's readers that their part is now empty. Returns whether
    /// anything was stored. Deleting again is harmless.
    pub async fn delete_user(&self, user: &UserId) -> Result<bool, Error> {
        let keys = Keys::of(user);
        let reply: Value = self
            .bounded("a user deletion", async {
                let mut call = self.scripts.delete.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.ledger)
                    .key(&keys.journal)
                    .key(&keys.snapshot)
                    .key(&keys.policy)
                    .key(&keys.decisions)
                    .key(&keys.part.meta)
                    .key(&keys.part.journal)
                    .key(&keys.part.snapshot)
                    .key(&keys.times)
                    .key(&keys.delivered_times);
                self.invoke(DELETE, &call).await
            })
            .await?;
        let parts = array(&reply, "deletion reply")?;
        let [deleted, part_version] = parts else {
            return Err(corrupt("deletion reply"));
        };
        let (deleted, part_version) = (
            int(deleted, "keys deleted")?,
            int(part_version, "part version")?,
        );
        self.wait_replicas(&keys).await?;
        if part_version > 0 {
            self.note_part(&Owner::User(user.clone()), part_version)
                .await?;
        }
        Ok(deleted > 0)
    }

    /// Deletes the user's decision log (what DeleteUser's last step
    /// catches: decisions logged while the deletion ran).
    pub async fn delete_decisions(&self, user: &UserId) -> Result<(), Error> {
        if let Some(log) = &self.log {
            return Box::pin(log.delete_decisions(user)).await;
        }
        let keys = Keys::of(user);
        self.bounded("a decision deletion", async {
            let mut conn = self.conn.clone();
            let _: i64 = redis::cmd("DEL")
                .arg(&keys.decisions)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .await?;
        self.wait_replicas(&keys).await
    }

    /// When the user's newest logged decision was made (ms), if any.
    pub async fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        if let Some(log) = &self.log {
            return Box::pin(log.last_decision_ms(user)).await;
        }
        let keys = Keys::of(user);
        let newest: Vec<Value> = self
            .bounded("a decision read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("XREVRANGE")
                    .arg(&keys.decisions)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let Some(record) = newest.first() else {
            return Ok(None);
        };
        let id = array(record, "decision record")?
            .first()
            .ok_or_else(|| corrupt("decision record"))?;
        Ok(Some(super::decisions::id_ms(bytes(id, "decision id")?)?))
    }

    /// Users with a model, ledger, settings, lists or decisions whose id starts with
    /// `prefix`, after `after` in [`listing_order`] (the sled store's
    /// order), at most `limit`. A `SCAN` of every primary's keyspace: an
    /// operator's tool, its cost grows with the number of users, whatever
    /// the page size.
    pub async fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        for pattern in ["{u:*}:m", "{u:*}:p", "{u:*}:l", "{u:*}:d"] {
            // Decision streams are where the log is (`--decision-store`).
            let store = if pattern.ends_with(":d") {
                self.log()
            } else {
                self
            };
            for key in store
                .scan_primaries("a user listing", pattern, None)
                .await?
            {
                if let Some(user) = user_of_key(&key)
                    && user.as_str().starts_with(prefix)
                    && after.is_none_or(|a| listing_order(&user) > listing_order(a))
                {
                    users.push(user);
                }
            }
        }
        users.sort_by(|a, b| listing_order(a).cmp(&listing_order(b)));
        users.dedup();
        users.truncate(limit);
        Ok(users)
    }
}

//! Backup of the cluster into a new sled data directory (the Backup RPC,
//! `chaff backup DIR`, on `chaff serve --store redis://…`).
//!
//! # Why this shape
//!
//! - **The same thing a sled server's backup is**: a sled data directory
//!   that `chaff serve --data DIR` serves as it is, or from which single
//!   users move back onto a cluster with `chaff user export|import`. An
//!   operator can open it, check it, and restore one user from it, none of
//!   which an RDB file of one shard allows.
//! - **Logical and per user**, read from the primaries while replicas go on
//!   serving: every user (a `SCAN` of every primary), with what an export
//!   carries plus what an import drops (the consent id, the ledger's shared
//!   ids, the user's shared part), then the operator's seed and lists.
//! - **No click half in the copy, locking anyone out only when needed.**
//!   No writer lock orders another replica's clicks, and one script
//!   returning a whole user blocks their shard for as long as a large
//!   ledger takes to serialise. So each user is first read optimistically:
//!   the versions every change raises (the model's `v`, the policy hash's
//!   `v`, the shared part's `v`) are read before and after the user's
//!   records, and the user is read again when any moved (a click landed in
//!   between). Versions only rise, so equal stamps mean no click landed.
//!   A user who keeps clicking faster than a read takes (seen under load in
//!   the test) is then read by one script at one instant (`dump.lua`).
//! - **What it captures**: every click acknowledged before the backup
//!   started (acknowledged means on the primary and its replicas; the
//!   users are listed after the start and read from the primaries); a
//!   click made while it runs is in it whole or not at all. Users are not
//!   captured at one instant together, as on sled.
//! - **Not disaster recovery for a whole cluster**: that is the cluster's
//!   own RDB/AOF files (docs/OPERATIONS.md). This copy costs a few round
//!   trips per user, one user after another.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::{Script, Value};
use tracing::info;

use super::decisions::id_ms;
use super::export::ledger_entries;
use super::policy::parse_policy;
use super::{Keys, PartKeys, Read, RedisStore, apply_records, array, bytes, corrupt, int};
use crate::classify::Model;
use crate::error::Error;
use crate::store::backup::{OperatorCopy, UserCopy};
use crate::store::codec;
use crate::store::export::{Learned, UserExport};
use crate::store::{StorageError, Store};
use crate::types::{MessageId, Owner, UserId};

/// Optimistic reads of one user before the backup reads them in one
/// script (`dump.lua`): each retry means a click landed during a read.
const ATTEMPTS: u32 = 3;

/// Reads of the operator's seed and lists before the backup gives up (a
/// seeding run that never pauses): UNAVAILABLE, back up again.
const OPERATOR_ATTEMPTS: u32 = 50;

/// `dump.lua`: one user's records at one instant.
const DUMP: &str = include_str!("dump.lua");
static DUMP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DUMP));

/// How often the backup logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl RedisStore {
    /// Copies the whole cluster into `dest` (a new sled store), user by
    /// user (module docs); returns the users and records written. Writes
    /// to sled from this future: run it from a thread that may block.
    pub async fn backup_into(&self, dest: &Store) -> Result<(u64, u64), Error> {
        let started = Instant::now();
        let users = self.list_users("", None, usize::MAX).await?;
        info!(users = users.len(), "backup of the redis cluster started");
        // Ids the restored server hands out must be above every consent
        // and seed id in the copy: take the floor before reading any.
        let floor = self.generate_id().await?;
        let operator = self.backup_operator().await?;
        let mut records = dest.restore_operator(&operator)?;
        let (mut copied, mut retries) = (0u64, 0u64);
        let mut logged = Instant::now();
        for (i, user) in users.iter().enumerate() {
            let (copy, again) = self.backup_user(user).await?;
            retries += u64::from(again);
            if let Some(copy) = copy {
                records += dest.restore_user(user, &copy)?;
                copied += 1;
            }
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                info!(
                    done = i + 1,
                    users = users.len(),
                    records,
                    "backup progress"
                );
            }
        }
        dest.raise_ids_above(floor)?;
        info!(
            users = copied,
            records,
            reread = retries,
            ms = started.elapsed().as_millis() as u64,
            "backup of the redis cluster copied"
        );
        Ok((copied, records))
    }

    /// The versions every change of the user raises: the model's (clicks,
    /// delivered mail, imports), the policy hash's (settings, consent,
    /// lists) and the shared part's (sharing clicks, revokes).
    async fn stamp(&self, keys: &Keys) -> Result<[u64; 3], Error> {
        let mut out = [0u64; 3];
        for (key, v) in [&keys.meta, &keys.policy, &keys.part.meta]
            .into_iter()
            .zip(&mut out)
        {
            let got: Option<u64> = self
                .bounded("a backup read", async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("HGET")
                        .arg(key)
                        .arg("v")
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            *v = got.unwrap_or(0);
        }
        Ok(out)
    }

    /// One user, read whole between two equal stamps (module docs): the
    /// copy (`None` for a user with nothing stored, e.g. deleted since
    /// the listing) and how many times it was read again.
    pub async fn backup_user(&self, user: &UserId) -> Result<(Option<UserCopy>, u32), Error> {
        let keys = Keys::of(user);
        for attempt in 0..ATTEMPTS {
            let before = self.stamp(&keys).await?;
            let export = self.read_user_export(user).await?;
            let consent = self.settings(user).await?.map_or(0, |(_, c)| c);
            let part = self.read_part(&keys.part).await?;
            if self.stamp(&keys).await? != before {
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                continue;
            }
            let empty = export.model.is_none()
                && export.settings.is_none()
                && export.lists.is_empty()
                && export.ledger.is_empty()
                && export.decisions.is_empty();
            let copy = (!empty).then_some(UserCopy {
                export,
                consent,
                part,
            });
            return Ok((copy, attempt));
        }
        Ok((self.dump_user(user, &keys).await?, ATTEMPTS))
    }

    /// One user at one instant (`dump.lua`), as [`Self::backup_user`]
    /// returns them.
    async fn dump_user(&self, user: &UserId, keys: &Keys) -> Result<Option<UserCopy>, Error> {
        let reply: Value = self
            .bounded("a backup read", async {
                let mut call = DUMP_SCRIPT.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.snapshot)
                    .key(&keys.journal)
                    .key(&keys.ledger)
                    .key(&keys.policy)
                    .key(&keys.part.meta)
                    .key(&keys.part.snapshot)
                    .key(&keys.part.journal)
                    .key(&keys.decisions);
                self.invoke(DUMP, &call).await
            })
            .await?;
        let parts = array(&reply, "backup read reply")?;
        let [
            version,
            snapshot,
            journal,
            ledger,
            policy,
            part_snapshot,
            part_journal,
            decisions,
        ] = parts
        else {
            return Err(corrupt("backup read reply"));
        };
        let model = if int(version, "version")? > 0 {
            let mut model = super::decode_snapshot(bytes(snapshot, "snapshot")?)?;
            apply_records(&mut model, array(journal, "journal records")?)?;
            Some(codec::encode_snapshot(&model, 0))
        } else {
            None
        };
        let mut part = super::decode_snapshot(bytes(part_snapshot, "part snapshot")?)?;
        apply_records(&mut part, array(part_journal, "part journal records")?)?;
        let part = (part.spam_learned() + part.ham_learned() > 0).then_some(part);
        let policy = parse_policy(array(policy, "policy hash")?)?;
        let consent = policy.settings.as_ref().map_or(0, |(_, c)| *c);
        let mut ledger =
            ledger_entries(array(ledger, "ledger hash")?, self.window.cutoffs().now_s)?;
        ledger.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut logged = Vec::new();
        for record in array(decisions, "decision records")? {
            let fields = array(record, "decision record")?;
            let [id, fields] = fields else {
                return Err(corrupt("decision record"));
            };
            if let [_, json] = array(fields, "decision fields")? {
                logged.push((id_ms(bytes(id, "id")?)?, bytes(json, "decision")?.to_vec()));
            }
        }
        if self.has_decision_store() {
            // The log is on its own cluster (`--decision-store`): not part
            // of this instant, as it is not part of a click.
            logged = self.log().read_decisions(user).await?;
        }
        let export = UserExport {
            user: Some(user.clone()),
            model,
            settings: policy.settings.map(|(s, _)| s),
            lists: policy.lists,
            ledger,
            decisions: logged,
        };
        let empty = export.model.is_none()
            && export.settings.is_none()
            && export.lists.is_empty()
            && export.ledger.is_empty()
            && export.decisions.is_empty();
        Ok((!empty).then_some(UserCopy {
            export,
            consent,
            part,
        }))
    }

    /// The operator's seed (id, ledger, part) and lists, read between two
    /// equal stamps of the operator's policy and part.
    async fn backup_operator(&self) -> Result<OperatorCopy, Error> {
        let keys = Keys::operator();
        for _ in 0..OPERATOR_ATTEMPTS {
            let before = self.stamp(&keys).await?;
            let copy = OperatorCopy {
                seed_id: self.seed_id().await?,
                ledger: self.whole_ledger(&keys.ledger).await?,
                part: self.read_part(&keys.part).await?,
                lists: self.policy(&Owner::Operator).await?.lists,
            };
            if self.stamp(&keys).await? == before {
                return Ok(copy);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(
            StorageError::kept_changing("backup: the operator's seed".into(), OPERATOR_ATTEMPTS)
                .into(),
        )
    }

    /// A shared part, whole (`None`: there is none, or it is empty).
    async fn read_part(&self, part: &PartKeys) -> Result<Option<Model>, Error> {
        let model = match self
            .read_model(&part.meta, &part.snapshot, &part.journal, 0)
            .await?
        {
            Read::Fresh => return Ok(None),
            Read::Records { records, .. } => {
                let mut model = Model::default();
                apply_records(&mut model, &records)?;
                model
            }
            Read::Reload {
                snapshot, records, ..
            } => {
                let mut model = if snapshot.is_empty() {
                    Model::default()
                } else {
                    super::decode_snapshot(&snapshot)?
                };
                apply_records(&mut model, &records)?;
                model
            }
        };
        Ok((model.spam_learned() + model.ham_learned() > 0).then_some(model))
    }

    /// Every entry of a ledger hash (the seed's), with its click time.
    async fn whole_ledger(&self, key: &str) -> Result<Vec<(MessageId, u64, Learned)>, Error> {
        let fields: Vec<Value> = self
            .bounded("a backup read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        ledger_entries(&fields, self.window.cutoffs().now_s)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use crate::classify::Weight;
    use crate::store::codec::LedgerEntry;
    use crate::store::export::Learned;
    use crate::store::redis_cluster::export::ledger_entries;
    use crate::store::redis_cluster::window::{encode_folded, encode_ledger};
    use crate::tokenize::TokenId;
    use crate::types::Label;

    /// A value as the code before the undo window wrote it: the 22-byte
    /// layout without its time (bytes 18..22).
    fn legacy(entry: &LedgerEntry) -> Vec<u8> {
        let mut v = encode_ledger(entry, 1_764_000_000);
        v.drain(18..22);
        v
    }

    #[test]
    fn a_ledger_read_in_one_script_keeps_click_times_and_folded_clicks() {
        // The fallback read (`dump.lua`) and the seed's ledger go through
        // `ledger_entries`: a folded click stays folded with its time, a
        // live one keeps its time, so the copy's undo window goes on
        // where the cluster's stood.
        let live = LedgerEntry {
            label: Label::Ham,
            tokenizer_version: 2,
            tokens: vec![TokenId(3), TokenId(9)],
            weight: Weight::FULL,
            shared: 0,
            implicit: false,
        };
        let fields = [
            Value::BulkString(b"old".to_vec()),
            Value::BulkString(encode_folded(Label::Spam, 1_000)),
            Value::BulkString(b"recent".to_vec()),
            Value::BulkString(encode_ledger(&live, 2_000)),
            // The 18-byte layout written before the undo window (no time):
            // read as learned at the reader's now.
            Value::BulkString(b"untimed".to_vec()),
            Value::BulkString(legacy(&live)),
        ];
        let got = ledger_entries(&fields, 5_000).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0.as_str(), "untimed");
        assert_eq!((got[2].1, &got[2].2), (5_000, &Learned::Live(live.clone())));
        assert_eq!(got[0].0.as_str(), "old");
        assert_eq!(
            (got[0].1, &got[0].2),
            (1_000, &Learned::Folded(Label::Spam))
        );
        assert_eq!(got[1].0.as_str(), "recent");
        assert_eq!((got[1].1, &got[1].2), (2_000, &Learned::Live(live)));
    }
}

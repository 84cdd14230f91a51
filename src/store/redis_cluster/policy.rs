//! Users' settings (with the sharing consent id) and the allow, block and
//! trusted lists, over the cluster: one small hash per user under the
//! user's tag (`{u:<user>}:p`) and one for the operator (`{o}:p`), with the
//! sled store's meaning (`store::policy`): changes are durable (`WAIT`)
//! before they are acknowledged, also when nothing changed. Every change
//! raises the hash's version (field `v`), which a replica compares with the
//! one it holds in the Score's one round trip (`read.lua`): settings and
//! lists are as fresh on every replica as the model is.

use redis::Value;

use super::{Keys, LIST, POLICY, PartKeys, RedisStore, array, bytes, corrupt, owner_tag};
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::store::StoredPolicy;
use crate::store::codec;
use crate::types::{Owner, UserId};

/// The id counter (consent ids), on its own slot.
const IDS: &str = "{g}:id";

/// An owner's policy hash.
fn policy_key(who: &Owner) -> String {
    format!("{}:p", owner_tag(who))
}

/// A list entry's field in the policy hash: `<list>:<entry>` (settings'
/// fields `s` and `c` have no colon, so they never meet).
fn list_field(kind: ListKind, entry: &Entry) -> String {
    format!("{}:{entry}", kind.as_str())
}

/// A policy hash's fields (`HGETALL`: field, value, ...) as a
/// [`StoredPolicy`], lists in the sled store's order.
pub(super) fn parse_policy(fields: &[Value]) -> Result<StoredPolicy, Error> {
    let mut out = StoredPolicy::default();
    let mut entries: Vec<(ListKind, Vec<u8>)> = Vec::new();
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(corrupt("policy hash"));
        };
        let name = bytes(name, "policy field")?;
        match name {
            b"v" => {
                out.version = std::str::from_utf8(bytes(value, "policy version")?)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| corrupt("policy version"))?;
            }
            b"s" => out.settings = Some(codec::decode_settings(bytes(value, "settings")?)?),
            b"c" => {}
            _ => {
                for kind in [ListKind::Allow, ListKind::Block, ListKind::Trusted] {
                    if let Some(text) = name
                        .strip_prefix(kind.as_str().as_bytes())
                        .and_then(|t| t.strip_prefix(b":"))
                    {
                        entries.push((kind, text.to_vec()));
                    }
                }
            }
        }
    }
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    out.lists = entries
        .into_iter()
        .map(|(kind, t)| {
            let text = String::from_utf8(t).map_err(|_| corrupt("list entry is not UTF-8"))?;
            let entry =
                Entry::stored(&text).map_err(|e| corrupt(&format!("list entry {text:?}: {e}")))?;
            Ok((kind, entry))
        })
        .collect::<Result<_, Error>>()?;
    Ok(out)
}

impl RedisStore {
    /// An owner's settings and lists and their version, in one round trip.
    pub async fn policy(&self, owner: &Owner) -> Result<StoredPolicy, Error> {
        let key = policy_key(owner);
        let reply: Value = self
            .bounded("a policy read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        match &reply {
            Value::Map(pairs) => {
                let flat: Vec<Value> = pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect();
                parse_policy(&flat)
            }
            other => parse_policy(array(other, "policy hash")?),
        }
    }

    /// An owner's policy version alone (0: nothing stored): what a poll
    /// compares before reading the whole hash.
    pub async fn policy_version(&self, owner: &Owner) -> Result<u64, Error> {
        let key = policy_key(owner);
        let v: Option<u64> = self
            .bounded("a policy read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGET")
                    .arg(&key)
                    .arg("v")
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// A new id, unique across the cluster and increasing (`INCR`): consent
    /// ids, as `Store::generate_id` gives on sled.
    pub async fn generate_id(&self) -> Result<u64, Error> {
        let id: u64 = self
            .bounded("an id", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("INCR").arg(IDS).query_async(&mut conn).await?)
            })
            .await?;
        self.wait_for(IDS).await?;
        Ok(id)
    }

    /// The user's delivery settings and current consent id (0: not
    /// sharing), if ever set.
    pub async fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        let keys = Keys::of(user);
        let v: Option<Vec<u8>> = self
            .bounded("a settings read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGET")
                    .arg(&keys.policy)
                    .arg("s")
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        v.map(|v| codec::decode_settings(&v)).transpose()
    }

    /// Stores the user's settings and consent id, durably. With
    /// `clear_shared` (a revoke), the user's part of the shared model is
    /// dropped in the same script — no click can land in it between the
    /// two — and the shared model's readers are told, so each drops
    /// exactly that part at its next [`RedisStore::refresh_shared`].
    pub async fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        let keys = Keys::of(user);
        let part = PartKeys::of(&Owner::User(user.clone()));
        let encoded = codec::encode_settings(settings, consent);
        let version: u64 = self
            .bounded("a settings write", async {
                let mut call = self.scripts.policy.prepare_invoke();
                call.key(&keys.policy)
                    .key(&part.meta)
                    .key(&part.journal)
                    .key(&part.snapshot)
                    .arg(encoded)
                    .arg(&consent.to_be_bytes()[..])
                    .arg(if clear_shared { "1" } else { "0" });
                self.invoke(POLICY, &call).await
            })
            .await?;
        self.wait_replicas(&keys).await?;
        if clear_shared {
            self.note_part(&Owner::User(user.clone()), version).await?;
        }
        Ok(())
    }

    /// Every entry on one list, in the order the sled store gives (by the
    /// entry's text, bytewise).
    pub async fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        let key = policy_key(owner);
        let fields: Vec<Value> = self
            .bounded("a list read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HKEYS").arg(&key).query_async(&mut conn).await?)
            })
            .await?;
        let prefix = format!("{}:", kind.as_str());
        let mut texts = Vec::new();
        for f in &fields {
            let f = bytes(f, "policy field")?;
            if let Some(text) = f.strip_prefix(prefix.as_bytes()) {
                texts.push(text.to_vec());
            }
        }
        texts.sort();
        texts
            .into_iter()
            .map(|t| {
                let text = String::from_utf8(t).map_err(|_| corrupt("list entry is not UTF-8"))?;
                Entry::stored(&text).map_err(|e| corrupt(&format!("list entry {text:?}: {e}")))
            })
            .collect()
    }

    /// Adds (`present`) or removes an entry durably; returns whether the
    /// list changed. Waits for the replicas even when nothing changed:
    /// "already there" may rest on another replica's change that is not
    /// replicated yet (as the sled store flushes).
    pub async fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        let key = policy_key(owner);
        let field = list_field(kind, entry);
        let changed: i64 = self
            .bounded("a list write", async {
                let mut call = self.scripts.list.prepare_invoke();
                call.key(&key)
                    .arg(&field)
                    .arg(if present { "1" } else { "0" });
                self.invoke(LIST, &call).await
            })
            .await?;
        self.wait_for(&key).await?;
        Ok(changed == 1)
    }
}

//! Per-user export and import over the cluster (ExportUser, ImportUser):
//! the same export format as the sled store's (`store::export`), so a user
//! moves between a sled server and a Redis Cluster in either direction.
//!
//! Each ledger entry keeps its click time both ways, and a click folded
//! past the undo window stays folded (label and time), so the undo window
//! goes on where it stood on the source.

use redis::Value;

use super::window::{Stored, decode_stored, encode_folded, encode_ledger};
use super::{Keys, LIST, POLICY, RedisStore, array, bytes, corrupt};
use crate::error::Error;
use crate::store::LedgerEntry;
use crate::store::codec;
use crate::store::export::{Learned, UserExport};
use crate::types::{MessageId, Owner, UserId};

/// Ledger entries or decisions written per round trip on import.
const CHUNK: usize = 256;

impl RedisStore {
    /// Everything stored for the user, as the export format carries it:
    /// the model (journal folded in), settings, lists, every ledger entry,
    /// every kept decision.
    pub async fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        let keys = Keys::of(user);
        let model = self
            .load_model(user)
            .await?
            .map(|held| codec::encode_snapshot(&held.model, 0));
        let policy = self.policy(&Owner::User(user.clone())).await?;
        let entries: Vec<Value> = self
            .bounded("a ledger export", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGETALL")
                    .arg(&keys.ledger)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let mut ledger = ledger_entries(&entries, self.window.cutoffs().now_s)?;
        ledger.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let decisions = self.log().read_decisions(user).await?;
        Ok(UserExport {
            user: Some(user.clone()),
            model,
            settings: policy.settings.map(|(s, _)| s),
            lists: policy.lists,
            ledger,
            decisions,
        })
    }

    /// Every kept decision of the user's, oldest first: (time ms, JSON).
    /// Called on the store that holds the log ([`RedisStore::log`]).
    pub(super) async fn read_decisions(&self, user: &UserId) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let keys = Keys::of(user);
        let records: Vec<Value> = self
            .bounded("a decision export", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("XRANGE")
                    .arg(&keys.decisions)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let mut decisions = Vec::with_capacity(records.len());
        for record in &records {
            let parts = array(record, "decision record")?;
            let id = bytes(
                parts.first().ok_or_else(|| corrupt("decision record"))?,
                "id",
            )?;
            let fields = array(
                parts.get(1).ok_or_else(|| corrupt("decision record"))?,
                "decision fields",
            )?;
            if let [_, json] = fields {
                decisions.push((
                    super::decisions::id_ms(id)?,
                    bytes(json, "decision")?.to_vec(),
                ));
            }
        }
        Ok(decisions)
    }

    /// Writes an export for a user with nothing stored (the engine checks):
    /// ledger entries and decisions first, in chunks; then settings and
    /// lists; the model last, which makes the user visible to every
    /// replica's next read. Not one atomic step (as on sled): an import
    /// cut short is imported again with `replace`. Durable (`WAIT`) when
    /// it returns. Entries lose their shared ids, as on sled.
    pub async fn write_user_import(
        &self,
        user: &UserId,
        e: &UserExport,
        consent: u64,
    ) -> Result<(), Error> {
        let keys = Keys::of(user);
        for chunk in e.ledger.chunks(CHUNK) {
            // The ledger, and the undo window's index of entries that
            // still carry tokens (`window.rs`), in one round trip.
            let mut pipe = redis::pipe();
            let mut values = redis::cmd("HSET");
            values.arg(&keys.ledger);
            let (mut clicks, mut delivered) = (Vec::new(), Vec::new());
            for (id, time_s, learned) in chunk {
                let value = match learned {
                    Learned::Live(entry) => {
                        let entry = LedgerEntry {
                            shared: 0,
                            ..entry.clone()
                        };
                        let index = if entry.implicit {
                            &mut delivered
                        } else {
                            &mut clicks
                        };
                        index.push((*time_s, id.as_str()));
                        encode_ledger(&entry, *time_s)
                    }
                    Learned::Folded(label) => encode_folded(*label, *time_s),
                };
                values.arg(id.as_str()).arg(value);
            }
            pipe.add_command(values).ignore();
            for (key, index) in [(&keys.times, &clicks), (&keys.delivered_times, &delivered)] {
                if !index.is_empty() {
                    pipe.cmd("ZADD").arg(key).arg(index).ignore();
                }
            }
            self.bounded("an import", async {
                let mut conn = self.conn.clone();
                let _: () = pipe.query_async(&mut conn).await?;
                Ok(())
            })
            .await?;
        }
        for chunk in e.decisions.chunks(CHUNK) {
            self.append_decisions(chunk.iter().map(|(t, json)| (user, *t, json.as_slice())))
                .await?;
        }
        if e.settings.is_some() || consent != 0 {
            let settings = e.settings.clone().unwrap_or_default();
            let mut call = self.scripts.policy.prepare_invoke();
            call.key(&keys.policy)
                .key(&keys.part.meta)
                .key(&keys.part.journal)
                .key(&keys.part.snapshot)
                .arg(codec::encode_settings(&settings, consent))
                .arg(&consent.to_be_bytes()[..])
                .arg("0");
            self.bounded("an import", async {
                let _: i64 = self.invoke(POLICY, &call).await?;
                Ok(())
            })
            .await?;
        }
        for (kind, entry) in &e.lists {
            let mut call = self.scripts.list.prepare_invoke();
            call.key(&keys.policy)
                .arg(format!("{}:{entry}", kind.as_str()))
                .arg("1");
            self.bounded("an import", async {
                let _: i64 = self.invoke(LIST, &call).await?;
                Ok(())
            })
            .await?;
        }
        if let Some(snapshot) = &e.model {
            let (model, _) = codec::decode_snapshot(snapshot)?;
            let (sw, hw) = model.weights();
            let encoded = codec::encode_snapshot(&model, 1);
            self.bounded("an import", async {
                let mut conn = self.conn.clone();
                let _: () = redis::cmd("SET")
                    .arg(&keys.snapshot)
                    .arg(encoded)
                    .query_async(&mut conn)
                    .await?;
                let _: i64 = redis::cmd("HSET")
                    .arg(&keys.meta)
                    .arg("v")
                    .arg(1)
                    .arg("sv")
                    .arg(1)
                    .arg("sl")
                    .arg(model.spam_learned())
                    .arg("hl")
                    .arg(model.ham_learned())
                    .arg("sw")
                    .arg(sw)
                    .arg("hw")
                    .arg(hw)
                    .query_async(&mut conn)
                    .await?;
                Ok(())
            })
            .await?;
        }
        self.wait_replicas(&keys).await
    }
}

/// A ledger hash's fields and values (`HGETALL`) as export entries, each
/// with its click time, folded clicks as folded (`window.rs`), so the
/// undo window goes on where it stood (an export, a backup's copy). An
/// entry of the 18-byte layout (no time, `window::is_legacy`) is timed
/// `now_s`, as the click script treats it: undoable for a whole window.
pub(super) fn ledger_entries(
    fields: &[Value],
    now_s: u64,
) -> Result<Vec<(MessageId, u64, Learned)>, Error> {
    let mut ledger = Vec::with_capacity(fields.len() / 2);
    for pair in fields.chunks(2) {
        let [id, value] = pair else {
            return Err(corrupt("ledger hash"));
        };
        let id = std::str::from_utf8(bytes(id, "ledger field")?)
            .ok()
            .and_then(|s| MessageId::stored(s).ok())
            .ok_or_else(|| corrupt("ledger field"))?;
        ledger.push(match decode_stored(bytes(value, "ledger value")?, now_s)? {
            Stored::Live { entry, time_s } => (id, time_s, Learned::Live(entry)),
            Stored::Folded { label, time_s } => (id, time_s, Learned::Folded(label)),
        });
    }
    Ok(ledger)
}

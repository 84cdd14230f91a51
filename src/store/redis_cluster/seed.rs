//! The operator's seed over the cluster (SeedShared, ClearSeed): the
//! operator is one more contributor, under the `{o}` tag, whose clicks are
//! seed messages and whose consent id is the seed id. A seed message is
//! the click script (`click.lua`) on the operator's keys: the ledger
//! answers "already seeded" or moves a message to the other label
//! exactly, and the seed's shared part changes in the same step. No model
//! journal is kept for the operator (nothing reads one). A clear is
//! `seed.lua`: a new seed id, the part folded to nothing and the seed's
//! ledger deleted, in one step, so no entry of a cleared seed survives it.

use redis::Value;

use super::{
    ClickOutcome, Clicked, Keys, RedisStore, SEED, Stored, array, bytes, corrupt, int, parse_click,
};
use crate::error::Error;
use crate::store::LedgerEntry;
use crate::types::{MessageId, Owner};

fn seed_id_of(v: &[u8]) -> Result<u64, Error> {
    Ok(u64::from_be_bytes(
        v.try_into().map_err(|_| corrupt("seed id"))?,
    ))
}

impl RedisStore {
    /// The current seed id, if the operator ever seeded.
    pub async fn seed_id(&self) -> Result<Option<u64>, Error> {
        let keys = Keys::operator();
        let v: Option<Vec<u8>> = self
            .bounded("a seed id read", async {
                let mut conn = self.conn.clone();
                Ok(redis::cmd("HGET")
                    .arg(&keys.policy)
                    .arg("c")
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        v.map(|v| seed_id_of(&v)).transpose()
    }

    /// Makes `id` the seed id — only if there is none yet, unless
    /// `clear`, which also drops the whole seed (module docs) and tells
    /// the shared model's readers. Returns the seed id now in effect
    /// (another replica's, if it seeded first). Durable (`WAIT`).
    pub async fn set_seed_id(&self, id: u64, clear: bool) -> Result<u64, Error> {
        let keys = Keys::operator();
        let reply: Value = self
            .bounded("a seed id write", async {
                let mut call = self.scripts.seed.prepare_invoke();
                call.key(&keys.policy)
                    .key(&keys.part.meta)
                    .key(&keys.part.journal)
                    .key(&keys.part.snapshot)
                    .key(&keys.meta)
                    .key(&keys.ledger)
                    .key(&keys.journal)
                    .key(&keys.snapshot)
                    .arg(&id.to_be_bytes()[..])
                    .arg(if clear { "1" } else { "0" });
                self.invoke(SEED, &call).await
            })
            .await?;
        let [now, part_version] = array(&reply, "seed reply")? else {
            return Err(corrupt("seed reply"));
        };
        let now = seed_id_of(bytes(now, "seed id")?)?;
        let part_version = int(part_version, "part version")?;
        self.wait_replicas(&keys).await?;
        if part_version > 0 {
            self.note_part(&Owner::Operator, part_version).await?;
        }
        Ok(now)
    }

    /// Seeds one message (the click script on the operator's keys):
    /// LEARNED, ALREADY_LEARNED or RELEARNED as a click; shared under the
    /// seed id the script reads. Durable (`WAIT`), then noted for the
    /// shared model's readers. Call [`RedisStore::set_seed_id`] first.
    pub async fn seed(&self, msg: &MessageId, entry: &LedgerEntry) -> Result<Clicked, Error> {
        let keys = Keys::operator();
        let mut entry = entry.clone();
        entry.implicit = false;
        let reply = self.run_click_waited(&keys, msg, Some(&entry), "").await?;
        let raw = parse_click(&reply)?;
        if raw.sharing && raw.part_version > 0 {
            self.note_part(&Owner::Operator, raw.part_version).await?;
        }
        let outcome = match (raw.code, raw.previous) {
            (1, Some(_)) => ClickOutcome::AlreadyLearned,
            (2, None) => ClickOutcome::Learned,
            (3, Some(_)) => ClickOutcome::Relearned,
            _ => return Err(corrupt("seed reply")),
        };
        raw.with_outcome(outcome)
    }

    /// What the seed's ledger holds for this message.
    pub async fn seed_ledger_get(&self, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        match self.ledger_stored(&Keys::operator(), msg).await? {
            None => Ok(None),
            Some(Stored::Live { entry, .. }) => Ok(Some(entry)),
            // The seed has no undo window: nothing of it is ever folded.
            Some(Stored::Folded { .. }) => Err(corrupt("a folded entry in the seed's ledger")),
        }
    }
}

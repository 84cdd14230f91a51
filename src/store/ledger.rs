//! The ledger (which messages a user or the seed learned, and how) and the
//! journal of count changes: a click is one atomic batch of both.

use sled::Batch;

use super::Store;
use super::codec::{self, LedgerEntry, Op};
use super::keys::*;
use crate::error::Error;
use crate::types::{MessageId, Owner, UserId};

impl Store {
    /// What was learned for this message, if anything.
    pub fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        self.contributor_ledger_get(&Owner::User(user.clone()), msg)
    }

    /// A user's or the operator's (seed) ledger entry for this message.
    pub fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        match self.sled_tree.get(ledger_key(who, msg))? {
            Some(bytes) => Ok(Some(codec::decode_ledger(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Records one click atomically: the message's new ledger state (`None`
    /// removes it) and the ops that move the model there. Returns the
    /// journal sequence number. Not durable until [`Store::flush`]. For
    /// tests and benches that write a user's records directly; the engine
    /// writes clicks with `record_click`.
    pub fn record(
        &self,
        user: &UserId,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
    ) -> Result<u64, Error> {
        self.record_click(&Owner::User(user.clone()), msg, entry, ops, &[])
    }

    /// [`Store::record`] for a user's or the operator's click, with the ops
    /// on the contributor's shared part (`shared_ops`, journalled under the
    /// same sequence number when not empty) in the same atomic batch. The
    /// operator has no model of its own: `ops` must be empty for it.
    pub fn record_click(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error> {
        let (seq, ledger, journal) = self.click_records(who, msg, entry, ops, shared_ops)?;
        let mut batch = Batch::default();
        match ledger {
            (key, Some(value)) => batch.insert(key, value),
            (key, None) => batch.remove(key),
        }
        for (key, value) in journal {
            batch.insert(key, value);
        }
        self.sled_tree.apply_batch(batch)?;
        Ok(seq)
    }

    /// A click's records, keys and values as [`Store::record_click`] writes
    /// them (shared with [`super::ReplayStore`], which batches them): its
    /// sequence number, the ledger key and new value (`None`: removed),
    /// and the journal records.
    #[allow(clippy::type_complexity)]
    pub(super) fn click_records(
        &self,
        who: &Owner,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<(u64, (Vec<u8>, Option<Vec<u8>>), Vec<(Vec<u8>, Vec<u8>)>), Error> {
        // sled's id generator is monotonic across restarts, so sequence
        // numbers order every user's journal without per-user counters.
        let seq = self.generate_id()?;
        let ledger = (ledger_key(who, msg), entry.map(codec::encode_ledger));
        let mut journal = Vec::with_capacity(2);
        if let Owner::User(user) = who {
            journal.push((journal_key(user, seq), codec::encode_ops(ops)));
        }
        if !shared_ops.is_empty() {
            journal.push((
                contribution_journal_key(who, seq),
                codec::encode_ops(shared_ops),
            ));
        }
        Ok((seq, ledger, journal))
    }

    /// The ledger entry stored under a raw ledger key.
    pub(super) fn ledger_at(&self, key: &[u8]) -> Result<Option<LedgerEntry>, Error> {
        match self.sled_tree.get(key)? {
            Some(bytes) => Ok(Some(codec::decode_ledger(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A fresh id, larger than every id handed out before (also across
    /// restarts): consent and seed ids.
    pub fn generate_id(&self) -> Result<u64, Error> {
        Ok(self
            .db
            .generate_id()?
            .saturating_add(1)
            .saturating_add(self.id_offset))
    }
}

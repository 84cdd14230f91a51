//! The ledger (which messages a user or the seed learned, and how) and the
//! journal of count changes: a click is one atomic batch of both.

use sled::Batch;

use super::Store;
use super::codec::{self, LedgerEntry, Op};
use super::dict::{Dict, describe};
use super::keys::*;
use crate::error::Error;
use crate::types::{MessageId, Owner, UserId};

/// A ledger entry that does not read back: names it and what to do.
fn damaged_ledger(who: &Owner, msg: &MessageId, e: Error) -> Error {
    Error::Corrupt {
        what: format!(
            "ledger entry of {} for message {msg}: {}; that click cannot be undone or \
             relearned until the entry is restored from a backup",
            describe(who),
            super::dict::what(e)
        ),
    }
}

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
        let key = ledger_key(who, msg);
        let Some(value) = self.ledger_raw(&key)? else {
            return Ok(None);
        };
        let decode = |dict: Option<&Dict>| {
            codec::decode_ledger_any(&key, &value, dict).map_err(|e| damaged_ledger(who, msg, e))
        };
        if codec::ledger_is_v6(&value) {
            self.with_dict(who, |dict| decode(Some(dict))).map(Some)
        } else {
            decode(None).map(Some)
        }
    }

    /// The stored bytes under a ledger key, pending clicks first.
    fn ledger_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(pending) = &self.pending {
            match pending.lock().ledger(key) {
                Some(Some(bytes)) => return Ok(Some(bytes.to_vec())),
                Some(None) => return Ok(None),
                None => {}
            }
        }
        Ok(self.sled_tree.get(key)?.map(|v| v.to_vec()))
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
        // sled's id generator is monotonic across restarts, so sequence
        // numbers order every user's journal without per-user counters.
        let seq = self.db.generate_id()?.saturating_add(1);
        self.with_dict(who, |dict| {
            // Number every id this click writes by number; new numbers go
            // to disk in the click's own batch.
            let before = dict.len();
            let user_ops = if matches!(who, Owner::User(_)) {
                ops
            } else {
                &[]
            };
            let ids = entry
                .iter()
                .flat_map(|e| e.tokens.iter())
                .chain(user_ops.iter().flat_map(|op| match op {
                    Op::Learn(_, _, ids) | Op::Unlearn(_, _, ids) => ids.iter(),
                }));
            dict.extend(ids.copied()).ok_or_else(|| Error::Corrupt {
                what: format!("token dictionary of {} is full", describe(who)),
            })?;
            let mut writes = Vec::with_capacity(3);
            if dict.len() > before {
                let key = dict_key(&contributor_prefix(DICT, who), before);
                let value = codec::encode_dict(&key, &dict.ids()[before..]);
                writes.push((key, value));
            }
            let key = ledger_key(who, msg);
            if let Owner::User(user) = who {
                // The entry this click replaces may be named by a journal
                // pointer not yet folded: make that record explicit first.
                if let Some(prev) = self.ledger_raw(&key)? {
                    if let Some(fix) = self.explicit_pointer(user, &key, &prev, dict)? {
                        writes.push(fix);
                    }
                }
                let jkey = journal_key(user, seq);
                let first_learn = match (entry, ops) {
                    (Some(e), [Op::Learn(label, weight, ids)]) => {
                        *label == e.label && *weight == e.weight && *ids == e.tokens
                    }
                    _ => false,
                };
                let value = if first_learn {
                    codec::encode_learn_pointer(&jkey, msg.as_str().as_bytes())
                } else {
                    codec::encode_ops_v6(&jkey, ops, dict)
                };
                writes.push((jkey, value));
            }
            let value = entry.map(|e| codec::encode_ledger_v6(&key, e, seq, dict));
            let ledger = (key, value);
            if !shared_ops.is_empty() {
                writes.push((
                    contribution_journal_key(who, seq),
                    codec::encode_ops(shared_ops),
                ));
            }
            if let Some(pending) = &self.pending {
                // Pending writes are kept until sled takes them (even if
                // this apply fails), so the numbers stay.
                let mut pending = pending.lock();
                if pending.push(ledger, writes) {
                    self.apply(&mut pending)?;
                }
                return Ok(seq);
            }
            let mut batch = Batch::default();
            match ledger {
                (key, Some(value)) => batch.insert(key, value),
                (key, None) => batch.remove(key),
            }
            for (key, value) in writes {
                batch.insert(key, value);
            }
            if let Err(e) = self.sled_tree.apply_batch(batch) {
                dict.truncate(before);
                return Err(e.into());
            }
            Ok(seq)
        })
    }

    /// If the ledger entry `prev` (under `key`) was written by a click whose
    /// journal record is still a pointer to it, that record rewritten with
    /// the ops it stands for (to go in the batch that changes the entry).
    fn explicit_pointer(
        &self,
        user: &UserId,
        key: &[u8],
        prev: &[u8],
        dict: &Dict,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        let Some(seq) = codec::ledger_seq(key, prev)? else {
            return Ok(None);
        };
        let jkey = journal_key(user, seq);
        let Some(record) = self.tree()?.get(&jkey)? else {
            return Ok(None);
        };
        if codec::learn_pointer(&jkey, &record)?.is_none() {
            return Ok(None);
        }
        let e = codec::decode_ledger_any(key, prev, Some(dict))?;
        let ops = [Op::Learn(e.label, e.weight, e.tokens)];
        let value = codec::encode_ops_v6(&jkey, &ops, dict);
        Ok(Some((jkey, value)))
    }

    /// A fresh id, larger than every id handed out before (also across
    /// restarts): consent and seed ids.
    pub fn generate_id(&self) -> Result<u64, Error> {
        Ok(self.db.generate_id()?.saturating_add(1))
    }
}

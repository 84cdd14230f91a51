//! The ledger (which messages a user or the seed learned, and how) and the
//! journal of count changes: a click is one atomic batch of both.

use sled::Batch;

use super::Store;
use super::codec::{self, LedgerEntry, Op};
use super::dict::{Dict, describe};
use super::keys::*;
use super::writes::{Click, Writes};
use crate::error::Error;
use crate::types::{MessageId, Owner, UserId};

/// A record to write: key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Whether a ledger record (key, value) is due to be folded, and its label.
type FoldDue<'a> = dyn Fn(&[u8], &[u8]) -> Option<crate::types::Label> + 'a;

/// Unix milliseconds now. Injected ([`Store::set_undo_window`]) so tests
/// control time; the service's clock is the system's.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// A clock that reads `now` (unix milliseconds) each time it is asked.
    pub fn new(now: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(now))
    }

    /// The system's clock.
    pub fn system() -> Self {
        Self::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({} ms)", self.now_ms())
    }
}

/// How long after a click it can still be undone exactly (Forget, or a
/// relearn as the other class): 90 days. Older ledger entries are folded
/// (their tokens dropped), which bounds the ledger's size to the clicks of
/// the window; their counts stay in the model.
pub const DEFAULT_UNDO_WINDOW: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// How long learning from delivered mail (a ledger entry marked implicit)
/// stays undoable: 14 days, then the entry is dropped from the ledger by
/// the same hourly fold and its counts stay. Shorter than a click's
/// window because the entry exists only so that a later click on that
/// mail replaces it exactly, and a click on mail left in the inbox comes
/// within days if at all (DSPAM keeps its retraining signatures 14 days
/// for the same reason); a click after that is taken as a first click,
/// beside the light delivered learning (a twentieth of a message,
/// usually). Meanwhile a trained user's ledger gains an entry per
/// delivered message: 14 days of them instead of 90 (docs/ACCURACY.md).
pub const DEFAULT_DELIVERED_UNDO_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(14 * 86_400);

/// The undo window and the clock it is measured with.
pub(super) struct Undo {
    pub(super) window: std::time::Duration,
    /// Entries of delivered mail ([`DEFAULT_DELIVERED_UNDO_WINDOW`]);
    /// never longer than `window` in effect.
    delivered: std::time::Duration,
    clock: Clock,
}

impl Default for Undo {
    fn default() -> Self {
        Self {
            window: DEFAULT_UNDO_WINDOW,
            delivered: DEFAULT_DELIVERED_UNDO_WINDOW,
            clock: Clock::system(),
        }
    }
}

impl Undo {
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Clicks made before this (unix seconds) are beyond the window.
    pub(super) fn cutoff_s(&self) -> u64 {
        self.now_ms().saturating_sub(self.window.as_millis() as u64) / 1000
    }

    /// Entries of delivered mail learned before this (unix seconds) are
    /// beyond their window.
    pub(super) fn delivered_cutoff_s(&self) -> u64 {
        let window = self.delivered.min(self.window);
        self.now_ms().saturating_sub(window.as_millis() as u64) / 1000
    }

    /// The cutoff for an entry: the delivered one for delivered mail.
    fn cutoff_for_s(&self, implicit: bool) -> u64 {
        if implicit {
            self.delivered_cutoff_s()
        } else {
            self.cutoff_s()
        }
    }
}

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

impl<W: Writes> Store<W> {
    /// What was learned for this message, if anything.
    pub fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        self.contributor_ledger_get(&Owner::User(user.clone()), msg)
    }

    /// Sets the undo window and the clock clicks are timed by (the engine
    /// does, from its settings).
    pub fn set_undo_window(&self, window: std::time::Duration, clock: Clock) {
        let mut undo = self.undo.write();
        undo.window = window;
        undo.clock = clock;
    }

    /// Sets how long entries of delivered mail stay undoable (see
    /// [`DEFAULT_DELIVERED_UNDO_WINDOW`]; at most the undo window).
    pub fn set_delivered_undo_window(&self, window: std::time::Duration) {
        self.undo.write().delivered = window;
    }

    /// A user's or the operator's (seed) ledger entry for this message.
    /// A user's click older than the undo window (folded or not yet) is
    /// [`Error::BeyondUndoWindow`]: it can no longer be undone exactly. A
    /// user's entry learned from delivered mail ([`LedgerEntry::implicit`])
    /// older than the window reads as `None`: the fold drops it and keeps
    /// its counts ([`Store::fold_ledger`]), so a click on that mail is a
    /// first click, not one refused.
    pub fn contributor_ledger_get(
        &self,
        who: &Owner,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        let key = ledger_key(who, msg);
        let Some(value) = self.ledger_raw(&key)? else {
            return Ok(None);
        };
        if let Owner::User(_) = who {
            let (label, facts) =
                codec::ledger_facts(&key, &value).map_err(|e| damaged_ledger(who, msg, e))?;
            let undo = self.undo.read();
            let time_s = facts.time_s.unwrap_or(self.legacy_time_s);
            if facts.implicit && time_s < undo.delivered_cutoff_s() {
                return Ok(None);
            }
            if facts.folded || time_s < undo.cutoff_s() {
                return Err(Error::BeyondUndoWindow {
                    message_id: msg.to_string(),
                    label,
                    window: undo.window,
                });
            }
        }
        let decode = |dict: Option<&Dict>| {
            codec::decode_ledger_any(&key, &value, dict).map_err(|e| damaged_ledger(who, msg, e))
        };
        if codec::ledger_is_v6(&value) {
            self.with_dict(who, |dict| decode(Some(dict))).map(Some)
        } else {
            decode(None).map(Some)
        }
    }

    /// Whether the user's ledger holds anything for this message (a click
    /// or delivered mail, of any age, folded or not): what learning from
    /// delivered mail must not learn twice (`Engine::learn_delivered`).
    pub fn ledger_contains(&self, user: &UserId, msg: &MessageId) -> Result<bool, Error> {
        Ok(self
            .ledger_raw(&ledger_key(&Owner::User(user.clone()), msg))?
            .is_some())
    }

    /// The stored bytes under a ledger key, held clicks first
    /// (`W::held_ledger`).
    fn ledger_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(held) = self.writes.held_ledger(key) {
            return Ok(held);
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
        let seq = self.generate_id()?;
        let now_s = self.undo.read().now_ms() / 1000;
        self.with_dict(who, |dict| {
            // Number every id this click writes by number; new numbers go
            // to disk in the click's own batch.
            let before = dict.len();
            // A first click's one op learns the entry's own ids (the
            // journal then holds a pointer to the entry): numbering them
            // once is enough.
            let first_learn = match (entry, ops) {
                (Some(e), [op]) => op.learns_entry(e),
                _ => false,
            };
            let user_ops = if matches!(who, Owner::User(_)) && !first_learn {
                ops
            } else {
                &[]
            };
            let ids = entry
                .iter()
                .flat_map(|e| e.tokens.iter())
                .chain(user_ops.iter().flat_map(|op| op.parts().3.iter()));
            if dict.extend(ids.copied()).is_none() {
                // Numbers given before it filled never reach disk.
                dict.truncate(before);
                return Err(Error::Corrupt {
                    what: format!("token dictionary of {} is full", describe(who)),
                });
            }
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
                if let Some(prev) = self.ledger_raw(&key)?
                    && let Some(fix) = self.explicit_pointer(user, &key, &prev, dict)?
                {
                    writes.push(fix);
                }
                let jkey = journal_key(user, seq);
                // A pointer replays as `Op::learn_entry` of the entry
                // (marked when it is delivered mail's): only that op.
                let value = if first_learn {
                    codec::encode_learn_pointer(&jkey, msg.as_str().as_bytes())
                } else {
                    codec::encode_ops_v6(&jkey, ops, dict)
                };
                writes.push((jkey, value));
            }
            let value = entry.map(|e| codec::encode_ledger_v6(&key, e, seq, now_s, dict));
            let ledger = (key, value);
            if !shared_ops.is_empty() {
                writes.push((
                    contribution_journal_key(who, seq),
                    codec::encode_ops(shared_ops),
                ));
            }
            // A replay store holds the click back (`replay.rs`); an error
            // there leaves it held, so the numbers stay.
            let Some(Click { ledger, writes }) = self
                .writes
                .hold(&self.sled_tree, Click { ledger, writes })?
            else {
                return Ok(seq);
            };
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
    ) -> Result<Option<KeyValue>, Error> {
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
        let ops = [Op::learn_entry(e)];
        let value = codec::encode_ops_v6(&jkey, &ops, dict);
        Ok(Some((jkey, value)))
    }

    /// Folds every user's ledger entries older than the undo window: each
    /// becomes its label and time without its tokens (so a Forget can say
    /// it is too old), in batches of up to `DELETE_CHUNK` entries of one
    /// user, each under that user's dictionary lock (no click of theirs
    /// interleaves) and with any journal pointer to it made explicit in the
    /// same batch. The counts stay. Entries learned from delivered mail
    /// (not clicks) are removed instead: their counts stay too, and a later
    /// click on that mail learns as a first click. Returns how many entries
    /// were folded or removed.
    /// Runs in the background (the decision log's hourly sweep), never on
    /// a request's path.
    pub fn fold_ledger(&self) -> Result<u64, Error> {
        let cutoffs_s = {
            let undo = self.undo.read();
            [undo.cutoff_for_s(false), undo.cutoff_for_s(true)]
        };
        let legacy = self.legacy_time_s;
        let due = |key: &[u8], value: &[u8]| match codec::ledger_facts(key, value) {
            Ok((label, facts)) => {
                let cutoff_s = cutoffs_s[usize::from(facts.implicit)];
                (!facts.folded && facts.time_s.unwrap_or(legacy) < cutoff_s).then_some(label)
            }
            // Damaged entries are reported when read; folding leaves them.
            Err(_) => None,
        };
        let end = prefix_end(&[LEDGER]);
        let mut from = vec![LEDGER];
        let mut folded = 0u64;
        loop {
            let mut run: Option<(Owner, Vec<Vec<u8>>)> = None;
            let mut next = None;
            for item in self.tree()?.range(from.clone()..end.clone()) {
                let (key, value) = item?;
                let (who, _) = decode_contributor(&key)?;
                if !matches!(who, Owner::User(_)) {
                    continue;
                }
                if let Some((owner, keys)) = &run
                    && (*owner != who || keys.len() >= super::DELETE_CHUNK)
                {
                    next = Some(key.to_vec());
                    break;
                }
                if due(&key, &value).is_some() {
                    run.get_or_insert_with(|| (who, Vec::new()))
                        .1
                        .push(key.to_vec());
                }
            }
            if let Some((who, keys)) = run {
                folded += self.fold_entries(&who, &keys, &due)?;
            }
            match next {
                Some(key) => from = key,
                None => return Ok(folded),
            }
        }
    }

    fn fold_entries(&self, who: &Owner, keys: &[Vec<u8>], due: &FoldDue) -> Result<u64, Error> {
        let Owner::User(user) = who else {
            return Ok(0);
        };
        self.with_dict(who, |dict| {
            let mut batch = Batch::default();
            let mut n = 0;
            for key in keys {
                // Read again under the lock: a click may have changed it.
                let Some(value) = self.tree()?.get(key)? else {
                    continue;
                };
                let Some(label) = due(key, &value) else {
                    continue;
                };
                let (_, facts) = codec::ledger_facts(key, &value)?;
                if let Some((jkey, ops)) = self.explicit_pointer(user, key, &value, dict)? {
                    batch.insert(jkey, ops);
                }
                let time_s = facts.time_s.unwrap_or(self.legacy_time_s);
                if facts.implicit {
                    // Delivered mail nobody clicked: nothing to refuse later,
                    // so nothing to keep (see `contributor_ledger_get`).
                    batch.remove(key.as_slice());
                } else {
                    batch.insert(
                        key.as_slice(),
                        codec::encode_ledger_folded(key, label, time_s),
                    );
                }
                n += 1;
            }
            self.tree()?.apply_batch(batch)?;
            Ok(n)
        })
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

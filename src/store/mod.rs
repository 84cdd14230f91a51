//! Durable storage: the only module that names sled.
//!
//! # Layout (one sled tree; the first key byte says what a record is)
//!
//! | key                                    | value                                  |
//! |----------------------------------------|----------------------------------------|
//! | `F`                                    | [`FORMAT_VERSION`] (u32 BE)            |
//! | `L` · user · message id                | label + the message's token ids        |
//! | `J` · user · sequence number (u64 BE)  | the click's learn/unlearn [`Op`]s      |
//! | `M` · user                             | compact model snapshot + last sequence |
//!
//! where `user` is the id's length (u16 BE) then its bytes, so one user's
//! records of a kind are a contiguous range that no other user's id can
//! prefix. One tree makes a plain `apply_batch` the atomic unit of a click
//! (sled transactions may re-run their closure and cost more).
//!
//! # Why this shape
//!
//! A click writes two keys in one atomic `apply_batch` — its ledger entry and
//! a journal record — never one read-modify-write per token (≈13 µs each
//! here, which would cap training near 185 messages/s per core). Models live
//! in memory for scoring (no sled `get` per token on the hot path); on disk a
//! model is its last snapshot plus the journal records after it. Every
//! [`CHECKPOINT_EVERY`] clicks the engine folds the journal into a new
//! snapshot, in one batch that also deletes the folded records. The ledger is
//! the source of truth for *what* was learned; it is what exact relearn and
//! Forget read.
//!
//! # Durability
//!
//! [`Store::flush`] makes every preceding write survive a crash of the
//! process (sled's flush; on Linux `sync_file_range`). sled's background
//! flusher fsyncs every 500 ms, which bounds what a power loss can take. The
//! engine acknowledges a click only after `flush` returns.

mod codec;

use std::path::Path;

use sled::{Batch, Db, Tree};

use crate::classify::Model;
use crate::error::Error;
use crate::types::{MessageId, UserId};

pub use codec::{LedgerEntry, Op};

/// On-disk format; bumped on any incompatible change to keys or codecs.
pub const FORMAT_VERSION: u32 = 2;

/// Clicks between model snapshots: bounds both journal replay at load
/// (≤ this many records) and the snapshot cost per click (amortised).
pub const CHECKPOINT_EVERY: u64 = 256;

/// A model as loaded from disk, with the position its state reflects.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    /// Sequence number of the last journal record folded in (0 if none).
    pub last_seq: u64,
    /// Journal records after the snapshot (replayed into `model`).
    pub unsnapshotted: u64,
}

/// The open database. Cheap to share: sled handles are reference-counted.
#[derive(Clone)]
pub struct Store {
    db: Db,
    tree: Tree,
}

const FORMAT_KEY: &[u8] = b"F";
const LEDGER: u8 = b'L';
const JOURNAL: u8 = b'J';
const MODEL: u8 = b'M';

fn user_prefix(kind: u8, user: &UserId) -> Vec<u8> {
    let id = user.as_str().as_bytes();
    let mut k = Vec::with_capacity(3 + id.len() + 16);
    k.push(kind);
    // UserId guarantees ≤ 256 bytes, so the length fits in u16.
    k.extend_from_slice(&(id.len() as u16).to_be_bytes());
    k.extend_from_slice(id);
    k
}

fn ledger_key(user: &UserId, msg: &MessageId) -> Vec<u8> {
    let mut k = user_prefix(LEDGER, user);
    k.extend_from_slice(msg.as_str().as_bytes());
    k
}

fn journal_key(user: &UserId, seq: u64) -> Vec<u8> {
    let mut k = user_prefix(JOURNAL, user);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Opens (creating if needed) the database in `path`. `cache_bytes` bounds
    /// sled's page cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .map_err(open_err)?;
        let tree = db.open_tree("chaff").map_err(open_err)?;
        match tree.get(FORMAT_KEY).map_err(open_err)? {
            None => {
                tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(open_err)?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(Error::Corrupt {
                    what: format!(
                        "data directory {} has format {:?}; this chaff reads format {FORMAT_VERSION}",
                        path.display(),
                        v.as_ref()
                    ),
                });
            }
        }
        Ok(Self { db, tree })
    }

    /// The user's model (snapshot plus journal replay), or `None` for a user
    /// with nothing stored.
    pub fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        let snapshot = self.tree.get(user_prefix(MODEL, user))?;
        let (mut model, mut last_seq) = match &snapshot {
            Some(bytes) => codec::decode_snapshot(bytes)?,
            None => (Model::default(), 0),
        };
        let mut unsnapshotted = 0;
        let start = journal_key(user, last_seq.saturating_add(1));
        let end = journal_key(user, u64::MAX);
        for item in self.tree.range(start..=end) {
            let (key, value) = item?;
            for op in codec::decode_ops(&value)? {
                op.apply(&mut model);
            }
            let seq_bytes = &key[key.len() - 8..];
            last_seq =
                u64::from_be_bytes(seq_bytes.try_into().expect("journal key ends in 8 bytes"));
            unsnapshotted += 1;
        }
        if snapshot.is_none() && unsnapshotted == 0 {
            return Ok(None);
        }
        Ok(Some(LoadedModel {
            model,
            last_seq,
            unsnapshotted,
        }))
    }

    /// What was learned for this message, if anything.
    pub fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        match self.tree.get(ledger_key(user, msg))? {
            Some(bytes) => Ok(Some(codec::decode_ledger(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Records one click atomically: the message's new ledger state (`None`
    /// removes it) and the ops that move the model there. Returns the
    /// journal sequence number. Not durable until [`Store::flush`].
    pub fn record(
        &self,
        user: &UserId,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
    ) -> Result<u64, Error> {
        // sled's id generator is monotonic across restarts, so sequence
        // numbers order every user's journal without per-user counters.
        let seq = self.db.generate_id()?.saturating_add(1);
        let mut batch = Batch::default();
        match entry {
            Some(e) => batch.insert(ledger_key(user, msg), codec::encode_ledger(e)),
            None => batch.remove(ledger_key(user, msg)),
        }
        batch.insert(journal_key(user, seq), codec::encode_ops(ops));
        self.tree.apply_batch(batch)?;
        Ok(seq)
    }

    /// Folds the journal up to `last_seq` into a snapshot of `model`, and
    /// deletes the folded records, atomically.
    pub fn checkpoint(&self, user: &UserId, model: &Model, last_seq: u64) -> Result<(), Error> {
        let snapshot = codec::encode_snapshot(model, last_seq);
        let mut batch = Batch::default();
        for item in self
            .tree
            .range(journal_key(user, 0)..=journal_key(user, last_seq))
        {
            let (key, _) = item?;
            batch.remove(key);
        }
        batch.insert(user_prefix(MODEL, user), snapshot);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Makes every write so far survive a process crash.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

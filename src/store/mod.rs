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
//! | `S` · user                             | delivery settings (mode, thresholds)   |
//! | `W` · user · list kind · entry         | an allow/block list entry (empty value)|
//! | `W` · 0u16 · list kind · entry         | an operator-wide list entry            |
//! | `D` · user · time (ms, BE) · sequence  | a score decision (JSON), for support   |
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
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{MessageId, UserId};

pub use codec::{LedgerEntry, Op};

/// On-disk format; bumped on any incompatible change to keys or codecs.
/// Format 4 counts a message as 64 weight units (`classify::Weight::FULL`);
/// format 3 counted it as 8 (upgraded at open: [`Store::open`]).
pub const FORMAT_VERSION: u32 = 4;

/// Older formats this version reads (and upgrades by rewriting `F`):
/// format 2 had no weights, settings, lists or decisions; its records
/// decode as full-weight (see `codec`).
const READABLE_FORMATS: [u32; 1] = [2];

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
const SETTINGS: u8 = b'S';
const LIST: u8 = b'W';
const DECISION: u8 = b'D';

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

/// Whose list: a user's, or the operator's (encoded as a zero-length user
/// id, which no real user id can be).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListOwner {
    User(UserId),
    Operator,
}

fn list_prefix(owner: &ListOwner, kind: ListKind) -> Vec<u8> {
    let mut k = match owner {
        ListOwner::User(user) => user_prefix(LIST, user),
        ListOwner::Operator => vec![LIST, 0, 0],
    };
    k.push(kind.to_byte());
    k
}

fn decision_key(user: &UserId, time_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = user_prefix(DECISION, user);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Format 3 wrote explicit weights and snapshot counts in eighths of a
/// message; format 4 in [`classify::Weight::FULL`] units. Every ledger,
/// journal and snapshot record is rewritten and the format key set in one
/// atomic batch, so a crash leaves the directory wholly in one format (a
/// per-record upgrade could not tell, after a crash, which records were
/// already scaled).
fn upgrade_format_3(tree: &Tree) -> Result<(), Error> {
    let mut batch = Batch::default();
    let mut rewritten = 0u64;
    for kind in [LEDGER, JOURNAL, MODEL] {
        for item in tree.scan_prefix([kind]) {
            let (key, value) = item?;
            let upgraded = codec::upgrade_format_3(kind, &value)?;
            if upgraded != value.as_ref() {
                batch.insert(key, upgraded);
                rewritten += 1;
            }
        }
    }
    batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
    tree.apply_batch(batch)?;
    tree.flush()?;
    tracing::info!(
        rewritten,
        "upgraded data directory from format 3 to {FORMAT_VERSION}"
    );
    Ok(())
}

/// The end of a key range that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xFF);
    end
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
            Some(v) if v.as_ref() == 3u32.to_be_bytes() => {
                upgrade_format_3(&tree).map_err(|e| Error::Corrupt {
                    what: format!(
                        "upgrading data directory {} from format 3: {e}",
                        path.display()
                    ),
                })?;
            }
            Some(v)
                if READABLE_FORMATS
                    .iter()
                    .any(|old| v.as_ref() == old.to_be_bytes()) =>
            {
                tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(open_err)?;
            }
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

    /// The user's delivery settings, if ever set.
    pub fn settings(&self, user: &UserId) -> Result<Option<UserSettings>, Error> {
        match self.tree.get(user_prefix(SETTINGS, user))? {
            Some(bytes) => Ok(Some(codec::decode_settings(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores the user's settings durably (flushes).
    pub fn put_settings(&self, user: &UserId, settings: &UserSettings) -> Result<(), Error> {
        self.tree.insert(
            user_prefix(SETTINGS, user),
            codec::encode_settings(settings),
        )?;
        self.flush()
    }

    /// Every entry on one list, in key order.
    pub fn list_entries(&self, owner: &ListOwner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        let prefix = list_prefix(owner, kind);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (key, _) = item?;
            let text = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| Error::Corrupt {
                what: "list entry is not UTF-8".into(),
            })?;
            out.push(text.parse::<Entry>().map_err(|e| Error::Corrupt {
                what: format!("list entry {text:?}: {e}"),
            })?);
        }
        Ok(out)
    }

    /// Adds (`present`) or removes an entry durably; returns whether the
    /// list changed.
    pub fn set_list_entry(
        &self,
        owner: &ListOwner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        let mut key = list_prefix(owner, kind);
        key.extend_from_slice(entry.to_string().as_bytes());
        let changed = if present {
            self.tree.insert(key, &[][..])?.is_none()
        } else {
            self.tree.remove(key)?.is_some()
        };
        if changed {
            self.flush()?;
        }
        Ok(changed)
    }

    /// Appends decisions (not flushed: the log is for support, and sled's
    /// background flush bounds what a crash loses to ~500 ms).
    pub fn append_decisions<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a UserId, u64, &'a [u8])>,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        for (user, time_ms, json) in records {
            let seq = self.db.generate_id()?;
            batch.insert(decision_key(user, time_ms, seq), json);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The user's decisions from `since_ms` to `until_ms` (inclusive), newest
    /// first, as `read` decodes them (`None` skips a record), at most `limit`.
    pub fn find_decisions<T>(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        mut read: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    ) -> Result<Vec<T>, Error> {
        let start = decision_key(user, since_ms, 0);
        let end = decision_key(user, until_ms, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(start..=end).rev() {
            let (_, value) = item?;
            if let Some(found) = read(&value)? {
                out.push(found);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the user's decisions older than `before_ms` and all but the
    /// newest `keep`. Returns how many were deleted.
    pub fn trim_decisions(
        &self,
        user: &UserId,
        before_ms: u64,
        keep: usize,
    ) -> Result<usize, Error> {
        let prefix = user_prefix(DECISION, user);
        let mut batch = Batch::default();
        let mut deleted = 0;
        for (i, item) in self.tree.scan_prefix(&prefix).rev().enumerate() {
            let (key, _) = item?;
            let time = u64::from_be_bytes(key[prefix.len()..prefix.len() + 8].try_into().map_err(
                |_| Error::Corrupt {
                    what: "decision key".into(),
                },
            )?);
            if i >= keep || time < before_ms {
                batch.remove(key);
                deleted += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(deleted)
    }

    /// Every user with a decision older than `before_ms`, for the periodic
    /// retention sweep (one key read per user, skipping over their range).
    pub fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        let mut from = vec![DECISION];
        loop {
            let Some(item) = self
                .tree
                .range(from.clone()..prefix_end(&[DECISION]))
                .next()
            else {
                break;
            };
            let (key, _) = item?;
            let bad = || Error::Corrupt {
                what: "decision key".into(),
            };
            let len = usize::from(u16::from_be_bytes(
                key.get(1..3).ok_or_else(bad)?.try_into().unwrap(),
            ));
            let id =
                std::str::from_utf8(key.get(3..3 + len).ok_or_else(bad)?).map_err(|_| bad())?;
            let user = UserId::new(id).map_err(|_| bad())?;
            let time = u64::from_be_bytes(
                key.get(3 + len..11 + len)
                    .ok_or_else(bad)?
                    .try_into()
                    .unwrap(),
            );
            if time < before_ms {
                users.push(user.clone());
            }
            from = prefix_end(&user_prefix(DECISION, &user));
        }
        Ok(users)
    }

    /// Makes every write so far survive a process crash.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

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
//! | `L` · 0u16 · message id                | a seeded message (the operator's ledger)|
//! | `G` · contributor                      | shared-model contribution snapshot + last sequence |
//! | `H` · contributor · sequence (u64 BE)  | a click's ops on that contribution     |
//! | `O`                                    | the current seed id (u64 BE)           |
//!
//! where a `contributor` is a user (as `user` below) or the operator
//! (a zero-length id, which no user id can be). The shared model itself is
//! not stored: it is the capped sum of the contributions (see
//! `classify::shared`), rebuilt when the store is opened, so it can never
//! disagree with them.
//! where `user` is the id's length (u16 BE) then its bytes, so one user's
//! records of a kind are a contiguous range that no other user's id can
//! prefix. One tree makes a plain `apply_batch` the atomic unit of a click
//! (sled transactions may re-run their closure and cost more).
//!
//! # Why this shape
//!
//! A click writes two keys in one atomic `apply_batch` — its ledger entry and
//! a journal record, plus a contribution journal record when it is shared — never one read-modify-write per token (≈13 µs each
//! here, which would cap training near 185 messages/s per core). Models live
//! in memory for scoring (no sled `get` per token on the hot path); on disk a
//! model is its last snapshot plus the journal records after it. Once the
//! journal has grown to twice the model ([`checkpoint_due`]) the engine
//! folds it into a new snapshot, in one batch that also deletes the folded
//! records. The ledger is the source of truth for *what* was learned; it is
//! what exact relearn and Forget read.
//!
//! # Durability
//!
//! [`Store::flush`] makes every preceding write survive a crash of the
//! process (sled's flush; on Linux `sync_file_range`). sled's background
//! flusher fsyncs every 500 ms, which bounds what a power loss can take. The
//! engine acknowledges a click only after `flush` returns. Concurrent
//! flushes are shared: one sled flush covers every caller that arrived
//! before it started (group commit, `commit.rs`).

mod codec;
mod commit;
mod pending;

use std::path::Path;
use std::sync::{Arc, Mutex};

use sled::{Batch, Db, Tree};

use crate::classify::Model;
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{Contributor, MessageId, UserId};

pub use codec::{LedgerEntry, Op};
pub use commit::CommitStats;

use commit::GroupCommit;
use pending::Pending;

/// On-disk format; bumped on any incompatible change to keys or codecs.
/// Format 5 added the shared model (`G`/`H`/`O` keys, shared ids in ledger
/// entries, consent ids in settings). Format 4 counts a message as 64
/// weight units (`classify::Weight::FULL`); format 3 counted it as 8
/// (upgraded at open: [`Store::open`]).
pub const FORMAT_VERSION: u32 = 5;

/// Older formats this version reads (and upgrades by rewriting `F`):
/// format 2 had no weights, settings, lists or decisions; its records
/// decode as full-weight (see `codec`). Format 4 had no shared model: its
/// ledger entries and settings read as not shared, so nothing is rewritten.
/// (Format 3 is upgraded by rewriting its records: `upgrade_format_3`.)
const READABLE_FORMATS: [u32; 2] = [2, 4];

/// Keys removed per batch when a user or the seed ledger is deleted: sled's
/// memory grows with batch size, so large deletions go in bounded steps.
const DELETE_CHUNK: usize = 512;

/// A journal shorter than this many entries ([`Op::entries`]: token ids,
/// plus one per op) is never folded, however small the model: tiny models
/// would otherwise be re-snapshotted at almost every click. Replaying it
/// costs well under a millisecond.
pub const CHECKPOINT_MIN_ENTRIES: u64 = 32_768;

/// Whether a model (or a shared contribution) should be snapshotted now:
/// once the journal since its last snapshot holds twice as many entries
/// (token ids) as the model has tokens, and at least
/// [`CHECKPOINT_MIN_ENTRIES`].
///
/// Why relative to the model's size: a snapshot costs time and disk in
/// proportion to the model, a journal record in proportion to its click.
/// Folding when the journal has grown to twice the model makes the
/// snapshots' total cost at most about half the journal's (amortised O(1)
/// per token learned), keeps replay at load within about twice the work of
/// decoding the snapshot, and the journal's live bytes within about twice
/// the snapshot's. A fixed number of clicks between snapshots (256, until
/// 2026-11-23) rewrote a 600k-token model every 256 clicks: sorting and
/// writing it was the largest single cost of a corpus replay. Factor 2
/// rather than 1: +11% replay speed (median of five runs each), and a
/// 50k-token model's worst-case load stays far below the 5 ms target
/// (docs/PERFORMANCE.md).
pub fn checkpoint_due(journal_entries: u64, model_tokens: usize) -> bool {
    journal_entries >= CHECKPOINT_MIN_ENTRIES.max(2 * model_tokens as u64)
}

/// A model as loaded from disk, with the position its state reflects.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    /// Sequence number of the last journal record folded in (0 if none).
    pub last_seq: u64,
    /// Entries ([`Op::entries`]) in the journal records after the snapshot
    /// (replayed into `model`): what [`checkpoint_due`] weighs.
    pub journal_entries: u64,
}

/// A model (or shared contribution) encoded for storage, with the last
/// journal sequence number folded into it. Encoding needs only a shared
/// reference, so the engine encodes a user's model under its read lock —
/// CPU only; scoring goes on, since the only writer of that model is the
/// click that holds the user's writer lock and is encoding — without a copy
/// of a model of hundreds of thousands of tokens, and writes it after
/// releasing the lock, so no lock is held across I/O.
pub struct Snapshot {
    bytes: Vec<u8>,
    last_seq: u64,
}

impl Snapshot {
    pub fn encode(model: &Model, last_seq: u64) -> Self {
        Self {
            bytes: codec::encode_snapshot(model, last_seq),
            last_seq,
        }
    }
}

/// The open database. Cheap to share: sled handles are reference-counted.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Read and written through [`Store::tree`], which applies pending
    /// clicks first; only the click path uses it directly.
    sled_tree: Tree,
    /// Clicks not yet in the tree: only in a throwaway store
    /// ([`Store::open_unsynced`]; `pending.rs` says why).
    pending: Option<Arc<Mutex<Pending>>>,
    /// Shared by every clone: which writes are durable (see `commit`).
    commit: Arc<GroupCommit>,
    /// False only for throwaway replays: [`Store::open_unsynced`].
    sync: bool,
    /// Where and how it was opened, to open it again after a failure
    /// ([`Store::location`]).
    path: Arc<std::path::PathBuf>,
    cache_bytes: u64,
}

const FORMAT_KEY: &[u8] = b"F";
const LEDGER: u8 = b'L';
const JOURNAL: u8 = b'J';
const MODEL: u8 = b'M';
const SETTINGS: u8 = b'S';
const LIST: u8 = b'W';
const DECISION: u8 = b'D';
const CONTRIBUTION: u8 = b'G';
const CONTRIBUTION_JOURNAL: u8 = b'H';
const SEED_ID_KEY: &[u8] = b"O";

fn contributor_prefix(kind: u8, who: &Contributor) -> Vec<u8> {
    match who {
        Contributor::User(user) => user_prefix(kind, user),
        Contributor::Operator => vec![kind, 0, 0],
    }
}

fn contribution_journal_key(who: &Contributor, seq: u64) -> Vec<u8> {
    let mut k = contributor_prefix(CONTRIBUTION_JOURNAL, who);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The contributor a `G`/`H` key names, and the rest of the key.
fn decode_contributor(key: &[u8]) -> Result<(Contributor, &[u8]), Error> {
    let bad = || Error::Corrupt {
        what: "shared contribution key".into(),
    };
    let len = usize::from(u16::from_be_bytes(
        key.get(1..3).ok_or_else(bad)?.try_into().unwrap(),
    ));
    let id = key.get(3..3 + len).ok_or_else(bad)?;
    let who = if len == 0 {
        Contributor::Operator
    } else {
        let id = std::str::from_utf8(id).map_err(|_| bad())?;
        Contributor::User(UserId::new(id).map_err(|_| bad())?)
    };
    Ok((who, &key[3 + len..]))
}

fn user_prefix(kind: u8, user: &UserId) -> Vec<u8> {
    let id = user.as_str().as_bytes();
    let mut k = Vec::with_capacity(3 + id.len() + 16);
    k.push(kind);
    // UserId guarantees ≤ 256 bytes, so the length fits in u16.
    k.extend_from_slice(&(id.len() as u16).to_be_bytes());
    k.extend_from_slice(id);
    k
}

fn ledger_key(who: &Contributor, msg: &MessageId) -> Vec<u8> {
    let mut k = contributor_prefix(LEDGER, who);
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
        Self::open_with(path, cache_bytes, true)
    }

    /// [`Store::open`] for a throwaway replay (`chaff eval`): every record
    /// is written exactly as the service writes it, but [`Store::flush`]
    /// does not wait for the disk, so a crash may lose recent writes. Never
    /// for data anyone keeps.
    pub fn open_unsynced(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        Self::open_with(path, cache_bytes, false)
    }

    fn open_with(path: &Path, cache_bytes: u64, sync: bool) -> Result<Self, Error> {
        let open_err = |source: sled::Error| {
            if matches!(&source, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
            {
                // sled's file lock: the one-process-per-directory rule.
                return Error::Locked {
                    path: path.to_path_buf(),
                };
            }
            if crate::error::is_disk_full(&source) {
                return Error::DiskFull;
            }
            Error::Open {
                path: path.to_path_buf(),
                source,
            }
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // A throwaway replay needs no background fsync either, nor
            // sled's wait for the disk after writing each atomic batch
            // (`temporary`; sled also removes the files when closed).
            .flush_every_ms(sync.then_some(500))
            .temporary(!sync)
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
        Ok(Self {
            db,
            sled_tree: tree,
            pending: (!sync).then(Arc::default),
            commit: Arc::default(),
            sync,
            path: Arc::new(path.to_path_buf()),
            cache_bytes,
        })
    }

    /// The data directory and page cache size this store was opened with.
    ///
    /// Once sled has failed a write (a full disk), it refuses every later
    /// write until the database is opened again, so recovering means
    /// dropping every handle of this store and calling [`Store::open`] with
    /// these. Nothing acknowledged is lost: what a reopen drops was never
    /// flushed, so never acknowledged.
    pub fn location(&self) -> (&Path, u64) {
        (&self.path, self.cache_bytes)
    }

    /// Whether the data directory has room again: writes, syncs and removes
    /// a small file beside the database (`probe_bytes`, a little more than
    /// one of sled's log segments, so a reopened store can take at least a
    /// few clicks). Any failure means "not yet".
    pub fn probe_space(path: &Path, probe_bytes: usize) -> Result<(), Error> {
        use std::io::Write;
        let probe = path.join("space-probe.tmp");
        let result = (|| {
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(&vec![0u8; probe_bytes])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        result.map_err(|e| {
            if matches!(e.raw_os_error(), Some(28 | 122))
                || e.kind() == std::io::ErrorKind::StorageFull
            {
                Error::DiskFull
            } else {
                Error::Storage(sled::Error::Io(e))
            }
        })
    }

    /// The tree, with every pending click applied first, so whatever reads
    /// or writes it next sees every click in order.
    fn tree(&self) -> Result<&Tree, Error> {
        if let Some(pending) = &self.pending {
            self.apply(&mut pending.lock().expect("pending lock"))?;
        }
        Ok(&self.sled_tree)
    }

    /// Applies pending clicks as one batch. The caller holds the pending
    /// lock until the tree has them, so a reader never finds a click in
    /// neither place.
    fn apply(&self, pending: &mut Pending) -> Result<(), Error> {
        if let Some(batch) = pending.batch() {
            self.sled_tree.apply_batch(batch)?;
            pending.clear();
        }
        Ok(())
    }

    /// The user's model (snapshot plus journal replay), or `None` for a user
    /// with nothing stored.
    pub fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        let snapshot = self.tree()?.get(user_prefix(MODEL, user))?;
        let (mut model, mut last_seq) = match &snapshot {
            Some(bytes) => codec::decode_snapshot(bytes)?,
            None => (Model::default(), 0),
        };
        let mut journal_entries = 0;
        let mut records = 0;
        let start = journal_key(user, last_seq.saturating_add(1));
        let end = journal_key(user, u64::MAX);
        for item in self.tree()?.range(start..=end) {
            let (key, value) = item?;
            let mut entries = 0;
            for op in codec::decode_ops(&value)? {
                op.apply(&mut model);
                entries += op.entries();
            }
            // A record counts even with no ops (see `Engine::commit`).
            journal_entries += entries.max(1);
            let seq_bytes = &key[key.len() - 8..];
            last_seq =
                u64::from_be_bytes(seq_bytes.try_into().expect("journal key ends in 8 bytes"));
            records += 1;
        }
        if snapshot.is_none() && records == 0 {
            return Ok(None);
        }
        Ok(Some(LoadedModel {
            model,
            last_seq,
            journal_entries,
        }))
    }

    /// What was learned for this message, if anything.
    pub fn ledger_get(&self, user: &UserId, msg: &MessageId) -> Result<Option<LedgerEntry>, Error> {
        self.contributor_ledger_get(&Contributor::User(user.clone()), msg)
    }

    /// A user's or the operator's (seed) ledger entry for this message.
    pub fn contributor_ledger_get(
        &self,
        who: &Contributor,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        let key = ledger_key(who, msg);
        if let Some(pending) = &self.pending {
            match pending.lock().expect("pending lock").ledger(&key) {
                Some(Some(bytes)) => return Ok(Some(codec::decode_ledger(bytes)?)),
                Some(None) => return Ok(None),
                None => {}
            }
        }
        match self.sled_tree.get(key)? {
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
        self.record_click(&Contributor::User(user.clone()), msg, entry, ops, &[])
    }

    /// [`Store::record`] for a user's or the operator's click, with the ops
    /// on the contributor's shared part (`shared_ops`, journalled under the
    /// same sequence number when not empty) in the same atomic batch. The
    /// operator has no model of its own: `ops` must be empty for it.
    pub fn record_click(
        &self,
        who: &Contributor,
        msg: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<u64, Error> {
        // sled's id generator is monotonic across restarts, so sequence
        // numbers order every user's journal without per-user counters.
        let seq = self.db.generate_id()?.saturating_add(1);
        let ledger = (ledger_key(who, msg), entry.map(codec::encode_ledger));
        let mut journal = Vec::with_capacity(2);
        if let Contributor::User(user) = who {
            journal.push((journal_key(user, seq), codec::encode_ops(ops)));
        }
        if !shared_ops.is_empty() {
            journal.push((
                contribution_journal_key(who, seq),
                codec::encode_ops(shared_ops),
            ));
        }
        if let Some(pending) = &self.pending {
            let mut pending = pending.lock().expect("pending lock");
            if pending.push(ledger, journal) {
                self.apply(&mut pending)?;
            }
            return Ok(seq);
        }
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

    /// A fresh id, larger than every id handed out before (also across
    /// restarts): consent and seed ids.
    pub fn generate_id(&self) -> Result<u64, Error> {
        Ok(self.db.generate_id()?.saturating_add(1))
    }

    /// Every contributor's shared part (snapshot plus journal), for
    /// rebuilding the shared model at start.
    pub fn load_contributions(&self) -> Result<Vec<(Contributor, LoadedModel)>, Error> {
        let mut parts: std::collections::BTreeMap<Contributor, LoadedModel> = Default::default();
        for item in self.tree()?.scan_prefix([CONTRIBUTION]) {
            let (key, value) = item?;
            let (who, _) = decode_contributor(&key)?;
            let (model, last_seq) = codec::decode_snapshot(&value)?;
            parts.insert(
                who,
                LoadedModel {
                    model,
                    last_seq,
                    journal_entries: 0,
                },
            );
        }
        for item in self.tree()?.scan_prefix([CONTRIBUTION_JOURNAL]) {
            let (key, value) = item?;
            let (who, rest) = decode_contributor(&key)?;
            let seq = u64::from_be_bytes(rest.try_into().map_err(|_| Error::Corrupt {
                what: "shared contribution journal key".into(),
            })?);
            let part = parts.entry(who).or_insert_with(|| LoadedModel {
                model: Model::default(),
                last_seq: 0,
                journal_entries: 0,
            });
            // A crash between a snapshot and the removal of what it folded
            // in cannot happen (one batch), but be exact regardless.
            if seq <= part.last_seq {
                continue;
            }
            for op in codec::decode_ops(&value)? {
                op.apply(&mut part.model);
                part.journal_entries += op.entries();
            }
            part.last_seq = seq;
        }
        Ok(parts.into_iter().collect())
    }

    /// Folds a contributor's journal up to `last_seq` into a snapshot of
    /// `part`, atomically (as [`Store::checkpoint`] for models).
    pub fn checkpoint_contribution(
        &self,
        who: &Contributor,
        snapshot: Snapshot,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        let last_seq = snapshot.last_seq;
        for item in self
            .tree()?
            .range(contribution_journal_key(who, 0)..=contribution_journal_key(who, last_seq))
        {
            batch.remove(item?.0);
        }
        batch.insert(contributor_prefix(CONTRIBUTION, who), snapshot.bytes);
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// Adds the removal of `who`'s whole shared part to `batch`.
    fn clear_contribution(&self, who: &Contributor, batch: &mut Batch) -> Result<(), Error> {
        batch.remove(contributor_prefix(CONTRIBUTION, who));
        for item in self
            .tree()?
            .scan_prefix(contributor_prefix(CONTRIBUTION_JOURNAL, who))
        {
            batch.remove(item?.0);
        }
        Ok(())
    }

    /// The current seed id, if the operator ever seeded.
    pub fn seed_id(&self) -> Result<Option<u64>, Error> {
        Ok(match self.tree()?.get(SEED_ID_KEY)? {
            Some(v) => Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                Error::Corrupt {
                    what: "seed id".into(),
                }
            })?)),
            None => None,
        })
    }

    /// Makes `id` the seed id, and when `clear`, removes the operator's
    /// shared part in the same batch. Not flushed: with `clear`, the engine
    /// drops the seed from memory once this returns, then calls
    /// [`Store::finish_seed_clear`] for the old seed's ledger (entries under
    /// an old seed id are ignored anyway, so an interrupted clear is still
    /// a complete one).
    pub fn set_seed_id(&self, id: u64, clear: bool) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.insert(SEED_ID_KEY, &id.to_be_bytes());
        if clear {
            self.clear_contribution(&Contributor::Operator, &mut batch)?;
        }
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The rest of a seed clear: the old seed's ledger, then a flush.
    pub fn finish_seed_clear(&self) -> Result<(), Error> {
        self.delete_prefix(&contributor_prefix(LEDGER, &Contributor::Operator))?;
        self.flush()
    }

    /// Deletes every key under `prefix`, `DELETE_CHUNK` keys per batch.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), Error> {
        loop {
            let mut batch = Batch::default();
            let mut n = 0;
            for item in self.tree()?.scan_prefix(prefix).take(DELETE_CHUNK) {
                batch.remove(item?.0);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.tree()?.apply_batch(batch)?;
        }
    }

    /// Deletes a user's model, journal, settings, lists and shared part,
    /// in one batch: after it the user is gone for scoring and for the
    /// shared model. [`Store::finish_delete_user`] does the rest.
    pub fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        let who = Contributor::User(user.clone());
        let mut batch = Batch::default();
        batch.remove(user_prefix(MODEL, user));
        batch.remove(user_prefix(SETTINGS, user));
        for kind in [JOURNAL, LIST] {
            for item in self.tree()?.scan_prefix(user_prefix(kind, user)) {
                batch.remove(item?.0);
            }
        }
        self.clear_contribution(&who, &mut batch)?;
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The rest of [`Store::delete_user`], after the engine has dropped the
    /// user from memory: their ledger and logged decisions (in bounded
    /// batches), then a flush. Calling it again finishes an interrupted one.
    pub fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.delete_prefix(&user_prefix(LEDGER, user))?;
        self.delete_prefix(&user_prefix(DECISION, user))?;
        self.flush()
    }

    /// Whether anything at all is stored for a user.
    pub fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        for kind in [
            MODEL,
            JOURNAL,
            SETTINGS,
            LEDGER,
            LIST,
            DECISION,
            CONTRIBUTION,
        ] {
            if self
                .tree()?
                .scan_prefix(user_prefix(kind, user))
                .next()
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Folds the journal up to `last_seq` into a snapshot of `model`, and
    /// deletes the folded records, atomically.
    pub fn checkpoint(&self, user: &UserId, model: &Model, last_seq: u64) -> Result<(), Error> {
        self.write_checkpoint(user, Snapshot::encode(model, last_seq))
    }

    /// [`Store::checkpoint`] with the model already encoded.
    pub fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error> {
        let mut batch = Batch::default();
        for item in self
            .tree()?
            .range(journal_key(user, 0)..=journal_key(user, snapshot.last_seq))
        {
            let (key, _) = item?;
            batch.remove(key);
        }
        batch.insert(user_prefix(MODEL, user), snapshot.bytes);
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The user's delivery settings and current consent id (0: not
    /// sharing), if ever set.
    pub fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        match self.tree()?.get(user_prefix(SETTINGS, user))? {
            Some(bytes) => Ok(Some(codec::decode_settings(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores the user's settings and consent id (durable after
    /// [`Store::flush`]). With `clear_shared`, the user's shared part goes
    /// in the same batch: revoking consent is one atomic change.
    pub fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.insert(
            user_prefix(SETTINGS, user),
            codec::encode_settings(settings, consent),
        );
        if clear_shared {
            self.clear_contribution(&Contributor::User(user.clone()), &mut batch)?;
        }
        // Not flushed: the engine changes its memory to match first (memory
        // follows what sled holds, durable or not), then flushes.
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// Every entry on one list, in key order.
    pub fn list_entries(&self, owner: &ListOwner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        let prefix = list_prefix(owner, kind);
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(&prefix) {
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
            self.tree()?.insert(key, &[][..])?.is_none()
        } else {
            self.tree()?.remove(key)?.is_some()
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
        self.tree()?.apply_batch(batch)?;
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
        for item in self.tree()?.range(start..=end).rev() {
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
        for (i, item) in self.tree()?.scan_prefix(&prefix).rev().enumerate() {
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
        self.tree()?.apply_batch(batch)?;
        Ok(deleted)
    }

    /// Every user with a decision older than `before_ms`, for the periodic
    /// retention sweep (one key read per user, skipping over their range).
    pub fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        let mut from = vec![DECISION];
        loop {
            let Some(item) = self
                .tree()?
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

    /// Makes every write so far survive a process crash: every write
    /// finished before the call (by any thread) is durable when it returns.
    /// Concurrent callers share sled flushes (group commit, see `commit`),
    /// so call it *after* releasing locks that other writers need.
    pub fn flush(&self) -> Result<(), Error> {
        if !self.sync {
            // A throwaway store: nothing waits for the disk, and pending
            // clicks stay pending (every read sees them anyway); applying
            // them here, after every click, would undo the batching.
            return Ok(());
        }
        self.commit.wait_durable(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    /// Live records by kind (the key's first byte: `L`edger, `J`ournal,
    /// `M`odel snapshot, ...): count, key bytes, value bytes. Reads the whole
    /// tree: for measuring (`examples/footprint.rs`), not for serving.
    pub fn usage(&self) -> Result<Vec<(char, u64, u64, u64)>, Error> {
        let mut by_kind = std::collections::BTreeMap::<u8, (u64, u64, u64)>::new();
        for item in self.tree()?.iter() {
            let (k, v) = item?;
            let e = by_kind.entry(k.first().copied().unwrap_or(0)).or_default();
            e.0 += 1;
            e.1 += k.len() as u64;
            e.2 += v.len() as u64;
        }
        Ok(by_kind
            .into_iter()
            .map(|(kind, (n, k, v))| (char::from(kind), n, k, v))
            .collect())
    }

    /// How many durability waits there were and how many flushes served them.
    pub fn commit_stats(&self) -> CommitStats {
        self.commit.stats()
    }

    /// How long storage flushes took.
    pub fn flush_times(&self) -> crate::metrics::LatencySnapshot {
        self.commit.flush_times()
    }
}

#[cfg(test)]
mod tests;

//! Durable storage: the only module that names sled.
//!
//! # Layout (one sled tree; the first key byte says what a record is)
//!
//! | key                                    | value                                  |
//! |----------------------------------------|----------------------------------------|
//! | `F`                                    | [`FORMAT_VERSION`] (u32 BE)            |
//! | `L` · user · message id                | label, click time and sequence, the message's token numbers (folded beyond the undo window: label + time) |
//! | `J` · user · sequence number (u64 BE)  | the click's learn/unlearn [`Op`]s (delivered mail's marked, format 8), or a pointer to its ledger entry |
//! | `M` · user                             | model snapshot: class weights and the delivered ham weight (format 8), counts in dictionary order, last-seen ages (`recency.rs`) + last sequence |
//! | `K` · user · first number (u32 BE)     | the user's token dictionary: ids numbered from there (`dict.rs`; renumbered after a prune, `compact.rs`) |
//! | `U`                                    | when the directory became format 6 (click time of older entries) |
//! | `S` · user                             | delivery settings (mode, thresholds)   |
//! | `W` · user · list kind · entry         | an allow/block list entry (empty value)|
//! | `W` · 0u16 · list kind · entry         | an operator-wide list entry            |
//! | `D` · user · time (ms, BE) · sequence  | a score decision (JSON), for support   |
//! | `L` · 0u16 · message id                | a seeded message (the operator's ledger)|
//! | `G` · contributor                      | shared-model contribution snapshot + last sequence |
//! | `H` · contributor · sequence (u64 BE)  | a click's ops on that contribution     |
//! | `O`                                    | the current seed id (u64 BE)           |
//! | `I`                                    | id offset (u64 BE), set by a backup: every id handed out is above it |
//! | `X` · user                             | a DeleteUser in progress (empty value): finished when the store opens |
//! | `C`                                    | the last sealed generation (u64 BE): at open, at least what the file `chaff-generation` says (`generation.rs`) |
//!
//! Format-6 values of `L`, `J`, `M` and `K` end in a CRC-32 of key and
//! value (`codec::seal`, why there); a mismatch is [`Error::Corrupt`]
//! naming the user (and message), answered DATA_LOSS, never counted.
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
//! # Files, by what they store
//!
//! `keys.rs` builds and reads every key above (nothing else does);
//! `codec.rs` encodes the values. `ledger.rs`: ledger and journal, the
//! atomic click batch. `models.rs`: user model snapshots and when to take
//! one. `shared.rs`: the shared model's contributions and the seed id.
//! `compact.rs`: a user's ledger and dictionary compacted after a prune
//! (format 7). `rewrite.rs`: `chaff compact`, a stopped server's directory
//! written anew and swapped in (sled's files shrink to what writing a fresh copy costs). `policy.rs`: settings and lists. `decisions.rs`: the decision log.
//! `users.rs`: a user's existence, deletion and listing. `export.rs`: the
//! per-user export format. `backup.rs`: copying users into a backup's
//! store. This file: opening, format upgrades, flush and usage;
//! `upgrade.rs`: the upgrades that visit every user (formats 6 and 7),
//! their progress and their damaged users. `commit.rs`: group commit.
//! `backend.rs`: the
//! storage interface the engine runs on ([`Backend`]), which [`Store`]
//! implements. `writes.rs`: where a store's writes go, its type
//! parameter — [`Direct`] (sled, flushed to disk: the service's [`Store`])
//! or the write-behind of `replay.rs` ([`ReplayStore`], `chaff eval`'s
//! throwaway store, a separate type: the service's store has no
//! unsynced mode).
//! `error.rs`: [`StorageError`]. `generation.rs`: damage to the
//! directory's files, found at open (sled's `conf` and `snap.*` checksums,
//! the sealed generation against sled's recovery).
//! `redis_cluster/`: the Redis Cluster store for scale-out (issue #18,
//! feature `redis`; its own layout and scripts, `docs/SCALING.md`) and its
//! [`Backend`] (`redis_cluster::RedisBackend`, `chaff serve --store redis://…`).
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

mod backend;
mod backup;
mod codec;
mod commit;
mod compact;
mod decisions;
mod dict;
mod error;
pub mod export;
mod generation;
mod keys;
mod ledger;
mod models;
mod policy;
mod recency;
#[cfg(feature = "redis")]
pub mod redis_cluster;
mod replay;
mod rewrite;
mod shared;
mod upgrade;
mod users;
mod writes;

use std::path::Path;
use std::sync::Arc;

use sled::{Batch, Db, Tree};

use crate::error::Error;

pub use backend::{
    Aggregate, Backend, ClickOutcome, Clicked, ModelChanges, PartChange, SharedClicks,
    SharedUpdate, StoredPolicy, UserChanges, not_on,
};
pub use codec::{LedgerEntry, Op};
pub use commit::CommitStats;
pub use compact::Compacted;
pub use dict::{DICT_CACHE_TOKENS, DICT_ENTRY_BYTES};
pub use error::StorageError;
pub use generation::{FILE as GENERATION_FILE, RESTORE};
pub use ledger::{Clock, DEFAULT_DELIVERED_UNDO_WINDOW, DEFAULT_UNDO_WINDOW};
pub use models::{CHECKPOINT_MIN_ENTRIES, LoadedModel, Rebuilt, Snapshot, checkpoint_due};
pub use replay::{ReplayStore, WriteBehind};
pub use rewrite::{DONE_MARKER, Recovered, RewriteStep, Rewritten, disk_usage, recover};
pub use users::listing_order;
pub use writes::Direct;

// chaff's copy of sled is the one in vendor/sled, patched (PATCHES.md):
// a sled compiled from other sources does not build. An error here ("cannot
// find value `CHAFF_PATCH_LEVEL`", or this assertion) means the build
// directory holds a sled compiled from another checkout's vendor/sled that
// cargo's file times call fresh: `cargo clean -p sled` (with `--release`
// for that profile) and build again.
const _: () = assert!(
    sled::CHAFF_PATCH_LEVEL == 5,
    "a sled without chaff's current patches: cargo clean -p sled"
);

use keys::*;

use commit::GroupCommit;
use writes::Writes;

/// On-disk format; bumped on any incompatible change to keys or codecs.
/// Format 8 keeps the model's split between clicked and delivered ham
/// (`Model::clicked_ham_weight`, what `--header-strength-ramp`,
/// `--thin-ham-exponent`'s ramp and `--thin-ham-pool` read):
/// snapshots hold the delivered ham weight after the class weights
/// (`codec::SNAPSHOT_V8`), and journal records mark the ham learns and
/// unlearns of delivered mail ([`Op::LearnDelivered`],
/// [`Op::UnlearnDelivered`]), written in the batch of the counts they
/// change; a journal pointer to an implicit ledger entry replays marked.
/// A format-7 (or older) directory is upgraded at open by checkpointing
/// every user with all their ham counted as delivered
/// ([`Store::upgrade_format_7`]), the safe reading: the ramp then waits
/// for new *Not spam* clicks.
/// Format 7 keeps format 6's records and changes what they may hold: a
/// user's dictionary is renumbered after a prune, holding only ids the
/// model or a ledger entry still names, and ledger entries lose the ids of
/// tokens the model pruned (`compact.rs`). A format-6 directory is
/// upgraded at open by compacting every user ([`Store::open`]).
/// Format 6 names a user's tokens by number in the user's own dictionary
/// (`K` records, `dict.rs`) in ledger entries, journal records and
/// snapshots, and seals those records with a checksum (`codec::seal`).
/// Format 5 added the shared model (`G`/`H`/`O` keys, shared ids in ledger
/// entries, consent ids in settings). Format 4 counts a message as 64
/// weight units (`classify::Weight::FULL`); format 3 counted it as 8
/// (upgraded at open: [`Store::open`]).
pub const FORMAT_VERSION: u32 = 8;

/// Older formats this version reads (and upgrades by rewriting `F`):
/// format 2 had no weights, settings, lists or decisions; its records
/// decode as full-weight (see `codec`). Format 4 had no shared model: its
/// ledger entries and settings read as not shared, so nothing is rewritten.
/// (Format 3 is upgraded by rewriting its records: `upgrade_format_3`.)
///
/// Format 5 is upgraded by rewriting `F` alone: its records keep their own
/// first bytes (upper-case ledger labels, journal op counts, `W` snapshots),
/// which no format-6 record starts with, so both read side by side; each
/// user's next checkpoint rewrites their snapshot in format 6, and their
/// new clicks are written in it. One write of one key: a crash leaves the
/// directory wholly in format 5 or wholly readable as 6.
///
/// Format 6 is upgraded by compacting each user with a dictionary, one
/// atomic batch per user (`compact.rs`), then rewriting `F`: a crash during
/// the upgrade leaves some users compacted and the others as they were,
/// every record readable, and `F` still 6, so the next open runs the
/// upgrade again (compacting a compacted user changes nothing). A user
/// whose records do not read back is left uncompacted, with a WARN, and
/// the upgrade goes on (`upgrade.rs`).
const READABLE_FORMATS: [u32; 3] = [2, 4, 5];

/// The format whose upgrade compacts every user (see [`READABLE_FORMATS`]).
const FORMAT_6: u32 = 6;

/// The last format without the clicked/delivered split: every older
/// format is first brought to it as before format 8 (its `F` written as
/// 7), then upgraded by [`Store::upgrade_format_7`], which writes `F` last.
/// A crash during that step leaves `F` at 7 and some users checkpointed
/// with the split, the others as they were; the next open runs it again
/// (checkpointing a checkpointed user again gives the same snapshot: no
/// click has come between).
const FORMAT_7: u32 = 7;

/// Keys removed per batch when a user or the seed ledger is deleted: sled's
/// memory grows with batch size, so large deletions go in bounded steps.
const DELETE_CHUNK: usize = 512;

/// The open database. Cheap to share: sled handles are reference-counted.
///
/// `W` is where writes go (`writes.rs`): [`Direct`], the default and the
/// only one the service opens, or the write-behind of a throwaway replay
/// ([`ReplayStore`]).
#[derive(Clone)]
pub struct Store<W = Direct> {
    db: Db,
    /// Read and written through [`Store::tree`], which settles held writes
    /// first; only the click path uses it directly.
    sled_tree: Tree,
    /// Where writes go and how reads see them (`writes.rs`).
    writes: W,
    /// Shared by every clone: which writes are durable (see `commit`).
    commit: Arc<GroupCommit>,
    /// Where and how it was opened, to open it again after a failure
    /// ([`Store::location`]).
    path: Arc<std::path::PathBuf>,
    cache_bytes: u64,
    /// Token dictionaries in memory (`dict.rs`), shared by every clone.
    dicts: Arc<dict::Dicts>,
    /// The undo window and its clock (`ledger.rs`).
    undo: Arc<parking_lot::RwLock<ledger::Undo>>,
    /// The time (unix seconds) this directory was upgraded to format 6:
    /// the click time of older ledger entries, which did not record one.
    legacy_time_s: u64,
    /// One seal at a time (`seal_generation`: a background seal and the
    /// clean stop's share the temporary file).
    seal: Arc<parking_lot::Mutex<()>>,
    /// Added to every id sled generates ([`Store::generate_id`]): a data
    /// directory made by a backup starts its ids above the source's, whose
    /// journal sequence numbers and consent and seed ids it holds (sled's
    /// own generator cannot be set). 0 unless the `I` key says otherwise.
    id_offset: u64,
}

/// Format 3 wrote explicit weights and snapshot counts in eighths of a
/// message; format 4 in [`classify::Weight::FULL`] units. Every ledger,
/// journal and snapshot record is rewritten and the format key set in one
/// atomic batch, so a crash leaves the directory wholly in one format (a
/// per-record upgrade could not tell, after a crash, which records were
/// already scaled).
fn upgrade_format_3(tree: &Tree) -> Result<(), Error> {
    // Logged before the work, so an operator (and the crash soak's upgrade
    // test) can tell a start-up that is upgrading from one that hangs.
    tracing::info!("upgrading data directory from format 3 to {FORMAT_VERSION}");
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
    batch.insert(FORMAT_KEY, &FORMAT_7.to_be_bytes());
    batch.insert(
        UPGRADED_KEY,
        &ledger::Undo::default().now_ms().to_be_bytes(),
    );
    tree.apply_batch(batch)?;
    tree.flush()?;
    tracing::info!(
        rewritten,
        "upgraded data directory from format 3 to {FORMAT_7}"
    );
    Ok(())
}

#[cfg(feature = "fault-injection")]
impl Store {
    /// Test builds only: marks the directory as written in format
    /// `version`, so a test can build an old directory with today's writes
    /// in the old units (format 3: a full message weighs 8) and test the
    /// upgrade at open, also under SIGKILL (`tests/soak.rs`).
    pub fn mark_format_for_tests(&self, version: u32) -> Result<(), Error> {
        self.tree()?.insert(FORMAT_KEY, &version.to_be_bytes())?;
        self.flush()
    }

    /// Test builds only: damages one stored value of `user` in place, as a
    /// flipped bit on disk would (`tests/corruption.rs`): the first record
    /// of kind `kind` (`M` snapshot, `L` ledger entry, `J` journal record),
    /// its middle byte XOR 0x10, written back through sled (whose own
    /// checksums then cover the damaged bytes: only chaff's can tell).
    /// Returns the key after the user's prefix (a ledger entry's message
    /// id), `None` if the user has no such record.
    pub fn damage_record_for_tests(
        &self,
        kind: u8,
        user: &crate::types::UserId,
    ) -> Result<Option<Vec<u8>>, Error> {
        let prefix = user_prefix(kind, user);
        let Some(item) = self.tree()?.scan_prefix(&prefix).next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let mut value = value.to_vec();
        let at = value.len() / 2;
        value[at] ^= 0x10;
        self.tree()?.insert(&key, value)?;
        self.flush()?;
        Ok(Some(key[prefix.len()..].to_vec()))
    }

    /// Test builds only: a click as format 5 and older wrote it (ids
    /// spelled out, no dictionary, no checksum, no click time), for a
    /// directory that [`Store::mark_format_for_tests`] then marks old:
    /// today's writer writes format 6, which no older format can hold.
    pub fn record_legacy_for_tests(
        &self,
        user: &crate::types::UserId,
        msg: &crate::types::MessageId,
        entry: &LedgerEntry,
        ops: &[Op],
    ) -> Result<u64, Error> {
        let seq = self.generate_id()?;
        let mut batch = Batch::default();
        batch.insert(
            ledger_key(&crate::types::Owner::User(user.clone()), msg),
            codec::encode_ledger(entry),
        );
        batch.insert(journal_key(user, seq), codec::encode_ops(ops));
        self.tree()?.apply_batch(batch)?;
        Ok(seq)
    }

    /// Test builds only: a checkpoint as format 5 and older wrote it (see
    /// [`Store::record_legacy_for_tests`]).
    pub fn checkpoint_legacy_for_tests(
        &self,
        user: &crate::types::UserId,
        model: &crate::classify::Model,
        last_seq: u64,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        for item in self
            .tree()?
            .range(journal_key(user, 0)..=journal_key(user, last_seq))
        {
            batch.remove(item?.0);
        }
        batch.insert(
            user_prefix(MODEL, user),
            codec::encode_snapshot_format_4(model, last_seq),
        );
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }
}

impl Store {
    /// Opens (creating if needed) the database in `path`. `cache_bytes` bounds
    /// sled's page cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        Self::open_with(path, cache_bytes)
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
                Error::Storage(sled::Error::Io(e).into())
            }
        })
    }
}

impl<W: Writes> Store<W> {
    /// Opens the database in `path` with `W` deciding where writes go:
    /// [`Store::open`] or [`ReplayStore::open_replay`].
    fn open_with(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let open_err = |source: sled::Error| {
            if matches!(&source, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
            {
                // sled's file lock: the one-process-per-directory rule.
                return Error::Locked {
                    path: path.to_path_buf(),
                };
            }
            if error::is_disk_full(&source) {
                return Error::DiskFull;
            }
            // Classified once, without a clone (sled's clone of an I/O
            // error keeps only its Debug text).
            match Error::from(source) {
                Error::Corrupt { what } => Error::Damaged {
                    path: path.to_path_buf(),
                    what,
                },
                Error::Storage(source) => Error::Open {
                    path: path.to_path_buf(),
                    source,
                },
                other => other,
            }
        };
        if W::DURABLE {
            // A `chaff compact` a crash interrupted is settled first
            // (`rewrite.rs`): the directory then holds either its records
            // or their verified copy.
            rewrite::recover(path)?;
            generation::check_sled_files(path)?;
        }
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // A throwaway replay needs no background fsync either, nor
            // sled's wait for the disk after writing each atomic batch
            // (`temporary`; sled also removes the files when closed).
            .flush_every_ms(W::DURABLE.then_some(500))
            .temporary(!W::DURABLE);
        // sled's recovery asserts what it reads (it panicked on a removed
        // blob file until vendor/sled/PATCHES.md's blob check); a panic
        // there is a damaged directory, said so, not a crash of the caller.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = config.open()?;
            let tree = db.open_tree("chaff")?;
            Ok::<_, sled::Error>((db, tree))
        }));
        let (db, tree) = match opened {
            Ok(result) => result.map_err(open_err)?,
            Err(panic) => {
                return Err(Error::Damaged {
                    path: path.to_path_buf(),
                    what: format!(
                        "sled stopped reading it: {}",
                        generation::panic_text(&*panic)
                    ),
                });
            }
        };
        // Before chaff writes anything (a new format key, an upgrade): a
        // directory sled recovered to an older state is refused as sled
        // left it.
        if W::DURABLE {
            generation::check(path, &tree)?;
        }
        let (mut from_6, mut from_7) = (false, false);
        match tree.get(FORMAT_KEY).map_err(open_err)? {
            None => {
                tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(open_err)?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) if v.as_ref() == FORMAT_7.to_be_bytes() => from_7 = true,
            Some(v) if v.as_ref() == FORMAT_6.to_be_bytes() => (from_6, from_7) = (true, true),
            Some(v) if v.as_ref() == 3u32.to_be_bytes() => {
                from_7 = true;
                upgrade_format_3(&tree).map_err(|e| upgrade::failed(path, 3, e))?;
            }
            Some(v)
                if READABLE_FORMATS
                    .iter()
                    .any(|old| v.as_ref() == old.to_be_bytes()) =>
            {
                from_7 = true;
                let mut batch = Batch::default();
                batch.insert(FORMAT_KEY, &FORMAT_7.to_be_bytes());
                batch.insert(
                    UPGRADED_KEY,
                    &ledger::Undo::default().now_ms().to_be_bytes(),
                );
                tree.apply_batch(batch).map_err(open_err)?;
                // After the write, so a test killing start-up (tests/soak.rs)
                // can tell which side of it a kill landed on.
                tracing::info!(
                    "upgraded data directory from format {} to {FORMAT_7}: its records are rewritten as their users are next clicked and checkpointed",
                    u32::from_be_bytes(v.as_ref().try_into().unwrap_or_default())
                );
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
        let legacy_time_s = match tree.get(UPGRADED_KEY).map_err(open_err)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt {
                    what: format!("format upgrade time in {}", path.display()),
                })?) / 1000
            }
            None => 0,
        };
        let id_offset = match tree.get(ID_OFFSET_KEY).map_err(open_err)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt {
                what: "id offset".into(),
            })?),
            None => 0,
        };
        let store = Self {
            id_offset,
            seal: Arc::default(),
            db,
            sled_tree: tree,
            writes: W::default(),
            commit: Arc::default(),
            path: Arc::new(path.to_path_buf()),
            cache_bytes,
            dicts: Arc::default(),
            undo: Arc::default(),
            legacy_time_s,
        };
        // Interrupted deletes first: a half-deleted user is not compacted.
        store.finish_interrupted_deletes()?;
        if from_6 {
            store
                .upgrade_format_6()
                .map_err(|e| upgrade::failed(path, FORMAT_6, e))?;
        }
        if from_7 {
            store
                .upgrade_format_7()
                .map_err(|e| upgrade::failed(path, FORMAT_7, e))?;
        }
        Ok(store)
    }

    /// The tree, with every held write applied first (`W::settle`), so
    /// whatever reads or writes it next sees every click in order.
    fn tree(&self) -> Result<&Tree, Error> {
        self.writes.settle(&self.sled_tree)?;
        Ok(&self.sled_tree)
    }

    /// Makes every write so far survive a process crash: every write
    /// finished before the call (by any thread) is durable when it returns.
    /// Concurrent callers share sled flushes (group commit, see `commit`),
    /// so call it *after* releasing locks that other writers need.
    pub fn flush(&self) -> Result<(), Error> {
        if !W::DURABLE {
            // A throwaway replay store: nothing waits for the disk, and
            // held clicks stay held (every read sees them anyway); applying
            // them here, after every click, would undo the batching.
            return Ok(());
        }
        self.commit.wait_durable(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    /// Records that every write so far is on disk, as a new generation
    /// (`generation.rs`): the next open refuses a directory whose sled
    /// recovered an older state (a damaged or cut-short file) instead of
    /// serving it. Called at a clean shutdown, after `chaff repair`, and
    /// every `--seal-interval` while serving; costs a flush, three fsyncs
    /// and a rename, never on a request's path.
    /// Returns the generation.
    pub fn seal_generation(&self) -> Result<u64, Error> {
        if !W::DURABLE {
            return Ok(0);
        }
        let _one_at_a_time = self.seal.lock();
        generation::seal(&self.path, &self.db, self.tree()?)
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

    /// Users' ledger, journal and snapshot records still in a format older
    /// than 6 (format 5 is upgraded in place: each record is rewritten by
    /// the user's next checkpoint or click). Reads those families whole:
    /// for checks (the crash soak's `--from-format`), not for serving.
    pub fn older_format_records(&self) -> Result<u64, Error> {
        let mut n = 0;
        for kind in [LEDGER, JOURNAL, MODEL] {
            for item in self.tree()?.scan_prefix([kind]) {
                let (key, value) = item?;
                // The operator's seed ledger (`L` · 0u16) is not a user's.
                let operator = kind == LEDGER && key.get(1..3) == Some(&[0, 0][..]);
                if !operator && codec::is_older_format(kind, &value) {
                    n += 1;
                }
            }
        }
        Ok(n)
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

/// Opens the store in `path` for a test, waiting while a just-dropped
/// handle of it still holds sled's file lock: sled's background flusher lets
/// go at its next tick, which on a loaded machine can come after the test
/// reopens (CI saw `Locked` on a 2-core runner). Any other error panics.
#[cfg(test)]
pub(crate) fn open_waiting(path: &Path, cache_bytes: u64) -> Store {
    for _ in 0..1000 {
        match Store::open(path, cache_bytes) {
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => {
                return other.unwrap_or_else(|e| panic!("cannot reopen {}: {e}", path.display()));
            }
        }
    }
    panic!("{} stayed locked for 10 s", path.display());
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compact;
#[cfg(test)]
mod tests_split;

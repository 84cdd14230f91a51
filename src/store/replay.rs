//! The store of a throwaway replay (`chaff eval`): [`ReplayStore`], the
//! sled store with its clicks held back in memory and applied many at a
//! time ([`WriteBehind`]). The service's [`Store`] has no such mode: it is
//! a different type (`writes.rs` says why a type parameter).
//!
//! Why: sled seals and writes its log buffer at the end of every atomic
//! batch, handing the write to one of its I/O threads (a futex wake and
//! usually a context switch per batch). The service pays that once per
//! click and still reaches its durable-click target; a corpus replay
//! learns thousands of messages a second on one thread and spent more time
//! handing sled buffers around than learning. There, clicks collect here
//! and go to sled as one batch every [`PENDING_CLICKS`] clicks, with the same
//! keys and values the service writes, and [`Store::flush`] waits for
//! nothing.
//!
//! Reads stay exact: a click's ledger entry is read back from here until it
//! is applied, and every other store operation applies what is pending
//! before touching the tree (`Store::tree`), so scans, snapshots and
//! deletions see every click in order.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sled::{Batch, Tree};

use super::Store;
use super::writes::{Click, Writes};
use crate::error::Error;

/// Clicks collected before one sled batch: large enough that sled's
/// per-batch cost vanishes per click, small enough to stay a few MB.
pub(super) const PENDING_CLICKS: usize = 256;

/// The store `chaff eval` replays a corpus into: every record written
/// exactly as the service writes it, but [`Store::flush`] does not wait
/// for the disk, clicks reach sled 256 at a time (`PENDING_CLICKS`), and the
/// directory is removed when the store is closed. Never for data anyone
/// keeps.
pub type ReplayStore = Store<WriteBehind>;

impl ReplayStore {
    /// Opens (creating if needed) a throwaway replay store in `path`;
    /// `cache_bytes` bounds sled's page cache.
    pub fn open_replay(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        Self::open_with(path, cache_bytes)
    }
}

/// The write-behind of a [`ReplayStore`]: clicks not yet in the tree,
/// shared by every clone of the store.
#[derive(Clone, Default)]
pub struct WriteBehind(Arc<Mutex<Pending>>);

impl Writes for WriteBehind {
    const DURABLE: bool = false;

    fn settle(&self, tree: &Tree) -> Result<(), Error> {
        apply(tree, &mut self.0.lock())
    }

    fn held_ledger(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.0.lock().ledger(key).map(|v| v.map(<[u8]>::to_vec))
    }

    fn hold(&self, tree: &Tree, click: Click) -> Result<Option<Click>, Error> {
        // Pending writes are kept until sled takes them (even if this
        // apply fails), so the click's dictionary numbers stay.
        let mut pending = self.0.lock();
        if pending.push(click.ledger, click.writes) {
            apply(tree, &mut pending)?;
        }
        Ok(None)
    }

    fn as_durable(_store: &Store<Self>) -> Option<&Store> {
        None
    }
}

/// Applies pending clicks as one batch. The caller holds the pending
/// lock until the tree has them, so a reader never finds a click in
/// neither place.
fn apply(tree: &Tree, pending: &mut Pending) -> Result<(), Error> {
    if let Some(batch) = pending.batch() {
        tree.apply_batch(batch)?;
        pending.clear();
    }
    Ok(())
}

/// Writes not yet applied to the tree, in the order they were made.
#[derive(Default)]
struct Pending {
    /// The latest state of each ledger key written (`None`: removed).
    ledger: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Journal records (user and contribution); their keys are unique.
    journal: Vec<(Vec<u8>, Vec<u8>)>,
    clicks: usize,
}

impl Pending {
    /// What the last pending click wrote under this ledger key: `None` if
    /// no pending click touched it, `Some(None)` if one removed it.
    fn ledger(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ledger.get(key).map(|v| v.as_deref())
    }

    /// Adds one click's records; true when enough are pending to apply.
    fn push(
        &mut self,
        ledger: (Vec<u8>, Option<Vec<u8>>),
        journal: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> bool {
        self.ledger.insert(ledger.0, ledger.1);
        self.journal.extend(journal);
        self.clicks += 1;
        self.clicks >= PENDING_CLICKS
    }

    /// Everything pending as one sled batch (`None`: nothing to apply).
    /// The clicks stay pending until [`Pending::clear`]: if sled refuses
    /// the batch, they are neither lost nor half-applied, and the next
    /// attempt writes them again.
    fn batch(&self) -> Option<Batch> {
        if self.clicks == 0 {
            return None;
        }
        let mut batch = Batch::default();
        for (key, value) in &self.ledger {
            match value {
                Some(v) => batch.insert(key.as_slice(), v.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        for (key, value) in &self.journal {
            batch.insert(key.as_slice(), value.as_slice());
        }
        Some(batch)
    }

    /// Forgets the clicks once sled has them.
    fn clear(&mut self) {
        self.ledger.clear();
        self.journal.clear();
        self.clicks = 0;
    }
}

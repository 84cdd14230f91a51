//! Clicks held back from sled in a throwaway store, applied many at a time.
//!
//! Why: sled seals and writes its log buffer at the end of every atomic
//! batch, handing the write to one of its I/O threads (a futex wake and
//! usually a context switch per batch). The service pays that once per
//! click and still reaches its durable-click target; a corpus replay
//! (`chaff eval`, [`Store::open_unsynced`](super::Store::open_unsynced))
//! learns thousands of messages a second on one thread and spent more time
//! handing sled buffers around than learning. There, clicks collect here
//! and go to sled as one batch every [`PENDING_CLICKS`] clicks, with the same
//! keys and values the service writes.
//!
//! Reads stay exact: a click's ledger entry is read back from here until it
//! is applied, and every other store operation applies what is pending
//! before touching the tree (`Store::tree`), so scans, snapshots and
//! deletions see every click in order.

use rustc_hash::FxHashMap;
use sled::Batch;

/// Clicks collected before one sled batch: large enough that sled's
/// per-batch cost vanishes per click, small enough to stay a few MB.
pub(super) const PENDING_CLICKS: usize = 256;

/// Writes not yet applied to the tree, in the order they were made.
#[derive(Default)]
pub(super) struct Pending {
    /// The latest state of each ledger key written (`None`: removed).
    ledger: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Journal records (user and contribution); their keys are unique.
    journal: Vec<(Vec<u8>, Vec<u8>)>,
    clicks: usize,
}

impl Pending {
    /// What the last pending click wrote under this ledger key: `None` if
    /// no pending click touched it, `Some(None)` if one removed it.
    pub(super) fn ledger(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ledger.get(key).map(|v| v.as_deref())
    }

    /// Adds one click's records; true when enough are pending to apply.
    pub(super) fn push(
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
    pub(super) fn batch(&self) -> Option<Batch> {
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
    pub(super) fn clear(&mut self) {
        self.ledger.clear();
        self.journal.clear();
        self.clicks = 0;
    }
}

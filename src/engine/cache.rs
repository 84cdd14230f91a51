//! Which user models stay in memory: all recently used ones, up to a memory
//! budget, least recently used out first.
//!
//! A model's memory is estimated from its token count
//! ([`model_bytes`]): the slot's hash map holds 20-byte entries (id,
//! counts, last seen) plus a control byte in a power-of-two table at most
//! 7/8 full, about [`BYTES_PER_TOKEN`] per token across model sizes
//! (`examples/footprint.rs`).
//!
//! # Evicting never loses data
//!
//! Everything a slot holds is already in storage when the slot is evicted:
//! the model is its snapshot plus the journal (every click is written before
//! it is applied in memory), and the policy is written before it changes in
//! memory. So an evicted slot is simply dropped; the next request reloads
//! the snapshot and replays a journal at most twice the model
//! (`store::checkpoint_due`).
//! Nothing is snapshotted on the way out: eviction stays cheap, and the
//! journal it leaves is bounded anyway.
//!
//! Two rules keep memory and storage from diverging:
//! - only a slot that no request holds is evicted: under the map's write
//!   lock (so no request can pick it up meanwhile) its `Arc` must be the
//!   map's alone. A request that holds a slot — scoring, or a click between
//!   its ledger read and its apply — makes it ineligible, so no write can
//!   go to a slot that has left the map;
//! - loads of one user are serialised (a striped lock), and a loader checks
//!   the map again once it holds the stripe, so a model read from disk is
//!   never inserted after a newer slot for the same user has come and gone.

use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::types::UserId;

/// Default model memory budget: 512 MiB, about 15 million tokens — some
/// thousands of typical users' models (a user who trained the whole
/// SpamAssassin corpus has 620k tokens, ~21 MiB; `--max-user-tokens`
/// caps a model at 300k, ~11 MiB), the shared model included.
pub const DEFAULT_MODEL_MEMORY: usize = 512 << 20;

/// Heap bytes per model token: 28.7 measured (`cargo run --release
/// --example footprint`) for a 620,149-token model when a map entry was 16
/// bytes — exactly its 2^20-bucket table at 17 bytes a bucket (entry plus
/// control byte). With the last-seen stamp an entry is 20 bytes (21 a
/// bucket): 35.5 for the same model, computed the same way; 24–48 across
/// sizes, depending on where the power-of-two capacity falls.
pub const BYTES_PER_TOKEN: usize = 36;

/// The share of the budget (in thousandths) kept for the store's token
/// dictionaries (`store::Store::set_dict_cache_bytes`; format 6 numbers each
/// user's tokens, and a click or a model load needs the user's dictionary
/// in memory, ~42 bytes an entry): user models and the shared model get the
/// rest. 12.5%: 64 MiB of the default 512 MiB (about 1.6 M entries, near the
/// 2 M the store keeps when no engine sets a bound), 8 MiB of a 64 MiB
/// budget. A dictionary is needed only to write and load, never to score,
/// so a small share costs a prefix scan per click of a user whose
/// dictionary was dropped, not scoring speed.
pub const DICT_SHARE_PERMILLE: usize = 125;

/// A slot's fixed cost: the slot, its locks, an empty model and policy,
/// its entry in the users map and the user id. Measured
/// (`cargo run --release --example slot_cost -- 20000 0`, 2026-12-07):
/// an idle user takes 688 heap bytes, 161 of them the store's cached
/// token-dictionary slot (charged to the dictionaries' share,
/// `store::dict`), so 527 here; rounded up for the allocator's header and
/// 16-byte rounding of each allocation. It was 512 while an idle slot
/// really took 1,079 with its dictionary slot (two empty allow/block
/// lists inline, 432 bytes; now a null pointer each), and the dictionary
/// slot was charged nothing (session 25's network review, finding N5).
/// If `UserSlot` grows, re-measure: `a_slot_is_as_small_as_its_charge_assumes`
/// pins its size.
pub(super) const SLOT_BYTES: usize = 640;

/// Evictions bring the resident total down to this fraction of the budget
/// (in percent), so one pass makes room for a while instead of running at
/// every load.
const EVICT_TO_PERCENT: usize = 90;

const STRIPES: usize = 64;

/// The estimated memory of a model with `tokens` tokens.
pub fn model_bytes(tokens: usize) -> usize {
    SLOT_BYTES + tokens.saturating_mul(BYTES_PER_TOKEN)
}

/// Model cache counters, cumulative since start (except the gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Slot lookups that found the user's model in memory (a Train looks
    /// up twice: before tokenizing and under the writer lock).
    pub hits: u64,
    /// Lookups that loaded a user's model (or created an empty one).
    pub misses: u64,
    /// Lookups of a user with nothing stored (Score of an unknown
    /// recipient): a storage read each time, nothing kept.
    pub absent: u64,
    /// Slots dropped to stay within the budget.
    pub evictions: u64,
    /// Slots in memory now.
    pub resident_users: u64,
    /// Estimated bytes of the slots in memory now.
    pub resident_bytes: u64,
    /// Estimated bytes of the shared model (its sum and every
    /// contributor's part), counted against the same budget: user models
    /// get what it leaves.
    pub shared_bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
}

/// The cache's bookkeeping; the slots themselves live in the engine's map.
pub(super) struct Cache {
    budget: usize,
    /// Bytes of the budget kept for token dictionaries
    /// ([`DICT_SHARE_PERMILLE`]); counted as in use.
    dicts: usize,
    resident: AtomicUsize,
    /// The shared model's estimated bytes ([`Cache::charge_shared`]).
    shared: AtomicUsize,
    /// A logical clock: each slot use stamps the slot with the next tick.
    clock: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    absent: AtomicU64,
    evictions: AtomicU64,
    stripes: Vec<Mutex<()>>,
    /// One eviction pass at a time; others skip (the running one makes room).
    evicting: Mutex<()>,
    /// The eviction clock's tick when a pass last freed nothing (every
    /// other slot busy, or one model bigger than the budget): no new pass
    /// until `RETRY_AFTER_USES` more slot uses, so an unfixable excess
    /// does not cost every click a scan of all users under the map lock.
    futile_at: AtomicU64,
}

/// Slot uses after a futile eviction pass before the next one.
const RETRY_AFTER_USES: u64 = 64;

/// A slot's cache fields (embedded in the engine's `UserSlot`).
#[derive(Default)]
pub(super) struct Entry {
    last_used: AtomicU64,
    /// Bytes this slot is counted for in `Cache::resident`.
    charged: AtomicUsize,
}

impl Cache {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            dicts: budget / 1000 * DICT_SHARE_PERMILLE,
            resident: AtomicUsize::new(0),
            shared: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            absent: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            evicting: Mutex::new(()),
            futile_at: AtomicU64::new(u64::MAX),
        }
    }

    /// The lock serialising loads of `user` (shared with a few others).
    pub(super) fn load_lock(&self, user: &UserId) -> MutexGuard<'_, ()> {
        let h = xxhash_rust::xxh3::xxh3_64(user.as_str().as_bytes());
        self.stripes[(h % STRIPES as u64) as usize].lock()
    }

    pub(super) fn touch(&self, entry: &Entry) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        entry.last_used.store(now, Ordering::Relaxed);
    }

    pub(super) fn last_used(entry: &Entry) -> u64 {
        entry.last_used.load(Ordering::Relaxed)
    }

    pub(super) fn hit(&self, entry: &Entry) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.touch(entry);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn absent(&self) {
        self.absent.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the slot's charge to a model of `tokens` tokens.
    pub(super) fn charge(&self, entry: &Entry, tokens: usize) {
        let new = model_bytes(tokens);
        let old = entry.charged.swap(new, Ordering::Relaxed);
        if new >= old {
            self.resident.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.resident.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// Removes the charge of a slot evicted from the map; returns the bytes
    /// freed.
    pub(super) fn discharge(&self, entry: &Entry) -> usize {
        self.evictions.fetch_add(1, Ordering::Relaxed);
        self.release(entry)
    }

    /// Removes the slot's charge (it left the map for another reason, e.g.
    /// DeleteUser); returns the bytes freed.
    pub(super) fn release(&self, entry: &Entry) -> usize {
        let old = entry.charged.swap(0, Ordering::Relaxed);
        self.resident.fetch_sub(old, Ordering::Relaxed);
        old
    }

    /// Sets the shared model's charge to `tokens` tokens held (its sum and
    /// every part: `SharedModel::stored_tokens`). The shared model is never
    /// evicted — every Score reads it — so it shrinks what user models get.
    pub(super) fn charge_shared(&self, tokens: usize) {
        let bytes = if tokens == 0 { 0 } else { model_bytes(tokens) };
        self.shared.store(bytes, Ordering::Relaxed);
    }

    /// The bytes of the budget the store's dictionaries may take.
    pub(super) fn dict_bytes(&self) -> usize {
        self.dicts
    }

    /// User models' and the shared model's estimated bytes together, and
    /// the dictionaries' share.
    fn in_memory(&self) -> usize {
        self.resident
            .load(Ordering::Relaxed)
            .saturating_add(self.shared.load(Ordering::Relaxed))
            .saturating_add(self.dicts)
    }

    /// `Some(bytes to free)` if over budget and no other pass is running;
    /// the guard must be held for the pass.
    pub(super) fn over_budget(&self) -> Option<(usize, MutexGuard<'_, ()>)> {
        if self.in_memory() <= self.budget {
            return None;
        }
        let futile = self.futile_at.load(Ordering::Relaxed);
        if futile != u64::MAX
            && self.clock.load(Ordering::Relaxed) < futile.saturating_add(RETRY_AFTER_USES)
        {
            return None;
        }
        let guard = self.evicting.try_lock()?;
        let target = self.budget / 100 * EVICT_TO_PERCENT;
        Some((self.in_memory().saturating_sub(target), guard))
    }

    /// Records the outcome of an eviction pass: whether it freed anything.
    pub(super) fn pass_done(&self, freed_any: bool) {
        let at = if freed_any {
            u64::MAX
        } else {
            self.clock.load(Ordering::Relaxed)
        };
        self.futile_at.store(at, Ordering::Relaxed);
    }

    pub(super) fn stats(&self, resident_users: usize) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            absent: self.absent.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            resident_users: resident_users as u64,
            resident_bytes: self.resident.load(Ordering::Relaxed) as u64,
            shared_bytes: self.shared.load(Ordering::Relaxed) as u64,
            budget_bytes: self.budget as u64,
        }
    }
}

/// Parses a memory size as a person types it: `512MiB`, `2GiB`, `64M`,
/// `1048576` (bytes). K, M, G (with or without `iB`/`B`) are powers of 1024.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB, 2GiB or 1048576"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}; use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("64 kb"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5TB").is_err());
    }

    #[test]
    fn charges_add_up_and_over_budget_names_the_excess() {
        let c = Cache::new(model_bytes(1000) * 2);
        let (a, b) = (Entry::default(), Entry::default());
        c.charge(&a, 1000);
        c.charge(&b, 500);
        assert!(c.over_budget().is_none());
        c.charge(&b, 1500);
        let (excess, _guard) = c.over_budget().expect("over");
        assert_eq!(
            excess,
            model_bytes(1000) + model_bytes(1500) + c.dict_bytes()
                - c.budget / 100 * EVICT_TO_PERCENT
        );
        c.discharge(&a);
        assert_eq!(c.stats(1).resident_bytes, model_bytes(1500) as u64);
        assert_eq!(c.stats(1).evictions, 1);
    }

    #[test]
    fn the_shared_model_counts_against_the_budget() {
        // Room for two 1000-token models beside the dictionaries' share.
        let c = Cache::new(model_bytes(1000) * 2 * 8 / 7);
        let a = Entry::default();
        c.charge(&a, 1000);
        assert!(c.over_budget().is_none());
        c.charge_shared(1000);
        assert!(c.over_budget().is_none());
        c.charge_shared(1500);
        let (excess, _guard) = c.over_budget().expect("over with the shared model");
        assert_eq!(
            excess,
            model_bytes(1000) + model_bytes(1500) + c.dict_bytes()
                - c.budget / 100 * EVICT_TO_PERCENT
        );
        assert_eq!(c.stats(1).shared_bytes, model_bytes(1500) as u64);
    }

    #[test]
    fn the_dictionaries_share_counts_against_the_budget() {
        let c = Cache::new(8 << 20);
        assert_eq!(c.dict_bytes(), (8 << 20) / 1000 * DICT_SHARE_PERMILLE);
        let a = Entry::default();
        // Models may fill what the dictionaries leave, not the whole budget.
        let room = ((8 << 20) - c.dict_bytes() - model_bytes(0)) / BYTES_PER_TOKEN;
        c.charge(&a, room);
        assert!(c.over_budget().is_none());
        c.charge(&a, room + 1);
        assert!(c.over_budget().is_some());
    }

    #[test]
    fn after_a_pass_that_freed_nothing_the_next_waits_for_more_uses() {
        let c = Cache::new(model_bytes(10));
        let a = Entry::default();
        c.charge(&a, 100);
        let (_, guard) = c.over_budget().expect("over budget");
        drop(guard);
        c.pass_done(false);
        assert!(c.over_budget().is_none(), "retried at once");
        for _ in 0..RETRY_AFTER_USES {
            c.touch(&a);
        }
        let (_, guard) = c.over_budget().expect("retried after enough uses");
        drop(guard);
        c.pass_done(true);
        assert!(
            c.over_budget().is_some(),
            "a useful pass does not hold off the next"
        );
    }
}

//! Per-contributor token dictionaries: every token id a user (or the
//! operator's seed) ever stored gets a dense number, in order of first use.
//!
//! Why: ledger entries, journal records and snapshots name tokens. As
//! random 64-bit hashes, a sorted message's ids cost ~7.4 bytes each
//! (gap varints), and a learned message keeps ~460 of them for exact undo:
//! the ledger was 34 of the 43 live bytes per model token (docs/
//! PERFORMANCE.md, "Storage footprint"). As dense numbers in a dictionary of
//! N entries the gaps between a message's sorted numbers are ~N/460, so
//! ~2 bytes each; a snapshot lists counts in dictionary order and needs no
//! ids at all. Each id is written once, 8 bytes, in the dictionary.
//!
//! On disk the dictionary is append-only: `K` · contributor · first number
//! (u32 BE) → the ids numbered from there (8 bytes each, little-endian) and
//! a checksum. A click that uses new ids appends their `K` record in the
//! same atomic batch as its ledger entry and journal record, so no stored
//! number can point past the dictionary. Between prunes a dictionary only
//! grows; after a prune of a user's model it is written anew with only the
//! ids still named, renumbered together with every record that names
//! numbers, in one atomic batch (store format 7, `compact.rs`). The
//! operator's seed dictionary is never renumbered.
//!
//! In memory a dictionary is its ids plus an id → number map (~28 bytes
//! per entry). Dictionaries are cached, least recently used dropped beyond
//! [`DICT_CACHE_TOKENS`] entries in all, and reloaded from `K` records
//! (one prefix scan) when needed again.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::tokenize::TokenId;

/// Dictionary entries kept in memory across all contributors unless the
/// engine sets its own bound from `--model-memory`
/// ([`Store::set_dict_cache_bytes`]): 2 M entries, ~80 MB. A dictionary is
/// needed by a click (to number its ids) and by loading a model; a hot
/// user's is kept, a cold one's costs one prefix scan (~8 bytes per entry
/// read) to bring back.
pub const DICT_CACHE_TOKENS: usize = 2_000_000;

/// Heap bytes of one dictionary entry, the estimate the cache's bound in
/// bytes is turned into entries with: an 8-byte id in a `Vec` (up to twice
/// that with its spare capacity) and a 16-byte (id, number) entry plus a
/// control byte in a hash table at most 7/8 full. `examples/footprint.rs`
/// (release, 2026-12-05) measured 77.8 heap bytes per token for a reloaded
/// 620,149-token model with its dictionary, of which the model's table is
/// 35.5 (2^20 buckets of 21 bytes): 42 for the dictionary's entry (a
/// 2^20-bucket table and a vector of 2^20 ids).
pub const DICT_ENTRY_BYTES: usize = 42;

/// One contributor's dictionary.
#[derive(Default, Debug)]
pub(super) struct Dict {
    ids: Vec<TokenId>,
    index: FxHashMap<u64, u32>,
}

impl Dict {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The number of `id`, if it has one.
    pub(super) fn number(&self, id: TokenId) -> Option<u32> {
        self.index.get(&id.0).copied()
    }

    /// The id numbered `n`.
    pub(super) fn id(&self, n: u64) -> Option<TokenId> {
        self.ids.get(usize::try_from(n).ok()?).copied()
    }

    /// Every id in number order.
    pub(super) fn ids(&self) -> &[TokenId] {
        &self.ids
    }

    /// Numbers the ids that have none yet, in order; returns the first new
    /// number (the old length). `false` when the dictionary is full (2^32
    /// entries), which no model reaches.
    pub(super) fn extend(&mut self, ids: impl IntoIterator<Item = TokenId>) -> Option<usize> {
        let start = self.ids.len();
        for id in ids {
            // One lookup per id, numbered or not.
            if let std::collections::hash_map::Entry::Vacant(slot) = self.index.entry(id.0) {
                slot.insert(u32::try_from(self.ids.len()).ok()?);
                self.ids.push(id);
            }
        }
        Some(start)
    }

    /// Drops the entries numbered `len` and up: undoes an [`Dict::extend`]
    /// whose batch sled refused, so memory never numbers what disk does not.
    pub(super) fn truncate(&mut self, len: usize) {
        for id in self.ids.drain(len.min(self.ids.len())..) {
            self.index.remove(&id.0);
        }
    }
}

/// A cached dictionary slot. The slot (not its contents) stays in the map
/// while anyone holds it, so a dictionary is loaded and extended under one
/// mutex per contributor: a reload can never miss an append in flight.
pub(super) type DictSlot = Arc<Mutex<Option<Dict>>>;

struct Cached {
    slot: DictSlot,
    last_use: u64,
    tokens: usize,
}

/// Every cached dictionary, keyed by the contributor's key prefix.
pub(super) struct Dicts {
    map: Mutex<Cache>,
    /// Entries kept at most (but never the dictionary in use, however
    /// large): [`DICT_CACHE_TOKENS`] unless set.
    limit: std::sync::atomic::AtomicUsize,
}

impl Default for Dicts {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            limit: DICT_CACHE_TOKENS.into(),
        }
    }
}

#[derive(Default)]
struct Cache {
    map: FxHashMap<Vec<u8>, Cached>,
    /// Last use counter (a logical clock for least-recently-used).
    tick: u64,
    /// Sum of the cached dictionaries' entries and each one's
    /// [`SLOT_ENTRIES`], kept as they change (a click must not sum over
    /// every user).
    total: usize,
}

impl Cache {
    /// Over `limit`: drops the least recently used dictionaries nobody
    /// holds, other than `keep` (the one in use), down to
    /// [`EVICT_TO_PERCENT`] of it.
    fn shrink(&mut self, keep: &[u8], limit: usize) {
        if self.total <= limit {
            return;
        }
        let target = limit / 100 * EVICT_TO_PERCENT;
        let mut by_age: Vec<(u64, Vec<u8>)> = self
            .map
            .iter()
            .filter(|(k, _)| k.as_slice() != keep)
            .map(|(k, c)| (c.last_use, k.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, key) in by_age {
            if self.total <= target {
                break;
            }
            let Some(c) = self.map.get(&key) else {
                continue;
            };
            // Only a slot nobody else holds: its mutex is free and stays so
            // (new holders clone it under the map lock, which we hold).
            if Arc::strong_count(&c.slot) == 1 {
                self.total -= c.tokens + SLOT_ENTRIES;
                self.map.remove(&key);
            }
        }
    }
}

/// What a cached dictionary costs beyond its entries, counted in entries
/// of [`DICT_ENTRY_BYTES`]: its key (the contributor's prefix), its slot
/// (an `Arc`'d mutex around an empty `Dict`) and its bucket in the map:
/// 161 heap bytes measured (`examples/slot_cost.rs`), 210 counted. A user
/// with no token yet (settings only, or a model never trained) still has
/// a cached slot once a load asked for it; counted as nothing, such slots
/// were never dropped, and a server given 224,000 such users (UpdateUser,
/// `--model-memory 64MiB --cache-mb 16`) reached 162 MiB RSS, 37 over
/// docs/OPERATIONS.md's formula, climbing about 8 MiB per 20,000 new
/// users; with them counted, 140 MiB at 292,000 (session 26, "Memory").
const SLOT_ENTRIES: usize = 5;

/// An eviction pass brings the total down to this share of the limit (in
/// percent), so one pass makes room for many loads instead of sorting the
/// whole map at every load once the cache is full.
const EVICT_TO_PERCENT: usize = 90;

impl Dicts {
    /// The slot for a contributor (empty if not loaded).
    pub(super) fn slot(&self, who: &[u8]) -> DictSlot {
        let limit = self.limit();
        let mut guard = self.map.lock();
        let cache = &mut *guard;
        cache.tick += 1;
        let now = cache.tick;
        let mut added = false;
        let cached = cache.map.entry(who.to_vec()).or_insert_with(|| {
            added = true;
            Cached {
                slot: DictSlot::default(),
                last_use: now,
                tokens: 0,
            }
        });
        cached.last_use = now;
        let slot = cached.slot.clone();
        if added {
            cache.total += SLOT_ENTRIES;
            cache.shrink(who, limit);
        }
        slot
    }

    fn limit(&self) -> usize {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the size of `who`'s dictionary after a use and drops the
    /// least recently used others while the total is over
    /// the limit (only those nobody is using right now).
    pub(super) fn used(&self, who: &[u8], tokens: usize) {
        let limit = self.limit();
        let mut guard = self.map.lock();
        let cache = &mut *guard;
        if let Some(c) = cache.map.get_mut(who) {
            cache.total = cache.total - c.tokens + tokens;
            c.tokens = tokens;
        }
        cache.shrink(who, limit);
    }

    /// Forgets a contributor's dictionary (its records were deleted).
    pub(super) fn remove(&self, who: &[u8]) {
        let slot = {
            let mut guard = self.map.lock();
            let removed = guard.map.remove(who);
            if let Some(c) = &removed {
                guard.total -= c.tokens + SLOT_ENTRIES;
            }
            removed
        };
        if let Some(c) = slot {
            *c.slot.lock() = None;
        }
    }
}

use super::Store;
use super::codec;
use super::keys::{DICT, contributor_prefix};
use crate::error::Error;
use crate::types::Owner;

/// The detail of a decoding error, to nest in a message that names the
/// record (the outer [`Error::Corrupt`] says what to do once).
pub(super) fn what(e: Error) -> String {
    match e {
        Error::Corrupt { what } => what,
        e => e.to_string(),
    }
}

/// Who a record belongs to, as an error message names them.
pub(super) fn describe(who: &Owner) -> String {
    match who {
        Owner::User(user) => format!("user {user}"),
        Owner::Operator => "the operator's seed".to_string(),
    }
}

impl<W: super::Writes> Store<W> {
    /// Bounds the dictionaries kept in memory to about `bytes`
    /// ([`DICT_ENTRY_BYTES`] an entry), least recently used dropped first;
    /// the engine gives them a share of `--model-memory`
    /// (`engine::cache`). The dictionary a click or load is using stays
    /// even when it alone is larger.
    pub fn set_dict_cache_bytes(&self, bytes: usize) {
        self.dicts.limit.store(
            bytes / DICT_ENTRY_BYTES,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Entries of the dictionaries in memory now.
    pub fn dict_cache_tokens(&self) -> usize {
        self.dicts.map.lock().total
    }

    /// Runs `f` with `who`'s dictionary, loading it first if it is not in
    /// memory. The dictionary's mutex is held throughout: whatever `f`
    /// numbers and writes, no other click of `who` interleaves.
    pub(super) fn with_dict<R>(
        &self,
        who: &Owner,
        f: impl FnOnce(&mut Dict) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let prefix = contributor_prefix(DICT, who);
        let slot = self.dicts.slot(&prefix);
        let (result, len) = {
            let mut guard = slot.lock();
            if guard.is_none() {
                *guard = Some(self.load_dict(&prefix, who)?);
            }
            let dict = guard.as_mut().expect("loaded above");
            let result = f(dict);
            (result, dict.len())
        };
        drop(slot);
        self.dicts.used(&prefix, len);
        result
    }

    /// Reads `who`'s dictionary records in number order.
    fn load_dict(&self, prefix: &[u8], who: &Owner) -> Result<Dict, Error> {
        let damaged = |what: &str| Error::Corrupt {
            what: format!(
                "token dictionary of {} ({what}): their model and ledger cannot be read",
                describe(who)
            ),
        };
        let mut dict = Dict::default();
        for item in self.tree()?.scan_prefix(prefix) {
            let (key, value) = item?;
            let first = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| damaged("bad record key"))?;
            if first as usize != dict.len() {
                return Err(damaged("a record is missing"));
            }
            let ids = codec::decode_dict(&key, &value).map_err(|e| damaged(&what(e)))?;
            let n = ids.len();
            dict.extend(ids)
                .ok_or_else(|| damaged("too many entries"))?;
            if dict.len() != first as usize + n {
                return Err(damaged("an id is numbered twice"));
            }
        }
        Ok(dict)
    }

    /// Deletes `who`'s dictionary records and forgets it in memory; after
    /// their ledger, model and journal are gone.
    pub(super) fn delete_dict(&self, who: &Owner) -> Result<(), Error> {
        let prefix = contributor_prefix(DICT, who);
        let slot = self.dicts.slot(&prefix);
        let mut guard = slot.lock();
        self.delete_prefix(&prefix)?;
        *guard = None;
        drop(guard);
        drop(slot);
        self.dicts.remove(&prefix);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_drops_the_least_recently_used_dictionary_nobody_holds() {
        let dicts = Dicts::default();
        drop(dicts.slot(b"a"));
        dicts.used(b"a", 1_500_000);
        let held = dicts.slot(b"b");
        dicts.used(b"b", 100);
        drop(dicts.slot(b"c"));
        // Over the budget: "a" (oldest, unheld) goes; "b" is held and stays.
        dicts.used(b"c", 1_000_000);
        let cache = dicts.map.lock();
        assert!(!cache.map.contains_key(b"a".as_slice()));
        assert!(cache.map.contains_key(b"b".as_slice()));
        assert_eq!(cache.total, 1_000_100 + 2 * SLOT_ENTRIES);
        drop(cache);
        drop(held);
    }

    #[test]
    fn a_lower_limit_drops_dictionaries_sooner() {
        let dicts = Dicts::default();
        dicts
            .limit
            .store(1_000, std::sync::atomic::Ordering::Relaxed);
        drop(dicts.slot(b"a"));
        dicts.used(b"a", 600);
        drop(dicts.slot(b"b"));
        dicts.used(b"b", 600);
        let cache = dicts.map.lock();
        assert!(!cache.map.contains_key(b"a".as_slice()));
        assert_eq!(cache.total, 600 + SLOT_ENTRIES);
    }

    /// A contributor with no entry (a user with settings only, or whose
    /// model was never trained) still takes a slot in the map: it is
    /// counted, and dropped like any other, so the cache stays bounded
    /// however many users come by.
    #[test]
    fn empty_dictionaries_count_and_are_dropped_too() {
        let dicts = Dicts::default();
        dicts
            .limit
            .store(1_000, std::sync::atomic::Ordering::Relaxed);
        for i in 0..10_000u32 {
            let who = i.to_be_bytes();
            drop(dicts.slot(&who));
            dicts.used(&who, 0);
        }
        let cache = dicts.map.lock();
        assert!(cache.total <= 1_000, "{}", cache.total);
        assert!(
            cache.map.len() <= 1_000 / SLOT_ENTRIES,
            "{}",
            cache.map.len()
        );
        assert!(cache.map.contains_key(9_999u32.to_be_bytes().as_slice()));
        assert_eq!(cache.total, cache.map.len() * SLOT_ENTRIES);
    }

    #[test]
    fn a_refused_batch_takes_its_new_numbers_back() {
        let mut dict = Dict::default();
        dict.extend([TokenId(5), TokenId(9)]).unwrap();
        let before = dict.len();
        dict.extend([TokenId(9), TokenId(1), TokenId(2)]).unwrap();
        assert_eq!(dict.len(), 4);
        dict.truncate(before);
        assert_eq!((dict.len(), dict.number(TokenId(1))), (2, None));
        assert_eq!(dict.number(TokenId(9)), Some(1));
    }
}

//! Compacting a user after a prune (store format 7): the ledger entries
//! lose the ids of tokens the model no longer has, and the dictionary
//! keeps only the ids something still names, renumbered.
//!
//! # Why
//!
//! The quota (`engine::quota`) prunes a model back under
//! `--max-user-tokens`, but a pruned token's id stayed in every ledger
//! entry that named it and in the user's append-only dictionary: one user
//! who learned all of SpamAssassin kept 620k numbered ids for a 290k-token
//! model, 70 bytes on disk per model token (docs/PERFORMANCE.md, "Pruned
//! tokens and the ledger"). It was also less exact: a Forget of a click
//! older than a prune subtracted its pruned tokens' counts from what later
//! clicks had added (saturating at zero). With the ids dropped, each
//! token's count is the sum of the entries that still name it, the
//! invariant the ledger has without pruning (`engine::quota`'s
//! `ledger_rule_tests`, and end to end in `engine::tests_quota`).
//!
//! # The rule
//!
//! A live entry of the model's tokenizer version keeps the ids of tokens
//! the model has *now*; nothing needs to remember which tokens a prune
//! took, so the rule is idempotent. Kept whole: entries of another
//! tokenizer version (the model never counted them), folded entries (no
//! ids), and entries of a click that is in the user's shared part under
//! the *current* consent id — a Forget takes that click out of the shared
//! part with the same ids (`engine::clicks`, `undo_shared`), and the
//! shared model prunes its own tokens on its own sum, so a token the
//! user's model dropped may still be counted there. After a revoke those
//! entries are no longer shared and the next compaction trims them.
//!
//! The new dictionary numbers the model's ids first (so the snapshot, which
//! lists counts by number, has no zero pairs), then the ids only kept
//! entries name, each group in its old order.
//!
//! # Atomic per user: one sled batch, and why not a switch
//!
//! Numbers are positions in the dictionary, so every record that names
//! numbers — the dictionary itself, each ledger entry, the snapshot and any
//! journal record after it — must change together: a directory with some
//! entries in the new numbering and the dictionary in the old one would
//! read wrong ids, silently (the checksums bind a value to its key, not to
//! a dictionary). The whole user is therefore rewritten in one
//! `apply_batch`, which sled applies atomically, also across a crash: a
//! SIGKILL leaves the user wholly as before or wholly compacted, both
//! consistent. The journal is folded into the snapshot in the same batch
//! (so no journal record needs renumbering, and no journal pointer names
//! an entry whose ids changed). A new-version-then-switch scheme (a
//! dictionary generation in every key, both generations readable until the
//! switch) would keep each batch small but double what a reader must know;
//! the batch here is bounded by what the user's undo window holds (one
//! record per click inside `--undo-window` plus ~1/1024 of the model's
//! tokens), and it runs under the user's dictionary lock in the
//! background, after the prune's checkpoint, never on a Score's path.

use sled::Batch;

use super::Store;
use super::codec::{self, SnapshotHead};
use super::dict::{Dict, what};
use super::keys::*;
use super::writes::Writes;
use crate::classify::Model;
use crate::error::Error;
use crate::tokenize::TokenId;
use crate::types::{Owner, UserId};

/// Ids per dictionary record when a compaction writes a dictionary anew:
/// 8 KiB values, well under sled's blob threshold (a node over a quarter
/// of a 512 KiB segment becomes a blob file), and few enough keys that a
/// 300k-token dictionary is ~300 records.
const DICT_RECORD_IDS: usize = 1024;

/// What [`Store::compact_user`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// The dictionary's entries before and after.
    pub dict_before: usize,
    pub dict_after: usize,
    /// Ledger entries rewritten (in new numbers, or with fewer ids).
    pub entries: u64,
    /// Ids dropped from ledger entries (tokens the model no longer has).
    pub ids_dropped: u64,
}

/// A ledger entry as the compaction reads it.
struct Read {
    key: Vec<u8>,
    entry: codec::LedgerEntry,
    /// `Some((seq, time))` for a format-6 entry, `None` for an older one
    /// (which names ids, not numbers, and is rewritten only if it loses
    /// some).
    v6: Option<(u64, u64)>,
    /// Whether the entry keeps all its ids (see the module docs).
    whole: bool,
}

impl<W: Writes> Store<W> {
    /// Compacts `user` (see the module docs): drops the ids of tokens their
    /// model no longer has from their ledger entries and renumbers their
    /// dictionary, in one atomic batch under their dictionary lock. Does
    /// nothing for a user without a stored model, or when nothing would
    /// change. Not durable until [`Store::flush`].
    pub fn compact_user(&self, user: &UserId) -> Result<Compacted, Error> {
        let who = Owner::User(user.clone());
        self.with_dict(&who, |dict| self.compact_with(user, dict))
    }

    fn compact_with(&self, user: &UserId, dict: &mut Dict) -> Result<Compacted, Error> {
        let Some(loaded) = self.load_model_with(user, dict)? else {
            return Ok(Compacted::default());
        };
        let model = loaded.model;
        let consent = self.settings(user)?.map_or(0, |(_, consent)| consent);
        let entries = self.read_entries(user, &model, consent, dict)?;

        // The ids something still names, model first (see the module docs).
        let mut named = rustc_hash::FxHashSet::default();
        for r in &entries {
            if r.whole && r.v6.is_some() {
                named.extend(r.entry.tokens.iter().map(|id| id.0));
            }
        }
        let mut ids: Vec<TokenId> = Vec::with_capacity(model.token_count() + named.len());
        let in_model = |id: &TokenId| model.get(*id).is_some();
        ids.extend(dict.ids().iter().copied().filter(in_model));
        // A model read from an older snapshot or journal may hold ids the
        // dictionary never numbered: they are numbered here.
        let mut unnumbered: Vec<TokenId> = model
            .iter_stamped()
            .map(|(id, _, _)| id)
            .filter(|id| dict.number(*id).is_none())
            .collect();
        unnumbered.sort_unstable_by_key(|id| id.0);
        ids.extend(unnumbered);
        ids.extend(
            dict.ids()
                .iter()
                .copied()
                .filter(|id| !in_model(id) && named.contains(&id.0)),
        );
        let trimmed = entries
            .iter()
            .any(|r| !r.whole && r.entry.tokens.iter().any(|id| !in_model(id)));
        let journal: Vec<sled::IVec> = self
            .tree()?
            .scan_prefix(user_prefix(JOURNAL, user))
            .keys()
            .collect::<Result<_, _>>()?;
        if ids.len() == dict.len() && ids.as_slice() == dict.ids() && !trimmed {
            return Ok(Compacted {
                dict_before: dict.len(),
                dict_after: dict.len(),
                ..Compacted::default()
            });
        }
        let mut new = Dict::default();
        new.extend(ids.iter().copied())
            .ok_or_else(|| Error::Corrupt {
                what: format!("token dictionary of user {user} is full"),
            })?;

        let mut batch = Batch::default();
        let prefix = contributor_prefix(DICT, &Owner::User(user.clone()));
        for key in self.tree()?.scan_prefix(&prefix).keys() {
            batch.remove(key?);
        }
        for (i, chunk) in new.ids().chunks(DICT_RECORD_IDS).enumerate() {
            let key = dict_key(&prefix, i * DICT_RECORD_IDS);
            batch.insert(key.clone(), codec::encode_dict(&key, chunk));
        }
        let mut done = Compacted {
            dict_before: dict.len(),
            dict_after: new.len(),
            ..Compacted::default()
        };
        for mut r in entries {
            let before = r.entry.tokens.len();
            if !r.whole {
                r.entry.tokens.retain(in_model);
            }
            let dropped = (before - r.entry.tokens.len()) as u64;
            let value = match r.v6 {
                Some((seq, time_s)) => codec::encode_ledger_v6(&r.key, &r.entry, seq, time_s, &new),
                None if dropped > 0 => codec::encode_ledger(&r.entry),
                None => continue,
            };
            batch.insert(r.key, value);
            done.entries += 1;
            done.ids_dropped += dropped;
        }
        // The journal folds into the snapshot (see the module docs).
        for key in journal {
            batch.remove(key);
        }
        let key = user_prefix(MODEL, user);
        let tokens: Vec<_> = model.iter_stamped().collect();
        let snapshot = codec::encode_snapshot_v6(
            &key,
            SnapshotHead::of(&model),
            loaded.last_seq,
            &tokens,
            &new,
        );
        batch.insert(key, snapshot);
        self.tree()?.apply_batch(batch)?;
        *dict = new;
        Ok(done)
    }

    /// Every live ledger entry of `user`, decoded, with whether it keeps
    /// all its ids.
    fn read_entries(
        &self,
        user: &UserId,
        model: &Model,
        consent: u64,
        dict: &Dict,
    ) -> Result<Vec<Read>, Error> {
        let prefix = user_prefix(LEDGER, user);
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(&prefix) {
            let (key, value) = item?;
            let damaged = |e: Error| Error::Corrupt {
                what: format!(
                    "ledger entry of user {user} for message {}: {}; restore the data \
                     directory from a backup",
                    String::from_utf8_lossy(&key[prefix.len()..]),
                    what(e)
                ),
            };
            let (_, facts) = codec::ledger_facts(&key, &value).map_err(damaged)?;
            if facts.folded {
                continue;
            }
            let (entry, seq) =
                codec::decode_ledger_seq(&key, &value, Some(dict)).map_err(damaged)?;
            let whole = entry.tokenizer_version != model.tokenizer_version()
                || (entry.shared != 0 && entry.shared == consent);
            let v6 = seq.map(|seq| (seq, facts.time_s.unwrap_or(self.legacy_time_s)));
            out.push(Read {
                key: key.to_vec(),
                entry,
                v6,
                whole,
            });
        }
        Ok(out)
    }

    /// Every user with a dictionary (format 6 and later), in key order:
    /// the users a format-6 directory's upgrade compacts.
    pub(super) fn users_with_dicts(&self) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        let mut from = vec![DICT];
        let end = prefix_end(&[DICT]);
        loop {
            let Some(item) = self.tree()?.range(from.clone()..end.clone()).next() else {
                return Ok(users);
            };
            let (key, _) = item?;
            let (who, _) = decode_contributor(&key)?;
            let next = prefix_end(&contributor_prefix(DICT, &who));
            if let Owner::User(user) = who {
                users.push(user);
            }
            from = next;
        }
    }
}

//! User models: snapshots, the journal replayed over them at load, and when
//! to fold the journal into a new snapshot.

use sled::Batch;

use super::Store;
use super::codec::{self};
use super::dict::Dict;
use super::keys::*;
use crate::classify::{Counts, Model};
use crate::error::Error;
use crate::tokenize::TokenId;
use crate::types::{Owner, UserId};

/// A model record that does not read back: names it and what to do.
fn damaged_model(user: &UserId, record: &str, e: Error) -> Error {
    Error::Corrupt {
        what: format!(
            "model {record} of user {user}: {}; restore the data directory from a backup, \
             or rebuild this user's model from their ledger with `chaff repair --user {user}`",
            super::dict::what(e)
        ),
    }
}

/// A journal shorter than this many entries ([`Op::entries`](super::Op::entries): token ids,
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
    /// Entries ([`Op::entries`](super::Op::entries)) in the journal records after the snapshot
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
///
/// Since format 6 a user's snapshot lists counts in the order of the user's
/// token dictionary, which only the store knows: `encode` copies the
/// model's (id, counts, last-seen stamp) triples (20 bytes a token, what
/// sorting them for the format-5 snapshot already copied) and the store
/// encodes them, with the quota's recency section (`recency.rs`).
pub struct Snapshot {
    pub(super) head: codec::SnapshotHead,
    pub(super) tokens: Vec<(TokenId, Counts, u32)>,
    pub(super) last_seq: u64,
}

impl Snapshot {
    pub fn encode(model: &Model, last_seq: u64) -> Self {
        Self {
            head: codec::SnapshotHead::of(model),
            tokens: model.iter_stamped().collect(),
            last_seq,
        }
    }
}

impl<W: super::Writes> Store<W> {
    /// The user's model (snapshot plus journal replay), or `None` for a user
    /// with nothing stored.
    pub fn load_model(&self, user: &UserId) -> Result<Option<LoadedModel>, Error> {
        let who = Owner::User(user.clone());
        self.with_dict(&who, |dict| self.load_model_with(user, dict))
    }

    pub(super) fn load_model_with(
        &self,
        user: &UserId,
        dict: &Dict,
    ) -> Result<Option<LoadedModel>, Error> {
        let model_key = user_prefix(MODEL, user);
        let snapshot = self.tree()?.get(&model_key)?;
        let (mut model, mut last_seq) = match &snapshot {
            Some(bytes) => codec::decode_snapshot_any(&model_key, bytes, Some(dict))
                .map_err(|e| damaged_model(user, "snapshot", e))?,
            None => (Model::default(), 0),
        };
        let mut journal_entries = 0;
        let mut records = 0;
        let start = journal_key(user, last_seq.saturating_add(1));
        let end = journal_key(user, u64::MAX);
        for item in self.tree()?.range(start..=end) {
            let (key, value) = item?;
            let mut entries = 0;
            let seq_bytes = &key[key.len() - 8..];
            let seq =
                u64::from_be_bytes(seq_bytes.try_into().expect("journal key ends in 8 bytes"));
            let ops = self
                .journal_ops(user, seq, &key, &value, dict)
                .map_err(|e| damaged_model(user, "journal record", e))?;
            for op in ops {
                op.apply(&mut model);
                entries += op.entries();
            }
            // A record counts even with no ops (see `Engine::commit`).
            journal_entries += entries.max(1);
            last_seq = seq;
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

    /// A journal record's ops; a pointer record's from the ledger entry it
    /// names, which must be the one its click wrote.
    fn journal_ops(
        &self,
        user: &UserId,
        seq: u64,
        key: &[u8],
        value: &[u8],
        dict: &Dict,
    ) -> Result<Vec<codec::Op>, Error> {
        let Some(message) = codec::learn_pointer(key, value)? else {
            return codec::decode_ops_any(key, value, Some(dict));
        };
        let mut ledger = user_prefix(LEDGER, user);
        ledger.extend_from_slice(message);
        let missing = || Error::Corrupt {
            what: format!(
                "journal record {seq} names message {} whose ledger entry is missing or newer",
                String::from_utf8_lossy(message)
            ),
        };
        let entry = self.tree()?.get(&ledger)?.ok_or_else(missing)?;
        let (e, written) = codec::decode_ledger_seq(&ledger, &entry, Some(dict))?;
        if written != Some(seq) {
            return Err(missing());
        }
        Ok(vec![codec::Op::learn_entry(e)])
    }

    /// The last journal sequence number folded into the user's snapshot (0:
    /// no snapshot). Lets a check from outside the engine see that a
    /// checkpoint happened (`chaff soak` counts them).
    pub fn snapshot_seq(&self, user: &UserId) -> Result<u64, Error> {
        Ok(match self.tree()?.get(user_prefix(MODEL, user))? {
            Some(bytes) => codec::decode_snapshot_seq(&bytes)?,
            None => 0,
        })
    }

    /// Folds the journal up to `last_seq` into a snapshot of `model`, and
    /// deletes the folded records, atomically.
    pub fn checkpoint(&self, user: &UserId, model: &Model, last_seq: u64) -> Result<(), Error> {
        self.write_checkpoint(user, Snapshot::encode(model, last_seq))
    }

    /// Applies `batch` with `snapshot` as the user's model, atomically:
    /// numbers the snapshot's ids the user's dictionary does not hold yet
    /// (a model from a format-5 snapshot, or a rebuilt one) in the same
    /// batch, and takes them back from the dictionary if the batch fails.
    fn apply_with_snapshot(
        &self,
        mut batch: Batch,
        dict: &mut Dict,
        user: &UserId,
        snapshot: &Snapshot,
    ) -> Result<(), Error> {
        let before = dict.len();
        dict.extend(snapshot.tokens.iter().map(|(id, _, _)| *id))
            .ok_or_else(|| Error::Corrupt {
                what: format!("token dictionary of user {user} is full"),
            })?;
        if dict.len() > before {
            let who = Owner::User(user.clone());
            let key = dict_key(&contributor_prefix(DICT, &who), before);
            let value = codec::encode_dict(&key, &dict.ids()[before..]);
            batch.insert(key, value);
        }
        let key = user_prefix(MODEL, user);
        let value = codec::encode_snapshot_v6(
            &key,
            snapshot.head,
            snapshot.last_seq,
            &snapshot.tokens,
            dict,
        );
        batch.insert(key, value);
        if let Err(e) = self.tree()?.apply_batch(batch) {
            dict.truncate(before);
            return Err(e.into());
        }
        Ok(())
    }

    /// [`Store::checkpoint`] with the model already encoded.
    pub fn write_checkpoint(&self, user: &UserId, snapshot: Snapshot) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        #[cfg(feature = "fault-injection")]
        crate::fault::checkpoint_step(&who, "starting");
        self.with_dict(&who, |dict| {
            let mut batch = Batch::default();
            for item in self
                .tree()?
                .range(journal_key(user, 0)..=journal_key(user, snapshot.last_seq))
            {
                let (key, _) = item?;
                batch.remove(key);
            }
            // A model loaded from a format-5 snapshot has ids its dictionary
            // never numbered: number them in this batch.
            self.apply_with_snapshot(batch, dict, user, &snapshot)?;
            Ok(())
        })?;
        #[cfg(feature = "fault-injection")]
        {
            crate::fault::checkpoint_step(&who, "written");
            crate::fault::checkpoint_step(&who, "done");
        }
        Ok(())
    }
}

impl<W: super::Writes> Store<W> {
    /// Every user with a snapshot or a journal record, each once.
    pub(super) fn users_with_models(&self) -> Result<Vec<UserId>, Error> {
        let mut users = std::collections::BTreeSet::new();
        for kind in [MODEL, JOURNAL] {
            let mut from = vec![kind];
            let end = prefix_end(&[kind]);
            while let Some(item) = self.tree()?.range(from.clone()..end.clone()).next() {
                let user = user_in_key(&item?.0)?;
                from = prefix_end(&user_prefix(kind, &user));
                users.insert(user);
            }
        }
        Ok(users.into_iter().collect())
    }

    /// The format-8 upgrade of one user ([`Store::upgrade_format_7`]):
    /// their model checkpointed with all its ham counted as delivered.
    /// Returns that ham weight.
    pub(super) fn checkpoint_all_delivered(&self, user: &UserId) -> Result<u64, Error> {
        let Some(loaded) = self.load_model(user)? else {
            return Ok(0);
        };
        let mut model = loaded.model;
        let ham = model.weights().1;
        model.set_delivered_ham_weight(ham);
        self.write_checkpoint(user, Snapshot::encode(&model, loaded.last_seq))?;
        Ok(ham)
    }
}

/// What [`Store::rebuild_model`] recounted from a user's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Clicks recounted into the new model.
    pub learned: u64,
    /// Clicks beyond the undo window: their tokens were folded away, so
    /// their counts could not be recounted and are not in the new model.
    pub folded: u64,
    /// Clicks learned by another tokenizer version (not in a current model
    /// either, see `Engine::slot`).
    pub other_tokenizer: u64,
    /// Tokens in the new model.
    pub tokens: usize,
}

impl<W: super::Writes> Store<W> {
    /// Rebuilds a user's model from their ledger alone — for a damaged
    /// snapshot or journal record (`chaff repair`): every live ledger entry
    /// of the current tokenizer is learned again with its label and weight,
    /// and the new snapshot replaces the old one and the whole journal in
    /// one batch. Exact when no click was folded (see [`Rebuilt::folded`]).
    /// The user's shared-model part is not touched. Run with the server
    /// stopped (the store's file lock makes sure).
    pub fn rebuild_model(&self, user: &UserId) -> Result<Rebuilt, Error> {
        let who = Owner::User(user.clone());
        self.with_dict(&who, |dict| {
            let mut model = Model::default();
            let mut rebuilt = Rebuilt::default();
            let prefix = user_prefix(LEDGER, user);
            for item in self.tree()?.scan_prefix(&prefix) {
                let (key, value) = item?;
                let damaged = |e: Error| Error::Corrupt {
                    what: format!(
                        "ledger entry of user {user} for message {}: {}; the model cannot be \
                         rebuilt from this ledger: restore the data directory from a backup",
                        String::from_utf8_lossy(&key[prefix.len()..]),
                        super::dict::what(e)
                    ),
                };
                let (_, facts) = codec::ledger_facts(&key, &value).map_err(damaged)?;
                if facts.folded {
                    rebuilt.folded += 1;
                    continue;
                }
                let e = codec::decode_ledger_any(&key, &value, Some(dict)).map_err(damaged)?;
                if e.tokenizer_version != model.tokenizer_version() {
                    rebuilt.other_tokenizer += 1;
                    continue;
                }
                codec::Op::learn_entry(e).apply(&mut model);
                rebuilt.learned += 1;
            }
            rebuilt.tokens = model.token_count();
            // Above every journal record written so far.
            let seq = self.generate_id()?;
            let mut batch = Batch::default();
            for item in self.tree()?.scan_prefix(user_prefix(JOURNAL, user)) {
                batch.remove(item?.0);
            }
            let snapshot = Snapshot::encode(&model, seq);
            self.apply_with_snapshot(batch, dict, user, &snapshot)?;
            self.flush()?;
            Ok(rebuilt)
        })
    }
}

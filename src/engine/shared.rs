//! The shared-model use cases: keeping each contributor's part durable,
//! seeding it from the operator's corpus, describing it. Scoring reads it
//! in the pipeline's blend step (`score.rs`); deleting a user takes their
//! part out (`users.rs`).
//!
//! Durability follows the user models': each contributor's part is a
//! snapshot plus journal records (`G`/`H` keys), written in the same sled
//! batch as the click's ledger entry and model journal record and flushed
//! before the reply; the shared model itself is rebuilt from the parts when
//! the engine starts (`store` docs). docs/SHARED.md has the whole story.

use rustc_hash::FxHashMap;
use tracing::{info, warn};

use super::{Engine, Position, TrainOutcome, derive_message_id};
use crate::classify::{self, Model, SharedModel};
use crate::error::Error;
use crate::store::{Aggregate, Backend, LedgerEntry, Op, Snapshot, checkpoint_due};
use crate::tokenize::{TOKENIZER_VERSION, Tokens};
use crate::types::{Label, MessageId, Owner};

/// What a SeedShared call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    pub outcome: TrainOutcome,
    pub message_id: MessageId,
}

/// The shared model's size and who is in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedSummary {
    /// Users whose clicks are in the shared model.
    pub users: u64,
    /// Messages in the shared model, seed included (uncapped counts).
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// Distinct tokens in the shared model.
    pub tokens: u64,
    /// Of the messages above, the operator's seed.
    pub seed_spam: u64,
    pub seed_ham: u64,
    /// Estimated memory of the shared model: `S` and every contribution
    /// (each a model in memory), by the same estimate as user models
    /// ([`super::model_bytes`]). Never evicted, and charged against
    /// `--model-memory` (`Cache::charge_shared`), so it shrinks what
    /// user models get; reported apart so an operator sees that share.
    pub bytes: u64,
}

/// The shared model and its parts' journal positions, from storage.
pub(super) fn load(
    store: &dyn Backend,
) -> Result<(SharedModel, FxHashMap<Owner, Position>), Error> {
    let mut parts = Vec::new();
    let mut positions = FxHashMap::default();
    for (who, loaded) in store.load_contributions()? {
        let mut position = Position {
            last_seq: loaded.last_seq,
            journal_entries: loaded.journal_entries,
        };
        let mut model = loaded.model;
        if model.tokenizer_version() != TOKENIZER_VERSION {
            // As for user models (Engine::slot): other token ids must not
            // be mixed in. Start the part over; snapshot it at its next click.
            warn!(%who, stored = model.tokenizer_version(), "shared contribution was built by another tokenizer version; dropping it");
            model = Model::default();
            position.journal_entries = u64::MAX;
        }
        positions.insert(who.clone(), position);
        parts.push((who, model));
    }
    let shared = SharedModel::from_parts(parts);
    if shared.contributors() > 0 {
        let (spam, ham) = (shared.total().spam_learned(), shared.total().ham_learned());
        info!(
            contributors = shared.contributors(),
            spam,
            ham,
            tokens = shared.total().token_count(),
            "shared model loaded"
        );
    }
    Ok((shared, positions))
}

impl Engine {
    /// recorded under `seq`); true when the part is due for a snapshot.
    pub(super) fn apply_shared(&self, who: &Owner, ops: &[Op], seq: u64) -> bool {
        if ops.is_empty() {
            return false;
        }
        let part_tokens = {
            let mut shared = self.shared.write();
            for op in ops {
                let (learn, label, w, ids) = op.parts();
                shared.apply(who, learn, label, w, ids);
            }
            self.cache.charge_shared(shared.stored_tokens());
            self.note_shared_tokens(shared.total().token_count());
            shared
                .contribution(who)
                .map_or(0, |part| part.token_count())
        };
        let mut positions = self.positions.lock();
        let p = positions.entry(who.clone()).or_default();
        p.last_seq = seq;
        p.journal_entries = ops
            .iter()
            .fold(p.journal_entries, |n, op| n.saturating_add(op.entries()));
        checkpoint_due(p.journal_entries, part_tokens)
    }

    /// Snapshots `who`'s part if it has journal records. The caller holds
    /// the lock that orders `who`'s writes (its writer lock, or the seed's).
    pub(super) fn checkpoint_contribution(&self, who: &Owner) -> Result<(), Error> {
        let Some(position) = self.positions.lock().get(who).copied() else {
            return Ok(());
        };
        if position.journal_entries == 0 {
            return Ok(());
        }
        // Copied under the shared lock and encoded after it: any consenting
        // user's click waits for that lock as a writer, and a waiting writer
        // holds up every reader — all scoring. (A user's own model is
        // encoded in place: its only writer is the click holding the lock.)
        let part = self
            .shared
            .read()
            .contribution(who)
            .cloned()
            .unwrap_or_default();
        let snapshot = Snapshot::encode(&part, position.last_seq);
        self.store.checkpoint_contribution(who, snapshot)?;
        if let Some(p) = self.positions.lock().get_mut(who) {
            p.journal_entries = 0;
        }
        Ok(())
    }

    /// Takes `who`'s whole part out of the shared model in memory (storage
    /// already dropped it); returns the messages it held.
    pub(super) fn drop_contribution(&self, who: &Owner) -> (u64, u64) {
        self.positions.lock().remove(who);
        let mut shared = self.shared.write();
        let part = shared.remove(who);
        self.cache.charge_shared(shared.stored_tokens());
        part.map_or((0, 0), |m| (m.spam_learned(), m.ham_learned()))
    }

    /// Adds one message of the operator's labelled corpus to the shared
    /// model, under the operator's seed ledger: seeding the same message
    /// again changes nothing, with the other label moves it. Durable before
    /// it returns.
    pub fn seed(
        &self,
        message: &[u8],
        label: Label,
        message_id: Option<MessageId>,
    ) -> Result<Seeded, Error> {
        self.needs(Aggregate::Shared)?;
        super::clicks::refuse_empty(message)?;
        self.check_size(message)?;
        let message_id = message_id.unwrap_or_else(|| derive_message_id(message));
        let Tokens { ids, .. } = self.settings.tokenizer.tokenize(message);
        let who = Owner::Operator;
        let mut seed = self.seed.lock();
        if *seed == 0 {
            let id = self.store.generate_id()?;
            self.store.set_seed_id(id, false)?;
            *seed = id;
        }
        if let Some(clicks) = self.store.shared_clicks() {
            // A store shared by replicas decides it, as a click
            // (`store::redis_cluster`'s seed): the seed lock orders only
            // this process's seeds.
            return self.seed_shared(clicks, seed, message_id, label, ids);
        }
        // Entries of a cleared seed are stale: as if never seeded.
        let previous = self
            .store
            .contributor_ledger_get(&who, &message_id)?
            .filter(|p| p.shared == *seed);
        let (outcome, ops) = match previous {
            Some(prev) if prev.label == label => {
                // The entry may rest on an earlier seed whose flush failed:
                // report stored state only once it is durable.
                self.store.flush()?;
                return Ok(Seeded {
                    outcome: TrainOutcome::AlreadyLearned,
                    message_id,
                });
            }
            Some(prev) => {
                let mut ops = super::clicks::undo_shared(&prev, *seed);
                ops.push(Op::Learn(label, classify::Weight::FULL, ids.clone()));
                (TrainOutcome::Relearned, ops)
            }
            None => (
                TrainOutcome::Learned,
                vec![Op::Learn(label, classify::Weight::FULL, ids.clone())],
            ),
        };
        let entry = seed_entry(label, ids, *seed);
        let seq = self
            .store
            .record_click(&who, &message_id, Some(&entry), &[], &ops)?;
        let due = self.apply_shared(&who, &ops, seq);
        self.store.flush()?;
        if due {
            self.checkpoint_contribution(&who)?;
        }
        drop(seed);
        // The seed may have taken the shared model past its cap.
        self.after_click()?;
        Ok(Seeded {
            outcome,
            message_id,
        })
    }

    /// [`Engine::seed`] on a store shared by replicas.
    fn seed_shared(
        &self,
        clicks: &dyn crate::store::SharedClicks,
        seed: parking_lot::MutexGuard<'_, u64>,
        message_id: MessageId,
        label: Label,
        ids: Vec<crate::tokenize::TokenId>,
    ) -> Result<Seeded, Error> {
        let entry = seed_entry(label, ids, *seed);
        let clicked = clicks.seed(&message_id, &entry)?;
        drop(seed);
        // This replica's next Score has it.
        self.poll_shared(clicks, true)?;
        let outcome = match clicked.outcome {
            crate::store::ClickOutcome::Learned => TrainOutcome::Learned,
            crate::store::ClickOutcome::AlreadyLearned => TrainOutcome::AlreadyLearned,
            crate::store::ClickOutcome::Relearned => TrainOutcome::Relearned,
            crate::store::ClickOutcome::Forgotten(_) => {
                return Err(Error::Corrupt {
                    what: "the store answered a seed with Forgotten".into(),
                });
            }
        };
        Ok(Seeded {
            outcome,
            message_id,
        })
    }

    /// Removes the operator's whole seed from the shared model (users'
    /// contributions stay); returns the spam and ham messages it held.
    pub fn clear_seed(&self) -> Result<(u64, u64), Error> {
        self.needs(Aggregate::Shared)?;
        if let Some(clicks) = self.store.shared_clicks() {
            // Count what another replica seeded lately too.
            self.poll_shared(clicks, true)?;
        }
        let mut seed = self.seed.lock();
        let id = self.store.generate_id()?;
        self.store.set_seed_id(id, true)?;
        // Memory follows what sled holds before the slow, fallible rest.
        *seed = id;
        let dropped = self.drop_contribution(&Owner::Operator);
        self.store.finish_seed_clear()?;
        Ok(dropped)
    }
    /// The shared model's size.
    pub fn shared_summary(&self) -> SharedSummary {
        let shared = self.shared.read();
        let total = shared.total();
        let seed = shared.contribution(&Owner::Operator);
        SharedSummary {
            users: (shared.contributors() - usize::from(seed.is_some())) as u64,
            spam_learned: total.spam_learned(),
            ham_learned: total.ham_learned(),
            tokens: total.token_count() as u64,
            seed_spam: seed.map_or(0, Model::spam_learned),
            seed_ham: seed.map_or(0, Model::ham_learned),
            bytes: shared
                .token_counts()
                .map(|t| super::model_bytes(t) as u64)
                .sum(),
        }
    }

    /// Whether the shared model holds anything at all.
    pub(super) fn anything_shared(&self) -> bool {
        self.shared.read().total().weights() != (0, 0)
    }

    /// A copy of the shared model's counts (`S`), for comparisons.
    pub fn shared_model(&self) -> Model {
        self.shared.read().total().clone()
    }
}

/// The ledger entry of one operator's seed message: learned at full
/// weight under the current tokenizer, shared under the seed's id (the
/// same on sled and on a store shared by replicas).
fn seed_entry(label: Label, ids: Vec<crate::tokenize::TokenId>, seed: u64) -> LedgerEntry {
    LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens: ids,
        weight: classify::Weight::FULL,
        shared: seed,
        implicit: false,
    }
}

//! Clicks and model freshness on a store shared by several chaff processes
//! (`store::SharedClicks`; the Redis Cluster backend): what replaces the
//! writer-lock click path of `clicks.rs` there.
//!
//! No lock in this process can order a user's clicks made through other
//! replicas, so the store makes each click atomic itself (ledger check,
//! counts, journal record) and answers its outcome. Each replica keeps the
//! user's model cached in the slot, at a version (the slot's `last_seq`),
//! and brings it up to date with one round trip before every Score
//! ([`Engine::refresh`]): an empty reply when nothing changed, the journal
//! records since the held version otherwise. A click through replica A is
//! therefore in the next Score on replica B once A has replied. The writer
//! lock still serialises this replica's refreshes and clicks of one user,
//! so the held model and its version never disagree.
//!
//! Not yet on such a store (docs/SCALING.md): learning from delivered mail
//! (the click script has no implicit entries), sharing, lists, settings,
//! the decision log and pruning to `--max-user-tokens`.

use super::clicks::{Forgotten, TrainOutcome, Trained};
use super::score::ReadMessage;
use super::{Engine, UserSlot, WriterState};
use crate::classify::Weight;
use crate::error::Error;
use crate::store::{ClickOutcome, LedgerEntry, ModelChanges, SharedClicks, checkpoint_due};
use crate::tokenize::TOKENIZER_VERSION;
use crate::types::{Label, MessageId, UserId};

impl Engine {
    /// Brings the user's cached model up to date with the shared store, in
    /// one round trip.
    pub(super) fn refresh(
        &self,
        user: &UserId,
        slot: &UserSlot,
        clicks: &dyn SharedClicks,
    ) -> Result<(), Error> {
        let mut writer = slot.writer.lock();
        if writer.retired {
            return Ok(());
        }
        self.refresh_locked(user, slot, &mut writer, clicks)
    }

    /// [`Engine::refresh`] under the user's writer lock, then a checkpoint
    /// if the journal has grown enough (as `commit` does on sled).
    fn refresh_locked(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        clicks: &dyn SharedClicks,
    ) -> Result<(), Error> {
        let tokens = match clicks.changes_since(user, writer.last_seq)? {
            ModelChanges::Fresh => return Ok(()),
            ModelChanges::Records {
                ops,
                version,
                entries,
            } => {
                let mut model = slot.model.write();
                for op in &ops {
                    op.apply(&mut model);
                }
                writer.last_seq = version;
                writer.journal_entries = writer.journal_entries.saturating_add(entries);
                model.token_count()
            }
            ModelChanges::Reload(loaded) => {
                let tokens = loaded.model.token_count();
                *slot.model.write() = loaded.model;
                writer.last_seq = loaded.last_seq;
                writer.journal_entries = loaded.journal_entries;
                tokens
            }
        };
        self.cache.charge(&slot.cache, tokens);
        if checkpoint_due(writer.journal_entries, tokens) {
            self.checkpoint_locked(user, slot, writer)?;
        }
        Ok(())
    }

    /// A Train click on a shared store: the weight is judged on the model
    /// brought up to date first (a relearn with the old label still
    /// counted, as on sled), the store decides and applies the click, and
    /// the model is refreshed to include it before the reply.
    pub(super) fn train_shared(
        &self,
        clicks: &dyn SharedClicks,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
        own_log_odds: Option<f64>,
    ) -> Result<Trained, Error> {
        let message_id = message_id.unwrap_or_else(|| message.derived_id.clone());
        let ids = &message.tokens.ids;
        let headers = &message.headers;
        let slot = self.slot_or_new(user)?;
        self.refresh(user, &slot, clicks)?;
        let (weight, trusted) =
            self.click_weight(&slot, label, &message.tokens, headers, own_log_odds);
        let entry = LedgerEntry {
            label,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: ids.clone(),
            weight,
            shared: 0,
            implicit: false,
        };
        let clicked = clicks.train(user, &message_id, &entry)?;
        self.refresh(user, &slot, clicks)?;
        drop(slot);
        self.evict_over_budget(user);
        let (outcome, low_effect) = match clicked.outcome {
            ClickOutcome::Learned => (TrainOutcome::Learned, trusted),
            ClickOutcome::Relearned => (TrainOutcome::Relearned, trusted),
            ClickOutcome::AlreadyLearned => (
                TrainOutcome::AlreadyLearned,
                clicked.previous_weight == Some(Weight::LOW),
            ),
            ClickOutcome::Forgotten(_) => {
                return Err(Error::Corrupt {
                    what: format!(
                        "{} store answered a Train with Forgotten",
                        self.store.name()
                    ),
                });
            }
        };
        Ok(Trained {
            outcome,
            message_id,
            spam_learned: clicked.spam_learned,
            ham_learned: clicked.ham_learned,
            low_effect,
            unsubscribe: headers.unsubscribe.clone().filter(|_| low_effect),
        })
    }

    /// Forget on a shared store: the store undoes the click exactly from
    /// its ledger (NOT_FOUND if there is none); a cached model is
    /// refreshed to match.
    pub(super) fn forget_shared(
        &self,
        clicks: &dyn SharedClicks,
        user: &UserId,
        message_id: &MessageId,
    ) -> Result<Forgotten, Error> {
        let clicked = clicks.forget(user, message_id)?;
        let ClickOutcome::Forgotten(label) = clicked.outcome else {
            return Err(Error::Corrupt {
                what: format!(
                    "{} store answered a Forget with {:?}",
                    self.store.name(),
                    clicked.outcome
                ),
            });
        };
        let cached = self.users.read().get(user).cloned();
        if let Some(slot) = cached {
            self.refresh(user, &slot, clicks)?;
        }
        Ok(Forgotten {
            label,
            spam_learned: clicked.spam_learned,
            ham_learned: clicked.ham_learned,
        })
    }
}

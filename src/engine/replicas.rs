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
//! lock still serialises this replica's refreshes of one user, so the held
//! model and its version never disagree. Nothing holds it through a
//! store write's round trip: clicks write outside it (the store's script
//! orders them), and the delivered-mail learner holds it only for its
//! claim check (`delivered.rs`), so a Score waits for at most another
//! refresh of its user, never for a write.
//!
//! The same round trip brings the user's settings and lists when their
//! version in the store differs from the one the slot holds, so a setting
//! changed through one replica holds for the next Score on any other. The
//! shared model and the operator's lists are polled instead
//! ([`Engine::poll_shared`]: at most every `SHARED_POLL` of the backend,
//! by whichever Score comes first, and at once after this replica's own
//! sharing click or revoke): they change with few users' clicks, and a
//! second round trip per Score would cost every Score.
//!
//! Delivered mail is learned by the store's click script too (its rules
//! and weight decided there, from the counts it sees), and a click
//! replaces it exactly, under the caller's id or the derived one, in the
//! same script.
//!
//! The undo window is the store's (`--undo-window`: the click script
//! refuses, and folds, clicks past it, as the sled ledger does).

use super::clicks::{Forgotten, TrainOutcome, Trained};
use super::score::ReadMessage;
use super::{Engine, UserSlot, WriterState};
use crate::classify::{self, Weight};
use crate::error::Error;
use crate::policy::{List, ListKind};
use crate::store::{ClickOutcome, LedgerEntry, ModelChanges, SharedClicks, checkpoint_due};
use crate::tokenize::{TOKENIZER_VERSION, TokenId};
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
    /// if the journal has grown enough (as `commit` does on sled). A model
    /// past its quota is queued for a prune (`quota.rs`), whichever
    /// replica's clicks took it there.
    pub(super) fn refresh_locked(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        clicks: &dyn SharedClicks,
    ) -> Result<(), Error> {
        let held_policy = slot.policy.read().version;
        let changes = clicks.changes_with_policy(user, writer.last_seq, held_policy)?;
        if let Some(stored) = changes.policy {
            *slot.policy.write() = self.policy_from(stored);
        }
        let tokens = match changes.model {
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
        self.note_tokens(user, tokens);
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
        let (mut weight, trusted) =
            self.click_weight(&slot, label, &message.tokens, headers, own_log_odds);
        // Delivered-mail learning of this message still queued loses to
        // the click (`delivered.rs`), under either id; one being written
        // is waited for, and replaced below. Not under the writer lock:
        // the queue's own lock orders this against the worker's check.
        self.delivered
            .claim(user, &[&message_id, &message.derived_id]);
        // A click on mail learned from its delivery is judged as if that
        // had never been, as on sled (`clicks.rs`): the model ends as if
        // only the click had happened. (Rare, so the extra reads are
        // only paid when it is possible: a ham click.)
        if label == Label::Ham && !trusted {
            // A click too old to undo is no delivered mail (the store's
            // script answers for it).
            let delivered_entry = |id: &MessageId| match self.store.ledger_get(user, id) {
                Err(Error::BeyondUndoWindow { .. }) => Ok(None),
                other => other,
            };
            let mut delivered = delivered_entry(&message_id)?;
            if delivered.is_none() && message_id != message.derived_id {
                delivered = delivered_entry(&message.derived_id)?;
            }
            if let Some(prev) = delivered.filter(|p| p.implicit && p.label == label) {
                let mut model = slot.model.read().clone();
                if prev.tokenizer_version == TOKENIZER_VERSION {
                    crate::store::Op::unlearn_entry(prev).apply(&mut model);
                }
                weight =
                    classify::learn_weight(&model, &message.tokens, label, &self.settings.params);
            }
        }
        let entry = LedgerEntry {
            label,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: ids.clone(),
            weight,
            shared: 0,
            implicit: false,
        };
        let derived = (message_id != message.derived_id).then_some(&message.derived_id);
        let clicked = clicks.train(user, &message_id, derived, &entry)?;
        self.refresh(user, &slot, clicks)?;
        let sharing = slot.policy.read().consent != 0;
        drop(slot);
        if sharing {
            // This replica's own sharing click is in its next Score.
            self.poll_shared(clicks, true)?;
        }
        self.evict_over_budget(user);
        // ... or past its quota (`quota.rs`).
        self.after_click()?;
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
        // Forgotten before its delivery was learned: not learned later
        // (one being written is waited for, then forgotten).
        self.delivered.claim(user, &[message_id]);
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
        let mut sharing = false;
        if let Some(slot) = cached {
            self.refresh(user, &slot, clicks)?;
            sharing = slot.policy.read().consent != 0;
        }
        if sharing {
            self.poll_shared(clicks, true)?;
        }
        Ok(Forgotten {
            label,
            spam_learned: clicked.spam_learned,
            ham_learned: clicked.ham_learned,
        })
    }
}

impl Engine {
    /// Learns delivered mail on a shared store: the store's script applies
    /// the rules (never a first learning, never over a ledger entry) and
    /// the weight from the counts it sees, atomically; the held model is
    /// then brought up to date. The caller holds the user's writer lock.
    pub(super) fn learn_delivered_shared(
        &self,
        clicks: &dyn SharedClicks,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        ids: &[TokenId],
        message_id: &MessageId,
    ) -> Result<bool, Error> {
        let ceiling = super::clicks::delivered_ceiling(ids.len(), &slot.model.read());
        let learned = clicks
            .learn_delivered(user, message_id, ids, ceiling)?
            .is_some();
        if learned {
            self.refresh_locked(user, slot, writer, clicks)?;
        }
        Ok(learned)
    }

    /// Brings this process's copy of the shared model and of the
    /// operator's lists up to date, when the backend says a poll is due
    /// (`force`: now). The backend applies the parts' changes under the
    /// shared model's write lock after the store was read, so scoring
    /// never waits on the network, and folds the parts' journals that are
    /// due from this copy. A copy past `--max-shared-tokens` is queued for
    /// a prune, as on sled (`quota.rs`).
    pub(super) fn poll_shared(&self, clicks: &dyn SharedClicks, force: bool) -> Result<(), Error> {
        let Some(update) = clicks.shared_update(force, &self.shared)? else {
            return Ok(());
        };
        if update.parts > 0 {
            let shared = self.shared.read();
            self.cache.charge_shared(shared.stored_tokens());
            self.note_shared_tokens(shared.total().token_count());
        }
        if let Some(stored) = update.operator {
            let mut operator = self.operator.write();
            operator.allow = List::from_entries(stored.list(ListKind::Allow));
            operator.block = List::from_entries(stored.list(ListKind::Block));
            operator.trusted = List::from_entries(stored.list(ListKind::Trusted));
        }
        Ok(())
    }
}

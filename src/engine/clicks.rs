//! The click use cases: learn a message as spam or ham (Train), move it
//! to the other label, undo it (Forget). A click is one atomic storage
//! batch — ledger entry, model journal record and, when the user shares,
//! their shared part — written under the user's writer lock, applied in
//! memory, and flushed (group commit) after the lock is released, before
//! the reply. The whole path, top to bottom: [`Engine::train`] →
//! `train_scored` (weight, ledger check, ops) → `commit` → `Backend::flush`.
//! On a store shared by several chaff processes the store decides the
//! click instead (`replicas.rs`).

use super::{Engine, UserSlot, WriterState};
use crate::classify::{self, Weight};
use crate::error::Error;
use crate::mail::sender::{HeaderFacts, Unsubscribe};
use crate::store::{LedgerEntry, Op, Snapshot, checkpoint_due};
use crate::tokenize::{TOKENIZER_VERSION, TokenId, Tokens};
use crate::types::{Label, MessageId, Owner, UserId, Verdict};

use super::score::{Depth, Input, ReadMessage, Scored};

/// What a Train call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOutcome {
    Learned,
    /// Same message, same label: nothing changed.
    AlreadyLearned,
    /// Was learned with the other label and moved.
    Relearned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trained {
    pub outcome: TrainOutcome,
    pub message_id: MessageId,
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// The click was spam on an authenticated trusted sender's mail: it
    /// was recorded at [`Weight::LOW`], so it moved the model little.
    pub low_effect: bool,
    /// The message's unsubscribe target, when the click was low-effect:
    /// the caller should offer the user *Unsubscribe* instead.
    pub unsubscribe: Option<Unsubscribe>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    pub label: Label,
    pub spam_learned: u64,
    pub ham_learned: u64,
}

impl Engine {
    /// Learns a click. `message_id` is the caller's; when `None`, one is
    /// derived from the message (see [`derive_message_id`]). Returns once the
    /// change is on disk.
    pub fn train(
        &self,
        user: &UserId,
        message: &[u8],
        label: Label,
        message_id: Option<MessageId>,
    ) -> Result<Trained, Error> {
        refuse_empty(message)?;
        // Read before taking any lock: tokenizing is the expensive part.
        self.train_read(user, &self.read(message)?, label, message_id)
    }

    /// [`Engine::train`] of a message already read.
    pub fn train_read(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
    ) -> Result<Trained, Error> {
        self.train_scored(user, message, label, message_id, None)
    }

    /// The online replay step (TREC's immediate feedback) for a message
    /// already read: the scoring pipeline to the verdict (`score.rs`),
    /// then, if `learn` says so given that score, learns it as `label` as
    /// [`Engine::train_read`] does. The same outcome as the two calls; but
    /// when nothing shared took part in the score, the learn weight
    /// (`classify::learn_weight`, which scores with the user's model alone)
    /// comes from that score instead of scoring the message a second time —
    /// the largest cost of a replay's learning after storage — unless the
    /// user's model is one-sided (`classify::learn_weight_given`).
    pub fn score_then_train(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
        learn: impl FnOnce(&Scored) -> bool,
    ) -> Result<(Scored, Option<Trained>), Error> {
        let outcome = self.pipeline(user, Input::Read(message), Depth::Score)?;
        let (scored, own_log_odds) = (outcome.scored, outcome.user_alone_log_odds);
        if !learn(&scored) {
            // Not clicked: what the Score RPC learns of mail it delivers
            // (pipeline step 7; the verdict stands for the action, as under
            // the default quarantine mode). A click takes its place, so
            // learning it only when unclicked ends in the same model.
            if scored.verdict != Verdict::Spam {
                let id = message_id.as_ref().unwrap_or(&message.derived_id);
                self.learn_delivered(user, message, id)?;
            }
            return Ok((scored, None));
        }
        let trained = self.train_scored(user, message, label, message_id, own_log_odds)?;
        Ok((scored, Some(trained)))
    }

    /// [`Engine::train_read`], with the user's own log-odds for the message
    /// if the caller just computed them (see [`Engine::score_then_train`]).
    fn train_scored(
        &self,
        user: &UserId,
        message: &ReadMessage,
        label: Label,
        message_id: Option<MessageId>,
        own_log_odds: Option<f64>,
    ) -> Result<Trained, Error> {
        if let Some(clicks) = self.store.shared_clicks() {
            // A store shared by replicas decides clicks itself (`replicas.rs`).
            return self.train_shared(clicks, user, message, label, message_id, own_log_odds);
        }
        let message_id = message_id.unwrap_or_else(|| message.derived_id.clone());
        let ids = &message.tokens.ids;
        let headers = &message.headers;
        let slot = self.slot_or_new(user)?;
        let (weight, trusted) =
            self.click_weight(&slot, label, &message.tokens, headers, own_log_odds);
        drop(slot);
        let trained = self.with_writer(user, |slot, writer| {
            // Read under the writer lock, which consent changes also take.
            let consent = slot.policy.read().consent;
            let previous = match self.store.ledger_get(user, &message_id) {
                // Too old to undo, but learned as this very label: clicking
                // twice stays harmless.
                Err(Error::BeyondUndoWindow { label: old, .. }) if old == label => {
                    let model = slot.model.read();
                    return Ok(Trained {
                        outcome: TrainOutcome::AlreadyLearned,
                        message_id: message_id.clone(),
                        spam_learned: model.spam_learned(),
                        ham_learned: model.ham_learned(),
                        low_effect: false,
                        unsubscribe: None,
                    });
                }
                other => other?,
            };
            // A click on mail learned only from its delivery (or, when the
            // caller names the message its own way, learned under the id
            // chaff derives) replaces that learning exactly, as if it had
            // never been: the reply says LEARNED, as for a first click.
            let delivered = match &previous {
                None if message_id != message.derived_id => {
                    match self.store.ledger_get(user, &message.derived_id) {
                        Ok(e) => e.filter(|e| e.implicit),
                        // A click under the derived id, too old to undo: not
                        // delivered mail, and this click is not about it.
                        Err(Error::BeyondUndoWindow { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            // A click judged with its own message already counted as ham
            // would look confident: judge it as if that had never been
            // (rare: *Not spam* on mail in the inbox), so the model ends as
            // if only the click had happened.
            let implicit = previous
                .as_ref()
                .filter(|p| p.implicit)
                .or(delivered.as_ref());
            let weight = match implicit {
                Some(prev) if prev.label == label && !trusted => {
                    let mut model = slot.model.read().clone();
                    for op in undo(prev.clone()) {
                        op.apply(&mut model);
                    }
                    classify::learn_weight(&model, &message.tokens, label, &self.settings.params)
                }
                _ => weight,
            };
            let (outcome, ops, mut shared_ops) = match previous {
                Some(prev) if prev.implicit => (
                    TrainOutcome::Learned,
                    {
                        let mut ops = undo(prev);
                        ops.push(Op::Learn(label, weight, ids.clone()));
                        ops
                    },
                    Vec::new(),
                ),
                Some(prev) if prev.label == label => {
                    let model = slot.model.read();
                    let low_effect = prev.weight == Weight::LOW;
                    return Ok(Trained {
                        outcome: TrainOutcome::AlreadyLearned,
                        message_id: message_id.clone(),
                        spam_learned: model.spam_learned(),
                        ham_learned: model.ham_learned(),
                        low_effect,
                        unsubscribe: headers.unsubscribe.clone().filter(|_| low_effect),
                    });
                }
                // Unlearn what the ledger says was learned (not what this
                // request's bytes tokenize to), so the move is exact even if
                // the caller sends a different rendering of the message.
                Some(prev) => {
                    let shared_ops = undo_shared(&prev, consent);
                    let mut ops = undo(prev);
                    ops.push(Op::Learn(label, weight, ids.clone()));
                    (TrainOutcome::Relearned, ops, shared_ops)
                }
                None => (
                    TrainOutcome::Learned,
                    vec![Op::Learn(label, weight, ids.clone())],
                    Vec::new(),
                ),
            };
            if consent != 0 {
                shared_ops.push(Op::Learn(label, weight, ids.clone()));
            }
            // Delivered-mail learning of this message still queued loses
            // to the click (`delivered.rs`), under either id.
            self.delivered
                .claim(user, &[&message_id, &message.derived_id]);
            let entry = LedgerEntry {
                label,
                tokenizer_version: TOKENIZER_VERSION,
                tokens: ids.clone(),
                weight,
                shared: consent,
                implicit: false,
            };
            self.commit(
                user,
                slot,
                writer,
                &message_id,
                Some(&entry),
                &ops,
                &shared_ops,
            )?;
            // Its own batch after the click's: a crash between the two
            // leaves the delivery's learning counted beside the click, which
            // costs accuracy at most one message's weight (usually a
            // twentieth), never a click.
            if let Some(prev) = delivered {
                let ops = undo(prev);
                self.commit(user, slot, writer, &message.derived_id, None, &ops, &[])?;
            }
            let model = slot.model.read();
            Ok(Trained {
                outcome,
                message_id: message_id.clone(),
                spam_learned: model.spam_learned(),
                ham_learned: model.ham_learned(),
                low_effect: trusted,
                unsubscribe: headers.unsubscribe.clone().filter(|_| trusted),
            })
        });
        // Outside the writer lock, so the user's next click can write while
        // this one waits; whatever the reply reports (even ALREADY_LEARNED,
        // which may rest on another click's write) is durable first.
        self.store.flush()?;
        // The click may have grown the model past the budget.
        self.evict_over_budget(user);
        // ... or past its quota (`quota`).
        self.after_click()?;
        trained
    }

    /// Learns mail delivered to the user's inbox as ham, now — at
    /// [`Weight::DELIVERED`], or more while the ham side weighs less than
    /// the spam side ([`delivered_weight`]) — when the user has taught chaff something and
    /// `message_id` is not in their ledger yet. Returns whether it learned.
    ///
    /// Why: most users only ever click *Spam*, and a user learns ham only
    /// by rescuing it from the spam folder, which a model that knows no ham
    /// never fills — so their model would stay one-sided, and a one-sided
    /// model can only cancel, never rank (docs/ACCURACY.md, "Learning from
    /// delivered mail"). Mail the user leaves in the inbox unreported is
    /// ham far more often than not; learned lightly, it is the ham side.
    ///
    /// Like a click it is recorded in the ledger (marked implicit) so that
    /// a later click on the same message replaces it exactly (`train`),
    /// and Forget or DeleteUser remove it. Unlike a click it is never
    /// shared, never waits for the disk (a crash may lose it: nothing was
    /// acknowledged), and a user with nothing learned gets no model from
    /// delivered mail alone. The server's Score does not call this: it
    /// queues the same learning for a background worker (`delivered.rs`).
    pub fn learn_delivered(
        &self,
        user: &UserId,
        message: &ReadMessage,
        message_id: &MessageId,
    ) -> Result<bool, Error> {
        self.learn_delivered_tokens(user, &message.tokens.ids, message_id)
    }

    /// [`Engine::learn_delivered`] on the tokens the pipeline read.
    pub(super) fn learn_delivered_tokens(
        &self,
        user: &UserId,
        ids: &[TokenId],
        message_id: &MessageId,
    ) -> Result<bool, Error> {
        if !self.settings.learn_delivered {
            return Ok(false);
        }
        let Some(slot) = self.slot(user)? else {
            return Ok(false);
        };
        let untaught = {
            let model = slot.model.read();
            model.spam_learned() == 0 && model.ham_learned() == 0
        };
        drop(slot);
        if untaught {
            return Ok(false);
        }
        let learned = self
            .with_known_writer(user, |slot, writer| {
                self.learn_delivered_locked(user, slot, writer, ids, message_id)
            })?
            .unwrap_or(false);
        if learned {
            self.evict_over_budget(user);
        }
        Ok(learned)
    }

    /// Undoes an earlier learn exactly, from the ledger alone.
    pub fn forget(&self, user: &UserId, message_id: &MessageId) -> Result<Forgotten, Error> {
        if let Some(clicks) = self.store.shared_clicks() {
            return self.forget_shared(clicks, user, message_id);
        }
        let not_learned = || Error::NotLearned {
            user: user.to_string(),
            message_id: message_id.to_string(),
        };
        let forgotten = self.with_known_writer(user, |slot, writer| {
            // Forgotten before its delivery was learned: not learned later.
            self.delivered.claim(user, &[message_id]);
            let prev = self
                .store
                .ledger_get(user, message_id)?
                .ok_or_else(not_learned)?;
            let label = prev.label;
            let consent = slot.policy.read().consent;
            let shared_ops = undo_shared(&prev, consent);
            let ops = undo(prev);
            self.commit(user, slot, writer, message_id, None, &ops, &shared_ops)?;
            let model = slot.model.read();
            Ok(Forgotten {
                label,
                spam_learned: model.spam_learned(),
                ham_learned: model.ham_learned(),
            })
        });
        // As in `train`: outside the writer lock, and also before NOT_FOUND
        // (the entry may be gone by another click's unflushed Forget).
        self.store.flush()?;
        forgotten?.ok_or_else(not_learned)
    }

    /// Writes a click, applies it in memory, then snapshots the model if
    /// enough clicks have accumulated. The caller holds the user's writer
    /// lock, and flushes ([`Backend::flush`](crate::store::Backend::flush)) after releasing it, before
    /// replying.
    ///
    /// The memory model follows sled's logical state, not its durable state:
    /// once the batch is applied the ledger says "learned", so the model must
    /// count it too, even if the flush then fails — otherwise a retried click
    /// would answer ALREADY_LEARNED against a model that never counted it.
    /// Only the reply waits for the flush. `shared_ops` change the user's
    /// part of the shared model, in the same batch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        message_id: &MessageId,
        entry: Option<&LedgerEntry>,
        ops: &[Op],
        shared_ops: &[Op],
    ) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        let seq = self
            .store
            .record_click(&who, message_id, entry, ops, shared_ops)?;
        {
            let mut model = slot.model.write();
            for op in ops {
                op.apply(&mut model);
            }
        }
        let shared_due = self.apply_shared(&who, shared_ops, seq);
        writer.last_seq = seq;
        // A record with no ops (a Forget of a click from another tokenizer
        // version) still counts, so shutdown folds it like any other.
        let entries = ops.iter().map(Op::entries).sum::<u64>().max(1);
        writer.journal_entries = writer.journal_entries.saturating_add(entries);
        let tokens = slot.model.read().token_count();
        self.cache.charge(&slot.cache, tokens);
        self.note_tokens(user, tokens);
        if checkpoint_due(writer.journal_entries, tokens) {
            self.checkpoint_locked(user, slot, writer)?;
        }
        if shared_due {
            self.checkpoint_contribution(&who)?;
        }
        Ok(())
    }

    pub(super) fn checkpoint_locked(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
    ) -> Result<(), Error> {
        // Encode under the read lock (scoring goes on; our writer lock keeps
        // clicks out), write after releasing it.
        if let Some(clicks) = self.store.shared_clicks() {
            // The held model is the user's at exactly `last_seq` (`replicas.rs`).
            clicks.checkpoint(user, &slot.model.read(), writer.last_seq)?;
            writer.journal_entries = 0;
            return Ok(());
        }
        let snapshot = Snapshot::encode(&slot.model.read(), writer.last_seq);
        self.store.write_checkpoint(user, snapshot)?;
        writer.journal_entries = 0;
        Ok(())
    }
}

/// How much a delivered message weighs: what the ham side lacks of the
/// spam side's weight, between [`Weight::DELIVERED`] and one message.
///
/// Why not always the light weight: a user who clicked spam and never ham
/// has a ham side made only of delivered mail, and at a twentieth of a
/// message each its tokens stay too uncertain to count (Robinson's `n`) —
/// the spam side's tokens decide, and unlike-spam ham starts landing in the
/// spam folder, which that user never opens. Filling the gap keeps the two
/// sides comparable: after each spam click about one delivered message
/// counts fully, the rest lightly. Measured against the flat light weight
/// in docs/ACCURACY.md, "Learning from delivered mail".
///
/// `ceiling` is the most the message may weigh ([`delivered_ceiling`]):
/// one message, or less for a message much shorter than the user's mail.
pub(crate) fn delivered_weight((spam, ham): (u64, u64), ceiling: Weight) -> Weight {
    let gap = spam.saturating_sub(ham);
    let ceiling = ceiling.0.clamp(Weight::DELIVERED.0, Weight::FULL.0);
    Weight(gap.clamp(u64::from(Weight::DELIVERED.0), u64::from(ceiling)) as u32)
}

/// How short a delivered message may be, as a share of the model's mean
/// message, before it may weigh less than one message when it fills the
/// gap to the spam side ([`delivered_ceiling`]): a twentieth.
///
/// Why: filling the gap by messages let a message with an empty body
/// count as a whole message of ham. After one clicked spam of 418 tokens,
/// a subject-only ham of 7 closed the gap, every later delivered ham was
/// learned lightly, and the ham side stayed mostly that one near-empty
/// message: an everyday word the one spam showed read as spam against it,
/// and 23 of the next 100 generated ham went to the spam folder (3 of
/// enron1's 100, whose first ham has an empty body). Scaled, the empty
/// ham weighs a third of a message and the next ham fills the rest: none
/// is filed on either (docs/ACCURACY.md, "Session 19"). A twentieth of
/// the mean touches only the shortest mail: the five corpora's messages
/// hold 209–440 distinct tokens on average, so 10–22, and their shortest
/// 1 % hold 14–60. A tenth did the same for these cases but moved more of
/// the replay cells, and a fiftieth left the generated case worse.
pub(crate) const SHORT_DELIVERED: f64 = 0.05;

/// The most a delivered message of `tokens` distinct tokens may weigh on
/// `model`: one message, scaled down by how far the message falls short of
/// [`SHORT_DELIVERED`] of the model's mean words per message (its token
/// mass over its weight), and never below [`Weight::DELIVERED`]. A model
/// with nothing learned gives one message.
pub(crate) fn delivered_ceiling(tokens: usize, model: &classify::Model) -> Weight {
    let (ms, mh) = model.mass();
    let (ns, nh) = model.weights();
    let (mass, weight) = (ms + mh, ns + nh);
    if mass == 0 || weight == 0 {
        return Weight::FULL;
    }
    // Words per message: the mass is in weight units, as the weights are.
    let mean = mass as f64 / weight as f64;
    let share = tokens as f64 / (SHORT_DELIVERED * mean);
    let full = f64::from(Weight::FULL.0);
    Weight(
        (full * share)
            .round()
            .clamp(f64::from(Weight::DELIVERED.0), full) as u32,
    )
}

/// The ops that take a ledger entry's contribution out of the current
/// model: none when an older tokenizer produced it (the current model never
/// counted it, see [`Engine::slot`]). Delivered mail's is marked
/// ([`Op::UnlearnDelivered`]), so the model's clicked/delivered split
/// follows, also when the journal is replayed.
fn undo(prev: LedgerEntry) -> Vec<Op> {
    if prev.tokenizer_version == TOKENIZER_VERSION {
        vec![Op::unlearn_entry(prev)]
    } else {
        Vec::new()
    }
}

/// The ops that take a ledger entry's click out of its contributor's
/// shared part: none unless it was shared under the consent (or seed) id
/// that is still current — after a revoke the part was cleared whole.
pub(super) fn undo_shared(prev: &LedgerEntry, current: u64) -> Vec<Op> {
    if prev.shared != 0 && prev.shared == current && prev.tokenizer_version == TOKENIZER_VERSION {
        vec![Op::Unlearn(prev.label, prev.weight, prev.tokens.clone())]
    } else {
        Vec::new()
    }
}

impl Engine {
    /// How much a click teaches, and whether the sender is trusted: low for
    /// a trusted sender (policy), else judged by the user's model as it
    /// stands (a relearn is judged with the old label still counted, so a
    /// correction weighs fully), or by the score the caller already has
    /// (`classify::learn_weight_given` decides when that may be reused).
    /// One rule for both ways a click is made (`replicas.rs` too).
    pub(super) fn click_weight(
        &self,
        slot: &UserSlot,
        label: Label,
        tokens: &Tokens,
        headers: &HeaderFacts,
        own_log_odds: Option<f64>,
    ) -> (Weight, bool) {
        let trusted = label == Label::Spam && self.is_trusted(slot, headers);
        let params = &self.settings.params;
        let weight = if trusted {
            Weight::LOW
        } else {
            let model = slot.model.read();
            classify::learn_weight_given(&model, tokens, label, params, own_log_odds)
        };
        (weight, trusted)
    }
}

/// An empty (or blank) message to learn, by a click or as the operator's
/// seed: it would count as a learned message and teach nothing, so it is a
/// caller's mistake (a lost body), said as one.
pub(super) fn refuse_empty(message: &[u8]) -> Result<(), Error> {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidArgument(
            "the message is empty: there is nothing to learn; send the whole message, header and body"
                .into(),
        ));
    }
    Ok(())
}

//! Which tokens a model past its quota gives up, and why. Pure, like the
//! rest of `classify`; the engine decides when to call it (never while
//! scoring) and persists the result.
//!
//! # The rule
//!
//! A model past its cap (`--max-user-tokens`) is pruned down to
//! [`PRUNE_TO_PERCENT`] of the cap. Tokens are ranked and the lowest go:
//!
//! 1. **weak before strong.** A token is *strong* when it was seen in at
//!    least [`STRONG_MESSAGES`] messages' worth of clicks *and* its
//!    Robinson f(w) is outside the significance dead zone
//!    (`|f − 0.5| ≥ Params::min_dev`), so the score actually uses it; every
//!    other token is *weak*: hapaxes (seen once, or only at light weight)
//!    and tokens that sit on the fence between the classes.
//! 2. **within each group, seen longest ago first**, "seen" being the
//!    model's last *learn* of the token on a logical clock that counts
//!    learns ([`Model::clock`]). Ties by token id, so pruning is
//!    deterministic.
//!
//! Why this rule, from the filters chaff replaces:
//!
//! - SpamAssassin (`bayes_expiry_max_db_size`, default 150,000 tokens)
//!   expires by access time alone, down to 75% of the maximum. Age is the
//!   right second key: a token no mail has brought for a long time is the
//!   one least likely to be needed next, and common words are re-learned
//!   at nearly every click, so they stay young and are never dropped just
//!   for sitting on the fence.
//! - Rspamd's `bayes_expiry` keeps *significant* tokens (one class
//!   dominates) for good and lets infrequent and common ones lapse. That
//!   is the first key: a strong token is kept over any weak one however
//!   old, because it carries the evidence the score combines.
//! - DSPAM's `dspam_clean` purges hapaxes (seen once) after 30 days: a
//!   token seen once is the bulk of a model (most tokens are hapaxes) and
//!   the weakest evidence it holds.
//!
//! chaff stamps on learn, not on Score: scoring takes only read locks and
//! must never write (a stamp per scored token would be a write per
//! delivery), so "seen" means "last clicked on", which is what the
//! per-user model's own evidence is about.
//!
//! # What pruning leaves
//!
//! The class totals (`nspam`, `nham` and the weights) stay as they are:
//! the messages were still learned, as SpamAssassin's expiry leaves its
//! message counts alone. A Forget or relearn of a click whose tokens were
//! pruned subtracts from counts that are no longer there; counts saturate
//! at zero, so every count stays at most what it would be without pruning
//! and never below zero (property test in this file).

use super::{Counts, Model, Params, Weight, robinson};
use crate::tokenize::TokenId;

/// A model past its cap is pruned to this share of the cap (in percent),
/// so that one pass makes room for many clicks rather than running at
/// each: a prune rewrites the model's snapshot. SpamAssassin goes to 75%;
/// 90% keeps more of what was learned for a prune every ~10% of the cap.
pub const PRUNE_TO_PERCENT: usize = 90;

/// Messages' worth of clicks that make a significant token *strong*: two,
/// so that hapaxes (DSPAM's purge) are always weak.
pub const STRONG_MESSAGES: u32 = 2;

/// The token count a model past `cap` is pruned down to.
pub fn target(cap: usize) -> usize {
    cap / 100 * PRUNE_TO_PERCENT + cap % 100 * PRUNE_TO_PERCENT / 100
}

/// Whether a token's counts make it *strong* (see the module docs) in a
/// model with class weights `(nspam, nham)`.
pub fn is_strong(c: Counts, (nspam, nham): (u64, u64), params: &Params) -> bool {
    let full = Weight::FULL.0;
    if c.spam.saturating_add(c.ham) < STRONG_MESSAGES * full {
        return false;
    }
    let f = robinson::token_probability(c.spam, c.ham, nspam, nham, f64::from(full), params);
    (f - 0.5).abs() >= params.min_dev
}

/// The tokens to drop so that `model` keeps `keep` of them, by the rule in
/// the module docs; empty if it has no more than `keep`.
pub fn victims(model: &Model, keep: usize, params: &Params) -> Vec<TokenId> {
    let n = model.token_count();
    if n <= keep {
        return Vec::new();
    }
    let drop = n - keep;
    let weights = model.weights();
    let mut ranked: Vec<(bool, u32, TokenId)> = model
        .iter_stamped()
        .map(|(id, c, seen)| (is_strong(c, weights, params), seen, id))
        .collect();
    if drop < ranked.len() {
        ranked.select_nth_unstable(drop);
        ranked.truncate(drop);
    }
    ranked.into_iter().map(|(_, _, id)| id).collect()
}

/// Prunes `model` to `keep` tokens (see [`victims`]); returns how many
/// went.
pub fn prune(model: &mut Model, keep: usize, params: &Params) -> usize {
    let ids = victims(model, keep, params);
    model.remove_tokens(&ids);
    ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Label;
    use proptest::prelude::*;

    fn ids(v: impl IntoIterator<Item = u64>) -> Vec<TokenId> {
        v.into_iter().map(TokenId).collect()
    }

    #[test]
    fn the_target_is_ninety_percent_of_the_cap() {
        assert_eq!(target(200_000), 180_000);
        assert_eq!(target(10), 9);
        assert_eq!(target(usize::MAX), usize::MAX / 100 * 90 + 13);
    }

    #[test]
    fn old_weak_tokens_go_first_and_strong_ones_stay() {
        let p = Params::default();
        let mut m = Model::default();
        // 0..10: strong spam tokens, learned first (oldest).
        for _ in 0..3 {
            m.learn(&ids(0..10), Label::Spam);
        }
        m.learn(&ids(100..110), Label::Ham);
        m.learn(&ids(100..110), Label::Ham);
        // 20..30: old hapaxes; 30..40: recent hapaxes.
        m.learn(&ids(20..30), Label::Spam);
        m.learn(&ids(30..40), Label::Ham);
        assert_eq!(m.token_count(), 40);
        let gone = prune(&mut m, 30, &p);
        assert_eq!(gone, 10);
        for id in 20..30 {
            assert_eq!(m.get(TokenId(id)), None, "old hapax {id} should be gone");
        }
        for id in (0..10).chain(30..40).chain(100..110) {
            assert!(m.get(TokenId(id)).is_some(), "{id} should stay");
        }
        // Strong tokens go only once every weak one has: the oldest first.
        prune(&mut m, 15, &p);
        for id in 30..40 {
            assert_eq!(m.get(TokenId(id)), None);
        }
        assert_eq!(m.token_count(), 15);
        assert!((0..5).all(|id| m.get(TokenId(id)).is_none()));
        assert!((100..110).all(|id| m.get(TokenId(id)).is_some()));
    }

    #[test]
    fn pruning_keeps_the_class_totals() {
        let p = Params::default();
        let mut m = Model::default();
        m.learn(&ids(0..50), Label::Spam);
        m.learn(&ids(50..90), Label::Ham);
        let (learned, weights) = ((m.spam_learned(), m.ham_learned()), m.weights());
        prune(&mut m, 10, &p);
        assert_eq!(m.token_count(), 10);
        assert_eq!((m.spam_learned(), m.ham_learned()), learned);
        assert_eq!(m.weights(), weights);
    }

    /// One step of a user's history: learn message `m` of a small pool
    /// with a label, forget it, or prune the model to a cap.
    #[derive(Clone, Debug)]
    enum Step {
        Learn(usize, bool),
        Forget(usize),
        Prune(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..12usize, any::<bool>()).prop_map(|(m, spam)| Step::Learn(m, spam)),
            2 => (0..12usize).prop_map(Step::Forget),
            1 => (0..40usize).prop_map(Step::Prune),
        ]
    }

    proptest! {
        /// Forget and relearn of clicks whose tokens were pruned leave a
        /// consistent model: every count is at most what the same history
        /// without pruning gives (never "negative", never invented), no
        /// token is stored with zero counts, the totals are exactly the
        /// unpruned ones, and forgetting everything empties the model.
        #[test]
        fn forget_after_pruning_keeps_counts_consistent(
            messages in proptest::collection::vec(
                proptest::collection::btree_set(0u64..60, 1..20), 12),
            steps in proptest::collection::vec(step(), 1..80),
        ) {
            let p = Params::default();
            let msgs: Vec<Vec<TokenId>> =
                messages.into_iter().map(ids).collect();
            let mut pruned = Model::default();
            let mut exact = Model::default();
            // The ledger: which message is learned under which label.
            let mut ledger: Vec<Option<Label>> = vec![None; msgs.len()];
            for s in steps {
                match s {
                    Step::Learn(m, spam) => {
                        let label = if spam { Label::Spam } else { Label::Ham };
                        if let Some(prev) = ledger[m] {
                            if prev == label { continue; }
                            pruned.unlearn(&msgs[m], prev);
                            exact.unlearn(&msgs[m], prev);
                        }
                        pruned.learn(&msgs[m], label);
                        exact.learn(&msgs[m], label);
                        ledger[m] = Some(label);
                    }
                    Step::Forget(m) => {
                        if let Some(prev) = ledger[m].take() {
                            pruned.unlearn(&msgs[m], prev);
                            exact.unlearn(&msgs[m], prev);
                        }
                    }
                    Step::Prune(keep) => {
                        prune(&mut pruned, keep, &p);
                        prop_assert!(pruned.token_count() <= keep);
                    }
                }
                prop_assert_eq!(pruned.weights(), exact.weights());
                prop_assert_eq!(pruned.spam_learned(), exact.spam_learned());
                prop_assert_eq!(pruned.ham_learned(), exact.ham_learned());
                for (id, c) in pruned.iter() {
                    prop_assert!(c != Counts::default(), "token {:?} stored with no counts", id);
                    let e = exact.get(id).unwrap_or_default();
                    prop_assert!(c.spam <= e.spam && c.ham <= e.ham,
                        "token {:?}: pruned {:?} above exact {:?}", id, c, e);
                }
            }
            for (m, label) in ledger.iter().enumerate() {
                if let Some(label) = label {
                    pruned.unlearn(&msgs[m], *label);
                }
            }
            prop_assert_eq!(pruned.token_count(), 0);
            prop_assert_eq!(pruned.weights(), (0, 0));
        }
    }
}

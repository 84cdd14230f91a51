//! Per-user statistics and the score computed from them. Pure: no I/O, no
//! locks, no allocation per token — this is the scoring hot path.
//!
//! The math (Robinson's per-token estimate and Fisher's chi-square
//! combining) lives in [`robinson`]; this file holds the data it reads.

pub mod blend;
pub mod robinson;
pub mod shared;

use rustc_hash::FxHashMap;

use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, Verdict};

pub use blend::Blended;
pub use robinson::{Params, Score};
pub use shared::{Prior, SharedModel};

/// How much learned spam and ham contained a token, in [`Weight`] units
/// (a normal click adds [`Weight::FULL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub spam: u32,
    pub ham: u32,
}

impl Counts {
    fn get_mut(&mut self, label: Label) -> &mut u32 {
        match label {
            Label::Spam => &mut self.spam,
            Label::Ham => &mut self.ham,
        }
    }
}

/// A message's strongest spam and ham tokens with their f(w), strongest
/// first (see [`Model::strongest`]).
pub type Strongest = (Vec<(TokenId, f64)>, Vec<(TokenId, f64)>);

/// How much one learned message counts, in fixed point: [`Weight::FULL`]
/// is one message. Integer units keep learn and unlearn exact inverses
/// (floating-point weights would drift under relearn/Forget). A click is
/// `FULL`, except: a spam click on a trusted sender's mail is `LOW` — it is
/// recorded, but moves the model an eighth as far (delivery policy) — and
/// a click on mail the model already scored confidently right is `LIGHT`
/// ([`learn_weight`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(pub u32);

impl Weight {
    /// One message. A power of two, so `n` in Robinson's f(w) (units over
    /// `FULL`) is exact for full-weight counts.
    pub const FULL: Weight = Weight(64);
    /// An eighth of a message.
    pub const LOW: Weight = Weight(8);
    /// About a twentieth of a message: docs/ACCURACY.md, "Weighted learning".
    pub const LIGHT: Weight = Weight(3);
    /// The least a delivered message the user did not click weighs when
    /// learned as ham (`Engine::learn_delivered`): as light as a confident
    /// click, so a spam the user let pass unreported moves the model a
    /// twentieth as far as a click does. docs/ACCURACY.md, "Learning from
    /// delivered mail", has the measurements behind the value.
    pub const DELIVERED: Weight = Weight(3);

    /// The weight as a fraction of one message.
    pub fn messages(self) -> f64 {
        f64::from(self.0) / f64::from(Self::FULL.0)
    }
}

/// One user's statistics: per-token weighted counts, the weight learned per
/// class, and how many messages that was. Learning and unlearning are exact
/// inverses on integers, which is what makes relearn and Forget exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    spam_learned: u64,
    ham_learned: u64,
    /// Sums of the learned messages' weights per class (units of
    /// [`Weight`]); the per-token ratios are taken against these.
    spam_weight: u64,
    ham_weight: u64,
    tokens: FxHashMap<TokenId, Counts>,
    /// The tokenizer version these statistics were built with.
    tokenizer_version: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            spam_learned: 0,
            ham_learned: 0,
            spam_weight: 0,
            ham_weight: 0,
            tokens: FxHashMap::default(),
            tokenizer_version: TOKENIZER_VERSION,
        }
    }
}

impl Model {
    /// Rebuilds a model from stored parts (the store's snapshot decoder).
    pub fn from_parts(
        (spam_learned, ham_learned): (u64, u64),
        (spam_weight, ham_weight): (u64, u64),
        tokenizer_version: u32,
        tokens: impl IntoIterator<Item = (TokenId, Counts)>,
    ) -> Self {
        Self {
            spam_learned,
            ham_learned,
            spam_weight,
            ham_weight,
            tokens: tokens.into_iter().collect(),
            tokenizer_version,
        }
    }

    pub fn spam_learned(&self) -> u64 {
        self.spam_learned
    }

    pub fn ham_learned(&self) -> u64 {
        self.ham_learned
    }

    pub fn learned(&self, label: Label) -> u64 {
        match label {
            Label::Spam => self.spam_learned,
            Label::Ham => self.ham_learned,
        }
    }

    /// Total weight learned as spam and as ham (units of [`Weight`]).
    pub fn weights(&self) -> (u64, u64) {
        (self.spam_weight, self.ham_weight)
    }

    /// Distinct tokens with a non-zero count.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokenizer_version(&self) -> u32 {
        self.tokenizer_version
    }

    pub fn get(&self, id: TokenId) -> Option<Counts> {
        self.tokens.get(&id).copied()
    }

    /// Every (token, counts) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (TokenId, Counts)> + '_ {
        self.tokens.iter().map(|(k, v)| (*k, *v))
    }

    /// Counts one message's distinct tokens under `label` at full weight.
    pub fn learn(&mut self, ids: &[TokenId], label: Label) {
        self.learn_weighted(ids, label, Weight::FULL);
    }

    /// Counts one message's distinct tokens under `label` with `weight`.
    pub fn learn_weighted(&mut self, ids: &[TokenId], label: Label, weight: Weight) {
        let (messages, total) = self.totals_mut(label);
        *messages += 1;
        *total = total.saturating_add(u64::from(weight.0));
        self.tokens.reserve(ids.len());
        for id in ids {
            let c = self.tokens.entry(*id).or_default().get_mut(label);
            *c = c.saturating_add(weight.0);
        }
    }

    /// Exactly undoes [`Model::learn`] of the same tokens and label.
    pub fn unlearn(&mut self, ids: &[TokenId], label: Label) {
        self.unlearn_weighted(ids, label, Weight::FULL);
    }

    /// Exactly undoes [`Model::learn_weighted`] of the same tokens, label
    /// and weight. Counts saturate at zero (they never go negative, even if
    /// a caller errs) and tokens left with no counts are dropped, so learn +
    /// unlearn restores an equal model.
    pub fn unlearn_weighted(&mut self, ids: &[TokenId], label: Label, weight: Weight) {
        let (messages, total) = self.totals_mut(label);
        *messages = messages.saturating_sub(1);
        *total = total.saturating_sub(u64::from(weight.0));
        for id in ids {
            if let Some(counts) = self.tokens.get_mut(id) {
                let c = counts.get_mut(label);
                *c = c.saturating_sub(weight.0);
                if *counts == Counts::default() {
                    self.tokens.remove(id);
                }
            }
        }
    }

    fn totals_mut(&mut self, label: Label) -> (&mut u64, &mut u64) {
        match label {
            Label::Spam => (&mut self.spam_learned, &mut self.spam_weight),
            Label::Ham => (&mut self.ham_learned, &mut self.ham_weight),
        }
    }

    /// Scores a message's tokens against this model.
    pub fn score(&self, ids: &[TokenId], params: &Params) -> Score {
        robinson::score(self, ids, params)
    }

    /// The message's `k` spammiest and `k` hammiest significant tokens
    /// with their f(w), strongest first: what an explanation shows.
    pub fn strongest(&self, ids: &[TokenId], params: &Params, k: usize) -> Strongest {
        let (nspam, nham) = self.weights();
        if nspam + nham == 0 {
            return (Vec::new(), Vec::new());
        }
        let unit = f64::from(Weight::FULL.0);
        strongest_by(ids, params, k, |id| {
            let c = self.get(id)?;
            Some(robinson::token_probability(
                c.spam, c.ham, nspam, nham, unit, params,
            ))
        })
    }
}

/// The weight a click of `label` on a message with tokens `ids` is learned
/// with: [`Weight::LIGHT`] if the model already scores the message at least
/// `params.confident_log_odds` towards `label`, else [`Weight::FULL`].
///
/// This is what crm114's thick-threshold training gets from skipping such
/// messages — counts shaped by the mail that was hard, not drowned by the
/// easy majority — without ever ignoring a click (docs/ACCURACY.md).
pub fn learn_weight(model: &Model, ids: &[TokenId], label: Label, params: &Params) -> Weight {
    learn_weight_for(model.score(ids, params).log_odds, label, params)
}

/// [`learn_weight`] given the model's log-odds for the message, when the
/// caller has just scored it with the user's model alone.
pub fn learn_weight_for(log_odds: f64, label: Label, params: &Params) -> Weight {
    let towards_label = match label {
        Label::Spam => log_odds,
        Label::Ham => -log_odds,
    };
    if towards_label >= params.confident_log_odds {
        Weight::LIGHT
    } else {
        Weight::FULL
    }
}

/// The `k` spammiest and `k` hammiest significant tokens of `ids` under the
/// estimate `f` (`None`: the token is unknown), strongest first.
pub(crate) fn strongest_by(
    ids: &[TokenId],
    params: &Params,
    k: usize,
    f: impl Fn(TokenId) -> Option<f64>,
) -> Strongest {
    let sig: Vec<(TokenId, f64)> = ids
        .iter()
        .filter_map(|id| {
            let f = f(*id)?;
            ((f - 0.5).abs() >= params.min_dev).then_some((*id, f))
        })
        .collect();
    pick_strongest(sig, k)
}

/// The `k` spammiest and `k` hammiest of significant `(id, f)` pairs,
/// strongest first (ties by id, so explanations are deterministic).
pub(crate) fn pick_strongest(mut sig: Vec<(TokenId, f64)>, k: usize) -> Strongest {
    sig.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let spam = sig
        .iter()
        .take(k)
        .filter(|(_, f)| *f > 0.5)
        .copied()
        .collect();
    let ham = sig
        .iter()
        .rev()
        .take(k)
        .filter(|(_, f)| *f < 0.5)
        .copied()
        .collect();
    (spam, ham)
}

/// Where a probability's verdict changes (see [`verdict`]). For a user:
/// the engine's ham cutoff and the user's spam threshold
/// (`policy::UserSettings`), whose default is the classifier's spam cutoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cutoffs {
    /// Below it: ham.
    pub ham: f64,
    /// At or above it: spam. Between the two: unsure.
    pub spam: f64,
}

impl Cutoffs {
    /// The classifier's own cutoffs (`Params::ham_cutoff`, `spam_cutoff`).
    pub fn of(params: &Params) -> Self {
        Self {
            ham: params.ham_cutoff,
            spam: params.spam_cutoff,
        }
    }
}

/// The one verdict function: reads a probability against the cutoffs. At
/// or above `spam` is spam, below `ham` is ham, anything between is unsure.
/// Every verdict chaff reports (Score, ScoreBatch, `chaff eval`, the
/// decision log) comes from here.
pub fn verdict(probability: f64, cutoffs: Cutoffs) -> Verdict {
    if probability >= cutoffs.spam {
        Verdict::Spam
    } else if probability < cutoffs.ham {
        Verdict::Ham
    } else {
        Verdict::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<TokenId> {
        v.iter().map(|&x| TokenId(x)).collect()
    }

    #[test]
    fn unlearn_exactly_inverts_learn() {
        let mut m = Model::default();
        m.learn(&ids(&[1, 2, 3]), Label::Ham);
        let before = m.clone();
        m.learn(&ids(&[2, 3, 4]), Label::Spam);
        assert_ne!(m, before);
        m.unlearn(&ids(&[2, 3, 4]), Label::Spam);
        assert_eq!(m, before);
    }

    #[test]
    fn counts_never_go_negative() {
        let mut m = Model::default();
        m.unlearn(&ids(&[1]), Label::Spam);
        assert_eq!(m.spam_learned(), 0);
        assert_eq!(m.get(TokenId(1)), None);
        m.learn(&ids(&[1]), Label::Ham);
        m.unlearn(&ids(&[1]), Label::Spam);
        assert_eq!(
            m.get(TokenId(1)),
            Some(Counts {
                spam: 0,
                ham: Weight::FULL.0
            })
        );
    }

    #[test]
    fn only_a_confidently_right_click_is_light() {
        let p = Params::default();
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..40).map(TokenId).collect();
        let ham: Vec<TokenId> = (100..140).map(TokenId).collect();
        // Empty model: nothing is confident, every click weighs fully.
        assert_eq!(learn_weight(&m, &spam, Label::Spam, &p), Weight::FULL);
        for _ in 0..5 {
            m.learn(&spam, Label::Spam);
            m.learn(&ham, Label::Ham);
        }
        assert!(m.score(&spam, &p).log_odds >= p.confident_log_odds);
        assert_eq!(learn_weight(&m, &spam, Label::Spam, &p), Weight::LIGHT);
        assert_eq!(learn_weight(&m, &ham, Label::Ham, &p), Weight::LIGHT);
        // A correction (the model leans the other way) always weighs fully.
        assert_eq!(learn_weight(&m, &spam, Label::Ham, &p), Weight::FULL);
        assert_eq!(learn_weight(&m, &ham, Label::Spam, &p), Weight::FULL);
    }

    #[test]
    fn weighted_learn_is_exactly_undone_and_counts_one_message() {
        let mut m = Model::default();
        m.learn(&ids(&[1, 2]), Label::Spam);
        let before = m.clone();
        m.learn_weighted(&ids(&[2, 3]), Label::Spam, Weight::LOW);
        assert_eq!(m.spam_learned(), 2);
        assert_eq!(m.weights().0, u64::from(Weight::FULL.0 + Weight::LOW.0));
        assert_eq!(m.get(TokenId(3)).unwrap().spam, Weight::LOW.0);
        m.unlearn_weighted(&ids(&[2, 3]), Label::Spam, Weight::LOW);
        assert_eq!(m, before);
    }

    #[test]
    fn verdict_cutoffs() {
        let p = Params::default();
        assert_eq!(verdict(0.5, Cutoffs::of(&p)), Verdict::Unsure);
        assert_eq!(verdict(0.0, Cutoffs::of(&p)), Verdict::Ham);
        assert_eq!(verdict(1.0, Cutoffs::of(&p)), Verdict::Spam);
        assert_eq!(verdict(p.spam_cutoff, Cutoffs::of(&p)), Verdict::Spam);
        assert_eq!(verdict(p.ham_cutoff, Cutoffs::of(&p)), Verdict::Unsure);
    }
}

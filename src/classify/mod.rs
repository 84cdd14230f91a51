//! Per-user statistics and the score computed from them. Pure: no I/O, no
//! locks, no allocation per token — this is the scoring hot path.
//!
//! The math (Robinson's per-token estimate and Fisher's chi-square
//! combining) lives in [`robinson`]; this file holds the data it reads.

pub mod robinson;

use rustc_hash::FxHashMap;

use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, Verdict};

pub use robinson::{Params, Score};

/// How many learned spam and ham messages contained a token.
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

/// One user's statistics: per-token counts plus how many messages of each
/// class they came from. Learning and unlearning are exact inverses on
/// integers, which is what makes relearn and Forget exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    spam_learned: u64,
    ham_learned: u64,
    tokens: FxHashMap<TokenId, Counts>,
    /// The tokenizer version these statistics were built with.
    tokenizer_version: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            spam_learned: 0,
            ham_learned: 0,
            tokens: FxHashMap::default(),
            tokenizer_version: TOKENIZER_VERSION,
        }
    }
}

impl Model {
    /// Rebuilds a model from stored parts (the store's snapshot decoder).
    pub fn from_parts(
        spam_learned: u64,
        ham_learned: u64,
        tokenizer_version: u32,
        tokens: impl IntoIterator<Item = (TokenId, Counts)>,
    ) -> Self {
        Self {
            spam_learned,
            ham_learned,
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

    /// Counts one message's distinct tokens under `label`.
    pub fn learn(&mut self, ids: &[TokenId], label: Label) {
        *match label {
            Label::Spam => &mut self.spam_learned,
            Label::Ham => &mut self.ham_learned,
        } += 1;
        self.tokens.reserve(ids.len());
        for id in ids {
            let c = self.tokens.entry(*id).or_default().get_mut(label);
            *c = c.saturating_add(1);
        }
    }

    /// Exactly undoes [`Model::learn`] of the same tokens and label. Counts
    /// saturate at zero (they never go negative, even if a caller errs) and
    /// tokens left with no counts are dropped, so learn + unlearn restores
    /// an equal model.
    pub fn unlearn(&mut self, ids: &[TokenId], label: Label) {
        let total = match label {
            Label::Spam => &mut self.spam_learned,
            Label::Ham => &mut self.ham_learned,
        };
        *total = total.saturating_sub(1);
        for id in ids {
            if let Some(counts) = self.tokens.get_mut(id) {
                let c = counts.get_mut(label);
                *c = c.saturating_sub(1);
                if *counts == Counts::default() {
                    self.tokens.remove(id);
                }
            }
        }
    }

    /// Scores a message's tokens against this model.
    pub fn score(&self, ids: &[TokenId], params: &Params) -> Score {
        robinson::score(self, ids, params)
    }
}

/// Reads a probability against the cutoffs: at or above `spam_cutoff` is
/// spam, below `ham_cutoff` is ham, anything between is unsure.
pub fn verdict(probability: f64, params: &Params) -> Verdict {
    if probability >= params.spam_cutoff {
        Verdict::Spam
    } else if probability < params.ham_cutoff {
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
        assert_eq!(m.get(TokenId(1)), Some(Counts { spam: 0, ham: 1 }));
    }

    #[test]
    fn verdict_cutoffs() {
        let p = Params::default();
        assert_eq!(verdict(0.5, &p), Verdict::Unsure);
        assert_eq!(verdict(0.0, &p), Verdict::Ham);
        assert_eq!(verdict(1.0, &p), Verdict::Spam);
        assert_eq!(verdict(p.spam_cutoff, &p), Verdict::Spam);
        assert_eq!(verdict(p.ham_cutoff, &p), Verdict::Unsure);
    }
}

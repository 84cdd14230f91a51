//! The classifier math, in one place.
//!
//! # Per-token probability (Graham 2002, Robinson 2003)
//!
//! For a token seen in `b` of `nspam` learned spam and `g` of `nham` learned
//! ham, Graham's estimate normalises by class size so a user who reports far
//! more spam than ham is not biased towards spam:
//!
//! ```text
//! p(w) = (b / nspam) / (b / nspam + g / nham)
//! ```
//!
//! Robinson's correction shrinks that towards a prior `x` with strength `s`,
//! so a token seen once is weak evidence and a token seen a hundred times is
//! strong:
//!
//! ```text
//! f(w) = (s·x + n·p(w)) / (s + n),   n = b + g
//! ```
//!
//! Tokens the user has never seen get `f = x` and are dropped by the
//! significance filter below (Robinson, "A Statistical Approach to the Spam
//! Problem", Linux Journal 2003).
//!
//! # Combining (Fisher / Robinson chi-square, as in SpamBayes and bogofilter)
//!
//! Only tokens with `|f − 0.5| ≥ min_dev` count, at most `max_tokens` of the
//! most extreme. With `n` tokens left:
//!
//! ```text
//! S = 1 − C⁻¹(−2 Σ ln(1 − f), 2n)    evidence for spam
//! H = 1 − C⁻¹(−2 Σ ln f,       2n)    evidence for ham
//! I = (1 + S − H) / 2                 the reported spam probability
//! ```
//!
//! where `C⁻¹(χ², ν)` is the chi-square survival function (upper tail) with
//! `ν` degrees of freedom. `I` is near 1 when spam evidence dominates, near 0
//! for ham, and near 0.5 both when there is no evidence and when the evidence
//! conflicts — which is why 0.5 means "unsure", not "coin flip".

use super::Model;
use crate::tokenize::TokenId;

/// Tunables of the estimate and of the verdict. Defaults are SpamBayes'
/// long-tested ones; the accuracy issue tunes them on real corpora.
#[derive(Clone, Debug)]
pub struct Params {
    /// Robinson's `s`: how many messages' worth of weight the prior has.
    pub strength: f64,
    /// Robinson's `x`: the probability assumed for a token with no history.
    pub prior: f64,
    /// Tokens with `|f − 0.5|` below this are ignored as noise.
    pub min_dev: f64,
    /// At most this many of the most extreme tokens are combined.
    pub max_tokens: usize,
    /// Below this probability the verdict is ham.
    pub ham_cutoff: f64,
    /// At or above this probability the verdict is spam.
    pub spam_cutoff: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            strength: 0.45,
            prior: 0.5,
            min_dev: 0.1,
            max_tokens: 150,
            ham_cutoff: 0.20,
            spam_cutoff: 0.90,
        }
    }
}

/// A message's score and how much of the model it drew on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Combined spam probability `I`, 0..=1; exactly 0.5 with no evidence.
    pub probability: f64,
    /// Message tokens the model had counts for.
    pub tokens_known: u32,
    /// Tokens that passed the significance filter and were combined.
    pub tokens_used: u32,
}

impl Score {
    /// The answer when there is nothing to go on.
    pub const NEUTRAL: Score = Score {
        probability: 0.5,
        tokens_known: 0,
        tokens_used: 0,
    };
}

/// Robinson's `f(w)` for one token's counts.
pub fn token_probability(spam: u32, ham: u32, nspam: u64, nham: u64, params: &Params) -> f64 {
    let spam_ratio = if nspam == 0 {
        0.0
    } else {
        f64::from(spam) / nspam as f64
    };
    let ham_ratio = if nham == 0 {
        0.0
    } else {
        f64::from(ham) / nham as f64
    };
    let n = f64::from(spam) + f64::from(ham);
    if spam_ratio + ham_ratio == 0.0 {
        return params.prior;
    }
    let p = spam_ratio / (spam_ratio + ham_ratio);
    (params.strength * params.prior + n * p) / (params.strength + n)
}

/// Scores `ids` (a message's distinct tokens) against `model`.
pub fn score(model: &Model, ids: &[TokenId], params: &Params) -> Score {
    let (nspam, nham) = (model.spam_learned(), model.ham_learned());
    if nspam + nham == 0 {
        return Score::NEUTRAL;
    }
    let mut known = 0u32;
    // One allocation per message, none per token.
    let mut significant: Vec<f64> = Vec::with_capacity(ids.len().min(1024));
    for id in ids {
        let Some(c) = model.get(*id) else { continue };
        known += 1;
        let f = token_probability(c.spam, c.ham, nspam, nham, params);
        if (f - 0.5).abs() >= params.min_dev {
            significant.push(f);
        }
    }
    if significant.len() > params.max_tokens {
        // Keep the most extreme max_tokens, in O(n).
        let k = params.max_tokens;
        significant.select_nth_unstable_by(k, |a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
        significant.truncate(k);
    }
    let probability = combine(&significant);
    Score {
        probability,
        tokens_known: known,
        tokens_used: significant.len() as u32,
    }
}

/// Fisher/Robinson chi-square combining of token probabilities; 0.5 for none.
pub fn combine(probs: &[f64]) -> f64 {
    if probs.is_empty() {
        return 0.5;
    }
    // Clamp so ln never sees 0: Robinson's shrinkage keeps f inside (0, 1)
    // already, but combine is public and must be total.
    const EPS: f64 = 1e-12;
    let (mut ln_spam, mut ln_ham) = (0.0f64, 0.0f64);
    for &p in probs {
        let p = p.clamp(EPS, 1.0 - EPS);
        ln_spam += (1.0 - p).ln();
        ln_ham += p.ln();
    }
    let dof = 2 * probs.len();
    let s = 1.0 - chi2_survival(-2.0 * ln_spam, dof);
    let h = 1.0 - chi2_survival(-2.0 * ln_ham, dof);
    ((1.0 + s - h) / 2.0).clamp(0.0, 1.0)
}

/// Upper tail of the chi-square distribution for even degrees of freedom:
/// `P(X ≥ x2)` with `X ~ χ²(dof)`, as the Poisson series
/// `e^{−m} Σ_{i<dof/2} mⁱ/i!` with `m = x2/2` (exact for even `dof`).
pub fn chi2_survival(x2: f64, dof: usize) -> f64 {
    debug_assert!(dof % 2 == 0, "chi2_survival needs even degrees of freedom");
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..dof / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Label;

    #[test]
    fn chi2_survival_matches_tables() {
        // χ²(2): survival is e^{-x/2}.
        assert!((chi2_survival(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // Table value: P(χ²(4) ≥ 9.488) ≈ 0.05; P(χ²(10) ≥ 18.307) ≈ 0.05.
        assert!((chi2_survival(9.488, 4) - 0.05).abs() < 1e-3);
        assert!((chi2_survival(18.307, 10) - 0.05).abs() < 1e-3);
        assert_eq!(chi2_survival(0.0, 8), 1.0);
    }

    #[test]
    fn combine_is_symmetric_and_neutral() {
        assert_eq!(combine(&[]), 0.5);
        assert!((combine(&[0.5, 0.5]) - 0.5).abs() < 1e-12);
        let spam = combine(&[0.99, 0.95, 0.9]);
        let ham = combine(&[0.01, 0.05, 0.1]);
        assert!(spam > 0.9, "{spam}");
        assert!((spam + ham - 1.0).abs() < 1e-9, "{spam} {ham}");
    }

    #[test]
    fn combine_conflicting_evidence_is_unsure() {
        let p = combine(&[0.99, 0.01, 0.99, 0.01]);
        assert!((p - 0.5).abs() < 1e-9, "{p}");
    }

    #[test]
    fn token_probability_shrinks_rare_tokens_to_the_prior() {
        let p = Params::default();
        let once = token_probability(1, 0, 10, 10, &p);
        let often = token_probability(50, 0, 100, 100, &p);
        assert!(once > 0.5 && once < often, "{once} {often}");
        // Graham's class normalisation: seen in every spam and every ham is neutral
        // however unbalanced the classes.
        assert!((token_probability(100, 10, 100, 10, &p) - 0.5).abs() < 1e-12);
        assert_eq!(token_probability(0, 0, 10, 10, &p), p.prior);
    }

    #[test]
    fn untrained_model_is_neutral() {
        let s = Model::default().score(&[TokenId(1)], &Params::default());
        assert_eq!(s, Score::NEUTRAL);
    }

    #[test]
    fn trained_model_separates() {
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..20).map(TokenId).collect();
        let ham: Vec<TokenId> = (100..120).map(TokenId).collect();
        for _ in 0..5 {
            m.learn(&spam, Label::Spam);
            m.learn(&ham, Label::Ham);
        }
        let p = Params::default();
        assert!(m.score(&spam, &p).probability > 0.99);
        assert!(m.score(&ham, &p).probability < 0.01);
        let s = m.score(&[TokenId(0), TokenId(999)], &p);
        assert_eq!((s.tokens_known, s.tokens_used), (1, 1));
    }

    #[test]
    fn at_most_max_tokens_are_combined() {
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..500).map(TokenId).collect();
        m.learn(&spam, Label::Spam);
        m.learn(&[TokenId(9999)], Label::Ham);
        let s = m.score(&spam, &Params::default());
        assert_eq!(s.tokens_used, 150);
        assert_eq!(s.tokens_known, 500);
    }
}

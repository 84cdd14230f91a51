//! TREC Spam Track measures (Cormack & Lynam, "TREC 2005 Spam Track
//! Overview"), computed from per-message outcomes.
//!
//! - **(1-ROCA)%**: 100 × the area above the ROC curve, i.e. the chance that
//!   a random ham scores at least as spammy as a random spam (ties count one
//!   half). Threshold-free: it judges the score, not the cutoff.
//! - **hm%** / **sm%**: ham misclassified as spam / spam misclassified as ham,
//!   at the filter's own binary judgement.
//! - **lam%**: logit⁻¹((logit(hm) + logit(sm)) / 2), logit(p) = ln(p/(1−p)).
//!   A rate of exactly 0 or 1 has no logit; we then use the continuity
//!   correction (errors + 0.5) / (n + 1), and say so here because the TREC
//!   papers leave that case open.
//! - **sm% at hm% = 0.1%** ("spam missed at 0.1% ham misfiled"): the ROC
//!   point a provider lives at. The threshold `t` is the lowest score at
//!   which at most 0.1% of ham (⌊0.001 × ham⌋ messages) score *at or above*
//!   `t`; spam is caught when it scores at or above `t`, and the figure is
//!   the share of spam that is not. Ties are conservative: a score equal to
//!   that of the first ham the allowance cannot cover counts as below `t` —
//!   a spam tied with it is missed (it could not be caught without filing
//!   that ham too). See [`spam_missed_at_ham_rate`].
//! - **misfiled % over the first 100 / 500 messages**: what a new user
//!   sees — spam not judged spam plus ham judged spam, over the first
//!   messages of the replay (all of them if fewer).
//! - **clicks**: with the fifth results column (`taught`), how many spam and
//!   ham messages were fed back to the filter; under the click protocols,
//!   the user's clicks.

use crate::types::Label;

/// One scored message of a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The message's id in the corpus (its index path).
    pub id: String,
    pub gold: Label,
    /// Spamminess: higher means more likely spam.
    pub score: f64,
    /// The filter's binary judgement.
    pub judged_spam: bool,
    /// Whether the replay then taught the filter the gold label (a click);
    /// `None` when the results file does not say.
    pub taught: Option<bool>,
}

/// Messages fed back to the filter, by gold label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taught {
    pub spam: usize,
    pub ham: usize,
}

/// Everything a results table reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub messages: usize,
    pub spam: usize,
    pub ham: usize,
    pub one_minus_roca_pct: f64,
    pub lam_pct: f64,
    pub ham_misclassified_pct: f64,
    pub spam_misclassified_pct: f64,
    pub spam_misclassified_at_01_ham_pct: f64,
    /// Misfiled % over the first 100 messages (or all, if fewer).
    pub misfiled_first_100_pct: f64,
    /// Misfiled % over the first 500 messages (or all, if fewer).
    pub misfiled_first_500_pct: f64,
    /// Clicks, when every outcome says whether it was taught.
    pub taught: Option<Taught>,
}

/// ROC area: P(score(spam) > score(ham)) + ½ P(equal). `None` without at
/// least one spam and one ham.
pub fn roc_area(outcomes: &[Outcome]) -> Option<f64> {
    let mut scored: Vec<(f64, Label)> = outcomes.iter().map(|o| (o.score, o.gold)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut hams_below, mut wins) = (0u64, 0f64);
    let (mut spam_total, mut ham_total) = (0u64, 0u64);
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        let (mut s, mut h) = (0u64, 0u64);
        while j < scored.len() && scored[j].0 == scored[i].0 {
            match scored[j].1 {
                Label::Spam => s += 1,
                Label::Ham => h += 1,
            }
            j += 1;
        }
        wins += (s * hams_below) as f64 + 0.5 * (s * h) as f64;
        hams_below += h;
        spam_total += s;
        ham_total += h;
        i = j;
    }
    (spam_total > 0 && ham_total > 0).then(|| wins / (spam_total * ham_total) as f64)
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn inverse_logit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A rate with a logit: raw when strictly inside (0, 1), else corrected.
fn logit_rate(errors: usize, n: usize) -> f64 {
    if errors == 0 || errors == n {
        (errors as f64 + 0.5) / (n as f64 + 1.0)
    } else {
        errors as f64 / n as f64
    }
}

/// lam as a fraction (0..1) from error counts.
pub fn lam(ham_errors: usize, ham: usize, spam_errors: usize, spam: usize) -> f64 {
    let hm = logit_rate(ham_errors, ham);
    let sm = logit_rate(spam_errors, spam);
    inverse_logit((logit(hm) + logit(sm)) / 2.0)
}

/// Fraction of spam missed at the threshold where at most `max_ham_rate`
/// of ham score at or above it (see the module docs): with the ham sorted
/// by descending score, `k = ⌊max_ham_rate × ham⌋` of them may be misfiled,
/// so the threshold must lie above the `(k + 1)`-th ham's score `h`; spam
/// scoring above `h` is caught, spam at or below `h` is missed.
pub fn spam_missed_at_ham_rate(outcomes: &[Outcome], max_ham_rate: f64) -> Option<f64> {
    let mut ham: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.gold == Label::Ham)
        .map(|o| o.score)
        .collect();
    let spam: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.gold == Label::Spam)
        .map(|o| o.score)
        .collect();
    if ham.is_empty() || spam.is_empty() {
        return None;
    }
    ham.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_ham_rate * ham.len() as f64).floor() as usize;
    let Some(&first_uncovered) = ham.get(allowed) else {
        // Every ham may be misfiled: a threshold below everything catches all spam.
        return Some(0.0);
    };
    let missed = spam.iter().filter(|&&s| s <= first_uncovered).count();
    Some(missed as f64 / spam.len() as f64)
}

/// Misfiled % (spam not judged spam + ham judged spam) over the first
/// `first` outcomes, or all of them if fewer.
pub fn misfiled_first_pct(outcomes: &[Outcome], first: usize) -> f64 {
    let window = &outcomes[..first.min(outcomes.len())];
    if window.is_empty() {
        return 0.0;
    }
    let wrong = window
        .iter()
        .filter(|o| o.judged_spam != (o.gold == Label::Spam))
        .count();
    100.0 * wrong as f64 / window.len() as f64
}

/// Messages taught, by label; `None` unless every outcome says.
pub fn taught(outcomes: &[Outcome]) -> Option<Taught> {
    let mut t = Taught { spam: 0, ham: 0 };
    for o in outcomes {
        if o.taught? {
            match o.gold {
                Label::Spam => t.spam += 1,
                Label::Ham => t.ham += 1,
            }
        }
    }
    Some(t)
}

impl Summary {
    /// `None` unless the outcomes hold at least one spam and one ham.
    pub fn of(outcomes: &[Outcome]) -> Option<Self> {
        let spam = outcomes.iter().filter(|o| o.gold == Label::Spam).count();
        let ham = outcomes.len() - spam;
        let ham_errors = outcomes
            .iter()
            .filter(|o| o.gold == Label::Ham && o.judged_spam)
            .count();
        let spam_errors = outcomes
            .iter()
            .filter(|o| o.gold == Label::Spam && !o.judged_spam)
            .count();
        let area = roc_area(outcomes)?;
        Some(Summary {
            messages: outcomes.len(),
            spam,
            ham,
            one_minus_roca_pct: 100.0 * (1.0 - area),
            lam_pct: 100.0 * lam(ham_errors, ham, spam_errors, spam),
            ham_misclassified_pct: 100.0 * ham_errors as f64 / ham as f64,
            spam_misclassified_pct: 100.0 * spam_errors as f64 / spam as f64,
            spam_misclassified_at_01_ham_pct: 100.0 * spam_missed_at_ham_rate(outcomes, 0.001)?,
            misfiled_first_100_pct: misfiled_first_pct(outcomes, 100),
            misfiled_first_500_pct: misfiled_first_pct(outcomes, 500),
            taught: taught(outcomes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(gold: Label, score: f64, judged_spam: bool) -> Outcome {
        Outcome {
            id: String::new(),
            gold,
            score,
            judged_spam,
            taught: None,
        }
    }
    use Label::{Ham, Spam};

    #[test]
    fn perfect_separation_has_area_one() {
        let v = [
            o(Ham, 0.1, false),
            o(Ham, 0.2, false),
            o(Spam, 0.8, true),
            o(Spam, 0.9, true),
        ];
        assert_eq!(roc_area(&v), Some(1.0));
    }

    #[test]
    fn hand_computed_area_with_a_tie() {
        // Spam scores {0.9, 0.5}, ham scores {0.5, 0.1}. Pairs (spam, ham):
        // (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=½ (0.5,0.1)=1 → 3.5 / 4.
        let v = [
            o(Spam, 0.9, true),
            o(Spam, 0.5, false),
            o(Ham, 0.5, false),
            o(Ham, 0.1, false),
        ];
        assert_eq!(roc_area(&v), Some(0.875));
        let s = Summary::of(&v).unwrap();
        assert!((s.one_minus_roca_pct - 12.5).abs() < 1e-12);
    }

    #[test]
    fn all_tied_is_one_half() {
        let v = [o(Spam, 0.5, false), o(Ham, 0.5, false), o(Ham, 0.5, false)];
        assert_eq!(roc_area(&v), Some(0.5));
    }

    #[test]
    fn area_needs_both_classes() {
        assert_eq!(roc_area(&[o(Spam, 0.5, true)]), None);
        assert!(Summary::of(&[o(Ham, 0.5, false)]).is_none());
    }

    #[test]
    fn lam_hand_computed() {
        // hm = 10/100 = 0.1, sm = 20/100 = 0.2:
        // logit(0.1) = ln(1/9), logit(0.2) = ln(1/4); mean = ln(1/6); inverse = 1/7.
        assert!((lam(10, 100, 20, 100) - 1.0 / 7.0).abs() < 1e-12);
        // Equal rates give that rate.
        assert!((lam(5, 100, 5, 100) - 0.05).abs() < 1e-12);
        // Zero errors use the continuity correction: 0.5/101 both sides.
        assert!((lam(0, 100, 0, 100) - 0.5 / 101.0).abs() < 1e-12);
    }

    #[test]
    fn spam_missed_at_strict_threshold() {
        // 1000 ham at 0.0 except one at 0.7; allowing 0.1% (one ham) puts the
        // threshold at the next ham score, 0.0: spam at 0.6 and 0.8 are caught,
        // spam at 0.0 is missed.
        let mut v: Vec<Outcome> = (0..999).map(|_| o(Ham, 0.0, false)).collect();
        v.push(o(Ham, 0.7, true));
        v.extend([o(Spam, 0.6, true), o(Spam, 0.8, true), o(Spam, 0.0, false)]);
        let missed = spam_missed_at_ham_rate(&v, 0.001).unwrap();
        assert!((missed - 1.0 / 3.0).abs() < 1e-12);
        // Allowing no ham error puts the threshold at 0.7: the 0.6 spam is missed too.
        let missed = spam_missed_at_ham_rate(&v, 0.0).unwrap();
        assert!((missed - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn misclassification_rates_use_the_binary_judgement() {
        let v = [
            o(Ham, 0.1, true),
            o(Ham, 0.2, false),
            o(Spam, 0.8, false),
            o(Spam, 0.9, true),
        ];
        let s = Summary::of(&v).unwrap();
        assert_eq!(
            (s.ham_misclassified_pct, s.spam_misclassified_pct),
            (50.0, 50.0)
        );
        assert!((s.lam_pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn spam_missed_at_one_in_a_thousand_ham_with_ties_is_conservative() {
        // 2,000 ham: ⌊0.001 × 2000⌋ = 2 may be misfiled. Ham scores, highest
        // first: 9, 5, 5, 1, 1, … The third ham scores 5, so the threshold
        // must lie above 5 — which files only the 9 ham (one, not two: the
        // tie at 5 cannot be split). Spam: 10 and 6 are caught; 5 (tied
        // with the uncovered ham), 3 and 1 are missed: 3/5.
        let mut v: Vec<Outcome> = (0..1997).map(|_| o(Ham, 1.0, false)).collect();
        v.extend([o(Ham, 9.0, true), o(Ham, 5.0, true), o(Ham, 5.0, true)]);
        for s in [10.0, 6.0, 5.0, 3.0, 1.0] {
            v.push(o(Spam, s, s > 5.0));
        }
        let missed = spam_missed_at_ham_rate(&v, 0.001).unwrap();
        assert!((missed - 0.6).abs() < 1e-12, "{missed}");
        assert!((Summary::of(&v).unwrap().spam_misclassified_at_01_ham_pct - 60.0).abs() < 1e-9);
        // 3,000 ham allow 3: now both 5s are covered, the threshold lies
        // above 1 and only the spam at 1 is missed.
        v.extend((0..1000).map(|_| o(Ham, 1.0, false)));
        let missed = spam_missed_at_ham_rate(&v, 0.001).unwrap();
        assert!((missed - 0.2).abs() < 1e-12, "{missed}");
        // A rate that covers every ham catches every spam.
        assert_eq!(spam_missed_at_ham_rate(&v, 1.0), Some(0.0));
    }

    #[test]
    fn misfiled_over_the_first_messages_and_clicks() {
        // 100 ham judged right, then 400 spam of which the first 100 missed.
        let mut v: Vec<Outcome> = (0..100).map(|_| o(Ham, 0.0, false)).collect();
        v.extend((0..400).map(|i| o(Spam, 1.0, i >= 100)));
        assert_eq!(misfiled_first_pct(&v, 100), 0.0);
        assert_eq!(misfiled_first_pct(&v, 200), 50.0);
        assert_eq!(misfiled_first_pct(&v, 500), 20.0);
        // Fewer messages than the window: all of them.
        assert_eq!(misfiled_first_pct(&v[..150], 500), 100.0 * 50.0 / 150.0);
        let s = Summary::of(&v).unwrap();
        assert_eq!(
            (s.misfiled_first_100_pct, s.misfiled_first_500_pct),
            (0.0, 20.0)
        );
        assert_eq!(s.taught, None, "no results column, no click counts");
        for (i, x) in v.iter_mut().enumerate() {
            x.taught = Some(i % 7 == 0 || (x.gold == Spam && !x.judged_spam));
        }
        // Ham taught: 0, 7, …, 98 = 15. Spam: the 100 missed (100..199)
        // plus the multiples of 7 in 200..499 (203, …, 497 = 43).
        assert_eq!(taught(&v), Some(Taught { spam: 143, ham: 15 }));
        v[3].taught = None;
        assert_eq!(taught(&v), None);
    }
}

//! Is a change between two replays of the same corpus more than noise?
//! A paired bootstrap over the messages (`chaff metrics --compare`).
//!
//! Why: the accuracy issue allows no measure to get worse "by more than
//! noise", and most differences between two builds are a handful of
//! messages — one ham at spamassassin's 0.1 % point moves it by
//! percentage points. Runs of `--train every` have no seed to vary, so
//! the noise here is the corpus's: had the same kind of mail arrived as
//! a different sample, how much would the difference move?
//!
//! Method (Efron's percentile bootstrap, paired): draw the corpus's `n`
//! messages `n` times with replacement (SplitMix64 from a seed, so runs
//! repeat), compute each measure for both replays on that same draw, and
//! keep the difference (new − base); over `replicates` draws, the 2.5th
//! and 97.5th percentiles bound a 95 % interval. A difference whose
//! interval excludes 0 is called beyond noise. What it does not see:
//! an online replay would also have learned differently from a different
//! sample; the interval is the measurement's noise, not the learner's.
//!
//! Each draw is a count per message (how often it was drawn); the measures
//! are computed over the messages sorted once by score, weighted by the
//! counts, in one pass each — with every count 1 they equal
//! [`super::metrics::Summary`]'s.

use super::clicks::splitmix64;
use super::metrics::{Outcome, lam};
use crate::types::Label;

/// The measures compared, each "lower is better".
pub const MEASURES: [&str; 5] = [
    "(1-ROCA)%",
    "lam%",
    "spam% missed at 0.1% ham",
    "spam% missed",
    "ham% misfiled",
];

/// Why two results files cannot be compared message by message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PairError {
    #[error(
        "the files score different messages ({base} and {new} messages, {common} in common): replay the same corpus"
    )]
    DifferentMessages {
        base: usize,
        new: usize,
        common: usize,
    },
    #[error("message {id} is {base} in one file and {new} in the other")]
    DifferentLabel { id: String, base: Label, new: Label },
    #[error("need at least one spam and one ham")]
    OneClass,
}

/// One replay's outcomes, in the order of the pairing.
struct Side {
    score: Vec<f64>,
    judged_spam: Vec<bool>,
    /// Message indices by ascending score.
    ascending: Vec<usize>,
}

impl Side {
    fn new(score: Vec<f64>, judged_spam: Vec<bool>) -> Self {
        let mut ascending: Vec<usize> = (0..score.len()).collect();
        ascending.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
        Self {
            score,
            judged_spam,
            ascending,
        }
    }

    /// The five [`MEASURES`], in percent, with message `i` counted
    /// `count[i]` times.
    fn measures(&self, spam: &[bool], count: &[u32]) -> [f64; 5] {
        let (mut s_total, mut h_total) = (0u64, 0u64);
        let (mut s_err, mut h_err) = (0u64, 0u64);
        for i in 0..spam.len() {
            let c = u64::from(count[i]);
            if spam[i] {
                s_total += c;
                s_err += c * u64::from(!self.judged_spam[i]);
            } else {
                h_total += c;
                h_err += c * u64::from(self.judged_spam[i]);
            }
        }
        if s_total == 0 || h_total == 0 {
            return [f64::NAN; 5];
        }
        // ROC area over tie groups, ascending (as `metrics::roc_area`).
        let (mut hams_below, mut wins) = (0u64, 0f64);
        let order = &self.ascending;
        let mut k = 0;
        while k < order.len() {
            let (mut s, mut h) = (0u64, 0u64);
            let mut j = k;
            while j < order.len() && self.score[order[j]] == self.score[order[k]] {
                let i = order[j];
                let c = u64::from(count[i]);
                if spam[i] {
                    s += c;
                } else {
                    h += c;
                }
                j += 1;
            }
            wins += (s * hams_below) as f64 + 0.5 * (s * h) as f64;
            hams_below += h;
            k = j;
        }
        let area = wins / (s_total * h_total) as f64;
        // The 0.1 % point (as `metrics::spam_missed_at_ham_rate`): the
        // score of the first ham copy the allowance cannot cover, from
        // the top; spam at or below it is missed.
        let allowed = (0.001 * h_total as f64).floor() as u64;
        let mut seen = 0u64;
        let mut uncovered = f64::NEG_INFINITY;
        for &i in order.iter().rev() {
            if !spam[i] && count[i] > 0 {
                seen += u64::from(count[i]);
                if seen > allowed {
                    uncovered = self.score[i];
                    break;
                }
            }
        }
        let missed: u64 = (0..spam.len())
            .filter(|&i| spam[i] && self.score[i] <= uncovered)
            .map(|i| u64::from(count[i]))
            .sum();
        [
            100.0 * (1.0 - area),
            100.0
                * lam(
                    h_err as usize,
                    h_total as usize,
                    s_err as usize,
                    s_total as usize,
                ),
            100.0 * missed as f64 / s_total as f64,
            100.0 * s_err as f64 / s_total as f64,
            100.0 * h_err as f64 / h_total as f64,
        ]
    }
}

/// Two replays of one corpus, message by message.
pub struct Paired {
    spam: Vec<bool>,
    base: Side,
    new: Side,
}

impl Paired {
    /// Pairs the outcomes by message id: both files must score the same
    /// messages with the same labels.
    pub fn new(base: &[Outcome], new: &[Outcome]) -> Result<Self, PairError> {
        let by_id: std::collections::HashMap<&str, &Outcome> =
            new.iter().map(|o| (o.id.as_str(), o)).collect();
        let mut spam = Vec::with_capacity(base.len());
        let (mut bs, mut bj, mut ns, mut nj) = (vec![], vec![], vec![], vec![]);
        for b in base {
            let Some(n) = by_id.get(b.id.as_str()) else {
                continue;
            };
            if b.gold != n.gold {
                return Err(PairError::DifferentLabel {
                    id: b.id.clone(),
                    base: b.gold,
                    new: n.gold,
                });
            }
            spam.push(b.gold == Label::Spam);
            bs.push(b.score);
            bj.push(b.judged_spam);
            ns.push(n.score);
            nj.push(n.judged_spam);
        }
        if spam.len() != base.len() || spam.len() != new.len() {
            return Err(PairError::DifferentMessages {
                base: base.len(),
                new: new.len(),
                common: spam.len(),
            });
        }
        if spam.iter().all(|&s| s) || !spam.iter().any(|&s| s) {
            return Err(PairError::OneClass);
        }
        Ok(Self {
            spam,
            base: Side::new(bs, bj),
            new: Side::new(ns, nj),
        })
    }

    /// The measures of both replays on the whole corpus (every count 1).
    pub fn observed(&self) -> ([f64; 5], [f64; 5]) {
        let ones = vec![1; self.spam.len()];
        (
            self.base.measures(&self.spam, &ones),
            self.new.measures(&self.spam, &ones),
        )
    }

    /// The paired bootstrap: per measure, the observed values and the 95 %
    /// interval of the difference over `replicates` draws from `seed`.
    pub fn bootstrap(&self, replicates: usize, seed: u64) -> [Difference; 5] {
        use rayon::prelude::*;
        let n = self.spam.len();
        let diffs: Vec<[f64; 5]> = (0..replicates as u64)
            .into_par_iter()
            .map(|r| {
                let mut count = vec![0u32; n];
                let stream = splitmix64(seed, r);
                for k in 0..n as u64 {
                    // Lemire's multiply-shift: an index in 0..n.
                    let x = splitmix64(stream, k);
                    count[((u128::from(x) * n as u128) >> 64) as usize] += 1;
                }
                let (b, m) = (
                    self.base.measures(&self.spam, &count),
                    self.new.measures(&self.spam, &count),
                );
                std::array::from_fn(|i| m[i] - b[i])
            })
            .collect();
        let (base, new) = self.observed();
        std::array::from_fn(|i| {
            let mut d: Vec<f64> = diffs
                .iter()
                .map(|r| r[i])
                .filter(|x| x.is_finite())
                .collect();
            d.sort_by(f64::total_cmp);
            let at = |q: f64| {
                d.get(((d.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            Difference {
                base: base[i],
                new: new[i],
                low: at(0.025),
                high: at(0.975),
            }
        })
    }
}

/// One measure of two replays and the 95 % interval of its difference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Difference {
    pub base: f64,
    pub new: f64,
    /// 2.5th percentile of the bootstrap's new − base.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
}

impl Difference {
    /// "worse", "better" or "noise": whether the interval lies above 0,
    /// below 0, or spans it (every measure is lower-is-better).
    pub fn call(&self) -> &'static str {
        if self.low > 0.0 {
            "worse"
        } else if self.high < 0.0 {
            "better"
        } else {
            "noise"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::Summary;

    fn outcomes(seed: u64, n: usize, shift: f64) -> Vec<Outcome> {
        (0..n as u64)
            .map(|i| {
                let spam = i % 3 == 0;
                let u = (splitmix64(seed, i) >> 11) as f64 / (1u64 << 53) as f64;
                let score = if spam { 1.5 + shift } else { 0.0 } + 2.0 * u;
                Outcome {
                    id: format!("m{i}"),
                    gold: if spam { Label::Spam } else { Label::Ham },
                    score,
                    judged_spam: score > 1.8,
                    taught: None,
                }
            })
            .collect()
    }

    #[test]
    fn with_every_message_once_the_measures_are_the_summary_s() {
        let (a, b) = (outcomes(1, 3000, 0.0), outcomes(2, 3000, 0.3));
        let p = Paired::new(&a, &b).unwrap();
        let (ma, mb) = p.observed();
        for (m, o) in [(ma, &a), (mb, &b)] {
            let s = Summary::of(o).unwrap();
            let want = [
                s.one_minus_roca_pct,
                s.lam_pct,
                s.spam_misclassified_at_01_ham_pct,
                s.spam_misclassified_pct,
                s.ham_misclassified_pct,
            ];
            for i in 0..5 {
                assert!(
                    (m[i] - want[i]).abs() < 1e-9,
                    "{}: {} vs {}",
                    MEASURES[i],
                    m[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn a_replay_against_itself_is_noise_with_a_zero_interval_and_a_clear_gain_is_better() {
        let a = outcomes(1, 3000, 0.0);
        let same = Paired::new(&a, &a).unwrap().bootstrap(200, 0);
        assert!(
            same.iter()
                .all(|d| d.low == 0.0 && d.high == 0.0 && d.call() == "noise")
        );
        // Spam scored 0.3 higher separates better on every ranking measure.
        let mut b = a.clone();
        for o in b.iter_mut().filter(|o| o.gold == Label::Spam) {
            o.score += 0.3;
        }
        let d = Paired::new(&a, &b).unwrap().bootstrap(200, 0);
        assert_eq!(d[0].call(), "better", "{:?}", d[0]);
        assert_eq!(d[2].call(), "better", "{:?}", d[2]);
        // The same seed draws the same samples.
        assert_eq!(d, Paired::new(&a, &b).unwrap().bootstrap(200, 0));
    }

    #[test]
    fn files_of_different_corpora_or_labels_are_refused() {
        let a = outcomes(1, 30, 0.0);
        assert!(matches!(
            Paired::new(&a, &a[..20]),
            Err(PairError::DifferentMessages { common: 20, .. })
        ));
        let mut b = a.clone();
        b[4].gold = Label::Spam;
        assert!(matches!(
            Paired::new(&a, &b),
            Err(PairError::DifferentLabel { .. })
        ));
    }
}

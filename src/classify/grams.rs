//! A second opinion from the message's raw bytes: an online logistic
//! regression over byte 4-grams, scored beside the Bayesian model.
//!
//! Why: some of the best filters of TREC 2006–07 read characters, not
//! words, and learn discriminatively: Sculley and Wachman's "Relaxed
//! Online SVMs for Spam Filtering" over byte 4-grams, and Goodman and
//! Yih's "Online Discriminative Spam Filter Training", an online logistic
//! regression. This is the second's learner over the first's features. In chaff's replay
//! (docs/ACCURACY.md, "Session 33" and "Session 34") this regression,
//! added to the model's log-odds, lowers (1-ROCA)% on all five corpora
//! with every message learned — a lever of another kind than the model's
//! settings, which trade along one frontier. It is **research**: only
//! `chaff eval --grams` uses it; the service does not (it has no place in
//! the store yet; ungated it costs click users, and only gated, with a
//! verdict margin, is it worse than the model alone nowhere beyond noise;
//! see the docs).
//!
//! Weights are fixed-point integers so that a click's step, stored, can be
//! taken back exactly (`forget`): floating-point additions do not undo.
//! Pure: no I/O, no locks.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::types::Label;

/// The regression's settings. The defaults are session 33's
/// (docs/ACCURACY.md): the rate and the weights were swept on all five
/// corpora there.
#[derive(Clone, Debug, PartialEq)]
pub struct GramParams {
    /// How many raw bytes of the message are read (its head: the header
    /// and the first of the body). 3,000, as Sculley and Wachman.
    pub bytes: usize,
    /// Leave out the header's transport fields (`Received`, `Date`,
    /// `Message-ID`, `Return-Path`, `Delivered-To`, `X-*`…): what a relay
    /// or the corpus's collection wrote rather than the sender.
    pub skip_transport: bool,
    /// The learning rate: a click moves each of its grams' weights by
    /// `rate × (y − p)`.
    pub rate: f64,
    /// Mail delivered and not clicked is learned as ham at this share of
    /// the rate (as the model learns it at a twentieth of a click).
    pub delivered_share: f64,
    /// The regression's weight in the combined score (0: off).
    pub weight: f64,
    /// The model's log-odds are taken as they are within ±`cap`, beyond it
    /// with a slope of 1/1000 (so the regression can still reorder the
    /// model's certain messages, and ties stay broken by the model).
    pub cap: f64,
    /// Clicked ham messages before the regression has its full say (it
    /// has none before the first): a user who clicks only *Spam* has no
    /// ham to learn from, and a regression taught one class scores every
    /// message as that class.
    pub ham_ramp: f64,
    /// Scale the say by the share of messages taught at the full rate (a
    /// user who clicks only mistakes teaches the regression only mistakes,
    /// and it then ranks worse than the model: docs/ACCURACY.md, "Why
    /// `diligent` lost").
    pub gate_by_feedback: bool,
    /// Each gram counts 1/√n for a message of n distinct grams (the
    /// message's feature vector has unit length, as in Sculley and
    /// Wachman) instead of 1.
    pub normalize: bool,
    /// The combined score is read against the verdict cutoffs after
    /// subtracting this many log-odds times the say: the regression
    /// widens the scores, and without it more ham reaches the spam folder
    /// (docs/ACCURACY.md, "Session 34").
    pub verdict_margin: f64,
}

impl Default for GramParams {
    fn default() -> Self {
        Self {
            bytes: 3000,
            skip_transport: false,
            rate: 0.004,
            delivered_share: 0.05,
            weight: 0.5,
            cap: 10.0,
            ham_ramp: 10.0,
            gate_by_feedback: false,
            normalize: false,
            verdict_margin: 0.0,
        }
    }
}

/// A message's distinct byte 4-grams (each four consecutive bytes read as
/// one `u32`), sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grams(Vec<u32>);

/// Header fields written in transit or by the corpus's collection, left
/// out with [`GramParams::skip_transport`].
const TRANSPORT: [&[u8]; 9] = [
    b"received",
    b"date",
    b"message-id",
    b"delivered-to",
    b"return-path",
    b"status",
    b"content-length",
    b"lines",
    b"x-",
];

impl Grams {
    /// The grams of the first `params.bytes` bytes of `message` (after
    /// leaving out transport fields if asked).
    pub fn of(message: &[u8], params: &GramParams) -> Self {
        let kept;
        let bytes = if params.skip_transport {
            kept = without_transport(message, params.bytes);
            &kept[..]
        } else {
            message
        };
        let head = &bytes[..bytes.len().min(params.bytes)];
        let mut grams: Vec<u32> = head
            .windows(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        grams.sort_unstable();
        grams.dedup();
        Self(grams)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The message's bytes without the header's transport fields, up to about
/// `limit` bytes. The header ends at the first empty line (LF or CRLF); a
/// message without one is all header.
fn without_transport(message: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len().min(limit + 128));
    let mut keep = true;
    let mut rest = message;
    while !rest.is_empty() && out.len() < limit {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if line == b"\n" || line == b"\r\n" {
            out.extend_from_slice(rest);
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            keep = !is_transport(name);
        }
        if keep {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out
}

/// Whether a header line whose text before its first colon is `name` is a
/// transport field (or an mbox `From ` line, which has no colon).
fn is_transport(name: &[u8]) -> bool {
    let starts = |prefix: &[u8]| {
        name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    starts(b"from ")
        || TRANSPORT.iter().any(|t| {
            if t.ends_with(b"-") {
                starts(t)
            } else {
                name.eq_ignore_ascii_case(t)
            }
        })
}

/// Fixed-point units per unit of weight: 2^20. A step of the default rate
/// (at most 0.004) is about 4,194 units, so rounding a step costs at most
/// one part in 8,000 of it; a weight saturates at ±2,048, which takes half
/// a million same-signed steps of the default rate on one gram.
const UNIT: f64 = (1u32 << 20) as f64;

/// Each of the message's grams' value as a feature.
fn value(grams: &Grams, params: &GramParams) -> f64 {
    if params.normalize && !grams.is_empty() {
        1.0 / (grams.len() as f64).sqrt()
    } else {
        1.0
    }
}

/// What one learned message did to the weights: the same `step` (in
/// fixed-point units) added to each of its grams. Kept, it lets the click
/// be taken back exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step(pub i32);

/// The regression an operator's seed corpora taught: the shared table a
/// user's regression adds its own weights to ([`GramModel::over`]). Read
/// only once built, so one copy serves every user and no click of theirs
/// needs undoing in it (docs/ACCURACY.md, "Session 36").
#[derive(Clone, Debug, Default)]
pub struct SeedGrams {
    weights: FxHashMap<u32, i32>,
    /// The seed's clicked ham and full-rate lessons, which a user's say
    /// may start from ([`GramModel::over`]).
    ham_clicks: u64,
    taught: u64,
}

impl SeedGrams {
    /// Grams with a weight.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// The regression for one mailbox: a weight per gram seen in learned mail,
/// and the counts that set its say; over a [`SeedGrams`], the user's own
/// weights are added to the seed's. Scores and steps are then exactly
/// those of one table first taught the seed, then the user's mail (the
/// weights are integers), while what is the user's stays apart: what a
/// store keeps per user, and all a Forget can touch.
#[derive(Clone, Debug, Default)]
pub struct GramModel {
    weights: FxHashMap<u32, i32>,
    seed: Option<Arc<SeedGrams>>,
    /// Clicked ham (full-rate ham lessons), for [`GramParams::ham_ramp`].
    ham_clicks: u64,
    /// Messages scored and messages taught at the full rate, for
    /// [`GramParams::gate_by_feedback`].
    scored: u64,
    taught: u64,
}

impl GramModel {
    /// The regression's log-odds for `grams`: the sum of their weights
    /// (times each gram's value, [`GramParams::normalize`]).
    pub fn z(&self, grams: &Grams, params: &GramParams) -> f64 {
        let sum = |weights: &FxHashMap<u32, i32>| -> i64 {
            grams
                .0
                .iter()
                .filter_map(|g| weights.get(g))
                .map(|&w| i64::from(w))
                .sum()
        };
        let seed = self.seed.as_ref().map_or(0, |s| sum(&s.weights));
        (sum(&self.weights) + seed) as f64 / UNIT * value(grams, params)
    }

    /// A user's regression over `seed`, with no weight of its own yet.
    /// `seed_says`: the seed's clicked ham counts towards the say, so the
    /// regression has its full say from the first message; without it the
    /// say waits for the user's own clicked ham, as one learned from the
    /// user's clicks alone does (`chaff eval --grams-user-ramp`;
    /// docs/ACCURACY.md, "Session 35").
    pub fn over(seed: Arc<SeedGrams>, seed_says: bool) -> Self {
        let (ham_clicks, taught) = if seed_says {
            (seed.ham_clicks, seed.taught)
        } else {
            (0, 0)
        };
        Self {
            weights: FxHashMap::default(),
            seed: Some(seed),
            ham_clicks,
            scored: 0,
            taught,
        }
    }

    /// What this model learned, as a seed for others
    /// ([`GramModel::over`]); over a seed itself, the two added up.
    pub fn into_seed(self) -> SeedGrams {
        let mut weights = self.weights;
        if let Some(seed) = &self.seed {
            for (g, w) in &seed.weights {
                let sum = weights.entry(*g).or_insert(0);
                *sum = sum.saturating_add(*w);
                if *sum == 0 {
                    weights.remove(g);
                }
            }
        }
        SeedGrams {
            weights,
            ham_clicks: self.ham_clicks,
            taught: self.taught,
        }
    }

    /// Counts a scored message (for the feedback gate).
    pub fn count_scored(&mut self) {
        self.scored += 1;
    }

    /// One gradient step of the log-loss towards `label` for a message
    /// whose regression log-odds were `z`, at `share` of the rate (1 for a
    /// click, [`GramParams::delivered_share`] for delivered mail). Returns
    /// the step, to be kept for [`GramModel::forget`].
    pub fn learn(
        &mut self,
        grams: &Grams,
        z: f64,
        label: Label,
        share: f64,
        params: &GramParams,
    ) -> Step {
        let y = if label == Label::Spam { 1.0 } else { 0.0 };
        let p = 1.0 / (1.0 + (-z).exp());
        let step = params.rate * share * (y - p) * value(grams, params);
        let step = Step((step * UNIT).round() as i32);
        self.apply(grams, step.0);
        self.count_lesson(label, share);
        step
    }

    /// Counts a lesson at `share` of the rate towards the say (and the
    /// feedback gate) without moving a weight: what a click does to a
    /// regression that learns nothing more, the operator's seed alone
    /// (`chaff eval --grams-frozen`).
    pub fn count_lesson(&mut self, label: Label, share: f64) {
        if share >= 1.0 {
            self.taught += 1;
            if label == Label::Ham {
                self.ham_clicks += 1;
            }
        }
    }

    /// Takes a learned message's step back: each of its grams' weights
    /// loses exactly what that message added (a weight that returns to
    /// zero is dropped), so learning and forgetting it leaves nothing.
    /// Steps learned after it, computed with it in place, stay — as a
    /// user's later clicks stay when an earlier one is undone.
    pub fn forget(&mut self, grams: &Grams, step: Step, label: Label, share: f64) {
        self.apply(grams, -step.0);
        if share >= 1.0 {
            self.taught = self.taught.saturating_sub(1);
            if label == Label::Ham {
                self.ham_clicks = self.ham_clicks.saturating_sub(1);
            }
        }
    }

    fn apply(&mut self, grams: &Grams, step: i32) {
        if step == 0 {
            return;
        }
        for g in &grams.0 {
            let w = self.weights.entry(*g).or_insert(0);
            *w = w.saturating_add(step);
            if *w == 0 {
                self.weights.remove(g);
            }
        }
    }

    /// Grams with a weight of the user's own (not the seed's): what a
    /// store would keep for this mailbox.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The seed's grams with a weight (0 without a seed).
    pub fn seed_len(&self) -> usize {
        self.seed.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The regression's say in the combined score, 0 to 1.
    pub fn say(&self, params: &GramParams) -> f64 {
        let mut say = if params.ham_ramp > 0.0 {
            (self.ham_clicks as f64 / params.ham_ramp).min(1.0)
        } else {
            1.0
        };
        if params.gate_by_feedback && self.scored > 0 {
            say *= (self.taught as f64 / self.scored as f64).min(1.0);
        }
        say
    }

    /// The combined log-odds: the model's `log_odds` (softened beyond
    /// ±[`GramParams::cap`]) plus the regression's `z` at its weight and
    /// say.
    pub fn combine(&self, log_odds: f64, z: f64, params: &GramParams) -> f64 {
        let soft = if log_odds.abs() <= params.cap {
            log_odds
        } else {
            log_odds.signum() * (params.cap + 1e-3 * (log_odds.abs() - params.cap))
        };
        soft + params.weight * self.say(params) * z
    }

    /// What the verdict reads: the combined log-odds less
    /// [`GramParams::verdict_margin`] at the regression's say.
    pub fn verdict_log_odds(&self, combined: f64, params: &GramParams) -> f64 {
        combined - params.verdict_margin * self.say(params)
    }

    /// The combined score of a message the model scored `log_odds` and the
    /// regression `z`, and its verdict at `cutoffs` (through
    /// [`crate::classify::verdict`], after the margin).
    pub fn judge(
        &self,
        log_odds: f64,
        z: f64,
        cutoffs: crate::classify::Cutoffs,
        params: &GramParams,
    ) -> (f64, crate::types::Verdict) {
        let score = self.combine(log_odds, z, params);
        let at = self.verdict_log_odds(score, params);
        (
            score,
            crate::classify::verdict(1.0 / (1.0 + (-at).exp()), cutoffs),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grams(s: &str) -> Grams {
        Grams::of(s.as_bytes(), &GramParams::default())
    }

    #[test]
    fn grams_are_the_distinct_four_byte_windows_of_the_head() {
        assert_eq!(grams("abcdabcd").len(), 4, "abcd bcda cdab dabc");
        assert!(grams("abc").is_empty());
        let params = GramParams {
            bytes: 6,
            ..GramParams::default()
        };
        assert_eq!(
            Grams::of(b"abcdefghij", &params).len(),
            3,
            "only the first 6 bytes"
        );
    }

    #[test]
    fn transport_fields_are_left_out_and_the_body_kept_with_either_line_ending() {
        for eol in ["\n", "\r\n"] {
            let msg = [
                "Received: from relay.example",
                "  by mx.example",
                "X-Spam-Flag: YES",
                "Subject: hello",
                "",
                "Received: in the body stays",
            ]
            .join(eol);
            let kept = without_transport(msg.as_bytes(), 3000);
            let kept = String::from_utf8(kept).unwrap();
            assert_eq!(
                kept,
                ["Subject: hello", "", "Received: in the body stays"].join(eol)
            );
        }
    }

    #[test]
    fn a_regression_over_a_seed_scores_and_steps_as_one_table_taught_the_seed_first() {
        let p = GramParams::default();
        let seed_mail = [
            ("cheap pills now, buy cheap pills", Label::Spam),
            ("minutes of the meeting on tuesday", Label::Ham),
            ("win a prize, claim your prize now", Label::Spam),
            ("the budget review is on friday", Label::Ham),
        ];
        let user_mail = [
            ("cheap meds, best prices on pills", Label::Spam),
            ("notes from the review meeting", Label::Ham),
            ("claim cheap prize pills now", Label::Spam),
        ];
        let (mut one, mut teacher) = (GramModel::default(), GramModel::default());
        for _ in 0..5 {
            for (text, label) in seed_mail {
                let g = grams(text);
                one.learn(&g, one.z(&g, &p), label, 1.0, &p);
                teacher.learn(&g, teacher.z(&g, &p), label, 1.0, &p);
            }
        }
        let seed = Arc::new(teacher.into_seed());
        let mut user = GramModel::over(seed.clone(), true);
        assert!(user.is_empty());
        assert_eq!(user.seed_len(), one.len());
        assert_eq!(user.say(&p), one.say(&p), "the seed's ham counts");
        assert_eq!(GramModel::over(seed, false).say(&p), 0.0, "or not");
        let mut steps = Vec::new();
        for (text, label) in user_mail {
            let g = grams(text);
            assert_eq!(user.z(&g, &p), one.z(&g, &p), "{text}");
            let step = user.learn(&g, user.z(&g, &p), label, 1.0, &p);
            assert_eq!(step, one.learn(&g, one.z(&g, &p), label, 1.0, &p));
            steps.push((g, step, label));
        }
        for (text, _) in seed_mail.iter().chain(&user_mail) {
            assert_eq!(user.z(&grams(text), &p), one.z(&grams(text), &p));
        }
        assert!(!user.is_empty() && user.len() < one.len());
        // Seed and user folded into one seed score as the one table.
        let folded = GramModel::over(Arc::new(user.clone().into_seed()), true);
        for (text, _) in seed_mail.iter().chain(&user_mail) {
            assert_eq!(folded.z(&grams(text), &p), one.z(&grams(text), &p));
        }
        assert_eq!(folded.seed_len(), one.len());
        for (g, step, label) in steps.iter().rev() {
            user.forget(g, *step, *label, 1.0);
        }
        assert!(
            user.is_empty(),
            "a Forget touches the user's own weights only"
        );
    }

    #[test]
    fn a_frozen_regressions_clicks_count_towards_its_say_and_move_no_weight() {
        let p = GramParams::default();
        let mut teacher = GramModel::default();
        let ham = grams("minutes of the meeting on tuesday");
        for _ in 0..3 {
            teacher.learn(&ham, teacher.z(&ham, &p), Label::Ham, 1.0, &p);
        }
        let mut m = GramModel::over(Arc::new(teacher.into_seed()), false);
        let z = m.z(&ham, &p);
        assert_eq!(m.say(&p), 0.0);
        m.count_lesson(Label::Ham, p.delivered_share);
        assert_eq!(m.say(&p), 0.0, "delivered mail is no click");
        for _ in 0..5 {
            m.count_lesson(Label::Ham, 1.0);
            m.count_lesson(Label::Spam, 1.0);
        }
        assert_eq!(m.say(&p), 0.5, "5 of the 10 clicked ham the say needs");
        assert!(m.is_empty());
        assert_eq!(m.z(&ham, &p), z);
    }

    #[test]
    fn learning_moves_a_message_towards_its_label_and_forget_restores_the_weights_exactly() {
        let p = GramParams::default();
        let mut m = GramModel::default();
        let spam = grams("cheap pills now, buy cheap pills");
        let ham = grams("minutes of the meeting on tuesday");
        let mut steps = Vec::new();
        for _ in 0..20 {
            let z = m.z(&spam, &p);
            steps.push((
                spam.clone(),
                m.learn(&spam, z, Label::Spam, 1.0, &p),
                Label::Spam,
            ));
            let z = m.z(&ham, &p);
            steps.push((
                ham.clone(),
                m.learn(&ham, z, Label::Ham, 1.0, &p),
                Label::Ham,
            ));
        }
        assert!(
            m.z(&spam, &p) > 0.5 && m.z(&ham, &p) < -0.5,
            "{} {}",
            m.z(&spam, &p),
            m.z(&ham, &p)
        );
        let before: Vec<i32> = {
            let mut w: Vec<_> = m.weights.iter().map(|(k, v)| (*k, *v)).collect();
            w.sort();
            w.into_iter().map(|(_, v)| v).collect()
        };
        // A delivered message learned and forgotten leaves no trace.
        let other = grams("an unrelated newsletter");
        let step = m.learn(&other, m.z(&other, &p), Label::Ham, p.delivered_share, &p);
        assert_ne!(step.0, 0);
        m.forget(&other, step, Label::Ham, p.delivered_share);
        let after: Vec<i32> = {
            let mut w: Vec<_> = m.weights.iter().map(|(k, v)| (*k, *v)).collect();
            w.sort();
            w.into_iter().map(|(_, v)| v).collect()
        };
        assert_eq!(before, after);
        // Every step taken back, in any order: nothing is left.
        for (g, step, label) in steps.into_iter().rev() {
            m.forget(&g, step, label, 1.0);
        }
        assert!(m.is_empty());
        assert_eq!((m.ham_clicks, m.taught), (0, 0));
    }

    #[test]
    fn the_regression_has_no_say_until_ham_is_clicked() {
        let p = GramParams::default();
        let mut m = GramModel::default();
        let spam = grams("cheap pills now");
        for _ in 0..5 {
            m.learn(&spam, m.z(&spam, &p), Label::Spam, 1.0, &p);
        }
        assert_eq!(m.say(&p), 0.0);
        assert_eq!(
            m.combine(1.5, m.z(&spam, &p), &p),
            1.5,
            "a spam-only clicker scores as without it"
        );
        let ham = grams("lunch on friday?");
        for _ in 0..5 {
            m.learn(&ham, m.z(&ham, &p), Label::Ham, 1.0, &p);
        }
        assert_eq!(m.say(&p), 0.5);
    }

    #[test]
    fn the_verdict_margin_grows_with_the_say() {
        let p = GramParams {
            verdict_margin: 0.5,
            ..GramParams::default()
        };
        let mut m = GramModel::default();
        assert_eq!(m.verdict_log_odds(2.0, &p), 2.0, "no say, no margin");
        let ham = grams("lunch on friday?");
        for _ in 0..10 {
            m.learn(&ham, m.z(&ham, &p), Label::Ham, 1.0, &p);
        }
        assert_eq!(m.verdict_log_odds(2.0, &p), 1.5);
    }

    #[test]
    fn the_model_beyond_the_cap_is_softened_not_cut() {
        let p = GramParams::default();
        let m = GramModel::default();
        assert_eq!(m.combine(3.0, 0.0, &p), 3.0);
        let (a, b) = (m.combine(1000.0, 0.0, &p), m.combine(500.0, 0.0, &p));
        assert!(a > b && a < 12.0, "{a} {b}");
    }

    #[test]
    fn the_feedback_gate_scales_the_say_by_the_share_taught() {
        let p = GramParams {
            ham_ramp: 0.0,
            gate_by_feedback: true,
            ..GramParams::default()
        };
        let mut m = GramModel::default();
        let g = grams("some words here");
        for _ in 0..4 {
            m.count_scored();
        }
        m.learn(&g, 0.0, Label::Ham, 1.0, &p);
        assert_eq!(m.say(&p), 0.25);
    }
}

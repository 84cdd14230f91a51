//! The click protocols (issue #19): what users actually teach a filter.
//!
//! A mailbox starts empty. The user sees where each message went — the
//! inbox (verdict HAM or UNSURE: delivered) or the spam folder (verdict
//! SPAM) — and only then may click:
//!
//! - spam in the inbox is clicked *Spam* with probability `p`
//!   ([`Clicks::spam`]);
//! - ham in the spam folder is clicked *Not spam* with probability `q`
//!   ([`Clicks::ham`]);
//! - nothing filed correctly is ever clicked, and nothing else is learned.
//!
//! Named profiles: [`Profile::Diligent`] (p = q = 1: every misfiled
//! message is corrected), [`Profile::Typical`] (p = 0.5, q = 0.2, the
//! defaults) and [`Profile::SpamOnly`] (p = 0.5, q = 0: the user never
//! opens the spam folder).
//!
//! # The random draws
//!
//! Whether message `i` (0-based, in the mailbox's arrival order) is clicked
//! is decided by one number `u(seed, i)` in [0, 1): clicked iff `u < p`
//! (spam) or `u < q` (ham). `u` is a pure function, so the same seed gives
//! the same clicks in any replay, in any language — the peers' replay
//! (`scripts/peers/replay.py`) implements the same function and checks the
//! same test vector:
//!
//! ```text
//! x    = (seed + (i + 1) · 0x9E3779B97F4A7C15) mod 2⁶⁴   // SplitMix64's state after i + 1 steps
//! z    = (x ⊕ (x ≫ 30)) · 0xBF58476D1CE4E5B9 mod 2⁶⁴
//! z    = (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB mod 2⁶⁴
//! z    =  z ⊕ (z ≫ 31)                                  // SplitMix64's output i
//! u    = (z ≫ 11) / 2⁵³
//! ```
//!
//! i.e. `z` is output `i` of Steele, Lea and Flood's SplitMix64 generator
//! seeded with `seed` (for seed 1234567 the first outputs are
//! 6457827717110365317, 3203168211198807973, …, the reference vector), and
//! `u` its top 53 bits as a double. One draw per message, whatever its
//! label: a message clicked at some `p` is also clicked at any larger `p`
//! from the same seed, so profiles differ only by the clicks they add.

use crate::types::{Label, Verdict};

/// SplitMix64's increment (2⁶⁴ / φ, odd).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Output `i` (0-based) of the SplitMix64 generator seeded with `seed`.
pub fn splitmix64(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform draw in [0, 1) that decides whether message `i` is clicked.
pub fn draw(seed: u64, i: u64) -> f64 {
    (splitmix64(seed, i) >> 11) as f64 / (1u64 << 53) as f64
}

/// A named user behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Corrects every misfiled message: p = q = 1.
    Diligent,
    /// The defaults: p = 0.5, q = 0.2.
    Typical,
    /// Never looks in the spam folder: p = 0.5, q = 0.
    SpamOnly,
}

impl Profile {
    /// `(p, q)`: the chance of clicking *Spam* on spam in the inbox, and
    /// *Not spam* on ham in the spam folder.
    pub fn rates(self) -> (f64, f64) {
        match self {
            Profile::Diligent => (1.0, 1.0),
            Profile::Typical => (Clicks::DEFAULT_SPAM, Clicks::DEFAULT_HAM),
            Profile::SpamOnly => (Clicks::DEFAULT_SPAM, 0.0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Diligent => "diligent",
            Profile::Typical => "typical",
            Profile::SpamOnly => "spam-only",
        }
    }
}

/// A click protocol's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clicks {
    /// p: chance that spam delivered to the inbox is clicked *Spam*.
    pub spam: f64,
    /// q: chance that ham in the spam folder is clicked *Not spam*.
    pub ham: f64,
    /// Seeds the draws ([`draw`]).
    pub seed: u64,
}

/// A click probability outside [0, 1].
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a click probability is a number in [0, 1], not {0}")]
pub struct BadProbability(pub f64);

impl Clicks {
    pub const DEFAULT_SPAM: f64 = 0.5;
    pub const DEFAULT_HAM: f64 = 0.2;

    pub fn new(spam: f64, ham: f64, seed: u64) -> Result<Self, BadProbability> {
        for p in [spam, ham] {
            if !(0.0..=1.0).contains(&p) {
                return Err(BadProbability(p));
            }
        }
        Ok(Self { spam, ham, seed })
    }

    pub fn profile(profile: Profile, seed: u64) -> Self {
        let (spam, ham) = profile.rates();
        Self { spam, ham, seed }
    }

    /// Whether the user clicks message `i` (its position in the mailbox),
    /// of label `gold`, after seeing `verdict`.
    pub fn clicks(&self, i: usize, gold: Label, verdict: Verdict) -> bool {
        let chance = match (gold, verdict) {
            (Label::Spam, Verdict::Ham | Verdict::Unsure) => self.spam,
            (Label::Ham, Verdict::Spam) => self.ham,
            _ => return false,
        };
        // `u < 1.0` always holds and `u < 0.0` never: p = 1 clicks every
        // time, p = 0 never, whatever the draw.
        draw(self.seed, i as u64) < chance
    }
}

impl Default for Clicks {
    fn default() -> Self {
        Clicks::profile(Profile::Typical, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_vector() {
        // SplitMix64 seeded with 1234567: the vector published with the
        // reference implementation (and the one replay.py checks).
        let first: Vec<u64> = (0..5).map(|i| splitmix64(1_234_567, i)).collect();
        assert_eq!(
            first,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821
            ]
        );
        assert_eq!(splitmix64(0, 0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn draws_are_pinned_for_the_peers_replay() {
        // The same values are asserted by `scripts/peers/replay.py --self-check`.
        for (seed, i, u) in [
            (0, 0, 0.8833108082136426),
            (0, 1, 0.43152799704850997),
            (42, 0, 0.7415648787718233),
            (42, 999, 0.39857653722272335),
            (u64::MAX, 123456, 0.7322284444924021),
        ] {
            assert_eq!(draw(seed, i), u, "seed {seed}, message {i}");
        }
    }

    #[test]
    fn only_misfiled_mail_is_clicked_and_unsure_counts_as_delivered() {
        let always = Clicks::new(1.0, 1.0, 7).unwrap();
        for i in 0..50 {
            assert!(always.clicks(i, Label::Spam, Verdict::Ham));
            assert!(always.clicks(i, Label::Spam, Verdict::Unsure));
            assert!(always.clicks(i, Label::Ham, Verdict::Spam));
            assert!(!always.clicks(i, Label::Spam, Verdict::Spam));
            assert!(!always.clicks(i, Label::Ham, Verdict::Ham));
            // Unsure ham is in the inbox: filed right, never clicked.
            assert!(!always.clicks(i, Label::Ham, Verdict::Unsure));
        }
        let never = Clicks::new(0.0, 0.0, 7).unwrap();
        assert!((0..50).all(|i| !never.clicks(i, Label::Spam, Verdict::Ham)));
        assert!((0..50).all(|i| !never.clicks(i, Label::Ham, Verdict::Spam)));
    }

    #[test]
    fn a_click_follows_the_draw_and_larger_rates_only_add_clicks() {
        // Seed 0: u(0) = 0.883, u(1) = 0.432.
        let half = Clicks::new(0.5, 0.5, 0).unwrap();
        assert!(!half.clicks(0, Label::Spam, Verdict::Ham));
        assert!(half.clicks(1, Label::Spam, Verdict::Ham));
        assert!(half.clicks(1, Label::Ham, Verdict::Spam));
        let q = Clicks::new(0.5, 0.4, 0).unwrap();
        assert!(!q.clicks(1, Label::Ham, Verdict::Spam));
        let (typical, diligent) = (
            Clicks::profile(Profile::Typical, 3),
            Clicks::profile(Profile::Diligent, 3),
        );
        let clicked = |c: &Clicks| -> Vec<usize> {
            (0..1000)
                .filter(|&i| c.clicks(i, Label::Spam, Verdict::Unsure))
                .collect()
        };
        let (some, all) = (clicked(&typical), clicked(&diligent));
        assert_eq!(all.len(), 1000);
        assert!(some.iter().all(|i| all.contains(i)));
        // About half, as p = 0.5 says (binomial sd ≈ 16).
        assert!((440..560).contains(&some.len()), "{}", some.len());
    }

    #[test]
    fn profiles_set_the_rates_the_issue_names() {
        assert_eq!(Profile::Diligent.rates(), (1.0, 1.0));
        assert_eq!(Profile::Typical.rates(), (0.5, 0.2));
        assert_eq!(Profile::SpamOnly.rates(), (0.5, 0.0));
        assert_eq!(Clicks::default(), Clicks::new(0.5, 0.2, 0).unwrap());
        assert_eq!(Clicks::new(1.5, 0.2, 0), Err(BadProbability(1.5)));
        assert!(Clicks::new(0.5, f64::NAN, 0).is_err());
    }
}

//! A user's delivery settings: handling mode and thresholds, with the
//! defaults a provider would ship and the rules that keep them coherent.

use crate::classify::Cutoffs;
use crate::error::Error;

/// What happens to a message the model (or a rule) calls spam.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlingMode {
    /// Deliver everything; spam is only tagged in headers.
    Passthrough,
    /// Spam goes to the spam folder. The default: the provider's support
    /// articles tell operators to prefer it, because a false positive stays
    /// recoverable by the user.
    Quarantine,
    /// Spam at or above the reject threshold is refused at SMTP time; spam
    /// below it goes to the spam folder.
    Reject,
}

impl HandlingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HandlingMode::Passthrough => "passthrough",
            HandlingMode::Quarantine => "quarantine",
            HandlingMode::Reject => "reject",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            HandlingMode::Passthrough => b'p',
            HandlingMode::Quarantine => b'q',
            HandlingMode::Reject => b'r',
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'p' => HandlingMode::Passthrough,
            b'q' => HandlingMode::Quarantine,
            b'r' => HandlingMode::Reject,
            _ => return None,
        })
    }
}

/// Default spam threshold: the classifier's spam cutoff
/// (`classify::Params::default().spam_cutoff`, pinned by a test), so a new
/// user's verdicts match the accuracy figures in docs/ACCURACY.md.
pub const DEFAULT_SPAM_THRESHOLD: f64 = 0.80;

/// Default reject threshold. Chi-square combining pushes confident scores
/// to the extremes, so 0.999 still rejects most spam while a message the
/// model is merely fairly sure of goes to the spam folder, where a mistake
/// can be undone; a rejected message is gone.
pub const DEFAULT_REJECT_THRESHOLD: f64 = 0.999;

/// One user's delivery settings.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSettings {
    pub mode: HandlingMode,
    /// At or above: verdict spam (`classify::verdict`, with the engine's
    /// ham cutoff below which it is ham).
    pub spam_threshold: f64,
    /// In reject mode, at or above: rejected at SMTP time.
    pub reject_threshold: f64,
    /// The user's clicks also train the shared model (opt-in; see
    /// docs/SHARED.md). Off by default.
    pub share_training: bool,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self {
            mode: HandlingMode::Quarantine,
            spam_threshold: DEFAULT_SPAM_THRESHOLD,
            reject_threshold: DEFAULT_REJECT_THRESHOLD,
            share_training: false,
        }
    }
}

/// A partial change; `None` fields keep their value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettingsUpdate {
    pub mode: Option<HandlingMode>,
    pub spam_threshold: Option<f64>,
    pub reject_threshold: Option<f64>,
    pub share_training: Option<bool>,
}

impl SettingsUpdate {
    /// Whether it changes nothing (every field unset).
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.spam_threshold.is_none()
            && self.reject_threshold.is_none()
            && self.share_training.is_none()
    }
}

impl UserSettings {
    /// The cutoffs this user's verdicts are read against: `ham_cutoff`
    /// (the engine's, `classify::Params`) and this user's spam threshold.
    pub fn cutoffs(&self, ham_cutoff: f64) -> Cutoffs {
        Cutoffs {
            ham: ham_cutoff,
            spam: self.spam_threshold,
        }
    }

    /// These settings with `update` applied, if the result is coherent:
    /// `0.5 ≤ spam_threshold ≤ reject_threshold ≤ 1`. (Below 0.5 a message
    /// with no evidence at all would be spam.)
    pub fn updated(&self, update: &SettingsUpdate) -> Result<UserSettings, Error> {
        let next = UserSettings {
            mode: update.mode.unwrap_or(self.mode),
            spam_threshold: update.spam_threshold.unwrap_or(self.spam_threshold),
            reject_threshold: update.reject_threshold.unwrap_or(self.reject_threshold),
            share_training: update.share_training.unwrap_or(self.share_training),
        };
        let in_range = |x: f64| (0.5..=1.0).contains(&x);
        if !in_range(next.spam_threshold) {
            return Err(Error::InvalidArgument(format!(
                "spam threshold {} is outside 0.5..=1.0; the default is {DEFAULT_SPAM_THRESHOLD}",
                next.spam_threshold
            )));
        }
        if !in_range(next.reject_threshold) || next.reject_threshold < next.spam_threshold {
            return Err(Error::InvalidArgument(format!(
                "reject threshold {} must be between the spam threshold {} and 1.0; the default is \
                 {DEFAULT_REJECT_THRESHOLD}",
                next.reject_threshold, next.spam_threshold
            )));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_quarantine_at_the_classifier_cutoff() {
        use crate::classify::verdict;
        use crate::types::Verdict;
        let s = UserSettings::default();
        let classifier = crate::classify::Params::default();
        let cutoffs = s.cutoffs(classifier.ham_cutoff);
        assert_eq!(s.mode, HandlingMode::Quarantine);
        assert_eq!(verdict(0.5, cutoffs), Verdict::Unsure);
        assert_eq!(verdict(0.9, cutoffs), Verdict::Spam);
        assert_eq!(verdict(0.1, cutoffs), Verdict::Ham);
        assert_eq!(s.spam_threshold, classifier.spam_cutoff);
        assert_eq!(cutoffs, Cutoffs::of(&classifier));
    }

    #[test]
    fn incoherent_thresholds_are_refused_with_the_rule() {
        let s = UserSettings::default();
        let low = s.updated(&SettingsUpdate {
            spam_threshold: Some(0.3),
            ..Default::default()
        });
        assert!(low.unwrap_err().to_string().contains("0.5..=1.0"));
        let inverted = s.updated(&SettingsUpdate {
            spam_threshold: Some(0.95),
            reject_threshold: Some(0.92),
            ..Default::default()
        });
        assert!(
            inverted
                .unwrap_err()
                .to_string()
                .contains("between the spam threshold")
        );
        let nan = s.updated(&SettingsUpdate {
            spam_threshold: Some(f64::NAN),
            ..Default::default()
        });
        assert!(nan.is_err());
        let ok = s
            .updated(&SettingsUpdate {
                mode: Some(HandlingMode::Reject),
                reject_threshold: Some(0.99),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((ok.mode, ok.reject_threshold), (HandlingMode::Reject, 0.99));
    }
}

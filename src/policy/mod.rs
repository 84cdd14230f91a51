//! Delivery policy: from a model score, the user's settings, the allow and
//! block lists and the sender's authentication to an action the mail
//! pipeline takes, with the reason. Pure: no I/O, no locks.
//!
//! # Precedence (first match decides)
//!
//! 1. **Block list** — the user's, then the operator's — by sender address,
//!    sender domain, sending IP or CIDR range. No authentication needed: a
//!    forger gains nothing by matching a block entry. Filed as spam:
//!    `REJECT` in reject mode, `SPAM_FOLDER` otherwise (a block entry is an
//!    explicit instruction, so even passthrough users do not get it in the
//!    inbox). Block beats allow.
//! 2. **Allow list** — the user's, then the operator's. IP and range entries
//!    apply as they are; address and domain entries only when the message
//!    authenticates for the From domain (DMARC pass, aligned SPF pass or
//!    aligned DKIM pass, [`Authentication::authenticates`]), so a forged
//!    From cannot ride the list. → `DELIVER`.
//! 3. **Authentication** — DMARC failed and the From domain publishes
//!    `p=reject` or `p=quarantine`: filed as spam through the handling mode
//!    (rejected only in reject mode and only for `p=reject`).
//! 4. **Model** — the user's spam probability against the user's
//!    thresholds: at or above `spam_threshold` the verdict is spam and the
//!    handling mode picks the action (passthrough: deliver, tagged;
//!    quarantine: spam folder; reject: reject at or above
//!    `reject_threshold`, spam folder between the two).
//!
//! SMTP replies name the kind of reason only, never a list entry or a
//! score: they go to the sender, who may be the spammer.

pub mod lists;
pub mod settings;

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::classify::{self, Cutoffs};
use crate::mail::auth::{Authentication, DmarcPolicy};
use crate::mail::sender::Address;
use crate::types::Verdict;

pub use lists::{Entry, List, ListKind, MatchedOn};
pub use settings::{HandlingMode, UserSettings};

/// What the pipeline does with the message. Spelled (logs, headers, the
/// decision log) as [`Action::as_str`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Deliver,
    SpamFolder,
    /// Refuse at SMTP time with [`Decision::smtp_reply`].
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deliver => "deliver",
            Action::SpamFolder => "spam-folder",
            Action::Reject => "reject",
        }
    }
}

/// Whose list an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    User,
    Operator,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Operator => "operator",
        }
    }
}

/// The kind of rule that decided, without its particulars: what headers,
/// logs, the decision log and the wire name. Spelled once, here
/// ([`RuleKind::as_str`]; the stored form is the same words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    BlockList,
    AllowList,
    Authentication,
    Model,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::BlockList => "block-list",
            RuleKind::AllowList => "allow-list",
            RuleKind::Authentication => "authentication",
            RuleKind::Model => "model",
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    BlockList { scope: Scope, entry: Entry },
    AllowList { scope: Scope, entry: Entry },
    Authentication { policy: DmarcPolicy },
    Model,
}

impl Rule {
    /// Its kind: for headers, logs and the decision log.
    pub fn kind(&self) -> RuleKind {
        match self {
            Rule::BlockList { .. } => RuleKind::BlockList,
            Rule::AllowList { .. } => RuleKind::AllowList,
            Rule::Authentication { .. } => RuleKind::Authentication,
            Rule::Model => RuleKind::Model,
        }
    }
}

/// The facts about one message that policy reads.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    /// The RFC 5322 From address (the first).
    pub sender: Option<&'a Address>,
    /// Any further From addresses: a block entry for any of them blocks.
    pub other_senders: &'a [Address],
    /// Whether the From headers hold exactly one address
    /// (`HeaderFacts::single_from`): no sender allow entry applies
    /// otherwise.
    pub single_from: bool,
    /// The envelope sender (Return-Path) the border's SPF check saw: a
    /// block entry for it blocks (support articles: "check whether the
    /// sender or return-path address is on the blocklist"); it never
    /// allows.
    pub envelope_sender: Option<&'a Address>,
    /// The connecting client's IP (see the engine for where it comes from).
    pub client_ip: Option<IpAddr>,
    pub auth: Option<&'a Authentication>,
}

/// The lists that apply to one message: the recipient's and the operator's.
#[derive(Clone, Copy, Debug)]
pub struct Lists<'a> {
    pub user_allow: &'a List,
    pub user_block: &'a List,
    pub operator_allow: &'a List,
    pub operator_block: &'a List,
}

/// The decision, with everything support needs to read it back.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The final verdict: the model's unless a rule decided.
    pub verdict: Verdict,
    pub rule: Rule,
    /// For `Reject`: the reply to send as is, e.g. `554 5.7.1 …`.
    pub smtp_reply: Option<String>,
    /// One sentence for support: what matched and why it decided. May name
    /// list entries and scores — never send it to the sender.
    pub reason: String,
    /// Things support should know that did not decide, e.g. an allow entry
    /// ignored because the sender did not authenticate.
    pub notes: Vec<String>,
}

impl Decision {
    /// Headers the pipeline may add to a delivered message. They state the
    /// verdict and the kind of rule — no list contents.
    pub fn headers(&self, probability: f64) -> Vec<(String, String)> {
        let spam = self.verdict == Verdict::Spam;
        let mut h = vec![
            ("X-Spam-Score".to_string(), format!("{probability:.4}")),
            (
                "X-Spam-Status".to_string(),
                format!(
                    "{}, score={probability:.4} rule={} action={}",
                    if spam { "Yes" } else { "No" },
                    self.rule.kind(),
                    self.action.as_str()
                ),
            ),
        ];
        if spam {
            h.push(("X-Spam-Flag".to_string(), "YES".to_string()));
        }
        h
    }
}

/// The SMTP replies, one per kind of reason (RFC 3463 enhanced codes;
/// 5.7.26 is the code mailbox providers use for DMARC failures).
pub const REPLY_SPAM: &str = "554 5.7.1 Message rejected as spam";
pub const REPLY_BLOCKED: &str = "554 5.7.1 Message rejected by the recipient's policy";
pub const REPLY_DMARC: &str =
    "550 5.7.26 Message rejected: it failed the sending domain's DMARC policy";

/// Applies the precedence in the module docs. The model's verdict is
/// `classify::verdict` against `cutoffs` (the user's,
/// [`UserSettings::cutoffs`]), as for every other verdict chaff reports.
pub fn decide(
    probability: f64,
    cutoffs: Cutoffs,
    settings: &UserSettings,
    lists: Lists<'_>,
    facts: &Facts<'_>,
) -> Decision {
    let mut notes = Vec::new();
    let spam_action = |reject: bool| {
        if reject && settings.mode == HandlingMode::Reject {
            Action::Reject
        } else {
            Action::SpamFolder
        }
    };

    // 1. Block lists.
    for (scope, list) in [
        (Scope::User, lists.user_block),
        (Scope::Operator, lists.operator_block),
    ] {
        let by_sender = facts
            .sender
            .into_iter()
            .chain(facts.other_senders)
            .find_map(|s| list.match_sender(s).map(|e| (e, format!("sender {s}"))))
            .or_else(|| {
                let s = facts.envelope_sender?;
                list.match_sender(s)
                    .map(|e| (e, format!("envelope sender (return path) {s}")))
            });
        let hit = by_sender.or_else(|| {
            let ip = facts.client_ip?;
            list.match_ip(ip)
                .map(|e| (e, describe(MatchedOn::Ip, facts)))
        });
        if let Some((entry, matched)) = hit {
            // Block beats allow, but support should see that both matched.
            for (allow_scope, allow) in [
                (Scope::User, lists.user_allow),
                (Scope::Operator, lists.operator_allow),
            ] {
                if let Some((also, _)) = allow.matches(facts.sender, facts.client_ip) {
                    notes.push(format!(
                        "{} allow list entry {also} also names this sender or IP; a block \
                         entry wins",
                        allow_scope.as_str()
                    ));
                }
            }
            let action = spam_action(true);
            return Decision {
                action,
                verdict: Verdict::Spam,
                reason: format!(
                    "{} block list entry {entry} matched the {matched}",
                    scope.as_str(),
                ),
                rule: Rule::BlockList { scope, entry },
                smtp_reply: (action == Action::Reject).then(|| REPLY_BLOCKED.to_string()),
                notes,
            };
        }
    }

    // 2. Allow lists: sender entries need the From domain to authenticate,
    // and a single From address (with several, which one is the sender?).
    let authenticated = match (facts.sender, facts.auth) {
        (Some(s), Some(a)) => a.authenticates(s.domain()),
        _ => false,
    };
    let single_from = facts.single_from;
    for (scope, list) in [
        (Scope::User, lists.user_allow),
        (Scope::Operator, lists.operator_allow),
    ] {
        let by_sender = facts.sender.and_then(|s| list.match_sender(s));
        if let Some(entry) = &by_sender
            && !single_from
        {
            notes.push(format!(
                "{} allow list entry {entry} ignored: the message has more than one From address",
                scope.as_str(),
            ));
        } else if let Some(entry) = &by_sender
            && !authenticated
        {
            notes.push(format!(
                "{} allow list entry {entry} ignored: the message does not authenticate for the \
                 From domain (no DMARC pass, aligned SPF pass or aligned DKIM pass)",
                scope.as_str()
            ));
        }
        let matched = by_sender
            .filter(|_| authenticated && single_from)
            .map(|e| (e, MatchedOn::Sender, " and the sender authenticated"))
            .or_else(|| {
                let ip = facts.client_ip?;
                list.match_ip(ip).map(|e| (e, MatchedOn::Ip, ""))
            });
        if let Some((entry, on, authenticated_note)) = matched {
            return Decision {
                action: Action::Deliver,
                verdict: Verdict::Ham,
                reason: format!(
                    "{} allow list entry {entry} matched the {}{authenticated_note}",
                    scope.as_str(),
                    describe(on, facts)
                ),
                rule: Rule::AllowList { scope, entry },
                smtp_reply: None,
                notes,
            };
        }
    }

    // 3. Authentication the sending domain asks us to enforce.
    if let Some(failure) = facts.auth.and_then(Authentication::dmarc_enforced_failure) {
        let policy = failure.policy;
        let action = match settings.mode {
            HandlingMode::Passthrough => Action::Deliver,
            HandlingMode::Quarantine => Action::SpamFolder,
            HandlingMode::Reject => spam_action(policy == DmarcPolicy::Reject),
        };
        return Decision {
            action,
            verdict: Verdict::Spam,
            reason: format!(
                "DMARC failed for the From domain{} and the domain's policy is p={}",
                // The domain the failing result names, else the From's.
                failure
                    .domain
                    .or_else(|| facts.sender.map(|s| s.domain()))
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default(),
                policy.as_str()
            ),
            rule: Rule::Authentication { policy },
            smtp_reply: (action == Action::Reject).then(|| REPLY_DMARC.to_string()),
            notes,
        };
    }

    // 4. The model.
    let verdict = classify::verdict(probability, cutoffs);
    let action = match (verdict, settings.mode) {
        (Verdict::Spam, HandlingMode::Passthrough) => Action::Deliver,
        (Verdict::Spam, HandlingMode::Quarantine) => Action::SpamFolder,
        (Verdict::Spam, HandlingMode::Reject) => {
            spam_action(probability >= settings.reject_threshold)
        }
        _ => Action::Deliver,
    };
    let reason = match action {
        Action::Reject => format!(
            "spam probability {probability:.4} is at or above the reject threshold {}",
            settings.reject_threshold
        ),
        _ if verdict == Verdict::Spam => format!(
            "spam probability {probability:.4} is at or above the spam threshold {} ({} mode)",
            cutoffs.spam,
            settings.mode.as_str()
        ),
        _ => format!(
            "spam probability {probability:.4} is below the spam threshold {}",
            cutoffs.spam
        ),
    };
    Decision {
        action,
        verdict,
        rule: Rule::Model,
        smtp_reply: (action == Action::Reject).then(|| REPLY_SPAM.to_string()),
        reason,
        notes,
    }
}

/// "sender a@b.example" / "sending IP 192.0.2.7".
fn describe(on: MatchedOn, facts: &Facts<'_>) -> String {
    match on {
        MatchedOn::Sender => format!(
            "sender {}",
            facts.sender.map(ToString::to_string).unwrap_or_default()
        ),
        MatchedOn::Ip => format!(
            "sending IP {}",
            facts.client_ip.map(|ip| ip.to_string()).unwrap_or_default()
        ),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;

//! The wire conversions, in one place: requests' fields become library
//! types (refusals are [`Error::InvalidArgument`]s naming what to send
//! instead), library results become messages, and library errors become gRPC
//! statuses — here only, in `From<Error> for Status` (and `indexed`, which
//! prefixes a batch item's, and `internal_error`, a caught panic's). Messages are written for the person reading a
//! client log.

use std::net::IpAddr;

use tonic::Status;

use crate::decisions::DecisionRecord;
use crate::engine::{Envelope, Evaluated, ListRef, TrainOutcome, UsersPage};
use crate::error::Error;
use crate::policy::{Action, HandlingMode, ListKind, RuleKind, UserSettings};
use crate::proto;
use crate::types::{Label, MessageId, Owner, UserId, Verdict};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::MessageTooLarge { .. } | Error::LimitExceeded(_) => {
                Status::resource_exhausted(msg)
            }
            Error::NotLearned { .. } => Status::not_found(msg),
            // The click exists but is too old to undo: a precondition of
            // Forget (and of moving it), not a missing message.
            Error::BeyondUndoWindow { .. } => Status::failed_precondition(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            // Storage trouble is the server's, not the request's: the caller
            // may retry later or elsewhere. The change may or may not be
            // there: a write that reached storage but whose flush failed is
            // kept if storage later manages to write it. Every change is
            // idempotent by its message id, so a retry is safe.
            // A Redis click that its primary may hold but too few replicas
            // confirmed: not acknowledged, but not "not applied" either.
            Error::Storage(e) if e.is_not_replicated() => Status::unavailable(format!(
                "{msg}; the click was not acknowledged; it may have reached the primary; a retry is safe (it answers ALREADY_LEARNED if it was applied)"
            )),
            // Only the decision log's own cluster (`--decision-store`) is
            // down: the query can wait, the mail path does not.
            Error::Storage(e) if e.is_decision_store() => Status::unavailable(format!(
                "{msg}; only the decision log's cluster failed: Scores and clicks go on (decisions made meanwhile may be lost); retry the query later"
            )),
            Error::Storage(_) => Status::unavailable(format!(
                "{msg}; the request may not have been applied: retry later (a retry is safe; a click that was applied answers ALREADY_LEARNED)"
            )),
            Error::DiskFull => Status::unavailable(format!(
                "{msg}; the request may not have been applied: retry when the operator has freed space (a retry is safe)"
            )),
            Error::Reopening => Status::unavailable(msg),
            Error::NotOnStore { .. } => Status::failed_precondition(msg),
            // A damaged record: the message names it and what to do
            // (restore from backup, `chaff repair`); retrying will not help.
            Error::Corrupt { .. } | Error::Damaged { .. } => Status::data_loss(msg),
            Error::Open { .. } | Error::Locked { .. } => Status::internal(msg),
        }
    }
}

/// A call admission refused ([`crate::service::admission`]): a busy server
/// is RESOURCE_EXHAUSTED (the call was not worked on; retrying later or on
/// another replica is right), a passed deadline DEADLINE_EXCEEDED.
impl From<crate::service::admission::Refused> for Status {
    fn from(r: crate::service::admission::Refused) -> Self {
        use crate::service::admission::Refused;
        let msg = r.to_string();
        match r {
            Refused::QueueFull { .. } | Refused::WaitedTooLong { .. } => {
                Status::resource_exhausted(msg)
            }
            Refused::DeadlinePassed { .. } => Status::deadline_exceeded(msg),
        }
    }
}

/// A caller that is identified but may not do this: the message names the
/// scope or tenant rule, never a secret.
impl From<crate::auth::Denied> for Status {
    fn from(d: crate::auth::Denied) -> Self {
        Status::permission_denied(d.to_string())
    }
}

/// A request that failed by a bug (a panic, `catch_panic`): the caller is
/// told only that it is logged.
pub(super) fn internal_error() -> Status {
    Status::internal(crate::service::catch_panic::PANIC_MESSAGE)
}

/// LABEL_UNSPECIFIED (and unknown numbers) are refused, never guessed.
pub fn label_from_wire(value: i32) -> Result<Label, Error> {
    match proto::Label::try_from(value) {
        Ok(proto::Label::Spam) => Ok(Label::Spam),
        Ok(proto::Label::Ham) => Ok(Label::Ham),
        Ok(proto::Label::Unspecified) => Err(Error::InvalidArgument(
            "label is unspecified; set LABEL_SPAM or LABEL_HAM".into(),
        )),
        Err(_) => Err(Error::InvalidArgument(format!(
            "label {value} is unknown; set LABEL_SPAM or LABEL_HAM"
        ))),
    }
}

pub fn outcome_to_wire(o: TrainOutcome) -> proto::TrainOutcome {
    match o {
        TrainOutcome::Learned => proto::TrainOutcome::Learned,
        TrainOutcome::AlreadyLearned => proto::TrainOutcome::AlreadyLearned,
        TrainOutcome::Relearned => proto::TrainOutcome::Relearned,
    }
}

pub fn label_to_wire(label: Label) -> proto::Label {
    match label {
        Label::Spam => proto::Label::Spam,
        Label::Ham => proto::Label::Ham,
    }
}

pub fn action_to_wire(a: Action) -> proto::Action {
    match a {
        Action::Deliver => proto::Action::Deliver,
        Action::SpamFolder => proto::Action::SpamFolder,
        Action::Reject => proto::Action::Reject,
    }
}

pub fn mode_to_wire(m: HandlingMode) -> proto::HandlingMode {
    match m {
        HandlingMode::Passthrough => proto::HandlingMode::Passthrough,
        HandlingMode::Quarantine => proto::HandlingMode::Quarantine,
        HandlingMode::Reject => proto::HandlingMode::Reject,
    }
}

/// UNSPECIFIED means "keep the current mode" in UpdateUser.
pub fn mode_from_wire(value: i32) -> Result<Option<HandlingMode>, Error> {
    match proto::HandlingMode::try_from(value) {
        Ok(proto::HandlingMode::Unspecified) => Ok(None),
        Ok(proto::HandlingMode::Passthrough) => Ok(Some(HandlingMode::Passthrough)),
        Ok(proto::HandlingMode::Quarantine) => Ok(Some(HandlingMode::Quarantine)),
        Ok(proto::HandlingMode::Reject) => Ok(Some(HandlingMode::Reject)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "handling mode {value} is unknown; use PASSTHROUGH, QUARANTINE or REJECT"
        ))),
    }
}

pub fn list_kind_to_wire(k: ListKind) -> proto::ListKind {
    match k {
        ListKind::Allow => proto::ListKind::Allow,
        ListKind::Block => proto::ListKind::Block,
        ListKind::Trusted => proto::ListKind::Trusted,
    }
}

pub fn list_kind_from_wire(value: i32) -> Result<ListKind, Error> {
    match proto::ListKind::try_from(value) {
        Ok(proto::ListKind::Allow) => Ok(ListKind::Allow),
        Ok(proto::ListKind::Block) => Ok(ListKind::Block),
        Ok(proto::ListKind::Trusted) => Ok(ListKind::Trusted),
        _ => Err(Error::InvalidArgument(
            "list kind is unspecified or unknown; use ALLOW, BLOCK or TRUSTED".into(),
        )),
    }
}

pub fn settings_to_wire(s: &UserSettings) -> proto::UserSettings {
    proto::UserSettings {
        handling_mode: mode_to_wire(s.mode).into(),
        spam_threshold: s.spam_threshold,
        reject_threshold: s.reject_threshold,
        share_training: s.share_training,
    }
}

pub fn rule_to_wire(kind: RuleKind) -> proto::Rule {
    match kind {
        RuleKind::Model => proto::Rule::Model,
        RuleKind::BlockList => proto::Rule::BlockList,
        RuleKind::AllowList => proto::Rule::AllowList,
        RuleKind::Authentication => proto::Rule::Authentication,
    }
}

/// The explanation part of a logged (or just made) decision.
pub fn explanation_to_wire(r: &DecisionRecord) -> proto::Explanation {
    let feature = |f: &crate::decisions::Feature| proto::Feature {
        name: f.name.clone(),
        spam_probability: f.probability,
        contribution: f.contribution,
    };
    proto::Explanation {
        rule: rule_to_wire(r.rule).into(),
        reason: r.reason.clone(),
        notes: r.notes.clone(),
        spam_learned: r.spam_learned,
        ham_learned: r.ham_learned,
        spam_features: r.spam_features.iter().map(feature).collect(),
        ham_features: r.ham_features.iter().map(feature).collect(),
        sender: r.sender.clone().unwrap_or_default(),
        client_ip: r.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_share: r.user_share,
        shared_share: 1.0 - r.user_share,
    }
}

pub fn decision_to_wire(r: &DecisionRecord) -> proto::Decision {
    proto::Decision {
        time_unix_ms: i64::try_from(r.time_ms).unwrap_or(i64::MAX),
        message_id: r.message_id.to_string(),
        sender: r.sender.clone().unwrap_or_default(),
        client_ip: r.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        subject_digest: r.subject_digest.clone().unwrap_or_default(),
        spam_probability: r.spam_probability,
        verdict: verdict_to_wire(r.verdict).into(),
        action: action_to_wire(r.action).into(),
        smtp_reply: r.smtp_reply.clone().unwrap_or_default(),
        explanation: Some(explanation_to_wire(r)),
    }
}

pub fn verdict_to_wire(v: Verdict) -> proto::Verdict {
    match v {
        Verdict::Ham => proto::Verdict::Ham,
        Verdict::Unsure => proto::Verdict::Unsure,
        Verdict::Spam => proto::Verdict::Spam,
    }
}

/// A verdict as a server answered it, for clients (the CLI) that print
/// replies with the library's names; `None` for UNSPECIFIED or a value this
/// build does not know (a newer server).
pub fn verdict_from_wire(value: i32) -> Option<Verdict> {
    match proto::Verdict::try_from(value).ok()? {
        proto::Verdict::Ham => Some(Verdict::Ham),
        proto::Verdict::Unsure => Some(Verdict::Unsure),
        proto::Verdict::Spam => Some(Verdict::Spam),
        proto::Verdict::Unspecified => None,
    }
}

/// An action as a server answered it ([`verdict_from_wire`]'s reasons).
pub fn action_from_wire(value: i32) -> Option<Action> {
    match proto::Action::try_from(value).ok()? {
        proto::Action::Deliver => Some(Action::Deliver),
        proto::Action::SpamFolder => Some(Action::SpamFolder),
        proto::Action::Reject => Some(Action::Reject),
        proto::Action::Unspecified => None,
    }
}

/// The deciding rule as a server answered it ([`verdict_from_wire`]'s
/// reasons), so the CLI spells it as the decision log does
/// ([`RuleKind::as_str`]).
pub fn rule_from_wire(value: i32) -> Option<RuleKind> {
    match proto::Rule::try_from(value).ok()? {
        proto::Rule::Model => Some(RuleKind::Model),
        proto::Rule::BlockList => Some(RuleKind::BlockList),
        proto::Rule::AllowList => Some(RuleKind::AllowList),
        proto::Rule::Authentication => Some(RuleKind::Authentication),
        proto::Rule::Unspecified => None,
    }
}

/// Most items one ScoreBatch call may carry.
pub const MAX_BATCH: usize = 1000;

pub(super) fn check_batch(items: usize) -> Result<(), Error> {
    if items > MAX_BATCH {
        return Err(Error::InvalidArgument(format!(
            "batch has {items} items; the limit is {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// A batch item's error, with the item's index in front of its message.
pub(super) fn indexed(i: usize, e: Error) -> Status {
    let s = Status::from(e);
    Status::new(s.code(), format!("item {i}: {}", s.message()))
}

/// An optional message id field: empty means none given.
pub(super) fn optional_message_id(raw: String) -> Result<Option<MessageId>, Error> {
    match raw.is_empty() {
        true => Ok(None),
        false => MessageId::new(raw).map(Some),
    }
}

/// A Score request's envelope: the client IP (validated), message id and
/// whether it is a dry run.
pub(super) fn envelope(
    client_ip: &str,
    message_id: String,
    dry_run: bool,
) -> Result<Envelope, Error> {
    let client_ip = match client_ip.trim() {
        "" => None,
        ip => Some(ip.parse::<IpAddr>().map_err(|_| {
            Error::InvalidArgument(format!(
                "client_ip {ip:?} is not an IPv4 or IPv6 address; leave it empty to read \
                 Received-SPF instead"
            ))
        })?),
    };
    Ok(Envelope {
        client_ip,
        message_id: optional_message_id(message_id)?,
        dry_run,
    })
}

/// Exactly one of a user id and the operator flag names a list's owner.
/// `user` reads the user id (checked as the call takes it).
pub(super) fn list_ref(
    user_id: String,
    operator_wide: bool,
    kind: i32,
    user: impl FnOnce(String) -> Result<UserId, Error>,
) -> Result<ListRef, Error> {
    let kind = list_kind_from_wire(kind)?;
    let owner = match (user_id.is_empty(), operator_wide) {
        (false, false) => Owner::User(user(user_id)?),
        (true, true) => Owner::Operator,
        (false, true) => {
            return Err(Error::InvalidArgument(
                "set either user_id or operator_wide, not both".into(),
            ));
        }
        (true, false) => {
            return Err(Error::InvalidArgument(
                "user_id is empty; set it, or set operator_wide for the operator's list".into(),
            ));
        }
    };
    Ok(ListRef { owner, kind })
}

/// A ListUsers request's page size (0: the default) and page token (the
/// last user id of the previous page; empty: the first page).
pub(super) fn users_page_request(
    page_size: u32,
    page_token: String,
) -> Result<(usize, Option<UserId>), Error> {
    let max = crate::engine::MAX_PAGE_SIZE;
    let size = match page_size as usize {
        0 => crate::engine::DEFAULT_PAGE_SIZE,
        n if n > max => {
            return Err(Error::InvalidArgument(format!(
                "page_size is {n}; the limit is {max}"
            )));
        }
        n => n,
    };
    let after = if page_token.is_empty() {
        None
    } else {
        Some(UserId::stored(page_token).map_err(|e| {
            Error::InvalidArgument(format!(
                "page_token is not one ListUsers returned ({e}); leave it empty for the first page"
            ))
        })?)
    };
    Ok((size, after))
}

pub(super) fn users_page_to_wire(page: UsersPage) -> proto::ListUsersResponse {
    proto::ListUsersResponse {
        users: page
            .users
            .into_iter()
            .map(|u| proto::UserListing {
                user_id: u.user.to_string(),
                spam_learned: u.spam_learned,
                ham_learned: u.ham_learned,
                tokens: u.tokens,
                last_scored_unix_ms: u
                    .last_scored_ms
                    .map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            })
            .collect(),
        next_page_token: page.next_after.map(|u| u.to_string()).unwrap_or_default(),
    }
}

pub(super) fn score_response(evaluated: Evaluated) -> proto::ScoreResponse {
    let Evaluated {
        scored,
        decision,
        record,
        headers,
    } = evaluated;
    proto::ScoreResponse {
        action: action_to_wire(decision.action).into(),
        smtp_reply: decision.smtp_reply.unwrap_or_default(),
        headers: headers
            .into_iter()
            .map(|(name, value)| proto::HeaderField { name, value })
            .collect(),
        explanation: Some(explanation_to_wire(&record)),
        spam_probability: scored.probability,
        spam_log_odds: scored.log_odds,
        verdict: verdict_to_wire(scored.verdict).into(),
        tokens_known: scored.tokens_known,
        tokens_used: scored.tokens_used,
        limits_hit: scored
            .limits_hit
            .iter()
            .map(|l| l.as_str().to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_map_to_actionable_codes() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (
                Error::MessageTooLarge { size: 2, limit: 1 },
                Code::ResourceExhausted,
            ),
            (
                Error::NotLearned {
                    user: "u".into(),
                    message_id: "m".into(),
                },
                Code::NotFound,
            ),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::Corrupt { what: "x".into() }, Code::DataLoss),
            (
                Error::Damaged {
                    path: "d".into(),
                    what: "x".into(),
                },
                Code::DataLoss,
            ),
            (Error::DiskFull, Code::Unavailable),
            (Error::Reopening, Code::Unavailable),
            (
                Error::NotOnStore {
                    store: "redis",
                    what: "the decision log",
                },
                Code::FailedPrecondition,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn unspecified_and_unknown_labels_are_invalid() {
        assert_eq!(
            Status::from(label_from_wire(0).unwrap_err()).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Status::from(label_from_wire(99).unwrap_err()).code(),
            Code::InvalidArgument
        );
        assert_eq!(label_from_wire(1).unwrap(), Label::Spam);
        assert_eq!(label_from_wire(2).unwrap(), Label::Ham);
    }
}

//! The delivery use cases: score a message *and* decide what to do with
//! it (policy), keep settings and lists, answer support's "why".
//!
//! # Where the sending IP comes from (the trust boundary)
//!
//! The pipeline passes the connecting client's IP with each Score request;
//! that is the only IP chaff fully trusts. Without it, chaff reads
//! `client-ip=` (or the trailing IP) of the **topmost** `Received-SPF`
//! header — the one our own border MTA added last, as the provider's
//! support articles describe. Anything below it was written by other hosts
//! and may be forged, so it is never read for policy. The same holds for
//! `Authentication-Results` and `X-HE-DKIM-Result`: the topmost instance
//! wins. The border must strip or rename inbound copies of these headers
//! for that to be sound; docs/POLICY.md says so.

use std::net::IpAddr;

use super::{Engine, Scored, UserPolicy, UserSlot};
use crate::classify;
use crate::decisions::{self, DecisionRecord, Feature};
use crate::error::Error;
use crate::mail::sender::HeaderFacts;
use crate::policy::lists::{MAX_OPERATOR_ENTRIES, MAX_USER_ENTRIES};
use crate::policy::settings::SettingsUpdate;
use crate::policy::{self, Decision, Entry, Facts, List, ListKind, Lists, UserSettings};
use crate::tokenize::{Names, TokenId};
use crate::types::{MessageId, Owner, UserId};

/// Features shown per side in an explanation.
pub const TOP_FEATURES: usize = 5;

/// A scored message with its decision and explanation.
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub scored: Scored,
    pub decision: Decision,
    pub record: DecisionRecord,
    /// Headers the pipeline may add.
    pub headers: Vec<(String, String)>,
}

/// What a Score request says besides the message.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// The connecting client's IP, as the pipeline saw it.
    pub client_ip: Option<IpAddr>,
    /// The pipeline's id for the message (queue id); else derived.
    pub message_id: Option<MessageId>,
}

/// Which list, whose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRef {
    pub owner: Owner,
    pub kind: ListKind,
}

impl ListRef {
    fn check(&self) -> Result<(), Error> {
        if matches!(self.owner, Owner::User(_)) && self.kind == ListKind::Trusted {
            return Err(Error::InvalidArgument(
                "trusted senders are an operator-wide list; a user's own trusted senders are \
                 their allow entries"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Engine {
    /// The user's settings and lists from storage; `None` if never set.
    pub(super) fn load_policy(&self, user: &UserId) -> Result<Option<UserPolicy>, Error> {
        let settings = self.store.settings(user)?;
        let owner = Owner::User(user.clone());
        let allow = self.store.list_entries(&owner, ListKind::Allow)?;
        let block = self.store.list_entries(&owner, ListKind::Block)?;
        if settings.is_none() && allow.is_empty() && block.is_empty() {
            return Ok(None);
        }
        let (settings, consent) = settings.unwrap_or_else(|| (self.default_user_settings(), 0));
        Ok(Some(UserPolicy {
            settings,
            consent,
            allow: List::from_entries(allow),
            block: List::from_entries(block),
        }))
    }

    /// A spam click on this message would be on a trusted sender's mail:
    /// the From is on the operator's trusted list or the user's allow list,
    /// and the message authenticates for its domain (a forged From gets no
    /// discount).
    pub(super) fn is_trusted(&self, slot: &UserSlot, headers: &HeaderFacts) -> bool {
        let Some(from) = &headers.from else {
            return false;
        };
        let listed = self.operator.read().trusted.match_sender(from).is_some()
            || slot.policy.read().allow.match_sender(from).is_some();
        listed && headers.auth.authenticates(from.domain())
    }

    /// Scores a message, decides what to do with it, and logs the decision
    /// for support. The mail pipeline's call.
    pub fn evaluate(
        &self,
        user: &UserId,
        message: &[u8],
        envelope: &Envelope,
    ) -> Result<Evaluated, Error> {
        self.check_size(message)?;
        #[cfg(feature = "fault-injection")]
        if user.as_str() == crate::fault::PANIC_IN_ENGINE {
            // Under the user map's write lock, which every request takes.
            let _held = self.users.write();
            crate::fault::panic_if(user, crate::fault::PANIC_IN_ENGINE);
        }
        let tokenizer = &self.settings.tokenizer;
        let slot = self.slot(user)?;
        // Names are kept while reading only when a model could make some
        // feature worth naming: the user's own, or the shared model (a new
        // user with nothing learned and nothing shared has none).
        // The header facts and a derived message id come from the
        // tokenizer's parse (`Tokenizer::tokenize_with`), not two more.
        let max_header_bytes = tokenizer.limits().max_header_bytes;
        let needs_id = envelope.message_id.is_none();
        let also = |parsed: Option<&mail_parser::Message<'_>>| {
            let headers = HeaderFacts::read(message, parsed, max_header_bytes);
            let id = needs_id.then(|| super::derive_message_id_from(message, parsed));
            (headers, id)
        };
        let (tokens, names, (headers, derived_id)) = match slot.is_some() || self.anything_shared()
        {
            true => tokenizer.tokenize_named_with(message, also),
            false => {
                let (tokens, out) = tokenizer.tokenize_with(message, also);
                (tokens, Names::default(), out)
            }
        };
        let client_ip = envelope.client_ip.or(headers.auth.client_ip);

        let default_policy = self.default_policy();
        let policy_guard = slot.as_ref().map(|s| s.policy.read());
        let policy = policy_guard.as_deref().unwrap_or(&default_policy);
        let blend = self.blend(user, slot.as_deref(), &tokens.ids, Some(TOP_FEATURES));
        let (score, counts, strongest) = (blend.blended.score, blend.learned, blend.strongest);
        let operator = self.operator.read();
        let decision = policy::decide(
            score.probability,
            policy.settings.cutoffs(self.settings.params.ham_cutoff),
            &policy.settings,
            Lists {
                user_allow: &policy.allow,
                user_block: &policy.block,
                operator_allow: &operator.allow,
                operator_block: &operator.block,
            },
            &Facts {
                sender: headers.from.as_ref(),
                client_ip,
                auth: Some(&headers.auth),
            },
        );
        drop(operator);
        drop(policy_guard);

        let (spam_features, ham_features) = name_features(&names, strongest);
        let scored = Scored {
            probability: score.probability,
            log_odds: score.log_odds,
            verdict: decision.verdict,
            tokens_known: score.tokens_known,
            tokens_used: score.tokens_used,
            limits_hit: tokens.limits_hit,
            user_share: blend.blended.user_share,
        };
        // `derived_id` is there whenever the envelope has no id.
        let message_id = match (envelope.message_id.clone(), derived_id) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => super::derive_message_id(message),
        };
        let record = DecisionRecord {
            time_ms: decisions::now_ms(),
            user: user.clone(),
            message_id,
            sender: headers.from.as_ref().map(ToString::to_string),
            client_ip,
            subject_digest: headers.subject.as_deref().map(decisions::subject_digest),
            spam_probability: score.probability,
            verdict: decision.verdict,
            action: decision.action,
            rule: decision.rule.kind(),
            reason: decision.reason.clone(),
            notes: decision.notes.clone(),
            smtp_reply: decision.smtp_reply.clone(),
            spam_learned: counts.0,
            ham_learned: counts.1,
            spam_features,
            ham_features,
            user_share: blend.blended.user_share,
        };
        self.decisions.record(user, &record);
        let headers = decision.headers(score.probability);
        Ok(Evaluated {
            scored,
            decision,
            record,
            headers,
        })
    }

    /// The user's delivery settings (defaults if never set).
    pub fn user_settings(&self, user: &UserId) -> Result<UserSettings, Error> {
        Ok(match self.slot(user)? {
            Some(slot) => slot.policy.read().settings.clone(),
            None => self.default_user_settings(),
        })
    }

    /// Changes the user's settings durably; returns the new settings.
    ///
    /// Consent (`share_training`): turning it on starts a new consent id,
    /// so only clicks from then on are shared; turning it off removes the
    /// user's whole part of the shared model in the same atomic write (the
    /// ledger's entries under the old id then count as not shared).
    pub fn update_settings(
        &self,
        user: &UserId,
        update: &SettingsUpdate,
    ) -> Result<UserSettings, Error> {
        // The writer lock orders this against the user's other writes.
        let next = self.with_writer(user, |slot, _writer| {
            let (current, consent) = {
                let policy = slot.policy.read();
                (policy.settings.clone(), policy.consent)
            };
            let next = current.updated(update)?;
            let (consent, revoke) = match (current.share_training, next.share_training) {
                (false, true) => (self.store.generate_id()?, false),
                (true, false) => (0, true),
                _ => (consent, false),
            };
            self.store.put_settings(user, &next, consent, revoke)?;
            if revoke {
                self.drop_contribution(&Owner::User(user.clone()));
            }
            let mut policy = slot.policy.write();
            policy.settings = next.clone();
            policy.consent = consent;
            Ok(next)
        })?;
        // Durable before the reply; after the writer lock, so other
        // writers share the flush.
        self.store.flush()?;
        Ok(next)
    }

    /// Adds an entry; `Ok(false)` if it was already there.
    pub fn add_list_entry(&self, list: &ListRef, entry: &Entry) -> Result<bool, Error> {
        self.set_list_entry(list, entry, true)
    }

    /// Removes an entry; `Ok(false)` if it was not there.
    pub fn remove_list_entry(&self, list: &ListRef, entry: &Entry) -> Result<bool, Error> {
        self.set_list_entry(list, entry, false)
    }

    fn set_list_entry(&self, list: &ListRef, entry: &Entry, present: bool) -> Result<bool, Error> {
        list.check()?;
        match &list.owner {
            Owner::User(user) => {
                let changed = self.with_writer(user, |slot, _writer| {
                    if present {
                        let existing = self.store.list_entries(&list.owner, list.kind)?;
                        if !existing.contains(entry) {
                            check_room(existing.len(), MAX_USER_ENTRIES, list)?;
                        }
                    }
                    let changed =
                        self.store
                            .set_list_entry(&list.owner, list.kind, entry, present)?;
                    let mut policy = slot.policy.write();
                    let target = match list.kind {
                        ListKind::Allow => &mut policy.allow,
                        _ => &mut policy.block,
                    };
                    apply(target, entry, present);
                    Ok(changed)
                })?;
                Ok(changed)
            }
            Owner::Operator => {
                // Holding the write lock across the (rare) operator write
                // keeps memory and disk in the same order of changes.
                let mut operator = self.operator.write();
                if present {
                    let existing = self.store.list_entries(&list.owner, list.kind)?;
                    if !existing.contains(entry) {
                        check_room(existing.len(), MAX_OPERATOR_ENTRIES, list)?;
                    }
                }
                let changed = self
                    .store
                    .set_list_entry(&list.owner, list.kind, entry, present)?;
                let target = match list.kind {
                    ListKind::Allow => &mut operator.allow,
                    ListKind::Block => &mut operator.block,
                    ListKind::Trusted => &mut operator.trusted,
                };
                apply(target, entry, present);
                Ok(changed)
            }
        }
    }

    /// A list's entries, in stored order.
    pub fn list_entries(&self, list: &ListRef) -> Result<Vec<Entry>, Error> {
        list.check()?;
        self.store.list_entries(&list.owner, list.kind)
    }

    /// Logged decisions for a user, newest first: within `[since_ms,
    /// until_ms]`, optionally only from `sender` (address or domain) or
    /// with this Subject, at most `limit`.
    pub fn find_decisions(
        &self,
        user: &UserId,
        query: &DecisionQuery,
    ) -> Result<Vec<DecisionRecord>, Error> {
        let digest = query.subject.as_deref().map(decisions::subject_digest);
        self.store
            .find_decisions(user, query.since_ms, query.until_ms, query.limit, |json| {
                let r: DecisionRecord =
                    serde_json::from_slice(json).map_err(|e| Error::Corrupt {
                        what: format!("decision log record: {e}"),
                    })?;
                let wanted = query.sender.as_deref().is_none_or(|s| r.sent_by(s))
                    && digest
                        .as_deref()
                        .is_none_or(|d| r.subject_digest.as_deref() == Some(d));
                Ok(wanted.then_some(r))
            })
    }

    /// Decisions dropped because the log writer fell behind.
    pub fn decisions_dropped(&self) -> u64 {
        self.decisions.dropped()
    }
}

/// A support query over the decision log.
#[derive(Clone, Debug)]
pub struct DecisionQuery {
    pub since_ms: u64,
    pub until_ms: u64,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub limit: usize,
}

/// Decisions one query returns when it names no limit, and at most.
pub const DEFAULT_FIND_LIMIT: usize = 100;
pub const MAX_FIND_LIMIT: usize = 1000;

impl DecisionQuery {
    /// A query from a request's fields, checked against the limits: times
    /// in milliseconds since 1970 (negative refused; an `until_ms` of 0 means
    /// no end), a blank `sender` or empty `subject` means any, a `limit` of
    /// 0 means [`DEFAULT_FIND_LIMIT`], more than [`MAX_FIND_LIMIT`] is
    /// refused.
    pub fn new(
        since_ms: i64,
        until_ms: i64,
        sender: String,
        subject: String,
        limit: u32,
    ) -> Result<Self, Error> {
        let limit = match limit as usize {
            0 => DEFAULT_FIND_LIMIT,
            n if n > MAX_FIND_LIMIT => {
                return Err(Error::InvalidArgument(format!(
                    "limit {n} is over the maximum {MAX_FIND_LIMIT}; narrow the time window instead"
                )));
            }
            n => n,
        };
        if since_ms < 0 || until_ms < 0 {
            return Err(Error::InvalidArgument(
                "since_unix_ms and until_unix_ms are milliseconds since 1970 and cannot be negative"
                    .into(),
            ));
        }
        Ok(Self {
            since_ms: since_ms as u64,
            until_ms: match until_ms {
                0 => u64::MAX,
                t => t as u64,
            },
            sender: (!sender.trim().is_empty()).then_some(sender),
            subject: (!subject.is_empty()).then_some(subject),
            limit,
        })
    }
}

fn check_room(n: usize, max: usize, list: &ListRef) -> Result<(), Error> {
    if n >= max {
        return Err(Error::LimitExceeded(format!(
            "the {} list already holds {n} entries, the most allowed; remove some first",
            list.kind.as_str()
        )));
    }
    Ok(())
}

fn apply(list: &mut List, entry: &Entry, present: bool) {
    if present {
        list.insert(entry.clone());
    } else {
        list.remove(entry);
    }
}

/// The strongest features with their names, kept while the message was
/// read.
fn name_features(names: &Names, (spam, ham): classify::Strongest) -> (Vec<Feature>, Vec<Feature>) {
    let wanted: Vec<TokenId> = spam.iter().chain(&ham).map(|(id, _)| *id).collect();
    let mut named = names.of(&wanted).into_iter();
    let mut feature = |(id, f): &(TokenId, f64)| Feature {
        name: named
            .next()
            .flatten()
            .unwrap_or_else(|| format!("token:{:016x}", id.0)),
        probability: *f,
        contribution: (f / (1.0 - f)).ln(),
    };
    let spam = spam.iter().map(&mut feature).collect();
    let ham = ham.iter().map(&mut feature).collect();
    (spam, ham)
}

//! The user-admin use cases: what chaff knows of a user, their delivery
//! settings (and sharing consent), their and the operator's allow, block
//! and trusted lists, support's search of the decision log, and deleting a
//! user with everything they stored.

use super::{Engine, UserPolicy, UserSlot};
use crate::decisions::{self, DecisionRecord};
use crate::error::Error;
use crate::mail::sender::HeaderFacts;
use crate::policy::lists::{MAX_OPERATOR_ENTRIES, MAX_USER_ENTRIES};
use crate::policy::settings::SettingsUpdate;
use crate::policy::{Entry, List, ListKind, UserSettings};
use crate::store::Aggregate;
use crate::types::{Owner, UserId};
use tracing::warn;

/// What [`Engine::update_settings`] did: the user's settings now, and
/// whether the call changed them.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsUpdated {
    pub settings: UserSettings,
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub spam_learned: u64,
    pub ham_learned: u64,
    pub tokens: u64,
    pub tokenizer_version: u32,
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
    /// The user's model and policy from storage (each `None` if not
    /// stored): on a store shared by replicas in one round trip, which
    /// matters for the many users mail arrives for who never clicked.
    pub(super) fn load_user(
        &self,
        user: &UserId,
    ) -> Result<(Option<crate::store::LoadedModel>, Option<UserPolicy>), Error> {
        let Some(clicks) = self.store.shared_clicks() else {
            return Ok((self.store.load_model(user)?, self.load_policy(user)?));
        };
        let changes = clicks.changes_with_policy(user, 0, 0)?;
        let loaded = match changes.model {
            crate::store::ModelChanges::Fresh => None,
            crate::store::ModelChanges::Reload(loaded) => Some(loaded),
            crate::store::ModelChanges::Records {
                ops,
                version,
                entries,
            } => {
                let mut model = crate::classify::Model::default();
                for op in &ops {
                    op.apply(&mut model);
                }
                Some(crate::store::LoadedModel {
                    model,
                    last_seq: version,
                    journal_entries: entries,
                })
            }
        };
        let policy = changes
            .policy
            .filter(|p| p.version != 0 || p.settings.is_some() || !p.lists.is_empty())
            .map(|stored| self.policy_from(stored));
        Ok((loaded, policy))
    }

    /// The user's settings and lists from storage; `None` if never set.
    pub(super) fn load_policy(&self, user: &UserId) -> Result<Option<UserPolicy>, Error> {
        if !self.store.holds(Aggregate::Policy) {
            // Scoring on a store without settings and lists uses the
            // defaults; changing them is refused.
            return Ok(None);
        }
        if let Some(clicks) = self.store.shared_clicks() {
            // One read, with the version later refreshes compare.
            let stored = clicks.policy(user)?;
            if stored.version == 0 && stored.settings.is_none() && stored.lists.is_empty() {
                return Ok(None);
            }
            return Ok(Some(self.policy_from(stored)));
        }
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
            version: 0,
        }))
    }

    /// A user's policy as a store shared by replicas holds it.
    pub(super) fn policy_from(&self, stored: crate::store::StoredPolicy) -> UserPolicy {
        let (settings, consent) = stored
            .settings
            .clone()
            .unwrap_or_else(|| (self.default_user_settings(), 0));
        UserPolicy {
            settings,
            consent,
            allow: List::from_entries(stored.list(ListKind::Allow)),
            block: List::from_entries(stored.list(ListKind::Block)),
            version: stored.version,
        }
    }

    /// A spam click on this message would be on a trusted sender's mail:
    /// the From (the only one) is on the operator's trusted list or the
    /// user's allow list, and the message authenticates for its domain (a
    /// forged From gets no discount).
    pub(super) fn is_trusted(&self, slot: &UserSlot, headers: &HeaderFacts) -> bool {
        let Some(from) = headers.from.as_ref().filter(|_| headers.single_from()) else {
            return false;
        };
        let listed = self.operator.read().trusted.match_sender(from).is_some()
            || slot.policy.read().allow.match_sender(from).is_some();
        listed && headers.auth.authenticates(from.domain())
    }

    /// Folds ledger entries older than the undo window now (the decision
    /// log's sweep does it hourly): their tokens go, their counts stay.
    /// Returns how many were folded.
    pub fn fold_ledger(&self) -> Result<u64, Error> {
        self.store.fold_ledger()
    }

    /// What chaff knows of a user; zeros for a user it has never trained.
    pub fn user_summary(&self, user: &UserId) -> Result<UserSummary, Error> {
        let slot = self.slot(user)?;
        if let (Some(slot), Some(clicks)) = (&slot, self.store.shared_clicks()) {
            self.refresh(user, slot, clicks)?;
        }
        Ok(match slot {
            Some(slot) => {
                let m = slot.model.read();
                UserSummary {
                    spam_learned: m.spam_learned(),
                    ham_learned: m.ham_learned(),
                    tokens: m.token_count() as u64,
                    tokenizer_version: m.tokenizer_version(),
                }
            }
            None => UserSummary {
                spam_learned: 0,
                ham_learned: 0,
                tokens: 0,
                tokenizer_version: crate::tokenize::TOKENIZER_VERSION,
            },
        })
    }

    /// Deletes a user: model, ledger, settings, lists, logged decisions and
    /// their part of the shared model. Returns whether anything was stored.
    /// Durable before it returns; calling it again is harmless.
    pub fn delete_user(&self, user: &UserId) -> Result<bool, Error> {
        self.needs(Aggregate::Users)?;
        let existed = self.store.user_exists(user)? || self.users.read().contains_key(user);
        self.with_writer(user, |_, writer| {
            self.store.delete_user(user)?;
            #[cfg(feature = "fault-injection")]
            crate::fault::delete_step(user, "started");
            // Memory follows what sled holds before the slow, fallible rest;
            // still under the old slot's lock, so no new slot for this user
            // can write ledger entries that the rest would delete.
            writer.retired = true;
            // Delivered mail scored before the delete is not learned after.
            self.delivered.claim_user(user);
            self.drop_contribution(&Owner::User(user.clone()));
            if let Some(gone) = self.users.write().remove(user) {
                self.cache.release(&gone.cache);
            }
            // Decisions scored before the delete may still be queued for
            // the log: let the writer finish them, or it would write them
            // after their deletion.
            if !self.decisions.settle(std::time::Duration::from_secs(5)) {
                warn!(user = user.as_str(), "decision log did not settle in 5 s; decisions queued before the delete may remain");
            }
            self.store.finish_delete_user(user)?;
            #[cfg(feature = "fault-injection")]
            crate::fault::delete_step(user, "done");
            Ok(())
        })?;
        Ok(existed)
    }

    /// The user's delivery settings (defaults if never set).
    pub fn user_settings(&self, user: &UserId) -> Result<UserSettings, Error> {
        let slot = self.slot(user)?;
        if let (Some(slot), Some(clicks)) = (&slot, self.store.shared_clicks()) {
            self.refresh(user, slot, clicks)?;
        }
        Ok(match slot {
            Some(slot) => slot.policy.read().settings.clone(),
            None => self.default_user_settings(),
        })
    }

    /// Changes the user's settings durably; returns the new settings and
    /// whether they differ from the old ones or were stored for the first
    /// time (an empty update is a read,
    /// and the same values sent again change nothing: the service logs
    /// only a change at INFO, so a client that retries or loops does not
    /// fill the log).
    ///
    /// Consent (`share_training`): turning it on starts a new consent id,
    /// so only clicks from then on are shared; turning it off removes the
    /// user's whole part of the shared model in the same atomic write (the
    /// ledger's entries under the old id then count as not shared).
    pub fn update_settings(
        &self,
        user: &UserId,
        update: &SettingsUpdate,
    ) -> Result<SettingsUpdated, Error> {
        self.needs(Aggregate::Policy)?;
        if update.is_empty() {
            // A read: writing the settings as they are would store a user
            // that has nothing (ListUsers would list it, DeleteUser find it).
            return Ok(SettingsUpdated {
                settings: self.user_settings(user)?,
                changed: false,
            });
        }
        if let Some(clicks) = self.store.shared_clicks() {
            // Change what the store holds now (another replica may have
            // changed it): the consent id above all.
            let slot = self.slot_or_new(user)?;
            self.refresh(user, &slot, clicks)?;
        }
        // The writer lock orders this against the user's other writes.
        let next = self.with_writer(user, |slot, _writer| {
            let (current, consent) = {
                let policy = slot.policy.read();
                (policy.settings.clone(), policy.consent)
            };
            let next = current.updated(update)?;
            // The same values are a change when they are stored for the
            // first time: the user now exists (ListUsers lists them).
            let changed = next != current || self.store.settings(user)?.is_none();
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
            Ok(SettingsUpdated {
                settings: next,
                changed,
            })
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
        self.needs(Aggregate::Policy)?;
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
        self.needs(Aggregate::Policy)?;
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
        self.needs(Aggregate::Decisions)?;
        let digest = query.subject.as_deref().map(decisions::subject_digest);
        let mut found = Vec::new();
        self.store.find_decisions(
            user,
            query.since_ms,
            query.until_ms,
            query.limit,
            &mut |json| {
                let r: DecisionRecord =
                    serde_json::from_slice(json).map_err(|e| Error::Corrupt {
                        what: format!("decision log record: {e}"),
                    })?;
                let wanted = query.sender.as_deref().is_none_or(|s| r.sent_by(s))
                    && query.is_about(r.message_id.as_str())
                    && digest
                        .as_deref()
                        .is_none_or(|d| r.subject_digest.as_deref() == Some(d));
                if wanted {
                    found.push(r);
                }
                Ok(wanted)
            },
        )?;
        Ok(found)
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
    /// Only the message with this id ([`DecisionQuery::about`]).
    pub message_id: Option<String>,
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
        if until_ms != 0 && until_ms < since_ms {
            return Err(Error::InvalidArgument(format!(
                "until_unix_ms {until_ms} is before since_unix_ms {since_ms}: the window is empty; \
                 swap them, or leave until_unix_ms 0 for no end"
            )));
        }
        if sender.matches('@').count() > 1 {
            return Err(Error::InvalidArgument(format!(
                "sender {sender:?} has more than one @: pass an address or a domain"
            )));
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
            message_id: None,
        })
    }

    /// This query, narrowed to decisions about the message `id` (blank:
    /// any). A Message-ID pasted without its angle brackets matches the id
    /// recorded with them.
    pub fn about(mut self, id: &str) -> Self {
        let id = id.trim();
        self.message_id = (!id.is_empty()).then(|| id.to_string());
        self
    }

    /// Whether `recorded` (a decision's message id) is the message asked
    /// about, if one was.
    fn is_about(&self, recorded: &str) -> bool {
        self.message_id.as_deref().is_none_or(|want| {
            recorded == want
                || recorded
                    .strip_prefix('<')
                    .and_then(|r| r.strip_suffix('>'))
                    .is_some_and(|r| r == want)
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

//! **The scoring pipeline** — start reading chaff here.
//!
//! Every score chaff gives comes out of one function, [`Engine::pipeline`],
//! readable top to bottom:
//!
//! 1. **size** — refuse a message over the limit before any work;
//! 2. **model** — the user's slot (model, settings, lists), loaded from
//!    storage on first use; none for a user with nothing stored;
//! 3. **read** — tokenize the message, and for delivery also read the
//!    header facts policy needs and derive a message id, all from one parse;
//! 4. **blend** — the user's model blended with the shared model minus the
//!    user's own part (`classify::blend`); memory only, under read locks;
//! 5. **decide** — for delivery, the policy decision (lists, mode,
//!    thresholds: `policy::decide`); otherwise the verdict alone, read
//!    against the same user's cutoffs (`classify::verdict`);
//! 6. **record** — for delivery, the decision with its named top features,
//!    queued for the decision log that support searches;
//! 7. **learn** — for delivery to the inbox, the message learned as ham
//!    (a twentieth of a click's weight, more while the user's ham side is
//!    lighter than their spam side), for a user who has taught chaff
//!    something (`clicks.rs`, [`Engine::learn_delivered`]; off with
//!    `--learn-delivered false`).
//!
//! Callers pick how far it goes ([`Depth`]) and what they hand in
//! ([`Input`]): the Score and ScoreBatch RPCs run it to the end
//! ([`Engine::evaluate`], [`Engine::evaluate_batch`]); `chaff eval`'s
//! replay, the benches and the tests stop after the verdict
//! ([`Engine::score`]), on bytes or on a message read ahead
//! ([`Engine::read`]). The click path is in `clicks.rs`.
//!
//!
//! # Where the sending IP comes from (the trust boundary)
//!
//! The pipeline passes the connecting client's IP with each Score request;
//! that is the only IP chaff fully trusts. Without it, chaff reads
//! `client-ip=` (or the trailing IP) of the **topmost** `Received-SPF`
//! header — the one our own border MTA added last, as the provider's
//! support articles describe. Anything below it was written by other hosts
//! and may be forged, so it is never read for policy. The same holds for
//! `X-HE-DKIM-Result` (only the topmost instance is read) and for
//! `Authentication-Results` (every one bearing the border's authserv-id,
//! `--authserv-id`, else the topmost only): `Authentication::from_border`.
//! The border must strip or rename inbound copies of these headers for
//! that to be sound; docs/POLICY.md says so.

use std::borrow::Cow;
use std::net::IpAddr;

use super::{Engine, UserPolicy, UserSlot};
use crate::classify::{self, Blended, Cutoffs, Model, Strongest, blend, robinson};
use crate::decisions::{self, DecisionRecord, Feature};
use crate::error::Error;
use crate::mail::sender::HeaderFacts;
use crate::policy::{self, Action, Decision, Facts, Lists};
use crate::tokenize::{LimitHit, Names, TokenId, Tokens};
use crate::types::{MessageId, Owner, UserId, Verdict};

/// Features shown per side in an explanation.
pub const TOP_FEATURES: usize = 5;

/// A scored message.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub probability: f64,
    /// `logit(probability)` without rounding at the extremes; for ranking.
    pub log_odds: f64,
    pub verdict: Verdict,
    pub tokens_known: u32,
    pub tokens_used: u32,
    pub limits_hit: Vec<LimitHit>,
    /// How much of the decision came from the user's own statistics, in
    /// `[0, 1]`; the rest (`1 − user_share`) came from the shared model
    /// (see `classify::blend`). 1 when the shared model took no part.
    pub user_share: f64,
}

/// A scored message with its decision and explanation: what the Score RPC
/// answers.
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
    /// Decide as for a delivery but write nothing: no decision record, no
    /// delivered learning (support looking at a message again).
    pub dry_run: bool,
}

/// A message read once (tokens, the header facts policy needs, the id a
/// click without one gets), for scoring and learning it without reading it
/// again: [`Engine::read`].
#[derive(Clone, Debug)]
pub struct ReadMessage {
    pub(super) tokens: Tokens,
    pub(super) headers: HeaderFacts,
    pub(super) derived_id: MessageId,
}

/// What the pipeline is handed: the message's bytes, or what an earlier
/// step already read of it (so a replay that scores and then learns a
/// message tokenizes it once).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// The raw message (checked against the size limit).
    Raw(&'a [u8]),
    /// A message read by [`Engine::read`].
    Read(&'a ReadMessage),
    /// Tokens alone (no header facts): enough to score, not to deliver.
    Tokens(&'a Tokens),
}

impl<'a> From<&'a [u8]> for Input<'a> {
    fn from(message: &'a [u8]) -> Self {
        Input::Raw(message)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Input<'a> {
    fn from(message: &'a [u8; N]) -> Self {
        Input::Raw(message)
    }
}

impl<'a> From<&'a Vec<u8>> for Input<'a> {
    fn from(message: &'a Vec<u8>) -> Self {
        Input::Raw(message)
    }
}

impl<'a> From<&'a ReadMessage> for Input<'a> {
    fn from(message: &'a ReadMessage) -> Self {
        Input::Read(message)
    }
}

/// How far the pipeline runs.
#[derive(Clone, Copy, Debug)]
pub enum Depth<'a> {
    /// Stop at the verdict (steps 1–5 without policy): replays, benches.
    Score,
    /// Run to the end — policy decision, explanation, decision log — for
    /// mail arriving with this envelope: the Score RPC.
    Deliver(&'a Envelope),
}

/// What one run of the pipeline produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scored: Scored,
    /// The decision, record and headers: with [`Depth::Deliver`] only.
    pub delivery: Option<Delivery>,
    /// The user's own log-odds when nothing shared took part, which a
    /// click right after can reuse as its learn weight (`clicks.rs`,
    /// `score_then_train`), unless the user's model was one-sided: then
    /// the score read the one-sided `s` and the click is scored again
    /// with the body's (`classify::learn_weight_given`).
    pub(super) user_alone_log_odds: Option<f64>,
}

/// What delivery adds to a score.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub decision: Decision,
    pub record: DecisionRecord,
    pub headers: Vec<(String, String)>,
}

/// The message as step 3 read it.
struct Read<'m> {
    tokens: Cow<'m, Tokens>,
    /// Feature names, kept only when an explanation may name some.
    names: Names,
    headers: Cow<'m, HeaderFacts>,
    /// The id a message without the envelope's gets (delivery only).
    derived_id: Option<Cow<'m, MessageId>>,
}

impl Engine {
    /// The scoring pipeline (module docs): the one place a score is made.
    /// Never fails on the message's content; only on size and storage.
    pub fn pipeline(
        &self,
        user: &UserId,
        input: Input<'_>,
        depth: Depth<'_>,
    ) -> Result<Outcome, Error> {
        // 1. Size.
        if let Input::Raw(message) = input {
            self.check_size(message)?;
        }
        #[cfg(feature = "fault-injection")]
        if user.as_str() == crate::fault::PANIC_IN_ENGINE {
            // Under the user map's write lock, which every request takes.
            let _held = self.users.write();
            crate::fault::panic_if(user, crate::fault::PANIC_IN_ENGINE);
        }

        // 2. Model: the user's slot, `None` for a user with nothing stored;
        // on a store shared by replicas, brought up to date first (one
        // round trip, `replicas.rs`).
        let slot = self.slot(user)?;
        if let Some(clicks) = self.store.shared_clicks() {
            if let Some(slot) = &slot {
                self.refresh(user, slot, clicks)?;
            }
            // The shared model and the operator's lists: polled, at most
            // every so often, never waited for (`replicas.rs`).
            self.poll_shared(clicks, false)?;
        }

        // 3. Read.
        let envelope = match depth {
            Depth::Score => None,
            Depth::Deliver(envelope) => Some(envelope),
        };
        let read = self.read_for(input, envelope, slot.is_some());

        // 4. Blend, under the user's policy read lock (its cutoffs and
        // lists are read against this very model state).
        let default_policy;
        let policy_guard = slot.as_ref().map(|s| s.policy.read());
        let policy: &UserPolicy = match policy_guard.as_deref() {
            Some(policy) => policy,
            None => {
                default_policy = self.default_policy();
                &default_policy
            }
        };
        let cutoffs = policy.settings.cutoffs(self.settings.params.ham_cutoff);
        let top = envelope.map_or(0, |_| TOP_FEATURES);
        let blend = self.blend(user, slot.as_deref(), &read.tokens, top);
        let score = blend.blended.score;
        let user_alone_log_odds = blend.user_alone.then_some(score.log_odds);
        let scored = |verdict| Scored {
            probability: score.probability,
            log_odds: score.log_odds,
            verdict,
            tokens_known: score.tokens_known,
            tokens_used: score.tokens_used,
            limits_hit: read.tokens.limits_hit.clone(),
            user_share: blend.blended.user_share,
        };

        // 5. Decide: the verdict alone, when that is all the caller wants.
        let Some(envelope) = envelope else {
            return Ok(Outcome {
                scored: scored(classify::verdict(score.probability, cutoffs)),
                delivery: None,
                user_alone_log_odds,
            });
        };
        let headers = &read.headers;
        let client_ip = envelope.client_ip.or(headers.auth.client_ip);
        let operator = self.operator.read();
        let decision = policy::decide(
            score.probability,
            cutoffs,
            &policy.settings,
            Lists {
                user_allow: &policy.allow,
                user_block: &policy.block,
                operator_allow: &operator.allow,
                operator_block: &operator.block,
            },
            &Facts {
                sender: headers.from.as_ref(),
                other_senders: &headers.other_from,
                single_from: headers.single_from(),
                envelope_sender: headers.auth.envelope_from.as_ref(),
                client_ip,
                auth: Some(&headers.auth),
            },
        );
        drop(operator);
        drop(policy_guard);
        let scored = scored(decision.verdict);

        // 6. Record: the decision and its strongest features, for support.
        let (spam_features, ham_features) = name_features(&read.names, blend.strongest);
        let delivered_id = read.derived_id.as_deref().cloned();
        let message_id = match (&envelope.message_id, read.derived_id) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => id.into_owned(),
            // Only bare tokens have no bytes to derive an id from.
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "a delivery needs the message or its read, not bare tokens".into(),
                ));
            }
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
            spam_learned: blend.learned.0,
            ham_learned: blend.learned.1,
            spam_features,
            ham_features,
            user_share: blend.blended.user_share,
        };
        if !envelope.dry_run {
            self.decisions.record(user, &record);
        }

        // 7. Learn: mail delivered to the inbox is learned as ham, lightly,
        // under the id a click on it would derive (`clicks.rs`,
        // `learn_delivered`), after the decision so the score never saw it.
        // Only a message with something in it (an empty one would count as a
        // learned ham and teach nothing, as Train refuses it), and only what
        // the model itself calls no spam: passthrough delivers
        // spam too, and an allow entry (whose sender authentication rests
        // on headers) delivers what the model calls spam; learning either
        // as ham would teach the model to pass that spam. The server only
        // queues it for its background learner (`delivered.rs`); replays
        // learn it here.
        let headers = decision.headers(score.probability);
        if decision.action == Action::Deliver
            && decision.verdict != Verdict::Spam
            && classify::verdict(score.probability, cutoffs) != Verdict::Spam
            && !read.tokens.ids.is_empty()
            && !envelope.dry_run
            && self.settings.learn_delivered
            && slot.is_some()
            && blend.learned != (0, 0)
            && let Some(id) = delivered_id
        {
            self.learn_delivered_soon(user, read.tokens.into_owned().ids, id);
        }
        Ok(Outcome {
            scored,
            delivery: Some(Delivery {
                decision,
                record,
                headers,
            }),
            user_alone_log_odds,
        })
    }

    /// Step 3: what the pipeline needs of the message, read once. For
    /// delivery (`envelope`) the header facts and, when the envelope has no
    /// id, a derived one come from the tokenizer's parse
    /// (`Tokenizer::tokenize_with`), not two more; names are kept only when
    /// a model could make some feature worth naming (`known_user`, or
    /// anything shared).
    fn read_for<'m>(
        &self,
        input: Input<'m>,
        envelope: Option<&Envelope>,
        known_user: bool,
    ) -> Read<'m> {
        let tokenizer = &self.settings.tokenizer;
        match (input, envelope) {
            (Input::Raw(message), None) => Read {
                tokens: Cow::Owned(tokenizer.tokenize(message)),
                names: Names::default(),
                headers: Cow::Owned(HeaderFacts::default()),
                derived_id: None,
            },
            (Input::Raw(message), Some(envelope)) => {
                let max_header_bytes = tokenizer.limits().max_header_bytes;
                // A delivery may be learned under the derived id even when
                // the envelope names the message (step 7).
                let needs_id = envelope.message_id.is_none() || self.settings.learn_delivered;
                let also = |parsed: Option<&mail_parser::Message<'_>>| {
                    let border = &self.settings.border;
                    let headers = HeaderFacts::read(message, parsed, max_header_bytes, border);
                    let id = needs_id.then(|| derive_message_id_from(message, parsed));
                    (headers, id)
                };
                let (tokens, names, (headers, id)) = if known_user || self.anything_shared() {
                    tokenizer.tokenize_named_with(message, also)
                } else {
                    let (tokens, out) = tokenizer.tokenize_with(message, also);
                    (tokens, Names::default(), out)
                };
                Read {
                    tokens: Cow::Owned(tokens),
                    names,
                    headers: Cow::Owned(headers),
                    derived_id: id.map(Cow::Owned),
                }
            }
            // Read ahead: no names were kept (features are named by id).
            (Input::Read(message), _) => Read {
                tokens: Cow::Borrowed(&message.tokens),
                names: Names::default(),
                headers: Cow::Borrowed(&message.headers),
                derived_id: Some(Cow::Borrowed(&message.derived_id)),
            },
            // Tokens alone: enough for a verdict; no header facts, no id.
            (Input::Tokens(tokens), _) => Read {
                tokens: Cow::Borrowed(tokens),
                names: Names::default(),
                headers: Cow::Owned(HeaderFacts::default()),
                derived_id: None,
            },
        }
    }

    /// Scores a message for its recipient without delivery policy: the
    /// pipeline to the verdict. A wrapper because replays, benches and
    /// tests want only the [`Scored`].
    pub fn score<'a>(&self, user: &UserId, message: impl Into<Input<'a>>) -> Result<Scored, Error> {
        Ok(self.pipeline(user, message.into(), Depth::Score)?.scored)
    }

    /// Scores a message, decides what to do with it, and logs the decision
    /// for support: the pipeline to the end, as the Score RPC runs it. A
    /// wrapper that names the result the RPC answers with.
    pub fn evaluate(
        &self,
        user: &UserId,
        message: &[u8],
        envelope: &Envelope,
    ) -> Result<Evaluated, Error> {
        let outcome = self.pipeline(user, Input::Raw(message), Depth::Deliver(envelope))?;
        let Delivery {
            decision,
            record,
            headers,
        } = outcome
            .delivery
            .expect("the pipeline run with Depth::Deliver returns the delivery");
        Ok(Evaluated {
            scored: outcome.scored,
            decision,
            record,
            headers,
        })
    }

    /// [`Engine::evaluate`] for many messages: the pipeline over rayon's
    /// pool, one task per message (ScoreBatch); results in input order. On
    /// failure, the index of a failed item and its error.
    pub fn evaluate_batch(
        &self,
        items: &[(UserId, Vec<u8>, Envelope)],
    ) -> Result<Vec<Evaluated>, (usize, Error)> {
        use rayon::prelude::*;
        items
            .par_iter()
            .enumerate()
            .map(|(i, (user, message, env))| self.evaluate(user, message, env).map_err(|e| (i, e)))
            .collect()
    }

    /// Step 3 on its own, for a replay that scores and then learns each
    /// message ([`Engine::score`] with [`Input::Read`], then
    /// `Engine::train_read`) without tokenizing it twice. Needs no user and
    /// takes no lock, so many messages can be read in parallel.
    pub fn read(&self, message: &[u8]) -> Result<ReadMessage, Error> {
        self.check_size(message)?;
        let tokenizer = &self.settings.tokenizer;
        let max_header_bytes = tokenizer.limits().max_header_bytes;
        let (tokens, (headers, derived_id)) = tokenizer.tokenize_with(message, |parsed| {
            (
                HeaderFacts::read(message, parsed, max_header_bytes, &self.settings.border),
                derive_message_id_from(message, parsed),
            )
        });
        Ok(ReadMessage {
            tokens,
            headers,
            derived_id,
        })
    }

    /// Step 1: refuses a message over the size limit.
    pub(super) fn check_size(&self, message: &[u8]) -> Result<(), Error> {
        let limit = self.settings.max_message_bytes;
        if message.len() > limit {
            return Err(Error::MessageTooLarge {
                size: message.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Step 4: blends the user's model (empty when `slot` is `None`) with
    /// the shared model minus the user's own part, with the `top` strongest
    /// features per side. Reads memory only.
    pub(super) fn blend(
        &self,
        user: &UserId,
        slot: Option<&UserSlot>,
        tokens: &Tokens,
        top: usize,
    ) -> BlendOut {
        let params = &self.settings.params;
        let empty = Model::default();
        let guard = slot.map(|s| s.model.read());
        let model = guard.as_deref().unwrap_or(&empty);
        let shared = self.shared.read();
        let who;
        let prior = if shared.total().weights() == (0, 0) {
            // Nothing shared: skip building the contributor key.
            shared.prior_for(None)
        } else {
            who = Owner::User(user.clone());
            shared.prior_for(Some(&who))
        };
        let (blended, strongest) =
            blend::score_and_strongest(model, &prior, &tokens.ids, &tokens.header, params, top);
        BlendOut {
            blended,
            strongest,
            learned: (model.spam_learned(), model.ham_learned()),
            user_alone: prior.is_empty(),
        }
    }

    /// One message scored by the user's model alone, the shared model
    /// alone and their blend, from one tokenization (see [`ScoreViews`]):
    /// the blend is the pipeline's; the other two are comparisons for the
    /// multi-user replay (`eval::multi`) that production never makes.
    pub fn score_views(&self, user: &UserId, message: &[u8]) -> Result<ScoreViews, Error> {
        self.check_size(message)?;
        let tokens = self.settings.tokenizer.tokenize(message);
        let blended = self.score(user, Input::Tokens(&tokens))?;
        let params = &self.settings.params;
        let slot = self.slot(user)?;
        let cutoffs = self.cutoffs(slot.as_deref());
        let empty = Model::default();
        let guard = slot.as_ref().map(|s| s.model.read());
        let model = guard.as_deref().unwrap_or(&empty);
        let shared = self.shared.read();
        let who = Owner::User(user.clone());
        let prior = shared.prior_for(Some(&who));
        let user_only = Blended {
            score: robinson::score_parts(model, &tokens.ids, &tokens.header, params),
            user_share: 1.0,
        };
        let shared_only = Blended {
            score: blend::score_shared(&prior, &tokens.ids, &tokens.header, params),
            user_share: 0.0,
        };
        Ok(ScoreViews {
            user_only: scored(user_only, cutoffs, tokens.limits_hit.clone()),
            shared_only: scored(shared_only, cutoffs, tokens.limits_hit.clone()),
            blended,
        })
    }

    /// The cutoffs the verdicts of the user in `slot` are read against
    /// (the defaults' for a user with no slot), as the pipeline reads them.
    fn cutoffs(&self, slot: Option<&UserSlot>) -> Cutoffs {
        let ham = self.settings.params.ham_cutoff;
        match slot {
            Some(slot) => slot.policy.read().settings.cutoffs(ham),
            None => self.default_user_settings().cutoffs(ham),
        }
    }
}

/// One message scored three ways from one tokenization, for comparing the
/// user's own model, the shared model and their blend (multi-user eval).
/// `shared_only` and `blended` use the shared model *minus this user's own
/// contribution*, as production scoring does.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreViews {
    /// The user's model alone: exactly what chaff scored before sharing.
    pub user_only: Scored,
    /// The shared model alone (everyone else's capped contributions and
    /// the seed), as if it were this user's model; `user_share` is 0.
    pub shared_only: Scored,
    /// What [`Engine::score`] returns.
    pub blended: Scored,
}

/// A message's blended score, its strongest features and the user's learn
/// counts, read under one pair of read locks.
pub(super) struct BlendOut {
    pub blended: Blended,
    pub strongest: Strongest,
    pub learned: (u64, u64),
    /// Nothing shared took part: `blended` is the user's model alone
    /// (`robinson::score`, bit for bit).
    pub user_alone: bool,
}

/// A [`Scored`] from a blended score, its verdict read against `cutoffs`.
fn scored(b: Blended, cutoffs: Cutoffs, limits_hit: Vec<LimitHit>) -> Scored {
    Scored {
        probability: b.score.probability,
        log_odds: b.score.log_odds,
        verdict: classify::verdict(b.score.probability, cutoffs),
        tokens_known: b.score.tokens_known,
        tokens_used: b.score.tokens_used,
        limits_hit,
        user_share: b.user_share,
    }
}

/// The strongest features with their names, kept while the message was
/// read.
fn name_features(names: &Names, (spam, ham): Strongest) -> (Vec<Feature>, Vec<Feature>) {
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

/// How far into a message its Message-ID is looked for when the tokenizer
/// did not parse the header block (it was longer than the header cap, or
/// not a header block): the default header cap. A constant, not the
/// configured cap, so a message's derived id never depends on settings;
/// without it a 4 MiB header block was parsed whole on every Score (30 ms,
/// docs/PERFORMANCE.md "Hostile mail at scale").
pub const MESSAGE_ID_SEARCH_BYTES: usize = 256 * 1024;

/// The first [`MESSAGE_ID_SEARCH_BYTES`] of `message`, ended after its last
/// whole line, so a field cut in the middle is not read as a shorter id.
fn id_search_prefix(message: &[u8]) -> &[u8] {
    if message.len() <= MESSAGE_ID_SEARCH_BYTES {
        return message;
    }
    let head = &message[..MESSAGE_ID_SEARCH_BYTES];
    match head.iter().rposition(|&b| b == b'\n') {
        Some(end) => &head[..=end],
        None => head,
    }
}

/// The id a click is recorded under when the caller gives none: the
/// Message-ID header as `<id>` (within the first [`MESSAGE_ID_SEARCH_BYTES`]
/// when the header block is longer than the tokenizer reads), else an
/// xxh3-128 digest of the bytes.
pub fn derive_message_id(message: &[u8]) -> MessageId {
    derive_message_id_from(message, None)
}

/// [`derive_message_id`], from the tokenizer's parse of `message` when
/// there is one (`Tokenizer::tokenize_with`), so its header block is not
/// parsed again.
pub fn derive_message_id_from(
    message: &[u8],
    parsed: Option<&mail_parser::Message<'_>>,
) -> MessageId {
    // The tokenizer's parser: the default one parses every Received header
    // into a structure, a large share of reading a header block.
    let parse_now;
    let headers = match parsed {
        Some(m) => Some(m),
        None => {
            parse_now = crate::tokenize::message_parser().parse_headers(id_search_prefix(message));
            parse_now.as_ref()
        }
    };
    let from_header = headers
        .and_then(|m| m.message_id().map(|id| format!("<{}>", id.trim())))
        .and_then(|id| MessageId::new(id).ok());
    from_header.unwrap_or_else(|| {
        let digest = xxhash_rust::xxh3::xxh3_128(message);
        MessageId::new(format!("xxh3:{digest:032x}")).expect("a digest is a valid id")
    })
}

//! The classifier math, in one place.
//!
//! # Per-token probability (Graham 2002, Robinson 2003)
//!
//! For a token seen in `b` of `nspam` learned spam and `g` of `nham` learned
//! ham, Graham's estimate normalises by class size so a user who reports far
//! more spam than ham is not biased towards spam:
//!
//! ```text
//! p(w) = (b / nspam) / (b / nspam + g / nham)
//! ```
//!
//! Robinson's correction shrinks that towards a prior `x` with strength `s`,
//! so a token seen once is weak evidence and a token seen a hundred times is
//! strong:
//!
//! ```text
//! f(w) = (s·x + n·p(w)) / (s + n),   n = b + g
//! ```
//!
//! Tokens the user has never seen get `f = x` and are dropped by the
//! significance filter below (Robinson, "A Statistical Approach to the Spam
//! Problem", Linux Journal 2003).
//!
//! # Combining (Fisher / Robinson chi-square, as in SpamBayes and bogofilter)
//!
//! Only tokens with `|f − 0.5| ≥ min_dev` count, at most `max_tokens` of the
//! most extreme. With `n` tokens left:
//!
//! ```text
//! S = 1 − C⁻¹(−2 Σ ln(1 − f), 2n)    evidence for spam
//! H = 1 − C⁻¹(−2 Σ ln f,       2n)    evidence for ham
//! I = (1 + S − H) / 2                 the reported spam probability
//! ```
//!
//! where `C⁻¹(χ², ν)` is the chi-square survival function (upper tail) with
//! `ν` degrees of freedom. `I` is near 1 when spam evidence dominates, near 0
//! for ham, and near 0.5 both when there is no evidence and when the evidence
//! conflicts — which is why 0.5 means "unsure", not "coin flip".
//!
//! # Never-seen tokens, and a class the user never clicked
//!
//! Graham's normalisation divides by each class's size, so with no ham
//! learned (`nham = 0`) every token seen in spam gets `p = 1`: after one
//! *Spam* click every later message that shares a word or a relay header
//! with it scored as certain spam — and most users only ever click *Spam*.
//! The known tokens cannot tell such a ham from a copy of the clicked spam;
//! what differs is how much of the message the model has never seen. So
//! tokens the model has never seen are evidence too, in proportion to how
//! unevenly it knows the two classes ([`unknown_probability`]):
//!
//! ```text
//! f_unseen = (1 + ν_s − ν_h) / 2,   ν = 1 / (N + 1)
//! ```
//!
//! `ν` is Laplace's estimate of the chance that a class's next message is
//! unlike all `N` the user learned of it. With both classes learned (a few
//! messages each) `f_unseen` is within the significance dead zone and
//! changes nothing; with spam and no ham it is near 0 — a token that many
//! spams never showed is more likely the ham's. Two limits keep absence
//! honest ([`combine_with_unknowns`]): novel tokens arrive together (a new
//! topic, a new campaign), so they count at most `unknown_cap` times as
//! often as the message's significant known tokens; and they can cancel
//! what the known tokens say but never reverse it (a flipped sign gives the
//! neutral 0.5). A message unlike anything learned stays neutral; a message
//! like the learned spam still scores as spam (docs/ACCURACY.md, "One-sided
//! clickers"). While one class is empty, every known token's ratio is 1
//! (or 0) by construction, so it is shrunk with Robinson's own `s` = 1
//! ([`strength`]): one clicked spam does not make the header lines all
//! mail has certain spam. While the ham side is a few delivered messages against
//! many clicked spam, `ν` calls ham known too early, and the estimate is
//! also capped by Heaps' law over the words each side has seen (its token
//! mass, [`Model::mass`]), fading out as the user clicks ham
//! ([`unknown_probability`]).
//!
//! The known tokens need the same doubt. A ham side of a few delivered
//! messages may be a few spam the model let through (a mailbox that
//! opens with spam, a user who clicks only some of it), and then every
//! everyday word those lack reads as certain spam against the clicked
//! spam, and the user's ham goes to a spam folder they never open, so
//! the ham side never grows. So while the ham side is delivered mail,
//! each token's ham rate starts from the token's pooled rate, with a
//! weight that fades as ham messages are learned ([`ham_prior_weight`]):
//!
//! ```text
//! r_h = (g + a·P) / (nham + a),   P = (b + g) / (nspam + nham)
//! a = A·K / (K + H) messages, times the delivered share of the ham
//!     weight, at most the ham side's own weight
//! ```
//!
//! A user whose ham is clicked scores as without it (docs/ACCURACY.md,
//! "Session 29").
//!
//! # Header and body
//!
//! Pooling every significant token in one statistic lets the part with
//! more tokens decide: a body's words and word pairs outnumber the
//! header's tokens ten to one, so a list's ham relaying spam text (the
//! list's relays, dates and headers all hammy, the text all spammy) scored
//! as certain spam. So the header's tokens can be combined apart
//! ([`Params::parts`]; `Tag::in_header`: sender,
//! relays, authentication, mailer, header names, MIME structure) and the
//! body's (text, Subject, links), each part with its
//! own never-seen tokens ([`combine_with_unknowns`]), and the two parts'
//! probabilities are then combined as two tokens by the same chi-square
//! rule ([`Parts::Fisher`], computed from their log-odds so nothing
//! saturates): two parts that agree give a confident score, a confident
//! disagreement gives unsure, a neutral part leaves the other in charge.
//! A header with fewer than `header_full_at` (10) significant tokens is
//! no expert — Enron's corpora keep only the Subject line — so its
//! two-part result is mixed with the pooled score in proportion
//! (`I = a·I_parts + (1 − a)·I_pooled`, `a = n_header / 10`). Measured on
//! five corpora (docs/ACCURACY.md, "Header and body evidence"; with the
//! tokenizer's header extras on), it wins every measure on trec06p and
//! spamassassin with every message or every error learned and leaves
//! Enron unchanged, but under `typical` and `spam-only` clicks it misses
//! far more spam at 0.1 % ham on trec06p (30.7 % and 91.1 % against
//! 21.4 % and 52.7 % today): with few ham learned, the header's equal
//! vote is a vote on little evidence. So combining apart on every
//! message is not the default; `chaff eval --header-share fisher
//! --header-veto-at 0 --header-extras` reproduces the measurements.
//!
//! Why it lost: chi-square over two "tokens" is confident only when both
//! are, so a message's log-odds is capped at about twice its weaker
//! part's, and spam with a plain header ranked by its header (trec06p
//! `typical`: the spam median fell from log-odds 16.8 to 6.7, below the
//! quarantine-digest ham at the top). The veto
//! ([`Params::header_veto_at`]) keeps the pooled score except where
//! header and body disagree, each confidently: the list ham relaying spam
//! text is still unsure, everything else ranks as pooled. Without the
//! header extras it is better or within a few messages of the pooled
//! default on all five corpora in every protocol (docs/ACCURACY.md, "The
//! header's veto"); with them, a spam-only clicker's relays come back as
//! spam evidence. Of 3 to 7, 5 helps or ties within a few messages on
//! all five corpora in five protocols (issue #19, fourth session); it is
//! the default since session 15, when the statistics came to share their
//! logarithms ([`Split::combine`]) and its cost on real mail fell from
//! 6–7 % of score time to about 3 % (docs/PERFORMANCE.md, "The header's
//! veto: its cost"). The header's statistic is computed first (tens of
//! tokens); the body's only when the header is confident enough to veto
//! and the body's sums lean the other way.
//!
//! The default also gives header tokens their own, weaker prior
//! ([`Params::header_strength`] 0.02 against `strength` 0.1), which ranks
//! trec06p and spamassassin better, but only as far as the user has
//! clicked ham ([`Params::header_strength_ramp`], 10 messages' worth): a
//! user who has clicked no ham, whose ham side is only delivered mail,
//! scores with `strength` everywhere (docs/ACCURACY.md, "Session 14" and
//! "Session 15"). [`Params::header_trust_at`] (the two-part result moved
//! towards the pooled one in log-odds while the model's thinner class is
//! small) is the other knob tried.
//!
//! # Log-odds, so the extremes keep their order
//!
//! For strongly spammy mail `1 − I` is far below `f64`'s resolution near 1,
//! so `I` rounds to exactly 1.0 and hundreds of messages tie — a ham that
//! scores 1.0 is then indistinguishable from the spam around it. With
//! `Q = C⁻¹` and `P = 1 − Q` for each statistic, `2I = Q_ham + P_spam` and
//! `2(1 − I) = Q_spam + P_ham`; we compute all four tails in log space (the
//! Poisson series of `C⁻¹`, summed with log-sum-exp) and report
//!
//! ```text
//! log_odds = ln(2I) − ln(2(1 − I)) = logit(I)
//! ```
//!
//! which is `I` itself, monotonically transformed, without the rounding;
//! `I` is then `1 / (1 + e^{−log_odds})`. Rankings (ROC) use the log-odds.

use super::Model;
use crate::tokenize::TokenId;

/// Tunables of the estimate and of the verdict. The defaults were chosen
/// on four corpora in both training modes (docs/ACCURACY.md, "Tuning
/// log"): a weak prior (s = 0.1) lets a token's own history speak early,
/// a wide dead zone (|f − 0.5| ≥ 0.2) drops the noise that pairs add, and
/// up to 1,000 tokens lets long messages use all their strong evidence.
/// Header and body are pooled unless they disagree confidently (the
/// header's veto at 5): combining them apart on every message ("Header
/// and body" above) won with every message learned but lost under
/// clicks; the veto keeps the win and loses nothing that counts
/// (docs/ACCURACY.md, "The header's veto: the threshold and the cost").
/// Header tokens take a weaker prior (s = 0.02) once the user has clicked
/// ten messages' worth of ham (docs/ACCURACY.md, "Session 15").
/// The ham cutoff is SpamBayes'; the spam cutoff is lower than SpamBayes'
/// 0.90, which missed enough spam to lose lam% to crm114 on the
/// SpamAssassin corpus; `confident_log_odds` is from the same measurement
/// ("Weighted learning" in docs/ACCURACY.md).
#[derive(Clone, Debug)]
pub struct Params {
    /// Robinson's `s`: how many messages' worth of weight the prior has.
    pub strength: f64,
    /// Robinson's `s` while one of the model's classes is empty, when
    /// larger than `strength`: see [`strength`]. 1, Robinson's own; 0
    /// turns it off.
    pub one_sided_strength: f64,
    /// Robinson's `x`: the probability assumed for a token with no history.
    pub prior: f64,
    /// Tokens with `|f − 0.5|` below this are ignored as noise.
    pub min_dev: f64,
    /// At most this many of the most extreme tokens are combined.
    pub max_tokens: usize,
    /// Below this probability the verdict is ham.
    pub ham_cutoff: f64,
    /// At or above this probability the verdict is spam.
    pub spam_cutoff: f64,
    /// A click on a message already scored at least this log-odds towards
    /// its label is learned at light weight (see `classify::learn_weight`).
    pub confident_log_odds: f64,
    /// The shared model's largest weight as a user's prior, in messages
    /// (`M` in `blend.rs`).
    pub shared_strength: f64,
    /// Messages a user must have learned for the shared prior's weight to
    /// halve (`R` in `blend.rs`).
    pub shared_halflife: f64,
    /// The shared prior's weight also grows with how much the shared model
    /// knows of its thinner class: in full once it has learned this many
    /// messages of spam and of ham (whatever their weight), in proportion
    /// before (0: always in full). Why: a shared model that has learned
    /// spam and (almost) no ham — users who only ever click *Spam*,
    /// nothing seeded — finds every token it knows spammy (Graham's ratio
    /// has no ham to compare with), and blended in, it filed a user's ham
    /// as spam before that user's own model could learn their ham from
    /// delivery (docs/ACCURACY.md, "Session 16"). Like `header_trust_at`
    /// for the header.
    pub shared_known_at: f64,
    /// Tokens the model has never seen count as evidence (when one class is
    /// far better known than the other) for at most this many times the
    /// message's significant known tokens (see "Never-seen tokens" above).
    pub unknown_cap: usize,
    /// How header and body evidence are combined (see "Header and body").
    pub parts: Parts,
    /// With the parts weighed apart, a header with fewer significant
    /// tokens than this has a proportionally smaller say (`Fisher`: its
    /// result mixed with the pooled score; `Mix`: a smaller share): one or
    /// two header tokens are not an expert's opinion.
    pub header_full_at: usize,
    /// With the parts weighed apart, the header's say also grows with how
    /// much the model has learned of its thinner class: full once both
    /// spam and ham hold this many messages' worth of weight, less in
    /// proportion before (0: always full). See [`header_trust`].
    pub header_trust_at: f64,
    /// What [`header_trust`] measures (experimental; `chaff eval
    /// --header-trust-by`): 0 the thinner class's weight, 1 the ham
    /// weight, 2 learned ham messages whatever their weight.
    pub header_trust_by: u8,
    /// Robinson's `s` for header tokens (`None`: `strength`), whether the
    /// parts are pooled or weighed apart; a larger one asks more messages
    /// of a header token before it is confident.
    pub header_strength: Option<f64>,
    /// With `header_strength`: the messages' worth of ham a user must have
    /// *clicked* (not learned from delivered mail,
    /// [`Model::clicked_ham_weight`]) for the header's `s` to be
    /// `header_strength` in full; before that it moves from `strength`
    /// towards it in proportion, so a user with no ham clicks scores
    /// exactly as with `strength` (0: `header_strength` always in full).
    /// Why: a smaller header prior (0.02) ranks trec06p better, but a user
    /// who only clicks spam then teaches their own mail's header tokens as
    /// spam on the evidence of their clicks against a ham side made of
    /// delivered mail, and ham lands in a spam folder they never open
    /// (docs/ACCURACY.md, "Session 11" and "Session 14"). 10 by default
    /// (`chaff serve`/`chaff eval --header-strength-ramp`); the store keeps
    /// the clicked/delivered split (format 8).
    pub header_strength_ramp: f64,
    /// With [`Parts::Fisher`]: the two parts are weighed apart only when
    /// they disagree (opposite signs) and each is at least this confident
    /// (|log-odds|); otherwise the pooled score stands. 0: every message
    /// is combined in two parts (acc9's rule). Why: chi-square over two
    /// "tokens" caps a message at about twice its weaker part's log-odds,
    /// so spam with a plain header ranked by its header alone. 5 is the
    /// value to use: of 3 to 7 the one that helps or ties everywhere (4
    /// loses trec06p `typical` at 0.1 % ham; 3 files 1 % of spamassassin's
    /// ham as spam for a spam-only clicker; docs/ACCURACY.md, "The
    /// header's veto: the threshold and the cost").
    pub header_veto_at: f64,
    /// With `header_veto_at`: only a hammy header vetoes a spammy body
    /// (a list relaying spam text), not the reverse.
    pub header_veto_ham_only: bool,
    /// γ of the never-seen estimate while the ham side is delivered mail
    /// and thinner in words than the spam side (see
    /// [`unknown_probability`]): 0.5, from Heaps' law; 0 turns it off.
    /// Measured with a gate (no ham clicked) rather than the ramp: 0.4–0.6
    /// change the 25 replay cells alike (one cell, by a message or two);
    /// at 0.75 and 1 spam got in early for a spam-only clicker and,
    /// learned from its delivery, sent their ham to the spam folder
    /// (docs/ACCURACY.md, "Session 17"). By words, with the ramp, 0.4 and
    /// 0.6 each move two spamassassin cells by a message or two
    /// (docs/ACCURACY.md, "Session 18").
    pub thin_ham_exponent: f64,
    /// The messages' worth of ham a user must have *clicked* for
    /// `thin_ham_exponent` to stop applying, in proportion before (0: it
    /// applies whatever the user clicked). 10, as `header_strength_ramp`.
    pub thin_ham_ramp: f64,
    /// `A`, in messages, of the pooled prior on a token's ham rate while
    /// the user's ham side is few delivered messages (see
    /// [`ham_prior_weight`]): 50; 0 turns it off.
    pub thin_ham_pool: f64,
    /// `K`: the ham messages learned at which that prior has halved: 10.
    pub thin_ham_pool_half: f64,
    /// The pooled prior's weight in the ham rate, in weight units, for the
    /// model being scored: **not configuration**. 0 in the defaults; set
    /// per model by [`PartParams::for_user`] from `thin_ham_pool` (as
    /// [`header_params`] sets the header's `s` from the clicked ham), so
    /// the score, its explanation and the blend read a token alike, and
    /// reset to 0 by [`PartParams::for_shared`].
    pub ham_prior: f64,
}

/// How a message's header and body tokens are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Parts {
    /// All significant tokens in one chi-square statistic (Robinson,
    /// SpamBayes, bogofilter): a part counts by its number of tokens.
    Pooled,
    /// One statistic per part, their probabilities mixed,
    /// `I = w·I_header + (1 − w)·I_body`, computed in log space so the
    /// extremes keep their order. A part with no significant token takes no part.
    Mix {
        /// `w`, the header's share of the vote.
        header: f64,
    },
    /// One statistic per part, the two parts' probabilities then combined
    /// as two tokens by the same chi-square rule: parts that disagree
    /// confidently give unsure, a neutral part leaves the other in charge.
    /// On every message (`header_veto_at` 0): much better with every
    /// message or every error learned, much worse at 0.1 % ham under
    /// `typical` and `spam-only` clicks on trec06p (docs/ACCURACY.md,
    /// "Header and body evidence"). With the veto at 5 only a confident
    /// disagreement is combined apart: the setting to make the default
    /// once it is cheap enough.
    Fisher,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            strength: 0.1,
            one_sided_strength: 1.0,
            prior: 0.5,
            min_dev: 0.2,
            max_tokens: 1000,
            ham_cutoff: 0.20,
            spam_cutoff: 0.80,
            confident_log_odds: 12.0,
            shared_strength: 10.0,
            shared_halflife: 100.0,
            shared_known_at: 50.0,
            unknown_cap: 3,
            parts: Parts::Fisher,
            header_full_at: 10,
            header_trust_at: 0.0,
            header_trust_by: 0,
            header_strength: Some(0.02),
            header_strength_ramp: 10.0,
            header_veto_at: 5.0,
            header_veto_ham_only: false,
            thin_ham_exponent: 0.5,
            thin_ham_ramp: 10.0,
            thin_ham_pool: 50.0,
            thin_ham_pool_half: 10.0,
            ham_prior: 0.0,
        }
    }
}

/// A message's score and how much of the model it drew on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Combined spam probability `I`, 0..=1; exactly 0.5 with no evidence.
    pub probability: f64,
    /// `logit(I)` computed without rounding at the extremes: 0 with no
    /// evidence, positive for spam; orders messages where `I` ties at 0 or 1.
    pub log_odds: f64,
    /// Message tokens the model had counts for.
    pub tokens_known: u32,
    /// Tokens that passed the significance filter and were combined.
    pub tokens_used: u32,
}

impl Score {
    /// The answer when there is nothing to go on.
    pub const NEUTRAL: Score = Score {
        probability: 0.5,
        log_odds: 0.0,
        tokens_known: 0,
        tokens_used: 0,
    };
}

/// Robinson's `f(w)` for one token's counts. All four arguments are in
/// the same unit (messages, or [`Weight`](super::Weight) units — the ratios
/// do not depend on it); `unit` converts a count to messages for `n`, so
/// the prior's strength `s` stays "messages' worth of evidence".
pub fn token_probability(
    spam: u32,
    ham: u32,
    nspam: u64,
    nham: u64,
    unit: f64,
    params: &Params,
) -> f64 {
    // Exact for the default unit (a power of two): a model learned only at
    // full weight scores bit-identically to one counted in messages.
    let n = (f64::from(spam) + f64::from(ham)) / unit;
    let Some(p) = graham_probability(spam, ham, nspam, nham, params.ham_prior) else {
        return params.prior;
    };
    let s = strength(nspam, nham, params);
    (s * params.prior + n * p) / (s + n)
}

/// Robinson's `s` for a model whose classes weigh `nspam` and `nham`:
/// `params.strength`, or `params.one_sided_strength` if larger while
/// either class is empty.
///
/// Why: with one class empty Graham's ratio is 1 (or 0) for every token by
/// construction, not by evidence, and at `s` = 0.1 one message makes a
/// token 0.95 spam. After one *Spam* click the header lines every message
/// has (`header:to`, `header:subject`, `auth:none-recorded`, …) then said
/// +3 each, and an empty-bodied note from a new sender (ten such tokens,
/// ten never seen) went to the spam folder at 0.95. At Robinson's own
/// `s` = 1 one message makes a token 0.75, and the note scores 0.51:
/// neutral, as a message unlike anything learned should. A copy of the
/// clicked spam is still spam (hundreds of such tokens). Once both classes
/// hold anything, nothing changes (docs/ACCURACY.md, "Session 19").
///
/// For the verdict only: how confident the model already is about a click
/// (`classify::learn_weight`) is read with the body's `s`, or the spam
/// side of a user who has clicked only spam grows heavier while no ham is
/// learned (enron2's probe: 4 → 9 of 100 ham filed after 20 clicks). In a
/// blend (`blend.rs`) a token the shared model gives weight to is shrunk
/// towards the shared estimate with the body's `s`; a token it knows
/// nothing of, or gives no weight to (a shared model of spam clicks
/// alone), is the user's own estimate with this `s`.
#[inline]
pub fn strength(nspam: u64, nham: u64, params: &Params) -> f64 {
    if one_sided(nspam, nham, params) {
        params.one_sided_strength
    } else {
        params.strength
    }
}

/// Whether [`strength`] gives the one-sided `s` for these class weights.
#[inline]
pub fn one_sided(nspam: u64, nham: u64, params: &Params) -> bool {
    (nspam == 0 || nham == 0) && params.one_sided_strength > params.strength
}

/// Graham's class-normalised `p(w)` before Robinson's shrinkage; `None`
/// for a token with no counts (the blend in `blend.rs` needs it alone).
///
/// `ham_prior` ([`ham_prior_weight`], weight units; 0: none) is a prior
/// on the ham rate: `ham_prior` weight of mail at the token's pooled rate
/// `(b + g) / (nspam + nham)` is counted into the ham side, so
/// `r_h = (g + ham_prior · pooled) / (nham + ham_prior)`. With both
/// classes learned only: a model with one class empty is the one-sided
/// case ([`strength`]).
pub fn graham_probability(
    spam: u32,
    ham: u32,
    nspam: u64,
    nham: u64,
    ham_prior: f64,
) -> Option<f64> {
    let spam_ratio = if nspam == 0 {
        0.0
    } else {
        f64::from(spam) / nspam as f64
    };
    let ham_ratio = if nham == 0 {
        0.0
    } else if ham_prior > 0.0 && nspam > 0 {
        let pooled = (f64::from(spam) + f64::from(ham)) / (nspam + nham) as f64;
        (f64::from(ham) + ham_prior * pooled) / (nham as f64 + ham_prior)
    } else {
        f64::from(ham) / nham as f64
    };
    if spam_ratio + ham_ratio == 0.0 {
        return None;
    }
    Some(spam_ratio / (spam_ratio + ham_ratio))
}

/// What a token the model has never seen says, from how well the model
/// knows each class: `weights` (spam, ham) in weight units, `mass` (spam,
/// ham) the classes' token masses ([`Model::mass`], weight units), and how
/// much of its ham the user clicked (`clicked_ham`,
/// [`Model::clicked_ham_weight`]).
///
/// The base estimate is `(1 + ν_s − ν_h) / 2`, where `ν = 1 / (N + 1)`
/// is Laplace's estimate of the chance that a class's next message is
/// unlike all `N` it has learned (in messages' worth of weight). 0.5 when
/// the two classes are equally well known, whatever their sizes; towards 0
/// when the model knows spam and no ham — a token that many spams never
/// showed is more likely the ham's — and towards 1 in the mirror case.
///
/// While the ham side's token mass is smaller than the spam side's and the
/// user has clicked less than [`Params::thin_ham_ramp`] messages' worth of
/// ham (so their ham side is mostly delivered mail), the estimate is also
/// at most
///
/// ```text
/// f_unseen = 1 / (1 + (M_s / M_h)^γ),   γ = Params::thin_ham_exponent
/// ```
///
/// where `M` is a class's token mass: the sum of its counts over every
/// token held, the words the model has seen of it.
///
/// Why: `ν` says "known" after one or two ham, but a ham side a few
/// messages deep has not yet shown the everyday words a hundred clicked
/// spam taught, so every such word of the next ham reads as spam — after
/// 100 *Spam* clicks, 95 of enron1's first 100 ham went to the spam
/// folder, delivered one by one (docs/ACCURACY.md, "Session 17"). How
/// likely a class's next word is new falls with the number of words seen
/// of it as `M^(β − 1)` (Heaps' law, vocabulary `∝ M^β`, β ≈ 0.5 for
/// English), so a word neither class has shown is `(M_s / M_h)^(1 − β)`
/// times likelier the thinner class's: γ = 1 − β = 0.5. Words, not
/// messages: enron1's first ham is a subject line and an empty body;
/// delivered after one *Spam* click it was learned at a full message's
/// weight (`engine::clicks::delivered_weight` fills the gap to the spam
/// side), the two classes read as equally deep by messages, and 99 of
/// the next 100 ham went to the spam folder (docs/ACCURACY.md, "Session
/// 18"). By words the ham side is a fifteenth of the spam side's. It
/// fades out linearly over the ramp because a user who clicks *Not spam*
/// corrects the ham the model misfiles, and with every message learned it
/// cost spam (docs/ACCURACY.md, "Session 17"); it never leans spam-wards
/// (delivered ham outweighing clicked spam says nothing against the
/// user's ham). Where the ham side outweighs the spam side in messages
/// but not in words (Laplace's form above 0.5) the cap, the lower, is
/// taken too; where the words meet, the estimate steps back up to
/// Laplace's, by `ramp_left · (laplace − 0.5)`. That step leaves the
/// significance dead zone only with at most a message and a half of
/// spam against nine or more of ham that are still thinner in words,
/// which delivered mail does not reach (past the gap to the spam side
/// each delivered message weighs a twentieth of one,
/// `Weight::DELIVERED`, and brings its words). Shifting the estimate by
/// the cap's offset instead, which is continuous there, moved none of
/// the 25 replay cells and sent two of the five generated ham of the
/// one-click test to the spam folder (docs/ACCURACY.md, "Session 18").
/// Ham learned before store format 8 reads as delivered, so an upgraded
/// two-sided user whose spam outweighs their ham in words 5.4 to 1 gets
/// the cap until they click ten ham (not measured).
///
/// At no ham at all (or no word of it) it is Laplace's form. The first
/// delivered ham moves it to the cap, which, while that ham holds a small
/// fraction of the spam side's words, is hammier still (one spam and a
/// ham with a fifteenth of its words: 0.25 → 0.205; a ham of a few words:
/// near 0), and more ham words move it back towards 0.5. Never-seen
/// tokens count at most `unknown_cap` times the significant known ones
/// and never reverse them ([`combine_with_unknowns`]), which bounds what
/// an estimate near 0 can do.
pub fn unknown_probability(
    (nspam, nham): (u64, u64),
    (mspam, mham): (u64, u64),
    clicked_ham: u64,
    unit: f64,
    params: &Params,
) -> f64 {
    let nu = |n: u64| 1.0 / (n as f64 / unit + 1.0);
    let laplace = 0.5 + (nu(nspam) - nu(nham)) / 2.0;
    // 1 with no ham clicked, 0 from `thin_ham_ramp` messages' worth on
    // (1 whatever was clicked when there is no ramp).
    let ramp_left =
        1.0 - ramp_progress(clicked_ham, unit, params.thin_ham_ramp).map_or(0.0, |t| t.min(1.0));
    let gamma = params.thin_ham_exponent;
    if gamma.is_nan() || gamma <= 0.0 || ramp_left == 0.0 || nham == 0 || mham == 0 || mham >= mspam
    {
        return laplace;
    }
    let heaps = 1.0 / (1.0 + (mspam as f64 / mham as f64).powf(gamma));
    laplace + (heaps.min(laplace) - laplace) * ramp_left
}

/// How much weight of mail at a token's pooled rate is counted into the
/// ham side's rate ([`graham_probability`]): in messages,
///
/// ```text
/// min(A · K / (K + H) · (delivered ham weight / ham weight),  ham weight)
/// ```
///
/// `A` = [`Params::thin_ham_pool`], `K` = [`Params::thin_ham_pool_half`]
/// (0: no fade), `H` the ham messages learned; the first term converted
/// to weight units at the ham side's mean weight per message. 0 while
/// either class is empty, when no ham was delivered, and when `A` is 0
/// or not a finite number.
///
/// Why: a user who only clicks *Spam* has a ham side of delivered mail,
/// and when their mailbox opens with spam, that ham side is a few spam the
/// model let through. Graham's ratio then reads every everyday token the
/// clicked spam showed and those few did not as certain spam
/// (`header:content-type` +4.4, `body:than` +4.1): from the first real
/// ham on, the ham went to the spam folder, was never delivered, and the
/// ham side never grew: on the SpamAssassin corpus at click seed 3, 1,568
/// of 4,150 ham (37.8 %). Absence from a ham side of H unverified
/// messages says little, so the ham rate starts at the pooled rate and
/// the ham side's own counts take over as it grows: by H = 10 the prior
/// weighs min(25, the ham side's weight) messages, by 100 under 5, by
/// 1,000 half of one. Over click seeds 0–9 of the five corpora, 6 of 50
/// `spam-only` mailboxes misfile more than 0.5 % of their ham (16
/// without), the largest 0.60 % (37.78 % without; docs/ACCURACY.md,
/// "Session 29"). It costs spam caught while the ham side is that thin,
/// most on a mailbox that opens with spam (the same corpus: a median 48 %
/// of spam missed against 39 %).
///
/// Only delivered ham is doubted: a user whose ham is clicked (or
/// learned with every message, TREC's protocol) scores exactly as
/// without it. Only the ham side: a prior on the spam side as well (a
/// user's clicked spam is as few messages) undid the hammy evidence the
/// delivered mail gives, and Enron's spam-only users filed up to 96 % of
/// their ham (67 % with the prior fading as here).
/// At most the ham side's own weight: uncapped, one *Spam* click and one
/// delivered empty note made the prior 45 messages against one, and a
/// copy of the clicked spam scored 0.5 (`tests/one_sided.rs`).
pub fn ham_prior_weight(model: &Model, params: &Params) -> f64 {
    let (nspam, nham) = model.weights();
    let (a, k) = (params.thin_ham_pool, params.thin_ham_pool_half);
    let h = model.ham_learned();
    let delivered = model.delivered_ham_weight();
    if !a.is_finite() || a <= 0.0 || nspam == 0 || nham == 0 || h == 0 || delivered == 0 {
        return 0.0;
    }
    let delivered = delivered as f64 / nham as f64;
    let fade = if k.is_finite() && k > 0.0 {
        k / (k + h as f64)
    } else {
        1.0
    };
    // Messages to weight units at the ham side's mean message weight.
    (a * fade * delivered * (nham as f64 / h as f64)).min(nham as f64)
}

/// How far the header's own statistic is trusted, 0..=1, from how much
/// the model has learned (`nspam`, `nham` in weight units; `ham_messages`
/// learned ham messages): `min(1, Q / header_trust_at)`, where `Q` is
/// what `header_trust_by` names. 1 when `header_trust_at` is 0.
pub fn header_trust(nspam: u64, nham: u64, ham_messages: u64, unit: f64, params: &Params) -> f64 {
    if params.header_trust_at <= 0.0 {
        return 1.0;
    }
    let q = match params.header_trust_by {
        0 => nspam.min(nham) as f64 / unit,
        1 => nham as f64 / unit,
        _ => ham_messages as f64,
    };
    (q / params.header_trust_at).min(1.0)
}

/// Robinson's `s` for the header tokens of a model that holds
/// `clicked_ham` weight of clicked ham ([`Model::clicked_ham_weight`]),
/// when `params.header_strength` is `target`: `target`, or on its way
/// there from `params.strength` while that is less than
/// `params.header_strength_ramp` messages' worth (see
/// [`Params::header_strength_ramp`]). At no clicked ham it is
/// `params.strength` exactly.
pub fn header_strength(clicked_ham: u64, target: f64, unit: f64, params: &Params) -> f64 {
    match ramp_progress(clicked_ham, unit, params.header_strength_ramp) {
        Some(t) if t < 1.0 => params.strength + (target - params.strength) * t,
        _ => target,
    }
}

/// How far up a ramp of `ramp` messages' worth of *clicked* ham a model
/// holding `clicked_ham` of it (weight units) is: 0 at none, 1 at the
/// ramp's end, more beyond. `None` without a ramp (`ramp ≤ 0`), which
/// each caller reads its own way. The header prior
/// ([`header_strength`]) and the thin-ham cap ([`unknown_probability`])
/// both wait for the user's *Not spam* clicks this way.
fn ramp_progress(clicked_ham: u64, unit: f64, ramp: f64) -> Option<f64> {
    (ramp > 0.0).then(|| clicked_ham as f64 / unit / ramp)
}

/// The [`Params`] a message's header tokens are estimated with, against
/// a model holding `clicked_ham` weight of clicked ham: `params` with the
/// header prior's `s` ([`header_strength`]), or `None` when there is no
/// header prior (`params.header_strength` unset) and header tokens take
/// `params` itself.
///
/// Why one function: the score, the explanation of its strongest tokens
/// and the blend with the shared model must estimate a header token
/// alike, or support staff would be shown an `f(w)` the score never used.
pub fn header_params(clicked_ham: u64, params: &Params) -> Option<Params> {
    let unit = f64::from(super::Weight::FULL.0);
    params.header_strength.map(|target| Params {
        strength: header_strength(clicked_ham, target, unit, params),
        ..params.clone()
    })
}

/// The [`Params`] each of a message's tokens is estimated with against a
/// model: header tokens take the header prior's `s`, from the model's
/// clicked ham ([`header_params`]), the others the params given; a user's
/// own model also carries the pooled prior on its ham rate
/// ([`ham_prior_weight`], in every token's estimate). One chooser for the
/// score, its explanation and the blend.
pub struct PartParams<'a> {
    body: std::borrow::Cow<'a, Params>,
    header: Option<Params>,
}

impl<'a> PartParams<'a> {
    /// For the shared model, holding `clicked_ham` weight of ham, all of
    /// it clicked (*Not spam* or the operator's seed): no doubt about its
    /// ham side, so no pooled prior on it (`ham_prior` 0, whatever
    /// `params` carry).
    pub fn for_shared(clicked_ham: u64, params: &'a Params) -> Self {
        Self::with_ham_prior(clicked_ham, 0.0, params)
    }

    /// For a user's own `model`: the header prior its clicked ham sets,
    /// and the pooled prior on its ham rate ([`ham_prior_weight`]).
    pub fn for_user(model: &Model, params: &'a Params) -> Self {
        let prior = ham_prior_weight(model, params);
        Self::with_ham_prior(model.clicked_ham_weight(), prior, params)
    }

    fn with_ham_prior(clicked_ham: u64, ham_prior: f64, params: &'a Params) -> Self {
        if ham_prior == params.ham_prior {
            return Self {
                body: std::borrow::Cow::Borrowed(params),
                header: header_params(clicked_ham, params),
            };
        }
        let body = Params {
            ham_prior,
            ..params.clone()
        };
        let header = header_params(clicked_ham, &body);
        Self {
            body: std::borrow::Cow::Owned(body),
            header,
        }
    }

    /// The params for body tokens and the message as a whole.
    pub fn body(&self) -> &Params {
        &self.body
    }

    /// The params for a header token (`in_header`) or a body token.
    pub fn get(&self, in_header: bool) -> &Params {
        match &self.header {
            Some(header) if in_header => header,
            _ => &self.body,
        }
    }
}

/// Scores `ids` (a message's distinct tokens) against `model`, as one
/// part (no header split).
pub fn score(model: &Model, ids: &[TokenId], params: &Params) -> Score {
    score_parts(model, ids, &[], params)
}

/// Scores a message's distinct tokens `ids` against `model`; `header` (a
/// sorted subset of `ids`) are the ones from its header, weighed apart
/// from the body's as `params.parts` says.
pub fn score_parts(model: &Model, ids: &[TokenId], header: &[TokenId], params: &Params) -> Score {
    let (nspam, nham) = model.weights();
    let unit = f64::from(super::Weight::FULL.0);
    if nspam + nham == 0 {
        return Score::NEUTRAL;
    }
    let unknown = unknown_probability(
        (nspam, nham),
        model.mass(),
        model.clicked_ham_weight(),
        unit,
        params,
    );
    let mut split = Split::new(ids.len(), header, params);
    split.trust = header_trust(nspam, nham, model.ham_learned(), unit, params);
    let parts = PartParams::for_user(model, params);
    let body = parts.body();
    for id in ids {
        let (part, p) = match &parts.header {
            None => (split.part_of(*id), body),
            // Header tokens take their own `s`, pooled or not.
            Some(h) if split.in_header(*id) => (split.part_of_header(), h),
            Some(_) => (0, body),
        };
        let Some(c) = model.get(*id) else {
            split.unknowns[part] += 1;
            continue;
        };
        split.known += 1;
        let f = token_probability(c.spam, c.ham, nspam, nham, unit, p);
        if (f - 0.5).abs() >= params.min_dev {
            split.significant[part].push(f);
        }
    }
    let known = split.known;
    let (
        Combined {
            probability,
            log_odds,
        },
        used,
    ) = split.combine(unknown, params, |f| *f, |f| f);
    Score {
        probability,
        log_odds,
        tokens_known: known,
        tokens_used: used,
    }
}

/// A message's per-token estimates sorted into its parts as they are
/// computed: part 0 the body (everything, when `params.parts` pools),
/// part 1 the header. The `header` ids are walked alongside the sorted
/// `ids`, so telling a token's part costs a comparison.
pub(crate) struct Split<'a, T> {
    header: &'a [TokenId],
    next_header: usize,
    pooled: bool,
    pub(crate) known: u32,
    pub(crate) significant: [Vec<T>; 2],
    pub(crate) unknowns: [usize; 2],
    /// [`header_trust`] of the model scored against (1 unless set).
    pub(crate) trust: f64,
}

impl<'a, T> Split<'a, T> {
    pub(crate) fn new(len: usize, header: &'a [TokenId], params: &Params) -> Self {
        let pooled = matches!(params.parts, Parts::Pooled) || header.is_empty();
        Self {
            header,
            next_header: 0,
            pooled,
            known: 0,
            // One allocation per message, none per token.
            significant: [
                Vec::with_capacity(len.min(1024)),
                Vec::with_capacity(if pooled { 0 } else { header.len() }),
            ],
            unknowns: [0, 0],
            trust: 1.0,
        }
    }

    /// 1 if `id` (the next of the sorted message ids) is a header token
    /// and the parts are weighed apart, else 0.
    #[inline]
    pub(crate) fn part_of(&mut self, id: TokenId) -> usize {
        if self.pooled {
            return 0;
        }
        usize::from(self.in_header(id))
    }

    /// Whether `id` (the next of the sorted message ids) is a header
    /// token, whether or not the parts are pooled.
    #[inline]
    pub(crate) fn in_header(&mut self, id: TokenId) -> bool {
        while self.next_header < self.header.len() && self.header[self.next_header] < id {
            self.next_header += 1;
        }
        self.header.get(self.next_header) == Some(&id)
    }

    /// The part a header token goes to: 1, or 0 when the parts are pooled.
    #[inline]
    pub(crate) fn part_of_header(&self) -> usize {
        usize::from(!self.pooled)
    }

    /// Combines the parts (see [`Parts`]); also the tokens combined.
    /// Afterwards `significant[0]` holds every combined item.
    ///
    /// The statistics share their logarithms: the pooled items are the
    /// body's, then the header's, so the body's sums ([`Sums`]) are a
    /// prefix of the pooled ones and each token's `ln f` and `ln(1 − f)`
    /// is taken once, in the order each statistic alone would add them
    /// (the same result, bit for bit, as summing each apart). That keeps
    /// the header's veto, which needs the pooled and the body's
    /// statistic, near the cost of pooled scoring (docs/PERFORMANCE.md,
    /// "The header's veto: its cost").
    pub(crate) fn combine(
        &mut self,
        unknown: f64,
        params: &Params,
        f: impl Fn(&T) -> f64 + Copy,
        make: impl Fn(f64) -> T + Copy,
    ) -> (Combined, u32)
    where
        T: Clone,
    {
        let [body, header] = &mut self.significant;
        if self.pooled {
            let c = combine_with_unknowns(body, self.unknowns[0], unknown, params, f, make);
            return (c, body.len() as u32);
        }
        let say = (header.len() as f64 / params.header_full_at.max(1) as f64).min(1.0);
        let trust = self.trust;
        let [body_unknowns, header_unknowns] = self.unknowns;
        let all_unknowns = body_unknowns + header_unknowns;
        // Sums only where no item is dropped (else each statistic keeps its
        // own most extreme items); the pooled items fitting means the
        // body's fit too.
        let body_sums =
            fits(body.len(), body_unknowns, unknown, params).then(|| Sums::over(body, f));
        let mut pooled_sums =
            body_sums.filter(|_| fits(body.len() + header.len(), all_unknowns, unknown, params));
        // Each header token's logarithms go to the header's sums and
        // continue the pooled ones.
        let mut header_sums = Sums::default();
        for item in header.iter() {
            let logs = Sums::logs(f(item));
            header_sums.add_logs(logs);
            if let Some(pooled) = &mut pooled_sums {
                pooled.add_logs(logs);
            }
        }
        let header_sums =
            fits(header.len(), header_unknowns, unknown, params).then_some(header_sums);
        // A thin header (Enron's corpora keep only the Subject line) is no
        // expert: below full say, the two-part result is mixed with the
        // pooled one, which it becomes as the header's say goes to zero.
        let fisher = matches!(params.parts, Parts::Fisher);
        let veto = fisher && params.header_veto_at > 0.0;
        if veto {
            // Only a header at least `header_veto_at` confident can veto.
            // Its statistic is cheap (a header has tens of tokens, a body
            // up to a thousand); when it cannot veto, the message scores
            // as pooled and the body's own statistic is never combined —
            // the same result, bit for bit, as combining all three.
            let header_c = match header_sums {
                Some(sums) => from_sums(sums, header_unknowns, unknown, params).0,
                None => combine_with_unknowns(
                    &mut header.clone(),
                    header_unknowns,
                    unknown,
                    params,
                    f,
                    make,
                ),
            };
            let cannot_veto = body.is_empty()
                || header.is_empty()
                || header_c.log_odds.abs() < params.header_veto_at
                || (params.header_veto_ham_only && header_c.log_odds > 0.0);
            if cannot_veto {
                body.append(header);
                let pooled =
                    combine_summed(body, pooled_sums, all_unknowns, unknown, params, f, make);
                return (pooled, body.len() as u32);
            }
            // A body that leans the header's way cannot be vetoed (the veto
            // needs a disagreement): the message scores as pooled, and the
            // body's statistic is never combined — its sign, from its sums,
            // is enough.
            if let (Some(body_sums), Some(pooled_sums)) = (body_sums, pooled_sums)
                && Sums::sign_with_unknowns(body_sums, body_unknowns, unknown, params)
                    == Some(header_c.log_odds > 0.0)
            {
                let (pooled, _) = from_sums(pooled_sums, all_unknowns, unknown, params);
                // The items as the parts combined apart would leave them.
                for (items, n) in [(&mut *body, body_unknowns), (&mut *header, header_unknowns)] {
                    let admitted = admitted(items.len(), n, unknown, params);
                    items.extend((0..admitted).map(|_| make(unknown)));
                }
                let used = (body.len() + header.len()) as u32;
                body.append(header);
                return (pooled, used);
            }
        }
        let pooled =
            (fisher && (veto || (!header.is_empty() && (say < 1.0 || trust < 1.0)))).then(|| {
                match pooled_sums {
                    Some(sums) => from_sums(sums, all_unknowns, unknown, params).0,
                    None => {
                        let mut all: Vec<T> = body.iter().chain(header.iter()).cloned().collect();
                        combine_with_unknowns(&mut all, all_unknowns, unknown, params, f, make)
                    }
                }
            });
        let body_c = combine_summed(body, body_sums, body_unknowns, unknown, params, f, make);
        let header_c = combine_summed(
            header,
            header_sums,
            header_unknowns,
            unknown,
            params,
            f,
            make,
        );
        // The veto: only a confident disagreement between two parts that
        // both have evidence is combined apart; anything else (including a
        // part with no significant token, whose never-seen tokens would
        // otherwise be dropped) scores as pooled.
        let vetoed = !body.is_empty()
            && !header.is_empty()
            && header_c.log_odds * body_c.log_odds < 0.0
            && header_c.log_odds.abs() >= params.header_veto_at
            && body_c.log_odds.abs() >= params.header_veto_at
            && !(params.header_veto_ham_only && header_c.log_odds > 0.0);
        let combined = match (body.is_empty(), header.is_empty(), params.parts) {
            _ if veto && !vetoed && pooled.is_some() => pooled.unwrap_or(body_c),
            (_, true, _) => body_c,
            (true, false, _) => header_c,
            (false, false, Parts::Mix { header: w }) => {
                mix(header_c.log_odds, body_c.log_odds, w * say)
            }
            (false, false, _) => {
                let both = combine_log_odds(&[header_c.log_odds, body_c.log_odds]);
                match pooled {
                    Some(pooled) => {
                        let parts = if say < 1.0 {
                            mix(both.log_odds, pooled.log_odds, say)
                        } else {
                            both
                        };
                        // Trust moves the log-odds, not the probability: a
                        // probability mix stays near the less extreme side.
                        let log_odds = trust * parts.log_odds + (1.0 - trust) * pooled.log_odds;
                        Combined {
                            probability: 1.0 / (1.0 + (-log_odds).exp()),
                            log_odds,
                        }
                    }
                    None => both,
                }
            }
        };
        let used = (body.len() + header.len()) as u32;
        body.append(header);
        (combined, used)
    }
}

/// `w·I_a + (1 − w)·I_b` of two probabilities given by their log-odds,
/// in log space: `ln I = −softplus(−lo)`, `ln(1 − I) = −softplus(lo)`.
fn mix(a: f64, b: f64, w: f64) -> Combined {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let (lw, lv) = (w.ln(), (1.0 - w).ln());
    let ln_i = log_add_exp(lw - softplus(-a), lv - softplus(-b));
    let ln_not_i = log_add_exp(lw - softplus(a), lv - softplus(b));
    let log_odds = ln_i - ln_not_i;
    Combined {
        probability: 1.0 / (1.0 + (-log_odds).exp()),
        log_odds,
    }
}

/// Combines a message's significant known-token estimates with the
/// evidence of its `unknowns` tokens the model has never seen, each at
/// `unknown` ([`unknown_probability`]) when that is significant:
///
/// - at most as many unknown tokens as there are significant known ones
///   (times `params.unknown_cap`): novel tokens arrive together (a new topic, a new
///   campaign), so their absence is not independent evidence, and a message
///   unlike anything learned stays neutral;
/// - absence can cancel what the known tokens say, never reverse it: if
///   adding it flips the sign of the log-odds, the result is unsure, ranked
///   by the known tokens' log-odds squashed into (−1, 1).
///
/// Keeps the `max_tokens` most extreme of them all, as before.
pub(crate) fn combine_with_unknowns<T>(
    significant: &mut Vec<T>,
    unknowns: usize,
    unknown: f64,
    params: &Params,
    f: impl Fn(&T) -> f64 + Copy,
    make: impl Fn(f64) -> T,
) -> Combined {
    let sums =
        fits(significant.len(), unknowns, unknown, params).then(|| Sums::over(significant, f));
    combine_summed(significant, sums, unknowns, unknown, params, f, make)
}

/// How many of a statistic's `unknowns` never-seen tokens count beside
/// its `known` significant ones ([`combine_with_unknowns`]).
fn admitted(known: usize, unknowns: usize, unknown: f64, params: &Params) -> usize {
    if (unknown - 0.5).abs() < params.min_dev {
        0
    } else {
        unknowns.min(known.saturating_mul(params.unknown_cap))
    }
}

/// Whether `known` items and the unknowns they admit fit `max_tokens`:
/// then nothing is dropped, and the statistic follows from the known
/// items' [`Sums`] alone ([`from_sums`]).
fn fits(known: usize, unknowns: usize, unknown: f64, params: &Params) -> bool {
    known + admitted(known, unknowns, unknown, params) <= params.max_tokens
}

/// [`combine_with_unknowns`] given the known items' sums when they
/// [`fits`] (else `None`, and the items are combined keeping the most
/// extreme): `significant` gains the admitted unknowns either way.
fn combine_summed<T>(
    significant: &mut Vec<T>,
    sums: Option<Sums>,
    unknowns: usize,
    unknown: f64,
    params: &Params,
    f: impl Fn(&T) -> f64 + Copy,
    make: impl Fn(f64) -> T,
) -> Combined {
    match sums {
        Some(sums) => {
            let (combined, n) = from_sums(sums, unknowns, unknown, params);
            significant.extend((0..n).map(|_| make(unknown)));
            combined
        }
        None => combine_dropping(significant, unknowns, unknown, params, f, make),
    }
}

/// [`combine_with_unknowns`] from the known items' sums, when they fit
/// `max_tokens` with their unknowns: the unknowns' logarithms are added
/// to the same running sums, in the order [`combine_by`] would add them
/// over the extended items, so the result is the same bit for bit. The
/// known items' own statistic (two chi-square tails) is needed only to
/// tell a cancellation, and its sign is the sign of `Σ ln f − Σ ln(1 − f)`
/// ([`Sums::sign`]), so it is computed only when that sign disagrees with
/// the whole or is too close to call. Also the unknowns admitted.
fn from_sums(known: Sums, unknowns: usize, unknown: f64, params: &Params) -> (Combined, usize) {
    let n = admitted(known.n, unknowns, unknown, params);
    if n == 0 {
        return (known.combined(), 0);
    }
    let all = known.with(n, unknown);
    let all_c = all.combined();
    if all_c.log_odds == 0.0 || known.sign() == Some(all_c.log_odds > 0.0) {
        return (all_c, n);
    }
    (cancel(known.combined(), all_c), n)
}

/// Log-odds of known evidence that map to about 0.76 (tanh 1) once
/// cancelled by absence; the figure that kept the order of cancelled
/// messages best on the corpora (docs/ACCURACY.md, "One-sided clickers").
const CANCELLED_SCALE: f64 = 100.0;

/// The whole `all` unless absence reversed what the `known` tokens said:
/// then unsure (|log-odds| < 1, probability within 0.27..0.73), but still
/// ordered by what the known tokens said, so a ranking does not collapse
/// into one tie at 0.5.
fn cancel(known: Combined, all: Combined) -> Combined {
    if all.log_odds * known.log_odds < 0.0 {
        let log_odds = (known.log_odds / CANCELLED_SCALE).tanh();
        return Combined {
            probability: 1.0 / (1.0 + (-log_odds).exp()),
            log_odds,
        };
    }
    all
}

/// [`combine_with_unknowns`] when items must be dropped: the known
/// tokens' statistic over their `max_tokens` most extreme, the whole over
/// the most extreme of the known and the admitted unknowns together.
fn combine_dropping<T>(
    significant: &mut Vec<T>,
    unknowns: usize,
    unknown: f64,
    params: &Params,
    f: impl Fn(&T) -> f64 + Copy,
    make: impl Fn(f64) -> T,
) -> Combined {
    let n = admitted(significant.len(), unknowns, unknown, params);
    if n == 0 {
        keep_most_extreme(significant, params.max_tokens, f);
        return combine_by(significant, f);
    }
    let known = {
        let mut k: Vec<f64> = significant.iter().map(f).collect();
        keep_most_extreme(&mut k, params.max_tokens, |x| *x);
        combine(&k)
    };
    significant.extend((0..n).map(|_| make(unknown)));
    keep_most_extreme(significant, params.max_tokens, f);
    cancel(known, combine_by(significant, f))
}

/// Keeps the `max` most extreme estimates (by `|f − 0.5|`), in O(n).
pub(crate) fn keep_most_extreme<T>(items: &mut Vec<T>, max: usize, f: impl Fn(&T) -> f64) {
    if items.len() > max {
        items.select_nth_unstable_by(max, |a, b| {
            (f(b) - 0.5).abs().total_cmp(&(f(a) - 0.5).abs())
        });
        items.truncate(max);
    }
}

/// The outcome of combining: `I` and `logit(I)` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combined {
    pub probability: f64,
    pub log_odds: f64,
}

/// Fisher/Robinson chi-square combining of token probabilities; 0.5 (log-odds
/// 0) for none.
pub fn combine(probs: &[f64]) -> Combined {
    combine_by(probs, |p| *p)
}

/// [`combine`] of `f` of each item, without collecting them first.
pub(crate) fn combine_by<T>(items: &[T], f: impl Fn(&T) -> f64) -> Combined {
    Sums::over(items, f).combined()
}

/// A chi-square statistic's running sums over its items, in order:
/// `Σ ln(1 − f)`, `Σ ln f` and how many. Sharing them is how the pooled,
/// the body's and the known tokens' statistics cost one logarithm pair
/// per token ([`Split::combine`], [`from_sums`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sums {
    ln_spam: f64,
    ln_ham: f64,
    n: usize,
}

impl Sums {
    /// Clamp so ln never sees 0: Robinson's shrinkage keeps f inside
    /// (0, 1) already, but [`combine`] is public and must be total.
    const EPS: f64 = 1e-12;

    fn over<T>(items: &[T], f: impl Fn(&T) -> f64) -> Sums {
        let mut sums = Sums::default();
        for item in items {
            sums.add_logs(Sums::logs(f(item)));
        }
        sums
    }

    /// `(ln(1 − f), ln f)` of one item.
    #[inline]
    fn logs(f: f64) -> (f64, f64) {
        let p = f.clamp(Self::EPS, 1.0 - Self::EPS);
        ((1.0 - p).ln(), p.ln())
    }

    /// These sums continued over `n` items of estimate `f` (the admitted
    /// unknowns, which [`combine_by`] would add after the known items).
    fn with(mut self, n: usize, f: f64) -> Sums {
        let logs = Sums::logs(f);
        for _ in 0..n {
            self.add_logs(logs);
        }
        self
    }

    #[inline]
    fn add_logs(&mut self, (ln_spam, ln_ham): (f64, f64)) {
        self.ln_spam += ln_spam;
        self.ln_ham += ln_ham;
        self.n += 1;
    }

    /// The chi-square combining of the items; 0.5 (log-odds 0) for none.
    fn combined(&self) -> Combined {
        if self.n == 0 {
            return Combined {
                probability: 0.5,
                log_odds: 0.0,
            };
        }
        combine_logs(self.ln_spam, self.ln_ham, self.n)
    }

    /// The sign of [`Sums::combined`]'s log-odds (`true`: spam) without
    /// its tails, or `None` when too close to call. Both tails are of the
    /// same `2n` degrees of freedom and `Q` falls as its statistic grows,
    /// so the spam side wins exactly when `−2 Σ ln(1 − f) > −2 Σ ln f`;
    /// the margin (a billionth of the sums) is orders of magnitude above
    /// the tails' rounding.
    fn sign(&self) -> Option<bool> {
        let d = self.ln_ham - self.ln_spam;
        let margin = 1e-9 * (self.ln_ham.abs() + self.ln_spam.abs());
        (d.abs() > margin).then_some(d > 0.0)
    }

    /// The sign of [`from_sums`]'s log-odds, without its tails, or `None`
    /// when too close to call: absence either agrees with the known
    /// tokens or cancels them into an unsure score of their own sign, so
    /// the result leans the known tokens' way unless the whole is a tie.
    fn sign_with_unknowns(
        known: Sums,
        unknowns: usize,
        unknown: f64,
        params: &Params,
    ) -> Option<bool> {
        let n = admitted(known.n, unknowns, unknown, params);
        if n == 0 {
            return known.sign();
        }
        known.with(n, unknown).sign().and(known.sign())
    }
}

/// [`combine`] of probabilities given by their log-odds, unclamped, so
/// that evidence beyond `f64`'s resolution near 0 and 1 keeps its order.
fn combine_log_odds(log_odds: &[f64]) -> Combined {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let (mut ln_spam, mut ln_ham) = (0.0f64, 0.0f64);
    for &lo in log_odds {
        ln_spam -= softplus(lo);
        ln_ham -= softplus(-lo);
    }
    combine_logs(ln_spam, ln_ham, log_odds.len())
}

/// The chi-square combining of `n` tokens from `Σ ln(1 − f)` and `Σ ln f`.
fn combine_logs(ln_spam: f64, ln_ham: f64, n: usize) -> Combined {
    let (ln_q_spam, ln_p_spam) = ln_chi2_tails(-2.0 * ln_spam, n);
    let (ln_q_ham, ln_p_ham) = ln_chi2_tails(-2.0 * ln_ham, n);
    let ln_two_i = log_add_exp(ln_q_ham, ln_p_spam);
    let ln_two_not_i = log_add_exp(ln_q_spam, ln_p_ham);
    let log_odds = ln_two_i - ln_two_not_i;
    Combined {
        probability: 1.0 / (1.0 + (-log_odds).exp()),
        log_odds,
    }
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// A term whose log is this far below the largest term's cannot change a
/// `f64` sum of the terms scaled by the largest (e⁻⁴⁰ < 2⁻⁵⁴).
const NEGLIGIBLE: f64 = -40.0;

/// `ln i` for the small integers of the chi-square tails' Poisson series
/// (one per combined token and statistic, for every message): looked up
/// from a table filled once by the same `ln`, so the very same values.
fn ln_int(i: usize) -> f64 {
    const TABLE_LEN: usize = 4096;
    static TABLE: std::sync::LazyLock<Vec<f64>> =
        std::sync::LazyLock::new(|| (0..TABLE_LEN).map(|i| (i as f64).ln()).collect());
    match TABLE.get(i) {
        Some(&ln) => ln,
        None => (i as f64).ln(),
    }
}

/// Streaming log-sum-exp: the log of a sum of terms given by their logs.
struct LogSum {
    max: f64,
    scaled: f64,
}

impl LogSum {
    fn new() -> Self {
        Self {
            max: f64::NEG_INFINITY,
            scaled: 0.0,
        }
    }

    fn add(&mut self, ln_term: f64) {
        if ln_term > self.max {
            self.scaled = self.scaled * (self.max - ln_term).exp() + 1.0;
            self.max = ln_term;
        } else if ln_term - self.max > NEGLIGIBLE {
            self.scaled += (ln_term - self.max).exp();
        }
        // Else the term is below e^NEGLIGIBLE < 2⁻⁵⁴ of the largest, and
        // `scaled` ≥ 1 (the largest counts 1), so adding it would round
        // back to the same `scaled`: skipping its `exp` changes no bit.
    }

    fn value(&self) -> f64 {
        self.max + self.scaled.ln()
    }
}

/// `(ln Q, ln P)` for the chi-square statistic `x2` with `2n` degrees of
/// freedom, `Q` the upper tail and `P = 1 − Q`, both accurate however tiny:
/// with `m = x2/2`, `Q = Σ_{i<n} e^{−m} mⁱ/i!` and `P = Σ_{i≥n} e^{−m} mⁱ/i!`
/// (the two halves of a Poisson distribution).
fn ln_chi2_tails(x2: f64, n: usize) -> (f64, f64) {
    let m = x2 / 2.0;
    if m <= 0.0 {
        return (0.0, f64::NEG_INFINITY);
    }
    let ln_m = m.ln();
    let mut ln_term = -m; // i = 0
    let mut q = LogSum::new();
    for i in 0..n {
        if i > 0 {
            ln_term += ln_m - ln_int(i);
        }
        q.add(ln_term);
    }
    let ln_q = q.value().min(0.0);
    if ln_q < -std::f64::consts::LN_2 {
        // Q < ½: P = 1 − Q is not small, so the direct form is exact enough.
        return (ln_q, (-ln_q.exp()).ln_1p());
    }
    // Q ≥ ½ means m is below about n, so the terms from i = n on shrink
    // geometrically: sum until they stop mattering.
    let mut p = LogSum::new();
    let mut i = n;
    loop {
        ln_term += ln_m - ln_int(i);
        p.add(ln_term);
        if (i as f64 > m && ln_term < p.value() - 40.0) || i > n + 100_000 {
            break;
        }
        i += 1;
    }
    (ln_q, p.value().min(0.0))
}

/// Upper tail of the chi-square distribution for even degrees of freedom:
/// `P(X ≥ x2)` with `X ~ χ²(dof)`, as the Poisson series
/// `e^{−m} Σ_{i<dof/2} mⁱ/i!` with `m = x2/2` (exact for even `dof`).
pub fn chi2_survival(x2: f64, dof: usize) -> f64 {
    debug_assert!(
        dof.is_multiple_of(2),
        "chi2_survival needs even degrees of freedom"
    );
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..dof / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Cutoffs, Weight, verdict};
    use crate::types::{Label, Verdict};

    #[test]
    fn chi2_survival_matches_tables() {
        // χ²(2): survival is e^{-x/2}.
        assert!((chi2_survival(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // Table value: P(χ²(4) ≥ 9.488) ≈ 0.05; P(χ²(10) ≥ 18.307) ≈ 0.05.
        assert!((chi2_survival(9.488, 4) - 0.05).abs() < 1e-3);
        assert!((chi2_survival(18.307, 10) - 0.05).abs() < 1e-3);
        assert_eq!(chi2_survival(0.0, 8), 1.0);
    }

    /// The textbook formula, `(1 + S − H)/2` with `S = 1 − C⁻¹(…)`.
    fn textbook(probs: &[f64]) -> f64 {
        let n = probs.len();
        let ln_spam: f64 = probs.iter().map(|p| (1.0 - p).ln()).sum();
        let ln_ham: f64 = probs.iter().map(|p| p.ln()).sum();
        let s = 1.0 - chi2_survival(-2.0 * ln_spam, 2 * n);
        let h = 1.0 - chi2_survival(-2.0 * ln_ham, 2 * n);
        (1.0 + s - h) / 2.0
    }

    /// `ln_chi2_tails` as first written: `ln i` computed each time, every
    /// term's `exp` taken. The table and the skipped terms must not change
    /// a single bit of the result.
    fn ln_chi2_tails_reference(x2: f64, n: usize) -> (f64, f64) {
        fn add(max: &mut f64, scaled: &mut f64, ln_term: f64) {
            if ln_term > *max {
                *scaled = *scaled * (*max - ln_term).exp() + 1.0;
                *max = ln_term;
            } else {
                *scaled += (ln_term - *max).exp();
            }
        }
        let m = x2 / 2.0;
        if m <= 0.0 {
            return (0.0, f64::NEG_INFINITY);
        }
        let ln_m = m.ln();
        let mut ln_term = -m;
        let (mut max, mut scaled) = (f64::NEG_INFINITY, 0.0);
        for i in 0..n {
            if i > 0 {
                ln_term += ln_m - (i as f64).ln();
            }
            add(&mut max, &mut scaled, ln_term);
        }
        let ln_q = (max + scaled.ln()).min(0.0);
        if ln_q < -std::f64::consts::LN_2 {
            return (ln_q, (-ln_q.exp()).ln_1p());
        }
        let (mut pmax, mut pscaled) = (f64::NEG_INFINITY, 0.0);
        let mut i = n;
        loop {
            ln_term += ln_m - (i as f64).ln();
            add(&mut pmax, &mut pscaled, ln_term);
            if (i as f64 > m && ln_term < pmax + pscaled.ln() - 40.0) || i > n + 100_000 {
                break;
            }
            i += 1;
        }
        (ln_q, (pmax + pscaled.ln()).min(0.0))
    }

    #[test]
    fn chi2_tails_are_bit_identical_to_the_reference() {
        for n in [1, 2, 3, 10, 50, 150, 999, 1000, 4095, 4096, 5000] {
            for x2 in [1e-9, 0.1, 1.0, 7.5, 100.0, 1999.0, 2000.0, 2001.0, 1e4, 1e5] {
                for x2 in [x2, x2 * n as f64] {
                    let (q, p) = ln_chi2_tails(x2, n);
                    let (rq, rp) = ln_chi2_tails_reference(x2, n);
                    assert_eq!(
                        (q.to_bits(), p.to_bits()),
                        (rq.to_bits(), rp.to_bits()),
                        "x2 {x2} n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn combine_is_symmetric_and_neutral() {
        assert_eq!(
            combine(&[]),
            Combined {
                probability: 0.5,
                log_odds: 0.0
            }
        );
        let half = combine(&[0.5, 0.5]);
        assert!((half.probability - 0.5).abs() < 1e-12 && half.log_odds.abs() < 1e-12);
        let spam = combine(&[0.99, 0.95, 0.9]);
        let ham = combine(&[0.01, 0.05, 0.1]);
        assert!(spam.probability > 0.9, "{spam:?}");
        assert!((spam.probability + ham.probability - 1.0).abs() < 1e-9);
        assert!((spam.log_odds + ham.log_odds).abs() < 1e-9);
    }

    #[test]
    fn combine_agrees_with_the_textbook_formula() {
        let cases: [&[f64]; 5] = [
            &[0.6, 0.7, 0.2],
            &[0.99, 0.95, 0.9],
            &[0.01, 0.3, 0.45, 0.9],
            &[0.8; 20],
            &[0.35, 0.6, 0.61, 0.2, 0.99, 0.01],
        ];
        for probs in cases {
            let c = combine(probs);
            assert!(
                (c.probability - textbook(probs)).abs() < 1e-9,
                "{probs:?}: {c:?} vs {}",
                textbook(probs)
            );
        }
    }

    #[test]
    fn log_odds_keep_order_where_the_probability_saturates() {
        let strong: Vec<f64> = vec![0.99; 100];
        let stronger: Vec<f64> = vec![0.999; 100];
        let (a, b) = (combine(&strong), combine(&stronger));
        assert_eq!(
            (a.probability, b.probability),
            (1.0, 1.0),
            "both saturate in f64"
        );
        assert!(a.log_odds.is_finite() && b.log_odds.is_finite());
        assert!(b.log_odds > a.log_odds && a.log_odds > 30.0, "{a:?} {b:?}");
        let mirrored: Vec<f64> = vec![0.01; 100];
        assert!((combine(&mirrored).log_odds + a.log_odds).abs() < 1e-6 * a.log_odds.abs());
    }

    #[test]
    fn combine_conflicting_evidence_is_unsure() {
        let p = combine(&[0.99, 0.01, 0.99, 0.01]);
        assert!((p.probability - 0.5).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn token_probability_shrinks_rare_tokens_to_the_prior() {
        let p = Params::default();
        let once = token_probability(1, 0, 10, 10, 1.0, &p);
        let often = token_probability(50, 0, 100, 100, 1.0, &p);
        assert!(once > 0.5 && once < often, "{once} {often}");
        // Graham's class normalisation: seen in every spam and every ham is neutral
        // however unbalanced the classes.
        assert!((token_probability(100, 10, 100, 10, 1.0, &p) - 0.5).abs() < 1e-12);
        assert_eq!(token_probability(0, 0, 10, 10, 1.0, &p), p.prior);
    }

    #[test]
    fn while_a_class_is_empty_a_token_is_shrunk_with_robinsons_own_strength() {
        let p = Params::default();
        // One spam, no ham: seen once, 0.75 (s = 1), not 0.95 (s = 0.1).
        assert_eq!(token_probability(64, 0, 64, 0, 64.0, &p), 0.75);
        // The mirror case alike.
        assert_eq!(token_probability(0, 64, 0, 64, 64.0, &p), 0.25);
        // Both classes known: the body's s, as before.
        let both = token_probability(64, 0, 64, 64, 64.0, &p);
        assert_eq!(both, (0.1 * 0.5 + 1.0) / 1.1);
        // Turned off, or a larger s already: the larger one.
        let off = Params {
            one_sided_strength: 0.0,
            ..Params::default()
        };
        assert_eq!(token_probability(64, 0, 64, 0, 64.0, &off), both);
        let strong = Params {
            strength: 3.0,
            ..Params::default()
        };
        assert_eq!(strength(64, 0, &strong), 3.0);
    }

    #[test]
    fn untrained_model_is_neutral() {
        let s = Model::default().score(&[TokenId(1)], &Params::default());
        assert_eq!(s, Score::NEUTRAL);
    }

    #[test]
    fn trained_model_separates() {
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..20).map(TokenId).collect();
        let ham: Vec<TokenId> = (100..120).map(TokenId).collect();
        for _ in 0..5 {
            m.learn(&spam, Label::Spam);
            m.learn(&ham, Label::Ham);
        }
        let p = Params::default();
        assert!(m.score(&spam, &p).probability > 0.99);
        assert!(m.score(&ham, &p).probability < 0.01);
        let s = m.score(&[TokenId(0), TokenId(999)], &p);
        assert_eq!((s.tokens_known, s.tokens_used), (1, 1));
    }

    #[test]
    fn at_most_max_tokens_are_combined() {
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..500).map(TokenId).collect();
        m.learn(&spam, Label::Spam);
        m.learn(&[TokenId(9999)], Label::Ham);
        let params = Params {
            max_tokens: 150,
            ..Params::default()
        };
        let s = m.score(&spam, &params);
        assert_eq!(s.tokens_used, 150);
        assert_eq!(s.tokens_known, 500);
    }

    fn range(r: std::ops::Range<u64>) -> Vec<TokenId> {
        r.map(TokenId).collect()
    }

    #[test]
    fn spam_only_training_leaves_unlike_mail_neutral_and_catches_copies() {
        // Tokens 0..30 are words every message has (function words, the
        // provider's relay headers); each spam adds its own 40.
        let p = Params::default();
        let mut m = Model::default();
        for n in 1..=100u64 {
            let spam: Vec<TokenId> = range(0..30)
                .into_iter()
                .chain(range(1000 * n..1000 * n + 40))
                .collect();
            m.learn(&spam, Label::Spam);
            if [1, 20, 100].contains(&n) {
                // A ham: the common words and 150 of its own.
                let ham: Vec<TokenId> = range(0..30)
                    .into_iter()
                    .chain(range(500_000..500_150))
                    .collect();
                let h = m.score(&ham, &p);
                assert_ne!(
                    verdict(h.probability, Cutoffs::of(&p)),
                    Verdict::Spam,
                    "{n}: {h:?}"
                );
                // A copy of the last spam with two new tokens.
                let mut copy = spam.clone();
                copy.extend(range(900_000..900_002));
                let s = m.score(&copy, &p);
                assert_eq!(
                    verdict(s.probability, Cutoffs::of(&p)),
                    Verdict::Spam,
                    "{n}: {s:?}"
                );
            }
        }
    }

    /// The trap of "Session 29" (docs/ACCURACY.md): a mailbox that opens
    /// with spam, a user who clicks some of it, and a ham side made of the
    /// few spam the model let through, which lack the words every mail
    /// has. Without the pooled prior on the ham rate those words read as
    /// certain spam and the first real ham goes to the spam folder.
    #[test]
    fn a_few_delivered_ham_do_not_make_the_words_they_lack_certain_spam() {
        let spam = |n: u64| -> Vec<TokenId> {
            range(0..30)
                .into_iter()
                .chain(range(1000 * n..1000 * n + 40))
                .collect()
        };
        let let_through = |n: u64| range(200_000 + 100 * n..200_000 + 100 * n + 50);
        let (mut delivered, mut clicked) = (Model::default(), Model::default());
        for n in 1..=10 {
            delivered.learn(&spam(n), Label::Spam);
            clicked.learn(&spam(n), Label::Spam);
        }
        for n in 0..4 {
            delivered.learn_delivered(&let_through(n), Weight::FULL);
            clicked.learn(&let_through(n), Label::Ham);
        }
        let p = Params::default();
        let off = Params {
            thin_ham_pool: 0.0,
            ..Params::default()
        };
        let everyday = TokenId(0);
        let unit = f64::from(Weight::FULL.0);
        // As the score estimates it (`PartParams::for_user`, as the blend and
        // the explanation do).
        let f = |m: &Model, p: &Params| {
            let c = m.get(everyday)?;
            let (nspam, nham) = m.weights();
            let parts = PartParams::for_user(m, p);
            Some(token_probability(
                c.spam,
                c.ham,
                nspam,
                nham,
                unit,
                parts.body(),
            ))
        };
        // 50 · 10 / (10 + 4) messages of mail at the pooled rate, but
        // never more than the ham side's own 4.
        let pool = ham_prior_weight(&delivered, &p) / unit;
        assert_eq!(pool, 4.0);
        let (with, without) = (f(&delivered, &p), f(&delivered, &off));
        assert!(without.is_some_and(|f| f > 0.99), "{without:?}");
        // Its spam rate 1 against a ham rate of half its pooled 10/14.
        assert!(with.is_some_and(|f| f < 0.75), "{with:?}");
        // A user whose ham was clicked is believed: as without the prior.
        assert_eq!(ham_prior_weight(&clicked, &p), 0.0);
        assert_eq!(
            f(&clicked, &p).map(f64::to_bits),
            f(&delivered, &off).map(f64::to_bits)
        );
        // The first real ham: the everyday words, ten words one of the
        // let-through messages also showed (the user's name, their
        // provider's footer) and 150 of its own. Without the prior the
        // everyday words make it spam; with it, it is unsure.
        let ham: Vec<TokenId> = range(0..30)
            .into_iter()
            .chain(range(200_000..200_010))
            .chain(range(500_000..500_150))
            .collect();
        let (with, without) = (delivered.score(&ham, &p), delivered.score(&ham, &off));
        assert_eq!(
            verdict(without.probability, Cutoffs::of(&off)),
            Verdict::Spam,
            "{without:?}"
        );
        assert_ne!(
            verdict(with.probability, Cutoffs::of(&p)),
            Verdict::Spam,
            "{with:?}"
        );
        // The prior fades as delivered ham comes in: after 1,000, half a
        // message's weight.
        for n in 4..1000 {
            delivered.learn_delivered(&let_through(n), Weight::DELIVERED);
        }
        let nham = delivered.weights().1;
        let mean = nham as f64 / delivered.ham_learned() as f64;
        let pool = ham_prior_weight(&delivered, &p) / mean;
        assert!((pool - 500.0 / 1010.0).abs() < 1e-9, "{pool}");
    }

    #[test]
    fn ham_only_training_does_not_clear_unlike_mail() {
        let p = Params::default();
        let mut m = Model::default();
        for n in 1..=20u64 {
            let ham: Vec<TokenId> = range(0..30)
                .into_iter()
                .chain(range(1000 * n..1000 * n + 40))
                .collect();
            m.learn(&ham, Label::Ham);
        }
        let spam: Vec<TokenId> = range(0..30)
            .into_iter()
            .chain(range(700_000..700_150))
            .collect();
        let s = m.score(&spam, &p);
        assert_ne!(
            verdict(s.probability, Cutoffs::of(&p)),
            Verdict::Ham,
            "{s:?}"
        );
        assert!(m.score(&range(1000..1040), &p).probability < 0.01);
    }

    /// A list's ham relaying spam text: 400 body tokens seen only in spam,
    /// 20 header tokens (the list's relays and headers) seen only in ham.
    fn relayed_spam() -> (Model, Vec<TokenId>, Vec<TokenId>) {
        let mut m = Model::default();
        for _ in 0..10 {
            m.learn(&range(0..400), Label::Spam);
            m.learn(&range(1000..1020), Label::Ham);
        }
        let ids: Vec<TokenId> = range(0..400).into_iter().chain(range(1000..1020)).collect();
        (m, ids, range(1000..1020))
    }

    #[test]
    fn pooled_header_evidence_is_drowned_by_a_long_body() {
        let (m, ids, header) = relayed_spam();
        let p = Params {
            parts: Parts::Pooled,
            ..pooled_defaults()
        };
        assert!(score_parts(&m, &ids, &header, &p).log_odds > 100.0);
    }

    #[test]
    fn parts_weighed_apart_leave_confident_disagreement_unsure() {
        let (m, ids, header) = relayed_spam();
        for parts in [Parts::Mix { header: 0.5 }, Parts::Fisher] {
            // Every message in two parts (acc9's rule), not only a
            // confident disagreement (the veto).
            let p = Params {
                parts,
                header_veto_at: 0.0,
                ..pooled_defaults()
            };
            let s = score_parts(&m, &ids, &header, &p);
            assert_eq!(
                verdict(s.probability, Cutoffs::of(&p)),
                Verdict::Unsure,
                "{parts:?}: {s:?}"
            );
            assert_eq!(s.tokens_used, 420);
            // Spam through spam relays is still spam, ordered beyond
            // f64's resolution of the probability.
            let mut spammy = m.clone();
            for _ in 0..10 {
                spammy.learn(&range(2000..2020), Label::Spam);
            }
            let spam: Vec<TokenId> = range(0..400).into_iter().chain(range(2000..2020)).collect();
            let s = score_parts(&spammy, &spam, &range(2000..2020), &p);
            assert!(s.log_odds > 40.0, "{parts:?}: {s:?}");
        }
    }

    #[test]
    fn two_parts_combined_by_fisher_cap_spam_at_about_twice_the_weaker_part() {
        // Why `header_veto_at` exists: chi-square over two "tokens" needs
        // both to be extreme, so a spam whose header is only mildly spammy
        // ranks by its header, however spammy its body.
        let both = combine_log_odds(&[5.0, 300.0]);
        assert!(both.log_odds < 12.0, "{both:?}");
        let neutral_header = combine_log_odds(&[0.0, 300.0]);
        assert!(neutral_header.log_odds < 3.0, "{neutral_header:?}");
    }

    #[test]
    fn the_header_vetoes_only_a_confident_disagreement() {
        let (m, ids, header) = relayed_spam();
        let veto = Params {
            parts: Parts::Fisher,
            header_veto_at: 5.0,
            ..pooled_defaults()
        };
        // Hammy list header, spammy body: unsure, as without the rule.
        let s = score_parts(&m, &ids, &header, &veto);
        assert_eq!(
            verdict(s.probability, Cutoffs::of(&veto)),
            Verdict::Unsure,
            "{s:?}"
        );
        // Spam through spam relays: the parts agree, so the pooled score
        // stands (the two-part rule would cap it near twice the header's).
        let mut spammy = m.clone();
        for _ in 0..10 {
            spammy.learn(&range(2000..2020), Label::Spam);
        }
        let spam: Vec<TokenId> = range(0..400).into_iter().chain(range(2000..2020)).collect();
        let pooled = score(&spammy, &spam, &pooled_defaults());
        let vetoed = score_parts(&spammy, &spam, &range(2000..2020), &veto);
        assert!(
            (vetoed.log_odds - pooled.log_odds).abs() < 1e-9 * pooled.log_odds.abs(),
            "{vetoed:?} {pooled:?}"
        );
        let apart = Params {
            header_veto_at: 0.0,
            ..veto.clone()
        };
        assert!(score_parts(&spammy, &spam, &range(2000..2020), &apart).log_odds < pooled.log_odds);
    }

    #[test]
    fn a_header_too_weak_to_veto_scores_as_pooled_without_the_body_statistic() {
        // The list ham relaying spam text: certain spam pooled, unsure
        // with the veto.
        let (m, ids, header) = relayed_spam();
        let pooled = Params {
            parts: Parts::Pooled,
            ..pooled_defaults()
        };
        assert!(score_parts(&m, &ids, &header, &pooled).log_odds > 100.0);
        let p = Params {
            parts: Parts::Fisher,
            header_veto_at: 5.0,
            ..pooled_defaults()
        };
        let s = score_parts(&m, &ids, &header, &p);
        assert_eq!(
            verdict(s.probability, Cutoffs::of(&p)),
            Verdict::Unsure,
            "{s:?}"
        );
        // A header too weak to veto: the pooled score (its items in the
        // order body, header), without the body's own statistic.
        let mut weak = m.clone();
        for _ in 0..10 {
            weak.learn(&range(1000..1020), Label::Spam);
        }
        let s = score_parts(&weak, &ids, &header, &p);
        let all = score_parts(&weak, &ids, &header, &pooled);
        assert!(
            (s.log_odds - all.log_odds).abs() < 1e-9 * all.log_odds.abs(),
            "{s:?} {all:?}"
        );
        assert_eq!(s.tokens_used, all.tokens_used);
    }

    #[test]
    fn an_untrusted_header_scores_as_pooled() {
        let (m, ids, header) = relayed_spam();
        let p = Params {
            parts: Parts::Fisher,
            header_trust_at: f64::INFINITY,
            header_veto_at: 0.0,
            ..pooled_defaults()
        };
        let pooled = score(&m, &ids, &pooled_defaults());
        let s = score_parts(&m, &ids, &header, &p);
        assert!(
            (s.log_odds - pooled.log_odds).abs() < 1e-9 * pooled.log_odds.abs(),
            "{s:?} {pooled:?}"
        );
    }

    #[test]
    fn a_message_without_header_tokens_scores_as_pooled_bit_for_bit() {
        let (m, ids, _) = relayed_spam();
        let pooled = score(&m, &ids, &pooled_defaults());
        let really_pooled = Params {
            parts: Parts::Pooled,
            ..pooled_defaults()
        };
        assert_eq!(score_parts(&m, &ids, &[], &really_pooled), pooled);
        for parts in [Parts::Mix { header: 0.5 }, Parts::Fisher] {
            let p = Params {
                parts,
                ..pooled_defaults()
            };
            assert_eq!(score_parts(&m, &ids, &[], &p), pooled);
            // Header tokens that say nothing leave the body in charge.
            let unseen = range(9000..9003);
            let mut with: Vec<TokenId> = ids.clone();
            with.extend(&unseen);
            let s = score_parts(&m, &with, &unseen, &p);
            assert_eq!(s.log_odds.to_bits(), pooled.log_odds.to_bits(), "{parts:?}");
        }
    }

    /// `header_strength_ramp`: with no clicked ham the header's prior is
    /// `strength`, bit for bit, however much ham delivered mail taught;
    /// from `ramp` messages of clicked ham on it is `header_strength`.
    #[test]
    fn the_header_prior_waits_for_clicked_ham() {
        use crate::classify::Weight;
        let plain = pooled_defaults();
        let full = Params {
            header_strength: Some(0.02),
            ..pooled_defaults()
        };
        let ramp = Params {
            header_strength_ramp: 10.0,
            ..full.clone()
        };
        let mut m = Model::default();
        for i in 0..3u64 {
            m.learn(&range(i * 100..i * 100 + 30), Label::Spam);
        }
        // A spam clicker's ham side: delivered mail, at the gap rule's
        // weights (one full, the rest light), as heavy as the spam side.
        for (i, w) in [64u32, 64, 64, 3, 3, 3, 3].into_iter().enumerate() {
            let ids = range(10_000 + i as u64 * 100..10_000 + i as u64 * 100 + 30);
            m.learn_weighted(&ids, Label::Ham, Weight(w));
            m.book_delivered(Weight(w), true);
        }
        assert_eq!(m.clicked_ham_weight(), 0);
        // Header tokens seen once, in spam or in delivered ham: their `s`
        // decides how sure they are.
        let ids: Vec<TokenId> = range(0..10)
            .into_iter()
            .chain(range(10_300..10_310))
            .collect();
        let header = ids.clone();
        let bits = |p: &Params, m: &Model| score_parts(m, &ids, &header, p).log_odds.to_bits();
        assert_ne!(
            bits(&full, &m),
            bits(&plain, &m),
            "the header's s matters here"
        );
        assert_eq!(
            bits(&ramp, &m),
            bits(&plain, &m),
            "no clicked ham: s as ever"
        );
        let unit = f64::from(Weight::FULL.0);
        for n in 1..=12u64 {
            m.learn(&range(50_000 + n * 100..50_000 + n * 100 + 30), Label::Ham);
            let s = header_strength(m.clicked_ham_weight(), 0.02, unit, &ramp);
            let expected = 0.1 + (0.02 - 0.1) * (n as f64 / 10.0).min(1.0);
            assert!((s - expected).abs() < 1e-12, "{n}: {s}");
        }
        assert_eq!(bits(&ramp, &m), bits(&full, &m), "enough clicked ham");
    }

    #[test]
    fn never_seen_tokens_say_nothing_once_both_classes_are_known() {
        let p = Params::default();
        // All ham clicked. Each case below is outside the thin-ham cap
        // (see the next test): no ham, ham the thicker side or equal, or
        // ten messages' worth of ham clicked, as (100, 30) has — with 3
        // clicked ham of 100 spam the cap would still be 70 % on.
        let u = |s: u64, h: u64| unknown_probability((s, h), (s, h), h, 1.0, &p);
        assert_eq!(u(0, 0), 0.5);
        assert_eq!(u(500, 500), 0.5);
        assert!(u(1, 0) < 0.3);
        assert!(u(0, 1) > 0.7);
        // Unbalanced but both known: within the dead zone.
        for (s, h) in [(3, 100), (100, 30), (2, 2)] {
            let u = u(s, h);
            assert!((u - 0.5).abs() < p.min_dev, "{s} {h}: {u}");
        }
        let mut m = Model::default();
        for i in 0..3u64 {
            m.learn(&range(i * 100..i * 100 + 30), Label::Spam);
            m.learn(&range(10_000 + i * 100..10_000 + i * 100 + 30), Label::Ham);
        }
        let msg = range(0..30);
        let with_novel: Vec<TokenId> = msg.iter().copied().chain(range(90_000..90_500)).collect();
        assert_eq!(
            m.score(&msg, &p).log_odds.to_bits(),
            m.score(&with_novel, &p).log_odds.to_bits()
        );
    }

    /// Session 14's defaults: header and body pooled, one prior for both;
    /// what the header rules are measured against.
    fn pooled_defaults() -> Params {
        Params {
            parts: Parts::Pooled,
            header_veto_at: 0.0,
            header_strength: None,
            header_strength_ramp: 0.0,
            ..Params::default()
        }
    }

    /// Estimates in (0, 1) either side of the dead zone, some extreme,
    /// from a seed: what [`Split::combine`] sees after `min_dev`.
    fn estimates(len: usize, seed: u64, spammy: f64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let side = if u < spammy { 1.0 } else { -1.0 };
                let depth = ((x >> 3) % 1000) as f64 / 1000.0;
                0.5 + side * (0.2 + 0.2999999 * depth * depth)
            })
            .collect()
    }

    /// The three statistics the veto needs, each combined apart over its
    /// own items (`combine_dropping`, the item-by-item way), and the
    /// result [`Split::combine`] must give from them.
    fn veto_reference(
        body: &[f64],
        header: &[f64],
        unknowns: [usize; 2],
        unknown: f64,
        p: &Params,
    ) -> (f64, bool) {
        let apart = |items: &[f64], n: usize| {
            combine_dropping(&mut items.to_vec(), n, unknown, p, |f| *f, |f| f)
        };
        let all: Vec<f64> = body.iter().chain(header).copied().collect();
        let pooled = apart(&all, unknowns[0] + unknowns[1]);
        let (b, h) = (apart(body, unknowns[0]), apart(header, unknowns[1]));
        let vetoed = !body.is_empty()
            && !header.is_empty()
            && h.log_odds * b.log_odds < 0.0
            && h.log_odds.abs() >= p.header_veto_at
            && b.log_odds.abs() >= p.header_veto_at;
        // A thin header's two-part result is mixed with the pooled one.
        let say = (header.len() as f64 / p.header_full_at.max(1) as f64).min(1.0);
        let log_odds = match (vetoed, say < 1.0) {
            (false, _) => pooled.log_odds,
            (true, false) => combine_log_odds(&[h.log_odds, b.log_odds]).log_odds,
            (true, true) => {
                let both = combine_log_odds(&[h.log_odds, b.log_odds]);
                mix(both.log_odds, pooled.log_odds, say).log_odds
            }
        };
        (log_odds, vetoed)
    }

    #[test]
    fn a_delivered_ham_side_thinner_than_the_spam_side_keeps_never_seen_tokens_hammy() {
        let p = Params::default();
        // Every message here is 200 words deep, so words and messages
        // agree (the next test has them disagree).
        let unknown = |s: u64, h: u64, clicked: u64, p: &Params| {
            unknown_probability((s, h), (200 * s, 200 * h), clicked, 1.0, p)
        };
        let laplace = |s: f64, h: f64| 0.5 + (1.0 / (s + 1.0) - 1.0 / (h + 1.0)) / 2.0;
        // 100 spam clicked, 12 ham delivered: Laplace says "known"
        // (within the dead zone), Heaps' form 1 / (1 + √(100/12)) says ham.
        let heaps = 1.0 / (1.0 + (100.0f64 / 12.0).sqrt());
        let delivered = unknown(100, 12, 0, &p);
        assert!((delivered - heaps).abs() < 1e-12, "{delivered}");
        assert!((delivered - 0.5).abs() >= p.min_dev);
        assert!((laplace(100.0, 12.0) - 0.5).abs() < p.min_dev);
        // Ten of the 12 clicked (the ramp's end): Laplace's form alone.
        assert_eq!(unknown(100, 12, 10, &p), laplace(100.0, 12.0));
        // Half way up the ramp (5 of 10 messages clicked): half way between.
        let half = unknown(100, 12, 5, &p);
        let expected = (laplace(100.0, 12.0) + heaps) / 2.0;
        assert!((half - expected).abs() < 1e-12, "{half} {expected}");
        // Never spam-wards (ham the thicker side); at no ham, Laplace's
        // own one-sided estimate; neutral with equal sides; off when off.
        assert_eq!(unknown(4, 100, 0, &p), laplace(4.0, 100.0));
        assert_eq!(unknown(100, 0, 0, &p), laplace(100.0, 0.0));
        assert_eq!(unknown(30, 30, 0, &p), 0.5);
        let off = Params {
            thin_ham_exponent: 0.0,
            ..Params::default()
        };
        assert_eq!(unknown(100, 12, 0, &off), laplace(100.0, 12.0));
        let nan = Params {
            thin_ham_exponent: f64::NAN,
            ..Params::default()
        };
        assert_eq!(unknown(100, 12, 0, &nan), laplace(100.0, 12.0));
        // In weight units, as the model counts.
        let full = u64::from(super::super::Weight::FULL.0);
        let w = |n: u64| n * full;
        assert_eq!(
            unknown_probability(
                (w(100), w(12)),
                (w(20_000), w(2_400)),
                w(5),
                full as f64,
                &p
            )
            .to_bits(),
            half.to_bits()
        );
    }

    #[test]
    fn a_ham_side_as_deep_in_messages_but_not_in_words_keeps_never_seen_tokens_hammy() {
        // enron1 after one *Spam* click: the first ham delivered is a
        // subject line with an empty body, learned at the spam side's
        // weight. By messages the sides are equal and Laplace says
        // nothing; by words the ham side is a fifteenth of the spam's.
        let p = Params::default();
        let by_messages = unknown_probability((64, 64), (64 * 150, 64 * 150), 0, 64.0, &p);
        assert_eq!(by_messages, 0.5);
        let by_words = unknown_probability((64, 64), (64 * 150, 64 * 10), 0, 64.0, &p);
        let heaps = 1.0 / (1.0 + 15.0f64.sqrt());
        assert!((by_words - heaps).abs() < 1e-12, "{by_words}");
        assert!(0.5 - by_words >= p.min_dev, "significant: {by_words}");
        // Ham deeper in words than spam: never spam-wards.
        let deep = unknown_probability((64, 64), (64 * 10, 64 * 150), 0, 64.0, &p);
        assert_eq!(deep, 0.5);
        // Ham heavier in messages (Laplace above 0.5) but thinner in
        // words: the cap, the lower; where the words meet, Laplace's
        // again, a step inside the dead zone at five to one.
        let laplace = unknown_probability((64, 5 * 64), (1, 1), 0, 64.0, &p);
        assert!(laplace > 0.5 && laplace - 0.5 < p.min_dev, "{laplace}");
        let heavier = unknown_probability((64, 5 * 64), (64 * 150, 64 * 10), 0, 64.0, &p);
        assert!((heavier - heaps).abs() < 1e-12, "{heavier}");
        let meeting = unknown_probability((64, 5 * 64), (1_000_000, 1_000_000), 0, 64.0, &p);
        assert_eq!(meeting, laplace);
        // Ham with no word at all reads as no ham (Laplace's form).
        assert_eq!(unknown_probability((64, 64), (640, 0), 0, 64.0, &p), 0.5);
    }

    #[test]
    fn shared_sums_give_each_statistic_bit_for_bit_as_combined_apart() {
        // Pooled and veto alike, messages that fit `max_tokens` and
        // messages that do not, unknowns that agree with the known tokens,
        // that cancel them, and none.
        let veto = Params {
            parts: Parts::Fisher,
            header_veto_at: 5.0,
            max_tokens: 300,
            ..Params::default()
        };
        let (mut checked, mut vetoed) = ([0usize; 2], 0);
        for seed in 0..400u64 {
            let body = estimates(5 + (seed as usize * 7) % 400, seed, (seed % 5) as f64 / 4.0);
            let header = estimates(
                1 + (seed as usize) % 40,
                seed + 1000,
                ((seed / 5) % 3) as f64 / 2.0,
            );
            let unknown = [0.05, 0.5, 0.95, 0.2][(seed % 4) as usize];
            let unknowns = [(seed as usize * 13) % 700, (seed as usize * 3) % 60];
            // One part alone, as a pooled message is combined.
            let mut items = body.clone();
            let summed =
                combine_with_unknowns(&mut items, unknowns[0], unknown, &veto, |f| *f, |f| f);
            let mut reference = body.clone();
            let apart =
                combine_dropping(&mut reference, unknowns[0], unknown, &veto, |f| *f, |f| f);
            assert_eq!(
                summed.log_odds.to_bits(),
                apart.log_odds.to_bits(),
                "seed {seed}"
            );
            assert_eq!(
                items.len(),
                reference.len(),
                "seed {seed}: the items combined"
            );
            checked[usize::from(fits(body.len(), unknowns[0], unknown, &veto))] += 1;
            // Both parts, under the veto.
            let mut split = Split::<f64>::new(body.len() + header.len(), &[], &veto);
            split.pooled = false;
            split.significant = [body.clone(), header.clone()];
            split.unknowns = unknowns;
            let (got, _) = split.combine(unknown, &veto, |f| *f, |f| f);
            let (expected, v) = veto_reference(&body, &header, unknowns, unknown, &veto);
            assert_eq!(
                got.log_odds.to_bits(),
                expected.to_bits(),
                "seed {seed}: veto"
            );
            vetoed += usize::from(v);
        }
        // Both ways were taken: from the sums, and dropping items.
        assert!(checked[0] > 20 && checked[1] > 20, "{checked:?}");
        assert!(vetoed > 20, "the veto itself: {vetoed} of 400");
    }

    #[test]
    fn the_sums_sign_is_the_statistics_sign() {
        for seed in 0..2000u64 {
            let items = estimates(1 + (seed as usize) % 900, seed, 0.5);
            let sums = Sums::over(&items, |f| *f);
            let c = sums.combined();
            if let Some(spam) = sums.sign() {
                assert_eq!(spam, c.log_odds > 0.0, "seed {seed}: {c:?}");
            }
        }
        // Too close to call: a tie.
        assert_eq!(Sums::over(&[0.3, 0.7], |f| *f).sign(), None);
        // With never-seen tokens, agreeing or cancelling.
        let p = Params::default();
        let mut cancelled = 0;
        for seed in 0..2000u64 {
            let items = estimates(1 + (seed as usize) % 300, seed, (seed % 3) as f64 / 2.0);
            let sums = Sums::over(&items, |f| *f);
            let (unknown, unknowns) =
                ([0.05, 0.95][(seed % 2) as usize], (seed as usize * 7) % 900);
            let (c, _) = from_sums(sums, unknowns, unknown, &p);
            cancelled += usize::from(c.log_odds.abs() < 1.0);
            if let Some(spam) = Sums::sign_with_unknowns(sums, unknowns, unknown, &p) {
                assert_eq!(spam, c.log_odds > 0.0, "seed {seed}: {c:?}");
            }
        }
        assert!(cancelled > 50, "cancellations: {cancelled}");
    }
}

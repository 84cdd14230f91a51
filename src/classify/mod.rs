//! Per-user statistics and the score computed from them. Pure: no I/O, no
//! locks, no allocation per token — this is the scoring hot path.
//!
//! The math (Robinson's per-token estimate and Fisher's chi-square
//! combining) lives in [`robinson`]; this file holds the data it reads.

pub mod blend;
pub mod grams;
pub mod prune;
pub mod robinson;
pub mod shared;

use rustc_hash::FxHashMap;

use crate::tokenize::{TOKENIZER_VERSION, TokenId, Tokens};
use crate::types::{Label, Verdict};

pub use blend::Blended;
pub use robinson::{Params, Parts, Score};
pub use shared::{Prior, SharedModel};

/// How much learned spam and ham contained a token, in [`Weight`] units
/// (a normal click adds [`Weight::FULL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub spam: u32,
    pub ham: u32,
}

impl Counts {
    fn get_mut(&mut self, label: Label) -> &mut u32 {
        match label {
            Label::Spam => &mut self.spam,
            Label::Ham => &mut self.ham,
        }
    }
}

/// A message's strongest spam and ham tokens with their f(w), strongest
/// first (see [`Model::strongest`]).
pub type Strongest = (Vec<(TokenId, f64)>, Vec<(TokenId, f64)>);

/// How much one learned message counts, in fixed point: [`Weight::FULL`]
/// is one message. Integer units keep learn and unlearn exact inverses
/// (floating-point weights would drift under relearn/Forget). A click is
/// `FULL`, except: a spam click on a trusted sender's mail is `LOW` — it is
/// recorded, but moves the model an eighth as far (delivery policy) — and
/// a click on mail the model already scored confidently right is `LIGHT`
/// ([`learn_weight`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(pub u32);

impl Weight {
    /// One message. A power of two, so `n` in Robinson's f(w) (units over
    /// `FULL`) is exact for full-weight counts.
    pub const FULL: Weight = Weight(64);
    /// An eighth of a message.
    pub const LOW: Weight = Weight(8);
    /// About a twentieth of a message: docs/ACCURACY.md, "Weighted learning".
    pub const LIGHT: Weight = Weight(3);
    /// The least a delivered message the user did not click weighs when
    /// learned as ham (`Engine::learn_delivered`): as light as a confident
    /// click, so a spam the user let pass unreported moves the model a
    /// twentieth as far as a click does. docs/ACCURACY.md, "Learning from
    /// delivered mail", has the measurements behind the value.
    pub const DELIVERED: Weight = Weight(3);

    /// The weight as a fraction of one message.
    pub fn messages(self) -> f64 {
        f64::from(self.0) / f64::from(Self::FULL.0)
    }
}

/// A token id as the model's map stores it: two 32-bit halves, so a map
/// entry (key, counts, last seen) is 20 bytes with 4-byte alignment rather
/// than 24 with a `u64` key — the recency stamp costs 4 bytes per token in
/// memory instead of 8 (docs/PERFORMANCE.md, "Quota and expiry").
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u32; 2]);

impl Key {
    #[inline]
    fn of(id: TokenId) -> Key {
        Key([(id.0 >> 32) as u32, id.0 as u32])
    }

    #[inline]
    fn id(self) -> TokenId {
        TokenId((u64::from(self.0[0]) << 32) | u64::from(self.0[1]))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id().fmt(f)
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.id().0);
    }
}

/// A token's counts and when it was last learned ([`Model::clock`] at that
/// learn), what pruning reads ([`prune`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) counts: Counts,
    pub(crate) seen: u32,
}

/// One user's statistics: per-token weighted counts, the weight learned per
/// class, and how many messages that was. Learning and unlearning are exact
/// inverses on integers, which is what makes relearn and Forget exact.
///
/// Each token also carries when it was last learned, on a logical clock
/// that counts learns ([`Model::clock`]): pruning a model past its quota
/// drops the weak tokens that were seen longest ago first ([`prune`]).
/// Recency is bookkeeping, not statistics: two models with the same counts
/// are equal (`==`) whatever their clocks.
#[derive(Clone, Debug)]
pub struct Model {
    spam_learned: u64,
    ham_learned: u64,
    /// Sums of the learned messages' weights per class (units of
    /// [`Weight`]); the per-token ratios are taken against these.
    spam_weight: u64,
    ham_weight: u64,
    /// The part of `ham_weight` learned from delivered mail the user did
    /// not click (`Engine::learn_delivered`) rather than from *Not spam*
    /// clicks: what tells a user who teaches chaff their ham from one who
    /// only clicks spam, whose ham side the delivered-mail learning keeps
    /// as heavy as the spam side (docs/ACCURACY.md, "Session 14"). Changed
    /// only by the ops that change the counts
    /// ([`Op::LearnDelivered`](crate::store::Op::LearnDelivered) and its
    /// undoing), so it is stored wherever they are: in the snapshot (store
    /// format 8) and in the journal's marked ops, on sled and on Redis.
    /// Never above `ham_weight` (an unlearned click lowers it with the
    /// ham weight): a model stored before format 8 reads with all its ham
    /// delivered, the safe reading for [`Params::header_strength_ramp`],
    /// which reads it; [`Params::thin_ham_ramp`] reads it too, and for it
    /// the reading gives an upgraded user the thin-ham cap until they
    /// click ten ham (`robinson::unknown_probability`); so does
    /// [`Params::thin_ham_pool`], which gives them the pooled prior on
    /// their ham rate until their ham messages make it small
    /// (`robinson::ham_prior_weight`).
    delivered_ham: u64,
    /// Each class's token mass: the sum of that class's counts over every
    /// token the model holds (units of [`Weight`]), kept by every change to
    /// the counts and derived when a model is rebuilt, so never stored.
    /// How deep the model knows a class in words rather than messages
    /// (`robinson::unknown_probability`): a message with an empty body
    /// counts as one message but shows almost none of its class's words.
    mass: (u64, u64),
    tokens: FxHashMap<Key, Entry>,
    /// The tokenizer version these statistics were built with.
    tokenizer_version: u32,
    /// Learns so far (never decreases, saturates): the time a token's
    /// `seen` stamp is read against.
    clock: u32,
}

impl PartialEq for Model {
    fn eq(&self, other: &Self) -> bool {
        self.spam_learned == other.spam_learned
            && self.ham_learned == other.ham_learned
            && self.spam_weight == other.spam_weight
            && self.ham_weight == other.ham_weight
            && self.tokenizer_version == other.tokenizer_version
            && self.mass == other.mass
            && self.tokens.len() == other.tokens.len()
            && self
                .tokens
                .iter()
                .all(|(k, e)| other.tokens.get(k).is_some_and(|o| o.counts == e.counts))
    }
}

impl Eq for Model {}

impl Default for Model {
    fn default() -> Self {
        Self {
            spam_learned: 0,
            ham_learned: 0,
            spam_weight: 0,
            ham_weight: 0,
            delivered_ham: 0,
            mass: (0, 0),
            tokens: FxHashMap::default(),
            tokenizer_version: TOKENIZER_VERSION,
            clock: 0,
        }
    }
}

impl Model {
    /// Rebuilds a model from stored parts (the store's snapshot decoder).
    pub fn from_parts(
        (spam_learned, ham_learned): (u64, u64),
        (spam_weight, ham_weight): (u64, u64),
        tokenizer_version: u32,
        tokens: impl IntoIterator<Item = (TokenId, Counts)>,
    ) -> Self {
        Self::from_stamped_parts(
            (spam_learned, ham_learned),
            (spam_weight, ham_weight),
            tokenizer_version,
            0,
            tokens.into_iter().map(|(id, c)| (id, c, 0)),
        )
    }

    /// [`Model::from_parts`] with the recency bookkeeping: the clock and
    /// each token's last-seen stamp (the store's snapshot decoder).
    pub fn from_stamped_parts(
        (spam_learned, ham_learned): (u64, u64),
        (spam_weight, ham_weight): (u64, u64),
        tokenizer_version: u32,
        clock: u32,
        tokens: impl IntoIterator<Item = (TokenId, Counts, u32)>,
    ) -> Self {
        Self {
            spam_learned,
            ham_learned,
            spam_weight,
            ham_weight,
            delivered_ham: 0,
            mass: (0, 0),
            tokens: tokens
                .into_iter()
                .map(|(id, counts, seen)| (Key::of(id), Entry { counts, seen }))
                .collect(),
            tokenizer_version,
            clock,
        }
        .with_mass()
    }

    /// The model with [`Model::mass`] summed from its tokens.
    fn with_mass(mut self) -> Self {
        self.resum_mass();
        self
    }

    /// Sums [`Model::mass`] afresh from the tokens held.
    fn resum_mass(&mut self) {
        self.mass = self.capped_mass(u32::MAX);
    }

    /// The token mass (spam, ham) with each token's count capped at `cap`:
    /// [`Model::mass`] uncapped, and what a contributor's part adds to the
    /// shared model's (`shared.rs`, whose per-token cap it is).
    pub(crate) fn capped_mass(&self, cap: u32) -> (u64, u64) {
        self.tokens.values().fold((0, 0), |(s, h), e| {
            (
                s + u64::from(e.counts.spam.min(cap)),
                h + u64::from(e.counts.ham.min(cap)),
            )
        })
    }

    /// Each class's token mass (spam, ham), units of [`Weight`]: the sum
    /// of the class's counts over every token held.
    pub fn mass(&self) -> (u64, u64) {
        self.mass
    }

    /// One class's [`Model::mass`].
    fn mass_mut(&mut self, label: Label) -> &mut u64 {
        match label {
            Label::Spam => &mut self.mass.0,
            Label::Ham => &mut self.mass.1,
        }
    }

    /// Takes a dropped token's counts out of the mass.
    fn unmass(&mut self, counts: Counts) {
        self.mass.0 = self.mass.0.saturating_sub(u64::from(counts.spam));
        self.mass.1 = self.mass.1.saturating_sub(u64::from(counts.ham));
    }

    /// Learns so far, on the clock the tokens' last-seen stamps use.
    pub fn clock(&self) -> u32 {
        self.clock
    }

    /// When `id` was last learned ([`Model::clock`] at that learn).
    pub fn seen(&self, id: TokenId) -> Option<u32> {
        self.tokens.get(&Key::of(id)).map(|e| e.seen)
    }

    /// Every (token, counts, last seen), in no particular order.
    pub fn iter_stamped(&self) -> impl Iterator<Item = (TokenId, Counts, u32)> + '_ {
        self.tokens.iter().map(|(k, e)| (k.id(), e.counts, e.seen))
    }

    /// Sets one class's count of a token (stamped now when it grows),
    /// dropping a token left with none, so equal states are equal maps (the
    /// shared model's exact sums, `shared.rs`).
    pub(crate) fn set_count(&mut self, id: TokenId, label: Label, value: u32) {
        let now = self.clock;
        let entry = self.tokens.entry(Key::of(id)).or_default();
        let c = entry.counts.get_mut(label);
        let old = *c;
        if value > *c {
            entry.seen = now;
        }
        *c = value;
        if entry.counts == Counts::default() {
            self.tokens.remove(&Key::of(id));
        }
        let m = self.mass_mut(label);
        *m = (*m + u64::from(value)).saturating_sub(u64::from(old));
    }

    /// Advances the clock by one learn (the shared model's sum, which is
    /// not learned through [`Model::learn_weighted`]).
    pub(crate) fn tick(&mut self) {
        self.clock = self.clock.saturating_add(1);
    }

    /// Drops these tokens outright (pruning, [`prune`]); the class totals
    /// stay, as SpamAssassin's expiry leaves `nspam`/`nham` alone: the
    /// messages were still learned. The token mass falls with the tokens
    /// (it is the words the model holds, not the words it learned), so a
    /// prune that takes mostly lightly learned ham words makes the
    /// thin-ham cap stronger (`robinson::unknown_probability`).
    pub(crate) fn remove_tokens(&mut self, ids: &[TokenId]) {
        for id in ids {
            if let Some(e) = self.tokens.remove(&Key::of(*id)) {
                self.unmass(e.counts);
            }
        }
    }

    /// Keeps only the tokens `keep` says yes to (pruning a shared part).
    pub(crate) fn retain_tokens(&mut self, mut keep: impl FnMut(TokenId) -> bool) {
        self.tokens.retain(|k, _| keep(k.id()));
        self.resum_mass();
    }

    pub fn spam_learned(&self) -> u64 {
        self.spam_learned
    }

    pub fn ham_learned(&self) -> u64 {
        self.ham_learned
    }

    pub fn learned(&self, label: Label) -> u64 {
        match label {
            Label::Spam => self.spam_learned,
            Label::Ham => self.ham_learned,
        }
    }

    /// Total weight learned as spam and as ham (units of [`Weight`]).
    pub fn weights(&self) -> (u64, u64) {
        (self.spam_weight, self.ham_weight)
    }

    /// Ham weight the user clicked (units of [`Weight`]): the ham weight
    /// less what was learned from delivered mail (see `delivered_ham`).
    pub fn clicked_ham_weight(&self) -> u64 {
        self.ham_weight.saturating_sub(self.delivered_ham)
    }

    /// Books ham of `weight` as delivered (`learned`) or no longer
    /// counted, apart from the counts: tests that build a model by hand
    /// (the store and the engine book it through [`Model::learn_delivered`]
    /// and [`Model::unlearn_delivered`], with the counts).
    #[cfg(test)]
    pub(crate) fn book_delivered(&mut self, weight: Weight, learned: bool) {
        let w = u64::from(weight.0);
        self.delivered_ham = if learned {
            self.delivered_ham.saturating_add(w)
        } else {
            self.delivered_ham.saturating_sub(w)
        };
    }

    /// Ham weight learned from delivered mail (units of [`Weight`]): see
    /// `delivered_ham`; what a snapshot stores beside the class weights.
    pub fn delivered_ham_weight(&self) -> u64 {
        self.delivered_ham
    }

    /// Sets the delivered part of the ham weight (a snapshot's decoder;
    /// a model stored before the split was kept reads as all delivered),
    /// at most the ham weight.
    pub(crate) fn set_delivered_ham_weight(&mut self, weight: u64) {
        self.delivered_ham = weight.min(self.ham_weight);
    }

    /// Learns delivered mail: ham, booked as delivered (the op
    /// [`Op::LearnDelivered`](crate::store::Op::LearnDelivered)).
    pub fn learn_delivered(&mut self, ids: &[TokenId], weight: Weight) {
        self.learn_weighted(ids, Label::Ham, weight);
        self.delivered_ham = self.delivered_ham.saturating_add(u64::from(weight.0));
    }

    /// Exactly undoes [`Model::learn_delivered`] of the same tokens and
    /// weight.
    pub fn unlearn_delivered(&mut self, ids: &[TokenId], weight: Weight) {
        // Booked first: `unlearn_weighted` then keeps it within the ham
        // weight without cutting what this op takes away twice.
        self.delivered_ham = self.delivered_ham.saturating_sub(u64::from(weight.0));
        self.unlearn_weighted(ids, Label::Ham, weight);
    }

    /// Distinct tokens with a non-zero count.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokenizer_version(&self) -> u32 {
        self.tokenizer_version
    }

    #[inline]
    pub fn get(&self, id: TokenId) -> Option<Counts> {
        self.tokens.get(&Key::of(id)).map(|e| e.counts)
    }

    /// Every (token, counts) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (TokenId, Counts)> + '_ {
        self.tokens.iter().map(|(k, e)| (k.id(), e.counts))
    }

    /// Counts one message's distinct tokens under `label` at full weight.
    pub fn learn(&mut self, ids: &[TokenId], label: Label) {
        self.learn_weighted(ids, label, Weight::FULL);
    }

    /// Counts one message's distinct tokens under `label` with `weight`.
    pub fn learn_weighted(&mut self, ids: &[TokenId], label: Label, weight: Weight) {
        let (messages, total) = self.totals_mut(label);
        *messages += 1;
        *total = total.saturating_add(u64::from(weight.0));
        self.clock = self.clock.saturating_add(1);
        let now = self.clock;
        self.tokens.reserve(ids.len());
        let mut added = 0u64;
        for id in ids {
            let entry = self.tokens.entry(Key::of(*id)).or_default();
            entry.seen = now;
            let c = entry.counts.get_mut(label);
            let old = *c;
            *c = c.saturating_add(weight.0);
            added += u64::from(*c - old);
        }
        *self.mass_mut(label) += added;
    }

    /// Exactly undoes [`Model::learn`] of the same tokens and label.
    pub fn unlearn(&mut self, ids: &[TokenId], label: Label) {
        self.unlearn_weighted(ids, label, Weight::FULL);
    }

    /// Exactly undoes [`Model::learn_weighted`] of the same tokens, label
    /// and weight. Counts saturate at zero (they never go negative, even if
    /// a caller errs) and tokens left with no counts are dropped, so learn +
    /// unlearn restores an equal model.
    pub fn unlearn_weighted(&mut self, ids: &[TokenId], label: Label, weight: Weight) {
        let (messages, total) = self.totals_mut(label);
        *messages = messages.saturating_sub(1);
        *total = total.saturating_sub(u64::from(weight.0));
        // Exact bookkeeping keeps it within the ham weight anyway; a model
        // stored before the split (all its ham read as delivered) that
        // unlearns an old *Not spam* click needs this, or that click's
        // weight would stay "delivered" and hide a later one.
        self.delivered_ham = self.delivered_ham.min(self.ham_weight);
        let mut taken = 0u64;
        for id in ids {
            let key = Key::of(*id);
            if let Some(entry) = self.tokens.get_mut(&key) {
                let c = entry.counts.get_mut(label);
                let old = *c;
                *c = c.saturating_sub(weight.0);
                taken += u64::from(old - *c);
                if entry.counts == Counts::default() {
                    self.tokens.remove(&key);
                }
            }
        }
        let m = self.mass_mut(label);
        *m = m.saturating_sub(taken);
    }

    fn totals_mut(&mut self, label: Label) -> (&mut u64, &mut u64) {
        match label {
            Label::Spam => (&mut self.spam_learned, &mut self.spam_weight),
            Label::Ham => (&mut self.ham_learned, &mut self.ham_weight),
        }
    }

    /// Scores a message's tokens against this model.
    pub fn score(&self, ids: &[TokenId], params: &Params) -> Score {
        robinson::score(self, ids, params)
    }

    /// The message's `k` spammiest and `k` hammiest significant tokens
    /// with their f(w), strongest first: what an explanation shows.
    /// `header` (a sorted subset of `ids`) are the message's header
    /// tokens, estimated with the header prior as the score estimates
    /// them ([`robinson::header_params`]).
    pub fn strongest(
        &self,
        ids: &[TokenId],
        header: &[TokenId],
        params: &Params,
        k: usize,
    ) -> Strongest {
        let (nspam, nham) = self.weights();
        if nspam + nham == 0 {
            return (Vec::new(), Vec::new());
        }
        let unit = f64::from(Weight::FULL.0);
        let parts = robinson::PartParams::for_user(self, params);
        strongest_by(ids, params, k, |id| {
            let c = self.get(id)?;
            let p = parts.get(header.binary_search(&id).is_ok());
            Some(robinson::token_probability(
                c.spam, c.ham, nspam, nham, unit, p,
            ))
        })
    }
}

/// The weight a click of `label` on a message with tokens `ids` is learned
/// with: [`Weight::LIGHT`] if the model already scores the message at least
/// `params.confident_log_odds` towards `label`, else [`Weight::FULL`].
///
/// This is what crm114's thick-threshold training gets from skipping such
/// messages — counts shaped by the mail that was hard, not drowned by the
/// easy majority — without ever ignoring a click (docs/ACCURACY.md).
pub fn learn_weight(model: &Model, tokens: &Tokens, label: Label, params: &Params) -> Weight {
    learn_weight_given(model, tokens, label, params, None)
}

/// [`learn_weight`], reusing `scored` — the log-odds the caller's score
/// just computed for the message with `model` alone and `params` — where
/// that is the same figure, instead of scoring the message again (the
/// largest cost of a replay's learning after storage).
///
/// Not while a class of `model` is empty: the score read the one-sided
/// `s` ([`robinson::strength`]), which is for the verdict; how confident
/// the model is about a click is read with the body's `s`, or the spam
/// side of a user who clicks only spam grows heavier while no ham is
/// learned (enron2's probe: 4 → 9 of 100 ham filed after 20 clicks).
pub fn learn_weight_given(
    model: &Model,
    tokens: &Tokens,
    label: Label,
    params: &Params,
    scored: Option<f64>,
) -> Weight {
    let (nspam, nham) = model.weights();
    let log_odds = if robinson::one_sided(nspam, nham, params) {
        let body = Params {
            one_sided_strength: 0.0,
            ..params.clone()
        };
        robinson::score_parts(model, &tokens.ids, &tokens.header, &body).log_odds
    } else if let Some(log_odds) = scored {
        log_odds
    } else {
        robinson::score_parts(model, &tokens.ids, &tokens.header, params).log_odds
    };
    learn_weight_for(log_odds, label, params)
}

/// The weight for a click of `label` on a message the model scores at
/// `log_odds`.
fn learn_weight_for(log_odds: f64, label: Label, params: &Params) -> Weight {
    let towards_label = match label {
        Label::Spam => log_odds,
        Label::Ham => -log_odds,
    };
    if towards_label >= params.confident_log_odds {
        Weight::LIGHT
    } else {
        Weight::FULL
    }
}

/// The `k` spammiest and `k` hammiest significant tokens of `ids` under the
/// estimate `f` (`None`: the token is unknown), strongest first.
pub(crate) fn strongest_by(
    ids: &[TokenId],
    params: &Params,
    k: usize,
    f: impl Fn(TokenId) -> Option<f64>,
) -> Strongest {
    let sig: Vec<(TokenId, f64)> = ids
        .iter()
        .filter_map(|id| {
            let f = f(*id)?;
            ((f - 0.5).abs() >= params.min_dev).then_some((*id, f))
        })
        .collect();
    pick_strongest(sig, k)
}

/// The `k` spammiest and `k` hammiest of significant `(id, f)` pairs,
/// strongest first (ties by id, so explanations are deterministic).
pub(crate) fn pick_strongest(mut sig: Vec<(TokenId, f64)>, k: usize) -> Strongest {
    sig.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let spam = sig
        .iter()
        .take(k)
        .filter(|(_, f)| *f > 0.5)
        .copied()
        .collect();
    let ham = sig
        .iter()
        .rev()
        .take(k)
        .filter(|(_, f)| *f < 0.5)
        .copied()
        .collect();
    (spam, ham)
}

/// Where a probability's verdict changes (see [`verdict`]). For a user:
/// the engine's ham cutoff and the user's spam threshold
/// (`policy::UserSettings`), whose default is the classifier's spam cutoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cutoffs {
    /// Below it: ham.
    pub ham: f64,
    /// At or above it: spam. Between the two: unsure.
    pub spam: f64,
}

impl Cutoffs {
    /// The classifier's own cutoffs (`Params::ham_cutoff`, `spam_cutoff`).
    pub fn of(params: &Params) -> Self {
        Self {
            ham: params.ham_cutoff,
            spam: params.spam_cutoff,
        }
    }
}

/// The one verdict function: reads a probability against the cutoffs. At
/// or above `spam` is spam, below `ham` is ham, anything between is unsure.
/// Every verdict chaff reports (Score, ScoreBatch, `chaff eval`, the
/// decision log) comes from here.
pub fn verdict(probability: f64, cutoffs: Cutoffs) -> Verdict {
    if probability >= cutoffs.spam {
        Verdict::Spam
    } else if probability < cutoffs.ham {
        Verdict::Ham
    } else {
        Verdict::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<TokenId> {
        v.iter().map(|&x| TokenId(x)).collect()
    }

    #[test]
    fn unlearn_exactly_inverts_learn() {
        let mut m = Model::default();
        m.learn(&ids(&[1, 2, 3]), Label::Ham);
        let before = m.clone();
        m.learn(&ids(&[2, 3, 4]), Label::Spam);
        assert_ne!(m, before);
        m.unlearn(&ids(&[2, 3, 4]), Label::Spam);
        assert_eq!(m, before);
    }

    #[test]
    fn token_mass_follows_every_change_to_the_counts_and_rebuilds_equal() {
        let rebuilt = |m: &Model| {
            Model::from_parts(
                (m.spam_learned(), m.ham_learned()),
                m.weights(),
                m.tokenizer_version(),
                m.iter(),
            )
            .mass()
        };
        let mut m = Model::default();
        m.learn(&ids(&[1, 2, 3]), Label::Spam);
        m.learn_weighted(&ids(&[2, 4]), Label::Ham, Weight::LIGHT);
        let (full, light) = (u64::from(Weight::FULL.0), u64::from(Weight::LIGHT.0));
        assert_eq!(m.mass(), (3 * full, 2 * light));
        assert_eq!(m.mass(), rebuilt(&m));
        m.learn_delivered(&ids(&[5]), Weight::DELIVERED);
        m.unlearn_weighted(&ids(&[2, 4]), Label::Ham, Weight::LIGHT);
        assert_eq!(m.mass(), (3 * full, u64::from(Weight::DELIVERED.0)));
        m.set_count(TokenId(1), Label::Spam, 10);
        assert_eq!(m.mass(), rebuilt(&m));
        m.remove_tokens(&ids(&[1, 9]));
        assert_eq!(m.mass(), (2 * full, u64::from(Weight::DELIVERED.0)));
        m.retain_tokens(|id| id != TokenId(5));
        assert_eq!(m.mass(), (2 * full, 0));
        assert_eq!(m.mass(), rebuilt(&m));
        // Unlearning what was never learned takes nothing that is not there.
        m.unlearn(&ids(&[7, 8]), Label::Ham);
        assert_eq!(m.mass(), (2 * full, 0));
        // A count that saturates adds only what it grew by, and takes
        // only what it held.
        m.set_count(TokenId(3), Label::Spam, u32::MAX - 1);
        m.learn(&ids(&[3]), Label::Spam);
        assert_eq!(m.get(TokenId(3)).unwrap().spam, u32::MAX);
        assert_eq!(m.mass(), rebuilt(&m));
        m.unlearn_weighted(&ids(&[3]), Label::Spam, Weight(u32::MAX));
        assert_eq!(m.mass(), rebuilt(&m));
    }

    #[test]
    fn counts_never_go_negative() {
        let mut m = Model::default();
        m.unlearn(&ids(&[1]), Label::Spam);
        assert_eq!(m.spam_learned(), 0);
        assert_eq!(m.get(TokenId(1)), None);
        m.learn(&ids(&[1]), Label::Ham);
        m.unlearn(&ids(&[1]), Label::Spam);
        assert_eq!(
            m.get(TokenId(1)),
            Some(Counts {
                spam: 0,
                ham: Weight::FULL.0
            })
        );
    }

    #[test]
    fn only_a_confidently_right_click_is_light() {
        let p = Params::default();
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..40).map(TokenId).collect();
        let ham: Vec<TokenId> = (100..140).map(TokenId).collect();
        let tokens = |ids: &Vec<TokenId>| Tokens {
            ids: ids.clone(),
            ..Tokens::default()
        };
        let (spam_t, ham_t) = (tokens(&spam), tokens(&ham));
        // Empty model: nothing is confident, every click weighs fully.
        assert_eq!(learn_weight(&m, &spam_t, Label::Spam, &p), Weight::FULL);
        for _ in 0..5 {
            m.learn(&spam, Label::Spam);
            m.learn(&ham, Label::Ham);
        }
        assert!(m.score(&spam, &p).log_odds >= p.confident_log_odds);
        assert_eq!(learn_weight(&m, &spam_t, Label::Spam, &p), Weight::LIGHT);
        assert_eq!(learn_weight(&m, &ham_t, Label::Ham, &p), Weight::LIGHT);
        // A correction (the model leans the other way) always weighs fully.
        assert_eq!(learn_weight(&m, &spam_t, Label::Ham, &p), Weight::FULL);
        assert_eq!(learn_weight(&m, &ham_t, Label::Spam, &p), Weight::FULL);
    }

    #[test]
    fn a_clicks_learn_weight_reads_the_bodys_strength_while_a_class_is_empty() {
        // One spam learned, no ham: the verdict's `s` is the one-sided 1,
        // the learn weight's the body's (`robinson::strength`).
        let p = Params::default();
        let body = Params {
            one_sided_strength: 0.0,
            ..Params::default()
        };
        let mut m = Model::default();
        let spam: Vec<TokenId> = (0..40).map(TokenId).collect();
        m.learn(&spam, Label::Spam);
        let copy = Tokens {
            ids: spam.clone(),
            ..Default::default()
        };
        for label in [Label::Spam, Label::Ham] {
            assert_eq!(
                learn_weight(&m, &copy, label, &p),
                learn_weight(&m, &copy, label, &body),
                "{label:?}"
            );
        }
        // And the two estimates do differ here.
        let one_sided = robinson::score_parts(&m, &spam, &[], &p).log_odds;
        let bodys = robinson::score_parts(&m, &spam, &[], &body).log_odds;
        assert!(one_sided < bodys, "{one_sided} {bodys}");
    }

    #[test]
    fn weighted_learn_is_exactly_undone_and_counts_one_message() {
        let mut m = Model::default();
        m.learn(&ids(&[1, 2]), Label::Spam);
        let before = m.clone();
        m.learn_weighted(&ids(&[2, 3]), Label::Spam, Weight::LOW);
        assert_eq!(m.spam_learned(), 2);
        assert_eq!(m.weights().0, u64::from(Weight::FULL.0 + Weight::LOW.0));
        assert_eq!(m.get(TokenId(3)).unwrap().spam, Weight::LOW.0);
        m.unlearn_weighted(&ids(&[2, 3]), Label::Spam, Weight::LOW);
        assert_eq!(m, before);
    }

    #[test]
    fn verdict_cutoffs() {
        let p = Params::default();
        assert_eq!(verdict(0.5, Cutoffs::of(&p)), Verdict::Unsure);
        assert_eq!(verdict(0.0, Cutoffs::of(&p)), Verdict::Ham);
        assert_eq!(verdict(1.0, Cutoffs::of(&p)), Verdict::Spam);
        assert_eq!(verdict(p.spam_cutoff, Cutoffs::of(&p)), Verdict::Spam);
        assert_eq!(verdict(p.ham_cutoff, Cutoffs::of(&p)), Verdict::Unsure);
    }
}

//! The shared model: what consenting users' clicks and the operator's seed
//! corpus say, kept so that every contributor's part can be capped and
//! taken out again exactly.
//!
//! # Contributions and caps
//!
//! Each contributor `c` has a contribution `C_c`, a [`Model`] holding what
//! its shared clicks added (same [`Weight`] units as a user's model). The
//! shared model is, per token and class and for the class totals,
//!
//! ```text
//! S[t] = Σ_c min(C_c[t], TOKEN_CAP)        S.total = Σ_c min(C_c.total, TOTAL_CAP)
//! ```
//!
//! with the operator uncapped. Everything is an integer, so updating `S` by
//! the change of `min(C_c[t], cap)` on each click keeps it *exactly* the sum:
//! removing a contributor subtracts precisely its capped part, and the result
//! equals a shared model that never saw it (the tests compare whole maps).
//!
//! Why these caps (poisoning resistance, issue #5):
//!
//! - [`TOKEN_CAP_MESSAGES`] = 3: one user's say on any token, in either
//!   class, is worth at most three messages. A user who marks a popular
//!   newsletter as spam a thousand times moves its tokens as far as three
//!   clicks would; fifty users who each read it as ham outvote that by
//!   fifty to three. Three rather than one so that a small deployment still
//!   learns from a user who sees the same campaign a few times.
//! - [`TOTAL_CAP_MESSAGES`] = 1,000: one user's class total counts at most
//!   a thousand messages. Without it a user could flood the spam total with
//!   junk, so that every real spam token's ratio `b / nspam` (Graham's
//!   normalisation) shrank towards ham for everyone. With it, one user can
//!   dilute the totals by at most a thousand messages. It is at least the
//!   token cap, so a token's capped count never exceeds its contributor's
//!   capped total and the ratios stay ≤ 1.
//! - The operator's seed is one contributor, uncapped: it is the operator's
//!   own labelled corpus, trusted, and removable as a whole.
//!
//! Message counts (`spam_learned`, `ham_learned`) of `S` are plain sums,
//! uncapped: they are shown, and [`Prior::messages`] gives the blend how
//! much of each class the shared model has seen (its weight in a user's
//! score grows with the thinner class: `Params::shared_known_at`). One
//! user's messages count there without a cap; their tokens stay capped.

use rustc_hash::FxHashMap;

use super::{Counts, Model, Weight};
use crate::tokenize::TokenId;
use crate::types::{Label, Owner};

/// One user's part of any token's count, per class, in messages.
pub const TOKEN_CAP_MESSAGES: u32 = 3;
/// One user's part of a class total, in messages.
pub const TOTAL_CAP_MESSAGES: u64 = 1000;

/// [`TOKEN_CAP_MESSAGES`] in [`Weight`] units.
pub const TOKEN_CAP: u32 = TOKEN_CAP_MESSAGES * Weight::FULL.0;
/// [`TOTAL_CAP_MESSAGES`] in [`Weight`] units.
pub const TOTAL_CAP: u64 = TOTAL_CAP_MESSAGES * Weight::FULL.0 as u64;

/// How far one contributor's counts reach into the shared model.
#[derive(Clone, Copy, Debug)]
struct Caps {
    token: u32,
    total: u64,
}

impl Caps {
    fn of(who: &Owner) -> Caps {
        match who {
            Owner::User(_) => Caps {
                token: TOKEN_CAP,
                total: TOTAL_CAP,
            },
            Owner::Operator => Caps {
                token: u32::MAX,
                total: u64::MAX,
            },
        }
    }
}

fn count(c: Counts, label: Label) -> u32 {
    match label {
        Label::Spam => c.spam,
        Label::Ham => c.ham,
    }
}

/// `S` and the contributions it is the capped sum of.
#[derive(Clone, Debug, Default)]
pub struct SharedModel {
    total: Model,
    parts: FxHashMap<Owner, Model>,
    /// Tokens held by all the parts together (kept as they change, so the
    /// memory the shared model takes is known without a walk over every
    /// contributor: [`SharedModel::stored_tokens`]).
    part_tokens: usize,
    /// Each part's capped token mass (spam, ham): what it adds to `S`'s
    /// [`Model::mass`], `Σ_t min(C_c[t], TOKEN_CAP)` per class, kept as
    /// the part changes, so that [`Prior::mass`] is exactly the mass of a
    /// shared model without the asking user's part.
    part_mass: FxHashMap<Owner, (u64, u64)>,
}

impl SharedModel {
    /// The shared model of these contributions (as loaded from storage).
    pub fn from_parts(parts: impl IntoIterator<Item = (Owner, Model)>) -> Self {
        let mut shared = SharedModel::default();
        for (who, part) in parts {
            if part.weights() != (0, 0) || part.token_count() > 0 {
                shared.add_part(who, part);
            }
        }
        shared
    }

    /// `S`: what scoring reads (through [`SharedModel::prior_for`]).
    pub fn total(&self) -> &Model {
        &self.total
    }

    /// Tokens held in memory: `S`'s plus every part's. What the shared
    /// model costs in memory is this many tokens' worth, the part most
    /// deployments never think of: a seeded shared model of 600k tokens is
    /// 1.2M tokens held (the sum and the operator's part).
    pub fn stored_tokens(&self) -> usize {
        self.total.token_count() + self.part_tokens
    }

    /// What `who`'s shared clicks added, uncapped.
    pub fn contribution(&self, who: &Owner) -> Option<&Model> {
        self.parts.get(who)
    }

    /// Distinct tokens of every model held: `S` first, then each
    /// contribution (each is a model of its own in memory), for memory
    /// estimates.
    pub fn token_counts(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.total.token_count()).chain(self.parts.values().map(Model::token_count))
    }

    /// Contributors with something in the shared model.
    pub fn contributors(&self) -> usize {
        self.parts.len()
    }

    /// Adds (`learn`) or takes out one message of `who`'s, keeping `S` the
    /// exact capped sum.
    pub fn apply(
        &mut self,
        who: &Owner,
        learn: bool,
        label: Label,
        weight: Weight,
        ids: &[TokenId],
    ) {
        let caps = Caps::of(who);
        let part = self.parts.entry(who.clone()).or_default();
        let part_before = part.token_count();
        let total = &mut self.total;
        if learn {
            // Recency for pruning (`prune`): what this learn touches is
            // stamped with the new time.
            part.tick();
            total.tick();
        }
        let w = weight.0;
        {
            let (messages, weight_total) = part.totals_mut(label);
            let old = *weight_total;
            *messages = if learn {
                messages.saturating_add(1)
            } else {
                messages.saturating_sub(1)
            };
            *weight_total = if learn {
                old.saturating_add(u64::from(w))
            } else {
                old.saturating_sub(u64::from(w))
            };
            let new = *weight_total;
            let (s_messages, s_weight) = total.totals_mut(label);
            *s_messages = if learn {
                s_messages.saturating_add(1)
            } else {
                s_messages.saturating_sub(1)
            };
            *s_weight = (*s_weight + new.min(caps.total)).saturating_sub(old.min(caps.total));
        }
        for id in ids {
            let old = part.get(*id).map_or(0, |c| count(c, label));
            let new = if learn {
                old.saturating_add(w)
            } else {
                old.saturating_sub(w)
            };
            if old == new {
                continue;
            }
            set_count(part, *id, label, new);
            let (capped_old, capped_new) = (old.min(caps.token), new.min(caps.token));
            if capped_old != capped_new {
                let mass = self.part_mass.entry(who.clone()).or_default();
                let m = match label {
                    Label::Spam => &mut mass.0,
                    Label::Ham => &mut mass.1,
                };
                *m = (*m + u64::from(capped_new)).saturating_sub(u64::from(capped_old));
                let s = total.get(*id).map_or(0, |c| count(c, label));
                // In u64, like `fold`: the operator's part is uncapped, so
                // `s + capped_new` could pass u32::MAX.
                let updated =
                    (u64::from(s) + u64::from(capped_new)).saturating_sub(u64::from(capped_old));
                set_count(
                    total,
                    *id,
                    label,
                    u32::try_from(updated).unwrap_or(u32::MAX),
                );
            }
        }
        self.part_tokens = (self.part_tokens + part.token_count()).saturating_sub(part_before);
        if part.weights() == (0, 0) && part.token_count() == 0 {
            self.parts.remove(who);
            self.part_mass.remove(who);
        }
    }

    /// Drops these tokens from `S` and from every part, so `S` stays the
    /// exact capped sum of the parts (pruning the shared model to its cap,
    /// `classify::prune`; the class totals stay). One pass over each part:
    /// O(tokens held), not O(victims × parts).
    pub fn remove_tokens(&mut self, ids: &[TokenId]) {
        if ids.is_empty() {
            return;
        }
        self.total.remove_tokens(ids);
        let gone: rustc_hash::FxHashSet<TokenId> = ids.iter().copied().collect();
        for (who, part) in self.parts.iter_mut() {
            let before = part.token_count();
            part.retain_tokens(|id| !gone.contains(&id));
            self.part_tokens -= before - part.token_count();
            self.part_mass
                .insert(who.clone(), part.capped_mass(Caps::of(who).token));
        }
    }

    /// Takes `who`'s whole part out of `S` and returns it.
    pub fn remove(&mut self, who: &Owner) -> Option<Model> {
        let part = self.parts.remove(who)?;
        self.part_mass.remove(who);
        fold(&mut self.total, &part, Caps::of(who), false);
        self.part_tokens = self.part_tokens.saturating_sub(part.token_count());
        Some(part)
    }

    /// Puts `part` in place of what `who` contributed, keeping `S` the
    /// exact capped sum: how a reader of a shared store takes in a part it
    /// reloaded from a snapshot (an empty part takes `who` out).
    pub fn replace_part(&mut self, who: Owner, part: Model) {
        self.remove(&who);
        if part.weights() != (0, 0) || part.token_count() > 0 {
            self.add_part(who, part);
        }
    }

    fn add_part(&mut self, who: Owner, part: Model) {
        fold(&mut self.total, &part, Caps::of(&who), true);
        self.part_mass
            .insert(who.clone(), part.capped_mass(Caps::of(&who).token));
        self.part_tokens += part.token_count();
        if let Some(old) = self.parts.insert(who, part) {
            self.part_tokens -= old.token_count();
        }
    }

    /// The shared model as `who` should see it: everyone else's capped
    /// contributions. A user's own clicks are already in their own model;
    /// counting them again through the prior would double their weight.
    pub fn prior_for(&self, who: Option<&Owner>) -> Prior<'_> {
        let own = who.and_then(|w| self.parts.get(w).map(|m| (m, Caps::of(w))));
        let own_mass = who
            .and_then(|w| self.part_mass.get(w))
            .copied()
            .unwrap_or_default();
        let (mut spam, mut ham) = self.total.weights();
        let (mut spam_messages, mut ham_messages) =
            (self.total.spam_learned(), self.total.ham_learned());
        if let Some((m, caps)) = own {
            let (os, oh) = m.weights();
            spam = spam.saturating_sub(os.min(caps.total));
            ham = ham.saturating_sub(oh.min(caps.total));
            spam_messages = spam_messages.saturating_sub(m.spam_learned());
            ham_messages = ham_messages.saturating_sub(m.ham_learned());
        }
        Prior {
            total: &self.total,
            own,
            weights: (spam, ham),
            messages: (spam_messages, ham_messages),
            own_mass,
        }
    }
}

/// Adds (`add`) or subtracts a whole part's capped counts to or from `S`.
fn fold(total: &mut Model, part: &Model, caps: Caps, add: bool) {
    let step = |a: u64, b: u64| {
        if add {
            a.saturating_add(b)
        } else {
            a.saturating_sub(b)
        }
    };
    let (spam, ham) = part.weights();
    for (label, theirs) in [(Label::Spam, spam), (Label::Ham, ham)] {
        let (messages, weight) = total.totals_mut(label);
        *messages = step(*messages, part.learned(label));
        *weight = step(*weight, theirs.min(caps.total));
        for (id, c) in part.iter() {
            let mine = count(c, label).min(caps.token);
            if mine > 0 {
                let s = total.get(id).map_or(0, |c| count(c, label));
                let next = step(u64::from(s), u64::from(mine));
                set_count(total, id, label, u32::try_from(next).unwrap_or(u32::MAX));
            }
        }
    }
}

/// Sets one class's count of a token, dropping tokens left with none (so
/// equal states are equal maps).
fn set_count(model: &mut Model, id: TokenId, label: Label, value: u32) {
    model.set_count(id, label, value);
}

/// `S` minus one contributor's capped part, read without copying.
#[derive(Clone, Copy, Debug)]
pub struct Prior<'a> {
    total: &'a Model,
    own: Option<(&'a Model, Caps)>,
    weights: (u64, u64),
    messages: (u64, u64),
    /// The asking user's part's capped mass, taken out of `S`'s.
    own_mass: (u64, u64),
}

impl Prior<'_> {
    /// The class totals (weight units).
    pub fn weights(&self) -> (u64, u64) {
        self.weights
    }

    /// The messages learned per class (spam, ham), whatever their weight:
    /// how much of each class the shared model has seen.
    pub fn messages(&self) -> (u64, u64) {
        self.messages
    }

    /// The token mass per class (spam, ham), weight units: `S`'s less the
    /// asking user's capped part, so exactly the mass of a shared model
    /// that never had their part ([`Model::mass`]).
    pub fn mass(&self) -> (u64, u64) {
        let (ms, mh) = self.total.mass();
        (
            ms.saturating_sub(self.own_mass.0),
            mh.saturating_sub(self.own_mass.1),
        )
    }

    /// No evidence at all: scoring must then be exactly the user's own.
    pub fn is_empty(&self) -> bool {
        self.weights == (0, 0)
    }

    /// A token's counts from the others, `None` when they have none.
    pub fn get(&self, id: TokenId) -> Option<Counts> {
        let mut c = self.total.get(id)?;
        if let Some((own, caps)) = self.own
            && let Some(mine) = own.get(id)
        {
            c.spam = c.spam.saturating_sub(mine.spam.min(caps.token));
            c.ham = c.ham.saturating_sub(mine.ham.min(caps.token));
        }
        (c != Counts::default()).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<TokenId> {
        v.iter().map(|&x| TokenId(x)).collect()
    }

    fn user(s: &str) -> Owner {
        Owner::User(crate::types::UserId::new(s).unwrap())
    }

    #[test]
    fn huge_uncapped_operator_counts_saturate_instead_of_overflowing() {
        // The operator's part is uncapped: adding to a token's total near
        // u32::MAX must saturate (it wrapped, or panicked in debug, before).
        let mut s = SharedModel::default();
        let op = Owner::Operator;
        s.apply(&op, true, Label::Spam, Weight(3_000_000_000), &ids(&[1]));
        s.apply(&op, true, Label::Spam, Weight(2_000_000_000), &ids(&[1]));
        assert_eq!(s.total().get(TokenId(1)).unwrap().spam, u32::MAX);
    }

    #[test]
    fn total_is_the_capped_sum_and_removal_is_exact() {
        let mut s = SharedModel::default();
        let (a, b) = (user("a"), user("b"));
        s.apply(&a, true, Label::Ham, Weight::FULL, &ids(&[1, 2]));
        let only_a = s.total().clone();
        for _ in 0..10 {
            s.apply(&b, true, Label::Spam, Weight::FULL, &ids(&[1, 3]));
        }
        let t = s.total().get(TokenId(1)).unwrap();
        assert_eq!((t.spam, t.ham), (TOKEN_CAP, Weight::FULL.0));
        assert_eq!(s.total().spam_learned(), 10);
        s.remove(&b);
        assert_eq!(*s.total(), only_a);
        assert_eq!(s.contributors(), 1);
    }

    #[test]
    fn pruned_tokens_leave_the_sum_and_every_part_so_it_stays_exact() {
        let mut s = SharedModel::default();
        let (a, b) = (user("a"), user("b"));
        s.apply(&a, true, Label::Ham, Weight::FULL, &ids(&[1, 2, 3]));
        s.apply(&b, true, Label::Spam, Weight::FULL, &ids(&[2, 3, 4]));
        s.apply(
            &Owner::Operator,
            true,
            Label::Spam,
            Weight::FULL,
            &ids(&[3, 5]),
        );
        assert_eq!(s.stored_tokens(), 5 + 3 + 3 + 2);
        s.remove_tokens(&ids(&[2, 3]));
        assert_eq!(s.total().token_count(), 3);
        assert_eq!(s.stored_tokens(), 3 + 1 + 1 + 1);
        let parts: Vec<(Owner, Model)> = [a.clone(), b.clone(), Owner::Operator]
            .into_iter()
            .map(|w| (w.clone(), s.contribution(&w).unwrap().clone()))
            .collect();
        assert_eq!(*SharedModel::from_parts(parts).total(), *s.total());
        // Taking a contributor out afterwards is still exact.
        s.apply(&b, false, Label::Spam, Weight::FULL, &ids(&[2, 3, 4]));
        s.remove(&a);
        s.remove(&Owner::Operator);
        assert_eq!(s.total().token_count(), 0);
        assert_eq!(s.stored_tokens(), 0);
    }

    #[test]
    fn learn_then_unlearn_restores_an_equal_model() {
        let mut s = SharedModel::default();
        let a = user("a");
        s.apply(&a, true, Label::Ham, Weight::FULL, &ids(&[1, 2]));
        let before = s.total().clone();
        for _ in 0..5 {
            s.apply(&a, true, Label::Spam, Weight::FULL, &ids(&[2, 9]));
        }
        for _ in 0..5 {
            s.apply(&a, false, Label::Spam, Weight::FULL, &ids(&[2, 9]));
        }
        assert_eq!(*s.total(), before);
    }

    #[test]
    fn rebuilt_from_parts_equals_built_click_by_click() {
        let mut s = SharedModel::default();
        for (u, n) in [("a", 2), ("b", 7)] {
            for i in 0..n {
                s.apply(&user(u), true, Label::Spam, Weight::FULL, &ids(&[1, i]));
            }
        }
        s.apply(&Owner::Operator, true, Label::Ham, Weight::FULL, &ids(&[1]));
        let parts = s.parts.clone();
        assert_eq!(*SharedModel::from_parts(parts).total(), *s.total());
    }

    #[test]
    fn prior_leaves_out_the_asking_users_capped_part() {
        let mut s = SharedModel::default();
        let (a, b) = (user("a"), user("b"));
        for _ in 0..5 {
            s.apply(&a, true, Label::Spam, Weight::FULL, &ids(&[1]));
        }
        s.apply(&b, true, Label::Ham, Weight::FULL, &ids(&[1, 2]));
        let p = s.prior_for(Some(&a));
        assert_eq!(p.weights(), (0, u64::from(Weight::FULL.0)));
        assert_eq!(
            p.get(TokenId(1)),
            Some(Counts {
                spam: 0,
                ham: Weight::FULL.0
            })
        );
        assert!(s.prior_for(Some(&b)).get(TokenId(2)).is_none());
        let mut alone = SharedModel::default();
        alone.apply(&a, true, Label::Spam, Weight::FULL, &ids(&[1]));
        assert!(alone.prior_for(Some(&a)).is_empty());
    }

    #[test]
    fn prior_mass_is_the_mass_of_a_shared_model_without_the_users_part() {
        // A heavy clicker (past the token cap on some tokens), a light
        // user and the uncapped operator: the words the thin-ham cap reads
        // (`robinson::unknown_probability`) are exactly those of a shared
        // model that never had the asking user's part, as the prior's
        // counts are — through clicks, unlearns, whole parts and pruning.
        let (a, b, op) = (user("a"), user("b"), Owner::Operator);
        let mut s = SharedModel::default();
        for i in 0..10u64 {
            s.apply(&a, true, Label::Spam, Weight::FULL, &ids(&[1, 2, 10 + i]));
        }
        s.apply(&a, true, Label::Ham, Weight::LIGHT, &ids(&[3]));
        s.apply(&b, true, Label::Spam, Weight::FULL, &ids(&[1, 4]));
        s.apply(&b, true, Label::Ham, Weight::FULL, &ids(&[2, 5, 6]));
        for _ in 0..5 {
            s.apply(&op, true, Label::Ham, Weight::FULL, &ids(&[1, 7]));
        }
        let without = |s: &SharedModel, who: &Owner| {
            let others = s
                .parts
                .iter()
                .filter(|(w, _)| *w != who)
                .map(|(w, m)| (w.clone(), m.clone()));
            SharedModel::from_parts(others).total().mass()
        };
        let check = |s: &SharedModel| {
            for who in [&a, &b, &op] {
                assert_eq!(s.prior_for(Some(who)).mass(), without(s, who), "{who:?}");
            }
            assert_eq!(s.prior_for(None).mass(), s.total().mass());
        };
        check(&s);
        // The heavy clicker's own words are capped, not counted in full.
        assert!(s.prior_for(Some(&a)).mass().0 < s.total().mass().0);
        s.apply(&a, false, Label::Spam, Weight::FULL, &ids(&[1, 2, 19]));
        check(&s);
        s.remove_tokens(&ids(&[1, 5]));
        check(&s);
        s.remove(&b);
        check(&s);
        s.replace_part(b.clone(), Model::default());
        check(&s);
    }
}

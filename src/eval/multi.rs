//! Several mailboxes replayed together, one user each, to measure what the
//! shared model does for a user: the per-user model alone, the shared model
//! alone, and their blend, each scored on every message from the same state
//! (issue #5's evaluation).
//!
//! # Protocol
//!
//! Each mailbox is a TREC index in its own arrival order; the corpora carry
//! no common clock (Enron-Spam's ham and spam come from different years), so
//! mailboxes are merged by *relative* position: message `i` of a mailbox of
//! `n` arrives at `(i + ½) / n` ([`Arrival::Together`], everyone starts on
//! day one) — or each mailbox after the previous one has finished
//! ([`Arrival::OneAfterAnother`]: a user joining an established service,
//! the cold start the shared model is for). Every message is scored for its
//! own user in all three views, then learned by the user's model and — all
//! users consent — by the shared model. Learning is the same whatever the
//! view when every message is learned; with only errors learned, the user
//! clicks what *one* view showed them, so each view needs its own replay
//! ([`replay_users`]'s `clicks_follow`). Mail that view delivered and the
//! user did not click is learned as delivered (the user's model only, as
//! the Score RPC does with `--learn-delivered`, the default, and as the
//! single-user replay does).
//!
//! The measure is the one a user feels: the share of their messages
//! misfiled (spam not judged spam, ham judged spam; unsure is delivered, so
//! counts as not spam), over their first 50, 100 and 500 messages and the
//! whole mailbox.

use rustc_hash::FxHashMap;

use super::{CorpusMessage, EvalError, Judgement, TrainMode};
use crate::engine::{Engine, Scored};
use crate::error::Error;
use crate::policy::settings::SettingsUpdate;
use crate::types::{Label, UserId, Verdict};

/// One user's mailbox.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub user: String,
    pub messages: Vec<CorpusMessage>,
}

/// How mailboxes are merged into one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Interleaved by relative position: every user starts at once.
    Together,
    /// Each mailbox after the previous one: later users join a service
    /// whose shared model has already learned from the earlier ones.
    OneAfterAnother,
}

impl Arrival {
    /// As the CLI's `--arrival` and the report spell it.
    pub fn name(self) -> &'static str {
        match self {
            Arrival::Together => "together",
            Arrival::OneAfterAnother => "one-after-another",
        }
    }
}

/// Where a score comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    UserOnly,
    SharedOnly,
    Blended,
}

impl View {
    pub const ALL: [View; 3] = [View::UserOnly, View::SharedOnly, View::Blended];

    pub fn name(self) -> &'static str {
        match self {
            View::UserOnly => "per-user",
            View::SharedOnly => "shared",
            View::Blended => "blended",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A filter with a per-user model and a shared one, scored three ways.
pub trait SharedFilter {
    /// The three views of one message for `user`, indexed as [`View::ALL`].
    fn score(&mut self, user: &str, message: &[u8]) -> Result<[Judgement; 3], String>;
    /// The user's click: learned by the user's model and, as the user
    /// consents, by the shared model.
    fn learn(&mut self, user: &str, id: &str, message: &[u8], label: Label) -> Result<(), String>;
    /// Mail delivered to the user's inbox and not clicked: what the
    /// Score RPC learns of it (the user's model only, never shared), as
    /// the single-user replay does (`Engine::score_then_train`).
    fn deliver(&mut self, user: &str, id: &str, message: &[u8]) -> Result<(), String>;
}

/// The order messages arrive in: `(mailbox, message)` positions.
pub fn arrival_order(mailboxes: &[Mailbox], arrival: Arrival) -> Vec<(usize, usize)> {
    let lens: Vec<usize> = mailboxes.iter().map(|m| m.messages.len()).collect();
    arrival_order_of(&lens, arrival)
}

/// [`arrival_order`] of streams of these lengths (also the order in which
/// `chaff eval --grams-seed` teaches several seed corpora).
pub fn arrival_order_of(lens: &[usize], arrival: Arrival) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> = lens
        .iter()
        .enumerate()
        .flat_map(|(b, &n)| (0..n).map(move |i| (b, i)))
        .collect();
    if arrival == Arrival::Together {
        // (i + ½)/n compared exactly as (2i + 1)·n' against (2i' + 1)·n.
        let key = |&(b, i): &(usize, usize)| (2 * i as u128 + 1, lens[b] as u128);
        order.sort_by(|x, y| {
            let ((a, n), (c, m)) = (key(x), key(y));
            (a * m).cmp(&(c * n)).then(x.0.cmp(&y.0))
        });
    }
    order
}

/// One message's outcome for its user: gold label and each view's verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UserOutcome {
    pub gold: Label,
    pub judged_spam: [bool; 3],
    /// Whether the user's model was taught the gold label (a click).
    pub taught: bool,
}

impl UserOutcome {
    pub fn misfiled(&self, view: View) -> bool {
        self.judged_spam[view.index()] != (self.gold == Label::Spam)
    }
}

/// Replays the mailboxes in `order`; returns each mailbox's outcomes in its
/// own order. With [`TrainMode::Errors`] or [`TrainMode::Clicks`], whether
/// a message is learned depends on `clicks_follow`'s verdict (the one the
/// user saw); the click draws use the message's place in its own mailbox.
pub fn replay_users(
    mailboxes: &[Mailbox],
    order: &[(usize, usize)],
    filter: &mut dyn SharedFilter,
    train: TrainMode,
    clicks_follow: View,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Vec<UserOutcome>>, EvalError> {
    let mut out: Vec<Vec<UserOutcome>> = mailboxes
        .iter()
        .map(|m| Vec::with_capacity(m.messages.len()))
        .collect();
    for (done, &(b, i)) in order.iter().enumerate() {
        let (user, m) = (&mailboxes[b].user, &mailboxes[b].messages[i]);
        let fail = |message: String| EvalError::Filter {
            id: format!("{user}:{}", m.id),
            message,
        };
        let bytes = std::fs::read(&m.path).map_err(|source| EvalError::Read {
            path: m.path.clone(),
            source,
        })?;
        let views = filter.score(user, &bytes).map_err(fail)?;
        let shown: Judgement = views[clicks_follow.index()];
        // `i` is the message's place in its own mailbox: each user clicks
        // by the protocol on their own messages.
        let taught = train.should_learn(i, m.gold, shown.verdict);
        if taught {
            // Users share one server: ids are per user already.
            filter.learn(user, &m.id, &bytes, m.gold).map_err(fail)?;
        } else if shown.verdict != Verdict::Spam {
            filter.deliver(user, &m.id, &bytes).map_err(fail)?;
        }
        out[b].push(UserOutcome {
            gold: m.gold,
            judged_spam: views.map(|j| j.verdict == Verdict::Spam),
            taught,
        });
        progress(done + 1, order.len());
    }
    Ok(out)
}

/// Misfiled messages among a user's first few.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Misfiled {
    /// Messages covered: the window, or the whole mailbox if shorter.
    pub messages: usize,
    /// Spam not judged spam (delivered, as ham or unsure).
    pub spam_missed: usize,
    /// Ham judged spam.
    pub ham_misfiled: usize,
}

impl Misfiled {
    pub fn pct(&self) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        100.0 * (self.spam_missed + self.ham_misfiled) as f64 / self.messages as f64
    }
}

/// How `view` misfiled the first `first` outcomes (all if `None` or if
/// the mailbox is shorter).
pub fn misfiled(outcomes: &[UserOutcome], view: View, first: Option<usize>) -> Misfiled {
    let n = first.map_or(outcomes.len(), |f| f.min(outcomes.len()));
    let wrong = |gold| {
        outcomes[..n]
            .iter()
            .filter(|o| o.gold == gold && o.misfiled(view))
            .count()
    };
    Misfiled {
        messages: n,
        spam_missed: wrong(Label::Spam),
        ham_misfiled: wrong(Label::Ham),
    }
}

/// The library's engine as a [`SharedFilter`]: every mailbox's user
/// consents to share, so each click feeds the shared model, and
/// [`Engine::score_views`] scores with the shared model minus the user's own
/// contribution — the other users' clicks, as in production.
pub struct EngineShared<'a> {
    engine: &'a Engine,
    users: FxHashMap<String, UserId>,
}

impl<'a> EngineShared<'a> {
    /// Registers each mailbox's user with `share_training` on.
    pub fn consenting(engine: &'a Engine, mailboxes: &[Mailbox]) -> Result<Self, Error> {
        let mut users = FxHashMap::default();
        for m in mailboxes {
            let user = UserId::new(&m.user)?;
            let consent = SettingsUpdate {
                share_training: Some(true),
                ..SettingsUpdate::default()
            };
            engine.update_settings(&user, &consent)?;
            users.insert(m.user.clone(), user);
        }
        Ok(Self { engine, users })
    }

    fn user(&self, name: &str) -> Result<&UserId, String> {
        self.users
            .get(name)
            .ok_or_else(|| format!("user {name} is not one of the mailboxes"))
    }
}

impl SharedFilter for EngineShared<'_> {
    fn score(&mut self, user: &str, message: &[u8]) -> Result<[Judgement; 3], String> {
        let v = self
            .engine
            .score_views(self.user(user)?, message)
            .map_err(|e| e.to_string())?;
        let j = |s: &Scored| Judgement {
            score: s.log_odds,
            verdict: s.verdict,
        };
        Ok([j(&v.user_only), j(&v.shared_only), j(&v.blended)])
    }

    fn learn(&mut self, user: &str, id: &str, message: &[u8], label: Label) -> Result<(), String> {
        let id = super::replay_message_id(id);
        self.engine
            .train(self.user(user)?, message, label, Some(id))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn deliver(&mut self, user: &str, id: &str, message: &[u8]) -> Result<(), String> {
        let id = super::replay_message_id(id);
        let read = self.engine.read(message).map_err(|e| e.to_string())?;
        self.engine
            .learn_delivered(self.user(user)?, &read, &id)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mailbox(user: &str, n: usize) -> Mailbox {
        Mailbox {
            user: user.to_string(),
            messages: (0..n)
                .map(|i| CorpusMessage {
                    id: format!("{user}{i}"),
                    path: PathBuf::from(format!("{user}{i}")),
                    gold: Label::Spam,
                })
                .collect(),
        }
    }

    #[test]
    fn together_interleaves_by_relative_position_and_sequential_concatenates() {
        let boxes = [mailbox("a", 4), mailbox("b", 2)];
        // a at 1/8, 3/8, 5/8, 7/8; b at 1/4, 3/4.
        assert_eq!(
            arrival_order(&boxes, Arrival::Together),
            [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (0, 3)]
        );
        assert_eq!(
            arrival_order(&boxes, Arrival::OneAfterAnother),
            [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
        );
        // Equal positions keep mailbox order.
        let same = [mailbox("a", 1), mailbox("b", 1)];
        assert_eq!(arrival_order(&same, Arrival::Together), [(0, 0), (1, 0)]);
    }

    /// Says spam for user `a`'s view `SharedOnly` only; records clicks.
    struct Fixed {
        clicks: Vec<String>,
        delivered: Vec<String>,
    }

    impl SharedFilter for Fixed {
        fn score(&mut self, _user: &str, message: &[u8]) -> Result<[Judgement; 3], String> {
            let spam = message == b"spam";
            let j = |v| Judgement {
                score: 0.0,
                verdict: v,
            };
            Ok([
                j(Verdict::Ham),
                j(if spam { Verdict::Spam } else { Verdict::Ham }),
                j(Verdict::Unsure),
            ])
        }
        fn learn(&mut self, user: &str, id: &str, _m: &[u8], _l: Label) -> Result<(), String> {
            self.clicks.push(format!("{user}:{id}"));
            Ok(())
        }
        fn deliver(&mut self, user: &str, id: &str, _m: &[u8]) -> Result<(), String> {
            self.delivered.push(format!("{user}:{id}"));
            Ok(())
        }
    }

    #[test]
    fn each_view_is_judged_and_error_clicks_follow_the_chosen_view() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "spam").unwrap();
        std::fs::write(dir.path().join("h"), "ham").unwrap();
        let msg = |f: &str, gold| CorpusMessage {
            id: f.to_string(),
            path: dir.path().join(f),
            gold,
        };
        let boxes = [Mailbox {
            user: "u".into(),
            messages: vec![msg("s", Label::Spam), msg("h", Label::Ham)],
        }];
        let order = arrival_order(&boxes, Arrival::Together);
        let mut f = Fixed {
            clicks: vec![],
            delivered: vec![],
        };
        let out = replay_users(
            &boxes,
            &order,
            &mut f,
            TrainMode::Errors,
            View::SharedOnly,
            |_, _| {},
        )
        .unwrap();
        // The shared view got both right: no clicks; the ham it delivered
        // was learned as delivered, the spam it filed was not.
        assert!(f.clicks.is_empty());
        assert_eq!(f.delivered, ["u:h"]);
        let o = &out[0];
        assert!(o[0].misfiled(View::UserOnly) && !o[0].misfiled(View::SharedOnly));
        assert!(
            o[0].misfiled(View::Blended),
            "unsure spam is delivered: misfiled"
        );
        assert!(
            !o[1].misfiled(View::Blended),
            "unsure ham is delivered: right"
        );
        let all = misfiled(o, View::UserOnly, None);
        assert_eq!((all.pct(), all.messages, all.spam_missed), (50.0, 2, 1));
        assert_eq!(misfiled(o, View::UserOnly, Some(1)).pct(), 100.0);
        let shared = misfiled(o, View::SharedOnly, Some(50));
        assert_eq!((shared.pct(), shared.messages), (0.0, 2));
        // Following the per-user view, the missed spam is clicked.
        let mut f = Fixed {
            clicks: vec![],
            delivered: vec![],
        };
        replay_users(
            &boxes,
            &order,
            &mut f,
            TrainMode::Errors,
            View::UserOnly,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(f.clicks, ["u:s"]);
        assert_eq!(f.delivered, ["u:h"], "clicked mail is not also delivered");
        let mut f = Fixed {
            clicks: vec![],
            delivered: vec![],
        };
        replay_users(
            &boxes,
            &order,
            &mut f,
            TrainMode::Every,
            View::UserOnly,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(f.clicks.len(), 2);
        assert!(f.delivered.is_empty());
    }

    #[test]
    fn each_user_clicks_by_their_own_message_positions() {
        // Two mailboxes of four spam, every view says HAM for them (the
        // `Fixed` filter only says spam for b"spam" in the shared view), so
        // every message is clickable. p = 0.5, seed 0: draws 0.88, 0.43,
        // 0.03, 0.97 for positions 0..4 — each user clicks their 2nd and
        // 3rd message, whatever the interleaving.
        let dir = tempfile::tempdir().unwrap();
        let boxes: Vec<Mailbox> = ["a", "b"]
            .iter()
            .map(|user| Mailbox {
                user: user.to_string(),
                messages: (0..4)
                    .map(|i| {
                        let path = dir.path().join(format!("{user}{i}"));
                        std::fs::write(&path, "not spam to the per-user view").unwrap();
                        CorpusMessage {
                            id: format!("{i}"),
                            path,
                            gold: Label::Spam,
                        }
                    })
                    .collect(),
            })
            .collect();
        let clicks = crate::eval::Clicks::new(0.5, 0.0, 0).unwrap();
        for arrival in [Arrival::Together, Arrival::OneAfterAnother] {
            let mut f = Fixed {
                clicks: vec![],
                delivered: vec![],
            };
            let order = arrival_order(&boxes, arrival);
            let out = replay_users(
                &boxes,
                &order,
                &mut f,
                TrainMode::Clicks(clicks),
                View::UserOnly,
                |_, _| {},
            )
            .unwrap();
            f.clicks.sort();
            assert_eq!(f.clicks, ["a:1", "a:2", "b:1", "b:2"]);
            let taught: Vec<bool> = out[1].iter().map(|o| o.taught).collect();
            assert_eq!(taught, [false, true, true, false]);
        }
    }

    #[test]
    fn through_the_engine_a_later_user_is_protected_by_the_earlier_ones_clicks() {
        let dir = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let spam = |i: usize| {
            format!(
                "From: deals{i}@pills.example\r\nSubject: cheap pills {i}\r\n\r\n\
                 Buy cheap pills now, best prices on meds, order today {i}\r\n"
            )
        };
        let ham = |i: usize| {
            format!(
                "From: ann@work.example\r\nSubject: meeting notes {i}\r\n\r\n\
                 Minutes of the project meeting, agenda for next week {i}\r\n"
            )
        };
        let mailbox = |user: &str, n: usize| Mailbox {
            user: user.to_string(),
            messages: (0..n)
                .map(|i| {
                    let (text, gold) = if i % 2 == 0 {
                        (spam(i), Label::Spam)
                    } else {
                        (ham(i), Label::Ham)
                    };
                    let name = format!("{user}-{i}");
                    std::fs::write(files.path().join(&name), text).unwrap();
                    CorpusMessage {
                        id: name.clone(),
                        path: files.path().join(name),
                        gold,
                    }
                })
                .collect(),
        };
        let boxes = [mailbox("first", 40), mailbox("later", 4)];
        let engine = Engine::new(
            crate::store::Store::open(dir.path(), 8 << 20).unwrap(),
            crate::engine::Settings::default(),
        )
        .unwrap();
        let mut filter = EngineShared::consenting(&engine, &boxes).unwrap();
        let order = arrival_order(&boxes, Arrival::OneAfterAnother);
        let out = replay_users(
            &boxes,
            &order,
            &mut filter,
            TrainMode::Every,
            View::Blended,
            |_, _| {},
        )
        .unwrap();
        // The later user's first message is spam: alone they cannot know,
        // with the shared model they do.
        let first = out[1][0];
        assert_eq!(first.gold, Label::Spam);
        assert!(first.misfiled(View::UserOnly));
        assert!(!first.misfiled(View::Blended) && !first.misfiled(View::SharedOnly));
        assert_eq!(misfiled(&out[1], View::Blended, None).pct(), 0.0);
    }
}

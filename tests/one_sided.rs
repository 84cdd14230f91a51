//! Users who only ever click *Spam* (most of them): the mail they never
//! clicked must not go to the spam folder, and the spam they clicked must.

use chaff::proto::{self, Label, Verdict};

use crate::common::*;
use crate::mailgen;

/// Score, then wait for the server's background learner to learn the
/// delivery (Score only queues it): the model each next Score sees is the
/// one an inline learner would have left, so these tests stay exact.
async fn score(c: &mut Client, user: &str, msg: &[u8]) -> chaff::proto::ScoreResponse {
    let s = crate::common::score(c, user, msg).await;
    settle_delivered(c).await;
    s
}

/// Scores each of `hams` for `user` as it arrives (delivered mail learned
/// between them) and returns the ones filed as spam: (index, probability).
async fn ham_filed_as_spam(
    c: &mut Client,
    user: &str,
    hams: impl IntoIterator<Item = Vec<u8>>,
) -> Vec<(usize, f64)> {
    let mut filed = Vec::new();
    for (i, ham) in hams.into_iter().enumerate() {
        let s = score(c, user, &ham).await;
        if s.verdict == Verdict::Spam as i32 {
            filed.push((i, s.spam_probability));
        }
    }
    filed
}

/// Asserts that copies of the last 20 clicked spam
/// ([`mailgen::near_copy`]) get a SPAM verdict.
async fn copies_of_the_last_clicked_are_spam(c: &mut Client, user: &str, clicked: &[Vec<u8>]) {
    for (i, spam) in clicked.iter().enumerate().rev().take(20) {
        let s = score(c, user, &mailgen::near_copy(spam, i)).await;
        assert_eq!(
            s.verdict,
            Verdict::Spam as i32,
            "after {} clicks, copy of spam {i}: {}",
            clicked.len(),
            s.spam_probability
        );
    }
}

on_both_stores!(
    Redis,
    spam_only_clicks_file_no_ham_as_spam_and_still_catch_copies_of_the_clicked_spam,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let user = server.u("spam-clicker@provider.example");
        let hams: Vec<Vec<u8>> = (0..100).map(|i| mailgen::ham(7, i)).collect();
        let mut clicked = Vec::new();
        for n in [1usize, 20, 100] {
            while clicked.len() < n {
                let spam = mailgen::spam(7, clicked.len());
                train(&mut c, user, &spam, Label::Spam, "").await;
                clicked.push(spam);
            }
            // The ham scored in the round before was delivered, so it was
            // learned lightly (pipeline step 7), each message once.
            let info = crate::common::user(&mut c, user).await;
            let delivered = if n == 1 { 0 } else { hams.len() as u64 };
            assert_eq!((info.spam_learned, info.ham_learned), (n as u64, delivered));
            let filed = ham_filed_as_spam(&mut c, user, hams.iter().cloned()).await;
            assert!(
                filed.is_empty(),
                "after {n} spam clicks, ham filed as spam: {filed:?}"
            );
            // Copies of the clicked spam (the campaign's next send) still are.
            copies_of_the_last_clicked_are_spam(&mut c, user, &clicked).await;
        }
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    after_many_spam_clicks_the_first_delivered_ham_does_not_send_the_next_to_the_spam_folder,
    async |on| {
        // The leak the corpora showed (docs/ACCURACY.md, "Session 17"): a
        // user clicks Spam 20 or 100 times, then their ham arrives. The
        // first ham or two are delivered and learned, which ended the
        // never-seen tokens' say while the ham side was still too thin to
        // show the everyday words the spam had taught: 95 of enron1's
        // first 100 ham went to the spam folder after 100 clicks. Mail
        // with Zipf-distributed words (`mailgen::zipf_*`) has those
        // middling words (the everyday generator's few dozen common words
        // do not), and before the thin-ham estimate
        // (`robinson::unknown_probability`) 98 and 98 of these 100 ham
        // went to the spam folder.
        let server = on.start().await;
        let mut c = server.client().await;
        for clicks in [20usize, 100] {
            let user = server.u(&format!("clicks-spam-{clicks}-first@provider.example"));
            let clicked: Vec<Vec<u8>> = (0..clicks).map(|i| mailgen::zipf_spam(11, i)).collect();
            for spam in &clicked {
                train(&mut c, user, spam, Label::Spam, "").await;
            }
            let hams = (0..100).map(|i| mailgen::zipf_ham(11, i));
            let filed = ham_filed_as_spam(&mut c, user, hams).await;
            // Not none: the capped estimate enters the significance dead
            // zone once spam outweighs the delivered ham in words less than
            // 5.4 to 1 (20 clicks, some learned lightly as confident: a few
            // ham), and a few of the next ones still go (5 here; 6 of
            // enron2's 100 ham after 20 clicks, 17 when the cap counted
            // messages).
            eprintln!("after {clicks} spam clicks, ham filed as spam: {filed:?}");
            assert!(
                filed.len() <= 100 / 10,
                "after {clicks} spam clicks, ham filed as spam as it arrived: {filed:?}"
            );
            // Copies of the clicked spam still are.
            copies_of_the_last_clicked_are_spam(&mut c, user, &clicked).await;
        }
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    after_one_spam_click_an_empty_first_ham_does_not_send_the_next_hundred_to_the_spam_folder,
    async |on| {
        // The issue's own case on enron1 (docs/ACCURACY.md, "Session 18"
        // and "Session 19"): one Spam click, then the first ham to arrive
        // is a subject line with an empty body.
        //
        // Counted in messages, the two classes were then equally known,
        // never-seen tokens said nothing, and every word of the next ham
        // that the one spam had shown read as spam: 99 of enron1's next
        // 100 ham went to the spam folder, and here every one of the next
        // five (with `thin_ham_exponent` 0). The thin-ham cap counts
        // words since session 18.
        //
        // Delivered, the empty ham also filled the whole gap to the
        // clicked spam, so each later ham was learned lightly, and the ham
        // side stayed mostly that one near-empty message: 23 of these 100
        // ham were filed from the sixth on (3 of enron1's). Since session
        // 19 a message under a twentieth of the mean message fills only
        // part of the gap (`engine::clicks::delivered_ceiling`): the next
        // ham fills the rest. Mail cut to its subject and body, as
        // Enron's is.
        let server = on.start().await;
        let mut c = server.client().await;
        let user = server.u("one-click-then-empty-ham@provider.example");
        let clicked = vec![mailgen::subject_and_body(&mailgen::zipf_spam(13, 0))];
        train(&mut c, user, &clicked[0], Label::Spam, "").await;
        let empty = score(&mut c, user, &mailgen::subject_only_ham(13, 0)).await;
        assert_ne!(empty.verdict, Verdict::Spam as i32, "the empty ham itself");
        let info = crate::common::user(&mut c, user).await;
        assert_eq!(
            (info.spam_learned, info.ham_learned),
            (1, 1),
            "it was learned"
        );
        let hams = (0..100).map(|i| mailgen::subject_and_body(&mailgen::zipf_ham(13, i)));
        let filed = ham_filed_as_spam(&mut c, user, hams).await;
        assert!(
            filed.is_empty(),
            "ham filed as spam as it arrived: {filed:?}"
        );
        copies_of_the_last_clicked_are_spam(&mut c, user, &clicked).await;
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    after_one_spam_click_an_empty_note_from_a_new_sender_is_not_filed,
    async |on| {
        // One Spam click, and the next message is a note with an empty
        // body from a sender the user never heard from. What it shares
        // with the clicked spam are the header lines all mail has
        // (`header:to`, `header:date`, the provider's relay): with no ham
        // learned, Graham's ratio made each of them spam by construction,
        // and at Robinson's `s` = 0.1 one message made each 0.95 — these
        // notes went to the spam folder at p = 0.986 (with
        // `one_sided_strength` 0). At `s` = 1 while a class is empty
        // (`robinson::strength`) they are neutral, and a copy of the clicked
        // spam is still spam. Each note is scored for a user of its own, so
        // that each meets a model with no ham.
        let server = on.start().await;
        let mut c = server.client().await;
        let mut filed = Vec::new();
        for i in 0..10 {
            let user = server.u(&format!("one-click-{i}@provider.example"));
            let clicked = vec![mailgen::spam(17, i)];
            train(&mut c, user, &clicked[0], Label::Spam, "").await;
            let s = score(&mut c, user, &mailgen::empty_note(17, i)).await;
            if s.verdict == Verdict::Spam as i32 {
                filed.push((i, s.spam_probability));
            }
            copies_of_the_last_clicked_are_spam(&mut c, user, &clicked).await;
        }
        assert!(filed.is_empty(), "notes filed as spam: {filed:?}");
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    other_users_spam_only_clicks_file_none_of_a_new_users_ham_as_spam,
    async |on| {
        // The same bug one level up: users who share and only ever click
        // Spam (nothing seeded) make a shared model that knows spam alone,
        // and every user is scored over it. Such a model cannot tell a
        // user's ham from spam (every token it knows reads as spam), so it
        // is given no weight and a user who has learned nothing gets their
        // ham delivered; once the shared model knows ham too (here the
        // operator's seed), it takes part again.
        let server = on.start().await;
        let mut c = server.client().await;
        let clicker = server.u("shares-spam-clicks@provider.example");
        share(&mut c, clicker, Some(true)).await;
        let newcomer = server.u("newcomer@provider.example");
        let hams: Vec<Vec<u8>> = (0..100).map(|i| mailgen::ham(9, i)).collect();
        // The newcomer's ham filed as spam, and the shared model's largest
        // share in a score of theirs.
        let scored = async |c: &mut Client| {
            let (mut filed, mut shared_share) = (Vec::new(), 0.0f64);
            for (i, ham) in hams.iter().enumerate() {
                let s = score(c, newcomer, ham).await;
                if s.verdict == Verdict::Spam as i32 {
                    filed.push((i, s.spam_probability));
                }
                shared_share = shared_share.max(s.explanation.unwrap().shared_share);
            }
            (filed, shared_share)
        };
        let mut clicked = 0;
        for n in [1usize, 20, 100] {
            while clicked < n {
                train(&mut c, clicker, &mailgen::spam(9, clicked), Label::Spam, "").await;
                clicked += 1;
            }
            let (filed, shared_share) = scored(&mut c).await;
            assert!(
                filed.is_empty(),
                "after {n} shared spam clicks, the newcomer's ham filed as spam: {filed:?}"
            );
            assert_eq!(shared_share, 0.0, "after {n} shared spam clicks");
        }
        for i in 0..60 {
            c.seed_shared(proto::SeedSharedRequest {
                message: mailgen::ham(4, i),
                label: Label::Ham.into(),
                message_id: format!("corpus/ham/{i}"),
            })
            .await
            .unwrap();
        }
        let (filed, shared_share) = scored(&mut c).await;
        assert!(filed.is_empty(), "with the seed's ham: {filed:?}");
        assert!(shared_share > 0.5, "with the seed's ham: {shared_share}");
        // Never having clicked, the newcomer learned nothing from delivery.
        let info = crate::common::user(&mut c, newcomer).await;
        assert_eq!((info.spam_learned, info.ham_learned), (0, 0));
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    two_sided_clicks_still_separate_the_generated_mail,
    async |on| {
        // The generator's mail is learnable: with both kinds of clicks, unseen
        // ham and spam land on their sides (so the test above is not passing
        // because nothing can be told apart).
        let server = on.start().await;
        let mut c = server.client().await;
        let user = server.u("both@provider.example");
        for i in 0..30 {
            train(&mut c, user, &mailgen::spam(3, i), Label::Spam, "").await;
            train(&mut c, user, &mailgen::ham(3, i), Label::Ham, "").await;
        }
        let (mut spam_caught, mut ham_kept) = (0, 0);
        for i in 100..150 {
            if score(&mut c, user, &mailgen::spam(3, i)).await.verdict == Verdict::Spam as i32 {
                spam_caught += 1;
            }
            if score(&mut c, user, &mailgen::ham(3, i)).await.verdict == Verdict::Ham as i32 {
                ham_kept += 1;
            }
        }
        assert!(
            spam_caught >= 45 && ham_kept >= 45,
            "{spam_caught} {ham_kept}"
        );
        server.stop().await;
    }
);

// A user who clicks only *Spam* (every spam that reaches the inbox) and
// never *Not spam*: with delivered mail learned (the default) their model
// learns what their ham looks like, so unseen spam of the same campaigns
// is caught — not merely copies of what they clicked — and unseen ham
// stays out of the spam folder. Without it the same clicks leave a
// one-sided model that can only cancel.
on_both_stores!(
    Redis,
    delivered_mail_teaches_a_spam_only_clicker_their_ham,
    async |on| {
        async fn mailbox(server: &TestServer) -> (usize, usize) {
            let mut c = server.client().await;
            let user = server.u("clicks-spam-only@provider.example");
            for i in 0..40 {
                score(&mut c, user, &mailgen::ham(5, i)).await;
                let spam = mailgen::spam(5, i);
                if score(&mut c, user, &spam).await.verdict != Verdict::Spam as i32 {
                    train(&mut c, user, &spam, Label::Spam, "").await;
                }
            }
            let (mut spam_caught, mut ham_as_spam) = (0, 0);
            for i in 100..150 {
                if score(&mut c, user, &mailgen::spam(5, i)).await.verdict == Verdict::Spam as i32 {
                    spam_caught += 1;
                }
                if score(&mut c, user, &mailgen::ham(5, i)).await.verdict == Verdict::Spam as i32 {
                    ham_as_spam += 1;
                }
            }
            (spam_caught, ham_as_spam)
        }
        let learning = on.start().await;
        let (caught, ham_as_spam) = mailbox(&learning).await;
        learning.stop().await;
        let pure = on.start_pure().await;
        let (caught_pure, ham_as_spam_pure) = mailbox(&pure).await;
        pure.stop().await;
        eprintln!(
            "learning: {caught} caught, {ham_as_spam} ham as spam; pure: {caught_pure}, {ham_as_spam_pure}"
        );
        assert_eq!(ham_as_spam, 0, "unseen ham filed as spam");
        assert!(caught >= 45, "unseen spam caught: {caught} of 50");
        assert!(
            caught > caught_pure,
            "{caught} vs {caught_pure} without learning"
        );
    }
);

/// What a user's mail scores: the delivered ham they were sent and the
/// spam they clicked, all in their ledger already, so scoring learns
/// nothing more (`settle_delivered` makes sure before it returns).
async fn scores_of(c: &mut Client, user: &str, seed: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..30 {
        let s = crate::common::score(c, user, &mailgen::ham(seed, i)).await;
        out.push(s.spam_probability.to_bits());
        let s = crate::common::score(c, user, &mailgen::spam(seed, i % 20)).await;
        out.push(s.spam_probability.to_bits());
    }
    settle_delivered(c).await;
    out
}

/// Issue #19: the header prior that waits for clicked ham
/// (`--header-strength-ramp`) reads the split between clicked and
/// delivered ham, which the store keeps (format 8). A user who only
/// clicks Spam, whose ham side is delivered mail, must score after a
/// restart (SIGKILL: the journal; SIGTERM: the snapshot) exactly as
/// before — and as without the setting — and a user who clicked Not spam
/// keeps their clicked ham (and so the smaller header prior).
#[tokio::test]
async fn the_clicked_ham_the_header_prior_waits_for_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults since session 15, spelled out.
    let ramp = ["--header-strength", "0.02", "--header-strength-ramp", "10"];
    let users = [("spam-only", 41u64), ("ham-clicker", 42)];
    let server = ServerProcess::start_args(dir.path(), &ramp);
    let mut c = connect(&server.addr).await;
    for (user, seed) in users {
        for i in 0..20 {
            train(&mut c, user, &mailgen::spam(seed, i), Label::Spam, "").await;
        }
        if user == "ham-clicker" {
            for i in 100..115 {
                train(&mut c, user, &mailgen::ham(seed, i), Label::Ham, "").await;
            }
        }
        train(&mut c, user, &mailgen::spam(seed, 20), Label::Spam, "").await;
    }
    let mut before = Vec::new();
    for (user, seed) in users {
        // Scored until nothing more is learned: ham the model first filed
        // as spam is learned once it reaches the inbox.
        let mut s = scores_of(&mut c, user, seed).await;
        let mut rounds = 0;
        loop {
            let again = scores_of(&mut c, user, seed).await;
            if again == s {
                break;
            }
            (s, rounds) = (again, rounds + 1);
            assert!(rounds < 10, "{user}: scoring kept learning");
        }
        let info = crate::common::user(&mut c, user).await;
        // Delivered mail was learned (clicked ham: 15 of the clicker's).
        assert!(info.ham_learned > if user == "spam-only" { 0 } else { 15 });
        before.push(s);
    }
    // Delivered mail is not flushed on its own; a Forget (even of nothing)
    // flushes every write before it.
    let nothing = c
        .forget(chaff::proto::ForgetRequest {
            user_id: "spam-only".into(),
            message_id: "<never@learned>".into(),
        })
        .await;
    assert_eq!(nothing.unwrap_err().code(), tonic::Code::NotFound);
    server.kill();
    // Read from the journal, then (a clean stop folds it) from snapshots.
    for restart in ["SIGKILL", "SIGTERM"] {
        let server = ServerProcess::start_args(dir.path(), &ramp);
        let mut c = connect(&server.addr).await;
        for ((user, seed), want) in users.iter().zip(&before) {
            let got = scores_of(&mut c, user, *seed).await;
            assert_eq!(&got, want, "{user} after a {restart} restart");
        }
        server.terminate();
    }
    // Without the header prior (its `s` the body's, 0.1): the same scores
    // for the spam-only user (the ramp never started for them), other
    // scores for the ham clicker.
    let server = ServerProcess::start_args(dir.path(), &["--header-strength", "0.1"]);
    let mut c = connect(&server.addr).await;
    let plain = scores_of(&mut c, "spam-only", 41).await;
    assert_eq!(plain, before[0], "spam-only: as without the setting");
    let plain = scores_of(&mut c, "ham-clicker", 42).await;
    assert_ne!(plain, before[1], "ham-clicker: the ramp is in effect");
    server.terminate();
}

on_both_stores!(
    RedisAlone,
    after_one_spam_click_over_a_spam_only_shared_model_an_empty_note_is_not_filed,
    async |on| {
        // Nothing seeded and every sharer clicks only Spam: the shared
        // model knows only spam and gets no weight, so a new user's
        // tokens it knows are the user's own evidence, with the same
        // one-sided s as without a shared model (0.986, 10 of 10 filed,
        // when the blend shrank them with the body's s).
        let server = on.start().await;
        let mut c = server.client().await;
        let sharer = server.u("sharer@provider.example");
        share(&mut c, sharer, Some(true)).await;
        for i in 0..5 {
            train(&mut c, sharer, &mailgen::spam(31, i), Label::Spam, "").await;
        }
        // The shared model the scores below go through holds those clicks
        // (on Redis too: else the test would pass with no shared model).
        let info = c
            .get_shared(proto::GetSharedRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!((info.spam_learned, info.ham_learned), (5, 0), "{info:?}");
        let mut filed = Vec::new();
        for i in 0..10 {
            let user = server.u(&format!("one-click-{i}@provider.example"));
            train(&mut c, user, &mailgen::spam(17, i), Label::Spam, "").await;
            let s = score(&mut c, user, &mailgen::empty_note(17, i)).await;
            if s.verdict == Verdict::Spam as i32 {
                filed.push((i, s.spam_probability));
            }
            // A copy of the spam the user clicked is still spam.
            let copy = score(&mut c, user, &mailgen::spam(17, i)).await;
            assert_eq!(copy.verdict, Verdict::Spam as i32, "copy {i}: {copy:?}");
        }
        assert!(filed.is_empty(), "empty notes filed: {filed:?}");
        server.stop().await;
    }
);

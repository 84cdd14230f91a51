//! Learning from delivered mail over the wire: Score only queues it for
//! the server's background learner (`engine::delivered`), which learns it
//! soon after; Score never waits for that learner, and a full queue drops
//! and counts instead.

use std::time::{Duration, Instant};

use chaff::engine::Settings;
use chaff::proto::{self, Label};

use crate::common::*;
use crate::mailgen;

async fn stats(c: &mut Client) -> proto::ServerStats {
    c.get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetUser (bounded) until the user's ham count reaches `want`.
async fn ham_learned_within(c: &mut Client, user: &str, want: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let got = crate::common::user(c, user).await.ham_learned;
        if got >= want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both_stores!(
    Redis,
    delivered_mail_is_learned_soon_after_score,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let user = server.u("delivered-soon@provider.example");
        train(&mut c, user, &mailgen::spam(11, 0), Label::Spam, "").await;
        for i in 0..5 {
            let s = score(&mut c, user, &mailgen::ham(11, i)).await;
            assert_eq!(s.action, proto::Action::Deliver as i32, "ham {i}");
        }
        let learned = ham_learned_within(&mut c, user, 5, Duration::from_secs(20)).await;
        assert_eq!(learned, 5, "delivered ham learned within 20 s");
        // The model can show a learning (on Redis, once the store has it)
        // a moment before the worker counts it: read the counters settled.
        settle_delivered(&mut c).await;
        let s = stats(&mut c).await;
        assert_eq!((s.delivered_learned, s.delivered_dropped), (5, 0));
        // Each message once: scored again, nothing more is learned.
        score(&mut c, user, &mailgen::ham(11, 0)).await;
        settle_delivered(&mut c).await;
        assert_eq!(crate::common::user(&mut c, user).await.ham_learned, 5);
        server.stop().await;
    }
);

// A learner that needs a second per message (fault injection) and a
// queue of two: Score answers at its own pace all the same — inline, six
// deliveries would take six seconds — and what does not fit is dropped
// and counted in GetStats; what was queued is still learned.
//
// On Redis every Score refreshes the user's cached model under the
// user's writer lock (`engine/replicas.rs`); until session 12 the
// learner held that lock through its store round trip (here the fault's
// second), and six Scores took 5.2 s. Now it holds it only for its claim
// check (`engine/delivered.rs`, `learn_delivered_unlocked`).
on_both_stores!(
    Redis,
    score_never_waits_for_the_delivered_learner_and_a_full_queue_drops,
    async |on| {
        let server = on
            .start_with(Settings {
                delivered_queue: 2,
                ..Settings::default()
            })
            .await;
        let mut c = server.client().await;
        let user = server.u(&format!("{}-1", chaff::fault::SLOW_LEARNING));
        train(&mut c, user, &mailgen::spam(12, 0), Label::Spam, "").await;
        let started = Instant::now();
        for i in 0..6 {
            let s = score(&mut c, user, &mailgen::ham(12, i)).await;
            assert_eq!(s.action, proto::Action::Deliver as i32, "ham {i}");
        }
        let took = started.elapsed();
        assert!(
            took < 3 * chaff::fault::SLOW_LEARNING_PAUSE,
            "six Scores took {took:?}: they waited for the learner"
        );
        let s = stats(&mut c).await;
        assert!(s.delivered_dropped >= 3, "dropped {}", s.delivered_dropped);
        let queued = 6 - s.delivered_dropped;
        let learned = ham_learned_within(&mut c, user, queued, Duration::from_secs(20)).await;
        assert_eq!(learned, queued);
        settle_delivered(&mut c).await;
        assert_eq!(stats(&mut c).await.delivered_learned, queued);
        server.stop().await;
    }
);

// A click on a delivered message whose learning the worker is writing at
// that moment (the fault's second) — under the webmail's own message id,
// not the id chaff derives — waits for that write and replaces it: the
// model holds the click once, and forgetting the click leaves nothing of
// the message. On Redis the learner writes outside the user's writer
// lock, so this is the claim's wait for a write in flight
// (`engine/delivered.rs`); without it the click lands first and the late
// learning adds the message a second time, under the derived id.
on_both_stores!(
    Redis,
    a_click_on_delivered_mail_being_learned_replaces_that_learning_exactly,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let user = server.u(&format!("{}-click", chaff::fault::SLOW_LEARNING));
        train(&mut c, user, &mailgen::spam(13, 0), Label::Spam, "").await;
        let ham = mailgen::ham(13, 0);
        let s = score(&mut c, user, &ham).await;
        assert_eq!(s.action, proto::Action::Deliver as i32);
        // The worker takes the job at once and spends a second on it: the
        // click below comes while it is being written (not asserted: a
        // stalled machine may make it come before the worker's check, and
        // the click then wins by its claim, with the same counts).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = train(&mut c, user, &ham, Label::Ham, "webmail-13").await;
        settle_delivered(&mut c).await;
        let info = crate::common::user(&mut c, user).await;
        assert_eq!(
            (info.spam_learned, info.ham_learned),
            (1, 1),
            "the click once, the delivered learning replaced ({:?})",
            t.outcome
        );
        let forgotten = c
            .forget(proto::ForgetRequest {
                user_id: user.into(),
                message_id: "webmail-13".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (forgotten.spam_learned, forgotten.ham_learned),
            (1, 0),
            "nothing of the message left after forgetting the click"
        );
        server.stop().await;
    }
);

// Only mail the model itself calls no spam is learned as delivered ham.
// Passthrough delivers spam too (tagged), and an allow entry delivers
// what the model calls spam; learning either as ham taught the model to
// pass that spam (the support walkthrough of session 24: after one
// pass, 8 of 10 passthrough spam scored ham 0.0 on the second).
#[tokio::test]
async fn delivered_spam_in_passthrough_or_by_an_allow_entry_is_not_learned_as_ham() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let user = "passthrough@provider.example";
    for (i, m) in [SPAM, SPAM2].iter().enumerate() {
        train(&mut c, user, m, Label::Spam, &format!("s{i}")).await;
    }
    for (i, m) in [HAM, HAM2].iter().enumerate() {
        train(&mut c, user, m, Label::Ham, &format!("h{i}")).await;
    }
    c.update_user(proto::UpdateUserRequest {
        user_id: user.into(),
        handling_mode: proto::HandlingMode::Passthrough.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.add_list_entry(proto::ListEntryRequest {
        user_id: user.into(),
        kind: proto::ListKind::Allow.into(),
        entry: "192.0.2.0/24".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let clicked_ham = crate::common::user(&mut c, user).await.ham_learned;
    let mut spam = SPAM.to_vec();
    spam.extend_from_slice(b"One more line so it is not the clicked message.\r\n");
    let passed = score(&mut c, user, &spam).await;
    assert_eq!(
        (passed.action, passed.verdict),
        (proto::Action::Deliver as i32, proto::Verdict::Spam as i32),
        "passthrough delivers spam, tagged"
    );
    let mut allowed = SPAM2.to_vec();
    allowed.extend_from_slice(b"Another line.\r\n");
    let r = c
        .score(proto::ScoreRequest {
            user_id: user.into(),
            message: allowed,
            client_ip: "192.0.2.44".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.action, proto::Action::Deliver as i32, "{r:?}");
    assert!(r.spam_probability >= 0.8, "the model calls it spam: {r:?}");
    // A control the model does not call spam is learned, after the two.
    let ham = score(&mut c, user, &mailgen::ham(24, 0)).await;
    assert_ne!(ham.verdict, proto::Verdict::Spam as i32, "{ham:?}");
    let learned = ham_learned_within(&mut c, user, clicked_ham + 1, Duration::from_secs(20)).await;
    settle_delivered(&mut c).await;
    assert_eq!(learned, clicked_ham + 1, "the control was learned");
    assert_eq!(
        crate::common::user(&mut c, user).await.ham_learned,
        clicked_ham + 1,
        "neither delivered spam was learned as ham"
    );
    server.stop().await;
}

// An empty or blank message delivered (a lost body) is not learned: it
// would count as a learned ham and teach nothing (the integrator's
// walkthrough of session 24: 1,000 blank Scores made ham_learned 1,086
// and moved ham probes' log-odds from −34.9 to −18.3).
#[tokio::test]
async fn an_empty_message_delivered_is_not_learned_as_ham() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let user = "blank@provider.example";
    train(&mut c, user, SPAM, Label::Spam, "s0").await;
    for m in [&b""[..], b" ", b"\r\n"] {
        let s = score(&mut c, user, m).await;
        assert_eq!(s.action, proto::Action::Deliver as i32, "{m:?}");
    }
    // A real message after them is learned (the queue is first come, first
    // served: the blank ones, had they been queued, would be learned first).
    score(&mut c, user, &mailgen::ham(25, 0)).await;
    assert_eq!(
        ham_learned_within(&mut c, user, 1, Duration::from_secs(20)).await,
        1
    );
    settle_delivered(&mut c).await;
    assert_eq!(crate::common::user(&mut c, user).await.ham_learned, 1);
    server.stop().await;
}

// Support looking at a customer's message again (`chaff score --dry-run`)
// gets the pipeline's answer but changes nothing: no decision record and
// no delivered learning. Without it, each look taught the model the
// message as ham and added a record to `chaff why` (the support
// walkthrough of session 24).
#[tokio::test]
async fn a_dry_run_score_decides_as_the_pipeline_but_records_and_learns_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let user = "dry-run@provider.example";
    train(&mut c, user, SPAM, Label::Spam, "s0").await;
    let look = |dry_run, i| proto::ScoreRequest {
        user_id: user.into(),
        message: mailgen::ham(26, i),
        dry_run,
        ..Default::default()
    };
    // The same answer as the pipeline's: here, before anything is learned.
    let dry = c.score(look(true, 0)).await.unwrap().into_inner();
    let second = c.score(look(true, 0)).await.unwrap().into_inner();
    assert_eq!(dry, second, "a dry run changed what the next one sees");
    // Another message scored for real, so that a dry run's learning (under
    // its own derived id) would show as a second ham learned.
    let real = c.score(look(false, 1)).await.unwrap().into_inner();
    assert_eq!(real.action, dry.action);
    assert_eq!(
        ham_learned_within(&mut c, user, 1, Duration::from_secs(20)).await,
        1
    );
    settle_delivered(&mut c).await;
    assert_eq!(
        crate::common::user(&mut c, user).await.ham_learned,
        1,
        "only the real Score's delivery was learned"
    );
    // The log is written off the scoring path, in order: once the real
    // Score's record is there, a record of the dry run before it would be.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = c
            .find_decisions(proto::FindDecisionsRequest {
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .decisions;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1, "only the real Score was recorded");
    server.stop().await;
}

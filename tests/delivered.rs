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

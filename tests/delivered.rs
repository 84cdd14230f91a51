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
        let s = stats(&mut c).await;
        assert_eq!((s.delivered_learned, s.delivered_dropped), (5, 0));
        // Each message once: scored again, nothing more is learned.
        score(&mut c, user, &mailgen::ham(11, 0)).await;
        settle_delivered(&mut c).await;
        assert_eq!(crate::common::user(&mut c, user).await.ham_learned, 5);
        server.stop().await;
    }
);

/// A learner that needs a second per message (fault injection) and a
/// queue of two: Score answers at its own pace all the same — inline, six
/// deliveries would take six seconds — and what does not fit is dropped
/// and counted in GetStats; what was queued is still learned.
///
/// Sled only: on the Redis store a Score waits for the learning of that
/// user's message in flight — each Score brings the cached model up to
/// date under the user's writer lock (`Engine::refresh`), which the
/// learner holds through its store round trip (here the fault's second).
/// Measured: six Scores took 5.2 s. docs/SCALING.md, "What is left".
#[tokio::test]
async fn score_never_waits_for_the_delivered_learner_and_a_full_queue_drops() {
    let server = TestServer::start_with(Settings {
        delivered_queue: 2,
        ..Settings::default()
    })
    .await;
    let mut c = server.client().await;
    let user = format!("{}-1", chaff::fault::SLOW_LEARNING);
    train(&mut c, &user, &mailgen::spam(12, 0), Label::Spam, "").await;
    let started = Instant::now();
    for i in 0..6 {
        let s = score(&mut c, &user, &mailgen::ham(12, i)).await;
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
    let learned = ham_learned_within(&mut c, &user, queued, Duration::from_secs(20)).await;
    assert_eq!(learned, queued);
    assert_eq!(stats(&mut c).await.delivered_learned, queued);
    server.stop().await;
}

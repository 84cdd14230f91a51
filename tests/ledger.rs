//! The undo window through the real service: exact Forget and relearn for
//! recent clicks, FAILED_PRECONDITION naming the window for older ones, and
//! counts that stay. Time is a clock the test moves (no sleeping).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chaff::engine::Settings;
use chaff::proto::{self, Label};
use chaff::store::Clock;

use crate::common::*;

const DAY_MS: u64 = 86_400_000;

/// A server whose clock reads `now` (unix ms), with a 90-day window. On
/// Redis, a cluster of its own: the engine's background sweeps fold and
/// trim every user of the cluster with this clock.
async fn server_at(on: On, now: &Arc<AtomicU64>) -> TestServer {
    let clock = now.clone();
    on.start_with(Settings {
        undo_window: Duration::from_secs(90 * 86_400),
        clock: Clock::new(move || clock.load(Ordering::SeqCst)),
        // Scores here observe the model; they must not change it.
        learn_delivered: false,
        ..Settings::default()
    })
    .await
}

async fn forget(
    c: &mut Client,
    user: &str,
    id: &str,
) -> Result<proto::ForgetResponse, tonic::Status> {
    c.forget(proto::ForgetRequest {
        user_id: user.into(),
        message_id: id.into(),
    })
    .await
    .map(|r| r.into_inner())
}

on_both_stores!(
    RedisAlone,
    a_click_older_than_the_undo_window_cannot_be_forgotten_and_its_counts_stay,
    async |on| {
        let now = Arc::new(AtomicU64::new(1_800_000_000_000));
        let server = server_at(on, &now).await;
        let mut c = server.client().await;
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "old").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "recent-ham").await;
        now.fetch_add(89 * DAY_MS, Ordering::SeqCst);
        train(&mut c, server.u("alice"), SPAM2, Label::Spam, "recent").await;
        train(&mut c, server.u("alice"), HAM2, Label::Ham, "recent2").await;
        // Day 89: everything is still inside the window.
        forget(&mut c, server.u("alice"), "recent-ham")
            .await
            .unwrap();
        // Day 91: "old" is beyond it, "recent" is not.
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        let before = observe(&mut c, server.u("alice")).await;
        let err = forget(&mut c, server.u("alice"), "old")
            .await
            .expect_err("too old to forget");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("undo window"), "{}", err.message());
        assert!(err.message().contains("90d"), "{}", err.message());
        assert_eq!(
            observe(&mut c, server.u("alice")).await,
            before,
            "counts stay"
        );
        // Moving it to the other class is refused the same way; the same
        // label again is still harmless.
        let err = c
            .train(proto::TrainRequest {
                user_id: server.u("alice").into(),
                message: SPAM.to_vec(),
                label: Label::Ham.into(),
                message_id: "old".into(),
            })
            .await
            .expect_err("too old to move");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        let again = train(&mut c, server.u("alice"), SPAM, Label::Spam, "old").await;
        assert_eq!(again.outcome, proto::TrainOutcome::AlreadyLearned as i32);
        assert_eq!(
            observe(&mut c, server.u("alice")).await,
            before,
            "counts stay"
        );
        // A recent click is still undone exactly.
        let f = forget(&mut c, server.u("alice"), "recent").await.unwrap();
        assert_eq!(f.forgotten_label, Label::Spam as i32);
        let u = user(&mut c, server.u("alice")).await;
        assert_eq!((u.spam_learned, u.ham_learned), (1, 1));
        // A message never learned is still NOT_FOUND, not a window matter.
        let err = forget(&mut c, server.u("alice"), "never")
            .await
            .expect_err("never learned");
        assert_eq!(err.code(), tonic::Code::NotFound);
        server.stop().await;
    }
);

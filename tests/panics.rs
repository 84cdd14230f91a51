//! The panic policy over the wire: a request that panics is answered
//! INTERNAL and the server goes on serving, on the same connection, with
//! health still SERVING. Panics are injected by the `fault-injection`
//! feature (src/fault.rs), which this test binary turns on.

use chaff::fault::{PANIC_IN_ENGINE, PANIC_IN_HANDLER};
use chaff::proto::{self, Label};
use chaff::service::catch_panic::PANIC_MESSAGE;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::*;

async fn serving(server: &TestServer) -> i32 {
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "chaff.v1.Chaff".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn panics_then_serves(which: &str) {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    train(&mut c, "alice", SPAM, Label::Spam, "").await;
    for round in 0..2 {
        let e = c
            .score(proto::ScoreRequest {
                user_id: which.into(),
                message: SPAM.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "round {round}: {e:?}");
        assert_eq!(e.message(), PANIC_MESSAGE, "round {round}");
        // The same connection, the same locks: the next calls succeed.
        let scored = score(&mut c, "alice", SPAM).await;
        assert!(
            scored.tokens_known > 0,
            "round {round}: alice's model is intact"
        );
        let trained = train(&mut c, "alice", HAM, Label::Ham, "").await;
        assert_eq!(
            (trained.spam_learned, trained.ham_learned),
            (1, 1),
            "round {round}"
        );
        assert_eq!(serving(&server).await, ServingStatus::Serving as i32);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_panic_in_engine_work_under_a_lock_is_internal_and_the_server_keeps_serving() {
    panics_then_serves(PANIC_IN_ENGINE).await;
}

#[tokio::test]
async fn a_panic_in_a_handler_is_internal_and_the_server_keeps_serving() {
    panics_then_serves(PANIC_IN_HANDLER).await;
}

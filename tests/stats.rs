//! GetStats and `chaff stats`: the model cache and group commit counters
//! an operator reads.

use chaff::proto::{self, Label};
use tokio::process::Command;

use crate::common::*;

#[tokio::test]
async fn stats_count_model_lookups_and_durable_replies() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let stats = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.get_stats(proto::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let fresh = stats(&mut c).await;
    assert_eq!((fresh.model_hits, fresh.model_misses), (0, 0));
    assert!(fresh.model_memory_bytes > 0);

    score(&mut c, "nobody", SPAM).await;
    train(&mut c, "alice", SPAM, Label::Spam, "s1").await;
    train(&mut c, "alice", HAM, Label::Ham, "h1").await;
    score(&mut c, "alice", HAM).await;
    let s = stats(&mut c).await;
    assert_eq!(s.model_absent, 1, "{s:?}");
    assert_eq!(s.model_misses, 1, "alice loaded once: {s:?}");
    assert!(s.model_hits >= 3, "{s:?}");
    assert_eq!(s.resident_users, 1);
    assert!(s.resident_bytes > 0);
    assert!(s.durable_waits >= 2 && s.flushes >= 1, "{s:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["stats", "--server", &server.url()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("models in memory: 1 user,"), "{text}");
    assert!(text.contains("hit rate"), "{text}");
    assert!(text.contains("storage flushes"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn stats_count_the_shared_models_memory() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let before = c
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    c.seed_shared(proto::SeedSharedRequest {
        message: SPAM.to_vec(),
        label: Label::Spam.into(),
        message_id: "seed-1".into(),
    })
    .await
    .unwrap();
    let tokens = c
        .get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens > 0);
    let after = c
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The sum and the operator's part each hold every seeded token.
    let per_token = chaff::engine::BYTES_PER_TOKEN as u64;
    assert!(
        after.shared_model_bytes >= before.shared_model_bytes + 2 * tokens * per_token,
        "{before:?} -> {after:?}"
    );
    // Not charged to the user models' budget.
    assert_eq!(after.resident_bytes, before.resident_bytes);

    let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["stats", "--server", &server.url(), "--json"])
        .output()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shared_model_bytes"], after.shared_model_bytes);
    server.stop().await;
}

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

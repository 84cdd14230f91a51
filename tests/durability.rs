//! What was acknowledged is on disk: stop the real binary with SIGTERM, or
//! kill it with SIGKILL right after a reply, restart on the same data
//! directory, and the user looks exactly as before.

use chaff::proto::Label;

use crate::common::*;

/// Trains a user through a running `chaff serve`, returns what it observed.
async fn train_some(url: &str) -> (chaff::proto::UserInfo, Vec<(u64, i32)>) {
    let mut c = connect(url).await;
    train(&mut c, "alice", SPAM, Label::Spam, "").await;
    train(&mut c, "alice", HAM, Label::Ham, "").await;
    train(&mut c, "alice", HAM2, Label::Spam, "flip").await;
    train(&mut c, "alice", HAM2, Label::Ham, "flip").await;
    train(&mut c, "alice", SPAM2, Label::Spam, "").await;
    observe(&mut c, "alice").await
}

#[tokio::test]
async fn state_survives_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_pure(dir.path());
    let before = train_some(&server.addr).await;
    server.terminate();
    let server = ServerProcess::start_pure(dir.path());
    let mut c = connect(&server.addr).await;
    assert_eq!(observe(&mut c, "alice").await, before);
    server.terminate();
}

#[tokio::test]
async fn sigterm_stops_the_server_even_with_an_idle_client_connected() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut c = connect(&server.addr).await;
    train(&mut c, "alice", SPAM, Label::Spam, "").await;
    // `c` keeps its HTTP/2 connection open across the SIGTERM, as a mail
    // pipeline would; terminate() waits for the process to exit cleanly.
    server.terminate();
    let server = ServerProcess::start(dir.path());
    let mut c2 = connect(&server.addr).await;
    assert_eq!(user(&mut c2, "alice").await.spam_learned, 1);
    drop(c);
    server.terminate();
}

#[tokio::test]
async fn acknowledged_clicks_survive_sigkill_right_after_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_pure(dir.path());
    let before = train_some(&server.addr).await;
    // One more click, and the kill follows its reply immediately.
    let mut c = connect(&server.addr).await;
    let last = train(
        &mut c,
        "alice",
        b"Subject: last\r\n\r\nfinal words here",
        Label::Spam,
        "last",
    )
    .await;
    server.kill();

    let server = ServerProcess::start_pure(dir.path());
    let mut c = connect(&server.addr).await;
    let (info, _) = observe(&mut c, "alice").await;
    assert_eq!(
        (info.spam_learned, info.ham_learned),
        (last.spam_learned, last.ham_learned)
    );
    // Undo the last click: everything else must be exactly as observed before.
    c.forget(chaff::proto::ForgetRequest {
        user_id: "alice".into(),
        message_id: "last".into(),
    })
    .await
    .unwrap();
    assert_eq!(observe(&mut c, "alice").await, before);
    server.kill();
}

#[tokio::test]
async fn settings_lists_and_decisions_survive_sigkill() {
    use chaff::proto::{self, HandlingMode, ListKind};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut c = connect(&server.addr).await;
    c.update_user(proto::UpdateUserRequest {
        user_id: "alice".into(),
        handling_mode: HandlingMode::Reject.into(),
        reject_threshold: Some(0.99),
        ..Default::default()
    })
    .await
    .unwrap();
    for (user, operator_wide) in [("alice", false), ("", true)] {
        c.add_list_entry(proto::ListEntryRequest {
            user_id: user.into(),
            operator_wide,
            kind: ListKind::Block.into(),
            entry: "pills.example".into(),
            force: false,
        })
        .await
        .unwrap();
    }
    score(&mut c, "bob", SPAM).await;
    // Decisions are flushed by sled's background flusher (≤ 500 ms).
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    server.kill();

    let server = ServerProcess::start(dir.path());
    let mut c = connect(&server.addr).await;
    let s = user(&mut c, "alice").await.settings.unwrap();
    assert_eq!(s.handling_mode, HandlingMode::Reject as i32);
    assert_eq!(s.reject_threshold, 0.99);
    let r = score(&mut c, "alice", SPAM).await;
    assert_eq!(
        r.action,
        proto::Action::Reject as i32,
        "user block entry kept"
    );
    let b = score(&mut c, "bob", SPAM).await;
    assert_eq!(
        b.action,
        proto::Action::SpamFolder as i32,
        "operator entry kept"
    );
    let found = c
        .find_decisions(proto::FindDecisionsRequest {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert!(!found.is_empty(), "bob's first decision survived");
    server.kill();
}

//! Per-user export and import (`ExportUser` / `ImportUser`, `chaff user
//! export|import`): a user trained on one real server, exported to a file
//! and imported into a fresh server (another data directory), scores
//! bit-identically there.

use chaff::proto::{self, HandlingMode, Label, ListKind};
use tokio::process::Command;
use tonic::Code;

use crate::common::*;

async fn chaff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(args)
        .env_remove("CHAFF_TOKEN")
        .output()
        .await
        .unwrap()
}

/// Imports `bytes` as `user` through the RPC.
async fn import(
    c: &mut Client,
    user: &str,
    bytes: &[u8],
    replace: bool,
) -> Result<proto::ImportUserResponse, tonic::Status> {
    let mut msgs: Vec<proto::ImportUserRequest> = bytes
        .chunks(100)
        .map(|d| proto::ImportUserRequest {
            data: d.to_vec(),
            ..Default::default()
        })
        .collect();
    msgs[0].user_id = user.into();
    msgs[0].replace = replace;
    c.import_user(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

on_both_stores!(
    RedisAlone,
    an_imported_export_scores_bit_identically_on_a_fresh_server,
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    async |on| {
        // Scores change no model here (the comparison scores both servers).
        // On Redis each server has a cluster of its own: the target must not
        // hold the source's alice already.
        let source = on.start_pure().await;
        let mut a = source.client().await;
        train(&mut a, "alice", SPAM, Label::Spam, "s1").await;
        train(&mut a, "alice", HAM, Label::Ham, "h1").await;
        train(&mut a, "alice", SPAM2, Label::Spam, "s2").await;
        train(&mut a, "alice", HAM2, Label::Spam, "flip").await;
        train(&mut a, "alice", HAM2, Label::Ham, "flip").await;
        a.update_user(proto::UpdateUserRequest {
            user_id: "alice".into(),
            handling_mode: HandlingMode::Reject.into(),
            spam_threshold: Some(0.7),
            ..Default::default()
        })
        .await
        .unwrap();
        a.add_list_entry(proto::ListEntryRequest {
            user_id: "alice".into(),
            kind: ListKind::Block.into(),
            entry: "winner.example".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let before = observe(&mut a, "alice").await;
        let actions: Vec<i32> = {
            let mut v = Vec::new();
            for m in [SPAM, SPAM2, HAM, HAM2] {
                v.push(score(&mut a, "alice", m).await.action);
            }
            v
        };

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alice.chaff");
        let f = file.to_str().unwrap();
        let out = chaff(&[
            "user",
            "--server",
            &source.url(),
            "-u",
            "alice",
            "export",
            f,
        ])
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.starts_with(b"CHAFFUSR"));

        let target = on.start_pure().await;
        let mut b = target.client().await;
        let out = chaff(&[
            "user",
            "--server",
            &target.url(),
            "-u",
            "alice",
            "import",
            f,
        ])
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("5 learned messages") || said.contains("4 learned messages"),
            "{said}"
        );

        // Same scores to the bit, same verdicts and actions, same GetUser.
        assert_eq!(observe(&mut b, "alice").await, before);
        for (m, action) in [SPAM, SPAM2, HAM, HAM2].into_iter().zip(&actions) {
            assert_eq!(score(&mut b, "alice", m).await.action, *action);
        }
        // The ledger came along: Forget works exactly, as on the source.
        let f_a = a
            .forget(proto::ForgetRequest {
                user_id: "alice".into(),
                message_id: "s1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let f_b = b
            .forget(proto::ForgetRequest {
                user_id: "alice".into(),
                message_id: "s1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(f_a, f_b);
        assert_eq!(
            observe(&mut b, "alice").await,
            observe(&mut a, "alice").await
        );
        // And the decisions (support's "why?").
        let decisions = |c: &mut Client| {
            let mut c = c.clone();
            async move {
                c.find_decisions(proto::FindDecisionsRequest {
                    user_id: "alice".into(),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .decisions
                .len()
            }
        };
        assert!(decisions(&mut b).await >= 8);

        // Onto a user with data: refused, unless replace.
        let e = import(&mut b, "alice", &bytes, false).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);
        assert!(e.message().contains("replace"), "{}", e.message());
        let r = import(&mut b, "alice", &bytes, true).await.unwrap();
        assert!(r.replaced);
        assert_eq!(user(&mut b, "alice").await, before.0);

        // A wrong version, a damaged byte, a cut-off stream, another user.
        let mut wrong = bytes.clone();
        wrong[11] = 9;
        let e = import(&mut b, "alice", &wrong, true).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("format version 9"), "{}", e.message());
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x55;
        let e = import(&mut b, "alice", &damaged, true).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("export stream"), "{}", e.message());
        let e = import(&mut b, "alice", &bytes[..bytes.len() - 7], true)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("truncated"), "{}", e.message());
        let e = import(&mut b, "bob", &bytes, false).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("of user alice"), "{}", e.message());
        // None of the refused imports changed alice.
        assert_eq!(user(&mut b, "alice").await, before.0);

        let e = a
            .export_user(proto::ExportUserRequest {
                user_id: "nobody".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        source.stop().await;
        target.stop().await;
    }
);

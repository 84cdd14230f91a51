//! ListUsers and `chaff users`: every user chaff keeps anything for — one
//! only ever scored, and the one `chaff eval --server` creates, included —
//! with learn counts, a page at a time.

use std::path::Path;
use std::time::Duration;

use chaff::proto::{self, Label};
use tokio::process::Command;
use tonic::Code;

use crate::common::*;

/// A TREC index of the four test messages.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let mut index = String::new();
    for (i, (label, msg)) in [("spam", SPAM), ("ham", HAM), ("spam", SPAM2), ("ham", HAM2)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.join(format!("m{i}.eml")), msg).unwrap();
        index.push_str(&format!("{label} m{i}.eml\n"));
    }
    std::fs::write(dir.join("index"), index).unwrap();
    dir.join("index")
}

/// Every page of ListUsers with `page_size`, and how many pages it took.
async fn all_users(c: &mut Client, page_size: u32) -> (Vec<proto::UserListing>, usize) {
    let (mut users, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = c
            .list_users(proto::ListUsersRequest {
                prefix: String::new(),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            return (users, pages);
        }
        token = page.next_page_token;
    }
}

on_both_stores!(
    RedisAlone,
    list_users_finds_learners_scored_only_and_eval_users_with_their_counts,
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "s1").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "h1").await;
        score(&mut c, server.u("carol"), SPAM).await;

        let dir = tempfile::tempdir().unwrap();
        let index = corpus(dir.path());
        // host:port, as `chaff serve` prints it.
        let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["eval", "--server", &server.addr.to_string(), "--index"])
            .arg(&index)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Score decisions are logged in the background: wait for carol's.
        let mut users = Vec::new();
        for _ in 0..100 {
            users = all_users(&mut c, 0).await.0;
            if users.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let names: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let find = |name: &str| users.iter().find(|u| u.user_id.starts_with(name)).unwrap();
        let alice = find(server.u("alice"));
        assert_eq!((alice.spam_learned, alice.ham_learned), (1, 1));
        assert!(alice.tokens > 0);
        assert_eq!(alice.last_scored_unix_ms, 0, "alice was never scored");
        let carol = find(server.u("carol"));
        assert_eq!(
            (carol.spam_learned, carol.ham_learned, carol.tokens),
            (0, 0, 0)
        );
        assert!(carol.last_scored_unix_ms > 1_700_000_000_000, "{carol:?}");
        let eval = find("eval-");
        assert_eq!((eval.spam_learned, eval.ham_learned), (2, 2), "{eval:?}");

        // One per page: three pages, the same users in the same order.
        // (The eval user's last decisions may still be on their way to the
        // log, so its last_scored time is not compared.)
        let (paged, pages) = all_users(&mut c, 1).await;
        assert_eq!(pages, 3);
        let counts = |v: &[proto::UserListing]| {
            v.iter()
                .map(|u| (u.user_id.clone(), u.spam_learned, u.ham_learned, u.tokens))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&paged), counts(&users));

        let e = c
            .list_users(proto::ListUsersRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("page_size"), "{}", e.message());

        // The CLI: text, and JSON one object per user.
        let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["users", "--server", &server.url(), "--page-size", "2"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(server.u("alice")) && text.contains(server.u("carol")),
            "{text}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("3 users"));
        let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["users", "--server", &server.url(), "--json"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        let alice = rows
            .iter()
            .find(|r| r["user"] == server.u("alice"))
            .unwrap();
        assert_eq!(alice["spam_learned"], 1);
        assert_eq!(alice["last_scored_unix_ms"], serde_json::Value::Null);
        server.stop().await;
    }
);

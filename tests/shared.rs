//! The shared model through gRPC: consent in GetUser/UpdateUser, the
//! user's and shared model's shares in ScoreResponse, DeleteUser, the
//! operator's seed (RPCs and `chaff seed`), and durability across SIGKILL.

use chaff::proto::{self, Label, Verdict};
use tokio::process::Command;
use tonic::Code;

use crate::common::*;

async fn shared(c: &mut Client) -> proto::SharedInfo {
    c.get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn sharing(info: &proto::UserInfo) -> bool {
    info.settings.as_ref().unwrap().share_training
}

/// Three users who share, each with one spam and one ham click.
async fn community(c: &mut Client) {
    for u in ["bob", "carol", "dave"] {
        assert!(sharing(&share(c, u, Some(true)).await));
        train(c, u, SPAM, Label::Spam, "").await;
        train(c, u, HAM, Label::Ham, "").await;
    }
}

on_both_stores!(
    RedisAlone,
    share_training_is_off_by_default_and_set_through_update_user,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        assert!(!sharing(&user(&mut c, server.u("alice")).await));
        assert!(sharing(&share(&mut c, server.u("alice"), Some(true)).await));
        // Unset keeps it, whatever else changes.
        let other = c
            .update_user(proto::UpdateUserRequest {
                user_id: server.u("alice").into(),
                spam_threshold: Some(0.95),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(sharing(&other));
        assert!(sharing(&user(&mut c, server.u("alice")).await));
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        assert_eq!(shared(&mut c).await.contributing_users, 1);
        assert!(!sharing(
            &share(&mut c, server.u("alice"), Some(false)).await
        ));
        let s = shared(&mut c).await;
        assert_eq!((s.contributing_users, s.spam_learned, s.tokens), (0, 0, 0));
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    a_new_user_is_protected_and_the_explanation_says_by_whom,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        community(&mut c).await;
        let s = score(&mut c, server.u("newcomer"), SPAM2).await;
        let x = s.explanation.unwrap();
        assert_eq!(s.verdict, Verdict::Spam as i32, "{x:?}");
        assert_eq!((x.user_share, x.shared_share), (0.0, 1.0));
        // A user with training of their own: both parts, adding up to 1.
        train(&mut c, server.u("erin"), SPAM2, Label::Spam, "").await;
        train(&mut c, server.u("erin"), HAM2, Label::Ham, "").await;
        let x = score(&mut c, server.u("erin"), SPAM)
            .await
            .explanation
            .unwrap();
        assert!(x.user_share > 0.0 && x.shared_share > 0.0, "{x:?}");
        assert!((x.user_share + x.shared_share - 1.0).abs() < 1e-12);
        // Without a shared model, everything is the user's.
        let solo = on.start().await;
        let mut c = solo.client().await;
        train(&mut c, server.u("erin"), SPAM2, Label::Spam, "").await;
        let x = score(&mut c, server.u("erin"), SPAM2)
            .await
            .explanation
            .unwrap();
        assert_eq!((x.user_share, x.shared_share), (1.0, 0.0));
        server.stop().await;
        solo.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    delete_user_removes_them_and_their_part_of_the_shared_model,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        community(&mut c).await;
        let before = shared(&mut c).await;
        share(&mut c, server.u("alice"), Some(true)).await;
        train(&mut c, server.u("alice"), SPAM2, Label::Spam, "").await;
        train(&mut c, server.u("alice"), HAM2, Label::Ham, "").await;
        assert_eq!(shared(&mut c).await.contributing_users, 4);
        let r = c
            .delete_user(proto::DeleteUserRequest {
                user_id: server.u("alice").into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.existed);
        assert_eq!(shared(&mut c).await, before);
        let u = user(&mut c, server.u("alice")).await;
        assert_eq!((u.spam_learned, u.ham_learned, u.tokens), (0, 0, 0));
        assert!(!sharing(&u));
        let err = c
            .forget(proto::ForgetRequest {
                user_id: server.u("alice").into(),
                message_id: "<s2@winner.example>".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let empty = c
            .delete_user(proto::DeleteUserRequest {
                user_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    the_seed_is_added_idempotently_and_removed_as_a_whole,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        community(&mut c).await;
        let before = shared(&mut c).await;
        for (m, label, id) in [
            (SPAM2, Label::Spam, "corpus/1"),
            (HAM2, Label::Ham, "corpus/2"),
            (SPAM2, Label::Spam, "corpus/1"),
        ] {
            c.seed_shared(proto::SeedSharedRequest {
                message: m.to_vec(),
                label: label.into(),
                message_id: id.into(),
            })
            .await
            .unwrap();
        }
        let s = shared(&mut c).await;
        assert_eq!((s.seed_spam, s.seed_ham, s.contributing_users), (1, 1, 3));
        let bad = c
            .seed_shared(proto::SeedSharedRequest {
                message: SPAM.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let r = c
            .clear_seed(proto::ClearSeedRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.spam_removed, r.ham_removed), (1, 1));
        assert_eq!(shared(&mut c).await, before);
        server.stop().await;
    }
);

on_both_stores!(
    RedisAlone,
    chaff_seed_reads_a_trec_index_and_chaff_seed_clear_removes_it,
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    async |on| {
        let server = on.start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut index = String::new();
        for (i, (m, label)) in [(SPAM, "spam"), (HAM, "ham"), (SPAM2, "spam"), (HAM2, "ham")]
            .into_iter()
            .enumerate()
        {
            std::fs::write(dir.path().join(format!("m{i}.eml")), m).unwrap();
            index.push_str(&format!("{label} m{i}.eml\n"));
        }
        std::fs::write(dir.path().join("index"), index).unwrap();
        let url = server.url();
        let chaff = async |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
                .args(args)
                .args(["--server", &url])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let index = dir.path().join("index");
        let out = chaff(&[
            "seed",
            "--index",
            index.to_str().unwrap(),
            "--concurrency",
            "2",
        ])
        .await;
        assert!(out.contains("seeded 4 messages"), "{out}");
        assert!(out.contains("seed (2 spam, 2 ham)"), "{out}");
        let again = chaff(&["seed", "--index", index.to_str().unwrap()]).await;
        assert!(
            again.contains("(0 new or moved, 4 already seeded)"),
            "{again}"
        );
        // A seed counts in full from 50 messages of each class
        // (`Params::shared_known_at`): 50 more of each, then a newcomer's
        // copy of seeded spam is caught.
        let mut big = String::new();
        for i in 0..50 {
            for (m, label) in [
                (crate::mailgen::spam(2, i), "spam"),
                (crate::mailgen::ham(2, i), "ham"),
            ] {
                std::fs::write(dir.path().join(format!("{label}{i}.eml")), m).unwrap();
                big.push_str(&format!("{label} {label}{i}.eml\n"));
            }
        }
        let big_index = dir.path().join("big");
        std::fs::write(&big_index, big).unwrap();
        let out = chaff(&["seed", "--index", big_index.to_str().unwrap()]).await;
        assert!(out.contains("seed (52 spam, 52 ham)"), "{out}");
        let mut c = server.client().await;
        let copy = crate::mailgen::near_copy(&crate::mailgen::spam(2, 7), 7);
        assert_eq!(
            score(&mut c, server.u("newcomer"), &copy).await.verdict,
            Verdict::Spam as i32
        );
        let cleared = chaff(&["seed", "--clear"]).await;
        assert!(
            cleared.contains("52 spam and 52 ham messages removed"),
            "{cleared}"
        );
        assert_eq!(shared(&mut c).await, proto::SharedInfo::default());
        let on = chaff(&["user", "-u", server.u("alice"), "--share-training", "on"]).await;
        assert!(on.contains("share training:    on"), "{on}");
        let gone = chaff(&["user", "-u", server.u("alice"), "--delete", "--yes"]).await;
        assert!(gone.contains("deleted alice"), "{gone}");
        server.stop().await;
    }
);

#[tokio::test]
async fn shared_model_and_consent_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut c = connect(&server.addr).await;
    community(&mut c).await;
    c.seed_shared(proto::SeedSharedRequest {
        message: SPAM2.to_vec(),
        label: Label::Spam.into(),
        message_id: "corpus/1".into(),
    })
    .await
    .unwrap();
    let before = (shared(&mut c).await, score(&mut c, "newcomer", SPAM2).await);
    server.kill();
    let server = ServerProcess::start(dir.path());
    let mut c = connect(&server.addr).await;
    let after = (shared(&mut c).await, score(&mut c, "newcomer", SPAM2).await);
    assert_eq!(after.0, before.0);
    assert_eq!(after.1.spam_probability, before.1.spam_probability);
    assert!(sharing(&user(&mut c, "bob").await));
    // Still exactly removable after the restart.
    share(&mut c, "bob", Some(false)).await;
    assert_eq!(shared(&mut c).await.contributing_users, 2);
    server.terminate();
}

//! Bad input gets a clear status; hostile bytes still get a score.

use chaff::engine::Settings;
use chaff::proto::{self, Label};
use tonic::Code;

use crate::common::*;

on_both_stores!(Redis, empty_user_id_is_invalid_argument, async |on| {
    let server = on.start().await;
    let mut c = server.client().await;
    let e = c
        .score(proto::ScoreRequest {
            user_id: String::new(),
            message: SPAM.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("user_id"), "{}", e.message());
    let e = c
        .train(proto::TrainRequest {
            user_id: String::new(),
            message: SPAM.to_vec(),
            label: Label::Spam.into(),
            message_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .get_user(proto::GetUserRequest {
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    server.stop().await;
});

on_both_stores!(
    Redis,
    unspecified_label_is_invalid_argument_and_learns_nothing,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let e = c
            .train(proto::TrainRequest {
                user_id: server.u("alice").into(),
                message: SPAM.to_vec(),
                label: 0,
                message_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("LABEL_SPAM"), "{}", e.message());
        assert_eq!(
            user(&mut c, server.u("alice")).await.spam_learned
                + user(&mut c, server.u("alice")).await.ham_learned,
            0
        );
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    an_empty_message_is_not_learned_and_the_caller_is_told,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let alice = server.u("alice");
        for message in [Vec::new(), b" \r\n\r\n".to_vec()] {
            let e = c
                .train(proto::TrainRequest {
                    user_id: alice.to_string(),
                    message,
                    label: Label::Spam.into(),
                    message_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("message is empty"), "{}", e.message());
        }
        let u = user(&mut c, alice).await;
        assert_eq!(
            (u.spam_learned, u.ham_learned),
            (0, 0),
            "nothing was counted"
        );
        server.stop().await;
    }
);

#[tokio::test]
async fn an_empty_message_is_not_seeded_either() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let e = c
        .seed_shared(proto::SeedSharedRequest {
            message: Vec::new(),
            label: Label::Spam.into(),
            message_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("message is empty"), "{}", e.message());
    let shared = c
        .get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.seed_spam, 0, "nothing was seeded");
    server.stop().await;
}

#[tokio::test]
async fn a_blank_or_padded_user_id_is_refused_and_an_empty_message_scores_said_as_empty() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (id, says) in [
        (" ", "blank"),
        ("\u{a0} \u{3000}", "blank"),
        ("alice ", "whitespace"),
    ] {
        let e = c
            .train(proto::TrainRequest {
                user_id: id.into(),
                message: SPAM.to_vec(),
                label: Label::Spam.into(),
                message_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id:?}");
        assert!(e.message().contains(says), "{id:?}: {}", e.message());
    }
    // The pipeline's empty DATA still gets an answer, named for what it is.
    let s = c
        .score(proto::ScoreRequest {
            user_id: "alice".into(),
            message: b"\r\n".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.limits_hit, vec!["empty message; nothing to read"]);
    assert_eq!(s.spam_probability, 0.5);
    server.stop().await;
}

on_both_stores!(Redis, forget_of_unknown_message_is_not_found, async |on| {
    let server = on.start().await;
    let mut c = server.client().await;
    let e = c
        .forget(proto::ForgetRequest {
            user_id: server.u("alice").into(),
            message_id: "never".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("never"), "{}", e.message());
    server.stop().await;
});

on_both_stores!(
    Redis,
    message_over_the_default_limit_is_resource_exhausted_naming_it,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let mut big = SPAM.to_vec();
        big.resize(10 * 1024 * 1024 + 1, b'a');
        let e = c
            .score(proto::ScoreRequest {
                user_id: server.u("alice").into(),
                message: big.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.message().contains("10 MiB"),
            "chaff's own message, naming the limit: {}",
            e.message()
        );
        let e = c
            .train(proto::TrainRequest {
                user_id: server.u("alice").into(),
                message: big,
                label: Label::Spam.into(),
                message_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        // A message exactly at the limit is accepted.
        let mut at_limit = SPAM.to_vec();
        at_limit.resize(10 * 1024 * 1024, b'a');
        let s = c
            .score(proto::ScoreRequest {
                user_id: server.u("alice").into(),
                message: at_limit,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.spam_probability, 0.5);
        server.stop().await;
    }
);

#[tokio::test]
async fn a_batch_over_the_transport_limit_is_told_to_split_not_blamed_on_one_message() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut item = SPAM.to_vec();
    item.resize(15 * 512 * 1024, b'a'); // 7.5 MiB: each under the limit, 22.5 MiB in all
    let requests = (0..3)
        .map(|_| proto::ScoreRequest {
            user_id: "alice".into(),
            message: item.clone(),
            ..Default::default()
        })
        .collect();
    let e = c
        .score_batch(proto::ScoreBatchRequest { requests })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("22020096 bytes in all") && e.message().contains("split"),
        "{}",
        e.message()
    );
    server.stop().await;
}

on_both_stores!(Redis, configured_limit_is_the_one_enforced, async |on| {
    let settings = Settings {
        max_message_bytes: 1000,
        ..Settings::default()
    };
    let server = on.start_with(settings).await;
    let mut c = server.client().await;
    let e = c
        .score(proto::ScoreRequest {
            user_id: server.u("a").into(),
            message: vec![b'x'; 1001],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("1000"), "{}", e.message());
    server.stop().await;
});

on_both_stores!(
    Redis,
    garbage_and_broken_mime_still_get_a_score,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
        let garbage: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let broken_mime = b"Content-Type: multipart/mixed; boundary=\"zz\"\r\nSubject: =?utf-8?B?!!!notbase64?=\r\n\r\n--zz\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@@not base64 at all\xff\xfe\r\n--zz\r\nContent-Type: text/html; charset=bogus-charset\r\n\r\n<html><b>cheap pills<\r\n";
        let cases: [&[u8]; 4] = [&garbage, broken_mime, b"", b"\r\n\r\n\r\n"];
        for m in cases {
            let s = score(&mut c, server.u("alice"), m).await;
            assert!((0.0..=1.0).contains(&s.spam_probability), "{s:?}");
            assert_ne!(s.verdict, proto::Verdict::Unspecified as i32);
        }
        // And they can be learned too.
        let t = train(&mut c, server.u("alice"), &garbage, Label::Spam, "").await;
        assert!(t.message_id.starts_with("xxh3:"));
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    a_hostile_message_is_scored_and_the_cap_it_hit_is_named,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let mut msg = b"Subject: hello\r\nX-Junk: ".to_vec();
        msg.extend(std::iter::repeat_n(b'A', 5 * 1024 * 1024));
        msg.extend_from_slice(b"\r\n\r\nbody words\r\n");
        let s = score(&mut c, server.u("alice"), &msg).await;
        assert!(
            s.limits_hit.iter().any(|l| l == "header bytes"),
            "{:?}",
            s.limits_hit
        );
        assert!(
            score(&mut c, server.u("alice"), SPAM)
                .await
                .limits_hit
                .is_empty()
        );
        server.stop().await;
    }
);

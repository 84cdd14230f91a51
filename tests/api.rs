//! The semantics the webmail and pipeline teams rely on.

use chaff::proto::{self, Label, TrainOutcome, Verdict};

use crate::common::*;

on_both_stores!(
    Redis,
    untrained_user_gets_neutral_unsure_not_an_error,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let s = score(&mut c, server.u("nobody@example.com"), SPAM).await;
        assert_eq!(s.spam_probability, 0.5);
        assert_eq!(s.verdict, Verdict::Unsure as i32);
        let u = user(&mut c, server.u("nobody@example.com")).await;
        assert_eq!((u.spam_learned, u.ham_learned, u.tokens), (0, 0, 0));
        server.stop().await;
    }
);

on_both_stores!(Redis, training_separates_spam_from_ham, async |on| {
    let server = on.start_pure().await;
    let mut c = server.client().await;
    train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
    train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
    let s = score(&mut c, server.u("alice"), SPAM2).await;
    let h = score(&mut c, server.u("alice"), HAM2).await;
    assert!(s.spam_probability > h.spam_probability, "{s:?} {h:?}");
    assert_eq!(
        score(&mut c, server.u("alice"), SPAM).await.verdict,
        Verdict::Spam as i32
    );
    assert_eq!(
        score(&mut c, server.u("alice"), HAM).await.verdict,
        Verdict::Ham as i32
    );
    let u = user(&mut c, server.u("alice")).await;
    assert_eq!((u.spam_learned, u.ham_learned), (1, 1));
    assert!(u.tokens > 20, "{u:?}");
    server.stop().await;
});

on_both_stores!(
    Redis,
    training_alice_never_changes_bobs_scores,
    async |on| {
        let server = on.start_pure().await;
        let mut c = server.client().await;
        train(&mut c, server.u("bob"), HAM2, Label::Ham, "").await;
        train(&mut c, server.u("bob"), SPAM2, Label::Spam, "").await;
        let before = observe(&mut c, server.u("bob")).await;
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
        train(&mut c, server.u("alice"), HAM2, Label::Spam, "").await;
        assert_eq!(observe(&mut c, server.u("bob")).await, before);
        server.stop().await;
    }
);

on_both_stores!(Redis, the_same_click_twice_changes_nothing, async |on| {
    let server = on.start_pure().await;
    let mut c = server.client().await;
    train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
    let first = train(&mut c, server.u("alice"), SPAM, Label::Spam, "uid-1").await;
    assert_eq!(first.outcome, TrainOutcome::Learned as i32);
    assert_eq!(first.message_id, "uid-1");
    let before = observe(&mut c, server.u("alice")).await;
    let again = train(&mut c, server.u("alice"), SPAM, Label::Spam, "uid-1").await;
    assert_eq!(again.outcome, TrainOutcome::AlreadyLearned as i32);
    assert_eq!(observe(&mut c, server.u("alice")).await, before);
    server.stop().await;
});

on_both_stores!(
    Redis,
    a_flipped_click_moves_the_message_exactly,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        // flipper clicks Not spam then Spam; direct clicks Spam only.
        for u in [server.u("flipper"), server.u("direct")] {
            train(&mut c, u, HAM, Label::Ham, "").await;
            train(&mut c, u, SPAM2, Label::Spam, "").await;
        }
        train(&mut c, server.u("flipper"), SPAM, Label::Ham, "m").await;
        let moved = train(&mut c, server.u("flipper"), SPAM, Label::Spam, "m").await;
        assert_eq!(moved.outcome, TrainOutcome::Relearned as i32);
        train(&mut c, server.u("direct"), SPAM, Label::Spam, "m").await;
        let (mut f, fs) = observe(&mut c, server.u("flipper")).await;
        let (mut d, ds) = observe(&mut c, server.u("direct")).await;
        f.user_id.clear();
        d.user_id.clear();
        assert_eq!((f, fs), (d, ds));
        assert_eq!((moved.spam_learned, moved.ham_learned), (2, 1));
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    forget_returns_the_user_to_exactly_the_state_before,
    async |on| {
        let server = on.start_pure().await;
        let mut c = server.client().await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
        train(&mut c, server.u("alice"), SPAM2, Label::Spam, "").await;
        let before = observe(&mut c, server.u("alice")).await;
        let t = train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        assert_eq!(
            t.message_id, "<s1@pills.example>",
            "derived from the Message-ID header"
        );
        assert_ne!(observe(&mut c, server.u("alice")).await, before);
        let f = c
            .forget(proto::ForgetRequest {
                user_id: server.u("alice").into(),
                message_id: t.message_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(f.forgotten_label, Label::Spam as i32);
        assert_eq!(observe(&mut c, server.u("alice")).await, before);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    forgetting_everything_leaves_zero_counts_not_negative,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let t = train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        c.forget(proto::ForgetRequest {
            user_id: server.u("alice").into(),
            message_id: t.message_id.clone(),
        })
        .await
        .unwrap();
        let err = c
            .forget(proto::ForgetRequest {
                user_id: server.u("alice").into(),
                message_id: t.message_id,
            })
            .await
            .expect_err("second forget of the same message");
        assert_eq!(err.code(), tonic::Code::NotFound);
        let u = user(&mut c, server.u("alice")).await;
        assert_eq!((u.spam_learned, u.ham_learned, u.tokens), (0, 0, 0));
        assert_eq!(
            score(&mut c, server.u("alice"), SPAM)
                .await
                .spam_probability,
            0.5
        );
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    message_without_message_id_gets_a_digest_id,
    async |on| {
        let server = on.start().await;
        let mut c = server.client().await;
        let t = train(
            &mut c,
            server.u("alice"),
            b"Subject: no id\r\n\r\nhello there",
            Label::Ham,
            "",
        )
        .await;
        assert!(t.message_id.starts_with("xxh3:"), "{}", t.message_id);
        let again = train(
            &mut c,
            server.u("alice"),
            b"Subject: no id\r\n\r\nhello there",
            Label::Ham,
            "",
        )
        .await;
        assert_eq!(again.outcome, TrainOutcome::AlreadyLearned as i32);
        server.stop().await;
    }
);

on_both_stores!(
    Redis,
    score_batch_answers_like_single_calls_in_request_order,
    async |on| {
        let server = on.start_pure().await;
        let mut c = server.client().await;
        train(&mut c, server.u("alice"), SPAM, Label::Spam, "").await;
        train(&mut c, server.u("alice"), HAM, Label::Ham, "").await;
        train(&mut c, server.u("bob"), HAM2, Label::Spam, "").await;
        let items: Vec<(&str, &[u8])> = vec![
            (server.u("alice"), SPAM2),
            (server.u("bob"), HAM2),
            (server.u("alice"), HAM2),
            (server.u("nobody"), SPAM),
            (server.u("bob"), SPAM2),
            (server.u("alice"), SPAM),
        ];
        let requests = items
            .iter()
            .map(|(u, m)| proto::ScoreRequest {
                user_id: u.to_string(),
                message: m.to_vec(),
                ..Default::default()
            })
            .collect();
        let batch = c
            .score_batch(proto::ScoreBatchRequest { requests })
            .await
            .unwrap()
            .into_inner()
            .responses;
        assert_eq!(batch.len(), items.len());
        for ((u, m), got) in items.iter().zip(&batch) {
            assert_eq!(&score(&mut c, u, m).await, got, "{u}");
        }
        server.stop().await;
    }
);

on_both_stores!(Redis, score_batch_errors_name_the_item, async |on| {
    let server = on.start().await;
    let mut c = server.client().await;
    let requests = vec![
        proto::ScoreRequest {
            user_id: server.u("alice").into(),
            message: SPAM.to_vec(),
            ..Default::default()
        },
        proto::ScoreRequest {
            user_id: String::new(),
            message: SPAM.to_vec(),
            ..Default::default()
        },
    ];
    let e = c
        .score_batch(proto::ScoreBatchRequest { requests })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("item 1:"), "{}", e.message());
    server.stop().await;
});

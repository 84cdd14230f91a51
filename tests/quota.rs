//! `--max-user-tokens` through the real server: a model past its cap is
//! pruned in the background, Score keeps answering, and Forget of a click
//! whose tokens were pruned leaves a consistent model.

use std::time::{Duration, Instant};

use chaff::engine::Settings;
use chaff::proto::{self, Label};

use crate::common::*;

/// A message of its own words (no two share a body token).
fn message(n: usize) -> Vec<u8> {
    let words: Vec<String> = (0..10).map(|w| format!("quota{n}word{w}")).collect();
    format!(
        "From: a@example.org\r\nSubject: note {n}\r\n\r\n{}\r\n",
        words.join(" ")
    )
    .into_bytes()
}

async fn tokens(c: &mut Client, name: &str) -> u64 {
    user(c, name).await.tokens
}

on_both_stores!(
    Redis,
    a_model_past_max_user_tokens_is_pruned_in_the_background,
    async |on| {
        let cap = 80;
        let server = on
            .start_with(Settings {
                max_user_tokens: Some(cap),
                prune_in_background: true,
                // Scores below change no model: every learn is a click to forget.
                learn_delivered: false,
                ..Settings::default()
            })
            .await;
        let mut c = server.client().await;
        for n in 0..40usize {
            let label = if n.is_multiple_of(2) {
                Label::Spam
            } else {
                Label::Ham
            };
            train(
                &mut c,
                server.u("pat"),
                &message(n),
                label,
                &format!("m{n}"),
            )
            .await;
            // Score goes on meanwhile.
            score(&mut c, server.u("pat"), &message(n)).await;
        }
        // The prune runs after the replies: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = tokens(&mut c, server.u("pat")).await;
        while now > cap as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            now = tokens(&mut c, server.u("pat")).await;
        }
        assert!(now <= cap as u64, "{now} tokens, cap {cap}");
        assert!(now > 0);
        // Forget every click, the oldest (whose tokens are gone) first.
        for n in 0..40 {
            c.forget(proto::ForgetRequest {
                user_id: server.u("pat").into(),
                message_id: format!("m{n}"),
            })
            .await
            .unwrap();
        }
        let u = user(&mut c, server.u("pat")).await;
        assert_eq!((u.spam_learned, u.ham_learned, u.tokens), (0, 0, 0));
        server.stop().await;
    }
);

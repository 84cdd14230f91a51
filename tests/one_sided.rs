//! Users who only ever click *Spam* (most of them): the mail they never
//! clicked must not go to the spam folder, and the spam they clicked must.

use chaff::proto::{Label, Verdict};

use crate::common::*;
use crate::mailgen;

#[tokio::test]
async fn spam_only_clicks_file_no_ham_as_spam_and_still_catch_copies_of_the_clicked_spam() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let user = "spam-clicker@provider.example";
    let hams: Vec<Vec<u8>> = (0..100).map(|i| mailgen::ham(7, i)).collect();
    let mut clicked = Vec::new();
    for n in [1usize, 20, 100] {
        while clicked.len() < n {
            let spam = mailgen::spam(7, clicked.len());
            train(&mut c, user, &spam, Label::Spam, "").await;
            clicked.push(spam);
        }
        let info = crate::common::user(&mut c, user).await;
        assert_eq!((info.spam_learned, info.ham_learned), (n as u64, 0));
        let mut filed = Vec::new();
        for (i, ham) in hams.iter().enumerate() {
            let s = score(&mut c, user, ham).await;
            if s.verdict == Verdict::Spam as i32 {
                filed.push((i, s.spam_probability));
            }
        }
        assert!(
            filed.is_empty(),
            "after {n} spam clicks, ham filed as spam: {filed:?}"
        );
        // Copies of the clicked spam (the campaign's next send) still are.
        for (i, spam) in clicked.iter().enumerate().rev().take(20) {
            let s = score(&mut c, user, &mailgen::near_copy(spam, i)).await;
            assert_eq!(
                s.verdict,
                Verdict::Spam as i32,
                "after {n} clicks, copy of spam {i}: {}",
                s.spam_probability
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn two_sided_clicks_still_separate_the_generated_mail() {
    // The generator's mail is learnable: with both kinds of clicks, unseen
    // ham and spam land on their sides (so the test above is not passing
    // because nothing can be told apart).
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let user = "both@provider.example";
    for i in 0..30 {
        train(&mut c, user, &mailgen::spam(3, i), Label::Spam, "").await;
        train(&mut c, user, &mailgen::ham(3, i), Label::Ham, "").await;
    }
    let (mut spam_caught, mut ham_kept) = (0, 0);
    for i in 100..150 {
        if score(&mut c, user, &mailgen::spam(3, i)).await.verdict == Verdict::Spam as i32 {
            spam_caught += 1;
        }
        if score(&mut c, user, &mailgen::ham(3, i)).await.verdict == Verdict::Ham as i32 {
            ham_kept += 1;
        }
    }
    assert!(
        spam_caught >= 45 && ham_kept >= 45,
        "{spam_caught} {ham_kept}"
    );
    server.stop().await;
}

//! Hostile mail through the real server (issue #17): every category of the
//! generated nasty corpus (`tests/nasty.rs`, at its test scale) is scored
//! and trained over gRPC on loopback. Each call must answer — OK, or
//! RESOURCE_EXHAUSTED exactly when the message is over
//! `max_message_bytes` — never INTERNAL, a dropped connection or a hang,
//! and a message that a cap cut short says so in `limits_hit`.
//!
//! The caps are scaled down with the corpus (so the categories still hit
//! them; the scan cap above the body cap, so both are hit) and the run
//! takes seconds in a debug build. Timing is not tested
//! here: `examples/nasty_mail.rs` measures the full-size corpus
//! (docs/PERFORMANCE.md, "Hostile mail at scale").

use std::time::Duration;

use chaff::engine::Settings;
use chaff::proto;
use chaff::tokenize::{Limits, Tokenizer};
use tonic::Code;

use crate::common::{self, TestServer};
use crate::nasty::{self, Scale};

/// Long enough for a debug build on a busy machine; a hang fails the test
/// instead of stalling it.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn scaled_settings() -> Settings {
    let limits = Limits {
        max_header_bytes: 64 << 10,
        max_body_bytes: 64 << 10,
        max_scan_bytes: 128 << 10,
        ..Limits::default()
    };
    Settings {
        max_message_bytes: Scale::TEST.message_cap,
        tokenizer: Tokenizer::new(limits),
        ..Settings::default()
    }
}

/// The caps each category must report at the test scale and caps above.
fn expected_caps(name: &str) -> &'static [&'static str] {
    match name {
        "multipart-deep" => &["MIME depth", "multiparts"],
        "rfc822-deep" => &["MIME depth", "scan bytes", "nested messages"],
        "rfc822-base64-nested" => &["scan bytes"],
        "rfc822-fan-out" | "charsets-parts" => &["MIME parts"],
        "headers-many" => &["header bytes", "header fields", "scan bytes"],
        "header-huge-folded" => &["header bytes", "scan bytes"],
        "charsets-encoded-words" => &["header bytes"],
        "html-tags-flat" | "html-tags-nested" => &["body bytes", "scan bytes", "HTML tags"],
        "line-under-cap" | "html-links" => &["body bytes", "scan bytes"],
        "broken-base64" | "broken-qp" | "nul-bytes" | "overlong-utf8" | "rtl-overrides" => {
            &["body bytes"]
        }
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nasty_message_is_scored_and_trained_within_its_caps() {
    let settings = scaled_settings();
    let cap = settings.max_message_bytes;
    let server = TestServer::start_with(settings).await;
    let mut c = server.client().await;
    let corpus = nasty::corpus(&Scale::TEST);
    assert!(corpus.iter().any(|m| m.bytes.len() > cap));
    let mut report = Vec::new();
    for (i, m) in corpus.iter().enumerate() {
        let over = m.bytes.len() > cap;
        let scored = tokio::time::timeout(
            CALL_TIMEOUT,
            c.score(proto::ScoreRequest {
                user_id: "hostile".into(),
                message: m.bytes.clone(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: Score did not answer in {CALL_TIMEOUT:?}", m.name));
        let trained = tokio::time::timeout(
            CALL_TIMEOUT,
            c.train(proto::TrainRequest {
                user_id: "hostile".into(),
                message: m.bytes.clone(),
                label: if i % 2 == 0 {
                    proto::Label::Spam
                } else {
                    proto::Label::Ham
                }
                .into(),
                message_id: format!("nasty-{}", m.name),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: Train did not answer in {CALL_TIMEOUT:?}", m.name));
        if over {
            for (call, code, msg) in [
                (
                    "Score",
                    scored.as_ref().err().map(|s| s.code()),
                    scored.as_ref().err().map(|s| s.message().to_string()),
                ),
                (
                    "Train",
                    trained.as_ref().err().map(|s| s.code()),
                    trained.as_ref().err().map(|s| s.message().to_string()),
                ),
            ] {
                assert_eq!(
                    code,
                    Some(Code::ResourceExhausted),
                    "{}: {call} of {} bytes over the {cap}-byte cap",
                    m.name,
                    m.bytes.len()
                );
                assert!(
                    !msg.unwrap_or_default().is_empty(),
                    "{}: {call}: an empty message",
                    m.name
                );
            }
            report.push(format!(
                "{:<24} {:>9} B  RESOURCE_EXHAUSTED",
                m.name,
                m.bytes.len()
            ));
            continue;
        }
        let scored = scored
            .unwrap_or_else(|s| panic!("{}: Score failed: {:?} {}", m.name, s.code(), s.message()))
            .into_inner();
        let trained = trained
            .unwrap_or_else(|s| panic!("{}: Train failed: {:?} {}", m.name, s.code(), s.message()))
            .into_inner();
        assert!(
            (0.0..=1.0).contains(&scored.spam_probability),
            "{}: probability {}",
            m.name,
            scored.spam_probability
        );
        assert_eq!(trained.message_id, format!("nasty-{}", m.name));
        for cap_name in expected_caps(&m.name) {
            assert!(
                scored.limits_hit.iter().any(|h| h == cap_name),
                "{}: limits_hit {:?} lacks {cap_name:?}",
                m.name,
                scored.limits_hit
            );
        }
        report.push(format!(
            "{:<24} {:>9} B  OK  limits_hit {:?}",
            m.name,
            m.bytes.len(),
            scored.limits_hit
        ));
    }
    eprintln!("{}", report.join("\n"));
    // The normal message was read whole, and the server still serves.
    assert!(
        report
            .iter()
            .any(|r| r.starts_with("normal-10k") && r.ends_with("[]"))
    );
    let after = common::score(&mut c, "hostile", common::HAM).await;
    assert!(
        after.tokens_known > 0,
        "the user learned nothing: {after:?}"
    );
    let info = common::user(&mut c, "hostile").await;
    let learned = corpus.iter().filter(|m| m.bytes.len() <= cap).count() as u64;
    assert_eq!(info.spam_learned + info.ham_learned, learned, "{info:?}");
    server.stop().await;
}

#[test]
fn the_nasty_corpus_is_deterministic_and_covers_every_category() {
    let a = nasty::corpus(&Scale::TEST);
    let b = nasty::corpus(&Scale::TEST);
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.name == y.name && x.bytes == y.bytes)
    );
    let names: Vec<&str> = a.iter().map(|m| m.name.as_str()).collect();
    for category in [
        "multipart-deep",
        "rfc822-deep",
        "rfc822-base64-nested",
        "rfc822-fan-out",
        "headers-many",
        "line-over-cap",
        "charsets-parts",
        "broken-base64",
        "broken-qp",
        "nul-bytes",
        "overlong-utf8",
        "rtl-overrides",
        "html-tags-flat",
        "normal-10k",
    ] {
        assert!(
            names.contains(&category),
            "{category} missing from {names:?}"
        );
    }
    let normal = nasty::normal_10k();
    assert!((9_000..=11_000).contains(&normal.len()), "{}", normal.len());
}

/// A message over the scan cap is read from its header block and the first
/// `max_scan_bytes` of its body: scored exactly as that prefix alone would
/// be (same evidence known, same probability), with "scan bytes" in
/// `limits_hit`; the ham evidence placed past the cap is never seen. Over
/// real gRPC with the default caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_scan_cap_is_scored_from_its_prefix() {
    let server = TestServer::start_pure().await;
    let mut c = server.client().await;
    let user = "scan-cap";
    let spammy = "cheap pills discount pharmacy order now limited offer";
    let hammy = "quarterly budget review minutes attached see agenda";
    for i in 0..3 {
        let spam = format!("Subject: offer {i}\r\n\r\n{spammy}\r\n");
        let ham = format!("Subject: minutes {i}\r\n\r\n{hammy}\r\n");
        common::train(
            &mut c,
            user,
            spam.as_bytes(),
            proto::Label::Spam,
            &format!("s{i}"),
        )
        .await;
        common::train(
            &mut c,
            user,
            ham.as_bytes(),
            proto::Label::Ham,
            &format!("h{i}"),
        )
        .await;
    }
    // The pitch first, then filler that yields no tokens (one-letter
    // words), past the cap, then the ham words.
    let cap = Limits::default().max_scan_bytes;
    let filler = b"a b c d e f g h i j k l m n o p\r\n";
    let mut prefix = format!("Subject: hello\r\n\r\n{spammy}\r\n").into_bytes();
    while prefix.len() + filler.len() < cap {
        prefix.extend_from_slice(filler);
    }
    // The cut falls in more filler, past what `prefix` has.
    let mut long = prefix.clone();
    while long.len() < prefix.len() + 16 * 1024 {
        long.extend_from_slice(filler);
    }
    for _ in 0..100 {
        long.extend_from_slice(format!("{hammy}\r\n").as_bytes());
    }
    let whole = common::score(&mut c, user, &long).await;
    let cut = common::score(&mut c, user, &prefix).await;
    assert!(
        whole.limits_hit.iter().any(|h| h == "scan bytes"),
        "{:?}",
        whole.limits_hit
    );
    assert!(cut.limits_hit.is_empty(), "{:?}", cut.limits_hit);
    assert_eq!(whole.tokens_known, cut.tokens_known, "{whole:?}\n{cut:?}");
    assert_eq!(whole.spam_probability, cut.spam_probability);
    assert_eq!(whole.verdict, proto::Verdict::Spam as i32, "{whole:?}");
    server.stop().await;
}

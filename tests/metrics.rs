//! `chaff serve --metrics-listen`: a real server process, real gRPC calls,
//! then a scrape of `/metrics` over HTTP; every counter must have moved by
//! exactly what was called.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use chaff::proto::{self, Label};
use tonic::Code;

use crate::common::*;

/// `GET path` over HTTP/1.1; (status line, content-type, body).
fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (status, kind, body.to_string())
}

/// Sample name with labels (as written) → value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, kind, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Sum over every sample of `name` (any labels).
fn sum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

fn chaff(method: &str) -> String {
    format!("grpc_service=\"chaff.v1.Chaff\",grpc_method=\"{method}\"")
}

/// `chaff serve --metrics-listen 127.0.0.1:0` on `data`: the process, the
/// gRPC address and the metrics address (the first two stdout lines).
fn spawn(data: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--shutdown-grace",
            "300ms",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grpc = lines.next().unwrap().unwrap();
    let grpc = grpc
        .strip_prefix("chaff listening on ")
        .unwrap()
        .to_string();
    let metrics = lines.next().unwrap().unwrap();
    let metrics = metrics
        .strip_prefix("chaff metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected second line {metrics:?}"))
        .to_string();
    (child, grpc, metrics)
}

#[tokio::test]
async fn metrics_count_exactly_the_calls_made() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, grpc, metrics) = spawn(data.path());

    let before = scrape(&metrics);
    assert_eq!(value(&before, "chaff_build_info{version=\"0.1.0\"}"), 1.0);
    assert_eq!(sum(&before, "grpc_server_started_total"), 0.0);
    assert_eq!(sum(&before, "chaff_scores_total"), 0.0);
    assert_eq!(value(&before, "chaff_storage_failed"), 0.0);
    assert!(value(&before, "chaff_storage_disk_bytes") > 0.0);

    let mut c = connect(&format!("http://{grpc}")).await;
    let s1 = score(&mut c, "alice", SPAM).await;
    let s2 = score(&mut c, "bob", HAM).await;
    let e = c
        .score(proto::ScoreRequest {
            user_id: String::new(),
            message: SPAM.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let batch = |user: &str, m: &[u8]| proto::ScoreRequest {
        user_id: user.into(),
        message: m.to_vec(),
        ..Default::default()
    };
    c.score_batch(proto::ScoreBatchRequest {
        requests: vec![batch("alice", SPAM), batch("carol", HAM2)],
    })
    .await
    .unwrap();
    train(&mut c, "alice", SPAM, Label::Spam, "m1").await;
    train(&mut c, "alice", SPAM, Label::Spam, "m1").await;
    train(&mut c, "alice", SPAM, Label::Ham, "m1").await;
    train(&mut c, "alice", SPAM2, Label::Spam, "m2").await;
    c.forget(proto::ForgetRequest {
        user_id: "alice".into(),
        message_id: "m2".into(),
    })
    .await
    .unwrap();
    let stats = c
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();

    let m = scrape(&metrics);
    let started = |method: &str| {
        value(
            &m,
            &format!("grpc_server_started_total{{{}}}", chaff(method)),
        )
    };
    let handled = |method: &str, code: &str| {
        value(
            &m,
            &format!(
                "grpc_server_handled_total{{{},grpc_code=\"{code}\"}}",
                chaff(method)
            ),
        )
    };
    assert_eq!(started("Score"), 3.0);
    assert_eq!(handled("Score", "OK"), 2.0);
    // The error reply is trailers-only: its status is in the headers.
    assert_eq!(handled("Score", "InvalidArgument"), 1.0);
    assert_eq!(started("ScoreBatch"), 1.0);
    assert_eq!(handled("ScoreBatch", "OK"), 1.0);
    assert_eq!(started("Train"), 4.0);
    assert_eq!(handled("Train", "OK"), 4.0);
    assert_eq!(handled("Forget", "OK"), 1.0);
    assert_eq!(started("GetStats"), 1.0);
    assert_eq!(sum(&m, "grpc_server_started_total"), 10.0);
    assert_eq!(sum(&m, "grpc_server_handled_total"), 10.0);
    assert_eq!(
        value(
            &m,
            &format!("grpc_server_handling_seconds_count{{{}}}", chaff("Score"))
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            &format!(
                "grpc_server_handling_seconds_bucket{{le=\"+Inf\",{}}}",
                chaff("Train")
            )
        ),
        4.0
    );

    // Four messages scored (two Score, two batch items); the failed call
    // scored nothing.
    assert_eq!(sum(&m, "chaff_scores_total"), 4.0);
    let verdict = |s: &proto::ScoreResponse| match s.verdict() {
        proto::Verdict::Spam => "spam",
        proto::Verdict::Ham => "ham",
        _ => "unsure",
    };
    for s in [&s1, &s2] {
        let key = format!(
            "chaff_scores_total{{verdict=\"{}\",action=\"{}\",rule=\"model\"}}",
            verdict(s),
            if s.action() == proto::Action::Deliver {
                "deliver"
            } else {
                "spam-folder"
            }
        );
        assert!(value(&m, &key) >= 1.0, "{key} missing: {m:?}");
    }
    for outcome in ["learned", "already-learned", "relearned", "forgotten"] {
        let want = if outcome == "learned" { 2.0 } else { 1.0 };
        let key = format!("chaff_learns_total{{outcome=\"{outcome}\"}}");
        assert_eq!(value(&m, &key), want, "{key}");
    }

    // The engine's own counters, read at scrape time: the same figures
    // GetStats gave (nothing looked a model up in between).
    assert_eq!(
        value(&m, "chaff_model_cache_hits_total"),
        stats.model_hits as f64
    );
    assert_eq!(
        value(&m, "chaff_model_cache_misses_total"),
        stats.model_misses as f64
    );
    assert_eq!(
        value(&m, "chaff_model_cache_absent_total"),
        stats.model_absent as f64
    );
    assert_eq!(
        value(&m, "chaff_model_cache_resident_users"),
        stats.resident_users as f64
    );
    assert_eq!(
        value(&m, "chaff_storage_durable_waits_total"),
        stats.durable_waits as f64
    );
    assert_eq!(
        value(&m, "chaff_storage_flushes_total"),
        stats.flushes as f64
    );
    assert!(value(&m, "chaff_storage_flushes_total") >= 1.0);
    // Every flush timed.
    assert_eq!(
        value(&m, "chaff_storage_flush_seconds_count"),
        stats.flushes as f64
    );
    assert_eq!(
        value(&m, "chaff_storage_flush_seconds_bucket{le=\"+Inf\"}"),
        stats.flushes as f64
    );
    assert_eq!(value(&m, "chaff_decision_log_dropped_total"), 0.0);
    // The shared model as GetShared reports it.
    let shared = c
        .get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner();
    let m = scrape(&metrics);
    assert_eq!(
        value(&m, "chaff_shared_model_users"),
        shared.contributing_users as f64
    );
    assert_eq!(
        value(&m, "chaff_shared_model_messages"),
        (shared.spam_learned + shared.ham_learned) as f64
    );
    assert_eq!(value(&m, "chaff_shared_model_tokens"), shared.tokens as f64);

    // No user id ever becomes a label.
    let (_, _, body) = get(&metrics, "/metrics");
    for user in ["alice", "bob", "carol"] {
        assert!(!body.contains(user), "{user} in the scrape");
    }
    let (status, _, _) = get(&metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn refused_and_unknown_calls_are_counted_under_bounded_labels() {
    let data = tempfile::tempdir().unwrap();
    // A key on file: calls without one are refused by the guard.
    let made = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args([
            "keys", "create", "--name", "t", "--scopes", "score", "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (mut child, grpc, metrics) = spawn(data.path());

    let mut c = connect(&format!("http://{grpc}")).await;
    let e = c
        .score(proto::ScoreRequest {
            user_id: "alice".into(),
            message: SPAM.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // A method no service has: tonic answers UNIMPLEMENTED, and the path
    // (which a caller chooses freely) does not become a label.
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<proto::GetStatsRequest, proto::ServerStats> =
        Default::default();
    let e = raw
        .unary(
            tonic::Request::new(proto::GetStatsRequest {}),
            http::uri::PathAndQuery::from_static("/chaff.v1.Chaff/user-4711-secret"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    let m = scrape(&metrics);
    assert_eq!(
        value(
            &m,
            &format!(
                "grpc_server_handled_total{{{},grpc_code=\"Unauthenticated\"}}",
                chaff("Score")
            )
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "grpc_server_handled_total{grpc_service=\"unknown\",grpc_method=\"unknown\",\
             grpc_code=\"Unimplemented\"}"
        ),
        1.0
    );
    assert_eq!(sum(&m, "grpc_server_handled_total"), 2.0);
    assert_eq!(
        sum(&m, "chaff_scores_total"),
        0.0,
        "a refused call scores nothing"
    );
    let (_, _, body) = get(&metrics, "/metrics");
    assert!(!body.contains("4711"), "the path became a label");

    child.kill().unwrap();
    child.wait().unwrap();
}

//! `chaff loadtest` against an in-process server: it runs, it calls, and
//! nothing fails. No timing is asserted (the machine may be busy).

use std::path::Path;

use crate::common::*;

/// A tiny TREC corpus: the test messages, labelled, in a folder of files.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let mut index = String::new();
    for (i, (label, msg)) in [("spam", SPAM), ("ham", HAM), ("spam", SPAM2), ("ham", HAM2)]
        .into_iter()
        .enumerate()
    {
        let name = format!("m{i}.eml");
        std::fs::write(dir.join(&name), msg).unwrap();
        index.push_str(&format!("{label} {name}\n"));
    }
    let path = dir.join("index");
    std::fs::write(&path, index).unwrap();
    path
}

/// Runs the real binary's `loadtest` for a second and parses its JSON.
async fn loadtest(server: &TestServer, index: &Path, rpc: &str) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["loadtest", "--server", &server.url(), "--corpus"])
        .arg(index)
        .args([
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--connections",
            "2",
        ])
        .args(["--users", "3", "--rpc", rpc, "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chaff loadtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_scores_and_trains_without_errors() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let index = corpus(dir.path());

    let train = loadtest(&server, &index, "train").await;
    let calls = train["calls"].as_u64().unwrap();
    assert!(calls > 0, "{train}");
    assert_eq!(train["errors"], 0, "{train}");
    // A new message id per call: every call learns.
    assert_eq!(
        train["outcomes"]["Learned"].as_u64(),
        Some(calls),
        "{train}"
    );

    let score = loadtest(&server, &index, "score").await;
    assert!(score["calls"].as_u64().unwrap() > 0, "{score}");
    assert_eq!(score["errors"], 0, "{score}");
    // Nothing was refused as busy, and the report says so.
    assert_eq!(score["shed"]["calls"], 0, "{score}");
    assert!(
        score["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{score}"
    );

    // The learns went to the named users.
    let mut c = server.client().await;
    let u = user(&mut c, "loadtest-0").await;
    assert!(u.spam_learned + u.ham_learned > 0, "{u:?}");
    server.stop().await;
}

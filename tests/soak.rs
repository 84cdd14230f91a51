//! The crash soak, short: `chaff soak` SIGKILLs the real server three times
//! under 32 concurrent clicks, settings and list changes, and checks after
//! each restart that nothing acknowledged was lost and nothing else
//! half-applied (the 20-cycle run and its figures: docs/FAULTS.md).

use std::process::Command;

/// Runs `chaff soak` with `args` and returns its summary (the last JSON line).
fn soak(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaff"))
        .arg("soak")
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--concurrency", "32"])
        .args(args)
        .output()
        .expect("run chaff soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaff soak failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap()
}

#[test]
fn three_sigkills_under_load_lose_nothing_acknowledged_and_half_apply_nothing() {
    // Slow checkpoints and large messages for the two hot users: their
    // models are snapshotted every few dozen clicks, with pauses around
    // the write (the test build has the `fault-injection` feature).
    let s = soak(&[
        "--cycles",
        "3",
        "--min-run",
        "700ms",
        "--max-run",
        "1500ms",
        "--users",
        "12",
        "--hot-users",
        "2",
        "--messages",
        "24",
        "--hot-words",
        "1500",
        "--slow-checkpoints",
    ]);
    assert_eq!(s["discrepancies"], 0, "{s}");
    // The kills landed under load: calls were acknowledged, and some were
    // in flight (in doubt) at each kill.
    assert!(s["acked"].as_u64().unwrap() >= 50, "{s}");
    assert!(s["in_doubt"].as_u64().unwrap() >= 3, "{s}");
    // Every key of every user, each cycle: settings, 24 messages, 8 list
    // entries; and 3 probe scores per user compared with the replay.
    assert_eq!(s["keys_checked"], 3 * 12 * (1 + 24 + 8), "{s}");
    assert_eq!(s["scores_compared"], 3 * 12 * 3, "{s}");
}

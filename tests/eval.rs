//! `chaff eval` from the command line: the click protocols (issue #19),
//! in-process on a small corpus written here.

use std::path::Path;
use std::process::Command;

/// A TREC index of `n` messages: spam and ham in turn, then five ham that
/// read exactly like the spam (a newsletter the user wanted), so a filter
/// that learned the spam files them as spam.
fn corpus(dir: &Path, n: usize) {
    let mut index = String::new();
    let spam = |i: usize| {
        format!(
            "From: deals{i}@pills.example\r\nSubject: cheap pills {i}\r\n\r\n\
             Buy cheap pills now, best prices on meds, order today, limited offer\r\n"
        )
    };
    for i in 0..n {
        let (text, label) = if i % 2 == 0 {
            (spam(i), "spam")
        } else {
            (
                format!(
                    "From: ann@work.example\r\nSubject: meeting notes {i}\r\n\r\n\
                     Minutes of the project meeting, agenda for next week {i}\r\n"
                ),
                "ham",
            )
        };
        std::fs::write(dir.join(format!("m{i}.eml")), text).unwrap();
        index.push_str(&format!("{label} m{i}.eml\n"));
    }
    for i in n..n + 5 {
        std::fs::write(dir.join(format!("m{i}.eml")), spam(i)).unwrap();
        index.push_str(&format!("ham m{i}.eml\n"));
    }
    std::fs::write(dir.join("index"), index).unwrap();
}

/// The number that follows `key` in `stderr` (e.g. "holds " in `grams:
/// the regression holds N weights`).
fn number_after(stderr: &str, key: &str) -> u64 {
    stderr
        .split(key)
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key:?} in {stderr}"))
}

/// `chaff eval --index INDEX ARGS…` fails, saying `says` on stderr.
fn refused(index: &str, args: &[&str], says: &str) {
    let mut all = vec!["eval", "--index", index];
    all.extend_from_slice(args);
    let out = chaff(&all);
    assert!(!out.status.success(), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(says), "{args:?}: {err}");
}

fn chaff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn spam_only_clicks_teach_only_spam_and_the_counts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), 60);
    let index = dir.path().join("index");
    let results = dir.path().join("results");
    let out = chaff(&[
        "eval",
        "--index",
        index.to_str().unwrap(),
        "--train",
        "clicks",
        "--profile",
        "spam-only",
        "--results",
        results.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["protocol"],
        "online, train clicks (p = 0.5, q = 0, seed 0)"
    );
    let (spam_clicks, ham_clicks) = (
        json["spam_clicks"].as_u64().unwrap(),
        json["ham_clicks"].as_u64().unwrap(),
    );
    assert_eq!(ham_clicks, 0);
    assert!(spam_clicks > 0, "{json}");
    assert_eq!(json["clicks"].as_u64(), Some(spam_clicks));

    // The results file says which messages were clicked: spam the filter
    // let through, about half of them (p = 0.5); never ham, not even the
    // ham it filed as spam.
    let text = std::fs::read_to_string(&results).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 65);
    let taught: Vec<&Vec<&str>> = lines.iter().filter(|f| f[4] == "1").collect();
    assert_eq!(taught.len() as u64, spam_clicks);
    assert!(taught.iter().all(|f| f[2] == "spam" && f[3] == "ham"));
    let delivered_spam = lines
        .iter()
        .filter(|f| f[2] == "spam" && f[3] == "ham")
        .count();
    assert!(taught.len() < delivered_spam, "p = 0.5 skips some");
    let ham_in_spam_folder = lines
        .iter()
        .filter(|f| f[2] == "ham" && f[3] == "spam")
        .count();
    assert!(ham_in_spam_folder > 0, "q = 0 had something to skip");

    // `chaff metrics` reads the same counts back from the file.
    let out = chaff(&["metrics", "--json", results.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["spam_clicks"], json["spam_clicks"]);
    assert_eq!(again["ham_clicks"], 0);
    assert_eq!(
        again["misfiled_first_100_pct"],
        json["misfiled_first_100_pct"]
    );
}

#[test]
fn the_same_seed_clicks_the_same_messages_and_click_flags_need_train_clicks() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), 40);
    let index = dir.path().join("index");
    let run = |name: &str, seed: &str| {
        let results = dir.path().join(name);
        let out = chaff(&[
            "eval",
            "--index",
            index.to_str().unwrap(),
            "--train",
            "clicks",
            "--click-spam",
            "0.5",
            "--click-ham",
            "1",
            "--seed",
            seed,
            "--results",
            results.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("taught (clicks)"), "{stdout}");
        std::fs::read_to_string(results).unwrap()
    };
    assert_eq!(run("a", "7"), run("b", "7"));

    let out = chaff(&[
        "eval",
        "--index",
        index.to_str().unwrap(),
        "--profile",
        "typical",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("add --train clicks"), "{err}");
    let out = chaff(&[
        "eval",
        "--index",
        index.to_str().unwrap(),
        "--train",
        "clicks",
        "--click-spam",
        "1.5",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("[0, 1], not 1.5"), "{err}");
}

/// `--grams` (research: the byte-gram regression beside the model) at
/// weight 0 ranks and files exactly as the model alone; at 0.5 it runs and
/// says how many weights it learned; its tuning flags need it, and it
/// refuses the modes it does not cover.
#[test]
fn grams_at_weight_zero_is_the_model_alone_and_its_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), 60);
    let index = dir.path().join("index");
    let index = index.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--index",
            index,
            "--train",
            "clicks",
            "--profile",
            "diligent",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = chaff(&args);
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (json, stderr)
    };
    let figures = |j: &serde_json::Value| {
        [
            "one_minus_roca_pct",
            "lam_pct",
            "spam_misclassified_pct",
            "ham_misclassified_pct",
            "clicks",
        ]
        .map(|k| j[k].clone())
    };
    let (alone, _) = run(&[]);
    let (zero, stderr) = run(&["--grams", "0"]);
    assert_eq!(figures(&alone), figures(&zero));
    assert!(stderr.contains("grams: the regression holds"), "{stderr}");
    let (half, stderr) = run(&["--grams", "0.5", "--grams-gate", "--grams-skip-transport"]);
    assert!(half["one_minus_roca_pct"].is_number(), "{half}");
    assert!(number_after(&stderr, "holds ") > 100, "{stderr}");

    for (args, says) in [
        (vec!["--grams-rate", "0.01"], "add --grams WEIGHT"),
        (vec!["--grams=-1"], "give a weight of 0 or more"),
        (
            vec!["--grams", "0.5", "--grams-rate", "0"],
            "give a rate in (0, 1]",
        ),
        (
            vec!["--grams", "0.5", "--server", "127.0.0.1:1"],
            "in-process only",
        ),
        (vec!["--grams", "0.5", "--index", index], "one --index"),
    ] {
        refused(index, &args, says);
    }
}

/// `--grams-delivered-share 0` teaches the regression from clicks only:
/// mail delivered and not clicked adds no weight, so its table holds fewer
/// grams than the default's (a twentieth of a click for delivered mail),
/// and the share is checked.
#[test]
fn grams_delivered_share_zero_learns_from_clicks_only() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), 60);
    let index = dir.path().join("index");
    let index = index.to_str().unwrap();
    let weights = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "eval", "--index", index, "--train", "clicks", "--grams", "0.5",
        ];
        args.extend_from_slice(extra);
        let out = chaff(&args);
        assert!(out.status.success(), "{out:?}");
        number_after(&String::from_utf8(out.stderr).unwrap(), "holds ")
    };
    let (default, clicks_only) = (weights(&[]), weights(&["--grams-delivered-share", "0"]));
    assert!(
        clicks_only < default,
        "clicks only {clicks_only} weights, with delivered mail {default}"
    );
    refused(
        index,
        &["--grams", "0.5", "--grams-delivered-share", "2"],
        "give a share in [0, 1]",
    );
    refused(
        index,
        &["--grams-delivered-share", "0"],
        "add --grams WEIGHT",
    );
}

/// `--grams-seed` teaches the regression an operator's corpus before the
/// replay: the seeded regression has its say from the first message (the
/// seed's ham counts), unless `--grams-user-ramp` makes it wait for the
/// user's own clicked ham; `--grams-frozen` learns nothing more (with
/// the user ramp too: the seed's weights, the user's say); at weight 0 a
/// seed changes nothing.
#[test]
fn grams_seed_is_taught_before_the_replay_then_learns_on_waits_or_stays_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let (mailbox, operator) = (dir.path().join("mailbox"), dir.path().join("operator"));
    for d in [&mailbox, &operator] {
        std::fs::create_dir(d).unwrap();
    }
    corpus(&mailbox, 60);
    corpus(&operator, 40);
    let index = mailbox.join("index");
    let seed = operator.join("index");
    let (index, seed) = (index.to_str().unwrap(), seed.to_str().unwrap());
    // The first message's score, and what the run said on stderr.
    let first = |extra: &[&str]| {
        let results = dir.path().join("results");
        let mut args = vec![
            "eval",
            "--index",
            index,
            "--train",
            "clicks",
            "--profile",
            "diligent",
            "--results",
            results.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = chaff(&args);
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&results).unwrap();
        let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        let score: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        (score, String::from_utf8(out.stderr).unwrap())
    };
    let (alone, _) = first(&["--grams", "1"]);
    let (seeded, stderr) = first(&["--grams", "1", "--grams-seed", seed]);
    assert!(
        stderr.contains("grams: seeded with 45 messages of 1 corpora"),
        "{stderr}"
    );
    assert_ne!(seeded, alone, "a seeded regression has its say at once");
    let (ramped, _) = first(&["--grams", "1", "--grams-seed", seed, "--grams-user-ramp"]);
    assert_eq!(ramped, alone, "no say before the user's first clicked ham");
    // Frozen: the seed's weights alone, to the end of the replay.
    let (frozen, stderr) = first(&["--grams", "1", "--grams-seed", seed, "--grams-frozen"]);
    assert_eq!(frozen, seeded, "the same seed, the same first score");
    assert_eq!(
        number_after(&stderr, "holds "),
        0,
        "a frozen regression learns no weight from the replay: {stderr}"
    );
    assert_eq!(
        number_after(&stderr, "corpora: "),
        number_after(&stderr, "over the seed's "),
        "{stderr}"
    );
    // Frozen with the user ramp: the seed's weights, no say before the
    // user's first clicked ham.
    let (frozen_ramped, _) = first(&[
        "--grams",
        "1",
        "--grams-seed",
        seed,
        "--grams-frozen",
        "--grams-user-ramp",
    ]);
    assert_eq!(frozen_ramped, alone, "no say before the user's clicked ham");
    // ...and a say once the user has clicked ham (the corpus ends with
    // five spam-like messages labelled ham, which `diligent` clicks Not
    // spam): the frozen seed's weights then move scores away from the
    // model alone's (`--grams 0`).
    let scores = |extra: &[&str]| -> Vec<String> {
        first(extra);
        let text = std::fs::read_to_string(dir.path().join("results")).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect()
    };
    assert_ne!(
        scores(&[
            "--grams",
            "1",
            "--grams-seed",
            seed,
            "--grams-frozen",
            "--grams-user-ramp",
        ]),
        scores(&["--grams", "0"]),
        "a frozen seed has its say after the user's clicked ham"
    );
    let (zero, _) = first(&["--grams", "0"]);
    let (zero_seeded, _) = first(&["--grams", "0", "--grams-seed", seed]);
    assert_eq!(zero, zero_seeded);

    for (args, says) in [
        (vec!["--grams-seed", seed], "add --grams WEIGHT"),
        (
            vec!["--grams", "1", "--grams-user-ramp"],
            "add --grams-seed INDEX",
        ),
        (
            vec!["--grams", "1", "--grams-frozen"],
            "add --grams-seed INDEX",
        ),
        (
            vec!["--grams", "1", "--grams-seed", seed, "--grams-gate"],
            "not measured with --grams-seed",
        ),
        (
            vec!["--grams", "1", "--grams-seed", index],
            "is the corpus replayed",
        ),
        (
            vec!["--grams", "1", "--grams-seed", "/nonexistent/index"],
            "/nonexistent/index",
        ),
    ] {
        refused(index, &args, says);
    }
}

/// `chaff metrics --compare BASE NEW` says whether a change between two
/// replays of one corpus is beyond noise: a filter that ranks every spam
/// higher is "better" on (1-ROCA)%, a file against itself is "noise" with
/// a zero interval, and files of different messages are refused.
#[test]
fn metrics_compare_calls_a_clear_gain_better_and_refuses_files_of_other_messages() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, spam_bonus: f64, n: usize| {
        let mut text = String::from("# online, train every\n");
        for i in 0..n {
            let spam = i % 3 == 0;
            // Scores that overlap: spam 1.0..3.0, ham 0.0..2.0, spread by i.
            let spread = (i * 7919 % 1000) as f64 / 500.0;
            let score = if spam { 1.0 + spam_bonus } else { 0.0 } + spread;
            let (gold, judged) = (
                if spam { "spam" } else { "ham" },
                if score > 1.5 { "spam" } else { "ham" },
            );
            text.push_str(&format!("m{i} {score} {gold} {judged} 1\n"));
        }
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (base, better, short) = (
        write("base", 0.0, 3000),
        write("better", 0.5, 3000),
        write("short", 0.0, 100),
    );
    let out = chaff(&[
        "metrics",
        "--compare",
        &base,
        &better,
        "--replicates",
        "200",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["measure"], "(1-ROCA)%");
    assert_eq!(lines[0]["call"], "better", "{}", lines[0]);
    assert!(lines[0]["high"].as_f64().unwrap() < 0.0);

    let out = chaff(&["metrics", "--compare", &base, &base]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("noise").count(), 5, "{text}");
    assert!(text.contains("[+0.000, +0.000]"), "{text}");

    let out = chaff(&["metrics", "--compare", &base, &short]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("replay the same corpus"), "{err}");
    let out = chaff(&["metrics", "--compare", &base]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("two results files")
    );
    let out = chaff(&["metrics", &base, "--seed", "3"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("add --compare")
    );
}

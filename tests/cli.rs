//! The `chaff` binary as a person uses it: the real binary against a real
//! server on loopback, asserting on what it prints and its exit status.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::common::*;

/// What one run of the binary printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `chaff ARGS` with no terminal and empty standard input.
async fn chaff<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(args)
        .env_remove("CHAFF_SERVER")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
        .into()
}

/// The address exactly as `chaff serve` prints it: `127.0.0.1:PORT`, no scheme.
fn host_port(server: &TestServer) -> String {
    server.addr.to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn server_takes_host_port_as_serve_prints_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "spam.eml", SPAM);
    let r = chaff([
        "score".as_ref(),
        "--server".as_ref(),
        host_port(&server).as_ref(),
        "-u".as_ref(),
        "alice".as_ref(),
        m.as_os_str(),
    ])
    .await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("spam.eml"), "{}", r.stdout);
    // The URL form still works.
    let r = chaff(["shared", "--server", &server.url()]).await;
    assert!(r.ok, "{}", r.stderr);
    server.stop().await;
}

#[tokio::test]
async fn error_causes_are_printed_once() {
    let refused = chaff(["stats", "--server", "127.0.0.1:1"]).await;
    assert!(!refused.ok);
    assert_eq!(
        refused.stderr.matches("tcp connect error").count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("is `chaff serve` running there?"));
    let missing = chaff(["tokens", "/nonexistent/message.eml"]).await;
    assert!(!missing.ok);
    assert_eq!(
        missing.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        missing.stderr
    );
    let bad = chaff(["stats", "--server", "not a host"]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("HOST:PORT"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_names_the_other_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path());
    let second = chaff([
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
    ])
    .await;
    first.terminate();
    assert!(!second.ok);
    assert!(
        second
            .stderr
            .contains("another chaff process is using the data directory"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("could not acquire lock"),
        "{}",
        second.stderr
    );
}

#[tokio::test]
async fn every_command_names_the_user_with_dash_u_and_says_what_it_is() {
    for cmd in [
        vec!["score"],
        vec!["train"],
        vec!["forget"],
        vec!["user"],
        vec!["why"],
        vec!["list", "show"],
    ] {
        let mut args = cmd.clone();
        args.push("-h");
        let help = chaff(&args).await;
        assert!(help.ok, "{cmd:?}");
        let lines: Vec<&str> = help.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("-u, --user <USER>"))
            .unwrap_or_else(|| panic!("{cmd:?} has no -u/--user:\n{}", help.stdout));
        // The help text follows on the same line, or (when clap wraps) the next.
        let same = lines[at].split("<USER>").nth(1).unwrap_or_default().trim();
        let next = lines.get(at + 1).map_or("", |l| l.trim());
        let text = if same.is_empty() { next } else { same };
        assert!(
            !text.is_empty() && !text.starts_with('-'),
            "{cmd:?}: -u has no help line:\n{}",
            help.stdout
        );
        // Usage shows --server as the option it is, never as required.
        let usage = help
            .stdout
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap();
        assert!(!usage.contains("--server"), "{usage}");
    }
}

#[tokio::test]
async fn commands_that_print_data_print_json_lines_with_json() {
    let server = TestServer::start().await;
    let s = host_port(&server);
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "spam.eml", SPAM);
    let m = m.to_str().unwrap();
    let train = chaff([
        "train", "--server", &s, "-u", "alice", "--spam", "--json", m,
    ])
    .await;
    assert!(train.ok, "{}", train.stderr);
    let learned: serde_json::Value = serde_json::from_str(train.stdout.trim()).unwrap();
    let id = learned["message_id"].as_str().unwrap().to_string();
    assert_eq!(learned["label"], "spam");
    let runs = [
        vec!["score", "--server", &s, "-u", "alice", "--json", m],
        vec!["user", "--server", &s, "-u", "alice", "--json"],
        vec![
            "list",
            "add",
            "--server",
            &s,
            "-u",
            "alice",
            "--kind",
            "block",
            "--json",
            "x.example",
        ],
        vec![
            "list", "show", "--server", &s, "-u", "alice", "--kind", "block", "--json",
        ],
        vec!["shared", "--server", &s, "--json"],
        vec!["stats", "--server", &s, "--json"],
        vec!["tokens", "--json", m],
        vec!["forget", "--server", &s, "-u", "alice", "--json", &id],
    ];
    for args in runs {
        let r = chaff(&args).await;
        assert!(r.ok, "{args:?}: {}", r.stderr);
        assert!(!r.stdout.trim().is_empty(), "{args:?} printed nothing");
        for line in r.stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: {e}: {line:?}"));
            assert!(v.is_object(), "{args:?}: {line}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn train_goes_on_past_an_unreadable_file_and_counts_what_failed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.eml", SPAM);
    let b = write(dir.path(), "b.eml", SPAM2);
    let missing = dir.path().join("missing.eml");
    let r = chaff([
        "train".as_ref(),
        "--server".as_ref(),
        host_port(&server).as_ref(),
        "-u".as_ref(),
        "alice".as_ref(),
        "--spam".as_ref(),
        a.as_os_str(),
        missing.as_os_str(),
        b.as_os_str(),
    ])
    .await;
    assert!(!r.ok, "a failed file must fail the command");
    assert!(
        r.stdout.contains("b.eml"),
        "the file after the failure was not tried: {}",
        r.stdout
    );
    assert!(r.stderr.contains("missing.eml"), "{}", r.stderr);
    assert!(
        r.stderr.contains("learned 2 of 3, 1 failed"),
        "{}",
        r.stderr
    );
    let mut c = server.client().await;
    assert_eq!(user(&mut c, "alice").await.spam_learned, 2);
    server.stop().await;
}

#[tokio::test]
async fn score_goes_on_past_a_file_it_cannot_score_naming_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.eml", SPAM);
    let missing = dir.path().join("missing.eml");
    // Over the server's 10 MiB message limit: refused with RESOURCE_EXHAUSTED.
    let big = write(dir.path(), "big.eml", &vec![b'x'; 11 << 20]);
    let b = write(dir.path(), "b.eml", SPAM2);
    let r = chaff([
        "score".as_ref(),
        "--server".as_ref(),
        host_port(&server).as_ref(),
        "-u".as_ref(),
        "alice".as_ref(),
        a.as_os_str(),
        missing.as_os_str(),
        big.as_os_str(),
        b.as_os_str(),
    ])
    .await;
    assert!(!r.ok, "a failed file must fail the command");
    assert!(
        r.stdout.contains("a.eml") && r.stdout.contains("b.eml"),
        "every file that could be scored was: {}",
        r.stdout
    );
    assert!(r.stderr.contains("missing.eml"), "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot score") && r.stderr.contains("big.eml: ResourceExhausted"),
        "the refused file is named with the server's reason: {}",
        r.stderr
    );
    assert!(r.stderr.contains("scored 2 of 4, 2 failed"), "{}", r.stderr);
    // What support needs to read a decision: who sent it, from where.
    assert!(
        r.stdout
            .contains("sender promo@pills.example, sending IP (none)"),
        "{}",
        r.stdout
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_gives_up_on_a_server_that_never_answers_and_says_so() {
    // Takes the connection, then says nothing (a stopped or wedged
    // process, or something that is not chaff): the client must not hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.eml", SPAM);
    let b = write(dir.path(), "b.eml", SPAM2);
    let addr = addr.to_string();
    let run = chaff([
        "train".as_ref(),
        "--server".as_ref(),
        addr.as_ref(),
        "-u".as_ref(),
        "alice".as_ref(),
        "--spam".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
    ]);
    // The HTTP/2 pings give up after about 30 s; a minute bounds a hang.
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the client hung on a silent server");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("cannot train") && r.stderr.contains("stopped answering"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("learned 0 of 2, 1 failed, 1 not tried"),
        "the second file is not tried on a lost connection: {}",
        r.stderr
    );
    silent.abort();
}

#[tokio::test]
async fn user_delete_needs_confirmation_or_yes() {
    let server = TestServer::start().await;
    let s = host_port(&server);
    let mut c = server.client().await;
    train(&mut c, "alice", SPAM, chaff::proto::Label::Spam, "m1").await;
    let refused = chaff(["user", "--server", &s, "-u", "alice", "--delete"]).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        user(&mut c, "alice").await.spam_learned,
        1,
        "deleted without --yes"
    );
    let done = chaff(["user", "--server", &s, "-u", "alice", "--delete", "--yes"]).await;
    assert!(done.ok, "{}", done.stderr);
    assert!(done.stdout.contains("deleted alice"), "{}", done.stdout);
    assert_eq!(user(&mut c, "alice").await.spam_learned, 0);
    server.stop().await;
}

#[tokio::test]
async fn why_refuses_a_reversed_window() {
    let server = TestServer::start().await;
    let r = chaff([
        "why",
        "--server",
        &host_port(&server),
        "-u",
        "alice",
        "--since",
        "1m",
        "--until",
        "2h",
    ])
    .await;
    assert!(!r.ok);
    assert!(r.stderr.contains("is before --since"), "{}", r.stderr);
    assert!(!r.stdout.contains("no decisions"), "{}", r.stdout);
    server.stop().await;
}

#[tokio::test]
async fn list_add_checks_every_entry_first_and_stores_all_or_nothing() {
    let server = TestServer::start().await;
    let s = host_port(&server);
    let show = || {
        chaff([
            "list", "show", "--server", &s, "-u", "alice", "--kind", "block",
        ])
    };
    let bad = chaff([
        "list",
        "add",
        "--server",
        &s,
        "-u",
        "alice",
        "--kind",
        "block",
        "ok.example",
        "999.1.1.1",
        "a@b@c.example",
    ])
    .await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("nothing was changed"), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("999.1.1.1") && bad.stderr.contains("a@b@c.example"),
        "{}",
        bad.stderr
    );
    let empty = show().await;
    assert_eq!(empty.stdout, "", "part of a refused add was stored");
    // Said on standard error, so a script reading entries gets none.
    assert!(
        empty.stderr.contains("the block list is empty"),
        "{}",
        empty.stderr
    );

    let everything = chaff([
        "list", "add", "--server", &s, "-u", "alice", "--kind", "block", "::/0",
    ])
    .await;
    assert!(!everything.ok);
    assert!(
        everything.stderr.contains("--force"),
        "{}",
        everything.stderr
    );
    let forced = chaff([
        "list",
        "add",
        "--server",
        &s,
        "-u",
        "alice",
        "--kind",
        "block",
        "--force",
        "0.0.0.0/0",
        "bücher.example",
    ])
    .await;
    assert!(forced.ok, "{}", forced.stderr);
    assert_eq!(show().await.stdout, "0.0.0.0/0\nxn--bcher-kva.example\n");
    server.stop().await;
}

#[tokio::test]
async fn durations_read_the_same_everywhere_and_counts_are_plural_only_when_many() {
    // loadtest takes `5s` as serve does (it fails later, on the missing corpus).
    let r = chaff([
        "loadtest",
        "--duration",
        "5s",
        "--corpus",
        "/nonexistent/index",
    ])
    .await;
    assert!(!r.ok);
    assert!(!r.stderr.contains("--duration"), "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/index"), "{}", r.stderr);

    let server = TestServer::start().await;
    let mut c = server.client().await;
    train(&mut c, "alice", HAM, chaff::proto::Label::Ham, "h1").await;
    let stats = chaff(["stats", "--server", &host_port(&server)]).await;
    assert!(stats.ok, "{}", stats.stderr);
    assert!(
        stats.stdout.contains("models in memory: 1 user,"),
        "{}",
        stats.stdout
    );
    server.stop().await;
}

#[tokio::test]
async fn seed_says_what_it_is_doing_without_a_terminal() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.eml", SPAM);
    write(dir.path(), "h.eml", HAM);
    let index = write(dir.path(), "index", b"spam s.eml\nham h.eml\n");
    let r = chaff([
        "seed".as_ref(),
        "--server".as_ref(),
        host_port(&server).as_ref(),
        "--index".as_ref(),
        index.as_os_str(),
    ])
    .await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("seeding 2 messages"), "{}", r.stderr);
    assert!(r.stdout.contains("seeded 2 messages"), "{}", r.stdout);
    server.stop().await;
}

#[tokio::test]
async fn the_readme_score_example_has_the_columns_score_prints() {
    let readme = include_str!("../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("chaff score --user alice new.eml"))
        .expect("README has the score example");
    let example = line.split('"').nth(1).expect("quoted example output");
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "new.eml", SPAM);
    let r = chaff([
        "score".as_ref(),
        "--server".as_ref(),
        host_port(&server).as_ref(),
        "-u".as_ref(),
        "alice".as_ref(),
        m.as_os_str(),
    ])
    .await;
    assert!(r.ok, "{}", r.stderr);
    let printed: Vec<&str> = r.stdout.split_whitespace().take(3).collect();
    let shown: Vec<&str> = example.split_whitespace().take(3).collect();
    let actions = ["deliver", "spam-folder", "reject"];
    assert!(actions.contains(&printed[2]), "{}", r.stdout);
    assert!(
        actions.contains(&shown[2]),
        "README example lacks the action column: {example}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_flag_on_a_command_that_never_connects_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let r = serve("127.0.0.1:0", &data, &["--token", "chaff_abc_def"]).await;
    assert!(!r.ok, "serve started with a --token that protects nothing");
    assert!(
        r.stderr
            .contains("--token is for the commands that connect")
            && r.stderr.contains("keys file"),
        "{}",
        r.stderr
    );
    assert!(
        !data.exists(),
        "a refused start must not create the data directory"
    );
    let r = chaff(["--tls-ca", "ca.pem", "keys", "list"]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("--tls-ca is for the commands"),
        "{}",
        r.stderr
    );
    // From the environment (a shell set up for client commands) they are
    // no error.
    let r: Run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["serve", "--print-config"])
        .env("CHAFF_TOKEN", "chaff_abc_def")
        .output()
        .await
        .unwrap()
        .into();
    assert!(r.ok, "{}", r.stderr);
}

/// Runs `chaff serve --listen LISTEN --data DATA EXTRA…` to its end (a
/// refused start ends at once).
async fn serve(listen: &str, data: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    chaff(args).await
}

#[tokio::test]
async fn serve_refuses_values_that_cannot_work_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (flag, value, says) in [
        ("--max-message-bytes", "0", "at least 1 byte"),
        ("--model-memory", "0", "at least 1MiB"),
        ("--decision-retention", "999999999999999999d", "too long"),
        ("--max-tokens", "0", "at least 1"),
        ("--cache-mb", "0", "--cache-mb"),
        ("--log", "chaff=[", "--log"),
    ] {
        let r = serve("127.0.0.1:0", &data, &[flag, value]).await;
        assert!(!r.ok, "{flag} {value} started");
        assert!(
            r.stderr.contains(flag) && r.stderr.contains(says),
            "{flag} {value}: {}",
            r.stderr
        );
    }
    assert!(
        !data.exists(),
        "a refused start must not create the data directory"
    );
    // A --data that is a file is named as the problem (the keys file is
    // looked for inside it, and used to be what the error named).
    let file = write(dir.path(), "file", b"not a folder");
    let r = serve("127.0.0.1:0", &file, &[]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("--data") && r.stderr.contains("not a directory"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("keys file"), "{}", r.stderr);
    // A port in use is refused before the data directory is created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let r = serve(&port, &data, &[]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("cannot listen on") && r.stderr.contains("another `chaff serve`"),
        "{}",
        r.stderr
    );
    assert!(
        !data.exists(),
        "a start refused for its port must not create the data directory"
    );
}

#[tokio::test]
async fn print_config_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "chaff.toml",
        b"data = \"/srv/chaff\"\ncache-mb = 64\nmax-tokens = 500\n",
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["serve", "--print-config", "--max-tokens", "700", "--config"])
        .arg(&file)
        .env("CHAFF_CACHE_MB", "32")
        .output()
        .await
        .unwrap();
    let r = Run::from(out);
    assert!(r.ok, "{}", r.stderr);
    let f = file.display().to_string();
    for line in [
        format!("data = \"/srv/chaff\"  # file {f}"),
        "cache-mb = 32  # env CHAFF_CACHE_MB".to_string(),
        "max-tokens = 700  # flag".to_string(),
        "shutdown-grace = \"10s\"  # default".to_string(),
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "{line:?} not in\n{}",
            r.stdout
        );
    }
    std::fs::write(&file, "data = \"/srv/chaff\"\nmax-message-byte = 5\n").unwrap();
    let bad = chaff([
        "serve".as_ref(),
        "--print-config".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
    ])
    .await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("unknown key `max-message-byte`"),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn a_list_add_refused_part_way_changes_back_what_it_added() {
    let server = TestServer::start().await;
    let s = host_port(&server);
    // Fill alice's block list to one short of its limit (1,000 entries).
    let fill: Vec<String> = (0..999).map(|i| format!("x{i}.example")).collect();
    let mut args = vec![
        "list", "add", "--server", &s, "-u", "alice", "--kind", "block",
    ];
    args.extend(fill.iter().map(String::as_str));
    let r = chaff(&args).await;
    assert!(r.ok, "{}", r.stderr);
    // The first fits, the second does not: the first is changed back.
    let over = chaff([
        "list",
        "add",
        "--server",
        &s,
        "-u",
        "alice",
        "--kind",
        "block",
        "a.example",
        "b.example",
    ])
    .await;
    assert!(!over.ok);
    assert!(over.stderr.contains("changed back"), "{}", over.stderr);
    let show = chaff([
        "list", "show", "--server", &s, "-u", "alice", "--kind", "block",
    ])
    .await;
    assert_eq!(
        show.stdout.lines().count(),
        999,
        "a.example was left behind"
    );
    assert!(!show.stdout.contains("a.example\n"), "{}", show.stdout);
    server.stop().await;
}

#[tokio::test]
async fn usage_in_errors_never_shows_server_as_required() {
    let cases: [&[&str]; 12] = [
        &["score", "-u", "a"],
        &["train", "-u", "a", "x.eml"],
        &["forget", "-u", "a"],
        &["user"],
        &["why"],
        &["list", "add", "-u", "a", "x.example"],
        &["list", "remove", "-u", "a", "x.example"],
        &["list", "show", "-u", "a"],
        &["seed", "--nonsense"],
        &["shared", "--nonsense"],
        &["stats", "--nonsense"],
        &["loadtest"],
    ];
    for args in cases {
        let mut with_server = vec!["--server", "127.0.0.1:1"];
        with_server.splice(
            0..0,
            args.iter().copied().take_while(|a| !a.starts_with('-')),
        );
        with_server.extend(args.iter().copied().skip_while(|a| !a.starts_with('-')));
        let r = chaff(&with_server).await;
        assert!(!r.ok, "{with_server:?}");
        let usage = r
            .stderr
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_else(|| panic!("{with_server:?}: {}", r.stderr));
        assert!(!usage.contains("--server"), "{with_server:?}: {usage}");
    }
}

#[tokio::test]
async fn repair_rebuilds_a_users_model_from_the_ledger_with_the_server_stopped() {
    // `chaff repair` is what a DATA_LOSS answer about a damaged snapshot
    // tells the operator to run (store tests damage one and repair it);
    // here, the binary on a real directory: refused while a server holds
    // it, then the same counts and scores from the ledger alone.
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_pure_in(data.path()).await;
    let mut c = server.client().await;
    train(&mut c, "alice", SPAM, chaff::proto::Label::Spam, "s1").await;
    train(&mut c, "alice", SPAM2, chaff::proto::Label::Spam, "s2").await;
    train(&mut c, "alice", HAM, chaff::proto::Label::Ham, "h1").await;
    let before = observe(&mut c, "alice").await;
    let dir = data.path().to_str().unwrap();
    let busy = chaff(["repair", "--user", "alice", "--data", dir]).await;
    assert!(!busy.ok, "repair must not run beside a server");
    assert!(
        busy.stderr.contains("another chaff process"),
        "{}",
        busy.stderr
    );
    server.stop().await;
    let mut run = chaff(["repair", "--user", "alice", "--data", dir]).await;
    for _ in 0..100 {
        // The stopped server's sled handle lets go of its lock a moment later.
        if run.ok || !run.stderr.contains("another chaff process") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        run = chaff(["repair", "--user", "alice", "--data", dir]).await;
    }
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("from 3 ledger entries"),
        "{}",
        run.stdout
    );
    // A mistyped user or directory is refused and creates nothing.
    let typo = chaff(["repair", "--user", "alcie", "--data", dir]).await;
    assert!(!typo.ok);
    assert!(typo.stderr.contains("nothing stored"), "{}", typo.stderr);
    let missing = data.path().join("no-such-dir");
    let typo = chaff([
        "repair".as_ref(),
        "--user".as_ref(),
        "alice".as_ref(),
        "--data".as_ref(),
        missing.as_os_str(),
    ])
    .await;
    assert!(!typo.ok);
    assert!(typo.stderr.contains("no data directory"), "{}", typo.stderr);
    assert!(!missing.exists(), "repair created a data directory");
    let server = TestServer::start_pure_in(data.path()).await;
    let mut c = server.client().await;
    assert_eq!(observe(&mut c, "alice").await, before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_lines_with_refusals_at_info_and_clicks_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = LogServer::start(dir.path());
    let mut c = connect(server.url()).await;
    for i in 0..5 {
        train(
            &mut c,
            "alice",
            SPAM,
            chaff::proto::Label::Spam,
            &format!("m{i}"),
        )
        .await;
    }
    // Twenty refusals of one kind at once: one line (`throttle.rs`), the
    // rest held back and counted by the next line of that kind.
    for _ in 0..20 {
        let refused = c
            .forget(chaff::proto::ForgetRequest {
                user_id: "alice".into(),
                message_id: "never-learned".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
    }
    // The same settings and the same list entry sent five times (a
    // retrying or looping client), then a read: one line each at INFO.
    for _ in 0..5 {
        c.update_user(chaff::proto::UpdateUserRequest {
            user_id: "alice".into(),
            handling_mode: chaff::proto::HandlingMode::Reject.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        c.add_list_entry(chaff::proto::ListEntryRequest {
            user_id: "alice".into(),
            kind: chaff::proto::ListKind::Block.into(),
            entry: "spammer.example".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.update_user(chaff::proto::UpdateUserRequest {
        user_id: "alice".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(c);
    let stderr = server.stop();

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    let refusal: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "call refused")
        .collect();
    assert_eq!(refusal.len(), 1, "{stderr}");
    let f = &refusal[0]["fields"];
    assert_eq!(refusal[0]["level"], "INFO");
    assert_eq!(refusal[0]["target"], "chaff::calls");
    assert_eq!(
        (&f["method"], &f["code"]),
        (&"Forget".into(), &"NotFound".into())
    );
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0, "{f}");
    // The start line's bounds are numbers for a log pipeline, not Rust's
    // `Some(4)`.
    let start = lines
        .iter()
        .find(|l| l["fields"]["max_concurrent_writes"].is_number())
        .unwrap_or_else(|| panic!("no start line with numeric bounds: {stderr}"));
    assert!(
        start["fields"]["max_concurrent_reads"].is_number(),
        "{start}"
    );
    let said = |what: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == what)
            .collect::<Vec<_>>()
    };
    let settings = said("settings updated");
    assert_eq!(settings.len(), 1, "{stderr}");
    assert_eq!(settings[0]["level"], "INFO");
    assert_eq!(settings[0]["fields"]["mode"], "reject", "{stderr}");
    let added = said("list entry added");
    assert_eq!(added.len(), 1, "{stderr}");
    assert_eq!(added[0]["fields"]["entry"], "spammer.example", "{stderr}");
    // Five clicks, no line for any of them at the default level.
    assert!(
        !lines
            .iter()
            .any(|l| l["fields"]["message"] == "train" || l["fields"]["method"] == "Train"),
        "{stderr}"
    );
}

#[test]
fn a_command_whose_reader_goes_away_ends_quietly_not_with_a_panic() {
    // `chaff tokens FILE | head -1`: the reader closes the pipe, and the
    // next line chaff prints meets a closed pipe. Rust ignores SIGPIPE, so
    // that `println!` panicked with a backtrace; a command for people ends
    // as Unix tools do, killed by SIGPIPE, saying nothing. Here the reader
    // is gone before chaff prints its first line.
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "ham.eml", HAM);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["tokens".as_ref(), m.as_os_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// `chaff list add` is all or nothing even when interrupted: Ctrl-C
/// part-way changes back what it stored (the support walkthrough of
/// session 24 left 96 of 5,000 entries stored by a SIGINT after a second).
#[tokio::test]
async fn an_interrupted_list_add_changes_back_what_it_stored() {
    let server = TestServer::start().await;
    let entries: Vec<String> = (0..5000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"));
    cmd.args([
        "list",
        "add",
        "--server",
        &host_port(&server),
        "-u",
        "alice",
    ])
    .args(["--kind", "block"])
    .args(&entries)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let mut c = server.client().await;
    let list = || chaff::proto::ListEntriesRequest {
        user_id: "alice".into(),
        kind: chaff::proto::ListKind::Block.into(),
        ..Default::default()
    };
    // Interrupt once some entries are stored (so the handler is in place).
    let mut stored = 0;
    for _ in 0..400 {
        stored = c
            .list_entries(list())
            .await
            .unwrap()
            .into_inner()
            .entries
            .len();
        if stored >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(stored >= 5, "the command stored nothing within 10 s");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("interrupted") && stderr.contains("changed back"),
        "{stderr}"
    );
    let left = c.list_entries(list()).await.unwrap().into_inner().entries;
    assert!(
        left.is_empty(),
        "{} entries left: {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    server.stop().await;
}

/// An entry an older build stored under rules since made stricter (a label
/// ending in a hyphen) is listed and removable with `chaff list remove`:
/// the command's own check takes it as the server reads stored entries.
#[tokio::test]
async fn list_remove_takes_an_entry_an_older_build_stored() {
    let data = tempfile::tempdir().unwrap();
    {
        let store = chaff::store::Store::open(data.path(), 8 << 20).unwrap();
        let engine = chaff::engine::Engine::new(store, Default::default()).unwrap();
        let list = chaff::engine::ListRef {
            owner: chaff::types::Owner::User(chaff::types::UserId::new("alice").unwrap()),
            kind: chaff::policy::ListKind::Block,
        };
        let old = chaff::policy::Entry::stored("foo-.example").unwrap();
        assert!(engine.add_list_entry(&list, &old).unwrap());
    }
    let server = TestServer::start_in(data.path()).await;
    let s = host_port(&server);
    let args = |verb: &'static str| {
        [
            "list",
            verb,
            "--server",
            &s,
            "-u",
            "alice",
            "--kind",
            "block",
            "foo-.example",
        ]
    };
    let added = chaff(args("add")).await;
    assert!(!added.ok, "refused if added today: {}", added.stdout);
    let removed = chaff(args("remove")).await;
    assert!(removed.ok, "{}", removed.stderr);
    assert!(removed.stdout.contains("removed"), "{}", removed.stdout);
    server.stop().await;
}

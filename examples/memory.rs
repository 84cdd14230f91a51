//! Measures a real `chaff serve`'s memory against its flags: RSS after
//! seeding a shared model and loading many users, next to
//! `--model-memory` + `--cache-mb` (docs/PERFORMANCE.md, "Memory within the
//! flags").
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example memory -- target/release/chaff \
//!     SEED_INDEX USER_INDEX USERS CLICKS_PER_USER MODEL_MEMORY CACHE_MB [SERVE_FLAGS...]
//! ```
//!
//! Starts `chaff serve` on a fresh data directory under `target/tmp` with
//! `--model-memory MODEL_MEMORY --cache-mb CACHE_MB` (plus any further
//! flags), seeds the shared model from SEED_INDEX with `chaff seed`, then
//! trains USERS users with CLICKS_PER_USER messages each from USER_INDEX
//! (user `i` takes the messages after user `i − 1`'s, wrapping around),
//! eight Train calls in flight, and scores one message per user. Prints the
//! server's VmRSS and VmHWM (`/proc/PID/status`) when idle after start,
//! after the seed and after the users, and the engine's own estimate
//! (GetStats). Stops the server with SIGTERM and removes the directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use chaff::proto::{self, chaff_client::ChaffClient};

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn report(pid: u32, when: &str) {
    println!(
        "{when:<28} VmRSS {:>7.1} MiB   VmHWM {:>7.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        eprintln!(
            "usage: memory CHAFF_BIN SEED_INDEX USER_INDEX USERS CLICKS_PER_USER MODEL_MEMORY CACHE_MB [SERVE_FLAGS...]"
        );
        std::process::exit(2);
    }
    let bin = &args[0];
    let seed_index = &args[1];
    let users: usize = args[3].parse().expect("USERS");
    let clicks: usize = args[4].parse().expect("CLICKS_PER_USER");
    let corpus = chaff::eval::read_index(std::path::Path::new(&args[2])).expect("USER_INDEX");
    let messages: Vec<(Vec<u8>, chaff::types::Label)> = corpus
        .iter()
        .map(|m| (std::fs::read(&m.path).expect("message"), m.gold))
        .collect();
    std::fs::create_dir_all("target/tmp").unwrap();
    let dir = tempfile::tempdir_in("target/tmp").unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(["--stats-interval", "0s", "--data"])
        .arg(dir.path())
        .args(["--model-memory", &args[5], "--cache-mb", &args[6]])
        .args(&args[7..])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start chaff serve");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("listening line")
        .to_string();
    let url = format!("http://{addr}");
    println!(
        "chaff serve --model-memory {} --cache-mb {} {}",
        args[5],
        args[6],
        args[7..].join(" ")
    );
    report(pid, "started, idle");

    let t = Instant::now();
    let seeded = Command::new(bin)
        .args(["seed", "--server", &url, "--index", seed_index])
        .stdout(Stdio::null())
        .status()
        .expect("chaff seed");
    assert!(seeded.success(), "chaff seed failed");
    let mut client = ChaffClient::connect(url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let shared = client
        .get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner();
    println!(
        "seeded: {} tokens in the shared model ({:.0} s)",
        shared.tokens,
        t.elapsed().as_secs_f64()
    );
    report(pid, "after the seed");

    let t = Instant::now();
    let messages = std::sync::Arc::new(messages);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (mut c, messages, next) = (client.clone(), messages.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if u >= users {
                    return;
                }
                let user_id = format!("mem-{u}");
                for k in 0..clicks {
                    let i = (u * clicks + k) % messages.len();
                    let (message, gold) = &messages[i];
                    let label = match gold {
                        chaff::types::Label::Spam => proto::Label::Spam,
                        chaff::types::Label::Ham => proto::Label::Ham,
                    };
                    c.train(proto::TrainRequest {
                        user_id: user_id.clone(),
                        message: message.clone(),
                        label: label.into(),
                        message_id: format!("m{i}"),
                    })
                    .await
                    .unwrap();
                }
                c.score(proto::ScoreRequest {
                    user_id,
                    message: messages[u % messages.len()].0.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "trained: {users} users x {clicks} clicks ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    report(pid, "after the users");
    let s = client
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    println!(
        "engine estimate: {} users in memory, {:.1} MiB of user models, budget {:.0} MiB, {} evictions",
        s.resident_users,
        s.resident_bytes as f64 / 1048576.0,
        s.model_memory_bytes as f64 / 1048576.0,
        s.model_evictions
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
}

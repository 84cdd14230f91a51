//! `chaff loadtest`: keep a fixed number of calls in flight against a running
//! server for a while, then report throughput and latency: of the calls
//! answered OK, and of the ones refused (by code; the busy refusals,
//! RESOURCE_EXHAUSTED and UNAVAILABLE, together as `shed`).
//!
//! The corpus is read into memory once, so the disk is not measured; the
//! messages are sent in a cycle. Calls run as tokio tasks sharing a few
//! tonic channels, each channel one HTTP/2 connection: several connections
//! let the server's connection tasks (and the client's) run on several
//! cores, where one connection funnels every call through one task on each
//! side.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use chaff::eval;
use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::service::status::label_to_wire;

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    #[command(flatten)]
    server: super::ServerArg,
    /// The corpus index: lines `spam PATH` / `ham PATH` (TREC format). Its
    /// messages are read into memory once and sent in a cycle.
    #[arg(long)]
    corpus: PathBuf,
    /// Calls kept in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to keep calling: `10s`, `2m`, `500ms` (a bare number is
    /// seconds), the same forms `chaff serve` takes.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// The RPC to call. `train` learns each message under its label from the
    /// index, with a message id never used before, so every call is a real,
    /// durable learn (not ALREADY_LEARNED).
    #[arg(long, value_enum, default_value_t = Rpc::Score)]
    rpc: Rpc,
    /// Users the calls go to in turn: `loadtest-0` … `loadtest-<K-1>`. The
    /// names are the same on every run, so `--rpc train` first gives a later
    /// `--rpc score` trained models to score against.
    #[arg(long, default_value_t = 1)]
    users: usize,
    /// Put this before every user id, e.g. `acme/` for a key bound to
    /// tenant acme (which may only name `acme/...` users):
    /// `acme/loadtest-0` ….
    #[arg(long, default_value = "")]
    user_prefix: String,
    /// HTTP/2 connections the calls share (one tonic channel each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Each call's deadline, sent as `grpc-timeout` (e.g. `100ms`); the
    /// server refuses a call past it with DEADLINE_EXCEEDED without working
    /// on it. Default: none.
    #[arg(long, value_parser = super::parse_duration)]
    deadline: Option<Duration>,
    /// After a call the server refused as busy (RESOURCE_EXHAUSTED or
    /// UNAVAILABLE), the worker waits this long before its next call, as a
    /// client with backoff does (e.g. `10ms`). Default 0: at once, the
    /// harshest client.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    backoff: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Rpc {
    Score,
    Train,
}

/// One corpus message, ready to send.
struct Message {
    bytes: Vec<u8>,
    label: proto::Label,
}

/// What the workers share.
struct Shared {
    messages: Vec<Message>,
    rpc: Rpc,
    users: u64,
    deadline: Option<Duration>,
    backoff: Duration,
    /// `--user-prefix`, before every user id.
    user_prefix: String,
    /// Makes this run's message ids new to the server (`--rpc train`).
    run_id: String,
    /// The number of the next call; picks its message, user and id.
    next: AtomicU64,
    /// Calls finished, and how many of them failed (for the progress line).
    done: AtomicU64,
    failed: AtomicU64,
}

/// One worker's record.
#[derive(Default)]
struct Record {
    /// Latency of each successful call, in microseconds.
    latencies_us: Vec<u32>,
    /// Failed calls by gRPC code, with the latency of each (µs).
    errors: BTreeMap<String, Vec<u32>>,
    /// Train outcomes by name.
    outcomes: BTreeMap<String, u64>,
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.connections == 0 || args.users == 0 {
        bail!("--concurrency, --connections and --users must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration must be longer than 0 (e.g. 10s)");
    }
    let messages = load(&args).await?;
    let corpus_bytes: usize = messages.iter().map(|m| m.bytes.len()).sum();
    let spam = messages
        .iter()
        .filter(|m| m.label == proto::Label::Spam)
        .count();

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.min(args.concurrency) {
        clients.push(connect(&args.server.server).await?);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let shared = Arc::new(Shared {
        messages,
        rpc: args.rpc,
        users: args.users as u64,
        deadline: args.deadline,
        backoff: args.backoff,
        user_prefix: args.user_prefix.clone(),
        run_id: format!("{}-{nanos}", std::process::id()),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    let started = Instant::now();
    let deadline = started + args.duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(worker(client, shared.clone(), deadline))
        })
        .collect();
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress(shared.clone(), started)));
    let mut total = Record::default();
    for w in workers {
        let r = w.await.context("a load worker panicked")?;
        total.latencies_us.extend(r.latencies_us);
        for (k, v) in r.errors {
            total.errors.entry(k).or_default().extend(v);
        }
        for (k, v) in r.outcomes {
            *total.outcomes.entry(k).or_default() += v;
        }
    }
    // Calls in flight at the deadline are waited for and counted.
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
        eprint!("\r{:70}\r", "");
    }

    total.latencies_us.sort_unstable();
    total.errors.values_mut().for_each(|v| v.sort_unstable());
    let ok = total.latencies_us.len() as u64;
    let failed: u64 = total.errors.values().map(|v| v.len() as u64).sum();
    let report = Report {
        args: &args,
        messages: shared.messages.len(),
        spam,
        corpus_bytes,
        ok,
        failed,
        elapsed,
        latencies_us: &total.latencies_us,
        errors: &total.errors,
        outcomes: &total.outcomes,
        run_id: &shared.run_id,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        report.print();
    }
    Ok(())
}

/// Reads every message of the index into memory (on the blocking pool).
async fn load(args: &LoadtestArgs) -> anyhow::Result<Vec<Message>> {
    let index = args.corpus.clone();
    let messages = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let corpus = eval::read_index(&index)?;
        corpus
            .iter()
            .map(|m| {
                let bytes = std::fs::read(&m.path)
                    .with_context(|| format!("cannot read {}", m.path.display()))?;
                let label = label_to_wire(m.gold);
                Ok(Message { bytes, label })
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    if messages.is_empty() {
        bail!("{}: no messages in the index", args.corpus.display());
    }
    Ok(messages)
}

/// One channel, one HTTP/2 connection.
async fn connect(server: &str) -> anyhow::Result<super::client::Client> {
    let channel = super::trust::channel(server).await?;
    Ok(
        ChaffClient::with_interceptor(channel, super::trust::Auth::from_flags()?)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(64 << 20),
    )
}

/// Calls one after another until the deadline.
async fn worker(
    mut client: super::client::Client,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Record {
    let mut record = Record::default();
    while Instant::now() < deadline {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let message = &shared.messages[(n % shared.messages.len() as u64) as usize];
        let user_id = format!("{}loadtest-{}", shared.user_prefix, n % shared.users);
        let started = Instant::now();
        let result = match shared.rpc {
            Rpc::Score => client
                .score(request(
                    shared.deadline,
                    proto::ScoreRequest {
                        user_id,
                        message: message.bytes.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| None),
            Rpc::Train => client
                .train(request(
                    shared.deadline,
                    proto::TrainRequest {
                        user_id,
                        message: message.bytes.clone(),
                        label: message.label.into(),
                        message_id: format!("loadtest-{}-{n}", shared.run_id),
                    },
                ))
                .await
                .map(|r| Some(r.into_inner().outcome)),
        };
        let latency = started.elapsed();
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        match result {
            Ok(outcome) => {
                record.latencies_us.push(us);
                if let Some(outcome) = outcome {
                    let name = proto::TrainOutcome::try_from(outcome)
                        .map_or_else(|_| format!("outcome {outcome}"), |o| format!("{o:?}"));
                    *record.outcomes.entry(name).or_default() += 1;
                }
            }
            Err(status) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                record
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default()
                    .push(us);
                if is_shed(status.code()) && !shared.backoff.is_zero() {
                    tokio::time::sleep(shared.backoff).await;
                }
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    record
}

/// A request carrying `deadline` (if any) as `grpc-timeout`.
fn request<T>(deadline: Option<Duration>, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(d) = deadline {
        r.set_timeout(d);
    }
    r
}

/// The codes a busy server refuses with (the call was not worked on).
fn is_shed(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
    )
}

/// The latency (ms) under which a fraction `q` of the calls in `sorted`
/// (µs, ascending) finished (nearest rank); 0 with no call.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    f64::from(sorted[rank - 1]) / 1000.0
}

/// A line on the terminal, redrawn every second.
async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        tick.tick().await;
        let now = Instant::now();
        let done = shared.done.load(Ordering::Relaxed);
        let rate = (done - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        last = (done, now);
        eprint!(
            "\r{:6.1} s  {done:>9} calls  {rate:>8.0}/s now  {:>6} errors ",
            started.elapsed().as_secs_f64(),
            shared.failed.load(Ordering::Relaxed),
        );
        let _ = std::io::stderr().flush();
    }
}

struct Report<'a> {
    args: &'a LoadtestArgs,
    messages: usize,
    spam: usize,
    corpus_bytes: usize,
    ok: u64,
    failed: u64,
    elapsed: f64,
    /// Sorted.
    latencies_us: &'a [u32],
    /// Failed calls' latencies by code, each sorted.
    errors: &'a BTreeMap<String, Vec<u32>>,
    outcomes: &'a BTreeMap<String, u64>,
    run_id: &'a str,
}

impl Report<'_> {
    /// The latency (ms) under which a fraction `q` of successful calls
    /// finished (nearest rank); 0 with no call.
    fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(self.latencies_us, q)
    }

    /// The latencies of the calls refused as busy, sorted.
    fn shed(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .errors
            .iter()
            .filter(|(code, _)| *code == "ResourceExhausted" || *code == "Unavailable")
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    fn errors_by_code(&self) -> BTreeMap<&str, u64> {
        self.errors
            .iter()
            .map(|(k, v)| (k.as_str(), v.len() as u64))
            .collect()
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed
    }

    fn connections(&self) -> usize {
        self.args.connections.min(self.args.concurrency)
    }

    fn rpc(&self) -> &'static str {
        match self.args.rpc {
            Rpc::Score => "score",
            Rpc::Train => "train",
        }
    }

    /// What the calls did, in words.
    fn what(&self) -> String {
        let p = &self.args.user_prefix;
        let users = if self.args.users == 1 {
            format!("user {p}loadtest-0")
        } else {
            format!("users {p}loadtest-0..{} in turn", self.args.users - 1)
        };
        match self.args.rpc {
            Rpc::Score => format!("Score, {users}"),
            Rpc::Train => format!(
                "Train with the index's labels, {users}, a new message id per call \
                 (loadtest-{}-<call>): every call a durable learn",
                self.run_id
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        let shed = self.shed();
        serde_json::json!({
            "server": self.args.server.server,
            "rpc": self.rpc(),
            "what": self.what(),
            "corpus": self.args.corpus.display().to_string(),
            "messages": self.messages,
            "spam": self.spam,
            "corpus_bytes": self.corpus_bytes,
            "concurrency": self.args.concurrency,
            "connections": self.connections(),
            "users": self.args.users,
            "duration_s": self.elapsed,
            "calls": self.ok,
            "errors": self.failed,
            "errors_by_code": self.errors_by_code(),
            "deadline_ms": self.args.deadline.map(|d| d.as_secs_f64() * 1000.0),
            "backoff_ms": self.args.backoff.as_secs_f64() * 1000.0,
            "shed": {
                "calls": shed.len(),
                "per_second": shed.len() as f64 / self.elapsed,
                "latency_ms": {
                    "p50": quantile_ms(&shed, 0.50),
                    "p99": quantile_ms(&shed, 0.99),
                    "max": quantile_ms(&shed, 1.0),
                },
            },
            "error_latency_ms": self.errors.iter().map(|(k, v)| (k.clone(), serde_json::json!({
                "p50": quantile_ms(v, 0.50),
                "p99": quantile_ms(v, 0.99),
                "max": quantile_ms(v, 1.0),
            }))).collect::<serde_json::Map<_, _>>(),
            "outcomes": self.outcomes,
            "calls_per_second": self.rate(),
            "latency_ms": {
                "p50": self.quantile_ms(0.50),
                "p90": self.quantile_ms(0.90),
                "p99": self.quantile_ms(0.99),
                "max": self.quantile_ms(1.0),
            },
        })
    }

    fn print(&self) {
        println!("server      {}", self.args.server.server);
        println!("calls       {}", self.what());
        println!(
            "corpus      {}: {} messages ({} spam), {:.1} MB in memory, sent in a cycle",
            self.args.corpus.display(),
            self.messages,
            self.spam,
            self.corpus_bytes as f64 / 1e6
        );
        println!(
            "load        {} in flight over {} connection(s) for {:.1} s",
            self.args.concurrency,
            self.connections(),
            self.elapsed
        );
        println!(
            "throughput  {:.0} calls/s answered OK ({} calls, {} errors)",
            self.rate(),
            self.ok,
            self.failed
        );
        println!(
            "latency     p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.quantile_ms(0.50),
            self.quantile_ms(0.90),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0)
        );
        for (code, v) in self.errors {
            println!(
                "error       {code}: {}, answered in p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                v.len(),
                quantile_ms(v, 0.50),
                quantile_ms(v, 0.99),
                quantile_ms(v, 1.0)
            );
        }
        if !self.outcomes.is_empty() {
            let outcomes: Vec<String> = self
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("outcomes    {}", outcomes.join(", "));
        }
    }
}

//! `chaff serve`: open storage, serve gRPC, shut down cleanly on SIGTERM or
//! Ctrl-C (in-flight requests finish, models are snapshotted, storage is
//! flushed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tracing::info;

use chaff::decisions::Retention;
use chaff::engine::{DEFAULT_MAX_MESSAGE_BYTES, Engine, EngineStats, Settings, parse_bytes};
use chaff::store::Store;
use chaff::tokenize::{Limits, Tokenizer};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    /// A non-loopback address (e.g. 0.0.0.0:50051) needs --tls-cert/--tls-key
    /// and API keys (or --tls-client-ca), or --insecure.
    #[arg(long, env = "CHAFF_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Data directory (created if missing). One chaff process per directory.
    #[arg(long, env = "CHAFF_DATA", default_value = "./chaff-data")]
    data: PathBuf,
    /// Largest message accepted by Score and Train, in bytes; larger ones get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "CHAFF_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Storage page cache, in MiB.
    #[arg(long, env = "CHAFF_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Memory for user models kept hot (e.g. `512MiB`, `2GiB`). A model is
    /// loaded from disk at its user's first request and kept while there is
    /// room; beyond this budget the least recently used models are dropped
    /// and reloaded when needed (a snapshot read plus a short journal
    /// replay; nothing is lost). Estimated at ~30 bytes per model token: a
    /// user who has trained a few thousand messages has ~100k tokens, ~3 MiB.
    /// Hits, misses and evictions are logged every --stats-interval.
    #[arg(long, env = "CHAFF_MODEL_MEMORY", default_value = "512MiB", value_parser = parse_bytes, help_heading = "Memory")]
    model_memory: usize,
    /// How often to log model cache and group commit counters (`0s` = never).
    #[arg(long, env = "CHAFF_STATS_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish
    /// before open connections are closed (e.g. `10s`, `500ms`).
    #[arg(long, env = "CHAFF_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// How long Score decisions are kept for `chaff why` / FindDecisions
    /// (e.g. `30d`, `12h`).
    #[arg(long, env = "CHAFF_DECISION_RETENTION", default_value = "30d", value_parser = parse_duration, help_heading = "Decision log")]
    decision_retention: Duration,
    /// Most decisions kept per user (the oldest go first).
    #[arg(long, env = "CHAFF_DECISIONS_PER_USER", default_value_t = Retention::default().per_user, help_heading = "Decision log")]
    decisions_per_user: usize,
    /// Features read per message at most; a message hitting this (or any
    /// cap below) is still scored on what was read, and ScoreResponse lists
    /// the cap in `limits_hit`.
    #[arg(long, env = "CHAFF_MAX_TOKENS", default_value_t = Limits::default().max_tokens, help_heading = "Hostile-mail caps")]
    max_tokens: usize,
    /// Header bytes read per message; a longer header is skipped.
    #[arg(long, env = "CHAFF_MAX_HEADER_BYTES", default_value_t = Limits::default().max_header_bytes, help_heading = "Hostile-mail caps")]
    max_header_bytes: usize,
    /// Decoded body text read per message.
    #[arg(long, env = "CHAFF_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes, help_heading = "Hostile-mail caps")]
    max_body_bytes: usize,
    /// MIME parts read per message.
    #[arg(long, env = "CHAFF_MAX_MIME_PARTS", default_value_t = Limits::default().max_parts, help_heading = "Hostile-mail caps")]
    max_mime_parts: usize,
    /// Nesting of multiparts and attached messages followed.
    #[arg(long, env = "CHAFF_MAX_MIME_DEPTH", default_value_t = Limits::default().max_mime_depth, help_heading = "Hostile-mail caps")]
    max_mime_depth: usize,
    /// Log filter (tracing syntax), e.g. `info`, `chaff=debug`. The audit
    /// log (admin calls, refused calls) is the `chaff::audit` target.
    #[arg(long, env = "CHAFF_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    trust: super::trust::ServeTrustArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // Before storage opens: a refused exposure or a bad keys/TLS file
    // should not cost a model load.
    let trust = args.trust.trust(&args.data, args.listen)?;
    let data = args.data.clone();
    let cache = args.cache_mb * 1024 * 1024;
    let store = tokio::task::spawn_blocking(move || Store::open(&data, cache)).await??;
    info!(data = %args.data.display(), "storage open");
    let limits = Limits {
        max_tokens: args.max_tokens,
        max_header_bytes: args.max_header_bytes,
        max_body_bytes: args.max_body_bytes,
        max_parts: args.max_mime_parts,
        max_mime_depth: args.max_mime_depth,
        ..Limits::default()
    };
    let settings = Settings {
        max_message_bytes: args.max_message_bytes,
        tokenizer: Tokenizer::new(limits),
        retention: Retention {
            max_age: args.decision_retention,
            per_user: args.decisions_per_user.max(1),
            ..Retention::default()
        },
        model_memory: args.model_memory,
        ..Settings::default()
    };
    let engine = Arc::new(Engine::new(store, settings).context("cannot load operator lists")?);
    if !args.stats_interval.is_zero() {
        tokio::spawn(log_stats(engine.clone(), args.stats_interval));
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // One line on stdout, for people and for scripts that start chaff on port 0.
    println!("chaff listening on {}", listener.local_addr()?);

    tokio::spawn(super::trust::reload_on_sighup(trust.clone()));
    chaff::service::serve_with(
        engine,
        listener,
        shutdown_signal(),
        args.shutdown_grace,
        trust,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

/// Logs the engine's counters every `every`: cumulative figures, and the
/// hit rate and clicks per flush over the last interval.
async fn log_stats(engine: Arc<Engine>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = EngineStats::default();
    loop {
        tick.tick().await;
        let now = engine.stats();
        let (c, m) = (now.cache, now.commit);
        let lookups = (c.hits + c.misses) - (last.cache.hits + last.cache.misses);
        let hits = c.hits - last.cache.hits;
        let waits = m.waits - last.commit.waits;
        let flushes = m.flushes - last.commit.flushes;
        info!(
            hits = c.hits,
            misses = c.misses,
            absent = c.absent,
            evictions = c.evictions,
            hit_rate = format!("{:.3}", hits as f64 / lookups.max(1) as f64),
            resident_users = c.resident_users,
            resident_mib = c.resident_bytes >> 20,
            budget_mib = c.budget_bytes >> 20,
            durable_waits = m.waits,
            flushes = m.flushes,
            waits_per_flush = format!("{:.1}", waits as f64 / flushes.max(1) as f64),
            "model cache and group commit"
        );
        last = now;
    }
}

/// Completes on SIGTERM (how service managers stop us) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("Ctrl-C received"),
        _ = term => info!("SIGTERM received"),
    }
}

/// `500ms`, `10s`, `2m`: the units a person types.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 2m, 12h or 30d"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        _ => Err(format!(
            "unknown unit {unit:?} in {s:?}; use ms, s, m, h or d"
        )),
    }
}

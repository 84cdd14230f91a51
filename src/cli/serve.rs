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

use chaff::engine::{DEFAULT_MAX_MESSAGE_BYTES, Engine, Settings};
use chaff::store::Store;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0:50051 to accept connections from
    /// other hosts; port 0 picks a free port (printed at start).
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
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish
    /// before open connections are closed (e.g. `10s`, `500ms`).
    #[arg(long, env = "CHAFF_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Log filter (tracing syntax), e.g. `info`, `chaff=debug`.
    #[arg(long, env = "CHAFF_LOG", default_value = "info")]
    log: String,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let data = args.data.clone();
    let cache = args.cache_mb * 1024 * 1024;
    let store = tokio::task::spawn_blocking(move || Store::open(&data, cache)).await??;
    info!(data = %args.data.display(), "storage open");
    let settings = Settings {
        max_message_bytes: args.max_message_bytes,
        ..Settings::default()
    };
    let engine = Arc::new(Engine::new(store, settings));

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // One line on stdout, for people and for scripts that start chaff on port 0.
    println!("chaff listening on {}", listener.local_addr()?);

    chaff::service::serve(engine, listener, shutdown_signal(), args.shutdown_grace)
        .await
        .map_err(|e| anyhow::anyhow!(e))
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
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("unknown unit {unit:?} in {s:?}; use ms, s or m")),
    }
}

//! Starting and stopping the server: the tower layers in the order a call
//! meets them, health, reflection, TLS or plain TCP, the background tasks
//! (storage watch, counters log, keys reload), and the bounded graceful
//! shutdown that snapshots models and flushes storage.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use super::guard::{GuardLayer, Trust};
use super::storage::{Storage, log_stats, report_serving, watch_storage};
use super::{ChaffService, FILE_DESCRIPTOR_SET, admission, catch_panic, metrics, tls};
use crate::engine::Engine;
use crate::proto::chaff_server::ChaffServer;

/// Serves chaff, gRPC health and reflection on `listener` until `shutdown`
/// completes, then snapshots models and flushes storage; open mode (no
/// keys, no TLS). See [`serve_with`].
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_with(engine, listener, shutdown, grace, Trust::open()).await
}

/// How often the keys file is checked for changes (`chaff keys create`
/// and `revoke` take effect within this time; SIGHUP at once).
pub const KEYS_POLL: Duration = Duration::from_secs(1);

/// Serves chaff, gRPC health and reflection (v1 and v1alpha) on `listener`
/// until `shutdown` completes, then snapshots models and flushes storage.
/// `trust` says who may call what ([`guard`](super::guard)) and whether
/// the port speaks TLS ([`tls`]).
///
/// After `shutdown`, in-flight requests get up to `grace` to finish. The
/// bound matters: hyper's graceful shutdown can wait forever for a client
/// that keeps an idle HTTP/2 connection open (hyperium/hyper#4170), and a
/// mail pipeline always does. Requests cut off by the bound lose only their
/// reply: each click is committed atomically or not at all, and retrying it
/// is harmless.
///
/// tonic's own decode limit is set well above the engine's message limit so
/// that an oversized message gets chaff's RESOURCE_EXHAUSTED naming the
/// limit; a request even over tonic's limit gets the same (the guard
/// rewrites tonic's OUT_OF_RANGE).
pub async fn serve_with(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
    trust: Arc<Trust>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_logging_stats(
        engine,
        listener,
        shutdown,
        grace,
        trust,
        Duration::ZERO,
        None,
        admission::Limits::unbounded(),
    )
    .await
}

/// What the server holds for its peers' connections and streams: bounds
/// that keep a client that connects and then says nothing (or opens
/// streams and never ends them) from holding the process's file
/// descriptors and memory for good (the network review's findings 2-4).
/// Connections are not authenticated yet when these apply, so every one
/// must have a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// How often an HTTP/2 PING (and, after as long without traffic, a TCP
    /// keepalive probe) checks that the peer is still there; `None`: never.
    /// Why: a peer that vanished (a crashed host, a dropped NAT entry)
    /// otherwise keeps its connection, and its descriptor, forever.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Streams one connection may have open at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); `None`: no bound. Why: health's
    /// Watch needs no key and stays open by design, and each open stream
    /// costs memory.
    pub max_concurrent_streams: Option<u32>,
    /// How long a connection may live before the server asks it to go
    /// (GOAWAY: its calls finish, well-behaved clients reconnect) and,
    /// `max_connection_age_grace` later, closes it; `None`: forever. Why:
    /// it is what closes a connection that is idle, or never said anything
    /// (no HTTP/2 preface), while its peer answers keepalives.
    pub max_connection_age: Option<Duration>,
    /// How long a connection past `max_connection_age` may take to finish
    /// its calls before it is closed (one that never sent its HTTP/2
    /// preface is closed only then).
    pub max_connection_age_grace: Duration,
    /// Bytes all ImportUser streams may hold in memory at once, before
    /// they are decoded; an import that would go past it is refused
    /// RESOURCE_EXHAUSTED. Why: each import is received whole (up to
    /// [`MAX_IMPORT_BYTES`](crate::engine::MAX_IMPORT_BYTES)) before it is
    /// decoded, and without a total a few of them at once could use more
    /// memory than the machine has.
    pub max_import_buffer: usize,
}

impl Default for Network {
    /// PING every 60 s, 20 s to answer; 256 streams per connection; a
    /// connection lives 30 minutes, plus 30 s to finish its calls; 1 GiB
    /// of imports buffered at once (one export of the largest size).
    fn default() -> Self {
        Network {
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: Some(256),
            max_connection_age: Some(Duration::from_secs(30 * 60)),
            max_connection_age_grace: Duration::from_secs(30),
            max_import_buffer: crate::engine::MAX_IMPORT_BYTES,
        }
    }
}

/// [`serve_with`], also logging the engine's counters every `stats_every`
/// (`ZERO`: never), serving `/metrics` on `metrics_listener` (if any), and
/// bounding the engine work running at once by `limits` ([`admission`];
/// [`serve_with`] sets no bound, `chaff serve` bounds by the core count).
/// The log reads whichever engine is current, so it goes on across a
/// storage reopen.
#[allow(clippy::too_many_arguments)]
pub async fn serve_logging_stats(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
    trust: Arc<Trust>,
    stats_every: Duration,
    metrics_listener: Option<TcpListener>,
    limits: admission::Limits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_network(
        engine,
        listener,
        shutdown,
        grace,
        trust,
        stats_every,
        metrics_listener,
        limits,
        Network::default(),
    )
    .await
}

/// [`serve_logging_stats`] with the connection bounds `network` (what
/// `chaff serve` sets from its flags; the others take
/// [`Network::default`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve_network(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
    trust: Arc<Trust>,
    stats_every: Duration,
    metrics_listener: Option<TcpListener>,
    limits: admission::Limits,
    network: Network,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let local: SocketAddr = listener.local_addr()?;
    let limit = engine.settings().max_message_bytes;
    // Score queues its delivered-mail learning for this worker
    // (`engine::delivered`) rather than writing on the request's path.
    engine.start_delivered_learner();
    let transport_limit = super::guard::transport_limit(limit);

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reopen = engine.store().sled().map(|store| {
        let (path, cache_bytes) = store.location();
        (path.to_path_buf(), cache_bytes)
    });
    let storage = Arc::new(Storage {
        settings: engine.settings().clone(),
        reopen,
        engine: std::sync::RwLock::new(Some(engine)),
        failed: Default::default(),
    });
    // Python's grpcio-reflection and many tools speak only v1alpha.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let admitter = admission::Admission::new(limits);
    let (metrics, _exporter) = metrics::start(metrics_listener, storage.clone(), admitter.clone());
    let chaff = ChaffServer::new(ChaffService {
        storage: storage.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        keys_file: trust.keys_file().map(std::path::Path::to_path_buf),
        imports: Arc::new(super::ImportBuffer::new(network.max_import_buffer)),
    })
    .max_decoding_message_size(transport_limit);
    // Storage was opened before we got here, so we can serve.
    report_serving(&health).await;
    let storage_watcher = tokio::spawn(watch_storage(storage.clone(), health.clone()));
    let stats_log =
        (!stats_every.is_zero()).then(|| tokio::spawn(log_stats(storage.clone(), stats_every)));
    let sealer = storage
        .settings
        .seal_every
        .map(|every| tokio::spawn(super::storage::seal_periodically(storage.clone(), every)));

    let watcher = tokio::spawn(watch_keys(trust.clone()));
    info!(
        %local,
        max_message_bytes = limit,
        tls = trust.tls().is_some(),
        credentials_required = trust.required(),
        // 0: no bound, as the flags spell it.
        max_concurrent_reads = limits.reads.unwrap_or(0),
        max_concurrent_writes = limits.writes.unwrap_or(0),
        max_queued_calls = limits.queued,
        max_queue_wait_ms = limits.max_wait.as_millis() as u64,
        keepalive_interval_s = network.keepalive_interval.map_or(0, |d| d.as_secs()),
        max_concurrent_streams = network.max_concurrent_streams.unwrap_or(0),
        max_connection_age_s = network.max_connection_age.map_or(0, |d| d.as_secs()),
        max_import_buffer = network.max_import_buffer,
        "serving chaff.v1.Chaff, grpc.health.v1.Health, reflection"
    );
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(network.keepalive_interval)
        .http2_keepalive_timeout(Some(network.keepalive_timeout))
        .max_concurrent_streams(network.max_concurrent_streams);
    if let Some(age) = network.max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(network.max_connection_age_grace);
    }
    let router = builder
        .layer(metrics::GrpcLayer::new(metrics))
        .layer(catch_panic::CatchPanicLayer)
        .layer(GuardLayer::new(trust.clone(), limit))
        .layer(admission::AdmissionLayer::new(admitter))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(chaff);
    let shutdown = async move {
        shutdown.await;
        info!(
            grace_ms = grace.as_millis() as u64,
            "shutdown requested: draining in-flight requests"
        );
        let _ = draining_tx.send(());
    };
    let grace_expired = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    // The builder's `tcp_nodelay` and `tcp_keepalive` apply only to
    // listeners tonic binds itself; accepted sockets of our own listener
    // need them set here. Without no-delay, Nagle's algorithm against the
    // peer's delayed ACK held some responses back ~40 ms: p99 of Score
    // under load was 43 ms, p50 0.4 ms.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(network.keepalive_interval);
    let mut acceptor = None;
    let server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match trust.tls() {
        Some(tls) => {
            let (incoming, task) = tls::incoming(incoming, tls);
            acceptor = Some(task);
            Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
    };
    let served = tokio::select! {
        served = server => served,
        () = grace_expired => {
            warn!("grace period over with connections still open; closing them");
            Ok(())
        }
    };
    watcher.abort();
    if let Some(task) = acceptor {
        task.abort();
    }
    let _ = watcher.await;
    storage_watcher.abort();
    let _ = storage_watcher.await;
    for t in [stats_log, sealer].into_iter().flatten() {
        t.abort();
        let _ = t.await;
    }
    served?;
    info!("shutting down: snapshotting models and flushing storage");
    let engine = storage.engine().map_err(|s| s.message().to_string())?;
    tokio::task::spawn_blocking(move || engine.shutdown()).await??;
    info!("storage flushed; bye");
    Ok(())
}

/// Picks up `chaff keys create` / `revoke` while serving.
async fn watch_keys(trust: Arc<Trust>) {
    let mut tick = tokio::time::interval(KEYS_POLL);
    loop {
        tick.tick().await;
        if let Err(e) = trust.refresh_keys() {
            warn!(error = %e, "keys file not reloaded; the keys in effect stay");
        }
    }
}

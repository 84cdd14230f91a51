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
        "serving chaff.v1.Chaff, grpc.health.v1.Health, reflection"
    );
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
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
    let mut acceptor = None;
    let server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match trust.tls() {
        Some(tls) => {
            let (incoming, task) = tls::incoming(listener, tls);
            acceptor = Some(task);
            Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
        None => {
            // The builder's `tcp_nodelay` applies only to listeners tonic
            // binds itself; accepted sockets of our own listener need it
            // set here. Without it, Nagle's algorithm against the peer's
            // delayed ACK held some responses back ~40 ms: p99 of Score
            // under load was 43 ms, p50 0.4 ms.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
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

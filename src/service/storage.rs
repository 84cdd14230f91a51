//! The store behind the service and its health: which engine requests run
//! on, NOT_SERVING while storage has failed, reopening a sled directory
//! once it has room again, and the periodic counters log. The handlers
//! (`mod.rs`) only ask it for the current engine.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tracing::{info, warn};

use super::ChaffService;
use crate::engine::Engine;
use crate::error::Error;
use crate::proto::chaff_server::ChaffServer;

/// The engine requests run on, and whether its storage has failed.
///
/// sled refuses every write after its first failed one (it keeps the error)
/// until the database is opened again. So when storage fails the service
/// reports NOT_SERVING — for `chaff.v1.Chaff` and for the whole server
/// (`""`, what Kubernetes and `grpc_health_probe` ask) — and
/// [`watch_storage`] probes the data directory with a small write every
/// [`PROBE_EVERY`]; once it has room, the engine is dropped, the store
/// reopened (sled recovers its log up to the last flushed write), a fresh
/// engine built on it, and health goes back to SERVING. Nothing
/// acknowledged is lost: a reply waits for its flush, and what a reopen
/// drops was never flushed. In-memory state is rebuilt from disk with the
/// engine, so it cannot count a click the disk never got.
///
/// A store shared by several chaff processes (Redis Cluster) is never
/// reopened: its client reconnects by itself. Its readiness is asked of
/// every primary each [`PROBE_EVERY`] (each must answer and report
/// `cluster_state:ok`, `RedisStore::ping`): NOT_SERVING while one fails or
/// a request met a storage failure, SERVING again once all say ok.
pub(super) struct Storage {
    /// `None` only while the store is being reopened.
    pub(super) engine: std::sync::RwLock<Option<Arc<Engine>>>,
    pub(super) failed: std::sync::atomic::AtomicBool,
    pub(super) settings: crate::engine::Settings,
    /// A sled data directory and its page cache, to reopen after a failed
    /// write; `None` for a shared store, which is pinged instead.
    pub(super) reopen: Option<(std::path::PathBuf, u64)>,
}

/// How often a failed store is probed for room.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The probe's write: a little more than one sled log segment (512 KiB).
const PROBE_BYTES: usize = 1 << 20;

impl Storage {
    /// The current engine. Never waits: while the store is being reopened
    /// (the write lock is held for that) the answer is UNAVAILABLE at once,
    /// and no async worker thread blocks on the lock.
    pub(super) fn engine(&self) -> Result<Arc<Engine>, Status> {
        let current = match self.engine.try_read() {
            Ok(current) => current,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(Error::Reopening.into()),
        };
        current.clone().ok_or_else(|| Error::Reopening.into())
    }

    /// Probes for room and, if there is some, swaps in a freshly opened
    /// engine. Blocking. `Ok(true)` once recovered.
    fn try_recover(&self) -> Result<bool, Error> {
        let Some((path, cache_bytes)) = &self.reopen else {
            // A shared store: healthy again once every primary answers.
            self.ping()?;
            self.failed
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return Ok(true);
        };
        crate::store::Store::probe_space(path, PROBE_BYTES)?;
        let mut slot = self.engine.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            // Requests still holding the old engine fail fast (sled keeps
            // its error); wait for them so its database handle closes.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(engine) => {
                        drop(engine);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Ok(false);
                    }
                }
            }
        }
        let store = crate::store::Store::open(path, *cache_bytes)?;
        let engine = Arc::new(Engine::new(store, self.settings.clone())?);
        engine.start_delivered_learner();
        *slot = Some(engine);
        self.failed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }
}

impl Storage {
    /// Readiness of a shared store (every Redis primary answers and
    /// reports the cluster up);
    /// `Ok` for a sled store. Blocking.
    fn ping(&self) -> Result<(), Error> {
        let engine = self
            .engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match engine.as_deref().and_then(|e| e.store().shared_clicks()) {
            Some(clicks) => clicks.ping(),
            None => Ok(()),
        }
    }
}

/// Reports NOT_SERVING, for the chaff service and the server as a whole.
pub(super) async fn report_failure(health: &tonic_health::server::HealthReporter) {
    health.set_not_serving::<ChaffServer<ChaffService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

pub(super) async fn report_serving(health: &tonic_health::server::HealthReporter) {
    health.set_serving::<ChaffServer<ChaffService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
}

/// Seals a generation of a sled store every `every`
/// (`Settings::seal_every`), on the blocking pool: a log damaged later is
/// then caught at the next open even after a crash, for everything written
/// before the last seal. A failure is logged and tried again next time.
pub(super) async fn seal_periodically(storage: Arc<Storage>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(engine) = storage.engine() else {
            continue;
        };
        let sealed = tokio::task::spawn_blocking(move || {
            engine
                .store()
                .sled()
                .map(|s| s.seal_generation())
                .transpose()
        })
        .await;
        if let Ok(Err(e)) = sealed {
            warn!(error = %e, "sealing a generation failed; trying again later");
        }
    }
}

/// Logs the engine's counters every `every`: cumulative figures, and the
/// hit rate and clicks per flush over the last interval.
pub(super) async fn log_stats(storage: Arc<Storage>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = crate::engine::EngineStats::default();
    loop {
        tick.tick().await;
        let Ok(engine) = storage.engine() else {
            continue;
        };
        let now = engine.stats();
        drop(engine);
        let (c, m) = (now.cache, now.commit);
        // A reopened engine starts its counters at zero again.
        if c.hits + c.misses < last.cache.hits + last.cache.misses
            || m.flushes < last.commit.flushes
        {
            last = Default::default();
        }
        let lookups = (c.hits + c.misses).saturating_sub(last.cache.hits + last.cache.misses);
        let hits = c.hits.saturating_sub(last.cache.hits);
        let waits = m.waits.saturating_sub(last.commit.waits);
        let flushes = m.flushes.saturating_sub(last.commit.flushes);
        info!(
            hits = c.hits,
            misses = c.misses,
            absent = c.absent,
            evictions = c.evictions,
            hit_rate = format!("{:.3}", hits as f64 / lookups.max(1) as f64),
            resident_users = c.resident_users,
            resident_mib = c.resident_bytes >> 20,
            shared_mib = c.shared_bytes >> 20,
            budget_mib = c.budget_bytes >> 20,
            prunes = now.quota.prunes,
            pruned_tokens = now.quota.pruned_tokens,
            delivered_learned = now.delivered.learned,
            delivered_queued = now.delivered.queued,
            delivered_dropped = now.delivered.dropped,
            durable_waits = m.waits,
            flushes = m.flushes,
            waits_per_flush = format!("{:.1}", waits as f64 / flushes.max(1) as f64),
            "model cache and group commit"
        );
        last = now;
    }
}

/// While storage has failed: probe it and reopen it when there is room.
pub(super) async fn watch_storage(
    storage: Arc<Storage>,
    health: tonic_health::server::HealthReporter,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        if !storage.failed.load(std::sync::atomic::Ordering::SeqCst) {
            if storage.reopen.is_none() {
                // Readiness of a shared store, also between requests.
                let s = storage.clone();
                match tokio::task::spawn_blocking(move || s.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if !storage
                            .failed
                            .swap(true, std::sync::atomic::Ordering::SeqCst)
                        {
                            warn!(error = %e, "storage does not answer; reporting NOT_SERVING");
                            report_failure(&health).await;
                        }
                    }
                    Err(e) => warn!(error = %e, "storage ping task failed"),
                }
            }
            continue;
        }
        let s = storage.clone();
        match tokio::task::spawn_blocking(move || s.try_recover()).await {
            Ok(Ok(true)) => {
                if storage.reopen.is_some() {
                    info!("storage has room again: reopened; reporting SERVING");
                } else {
                    info!("storage answers again; reporting SERVING");
                }
                report_serving(&health).await;
                last_error.clear();
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                let text = e.to_string();
                if text != last_error {
                    warn!(error = %text, "storage still failing; probing every 500 ms");
                    last_error = text;
                }
            }
            Err(e) => warn!(error = %e, "storage probe task failed"),
        }
    }
}

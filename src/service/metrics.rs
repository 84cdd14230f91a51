//! Prometheus metrics: `GET /metrics` in OpenMetrics text on a port of its
//! own (`chaff serve --metrics-listen`), off unless asked for.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! it writes OpenMetrics, its histograms take explicit buckets (summaries
//! cannot be aggregated across replicas), and its registries are values, not
//! a process-wide global, so every server (and every test server in one
//! process) counts on its own. The HTTP side is a few lines of hyper, which
//! is in the tree through tonic anyway.
//!
//! Three sources:
//! - [`GrpcLayer`], a tower layer: calls started and handled by service,
//!   method and status code, and handling time. The code is read from the
//!   response headers (a "trailers-only" error reply) or from the trailers
//!   at the end of the body, which the layer wraps to see them.
//! - One-line calls from the handlers ([`Metrics::scored`],
//!   [`Metrics::learned`]): scores by verdict, action and deciding rule;
//!   learns by outcome.
//! - [`EngineCollector`], read at scrape time: the engine's own counters
//!   (model cache, group commit and its flush times, decision log) and the
//!   data directory's size on disk. Nothing is counted twice.
//!
//! Label values are fixed words: never a user id, message id or list entry;
//! an unknown gRPC path is counted as `unknown`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::{info, warn};

use super::admission::Admission;
use super::storage::Storage;
use crate::auth::Rpc;
use crate::engine::{Evaluated, TrainOutcome};
use crate::metrics::LATENCY_BOUNDS;
use crate::types::Verdict;

/// Handling-time buckets, seconds: a cached Score takes well under a
/// millisecond, a Train waits for a flush (ms), a cold model load more.
const HANDLING_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScoreLabels {
    verdict: &'static str,
    action: &'static str,
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LearnLabels {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One server's metrics. Cheap to count into from any thread.
pub struct Metrics {
    registry: Registry,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: HistogramFamily<MethodLabels>,
    scores: Family<ScoreLabels, Counter>,
    learns: Family<LearnLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

/// How a Train or Forget changed what the user's model has learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    Trained(TrainOutcome),
    Forgotten,
}

impl Metrics {
    /// The metrics of a server whose engine is `storage`'s.
    fn new(storage: Arc<Storage>, admission: Arc<Admission>) -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let handling: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(|| Histogram::new(HANDLING_BUCKETS));
        let scores = Family::<ScoreLabels, Counter>::default();
        let learns = Family::<LearnLabels, Counter>::default();
        registry.register(
            "grpc_server_started",
            "gRPC calls started, by service and method",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "gRPC call time from request headers to the end of the reply",
            handling.clone(),
        );
        registry.register(
            "chaff_scores",
            "Messages scored (Score and ScoreBatch items), by final verdict, action and the \
             rule that decided (model, block-list, allow-list, authentication)",
            scores.clone(),
        );
        registry.register(
            "chaff_learns",
            "Train and Forget calls that succeeded, by outcome (learned, already-learned, \
             relearned, forgotten)",
            learns.clone(),
        );
        registry.register(
            "chaff_build",
            "The running chaff's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(EngineCollector { storage }));
        registry.register_collector(Box::new(AdmissionCollector(admission)));
        Metrics {
            registry,
            started,
            handled,
            handling,
            scores,
            learns,
        }
    }

    /// Counts one scored message.
    pub fn scored(&self, evaluated: &Evaluated) {
        let d = &evaluated.decision;
        self.scores
            .get_or_create(&ScoreLabels {
                verdict: verdict_name(d.verdict),
                action: d.action.as_str(),
                rule: d.rule.kind().as_str(),
            })
            .inc();
    }

    /// Counts one successful Train or Forget.
    pub fn learned(&self, learn: Learn) {
        let outcome = match learn {
            Learn::Trained(TrainOutcome::Learned) => "learned",
            Learn::Trained(TrainOutcome::AlreadyLearned) => "already-learned",
            Learn::Trained(TrainOutcome::Relearned) => "relearned",
            Learn::Forgotten => "forgotten",
        };
        self.learns.get_or_create(&LearnLabels { outcome }).inc();
    }

    /// The OpenMetrics text of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Ham => "ham",
        Verdict::Unsure => "unsure",
        Verdict::Spam => "spam",
    }
}

/// `Some` metrics for a server with an endpoint, with the task serving it
/// (stopped when dropped); `None` when metrics are off, which also turns the
/// counting off.
pub(super) fn start(
    listener: Option<TcpListener>,
    storage: Arc<Storage>,
    admission: Arc<Admission>,
) -> (Option<Arc<Metrics>>, Option<Exporter>) {
    let Some(listener) = listener else {
        return (None, None);
    };
    let metrics = Arc::new(Metrics::new(storage, admission));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let task = tokio::spawn(serve_http(listener, metrics.clone()));
    (Some(metrics), Some(Exporter(task)))
}

/// The HTTP task; aborted when dropped.
pub(super) struct Exporter(tokio::task::JoinHandle<()>);

impl Drop for Exporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// HTTP/1.1: `GET /metrics`; anything else is 404.
async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How long the endpoint waits for a request's header, on a new
/// connection and between requests on a kept-alive one, before closing
/// the connection. Why: the endpoint has no authentication, and without
/// it a client that connected and said nothing kept its connection (and a
/// file descriptor of the process) forever; a scrape sends its request at
/// once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: u16, kind: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            404,
            "text/plain",
            "chaff serves only /metrics here\n".into(),
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return reply(405, "text/plain", "use GET /metrics\n".into());
    }
    reply(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        metrics.render(),
    )
}

/// The engine's own counters, read at scrape time from whichever engine is
/// current (a storage reopen starts them at zero again, which Prometheus
/// reads as a counter reset).
struct EngineCollector {
    storage: Arc<Storage>,
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineCollector")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let m = ConstGauge::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for EngineCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let failed = self
            .storage
            .failed
            .load(std::sync::atomic::Ordering::SeqCst);
        gauge(
            &mut e,
            "chaff_storage_failed",
            "1 while storage has failed and the server reports NOT_SERVING",
            i64::from(failed),
        )?;
        // A data directory only for sled; a shared store's memory is the
        // cluster's to report.
        if let Some((path, _)) = &self.storage.reopen {
            gauge(
                &mut e,
                "chaff_storage_disk_bytes",
                "Bytes of the files in the data directory",
                clamp(dir_bytes(path)),
            )?;
        }
        let Ok(engine) = self.storage.engine() else {
            return Ok(());
        };
        let s = engine.stats();
        let flushes = engine.store().flush_times();
        let shared = engine.shared_summary();
        drop(engine);
        gauge(
            &mut e,
            "chaff_shared_model_users",
            "Users whose clicks are in the shared model",
            clamp(shared.users),
        )?;
        gauge(
            &mut e,
            "chaff_shared_model_messages",
            "Messages in the shared model, the operator's seed included",
            clamp(shared.spam_learned + shared.ham_learned),
        )?;
        gauge(
            &mut e,
            "chaff_shared_model_seed_messages",
            "Of those, the operator's seed (chaff seed)",
            clamp(shared.seed_spam + shared.seed_ham),
        )?;
        gauge(
            &mut e,
            "chaff_shared_model_tokens",
            "Distinct tokens in the shared model",
            clamp(shared.tokens),
        )?;
        gauge(
            &mut e,
            "chaff_shared_model_bytes",
            "Estimated memory of the shared model and its contributions (never evicted; counted against --model-memory)",
            clamp(shared.bytes),
        )?;
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(flushes.buckets)
            .collect();
        e.encode_descriptor(
            "chaff_storage_flush_seconds",
            "Time of each storage flush (one serves every durable reply waiting for it)",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            flushes.sum_nanos as f64 / 1e9,
            flushes.count(),
            &buckets,
            None,
        )?;
        let (c, m, d) = (s.cache, s.commit, s.decisions);
        counter(
            &mut e,
            "chaff_model_cache_hits",
            "User model lookups that found the model in memory",
            c.hits,
        )?;
        counter(
            &mut e,
            "chaff_model_cache_misses",
            "User model lookups that loaded the model from storage",
            c.misses,
        )?;
        counter(
            &mut e,
            "chaff_model_cache_absent",
            "Lookups of a user with nothing stored (a storage read, nothing kept)",
            c.absent,
        )?;
        counter(
            &mut e,
            "chaff_model_cache_evictions",
            "User models dropped from memory to stay within --model-memory",
            c.evictions,
        )?;
        gauge(
            &mut e,
            "chaff_model_cache_resident_users",
            "User models in memory now",
            clamp(c.resident_users),
        )?;
        gauge(
            &mut e,
            "chaff_model_cache_resident_bytes",
            "Estimated bytes of the user models in memory now",
            clamp(c.resident_bytes),
        )?;
        gauge(
            &mut e,
            "chaff_model_cache_budget_bytes",
            "The model memory budget (--model-memory)",
            clamp(c.budget_bytes),
        )?;
        counter(
            &mut e,
            "chaff_storage_durable_waits",
            "Replies that waited for their writes to be flushed",
            m.waits,
        )?;
        counter(
            &mut e,
            "chaff_storage_flushes",
            "Storage flushes issued for them (durable replies per flush = rate of waits / rate \
             of flushes)",
            m.flushes,
        )?;
        gauge(
            &mut e,
            "chaff_decision_log_queue_depth",
            "Score decisions queued for the decision log writer",
            clamp(d.queued),
        )?;
        counter(
            &mut e,
            "chaff_decision_log_dropped",
            "Score decisions dropped because the decision log writer was behind",
            d.dropped,
        )?;
        let l = s.delivered;
        gauge(
            &mut e,
            "chaff_delivered_queue_depth",
            "Delivered messages queued for (or being learned by) the background learner",
            clamp(l.queued),
        )?;
        counter(
            &mut e,
            "chaff_delivered_learned",
            "Delivered messages learned as ham (--learn-delivered)",
            l.learned,
        )?;
        counter(
            &mut e,
            "chaff_delivered_dropped",
            "Delivered messages not learned: the learner's queue was full, or shutdown came first",
            l.dropped,
        )?;
        Ok(())
    }
}

/// Admission's counters and pools ([`super::admission`]), read at scrape
/// time.
struct AdmissionCollector(Arc<Admission>);

impl fmt::Debug for AdmissionCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdmissionCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

impl Collector for AdmissionCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let c = self.0.counts();
        let limits = self.0.limits();
        {
            let mut family = e.encode_descriptor(
                "chaff_admission_refused",
                "Calls refused by admission, not worked on: queue-full (--max-queued-calls), \
                 queue-wait (--max-queue-wait), deadline (their grpc-timeout passed)",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("queue-full", c.queue_full),
                ("queue-wait", c.waited_too_long),
                ("deadline", c.deadline),
            ] {
                ConstCounter::new(v).encode(family.encode_family(&ReasonLabels { reason })?)?;
            }
        }
        counter(
            &mut e,
            "chaff_admission_abandoned",
            "Calls whose caller went away (deadline, cancel) while they waited for a slot",
            c.abandoned,
        )?;
        for (name, help, read, write) in [
            (
                "chaff_admission_running",
                "Calls whose engine work holds a slot now, by pool",
                c.reads_running,
                c.writes_running,
            ),
            (
                "chaff_admission_waiting",
                "Calls waiting for a slot now, by pool",
                c.reads_waiting,
                c.writes_waiting,
            ),
            (
                "chaff_admission_slots",
                "Slots of each pool (--max-concurrent-reads, --max-concurrent-writes; 0: no bound)",
                limits.reads.unwrap_or(0),
                limits.writes.unwrap_or(0),
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (kind, v) in [("read", read), ("write", write)] {
                ConstGauge::new(clamp(v as u64))
                    .encode(family.encode_family(&KindLabels { kind })?)?;
            }
        }
        Ok(())
    }
}

/// Sum of the sizes of the files under `dir` (sled keeps a handful).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Bounded `(service, method)` labels for a gRPC path.
fn method_labels(path: &str) -> MethodLabels {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    let known = match service {
        "chaff.v1.Chaff" => Rpc::from_name(method).map(|r| ("chaff.v1.Chaff", r.name())),
        "grpc.health.v1.Health" => match method {
            "Check" => Some(("grpc.health.v1.Health", "Check")),
            "Watch" => Some(("grpc.health.v1.Health", "Watch")),
            _ => None,
        },
        "grpc.reflection.v1.ServerReflection" if method == "ServerReflectionInfo" => Some((
            "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
        )),
        "grpc.reflection.v1alpha.ServerReflection" if method == "ServerReflectionInfo" => Some((
            "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        )),
        _ => None,
    };
    let (grpc_service, grpc_method) = known.unwrap_or(("unknown", "unknown"));
    MethodLabels {
        grpc_service,
        grpc_method,
    }
}

/// The names grpc-go and its Prometheus middleware use.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Counts gRPC calls; a pass-through when metrics are off.
#[derive(Clone)]
pub struct GrpcLayer(Option<Arc<Metrics>>);

impl GrpcLayer {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        GrpcLayer(metrics)
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for GrpcMetrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone is the one that was made ready; keep it (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(metrics) = self.metrics.clone() else {
            return Box::pin(inner.call(req));
        };
        let labels = method_labels(req.uri().path());
        metrics.started.get_or_create(&labels).inc();
        let call = Call {
            metrics,
            labels,
            start: Instant::now(),
            done: false,
        };
        Box::pin(async move {
            let mut call = call;
            let response = match inner.call(req).await {
                Ok(r) => r,
                Err(e) => {
                    call.finish(tonic::Code::Unknown);
                    return Err(e);
                }
            };
            // Trailers-only: an error reply has its status in the headers.
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Observed { inner: body, call })))
        })
    }
}

/// One call being timed; counted as handled once, when its status is known
/// (or as `Canceled` if the reply is dropped before it ends).
struct Call {
    metrics: Arc<Metrics>,
    labels: MethodLabels,
    start: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = &self.metrics;
        m.handled
            .get_or_create(&HandledLabels {
                grpc_service: self.labels.grpc_service,
                grpc_method: self.labels.grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
        m.handling
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A reply body that reads the status from the trailers as they pass.
    struct Observed {
        #[pin]
        inner: Body,
        call: Call,
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .finish(status_in(trailers).unwrap_or(tonic::Code::Unknown));
                }
            }
            // A reply that ends without a status is not a gRPC success.
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.call.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_get_one_bounded_label() {
        for path in ["/chaff.v1.Chaff/Nope", "/evil/user-1234", "", "/x"] {
            let l = method_labels(path);
            assert_eq!((l.grpc_service, l.grpc_method), ("unknown", "unknown"));
        }
        let l = method_labels("/chaff.v1.Chaff/Score");
        assert_eq!((l.grpc_service, l.grpc_method), ("chaff.v1.Chaff", "Score"));
    }
}

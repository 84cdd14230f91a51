//! Admission: a global bound on the engine work running at once, so that an
//! overloaded server answers the calls it takes in bounded time and refuses
//! the rest quickly, instead of queueing without bound.
//!
//! Why a bound is needed: every engine call runs on tokio's blocking pool,
//! which grows to 512 threads. With four times more Score calls in flight
//! than the cores can serve, all of them tokenize at once, each one four
//! times slower, and every caller's latency grows with the load; a call
//! whose caller already gave up (its deadline passed, tonic answered
//! CANCELLED) still runs to the end on its thread, because blocking work
//! cannot be cancelled.
//!
//! The design, in the order a call meets it. [`AdmissionLayer`], after the
//! guard (an unidentified or over-limit caller never gets this far), only
//! refuses a call whose deadline has already passed and marks the call
//! ([`Call`]); the slot itself is taken by the handler once the request
//! has arrived and been checked, as its engine work is about to start
//! ([`Call::admit`], from `ChaffService::run`). Why not at the headers: a
//! slot taken there was held while the request body arrived, and a caller
//! with any key that may read could open as many calls as there are read
//! slots, send their headers and never their bodies, and every Score of
//! the mail pipeline was refused for as long as it liked (the network
//! review's finding 1). Now a stalled request holds a stream of its own
//! connection (bounded by `--max-concurrent-streams`) and no slot. The cost:
//! a request is read and decoded before it can be refused, and for
//! ImportUser, a client stream, the whole export is received first (bounded
//! by `--max-import-buffer`).
//!
//! - Two pools of slots ([`Kind`]): *reads* (Score, ScoreBatch, GetUser,
//!   ListEntries, FindDecisions, GetShared) are CPU work, so their slots are
//!   a small multiple of the cores (`--max-concurrent-reads`, default 2 ×
//!   cores: a read that misses the model cache waits on the disk). On a
//!   remote store (a Redis Cluster) a Score holds its slot through a round
//!   trip to the cluster (the model's freshness check, `engine/replicas.rs`)
//!   on top of its CPU work, so the default there is
//!   [`REMOTE_READS_PER_CORE`] × cores ([`Limits::for_remote_store`]): by
//!   Little's law the slots a pool needs are its rate × the time each call
//!   holds one, and 2 × cores capped a replica at a few round trips'
//!   worth of Scores with the CPU idle (docs/SCALING.md). *Writes*
//!   (Train, Forget and the other changes) spend most of their time waiting
//!   for the storage flush they share with every other write waiting then
//!   (group commit, `store/commit.rs`): their pool is larger
//!   (`--max-concurrent-writes`, default 16 × cores) so that a flush still
//!   serves many replies under overload — a small pool would make each
//!   flush serve few, a flush storm. GetStats reads counters and is never
//!   held back; health and reflection are not chaff calls and pass.
//! - A call that finds no free slot waits in a first-come-first-served
//!   queue, at most `--max-queued-calls` calls per pool; one more is refused
//!   at once with RESOURCE_EXHAUSTED (the fast shed). A short queue keeps
//!   the slots busy between calls; a long one would only move the wait
//!   into callers' deadlines.
//! - A call waits at most `--max-queue-wait` (default 50 ms), and never past
//!   its own deadline (`grpc-timeout`): then it is refused
//!   (RESOURCE_EXHAUSTED, or DEADLINE_EXCEEDED) without having been worked
//!   on. The wait bound keeps the latency of accepted calls bounded even
//!   when each call is slow (hostile mail near the caps).
//! - The slot is held by the engine work itself, on the blocking pool, not
//!   by the caller's future: a call whose caller gave up keeps its slot until
//!   its work really ends, so abandoned work cannot let more work in than
//!   the bound. And the work checks the deadline again as it starts
//!   ([`Admitted::check`], from `ChaffService::run`): a call past its
//!   deadline is answered DEADLINE_EXCEEDED without tokenizing.
//!
//! A refusal is not a failure of the server: health stays SERVING (a load
//! balancer should keep sending, and a client retry with backoff or to a
//! replica is the cure). Refusals and the pools' occupancy are counted
//! ([`Admission::counts`], exported on `/metrics`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::Rpc;

const CHAFF_PREFIX: &str = "/chaff.v1.Chaff/";

/// The bounds; `None` for a pool means no bound (every call runs at once,
/// as before admission existed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Read calls whose engine work may run at once.
    pub reads: Option<usize>,
    /// Write calls whose engine work (and flush wait) may run at once.
    pub writes: Option<usize>,
    /// Calls that may wait for a slot, per pool.
    pub queued: usize,
    /// Longest a call waits for a slot.
    pub max_wait: Duration,
}

/// Default longest wait for a slot.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);

/// Read slots per core when every read waits on a remote store (a Redis
/// Cluster round trip per Score): a call then holds its slot for its CPU
/// work *and* its wait. With 2 per core a replica over the cluster scored
/// at about a fifth of sled's rate with its CPU idle; the runs that chose
/// 16 are in docs/SCALING.md ("Score throughput"). Still a bound: past it
/// calls queue and are shed as on sled, and at worst 16 CPU-bound Scores
/// share a core (each ~16 × slower, not unbounded).
pub const REMOTE_READS_PER_CORE: usize = 16;

impl Limits {
    /// The defaults for a machine with `cores` cores: reads 2 × cores,
    /// writes 16 × cores, 8 × cores waiting per pool, 50 ms of waiting.
    pub fn for_cores(cores: usize) -> Self {
        let cores = cores.max(1);
        Limits {
            reads: Some(2 * cores),
            writes: Some(16 * cores),
            queued: 8 * cores,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    /// [`Limits::for_cores`] for this machine's available parallelism.
    pub fn for_this_machine() -> Self {
        Self::for_cores(cores())
    }

    /// The defaults for a server whose store is remote (`--store
    /// redis://…`): [`Limits::for_cores`] with [`REMOTE_READS_PER_CORE`]
    /// read slots per core, because each read also waits for the store.
    pub fn for_remote_store(cores: usize) -> Self {
        Limits {
            reads: Some(REMOTE_READS_PER_CORE * cores.max(1)),
            ..Self::for_cores(cores)
        }
    }

    /// No bound at all: every call runs at once (deadlines are still
    /// checked before work starts).
    pub fn unbounded() -> Self {
        Limits {
            reads: None,
            writes: None,
            queued: 0,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::for_this_machine()
    }
}

/// The cores this process may use (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which pool of slots a call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

impl Kind {
    /// The pool an RPC's engine work takes; `None` for calls that do no
    /// engine work worth bounding (GetStats reads counters).
    pub fn of(rpc: Rpc) -> Option<Kind> {
        match rpc {
            Rpc::Score
            | Rpc::ScoreBatch
            | Rpc::GetUser
            | Rpc::ListEntries
            | Rpc::FindDecisions
            | Rpc::GetShared
            | Rpc::ListUsers
            | Rpc::ExportUser => Some(Kind::Read),
            Rpc::Train
            | Rpc::Forget
            | Rpc::UpdateUser
            | Rpc::AddListEntry
            | Rpc::RemoveListEntry
            | Rpc::DeleteUser
            | Rpc::SeedShared
            | Rpc::ClearSeed
            | Rpc::ImportUser => Some(Kind::Write),
            // A backup copies every user for minutes: it would hold a slot
            // the whole time; it is one admin call and waits for each
            // user's writer lock instead.
            Rpc::GetStats | Rpc::Backup => None,
        }
    }

    /// As the metrics label and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
        }
    }

    /// The flag that sets this pool's size.
    fn flag(self) -> &'static str {
        match self {
            Kind::Read => "--max-concurrent-reads",
            Kind::Write => "--max-concurrent-writes",
        }
    }
}

/// Where a call was when its deadline was found passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// On arrival: the deadline had passed before the server saw the call.
    Arrival,
    /// While its request was read and checked, before it asked for a slot.
    Read,
    /// After waiting for a slot.
    Queue,
    /// As its engine work was about to start.
    Work,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Arrival => "before the call arrived",
            Stage::Read => "while its request was read",
            Stage::Queue => "while it waited for a slot",
            Stage::Work => "before its work could start",
        })
    }
}

/// Why a call was not admitted. Each message names the limit (and its flag)
/// and what the caller can do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "server busy: {running} {kind} calls running and {waiting} waiting for a slot, the \
         limits ({flag}, --max-queued-calls); not worked on, retry with backoff or on another \
         replica",
        kind = kind.as_str(),
        flag = kind.flag()
    )]
    QueueFull {
        kind: Kind,
        running: usize,
        waiting: usize,
    },
    #[error(
        "server busy: no {kind} slot came free within {waited_ms} ms (--max-queue-wait; \
         {running} calls running, the limit {flag}); not worked on, retry with backoff or on \
         another replica",
        kind = kind.as_str(),
        flag = kind.flag()
    )]
    WaitedTooLong {
        kind: Kind,
        waited_ms: u64,
        running: usize,
    },
    #[error("the call's deadline (grpc-timeout) passed {stage}; it was not worked on")]
    DeadlinePassed { stage: Stage },
}

/// One pool of slots and its queue.
#[derive(Debug)]
struct Pool {
    kind: Kind,
    size: usize,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Pool {
    fn new(kind: Kind, size: usize) -> Self {
        Pool {
            kind,
            size,
            slots: Arc::new(Semaphore::new(size)),
            waiting: AtomicUsize::new(0),
        }
    }

    fn running(&self) -> usize {
        self.size.saturating_sub(self.slots.available_permits())
    }
}

/// Counts of what admission did, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls refused at once: the queue was full.
    pub queue_full: u64,
    /// Calls refused after waiting `max_wait` for a slot.
    pub waited_too_long: u64,
    /// Calls refused because their deadline passed (at any stage).
    pub deadline: u64,
    /// Calls whose caller went away (deadline, cancel) while they waited.
    pub abandoned: u64,
    /// Read / write calls whose work holds a slot now.
    pub reads_running: usize,
    pub writes_running: usize,
    /// Read / write calls waiting for a slot now.
    pub reads_waiting: usize,
    pub writes_waiting: usize,
}

/// The server's admission state: its pools and counters. One per server.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    reads: Option<Pool>,
    writes: Option<Pool>,
    queue_full: AtomicU64,
    waited_too_long: AtomicU64,
    deadline: AtomicU64,
    abandoned: AtomicU64,
}

/// An admitted call: its deadline, and its slot (if its pool is bounded),
/// released when the last holder drops it — the handler's future and the
/// engine work on the blocking pool each hold one.
#[derive(Debug)]
pub struct Admitted {
    deadline: Option<Instant>,
    admission: Arc<Admission>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Refuses the call if its deadline has passed; counted.
    pub fn check(&self, stage: Stage) -> Result<(), Refused> {
        self.admission.check(self.deadline, Instant::now(), stage)
    }
}

/// A chaff call on its way to admission: what [`AdmissionLayer`] learnt
/// from its headers, and its slot once [`Call::admit`] has taken one.
/// Why two steps: the layer sees the headers before the request body
/// arrives, and a slot must not wait on the caller's network (module docs).
#[derive(Debug)]
pub struct Call {
    admission: Arc<Admission>,
    kind: Option<Kind>,
    deadline: Option<Instant>,
    admitted: tokio::sync::OnceCell<Arc<Admitted>>,
}

impl Call {
    /// The call's admission: taken at the first call (waiting as
    /// [`Admission::admit`] does), the same one after that, so a handler
    /// that runs engine work twice (UpdateUser then its reply's GetUser)
    /// is admitted, and can be refused, only once. The engine work takes a
    /// clone along so that the slot is held until that work ends.
    pub async fn admit(&self) -> Result<Arc<Admitted>, Refused> {
        self.admitted
            .get_or_try_init(|| async {
                self.admission
                    .admit_at(self.kind, self.deadline, Stage::Read)
                    .await
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

tokio::task_local! {
    /// The call being handled, set by [`AdmissionLayer`] around the handler.
    static CALL: Arc<Call>;
}

/// The call the current handler serves, if it went through admission
/// (every chaff RPC under `serve`).
pub fn current() -> Option<Arc<Call>> {
    CALL.try_with(Arc::clone).ok()
}

/// Decrements a pool's waiting count when the wait ends, however it ends;
/// a wait that ends by being dropped (the caller's deadline, tonic's
/// timeout, a reset stream) counts as abandoned.
struct Waiting<'a> {
    admission: &'a Admission,
    pool: &'a Pool,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pool.waiting.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.admission.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            reads: limits.reads.map(|n| Pool::new(Kind::Read, n.max(1))),
            writes: limits.writes.map(|n| Pool::new(Kind::Write, n.max(1))),
            queue_full: AtomicU64::new(0),
            waited_too_long: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn pool(&self, kind: Kind) -> Option<&Pool> {
        match kind {
            Kind::Read => self.reads.as_ref(),
            Kind::Write => self.writes.as_ref(),
        }
    }

    fn check(&self, deadline: Option<Instant>, now: Instant, stage: Stage) -> Result<(), Refused> {
        match deadline {
            Some(d) if d <= now => {
                self.deadline.fetch_add(1, Ordering::Relaxed);
                Err(Refused::DeadlinePassed { stage })
            }
            _ => Ok(()),
        }
    }

    /// Admits a call of `kind` whose deadline is `deadline`: at once if a
    /// slot is free, after a bounded wait if one comes free in time, else
    /// refused (see the module docs).
    pub async fn admit(
        self: &Arc<Self>,
        kind: Option<Kind>,
        deadline: Option<Instant>,
    ) -> Result<Admitted, Refused> {
        self.admit_at(kind, deadline, Stage::Arrival).await
    }

    /// [`Admission::admit`] for a call at `stage` (where a passed deadline
    /// is reported found).
    async fn admit_at(
        self: &Arc<Self>,
        kind: Option<Kind>,
        deadline: Option<Instant>,
        stage: Stage,
    ) -> Result<Admitted, Refused> {
        let arrived = Instant::now();
        self.check(deadline, arrived, stage)?;
        let admitted = |slot| Admitted {
            deadline,
            admission: self.clone(),
            _slot: slot,
        };
        let Some(pool) = kind.and_then(|k| self.pool(k)) else {
            return Ok(admitted(None));
        };
        if let Ok(slot) = pool.slots.clone().try_acquire_owned() {
            return Ok(admitted(Some(slot)));
        }
        if pool.waiting.fetch_add(1, Ordering::SeqCst) >= self.limits.queued {
            let waiting = pool.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::QueueFull {
                kind: pool.kind,
                running: pool.running(),
                waiting,
            });
        }
        let mut wait = Waiting {
            admission: self,
            pool,
            done: false,
        };
        let give_up = match deadline {
            Some(d) => d.min(arrived + self.limits.max_wait),
            None => arrived + self.limits.max_wait,
        };
        let acquired = tokio::time::timeout_at(
            tokio::time::Instant::from_std(give_up),
            pool.slots.clone().acquire_owned(),
        )
        .await;
        wait.done = true;
        drop(wait);
        match acquired {
            Ok(Ok(slot)) => {
                // A slot came free, but perhaps just after the deadline.
                self.check(deadline, Instant::now(), Stage::Queue)?;
                Ok(admitted(Some(slot)))
            }
            // The semaphore is never closed; treat it as no bound.
            Ok(Err(_closed)) => Ok(admitted(None)),
            Err(_elapsed) if deadline.is_some_and(|d| d <= Instant::now()) => {
                self.deadline.fetch_add(1, Ordering::Relaxed);
                Err(Refused::DeadlinePassed {
                    stage: Stage::Queue,
                })
            }
            Err(_elapsed) => {
                self.waited_too_long.fetch_add(1, Ordering::Relaxed);
                Err(Refused::WaitedTooLong {
                    kind: pool.kind,
                    waited_ms: arrived.elapsed().as_millis() as u64,
                    running: pool.running(),
                })
            }
        }
    }

    /// What admission has done so far, and the pools now.
    pub fn counts(&self) -> Counts {
        let running = |p: Option<&Pool>| p.map_or(0, Pool::running);
        let waiting = |p: Option<&Pool>| p.map_or(0, |p| p.waiting.load(Ordering::SeqCst));
        Counts {
            queue_full: self.queue_full.load(Ordering::Relaxed),
            waited_too_long: self.waited_too_long.load(Ordering::Relaxed),
            deadline: self.deadline.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            reads_running: running(self.reads.as_ref()),
            writes_running: running(self.writes.as_ref()),
            reads_waiting: waiting(self.reads.as_ref()),
            writes_waiting: waiting(self.writes.as_ref()),
        }
    }
}

/// The caller's deadline from a `grpc-timeout` header (gRPC over HTTP/2:
/// at most 8 digits and a unit, H M S m u n). A malformed header is
/// ignored, as tonic does.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Installs [`AdmissionService`] around tonic's router.
#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl AdmissionLayer {
    pub fn new(admission: Arc<Admission>) -> Self {
        AdmissionLayer { admission }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// Marks each chaff call for admission before its handler runs, and
/// refuses one whose deadline has already passed (see the module docs).
#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for AdmissionService<S>
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
        let Some(rpc) = req
            .uri()
            .path()
            .strip_prefix(CHAFF_PREFIX)
            .and_then(Rpc::from_name)
        else {
            // Health, reflection, unknown methods: never held back.
            return Box::pin(inner.call(req));
        };
        let now = Instant::now();
        let deadline = grpc_timeout(req.headers()).map(|d| now + d);
        // Refused before its body is read: it would not be worked on.
        if let Err(refused) = self.admission.check(deadline, now, Stage::Arrival) {
            return Box::pin(std::future::ready(Ok(Status::from(refused).into_http())));
        }
        let call = Arc::new(Call {
            admission: self.admission.clone(),
            kind: Kind::of(rpc),
            deadline,
            admitted: tokio::sync::OnceCell::new(),
        });
        Box::pin(CALL.scope(call, inner.call(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(reads: usize, queued: usize, max_wait_ms: u64) -> Limits {
        Limits {
            reads: Some(reads),
            writes: Some(reads),
            queued,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[test]
    fn grpc_timeout_units_parse_and_bad_values_are_ignored() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("100m"), Some(Duration::from_millis(100)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5u"), Some(Duration::from_micros(5)));
        assert_eq!(h("0n"), Some(Duration::ZERO));
        assert_eq!(h("m"), None);
        assert_eq!(h("123456789S"), None, "more than 8 digits");
        assert_eq!(h("10x"), None);
        assert_eq!(h("-1S"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn defaults_scale_with_the_cores() {
        let l = Limits::for_cores(2);
        assert_eq!(l.reads, Some(4));
        assert_eq!(l.writes, Some(32));
        assert_eq!(l.queued, 16);
        assert_eq!(Limits::for_cores(0), Limits::for_cores(1));
    }

    #[test]
    fn a_remote_store_gets_more_read_slots_and_the_same_other_bounds() {
        let (local, remote) = (Limits::for_cores(2), Limits::for_remote_store(2));
        assert_eq!(remote.reads, Some(32));
        assert_eq!(
            Limits {
                reads: local.reads,
                ..remote
            },
            local,
            "only the read pool differs"
        );
        assert_eq!(Limits::for_remote_store(0), Limits::for_remote_store(1));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_naming_the_flags() {
        let a = Admission::new(limits(1, 1, 10_000));
        let running = a.admit(Some(Kind::Read), None).await.unwrap();
        let a2 = a.clone();
        let queued = tokio::spawn(async move { a2.admit(Some(Kind::Read), None).await });
        while a.counts().reads_waiting == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let err = a.admit(Some(Kind::Read), None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(
            err,
            Refused::QueueFull {
                kind: Kind::Read,
                running: 1,
                waiting: 1
            }
        );
        let text = err.to_string();
        assert!(text.contains("--max-concurrent-reads"), "{text}");
        assert!(text.contains("--max-queued-calls"), "{text}");
        // Writes have their own pool.
        let w = a.admit(Some(Kind::Write), None).await.unwrap();
        // GetStats is never held back.
        a.admit(None, None).await.unwrap();
        drop(running);
        queued.await.unwrap().unwrap();
        drop(w);
        assert_eq!(a.counts().queue_full, 1);
    }

    #[tokio::test]
    async fn a_slot_held_by_work_is_released_only_when_every_holder_drops_it() {
        let a = Admission::new(limits(1, 0, 10_000));
        let call = Arc::new(a.admit(Some(Kind::Read), None).await.unwrap());
        let work = call.clone();
        drop(call);
        assert_eq!(a.counts().reads_running, 1, "the work still holds it");
        assert!(a.admit(Some(Kind::Read), None).await.is_err());
        drop(work);
        assert_eq!(a.counts().reads_running, 0);
        a.admit(Some(Kind::Read), None).await.unwrap();
    }

    #[tokio::test]
    async fn waiting_is_bounded_by_max_wait_and_by_the_deadline() {
        let a = Admission::new(limits(1, 8, 30));
        let _running = a.admit(Some(Kind::Read), None).await.unwrap();
        let started = Instant::now();
        let err = a.admit(Some(Kind::Read), None).await.unwrap_err();
        assert!(
            matches!(err, Refused::WaitedTooLong { .. }),
            "{err:?} after {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("--max-queue-wait"), "{err}");
        let a = Admission::new(limits(1, 8, 10_000));
        let _running = a.admit(Some(Kind::Read), None).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        let err = a.admit(Some(Kind::Read), Some(deadline)).await.unwrap_err();
        assert_eq!(
            err,
            Refused::DeadlinePassed {
                stage: Stage::Queue
            }
        );
        assert!(Instant::now() >= deadline);
        assert!(started.elapsed() < Duration::from_secs(5));
        let c = a.counts();
        assert_eq!((c.deadline, c.reads_waiting), (1, 0));
    }

    #[tokio::test]
    async fn a_passed_deadline_is_refused_before_any_slot_and_at_work_start() {
        let a = Admission::new(limits(1, 8, 10_000));
        let past = Instant::now();
        let err = a.admit(Some(Kind::Read), Some(past)).await.unwrap_err();
        assert_eq!(
            err,
            Refused::DeadlinePassed {
                stage: Stage::Arrival
            }
        );
        assert_eq!(a.counts().reads_running, 0);
        let soon = Instant::now() + Duration::from_millis(10);
        let call = a.admit(Some(Kind::Read), Some(soon)).await.unwrap();
        assert!(call.check(Stage::Work).is_ok());
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(
            call.check(Stage::Work),
            Err(Refused::DeadlinePassed { stage: Stage::Work })
        );
        assert_eq!(a.counts().deadline, 2);
    }
}

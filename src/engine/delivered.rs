//! Learning from delivered mail, off the Score path.
//!
//! Pipeline step 7 (`score.rs`) learns mail delivered to the inbox as ham
//! for a user who has taught chaff something (`clicks.rs`,
//! [`Engine::learn_delivered`]). Done inline, that learning — a ledger read
//! and, the first time, a ledger entry and a journal record under the
//! user's writer lock — halved Score throughput for trained users
//! (docs/PERFORMANCE.md). So the server runs it here instead:
//!
//! - the Score path only **enqueues** (user, the id chaff derives, the
//!   tokens it already read) into a bounded queue and returns; when the
//!   queue is full the job is **dropped** and counted
//!   ([`DeliveredStats::dropped`], GetStats, `/metrics`; a WARN line at
//!   most every [`DROP_LOG_EVERY`]) — a Score never blocks on it. Nothing
//!   was acknowledged, so nothing is lost but a light lesson;
//! - one background thread, at a lower CPU priority than requests
//!   ([`WORKER_NICE`]), takes up to [`MAX_BATCH`] jobs at a time and
//!   learns each under its user's writer lock with exactly the inline
//!   path's checks and writes (`Engine::learn_delivered_locked`);
//!   afterwards it runs the quota's queued prunes, which delivered mail
//!   makes due as clicks do (before, only a click's reply ran them);
//! - a **click wins**: a click (or Forget) on a message whose learning is
//!   still queued, or taken by the worker but not yet written, *claims* it
//!   under the user's writer lock, and the worker, which checks claims
//!   under the same lock, skips it. A claim covers the caller's id and the
//!   derived one, so a click under the webmail's own id is not followed by
//!   a late implicit learn under the derived id. Once written, a later
//!   click replaces the implicit learn exactly, as before;
//! - on a store shared by replicas (Redis) the worker holds the writer
//!   lock only for that check: a Score there refreshes its user's model
//!   under the lock, and must not wait for a learning's round trip. A
//!   learning past the check is *being written*; a click that claims it
//!   waits for the write and then replaces it exactly
//!   (`Engine::learn_delivered_unlocked`);
//! - shutdown stops taking new jobs, lets the worker drain the queue for
//!   up to [`SHUTDOWN_DRAIN`], drops the rest and logs both numbers.
//!
//! The delivered weight is read when the job is learned (under the writer
//! lock, from the model it is applied to), not when the message was
//! scored: so a batch of deliveries fills the ham side's gap once, as the
//! inline path does message by message.
//!
//! Only the server starts the worker ([`Engine::start_delivered_learner`],
//! from `service`). Without it — `chaff eval`'s replays, the benches,
//! engine tests — step 7 learns inline, the same code, so replays stay
//! deterministic and their results files unchanged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashSet;
use tracing::{debug, info, warn};

use super::{Engine, UserSlot, WriterState, clicks};
use crate::classify::Weight;
use crate::error::Error;
use crate::store::LedgerEntry;
use crate::store::Op;
use crate::tokenize::{TOKENIZER_VERSION, TokenId};
use crate::types::{Label, MessageId, UserId};

/// Default `--delivered-queue`: delivered messages waiting to be learned
/// before new ones are dropped. A job holds the message's token ids (8
/// bytes each, a few hundred to a few thousand per message), so 4,096 jobs
/// are about 8–30 MiB at worst; at the few hundred learns a second one
/// core does, it is seconds of backlog — enough to ride out a burst, small
/// enough that a worker that cannot keep up drops instead of growing.
pub const DEFAULT_DELIVERED_QUEUE: usize = 4096;

/// Most jobs the worker takes at once.
const MAX_BATCH: usize = 256;

/// How long shutdown lets the worker drain the queue before dropping the
/// rest: well within `chaff serve`'s shutdown, and every job is a light
/// lesson nobody was promised.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Least time between two WARN lines about dropped jobs.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Learning from delivered mail, for operators ([`Engine::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveredStats {
    /// Jobs waiting for the background learner now, or being learned.
    pub queued: u64,
    /// Delivered messages learned as ham (cumulative; inline or queued).
    pub learned: u64,
    /// Jobs dropped because the queue was full, or left at shutdown.
    pub dropped: u64,
}

/// One delivered message to learn.
#[derive(Debug)]
pub(super) struct Job {
    user: UserId,
    id: MessageId,
    tokens: Vec<TokenId>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Keys of jobs the worker has taken and not yet decided.
    taken: FxHashSet<(UserId, MessageId)>,
    /// Of `taken`, those a click has claimed since: the worker skips them.
    claimed: FxHashSet<(UserId, MessageId)>,
    /// Of `taken`, those the worker is writing to a shared store now,
    /// outside the user's writer lock ([`Engine::learn_batch`]): a claim
    /// waits until they are written, so that its click then replaces the
    /// implicit entry exactly.
    writing: FxHashSet<(UserId, MessageId)>,
    /// A worker was started: Score enqueues instead of learning inline.
    running: bool,
    /// Shutting down (or dropped): nothing more is queued.
    closed: bool,
}

impl State {
    fn depth(&self) -> usize {
        self.jobs.len() + self.taken.len()
    }
}

struct Inner {
    state: Mutex<State>,
    /// The worker waits here for jobs.
    wake: Condvar,
    /// [`Engine::settle_delivered`] and shutdown wait here for an empty
    /// queue.
    idle: Condvar,
    /// Claims wait here for a job being written ([`State::writing`]).
    written: Condvar,
    capacity: usize,
    learned: AtomicU64,
    dropped: AtomicU64,
    /// Dropped jobs already reported, and when.
    reported: Mutex<(u64, Option<Instant>)>,
}

/// The queue and its worker, owned by the engine.
pub(super) struct Learner {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Learner {
    pub(super) fn stats(&self) -> DeliveredStats {
        self.inner.stats()
    }

    /// See [`Inner::claim`].
    pub(super) fn claim(&self, user: &UserId, ids: &[&MessageId]) {
        self.inner.claim(user, ids);
    }

    /// See [`Inner::claim_user`].
    pub(super) fn claim_user(&self, user: &UserId) {
        self.inner.claim_user(user);
    }

    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                idle: Condvar::new(),
                written: Condvar::new(),
                capacity: capacity.max(1),
                learned: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                reported: Mutex::new((0, None)),
            }),
            worker: Mutex::new(None),
        }
    }

    /// Stops queueing; drains for up to `drain`, drops the rest, joins the
    /// worker. Returns (learned while draining, dropped).
    fn stop(&self, drain: Duration) -> (u64, u64) {
        let learned_before = self.inner.learned.load(Ordering::Relaxed);
        {
            let mut state = self.inner.state.lock();
            if !state.running || state.closed {
                state.closed = true;
                return (0, 0);
            }
            state.closed = true;
        }
        self.inner.settle(drain);
        let left = {
            let mut state = self.inner.state.lock();
            let left = state.jobs.len() as u64;
            state.jobs.clear();
            left
        };
        self.inner.dropped.fetch_add(left, Ordering::Relaxed);
        self.inner.wake.notify_all();
        if let Some(worker) = self.worker.lock().take()
            && worker.thread().id() != std::thread::current().id()
        {
            let _ = worker.join();
        }
        let learned = self.inner.learned.load(Ordering::Relaxed) - learned_before;
        (learned, left)
    }
}

impl Inner {
    fn stats(&self) -> DeliveredStats {
        let queued = self.state.lock().depth() as u64;
        DeliveredStats {
            queued,
            learned: self.learned.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Queues a job, or drops it when the queue is full; never blocks.
    /// `Err`: no worker was started (learn it inline).
    fn offer(&self, job: Job) -> Result<(), Job> {
        let mut state = self.state.lock();
        if !state.running {
            return Err(job);
        }
        if state.closed || state.depth() >= self.capacity {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.report_drops();
            return Ok(());
        }
        state.jobs.push_back(job);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// A WARN line about drops, at most every [`DROP_LOG_EVERY`].
    fn report_drops(&self) {
        let Some(mut reported) = self.reported.try_lock() else {
            return;
        };
        if reported.1.is_some_and(|at| at.elapsed() < DROP_LOG_EVERY) {
            return;
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        warn!(
            dropped_since_last = dropped - reported.0,
            dropped_total = dropped,
            capacity = self.capacity,
            "delivered mail not learned: the background learner is behind and its queue \
             is full (Score is not slowed; raise --delivered-queue or give it CPU)"
        );
        *reported = (dropped, Some(Instant::now()));
    }

    /// A click on `id` for `user` wins over delivered learning not yet
    /// written: a queued job is removed, a taken one marked. One the worker
    /// is writing to a shared store already (outside the user's writer
    /// lock) is waited for instead: once written, the click replaces it
    /// exactly. On sled the caller holds the user's writer lock (the worker
    /// checks and writes under it). On a shared store it must not (a wait
    /// for a write in flight would stall the user's Scores, which refresh
    /// under it) and need not: this lock orders the claim against the
    /// worker's check ([`Inner::start_writing`]).
    fn claim(&self, user: &UserId, ids: &[&MessageId]) {
        let mut state = self.state.lock();
        if state.depth() == 0 {
            return;
        }
        let before = state.jobs.len();
        state
            .jobs
            .retain(|j| !(j.user == *user && ids.contains(&&j.id)));
        for id in ids {
            let key = (user.clone(), (*id).clone());
            if state.taken.contains(&key) && !state.writing.contains(&key) {
                state.claimed.insert(key);
            }
        }
        let removed = before != state.jobs.len();
        let empty = state.depth() == 0;
        while ids
            .iter()
            .any(|id| state.writing.contains(&(user.clone(), (*id).clone())))
        {
            self.written.wait(&mut state);
        }
        drop(state);
        if removed && empty {
            self.idle.notify_all();
        }
    }

    /// Every job of `user` loses (DeleteUser): nothing queued before the
    /// delete may be learned into a user created after it. Jobs of the user
    /// being written to a shared store are waited for (their writes need
    /// no writer lock), so none lands after the delete.
    fn claim_user(&self, user: &UserId) {
        let mut state = self.state.lock();
        state.jobs.retain(|j| j.user != *user);
        let taken: Vec<_> = state
            .taken
            .iter()
            .filter(|(u, _)| u == user)
            .cloned()
            .collect();
        state.claimed.extend(taken);
        while state.writing.iter().any(|(u, _)| u == user) {
            self.written.wait(&mut state);
        }
        let empty = state.depth() == 0;
        drop(state);
        if empty {
            self.idle.notify_all();
        }
    }

    /// The worker's next batch: waits for jobs; `None` once closed and
    /// empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut state = self.state.lock();
        loop {
            if !state.jobs.is_empty() {
                let n = state.jobs.len().min(MAX_BATCH);
                let batch: Vec<Job> = state.jobs.drain(..n).collect();
                for job in &batch {
                    state.taken.insert((job.user.clone(), job.id.clone()));
                }
                return Some(batch);
            }
            if state.closed {
                return None;
            }
            self.wake.wait(&mut state);
        }
    }

    /// Whether the worker may learn `job` now: not claimed by a click.
    /// Called under the job's user's writer lock. The job stays taken (and
    /// counted as queued) until [`Inner::finish`], after its write, so
    /// that a settled queue means a written model.
    fn unclaimed(&self, job: &Job) -> bool {
        let key = (job.user.clone(), job.id.clone());
        !self.state.lock().claimed.remove(&key)
    }

    /// [`Inner::unclaimed`], and if so the job is marked as being written
    /// ([`State::writing`]) until [`Inner::finish_writing`]: from then on a claim
    /// waits for it rather than marking it. Called under the job's user's
    /// writer lock.
    fn start_writing(&self, job: &Job) -> bool {
        let key = (job.user.clone(), job.id.clone());
        let mut state = self.state.lock();
        if state.claimed.remove(&key) {
            return false;
        }
        state.writing.insert(key);
        true
    }

    /// The write [`Inner::start_writing`] began is done (or failed): wakes
    /// the claims waiting for it.
    fn finish_writing(&self, job: &Job) {
        let key = (job.user.clone(), job.id.clone());
        self.state.lock().writing.remove(&key);
        self.written.notify_all();
    }

    /// Forgets what is left of a batch (jobs the worker could not reach:
    /// the user is gone, storage failed) and wakes whoever waits for idle.
    fn finish(&self, batch: &[Job]) {
        let mut state = self.state.lock();
        for job in batch {
            let key = (job.user.clone(), job.id.clone());
            state.taken.remove(&key);
            state.claimed.remove(&key);
        }
        let empty = state.depth() == 0;
        drop(state);
        if empty {
            self.idle.notify_all();
        }
    }

    /// Waits (at most `timeout`) until nothing is queued or being learned.
    fn settle(&self, timeout: Duration) -> bool {
        let mut state = self.state.lock();
        let deadline = Instant::now() + timeout;
        while state.depth() > 0 {
            if self.idle.wait_until(&mut state, deadline).timed_out() {
                return state.depth() == 0;
            }
        }
        true
    }
}

/// A job marked as being written ([`Inner::start_writing`]) until this is
/// dropped.
struct Writing<'a>(&'a Inner, &'a Job);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.finish_writing(self.1);
    }
}

impl Drop for Learner {
    /// An engine dropped without [`Engine::shutdown`] (a storage reopen, a
    /// test): the worker stops at its next batch; queued jobs are dropped.
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        state.closed = true;
        state.jobs.clear();
        drop(state);
        self.inner.wake.notify_all();
    }
}

impl Engine {
    /// Starts the background learner (module docs): from now on Score
    /// queues its delivered-mail learning instead of doing it inline. The
    /// server calls it once per engine; without it learning stays inline
    /// (replays). Does nothing when learning from delivered mail is off or
    /// the worker already runs.
    pub fn start_delivered_learner(self: &Arc<Self>) {
        if !self.settings.learn_delivered {
            return;
        }
        {
            let mut state = self.delivered.inner.state.lock();
            if state.running || state.closed {
                return;
            }
            state.running = true;
        }
        let engine: Weak<Engine> = Arc::downgrade(self);
        let inner = self.delivered.inner.clone();
        let worker = std::thread::Builder::new()
            .name("chaff-delivered".into())
            .spawn(move || work(&engine, &inner))
            .expect("spawn the delivered-mail learner");
        *self.delivered.worker.lock() = Some(worker);
    }

    /// Waits (at most `timeout`) until the background learner has learned
    /// or skipped everything queued; true if it got there. For tests and
    /// the soak's checker, which read counts after scoring.
    pub fn settle_delivered(&self, timeout: Duration) -> bool {
        self.delivered.inner.settle(timeout)
    }

    /// Step 7's learning of a delivered message, given the tokens the
    /// pipeline read: queued when the background learner runs, else done
    /// now. The caller has checked that the user has taught chaff
    /// something.
    pub(super) fn learn_delivered_soon(&self, user: &UserId, tokens: Vec<TokenId>, id: MessageId) {
        let job = Job {
            user: user.clone(),
            id,
            tokens,
        };
        let Err(job) = self.delivered.inner.offer(job) else {
            return;
        };
        // Never the Score's failure: the decision stands whether or not
        // the light learning could be written (a full disk refuses it;
        // storage health reports that through the clicks).
        if let Err(e) = self.learn_delivered_tokens(user, &job.tokens, &job.id) {
            debug!(user = user.as_str(), error = %e, "delivered mail not learned");
        }
    }

    /// The inline learning and the worker's, under the user's writer lock:
    /// learns `ids` as ham at the delivered weight under `message_id`
    /// unless the user has nothing learned or the ledger has the message.
    /// Returns whether it learned.
    pub(super) fn learn_delivered_locked(
        &self,
        user: &UserId,
        slot: &UserSlot,
        writer: &mut WriterState,
        ids: &[TokenId],
        message_id: &MessageId,
    ) -> Result<bool, Error> {
        #[cfg(feature = "fault-injection")]
        crate::fault::slow_learning(user);
        if let Some(clicks) = self.store.shared_clicks() {
            // The store decides and applies it atomically (`replicas.rs`).
            let learned =
                self.learn_delivered_shared(clicks, user, slot, writer, ids, message_id)?;
            if learned {
                self.delivered.inner.learned.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(learned);
        }
        let (weights, ceiling) = {
            let model = slot.model.read();
            (
                model.weights(),
                clicks::delivered_ceiling(ids.len(), &model),
            )
        };
        if weights == (0, 0) || self.store.ledger_contains(user, message_id)? {
            return Ok(false);
        }
        let weight: Weight = clicks::delivered_weight(weights, ceiling);
        let entry = LedgerEntry {
            label: Label::Ham,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: ids.to_vec(),
            weight,
            shared: 0,
            implicit: true,
        };
        let ops = [Op::LearnDelivered(weight, ids.to_vec())];
        self.commit(user, slot, writer, message_id, Some(&entry), &ops, &[])?;
        self.delivered.inner.learned.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The worker's learning on a store shared by replicas (Redis), where
    /// the store's script decides and writes atomically: the claim check is
    /// made under the user's writer lock, as on sled, but the store's round
    /// trip is not. Every Score on such a store refreshes its user's model
    /// under that lock (`replicas.rs`), so a learner holding it through the
    /// round trip made each Score wait for the learning in flight. Instead
    /// the job is marked as being written, and a click that claims it waits
    /// for the write ([`Inner::claim`]) and then replaces it exactly, as a
    /// click does any learned delivered mail. The held model is not
    /// refreshed here: the user's next Score, click or GetUser brings it,
    /// as it brings another replica's clicks. `None`: the user has nothing
    /// stored.
    fn learn_delivered_unlocked(
        &self,
        clicks: &dyn crate::store::SharedClicks,
        job: &Job,
    ) -> Result<Option<bool>, Error> {
        let user = &job.user;
        // The ceiling from this process's copy of the model: the script
        // takes the gap from the counts it sees, the size is the message's.
        let go = self.with_known_writer(user, |slot, _| {
            let ceiling = clicks::delivered_ceiling(job.tokens.len(), &slot.model.read());
            Ok(self.delivered.inner.start_writing(job).then_some(ceiling))
        })?;
        let ceiling = match go {
            Some(Some(ceiling)) => ceiling,
            Some(None) => return Ok(Some(false)),
            None => return Ok(None),
        };
        // Ends the write however this returns (an error, a panic), so that
        // no claim waits for it forever.
        let writing = Writing(&self.delivered.inner, job);
        #[cfg(feature = "fault-injection")]
        crate::fault::slow_learning(user);
        let learned = clicks
            .learn_delivered(user, &job.id, &job.tokens, ceiling)?
            .is_some();
        if learned {
            self.delivered.inner.learned.fetch_add(1, Ordering::Relaxed);
        }
        drop(writing);
        Ok(Some(learned))
    }

    /// Learns one batch the worker took, in the order it was queued: each
    /// message under its own hold of its user's writer lock. Not one hold
    /// per user: the worker runs at a lower priority ([`WORKER_NICE`]), and
    /// a click of that user waits while it holds the lock, so it holds it
    /// for one message at a time. On a shared store the lock is held only
    /// for the claim check ([`Engine::learn_delivered_unlocked`]).
    fn learn_batch(&self, batch: Vec<Job>) {
        for job in &batch {
            let user = &job.user;
            let learned = match self.store.shared_clicks() {
                Some(clicks) => self.learn_delivered_unlocked(clicks, job),
                None => self.with_known_writer(user, |slot, writer| {
                    if !self.delivered.inner.unclaimed(job) {
                        return Ok(false);
                    }
                    self.learn_delivered_locked(user, slot, writer, &job.tokens, &job.id)
                }),
            };
            self.delivered.inner.finish(std::slice::from_ref(job));
            match learned {
                Ok(Some(true)) => self.evict_over_budget(user),
                Ok(_) => {}
                Err(e) => debug!(user = user.as_str(), error = %e, "delivered mail not learned"),
            }
        }
        // Delivered mail grows models as clicks do: prune what passed the
        // cap here, in the background, not at the user's next click.
        if self.prune_wanted()
            && let Err(e) = self.prune_pending()
        {
            warn!(error = %e, "pruning a model to its quota failed; the next learn retries");
        }
    }

    /// Stops the background learner at shutdown (module docs).
    pub(super) fn stop_delivered_learner(&self) {
        let (learned, dropped) = self.delivered.stop(SHUTDOWN_DRAIN);
        if learned > 0 || dropped > 0 {
            info!(
                learned,
                dropped, "shutdown: delivered mail queued for learning drained, the rest dropped"
            );
        }
    }
}

#[cfg(test)]
impl Engine {
    /// Makes Score queue its delivered-mail learning with no worker to
    /// take it: a test then interleaves [`Engine::take_delivered`], clicks
    /// and [`Engine::learn_delivered_batch`] as it likes.
    pub(super) fn queue_delivered_without_worker(&self) {
        self.delivered.inner.state.lock().running = true;
    }

    /// The jobs queued now, taken as the worker takes them.
    pub(super) fn take_delivered(&self) -> Vec<Job> {
        if self.delivered.inner.state.lock().jobs.is_empty() {
            return Vec::new();
        }
        self.delivered.inner.take().unwrap_or_default()
    }

    /// Learns taken jobs as the worker does.
    pub(super) fn learn_delivered_batch(&self, batch: Vec<Job>) {
        self.learn_batch(batch);
    }
}

/// The worker thread: takes batches and learns them on the engine while
/// it lives.
fn work(engine: &Weak<Engine>, inner: &Inner) {
    lower_priority();
    while let Some(batch) = inner.take() {
        let Some(engine) = engine.upgrade() else {
            inner.finish(&batch);
            break;
        };
        engine.learn_batch(batch);
    }
}

/// The worker's nice value: below the request threads, so that on a busy
/// machine delivered-mail learning takes the CPU Score leaves over (and
/// drops when there is none) instead of sharing it evenly with Score —
/// measured in docs/PERFORMANCE.md. Not lower: the worker holds one
/// user's writer lock per message, and a click of that user waits while
/// it does.
pub const WORKER_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`WORKER_NICE`] (Linux: nice
/// values are per thread). Best effort: elsewhere, or if refused, the
/// worker runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, no
    // pointers passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICE) != 0 {
            debug!("delivered-mail learner: could not lower its priority");
        }
    }
}

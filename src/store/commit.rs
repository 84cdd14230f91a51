//! Group commit: many threads that each need "my writes survive a crash"
//! share one sled flush.
//!
//! A thread that needs durability arrives with a ticket (arrivals are
//! numbered under the mutex, after the thread's own writes and after any
//! read of another thread's write it reports on). It returns once a flush
//! that *started* after its arrival has finished. At most one flush runs at
//! a time: the first waiter to find none running becomes the leader, notes
//! the last ticket issued *before* calling sled's flush (so every write its
//! holders made is covered), flushes, publishes that ticket as flushed and
//! wakes everyone. Threads arriving during a flush wait for the next round
//! and share it, so under load one flush covers many clicks; alone, a click
//! pays exactly one flush as before. Tickets count arrivals, not writes, so
//! no write path has to be counted (a new one cannot be forgotten); a
//! thread with nothing new to make durable costs a sled flush that finds
//! nothing to write.
//!
//! Why not just let every click call `Db::flush`? sled does coalesce a
//! little (a flush seals the current log buffer, later flushers wait for
//! it), but each concurrent caller that finds fresh bytes seals and writes
//! another buffer with its own `sync_file_range`, so 32 clicks in flight
//! still issued many small synced writes. Measured figures are in
//! docs/PERFORMANCE.md ("Group commit").
//!
//! There is no background thread: the leader is a waiting request thread,
//! so an idle server does nothing and a lone click has no hand-off.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// Flush progress shared by every handle of one store.
#[derive(Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// Flushes issued, and tickets served: how much sharing happened.
    flushes: AtomicU64,
    waits: AtomicU64,
    /// How long each flush took.
    flush_time: crate::metrics::Latency,
}

#[derive(Default)]
struct State {
    /// The last ticket issued.
    arrived: u64,
    /// Every ticket up to here is covered by a finished flush.
    flushed: u64,
    /// A leader is inside sled's flush.
    flushing: bool,
}

/// How much group commit shared (cumulative since open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Calls that needed durability.
    pub waits: u64,
    /// sled flushes issued for them.
    pub flushes: u64,
}

impl GroupCommit {
    /// Returns once every write made before this call (by any thread that
    /// finished it before this call) is durable, flushing with `flush`
    /// unless a round that started after this call covers it.
    pub(super) fn wait_durable(&self, flush: impl Fn() -> Result<(), Error>) -> Result<(), Error> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        state.arrived += 1;
        let ticket = state.arrived;
        loop {
            if state.flushed >= ticket {
                return Ok(());
            }
            if state.flushing {
                // The running round started before we arrived: it may miss
                // our writes. Check again when it ends.
                self.done.wait(&mut state);
                continue;
            }
            state.flushing = true;
            // Every ticket issued so far belongs to a thread whose writes
            // are done: the flush below covers them all.
            let target = state.arrived;
            drop(state);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            // The round ends when `round` drops, even if `flush` panics:
            // the waiters must not sleep forever on a leader that is gone.
            let mut round = Round {
                commit: self,
                flushed: None,
            };
            let started = std::time::Instant::now();
            let result = flush();
            self.flush_time.observe(started.elapsed());
            if result.is_ok() {
                round.flushed = Some(target);
            }
            drop(round);
            // On failure the waiters wake, find nothing flushed, and one of
            // them tries again; this caller reports the error.
            result?;
            state = self.state.lock();
        }
    }

    pub(super) fn flush_times(&self) -> crate::metrics::LatencySnapshot {
        self.flush_time.snapshot()
    }

    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            waits: self.waits.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// A leader's flush round: ending it (on drop, so also when the flush
/// panics) clears `flushing`, publishes what it covered and wakes everyone.
struct Round<'a> {
    commit: &'a GroupCommit,
    /// The ticket the flush covered, if it succeeded.
    flushed: Option<u64>,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        let mut state = self.commit.state.lock();
        state.flushing = false;
        if let Some(target) = self.flushed {
            state.flushed = state.flushed.max(target);
        }
        self.commit.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_lone_caller_flushes_once_per_call() {
        let gc = GroupCommit::default();
        let n = AtomicU64::new(0);
        let flush = || {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        gc.wait_durable(flush).unwrap();
        gc.wait_durable(flush).unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!(
            gc.stats(),
            CommitStats {
                waits: 2,
                flushes: 2
            }
        );
    }

    #[test]
    fn a_failed_flush_is_reported_and_retried_by_the_next_waiter() {
        let gc = GroupCommit::default();
        let err = || {
            Err(Error::Corrupt {
                what: "disk".into(),
            })
        };
        assert!(gc.wait_durable(err).is_err());
        let called = AtomicBool::new(false);
        gc.wait_durable(|| {
            called.store(true, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert!(called.load(Ordering::SeqCst));
    }

    /// Every waiter returns only after a flush that started after its write
    /// ended: the flush records the write count it saw at its start, and a
    /// waiter checks its own write is within what some finished flush saw.
    #[test]
    fn a_flush_that_panics_ends_its_round_so_the_next_caller_flushes() {
        let gc = GroupCommit::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gc.wait_durable(|| panic!("injected flush panic"))
        }));
        assert!(panicked.is_err());
        // Before rounds ended on drop, `flushing` stayed set and this call
        // waited forever for a leader that was gone.
        let n = AtomicU64::new(0);
        gc.wait_durable(|| {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_waiters_share_flushes_and_each_is_covered() {
        let gc = Arc::new(GroupCommit::default());
        // What the "disk" holds: the write count when the last flush began.
        let durable = Arc::new(AtomicU64::new(0));
        let writes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, durable, writes) = (gc.clone(), durable.clone(), writes.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = writes.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait_durable(|| {
                            let seen = writes.load(Ordering::SeqCst);
                            std::thread::yield_now();
                            durable.fetch_max(seen, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = gc.stats();
        assert_eq!(s.waits, 1600);
        assert!(s.flushes <= s.waits);
    }
}

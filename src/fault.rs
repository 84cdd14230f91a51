//! Faults a test build can inject (cargo feature `fault-injection`, which
//! the integration tests turn on; release builds do not have this module):
//! panics, a slow Score, slow checkpoints.
//! Each fault is asked for by a special user id, so a test drives it over
//! the real wire.

use std::time::Duration;

use crate::types::{Owner, UserId};

/// Score for this user panics in the engine, on the blocking pool, while
/// holding the write lock of the user map that every request takes.
pub const PANIC_IN_ENGINE: &str = "fault-injection-panic-in-engine";

/// Score for this user panics in the gRPC handler itself (async code).
pub const PANIC_IN_HANDLER: &str = "fault-injection-panic-in-handler";

/// Panics if `user` is `which`.
pub fn panic_if(user: &UserId, which: &str) {
    if user.as_str() == which {
        panic!("fault injection: {which}");
    }
}

/// Score for this user sleeps [`SLOW_FOR`] in its engine work on the
/// blocking pool (holding its admission slot) before scoring: load made
/// deterministic for the overload tests.
pub const SLOW_IN_WORK: &str = "fault-injection-slow";

/// How long a [`SLOW_IN_WORK`] Score sleeps.
pub const SLOW_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Sleeps [`SLOW_FOR`] if `user` is `which`.
pub fn sleep_if(user: &UserId, which: &str) {
    if user.as_str() == which {
        std::thread::sleep(SLOW_FOR);
    }
}

/// Checkpoints (the snapshot of a user's model or of its shared
/// contribution) of users whose id starts with this are slow: they pause
/// [`SLOW_CHECKPOINT_PAUSE`] before and after the snapshot's atomic write,
/// and log each step at WARN (`fault injection: checkpoint starting|written|done
/// for ID`). A crash soak (`chaff soak --slow-checkpoints`) names its hot
/// users so, then its SIGKILL lands inside a checkpoint often, and the log
/// tells it that it did and in which step.
pub const SLOW_CHECKPOINT: &str = "fault-injection-slow-checkpoint";

/// See [`SLOW_CHECKPOINT`]: long enough for a random kill to land inside
/// a checkpoint in a good share of the soak's cycles.
pub const SLOW_CHECKPOINT_PAUSE: Duration = Duration::from_millis(30);

/// One step of a checkpoint of `owner`'s snapshot: logs and, before the
/// write and after it, pauses, for a [`SLOW_CHECKPOINT`] user.
pub fn checkpoint_step(owner: &Owner, step: &str) {
    if let Owner::User(user) = owner
        && user.as_str().starts_with(SLOW_CHECKPOINT)
    {
        tracing::warn!("fault injection: checkpoint {step} for {user}");
        if step != "done" {
            std::thread::sleep(SLOW_CHECKPOINT_PAUSE);
        }
    }
}

/// One step of a DeleteUser of a [`SLOW_CHECKPOINT`] user: logs it at
/// WARN (`fault injection: delete started|done for ID`) and, after the
/// first atomic batch (model, settings, lists, shared part gone; ledger,
/// dictionary and decisions not yet), pauses [`SLOW_CHECKPOINT_PAUSE`], so
/// the crash soak's kills land between the steps of a deletion too.
pub fn delete_step(user: &UserId, step: &str) {
    if user.as_str().starts_with(SLOW_CHECKPOINT) {
        tracing::warn!("fault injection: delete {step} for {user}");
        if step == "started" {
            std::thread::sleep(SLOW_CHECKPOINT_PAUSE);
        }
    }
}

/// Learning a delivered message (`engine::delivered`, inline or in the
/// background learner) pauses [`SLOW_LEARNING_PAUSE`] for a user whose id
/// contains this (tests on a shared Redis Cluster prefix their users),
/// where the learning's store write is made: under that user's writer lock
/// on sled, outside it on a shared store. A learner that cannot keep up,
/// for the tests that Score never waits for it, that a full queue drops,
/// and that a click wins over a learning in flight.
pub const SLOW_LEARNING: &str = "fault-injection-slow-learning";

/// See [`SLOW_LEARNING`].
pub const SLOW_LEARNING_PAUSE: Duration = Duration::from_secs(1);

/// Pauses for a [`SLOW_LEARNING`] user.
pub fn slow_learning(user: &UserId) {
    if user.as_str().contains(SLOW_LEARNING) {
        std::thread::sleep(SLOW_LEARNING_PAUSE);
    }
}

/// `chaff compact` (`store`'s `rewrite.rs`) stops for good at the step this
/// environment variable names (`copied`, `verified`, `original-aside`,
/// `swapped`), after saying so on standard error, so a test can SIGKILL
/// it exactly there.
pub const COMPACT_STOP_ENV: &str = "CHAFF_FAULT_COMPACT_STOP";

/// See [`COMPACT_STOP_ENV`].
pub fn stop_at(step: &str) {
    if std::env::var(COMPACT_STOP_ENV).is_ok_and(|s| s == step) {
        eprintln!("fault injection: compact stopped at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

//! Faults a test build can inject (cargo feature `fault-injection`, which
//! the integration tests turn on; release builds do not have this module):
//! panics, and a slow Score.
//! Each fault is asked for by a special user id, so a test drives it over
//! the real wire.

use crate::types::UserId;

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

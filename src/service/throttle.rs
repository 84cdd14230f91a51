//! Refusal log lines, at most one per kind a window. Why: a caller over its
//! limit, or a server shedding load, is refused tens of thousands of times
//! a second, and one WARN or INFO line each filled a disk with logs (16 MB
//! in 2 s) at the moment the limits were doing their job. The first
//! refusal of a kind (caller, method, code) is logged at once; the next
//! ones within [`WINDOW`] are counted, and the next line of that kind says
//! how many were held back (`held_back`). Metrics count every refusal.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// One line per kind per this long.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Kinds remembered at most; past it the table starts over (a line too
/// many, never memory without bound).
const MAX_KINDS: usize = 10_000;

/// Per kind: when its last line was written, and how many were held back
/// since.
static LAST: LazyLock<Mutex<HashMap<u64, (Instant, u64)>>> = LazyLock::new(Default::default);

/// Whether a line of this `kind` may be written now: `Some(held back
/// since the last one)`, or `None` (counted, to be reported later).
pub(crate) fn admit(kind: impl Hash) -> Option<u64> {
    admit_at(kind, Instant::now())
}

fn admit_at(kind: impl Hash, now: Instant) -> Option<u64> {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    let key = h.finish();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.len() >= MAX_KINDS && !last.contains_key(&key) {
        last.clear();
    }
    match last.get_mut(&key) {
        Some((at, held)) if now.duration_since(*at) < WINDOW => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let n = *held;
            (*at, *held) = (now, 0);
            Some(n)
        }
        None => {
            last.insert(key, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_logs_once_a_window_and_then_says_how_many_it_held_back() {
        let t = Instant::now();
        let kind = ("test-caller", "Score", "ResourceExhausted", t);
        assert_eq!(admit_at(kind, t), Some(0));
        for i in 1..=1000 {
            assert_eq!(admit_at(kind, t + Duration::from_millis(i)), None);
        }
        // Another kind is not held back by this one.
        assert_eq!(admit_at(("other", t), t), Some(0));
        assert_eq!(admit_at(kind, t + WINDOW), Some(1000));
        assert_eq!(admit_at(kind, t + WINDOW + Duration::from_millis(1)), None);
    }
}

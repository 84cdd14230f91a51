//! Plain-Rust instruments that library code can afford on its hot paths:
//! atomics only, no locks, no allocation, no exporter. `service::metrics`
//! reads them at scrape time and writes them out for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of [`Latency`]'s buckets, in seconds (a sled flush here
/// takes 0.5–3 ms; a full disk or a slow device much longer).
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations at or below each bound (not cumulative; the last slot
    /// is above every bound).
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What a [`Latency`] has seen (cumulative since it was made).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Per bucket of [`LATENCY_BOUNDS`], then above them all; not cumulative.
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub sum_nanos: u64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let l = Latency::default();
        l.observe(Duration::from_micros(100)); // on the first bound
        l.observe(Duration::from_micros(700));
        l.observe(Duration::from_secs(10)); // above every bound
        let s = l.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[3], 1, "0.7 ms is in (0.5, 1] ms");
        assert_eq!(s.buckets[LATENCY_BOUNDS.len()], 1);
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum_nanos, 10_000_800_000);
    }
}

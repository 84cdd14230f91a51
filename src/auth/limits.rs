//! Per-caller limits: calls in flight and calls per second, counted per
//! caller name, so one noisy caller cannot starve the others.
//!
//! A call over a limit is refused at once (RESOURCE_EXHAUSTED), not
//! queued: a queue would only move the wait into the caller's deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The limits for each caller; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallerLimits {
    /// Calls one caller may have in flight at once.
    pub in_flight: Option<u32>,
    /// Calls one caller may start per second (bursts up to one second's
    /// worth).
    pub per_second: Option<f64>,
}

/// Which limit refused a call.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum OverLimit {
    #[error(
        "caller has {0} calls in flight, the limit (--caller-max-in-flight); retry when one finishes"
    )]
    InFlight(u32),
    #[error("caller is over {0} calls per second (--caller-max-per-second); retry shortly")]
    PerSecond(f64),
}

#[derive(Debug)]
struct Bucket {
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
}

/// The counters of every caller seen.
#[derive(Debug)]
pub struct Limiter {
    limits: CallerLimits,
    callers: Mutex<HashMap<String, Bucket>>,
}

/// Held while a call runs; dropping it frees the caller's in-flight slot.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    caller: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut callers = self
            .limiter
            .callers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = callers.get_mut(&self.caller) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

impl Limiter {
    pub fn new(limits: CallerLimits) -> Arc<Self> {
        Arc::new(Limiter {
            limits,
            callers: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> CallerLimits {
        self.limits
    }

    /// Admits one call of `caller` at `now`, or says which limit it hit.
    /// With no limits set this does nothing (no lock is taken).
    pub fn admit(
        self: &Arc<Self>,
        caller: &str,
        now: Instant,
    ) -> Result<Option<Permit>, OverLimit> {
        if self.limits == CallerLimits::default() {
            return Ok(None);
        }
        let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
        let burst = self.limits.per_second.unwrap_or(0.0).max(1.0);
        let b = callers.entry(caller.to_string()).or_insert(Bucket {
            in_flight: 0,
            tokens: burst,
            refilled: now,
        });
        if let Some(max) = self.limits.in_flight
            && b.in_flight >= max
        {
            return Err(OverLimit::InFlight(max));
        }
        if let Some(rate) = self.limits.per_second {
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.refilled = now;
            if b.tokens < 1.0 {
                return Err(OverLimit::PerSecond(rate));
            }
            b.tokens -= 1.0;
        }
        b.in_flight += 1;
        Ok(Some(Permit {
            limiter: self.clone(),
            caller: caller.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn in_flight_limit_is_per_caller_and_freed_on_drop() {
        let l = Limiter::new(CallerLimits {
            in_flight: Some(2),
            per_second: None,
        });
        let now = Instant::now();
        let a1 = l.admit("a", now).unwrap();
        let _a2 = l.admit("a", now).unwrap();
        assert_eq!(l.admit("a", now).unwrap_err(), OverLimit::InFlight(2));
        assert!(l.admit("b", now).is_ok(), "another caller is not starved");
        drop(a1);
        assert!(l.admit("a", now).is_ok());
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let l = Limiter::new(CallerLimits {
            in_flight: None,
            per_second: Some(5.0),
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            l.admit("a", t0).unwrap();
        }
        assert_eq!(l.admit("a", t0).unwrap_err(), OverLimit::PerSecond(5.0));
        assert!(l.admit("b", t0).is_ok());
        assert!(l.admit("a", t0 + Duration::from_millis(250)).is_ok());
    }

    #[test]
    fn no_limits_admit_everything() {
        let l = Limiter::new(CallerLimits::default());
        for _ in 0..1000 {
            assert!(l.admit("a", Instant::now()).unwrap().is_none());
        }
    }
}

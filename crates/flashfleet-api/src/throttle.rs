//! Per-user rate limits (upstream: DRF's `ScopedRateThrottle`, scope `firmware_upgrader`,
//! 1000 requests a minute per user), with governor's GCRA: a user may spend the whole
//! allowance in a burst, and it refills evenly over the period.
//!
//! The limit is per server process, as upstream's is per cache: several servers behind one
//! load balancer each allow the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Throttle;
use crate::error::ApiError;

/// How many checks between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 4096;

/// Rate limits keyed by caller (a user id, or an address for anonymous calls).
pub(crate) struct RequestThrottle {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl RequestThrottle {
    /// A throttle allowing `rate`.
    pub(crate) fn new(rate: Throttle) -> RequestThrottle {
        let period = rate.per / rate.requests.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(rate.requests))
            .allow_burst(rate.requests);
        let clock = DefaultClock::default();
        RequestThrottle {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts a request of `key`; refused with how long to wait when over the rate.
    pub(crate) fn check(&self, key: &str) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| ApiError::Throttled {
                wait: not_until.wait_time_from(self.clock.now()),
            })
    }
}

impl std::fmt::Debug for RequestThrottle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RequestThrottle")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_rate_is_refused_and_others_are_not() {
        let throttle = RequestThrottle::new(Throttle::per_minute(3));
        for _ in 0..3 {
            assert!(throttle.check("alice").is_ok());
        }
        match throttle.check("alice") {
            Err(ApiError::Throttled { wait }) => {
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(20),
                    "{wait:?}"
                );
            }
            other => panic!("expected a throttled error, got {other:?}"),
        }
        assert!(throttle.check("bob").is_ok());
    }
}

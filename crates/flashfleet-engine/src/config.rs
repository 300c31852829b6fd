//! The engine's settings, with upstream's defaults.

use std::time::Duration;

use backon::BackoffBuilder;
use serde::Deserialize;

/// How recoverable failures are retried (upstream `OPENWISP_FIRMWARE_UPGRADER_RETRY_OPTIONS`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (upstream `max_retries`, 4).
    pub max_retries: u32,
    /// Delay before the first retry, doubled for each next one (upstream `retry_backoff`, 60 s).
    #[serde(with = "seconds")]
    pub backoff: Duration,
    /// Longest delay (upstream `retry_backoff_max`, 600 s).
    #[serde(with = "seconds")]
    pub backoff_max: Duration,
    /// Whether delays are jittered (upstream `retry_jitter`, true). backon's jitter adds up to
    /// one more delay (the delay lies between d and 2d), where celery's picks one between 0
    /// and d: retries never come sooner than the configured backoff.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            backoff: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry), `None` when no retry is
    /// left.
    pub fn delay_before(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        let mut builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.backoff)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build().nth(retry as usize - 1)
    }
}

/// Settings of one engine.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The name this engine writes into the leases it holds; unique per process.
    pub name: String,
    /// Upgrades running at once in this engine.
    pub max_in_flight: usize,
    /// Image uploads running at once in this engine (the other steps of an upgrade are light;
    /// uploads use the bandwidth and the CPU of SSH encryption).
    pub max_uploads: usize,
    /// Upgrades at once in the steps from connecting to the end of the upload; the others wait,
    /// still queued, before connecting. This bounds the SSH sessions open before uploads and
    /// keeps the first uploads from competing with the checks of the whole fleet. Waiting for
    /// reboots is not bounded by it.
    pub max_preparing: usize,
    /// How long a claim lasts without a heartbeat.
    #[serde(with = "seconds")]
    pub lease: Duration,
    /// How often leases are renewed (well below `lease`).
    #[serde(with = "seconds")]
    pub heartbeat: Duration,
    /// How often the queue is polled when idle.
    #[serde(with = "seconds")]
    pub poll_interval: Duration,
    /// An operation unfinished this long after its first start is failed
    /// (upstream `OPENWISP_FIRMWARE_UPGRADER_TASK_TIMEOUT`, 1500 s).
    #[serde(with = "seconds")]
    pub task_timeout: Duration,
    /// How long the engine may spend finding out what a device runs when an operation is at
    /// or past the flash and its upgrade cannot simply finish (found so after a crash or a
    /// restart, past the task timeout, device deactivated): reconnecting, reading what the
    /// device runs, and flashing again only if the device proves the first flash never
    /// reached it. When it is spent, the operation ends `failed` with "could not verify what
    /// the device runs", its image not recorded as installed.
    #[serde(with = "seconds")]
    pub verification_budget: Duration,
    /// Retries of recoverable failures.
    pub retry: RetryPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            name: format!(
                "engine-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            max_in_flight: 100,
            max_uploads: 32,
            max_preparing: 64,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            task_timeout: Duration::from_secs(1500),
            verification_budget: Duration::from_secs(900),
            retry: RetryPolicy::default(),
        }
    }
}

/// Durations in configuration files are seconds (fractions allowed).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_up_to_the_maximum_without_jitter() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let delays: Vec<Option<u64>> = (0..=5)
            .map(|retry| policy.delay_before(retry).map(|delay| delay.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [None, Some(60), Some(120), Some(240), Some(480), None]
        );
        let capped = RetryPolicy {
            max_retries: 6,
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(
            capped.delay_before(6).map(|delay| delay.as_secs()),
            Some(600)
        );
    }

    #[test]
    fn jittered_delays_lie_between_the_delay_and_twice_it() {
        let policy = RetryPolicy::default();
        for _ in 0..50 {
            let delay = policy.delay_before(2).unwrap();
            assert!(
                delay >= Duration::from_secs(120) && delay <= Duration::from_secs(240),
                "{delay:?}"
            );
        }
    }
}

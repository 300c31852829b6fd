//! The sample's upgrader, registered under its own connection type: OpenWrt's upgrader behind
//! a pre-flight check of the sample's own, which reads the sample's fields in the device's
//! `details` (upstream's samples subclass the OpenWrt upgrader the same way).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flashfleet_models::{UpgradeOptions, ValidationErrors};
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use flashfleet_upgrader::{UpgradeContext, UpgradeError, UpgradeOutcome, Upgrader};

/// The connection type of the sample's devices.
pub(crate) const SAMPLE_SSH: &str = "sample-ssh";
/// The start of the log line the pre-flight check writes into every operation it lets through.
pub(crate) const PREFLIGHT: &str = "sample pre-flight:";
/// The field of a device's `details` the pre-flight check requires.
pub(crate) const ROLLOUT_RING: &str = "rollout_ring";

/// What the sample's upgrader did, for the test to check.
#[derive(Debug, Default)]
pub(crate) struct UpgraderCalls {
    /// Upgrades let through the pre-flight check (then run by the OpenWrt upgrader).
    pub(crate) upgrades: AtomicUsize,
    /// Upgrades refused by the pre-flight check.
    pub(crate) refused: AtomicUsize,
    /// Verifications (after a restart past the flash).
    pub(crate) verifications: AtomicUsize,
}

impl UpgraderCalls {
    pub(crate) fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }

    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    pub(crate) fn verifications(&self) -> usize {
        self.verifications.load(Ordering::SeqCst)
    }
}

/// OpenWrt's upgrader, run only on devices whose `details` name their rollout ring.
pub(crate) struct SampleUpgrader {
    openwrt: OpenWrtUpgrader,
    calls: Arc<UpgraderCalls>,
}

impl SampleUpgrader {
    /// The sample's upgrader, with OpenWrt timings short enough for simulated devices.
    pub(crate) fn new(calls: Arc<UpgraderCalls>) -> SampleUpgrader {
        SampleUpgrader {
            openwrt: OpenWrtUpgrader::new(OpenWrtSettings {
                reconnect_delay: Duration::from_millis(300),
                reconnect_retry_delay: Duration::from_millis(200),
                reconnect_max_retries: 100,
                upgrade_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(3),
                command_timeout: Duration::from_secs(20),
                ..OpenWrtSettings::default()
            }),
            calls,
        }
    }
}

#[async_trait]
impl Upgrader for SampleUpgrader {
    fn validate_options(
        &self,
        options: &UpgradeOptions,
        allow_force: bool,
    ) -> Result<(), ValidationErrors> {
        self.openwrt.validate_options(options, allow_force)
    }

    async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        let device = &context.device;
        let Some(ring) = device
            .details
            .get(ROLLOUT_RING)
            .and_then(|ring| ring.as_str())
        else {
            self.calls.refused.fetch_add(1, Ordering::SeqCst);
            // Nothing was sent to the device: an abort, not retried.
            return Err(UpgradeError::aborted(format!(
                "{PREFLIGHT} device {} has no {ROLLOUT_RING} in its details",
                device.name
            )));
        };
        context
            .log(&format!(
                "{PREFLIGHT} device {} is in rollout ring {ring}",
                device.name
            ))
            .await?;
        self.calls.upgrades.fetch_add(1, Ordering::SeqCst);
        self.openwrt.upgrade(context).await
    }

    async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        self.calls.verifications.fetch_add(1, Ordering::SeqCst);
        self.openwrt.verify(context).await
    }
}

//! flashfleet's upgrade engine: it runs the upgrade operations that the database queues.
//!
//! - **Durable and shared.** Operations are claimed from the database with leases
//!   ([`UpgradeRepository::claim_operations`](flashfleet_models::repository::UpgradeRepository))
//!   and heartbeats; several engines (several `flashfleet serve` processes on one PostgreSQL)
//!   share the work and never run one operation twice. An operation whose engine died is
//!   claimed again when its lease expires and recovered by its phase: before the flash it is
//!   run again, at or after the flash it is only verified — a device is never flashed twice
//!   blindly.
//! - **Retries** of recoverable failures wait an exponential, jittered delay (backon), persisted
//!   as the operation's `next_attempt_at`, so a restart keeps the schedule.
//! - **Timeouts**: an operation unfinished past the task timeout is failed and frees its device.
//! - **Events**: every persisted change is published on an in-process [`EventBus`].
//!
//! Invariant: nothing here knows HTTP or SQL; persistence is the repository traits of
//! `flashfleet-models`, upgrades are the `Upgrader` trait of `flashfleet-upgrader`.

mod config;
mod error;
mod events;
mod files;
mod hooks;
mod mass_upgrade;
mod reporter;
mod runner;
mod worker;

pub use crate::config::{EngineConfig, RetryPolicy};
pub use crate::error::EngineError;
pub use crate::events::{Event, EventBus};
pub use crate::files::FirmwareFiles;
pub use crate::mass_upgrade::{
    MassUpgradeRequest, PlannedUpgrade, SkippedDevice, StartedMassUpgrade, UpgradePlan,
};
pub use crate::worker::Engine;

//! The `Upgrader` extension point: how flashfleet puts an image on a device.
//!
//! An [`Upgrader`] receives an [`UpgradeContext`] (the device, how to reach it, the image as a
//! stream, the options, and a [`Reporter`] that persists progress and log lines) and either
//! returns an [`UpgradeOutcome`] or an [`UpgradeError`] whose variant tells the engine what to
//! do next (retry, abort, cancel, fail, fail after the flash command without proof of what the
//! device runs, or stop because another engine holds the operation).
//! The [`UpgraderRegistry`] maps connection types (upstream's `UPGRADERS_MAP`) to upgraders, so
//! integrators register their own.
//!
//! With the default feature `openwrt`, the [`openwrt`] module provides the OpenWrt upgrader over
//! SSH (libssh2), following upstream's steps and deciding outcomes from facts read on the
//! device, never from log text.
//!
//! Invariants:
//! - nothing here knows about HTTP, SQL or storage backends; the image arrives as a stream;
//! - only the `openwrt` module names `ssh2`;
//! - blocking SSH work runs on tokio's blocking pool, and dropping an upgrade future (or a
//!   deadline passing) shuts its SSH connection down, so no blocking thread outlives it for
//!   long nor holds its image stream; waiting for a reboot is an async timer and holds no
//!   thread.

mod context;
mod error;
#[cfg(feature = "openwrt")]
pub mod openwrt;
mod registry;

use async_trait::async_trait;
use flashfleet_models::{UpgradeOptions, ValidationErrors};

pub use crate::context::{
    ConnectionTarget, DeviceRelease, FlashRecord, HostKey, ImageSource, Reporter, UpgradeContext,
    UpgradeImage,
};
pub use crate::error::{BoxError, ReportError, UpgradeError};
pub use crate::registry::UpgraderRegistry;

/// How a successful upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeOutcome {
    /// The device was flashed and now runs the image; `release` is what it reported after the
    /// reboot, when the upgrader could read it.
    Upgraded {
        /// What the device runs now.
        release: Option<DeviceRelease>,
    },
    /// The device already ran this image (its checksum marker matched, or it runs the image's
    /// release on a board the image supports): it was not flashed, at most its checksum marker
    /// was written. Upstream's `UpgradeNotNeeded`.
    AlreadyInstalled,
}

/// Puts an image on a device.
///
/// # What an implementor must guarantee
///
/// - **Report before acting.** Await [`UpgradeContext::enter`] (or
///   [`Reporter::progress`]) when entering each phase, before doing its work. Enter
///   [`UpgradePhase::Flashing`](flashfleet_models::UpgradePhase::Flashing) only through
///   [`UpgradeContext::begin_flash`] ([`Reporter::begin_flash`]), with the device's boot id
///   read just before when it has one, and send anything that may start writing the flash only
///   once it returned `Ok`: the engine's implementation is a guarded write that succeeds once
///   per operation. The engine relies on it to never flash a device twice by accident: an
///   operation recorded before `Flashing` is retried, one at or past it is only
///   [verified](Upgrader::verify).
/// - **Honour cancellation before the flash.** Call [`UpgradeContext::checkpoint`] between
///   steps; a report that returns [`ReportError::Cancelled`] means the same. Restore what was
///   changed (services stopped to free memory) and return [`UpgradeError::Cancelled`]. After
///   the flash command, cancellation is not possible.
/// - **Stop at once when the lease is lost.** A report or checkpoint that returns
///   [`ReportError::LeaseLost`] means another engine holds the operation now: return
///   [`UpgradeError::LeaseLost`] without sending anything more to the device, not even to
///   restore what was changed (the new holder starts over or verifies).
/// - **Leave the device untouched on [`UpgradeError::Aborted`]** (or restore it).
/// - **Decide the outcome from facts** read on the device (after the reboot: its release,
///   board, checksum marker, boot id), never by matching log text or from the flash command's
///   exit status. [`UpgradeOutcome::Upgraded`] only when the device is seen running the image;
///   otherwise, once the flash command may have been sent, [`UpgradeError::FlashedNotSeenAgain`]
///   (the device did not come back, came back with something else, or could not be verified):
///   the operation fails and the image is not recorded as installed.
/// - **Never block the async runtime**: run blocking I/O on the blocking pool, and wait with
///   async timers.
/// - **Stream the image**: read it from [`UpgradeImage::source`], never whole into memory.
/// - **Never log secrets** (passwords, private keys) to the reporter or to tracing.
///
/// # Example
///
/// A minimal upgrader for devices that pull their firmware themselves: it only asks the device
/// (here, pretends to) and reports each phase.
///
/// ```
/// use async_trait::async_trait;
/// use flashfleet_models::{UpgradeOptions, UpgradePhase, ValidationErrors};
/// use flashfleet_upgrader::{UpgradeContext, UpgradeError, UpgradeOutcome, Upgrader};
///
/// struct PullUpgrader;
///
/// #[async_trait]
/// impl Upgrader for PullUpgrader {
///     fn validate_options(&self, options: &UpgradeOptions, _allow_force: bool) -> Result<(), ValidationErrors> {
///         if options.is_empty() {
///             Ok(())
///         } else {
///             Err(ValidationErrors::field("upgrade_options", "Using upgrade options is not allowed with this upgrader."))
///         }
///     }
///
///     async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
///         context.enter(UpgradePhase::Connecting, "asking the device to pull its image").await?;
///         context.checkpoint().await?;
///         // The last report before anything may write the flash (no boot id to read here).
///         context.begin_flash(None, "the device is flashing").await?;
///         // ... tell the device where to download `context.image`, wait, reconnect ...
///         self.verify(context).await
///     }
///
///     async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
///         context.log("checking what the device runs").await?;
///         // ... read the release from the device and compare it with the image ...
///         Err(UpgradeError::FlashedNotSeenAgain {
///             message: "could not verify what the device runs".to_owned(),
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Upgrader: Send + Sync {
    /// Checks upgrade options before an operation is queued (upstream's `SCHEMA` and
    /// `validate_upgrade_options`). `allow_force` says whether the caller may ask to flash
    /// images that fail their checks.
    fn validate_options(
        &self,
        options: &UpgradeOptions,
        allow_force: bool,
    ) -> Result<(), ValidationErrors>;

    /// Runs the whole upgrade.
    async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError>;

    /// After a crash, restart or timeout that interrupted an upgrade at or past the flash
    /// ([`UpgradeContext::previous_flash`] says what was recorded of it): checks whether the
    /// device now runs the image (reconnecting as after a reboot), and finishes the upgrade's
    /// bookkeeping on the device if it does. Reports no phase (the operation is past them),
    /// only log lines.
    ///
    /// Never flashes, with one exception: when the device proves that the recorded flash
    /// command never reached it (OpenWrt: the same boot id as recorded, its old release, no
    /// flash running), the upgrader may call [`Reporter::restart_unflashed`] with those facts
    /// and, once it returned `Ok`, run the whole [upgrade](Upgrader::upgrade) again.
    async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError>;
}

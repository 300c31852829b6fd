//! What can end an upgrade other than success, sorted by what the engine does about it.

/// A boxed error, for causes from transports this crate does not name (SSH libraries, custom
/// upgraders' own errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How an upgrade ended when it did not succeed. The engine acts on the variant:
///
/// | variant | operation status | device firmware installed | retried |
/// | --- | --- | --- | --- |
/// | [`Recoverable`](UpgradeError::Recoverable) | stays `in-progress`, then `failed` when no retry is left | no | yes, with backoff |
/// | [`Aborted`](UpgradeError::Aborted) | `aborted` | no | no |
/// | [`Cancelled`](UpgradeError::Cancelled) | `cancelled` | no | no |
/// | [`FlashedNotSeenAgain`](UpgradeError::FlashedNotSeenAgain) | `failed` | no (only facts read on the device say installed) | no |
/// | [`Failed`](UpgradeError::Failed) | `failed` | no | no |
/// | [`LeaseLost`](UpgradeError::LeaseLost) | left to the engine that holds it now | unchanged | by that engine |
///
/// Upstream's `UpgradeNotNeeded` exception is not an error here: it is the successful outcome
/// [`UpgradeOutcome::AlreadyInstalled`](crate::UpgradeOutcome::AlreadyInstalled).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// A transient failure before anything irreversible happened (the device could not be
    /// reached, the upload broke): the same upgrade may work later.
    #[error("{message}")]
    Recoverable {
        /// What failed, for the operation log.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The upgrade was stopped before the device was changed, and retrying would not help: the
    /// device is not the one expected, the image does not fit it, there is not enough memory.
    /// Services stopped to free memory have been started again.
    #[error("{reason}")]
    Aborted {
        /// Why, for the operation log.
        reason: String,
    },
    /// A user cancelled the operation before the flash; services stopped to free memory have
    /// been started again.
    #[error("upgrade was cancelled")]
    Cancelled,
    /// The flash command was sent but the device did not come back, came back running
    /// something else than the image, or could not be verified: the operation fails and the
    /// image is not recorded as installed (a device that does run it is recognised before the
    /// next flash, by its release or its checksum marker, and never flashed twice).
    #[error("{message}")]
    FlashedNotSeenAgain {
        /// What was observed, for the operation log.
        message: String,
    },
    /// Any other failure; not retried.
    #[error("{message}")]
    Failed {
        /// What failed, for the operation log.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// Another engine holds the operation now ([`ReportError::LeaseLost`]): the upgrader
    /// stopped at once, without sending anything more to the device (not even to restore
    /// services; the new holder starts over or verifies).
    #[error("another engine holds this operation now")]
    LeaseLost,
}

impl UpgradeError {
    /// A recoverable failure with a message and no cause.
    pub fn recoverable(message: impl Into<String>) -> Self {
        UpgradeError::Recoverable {
            message: message.into(),
            source: None,
        }
    }

    /// An abort with its reason.
    pub fn aborted(reason: impl Into<String>) -> Self {
        UpgradeError::Aborted {
            reason: reason.into(),
        }
    }

    /// A final failure with a message and no cause.
    pub fn failed(message: impl Into<String>) -> Self {
        UpgradeError::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// Whether the engine should try again later.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, UpgradeError::Recoverable { .. })
    }

    /// Whether the device may now run the new image although the upgrade did not succeed.
    pub fn may_have_flashed(&self) -> bool {
        matches!(self, UpgradeError::FlashedNotSeenAgain { .. })
    }

    /// Whether the upgrader stopped because another engine holds the operation now.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, UpgradeError::LeaseLost)
    }
}

/// What the caller's [`Reporter`](crate::Reporter) could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The operation was cancelled (or otherwise ended) meanwhile: stop, restoring what was
    /// changed.
    #[error("the operation was cancelled")]
    Cancelled,
    /// Another engine claimed the operation since (this engine's lease expired): stop at once
    /// and send nothing more to the device, not even to restore what was changed.
    #[error("another engine holds this operation now")]
    LeaseLost,
    /// Persisting the report failed; the upgrade must not go on without its record.
    #[error("could not record the upgrade's progress: {0}")]
    Persistence(#[source] BoxError),
}

impl From<ReportError> for UpgradeError {
    fn from(error: ReportError) -> Self {
        match error {
            ReportError::Cancelled => UpgradeError::Cancelled,
            ReportError::LeaseLost => UpgradeError::LeaseLost,
            ReportError::Persistence(source) => UpgradeError::Recoverable {
                message: "could not record the upgrade's progress".to_owned(),
                source: Some(source),
            },
        }
    }
}

//! Upgrade operations: one attempt to put one image on one device, with its status machine,
//! its phases and its log.
//!
//! Status machine (upstream §2.1): an operation starts `in-progress` and ends in exactly one of
//! `success`, `failed`, `aborted` or `cancelled`; a final status never changes again. Retries
//! reuse the operation while it is `in-progress`.
//!
//! The phase says where an `in-progress` operation is; it decides what cancellation and crash
//! recovery may do. Once the flash command may have been sent ([`UpgradePhase::Flashing`] and
//! later) the operation cannot be cancelled, and a recovered operation is only verified, never
//! flashed again.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{CancelError, TransitionError, ValidationErrors};
use crate::id::{BatchId, DeviceId, ImageId, OperationId};
use crate::upgrade_options::UpgradeOptions;
use crate::{Details, time};

/// The status of an upgrade operation (upstream's values, as upstream clients expect them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UpgradeStatus {
    /// Queued or running.
    #[serde(rename = "in-progress")]
    InProgress,
    /// The device runs the image.
    #[serde(rename = "success")]
    Success,
    /// Something went wrong; the device may or may not run the image (see the log).
    #[serde(rename = "failed")]
    Failed,
    /// Stopped by a user before the flash.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Stopped before touching the device (identity mismatch, not enough memory, image refused
    /// by `sysupgrade --test`, device deactivated): retrying would not help.
    #[serde(rename = "aborted")]
    Aborted,
}

impl UpgradeStatus {
    /// Every status, in upstream's choice order.
    pub const ALL: [UpgradeStatus; 5] = [
        UpgradeStatus::InProgress,
        UpgradeStatus::Success,
        UpgradeStatus::Failed,
        UpgradeStatus::Cancelled,
        UpgradeStatus::Aborted,
    ];

    /// Its name as stored and serialized (`in-progress`, `success`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            UpgradeStatus::InProgress => "in-progress",
            UpgradeStatus::Success => "success",
            UpgradeStatus::Failed => "failed",
            UpgradeStatus::Cancelled => "cancelled",
            UpgradeStatus::Aborted => "aborted",
        }
    }

    /// Whether the status is final.
    pub fn is_final(&self) -> bool {
        !matches!(self, UpgradeStatus::InProgress)
    }

    /// Checks that the status machine allows going from `self` to `to`: only from `in-progress`
    /// to a final status.
    pub fn transition(self, to: UpgradeStatus) -> Result<UpgradeStatus, TransitionError> {
        if self == UpgradeStatus::InProgress && to.is_final() {
            Ok(to)
        } else {
            Err(TransitionError {
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

impl fmt::Display for UpgradeStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for UpgradeStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown upgrade status `{text}`"))
    }
}

/// Where an operation is, phase by phase (ARCHITECTURE-PLAN "The upgrade of one device").
///
/// Phases are ordered; each has the progress value an operation shows when it enters it, using
/// upstream's milestones where upstream has one (10 connected, 15 identity verified, 20
/// checksum compared, 65 flashing, 90 reconnected, 100 complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UpgradePhase {
    /// Waiting for an engine to pick it up.
    Queued,
    /// Opening the connection.
    Connecting,
    /// Checking the device is the one we think it is.
    VerifyingIdentity,
    /// Comparing the checksum of the installed image.
    ComparingChecksum,
    /// Checking (and freeing) memory for the upload.
    CheckingMemory,
    /// Uploading the image.
    Uploading,
    /// Letting the device test the image (`sysupgrade --test`, metadata check).
    TestingImage,
    /// The flash command may have been sent: no cancellation, no second flash.
    Flashing,
    /// Waiting for the device to reboot.
    WaitingForReboot,
    /// Reconnecting after the reboot.
    Reconnecting,
    /// Checking what the device now runs.
    VerifyingVersion,
    /// Writing the checksum marker.
    WritingChecksum,
    /// Finished (whatever the status).
    Done,
}

impl UpgradePhase {
    /// Every phase, in order.
    pub const ALL: [UpgradePhase; 13] = [
        UpgradePhase::Queued,
        UpgradePhase::Connecting,
        UpgradePhase::VerifyingIdentity,
        UpgradePhase::ComparingChecksum,
        UpgradePhase::CheckingMemory,
        UpgradePhase::Uploading,
        UpgradePhase::TestingImage,
        UpgradePhase::Flashing,
        UpgradePhase::WaitingForReboot,
        UpgradePhase::Reconnecting,
        UpgradePhase::VerifyingVersion,
        UpgradePhase::WritingChecksum,
        UpgradePhase::Done,
    ];

    /// Upstream's cancellation threshold: progress at which reflashing starts.
    pub const CANCELLATION_THRESHOLD: u8 = 65;

    /// Its name as stored and serialized (`queued`, `verifying-identity`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            UpgradePhase::Queued => "queued",
            UpgradePhase::Connecting => "connecting",
            UpgradePhase::VerifyingIdentity => "verifying-identity",
            UpgradePhase::ComparingChecksum => "comparing-checksum",
            UpgradePhase::CheckingMemory => "checking-memory",
            UpgradePhase::Uploading => "uploading",
            UpgradePhase::TestingImage => "testing-image",
            UpgradePhase::Flashing => "flashing",
            UpgradePhase::WaitingForReboot => "waiting-for-reboot",
            UpgradePhase::Reconnecting => "reconnecting",
            UpgradePhase::VerifyingVersion => "verifying-version",
            UpgradePhase::WritingChecksum => "writing-checksum",
            UpgradePhase::Done => "done",
        }
    }

    /// The progress an operation shows when it enters this phase.
    pub fn milestone(&self) -> u8 {
        match self {
            UpgradePhase::Queued => 0,
            UpgradePhase::Connecting => 5,
            UpgradePhase::VerifyingIdentity => 10,
            UpgradePhase::ComparingChecksum => 15,
            UpgradePhase::CheckingMemory => 20,
            UpgradePhase::Uploading => 25,
            UpgradePhase::TestingImage => 60,
            UpgradePhase::Flashing => Self::CANCELLATION_THRESHOLD,
            UpgradePhase::WaitingForReboot => 70,
            UpgradePhase::Reconnecting => 80,
            UpgradePhase::VerifyingVersion => 90,
            UpgradePhase::WritingChecksum => 95,
            UpgradePhase::Done => 100,
        }
    }

    /// Whether the flash command may have been sent in this phase: from here on the device must
    /// not be flashed again blindly and the operation cannot be cancelled.
    pub fn is_past_flash(&self) -> bool {
        *self >= UpgradePhase::Flashing
    }

    /// Checks that an operation may move from `self` to `to`: phases only go forward (an
    /// operation may stay in a phase, and may go back to `Queued` before the flash, to be
    /// retried).
    pub fn advance(self, to: UpgradePhase) -> Result<UpgradePhase, TransitionError> {
        let retry = to == UpgradePhase::Queued && !self.is_past_flash();
        if to >= self || retry {
            Ok(to)
        } else {
            Err(TransitionError {
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

impl fmt::Display for UpgradePhase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for UpgradePhase {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|phase| phase.as_str() == text)
            .ok_or_else(|| format!("unknown upgrade phase `{text}`"))
    }
}

/// One upgrade of one device (upstream `UpgradeOperation`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpgradeOperation {
    /// Its id.
    pub id: OperationId,
    /// The device.
    pub device_id: DeviceId,
    /// The image; `None` once the image has been deleted (the operation is kept).
    pub image_id: Option<ImageId>,
    /// The mass upgrade it belongs to, if any.
    pub batch_id: Option<BatchId>,
    /// Its status.
    pub status: UpgradeStatus,
    /// Where it is.
    pub phase: UpgradePhase,
    /// 0 to 100.
    pub progress: u8,
    /// What happened, one line per step.
    pub log: String,
    /// Options for the upgrader (for OpenWrt, the sysupgrade flags).
    pub upgrade_options: UpgradeOptions,
    /// How many attempts have started.
    pub attempts: u32,
    /// When the next attempt may start (after a recoverable failure).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the first attempt started.
    pub started: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished: Option<DateTime<Utc>>,
    /// The engine working on it and until when, if one claimed it.
    pub lease: Option<Lease>,
    /// How many times the operation entered [`UpgradePhase::Flashing`], each time just before
    /// a flash command was sent (a second time only after the device proved that the first
    /// never happened).
    pub flash_attempts: u32,
    /// The device's boot id (`/proc/sys/kernel/random/boot_id`) read just before the last
    /// flash command, if the upgrader could read one: a device that answers with the same boot
    /// id has not rebooted since.
    pub flash_boot_id: Option<String>,
    /// The image as it was when the last flash was recorded, so that the operation can still
    /// be verified once its image was deleted.
    pub flash_image: Option<Box<crate::FirmwareImage>>,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// An engine's claim on an operation: the engine renews it while it works; once it expires
/// (the engine stopped or crashed), another engine may claim the operation and recover it by its
/// phase.
///
/// Expiry is written and compared with the database's clock, never an engine's, so servers
/// whose clocks disagree still agree on whose lease is live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The name of the engine holding it.
    pub owner: String,
    /// When it expires unless renewed (the database's clock).
    pub expires_at: DateTime<Utc>,
    /// The fencing token: incremented by every claim of the operation. Every write an engine
    /// makes for the operation is conditioned on the epoch it claimed with, so a former holder
    /// whose lease expired can write nothing once another engine claimed it.
    pub epoch: u64,
}

impl Lease {
    /// The fence an engine holding this lease writes with.
    pub fn fence(&self) -> Fence {
        Fence {
            owner: self.owner.clone(),
            epoch: self.epoch,
        }
    }
}

/// What an engine's writes for a claimed operation are conditioned on: its name and the lease
/// epoch it claimed with. A write whose fence is no longer the operation's is refused with
/// [`RepoError::LeaseLost`](crate::RepoError::LeaseLost).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The engine's name.
    pub owner: String,
    /// The lease epoch of its claim.
    pub epoch: u64,
}

impl Fence {
    /// Whether `lease` is still the one this fence was taken from.
    pub fn holds(&self, lease: Option<&Lease>) -> bool {
        lease.is_some_and(|lease| lease.owner == self.owner && lease.epoch == self.epoch)
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} (lease epoch {})", self.owner, self.epoch)
    }
}

/// The fields of a new upgrade operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewUpgradeOperation {
    /// The device.
    pub device_id: DeviceId,
    /// The image.
    pub image_id: ImageId,
    /// The mass upgrade, if any.
    pub batch_id: Option<BatchId>,
    /// Options for the upgrader.
    pub upgrade_options: UpgradeOptions,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewUpgradeOperation {
    /// An operation putting `image_id` on `device_id` with default options.
    pub fn new(device_id: DeviceId, image_id: ImageId) -> Self {
        Self {
            device_id,
            image_id,
            batch_id: None,
            upgrade_options: UpgradeOptions::default(),
            details: Details::new(),
        }
    }

    /// The queued operation this would be once stored.
    pub fn into_operation(self) -> UpgradeOperation {
        let now = time::now();
        UpgradeOperation {
            id: OperationId::new(),
            device_id: self.device_id,
            image_id: Some(self.image_id),
            batch_id: self.batch_id,
            status: UpgradeStatus::InProgress,
            phase: UpgradePhase::Queued,
            progress: 0,
            log: String::new(),
            upgrade_options: self.upgrade_options,
            attempts: 0,
            next_attempt_at: None,
            started: None,
            finished: None,
            lease: None,
            flash_attempts: 0,
            flash_boot_id: None,
            flash_image: None,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl UpgradeOperation {
    /// Whether a user may cancel it now (see [`check_cancel`]).
    pub fn check_cancel(&self) -> Result<(), CancelError> {
        check_cancel(self.status, self.phase, self.progress)
    }

    /// Appends a line to the log, as upstream's `log_line` does.
    pub fn log_line(&mut self, line: &str) {
        append_log(&mut self.log, line);
    }
}

/// Upstream's cancellation rule: only an `in-progress` operation that has not reached the
/// flash (phase before [`UpgradePhase::Flashing`] and progress below 65) can be cancelled.
pub fn check_cancel(
    status: UpgradeStatus,
    phase: UpgradePhase,
    progress: u8,
) -> Result<(), CancelError> {
    if status.is_final() {
        return Err(CancelError::Finished { status });
    }
    if phase.is_past_flash() || progress >= UpgradePhase::CANCELLATION_THRESHOLD {
        return Err(CancelError::FlashStarted { phase });
    }
    Ok(())
}

/// The line upstream appends when a user cancels.
pub const CANCELLED_BY_USER: &str = "Upgrade operation has been cancelled by user";

/// Appends `line` to `log`: after a newline, or alone when the log is empty.
pub fn append_log(log: &mut String, line: &str) {
    if !log.is_empty() {
        log.push('\n');
    }
    log.push_str(line);
}

/// Upstream's progress rule: a number from 0 to 100, stored truncated to an integer.
pub fn validate_progress(progress: f64) -> Result<u8, ValidationErrors> {
    if !progress.is_finite() {
        return Err(ValidationErrors::field(
            "progress",
            "Progress must be numeric",
        ));
    }
    if !(0.0..=100.0).contains(&progress) {
        return Err(ValidationErrors::field(
            "progress",
            format!("Progress must be between 0-100, got {progress}"),
        ));
    }
    // The range check above makes the truncating conversion exact.
    Ok(progress.trunc() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_in_progress_operations_change_status() {
        for to in UpgradeStatus::ALL
            .into_iter()
            .filter(UpgradeStatus::is_final)
        {
            assert_eq!(UpgradeStatus::InProgress.transition(to), Ok(to));
        }
        assert!(
            UpgradeStatus::InProgress
                .transition(UpgradeStatus::InProgress)
                .is_err()
        );
        for from in UpgradeStatus::ALL
            .into_iter()
            .filter(UpgradeStatus::is_final)
        {
            for to in UpgradeStatus::ALL {
                let error = from.transition(to).unwrap_err();
                assert_eq!(error.from, from.as_str());
            }
        }
    }

    #[test]
    fn statuses_and_phases_round_trip_through_their_names() {
        for status in UpgradeStatus::ALL {
            assert_eq!(status.as_str().parse::<UpgradeStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for phase in UpgradePhase::ALL {
            assert_eq!(phase.as_str().parse::<UpgradePhase>(), Ok(phase));
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
        assert!("running".parse::<UpgradeStatus>().is_err());
    }

    #[test]
    fn milestones_grow_with_phases_and_match_upstream() {
        let milestones: Vec<u8> = UpgradePhase::ALL
            .iter()
            .map(UpgradePhase::milestone)
            .collect();
        assert!(
            milestones.windows(2).all(|pair| pair[0] < pair[1]),
            "{milestones:?}"
        );
        assert_eq!(UpgradePhase::VerifyingIdentity.milestone(), 10);
        assert_eq!(UpgradePhase::ComparingChecksum.milestone(), 15);
        assert_eq!(UpgradePhase::CheckingMemory.milestone(), 20);
        assert_eq!(UpgradePhase::Flashing.milestone(), 65);
        assert_eq!(UpgradePhase::VerifyingVersion.milestone(), 90);
        assert_eq!(UpgradePhase::Done.milestone(), 100);
    }

    #[test]
    fn phases_only_go_forward_except_a_retry_before_the_flash() {
        assert!(
            UpgradePhase::Uploading
                .advance(UpgradePhase::TestingImage)
                .is_ok()
        );
        assert!(
            UpgradePhase::Uploading
                .advance(UpgradePhase::Uploading)
                .is_ok()
        );
        assert!(
            UpgradePhase::Uploading
                .advance(UpgradePhase::Queued)
                .is_ok()
        );
        assert!(
            UpgradePhase::Uploading
                .advance(UpgradePhase::Connecting)
                .is_err()
        );
        assert!(
            UpgradePhase::Flashing
                .advance(UpgradePhase::Queued)
                .is_err()
        );
        assert!(
            UpgradePhase::Reconnecting
                .advance(UpgradePhase::VerifyingVersion)
                .is_ok()
        );
    }

    #[test]
    fn cancellation_is_refused_once_finished_or_flashing() {
        assert_eq!(
            check_cancel(UpgradeStatus::InProgress, UpgradePhase::Uploading, 40),
            Ok(())
        );
        assert_eq!(
            check_cancel(UpgradeStatus::Success, UpgradePhase::Done, 100)
                .unwrap_err()
                .to_string(),
            "cannot cancel operation with status: success"
        );
        assert_eq!(
            check_cancel(UpgradeStatus::InProgress, UpgradePhase::Flashing, 65)
                .unwrap_err()
                .to_string(),
            "cannot cancel upgrade: firmware reflashing has already started"
        );
        assert!(check_cancel(UpgradeStatus::InProgress, UpgradePhase::TestingImage, 65).is_err());
    }

    #[test]
    fn the_log_grows_line_by_line() {
        let mut operation =
            NewUpgradeOperation::new(DeviceId::new(), ImageId::new()).into_operation();
        operation.log_line("first");
        operation.log_line("second");
        assert_eq!(operation.log, "first\nsecond");
        assert_eq!(operation.status, UpgradeStatus::InProgress);
        assert_eq!(operation.phase, UpgradePhase::Queued);
    }

    #[test]
    fn progress_is_checked_and_truncated_as_upstream_does() {
        assert_eq!(validate_progress(75.7), Ok(75));
        assert_eq!(validate_progress(0.0), Ok(0));
        assert_eq!(validate_progress(100.0), Ok(100));
        assert_eq!(
            validate_progress(-1.0).unwrap_err().messages("progress"),
            ["Progress must be between 0-100, got -1"]
        );
        assert!(validate_progress(100.5).is_err());
        assert!(validate_progress(f64::NAN).is_err());
    }
}

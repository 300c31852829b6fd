//! Mass upgrades (upstream `BatchUpgradeOperation`): one build pushed to many devices, one
//! [`UpgradeOperation`](crate::UpgradeOperation) per device, with a status derived from theirs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{TransitionError, ValidationErrors};
use crate::id::{BatchId, BuildId, DeviceGroupId, OrganizationId};
use crate::upgrade_operation::UpgradeStatus;
use crate::upgrade_options::UpgradeOptions;
use crate::{Details, time};

/// The status of a mass upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BatchStatus {
    /// Created, no operation started yet.
    #[serde(rename = "idle")]
    Idle,
    /// Some operation has not finished.
    #[serde(rename = "in-progress")]
    InProgress,
    /// Every operation succeeded.
    #[serde(rename = "success")]
    Success,
    /// Finished, some operation failed or was aborted.
    #[serde(rename = "failed")]
    Failed,
    /// Finished, none failed, some were cancelled.
    #[serde(rename = "cancelled")]
    Cancelled,
}

impl BatchStatus {
    /// Every status, in upstream's choice order.
    pub const ALL: [BatchStatus; 5] = [
        BatchStatus::Idle,
        BatchStatus::InProgress,
        BatchStatus::Success,
        BatchStatus::Failed,
        BatchStatus::Cancelled,
    ];

    /// Its name as stored and serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            BatchStatus::Idle => "idle",
            BatchStatus::InProgress => "in-progress",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the batch has finished.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            BatchStatus::Success | BatchStatus::Failed | BatchStatus::Cancelled
        )
    }

    /// Checks a status change: `idle` to `in-progress` (operations created) or to `failed`
    /// (the batch could not start); `in-progress` to a final status; a final status never
    /// changes. Staying in the same status is allowed.
    pub fn transition(self, to: BatchStatus) -> Result<BatchStatus, TransitionError> {
        let allowed = self == to
            || matches!(
                (self, to),
                (BatchStatus::Idle, BatchStatus::InProgress)
                    | (BatchStatus::Idle, BatchStatus::Failed)
                    | (BatchStatus::InProgress, BatchStatus::Success)
                    | (BatchStatus::InProgress, BatchStatus::Failed)
                    | (BatchStatus::InProgress, BatchStatus::Cancelled)
            );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError {
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for BatchStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown batch status `{text}`"))
    }
}

/// How many operations of a batch are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounters {
    /// All operations.
    pub total: u64,
    /// Not finished.
    pub in_progress: u64,
    /// Succeeded.
    pub success: u64,
    /// Failed.
    pub failed: u64,
    /// Aborted.
    pub aborted: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl BatchCounters {
    /// Counts `count` operations of `status`.
    pub fn add(&mut self, status: UpgradeStatus, count: u64) {
        self.total += count;
        match status {
            UpgradeStatus::InProgress => self.in_progress += count,
            UpgradeStatus::Success => self.success += count,
            UpgradeStatus::Failed => self.failed += count,
            UpgradeStatus::Aborted => self.aborted += count,
            UpgradeStatus::Cancelled => self.cancelled += count,
        }
    }

    /// Operations that have finished.
    pub fn completed(&self) -> u64 {
        self.total - self.in_progress
    }

    /// Upstream's `progress_report`: `"<completed> out of <total>"`.
    pub fn progress_report(&self) -> String {
        format!("{} out of {}", self.completed(), self.total)
    }

    /// The share of `count` in the total, in percent, truncated to an integer as upstream's API
    /// serializes its rates; 0 when there is no operation.
    pub fn rate(&self, count: u64) -> u64 {
        (count * 100).checked_div(self.total).unwrap_or(0)
    }

    /// The batch status these counters give (upstream master's rule, §2.2), applied in order:
    /// any operation in progress gives `in-progress`; else any failed or aborted gives
    /// `failed`; else any cancelled gives `cancelled`; else, if every operation succeeded and
    /// there is at least one, `success`; otherwise the status stays `current`.
    pub fn derive_status(&self, current: BatchStatus) -> BatchStatus {
        if self.in_progress > 0 {
            BatchStatus::InProgress
        } else if self.failed + self.aborted > 0 {
            BatchStatus::Failed
        } else if self.cancelled > 0 {
            BatchStatus::Cancelled
        } else if self.total > 0 && self.success == self.total {
            BatchStatus::Success
        } else {
            current
        }
    }
}

/// A mass upgrade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchUpgradeOperation {
    /// Its id.
    pub id: BatchId,
    /// The build being installed.
    pub build_id: BuildId,
    /// The device group it was narrowed to, if any.
    pub group_id: Option<DeviceGroupId>,
    /// Its status.
    pub status: BatchStatus,
    /// Options for every operation's upgrader.
    pub upgrade_options: UpgradeOptions,
    /// Whether devices without a known firmware whose board matches an image were included
    /// (upstream's `upgrade_all`).
    pub upgrade_all: bool,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new mass upgrade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewBatch {
    /// The build.
    pub build_id: BuildId,
    /// The device group, if any.
    pub group_id: Option<DeviceGroupId>,
    /// Options for the upgraders.
    pub upgrade_options: UpgradeOptions,
    /// Whether to include devices without known firmware.
    pub upgrade_all: bool,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewBatch {
    /// A mass upgrade of `build_id` with default options.
    pub fn new(build_id: BuildId) -> Self {
        Self {
            build_id,
            group_id: None,
            upgrade_options: UpgradeOptions::default(),
            upgrade_all: false,
            details: Details::new(),
        }
    }

    /// The idle batch this would be once stored.
    pub fn into_batch(self) -> BatchUpgradeOperation {
        let now = time::now();
        BatchUpgradeOperation {
            id: BatchId::new(),
            build_id: self.build_id,
            group_id: self.group_id,
            status: BatchStatus::Idle,
            upgrade_options: self.upgrade_options,
            upgrade_all: self.upgrade_all,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

/// Upstream's rule: the group of a mass upgrade must belong to the organization of the build's
/// category, when that category has one.
pub fn validate_batch_group(
    category_organization: Option<OrganizationId>,
    group_organization: Option<OrganizationId>,
) -> Result<(), ValidationErrors> {
    match (category_organization, group_organization) {
        (Some(category), Some(group)) if category != group => Err(ValidationErrors::field(
            "group",
            "The organization of the group doesn't match the organization of the build category",
        )),
        _ => Ok(()),
    }
}

/// Upstream's error when a mass upgrade would touch no device.
pub const NO_DEVICES_FOUND: &str = "No devices found matching the specified filters. Please adjust your group and/or location filters.";

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(statuses: &[UpgradeStatus]) -> BatchCounters {
        let mut counters = BatchCounters::default();
        for status in statuses {
            counters.add(*status, 1);
        }
        counters
    }

    #[test]
    fn batch_status_follows_masters_rule_in_order() {
        use UpgradeStatus::*;
        let cases = [
            (vec![InProgress, Failed, Success], BatchStatus::InProgress),
            (vec![Failed, Cancelled, Success], BatchStatus::Failed),
            (vec![Aborted, Success], BatchStatus::Failed),
            (vec![Cancelled, Success], BatchStatus::Cancelled),
            (vec![Success, Success], BatchStatus::Success),
        ];
        for (statuses, expected) in cases {
            assert_eq!(
                counters(&statuses).derive_status(BatchStatus::InProgress),
                expected,
                "{statuses:?}"
            );
        }
    }

    #[test]
    fn a_batch_without_operations_keeps_its_status() {
        assert_eq!(
            counters(&[]).derive_status(BatchStatus::Idle),
            BatchStatus::Idle
        );
        assert_eq!(
            counters(&[]).derive_status(BatchStatus::InProgress),
            BatchStatus::InProgress
        );
    }

    #[test]
    fn counters_report_progress_and_integer_rates() {
        use UpgradeStatus::*;
        let counters = counters(&[Success, Success, Failed, InProgress, Aborted, Cancelled]);
        assert_eq!(counters.progress_report(), "5 out of 6");
        assert_eq!(counters.rate(counters.success), 33);
        assert_eq!(counters.rate(counters.failed), 16);
        assert_eq!(BatchCounters::default().rate(0), 0);
    }

    #[test]
    fn final_batches_never_change_status() {
        assert!(
            BatchStatus::Idle
                .transition(BatchStatus::InProgress)
                .is_ok()
        );
        assert!(
            BatchStatus::InProgress
                .transition(BatchStatus::Success)
                .is_ok()
        );
        assert!(
            BatchStatus::InProgress
                .transition(BatchStatus::Idle)
                .is_err()
        );
        for from in [
            BatchStatus::Success,
            BatchStatus::Failed,
            BatchStatus::Cancelled,
        ] {
            assert!(from.transition(from).is_ok());
            for to in BatchStatus::ALL.into_iter().filter(|to| *to != from) {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_group_must_belong_to_the_categorys_organization() {
        let own = OrganizationId::new();
        assert!(validate_batch_group(Some(own), Some(own)).is_ok());
        assert!(validate_batch_group(None, Some(own)).is_ok());
        assert!(validate_batch_group(Some(own), None).is_ok());
        assert_eq!(
            validate_batch_group(Some(own), Some(OrganizationId::new()))
                .unwrap_err()
                .messages("group"),
            ["The organization of the group doesn't match the organization of the build category"]
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in BatchStatus::ALL {
            assert_eq!(status.as_str().parse::<BatchStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}

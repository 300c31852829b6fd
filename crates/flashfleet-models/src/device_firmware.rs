//! Which image a device runs (upstream `DeviceFirmware`), and the rules for assigning one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::ValidationErrors;
use crate::id::{DeviceFirmwareId, DeviceId, ImageId, OrganizationId};
use crate::{Details, time};

/// The image a device runs, or is being upgraded to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceFirmware {
    /// Its id.
    pub id: DeviceFirmwareId,
    /// The device (one record per device).
    pub device_id: DeviceId,
    /// The image.
    pub image_id: ImageId,
    /// Whether the device runs the image (false while an upgrade to it is pending or failed).
    pub installed: bool,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

impl DeviceFirmware {
    /// A new record for `device_id` and `image_id`.
    pub fn new(device_id: DeviceId, image_id: ImageId, installed: bool) -> Self {
        let now = time::now();
        Self {
            id: DeviceFirmwareId::new(),
            device_id,
            image_id,
            installed,
            details: Details::new(),
            created: now,
            modified: now,
        }
    }

    /// Upstream's `image_has_changed or not installed`: whether saving `new_image` on `current`
    /// (`None` for a new record) starts an upgrade.
    pub fn starts_upgrade(current: Option<&DeviceFirmware>, new_image: ImageId) -> bool {
        match current {
            None => true,
            Some(current) => current.image_id != new_image || !current.installed,
        }
    }
}

/// What [`validate_assignment`] needs to know about an image being assigned to a device.
#[derive(Clone, Debug)]
pub struct AssignmentCheck<'a> {
    /// The device.
    pub device: &'a Device,
    /// The organization of the image's category (`None`: shared image).
    pub image_organization: Option<OrganizationId>,
    /// The boards the image type supports, from the image map.
    pub image_boards: &'a [String],
    /// Whether the device has at least one connection (credentials) to upgrade it through.
    pub has_connection: bool,
    /// Whether saving the assignment starts an upgrade ([`DeviceFirmware::starts_upgrade`]).
    pub starts_upgrade: bool,
    /// Skip the connection check (upstream's `_skip_connection_check`: credentials are being
    /// added in the same request).
    pub skip_connection_check: bool,
}

/// Upstream's `DeviceFirmware.clean()`, in its order: the device is not deactivated; the image
/// belongs to the device's organization or is shared; an upgrade needs a connection; the device
/// model is one of the image's boards.
pub fn validate_assignment(check: &AssignmentCheck<'_>) -> Result<(), ValidationErrors> {
    if check.device.is_deactivated {
        return Err(ValidationErrors::non_field(DEACTIVATED_DEVICE));
    }
    if check
        .image_organization
        .is_some_and(|organization| organization != check.device.organization_id)
    {
        return Err(ValidationErrors::field(
            "image",
            "The organization of the image doesn't match the organization of the device",
        ));
    }
    if check.starts_upgrade && !check.skip_connection_check && !check.has_connection {
        return Err(ValidationErrors::non_field(
            "This device does not have a related connection object defined yet and therefore it would not be possible to upgrade it, please add one in the section named \"Credentials\"",
        ));
    }
    if !check.image_boards.contains(&check.device.model) {
        return Err(ValidationErrors::non_field(
            "Device model and image model do not match",
        ));
    }
    Ok(())
}

/// Upstream's message for any firmware change of a deactivated device.
pub const DEACTIVATED_DEVICE: &str = "Firmware upgrades are not allowed for deactivated devices.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::NewDevice;

    fn device() -> Device {
        let mut new_device = NewDevice::new(
            OrganizationId::new(),
            "ap",
            "00:11:22:33:44:55".parse().unwrap(),
        );
        new_device.model = "TP-Link Archer C7 v2".into();
        new_device.into_device()
    }

    fn check<'a>(device: &'a Device, boards: &'a [String]) -> AssignmentCheck<'a> {
        AssignmentCheck {
            device,
            image_organization: Some(device.organization_id),
            image_boards: boards,
            has_connection: true,
            starts_upgrade: true,
            skip_connection_check: false,
        }
    }

    #[test]
    fn an_image_for_the_devices_board_and_organization_is_accepted() {
        let device = device();
        let boards = vec!["TP-Link Archer C7 v2".to_owned()];
        assert!(validate_assignment(&check(&device, &boards)).is_ok());
        let shared = AssignmentCheck {
            image_organization: None,
            ..check(&device, &boards)
        };
        assert!(validate_assignment(&shared).is_ok());
    }

    #[test]
    fn the_rules_apply_in_upstreams_order() {
        let mut device = device();
        let boards = vec!["Other".to_owned()];
        device.is_deactivated = true;
        let errors = validate_assignment(&check(&device, &boards)).unwrap_err();
        assert_eq!(errors.messages("__all__"), [DEACTIVATED_DEVICE]);
        device.is_deactivated = false;
        let foreign = AssignmentCheck {
            image_organization: Some(OrganizationId::new()),
            ..check(&device, &boards)
        };
        assert_eq!(
            validate_assignment(&foreign)
                .unwrap_err()
                .messages("image")
                .len(),
            1
        );
        let unconnected = AssignmentCheck {
            has_connection: false,
            ..check(&device, &boards)
        };
        assert!(
            validate_assignment(&unconnected)
                .unwrap_err()
                .messages("__all__")[0]
                .contains("connection object")
        );
        assert_eq!(
            validate_assignment(&check(&device, &boards))
                .unwrap_err()
                .messages("__all__"),
            ["Device model and image model do not match"]
        );
    }

    #[test]
    fn no_connection_is_needed_when_nothing_is_upgraded_or_the_check_is_skipped() {
        let device = device();
        let boards = vec!["TP-Link Archer C7 v2".to_owned()];
        let no_upgrade = AssignmentCheck {
            has_connection: false,
            starts_upgrade: false,
            ..check(&device, &boards)
        };
        assert!(validate_assignment(&no_upgrade).is_ok());
        let skipped = AssignmentCheck {
            has_connection: false,
            skip_connection_check: true,
            ..check(&device, &boards)
        };
        assert!(validate_assignment(&skipped).is_ok());
    }

    #[test]
    fn an_upgrade_starts_for_a_new_image_or_one_not_yet_installed() {
        let image = ImageId::new();
        assert!(DeviceFirmware::starts_upgrade(None, image));
        let installed = DeviceFirmware::new(DeviceId::new(), image, true);
        assert!(!DeviceFirmware::starts_upgrade(Some(&installed), image));
        assert!(DeviceFirmware::starts_upgrade(
            Some(&installed),
            ImageId::new()
        ));
        let pending = DeviceFirmware::new(DeviceId::new(), image, false);
        assert!(DeviceFirmware::starts_upgrade(Some(&pending), image));
    }
}

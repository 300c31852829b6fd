//! Devices (the routers being upgraded) and device groups.
//!
//! Upstream takes these from openwisp-controller; flashfleet keeps the fields the upgrader
//! needs, so its reference server runs alone, and an embedding controller can bring its own
//! devices through [`DeviceRepository`](crate::repository::DeviceRepository).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::id::{DeviceGroupId, DeviceId, OrganizationId};
use crate::organization::{check_max_length, check_required_text};
use crate::{Details, time};

/// A device whose firmware flashfleet upgrades.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its id; OpenWrt devices carry it in `uci get openwisp.http.uuid`, which the upgrader
    /// checks before touching the device.
    pub id: DeviceId,
    /// Its organization.
    pub organization_id: OrganizationId,
    /// Its name, unique within the organization.
    pub name: String,
    /// Its MAC address, unique within the organization.
    pub mac_address: MacAddress,
    /// The hardware model as the device reports it (OpenWrt `/tmp/sysinfo/model`, such as
    /// `TP-Link Archer C7 v2`); matched against the boards of image types.
    pub model: String,
    /// The board name (OpenWrt `/tmp/sysinfo/board_name`, such as `tplink,archer-c7-v2`);
    /// matched against image metadata.
    pub board_name: String,
    /// The OS identifier the device reports (such as `OpenWrt 23.05.3 r23809-234f1a2efa`);
    /// matched against a build's `os`.
    pub os: String,
    /// The address the upgrader connects to (IP address or host name).
    pub management_ip: Option<String>,
    /// Its group, if any.
    pub group_id: Option<DeviceGroupId>,
    /// A deactivated device is never upgraded.
    pub is_deactivated: bool,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDevice {
    /// Its id, when the device already has one (OpenWrt devices registered elsewhere carry their
    /// UUID); `None` to generate one.
    pub id: Option<DeviceId>,
    /// Its organization.
    pub organization_id: OrganizationId,
    /// Its name.
    pub name: String,
    /// Its MAC address.
    pub mac_address: MacAddress,
    /// Hardware model.
    pub model: String,
    /// Board name.
    pub board_name: String,
    /// OS identifier.
    pub os: String,
    /// Management address.
    pub management_ip: Option<String>,
    /// Group.
    pub group_id: Option<DeviceGroupId>,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewDevice {
    /// A device with a name and a MAC address and nothing else known yet.
    pub fn new(
        organization_id: OrganizationId,
        name: impl Into<String>,
        mac_address: MacAddress,
    ) -> Self {
        Self {
            id: None,
            organization_id,
            name: name.into(),
            mac_address,
            model: String::new(),
            board_name: String::new(),
            os: String::new(),
            management_ip: None,
            group_id: None,
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_device`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_device(
            &self.name,
            &self.model,
            &self.board_name,
            &self.os,
            self.management_ip.as_deref(),
        )
    }

    /// The device this would be once stored, with its id and the current time.
    pub fn into_device(self) -> Device {
        let now = time::now();
        Device {
            id: self.id.unwrap_or_default(),
            organization_id: self.organization_id,
            name: self.name,
            mac_address: self.mac_address,
            model: self.model,
            board_name: self.board_name,
            os: self.os,
            management_ip: self.management_ip.filter(|address| !address.is_empty()),
            group_id: self.group_id,
            is_deactivated: false,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl Device {
    /// Checks the fields (see [`validate_device`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_device(
            &self.name,
            &self.model,
            &self.board_name,
            &self.os,
            self.management_ip.as_deref(),
        )
    }
}

/// Maximum length of a device name (openwisp-controller).
pub const NAME_MAX_LENGTH: usize = 64;
/// Maximum length of a model (openwisp-controller).
pub const MODEL_MAX_LENGTH: usize = 64;
/// Maximum length of a board name.
pub const BOARD_NAME_MAX_LENGTH: usize = 128;
/// Maximum length of an OS identifier (openwisp-controller).
pub const OS_MAX_LENGTH: usize = 128;

/// A device needs a name; model, board name and OS identifier are bounded; the management
/// address, when given, is an IP address or a host name.
pub fn validate_device(
    name: &str,
    model: &str,
    board_name: &str,
    os: &str,
    management_ip: Option<&str>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "name", name, NAME_MAX_LENGTH);
    check_max_length(&mut errors, "model", model, MODEL_MAX_LENGTH);
    check_max_length(&mut errors, "board_name", board_name, BOARD_NAME_MAX_LENGTH);
    check_max_length(&mut errors, "os", os, OS_MAX_LENGTH);
    if let Some(address) = management_ip.filter(|address| !address.is_empty())
        && !is_valid_address(address)
    {
        errors.add(
            "management_ip",
            "Enter a valid IPv4 or IPv6 address or host name.",
        );
    }
    errors.into_result()
}

fn is_valid_address(address: &str) -> bool {
    if address.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A MAC address, kept as six bytes and printed `AA:BB:CC:DD:EE:FF`.
///
/// Parsing accepts `:` or `-` separators, dotted Cisco form and bare hexadecimal, in either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// The address made of these bytes.
    pub fn from_bytes(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// The six bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = ValidationErrors;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ValidationErrors::field("mac_address", "Enter a valid MAC address.");
        let digits: String = text
            .trim()
            .chars()
            .filter(|c| !":-.".contains(*c))
            .collect();
        let separators_ok = {
            let trimmed = text.trim();
            let groups: Vec<&str> = trimmed.split([':', '-']).collect();
            groups.len() == 1 && (trimmed.len() == 12 || trimmed.split('.').count() == 3)
                || groups.len() == 6 && groups.iter().all(|group| group.len() == 2)
        };
        if digits.len() != 12 || !separators_ok || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0_u8; 6];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&digits[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{f:02X}")
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "MacAddress({self})")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A group of devices of one organization; mass upgrades can be narrowed to one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceGroup {
    /// Its id.
    pub id: DeviceGroupId,
    /// Its organization.
    pub organization_id: OrganizationId,
    /// Its name, unique within the organization.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new device group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDeviceGroup {
    /// Its organization.
    pub organization_id: OrganizationId,
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewDeviceGroup {
    /// A group of `organization_id` named `name`.
    pub fn new(organization_id: OrganizationId, name: impl Into<String>) -> Self {
        Self {
            organization_id,
            name: name.into(),
            description: String::new(),
            details: Details::new(),
        }
    }

    /// A group needs a name of at most 60 characters (openwisp-controller).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        check_required_text(&mut errors, "name", &self.name, 60);
        errors.into_result()
    }

    /// The group this would be once stored, with a new id and the current time.
    pub fn into_group(self) -> DeviceGroup {
        let now = time::now();
        DeviceGroup {
            id: DeviceGroupId::new(),
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_in_common_forms_and_print_uppercase() {
        for text in [
            "00:11:22:aa:bb:cc",
            "00-11-22-AA-BB-CC",
            "001122aabbcc",
            "0011.22aa.bbcc",
        ] {
            assert_eq!(
                text.parse::<MacAddress>().unwrap().to_string(),
                "00:11:22:AA:BB:CC",
                "{text}"
            );
        }
        for text in [
            "",
            "00:11:22:aa:bb",
            "00:11:22:aa:bb:cc:dd",
            "zz:11:22:aa:bb:cc",
            "0:011:22:aa:bb:cc",
        ] {
            assert!(text.parse::<MacAddress>().is_err(), "{text}");
        }
    }

    #[test]
    fn a_device_needs_a_name_and_a_valid_address() {
        assert!(
            validate_device(
                "ap-1",
                "TP-Link Archer C7 v2",
                "tplink,archer-c7-v2",
                "OpenWrt",
                Some("10.0.0.1")
            )
            .is_ok()
        );
        assert!(validate_device("ap-1", "", "", "", Some("ap-1.example.org")).is_ok());
        assert!(validate_device("ap-1", "", "", "", Some("fe80::1")).is_ok());
        let errors = validate_device("", "", "", "", Some("bad address!")).unwrap_err();
        assert_eq!(errors.messages("name").len(), 1);
        assert_eq!(errors.messages("management_ip").len(), 1);
        assert!(validate_device("x", &"m".repeat(65), "", "", None).is_err());
    }

    #[test]
    fn a_new_device_keeps_a_given_id() {
        let id = DeviceId::new();
        let mut new_device = NewDevice::new(
            OrganizationId::new(),
            "ap",
            "00:11:22:33:44:55".parse().unwrap(),
        );
        new_device.id = Some(id);
        assert_eq!(new_device.into_device().id, id);
    }
}

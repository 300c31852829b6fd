//! How flashfleet reaches a device: credentials (user, port, password or private key) and the
//! connections that attach them to devices, with the upgrader each connection uses.
//!
//! As in openwisp-controller, credentials belong to an organization (or are shared) and are
//! attached to devices through [`DeviceConnection`]s; a connection records whether it worked the
//! last time it was tried.
//!
//! **Invariant:** secrets are never serialized and never printed. [`CredentialsSecret`] has no
//! `Serialize` and a redacting `Debug`; repositories store them encrypted.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::id::{CredentialsId, DeviceConnectionId, DeviceId, OrganizationId};
use crate::organization::check_required_text;
use crate::{Details, time};

/// Which upgrader handles a connection: a key of the upgrader registry (upstream's
/// `UPGRADERS_MAP`, keyed by the connection's update strategy).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionType(String);

impl ConnectionType {
    /// OpenWrt over SSH: the built-in upgrader.
    pub const OPENWRT_SSH: &'static str = "openwrt-ssh";
    /// OpenWISP 1.x (legacy OpenWrt) over SSH.
    pub const OPENWISP1_SSH: &'static str = "openwisp1-ssh";

    /// The connection type named `name`. openwisp-controller's update strategy paths are
    /// accepted and mapped to flashfleet's names, so OpenWISP clients keep working.
    pub fn new(name: &str) -> Self {
        let name = name.trim();
        let normalized = match name {
            "openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt" => Self::OPENWRT_SSH,
            "openwisp_controller.connection.connectors.openwrt.ssh.OpenWisp1" => {
                Self::OPENWISP1_SSH
            }
            other => other,
        };
        Self(normalized.to_owned())
    }

    /// The OpenWrt-over-SSH connection type.
    pub fn openwrt_ssh() -> Self {
        Self(Self::OPENWRT_SSH.to_owned())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this connection goes over SSH (upstream selects connections whose update
    /// strategy contains "ssh").
    pub fn is_ssh(&self) -> bool {
        self.0.contains("ssh")
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A secret string that never shows itself by accident: `Debug` prints `[redacted]`, there is
/// no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the code that must use it (encryption, SSH authentication).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// How a device is authenticated: a password or a private key, never both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsSecret {
    /// A password.
    Password(SecretText),
    /// A private key in OpenSSH or PEM format.
    PrivateKey(SecretText),
}

impl CredentialsSecret {
    /// The kind of secret, for storage and display (`"password"` or `"private_key"`).
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialsSecret::Password(_) => "password",
            CredentialsSecret::PrivateKey(_) => "private_key",
        }
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        match self {
            CredentialsSecret::Password(secret) | CredentialsSecret::PrivateKey(secret) => {
                secret.expose()
            }
        }
    }

    /// Rebuilds a secret from its kind and text (as read back from storage).
    pub fn from_kind(kind: &str, secret: String) -> Option<Self> {
        match kind {
            "password" => Some(CredentialsSecret::Password(SecretText::new(secret))),
            "private_key" => Some(CredentialsSecret::PrivateKey(SecretText::new(secret))),
            _ => None,
        }
    }
}

/// Credentials to log in to devices (openwisp-controller `Credentials` with the SSH connector).
///
/// Serializing a `Credentials` leaves the secret out; only its kind is shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Credentials {
    /// Its id.
    pub id: CredentialsId,
    /// Its organization; `None` means shared by every organization.
    pub organization_id: Option<OrganizationId>,
    /// Its name, unique within the organization.
    pub name: String,
    /// The upgrader connections made with these credentials use.
    pub connection_type: ConnectionType,
    /// SSH user.
    pub username: String,
    /// SSH port.
    pub port: u16,
    /// Password or private key.
    #[serde(skip)]
    pub secret: CredentialsSecret,
    /// Whether these credentials are attached to new devices of the organization automatically.
    pub auto_add: bool,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of new credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct NewCredentials {
    /// Its organization, `None` for shared credentials.
    pub organization_id: Option<OrganizationId>,
    /// Its name.
    pub name: String,
    /// The upgrader its connections use.
    pub connection_type: ConnectionType,
    /// SSH user.
    pub username: String,
    /// SSH port.
    pub port: u16,
    /// Password or private key.
    pub secret: CredentialsSecret,
    /// Whether to attach automatically to new devices.
    pub auto_add: bool,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewCredentials {
    /// OpenWrt SSH credentials for `username` on port 22.
    pub fn new(
        organization_id: Option<OrganizationId>,
        name: impl Into<String>,
        username: impl Into<String>,
        secret: CredentialsSecret,
    ) -> Self {
        Self {
            organization_id,
            name: name.into(),
            connection_type: ConnectionType::openwrt_ssh(),
            username: username.into(),
            port: 22,
            secret,
            auto_add: false,
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_credentials`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_credentials(&self.name, &self.username, self.port, &self.secret)
    }

    /// The credentials these would be once stored, with a new id and the current time.
    pub fn into_credentials(self) -> Credentials {
        let now = time::now();
        Credentials {
            id: CredentialsId::new(),
            organization_id: self.organization_id,
            name: self.name,
            connection_type: self.connection_type,
            username: self.username,
            port: self.port,
            secret: self.secret,
            auto_add: self.auto_add,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl Credentials {
    /// Checks the fields (see [`validate_credentials`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_credentials(&self.name, &self.username, self.port, &self.secret)
    }
}

/// Credentials need a name, a user, a non-zero port and a non-empty secret; a private key must
/// be in OpenSSH or PEM format.
pub fn validate_credentials(
    name: &str,
    username: &str,
    port: u16,
    secret: &CredentialsSecret,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "name", name, 64);
    check_required_text(&mut errors, "username", username, 64);
    if port == 0 {
        errors.add("port", "Ensure this value is greater than or equal to 1.");
    }
    match secret {
        CredentialsSecret::Password(password) if password.expose().is_empty() => {
            errors.add("password", "This field may not be blank.");
        }
        CredentialsSecret::PrivateKey(key)
            if !key.expose().trim_start().starts_with("-----BEGIN ") =>
        {
            errors.add("key", "the private key is not in OpenSSH or PEM format");
        }
        _ => {}
    }
    errors.into_result()
}

/// Credentials attached to a device (openwisp-controller `DeviceConnection`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceConnection {
    /// Its id.
    pub id: DeviceConnectionId,
    /// The device.
    pub device_id: DeviceId,
    /// The credentials.
    pub credentials_id: CredentialsId,
    /// Which upgrader handles this device through this connection (upstream's
    /// `update_strategy`).
    pub connection_type: ConnectionType,
    /// A disabled connection is never used.
    pub enabled: bool,
    /// Whether the last attempt worked; `None` before the first attempt.
    pub is_working: Option<bool>,
    /// Why the last attempt failed (no secrets), empty otherwise.
    pub failure_reason: String,
    /// When it was last tried.
    pub last_attempt: Option<DateTime<Utc>>,
    /// The SSH host key the device presented at first contact (`<algorithm> <base64>`); later
    /// connections refuse another key, except right after a flash that did not keep the
    /// configuration.
    pub host_key: Option<String>,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new device connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDeviceConnection {
    /// The device.
    pub device_id: DeviceId,
    /// The credentials.
    pub credentials_id: CredentialsId,
    /// The upgrader; `None` to take the credentials' connection type.
    pub connection_type: Option<ConnectionType>,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewDeviceConnection {
    /// An enabled connection of `device_id` with `credentials_id`.
    pub fn new(device_id: DeviceId, credentials_id: CredentialsId) -> Self {
        Self {
            device_id,
            credentials_id,
            connection_type: None,
            enabled: true,
            details: Details::new(),
        }
    }

    /// The connection this would be once stored, taking the credentials' connection type when
    /// none was given.
    pub fn into_connection(self, credentials: &Credentials) -> DeviceConnection {
        let now = time::now();
        DeviceConnection {
            id: DeviceConnectionId::new(),
            device_id: self.device_id,
            credentials_id: self.credentials_id,
            connection_type: self
                .connection_type
                .unwrap_or_else(|| credentials.connection_type.clone()),
            enabled: self.enabled,
            is_working: None,
            failure_reason: String::new(),
            last_attempt: None,
            host_key: None,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

/// Credentials of one organization can be attached only to devices of that organization;
/// shared credentials to any device (openwisp-controller's rule).
pub fn validate_connection(
    device_organization: OrganizationId,
    credentials_organization: Option<OrganizationId>,
) -> Result<(), ValidationErrors> {
    match credentials_organization {
        Some(organization_id) if organization_id != device_organization => {
            Err(ValidationErrors::field(
                "credentials",
                "The organization of the credentials doesn't match the organization of the device",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_json() {
        let credentials = NewCredentials::new(
            None,
            "root",
            "root",
            CredentialsSecret::Password(SecretText::new("hunter2")),
        )
        .into_credentials();
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert!(
            !serde_json::to_string(&credentials)
                .unwrap()
                .contains("hunter2")
        );
    }

    #[test]
    fn credentials_need_a_user_a_port_and_a_usable_secret() {
        let password = CredentialsSecret::Password(SecretText::new("pw"));
        assert!(validate_credentials("c", "root", 22, &password).is_ok());
        assert!(validate_credentials("c", "", 22, &password).is_err());
        assert!(validate_credentials("c", "root", 0, &password).is_err());
        let empty = CredentialsSecret::Password(SecretText::new(""));
        assert!(validate_credentials("c", "root", 22, &empty).is_err());
        let bad_key = CredentialsSecret::PrivateKey(SecretText::new("not a key"));
        assert!(validate_credentials("c", "root", 22, &bad_key).is_err());
        let key = CredentialsSecret::PrivateKey(SecretText::new(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
        ));
        assert!(validate_credentials("c", "root", 22, &key).is_ok());
    }

    #[test]
    fn upstream_update_strategies_map_to_connection_types() {
        assert_eq!(
            ConnectionType::new("openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt")
                .as_str(),
            "openwrt-ssh"
        );
        assert!(ConnectionType::new("openwisp1-ssh").is_ssh());
        assert!(!ConnectionType::new("snmp").is_ssh());
    }

    #[test]
    fn credentials_of_another_organization_cannot_be_attached() {
        let own = OrganizationId::new();
        assert!(validate_connection(own, Some(own)).is_ok());
        assert!(validate_connection(own, None).is_ok());
        assert!(validate_connection(own, Some(OrganizationId::new())).is_err());
    }
}

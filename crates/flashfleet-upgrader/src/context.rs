//! Everything an upgrader gets for one upgrade: the device, how to reach it, the image as a
//! stream, the options, and a [`Reporter`] that persists progress, log lines and host keys.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flashfleet_boards::ImageMetadata;
use flashfleet_models::credentials::CredentialsSecret;
use flashfleet_models::{Device, UpgradeOptions, UpgradePhase};
use tokio::io::AsyncRead;

use crate::error::{ReportError, UpgradeError};

/// Where the caller persists what the upgrader reports. The engine implements it on the
/// database; every call returns only once the report is persisted, so "every state change of an
/// upgrade is persisted before it is acted on" holds as long as upgraders await each call
/// before their next step.
#[async_trait]
pub trait Reporter: Send + Sync {
    /// The operation enters `phase` with `progress` (0–100), with an optional log line.
    ///
    /// Returns [`ReportError::Cancelled`] when the operation has been cancelled meanwhile:
    /// the upgrader must then stop (restoring what it changed) and return
    /// [`UpgradeError::Cancelled`].
    async fn progress(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError>;

    /// Appends a line to the operation log.
    async fn log(&self, line: &str) -> Result<(), ReportError>;

    /// Whether a user has asked to cancel the operation.
    async fn is_cancelled(&self) -> bool;

    /// Records the host key a device presented (`None` known before, or a new key accepted
    /// after a flash that did not keep the configuration), so the next connection can check it.
    async fn record_host_key(&self, host_key: &HostKey) -> Result<(), ReportError>;

    /// The operation enters [`UpgradePhase::Flashing`]: the last report before the flash
    /// command, recording `boot_id`, the device's boot id read just before (`None` when the
    /// device has none to read), with `line` in the log. The flash command may be sent only
    /// once this returned `Ok`; the engine's implementation is a guarded write that succeeds
    /// once per operation (again only after [`Reporter::restart_unflashed`]).
    ///
    /// The default reports the phase through [`Reporter::progress`].
    async fn begin_flash(&self, boot_id: Option<&str>, line: &str) -> Result<(), ReportError> {
        let _ = boot_id;
        self.progress(
            UpgradePhase::Flashing,
            UpgradePhase::Flashing.milestone(),
            Some(line),
        )
        .await
    }

    /// Takes an operation found at or past the flash back before it, so that it may flash
    /// again: only when the device proved that the earlier flash command never reached it
    /// (the same boot id as recorded by [`Reporter::begin_flash`], the old release, no flash
    /// running). `line` gives those facts for the log.
    ///
    /// The default refuses: a reporter that keeps no flash record cannot allow a second flash.
    async fn restart_unflashed(&self, line: &str) -> Result<(), ReportError> {
        let _ = line;
        Err(ReportError::Persistence(
            "this reporter cannot take an operation back before its flash".into(),
        ))
    }

    /// A cancellation checkpoint: `Err(ReportError::Cancelled)` when the upgrade must stop
    /// (cancelled by a user, or the engine stops), `Err(ReportError::LeaseLost)` when another
    /// engine holds the operation now (stop at once, sending nothing more to the device).
    ///
    /// The default asks [`Reporter::is_cancelled`].
    async fn checkpoint(&self) -> Result<(), ReportError> {
        if self.is_cancelled().await {
            Err(ReportError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// What an earlier attempt of this operation recorded of its flash, when the operation is found
/// at or past [`UpgradePhase::Flashing`] (its engine stopped or crashed, or timed out, after
/// the flash was persisted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlashRecord {
    /// How many times the operation entered `Flashing`.
    pub attempts: u32,
    /// The device's boot id read just before the last flash command, if any: a device that
    /// answers with the same boot id has not rebooted since that command was (or would have
    /// been) sent.
    pub boot_id: Option<String>,
}

/// A device's SSH host key, as recorded: its algorithm name and its base64 blob (the
/// `known_hosts` form without the host name).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostKey {
    /// Algorithm, such as `ssh-ed25519`.
    pub algorithm: String,
    /// The key, base64.
    pub key: String,
}

impl fmt::Display for HostKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.algorithm, self.key)
    }
}

/// How to reach the device: one of its connections, with the credentials decrypted.
#[derive(Clone)]
pub struct ConnectionTarget {
    /// Addresses to try in order (upstream: the management IP).
    pub addresses: Vec<String>,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub username: String,
    /// Password or private key.
    pub secret: CredentialsSecret,
    /// The host key recorded at an earlier contact; `None` on first contact.
    pub known_host_key: Option<HostKey>,
}

impl fmt::Debug for ConnectionTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ConnectionTarget")
            .field("addresses", &self.addresses)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("secret", &self.secret.kind())
            .field("known_host_key", &self.known_host_key)
            .finish()
    }
}

/// Opens the image's bytes as a stream, as many times as needed (a retried upload reopens it).
/// The image is never loaded whole into memory.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// A fresh stream of the whole image, from its first byte.
    async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>>;
}

/// The image to install.
#[derive(Clone)]
pub struct UpgradeImage {
    /// The file name the device will see (the last part of the storage key).
    pub file_name: String,
    /// Its image type (a key of the image map).
    pub image_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hexadecimal: written to the device after a successful upgrade, and
    /// compared before, to skip an image the device already runs.
    pub sha256: String,
    /// What the image says about itself (OpenWrt fwtool metadata), if anything.
    pub metadata: Option<ImageMetadata>,
    /// Its bytes.
    pub source: Arc<dyn ImageSource>,
}

impl fmt::Debug for UpgradeImage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UpgradeImage")
            .field("file_name", &self.file_name)
            .field("image_type", &self.image_type)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("metadata", &self.metadata.is_some())
            .finish_non_exhaustive()
    }
}

/// What an upgrader needs for one upgrade.
#[derive(Clone)]
pub struct UpgradeContext {
    /// The device (its id is what OpenWrt devices carry in `openwisp.http.uuid`).
    pub device: Device,
    /// How to reach it.
    pub connection: ConnectionTarget,
    /// The image.
    pub image: UpgradeImage,
    /// The upgrade options (validated with [`Upgrader::validate_options`](crate::Upgrader)).
    pub options: UpgradeOptions,
    /// Where progress, log lines and host keys go.
    pub reporter: Arc<dyn Reporter>,
    /// The flash recorded by an earlier attempt, when the operation is at or past
    /// [`UpgradePhase::Flashing`] ([`Upgrader::verify`](crate::Upgrader::verify) decides from
    /// it and from the device); `None` before any flash.
    pub previous_flash: Option<FlashRecord>,
}

impl fmt::Debug for UpgradeContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UpgradeContext")
            .field("device", &self.device.id)
            .field("connection", &self.connection)
            .field("image", &self.image)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl UpgradeContext {
    /// Reports that the operation enters `phase` at its milestone progress, with a log line.
    pub async fn enter(&self, phase: UpgradePhase, line: &str) -> Result<(), UpgradeError> {
        Ok(self
            .reporter
            .progress(phase, phase.milestone(), Some(line))
            .await?)
    }

    /// Appends a log line.
    pub async fn log(&self, line: &str) -> Result<(), UpgradeError> {
        Ok(self.reporter.log(line).await?)
    }

    /// A cancellation checkpoint: `Err(UpgradeError::Cancelled)` when a user has asked to
    /// cancel. Upgraders call it between steps before the flash (and restore what they
    /// changed before returning the error).
    pub async fn checkpoint(&self) -> Result<(), UpgradeError> {
        Ok(self.reporter.checkpoint().await?)
    }

    /// Reports that the flash command is about to be sent ([`Reporter::begin_flash`]); send it
    /// only once this returned `Ok`.
    pub async fn begin_flash(&self, boot_id: Option<&str>, line: &str) -> Result<(), UpgradeError> {
        Ok(self.reporter.begin_flash(boot_id, line).await?)
    }
}

/// What the device runs, as read from it (OpenWrt: `/etc/openwrt_release` and
/// `/tmp/sysinfo/board_name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRelease {
    /// Distribution, such as `OpenWrt`.
    pub distribution: String,
    /// Release, such as `23.05.3`.
    pub version: String,
    /// Revision, such as `r23809-234f1a2efa`.
    pub revision: String,
    /// Target, such as `ath79/generic`.
    pub target: String,
    /// Board name, such as `tplink,archer-c7-v2`.
    pub board_name: String,
}

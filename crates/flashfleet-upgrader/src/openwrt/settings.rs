//! The OpenWrt upgrader's settings: upstream's `OPENWISP_FIRMWARE_UPGRADER_OPENWRT_SETTINGS`, its
//! class constants, and what a custom OpenWrt-based firmware changes (command, paths, delays).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of an [`OpenWrtUpgrader`](crate::openwrt::OpenWrtUpgrader).
///
/// Every field has upstream's default, so a server configuration may give only the fields it
/// changes (`#[serde(default)]`). Durations are written in seconds and may have a fraction
/// (`reconnect_retry_delay = 0.5`).
///
/// ```
/// use std::time::Duration;
/// use flashfleet_upgrader::openwrt::OpenWrtSettings;
///
/// let settings: OpenWrtSettings = serde_json::from_str(r#"{"reconnect_delay": 120}"#).unwrap();
/// assert_eq!(settings.reconnect_delay, Duration::from_secs(120));
/// assert_eq!(settings.reconnect_max_retries, 35);
/// assert_eq!(settings.upgrade_command, "{sysupgrade} -v {flags} {path}");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenWrtSettings {
    /// How long to wait after the flash command before the first reconnection attempt
    /// (upstream `reconnect_delay`, 180 s).
    #[serde(with = "seconds")]
    pub reconnect_delay: Duration,
    /// How long to wait between two reconnection attempts (upstream `reconnect_retry_delay`,
    /// 20 s).
    #[serde(with = "seconds")]
    pub reconnect_retry_delay: Duration,
    /// How many reconnection attempts before giving up (upstream `reconnect_max_retries`, 35).
    pub reconnect_max_retries: u32,
    /// How long the flash command may run before its session is closed (upstream
    /// `upgrade_timeout`, 90 s).
    #[serde(with = "seconds")]
    pub upgrade_timeout: Duration,
    /// How long any other command may run (openwisp-controller's
    /// `OPENWISP_SSH_COMMAND_TIMEOUT`, 30 s). Also bounds the SSH handshake and authentication,
    /// and each step of an upload (a transfer that makes no progress for this long fails).
    #[serde(with = "seconds")]
    pub command_timeout: Duration,
    /// How long a TCP connection to one address may take (openwisp-controller's
    /// `OPENWISP_SSH_CONNECTION_TIMEOUT`, 5 s).
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// The slowest upload accepted, in bytes per second (beyond upstream; 64 KiB/s, must be
    /// positive). An upload has a total deadline of
    /// [`connect_timeout`](Self::connect_timeout) plus the image size at this throughput;
    /// past it the connection is closed and the upload fails (retried later), so a link that
    /// trickles without ever stalling cannot hold an upload, and its image stream, forever.
    #[serde(deserialize_with = "positive")]
    pub min_upload_throughput: u64,
    /// Where the image is uploaded (upstream `REMOTE_UPLOAD_DIR`, `/tmp`).
    pub remote_upload_dir: String,
    /// The file name the image gets on the device; `None` keeps the image's own file name
    /// (upstream `get_remote_path`; a custom firmware may want a fixed name).
    pub remote_file_name: Option<String>,
    /// The checksum marker written after a successful upgrade and compared before the next one
    /// (upstream `CHECKSUM_FILE`, `/etc/openwisp/firmware_checksum`).
    pub checksum_file: String,
    /// The `sysupgrade` program (upstream `_SYSUPGRADE`, `/sbin/sysupgrade`), used for the image
    /// test and as `{sysupgrade}` in [`upgrade_command`](Self::upgrade_command).
    pub sysupgrade: String,
    /// Template of the flash command (upstream `UPGRADE_COMMAND`,
    /// `{sysupgrade} -v {flags} {path}`). `{sysupgrade}` is replaced by
    /// [`sysupgrade`](Self::sysupgrade), `{flags}` by the sysupgrade flags of the upgrade
    /// options (`-c` by default), `{path}` by the uploaded image's path; a template without
    /// placeholders is sent as it is.
    pub upgrade_command: String,
    /// Whether to run `{sysupgrade} --test <path>` after the upload and abort when it fails
    /// (true; a custom firmware without `sysupgrade` turns it off).
    pub test_image: bool,
    /// Services stopped (then started again) when the device lacks memory for the upload
    /// (upstream `_non_critical_services`).
    pub non_critical_services: Vec<String>,
}

impl Default for OpenWrtSettings {
    fn default() -> Self {
        Self {
            reconnect_delay: Duration::from_secs(180),
            reconnect_retry_delay: Duration::from_secs(20),
            reconnect_max_retries: 35,
            upgrade_timeout: Duration::from_secs(90),
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            min_upload_throughput: 64 * 1024,
            remote_upload_dir: "/tmp".to_owned(),
            remote_file_name: None,
            checksum_file: "/etc/openwisp/firmware_checksum".to_owned(),
            sysupgrade: "/sbin/sysupgrade".to_owned(),
            upgrade_command: "{sysupgrade} -v {flags} {path}".to_owned(),
            test_image: true,
            non_critical_services: [
                "uhttpd",
                "dnsmasq",
                "openwisp_config",
                "openwisp-config",
                "openwisp-monitoring",
                "cron",
                "rpcd",
                "rssileds",
                "odhcpd",
                "log",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        }
    }
}

impl OpenWrtSettings {
    /// How long an upload of `size` bytes may take in all:
    /// [`connect_timeout`](Self::connect_timeout) plus `size` at
    /// [`min_upload_throughput`](Self::min_upload_throughput).
    ///
    /// ```
    /// use std::time::Duration;
    /// use flashfleet_upgrader::openwrt::OpenWrtSettings;
    ///
    /// let settings = OpenWrtSettings::default();
    /// // 5 s to connect, then 16 MiB at 64 KiB/s.
    /// assert_eq!(settings.upload_deadline(16 * 1024 * 1024), Duration::from_secs(5 + 256));
    /// ```
    pub fn upload_deadline(&self, size: u64) -> Duration {
        let transfer = size as f64 / self.min_upload_throughput.max(1) as f64;
        self.connect_timeout
            .saturating_add(Duration::try_from_secs_f64(transfer).unwrap_or(Duration::MAX))
    }
}

/// A positive integer (a throughput of 0 would allow no upload at all).
fn positive<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom("must be greater than 0")),
        value => Ok(value),
    }
}

/// Durations as a number of seconds, with an optional fraction.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if duration.subsec_nanos() == 0 {
            serializer.serialize_u64(duration.as_secs())
        } else {
            serializer.serialize_f64(duration.as_secs_f64())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let settings = OpenWrtSettings::default();
        assert_eq!(settings.reconnect_delay, Duration::from_secs(180));
        assert_eq!(settings.reconnect_retry_delay, Duration::from_secs(20));
        assert_eq!(settings.reconnect_max_retries, 35);
        assert_eq!(settings.upgrade_timeout, Duration::from_secs(90));
        assert_eq!(settings.command_timeout, Duration::from_secs(30));
        assert_eq!(settings.connect_timeout, Duration::from_secs(5));
        assert_eq!(settings.min_upload_throughput, 65536);
        assert_eq!(settings.remote_upload_dir, "/tmp");
        assert_eq!(settings.checksum_file, "/etc/openwisp/firmware_checksum");
        assert_eq!(settings.non_critical_services.len(), 10);
    }

    #[test]
    fn partial_configuration_keeps_the_other_defaults_and_accepts_fractions() {
        let settings: OpenWrtSettings = serde_json::from_value(serde_json::json!({
            "reconnect_retry_delay": 0.25,
            "remote_file_name": "firmware.img"
        }))
        .unwrap();
        assert_eq!(settings.reconnect_retry_delay, Duration::from_millis(250));
        assert_eq!(settings.remote_file_name.as_deref(), Some("firmware.img"));
        assert_eq!(settings.reconnect_delay, Duration::from_secs(180));
    }

    #[test]
    fn settings_round_trip_and_refuse_unknown_or_negative_values() {
        let settings = OpenWrtSettings {
            reconnect_retry_delay: Duration::from_millis(1500),
            ..OpenWrtSettings::default()
        };
        let json = serde_json::to_value(&settings).unwrap();
        assert_eq!(json["reconnect_delay"], 180);
        assert_eq!(json["reconnect_retry_delay"], 1.5);
        assert_eq!(
            serde_json::from_value::<OpenWrtSettings>(json).unwrap(),
            settings
        );
        assert!(
            serde_json::from_value::<OpenWrtSettings>(serde_json::json!({"reconnect": 1})).is_err()
        );
        assert!(
            serde_json::from_value::<OpenWrtSettings>(serde_json::json!({"upgrade_timeout": -1}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<OpenWrtSettings>(
                serde_json::json!({"min_upload_throughput": 0})
            )
            .is_err()
        );
        let slow: OpenWrtSettings =
            serde_json::from_value(serde_json::json!({"min_upload_throughput": 1024})).unwrap();
        assert_eq!(slow.min_upload_throughput, 1024);
        assert_eq!(
            serde_json::to_value(&slow).unwrap()["min_upload_throughput"],
            1024
        );
    }

    #[test]
    fn upload_deadlines_grow_with_the_size_and_never_overflow() {
        let settings = OpenWrtSettings {
            connect_timeout: Duration::from_secs(2),
            min_upload_throughput: 1000,
            ..OpenWrtSettings::default()
        };
        assert_eq!(settings.upload_deadline(0), Duration::from_secs(2));
        assert_eq!(settings.upload_deadline(1500), Duration::from_millis(3500));
        let slowest = OpenWrtSettings {
            min_upload_throughput: 1,
            connect_timeout: Duration::MAX,
            ..settings
        };
        assert_eq!(slowest.upload_deadline(u64::MAX), Duration::MAX);
    }
}

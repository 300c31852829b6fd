//! A custom OpenWrt-based firmware in a few lines: upstream's sample
//! `CustomOpenWrtBasedFirmware`, as an [`OpenWrtUpgrader`] with its own settings, registered
//! under its own connection type.
//!
//! Upstream's sample (openwisp-firmware-upgrader's README):
//!
//! ```python
//! class CustomOpenWrtBasedFirmware(OpenWrt):
//!     # this firmware uses a custom upgrade command
//!     UPGRADE_COMMAND = "upgrade_firmware.sh --keep-config"
//!     # it takes somewhat more time to boot so it needs more time
//!     RECONNECT_DELAY = 150
//!     RECONNECT_RETRY_DELAY = 5
//!     RECONNECT_MAX_RETRIES = 20
//!
//!     def get_remote_path(self, image):
//!         return "/tmp/firmware.img"
//!
//!     def get_upgrade_command(self, path):
//!         return self.UPGRADE_COMMAND
//! ```
//!
//! Run with `cargo run --example custom_upgrader`: it registers the upgrader, prints the
//! registry, what the upgrader would send for an image, its settings as the server's
//! configuration would hold them, and how it judges some upgrade options. It contacts no
//! device.

#![expect(clippy::print_stdout, reason = "an example prints what it does")]

use std::sync::Arc;
use std::time::Duration;

use flashfleet::models::UpgradeOptions;
use flashfleet::models::credentials::ConnectionType;
use flashfleet::upgrader::UpgraderRegistry;
use flashfleet::upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};

/// The connection type devices running the custom firmware are attached with.
const CUSTOM_OPENWRT_SSH: &str = "custom-openwrt-ssh";

/// Upstream's `CustomOpenWrtBasedFirmware`: every difference is a setting. The command has no
/// `{flags}` placeholder, so (as upstream's) it ignores the sysupgrade options; the identity
/// check, checksum, memory, upload, `sysupgrade --test`, reconnection and release check are
/// the OpenWrt upgrader's.
fn custom_openwrt_based_firmware() -> OpenWrtUpgrader {
    OpenWrtUpgrader::new(OpenWrtSettings {
        upgrade_command: "upgrade_firmware.sh --keep-config".to_owned(),
        reconnect_delay: Duration::from_secs(150),
        reconnect_retry_delay: Duration::from_secs(5),
        reconnect_max_retries: 20,
        remote_file_name: Some("firmware.img".to_owned()),
        ..OpenWrtSettings::default()
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = UpgraderRegistry::default();
    registry.register(
        CUSTOM_OPENWRT_SSH,
        Arc::new(custom_openwrt_based_firmware()),
    );
    println!("registered connection types: {registry:?}");

    let upgrader = custom_openwrt_based_firmware();
    let stored_as = "builds/2.1/custom-firmware-ath79-sysupgrade.bin";
    let remote_path = upgrader.remote_path(stored_as);
    println!("an image stored as {stored_as} is uploaded to {remote_path}");
    println!(
        "and flashed with: {}",
        upgrader.upgrade_command(&remote_path, &UpgradeOptions::default())
    );

    // The same upgrader from the server's configuration file: only the differences are written.
    let configured: OpenWrtSettings = serde_json::from_str(
        r#"{
            "upgrade_command": "upgrade_firmware.sh --keep-config",
            "reconnect_delay": 150,
            "reconnect_retry_delay": 5,
            "reconnect_max_retries": 20,
            "remote_file_name": "firmware.img"
        }"#,
    )?;
    assert_eq!(&configured, upgrader.settings());
    println!(
        "its settings, as the server's configuration holds them:\n{}",
        serde_json::to_string_pretty(&configured)?
    );

    let custom = registry
        .get(&ConnectionType::new(CUSTOM_OPENWRT_SSH))
        .ok_or("the custom upgrader is registered")?;
    for (options, allow_force) in [
        (serde_json::json!({}), false),
        (serde_json::json!({"n": true, "c": true}), false),
        (serde_json::json!({"F": true}), false),
        (serde_json::json!({"F": true}), true),
    ] {
        let verdict = match custom
            .validate_options(&UpgradeOptions::from_json(options.clone())?, allow_force)
        {
            Ok(()) => "accepted".to_owned(),
            Err(errors) => format!("refused: {errors:?}"),
        };
        println!("options {options} (force allowed: {allow_force}): {verdict}");
    }
    Ok(())
}

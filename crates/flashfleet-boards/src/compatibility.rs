//! Whether an image may be flashed onto a device, decided the way OpenWrt's `sysupgrade` decides
//! it (`fwtool_check_image` in `/lib/upgrade/fwtool.sh`).
//!
//! With metadata, OpenWrt:
//! 1. takes the image compat version (`compat_version`, default `1.0`) and the device's
//!    (`uci get system.@system[0].compat_version`, default `1.0`);
//! 2. checks the board name (`/tmp/sysinfo/board_name`) against `supported_devices` when the
//!    image compat version is exactly `1.0`, else against `new_supported_devices`; a missing list
//!    or a board not listed fails;
//! 3. fails when the major versions differ (the text before the last `.`);
//! 4. when the versions differ otherwise and the configuration is kept, fails unless
//!    `--ignore-minor-compat-version` is given.
//!
//! The shell compares the "minor" part with `${version#.*}`, which removes nothing (the pattern
//! must match at the start, and versions do not start with `.`), so step 4 really compares the
//! whole strings; so do we.
//!
//! Without metadata OpenWrt either refuses the image or flashes it blindly, depending on the
//! target. We answer [`Verdict::Unknown`] and say whether the image map lists the device model for
//! the image type, the only evidence left.
//!
//! Everything here is a pure function: the API calls it at upload and dry-run time, the engine
//! before flashing, with facts read from the device.

use std::fmt;

use serde::Serialize;

use crate::image_map::ImageMap;
use crate::metadata::{DEFAULT_COMPAT_VERSION, ImageMetadata};

/// What the compatibility check needs to know about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdentity<'a> {
    /// Contents of `/tmp/sysinfo/board_name`, for example `tplink,archer-c7-v2` (trailing
    /// newlines are ignored, as the shell's `$(cat ...)` drops them).
    pub board_name: &'a str,
    /// Contents of `/tmp/sysinfo/model`, for example `TP-Link Archer C7 v2`: what the image map
    /// lists.
    pub model: &'a str,
    /// `uci -q get system.@system[0].compat_version`; `None` or empty means `1.0`.
    pub compat_version: Option<&'a str>,
}

/// How `sysupgrade` will be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysupgradeOptions {
    /// Whether the configuration is kept (`sysupgrade` without `-n`).
    pub keep_config: bool,
    /// `--ignore-minor-compat-version`.
    pub ignore_minor_compat_version: bool,
}

impl Default for SysupgradeOptions {
    /// `sysupgrade`'s own defaults: keep the configuration, do not ignore compat versions.
    fn default() -> Self {
        SysupgradeOptions {
            keep_config: true,
            ignore_minor_compat_version: false,
        }
    }
}

/// The answer of the compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// OpenWrt accepts the image with these options.
    Compatible,
    /// The device is supported but its configuration is not: OpenWrt refuses the image while the
    /// configuration is kept, and accepts it without keeping it (`sysupgrade -n`) or with
    /// `--ignore-minor-compat-version`.
    CompatibleWithoutKeepingConfig {
        /// The device's compat version.
        device_compat_version: String,
        /// The image's compat version.
        image_compat_version: String,
        /// The image's `compat_message`, if any.
        compat_message: Option<String>,
    },
    /// OpenWrt refuses the image.
    Incompatible {
        /// Why.
        reason: IncompatibleReason,
    },
    /// The image has no metadata, so OpenWrt cannot tell; the image map is the only evidence.
    Unknown {
        /// Whether the image map lists the device's model for the image type.
        map_lists_model: bool,
    },
}

/// Why OpenWrt refuses an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum IncompatibleReason {
    /// The metadata lacks the device list OpenWrt checks.
    MissingDeviceList {
        /// `supported_devices` or `new_supported_devices`.
        key: &'static str,
    },
    /// The device's board name is not in the image's device list.
    BoardNotSupported {
        /// The device's board name.
        board_name: String,
        /// The list it was looked up in.
        supported_devices: Vec<String>,
    },
    /// The major compat versions differ: the image cannot be sysupgraded onto this device.
    MajorCompatVersionDiffers {
        /// The device's compat version.
        device_compat_version: String,
        /// The image's compat version.
        image_compat_version: String,
        /// The image's `compat_message`, if any.
        compat_message: Option<String>,
    },
}

impl Verdict {
    /// Whether OpenWrt accepts the image with the options given.
    pub fn is_compatible(&self) -> bool {
        matches!(self, Verdict::Compatible)
    }
}

/// Checks image metadata against a device, exactly as OpenWrt does (see the module
/// documentation). Never answers [`Verdict::Unknown`].
pub fn check_metadata(
    metadata: &ImageMetadata,
    device: &DeviceIdentity<'_>,
    options: SysupgradeOptions,
) -> Verdict {
    let board_name = device.board_name.trim_end_matches('\n');
    let device_compat_version = match device.compat_version.map(|v| v.trim_end_matches('\n')) {
        Some(compat_version) if !compat_version.is_empty() => compat_version,
        _ => DEFAULT_COMPAT_VERSION,
    };
    let image_compat_version = metadata.compat_version_or_default();
    let Some(supported_devices) = metadata.active_supported_devices() else {
        return Verdict::Incompatible {
            reason: IncompatibleReason::MissingDeviceList {
                key: metadata.active_device_list_key(),
            },
        };
    };
    if !supported_devices.iter().any(|device| device == board_name) {
        return Verdict::Incompatible {
            reason: IncompatibleReason::BoardNotSupported {
                board_name: board_name.to_owned(),
                supported_devices: supported_devices.to_vec(),
            },
        };
    }
    if major(device_compat_version) != major(image_compat_version) {
        return Verdict::Incompatible {
            reason: IncompatibleReason::MajorCompatVersionDiffers {
                device_compat_version: device_compat_version.to_owned(),
                image_compat_version: image_compat_version.to_owned(),
                compat_message: metadata.compat_message.clone(),
            },
        };
    }
    if device_compat_version != image_compat_version
        && options.keep_config
        && !options.ignore_minor_compat_version
    {
        return Verdict::CompatibleWithoutKeepingConfig {
            device_compat_version: device_compat_version.to_owned(),
            image_compat_version: image_compat_version.to_owned(),
            compat_message: metadata.compat_message.clone(),
        };
    }
    Verdict::Compatible
}

/// Checks an image against a device: by its metadata when it has some ([`check_metadata`]),
/// otherwise [`Verdict::Unknown`] with what `image_map` says about `image_type` and the device
/// model.
pub fn check_compatibility(
    image_map: &ImageMap,
    image_type: &str,
    metadata: Option<&ImageMetadata>,
    device: &DeviceIdentity<'_>,
    options: SysupgradeOptions,
) -> Verdict {
    match metadata {
        Some(metadata) => check_metadata(metadata, device, options),
        None => Verdict::Unknown {
            map_lists_model: image_map.lists_board(image_type, device.model.trim_end_matches('\n')),
        },
    }
}

/// The shell's `${version%.*}`: everything before the last `.`, or the whole string.
fn major(compat_version: &str) -> &str {
    compat_version
        .rfind('.')
        .map_or(compat_version, |dot| &compat_version[..dot])
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Compatible => formatter.write_str("the image is compatible with the device"),
            Verdict::CompatibleWithoutKeepingConfig {
                device_compat_version,
                image_compat_version,
                compat_message,
            } => {
                write!(
                    formatter,
                    "the device is supported, but its config is incompatible with the new image \
                     ({device_compat_version}->{image_compat_version}); upgrade without keeping \
                     config"
                )?;
                write_message(formatter, compat_message.as_deref())
            }
            Verdict::Incompatible { reason } => reason.fmt(formatter),
            Verdict::Unknown {
                map_lists_model: true,
            } => formatter.write_str(
                "the image has no metadata; the image map lists the device model for this image type",
            ),
            Verdict::Unknown {
                map_lists_model: false,
            } => formatter.write_str(
                "the image has no metadata, and the image map does not list the device model for \
                 this image type",
            ),
        }
    }
}

impl fmt::Display for IncompatibleReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncompatibleReason::MissingDeviceList { key } => {
                write!(formatter, "the image metadata has no `{key}` list")
            }
            IncompatibleReason::BoardNotSupported {
                board_name,
                supported_devices,
            } => write!(
                formatter,
                "device {board_name} is not supported by this image (supported devices: {})",
                supported_devices.join(" ")
            ),
            IncompatibleReason::MajorCompatVersionDiffers {
                device_compat_version,
                image_compat_version,
                compat_message,
            } => {
                write!(
                    formatter,
                    "the device is supported, but this image is incompatible for sysupgrade based \
                     on the image version ({device_compat_version}->{image_compat_version})"
                )?;
                write_message(formatter, compat_message.as_deref())
            }
        }
    }
}

fn write_message(formatter: &mut fmt::Formatter<'_>, message: Option<&str>) -> fmt::Result {
    match message {
        Some(message) if !message.is_empty() => write!(formatter, ": {message}"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOARD: &str = "glinet,gl-mt300n-v2";

    fn metadata(json: &str) -> ImageMetadata {
        ImageMetadata::from_json(json.as_bytes()).unwrap()
    }

    fn device(compat_version: Option<&str>) -> DeviceIdentity<'_> {
        DeviceIdentity {
            board_name: BOARD,
            model: "GL.iNet GL-MT300N-V2",
            compat_version,
        }
    }

    fn keep_config() -> SysupgradeOptions {
        SysupgradeOptions::default()
    }

    fn without_config() -> SysupgradeOptions {
        SysupgradeOptions {
            keep_config: false,
            ignore_minor_compat_version: false,
        }
    }

    #[test]
    fn listed_board_with_equal_compat_versions_is_compatible() {
        let image = metadata(r#"{"supported_devices": ["glinet,gl-mt300n-v2", "gl-mt300n-v2"]}"#);
        assert_eq!(
            check_metadata(&image, &device(None), keep_config()),
            Verdict::Compatible
        );
        assert_eq!(
            check_metadata(&image, &device(Some("1.0")), keep_config()),
            Verdict::Compatible
        );
        let with_newline = DeviceIdentity {
            board_name: "glinet,gl-mt300n-v2\n",
            ..device(Some("\n"))
        };
        assert!(check_metadata(&image, &with_newline, keep_config()).is_compatible());
    }

    #[test]
    fn board_not_in_the_list_is_incompatible() {
        let image = metadata(r#"{"supported_devices": ["tplink,archer-c7-v2"]}"#);
        let verdict = check_metadata(&image, &device(None), keep_config());
        assert_eq!(
            verdict,
            Verdict::Incompatible {
                reason: IncompatibleReason::BoardNotSupported {
                    board_name: BOARD.to_owned(),
                    supported_devices: vec!["tplink,archer-c7-v2".to_owned()],
                }
            }
        );
        assert_eq!(
            verdict.to_string(),
            "device glinet,gl-mt300n-v2 is not supported by this image (supported devices: \
             tplink,archer-c7-v2)"
        );
    }

    #[test]
    fn board_names_match_exactly() {
        let image =
            metadata(r#"{"supported_devices": ["glinet,gl-mt300n", "GLINET,GL-MT300N-V2"]}"#);
        assert!(!check_metadata(&image, &device(None), keep_config()).is_compatible());
    }

    #[test]
    fn new_compat_version_reads_new_supported_devices() {
        // OpenWrt's build writes a warning string into supported_devices for old devices.
        let image = metadata(
            r#"{"compat_version": "1.1",
                "supported_devices": ["glinet,gl-mt300n-v2 - Image version mismatch"],
                "new_supported_devices": ["glinet,gl-mt300n-v2"]}"#,
        );
        assert!(check_metadata(&image, &device(Some("1.1")), keep_config()).is_compatible());

        let only_old_list =
            metadata(r#"{"compat_version": "2.0", "supported_devices": ["glinet,gl-mt300n-v2"]}"#);
        assert_eq!(
            check_metadata(&only_old_list, &device(Some("2.0")), keep_config()),
            Verdict::Incompatible {
                reason: IncompatibleReason::MissingDeviceList {
                    key: "new_supported_devices"
                }
            }
        );
        let no_list = metadata(r#"{"metadata_version": "1.0"}"#);
        assert_eq!(
            check_metadata(&no_list, &device(None), keep_config()),
            Verdict::Incompatible {
                reason: IncompatibleReason::MissingDeviceList {
                    key: "supported_devices"
                }
            }
        );
    }

    #[test]
    fn major_compat_difference_is_incompatible_even_without_config() {
        let image = metadata(
            r#"{"compat_version": "2.0", "compat_message": "Partition layout changed",
                "new_supported_devices": ["glinet,gl-mt300n-v2"]}"#,
        );
        for options in [keep_config(), without_config()] {
            let verdict = check_metadata(&image, &device(None), options);
            assert_eq!(
                verdict,
                Verdict::Incompatible {
                    reason: IncompatibleReason::MajorCompatVersionDiffers {
                        device_compat_version: "1.0".to_owned(),
                        image_compat_version: "2.0".to_owned(),
                        compat_message: Some("Partition layout changed".to_owned()),
                    }
                }
            );
            assert_eq!(
                verdict.to_string(),
                "the device is supported, but this image is incompatible for sysupgrade based on \
                 the image version (1.0->2.0): Partition layout changed"
            );
        }
    }

    #[test]
    fn minor_compat_difference_needs_upgrading_without_keeping_config() {
        let image = metadata(
            r#"{"compat_version": "1.1", "new_supported_devices": ["glinet,gl-mt300n-v2"]}"#,
        );
        assert_eq!(
            check_metadata(&image, &device(None), keep_config()),
            Verdict::CompatibleWithoutKeepingConfig {
                device_compat_version: "1.0".to_owned(),
                image_compat_version: "1.1".to_owned(),
                compat_message: None,
            }
        );
        assert_eq!(
            check_metadata(&image, &device(None), without_config()),
            Verdict::Compatible
        );
        let ignore_minor = SysupgradeOptions {
            keep_config: true,
            ignore_minor_compat_version: true,
        };
        assert_eq!(
            check_metadata(&image, &device(None), ignore_minor),
            Verdict::Compatible
        );
        // Downgrades of the minor version are treated the same way.
        let old_image = metadata(r#"{"supported_devices": ["glinet,gl-mt300n-v2"]}"#);
        assert!(matches!(
            check_metadata(&old_image, &device(Some("1.1")), keep_config()),
            Verdict::CompatibleWithoutKeepingConfig { .. }
        ));
    }

    #[test]
    fn compat_versions_compare_as_the_shell_does() {
        assert_eq!(major("1.0"), "1");
        assert_eq!(major("1"), "1");
        assert_eq!(major("1.2.3"), "1.2");
        assert_eq!(major(""), "");
        // "1" and "1.0" have the same major part but differ as strings.
        let image = metadata(
            r#"{"compat_version": "1", "new_supported_devices": ["glinet,gl-mt300n-v2"]}"#,
        );
        assert!(matches!(
            check_metadata(&image, &device(Some("1.0")), keep_config()),
            Verdict::CompatibleWithoutKeepingConfig { .. }
        ));
        let image = metadata(
            r#"{"compat_version": "1.2.3", "new_supported_devices": ["glinet,gl-mt300n-v2"]}"#,
        );
        assert!(matches!(
            check_metadata(&image, &device(Some("1.3.0")), keep_config()),
            Verdict::Incompatible {
                reason: IncompatibleReason::MajorCompatVersionDiffers { .. }
            }
        ));
    }

    #[test]
    fn without_metadata_the_map_decides_whether_the_model_is_listed() {
        let map = ImageMap::openwrt();
        let image_type = "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin";
        let gl_mt300n = DeviceIdentity {
            board_name: BOARD,
            model: "GL-MT300N-V2",
            compat_version: None,
        };
        let verdict = check_compatibility(map, image_type, None, &gl_mt300n, keep_config());
        assert_eq!(
            verdict,
            Verdict::Unknown {
                map_lists_model: true
            }
        );
        assert!(!verdict.is_compatible());
        let other = DeviceIdentity {
            model: "TP-Link Archer C7 v2",
            ..gl_mt300n
        };
        assert_eq!(
            check_compatibility(map, image_type, None, &other, keep_config()),
            Verdict::Unknown {
                map_lists_model: false
            }
        );
        assert_eq!(
            check_compatibility(map, "unknown.bin", None, &gl_mt300n, keep_config()),
            Verdict::Unknown {
                map_lists_model: false
            }
        );
    }

    #[test]
    fn with_metadata_the_map_is_not_consulted() {
        let map = ImageMap::openwrt();
        let image = metadata(r#"{"supported_devices": ["tplink,archer-c7-v2"]}"#);
        let verdict = check_compatibility(
            map,
            "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin",
            Some(&image),
            &DeviceIdentity {
                board_name: BOARD,
                model: "GL-MT300N-V2",
                compat_version: None,
            },
            keep_config(),
        );
        assert!(matches!(verdict, Verdict::Incompatible { .. }));
    }

    #[test]
    fn verdicts_serialize_with_a_tag() {
        let verdict = Verdict::Incompatible {
            reason: IncompatibleReason::MissingDeviceList {
                key: "supported_devices",
            },
        };
        assert_eq!(
            serde_json::to_value(&verdict).unwrap(),
            serde_json::json!({"verdict": "incompatible",
                               "reason": {"kind": "missing_device_list", "key": "supported_devices"}})
        );
    }
}

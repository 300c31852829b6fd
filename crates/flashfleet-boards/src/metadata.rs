//! The JSON metadata OpenWrt's build system stores in a sysupgrade image (`fwtool -I`).
//!
//! Reading is lenient in the way OpenWrt's shell code (jshn) is: a field of an unexpected type is
//! treated as absent, not as an error, and the compatibility check then decides as OpenWrt would
//! (a missing device list makes the image incompatible). Only a document that is not a JSON
//! object is an error, because OpenWrt refuses those images outright ("Invalid image metadata").

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::BoardsError;

/// The compat version an image or device has when it does not state one.
pub const DEFAULT_COMPAT_VERSION: &str = "1.0";

/// Parsed fwtool metadata of a sysupgrade image.
///
/// Every field is optional because older images lack some of them (metadata version 1.0 has no
/// `compat_version`) and builds may add or drop keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImageMetadata {
    /// `metadata_version`, for example `1.1`.
    pub metadata_version: Option<String>,
    /// `compat_version` as written; see [`ImageMetadata::compat_version_or_default`].
    pub compat_version: Option<String>,
    /// `compat_message`: what the device should print when the compat version differs.
    pub compat_message: Option<String>,
    /// `supported_devices`: board names (`/tmp/sysinfo/board_name`) this image is for, or, when
    /// the compat version is not `1.0`, one explanatory string for older devices. `None` when the
    /// key is missing or is neither an array nor an object.
    pub supported_devices: Option<Vec<String>>,
    /// `new_supported_devices`: the board names checked when the compat version is not `1.0`.
    pub new_supported_devices: Option<Vec<String>>,
    /// The `version` object: what the image is.
    pub version: ImageVersion,
    /// The metadata exactly as stored in the image.
    #[serde(skip)]
    raw_json: String,
}

/// The `version` object of [`ImageMetadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImageVersion {
    /// `dist`, for example `OpenWrt`.
    pub dist: Option<String>,
    /// `version`: the release, for example `23.05.3`, or `SNAPSHOT`.
    pub version: Option<String>,
    /// `revision`, for example `r23809-234f1a2efa`.
    pub revision: Option<String>,
    /// `target`: target and subtarget, for example `ramips/mt76x8`.
    pub target: Option<String>,
    /// `board`: the image's device name, underscore form (`glinet_gl-mt300n-v2`).
    pub board: Option<String>,
}

impl ImageMetadata {
    /// Parses metadata JSON, as extracted from an image.
    ///
    /// Strings and numbers are accepted where OpenWrt reads a value (numbers as their JSON
    /// text); device lists may be arrays or objects (their values are used, as jshn does), and
    /// entries that are not strings or numbers are skipped.
    pub fn from_json(json: &[u8]) -> Result<ImageMetadata, BoardsError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|source| BoardsError::InvalidMetadata {
                source: Some(source),
            })?;
        let Value::Object(object) = value else {
            return Err(BoardsError::InvalidMetadata { source: None });
        };
        let version = match object.get("version") {
            Some(Value::Object(version)) => ImageVersion {
                dist: scalar(version, "dist"),
                version: scalar(version, "version"),
                revision: scalar(version, "revision"),
                target: scalar(version, "target"),
                board: scalar(version, "board"),
            },
            _ => ImageVersion::default(),
        };
        Ok(ImageMetadata {
            metadata_version: scalar(&object, "metadata_version"),
            compat_version: scalar(&object, "compat_version"),
            compat_message: scalar(&object, "compat_message"),
            supported_devices: device_list(&object, "supported_devices"),
            new_supported_devices: device_list(&object, "new_supported_devices"),
            version,
            // The input parsed as JSON, so it is UTF-8.
            raw_json: String::from_utf8_lossy(json).into_owned(),
        })
    }

    /// The compat version OpenWrt uses for this image: `compat_version`, or `1.0` when it is
    /// missing or empty.
    pub fn compat_version_or_default(&self) -> &str {
        match self.compat_version.as_deref() {
            Some(compat_version) if !compat_version.is_empty() => compat_version,
            _ => DEFAULT_COMPAT_VERSION,
        }
    }

    /// The key of the device list OpenWrt checks: `supported_devices` when the compat version
    /// is exactly `1.0`, `new_supported_devices` otherwise.
    pub fn active_device_list_key(&self) -> &'static str {
        if self.compat_version_or_default() == DEFAULT_COMPAT_VERSION {
            "supported_devices"
        } else {
            "new_supported_devices"
        }
    }

    /// The device list OpenWrt checks (see [`ImageMetadata::active_device_list_key`]), or `None`
    /// when the image lacks it.
    pub fn active_supported_devices(&self) -> Option<&[String]> {
        if self.compat_version_or_default() == DEFAULT_COMPAT_VERSION {
            self.supported_devices.as_deref()
        } else {
            self.new_supported_devices.as_deref()
        }
    }

    /// The metadata exactly as stored in the image (JSON text).
    pub fn raw_json(&self) -> &str {
        &self.raw_json
    }
}

/// A string field, or a number as its JSON text; anything else counts as absent.
fn scalar(object: &Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A device list: the scalar values of an array or object.
fn device_list(object: &Map<String, Value>, key: &str) -> Option<Vec<String>> {
    let values: Vec<&Value> = match object.get(key)? {
        Value::Array(values) => values.iter().collect(),
        Value::Object(values) => values.values().collect(),
        _ => return None,
    };
    Some(
        values
            .into_iter()
            .filter_map(|value| match value {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_metadata_is_read_field_by_field() {
        let json = br#"{"metadata_version": "1.1", "compat_version": "1.1",
            "compat_message": "Config cannot be migrated",
            "supported_devices": ["old - Image version mismatch"],
            "new_supported_devices": ["glinet,gl-mt300n-v2"],
            "version": {"dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa",
                        "target": "ramips/mt76x8", "board": "glinet_gl-mt300n-v2"}}"#;
        let metadata = ImageMetadata::from_json(json).unwrap();
        assert_eq!(metadata.metadata_version.as_deref(), Some("1.1"));
        assert_eq!(metadata.compat_version_or_default(), "1.1");
        assert_eq!(
            metadata.compat_message.as_deref(),
            Some("Config cannot be migrated")
        );
        assert_eq!(metadata.active_device_list_key(), "new_supported_devices");
        assert_eq!(
            metadata.active_supported_devices().unwrap(),
            ["glinet,gl-mt300n-v2"]
        );
        assert_eq!(metadata.version.dist.as_deref(), Some("OpenWrt"));
        assert_eq!(metadata.version.version.as_deref(), Some("23.05.3"));
        assert_eq!(
            metadata.version.revision.as_deref(),
            Some("r23809-234f1a2efa")
        );
        assert_eq!(metadata.version.target.as_deref(), Some("ramips/mt76x8"));
        assert_eq!(
            metadata.version.board.as_deref(),
            Some("glinet_gl-mt300n-v2")
        );
        assert_eq!(metadata.raw_json().as_bytes(), json);
    }

    #[test]
    fn old_metadata_defaults_to_compat_version_1_0() {
        let metadata = ImageMetadata::from_json(
            br#"{"metadata_version": "1.0", "supported_devices": ["a,b"], "compat_version": ""}"#,
        )
        .unwrap();
        assert_eq!(metadata.compat_version_or_default(), "1.0");
        assert_eq!(metadata.active_supported_devices().unwrap(), ["a,b"]);
        assert_eq!(metadata.version, ImageVersion::default());
    }

    #[test]
    fn fields_of_unexpected_types_count_as_absent() {
        let metadata = ImageMetadata::from_json(
            br#"{"compat_version": 1.0, "supported_devices": "a,b",
                 "new_supported_devices": {"1": "a,b", "2": 7, "3": null, "4": ["x"]},
                 "version": "23.05"}"#,
        )
        .unwrap();
        assert_eq!(metadata.compat_version.as_deref(), Some("1.0"));
        assert_eq!(metadata.supported_devices, None);
        assert_eq!(
            metadata.new_supported_devices.unwrap(),
            ["a,b".to_owned(), "7".to_owned()]
        );
        assert_eq!(metadata.version, ImageVersion::default());
    }

    #[test]
    fn metadata_that_is_not_a_json_object_is_an_error() {
        for json in [&b"[1, 2]"[..], b"\"text\"", b"{\"a\": ", b"", b"\xff\xfe"] {
            assert!(
                matches!(
                    ImageMetadata::from_json(json),
                    Err(BoardsError::InvalidMetadata { .. })
                ),
                "{json:?}"
            );
        }
    }
}

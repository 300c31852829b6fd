//! Operator configuration of the image map: custom images added to (or replacing) the built-in
//! OpenWrt table.
//!
//! This is the successor of upstream's `OPENWISP_CUSTOM_OPENWRT_IMAGES` setting. The server nests
//! [`BoardMapConfig`] in its own configuration; for example in TOML:
//!
//! ```toml
//! [[boards.custom_images]]
//! image_type = "customimage-squashfs-sysupgrade.bin"
//! label = "Custom WAP-1200"
//! boards = ["CWAP1200"]
//! ```

use serde::{Deserialize, Serialize};

/// The image-map part of the server configuration.
///
/// Build an [`ImageMap`](crate::ImageMap) from it with
/// [`ImageMap::from_config`](crate::ImageMap::from_config), which validates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardMapConfig {
    /// Images added to the built-in OpenWrt table, in the order they are listed.
    ///
    /// An entry whose `image_type` is also a built-in image type replaces the built-in entry:
    /// the operator's label and boards are used. Upstream keeps the built-in value in that case
    /// (its custom dictionary is `update()`d with the built-in one), which makes an override
    /// impossible; we consider that a bug and let the operator win.
    ///
    /// Default: empty.
    pub custom_images: Vec<CustomImage>,
}

/// One image type defined by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomImage {
    /// The image type: the file name the build system gives the image, without the first
    /// `-`-separated piece (for example `ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin`).
    /// Must not be empty.
    pub image_type: String,
    /// Human-readable name shown to users. Must not be empty.
    pub label: String,
    /// Device models this image is for, as the devices report them in `/tmp/sysinfo/model`.
    /// Must list at least one, without blanks or repeats.
    pub boards: Vec<String>,
}

impl CustomImage {
    /// Creates a custom image entry (validated when the map is built).
    pub fn new(
        image_type: impl Into<String>,
        label: impl Into<String>,
        boards: impl IntoIterator<Item = impl Into<String>>,
    ) -> CustomImage {
        CustomImage {
            image_type: image_type.into(),
            label: label.into(),
            boards: boards.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_from_json_with_defaults() {
        let empty: BoardMapConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, BoardMapConfig::default());

        let config: BoardMapConfig = serde_json::from_str(
            r#"{"custom_images": [{"image_type": "x-squashfs-sysupgrade.bin",
                "label": "X", "boards": ["X1", "X2"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.custom_images,
            [CustomImage::new(
                "x-squashfs-sysupgrade.bin",
                "X",
                ["X1", "X2"]
            )]
        );
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let result = serde_json::from_str::<BoardMapConfig>(
            r#"{"custom_images": [{"image_type": "x", "label": "X", "boards": ["X"], "board": "Y"}]}"#,
        );
        assert!(result.is_err());
        assert!(serde_json::from_str::<BoardMapConfig>(r#"{"images": []}"#).is_err());
    }
}

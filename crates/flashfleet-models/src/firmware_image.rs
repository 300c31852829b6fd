//! Firmware images: the file of a build for one family of boards, kept in private storage.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationErrors;
use crate::id::{BuildId, ImageId};
use crate::organization::check_max_length;
use crate::{Details, time};

/// A firmware image (upstream `FirmwareImage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FirmwareImage {
    /// Its id.
    pub id: ImageId,
    /// Its build.
    pub build_id: BuildId,
    /// The image type: a key of the image-to-board map (for OpenWrt, the image file name without
    /// the distribution prefix, such as `ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin`).
    pub image_type: String,
    /// The file name as uploaded, sanitised.
    pub file_name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hexadecimal.
    pub sha256: String,
    /// Where storage keeps the file.
    pub storage_key: StorageKey,
    /// What the image says about itself (OpenWrt's fwtool metadata), as JSON, if it carries any.
    pub metadata: Option<serde_json::Value>,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new image, known once its file has been stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewFirmwareImage {
    /// Its build.
    pub build_id: BuildId,
    /// The image type; empty to derive it from the file name ([`derive_image_type`]).
    pub image_type: String,
    /// The file name as uploaded.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hexadecimal.
    pub sha256: String,
    /// Where storage keeps it.
    pub storage_key: StorageKey,
    /// Its metadata, if any.
    pub metadata: Option<serde_json::Value>,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewFirmwareImage {
    /// Checks the fields and fills in a missing image type, as upstream's `clean()` does.
    ///
    /// `is_known_type` answers whether an image type has boards (the image map, including image
    /// types accepted from the image's own metadata).
    pub fn validate(
        &mut self,
        is_known_type: impl Fn(&str) -> bool,
    ) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.file_name.is_empty() || self.size == 0 {
            errors.add("file", "The submitted file is empty.");
        }
        check_max_length(&mut errors, "file", &self.file_name, FILE_NAME_MAX_LENGTH);
        if self.image_type.is_empty() {
            self.image_type = derive_image_type(&self.file_name);
        }
        check_max_length(&mut errors, "type", &self.image_type, TYPE_MAX_LENGTH);
        if !is_known_type(&self.image_type) {
            errors.add("type", "Could not find boards for this type");
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            errors.add("file", "the checksum is not a SHA-256 hexadecimal digest");
        }
        errors.into_result()
    }

    /// The image this would be once stored, with a new id and the current time.
    pub fn into_image(self) -> FirmwareImage {
        let now = time::now();
        FirmwareImage {
            id: ImageId::new(),
            build_id: self.build_id,
            image_type: self.image_type,
            file_name: self.file_name,
            size: self.size,
            sha256: self.sha256.to_ascii_lowercase(),
            storage_key: self.storage_key,
            metadata: self.metadata,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

/// Maximum length of a stored file name (upstream, since 1.1.0).
pub const FILE_NAME_MAX_LENGTH: usize = 255;
/// Maximum length of an image type (upstream `char(128)`).
pub const TYPE_MAX_LENGTH: usize = 128;

/// Upstream's rule for an image uploaded without a type: split the file name on `-`, drop the
/// first piece (the distribution name), rejoin. `openwrt-ath79-generic-x.bin` becomes
/// `ath79-generic-x.bin`. A name without `-` gives an empty type.
pub fn derive_image_type(file_name: &str) -> String {
    match file_name.split_once('-') {
        Some((_, rest)) => rest.to_owned(),
        None => String::new(),
    }
}

/// The file name reduced to what is safe as the last part of a storage key: the base name only
/// (no directories), ASCII letters, digits and `.-_`; other characters become `_`; at most 255
/// characters; never empty, `.` or `..`.
pub fn sanitize_file_name(file_name: &str) -> String {
    let base_name = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut sanitized: String = base_name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || ".-_".contains(character) {
                character
            } else {
                '_'
            }
        })
        .take(FILE_NAME_MAX_LENGTH)
        .collect();
    if sanitized.trim_matches('.').is_empty() {
        sanitized = "firmware.bin".to_owned();
    }
    sanitized
}

/// The key of a file in firmware storage: `<build id>/<random UUID>/<sanitised file name>`.
/// Built only through [`StorageKey::for_image`] or read back from storage.
///
/// Upstream stores `<build id>/<sanitised file name>`; the random middle part keeps its
/// `<build id>/` prefix (one "directory" per build) while two uploads of one build with the same
/// file name (a replaced image, or two uploads racing) never share a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorageKey(String);

impl StorageKey {
    /// A new, unique key for a file named `file_name` of build `build_id`.
    pub fn for_image(build_id: BuildId, file_name: &str) -> Self {
        Self(format!(
            "{build_id}/{}/{}",
            Uuid::new_v4().hyphenated(),
            sanitize_file_name(file_name)
        ))
    }

    /// A key read back from persistence.
    pub fn from_stored(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last part of the key: the file name on the device's `/tmp`.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_image(file_name: &str, image_type: &str) -> NewFirmwareImage {
        let build_id = BuildId::new();
        NewFirmwareImage {
            build_id,
            image_type: image_type.into(),
            file_name: file_name.into(),
            size: 10,
            sha256: "a".repeat(64),
            storage_key: StorageKey::for_image(build_id, file_name),
            metadata: None,
            details: Details::new(),
        }
    }

    #[test]
    fn the_type_is_derived_from_the_file_name_as_upstream_does() {
        assert_eq!(
            derive_image_type("openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"),
            "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
        );
        assert_eq!(derive_image_type("nodash.bin"), "");
        let mut image = new_image("openwrt-x86-64-generic.img", "");
        assert!(
            image
                .validate(|image_type| image_type == "x86-64-generic.img")
                .is_ok()
        );
        assert_eq!(image.image_type, "x86-64-generic.img");
    }

    #[test]
    fn an_unknown_type_is_refused_with_upstreams_message() {
        let mut image = new_image("openwrt-unknown.bin", "");
        assert_eq!(
            image.validate(|_| false).unwrap_err().messages("type"),
            ["Could not find boards for this type"]
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        let mut image = new_image("openwrt-a.bin", "a.bin");
        image.size = 0;
        assert!(
            !image
                .validate(|_| true)
                .unwrap_err()
                .messages("file")
                .is_empty()
        );
    }

    #[test]
    fn storage_keys_cannot_escape_their_build_directory() {
        let build_id = BuildId::new();
        let key = StorageKey::for_image(build_id, "../../etc/passwd");
        let parts: Vec<&str> = key.as_str().split('/').collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert_eq!(parts[0], build_id.to_string());
        assert!(Uuid::parse_str(parts[1]).is_ok(), "{key}");
        assert_eq!(parts[2], "passwd");
        assert_eq!(key.file_name(), "passwd");
        assert_eq!(
            StorageKey::for_image(build_id, "..").file_name(),
            "firmware.bin"
        );
        assert_eq!(
            StorageKey::for_image(build_id, "a b\u{e9}.bin").file_name(),
            "a_b_.bin"
        );
        assert_eq!(sanitize_file_name(&"x".repeat(300)).len(), 255);
    }

    #[test]
    fn two_uploads_of_one_file_name_get_different_keys() {
        let build_id = BuildId::new();
        let first = StorageKey::for_image(build_id, "openwrt.bin");
        let second = StorageKey::for_image(build_id, "openwrt.bin");
        assert_ne!(first, second);
        assert_eq!(first.file_name(), second.file_name());
    }
}

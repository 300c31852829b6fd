//! Builds: one version of the firmware of a category, with its images (one per board family).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::id::{BuildId, CategoryId};
use crate::organization::{check_max_length, check_required_text};
use crate::{Details, time};

/// A firmware build (upstream `Build`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Its id.
    pub id: BuildId,
    /// Its category (and through it, its organization).
    pub category_id: CategoryId,
    /// Its version, unique within the category.
    pub version: String,
    /// The OS identifier devices running this build report (for example
    /// `OpenWrt 23.05.3 r23809-234f1a2efa`); it must equal a device's `os` exactly for the
    /// automatic detection of the firmware a device runs.
    pub os: Option<String>,
    /// What changed.
    pub changelog: String,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewBuild {
    /// Its category.
    pub category_id: CategoryId,
    /// Its version.
    pub version: String,
    /// The OS identifier devices running it report.
    pub os: Option<String>,
    /// What changed.
    pub changelog: String,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewBuild {
    /// A build of `category_id` with `version`, no OS identifier and no changelog.
    pub fn new(category_id: CategoryId, version: impl Into<String>) -> Self {
        Self {
            category_id,
            version: version.into(),
            os: None,
            changelog: String::new(),
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_build`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_build(&self.version, self.os.as_deref())
    }

    /// The build this would be once stored, with a new id and the current time.
    pub fn into_build(self) -> Build {
        let now = time::now();
        Build {
            id: BuildId::new(),
            category_id: self.category_id,
            version: self.version,
            os: normalize_os(self.os),
            changelog: self.changelog,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl Build {
    /// Checks the fields (see [`validate_build`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_build(&self.version, self.os.as_deref())
    }
}

/// Maximum length of a version (upstream `char(32)`).
pub const VERSION_MAX_LENGTH: usize = 32;
/// Maximum length of an OS identifier (upstream `char(64)`).
pub const OS_MAX_LENGTH: usize = 64;

/// A build needs a version of at most 32 characters; its OS identifier has at most 64.
///
/// The uniqueness of the OS identifier within the category's organization needs the other
/// builds: repositories check it and report [`build_os_conflict`].
pub fn validate_build(version: &str, os: Option<&str>) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "version", version, VERSION_MAX_LENGTH);
    if let Some(os) = os {
        check_max_length(&mut errors, "os", os, OS_MAX_LENGTH);
    }
    errors.into_result()
}

/// An empty OS identifier means none (upstream's field is `null=True, blank=True`).
pub fn normalize_os(os: Option<String>) -> Option<String> {
    os.filter(|os| !os.trim().is_empty())
}

/// Upstream's error for a second build with the same OS identifier in one organization
/// (`organization_label` is the organization's name, or `None` for shared categories).
pub fn build_os_conflict(os: &str, organization_label: Option<&str>) -> ValidationErrors {
    ValidationErrors::field(
        "os",
        format!(
            "A build with this OS identifier (\"{os}\") and organization (\"{}\") already exists",
            organization_label.unwrap_or("None")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_needs_a_short_version_and_a_short_os() {
        assert!(validate_build("1.0", Some("OpenWrt 23.05")).is_ok());
        assert_eq!(
            validate_build("", None).unwrap_err().messages("version"),
            ["This field may not be blank."]
        );
        assert!(validate_build(&"1".repeat(33), None).is_err());
        assert!(validate_build("1", Some(&"o".repeat(65))).is_err());
    }

    #[test]
    fn an_empty_os_identifier_means_none() {
        let build = NewBuild {
            os: Some(" ".into()),
            ..NewBuild::new(CategoryId::new(), "1")
        };
        assert_eq!(build.into_build().os, None);
    }

    #[test]
    fn the_os_conflict_message_is_upstreams() {
        assert_eq!(
            build_os_conflict("OpenWrt", Some("default")).messages("os"),
            [
                "A build with this OS identifier (\"OpenWrt\") and organization (\"default\") already exists"
            ]
        );
    }
}

//! Organizations: the tenants. Every category, device and credential belongs to one (or, for
//! categories and credentials, to none: then it is shared by all).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::id::OrganizationId;
use crate::{Details, time};

/// A tenant: users manage the devices and firmware of the organizations they belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id.
    pub id: OrganizationId,
    /// Display name, unique.
    pub name: String,
    /// URL-safe short name, unique; API filters use it (`?organization=<slug>`).
    pub slug: String,
    /// An inactive organization keeps its data but its members cannot use it.
    pub is_active: bool,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOrganization {
    /// Display name.
    pub name: String,
    /// URL-safe short name.
    pub slug: String,
    /// Whether it is active.
    pub is_active: bool,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewOrganization {
    /// An active organization with the given name and slug and no details.
    pub fn new(name: impl Into<String>, slug: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            slug: slug.into(),
            is_active: true,
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_organization`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_organization(&self.name, &self.slug)
    }

    /// The organization this would be once stored, with a new id and the current time.
    pub fn into_organization(self) -> Organization {
        let now = time::now();
        Organization {
            id: OrganizationId::new(),
            name: self.name,
            slug: self.slug,
            is_active: self.is_active,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl Organization {
    /// Checks the fields (see [`validate_organization`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_organization(&self.name, &self.slug)
    }
}

/// Maximum length of an organization name (openwisp-users).
pub const NAME_MAX_LENGTH: usize = 200;
/// Maximum length of an organization slug (openwisp-users).
pub const SLUG_MAX_LENGTH: usize = 200;

/// An organization needs a name and a slug made of ASCII letters, digits, `-` and `_`.
pub fn validate_organization(name: &str, slug: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "name", name, NAME_MAX_LENGTH);
    check_required_text(&mut errors, "slug", slug, SLUG_MAX_LENGTH);
    if !slug.is_empty()
        && !slug
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_".contains(character))
    {
        errors.add(
            "slug",
            "Enter a valid \u{201c}slug\u{201d} consisting of letters, numbers, underscores or hyphens.",
        );
    }
    errors.into_result()
}

/// Adds Django's messages for a blank or too long required text field.
pub(crate) fn check_required_text(
    errors: &mut ValidationErrors,
    field: &str,
    value: &str,
    max_length: usize,
) {
    if value.trim().is_empty() {
        errors.add(field, "This field may not be blank.");
    }
    check_max_length(errors, field, value, max_length);
}

/// Adds Django's message for a text field longer than `max_length` characters.
pub(crate) fn check_max_length(
    errors: &mut ValidationErrors,
    field: &str,
    value: &str,
    max_length: usize,
) {
    if value.chars().count() > max_length {
        errors.add(
            field,
            format!("Ensure this field has no more than {max_length} characters."),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organization_needs_a_name_and_a_valid_slug() {
        assert!(NewOrganization::new("ACME", "acme-1_b").validate().is_ok());
        let errors = NewOrganization::new("", "has space")
            .validate()
            .err()
            .unwrap_or_default();
        assert_eq!(errors.messages("name"), ["This field may not be blank."]);
        assert_eq!(errors.messages("slug").len(), 1);
    }

    #[test]
    fn overlong_names_are_refused() {
        let errors = validate_organization(&"x".repeat(201), "x")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errors.messages("name"),
            ["Ensure this field has no more than 200 characters."]
        );
    }
}

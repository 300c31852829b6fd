//! Firmware categories: a line of firmware (say, "AP firmware for the office") whose builds are
//! versions of the same thing. A category without organization is shared by all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::id::{CategoryId, OrganizationId};
use crate::organization::check_required_text;
use crate::{Details, time};

/// A firmware category (upstream `Category`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Its id.
    pub id: CategoryId,
    /// Its organization; `None` means shared by every organization (only superusers change it).
    pub organization_id: Option<OrganizationId>,
    /// Its name, unique within the organization (or among shared categories).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewCategory {
    /// Its organization, `None` for a shared category.
    pub organization_id: Option<OrganizationId>,
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewCategory {
    /// A category of `organization_id` named `name`, without description.
    pub fn new(organization_id: Option<OrganizationId>, name: impl Into<String>) -> Self {
        Self {
            organization_id,
            name: name.into(),
            description: String::new(),
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_category`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_category(&self.name)
    }

    /// The category this would be once stored, with a new id and the current time.
    pub fn into_category(self) -> Category {
        let now = time::now();
        Category {
            id: CategoryId::new(),
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl Category {
    /// Checks the fields (see [`validate_category`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_category(&self.name)
    }
}

/// Maximum length of a category name (upstream `char(64)`).
pub const NAME_MAX_LENGTH: usize = 64;

/// A category needs a name of at most 64 characters.
pub fn validate_category(name: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "name", name, NAME_MAX_LENGTH);
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_needs_a_short_name() {
        assert!(NewCategory::new(None, "Routers").validate().is_ok());
        assert_eq!(
            validate_category("").unwrap_err().messages("name"),
            ["This field may not be blank."]
        );
        assert!(validate_category(&"n".repeat(65)).is_err());
    }
}

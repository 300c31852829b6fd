//! The errors of the database layer, and their translation into repository errors.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use flashfleet_models::{Constraint, RepoError};

/// What can go wrong in `flashfleet-db`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database URL is not one this crate can use.
    #[error("invalid database URL: {reason}")]
    InvalidUrl {
        /// Why (the URL itself is not repeated: it may hold a password).
        reason: String,
    },
    /// The pool could not be built or could not open a connection.
    #[error("could not connect to the database: {message}")]
    Connect {
        /// What failed.
        message: String,
    },
    /// Applying the embedded migrations failed.
    #[error("could not apply the database migrations")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    /// A rule of the domain refused the change inside a transaction (rolled back).
    #[error(transparent)]
    Domain(#[from] RepoError),
    /// A stored value cannot be read back (a malformed id, JSON or status).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The secret key is missing or malformed, or encryption failed.
    #[error("secret encryption failed: {0}")]
    Secret(String),
    /// A stored secret does not decrypt with the secret key.
    #[error("{0}")]
    Undecryptable(String),
}

impl DbError {
    pub(crate) fn connect(error: impl std::fmt::Display) -> Self {
        DbError::Connect {
            message: error.to_string(),
        }
    }
}

impl From<DbError> for RepoError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Domain(error) => error,
            DbError::Undecryptable(message) => RepoError::Undecryptable { message },
            DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                information,
            )) => RepoError::AlreadyExists {
                constraint: constraint_of(information.as_ref()),
            },
            DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                information,
            )) => RepoError::MissingReference {
                what: referenced_object(information.as_ref()),
            },
            other => {
                let message = other.to_string();
                RepoError::backend(message, other)
            }
        }
    }
}

/// Unique constraints by their PostgreSQL name and by the columns SQLite names in its message
/// (`UNIQUE constraint failed: builds.category_id, builds.version`).
const UNIQUE_CONSTRAINTS: &[(&str, &str, Constraint)] = &[
    (
        "organizations_slug_key",
        "organizations.slug",
        Constraint::OrganizationSlug,
    ),
    (
        "organizations_name_key",
        "organizations.name",
        Constraint::OrganizationName,
    ),
    ("users_username_key", "users.username", Constraint::Username),
    (
        "memberships_pkey",
        "memberships.user_id, memberships.organization_id",
        Constraint::Membership,
    ),
    (
        "api_tokens_key_hash_key",
        "api_tokens.key_hash",
        Constraint::TokenKey,
    ),
    (
        "categories_organization_name_key",
        "categories.organization_id, categories.name",
        Constraint::CategoryName,
    ),
    (
        "categories_shared_name_key",
        "categories.name",
        Constraint::CategoryName,
    ),
    (
        "builds_category_version_key",
        "builds.category_id, builds.version",
        Constraint::BuildVersion,
    ),
    (
        "firmware_images_build_type_key",
        "firmware_images.build_id, firmware_images.image_type",
        Constraint::ImageType,
    ),
    (
        "device_groups_organization_name_key",
        "device_groups.organization_id, device_groups.name",
        Constraint::DeviceGroupName,
    ),
    (
        "devices_organization_name_key",
        "devices.organization_id, devices.name",
        Constraint::DeviceName,
    ),
    (
        "devices_organization_mac_key",
        "devices.organization_id, devices.mac_address",
        Constraint::DeviceMac,
    ),
    (
        "credentials_organization_name_key",
        "credentials.organization_id, credentials.name",
        Constraint::CredentialsName,
    ),
    (
        "credentials_shared_name_key",
        "credentials.name",
        Constraint::CredentialsName,
    ),
    (
        "device_connections_device_credentials_key",
        "device_connections.device_id, device_connections.credentials_id",
        Constraint::DeviceConnection,
    ),
    (
        "device_firmwares_device_key",
        "device_firmwares.device_id",
        Constraint::OneFirmwarePerDevice,
    ),
    (
        "upgrade_operations_one_unfinished_per_device",
        "upgrade_operations.device_id",
        Constraint::OneUnfinishedOperationPerDevice,
    ),
];

fn constraint_of(information: &(dyn DatabaseErrorInformation + Send + Sync)) -> Constraint {
    if let Some(name) = information.constraint_name()
        && let Some((_, _, constraint)) = UNIQUE_CONSTRAINTS.iter().find(|(pg, _, _)| *pg == name)
    {
        return *constraint;
    }
    let message = information.message();
    let columns = message
        .strip_prefix("UNIQUE constraint failed: ")
        .unwrap_or(message);
    UNIQUE_CONSTRAINTS
        .iter()
        .find(|(_, sqlite, _)| *sqlite == columns)
        .map_or(Constraint::Other, |(_, _, constraint)| *constraint)
}

fn referenced_object(information: &(dyn DatabaseErrorInformation + Send + Sync)) -> String {
    match information.table_name() {
        Some(table) => format!("an object referenced by {table}"),
        None => "a referenced object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Information {
        message: &'static str,
        constraint: Option<&'static str>,
    }

    impl DatabaseErrorInformation for Information {
        fn message(&self) -> &str {
            self.message
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            self.constraint
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn unique(message: &'static str, constraint: Option<&'static str>) -> RepoError {
        DbError::Query(diesel::result::Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new(Information {
                message,
                constraint,
            }),
        ))
        .into()
    }

    #[test]
    fn unique_violations_name_their_rule_on_both_backends() {
        let postgres = unique(
            "duplicate key",
            Some("upgrade_operations_one_unfinished_per_device"),
        );
        let sqlite = unique(
            "UNIQUE constraint failed: upgrade_operations.device_id",
            None,
        );
        for error in [postgres, sqlite] {
            assert!(matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::OneUnfinishedOperationPerDevice
                }
            ));
        }
        assert!(matches!(
            unique("UNIQUE constraint failed: nowhere.x", None),
            RepoError::AlreadyExists {
                constraint: Constraint::Other
            }
        ));
    }
}

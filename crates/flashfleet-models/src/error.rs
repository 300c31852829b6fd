//! The error values of the domain: validation failures, illegal status transitions, refused
//! cancellations, and the errors a repository reports.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::upgrade_operation::{UpgradePhase, UpgradeStatus};

/// Validation failures, keyed by field name, each with its list of messages, as upstream's API
/// returns them (`{"version": ["..."], "__all__": ["..."]}`).
///
/// Errors that concern the object as a whole are kept under [`ValidationErrors::NON_FIELD`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors {
    fields: BTreeMap<String, Vec<String>>,
}

impl ValidationErrors {
    /// The key of errors that concern no single field (Django's `__all__`).
    pub const NON_FIELD: &'static str = "__all__";

    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single error on `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// A single error on the object as a whole.
    pub fn non_field(message: impl Into<String>) -> Self {
        Self::field(Self::NON_FIELD, message)
    }

    /// Adds `message` to the messages of `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.fields
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// Adds every error of `other`.
    pub fn merge(&mut self, other: ValidationErrors) {
        for (field, messages) in other.fields {
            self.fields.entry(field).or_default().extend(messages);
        }
    }

    /// Whether there is no error at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The messages of `field`, empty when it has none.
    pub fn messages(&self, field: &str) -> &[String] {
        self.fields
            .get(field)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every field with its messages, in field-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.fields
            .iter()
            .map(|(field, messages)| (field.as_str(), messages.as_slice()))
    }

    /// `Ok(())` when empty, the errors otherwise.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.fields {
            for message in messages {
                if !first {
                    formatter.write_str("; ")?;
                }
                first = false;
                if field == Self::NON_FIELD {
                    formatter.write_str(message)?;
                } else {
                    write!(formatter, "{field}: {message}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A status change that the status machine does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot change status from {from} to {to}")]
pub struct TransitionError {
    /// The current status.
    pub from: String,
    /// The status that was asked for.
    pub to: String,
}

/// Why an upgrade operation could not be cancelled (upstream's `cancel()` reasons).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// The operation has already ended.
    #[error("cannot cancel operation with status: {status}")]
    Finished {
        /// Its final status.
        status: UpgradeStatus,
    },
    /// The flash command has been sent: the device may be writing its flash right now.
    #[error("cannot cancel upgrade: firmware reflashing has already started")]
    FlashStarted {
        /// The phase the operation is in.
        phase: UpgradePhase,
    },
}

/// A uniqueness rule of the data model, named so callers can say which one was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Constraint {
    /// Organization slugs are unique.
    OrganizationSlug,
    /// Organization names are unique.
    OrganizationName,
    /// Usernames are unique.
    Username,
    /// A user has one membership per organization.
    Membership,
    /// Category names are unique per organization (and among shared categories).
    CategoryName,
    /// A build version is unique within its category.
    BuildVersion,
    /// A build OS identifier is unique within the organization of its category.
    BuildOs,
    /// An image type is unique within its build.
    ImageType,
    /// Device names are unique per organization.
    DeviceName,
    /// Device MAC addresses are unique per organization.
    DeviceMac,
    /// Device group names are unique per organization.
    DeviceGroupName,
    /// Credentials names are unique per organization.
    CredentialsName,
    /// A device is attached once to the same credentials.
    DeviceConnection,
    /// A device has at most one DeviceFirmware.
    OneFirmwarePerDevice,
    /// A device has at most one unfinished upgrade operation.
    OneUnfinishedOperationPerDevice,
    /// A token secret is unique.
    TokenKey,
    /// A rule the repository could not name.
    Other,
}

impl Constraint {
    /// The field an API reports this error under (upstream's DRF keys), and the message.
    pub fn field_and_message(&self) -> (&'static str, &'static str) {
        match self {
            Constraint::OrganizationSlug => ("slug", "organization with this slug already exists."),
            Constraint::OrganizationName => ("name", "organization with this name already exists."),
            Constraint::Username => ("username", "A user with that username already exists."),
            Constraint::Membership => (
                "non_field_errors",
                "The user is already a member of this organization.",
            ),
            Constraint::CategoryName => (
                "__all__",
                "Category with this Name and Organization already exists.",
            ),
            Constraint::BuildVersion => (
                "non_field_errors",
                "The fields category, version must make a unique set.",
            ),
            Constraint::BuildOs => (
                "os",
                "A build with this OS identifier and organization already exists.",
            ),
            Constraint::ImageType => (
                "__all__",
                "Firmware Image with this Build and Type already exists.",
            ),
            Constraint::DeviceName => (
                "name",
                "A device with this name already exists in this organization.",
            ),
            Constraint::DeviceMac => (
                "mac_address",
                "A device with this MAC address already exists in this organization.",
            ),
            Constraint::DeviceGroupName => (
                "name",
                "A group with this name already exists in this organization.",
            ),
            Constraint::CredentialsName => (
                "name",
                "Credentials with this name already exist in this organization.",
            ),
            Constraint::DeviceConnection => (
                "__all__",
                "Device connection with this Device and Credentials already exists.",
            ),
            Constraint::OneFirmwarePerDevice => {
                ("device", "This device already has a device firmware.")
            }
            Constraint::OneUnfinishedOperationPerDevice => (
                "__all__",
                "Another upgrade operation is in progress for this device.",
            ),
            Constraint::TokenKey => ("key", "token already exists."),
            Constraint::Other => ("__all__", "This object already exists."),
        }
    }
}

/// What a repository reports when it cannot do what was asked.
///
/// Absence is not an error: lookups return `Ok(None)`. Errors are for rules broken by the
/// request (the caller can fix them) and for failures of the backend (it cannot).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The write would break a uniqueness rule.
    #[error("{}", .constraint.field_and_message().1)]
    AlreadyExists {
        /// The rule that was broken.
        constraint: Constraint,
    },
    /// The write names an object that does not exist (or no longer does).
    #[error("{what} does not exist")]
    MissingReference {
        /// What was missing, for the message.
        what: String,
    },
    /// The object changed under the request: for example an operation that finished while the
    /// request meant to change it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A cancellation that the status machine refuses.
    #[error(transparent)]
    Cancel(#[from] CancelError),
    /// The data breaks a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// An engine's write for an operation it no longer holds: another engine (or this one
    /// again) claimed the operation since, so its lease epoch moved on. The writer must stop at
    /// once and send nothing more to the device. (A write for an operation that ended is a
    /// [`RepoError::Transition`] instead, so that a cancelled upgrade learns it was cancelled.)
    #[error("the lease of operation {operation} is no longer held by {fence}")]
    LeaseLost {
        /// The operation, as text.
        operation: String,
        /// The fence the refused write carried, as text.
        fence: String,
    },
    /// A stored secret does not decrypt with the configured secret key (the key differs from
    /// the one that encrypted it, or the data is corrupt). Final: retrying cannot help.
    #[error("{message}")]
    Undecryptable {
        /// What does not decrypt and why, never the secret.
        message: String,
    },
    /// The backend failed (connection lost, disk full, corrupt data). The caller cannot fix
    /// this by changing the request.
    #[error("storage backend failed: {message}")]
    Backend {
        /// What failed, without secrets.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl RepoError {
    /// A backend failure with `message` and its cause.
    pub fn backend(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RepoError::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// The result of a repository call.
pub type RepoResult<T> = Result<T, RepoError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_collect_messages_per_field() {
        let mut errors = ValidationErrors::field("version", "This field may not be blank.");
        errors.add("version", "second");
        errors.merge(ValidationErrors::non_field("whole object"));
        assert_eq!(errors.messages("version").len(), 2);
        assert_eq!(
            errors.messages(ValidationErrors::NON_FIELD),
            ["whole object"]
        );
        assert_eq!(errors.messages("missing").len(), 0);
        assert_eq!(
            serde_json::to_value(&errors).ok(),
            Some(serde_json::json!({
                "__all__": ["whole object"],
                "version": ["This field may not be blank.", "second"]
            }))
        );
        assert_eq!(
            errors.to_string(),
            "whole object; version: This field may not be blank.; version: second"
        );
    }

    #[test]
    fn empty_validation_errors_are_ok() {
        assert!(ValidationErrors::new().into_result().is_ok());
        assert!(ValidationErrors::non_field("x").into_result().is_err());
    }
}

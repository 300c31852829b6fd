//! Users, their passwords and their memberships in organizations.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash as Argon2Hash};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::Role;
use crate::error::ValidationErrors;
use crate::id::{OrganizationId, UserId};
use crate::organization::{check_max_length, check_required_text};
use crate::{Details, time};

/// A person or a program that uses the API.
///
/// The password hash is deliberately not serialized: a `User` can be returned by an API without
/// leaking it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Login name, unique.
    pub username: String,
    /// E-mail address, may be empty.
    pub email: String,
    /// A superuser may do everything in every organization, and manage shared objects.
    pub is_superuser: bool,
    /// An inactive user cannot authenticate.
    pub is_active: bool,
    /// The password hash (PHC string, argon2id); `None` when the user cannot log in with a
    /// password (tokens only).
    #[serde(skip)]
    pub password_hash: Option<PasswordHash>,
    /// Integrators' own fields.
    pub details: Details,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last changed (UTC).
    pub modified: DateTime<Utc>,
}

/// The fields of a new user.
#[derive(Clone, Debug, PartialEq)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// E-mail address, may be empty.
    pub email: String,
    /// Whether the user is a superuser.
    pub is_superuser: bool,
    /// The password hash, if the user may log in with a password.
    pub password_hash: Option<PasswordHash>,
    /// Integrators' own fields.
    pub details: Details,
}

impl NewUser {
    /// An ordinary active user with no password and no details.
    pub fn new(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            email: String::new(),
            is_superuser: false,
            password_hash: None,
            details: Details::new(),
        }
    }

    /// Checks the fields (see [`validate_user`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_user(&self.username, &self.email)
    }

    /// The user this would be once stored, with a new id and the current time.
    pub fn into_user(self) -> User {
        let now = time::now();
        User {
            id: UserId::new(),
            username: self.username,
            email: self.email,
            is_superuser: self.is_superuser,
            is_active: true,
            password_hash: self.password_hash,
            details: self.details,
            created: now,
            modified: now,
        }
    }
}

impl User {
    /// Checks the fields (see [`validate_user`]).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate_user(&self.username, &self.email)
    }

    /// Whether `password` is this user's password. An inactive user or one without a password
    /// never matches.
    pub fn check_password(&self, password: &str) -> bool {
        self.is_active
            && self
                .password_hash
                .as_ref()
                .is_some_and(|hash| hash.verify(password))
    }
}

/// Maximum length of a username (Django).
pub const USERNAME_MAX_LENGTH: usize = 150;

/// A username is required, at most 150 characters of letters, digits and `@.+-_` (Django's
/// rule); an e-mail address, when given, has an `@`.
pub fn validate_user(username: &str, email: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_required_text(&mut errors, "username", username, USERNAME_MAX_LENGTH);
    if !username
        .chars()
        .all(|character| character.is_alphanumeric() || "@.+-_".contains(character))
    {
        errors.add(
            "username",
            "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.",
        );
    }
    check_max_length(&mut errors, "email", email, 254);
    if !email.is_empty() && !email.contains('@') {
        errors.add("email", "Enter a valid email address.");
    }
    errors.into_result()
}

/// A password hash in PHC string format (argon2id with a random salt).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with argon2id and a fresh random salt.
    pub fn hash(password: &str) -> Result<Self, ValidationErrors> {
        if password.is_empty() {
            return Err(ValidationErrors::field(
                "password",
                "This field may not be blank.",
            ));
        }
        let mut salt_bytes = [0_u8; 16];
        getrandom::fill(&mut salt_bytes).map_err(|_| {
            ValidationErrors::non_field("the system random number generator failed")
        })?;
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|_| ValidationErrors::non_field("could not encode the password salt"))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| ValidationErrors::field("password", "could not hash the password"))?;
        Ok(Self(hash.to_string()))
    }

    /// Wraps a PHC string read from storage.
    pub fn from_phc(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    /// The PHC string, for storage.
    pub fn as_phc(&self) -> &str {
        &self.0
    }

    /// Whether `password` matches. A malformed stored hash never matches.
    pub fn verify(&self, password: &str) -> bool {
        Argon2Hash::new(&self.0).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PasswordHash([redacted])")
    }
}

/// A user's role in one organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The user.
    pub user_id: UserId,
    /// The organization.
    pub organization_id: OrganizationId,
    /// What the user may do there.
    pub role: Role,
    /// When the membership was created (UTC).
    pub created: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let hash =
            PasswordHash::hash("correct horse").unwrap_or_else(|_| PasswordHash::from_phc(""));
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("wrong"));
        assert!(!format!("{hash:?}").contains("argon2"));
        assert!(!PasswordHash::from_phc("garbage").verify("x"));
    }

    #[test]
    fn an_inactive_user_never_matches_a_password() {
        let mut new_user = NewUser::new("alice");
        new_user.password_hash = PasswordHash::hash("pw").ok();
        let mut user = new_user.into_user();
        assert!(user.check_password("pw"));
        user.is_active = false;
        assert!(!user.check_password("pw"));
    }

    #[test]
    fn usernames_follow_djangos_rules() {
        assert!(validate_user("alice.b+c@d-e_f", "").is_ok());
        assert!(validate_user("", "").is_err());
        assert!(validate_user("has space", "").is_err());
        assert!(validate_user("bob", "not-an-email").is_err());
    }

    #[test]
    fn the_password_hash_is_not_serialized() {
        let mut new_user = NewUser::new("alice");
        new_user.password_hash = PasswordHash::hash("pw").ok();
        let json = serde_json::to_string(&new_user.into_user()).unwrap_or_default();
        assert!(!json.contains("argon2"), "{json}");
    }
}

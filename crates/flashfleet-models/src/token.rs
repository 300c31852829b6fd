//! API tokens: a random secret shown once to its owner; only its SHA-256 hash is stored.
//!
//! Tokens are 40 lowercase hexadecimal characters, the shape openwisp-users (Django REST
//! framework's `Token`) hands out, so clients that validate the shape keep working. A token has
//! 160 random bits, so a fast hash is enough: nobody can guess a secret from its hash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ValidationErrors;
use crate::id::{TokenId, UserId};
use crate::time;

/// A stored API token (its hash, never the secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// The user it authenticates.
    pub user_id: UserId,
    /// A name its owner gave it, may be empty.
    pub name: String,
    /// SHA-256 of the secret, hexadecimal. Not serialized.
    #[serde(skip)]
    pub key_hash: String,
    /// The first characters of the secret, so its owner can tell tokens apart.
    pub prefix: String,
    /// When it was created (UTC).
    pub created: DateTime<Utc>,
    /// When it was last used to authenticate, if ever (to the minute).
    pub last_used: Option<DateTime<Utc>>,
}

/// A token about to be stored, and the secret to hand to its owner once.
#[derive(Debug)]
pub struct NewApiToken {
    /// The row to store.
    pub token: ApiToken,
    /// The secret: show it once, never store or log it.
    pub secret: TokenSecret,
}

impl NewApiToken {
    /// A fresh random token for `user_id`.
    pub fn generate(user_id: UserId, name: impl Into<String>) -> Result<Self, ValidationErrors> {
        let mut bytes = [0_u8; 20];
        getrandom::fill(&mut bytes).map_err(|_| {
            ValidationErrors::non_field("the system random number generator failed")
        })?;
        let secret = TokenSecret(hex::encode(bytes));
        let token = ApiToken {
            id: TokenId::new(),
            user_id,
            name: name.into(),
            key_hash: secret.hash(),
            prefix: secret.0[..8].to_owned(),
            created: time::now(),
            last_used: None,
        };
        Ok(Self { token, secret })
    }
}

/// The secret of a token, as the client sends it. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Wraps what a client sent.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, to show to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret, hexadecimal: what is stored and looked up.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_has_upstreams_shape_and_stores_only_a_hash() {
        let new_token = NewApiToken::generate(UserId::new(), "ci").unwrap();
        let secret = new_token.secret.expose();
        assert_eq!(secret.len(), 40);
        assert!(
            secret
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(new_token.token.key_hash, TokenSecret::new(secret).hash());
        assert_ne!(new_token.token.key_hash, secret);
        assert!(secret.starts_with(&new_token.token.prefix));
        assert!(!format!("{:?}", new_token.secret).contains(secret));
        assert!(
            !serde_json::to_string(&new_token.token)
                .unwrap()
                .contains(&new_token.token.key_hash)
        );
    }

    #[test]
    fn two_tokens_differ() {
        let first = NewApiToken::generate(UserId::new(), "").unwrap();
        let second = NewApiToken::generate(UserId::new(), "").unwrap();
        assert_ne!(first.secret, second.secret);
    }
}

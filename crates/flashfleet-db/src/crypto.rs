//! Encryption of device secrets (SSH passwords and private keys) at rest.
//!
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) with a 256-bit key from configuration
//! and a random 192-bit nonce per value; the row's id is authenticated as associated data, so
//! a ciphertext copied to another row does not decrypt. Stored form:
//! `v1:<base64(nonce || ciphertext)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::DbError;

const VERSION_PREFIX: &str = "v1:";
const NONCE_LENGTH: usize = 24;

/// The key that encrypts device secrets. `Debug` does not show it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self, DbError> {
        let mut key = [0_u8; 32];
        getrandom::fill(&mut key).map_err(|error| DbError::Secret(error.to_string()))?;
        Ok(Self(key))
    }

    /// A key for another `purpose` (such as signing session cookies), derived from this one:
    /// SHA-256 of the key and the purpose, so that a key of one purpose tells nothing of this
    /// key or of another purpose's.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.0);
        hasher.update(b"\0flashfleet key for: ");
        hasher.update(purpose.as_bytes());
        hasher.finalize().into()
    }

    /// The key from its base64 form (32 bytes once decoded), as configuration holds it.
    pub fn from_base64(text: &str) -> Result<Self, DbError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| DbError::Secret("the secret key is not valid base64".to_owned()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            DbError::Secret("the secret key must be 32 bytes (44 base64 characters)".to_owned())
        })?;
        Ok(Self(key))
    }

    /// The key in base64, for the configuration file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretKey([redacted])")
    }
}

/// Encrypts and decrypts secrets with one key.
#[derive(Clone)]
pub(crate) struct SecretCipher {
    cipher: XChaCha20Poly1305,
}

impl SecretCipher {
    pub(crate) fn new(key: &SecretKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new((&key.0).into()),
        }
    }

    /// Encrypts `plaintext` bound to `row_id`.
    pub(crate) fn encrypt(&self, row_id: &str, plaintext: &str) -> Result<String, DbError> {
        let mut nonce = [0_u8; NONCE_LENGTH];
        getrandom::fill(&mut nonce).map_err(|error| DbError::Secret(error.to_string()))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| DbError::Secret("encryption failed".to_owned()))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&ciphertext);
        Ok(format!("{VERSION_PREFIX}{}", STANDARD.encode(stored)))
    }

    /// Decrypts what [`SecretCipher::encrypt`] stored for `row_id`.
    pub(crate) fn decrypt(&self, row_id: &str, stored: &str) -> Result<String, DbError> {
        let undecryptable = || {
            DbError::Undecryptable(format!(
                "the stored secret of credentials {row_id} does not decrypt with this server's \
                 secret key: the key differs from the one that encrypted it (or the stored data \
                 is corrupt); start the server with the key that encrypted it, or enter the \
                 credentials again"
            ))
        };
        let encoded = stored
            .strip_prefix(VERSION_PREFIX)
            .ok_or_else(undecryptable)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| undecryptable())?;
        if bytes.len() < NONCE_LENGTH {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LENGTH);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plaintext).map_err(|_| undecryptable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_stable_per_purpose_and_differ_between_purposes_and_keys() {
        let key = SecretKey::generate().unwrap();
        let same = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(
            key.derive("dashboard sessions"),
            same.derive("dashboard sessions")
        );
        assert_ne!(
            key.derive("dashboard sessions"),
            key.derive("another purpose")
        );
        assert_ne!(key.derive("dashboard sessions"), key.0);
        let other = SecretKey::generate().unwrap();
        assert_ne!(
            key.derive("dashboard sessions"),
            other.derive("dashboard sessions")
        );
    }

    #[test]
    fn a_secret_round_trips_and_is_not_stored_in_clear() {
        let cipher = SecretCipher::new(&SecretKey::generate().unwrap());
        let stored = cipher.encrypt("row-1", "hunter2").unwrap();
        assert!(stored.starts_with("v1:"));
        assert!(!stored.contains("hunter2"));
        assert_ne!(
            stored,
            cipher.encrypt("row-1", "hunter2").unwrap(),
            "nonces must differ"
        );
        assert_eq!(cipher.decrypt("row-1", &stored).unwrap(), "hunter2");
    }

    #[test]
    fn a_secret_does_not_decrypt_for_another_row_or_key_or_after_tampering() {
        let key = SecretKey::generate().unwrap();
        let cipher = SecretCipher::new(&key);
        let stored = cipher.encrypt("row-1", "hunter2").unwrap();
        assert!(cipher.decrypt("row-2", &stored).is_err());
        let other = SecretCipher::new(&SecretKey::generate().unwrap());
        assert!(other.decrypt("row-1", &stored).is_err());
        let mut tampered = stored.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            cipher
                .decrypt("row-1", &String::from_utf8(tampered).unwrap())
                .is_err()
        );
        assert!(cipher.decrypt("row-1", "garbage").is_err());
        assert!(cipher.decrypt("row-1", "v1:").is_err());
    }

    #[test]
    fn keys_load_from_base64_and_refuse_wrong_lengths() {
        let key = SecretKey::generate().unwrap();
        let loaded = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(loaded.0, key.0);
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        assert!(SecretKey::from_base64("***").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}

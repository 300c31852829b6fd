//! The error type of this crate.

use std::io;
use std::path::PathBuf;

use flashfleet_models::StorageKey;

/// Everything that can go wrong in `flashfleet-storage`.
///
/// A missing object is an error only where an object is expected ([`StorageError::NotFound`]
/// from [`FirmwareStore::open`](crate::FirmwareStore::open)); deleting one that is already gone
/// succeeds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The upload is larger than the configured maximum file size; nothing was stored.
    #[error("the file may not be larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// No object is stored under the key.
    #[error("no firmware file is stored under `{key}`")]
    NotFound {
        /// The key looked up.
        key: StorageKey,
    },
    /// The key (read back from persistence) is not a valid object path: empty parts, `.` or
    /// `..`, control characters.
    #[error("`{key}` is not a valid storage key")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What object_store objected to.
        #[source]
        source: object_store::path::Error,
    },
    /// The upload's byte stream failed (for example, the client went away); nothing was stored.
    ///
    /// The stream's error is kept as its message: stream error types need not be `Send` or
    /// `Sync` (actix-multipart's are not always).
    #[error("could not read the uploaded file: {message}")]
    UploadRead {
        /// What the stream's error said.
        message: String,
    },
    /// The storage backend (local directory, S3, memory) failed.
    #[error("firmware storage failed")]
    Backend(#[source] object_store::Error),
    /// A local file operation outside object_store failed (creating the storage directory).
    #[error("i/o error on `{}`", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// The storage configuration cannot be used.
    #[error("invalid storage configuration: {message}")]
    Config {
        /// What is wrong, without secrets.
        message: String,
        /// What object_store reported, if it was its check that failed.
        #[source]
        source: Option<object_store::Error>,
    },
}

impl StorageError {
    /// Translates an object_store error for `key`: a missing object becomes
    /// [`StorageError::NotFound`], anything else [`StorageError::Backend`].
    pub(crate) fn from_backend(error: object_store::Error, key: &StorageKey) -> StorageError {
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound { key: key.clone() },
            error => StorageError::Backend(error),
        }
    }
}

/// For readers that speak `std::io` (the engine's `FirmwareFiles`, `AsyncRead`): a missing
/// object keeps its meaning as [`io::ErrorKind::NotFound`]; everything else is
/// [`io::ErrorKind::Other`] with this error as its source.
impl From<StorageError> for io::Error {
    fn from(error: StorageError) -> io::Error {
        match error {
            StorageError::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, error),
            StorageError::Io { ref source, .. } => io::Error::new(source.kind(), error),
            error => io::Error::other(error),
        }
    }
}

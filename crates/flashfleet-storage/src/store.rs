//! [`FirmwareStore`]: firmware files on any object store.

use std::fmt;
use std::io;
use std::path::{Path as FilePath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _};
use secrecy::ExposeSecret as _;
use tokio::io::AsyncRead;
use tokio::sync::watch;
use tokio_util::io::StreamReader;

use flashfleet_models::StorageKey;

use crate::config::StorageConfig;
use crate::error::StorageError;

/// The default upload size limit, 30 MiB (upstream's `MAX_FILE_SIZE`).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 30 * 1024 * 1024;

/// Settings of a [`FirmwareStore`] that do not depend on the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirmwareStoreOptions {
    /// The largest file [`FirmwareStore::upload`] accepts, in bytes; `None` for no limit.
    /// [`DEFAULT_MAX_FILE_SIZE`] by default.
    pub max_file_size: Option<u64>,
}

impl FirmwareStoreOptions {
    /// Options with the given upload size limit (`None` for no limit).
    pub fn new(max_file_size: Option<u64>) -> FirmwareStoreOptions {
        FirmwareStoreOptions { max_file_size }
    }
}

impl Default for FirmwareStoreOptions {
    fn default() -> FirmwareStoreOptions {
        FirmwareStoreOptions::new(Some(DEFAULT_MAX_FILE_SIZE))
    }
}

/// Private firmware storage: uploads, downloads and deletions of firmware files on an
/// [`ObjectStore`], under keys built by [`StorageKey::for_image`].
///
/// Cheap to clone (one `Arc`); clones share the backend.
///
/// ```
/// use bytes::Bytes;
/// use flashfleet_models::BuildId;
/// use flashfleet_storage::{FirmwareStore, FirmwareStoreOptions};
/// use futures_util::{TryStreamExt as _, stream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = FirmwareStore::in_memory(FirmwareStoreOptions::default());
/// let chunks = [Bytes::from_static(b"firm"), Bytes::from_static(b"ware")];
/// let chunks = stream::iter(chunks.map(Ok::<_, std::io::Error>));
/// let staged = store.upload(BuildId::new(), "openwrt.bin", chunks).await?;
/// assert_eq!(staged.size(), 8);
/// // The caller checks the image here, then keeps it or throws it away.
/// let key = staged.storage_key().clone();
/// staged.commit().await?;
///
/// let stored = store.open(&key).await?;
/// assert_eq!(stored.size(), 8);
/// let bytes: Vec<Bytes> = stored.into_stream().try_collect().await?;
/// assert_eq!(bytes.concat(), b"firmware");
///
/// store.delete_all([&key]).await?;
/// assert!(store.list_keys("").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FirmwareStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The backend for `Debug`: its `Display`, which never holds credentials.
    description: String,
    options: FirmwareStoreOptions,
    /// Set for the local backend: the directories of a build are removed once empty.
    local_directory: Option<LocalDirectory>,
    /// How many aborts started by dropped uploads are still running.
    aborts_in_flight: watch::Sender<usize>,
}

/// A stored file, opened for reading: its size and its bytes as a stream.
pub struct StoredFile {
    key: StorageKey,
    size: u64,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
}

impl FirmwareStore {
    /// Storage on `store`, any [`ObjectStore`]: an integrator's own backend, or one of
    /// object_store's configured by hand.
    ///
    /// Empty directories are cleaned up only by [`FirmwareStore::local`] (and
    /// [`FirmwareStore::from_config`] with [`StorageConfig::Local`]); a `LocalFileSystem` given
    /// here keeps the empty directories of deleted files.
    pub fn new(store: Arc<dyn ObjectStore>, options: FirmwareStoreOptions) -> FirmwareStore {
        let description = store.to_string();
        FirmwareStore::build(store, options, None, description)
    }

    /// Storage in the local directory `path`, created if missing. The directories of a build
    /// (`<build id>/<upload id>/`) are removed once they are empty, as upstream removes a
    /// build's directory with its last file.
    ///
    /// This does blocking file-system calls: call it at startup.
    pub fn local(
        path: impl AsRef<FilePath>,
        options: FirmwareStoreOptions,
    ) -> Result<FirmwareStore, StorageError> {
        let path = path.as_ref();
        let io_error = |source| StorageError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io_error)?;
        let root = std::fs::canonicalize(path).map_err(io_error)?;
        let filesystem =
            LocalFileSystem::new_with_prefix(&root).map_err(|source| StorageError::Config {
                message: format!("cannot use `{}` as storage directory", path.display()),
                source: Some(source),
            })?;
        let description = filesystem.to_string();
        Ok(FirmwareStore::build(
            Arc::new(filesystem.clone()),
            options,
            Some(LocalDirectory { filesystem, root }),
            description,
        ))
    }

    /// Storage in memory, lost with the last clone: for tests.
    pub fn in_memory(options: FirmwareStoreOptions) -> FirmwareStore {
        FirmwareStore::new(Arc::new(InMemory::new()), options)
    }

    /// Storage as configured, with the upload size limit `max_file_size` (`None` for none).
    ///
    /// For [`StorageConfig::Local`] this creates the directory (blocking: call it at startup);
    /// for [`StorageConfig::S3`] it reads the AWS environment variables for what the
    /// configuration leaves out, and contacts nothing until the first request.
    pub fn from_config(
        config: &StorageConfig,
        max_file_size: Option<u64>,
    ) -> Result<FirmwareStore, StorageError> {
        let options = FirmwareStoreOptions::new(max_file_size);
        match config {
            StorageConfig::Local { path } => FirmwareStore::local(path, options),
            StorageConfig::Memory => Ok(FirmwareStore::in_memory(options)),
            StorageConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                virtual_hosted_style,
            } => {
                if bucket.trim().is_empty() {
                    return Err(StorageError::Config {
                        message: "the S3 bucket name is empty".to_owned(),
                        source: None,
                    });
                }
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http)
                    .with_virtual_hosted_style_request(*virtual_hosted_style);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(access_key_id) = access_key_id {
                    builder = builder.with_access_key_id(access_key_id);
                }
                if let Some(secret_access_key) = secret_access_key {
                    builder = builder.with_secret_access_key(secret_access_key.expose_secret());
                }
                let s3 = builder.build().map_err(|source| StorageError::Config {
                    message: format!("cannot use S3 bucket `{bucket}`"),
                    source: Some(source),
                })?;
                let (store, description): (Arc<dyn ObjectStore>, String) = if prefix.is_empty() {
                    let description = s3.to_string();
                    (Arc::new(s3), description)
                } else {
                    let prefix = Path::parse(prefix).map_err(|source| StorageError::Config {
                        message: format!("the S3 prefix `{prefix}` is not a valid key prefix"),
                        source: Some(source.into()),
                    })?;
                    let description = format!("{s3} under `{prefix}/`");
                    (Arc::new(PrefixStore::new(s3, prefix)), description)
                };
                Ok(FirmwareStore::build(store, options, None, description))
            }
        }
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        options: FirmwareStoreOptions,
        local_directory: Option<LocalDirectory>,
        description: String,
    ) -> FirmwareStore {
        FirmwareStore {
            inner: Arc::new(Inner {
                store,
                description,
                options,
                local_directory,
                aborts_in_flight: watch::Sender::new(0),
            }),
        }
    }

    /// The largest file an upload may be, in bytes; `None` for no limit.
    pub fn max_file_size(&self) -> Option<u64> {
        self.inner.options.max_file_size
    }

    /// Opens the file stored under `key` for reading, for a download or for the upgrade
    /// engine. Nothing is read until the returned [`StoredFile`] is consumed.
    ///
    /// Returns [`StorageError::NotFound`] if nothing is stored under `key`. This does no
    /// authorization: the caller checks that whoever asks may read the image first.
    pub async fn open(&self, key: &StorageKey) -> Result<StoredFile, StorageError> {
        let location = object_path(key)?;
        let result = self
            .inner
            .store
            .get(&location)
            .await
            .map_err(|error| StorageError::from_backend(error, key))?;
        Ok(StoredFile {
            key: key.clone(),
            size: result.meta.size,
            stream: result.into_stream(),
        })
    }

    /// Deletes the file stored under `key`; see [`FirmwareStore::delete_all`].
    pub async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.delete_all([key]).await
    }

    /// Deletes the files stored under `keys` (in batches where the backend can), and on the
    /// local backend the directories left empty.
    ///
    /// A key with nothing stored under it is not an error, so deleting twice is harmless.
    /// Every key is tried; the first failure is returned and the others are logged.
    pub async fn delete_all<'key>(
        &self,
        keys: impl IntoIterator<Item = &'key StorageKey>,
    ) -> Result<(), StorageError> {
        let mut first_error = None;
        let mut locations = Vec::new();
        for key in keys {
            match object_path(key) {
                Ok(location) => locations.push(location),
                Err(error) => note_error(&mut first_error, error),
            }
        }
        let requests = stream::iter(locations.clone().into_iter().map(Ok)).boxed();
        let mut results = self.inner.store.delete_stream(requests);
        while let Some(result) = results.next().await {
            match result {
                Ok(location) => tracing::info!(key = %location, "deleted firmware file"),
                Err(object_store::Error::NotFound { path, .. }) => {
                    tracing::debug!(key = %path, "firmware file already deleted");
                }
                Err(error) => note_error(&mut first_error, StorageError::Backend(error)),
            }
        }
        for location in &locations {
            self.remove_empty_directories(location).await;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The keys of every file stored under `prefix`, a key prefix made of whole parts (a build
    /// id lists that build's files); an empty prefix lists everything.
    ///
    /// For tests and for an operator's check for orphaned files (files no image refers to).
    /// Uploads not yet committed are not listed.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<StorageKey>, StorageError> {
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(
                Path::parse(prefix).map_err(|source| StorageError::InvalidKey {
                    key: prefix.to_owned(),
                    source,
                })?,
            )
        };
        self.inner
            .store
            .list(prefix.as_ref())
            .map_ok(|meta| StorageKey::from_stored(meta.location.to_string()))
            .map_err(StorageError::Backend)
            .try_collect()
            .await
    }

    /// Waits until every abort started in the background (by a [`StagedUpload`] or an upload
    /// future dropped before it finished) has finished; for tests and for a clean shutdown.
    ///
    /// [`StagedUpload`]: crate::StagedUpload
    pub async fn wait_for_aborts(&self) {
        let mut receiver = self.inner.aborts_in_flight.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it closed.
        let _ = receiver.wait_for(|in_flight| *in_flight == 0).await;
    }

    /// Counts one background abort until the returned guard is dropped.
    pub(crate) fn abort_started(&self) -> AbortInFlight {
        self.inner
            .aborts_in_flight
            .send_modify(|in_flight| *in_flight += 1);
        AbortInFlight {
            store: self.clone(),
        }
    }

    /// On the local backend, removes the directories of `location` that are now empty, from
    /// the innermost up to (not including) the storage directory (upstream's `_remove_file`).
    /// A directory still in use stays: removing a non-empty directory fails harmlessly.
    pub(crate) async fn remove_empty_directories(&self, location: &Path) {
        let Some(local_directory) = &self.inner.local_directory else {
            return;
        };
        let Ok(file) = local_directory.filesystem.path_to_filesystem(location) else {
            return;
        };
        let mut directory = file.parent();
        while let Some(current) = directory {
            if current == local_directory.root || !current.starts_with(&local_directory.root) {
                break;
            }
            match tokio::fs::remove_dir(current).await {
                Ok(()) => {
                    tracing::debug!(directory = %current.display(), "deleted empty directory")
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    tracing::debug!(directory = %current.display(), "directory already removed");
                }
                Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty => break,
                Err(error) => {
                    tracing::warn!(directory = %current.display(), %error, "could not delete directory");
                    break;
                }
            }
            directory = current.parent();
        }
    }
}

impl fmt::Debug for FirmwareStore {
    /// Shows the backend by its `Display` (`AmazonS3(bucket)`, `LocalFileSystem(file:///...)`),
    /// which never holds credentials.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FirmwareStore")
            .field("store", &format_args!("{}", self.inner.description))
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl StoredFile {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's bytes as a stream of chunks (for an HTTP response body).
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, StorageError>> {
        let key = self.key;
        self.stream
            .map_err(move |error| StorageError::from_backend(error, &key))
            .boxed()
    }

    /// The file's bytes as an [`AsyncRead`] (for the upgrade engine); errors are translated as
    /// `From<StorageError> for io::Error` says.
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin + 'static {
        StreamReader::new(self.into_stream().map_err(io::Error::from))
    }
}

impl fmt::Debug for StoredFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StoredFile")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A background abort, counted by [`FirmwareStore::wait_for_aborts`] until dropped.
pub(crate) struct AbortInFlight {
    store: FirmwareStore,
}

impl Drop for AbortInFlight {
    fn drop(&mut self) {
        self.store
            .inner
            .aborts_in_flight
            .send_modify(|in_flight| *in_flight = in_flight.saturating_sub(1));
    }
}

/// The storage directory of the local backend.
struct LocalDirectory {
    filesystem: LocalFileSystem,
    /// The directory, canonical.
    root: PathBuf,
}

/// The object path of `key`, refusing keys that are not valid paths.
pub(crate) fn object_path(key: &StorageKey) -> Result<Path, StorageError> {
    Path::parse(key.as_str()).map_err(|source| StorageError::InvalidKey {
        key: key.as_str().to_owned(),
        source,
    })
}

/// Keeps the first error of a batch and logs the others.
fn note_error(first_error: &mut Option<StorageError>, error: StorageError) {
    if first_error.is_none() {
        *first_error = Some(error);
    } else {
        tracing::warn!(%error, "could not delete firmware file");
    }
}

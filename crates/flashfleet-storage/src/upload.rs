//! Uploads: [`FirmwareStore::upload`] streams a file to storage and inspects it on the way;
//! the [`StagedUpload`] it returns is kept ([`StagedUpload::commit`]) or thrown away
//! ([`StagedUpload::abort`]) once the caller has checked the image.

use std::fmt::{self, Display};
use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, WriteMultipart};
use sha2::{Digest as _, Sha256};

use flashfleet_boards::{BoardsError, ImageInspection, ImageInspector};
use flashfleet_models::{BuildId, StorageKey};

use crate::error::StorageError;
use crate::store::{FirmwareStore, object_path};

/// The size of the parts a file is uploaded in: S3's smallest part (except the last one).
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// How many parts may be on their way to the backend while the next one fills up.
///
/// An upload holds at most `PARTS_IN_FLIGHT + 1` parts in memory (15 MiB), plus the chunk
/// being read and the image inspector's tail (a few hundred KiB), whatever the file's size.
pub const PARTS_IN_FLIGHT: usize = 2;

impl FirmwareStore {
    /// Streams a firmware file to storage under a new key for `file_name` of build
    /// `build_id`, and inspects it on the way: size, SHA-256 and OpenWrt's fwtool metadata
    /// ([`ImageInspector`]), in one pass and in bounded memory (see [`PARTS_IN_FLIGHT`]).
    ///
    /// `chunks` is a stream of byte chunks, as an `actix_multipart::Field` yields them; for a
    /// file, use `tokio_util::io::ReaderStream::new(file)`. The stream need not be `Send` or
    /// `Unpin`, and its error type need only be displayable.
    ///
    /// The file is not visible (not listed, not openable) until the caller, having checked the
    /// image type and metadata of the returned [`StagedUpload`], calls
    /// [`StagedUpload::commit`]; [`StagedUpload::abort`] throws it away.
    ///
    /// Nothing stays behind when it fails: a file larger than the size limit is refused with
    /// [`StorageError::TooLarge`] as soon as the limit is passed (the rest is not read), a
    /// failing stream with [`StorageError::UploadRead`], and in both cases the partial upload is
    /// aborted. If the returned future is dropped before it finishes (a client that went
    /// away), the partial upload is aborted in the background, as for a dropped
    /// [`StagedUpload`].
    pub async fn upload<S, E>(
        &self,
        build_id: BuildId,
        file_name: &str,
        chunks: S,
    ) -> Result<StagedUpload, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Display,
    {
        let key = StorageKey::for_image(build_id, file_name);
        let location = object_path(&key)?;
        let multipart = self
            .inner
            .store
            .put_multipart(&location)
            .await
            .map_err(StorageError::Backend)?;
        let mut pending = PendingWrite {
            store: self.clone(),
            location,
            writer: Some(WriteMultipart::new_with_chunk_size(multipart, PART_SIZE)),
        };
        let limit = self.max_file_size();
        let mut size: u64 = 0;
        let mut sha256 = Sha256::new();
        let mut inspector = ImageInspector::new();
        let mut chunks = pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    pending.abort_quietly().await;
                    return Err(StorageError::UploadRead {
                        message: error.to_string(),
                    });
                }
            };
            size = size.saturating_add(chunk.len() as u64);
            if let Some(limit) = limit
                && size > limit
            {
                pending.abort_quietly().await;
                return Err(StorageError::TooLarge { limit });
            }
            sha256.update(&chunk);
            inspector.update(&chunk);
            if let Err(error) = pending.write(chunk).await {
                pending.abort_quietly().await;
                return Err(StorageError::Backend(error));
            }
        }
        Ok(StagedUpload {
            key,
            size,
            sha256: hex::encode(sha256.finalize()),
            inspection: inspector.finish(),
            pending,
        })
    }
}

/// A file uploaded but not yet kept: the result of [`FirmwareStore::upload`].
///
/// The caller checks it ([`StagedUpload::size`], [`StagedUpload::inspection`], the image
/// type of the file name) and then either keeps it with [`StagedUpload::commit`] or throws it
/// away with [`StagedUpload::abort`].
///
/// Dropping it without either aborts the upload on a task spawned on the current Tokio runtime
/// ([`FirmwareStore::wait_for_aborts`] waits for it), so an early return or a panic in the
/// caller leaves no file behind. Outside a runtime the abort cannot run; it is logged, and the
/// backend's own cleanup applies (a local staging file is deleted on drop; S3 keeps an
/// incomplete multipart upload for the bucket's lifecycle rule).
pub struct StagedUpload {
    key: StorageKey,
    size: u64,
    sha256: String,
    inspection: Result<ImageInspection, BoardsError>,
    pending: PendingWrite,
}

impl StagedUpload {
    /// The key the file is stored under once committed (what the image record keeps).
    pub fn storage_key(&self) -> &StorageKey {
        &self.key
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's SHA-256, lowercase hexadecimal.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What the file's fwtool trailer says (`metadata: None` for an image without one), or why
    /// it could not be read.
    pub fn inspection(&self) -> Result<&ImageInspection, &BoardsError> {
        self.inspection.as_ref()
    }

    /// Keeps the file: completes the upload, after which it is listed and can be opened.
    ///
    /// On failure nothing is kept: the upload is aborted (and a file the backend may have
    /// completed anyway is deleted). A commit whose future is dropped midway may or may not
    /// have kept the file, like a caller stopped between its commit and its own record of the
    /// file; [`FirmwareStore::list_keys`] finds such orphans.
    pub async fn commit(mut self) -> Result<(), StorageError> {
        let Some(writer) = self.pending.writer.take() else {
            return Ok(());
        };
        // `finish` aborts the multipart upload itself when it fails.
        if let Err(error) = writer.finish().await {
            let store = &self.pending.store;
            if let Err(delete_error) = store.inner.store.delete(&self.pending.location).await
                && !matches!(delete_error, object_store::Error::NotFound { .. })
            {
                tracing::warn!(key = %self.key, error = %delete_error, "could not delete a failed upload");
            }
            store.remove_empty_directories(&self.pending.location).await;
            return Err(StorageError::Backend(error));
        }
        tracing::info!(key = %self.key, size = self.size, "stored firmware file");
        Ok(())
    }

    /// Throws the file away: aborts the upload, so nothing of it stays in storage.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        self.pending.abort().await
    }
}

impl fmt::Debug for StagedUpload {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StagedUpload")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("inspection", &self.inspection)
            .finish_non_exhaustive()
    }
}

/// A multipart upload under way, aborted on drop unless taken.
struct PendingWrite {
    store: FirmwareStore,
    location: Path,
    /// `None` once completed or aborted.
    writer: Option<WriteMultipart>,
}

impl PendingWrite {
    /// Hands `chunk` to the upload, first waiting until fewer than [`PARTS_IN_FLIGHT`] parts
    /// are on their way (the back pressure that bounds memory).
    async fn write(&mut self, chunk: Bytes) -> object_store::Result<()> {
        if let Some(writer) = &mut self.writer {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(chunk);
        }
        Ok(())
    }

    /// Aborts the upload and removes the directories it left empty.
    async fn abort(&mut self) -> Result<(), StorageError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        abort_writer(&self.store, &self.location, writer).await
    }

    /// Aborts the upload when another error is being returned: a failure to abort is logged.
    async fn abort_quietly(&mut self) {
        if let Err(error) = self.abort().await {
            tracing::warn!(key = %self.location, %error, "could not abort an upload");
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.location, "an upload was dropped outside a Tokio runtime and could not be aborted");
            return;
        };
        let in_flight = self.store.abort_started();
        let store = self.store.clone();
        let location = self.location.clone();
        runtime.spawn(async move {
            if let Err(error) = abort_writer(&store, &location, writer).await {
                tracing::warn!(key = %location, %error, "could not abort a dropped upload");
            }
            drop(in_flight);
        });
    }
}

async fn abort_writer(
    store: &FirmwareStore,
    location: &Path,
    writer: WriteMultipart,
) -> Result<(), StorageError> {
    let result = writer.abort().await.map_err(StorageError::Backend);
    store.remove_empty_directories(location).await;
    if result.is_ok() {
        tracing::debug!(key = %location, "aborted upload");
    }
    result
}

//! Private storage of firmware files for flashfleet, on [object_store]: a local directory (the
//! default), an S3 or S3-compatible bucket, memory (tests), or any other [`ObjectStore`] an
//! integrator brings.
//!
//! - [`StorageConfig`] selects and configures the backend; [`FirmwareStore::from_config`]
//!   builds it.
//! - [`FirmwareStore::upload`] streams an upload to storage while computing its size and
//!   SHA-256 and reading its OpenWrt fwtool metadata, and returns a [`StagedUpload`] that the
//!   caller commits or aborts once it has checked the image.
//! - [`FirmwareStore::open`] reads a file back (downloads, the upgrade engine);
//!   [`FirmwareStore::delete_all`] deletes the files of deleted images;
//!   [`FirmwareStore::list_keys`] lists what is stored.
//!
//! Keys are `<build id>/<random UUID>/<sanitised file name>`, built by
//! [`StorageKey::for_image`](flashfleet_models::StorageKey::for_image) only.
//!
//! Invariants:
//! - **Private**: storage has no public URL. Files leave only through the API, which checks
//!   that the requester may read the image before it calls [`FirmwareStore::open`]; nothing
//!   here builds a URL, presigned or otherwise.
//! - **Bounded memory**: an upload is never held whole in memory; it is streamed in parts of
//!   [`PART_SIZE`] with at most [`PARTS_IN_FLIGHT`] on their way, and inspected as it streams.
//! - **No orphans from refused uploads**: an upload that is too large, fails, is aborted, or
//!   is dropped uncommitted (even mid-stream) leaves no object behind; on the local backend the
//!   directories it created go too.
//! - Secrets of the configuration never appear in `Debug` output or logs.
//! - Nothing here knows about HTTP, SQL or SSH.

mod config;
mod error;
mod store;
mod upload;

pub use config::{DEFAULT_LOCAL_PATH, DEFAULT_S3_REGION, StorageConfig};
pub use error::StorageError;
/// The object_store crate this one is built on, for integrators who bring their own backend.
pub use object_store;
pub use object_store::ObjectStore;
pub use store::{DEFAULT_MAX_FILE_SIZE, FirmwareStore, FirmwareStoreOptions, StoredFile};
pub use upload::{PART_SIZE, PARTS_IN_FLIGHT, StagedUpload};

//! Where the engine reads firmware images from.

use async_trait::async_trait;
use flashfleet_models::StorageKey;
use tokio::io::AsyncRead;

/// Opens stored firmware files as streams; `flashfleet-storage` implements it on object
/// storage, tests on anything.
#[async_trait]
pub trait FirmwareFiles: Send + Sync {
    /// A stream of the whole file stored under `key`.
    async fn open(&self, key: &StorageKey) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>>;
}

//! Where the engine reads firmware images from.

use async_trait::async_trait;
use flashfleet_models::StorageKey;
use flashfleet_storage::FirmwareStore;
use tokio::io::AsyncRead;

/// Opens stored firmware files as streams; [`FirmwareStore`] implements it on object storage,
/// tests on anything.
#[async_trait]
pub trait FirmwareFiles: Send + Sync {
    /// A stream of the whole file stored under `key`.
    async fn open(&self, key: &StorageKey) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>>;
}

/// Images are read from firmware storage as they are uploaded to the device, never whole in
/// memory. A file missing from storage is [`std::io::ErrorKind::NotFound`].
#[async_trait]
impl FirmwareFiles for FirmwareStore {
    async fn open(&self, key: &StorageKey) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        let stored_file = FirmwareStore::open(self, key).await?;
        Ok(Box::new(stored_file.into_async_read()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use flashfleet_models::BuildId;
    use flashfleet_storage::FirmwareStoreOptions;
    use futures_util::stream;
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn a_stored_image_is_read_back_and_a_missing_one_is_not_found() {
        let store = FirmwareStore::in_memory(FirmwareStoreOptions::default());
        let chunks = [
            Bytes::from_static(b"sysupgrade "),
            Bytes::from_static(b"image"),
        ];
        let staged = store
            .upload(
                BuildId::new(),
                "openwrt.bin",
                stream::iter(chunks.map(Ok::<_, std::io::Error>)),
            )
            .await
            .unwrap();
        let key = staged.storage_key().clone();
        staged.commit().await.unwrap();
        let files: &dyn FirmwareFiles = &store;

        let mut image = Vec::new();
        files
            .open(&key)
            .await
            .unwrap()
            .read_to_end(&mut image)
            .await
            .unwrap();
        assert_eq!(image, b"sysupgrade image");

        store.delete(&key).await.unwrap();
        let error = files.open(&key).await.err().unwrap();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }
}

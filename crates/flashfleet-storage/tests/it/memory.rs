//! The in-memory backend.

use flashfleet_storage::{FirmwareStore, StorageConfig};

use crate::contract::{LIMIT, check_store};

#[tokio::test]
async fn the_memory_backend_keeps_the_contract() {
    check_store(&FirmwareStore::from_config(&StorageConfig::Memory, Some(LIMIT)).unwrap()).await;
}

//! Building stores from configuration, and refusing what cannot work.

use std::io;

use flashfleet_models::StorageKey;
use flashfleet_storage::{DEFAULT_MAX_FILE_SIZE, FirmwareStore, StorageConfig, StorageError};

use crate::support;

const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY";

/// An S3 configuration whose server is never contacted.
fn s3_config(bucket: &str, prefix: &str) -> StorageConfig {
    support::s3_config("http://127.0.0.1:9", bucket, prefix, SECRET)
}

#[test]
fn an_s3_store_is_built_without_contacting_the_server_and_hides_its_secret() {
    let config = s3_config("firmware", "flashfleet/images");
    assert!(!format!("{config:?}").contains(SECRET));
    let store = FirmwareStore::from_config(&config, Some(DEFAULT_MAX_FILE_SIZE)).unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("firmware"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert_eq!(store.max_file_size(), Some(DEFAULT_MAX_FILE_SIZE));
}

#[test]
fn unusable_s3_settings_are_configuration_errors() {
    for config in [s3_config(" ", ""), s3_config("firmware", "a//b")] {
        let error = FirmwareStore::from_config(&config, None).unwrap_err();
        assert!(matches!(error, StorageError::Config { .. }), "{error:?}");
        assert!(!format!("{error:?}").contains(SECRET));
    }
}

#[tokio::test]
async fn keys_that_are_not_object_paths_are_refused() {
    let store = FirmwareStore::from_config(&StorageConfig::Memory, None).unwrap();
    for key in ["a/../b", "a//b", "a/./b"] {
        let error = store.open(&StorageKey::from_stored(key)).await.unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidKey { .. }),
            "{key}: {error:?}"
        );
    }
    assert!(matches!(
        store.list_keys("../x").await.unwrap_err(),
        StorageError::InvalidKey { .. }
    ));
}

#[tokio::test]
async fn a_missing_file_is_not_found_for_io_readers_too() {
    let store = FirmwareStore::from_config(&StorageConfig::Memory, None).unwrap();
    let key = StorageKey::from_stored("some-build/some-upload/missing.bin");
    let error = store.open(&key).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "no firmware file is stored under `some-build/some-upload/missing.bin`"
    );
    assert_eq!(io::Error::from(error).kind(), io::ErrorKind::NotFound);
}

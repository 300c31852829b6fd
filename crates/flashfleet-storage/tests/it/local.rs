//! The local-directory backend: the contract, plus what only a directory shows (staging
//! files, empty build directories, files surviving the store).

use flashfleet_models::BuildId;
use flashfleet_storage::{FirmwareStore, StorageConfig};

use crate::contract::{LIMIT, check_store};
use crate::support::{files_under, read_back, store_small_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_backend_keeps_the_contract_and_leaves_no_file_or_directory() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("data").join("firmware");
    let store = FirmwareStore::from_config(&StorageConfig::local(&root), Some(LIMIT)).unwrap();
    assert!(root.is_dir(), "the storage directory is created");
    check_store(&store).await;
    // No staging file of an aborted, refused or dropped upload, no empty directory.
    assert_eq!(files_under(&root).unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_build_directory_goes_with_its_last_file() {
    let directory = tempfile::tempdir().unwrap();
    let store = FirmwareStore::from_config(&StorageConfig::local(directory.path()), None).unwrap();
    let build_id = BuildId::new();
    let keys = [
        store_small_file(&store, build_id, "a.bin", b"a").await,
        store_small_file(&store, build_id, "b.bin", b"b").await,
    ];
    let build_directory = directory.path().join(build_id.to_string());
    for key in &keys {
        assert!(directory.path().join(key.as_str()).is_file(), "{key}");
    }

    store.delete(&keys[0]).await.unwrap();
    assert!(
        build_directory.is_dir(),
        "another file of the build is left"
    );
    let upload_directory = directory.path().join(keys[0].as_str());
    assert!(!upload_directory.parent().unwrap().exists());

    store.delete(&keys[1]).await.unwrap();
    assert!(!build_directory.exists());
    assert!(directory.path().is_dir(), "the storage directory stays");
    // Deleting again finds nothing to do, and no directory to remove.
    store.delete_all(&keys).await.unwrap();
}

#[tokio::test]
async fn committed_files_outlive_the_store() {
    let directory = tempfile::tempdir().unwrap();
    let config = StorageConfig::local(directory.path());
    let key = {
        let store = FirmwareStore::from_config(&config, None).unwrap();
        store_small_file(&store, BuildId::new(), "kept.bin", b"kept").await
    };
    let store = FirmwareStore::from_config(&config, None).unwrap();
    assert_eq!(read_back(&store, &key).await.unwrap(), b"kept");
    assert_eq!(store.list_keys("").await.unwrap(), [key]);
}

#[tokio::test]
async fn a_storage_path_that_is_a_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let error = FirmwareStore::from_config(&StorageConfig::local(&file), None).unwrap_err();
    assert!(error.to_string().contains("not-a-directory"), "{error}");
}

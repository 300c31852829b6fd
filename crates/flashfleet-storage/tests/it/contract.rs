//! What every backend must do, as one function each backend's test runs: round trips, the
//! size limit, abort and drop, deletion and listing. Every check uses builds of its own and
//! ends with nothing stored.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flashfleet_boards::test_image::TestImage;
use flashfleet_models::{BuildId, StorageKey};
use flashfleet_storage::{FirmwareStore, StorageError};
use futures_util::{StreamExt as _, stream};
use tokio::sync::oneshot;

use crate::support::{
    MIB, chunked, counted_endless_stream, pattern, read_back, sha256_hex, store_small_file,
};

/// The size limit of the stores the contract runs on: above one S3 part, so the over-limit
/// check aborts an upload that already sent a part.
pub(crate) const LIMIT: u64 = 6 * MIB as u64;

/// Runs every check on `store` (whose size limit is [`LIMIT`] and which starts empty).
pub(crate) async fn check_store(store: &FirmwareStore) {
    assert_eq!(store.max_file_size(), Some(LIMIT));
    a_multi_chunk_upload_round_trips_with_its_size_and_sha256(store).await;
    the_metadata_of_an_openwrt_image_is_read_while_it_streams(store).await;
    an_upload_over_the_limit_is_refused_and_leaves_nothing(store).await;
    an_upload_at_the_limit_is_accepted(store).await;
    an_aborted_upload_leaves_nothing(store).await;
    a_dropped_staged_upload_leaves_nothing(store).await;
    a_dropped_upload_future_leaves_nothing(store).await;
    a_failing_stream_leaves_nothing(store).await;
    uploads_of_one_file_name_do_not_collide(store).await;
    deleting_is_idempotent(store).await;
    assert_eq!(store.list_keys("").await.unwrap(), Vec::<StorageKey>::new());
}

async fn a_multi_chunk_upload_round_trips_with_its_size_and_sha256(store: &FirmwareStore) {
    let build_id = BuildId::new();
    // Two S3 parts, read in uneven chunks that straddle the part boundary.
    let bytes = pattern(5 * MIB + 300 * 1024 + 7);
    let staged = store
        .upload(
            build_id,
            "openwrt-x86-64-generic.img",
            chunked(&bytes, &[64 * 1024, 1, 100_003]),
        )
        .await
        .unwrap();
    assert_eq!(staged.size(), bytes.len() as u64);
    assert_eq!(staged.sha256(), sha256_hex(&bytes));
    assert!(staged.inspection().unwrap().metadata.is_none());
    let key = staged.storage_key().clone();
    assert!(key.as_str().starts_with(&format!("{build_id}/")), "{key}");
    assert_eq!(key.file_name(), "openwrt-x86-64-generic.img");
    // Not visible before the commit.
    assert!(matches!(
        store.open(&key).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
    staged.commit().await.unwrap();

    assert_eq!(
        store.list_keys(&build_id.to_string()).await.unwrap(),
        std::slice::from_ref(&key)
    );
    assert_eq!(read_back(store, &key).await.unwrap(), bytes);
    store.delete(&key).await.unwrap();
}

async fn the_metadata_of_an_openwrt_image_is_read_while_it_streams(store: &FirmwareStore) {
    let image = TestImage::builder()
        .payload_len(700 * 1024)
        .supported_devices(["tplink,archer-c7-v2"])
        .version_field("version", "24.10.0")
        .signature(b"not a real ucert".to_vec())
        .build()
        .to_bytes();
    let staged = store
        .upload(
            BuildId::new(),
            "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
            chunked(&image, &[8 * 1024, 333]),
        )
        .await
        .unwrap();
    let inspection = staged.inspection().unwrap();
    assert_eq!(inspection.image_len, image.len() as u64);
    assert!(inspection.signature_present);
    let metadata = inspection.metadata.as_ref().unwrap();
    assert_eq!(
        metadata.supported_devices.as_deref().unwrap(),
        ["tplink,archer-c7-v2"]
    );
    assert_eq!(metadata.version.version.as_deref(), Some("24.10.0"));
    assert_eq!(staged.sha256(), sha256_hex(&image));
    let key = staged.storage_key().clone();
    staged.commit().await.unwrap();
    assert_eq!(read_back(store, &key).await.unwrap(), image);
    store.delete(&key).await.unwrap();
}

async fn an_upload_over_the_limit_is_refused_and_leaves_nothing(store: &FirmwareStore) {
    let build_id = BuildId::new();
    let taken = Arc::new(AtomicUsize::new(0));
    let error = store
        .upload(
            build_id,
            "huge.bin",
            counted_endless_stream(Arc::clone(&taken)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::TooLarge { limit } if limit == LIMIT),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("the file may not be larger than {LIMIT} bytes")
    );
    // It stopped reading at the chunk that passed the limit.
    assert_eq!(
        taken.load(Ordering::SeqCst),
        LIMIT as usize / (64 * 1024) + 1
    );
    assert!(store.list_keys("").await.unwrap().is_empty());
}

async fn an_upload_at_the_limit_is_accepted(store: &FirmwareStore) {
    let bytes = pattern(LIMIT as usize);
    let staged = store
        .upload(BuildId::new(), "exact.bin", chunked(&bytes, &[MIB]))
        .await
        .unwrap();
    assert_eq!(staged.size(), LIMIT);
    staged.abort().await.unwrap();
    assert!(store.list_keys("").await.unwrap().is_empty());
}

async fn an_aborted_upload_leaves_nothing(store: &FirmwareStore) {
    let bytes = pattern(5 * MIB + 1);
    let staged = store
        .upload(BuildId::new(), "refused.bin", chunked(&bytes, &[MIB]))
        .await
        .unwrap();
    let key = staged.storage_key().clone();
    staged.abort().await.unwrap();
    assert!(store.list_keys("").await.unwrap().is_empty());
    assert!(matches!(
        store.open(&key).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
}

async fn a_dropped_staged_upload_leaves_nothing(store: &FirmwareStore) {
    let bytes = pattern(5 * MIB + 1);
    let staged = store
        .upload(BuildId::new(), "forgotten.bin", chunked(&bytes, &[MIB]))
        .await
        .unwrap();
    drop(staged);
    store.wait_for_aborts().await;
    assert!(store.list_keys("").await.unwrap().is_empty());
}

async fn a_dropped_upload_future_leaves_nothing(store: &FirmwareStore) {
    let (first_taken, first_taken_receiver) = oneshot::channel::<()>();
    let mut first_taken = Some(first_taken);
    // A client that sends one part's worth and then goes silent.
    let first_part = Bytes::from(pattern(5 * MIB + 1));
    let silent_client = stream::once(async move { Ok::<_, io::Error>(first_part) })
        .inspect(move |_| {
            if let Some(first_taken) = first_taken.take() {
                let _ = first_taken.send(());
            }
        })
        .chain(stream::pending());
    tokio::select! {
        biased;
        result = store.upload(BuildId::new(), "abandoned.bin", silent_client) => {
            panic!("the upload of a silent client finished: {result:?}")
        }
        _ = first_taken_receiver => {}
    }
    store.wait_for_aborts().await;
    assert!(store.list_keys("").await.unwrap().is_empty());
}

async fn a_failing_stream_leaves_nothing(store: &FirmwareStore) {
    let chunks = stream::iter([
        Ok(Bytes::from(pattern(5 * MIB + 1))),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let error = store
        .upload(BuildId::new(), "cut.bin", chunks)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::UploadRead { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "could not read the uploaded file: client went away"
    );
    assert!(store.list_keys("").await.unwrap().is_empty());
}

async fn uploads_of_one_file_name_do_not_collide(store: &FirmwareStore) {
    let build_id = BuildId::new();
    let mut keys = vec![
        store_small_file(store, build_id, "openwrt.bin", b"first").await,
        store_small_file(store, build_id, "openwrt.bin", b"second").await,
    ];
    assert_ne!(keys[0], keys[1]);
    assert_eq!(read_back(store, &keys[0]).await.unwrap(), b"first");
    assert_eq!(read_back(store, &keys[1]).await.unwrap(), b"second");
    let mut listed = store.list_keys(&build_id.to_string()).await.unwrap();
    listed.sort_by(|left, right| left.as_str().cmp(right.as_str()));
    keys.sort_by(|left, right| left.as_str().cmp(right.as_str()));
    assert_eq!(listed, keys);
    store.delete_all(&keys).await.unwrap();
}

async fn deleting_is_idempotent(store: &FirmwareStore) {
    let build_id = BuildId::new();
    let other_build_id = BuildId::new();
    let keys = [
        store_small_file(store, build_id, "a.bin", b"a").await,
        store_small_file(store, build_id, "b.bin", b"b").await,
        store_small_file(store, other_build_id, "c.bin", b"c").await,
    ];
    store.delete(&keys[0]).await.unwrap();
    store.delete(&keys[0]).await.unwrap();
    assert!(matches!(
        store.open(&keys[0]).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
    assert_eq!(
        store.list_keys(&build_id.to_string()).await.unwrap(),
        [keys[1].clone()]
    );
    assert_eq!(
        store.list_keys(&other_build_id.to_string()).await.unwrap(),
        [keys[2].clone()]
    );
    // A batch with a key already deleted and one never stored.
    let never_stored = StorageKey::for_image(build_id, "never.bin");
    store
        .delete_all([&keys[0], &keys[1], &keys[2], &never_stored])
        .await
        .unwrap();
    store.delete_all(&keys).await.unwrap();
    assert!(store.list_keys("").await.unwrap().is_empty());
}

//! Helpers shared by the test modules: byte streams to upload and checks of what storage holds.

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flashfleet_models::{BuildId, StorageKey};
use flashfleet_storage::{FirmwareStore, StorageConfig, StorageError};
use futures_util::{Stream, TryStreamExt as _, stream};
use sha2::{Digest as _, Sha256};

pub(crate) const MIB: usize = 1024 * 1024;

/// Reproducible bytes that are not all alike, so a misplaced chunk changes the hash.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| ((index * 31) ^ (index >> 9)) as u8)
        .collect()
}

/// `bytes` as a stream of chunks of uneven lengths (cycling through `chunk_lengths`).
pub(crate) fn chunked(
    bytes: &[u8],
    chunk_lengths: &[usize],
) -> impl Stream<Item = Result<Bytes, Infallible>> + use<> {
    let mut chunks = Vec::new();
    let mut offset = 0;
    for length in chunk_lengths.iter().cycle() {
        if offset >= bytes.len() {
            break;
        }
        let end = (offset + length).min(bytes.len());
        chunks.push(Ok(Bytes::copy_from_slice(&bytes[offset..end])));
        offset = end;
    }
    stream::iter(chunks)
}

/// An endless stream of 64 KiB chunks that counts how many were taken.
pub(crate) fn counted_endless_stream(
    taken: Arc<AtomicUsize>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let chunk = Bytes::from(vec![0x5A; 64 * 1024]);
    stream::repeat_with(move || {
        taken.fetch_add(1, Ordering::SeqCst);
        Ok(chunk.clone())
    })
}

/// Uploads and commits `content` as `file_name` of `build_id`, in one-byte chunks.
pub(crate) async fn store_small_file(
    store: &FirmwareStore,
    build_id: BuildId,
    file_name: &str,
    content: &[u8],
) -> StorageKey {
    let staged = store
        .upload(build_id, file_name, chunked(content, &[1]))
        .await
        .unwrap();
    let key = staged.storage_key().clone();
    staged.commit().await.unwrap();
    key
}

/// The configuration of an S3 backend at `endpoint` (plain HTTP allowed).
pub(crate) fn s3_config(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    secret_access_key: &str,
) -> StorageConfig {
    toml::from_str(&format!(
        r#"
        backend = "s3"
        bucket = "{bucket}"
        prefix = "{prefix}"
        endpoint = "{endpoint}"
        access_key_id = "AKIDEXAMPLE"
        secret_access_key = "{secret_access_key}"
        allow_http = true
        "#
    ))
    .unwrap()
}

/// The SHA-256 of `bytes`, lowercase hexadecimal.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything stored under `key`, read back through `open`.
pub(crate) async fn read_back(
    store: &FirmwareStore,
    key: &StorageKey,
) -> Result<Vec<u8>, StorageError> {
    let stored = store.open(key).await?;
    let size = stored.size();
    let chunks: Vec<Bytes> = stored.into_stream().try_collect().await?;
    let bytes = chunks.concat();
    assert_eq!(bytes.len() as u64, size, "size of {key}");
    Ok(bytes)
}

/// Every file and directory under `root`, relative to it, sorted.
pub(crate) fn files_under(root: &Path) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let path = entry?.path();
            if path.is_dir() {
                directories.push(path.clone());
            }
            found.push(
                path.strip_prefix(root)
                    .map_err(io::Error::other)?
                    .display()
                    .to_string(),
            );
        }
    }
    found.sort();
    Ok(found)
}

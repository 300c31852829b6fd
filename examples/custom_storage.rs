//! A custom storage backend: an integrator's own [`ObjectStore`] given to [`FirmwareStore`].
//!
//! [`TenantStore`] keeps the firmware files of one tenant under `tenants/<tenant>/` of a store
//! shared by several tenants (here object_store's `InMemory`; a bucket or a directory in
//! production), and counts what it stores and serves, as a billing or quota layer would.
//! `FirmwareStore` neither knows nor cares: it sees its usual keys (`<build>/<upload>/<file>`).
//! The sample application (`tests/sample_app`) runs its whole end-to-end scenario on this store.
//!
//! Run with `cargo run --example custom_storage`: it uploads a sysupgrade image through the
//! wrapper, reads it back, shows the keys as flashfleet and as the shared backend see them, the
//! counters, and deletes the image. It works offline and writes nothing to disk.

#![expect(clippy::print_stdout, reason = "an example prints what it does")]

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// What a [`TenantStore`] stored and served, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    bytes_written: AtomicU64,
    objects_written: AtomicU64,
    bytes_read: AtomicU64,
}

impl Usage {
    /// Bytes of the objects written completely (a multipart upload counts once completed; an
    /// aborted one not at all).
    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::SeqCst)
    }

    /// Objects written completely.
    pub(crate) fn objects_written(&self) -> u64 {
        self.objects_written.load(Ordering::SeqCst)
    }

    /// Bytes served by reads, counted as the reader consumes them.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    fn written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::SeqCst);
        self.objects_written.fetch_add(1, Ordering::SeqCst);
    }

    fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::SeqCst);
    }
}

/// One tenant's view of a shared object store: every path is put under `tenants/<tenant>/`,
/// and what is written and read is counted in [`Usage`].
#[derive(Clone, Debug)]
pub(crate) struct TenantStore {
    shared: Arc<dyn ObjectStore>,
    tenant: String,
    prefix: Path,
    usage: Arc<Usage>,
}

impl TenantStore {
    /// The files of `tenant` on `shared`.
    pub(crate) fn new(shared: Arc<dyn ObjectStore>, tenant: &str) -> TenantStore {
        TenantStore {
            shared,
            tenant: tenant.to_owned(),
            prefix: Path::from_iter(["tenants", tenant]),
            usage: Arc::new(Usage::default()),
        }
    }

    /// What this tenant stored and read so far.
    pub(crate) fn usage(&self) -> Arc<Usage> {
        Arc::clone(&self.usage)
    }

    /// Where `location` of this tenant is on the shared store.
    fn shared_path(&self, location: &Path) -> Path {
        shared_path(&self.prefix, location)
    }
}

fn shared_path(prefix: &Path, location: &Path) -> Path {
    prefix.parts().chain(location.parts()).collect()
}

/// `location` of the shared store as this tenant sees it.
fn tenant_path(prefix: &Path, location: Path) -> Path {
    if let Some(rest) = location.prefix_match(prefix) {
        return rest.collect();
    }
    location
}

fn tenant_meta(prefix: &Path, meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        location: tenant_path(prefix, meta.location),
        ..meta
    }
}

impl std::fmt::Display for TenantStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TenantStore({}, {})", self.tenant, self.shared)
    }
}

#[async_trait]
impl ObjectStore for TenantStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        options: PutOptions,
    ) -> object_store::Result<PutResult> {
        let length = payload.content_length() as u64;
        let result = self
            .shared
            .put_opts(&self.shared_path(location), payload, options)
            .await?;
        self.usage.written(length);
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        options: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self
            .shared
            .put_multipart_opts(&self.shared_path(location), options)
            .await?;
        Ok(Box::new(CountedUpload {
            upload,
            length: 0,
            usage: Arc::clone(&self.usage),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let result = self
            .shared
            .get_opts(&self.shared_path(location), options)
            .await?;
        let meta = tenant_meta(&self.prefix, result.meta.clone());
        let range = result.range.clone();
        let attributes = result.attributes.clone();
        let extensions = result.extensions.clone();
        let usage = Arc::clone(&self.usage);
        let stream = result
            .into_stream()
            .inspect_ok(move |chunk| usage.read(chunk.len()))
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let parts = self
            .shared
            .get_ranges(&self.shared_path(location), ranges)
            .await?;
        self.usage.read(parts.iter().map(Bytes::len).sum());
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let prefix = self.prefix.clone();
        let locations = locations
            .map_ok(move |location| shared_path(&prefix, &location))
            .boxed();
        let prefix = self.prefix.clone();
        self.shared
            .delete_stream(locations)
            .map_ok(move |location| tenant_path(&prefix, location))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let tenant_prefix = self.prefix.clone();
        self.shared
            .list(Some(&self.shared_path(prefix.unwrap_or(&Path::default()))))
            .map_ok(move |meta| tenant_meta(&tenant_prefix, meta))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self
            .shared
            .list_with_delimiter(Some(&self.shared_path(prefix.unwrap_or(&Path::default()))))
            .await?;
        Ok(ListResult {
            common_prefixes: listed
                .common_prefixes
                .into_iter()
                .map(|path| tenant_path(&self.prefix, path))
                .collect(),
            objects: listed
                .objects
                .into_iter()
                .map(|meta| tenant_meta(&self.prefix, meta))
                .collect(),
            extensions: listed.extensions,
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.shared
            .copy_opts(&self.shared_path(from), &self.shared_path(to), options)
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.shared
            .rename_opts(&self.shared_path(from), &self.shared_path(to), options)
            .await
    }
}

/// A multipart upload of a [`TenantStore`]: counts its parts, and adds them to the usage once
/// the upload is complete.
#[derive(Debug)]
struct CountedUpload {
    upload: Box<dyn MultipartUpload>,
    length: u64,
    usage: Arc<Usage>,
}

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.length += data.content_length() as u64;
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.upload.complete().await?;
        self.usage.written(self.length);
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.upload.abort().await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use flashfleet::boards::test_image::TestImage;
    use flashfleet::models::BuildId;
    use flashfleet::storage::{FirmwareStore, FirmwareStoreOptions};
    use object_store::memory::InMemory;

    // One backend shared by every tenant; flashfleet gets the `acme` tenant's view of it.
    let shared = Arc::new(InMemory::new());
    let tenant = TenantStore::new(Arc::clone(&shared) as Arc<dyn ObjectStore>, "acme");
    let usage = tenant.usage();
    let store = FirmwareStore::new(Arc::new(tenant), FirmwareStoreOptions::default());
    println!("firmware storage: {store:?}");

    // A sysupgrade image as OpenWrt builds it (payload and fwtool metadata), streamed in 64 KiB
    // chunks as an HTTP upload would arrive.
    let image = TestImage::builder()
        .payload_len(300 * 1024)
        .supported_devices(["tplink,archer-c7-v2"])
        .version_field("version", "24.10.0")
        .build()
        .to_bytes();
    let chunks = image
        .chunks(64 * 1024)
        .map(|chunk| Ok::<_, std::io::Error>(Bytes::copy_from_slice(chunk)))
        .collect::<Vec<_>>();
    let staged = store
        .upload(
            BuildId::new(),
            "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
            futures_util::stream::iter(chunks),
        )
        .await?;
    let boards = staged
        .inspection()
        .ok()
        .and_then(|inspection| inspection.metadata.as_ref())
        .and_then(|metadata| metadata.supported_devices.clone())
        .unwrap_or_default();
    println!(
        "uploaded {} bytes, sha256 {}, for boards {boards:?}",
        staged.size(),
        staged.sha256()
    );
    let key = staged.storage_key().clone();
    staged.commit().await?;

    let read: Vec<Bytes> = store.open(&key).await?.into_stream().try_collect().await?;
    if read.concat() != image {
        return Err("the image read back differs from the one uploaded".into());
    }
    println!("read back {} bytes, identical", image.len());

    println!("keys as flashfleet sees them:");
    for key in store.list_keys("").await? {
        println!("  {}", key.as_str());
    }
    println!("keys on the shared backend:");
    let mut on_backend = shared.list(None);
    while let Some(meta) = on_backend.try_next().await? {
        println!("  {} ({} bytes)", meta.location, meta.size);
    }
    println!(
        "usage of tenant acme: {} object(s), {} bytes written, {} bytes read",
        usage.objects_written(),
        usage.bytes_written(),
        usage.bytes_read()
    );

    store.delete_all([&key]).await?;
    if shared.list(None).try_next().await?.is_some() {
        return Err("the shared backend still holds the deleted image".into());
    }
    println!("deleted; the shared backend is empty again");
    Ok(())
}

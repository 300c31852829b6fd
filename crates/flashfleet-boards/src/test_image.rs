//! Builds sysupgrade images for tests and benchmarks (feature `test-image`).
//!
//! An image is a pseudo-random payload (reproducible from a seed) followed by a well-formed
//! fwtool metadata chunk and, optionally, a signature chunk, laid out exactly as OpenWrt's
//! `fwtool -I` and `fwtool -S` append them. [`TestImage::write_to`] streams the image to any
//! writer in 64 KiB blocks, so multi-MiB images never sit in memory.
//!
//! ```
//! use flashfleet_boards::test_image::TestImage;
//! use flashfleet_boards::inspect_bytes;
//!
//! let image = TestImage::builder()
//!     .payload_len(4096)
//!     .supported_devices(["tplink,archer-c7-v2"])
//!     .signature(b"not a real ucert".to_vec())
//!     .build();
//! let inspection = inspect_bytes(&image.to_bytes()).unwrap();
//! assert!(inspection.signature_present);
//! assert_eq!(
//!     inspection.metadata.unwrap().supported_devices.unwrap(),
//!     ["tplink,archer-c7-v2"]
//! );
//! ```

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use crate::fwtool::{FWIMAGE_MAGIC, METADATA_HEADER_LEN, TRAILER_LEN};

const BLOCK_LEN: usize = 64 * 1024;

/// A sysupgrade image to write; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    payload_len: u64,
    seed: u64,
    metadata_json: Option<Vec<u8>>,
    metadata_header_version: u32,
    signature: Option<Vec<u8>>,
}

/// Builder of a [`TestImage`]. Every setting has a default: a 64 KiB payload and the metadata of
/// an OpenWrt 23.05.3 image for the GL.iNet GL-MT300N-V2, without a signature.
#[derive(Debug, Clone)]
pub struct TestImageBuilder {
    payload_len: u64,
    seed: u64,
    metadata: MetadataSpec,
    metadata_header_version: u32,
    signature: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum MetadataSpec {
    Absent,
    Fields(Map<String, Value>),
    Raw(Vec<u8>),
}

impl TestImage {
    /// Starts a builder with the defaults.
    pub fn builder() -> TestImageBuilder {
        let fields = json!({
            "metadata_version": "1.1",
            "compat_version": "1.0",
            "supported_devices": ["glinet,gl-mt300n-v2", "gl-mt300n-v2"],
            "version": {
                "dist": "OpenWrt",
                "version": "23.05.3",
                "revision": "r23809-234f1a2efa",
                "target": "ramips/mt76x8",
                "board": "glinet_gl-mt300n-v2"
            }
        });
        let fields = fields.as_object().cloned().unwrap_or_default();
        TestImageBuilder {
            payload_len: 64 * 1024,
            seed: 0x5EED,
            metadata: MetadataSpec::Fields(fields),
            metadata_header_version: 0,
            signature: None,
        }
    }

    /// Total length of the image in bytes.
    pub fn len(&self) -> u64 {
        let metadata_len = self.metadata_json.as_ref().map_or(0, |json| {
            (METADATA_HEADER_LEN + json.len() + TRAILER_LEN) as u64
        });
        let signature_len = self
            .signature
            .as_ref()
            .map_or(0, |signature| (signature.len() + TRAILER_LEN) as u64);
        self.payload_len + metadata_len + signature_len
    }

    /// Whether the image has no byte at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the payload (the image before the fwtool chunks).
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// The metadata JSON stored in the image, if it has a metadata chunk.
    pub fn metadata_json(&self) -> Option<&[u8]> {
        self.metadata_json.as_deref()
    }

    /// Writes the image to `writer`; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, writer: W) -> io::Result<u64> {
        let mut writer = CrcWriter {
            inner: writer,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let mut random = SplitMix64(self.seed);
        let mut block = vec![0; BLOCK_LEN];
        let mut remaining = self.payload_len;
        while remaining > 0 {
            let block_len = usize::try_from(remaining.min(BLOCK_LEN as u64)).unwrap_or(BLOCK_LEN);
            random.fill(&mut block[..block_len]);
            writer.write_all(&block[..block_len])?;
            remaining -= block_len as u64;
        }
        if let Some(json) = &self.metadata_json {
            let mut header = [0; METADATA_HEADER_LEN];
            header[..4].copy_from_slice(&self.metadata_header_version.to_be_bytes());
            writer.write_all(&header)?;
            writer.write_all(json)?;
            writer.write_trailer(1, METADATA_HEADER_LEN + json.len())?;
        }
        if let Some(signature) = &self.signature {
            writer.write_all(signature)?;
            writer.write_trailer(0, signature.len())?;
        }
        writer.inner.flush()?;
        Ok(writer.written)
    }

    /// The whole image in memory (for small images).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut bytes);
        bytes
    }
}

impl TestImageBuilder {
    /// Length of the random payload. Default 64 KiB.
    pub fn payload_len(mut self, payload_len: u64) -> Self {
        self.payload_len = payload_len;
        self
    }

    /// Seed of the payload's pseudo-random bytes; equal seeds give equal payloads.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `supported_devices` (board names).
    pub fn supported_devices(self, devices: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.field("supported_devices", string_list(devices))
    }

    /// Sets `new_supported_devices` (board names checked when the compat version is not `1.0`).
    pub fn new_supported_devices(
        self,
        devices: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.field("new_supported_devices", string_list(devices))
    }

    /// Sets `compat_version`.
    pub fn compat_version(self, compat_version: &str) -> Self {
        self.field("compat_version", Value::from(compat_version))
    }

    /// Sets `compat_message`.
    pub fn compat_message(self, compat_message: &str) -> Self {
        self.field("compat_message", Value::from(compat_message))
    }

    /// Sets one key of the `version` object (`dist`, `version`, `revision`, `target`, `board`).
    pub fn version_field(mut self, key: &str, value: &str) -> Self {
        if let MetadataSpec::Fields(fields) = &mut self.metadata {
            let version = fields
                .entry("version")
                .or_insert_with(|| Value::Object(Map::new()));
            if !version.is_object() {
                *version = Value::Object(Map::new());
            }
            if let Value::Object(version) = version {
                version.insert(key.to_owned(), Value::from(value));
            }
        }
        self
    }

    /// Sets (or replaces) any top-level metadata key.
    pub fn field(mut self, key: &str, value: Value) -> Self {
        if !matches!(self.metadata, MetadataSpec::Fields(_)) {
            self.metadata = MetadataSpec::Fields(Map::new());
        }
        if let MetadataSpec::Fields(fields) = &mut self.metadata {
            fields.insert(key.to_owned(), value);
        }
        self
    }

    /// Removes a top-level metadata key.
    pub fn without_field(mut self, key: &str) -> Self {
        if let MetadataSpec::Fields(fields) = &mut self.metadata {
            fields.remove(key);
        }
        self
    }

    /// Stores these exact bytes as the metadata JSON (valid or not).
    pub fn metadata_json(mut self, json: impl Into<Vec<u8>>) -> Self {
        self.metadata = MetadataSpec::Raw(json.into());
        self
    }

    /// Writes no metadata chunk at all.
    pub fn without_metadata(mut self) -> Self {
        self.metadata = MetadataSpec::Absent;
        self
    }

    /// The version in the metadata chunk header; OpenWrt only reads version 0 (the default).
    pub fn metadata_header_version(mut self, header_version: u32) -> Self {
        self.metadata_header_version = header_version;
        self
    }

    /// Appends a signature chunk holding `signature` after the metadata.
    pub fn signature(mut self, signature: Vec<u8>) -> Self {
        self.signature = Some(signature);
        self
    }

    /// Finishes the image description.
    pub fn build(self) -> TestImage {
        let metadata_json = match self.metadata {
            MetadataSpec::Absent => None,
            MetadataSpec::Fields(fields) => Some(Value::Object(fields).to_string().into_bytes()),
            MetadataSpec::Raw(json) => Some(json),
        };
        TestImage {
            payload_len: self.payload_len,
            seed: self.seed,
            metadata_json,
            metadata_header_version: self.metadata_header_version,
            signature: self.signature,
        }
    }
}

fn string_list(items: impl IntoIterator<Item = impl Into<String>>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| Value::String(item.into()))
            .collect(),
    )
}

/// A writer that keeps the running fwtool CRC of everything written.
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> CrcWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the trailer of a chunk whose data (header included) is `data_len` bytes long.
    fn write_trailer(&mut self, chunk_type: u8, data_len: usize) -> io::Result<()> {
        let size = u32::try_from(data_len + TRAILER_LEN)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
        let crc = self.hasher.clone().finalize() ^ 0xFFFF_FFFF;
        let mut trailer = [0; TRAILER_LEN];
        trailer[0..4].copy_from_slice(&FWIMAGE_MAGIC.to_be_bytes());
        trailer[4..8].copy_from_slice(&crc.to_be_bytes());
        trailer[8] = chunk_type;
        trailer[12..16].copy_from_slice(&size.to_be_bytes());
        self.write_all(&trailer)
    }
}

/// The SplitMix64 generator: tiny, fast and good enough for payload bytes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwtool::{ChunkKind, inspect_bytes};

    #[test]
    fn default_image_round_trips() {
        let image = TestImage::builder().build();
        let bytes = image.to_bytes();
        assert_eq!(bytes.len() as u64, image.len());
        let inspection = inspect_bytes(&bytes).unwrap();
        let metadata = inspection.metadata.unwrap();
        assert_eq!(
            metadata.raw_json().as_bytes(),
            image.metadata_json().unwrap()
        );
        assert_eq!(
            metadata.supported_devices.unwrap(),
            ["glinet,gl-mt300n-v2", "gl-mt300n-v2"]
        );
        assert_eq!(metadata.version.target.as_deref(), Some("ramips/mt76x8"));
        assert!(!inspection.signature_present);
    }

    #[test]
    fn equal_seeds_give_equal_images_and_different_seeds_do_not() {
        let first = TestImage::builder().payload_len(1000).seed(1).build();
        let again = TestImage::builder().payload_len(1000).seed(1).build();
        let other = TestImage::builder().payload_len(1000).seed(2).build();
        assert_eq!(first.to_bytes(), again.to_bytes());
        assert_ne!(first.to_bytes(), other.to_bytes());
    }

    #[test]
    fn builder_settings_reach_the_metadata() {
        let image = TestImage::builder()
            .payload_len(10)
            .compat_version("1.1")
            .compat_message("config changed")
            .new_supported_devices(["a,b"])
            .version_field("version", "24.10.0")
            .without_field("metadata_version")
            .metadata_header_version(0)
            .signature(vec![1, 2, 3])
            .build();
        let inspection = inspect_bytes(&image.to_bytes()).unwrap();
        let metadata = inspection.metadata.unwrap();
        assert_eq!(metadata.compat_version.as_deref(), Some("1.1"));
        assert_eq!(metadata.compat_message.as_deref(), Some("config changed"));
        assert_eq!(metadata.active_supported_devices().unwrap(), ["a,b"]);
        assert_eq!(metadata.version.version.as_deref(), Some("24.10.0"));
        assert_eq!(metadata.metadata_version, None);
        assert!(inspection.signature_present);
        assert_eq!(inspection.chunks[0].size, 3 + 16);
    }

    #[test]
    fn image_without_metadata_has_only_payload() {
        let image = TestImage::builder()
            .payload_len(100)
            .without_metadata()
            .build();
        assert_eq!(image.len(), 100);
        assert_eq!(inspect_bytes(&image.to_bytes()).unwrap().metadata, None);
    }

    #[test]
    fn skipped_header_version_is_written_as_asked() {
        let image = TestImage::builder().metadata_header_version(1).build();
        let inspection = inspect_bytes(&image.to_bytes()).unwrap();
        assert_eq!(inspection.metadata, None);
        assert_eq!(
            inspection.chunks[0].kind,
            ChunkKind::UnsupportedMetadata { header_version: 1 }
        );
    }
}

//! Reading the fwtool trailer chain of an OpenWrt sysupgrade image, as `fwtool -i` does.
//!
//! OpenWrt's build appends chunks to the image: a metadata chunk (type 1: an 8-byte header, the
//! JSON, a 16-byte trailer) and optionally a signature chunk (type 0: a ucert blob and a
//! trailer). Each trailer holds the magic `FWx0`, a CRC, the type and the chunk size, all big
//! endian. The CRC is the reflected CRC-32 of zlib (polynomial `0xEDB88320`, register starting
//! at `0xFFFFFFFF`) **without** the final XOR, over every byte from the start of the file up to
//! the trailer; that is `crc32fast::hash(bytes) ^ 0xFFFF_FFFF`.
//!
//! The chain is walked from the end: signature chunks, unknown chunk types and metadata chunks
//! whose header version is not 0 are skipped; the first usable metadata chunk ends the walk. A
//! missing magic or a CRC mismatch means "no metadata", as for fwtool.
//!
//! Memory is bounded: checking a CRC needs every byte of the image, but the inspector hashes bytes
//! as they stream by and keeps only the last [`RETAINED_TAIL_LEN`] bytes, so an upload can be
//! inspected while it is stored, without a second read. No input makes it panic.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::error::BoardsError;
use crate::metadata::ImageMetadata;

/// The trailer magic, ASCII `FWx0`.
pub const FWIMAGE_MAGIC: u32 = 0x4657_7830;
/// Length of a chunk trailer.
pub const TRAILER_LEN: usize = 16;
/// Length of the header that starts a metadata chunk (version and flags).
pub const METADATA_HEADER_LEN: usize = 8;
/// The largest chunk data (chunk size minus trailer) accepted.
///
/// This is fwtool's own limit (its read buffer, 30 KiB of metadata plus 1 KiB of signature plus
/// 1 KiB). fwtool reports "Size error" and treats such an image as having no metadata; we report
/// [`BoardsError::MetadataTooLarge`], because a chunk with a valid magic and CRC that is this
/// large is a broken or hostile image, not a plain one.
pub const MAX_CHUNK_DATA_LEN: usize = 32 * 1024;
/// How many bytes at the end of an image the inspector keeps. Chunks must lie within them.
pub const RETAINED_TAIL_LEN: usize = 128 * 1024;
/// The most chunks read from one image.
///
/// Real images have one or two. Each chunk costs a CRC over the retained tail, so without a
/// limit a hostile chain of thousands of tiny chunks would take gigabytes of hashing; a longer
/// chain is reported as [`BoardsError::MalformedChunk`].
pub const MAX_CHUNKS: usize = 32;

const READ_BUFFER_LEN: usize = 64 * 1024;

/// What an image's fwtool trailer chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImageInspection {
    /// Length of the whole image in bytes.
    pub image_len: u64,
    /// The metadata OpenWrt would read, or `None` when the image has none ("Image metadata not
    /// present" on the device).
    pub metadata: Option<ImageMetadata>,
    /// Whether a signature chunk comes after the metadata (what `fwtool -s` would extract).
    pub signature_present: bool,
    /// The chunks read, last in the file first.
    pub chunks: Vec<FwtoolChunk>,
}

/// One chunk of the trailer chain, with a valid magic and CRC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FwtoolChunk {
    /// What the chunk holds.
    pub kind: ChunkKind,
    /// Offset of the chunk's first byte in the image.
    pub offset: u64,
    /// The chunk's size as its trailer states it, trailer included.
    pub size: u32,
    /// The CRC stored in the trailer (checked against the image).
    pub crc32: u32,
}

/// The type of a [`FwtoolChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChunkKind {
    /// Type 0, a ucert signature.
    Signature,
    /// Type 1 with header version 0: the metadata.
    Metadata,
    /// Type 1 with another header version, skipped as fwtool does.
    UnsupportedMetadata {
        /// The header version.
        header_version: u32,
    },
    /// Another type, skipped as fwtool does.
    Unknown {
        /// The type byte.
        chunk_type: u8,
    },
}

/// Inspects an image as it streams by: feed it every byte in order with
/// [`ImageInspector::update`], then call [`ImageInspector::finish`].
///
/// Between updates it keeps at most twice [`RETAINED_TAIL_LEN`] bytes (three times while one
/// update runs), whatever the image size and the size of the slices fed to it.
///
/// ```
/// use flashfleet_boards::ImageInspector;
///
/// let mut inspector = ImageInspector::new();
/// for chunk in [&b"plain "[..], b"image"] {
///     inspector.update(chunk);
/// }
/// let inspection = inspector.finish().unwrap();
/// assert_eq!(inspection.image_len, 11);
/// assert!(inspection.metadata.is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ImageInspector {
    /// CRC state over the bytes already dropped from `tail`.
    dropped_hasher: crc32fast::Hasher,
    dropped_len: u64,
    tail: Vec<u8>,
}

impl ImageInspector {
    /// An inspector that has seen no bytes.
    pub fn new() -> ImageInspector {
        ImageInspector::default()
    }

    /// Feeds the next bytes of the image.
    pub fn update(&mut self, bytes: &[u8]) {
        if bytes.len() >= RETAINED_TAIL_LEN {
            let (dropped, kept) = bytes.split_at(bytes.len() - RETAINED_TAIL_LEN);
            self.drop_front(self.tail.len());
            self.dropped_hasher.update(dropped);
            self.dropped_len += dropped.len() as u64;
            self.tail.extend_from_slice(kept);
            return;
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * RETAINED_TAIL_LEN {
            self.drop_front(self.tail.len() - RETAINED_TAIL_LEN);
        }
    }

    /// How many bytes were fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.dropped_len + self.tail.len() as u64
    }

    /// Reads the trailer chain of the bytes fed so far.
    pub fn finish(&self) -> Result<ImageInspection, BoardsError> {
        walk_chain(&self.dropped_hasher, self.dropped_len, &self.tail)
    }

    fn drop_front(&mut self, count: usize) {
        self.dropped_hasher.update(&self.tail[..count]);
        self.dropped_len += count as u64;
        self.tail.drain(..count);
    }
}

/// Inspects an image held in memory.
pub fn inspect_bytes(image: &[u8]) -> Result<ImageInspection, BoardsError> {
    walk_chain(&crc32fast::Hasher::new(), 0, image)
}

/// Inspects the image `reader` yields, from its current position to its end, reading it once.
pub fn inspect_read<R: Read>(mut reader: R) -> Result<ImageInspection, BoardsError> {
    let mut inspector = ImageInspector::new();
    let mut buffer = vec![0; READ_BUFFER_LEN];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => inspector.update(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
    }
    inspector.finish()
}

/// Inspects a seekable image, the whole stream from its start.
///
/// It reads the last trailer first and only reads the whole image (to check CRCs) when that
/// trailer has the fwtool magic, so images without metadata cost one small read.
pub fn inspect_seekable<R: Read + Seek>(mut reader: R) -> Result<ImageInspection, BoardsError> {
    let image_len = reader.seek(SeekFrom::End(0))?;
    if image_len >= TRAILER_LEN as u64 {
        reader.seek(SeekFrom::End(-(TRAILER_LEN as i64)))?;
        let mut trailer = [0; TRAILER_LEN];
        reader.read_exact(&mut trailer)?;
        if Trailer::parse(&trailer).magic != FWIMAGE_MAGIC {
            return Ok(ImageInspection::without_chunks(image_len));
        }
    }
    reader.seek(SeekFrom::Start(0))?;
    inspect_read(reader)
}

/// Inspects the image file at `path`.
pub fn inspect_file(path: impl AsRef<Path>) -> Result<ImageInspection, BoardsError> {
    inspect_seekable(File::open(path)?)
}

/// Inspects the image an async reader yields, to its end, reading it once.
#[cfg(feature = "tokio")]
pub async fn inspect_async<R>(mut reader: R) -> Result<ImageInspection, BoardsError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut inspector = ImageInspector::new();
    let mut buffer = vec![0; READ_BUFFER_LEN];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        inspector.update(&buffer[..read]);
    }
    inspector.finish()
}

/// The CRC fwtool stores for a chunk trailer placed after `bytes`: CRC-32 without final XOR.
pub fn fwtool_crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ 0xFFFF_FFFF
}

impl ImageInspection {
    fn without_chunks(image_len: u64) -> ImageInspection {
        ImageInspection {
            image_len,
            metadata: None,
            signature_present: false,
            chunks: Vec::new(),
        }
    }
}

/// A decoded 16-byte trailer.
struct Trailer {
    magic: u32,
    crc32: u32,
    chunk_type: u8,
    size: u32,
}

impl Trailer {
    fn parse(bytes: &[u8; TRAILER_LEN]) -> Trailer {
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Trailer {
            magic: word(0),
            crc32: word(4),
            chunk_type: bytes[8],
            size: word(12),
        }
    }
}

/// Walks the chain of an image whose first `tail_start` bytes were hashed into `prefix_hasher`
/// and whose remaining bytes are `tail`.
fn walk_chain(
    prefix_hasher: &crc32fast::Hasher,
    tail_start: u64,
    tail: &[u8],
) -> Result<ImageInspection, BoardsError> {
    let image_len = tail_start + tail.len() as u64;
    let mut inspection = ImageInspection::without_chunks(image_len);
    // `end` is the length of the tail that is still part of the image as fwtool sees it.
    let mut end = tail.len();
    while end >= TRAILER_LEN {
        let trailer_at = end - TRAILER_LEN;
        let mut trailer_bytes = [0; TRAILER_LEN];
        trailer_bytes.copy_from_slice(&tail[trailer_at..end]);
        let trailer = Trailer::parse(&trailer_bytes);
        if trailer.magic != FWIMAGE_MAGIC {
            break;
        }
        let mut hasher = prefix_hasher.clone();
        hasher.update(&tail[..trailer_at]);
        if trailer.crc32 != hasher.finalize() ^ 0xFFFF_FFFF {
            break;
        }
        let trailer_offset = tail_start + trailer_at as u64;
        if inspection.chunks.len() == MAX_CHUNKS {
            return Err(BoardsError::MalformedChunk {
                offset: trailer_offset,
                problem: "the image has more fwtool chunks than any real image",
            });
        }
        let size = trailer.size as usize;
        let Some(data_len) = size.checked_sub(TRAILER_LEN) else {
            return Err(BoardsError::MalformedChunk {
                offset: trailer_offset,
                problem: "its size is smaller than its trailer",
            });
        };
        if data_len > MAX_CHUNK_DATA_LEN {
            return Err(BoardsError::MetadataTooLarge {
                offset: trailer_offset,
                data_len: data_len as u64,
                limit: MAX_CHUNK_DATA_LEN as u64,
            });
        }
        let Some(chunk_at) = trailer_at.checked_sub(data_len) else {
            if (data_len as u64) > trailer_offset {
                return Err(BoardsError::MalformedChunk {
                    offset: trailer_offset,
                    problem: "its size is larger than the image before it",
                });
            }
            // The chunk starts before the retained tail. Real chains are far shorter than the
            // tail; fwtool also gives up when a chunk lies outside its buffer.
            break;
        };
        let data = &tail[chunk_at..trailer_at];
        let mut chunk = FwtoolChunk {
            kind: ChunkKind::Signature,
            offset: tail_start + chunk_at as u64,
            size: trailer.size,
            crc32: trailer.crc32,
        };
        end = chunk_at;
        match trailer.chunk_type {
            0 => {
                inspection.signature_present = true;
                inspection.chunks.push(chunk);
            }
            1 => {
                let Some((header, json)) = data.split_first_chunk::<METADATA_HEADER_LEN>() else {
                    return Err(BoardsError::MalformedChunk {
                        offset: trailer_offset,
                        problem: "metadata chunk is shorter than its header",
                    });
                };
                let header_version =
                    u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                if header_version != 0 {
                    chunk.kind = ChunkKind::UnsupportedMetadata { header_version };
                    inspection.chunks.push(chunk);
                    continue;
                }
                chunk.kind = ChunkKind::Metadata;
                inspection.chunks.push(chunk);
                inspection.metadata = Some(ImageMetadata::from_json(json)?);
                break;
            }
            chunk_type => {
                chunk.kind = ChunkKind::Unknown { chunk_type };
                inspection.chunks.push(chunk);
            }
        }
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_image::TestImage;

    /// Appends a chunk the way `fwtool -I`/`-S` does.
    fn append_chunk(image: &mut Vec<u8>, chunk_type: u8, data: &[u8]) {
        image.extend_from_slice(data);
        let crc = fwtool_crc32(image);
        image.extend_from_slice(&FWIMAGE_MAGIC.to_be_bytes());
        image.extend_from_slice(&crc.to_be_bytes());
        image.extend_from_slice(&[chunk_type, 0, 0, 0]);
        let size = u32::try_from(data.len() + TRAILER_LEN).unwrap();
        image.extend_from_slice(&size.to_be_bytes());
    }

    fn metadata_data(header_version: u32, json: &str) -> Vec<u8> {
        let mut data = header_version.to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 4]);
        data.extend_from_slice(json.as_bytes());
        data
    }

    #[test]
    fn fwtool_crc_is_zlib_crc_without_final_xor() {
        // zlib.crc32(b"123456789") == 0xcbf43926, the standard check value.
        assert_eq!(fwtool_crc32(b"123456789"), 0xCBF4_3926 ^ 0xFFFF_FFFF);
        assert_eq!(fwtool_crc32(b""), 0xFFFF_FFFF);
    }

    #[test]
    fn image_without_trailer_has_no_metadata() {
        for image in [&b""[..], b"short", &[0xAB; 100]] {
            let inspection = inspect_bytes(image).unwrap();
            assert_eq!(inspection.image_len, image.len() as u64);
            assert_eq!(inspection.metadata, None);
            assert!(!inspection.signature_present);
            assert!(inspection.chunks.is_empty());
        }
    }

    #[test]
    fn metadata_and_signature_chunks_are_found() {
        let mut image = b"payload".to_vec();
        append_chunk(
            &mut image,
            1,
            &metadata_data(0, r#"{"supported_devices": ["a,b"]}"#),
        );
        append_chunk(&mut image, 0, b"signature blob");
        let inspection = inspect_bytes(&image).unwrap();
        let metadata = inspection.metadata.unwrap();
        assert_eq!(metadata.supported_devices.unwrap(), ["a,b"]);
        assert!(inspection.signature_present);
        let kinds: Vec<ChunkKind> = inspection.chunks.iter().map(|chunk| chunk.kind).collect();
        assert_eq!(kinds, [ChunkKind::Signature, ChunkKind::Metadata]);
        assert_eq!(inspection.chunks[1].offset, 7);
    }

    #[test]
    fn a_bad_crc_means_no_metadata() {
        let mut image = b"payload".to_vec();
        append_chunk(&mut image, 1, &metadata_data(0, "{}"));
        image[0] ^= 1;
        let inspection = inspect_bytes(&image).unwrap();
        assert_eq!(inspection.metadata, None);
        assert!(inspection.chunks.is_empty());
    }

    #[test]
    fn unsupported_header_versions_and_unknown_types_are_skipped() {
        let mut image = b"payload".to_vec();
        append_chunk(
            &mut image,
            1,
            &metadata_data(0, r#"{"compat_version": "1.1"}"#),
        );
        append_chunk(
            &mut image,
            1,
            &metadata_data(1, r#"{"compat_version": "9.9"}"#),
        );
        append_chunk(&mut image, 7, b"future");
        let inspection = inspect_bytes(&image).unwrap();
        assert_eq!(
            inspection.metadata.unwrap().compat_version.as_deref(),
            Some("1.1")
        );
        let kinds: Vec<ChunkKind> = inspection.chunks.iter().map(|chunk| chunk.kind).collect();
        assert_eq!(
            kinds,
            [
                ChunkKind::Unknown { chunk_type: 7 },
                ChunkKind::UnsupportedMetadata { header_version: 1 },
                ChunkKind::Metadata
            ]
        );
        assert!(!inspection.signature_present);
    }

    #[test]
    fn a_signature_before_the_metadata_is_not_reported() {
        let mut image = b"payload".to_vec();
        append_chunk(&mut image, 0, b"signature blob");
        append_chunk(&mut image, 1, &metadata_data(0, "{}"));
        let inspection = inspect_bytes(&image).unwrap();
        assert!(inspection.metadata.is_some());
        assert!(!inspection.signature_present);
    }

    #[test]
    fn oversized_chunk_is_rejected() {
        let mut image = b"payload".to_vec();
        let json = format!(r#"{{"pad": "{}"}}"#, "x".repeat(MAX_CHUNK_DATA_LEN));
        append_chunk(&mut image, 1, &metadata_data(0, &json));
        assert!(matches!(
            inspect_bytes(&image),
            Err(BoardsError::MetadataTooLarge { limit, .. }) if limit == 32 * 1024
        ));
    }

    #[test]
    fn impossible_chunk_sizes_are_rejected() {
        for (size, problem) in [
            (3_u32, "its size is smaller than its trailer"),
            (100, "its size is larger than the image before it"),
        ] {
            let mut image = b"payload".to_vec();
            let crc = fwtool_crc32(&image);
            image.extend_from_slice(&FWIMAGE_MAGIC.to_be_bytes());
            image.extend_from_slice(&crc.to_be_bytes());
            image.extend_from_slice(&[1, 0, 0, 0]);
            image.extend_from_slice(&size.to_be_bytes());
            let error = inspect_bytes(&image).unwrap_err();
            assert!(
                matches!(&error, BoardsError::MalformedChunk { problem: found, offset: 7 } if *found == problem),
                "{error:?}"
            );
        }

        let mut image = b"payload".to_vec();
        append_chunk(&mut image, 1, b"0000");
        assert!(matches!(
            inspect_bytes(&image),
            Err(BoardsError::MalformedChunk {
                problem: "metadata chunk is shorter than its header",
                ..
            })
        ));
    }

    #[test]
    fn endless_chains_of_chunks_are_rejected() {
        let mut image = b"payload".to_vec();
        for _ in 0..MAX_CHUNKS {
            append_chunk(&mut image, 9, b"");
        }
        let inspection = inspect_bytes(&image).unwrap();
        assert_eq!(inspection.chunks.len(), MAX_CHUNKS);
        append_chunk(&mut image, 9, b"");
        assert!(matches!(
            inspect_bytes(&image),
            Err(BoardsError::MalformedChunk { offset: 7, .. })
        ));
    }

    #[test]
    fn invalid_metadata_json_is_an_error() {
        let mut image = b"payload".to_vec();
        append_chunk(&mut image, 1, &metadata_data(0, "{not json"));
        assert!(matches!(
            inspect_bytes(&image),
            Err(BoardsError::InvalidMetadata { .. })
        ));
    }

    #[test]
    fn streaming_in_any_slice_size_gives_the_same_result() {
        let image = TestImage::builder()
            .payload_len(3 * RETAINED_TAIL_LEN as u64 + 17)
            .signature(b"sig".to_vec())
            .build()
            .to_bytes();
        let expected = inspect_bytes(&image).unwrap();
        assert!(expected.metadata.is_some());
        for slice_len in [
            1,
            7,
            4096,
            RETAINED_TAIL_LEN - 1,
            RETAINED_TAIL_LEN,
            300_000,
        ] {
            let mut inspector = ImageInspector::new();
            for slice in image.chunks(slice_len) {
                inspector.update(slice);
                assert!(inspector.tail.len() <= 2 * RETAINED_TAIL_LEN);
            }
            assert_eq!(inspector.bytes_seen(), image.len() as u64);
            assert_eq!(
                inspector.finish().unwrap(),
                expected,
                "slices of {slice_len}"
            );
        }
    }

    #[test]
    fn seekable_inspection_skips_images_without_magic() {
        let inspection = inspect_seekable(io::Cursor::new(vec![0_u8; 1000])).unwrap();
        assert_eq!(inspection.image_len, 1000);
        assert_eq!(inspection.metadata, None);

        let image = TestImage::builder().payload_len(1000).build().to_bytes();
        let inspection = inspect_seekable(io::Cursor::new(image)).unwrap();
        assert!(inspection.metadata.is_some());
    }
}

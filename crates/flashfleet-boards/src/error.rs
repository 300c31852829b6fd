//! The error type of this crate.

use std::io;

/// Everything that can go wrong in `flashfleet-boards`.
///
/// Absence is not an error here: an image without fwtool metadata inspects to
/// `metadata: None`, and a board no image lists gives an empty candidate list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardsError {
    /// An image map (built-in data or [`ImageMap::from_json`](crate::ImageMap::from_json)) is
    /// not valid JSON of the expected shape.
    #[error("image map data is not valid")]
    InvalidMapData {
        /// What the JSON parser reported.
        #[source]
        source: serde_json::Error,
    },
    /// An image type was given an empty (or blank) name.
    #[error("image type #{position} has an empty name")]
    EmptyImageType {
        /// Zero-based position of the entry in its list.
        position: usize,
    },
    /// An image type has an empty (or blank) label.
    #[error("image type `{image_type}` has an empty label")]
    EmptyLabel {
        /// The image type.
        image_type: String,
    },
    /// An image type lists no boards.
    #[error("image type `{image_type}` lists no boards")]
    EmptyBoards {
        /// The image type.
        image_type: String,
    },
    /// An image type lists an empty (or blank) board name.
    #[error("image type `{image_type}` lists an empty board name")]
    EmptyBoardName {
        /// The image type.
        image_type: String,
    },
    /// One board is listed twice by the same image type.
    #[error("image type `{image_type}` lists board `{board}` twice")]
    DuplicateBoard {
        /// The image type.
        image_type: String,
        /// The board listed twice.
        board: String,
    },
    /// The same image type appears twice in one list (the built-in data or the custom images).
    #[error("image type `{image_type}` is defined twice")]
    DuplicateImageType {
        /// The image type.
        image_type: String,
    },
    /// Neither the image map nor the image's metadata tells which boards an image is for.
    #[error(
        "could not find boards for image `{file_name}` (image type `{image_type}`): it is not in \
         the image map and has no metadata naming supported devices"
    )]
    UnknownImageType {
        /// The uploaded file name.
        file_name: String,
        /// The image type derived from the file name.
        image_type: String,
    },
    /// Reading the image failed.
    #[error("could not read the image")]
    Io {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A fwtool chunk with a valid magic and CRC is larger than fwtool accepts.
    #[error(
        "fwtool chunk at offset {offset} holds {data_len} bytes, more than the {limit} allowed"
    )]
    MetadataTooLarge {
        /// Offset of the chunk's trailer from the start of the image.
        offset: u64,
        /// Length of the chunk's data (its size without the trailer).
        data_len: u64,
        /// The largest data length accepted.
        limit: u64,
    },
    /// A fwtool chunk with a valid magic and CRC has a size that cannot be right.
    #[error("fwtool chunk at offset {offset} is malformed: {problem}")]
    MalformedChunk {
        /// Offset of the chunk's trailer from the start of the image.
        offset: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The metadata chunk is intact but does not hold a JSON object, so OpenWrt would refuse the
    /// image ("Invalid image metadata").
    #[error("image metadata is not a valid JSON object")]
    InvalidMetadata {
        /// What the JSON parser reported; `None` when the JSON is valid but not an object.
        #[source]
        source: Option<serde_json::Error>,
    },
}

impl From<io::Error> for BoardsError {
    fn from(source: io::Error) -> Self {
        BoardsError::Io { source }
    }
}

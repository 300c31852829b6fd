//! The image-to-board map of flashfleet and the reader of OpenWrt sysupgrade image metadata.
//!
//! - [`ImageMap`] says which firmware image type is for which device models. The built-in
//!   OpenWrt table ([`ImageMap::openwrt`]) is data (`data/openwrt_images.json`, derived from
//!   openwisp-firmware-upgrader under GPLv3, see `data/README.md`), parsed once; operators add or
//!   replace entries through [`BoardMapConfig`] ([`ImageMap::from_config`]).
//! - [`inspect_file`], [`inspect_seekable`], [`inspect_read`], [`ImageInspector`] (fed as an upload
//!   streams by) and, with the `tokio` feature, `inspect_async` read the fwtool metadata and
//!   signature chunks OpenWrt's build appends to an image.
//! - [`check_compatibility`] decides, as `sysupgrade` would, whether an image fits a device.
//! - With the `test-image` feature, `test_image::TestImage` writes well-formed images for tests
//!   and benchmarks.
//!
//! Invariants:
//! - Nothing here knows about HTTP, SQL, SSH or the database models; the crate does I/O only when
//!   asked to read an image.
//! - Image inspection never holds a whole image in memory (at most a few hundred KiB, see
//!   [`fwtool::RETAINED_TAIL_LEN`]) and never panics, whatever the bytes.
//! - The compatibility check is a pure function of its arguments.
//! - Every [`ImageMap`] is validated: unique image types, non-empty labels, at least one board
//!   per type.

pub mod board_map_config;
pub mod compatibility;
mod error;
pub mod fwtool;
pub mod image_map;
pub mod metadata;
#[cfg(feature = "test-image")]
pub mod test_image;

pub use board_map_config::{BoardMapConfig, CustomImage};
pub use compatibility::{
    DeviceIdentity, IncompatibleReason, SysupgradeOptions, Verdict, check_compatibility,
    check_metadata,
};
pub use error::BoardsError;
#[cfg(feature = "tokio")]
pub use fwtool::inspect_async;
pub use fwtool::{
    ChunkKind, FwtoolChunk, ImageInspection, ImageInspector, inspect_bytes, inspect_file,
    inspect_read, inspect_seekable,
};
pub use image_map::{
    EntryOrigin, ImageEntry, ImageMap, ResolvedType, TypeSource, image_type_from_file_name,
};
pub use metadata::{ImageMetadata, ImageVersion};

//! The image map: which firmware image type is for which device models.
//!
//! An *image type* is the name of a board-specific firmware file (for example
//! `ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin`). A *board*, in the map, is the
//! device model string a device reports in `/tmp/sysinfo/model` (for example
//! `TP-Link Archer C7 v2`). Note that this is not the board *name* of `/tmp/sysinfo/board_name`
//! (`tplink,archer-c7-v2`), which is what image metadata lists; see
//! [`compatibility`](crate::compatibility).
//!
//! # Order
//!
//! The map keeps an order, as upstream's ordered dictionary does: custom images first, in
//! configuration order, then the built-in entries in table order (minus the ones a custom image
//! replaced). [`ImageMap::entries`] walks that order, which is also the order upstream lists its
//! type choices in.
//!
//! Several entries can list the same board (the `ar71xx` and `ath79` builds of the Archer C7 v2,
//! for example). [`ImageMap::images_for_board`] returns every candidate, in preference order:
//! custom entries before built-in ones, and within each group the *later* entry first. So the
//! first built-in candidate is the one upstream's reverse map picks ("last entry wins"), and an
//! operator's custom image is preferred over any built-in one. Callers that know the device's
//! OpenWrt target should use [`ImageMap::images_for_board_on_target`], which moves candidates
//! built for that target to the front.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::board_map_config::BoardMapConfig;
use crate::error::BoardsError;
use crate::metadata::ImageMetadata;

/// The built-in OpenWrt table, as shipped in `data/openwrt_images.json`.
const OPENWRT_IMAGES_JSON: &str = include_str!("../data/openwrt_images.json");

/// A validated, ordered map from image type to label and boards, with a reverse index.
///
/// Build it with [`ImageMap::openwrt`] (the built-in table), [`ImageMap::from_config`] (the
/// built-in table plus the operator's custom images) or [`ImageMap::from_json`] (a table of your
/// own). Every entry has a non-empty type and label and at least one board, and image types are
/// unique.
#[derive(Debug, Clone)]
pub struct ImageMap {
    entries: Vec<ImageEntry>,
    positions: HashMap<String, usize>,
    /// Board to entry positions, in preference order (see the module documentation).
    candidates: HashMap<String, Vec<usize>>,
}

/// One image type of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageEntry {
    image_type: String,
    label: String,
    boards: Vec<String>,
    origin: EntryOrigin,
}

/// Where an [`ImageEntry`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryOrigin {
    /// The base table: the built-in OpenWrt table, or the one given to [`ImageMap::from_json`].
    BuiltIn,
    /// The operator's configuration.
    Custom {
        /// Whether this entry replaced a built-in entry of the same image type.
        replaces_built_in: bool,
    },
}

/// What [`ImageMap::resolve_image_type`] found out about an uploaded image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ResolvedType {
    /// The image type.
    pub image_type: String,
    /// Human-readable name.
    pub label: String,
    /// What the image is for. Their meaning depends on [`ResolvedType::source`].
    pub boards: Vec<String>,
    /// Where the type was found.
    pub source: TypeSource,
}

/// Where a [`ResolvedType`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TypeSource {
    /// In the image map; the boards are device models (`/tmp/sysinfo/model`).
    ImageMap,
    /// In the image's fwtool metadata, because the map does not know the type; the boards are
    /// board names (`/tmp/sysinfo/board_name`), from the metadata's supported devices.
    ImageMetadata,
}

/// Derives an image type from an uploaded file name with upstream's rule: split the name on `-`,
/// drop the first piece and join the rest again.
///
/// `openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin` becomes
/// `ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin`; a name without `-` gives the empty
/// string, as upstream. Pass the file's base name, without directories.
pub fn image_type_from_file_name(file_name: &str) -> &str {
    file_name.split_once('-').map_or("", |(_, rest)| rest)
}

impl ImageMap {
    /// The built-in OpenWrt table (92 image types), parsed once on first use.
    pub fn openwrt() -> &'static ImageMap {
        static OPENWRT: OnceLock<ImageMap> = OnceLock::new();
        OPENWRT.get_or_init(|| {
            // The tests in this crate parse the same file, so a bad edit fails `cargo test`
            // rather than a server at start-up.
            ImageMap::from_json(OPENWRT_IMAGES_JSON)
                .expect("the built-in data/openwrt_images.json is valid")
        })
    }

    /// The built-in OpenWrt table with the operator's custom images merged in.
    ///
    /// Custom images come first, in configuration order; a custom image whose type is built in
    /// replaces the built-in entry (see [`BoardMapConfig::custom_images`]).
    pub fn from_config(config: &BoardMapConfig) -> Result<ImageMap, BoardsError> {
        ImageMap::openwrt().with_custom_images(config)
    }

    /// Parses a table in the format of `data/openwrt_images.json`: a JSON object from image type
    /// to `{"label": "...", "boards": ["...", ...]}`, whose key order is the map order.
    pub fn from_json(json: &str) -> Result<ImageMap, BoardsError> {
        let table: OrderedTable =
            serde_json::from_str(json).map_err(|source| BoardsError::InvalidMapData { source })?;
        let entries = table
            .0
            .into_iter()
            .map(|(image_type, raw)| ImageEntry {
                image_type,
                label: raw.label,
                boards: raw.boards,
                origin: EntryOrigin::BuiltIn,
            })
            .collect();
        ImageMap::from_entries(entries)
    }

    /// Returns a new map with `config`'s custom images merged into this one.
    pub fn with_custom_images(&self, config: &BoardMapConfig) -> Result<ImageMap, BoardsError> {
        let mut entries = Vec::with_capacity(config.custom_images.len() + self.entries.len());
        let mut custom_types = HashSet::new();
        for custom_image in &config.custom_images {
            custom_types.insert(custom_image.image_type.as_str());
            entries.push(ImageEntry {
                image_type: custom_image.image_type.clone(),
                label: custom_image.label.clone(),
                boards: custom_image.boards.clone(),
                origin: EntryOrigin::Custom {
                    replaces_built_in: self.positions.contains_key(&custom_image.image_type),
                },
            });
        }
        entries.extend(
            self.entries
                .iter()
                .filter(|entry| !custom_types.contains(entry.image_type.as_str()))
                .cloned(),
        );
        ImageMap::from_entries(entries)
    }

    /// The entry of `image_type`, if the map has one.
    pub fn entry(&self, image_type: &str) -> Option<&ImageEntry> {
        self.positions
            .get(image_type)
            .map(|&position| &self.entries[position])
    }

    /// The label of `image_type`, if the map has it.
    pub fn label(&self, image_type: &str) -> Option<&str> {
        self.entry(image_type).map(ImageEntry::label)
    }

    /// The device models `image_type` is for, if the map has it.
    pub fn boards_for_image(&self, image_type: &str) -> Option<&[String]> {
        self.entry(image_type).map(ImageEntry::boards)
    }

    /// Whether the map says `image_type` is for the device model `model`.
    pub fn lists_board(&self, image_type: &str, model: &str) -> bool {
        self.entry(image_type)
            .is_some_and(|entry| entry.lists_board(model))
    }

    /// Every image type listing the device model `model` (from `/tmp/sysinfo/model`), in
    /// preference order: custom entries first, then built-in ones, each group latest entry first.
    ///
    /// The first built-in candidate is the one upstream's reverse map keeps. Empty when no entry
    /// lists the model.
    pub fn images_for_board(&self, model: &str) -> Vec<&ImageEntry> {
        self.candidates
            .get(model)
            .map(|positions| {
                positions
                    .iter()
                    .map(|&position| &self.entries[position])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Like [`ImageMap::images_for_board`], but candidates built for the device's OpenWrt target
    /// come first.
    ///
    /// `target` is `DISTRIB_TARGET` from `/etc/openwrt_release` or `OPENWRT_BOARD` from
    /// `/usr/lib/os-release` (for example `ath79/generic`), or the `version.target` of image
    /// metadata. Candidates whose type starts with the whole target (`ath79-generic-`) come first,
    /// then those starting with its first part (`ath79-`), then the rest; the order within each
    /// group is kept. So a device running `ath79` gets the `ath79` Archer C7 v2 image before the
    /// `ar71xx` one, whatever the table order.
    pub fn images_for_board_on_target(&self, model: &str, target: &str) -> Vec<&ImageEntry> {
        let mut candidates = self.images_for_board(model);
        candidates.sort_by_key(|entry| std::cmp::Reverse(target_match(entry.image_type(), target)));
        candidates
    }

    /// Finds the image type of an uploaded image.
    ///
    /// In order:
    /// 1. the type derived from `file_name` by upstream's rule ([`image_type_from_file_name`]),
    ///    if the map has it;
    /// 2. `file_name` itself, if the map has it (an image uploaded under its type name);
    /// 3. if `metadata` names supported devices (the list OpenWrt would check, see
    ///    [`ImageMetadata::active_supported_devices`]), the image is accepted as its own type:
    ///    the derived type (or `file_name` when that is empty), labelled from the metadata
    ///    (`version.board`, else the supported devices joined with `, `), and its boards are the
    ///    metadata's board names.
    ///
    /// Otherwise it fails with [`BoardsError::UnknownImageType`].
    pub fn resolve_image_type(
        &self,
        file_name: &str,
        metadata: Option<&ImageMetadata>,
    ) -> Result<ResolvedType, BoardsError> {
        let derived = image_type_from_file_name(file_name);
        let known = self.entry(derived).or_else(|| self.entry(file_name));
        if let Some(entry) = known {
            return Ok(ResolvedType {
                image_type: entry.image_type.clone(),
                label: entry.label.clone(),
                boards: entry.boards.clone(),
                source: TypeSource::ImageMap,
            });
        }
        let image_type = if derived.is_empty() {
            file_name
        } else {
            derived
        };
        let supported_devices = metadata
            .and_then(ImageMetadata::active_supported_devices)
            .filter(|devices| devices.iter().any(|device| !device.trim().is_empty()));
        match (metadata, supported_devices) {
            (Some(metadata), Some(devices)) if !image_type.trim().is_empty() => {
                let boards: Vec<String> = devices
                    .iter()
                    .filter(|device| !device.trim().is_empty())
                    .cloned()
                    .collect();
                let label = match metadata.version.board.as_deref() {
                    Some(board) if !board.trim().is_empty() => board.to_owned(),
                    _ => boards.join(", "),
                };
                Ok(ResolvedType {
                    image_type: image_type.to_owned(),
                    label,
                    boards,
                    source: TypeSource::ImageMetadata,
                })
            }
            _ => Err(BoardsError::UnknownImageType {
                file_name: file_name.to_owned(),
                image_type: image_type.to_owned(),
            }),
        }
    }

    /// Every entry, in map order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &ImageEntry> {
        self.entries.iter()
    }

    /// The distinct device models the map lists, in the order they first appear.
    pub fn boards(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.entries
            .iter()
            .flat_map(|entry| entry.boards.iter())
            .filter(|board| seen.insert(board.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// Number of image types.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no image type (never the case for the built-in table).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Validates `entries` and builds the indexes.
    fn from_entries(entries: Vec<ImageEntry>) -> Result<ImageMap, BoardsError> {
        let mut positions = HashMap::with_capacity(entries.len());
        for (position, entry) in entries.iter().enumerate() {
            entry.validate(position)?;
            if positions
                .insert(entry.image_type.clone(), position)
                .is_some()
            {
                return Err(BoardsError::DuplicateImageType {
                    image_type: entry.image_type.clone(),
                });
            }
        }
        let mut candidates: HashMap<String, Vec<usize>> = HashMap::new();
        // Walking backwards puts later entries first; a stable sort then moves custom entries
        // ahead of built-in ones without changing the order inside each group.
        for (position, entry) in entries.iter().enumerate().rev() {
            for board in &entry.boards {
                candidates.entry(board.clone()).or_default().push(position);
            }
        }
        for positions in candidates.values_mut() {
            positions.sort_by_key(|&position| entries[position].origin == EntryOrigin::BuiltIn);
        }
        Ok(ImageMap {
            entries,
            positions,
            candidates,
        })
    }
}

impl ImageEntry {
    /// The image type (a firmware file name without its first `-`-separated piece).
    pub fn image_type(&self) -> &str {
        &self.image_type
    }

    /// Human-readable name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Device models (`/tmp/sysinfo/model`) this image is for; never empty.
    pub fn boards(&self) -> &[String] {
        &self.boards
    }

    /// Where the entry comes from.
    pub fn origin(&self) -> EntryOrigin {
        self.origin
    }

    /// Whether this image is for the device model `model` (exact match).
    pub fn lists_board(&self, model: &str) -> bool {
        self.boards.iter().any(|board| board == model)
    }

    fn validate(&self, position: usize) -> Result<(), BoardsError> {
        if self.image_type.trim().is_empty() {
            return Err(BoardsError::EmptyImageType { position });
        }
        if self.label.trim().is_empty() {
            return Err(BoardsError::EmptyLabel {
                image_type: self.image_type.clone(),
            });
        }
        if self.boards.is_empty() {
            return Err(BoardsError::EmptyBoards {
                image_type: self.image_type.clone(),
            });
        }
        let mut seen = HashSet::new();
        for board in &self.boards {
            if board.trim().is_empty() {
                return Err(BoardsError::EmptyBoardName {
                    image_type: self.image_type.clone(),
                });
            }
            if !seen.insert(board.as_str()) {
                return Err(BoardsError::DuplicateBoard {
                    image_type: self.image_type.clone(),
                    board: board.clone(),
                });
            }
        }
        Ok(())
    }
}

/// How well `image_type` matches an OpenWrt target such as `ath79/generic`: 2 for the whole
/// target, 1 for its first part, 0 otherwise.
fn target_match(image_type: &str, target: &str) -> u8 {
    let target = target.trim().trim_matches('/');
    if target.is_empty() {
        return 0;
    }
    let full_prefix = format!("{}-", target.replace('/', "-"));
    if image_type.starts_with(&full_prefix) {
        return 2;
    }
    let first_part = target.split('/').next().unwrap_or(target);
    if image_type.starts_with(&format!("{first_part}-")) {
        return 1;
    }
    0
}

/// One value of the table file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    label: String,
    boards: Vec<String>,
}

/// The table file as a list of (image type, entry) in file order, duplicates kept so that
/// validation can report them (a map type would silently keep one).
struct OrderedTable(Vec<(String, RawEntry)>);

impl<'de> Deserialize<'de> for OrderedTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor;

        impl<'de> Visitor<'de> for TableVisitor {
            type Value = OrderedTable;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object from image type to {label, boards}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedTable, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((image_type, raw)) = map.next_entry::<String, RawEntry>()? {
                    entries.push((image_type, raw));
                }
                Ok(OrderedTable(entries))
            }
        }

        deserializer.deserialize_map(TableVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board_map_config::CustomImage;

    const C7_V2: &str = "TP-Link Archer C7 v2";
    const C7_V2_AR71XX: &str = "ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin";
    const C7_V2_ATH79: &str = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin";

    fn types<'a>(entries: &[&'a ImageEntry]) -> Vec<&'a str> {
        entries.iter().map(|entry| entry.image_type()).collect()
    }

    fn config(custom_images: Vec<CustomImage>) -> BoardMapConfig {
        BoardMapConfig { custom_images }
    }

    #[test]
    fn built_in_table_has_92_types_and_104_distinct_boards() {
        let map = ImageMap::openwrt();
        assert_eq!(map.len(), 92);
        assert_eq!(map.boards().len(), 104);
        let listed: usize = map.entries().map(|entry| entry.boards().len()).sum();
        assert_eq!(listed, 118);
    }

    #[test]
    fn built_in_table_keeps_upstream_order() {
        let map = ImageMap::openwrt();
        let first = map.entries().next().unwrap();
        let last = map.entries().last().unwrap();
        assert_eq!(
            first.image_type(),
            "ar71xx-generic-cf-e320n-v2-squashfs-sysupgrade.bin"
        );
        assert_eq!(
            last.image_type(),
            "x86-geode-generic-squashfs-combined.img.gz"
        );
        assert!(
            map.entries()
                .all(|entry| entry.origin() == EntryOrigin::BuiltIn)
        );
    }

    #[test]
    fn every_built_in_board_is_found_by_reverse_lookup() {
        let map = ImageMap::openwrt();
        for entry in map.entries() {
            for board in entry.boards() {
                let candidates = map.images_for_board(board);
                assert!(
                    candidates.contains(&entry),
                    "{board} does not lead back to {}",
                    entry.image_type()
                );
            }
        }
    }

    #[test]
    fn unifi_6_entries_list_whole_model_names() {
        let map = ImageMap::openwrt();
        let entry = map
            .entry("mediatek-filogic-ubnt_unifi-6-plus-squashfs-sysupgrade.bin")
            .unwrap();
        assert_eq!(entry.boards(), ["Ubiquiti UniFi 6 Plus"]);
        assert_eq!(
            types(&map.images_for_board("Ubiquiti UniFi 6 LR v3")),
            ["mediatek-mt7622-ubnt_unifi-6-lr-v3-squashfs-sysupgrade.bin"]
        );
        // Upstream's bug turned these into one-character boards.
        assert!(map.images_for_board("U").is_empty());
    }

    #[test]
    fn forward_lookups_give_label_and_boards() {
        let map = ImageMap::openwrt();
        assert_eq!(
            map.label(C7_V2_ATH79),
            Some("TP-Link Archer C7 v2 (OpenWrt 19.07 and later)")
        );
        assert_eq!(
            map.boards_for_image(C7_V2_ATH79).unwrap(),
            [C7_V2, "TP-Link Archer C7 v3"]
        );
        assert!(map.lists_board(C7_V2_ATH79, C7_V2));
        assert!(!map.lists_board(C7_V2_ATH79, "TP-Link Archer C7"));
        assert_eq!(map.entry("no-such-image.bin"), None);
    }

    #[test]
    fn board_claimed_twice_gives_both_candidates_last_entry_first() {
        let map = ImageMap::openwrt();
        assert_eq!(
            types(&map.images_for_board(C7_V2)),
            [C7_V2_ATH79, C7_V2_AR71XX]
        );
        assert!(map.images_for_board("No Such Router").is_empty());
    }

    #[test]
    fn target_moves_matching_candidates_first() {
        let map = ImageMap::openwrt();
        assert_eq!(
            types(&map.images_for_board_on_target(C7_V2, "ar71xx/generic")),
            [C7_V2_AR71XX, C7_V2_ATH79]
        );
        assert_eq!(
            types(&map.images_for_board_on_target(C7_V2, "ath79/generic")),
            [C7_V2_ATH79, C7_V2_AR71XX]
        );
        assert_eq!(
            types(&map.images_for_board_on_target(C7_V2, "ramips/mt7621")),
            [C7_V2_ATH79, C7_V2_AR71XX]
        );
        assert_eq!(
            types(&map.images_for_board_on_target(C7_V2, "")),
            [C7_V2_ATH79, C7_V2_AR71XX]
        );
    }

    #[test]
    fn target_match_prefers_the_whole_target() {
        assert_eq!(target_match("ath79-generic-x.bin", "ath79/generic"), 2);
        assert_eq!(target_match("ath79-nand-x.bin", "ath79/generic"), 1);
        assert_eq!(target_match("ath79-nand-x.bin", "ath79"), 2);
        assert_eq!(target_match("ath79x-nand-x.bin", "ath79"), 0);
        assert_eq!(target_match("ar71xx-generic-x.bin", "ath79/generic"), 0);
    }

    #[test]
    fn custom_images_come_first_and_add_boards() {
        let map = ImageMap::from_config(&config(vec![CustomImage::new(
            "customimage-squashfs-sysupgrade.bin",
            "Custom WAP-1200",
            ["CWAP1200"],
        )]))
        .unwrap();
        assert_eq!(map.len(), 93);
        let first = map.entries().next().unwrap();
        assert_eq!(first.image_type(), "customimage-squashfs-sysupgrade.bin");
        assert_eq!(
            first.origin(),
            EntryOrigin::Custom {
                replaces_built_in: false
            }
        );
        assert_eq!(
            types(&map.images_for_board("CWAP1200")),
            ["customimage-squashfs-sysupgrade.bin"]
        );
    }

    #[test]
    fn custom_image_clashing_with_a_built_in_type_wins() {
        let map = ImageMap::from_config(&config(vec![CustomImage::new(
            C7_V2_ATH79,
            "Archer C7 v2 (our build)",
            [C7_V2, "TP-Link Archer C7 v2 (EU)"],
        )]))
        .unwrap();
        // Replaced, not added.
        assert_eq!(map.len(), 92);
        let entry = map.entry(C7_V2_ATH79).unwrap();
        assert_eq!(entry.label(), "Archer C7 v2 (our build)");
        assert_eq!(entry.boards(), [C7_V2, "TP-Link Archer C7 v2 (EU)"]);
        assert_eq!(
            entry.origin(),
            EntryOrigin::Custom {
                replaces_built_in: true
            }
        );
        // It keeps the custom position (first), as upstream does, but with the operator's value.
        assert_eq!(map.entries().next().unwrap(), entry);
        assert_eq!(
            map.entries()
                .filter(|entry| entry.image_type() == C7_V2_ATH79)
                .count(),
            1
        );
        assert_eq!(
            types(&map.images_for_board("TP-Link Archer C7 v2 (EU)")),
            [C7_V2_ATH79]
        );
        // The built-in table itself is unchanged.
        assert_eq!(
            ImageMap::openwrt().label(C7_V2_ATH79),
            Some("TP-Link Archer C7 v2 (OpenWrt 19.07 and later)")
        );
    }

    #[test]
    fn custom_image_is_preferred_over_built_ins_for_a_shared_board() {
        let map = ImageMap::from_config(&config(vec![
            CustomImage::new("first-custom.bin", "First", [C7_V2]),
            CustomImage::new("second-custom.bin", "Second", [C7_V2]),
        ]))
        .unwrap();
        assert_eq!(
            types(&map.images_for_board(C7_V2)),
            [
                "second-custom.bin",
                "first-custom.bin",
                C7_V2_ATH79,
                C7_V2_AR71XX
            ]
        );
    }

    #[test]
    fn invalid_custom_images_are_clear_errors() {
        let cases = [
            (
                CustomImage::new("x.bin", "X", Vec::<String>::new()),
                "image type `x.bin` lists no boards",
            ),
            (
                CustomImage::new("  ", "X", ["X"]),
                "image type #0 has an empty name",
            ),
            (
                CustomImage::new("x.bin", "", ["X"]),
                "image type `x.bin` has an empty label",
            ),
            (
                CustomImage::new("x.bin", "X", ["X", " "]),
                "image type `x.bin` lists an empty board name",
            ),
            (
                CustomImage::new("x.bin", "X", ["X", "X"]),
                "image type `x.bin` lists board `X` twice",
            ),
        ];
        for (custom_image, message) in cases {
            let error = ImageMap::from_config(&config(vec![custom_image])).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn the_same_custom_image_type_twice_is_an_error() {
        let error = ImageMap::from_config(&config(vec![
            CustomImage::new("x.bin", "X", ["X"]),
            CustomImage::new("x.bin", "Y", ["Y"]),
        ]))
        .unwrap_err();
        assert!(
            matches!(error, BoardsError::DuplicateImageType { image_type } if image_type == "x.bin")
        );
    }

    #[test]
    fn table_with_a_duplicate_key_is_rejected() {
        let json = r#"{"a.bin": {"label": "A", "boards": ["A"]},
                       "a.bin": {"label": "B", "boards": ["B"]}}"#;
        assert!(matches!(
            ImageMap::from_json(json),
            Err(BoardsError::DuplicateImageType { .. })
        ));
    }

    #[test]
    fn table_of_the_wrong_shape_is_rejected() {
        for json in [
            "[]",
            r#"{"a.bin": {"label": "A"}}"#,
            r#"{"a.bin": {"label": "A", "boards": "A"}}"#,
            r#"{"a.bin": {"label": "A", "boards": ["A"], "extra": 1}}"#,
        ] {
            assert!(
                matches!(
                    ImageMap::from_json(json),
                    Err(BoardsError::InvalidMapData { .. })
                ),
                "{json}"
            );
        }
    }

    #[test]
    fn image_type_is_derived_by_dropping_the_first_piece() {
        assert_eq!(
            image_type_from_file_name("openwrt-ath79-generic-x-squashfs-sysupgrade.bin"),
            "ath79-generic-x-squashfs-sysupgrade.bin"
        );
        assert_eq!(image_type_from_file_name("a-b"), "b");
        assert_eq!(image_type_from_file_name("firmware.bin"), "");
        assert_eq!(image_type_from_file_name(""), "");
    }

    #[test]
    fn known_file_names_resolve_from_the_map() {
        let map = ImageMap::openwrt();
        let resolved = map
            .resolve_image_type(&format!("openwrt-{C7_V2_ATH79}"), None)
            .unwrap();
        assert_eq!(resolved.image_type, C7_V2_ATH79);
        assert_eq!(
            resolved.label,
            "TP-Link Archer C7 v2 (OpenWrt 19.07 and later)"
        );
        assert_eq!(resolved.boards, [C7_V2, "TP-Link Archer C7 v3"]);
        assert_eq!(resolved.source, TypeSource::ImageMap);

        let by_type_name = map.resolve_image_type(C7_V2_ATH79, None).unwrap();
        assert_eq!(by_type_name.image_type, C7_V2_ATH79);
    }

    #[test]
    fn unknown_file_name_without_metadata_is_an_error() {
        let error = ImageMap::openwrt()
            .resolve_image_type("openwrt-foo-bar.bin", None)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "could not find boards for image `openwrt-foo-bar.bin` (image type `foo-bar.bin`): it \
             is not in the image map and has no metadata naming supported devices"
        );
    }

    #[test]
    fn unknown_file_name_with_supported_devices_becomes_its_own_type() {
        let metadata = ImageMetadata::from_json(
            br#"{"supported_devices": ["acme,ap-1", "ap-1"],
                 "version": {"board": "acme_ap-1"}}"#,
        )
        .unwrap();
        let resolved = ImageMap::openwrt()
            .resolve_image_type("openwrt-acme-ap-1-squashfs-sysupgrade.bin", Some(&metadata))
            .unwrap();
        assert_eq!(resolved.image_type, "acme-ap-1-squashfs-sysupgrade.bin");
        assert_eq!(resolved.label, "acme_ap-1");
        assert_eq!(resolved.boards, ["acme,ap-1", "ap-1"]);
        assert_eq!(resolved.source, TypeSource::ImageMetadata);

        let without_board =
            ImageMetadata::from_json(br#"{"supported_devices": ["acme,ap-1", "ap-1"]}"#).unwrap();
        let resolved = ImageMap::openwrt()
            .resolve_image_type("firmware.bin", Some(&without_board))
            .unwrap();
        assert_eq!(resolved.image_type, "firmware.bin");
        assert_eq!(resolved.label, "acme,ap-1, ap-1");
    }

    #[test]
    fn metadata_without_the_active_device_list_does_not_name_a_type() {
        // compat_version 2.0 makes OpenWrt read new_supported_devices, which is missing here.
        let metadata = ImageMetadata::from_json(
            br#"{"compat_version": "2.0", "supported_devices": ["acme,ap-1"]}"#,
        )
        .unwrap();
        let result = ImageMap::openwrt().resolve_image_type("openwrt-acme.bin", Some(&metadata));
        assert!(matches!(result, Err(BoardsError::UnknownImageType { .. })));

        let empty = ImageMetadata::from_json(br#"{"supported_devices": []}"#).unwrap();
        let result = ImageMap::openwrt().resolve_image_type("openwrt-acme.bin", Some(&empty));
        assert!(matches!(result, Err(BoardsError::UnknownImageType { .. })));
    }
}

//! The built-in table, checked against the data file it is parsed from.

use std::collections::HashSet;

use flashfleet_boards::ImageMap;
use serde_json::Value;

const DATA: &str = include_str!("../../data/openwrt_images.json");

#[test]
fn every_entry_of_the_data_file_is_in_the_map_with_its_label_and_boards() {
    let Value::Object(table) = serde_json::from_str::<Value>(DATA).unwrap() else {
        panic!("the data file is not an object");
    };
    let map = ImageMap::openwrt();
    // A duplicate key would make the generic parse hold fewer entries than the map.
    assert_eq!(table.len(), 92);
    assert_eq!(map.len(), table.len());
    for (image_type, value) in &table {
        let entry = map.entry(image_type).unwrap();
        assert_eq!(entry.label(), value["label"].as_str().unwrap());
        let boards: Vec<&str> = value["boards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|board| board.as_str().unwrap())
            .collect();
        assert_eq!(entry.boards(), boards.as_slice());
    }
}

#[test]
fn every_board_has_a_non_empty_list_and_a_way_back() {
    let map = ImageMap::openwrt();
    let mut distinct = HashSet::new();
    for entry in map.entries() {
        assert!(!entry.boards().is_empty(), "{}", entry.image_type());
        assert!(!entry.label().trim().is_empty(), "{}", entry.image_type());
        for board in entry.boards() {
            distinct.insert(board.as_str());
            assert!(
                map.images_for_board(board)
                    .iter()
                    .any(|candidate| candidate.image_type() == entry.image_type()),
                "{board}"
            );
        }
    }
    assert_eq!(distinct.len(), 104);
}

#[test]
fn first_candidate_is_the_one_upstreams_reverse_map_keeps() {
    // Upstream fills its reverse map in table order, so the last entry listing a board wins.
    let map = ImageMap::openwrt();
    for board in map.boards() {
        let last_listing = map
            .entries()
            .filter(|entry| entry.lists_board(board))
            .last()
            .unwrap();
        assert_eq!(map.images_for_board(board)[0], last_listing, "{board}");
    }
}

#[test]
fn data_file_keeps_upstream_order() {
    let map = ImageMap::openwrt();
    let types: Vec<&str> = map.entries().map(|entry| entry.image_type()).collect();
    let position = |image_type: &str| types.iter().position(|t| *t == image_type).unwrap();
    // Both Archer C7 v2 entries exist; ar71xx comes first in upstream's table.
    assert!(
        position("ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin")
            < position("ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin")
    );
    // The keys appear in the map in the same order as in the file.
    let mut cursor = 0;
    for image_type in &types {
        let found = DATA[cursor..]
            .find(&format!("\"{image_type}\": {{"))
            .unwrap_or_else(|| panic!("{image_type} out of order"));
        cursor += found + 1;
    }
}

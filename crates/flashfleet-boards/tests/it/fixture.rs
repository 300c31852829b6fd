//! The committed fixture `tests/fixtures/archer-c7-v2-sysupgrade.bin` was written by
//! `tests/fixtures/make_fixture.py` (Python's struct and zlib, not our code). The expected values
//! below were read off that script's output and a hex dump, not produced by the Rust parser.

use std::path::PathBuf;

use flashfleet_boards::{
    ChunkKind, DeviceIdentity, ImageMap, SysupgradeOptions, TypeSource, Verdict,
    check_compatibility, fwtool, inspect_file,
};

const FIXTURE_LEN: u64 = 398;
const METADATA_CHUNK_AT: u64 = 64;
const METADATA_CHUNK_SIZE: u32 = 286;
const METADATA_CRC: u32 = 0x87ba_ae86;
const SIGNATURE_CHUNK_AT: u64 = 350;
const SIGNATURE_CHUNK_SIZE: u32 = 48;
const SIGNATURE_CRC: u32 = 0xcfd8_c907;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archer-c7-v2-sysupgrade.bin")
}

#[test]
fn fixture_bytes_are_the_hand_checked_ones() {
    let bytes = std::fs::read(fixture_path()).unwrap();
    assert_eq!(bytes.len() as u64, FIXTURE_LEN);
    assert_eq!(&bytes[..4], [0x27, 0x05, 0x19, 0x56]);
    // Metadata trailer: "FWx0", crc, type 1, pad, size 0x11e.
    assert_eq!(
        &bytes[334..350],
        [
            0x46, 0x57, 0x78, 0x30, 0x87, 0xba, 0xae, 0x86, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x1e
        ]
    );
    // Signature trailer: "FWx0", crc, type 0, pad, size 0x30.
    assert_eq!(
        &bytes[382..398],
        [
            0x46, 0x57, 0x78, 0x30, 0xcf, 0xd8, 0xc9, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x30
        ]
    );
    // Each stored CRC is zlib's CRC-32 of everything before its trailer, without the final XOR.
    assert_eq!(fwtool::fwtool_crc32(&bytes[..334]), METADATA_CRC);
    assert_eq!(fwtool::fwtool_crc32(&bytes[..382]), SIGNATURE_CRC);
}

#[test]
fn fixture_parses_to_every_expected_field() {
    let inspection = inspect_file(fixture_path()).unwrap();
    assert_eq!(inspection.image_len, FIXTURE_LEN);
    assert!(inspection.signature_present);

    assert_eq!(inspection.chunks.len(), 2);
    let signature = &inspection.chunks[0];
    assert_eq!(signature.kind, ChunkKind::Signature);
    assert_eq!(signature.offset, SIGNATURE_CHUNK_AT);
    assert_eq!(signature.size, SIGNATURE_CHUNK_SIZE);
    assert_eq!(signature.crc32, SIGNATURE_CRC);
    let metadata_chunk = &inspection.chunks[1];
    assert_eq!(metadata_chunk.kind, ChunkKind::Metadata);
    assert_eq!(metadata_chunk.offset, METADATA_CHUNK_AT);
    assert_eq!(metadata_chunk.size, METADATA_CHUNK_SIZE);
    assert_eq!(metadata_chunk.crc32, METADATA_CRC);

    let metadata = inspection.metadata.unwrap();
    assert_eq!(metadata.metadata_version.as_deref(), Some("1.1"));
    assert_eq!(metadata.compat_version.as_deref(), Some("1.0"));
    assert_eq!(metadata.compat_message, None);
    assert_eq!(
        metadata.supported_devices.as_deref().unwrap(),
        ["tplink,archer-c7-v2", "archer-c7-v2"]
    );
    assert_eq!(metadata.new_supported_devices, None);
    assert_eq!(metadata.version.dist.as_deref(), Some("OpenWrt"));
    assert_eq!(metadata.version.version.as_deref(), Some("23.05.3"));
    assert_eq!(
        metadata.version.revision.as_deref(),
        Some("r23809-234f1a2efa")
    );
    assert_eq!(metadata.version.target.as_deref(), Some("ath79/generic"));
    assert_eq!(
        metadata.version.board.as_deref(),
        Some("tplink_archer-c7-v2")
    );
    assert_eq!(metadata.raw_json().len(), 262);
    assert!(
        metadata
            .raw_json()
            .starts_with(r#"{ "metadata_version": "1.1""#)
    );
}

#[test]
fn fixture_is_compatible_with_an_archer_c7_v2_only() {
    let metadata = inspect_file(fixture_path()).unwrap().metadata.unwrap();
    let map = ImageMap::openwrt();
    let file_name = "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin";
    // Upstream's rule drops only "openwrt", so this release-stamped name is not a map key; the
    // metadata makes it an image type of its own.
    let resolved = map.resolve_image_type(file_name, Some(&metadata)).unwrap();
    assert_eq!(resolved.source, TypeSource::ImageMetadata);
    assert_eq!(resolved.label, "tplink_archer-c7-v2");

    let archer = DeviceIdentity {
        board_name: "tplink,archer-c7-v2",
        model: "TP-Link Archer C7 v2",
        compat_version: Some("1.0"),
    };
    let verdict = check_compatibility(
        map,
        &resolved.image_type,
        Some(&metadata),
        &archer,
        SysupgradeOptions::default(),
    );
    assert_eq!(verdict, Verdict::Compatible);

    let other = DeviceIdentity {
        board_name: "tplink,archer-c7-v5",
        ..archer
    };
    let verdict = check_compatibility(
        map,
        &resolved.image_type,
        Some(&metadata),
        &other,
        SysupgradeOptions::default(),
    );
    assert!(matches!(verdict, Verdict::Incompatible { .. }));
}

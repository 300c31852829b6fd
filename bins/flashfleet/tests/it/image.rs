//! `flashfleet image inspect` and `flashfleet image-types`.

use flashfleet_boards::test_image::TestImage;

use crate::support::Workspace;

const CUSTOM_IMAGES: &str = "[[custom_images]]\nimage_type = \"customimage-squashfs-sysupgrade.bin\"\n\
                             label = \"Custom WAP-1200\"\nboards = [\"CWAP1200\"]\n";

#[test]
fn image_types_lists_the_map_in_order_with_custom_images_first() {
    let workspace = Workspace::new();
    workspace.write("flashfleet.toml", CUSTOM_IMAGES);
    let run = workspace.run_ok(&["image-types", "--json"]);
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(map.len(), 93);
    assert_eq!(
        map["customimage-squashfs-sysupgrade.bin"],
        serde_json::json!({"label": "Custom WAP-1200", "boards": ["CWAP1200"]})
    );
    let custom = run
        .stdout
        .find("customimage-squashfs-sysupgrade.bin")
        .unwrap();
    let built_in = run
        .stdout
        .find("ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin")
        .unwrap();
    assert!(custom < built_in, "custom images come first");

    let run = workspace.run_ok(&["image-types"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("IMAGE TYPE"), "{}", lines[0]);
    assert!(
        lines[1].starts_with("customimage-squashfs-sysupgrade.bin"),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with("CWAP1200"), "{}", lines[1]);
    assert_eq!(lines.len(), 94);
}

#[test]
fn inspect_reports_metadata_image_type_and_compatibility() {
    let workspace = Workspace::new();
    let image = TestImage::builder()
        .payload_len(8192)
        .supported_devices(["tplink,archer-c7-v2"])
        .build();
    let file = workspace.write(
        "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
        image.to_bytes(),
    );
    let file = file.to_str().unwrap();

    let run = workspace.run_ok(&["image", "inspect", file, "--board", "tplink,archer-c7-v2"]);
    run.stdout_has("metadata: OpenWrt 23.05.3");
    run.stdout_has("supported_devices: tplink,archer-c7-v2");
    run.stdout_has(
        "image type: ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin \
         \"TP-Link Archer C7 v2 (OpenWrt 19.07 and later)\" (from the image map",
    );
    run.stdout_has("compatibility: the image is compatible with the device");

    let run = workspace.run_ok(&[
        "image",
        "inspect",
        file,
        "--board",
        "glinet,gl-mt300n-v2",
        "--json",
    ]);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["size"], image.len());
    assert_eq!(report["image_type"]["source"], "image_map");
    assert_eq!(
        report["metadata"]["supported_devices"][0],
        "tplink,archer-c7-v2"
    );
    assert_eq!(report["compatibility"]["verdict"], "incompatible");
    assert_eq!(
        report["compatibility"]["reason"]["kind"],
        "board_not_supported"
    );
}

#[test]
fn inspect_goes_through_every_file_and_fails_for_unreadable_ones() {
    let workspace = Workspace::new();
    let plain = workspace.write("customimage-squashfs-sysupgrade.bin", vec![0_u8; 1024]);
    let unknown = workspace.write("mystery.bin", vec![1_u8; 10]);
    workspace.write("flashfleet.toml", CUSTOM_IMAGES);
    let run = workspace.run_err(&[
        "image",
        "inspect",
        plain.to_str().unwrap(),
        "missing.bin",
        unknown.to_str().unwrap(),
        "--model",
        "CWAP1200",
    ]);
    run.stdout_has("metadata: none");
    run.stdout_has("\"Custom WAP-1200\" (from the image map");
    run.stdout_has(
        "compatibility: the image has no metadata; the image map lists the device model",
    );
    run.stdout_has("missing.bin\n  error: could not read the image");
    run.stdout_has("image type: unknown");
    run.stderr_has("[2/3 files] inspecting missing.bin");
    run.stderr_has("1 of 3 files could not be inspected");
}

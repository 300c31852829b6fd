//! An integrator adds its own boards to the built-in OpenWrt image map, then inspects an uploaded
//! image and checks it against a device, the way the API does at upload time.
//!
//! Run with `cargo run --example custom_board_map [IMAGE]`. Without an argument it inspects the
//! fixture image shipped with `flashfleet-boards`.

use std::path::PathBuf;

use flashfleet::boards::{
    BoardMapConfig, DeviceIdentity, ImageMap, SysupgradeOptions, Verdict, check_compatibility,
    inspect_file,
};

/// What the operator would write in the server's configuration file.
const CONFIG: &str = r#"{
    "custom_images": [
        {
            "image_type": "customimage-squashfs-sysupgrade.bin",
            "label": "Custom WAP-1200",
            "boards": ["CWAP1200"]
        },
        {
            "image_type": "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
            "label": "TP-Link Archer C7 v2 (our hardened build)",
            "boards": ["TP-Link Archer C7 v2"]
        }
    ]
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: BoardMapConfig = serde_json::from_str(CONFIG)?;
    let image_map = ImageMap::from_config(&config)?;
    eprintln!("image map: {} image types", image_map.len());

    // Board to image types: every candidate, preferred first. Knowing that the device runs the
    // ath79 target settles the choice between the ath79 and ar71xx builds.
    for entry in image_map.images_for_board_on_target("TP-Link Archer C7 v2", "ath79/generic") {
        eprintln!("  candidate: {} ({})", entry.image_type(), entry.label());
    }

    let path = std::env::args_os().nth(1).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("crates/flashfleet-boards/tests/fixtures/archer-c7-v2-sysupgrade.bin")
        },
        PathBuf::from,
    );
    let inspection = inspect_file(&path)?;
    let metadata = inspection.metadata.as_ref();
    eprintln!(
        "{}: {} bytes, metadata: {}, signature: {}",
        path.display(),
        inspection.image_len,
        metadata.is_some(),
        inspection.signature_present
    );

    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let resolved = image_map.resolve_image_type(file_name, metadata)?;
    eprintln!(
        "image type: {} ({}), from {:?}",
        resolved.image_type, resolved.label, resolved.source
    );

    let device = DeviceIdentity {
        board_name: "tplink,archer-c7-v2",
        model: "TP-Link Archer C7 v2",
        compat_version: None,
    };
    let verdict = check_compatibility(
        &image_map,
        &resolved.image_type,
        metadata,
        &device,
        SysupgradeOptions::default(),
    );
    eprintln!("verdict: {verdict}");
    if let Verdict::Incompatible { .. } = verdict {
        return Err(verdict.to_string().into());
    }
    Ok(())
}

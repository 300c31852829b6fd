//! `sysupgrade --test`: images checked by their metadata, with OpenWrt's messages and exit
//! statuses.

use flashfleet_boards::test_image::TestImage;

use crate::support::{BOARD, device, fleet, image_for_board, run, upload};

const PATH: &str = "/tmp/image.bin";

/// Uploads `image` to a fresh device (with `compat_version`) and runs `command`.
async fn check(
    image: TestImage,
    compat_version: Option<&str>,
    command: &str,
) -> crate::support::Answer {
    let mut spec = device();
    spec.compat_version = compat_version.map(str::to_owned);
    let fleet = fleet(vec![spec]).await;
    upload(&fleet, 0, PATH, image).await;
    let answer = run(&fleet, 0, command).await;
    assert_eq!(fleet.device(0).flash_count(), 0, "--test never flashes");
    fleet.shutdown().await;
    answer
}

#[tokio::test]
async fn a_valid_image_passes_the_test() {
    let answer = check(
        image_for_board("24.10.0").build(),
        None,
        "/sbin/sysupgrade --test /tmp/image.bin",
    )
    .await;
    assert_eq!(answer.exit_status, 0, "{answer:?}");
    assert_eq!(answer.stderr, "");
    // A signed image passes too: signatures are not checked without ucert.
    let signed = image_for_board("24.10.0")
        .signature(b"ucert".to_vec())
        .build();
    let answer = check(signed, None, "/sbin/sysupgrade --test /tmp/image.bin").await;
    assert_eq!(answer.exit_status, 0, "{answer:?}");
}

#[tokio::test]
async fn an_image_for_another_board_fails_the_test() {
    let image = TestImage::builder()
        .supported_devices(["glinet,gl-mt300n-v2", "gl-mt300n-v2"])
        .build();
    let answer = check(
        image.clone(),
        None,
        "/sbin/sysupgrade --test /tmp/image.bin",
    )
    .await;
    assert_eq!(answer.exit_status, 1);
    assert!(
        answer.stderr.contains(&format!(
            "upgrade: Device {BOARD} not supported by this image\n"
        )),
        "{answer:?}"
    );
    assert!(
        answer
            .stderr
            .contains("upgrade: Supported devices: glinet,gl-mt300n-v2 gl-mt300n-v2\n")
    );
    assert!(answer.stderr.ends_with("Image check failed.\n"));

    let forced = check(image, None, "/sbin/sysupgrade -T -F /tmp/image.bin").await;
    assert_eq!(forced.exit_status, 0);
    assert!(
        forced
            .stderr
            .contains("Image check failed but --force given - will update anyway!\n")
    );
}

#[tokio::test]
async fn an_image_without_metadata_fails_unless_forced() {
    let image = TestImage::builder().without_metadata().build();
    let answer = check(
        image.clone(),
        None,
        "/sbin/sysupgrade --test /tmp/image.bin",
    )
    .await;
    assert_eq!(answer.exit_status, 1);
    assert!(
        answer
            .stderr
            .contains("upgrade: Image metadata not present\n"),
        "{answer:?}"
    );
    assert!(answer.stderr.contains(
        "upgrade: Use sysupgrade -F to override this check when downgrading or flashing to vendor firmware\n"
    ));
    assert!(answer.stderr.ends_with("Image check failed.\n"));

    let forced = check(image, None, "/sbin/sysupgrade --test -F /tmp/image.bin").await;
    assert_eq!(forced.exit_status, 0);
    assert!(!forced.stderr.contains("Use sysupgrade -F"));
}

#[tokio::test]
async fn a_corrupted_byte_breaks_the_metadata_crc() {
    let mut spec = device();
    spec.compat_version = None;
    let fleet = fleet(vec![spec]).await;
    let mut bytes = image_for_board("24.10.0").build().to_bytes();
    bytes[1000] ^= 0x55;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    crate::support::blocking(move || {
        use std::io::Write as _;
        let session =
            crate::support::connect(address, &credentials, crate::support::Login::Password)
                .expect("login works");
        let mut remote = session
            .scp_send(std::path::Path::new(PATH), 0o644, bytes.len() as u64, None)
            .expect("scp starts");
        remote.write_all(&bytes).expect("write");
        remote.send_eof().expect("eof");
        remote.wait_eof().expect("eof back");
        remote.wait_close().expect("close");
    })
    .await;
    assert!(
        !fleet
            .device(0)
            .uploaded(PATH)
            .expect("stored")
            .metadata_present
    );
    let answer = run(&fleet, 0, "/sbin/sysupgrade --test /tmp/image.bin").await;
    assert_eq!(answer.exit_status, 1);
    assert!(
        answer.stderr.contains("Image metadata not present"),
        "{answer:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_major_compat_version_change_fails_even_without_keeping_config() {
    let image = image_for_board("24.10.0")
        .compat_version("2.0")
        .new_supported_devices([BOARD])
        .compat_message("Partition layout changed")
        .build();
    for command in [
        "/sbin/sysupgrade --test /tmp/image.bin",
        "/sbin/sysupgrade -T -n /tmp/image.bin",
    ] {
        let answer = check(image.clone(), None, command).await;
        assert_eq!(answer.exit_status, 1, "{command}");
        assert!(answer.stderr.contains(
            "upgrade: The device is supported, but this image is incompatible for sysupgrade based on the image version (1.0->2.0).\n"
        ), "{answer:?}");
        assert!(
            answer
                .stderr
                .contains("upgrade: Partition layout changed\n")
        );
    }
}

#[tokio::test]
async fn a_minor_compat_version_change_needs_dropping_the_config() {
    let image = image_for_board("24.10.0")
        .compat_version("1.1")
        .new_supported_devices([BOARD])
        .build();
    let kept = check(
        image.clone(),
        None,
        "/sbin/sysupgrade --test /tmp/image.bin",
    )
    .await;
    assert_eq!(kept.exit_status, 1);
    assert!(kept.stderr.contains(
        "upgrade: The device is supported, but the config is incompatible to the new image (1.0->1.1). Please upgrade without keeping config (sysupgrade -n).\n"
    ), "{kept:?}");
    let dropped = check(
        image.clone(),
        None,
        "/sbin/sysupgrade --test -n /tmp/image.bin",
    )
    .await;
    assert_eq!(dropped.exit_status, 0, "{dropped:?}");
    let ignored = check(
        image.clone(),
        None,
        "/sbin/sysupgrade --test --ignore-minor-compat-version /tmp/image.bin",
    )
    .await;
    assert_eq!(ignored.exit_status, 0, "{ignored:?}");
    let same = check(image, Some("1.1"), "/sbin/sysupgrade --test /tmp/image.bin").await;
    assert_eq!(same.exit_status, 0, "{same:?}");
}

#[tokio::test]
async fn bad_invocations_fail_as_sysupgrade_does() {
    let fleet = fleet(vec![device()]).await;
    let answer = run(&fleet, 0, "/sbin/sysupgrade --test /tmp/missing.bin").await;
    assert_eq!(
        (answer.exit_status, answer.stderr.as_str()),
        (1, "Image file not found.\n")
    );
    let answer = run(&fleet, 0, "/sbin/sysupgrade -x /tmp/missing.bin").await;
    assert_eq!(
        (answer.exit_status, answer.stderr.as_str()),
        (1, "Invalid option: -x\n")
    );
    let answer = run(&fleet, 0, "/sbin/sysupgrade").await;
    assert_eq!(answer.exit_status, 1);
    assert!(answer.stderr.starts_with("Usage: /sbin/sysupgrade"));
    let answer = run(&fleet, 0, "/sbin/sysupgrade --help").await;
    assert_eq!(answer.exit_status, 0);
    assert_eq!(fleet.device(0).flash_count(), 0);
    fleet.shutdown().await;
}

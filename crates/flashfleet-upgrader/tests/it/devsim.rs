//! Every branch of the OpenWrt upgrader against simulated devices (flashfleet-devsim) over real
//! SSH.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use flashfleet_boards::test_image::TestImage;
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use flashfleet_models::UpgradePhase;
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use flashfleet_upgrader::{FlashRecord, UpgradeError, UpgradeOutcome, Upgrader};
use serde_json::json;

use crate::support::{
    Auth, GL_MT300N_V2_BOARD, GL_MT300N_V2_MODEL, GL_MT300N_V2_TYPE, ImageFile, RecordingReporter,
    devsim_context, fast_settings,
};

const IMAGE_NAME: &str =
    "openwrt-23.05.3-ramips-mt76x8-glinet_gl-mt300n-v2-squashfs-sysupgrade.bin";

async fn fleet_of(spec: DeviceSpec) -> Fleet {
    Fleet::start(FleetConfig {
        devices: vec![spec],
        addressing: Addressing::Ports {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
        },
        reboot: RebootTiming {
            close_after: Duration::from_millis(50),
            down_for: Duration::from_millis(300),
        },
        credentials: ClientCredentials::generate(),
    })
    .await
    .unwrap()
}

fn gl_mt300n_v2() -> DeviceSpec {
    DeviceSpec::openwrt(uuid::Uuid::new_v4(), GL_MT300N_V2_BOARD, GL_MT300N_V2_MODEL)
}

/// The default test image: OpenWrt 23.05.3 for the GL-MT300N-V2, with metadata.
fn default_image() -> ImageFile {
    ImageFile::write(
        &TestImage::builder().payload_len(256 * 1024).build(),
        IMAGE_NAME,
    )
}

fn upgrader() -> OpenWrtUpgrader {
    OpenWrtUpgrader::new(fast_settings())
}

fn context_for(
    fleet: &Fleet,
    auth: Auth,
    image: &ImageFile,
    with_metadata: bool,
    options: serde_json::Value,
    reporter: &Arc<RecordingReporter>,
) -> flashfleet_upgrader::UpgradeContext {
    devsim_context(
        fleet.device(0),
        fleet.credentials(),
        auth,
        image.upgrade_image(GL_MT300N_V2_TYPE, with_metadata),
        options,
        Arc::clone(reporter),
    )
}

fn remote_path() -> String {
    format!("/tmp/{IMAGE_NAME}")
}

/// The commands up to (not including) the memory commands, which every upgrade sends first.
fn first_commands() -> Vec<String> {
    [
        "uci get openwisp.http.uuid",
        "test -f /etc/openwisp/firmware_checksum",
        "cat /tmp/sysinfo/board_name",
        "cat /tmp/sysinfo/model",
        "uci -q get system.@system[0].compat_version",
        "cat /etc/openwrt_release",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn memory_commands() -> Vec<String> {
    [
        "rm -rf /tmp/opkg-lists/",
        "sync && echo 3 > /proc/sys/vm/drop_caches",
        "cat /proc/meminfo | grep MemAvailable",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn service_commands(action: &str) -> Vec<String> {
    let mut commands: Vec<String> = flashfleet_devsim::UPSTREAM_SERVICES
        .iter()
        .map(|service| format!("test -f /etc/init.d/{service} && /etc/init.d/{service} {action}"))
        .collect();
    let wifi = if action == "stop" { "down" } else { "up" };
    commands.push(format!("test -f /sbin/wifi && /sbin/wifi {wifi}"));
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_upgrade_sends_upstreams_commands_and_reports_phases_in_order() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    reporter.watch(device);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let boot_id = device.boot_id();

    let outcome = upgrader().upgrade(&context).await.unwrap();

    let UpgradeOutcome::Upgraded {
        release: Some(release),
    } = outcome
    else {
        panic!("unexpected outcome {outcome:?}");
    };
    assert_eq!(
        (
            release.version.as_str(),
            release.revision.as_str(),
            release.board_name.as_str()
        ),
        ("23.05.3", "r23809-234f1a2efa", GL_MT300N_V2_BOARD)
    );
    assert_eq!(device.release().version, "23.05.3");
    assert_eq!(device.flash_count(), 1);
    assert_eq!(
        device.file("/etc/openwisp/firmware_checksum").unwrap(),
        format!("{}\n", image.sha256)
    );

    let path = remote_path();
    let mut expected = first_commands();
    expected.extend(memory_commands());
    expected.extend([
        format!("scp -t '{path}'"),
        format!("/sbin/sysupgrade --test {path}"),
        "cat /proc/sys/kernel/random/boot_id".to_owned(),
        "rm /etc/openwisp/checksum 2> /dev/null".to_owned(),
        format!("/sbin/sysupgrade -v -c {path}"),
        "cat /etc/openwrt_release".to_owned(),
        "cat /tmp/sysinfo/board_name".to_owned(),
        "mkdir -p /etc/openwisp".to_owned(),
        format!("echo {} > /etc/openwisp/firmware_checksum", image.sha256),
    ]);
    let commands = device.commands();
    assert_eq!(commands, expected);
    // `Flashing` was persisted before the flash command reached the device.
    let flash_index = commands
        .iter()
        .position(|command| command.starts_with("/sbin/sysupgrade -v"))
        .unwrap();
    assert!(reporter.commands_before_flashing() <= flash_index);
    assert!(reporter.commands_before_flashing() > 0);
    // With it, the boot id read just before; the device booted again since.
    assert_eq!(reporter.flash_boot_ids(), [Some(boot_id.clone())]);
    assert_ne!(device.boot_id(), boot_id);

    use UpgradePhase::*;
    assert_eq!(
        reporter.phases(),
        [
            Connecting,
            VerifyingIdentity,
            ComparingChecksum,
            CheckingMemory,
            Uploading,
            TestingImage,
            Flashing,
            WaitingForReboot,
            Reconnecting,
            VerifyingVersion,
            WritingChecksum
        ]
    );
    let lines = reporter.lines();
    let retries = lines
        .iter()
        .filter(|line| line.starts_with("Device not reachable yet, ("))
        .count();
    let mut expected_lines: Vec<String> = [
        "Connection successful, starting upgrade...",
        "Device identity verified successfully",
        "Image checksum file not found, proceeding with the upload of the new image...",
        "Sysupgrade test passed successfully, proceeding with the upgrade operation...",
        "Upgrade operation in progress...",
    ]
    .map(str::to_owned)
    .to_vec();
    // What the killed sysupgrade managed to print, if anything reached us.
    let flash_output = lines
        .iter()
        .skip(expected_lines.len())
        .take_while(|line| !line.starts_with("SSH connection closed"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(flash_output.len() <= 1, "{flash_output:?}");
    expected_lines.extend(flash_output);
    expected_lines.push(
        "SSH connection closed, will wait 0.1 seconds before attempting to reconnect...".to_owned(),
    );
    for attempt in 1..=retries {
        expected_lines.push(format!(
            "Trying to reconnect to device at 127.0.0.1 (attempt n.{attempt})..."
        ));
        expected_lines.push(lines[expected_lines.len()].clone());
        assert!(lines[expected_lines.len() - 1].ends_with("retrying in 0.1 seconds..."));
    }
    expected_lines.extend([
        format!(
            "Trying to reconnect to device at 127.0.0.1 (attempt n.{})...",
            retries + 1
        ),
        format!(
            "The device runs OpenWrt 23.05.3 r23809-234f1a2efa on board \"{GL_MT300N_V2_BOARD}\"."
        ),
        "Connected! Writing checksum file to /etc/openwisp/firmware_checksum".to_owned(),
        "Upgrade completed successfully.".to_owned(),
    ]);
    assert_eq!(lines, expected_lines);
    // First contact: the host key is recorded once, and it is the device's.
    let host_keys = reporter.host_keys();
    assert_eq!(host_keys.len(), 1);
    assert_eq!(
        crate::support::fingerprint(&host_keys[0]),
        device.host_key_fingerprint()
    );
    // The image was streamed once; nothing of the secret reached the log.
    assert_eq!(image.times_opened(), 1);
    assert!(!lines.iter().any(|line| line.contains("PRIVATE KEY")));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_works_and_an_identical_checksum_means_already_installed() {
    let image = default_image();
    let mut spec = gl_mt300n_v2();
    spec.checksum = Some(image.sha256.clone());
    let fleet = fleet_of(spec).await;
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Password, &image, true, json!({}), &reporter);

    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert_eq!(outcome, UpgradeOutcome::AlreadyInstalled);
    assert_eq!(
        fleet.device(0).commands(),
        [
            "uci get openwisp.http.uuid",
            "test -f /etc/openwisp/firmware_checksum",
            "cat /etc/openwisp/firmware_checksum",
        ]
    );
    assert_eq!(
        reporter.lines()[2..],
        [
            "Image checksum file found",
            "Firmware already upgraded previously. Identical checksum found in the filesystem, upgrade not needed.",
        ]
    );
    assert_eq!(image.times_opened(), 0);
    assert_eq!(fleet.device(0).flash_count(), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_checksum_proceeds_with_the_upgrade() {
    let image = default_image();
    let mut spec = gl_mt300n_v2();
    spec.checksum = Some("0".repeat(64));
    let fleet = fleet_of(spec).await;
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Password, &image, true, json!({}), &reporter);

    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert!(matches!(outcome, UpgradeOutcome::Upgraded { .. }));
    assert!(reporter.logged("Checksum different, proceeding with the upload of the new image..."));
    assert_eq!(
        fleet
            .device(0)
            .file("/etc/openwisp/firmware_checksum")
            .unwrap(),
        format!("{}\n", image.sha256)
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_uuid_aborts_before_touching_the_device() {
    let mut spec = gl_mt300n_v2();
    spec.faults.uuid_missing = true;
    let fleet = fleet_of(spec).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Could not read device UUID from configuration"
    );
    assert_eq!(fleet.device(0).commands(), ["uci get openwisp.http.uuid"]);
    assert_eq!(
        reporter.lines().last().unwrap(),
        "Could not read device UUID from configuration"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_uuid_aborts_with_upstreams_message() {
    let mut spec = gl_mt300n_v2();
    spec.faults.identity_mismatch = true;
    let fleet = fleet_of(spec).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    let line = reporter.lines().last().unwrap().clone();
    let expected_start = format!(
        "Device UUID mismatch: expected \"{}\", found \"",
        fleet.device(0).uuid()
    );
    assert!(line.starts_with(&expected_start), "{line}");
    assert!(line.ends_with("\" in device configuration"), "{line}");
    assert_eq!(error.to_string(), line);
    assert_eq!(fleet.device(0).commands().len(), 1);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_memory_is_freed_by_stopping_services_and_the_upgrade_proceeds() {
    // 512 KiB available, about 640 KiB of image: stopping the ten services frees 256 KiB.
    let mut spec = gl_mt300n_v2();
    spec.mem_available_kib = 512;
    let fleet = fleet_of(spec).await;
    let image = ImageFile::write(
        &TestImage::builder().payload_len(640 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Password, &image, true, json!({}), &reporter);

    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    let commands = fleet.device(0).commands();
    let mut expected = first_commands();
    expected.extend(memory_commands());
    expected.extend(service_commands("stop"));
    expected.extend(memory_commands());
    assert_eq!(commands[..expected.len()], expected[..]);
    assert!(commands[expected.len()].starts_with("scp -t "));
    assert!(reporter.logged(
        "The image size (0.63 MiB) is greater than the available memory on the system (0.5 MiB).\n\
         For this reason the upgrade procedure will try to free up memory by stopping non critical services."
    ));
    assert!(reporter.logged(
        "Enough available memory was freed up on the system (0.75 MiB)!\nProceeding to upload of the image file..."
    ));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_that_cannot_be_freed_aborts_and_starts_the_services_again() {
    let mut spec = gl_mt300n_v2();
    spec.mem_available_kib = 512;
    spec.faults.low_memory = true;
    // A device without /sbin/wifi: upstream's `wifi down` would fail the upgrade (its §9.8).
    spec.has_wifi = false;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = ImageFile::write(
        &TestImage::builder().payload_len(640 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(device.stopped_services().is_empty());
    let commands = device.commands();
    let mut expected = first_commands();
    expected.extend(memory_commands());
    expected.extend(service_commands("stop"));
    expected.extend(memory_commands());
    expected.extend(service_commands("start"));
    assert_eq!(commands, expected);
    let lines = reporter.lines();
    assert!(lines[lines.len() - 2].starts_with(
        "There is still not enough available memory on the system (0.5 MiB).\nStarting non critical services again..."
    ));
    assert_eq!(
        lines.last().unwrap(),
        "Non critical services started, aborting upgrade."
    );
    assert_eq!(image.times_opened(), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_at_a_checkpoint_starts_the_stopped_services_again() {
    let mut spec = gl_mt300n_v2();
    spec.mem_available_kib = 512;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = ImageFile::write(
        &TestImage::builder().payload_len(640 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    // The user cancels while memory is being freed; the checkpoint after it stops the upgrade.
    reporter.cancel_on(UpgradePhase::CheckingMemory);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Cancelled), "{error:?}");
    assert!(device.stopped_services().is_empty());
    let commands = device.commands();
    assert!(
        commands.ends_with(&service_commands("start")),
        "{commands:#?}"
    );
    assert!(!commands.iter().any(|command| command.starts_with("scp")));
    assert_eq!(
        reporter.lines().last().unwrap(),
        "Restarting non-critical services..."
    );
    assert_eq!(
        *reporter.phases().last().unwrap(),
        UpgradePhase::CheckingMemory
    );
    assert_eq!(device.flash_count(), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_before_any_change_stops_at_the_next_checkpoint() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    reporter.cancel_on(UpgradePhase::VerifyingIdentity);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Cancelled), "{error:?}");
    assert!(fleet.device(0).commands().is_empty());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_is_recoverable_and_the_retry_succeeds() {
    let mut spec = gl_mt300n_v2();
    spec.faults.drop_during_upload_after_bytes = Some(100 * 1024);
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(error.is_recoverable(), "{error:?}");
    assert_eq!(device.flash_count(), 0);
    assert!(!device.uploaded(&remote_path()).unwrap().complete);

    // The fault fires once: the engine's retry goes through.
    let outcome = upgrader().upgrade(&context).await.unwrap();
    assert!(matches!(outcome, UpgradeOutcome::Upgraded { .. }));
    assert_eq!(image.times_opened(), 2);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_still_uploads_the_whole_image() {
    let mut spec = gl_mt300n_v2();
    spec.faults.link_bytes_per_sec = Some(256 * 1024);
    let fleet = fleet_of(spec).await;
    let image = ImageFile::write(
        &TestImage::builder().payload_len(512 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let started = std::time::Instant::now();

    // The upload takes longer than a second but keeps moving: no timeout cuts it.
    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fleet.device(0).flash_count(), 1);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_refused_by_sysupgrade_test_aborts_and_restarts_services() {
    // The server knows no metadata for this image and the map lists the model, so only the
    // device's own test can tell that the image is for another board.
    let mut spec = gl_mt300n_v2();
    spec.mem_available_kib = 512;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = ImageFile::write(
        &TestImage::builder()
            .payload_len(640 * 1024)
            .supported_devices(["tplink,archer-c7-v2"])
            .build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, false, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(error.to_string().contains("Image check failed."), "{error}");
    let commands = device.commands();
    let test_index = commands
        .iter()
        .position(|command| *command == format!("/sbin/sysupgrade --test {}", remote_path()))
        .unwrap();
    assert_eq!(commands[test_index + 1..], service_commands("start")[..]);
    assert!(device.stopped_services().is_empty());
    assert!(reporter.logged("not supported by this image"));
    assert_eq!(
        reporter.lines().last().unwrap(),
        "Starting non critical services again..."
    );
    assert_eq!(device.flash_count(), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_for_another_board_is_refused_before_the_upload() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = ImageFile::write(
        &TestImage::builder()
            .supported_devices(["tplink,archer-c7-v2"])
            .build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "The image does not fit this device (board \"{GL_MT300N_V2_BOARD}\", model \
             \"{GL_MT300N_V2_MODEL}\", compat version 1.0): device {GL_MT300N_V2_BOARD} is not \
             supported by this image (supported devices: tplink,archer-c7-v2)."
        )
    );
    assert_eq!(device.commands(), first_commands());
    assert!(device.uploaded(&remote_path()).is_none());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_metadata_is_refused_when_the_map_does_not_list_the_model() {
    let spec = DeviceSpec::openwrt(
        uuid::Uuid::new_v4(),
        "tplink,archer-c7-v2",
        "TP-Link Archer C7 v2",
    );
    let fleet = fleet_of(spec).await;
    let image = ImageFile::write(&TestImage::builder().without_metadata().build(), IMAGE_NAME);
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(
        error.to_string().ends_with(
            "the image has no metadata, and the image map does not list the device model for this image type."
        ),
        "{error}"
    );
    assert_eq!(fleet.device(0).commands(), first_commands());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_incompatible_image_is_refused_unless_the_configuration_is_dropped() {
    let image = ImageFile::write(
        &TestImage::builder()
            .compat_version("1.1")
            .new_supported_devices([GL_MT300N_V2_BOARD])
            .build(),
        IMAGE_NAME,
    );

    // Keeping the configuration (`-c`, the default): refused before the upload.
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let error = upgrader().upgrade(&context).await.unwrap_err();
    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(
        error.to_string().contains("upgrade without keeping config"),
        "{error}"
    );
    fleet.shutdown().await;

    // With `-n` the same image fits; the flash regenerates the host key, which is recorded.
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let first_key = device.host_key_fingerprint();
    let reporter = RecordingReporter::new();
    let context = context_for(
        &fleet,
        Auth::Key,
        &image,
        true,
        json!({"n": true}),
        &reporter,
    );
    let outcome = upgrader().upgrade(&context).await.unwrap();
    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    let commands = device.commands();
    assert!(commands.contains(&format!("/sbin/sysupgrade --test -n {}", remote_path())));
    assert!(commands.contains(&format!("/sbin/sysupgrade -v -n {}", remote_path())));
    let recorded: Vec<String> = reporter
        .host_keys()
        .iter()
        .map(crate::support::fingerprint)
        .collect();
    assert_ne!(first_key, device.host_key_fingerprint());
    assert_eq!(recorded, [first_key, device.host_key_fingerprint()]);
    assert!(
        reporter.logged(
            "presents a new SSH host key after a flash that did not keep its configuration"
        )
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_before_authenticating() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let mut context = context_for(&fleet, Auth::Password, &image, true, json!({}), &reporter);
    context.connection.known_host_key = Some(flashfleet_upgrader::HostKey {
        algorithm: "ssh-ed25519".to_owned(),
        key: "AAAAC3NzaC1lZDI1NTE5AAAAIGJ1dCBub3QgdGhlIGRldmljZSdzIGhvc3Qga2V5IQ==".to_owned(),
    });

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with("Refusing to upgrade: "),
        "{error}"
    );
    assert!(
        error.to_string().contains("was recorded for this device"),
        "{error}"
    );
    assert!(fleet.device(0).commands().is_empty());
    assert!(reporter.host_keys().is_empty());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_host_key_is_accepted_and_not_recorded_again() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let image = default_image();
    // A first contact that stops early records the key.
    let first = RecordingReporter::new();
    first.cancel_on(UpgradePhase::VerifyingIdentity);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &first);
    assert!(matches!(
        upgrader().upgrade(&context).await,
        Err(UpgradeError::Cancelled)
    ));
    let host_key = first.host_keys().pop().unwrap();

    let reporter = RecordingReporter::new();
    let mut context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    context.connection.known_host_key = Some(host_key);
    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    assert!(reporter.host_keys().is_empty());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_flash_times_out_and_the_reconnection_decides() {
    let mut spec = gl_mt300n_v2();
    spec.faults.sysupgrade_hangs = true;
    let fleet = fleet_of(spec).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let started = std::time::Instant::now();

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(error.may_have_flashed(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("still running its previous release (OpenWrt 23.05.0 r23497-6637af95aa)"),
        "{error}"
    );
    assert!(
        reporter
            .logged("The upgrade command did not end within 2 seconds; its session was closed.")
    );
    // Bounded by the upgrade timeout (2 s) plus the grace period, not by the hung session.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        fleet
            .device(0)
            .file("/etc/openwisp/firmware_checksum")
            .is_none()
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_comes_back_fails_after_the_bounded_retries() {
    let mut spec = gl_mt300n_v2();
    spec.faults.never_comes_back = true;
    let fleet = fleet_of(spec).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let settings = OpenWrtSettings {
        reconnect_max_retries: 3,
        ..fast_settings()
    };

    let error = OpenWrtUpgrader::new(settings)
        .upgrade(&context)
        .await
        .unwrap_err();

    assert!(error.may_have_flashed(), "{error:?}");
    assert_eq!(
        error.to_string(),
        "Giving up, device not reachable anymore after upgrade"
    );
    let attempts: Vec<String> = reporter
        .lines()
        .into_iter()
        .filter(|line| line.starts_with("Trying to reconnect"))
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert_eq!(
        *reporter.phases().last().unwrap(),
        UpgradePhase::Reconnecting
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_with_its_old_release_is_flashed_not_seen_again() {
    let mut spec = gl_mt300n_v2();
    spec.faults.comes_back_with_old_release = true;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(error.may_have_flashed(), "{error:?}");
    assert_eq!(
        error.to_string(),
        "The device came back still running its previous release (OpenWrt 23.05.0 \
         r23497-6637af95aa), not the image's OpenWrt 23.05.3 r23809-234f1a2efa: the image was \
         not installed."
    );
    assert_eq!(device.flash_count(), 1);
    assert!(device.file("/etc/openwisp/firmware_checksum").is_none());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metadata_the_reconnection_alone_decides_as_upstream() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    // The server read no metadata; the map lists the model for the type.
    let context = context_for(&fleet, Auth::Key, &image, false, json!({}), &reporter);

    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { release: Some(_) }),
        "{outcome:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finishes_an_upgrade_interrupted_after_the_flash() {
    let image = default_image();
    // The device already runs the image (the crashed upgrade flashed it) but has no marker.
    let mut spec = gl_mt300n_v2();
    spec.release.version = "23.05.3".to_owned();
    spec.release.revision = "r23809-234f1a2efa".to_owned();
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let outcome = upgrader().verify(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { release: Some(_) }),
        "{outcome:?}"
    );
    assert_eq!(
        device.commands(),
        [
            "cat /proc/sys/kernel/random/boot_id".to_owned(),
            "cat /etc/openwrt_release".to_owned(),
            "cat /tmp/sysinfo/board_name".to_owned(),
            "cat /etc/openwisp/firmware_checksum".to_owned(),
            "mkdir -p /etc/openwisp".to_owned(),
            format!("echo {} > /etc/openwisp/firmware_checksum", image.sha256),
        ]
    );
    assert!(reporter.logged("No boot id was recorded before the flash command"));
    assert_eq!(device.flash_count(), 0);
    assert!(reporter.phases().is_empty(), "verify reports no phase");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_device_that_does_not_run_the_image() {
    let image = default_image();
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().verify(&context).await.unwrap_err();

    assert!(error.may_have_flashed(), "{error:?}");
    assert!(
        error.to_string().contains("running OpenWrt 23.05.0"),
        "{error}"
    );
    assert!(
        fleet
            .device(0)
            .file("/etc/openwisp/firmware_checksum")
            .is_none()
    );

    // Without metadata, only the marker can prove anything.
    let context = context_for(&fleet, Auth::Key, &image, false, json!({}), &reporter);
    let error = upgrader().verify(&context).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot tell whether it runs the image"),
        "{error}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_after_a_completed_upgrade_only_reads() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    upgrader().upgrade(&context).await.unwrap();
    let sent = device.commands().len();
    let mut context = context;
    context.connection.known_host_key = reporter.host_keys().pop();

    let outcome = upgrader().verify(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        device.commands()[sent..],
        [
            "cat /proc/sys/kernel/random/boot_id",
            "cat /etc/openwrt_release",
            "cat /tmp/sysinfo/board_name",
            "cat /etc/openwisp/firmware_checksum",
        ]
    );
    assert_eq!(device.flash_count(), 1);
    fleet.shutdown().await;
}

/// How many flash commands (not image tests) the device received.
fn flash_commands(device: &flashfleet_devsim::SimDevice) -> usize {
    device
        .commands()
        .iter()
        .filter(|command| command.starts_with("/sbin/sysupgrade -v"))
        .count()
}

/// What an earlier attempt recorded of its flash: one attempt, with `boot_id`.
fn flashed_with(boot_id: Option<String>) -> Option<FlashRecord> {
    Some(FlashRecord {
        attempts: 1,
        boot_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_id_is_read_just_before_the_flash_and_recorded_with_it() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let before = device.boot_id();

    upgrader().upgrade(&context).await.unwrap();

    assert_eq!(reporter.flash_boot_ids(), [Some(before.clone())]);
    let commands = device.commands();
    let flash = commands
        .iter()
        .position(|command| command.starts_with("/sbin/sysupgrade -v"))
        .unwrap();
    assert_eq!(commands[flash - 2], "cat /proc/sys/kernel/random/boot_id");
    assert_eq!(
        commands[flash - 1],
        "rm /etc/openwisp/checksum 2> /dev/null"
    );
    // The flash rebooted the device.
    assert_ne!(device.boot_id(), before);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_already_runs_the_image_is_not_flashed_and_gets_its_marker() {
    let image = default_image();
    let mut spec = gl_mt300n_v2();
    spec.release.version = "23.05.3".to_owned();
    spec.release.revision = "r23809-234f1a2efa".to_owned();
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let outcome = upgrader().upgrade(&context).await.unwrap();

    assert_eq!(outcome, UpgradeOutcome::AlreadyInstalled);
    assert_eq!(device.flash_count(), 0);
    assert_eq!(image.times_opened(), 0);
    assert_eq!(
        device.file("/etc/openwisp/firmware_checksum").unwrap(),
        format!("{}\n", image.sha256)
    );
    let mut expected = first_commands();
    expected.extend([
        "mkdir -p /etc/openwisp".to_owned(),
        format!("echo {} > /etc/openwisp/firmware_checksum", image.sha256),
    ]);
    assert_eq!(device.commands(), expected);
    assert_eq!(
        reporter.lines().last().unwrap(),
        &format!(
            "The device already runs OpenWrt 23.05.3 r23809-234f1a2efa on board \
             \"{GL_MT300N_V2_BOARD}\", the release of the image: upgrade not needed. Writing \
             checksum file to /etc/openwisp/firmware_checksum"
        )
    );
    assert!(reporter.flash_boot_ids().is_empty());

    // The same release on a board the image does not list is no proof: that image is refused
    // as not fitting, never marked as installed.
    let other_board = ImageFile::write(
        &TestImage::builder()
            .supported_devices(["tplink,archer-c7-v2"])
            .build(),
        IMAGE_NAME,
    );
    let mut spec = gl_mt300n_v2();
    spec.release.version = "23.05.3".to_owned();
    spec.release.revision = "r23809-234f1a2efa".to_owned();
    let other_fleet = fleet_of(spec).await;
    let reporter = RecordingReporter::new();
    let context = context_for(
        &other_fleet,
        Auth::Key,
        &other_board,
        true,
        json!({}),
        &reporter,
    );
    let error = upgrader().upgrade(&context).await.unwrap_err();
    assert!(matches!(error, UpgradeError::Aborted { .. }), "{error:?}");
    assert!(
        other_fleet
            .device(0)
            .file("/etc/openwisp/firmware_checksum")
            .is_none()
    );
    other_fleet.shutdown().await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_with_the_same_boot_id_the_old_release_and_no_sysupgrade_flashes_once_more() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    // An earlier attempt persisted `Flashing` with this boot id, and its flash command never
    // reached the device (the engine crashed in between).
    reporter.already_flashing();
    let boot_id = device.boot_id();
    let mut context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    context.previous_flash = flashed_with(Some(boot_id.clone()));

    let outcome = upgrader().verify(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { release: Some(_) }),
        "{outcome:?}"
    );
    assert_eq!(device.flash_count(), 1);
    assert_eq!(flash_commands(device), 1);
    assert_eq!(device.release().version, "23.05.3");
    let restarts = reporter.restarts();
    assert_eq!(
        restarts,
        [format!(
            "The flash command never reached the device: its boot id is still {boot_id}, the \
             one read before the flash command, it runs OpenWrt 23.05.0 r23497-6637af95aa on \
             board \"{GL_MT300N_V2_BOARD}\", not the image's OpenWrt 23.05.3 \
             r23809-234f1a2efa, and no sysupgrade is running. Starting the upgrade again."
        )]
    );
    // The facts first, then the whole upgrade again from its first command.
    let commands = device.commands();
    assert_eq!(
        commands[..5],
        [
            "cat /proc/sys/kernel/random/boot_id",
            "ps w",
            "cat /etc/openwrt_release",
            "cat /tmp/sysinfo/board_name",
            "uci get openwisp.http.uuid",
        ]
    );
    // Taken back to `Queued`, then every phase again; the second flash records the same boot
    // id (the device had not rebooted).
    use UpgradePhase::*;
    assert_eq!(
        reporter.phases()[..3],
        [Queued, Connecting, VerifyingIdentity]
    );
    assert_eq!(reporter.flash_boot_ids(), [Some(boot_id)]);
    assert_eq!(
        device.file("/etc/openwisp/firmware_checksum").unwrap(),
        format!("{}\n", image.sha256)
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_after_a_real_flash_sees_a_new_boot_id_and_decides_by_the_release() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    upgrader().upgrade(&context).await.unwrap();
    let recorded = reporter.flash_boot_ids().pop().unwrap();
    let sent = device.commands().len();

    let mut context = context;
    context.connection.known_host_key = reporter.host_keys().pop();
    context.previous_flash = flashed_with(recorded.clone());
    let outcome = upgrader().verify(&context).await.unwrap();

    assert!(
        matches!(outcome, UpgradeOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    assert_eq!(device.flash_count(), 1);
    assert_eq!(flash_commands(device), 1);
    assert!(reporter.restarts().is_empty());
    assert_eq!(
        device.commands()[sent..],
        [
            "cat /proc/sys/kernel/random/boot_id",
            "cat /etc/openwrt_release",
            "cat /tmp/sysinfo/board_name",
            "cat /etc/openwisp/firmware_checksum",
        ]
    );
    assert!(reporter.logged(&format!(
        "The device rebooted since the flash command (boot id {}, {} before the flash): \
         deciding from what it runs.",
        device.boot_id(),
        recorded.unwrap()
    )));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_of_a_device_back_on_its_old_release_fails_without_flashing_again() {
    let mut spec = gl_mt300n_v2();
    spec.faults.comes_back_with_old_release = true;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let error = upgrader().upgrade(&context).await.unwrap_err();
    assert!(error.may_have_flashed(), "{error:?}");
    let recorded = reporter.flash_boot_ids().pop().unwrap();

    let mut context = context;
    context.connection.known_host_key = reporter.host_keys().pop();
    context.previous_flash = flashed_with(recorded);
    let error = upgrader().verify(&context).await.unwrap_err();

    assert!(
        matches!(error, UpgradeError::FlashedNotSeenAgain { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "The device came back running OpenWrt 23.05.0 r23497-6637af95aa, not the image's \
         OpenWrt 23.05.3 r23809-234f1a2efa."
    );
    assert!(reporter.logged(&format!(
        "The device runs OpenWrt 23.05.0 r23497-6637af95aa on board \"{GL_MT300N_V2_BOARD}\"."
    )));
    assert!(reporter.restarts().is_empty());
    assert_eq!(device.flash_count(), 1);
    assert_eq!(flash_commands(device), 1);
    assert!(device.file("/etc/openwisp/firmware_checksum").is_none());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_while_sysupgrade_hangs_waits_within_its_bound_and_never_flashes_again() {
    let mut spec = gl_mt300n_v2();
    spec.faults.sysupgrade_hangs = true;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let error = upgrader().upgrade(&context).await.unwrap_err();
    assert!(error.may_have_flashed(), "{error:?}");
    let recorded = reporter.flash_boot_ids().pop().unwrap();
    assert_eq!(recorded.as_deref(), Some(device.boot_id().as_str()));

    let mut context = context;
    context.connection.known_host_key = reporter.host_keys().pop();
    context.previous_flash = flashed_with(recorded);
    // A budget of 0.1 + 5 x 0.1 seconds.
    let settings = OpenWrtSettings {
        reconnect_max_retries: 5,
        ..fast_settings()
    };
    let started = std::time::Instant::now();
    let error = OpenWrtUpgrader::new(settings)
        .verify(&context)
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, UpgradeError::FlashedNotSeenAgain { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "The flash is still under way after 0.6 seconds (boot id {} unchanged, sysupgrade \
             still running): could not verify what the device runs.",
            device.boot_id()
        )
    );
    assert!(reporter.logged("the flash is under way; waiting for it to end (at most 0.6 seconds)"));
    assert!(reporter.logged("/bin/sh /sbin/sysupgrade -v -c"));
    assert!(reporter.restarts().is_empty());
    assert_eq!(flash_commands(device), 1);
    assert!(device.sysupgrade_running());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_of_an_unreachable_device_could_not_verify_what_it_runs() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let image = default_image();
    let reporter = RecordingReporter::new();
    let mut context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    context.previous_flash = flashed_with(Some(fleet.device(0).boot_id()));
    // Nothing listens any more.
    fleet.shutdown().await;
    let settings = OpenWrtSettings {
        reconnect_max_retries: 2,
        ..fast_settings()
    };

    let error = OpenWrtUpgrader::new(settings)
        .verify(&context)
        .await
        .unwrap_err();

    assert!(
        matches!(error, UpgradeError::FlashedNotSeenAgain { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("could not verify what the device runs"),
        "{error}"
    );
    assert_eq!(
        reporter
            .lines()
            .iter()
            .filter(|line| line.starts_with("Trying to reconnect"))
            .count(),
        2
    );
    assert!(reporter.restarts().is_empty());
}

/// A device whose link trickles: one 32 KiB chunk per 400 ms, about four seconds for the
/// default image.
fn trickling() -> DeviceSpec {
    let mut spec = gl_mt300n_v2();
    spec.faults.upload_chunk_delay = Some(Duration::from_millis(400));
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_its_deadline_is_cut_and_lets_go_of_the_image_at_once() {
    let fleet = fleet_of(trickling()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    // 1 s to connect plus the image at 1 MiB/s: about 1.25 s, a third of what the trickle
    // needs, whose every chunk comes well within the stall timeout.
    let settings = OpenWrtSettings {
        min_upload_throughput: 1024 * 1024,
        ..fast_settings()
    };
    let deadline = settings.upload_deadline(image.size);
    let started = std::time::Instant::now();

    let error = OpenWrtUpgrader::new(settings)
        .upgrade(&context)
        .await
        .unwrap_err();

    let took = started.elapsed();
    assert!(error.is_recoverable(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("Upload too slow: the upload to /tmp/"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "did not finish within its deadline of {} s: ",
            deadline.as_secs_f64()
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            " of {} bytes sent; the connection was closed",
            image.size
        )),
        "{message}"
    );
    assert!(
        message.ends_with("at the minimum upload throughput of 1048576 bytes/s)"),
        "{message}"
    );
    // The blocking transfer ended with the deadline and dropped the image stream before the
    // upgrade returned.
    assert_eq!(image.times_dropped(), 1);
    assert!(took < deadline + Duration::from_secs(1), "took {took:?}");
    assert_eq!(device.flash_count(), 0);
    assert!(
        !device
            .commands()
            .iter()
            .any(|command| command.starts_with("/sbin/sysupgrade"))
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_upgrade_mid_upload_lets_go_of_the_image_at_once() {
    let fleet = fleet_of(trickling()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);
    let upgrader = upgrader();

    // The engine drops the upgrade future (its task timeout, or it stops) once the upload is
    // under way: the blocking thread is reading the image.
    tokio::select! {
        outcome = upgrader.upgrade(&context) => panic!("the upload cannot finish yet: {outcome:?}"),
        read = image.read_at_least(1, Duration::from_secs(10)) => assert!(read),
    }
    let dropped_at = std::time::Instant::now();

    // Without the drop guard the thread would go on for the seconds the trickle needs.
    assert!(
        image.dropped_at_least(1, Duration::from_secs(1)).await,
        "the image stream is still held"
    );
    assert!(dropped_at.elapsed() < Duration::from_secs(1));
    assert_eq!(image.times_opened(), 1);
    assert_eq!(device.flash_count(), 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_after_the_flash_stops_the_upgrade_at_once() {
    let fleet = fleet_of(gl_mt300n_v2()).await;
    let device = fleet.device(0);
    let image = default_image();
    let reporter = RecordingReporter::new();
    reporter.lose_lease_on(UpgradePhase::WaitingForReboot);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(error.is_lease_lost(), "{error:?}");
    assert!(!error.may_have_flashed());
    // Nothing after the flash command: no reconnection, no verification.
    assert!(
        device
            .commands()
            .last()
            .unwrap()
            .starts_with("/sbin/sysupgrade -v"),
        "{:#?}",
        device.commands()
    );
    assert!(!reporter.logged("Trying to reconnect"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_before_the_flash_sends_nothing_more_not_even_to_restart_services() {
    // 512 KiB available, about 640 KiB of image: the upgrader stops the services.
    let mut spec = gl_mt300n_v2();
    spec.mem_available_kib = 512;
    let fleet = fleet_of(spec).await;
    let device = fleet.device(0);
    let image = ImageFile::write(
        &TestImage::builder().payload_len(640 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    reporter.lose_lease_on(UpgradePhase::Uploading);
    let context = context_for(&fleet, Auth::Key, &image, true, json!({}), &reporter);

    let error = upgrader().upgrade(&context).await.unwrap_err();

    assert!(error.is_lease_lost(), "{error:?}");
    let mut expected = first_commands();
    expected.extend(memory_commands());
    expected.extend(service_commands("stop"));
    expected.extend(memory_commands());
    assert_eq!(device.commands(), expected);
    assert_eq!(device.stopped_services().len(), 10);
    assert_eq!(image.times_opened(), 0);
    assert_eq!(device.flash_count(), 0);
    fleet.shutdown().await;
}

//! Flashing: the session dies without an exit status, the device refuses connections, then
//! answers with the image's release; and the faults that spoil this.

use std::io::{ErrorKind, Read as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flashfleet_devsim::{DevicePhase, Fleet, Release, SimDevice};

use crate::support::{
    Login, blocking, connect, device, exec, fleet, image_for_board, run, upload,
    wait_until_reachable,
};

const PATH: &str = "/tmp/image.bin";

/// What the client saw of the flash command.
#[derive(Debug)]
struct FlashSeen {
    output: String,
    /// What libssh2 reports as exit status: 0 when none was sent.
    exit_status: i32,
    /// How reading ended: `Ok` at a clean end of stream, the error when the connection broke.
    read_end: Result<(), String>,
    /// Whether a new channel could still be opened on the same session afterwards.
    session_alive: bool,
}

/// Runs `command` (a flash) and reads until the device cuts the session.
async fn flash(fleet: &Fleet, index: usize, command: &str) -> FlashSeen {
    let address = fleet.device(index).address();
    let credentials = fleet.credentials().clone();
    let command = command.to_owned();
    blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        let pre = exec(&session, "rm /etc/openwisp/checksum 2> /dev/null");
        assert_eq!(pre.exit_status, 1);
        let mut channel = session.channel_session().expect("a channel");
        // sysupgrade writes to stderr; once the connection is cut, libssh2 can no longer hand
        // out what it buffered on the other stream, so both must come through one.
        channel
            .handle_extended_data(ssh2::ExtendedData::Merge)
            .expect("merge stderr");
        channel.exec(&command).expect("exec");
        let mut output = Vec::new();
        let mut buffer = [0; 1024];
        let read_end = loop {
            match channel.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Err(error) => break Err(error.to_string()),
                Ok(count) => output.extend_from_slice(&buffer[..count]),
            }
        };
        FlashSeen {
            output: String::from_utf8_lossy(&output).into_owned(),
            exit_status: channel.exit_status().unwrap_or(-1),
            read_end,
            session_alive: session.channel_session().is_ok(),
        }
    })
    .await
}

/// Polls until the device is in `phase`, for at most two seconds.
async fn wait_for_phase(device: &SimDevice, phase: DevicePhase) {
    let started = Instant::now();
    while device.phase() != phase {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still {:?}",
            device.phase()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_flash_cuts_the_session_refuses_connections_then_answers_with_the_new_release() {
    let mut spec = device();
    spec.checksum = Some("old".to_owned());
    let fleet = fleet(vec![spec]).await;
    let device = fleet.device(0);
    let host_key = device.host_key_fingerprint();
    let boot_id = device.boot_id();
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;

    let seen = flash(&fleet, 0, "/sbin/sysupgrade -v -c /tmp/image.bin").await;
    assert!(
        seen.output.contains("upgrade: Saving config files...\n"),
        "{seen:?}"
    );
    assert!(
        seen.output
            .contains("upgrade: Commencing upgrade. Closing all shell sessions.\n")
    );
    // libssh2 turns "no exit status" into 0; what shows the kill is the dead session.
    assert_eq!(seen.exit_status, 0);
    // The stream ends with a transport error (the TCP connection was closed under it), not with
    // a channel close, and the session is gone.
    assert!(seen.read_end.is_err(), "{seen:?}");
    assert!(!seen.session_alive);
    assert_eq!(device.flash_count(), 1);

    wait_for_phase(device, DevicePhase::Down).await;
    let refused = TcpStream::connect_timeout(&device.address(), Duration::from_secs(1))
        .expect_err("nothing listens while the device is down");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let took = wait_until_reachable(&fleet, 0, Duration::from_secs(5))
        .await
        .expect("the device comes back");
    assert!(
        took >= Duration::from_millis(300),
        "came back after {took:?}"
    );

    let answers = crate::support::run_all(
        &fleet,
        0,
        &[
            "ubus call system board",
            "cat /etc/openwrt_release",
            "test -f /tmp/image.bin",
            "cat /proc/sys/kernel/random/boot_id",
            "ps w",
        ],
    )
    .await;
    // A new boot: a new boot id, and no sysupgrade any more.
    assert_ne!(device.boot_id(), boot_id);
    assert_eq!(answers[3].stdout, format!("{}\n", device.boot_id()));
    assert!(
        !answers[4].stdout.contains("sysupgrade"),
        "{:?}",
        answers[4]
    );
    assert!(!device.sysupgrade_running());
    let board: serde_json::Value = serde_json::from_str(&answers[0].stdout).expect("JSON");
    assert_eq!(board["release"]["version"], "24.10.1");
    assert_eq!(board["release"]["revision"], "r1-24.10.1");
    assert!(answers[1].stdout.contains("DISTRIB_RELEASE='24.10.1'\n"));
    assert_eq!(answers[2].exit_status, 1, "/tmp is emptied by the reboot");
    assert_eq!(device.release().version, "24.10.1");
    assert_eq!(device.phase(), DevicePhase::Running);
    assert_eq!(device.flash_count(), 1);
    // The configuration was kept: same host key, checksum file still there.
    assert_eq!(device.host_key_fingerprint(), host_key);
    assert_eq!(
        device.file("/etc/openwisp/firmware_checksum").as_deref(),
        Some("old\n")
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_flash_without_keeping_config_changes_the_host_key_and_wipes_openwisp_files() {
    let mut spec = device();
    spec.checksum = Some("old".to_owned());
    let fleet = fleet(vec![spec]).await;
    let device = fleet.device(0);
    let host_key = device.host_key_fingerprint();
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;

    let seen = flash(&fleet, 0, "/sbin/sysupgrade -v -n /tmp/image.bin").await;
    assert!(!seen.output.contains("Saving config files"), "{seen:?}");
    wait_until_reachable(&fleet, 0, Duration::from_secs(5))
        .await
        .expect("the device comes back");
    assert_ne!(device.host_key_fingerprint(), host_key);
    assert_eq!(device.file("/etc/openwisp/firmware_checksum"), None);
    let answer = run(&fleet, 0, "test -f /etc/openwisp/firmware_checksum").await;
    assert_eq!(answer.exit_status, 1);
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_refused_image_is_not_flashed() {
    let fleet = fleet(vec![device()]).await;
    upload(
        &fleet,
        0,
        PATH,
        flashfleet_boards::test_image::TestImage::builder().build(),
    )
    .await;
    let answer = run(&fleet, 0, "/sbin/sysupgrade -v -c /tmp/image.bin").await;
    assert_eq!(answer.exit_status, 1);
    assert!(answer.stderr.ends_with("Image check failed.\n"));
    assert_eq!(fleet.device(0).flash_count(), 0);
    assert_eq!(fleet.device(0).phase(), DevicePhase::Running);
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_forced_image_without_metadata_comes_back_as_an_unknown_release() {
    let fleet = fleet(vec![device()]).await;
    let image = flashfleet_boards::test_image::TestImage::builder()
        .without_metadata()
        .build();
    upload(&fleet, 0, PATH, image).await;
    let seen = flash(&fleet, 0, "/sbin/sysupgrade -v -F /tmp/image.bin").await;
    assert!(seen.output.contains("will update anyway!"), "{seen:?}");
    wait_until_reachable(&fleet, 0, Duration::from_secs(5))
        .await
        .expect("the device comes back");
    let release = fleet.device(0).release();
    assert_eq!(
        (release.version.as_str(), release.revision.as_str()),
        ("unknown", "unknown")
    );
    assert_eq!(release.target, Release::default().target);
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_device_that_never_comes_back_keeps_refusing_connections() {
    let mut spec = device();
    spec.faults.never_comes_back = true;
    let fleet = fleet(vec![spec]).await;
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;
    let seen = flash(&fleet, 0, "/sbin/sysupgrade -v -c /tmp/image.bin").await;
    assert!(!seen.session_alive);
    // Four times the fleet's down time.
    assert_eq!(
        wait_until_reachable(&fleet, 0, Duration::from_secs(2)).await,
        None
    );
    assert_eq!(fleet.device(0).phase(), DevicePhase::Down);
    assert_eq!(fleet.device(0).flash_count(), 1);
    assert_eq!(fleet.device(0).release(), Release::default());
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_device_can_come_back_with_its_old_release() {
    let mut spec = device();
    spec.faults.comes_back_with_old_release = true;
    let fleet = fleet(vec![spec]).await;
    let host_key = fleet.device(0).host_key_fingerprint();
    let boot_id = fleet.device(0).boot_id();
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;
    flash(&fleet, 0, "/sbin/sysupgrade -v -n /tmp/image.bin").await;
    wait_until_reachable(&fleet, 0, Duration::from_secs(5))
        .await
        .expect("the device comes back");
    let answer = run(&fleet, 0, "cat /etc/openwrt_version").await;
    assert_eq!(answer.stdout, format!("{}\n", Release::default().revision));
    // It rebooted, on its old release: a new boot id all the same.
    assert_ne!(fleet.device(0).boot_id(), boot_id);
    assert_eq!(fleet.device(0).release(), Release::default());
    assert_eq!(fleet.device(0).flash_count(), 1);
    assert_eq!(fleet.device(0).host_key_fingerprint(), host_key);
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_hanging_sysupgrade_never_answers_and_never_reboots() {
    let mut spec = device();
    spec.faults.sysupgrade_hangs = true;
    let fleet = fleet(vec![spec]).await;
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    let boot_id = fleet.device(0).boot_id();
    let (timed_out, output, other_session) = blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        session.set_timeout(1000);
        let mut channel = session.channel_session().expect("a channel");
        channel
            .exec("/sbin/sysupgrade -v -c /tmp/image.bin")
            .expect("exec");
        let mut stderr = String::new();
        let _ = channel.stderr().read_to_string(&mut stderr);
        let mut stdout = Vec::new();
        let timed_out = channel.read_to_end(&mut stdout).is_err() && !channel.eof();
        let other = connect(address, &credentials, Login::Password)
            .map(|other| exec(&other, "uci get openwisp.http.uuid").exit_status);
        (timed_out, stderr, other)
    })
    .await;
    assert!(timed_out, "the command must not end");
    assert!(output.contains("Commencing upgrade"), "{output:?}");
    assert_eq!(other_session, Ok(0));
    assert_eq!(fleet.device(0).phase(), DevicePhase::Running);
    assert_eq!(fleet.device(0).flash_count(), 0);
    // The hanging sysupgrade outlives the session that started it; the device did not reboot.
    let answers =
        crate::support::run_all(&fleet, 0, &["ps w", "cat /proc/sys/kernel/random/boot_id"]).await;
    assert!(
        answers[0]
            .stdout
            .lines()
            .any(|line| line.ends_with(" S    /bin/sh /sbin/sysupgrade -v -c /tmp/image.bin")),
        "{}",
        answers[0].stdout
    );
    assert_eq!(answers[1].stdout, format!("{boot_id}\n"));
    assert!(fleet.device(0).sysupgrade_running());
    fleet.shutdown().await;
}

#[tokio::test]
async fn ps_shows_sysupgrade_from_commencing_until_the_sessions_are_cut() {
    let mut config = flashfleet_devsim::FleetConfig::on_ephemeral_ports(vec![device()]);
    // A long window between "Commencing upgrade" and the cut, to look at it.
    config.reboot = flashfleet_devsim::RebootTiming {
        close_after: Duration::from_secs(2),
        down_for: Duration::from_millis(200),
    };
    let fleet = Fleet::start(config).await.expect("the fleet starts");
    let device = fleet.device(0).clone();
    upload(&fleet, 0, PATH, image_for_board("24.10.1").build()).await;
    let boot_id = device.boot_id();

    let flashing = tokio::spawn({
        let address = device.address();
        let credentials = fleet.credentials().clone();
        blocking(move || {
            let session = connect(address, &credentials, Login::Password).expect("login works");
            let mut channel = session.channel_session().expect("a channel");
            channel
                .exec("/sbin/sysupgrade -v -c /tmp/image.bin")
                .expect("exec");
            let mut sink = Vec::new();
            // Ends when the device cuts the session.
            let _ = channel.read_to_end(&mut sink);
        })
    });
    wait_for_phase(&device, DevicePhase::Flashing).await;
    let answer = run(&fleet, 0, "ps w").await;
    let line = answer
        .stdout
        .lines()
        .find(|line| line.contains("sysupgrade"))
        .unwrap_or_else(|| panic!("no sysupgrade in {}", answer.stdout));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[1..],
        [
            "root",
            "1236",
            "S",
            "/bin/sh",
            "/sbin/sysupgrade",
            "-v",
            "-c",
            "/tmp/image.bin"
        ]
    );
    assert!(device.sysupgrade_running());
    // Not rebooted yet: the same boot id.
    assert_eq!(
        run(&fleet, 0, "cat /proc/sys/kernel/random/boot_id")
            .await
            .stdout,
        format!("{boot_id}\n")
    );

    flashing.await.expect("the flash client ends");
    assert!(!device.sysupgrade_running());
    assert_eq!(device.flash_count(), 1);
    wait_until_reachable(&fleet, 0, Duration::from_secs(5))
        .await
        .expect("the device comes back");
    assert!(!run(&fleet, 0, "ps w").await.stdout.contains("sysupgrade"));
    assert_ne!(device.boot_id(), boot_id);
    fleet.shutdown().await;
}

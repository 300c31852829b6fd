//! The commands of the upgrader (spec section 1.2) and the ones around them, with their exact
//! outputs and exit statuses.

use flashfleet_devsim::{Faults, Release};

use crate::support::{BOARD, MODEL, device, fleet, run, run_all};

#[tokio::test]
async fn the_identity_and_checksum_commands_answer_as_on_openwrt() {
    let mut with_checksum = device();
    with_checksum.checksum = Some("ab".repeat(32));
    let fleet = fleet(vec![with_checksum, device()]).await;

    let answers = run_all(
        &fleet,
        0,
        &[
            "uci get openwisp.http.uuid",
            "test -f /etc/openwisp/firmware_checksum",
            "cat /etc/openwisp/firmware_checksum",
        ],
    )
    .await;
    assert_eq!(answers[0].stdout, format!("{}\n", fleet.device(0).uuid()));
    assert_eq!(answers[0].exit_status, 0);
    assert_eq!(answers[1].exit_status, 0);
    assert_eq!(answers[1].stdout, "");
    assert_eq!(answers[2].stdout, format!("{}\n", "ab".repeat(32)));

    let answer = run(&fleet, 1, "test -f /etc/openwisp/firmware_checksum").await;
    assert_eq!((answer.exit_status, answer.stdout.as_str()), (1, ""));
    let answer = run(&fleet, 1, "cat /etc/openwisp/firmware_checksum").await;
    assert_eq!(answer.exit_status, 1);
    assert!(
        answer.stderr.contains("No such file or directory"),
        "{answer:?}"
    );

    assert_eq!(
        fleet.device(0).commands(),
        [
            "uci get openwisp.http.uuid",
            "test -f /etc/openwisp/firmware_checksum",
            "cat /etc/openwisp/firmware_checksum",
        ]
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn identity_faults_change_what_uci_prints() {
    let fleet = fleet(vec![device()]).await;
    let device = fleet.device(0);
    device.set_faults(Faults {
        identity_mismatch: true,
        ..Faults::default()
    });
    let answer = run(&fleet, 0, "uci get openwisp.http.uuid").await;
    assert_eq!(answer.exit_status, 0);
    let printed: uuid::Uuid = answer.stdout.trim().parse().expect("a UUID");
    assert_ne!(printed, device.uuid());

    device.set_faults(Faults {
        uuid_missing: true,
        ..Faults::default()
    });
    let answer = run(&fleet, 0, "uci get openwisp.http.uuid").await;
    assert_eq!(answer.exit_status, 1);
    assert_eq!(answer.stdout, "");
    assert_eq!(answer.stderr, "uci: Entry not found\n");
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_memory_commands_report_memavailable_and_fall_back_to_memfree() {
    let mut old_kernel = device();
    old_kernel.reports_mem_available = false;
    let fleet = fleet(vec![device(), old_kernel]).await;

    let answers = run_all(
        &fleet,
        0,
        &[
            "rm -rf /tmp/opkg-lists/",
            "sync && echo 3 > /proc/sys/vm/drop_caches",
            "cat /proc/meminfo | grep MemAvailable",
        ],
    )
    .await;
    assert_eq!(answers[0].exit_status, 0);
    assert_eq!(answers[1].exit_status, 0);
    assert_eq!(answers[1].stdout, "");
    assert_eq!(answers[2].exit_status, 0);
    let fields: Vec<&str> = answers[2].stdout.split_whitespace().collect();
    assert_eq!(fields, ["MemAvailable:", "65536", "kB"]);

    let answers = run_all(
        &fleet,
        1,
        &[
            "cat /proc/meminfo | grep MemAvailable",
            "cat /proc/meminfo | grep MemFree",
        ],
    )
    .await;
    assert_eq!(
        (answers[0].exit_status, answers[0].stdout.as_str()),
        (1, "")
    );
    assert_eq!(answers[1].exit_status, 0);
    assert!(
        answers[1].stdout.starts_with("MemFree:"),
        "{:?}",
        answers[1]
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn stopping_the_upstream_services_frees_memory_unless_memory_is_low() {
    let mut low_memory = device();
    low_memory.faults.low_memory = true;
    let fleet = fleet(vec![device(), low_memory]).await;
    let mut commands: Vec<String> = flashfleet_devsim::UPSTREAM_SERVICES
        .iter()
        .map(|service| format!("test -f /etc/init.d/{service} && /etc/init.d/{service} stop"))
        .collect();
    commands.push("test -f /sbin/wifi && /sbin/wifi down".to_owned());
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();

    for (index, expected_kib) in [(0, 65536 + 32768), (1, 65536)] {
        let before = fleet.device(index).mem_available_kib();
        assert_eq!(before, 65536);
        let answers = run_all(&fleet, index, &commands).await;
        assert!(
            answers.iter().all(|answer| answer.exit_status == 0),
            "{answers:?}"
        );
        assert_eq!(
            fleet.device(index).stopped_services(),
            flashfleet_devsim::UPSTREAM_SERVICES
        );
        assert_eq!(fleet.device(index).mem_available_kib(), expected_kib);
    }

    let answers = run_all(
        &fleet,
        0,
        &[
            "test -f /etc/init.d/uhttpd && /etc/init.d/uhttpd start",
            "test -f /sbin/wifi && /sbin/wifi up",
        ],
    )
    .await;
    assert!(answers.iter().all(|answer| answer.exit_status == 0));
    assert!(
        !fleet
            .device(0)
            .stopped_services()
            .contains(&"uhttpd".to_owned())
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn missing_services_and_a_missing_wifi_script_fail_like_the_shell() {
    let mut bare = device();
    bare.services = vec!["dnsmasq".to_owned()];
    bare.has_wifi = false;
    let fleet = fleet(vec![bare]).await;
    let answers = run_all(
        &fleet,
        0,
        &[
            "test -f /etc/init.d/uhttpd && /etc/init.d/uhttpd stop",
            "test -f /sbin/wifi && /sbin/wifi down",
            "/etc/init.d/uhttpd stop",
            "frobnicate --now",
        ],
    )
    .await;
    assert_eq!(answers[0].exit_status, 1);
    assert_eq!(answers[1].exit_status, 1);
    assert_eq!(answers[2].exit_status, 127);
    assert_eq!(
        answers[2].stderr,
        "/bin/ash: /etc/init.d/uhttpd: not found\n"
    );
    assert_eq!(answers[3].exit_status, 127);
    assert_eq!(answers[3].stderr, "/bin/ash: frobnicate: not found\n");
    assert!(fleet.device(0).stopped_services().is_empty());
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_checksum_file_is_removed_and_written_as_the_upgrader_does() {
    let mut with_checksum = device();
    with_checksum.checksum = Some("old".to_owned());
    let fleet = fleet(vec![with_checksum]).await;
    let checksum = "cd".repeat(32);
    let answers = run_all(
        &fleet,
        0,
        &[
            "rm /etc/openwisp/checksum 2> /dev/null",
            "mkdir -p /etc/openwisp",
            &format!("echo {checksum} > /etc/openwisp/firmware_checksum"),
            "cat /etc/openwisp/firmware_checksum",
        ],
    )
    .await;
    // `rm` of a missing file fails with its message hidden by `2> /dev/null`.
    assert_eq!(
        (answers[0].exit_status, answers[0].stderr.as_str()),
        (1, "")
    );
    assert_eq!(answers[1].exit_status, 0);
    assert_eq!(answers[2].exit_status, 0);
    assert_eq!(answers[3].stdout, format!("{checksum}\n"));
    assert_eq!(
        fleet.device(0).file("/etc/openwisp/firmware_checksum"),
        Some(format!("{checksum}\n"))
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn release_and_board_files_describe_the_device() {
    let mut spec = device();
    spec.compat_version = Some("1.1".to_owned());
    spec.release = Release {
        distribution: "OpenWrt".to_owned(),
        version: "22.03.5".to_owned(),
        revision: "r20134-5f15225c1e".to_owned(),
        target: "ramips/mt7621".to_owned(),
        arch: "mipsel_24kc".to_owned(),
    };
    let fleet = fleet(vec![spec, device()]).await;
    let answers = run_all(
        &fleet,
        0,
        &[
            "cat /tmp/sysinfo/board_name",
            "cat /tmp/sysinfo/model",
            "cat /etc/openwrt_release",
            "cat /etc/openwrt_version",
            "uci -q get system.@system[0].compat_version",
            "ubus call system board",
        ],
    )
    .await;
    assert_eq!(answers[0].stdout, format!("{BOARD}\n"));
    assert_eq!(answers[1].stdout, format!("{MODEL}\n"));
    assert_eq!(
        answers[2].stdout,
        "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='22.03.5'\nDISTRIB_REVISION='r20134-5f15225c1e'\n\
         DISTRIB_TARGET='ramips/mt7621'\nDISTRIB_ARCH='mipsel_24kc'\n\
         DISTRIB_DESCRIPTION='OpenWrt 22.03.5 r20134-5f15225c1e'\nDISTRIB_TAINTS=''\n"
    );
    assert_eq!(answers[3].stdout, "r20134-5f15225c1e\n");
    assert_eq!(answers[4].stdout, "1.1\n");
    let board: serde_json::Value =
        serde_json::from_str(&answers[5].stdout).expect("ubus prints JSON");
    assert_eq!(board["board_name"], BOARD);
    assert_eq!(board["model"], MODEL);
    assert_eq!(board["release"]["distribution"], "OpenWrt");
    assert_eq!(board["release"]["version"], "22.03.5");
    assert_eq!(board["release"]["revision"], "r20134-5f15225c1e");
    assert_eq!(board["release"]["target"], "ramips/mt7621");
    assert!(
        answers[5].stdout.contains("\n\t\"release\": {\n\t\t"),
        "tab-indented"
    );

    let answer = run(&fleet, 1, "uci -q get system.@system[0].compat_version").await;
    assert_eq!(
        (
            answer.exit_status,
            answer.stdout.as_str(),
            answer.stderr.as_str()
        ),
        (1, "", "")
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_boot_id_is_a_uuid_that_stays_until_the_next_boot() {
    let fleet = fleet(vec![device(), device()]).await;
    let answers = run_all(
        &fleet,
        0,
        &[
            "cat /proc/sys/kernel/random/boot_id",
            "cat /proc/sys/kernel/random/boot_id",
        ],
    )
    .await;
    let boot_id = fleet.device(0).boot_id();
    assert_eq!(answers[0].stdout, format!("{boot_id}\n"));
    assert_eq!(answers[0].exit_status, 0);
    assert_eq!(answers[1].stdout, answers[0].stdout);
    let parsed: uuid::Uuid = boot_id.parse().expect("a UUID");
    assert_eq!(parsed.hyphenated().to_string(), boot_id);
    assert_ne!(fleet.device(1).boot_id(), boot_id);
    let answer = run(&fleet, 0, "test -f /proc/sys/kernel/random/boot_id").await;
    assert_eq!(answer.exit_status, 0);
    fleet.shutdown().await;
}

#[tokio::test]
async fn ps_lists_processes_like_busybox_and_no_sysupgrade_when_none_runs() {
    let fleet = fleet(vec![device()]).await;
    let answers = run_all(
        &fleet,
        0,
        &["ps w", "ps ww", "/etc/init.d/uhttpd stop", "ps", "ps aux"],
    )
    .await;
    let wide = &answers[0];
    assert_eq!(wide.exit_status, 0);
    let lines: Vec<&str> = wide.stdout.lines().collect();
    assert_eq!(lines[0], "  PID USER       VSZ STAT COMMAND");
    assert_eq!(lines[1], "    1 root      1652 S    /sbin/procd");
    assert!(lines.iter().any(|line| {
        line.ends_with(" /usr/sbin/dropbear -F -P /var/run/dropbear.1.pid -p 22 -K 300 -T 3")
    }));
    assert!(
        lines
            .iter()
            .any(|line| line.contains(" /usr/sbin/uhttpd -f "))
    );
    assert!(lines.last().unwrap().ends_with(" R    ps w"), "{lines:#?}");
    assert!(!wide.stdout.contains("sysupgrade"), "{}", wide.stdout);
    assert!(lines.iter().all(|line| line.len() <= 132));

    // Without `w` the lines are cut to 80 columns; a stopped service's daemon is gone.
    let narrow = &answers[3];
    assert_eq!(narrow.exit_status, 0);
    assert!(narrow.stdout.lines().all(|line| line.len() <= 80));
    assert!(!narrow.stdout.contains("uhttpd"), "{}", narrow.stdout);
    assert!(narrow.stdout.contains(" /usr/sbin/dropbear -F -P "));
    assert!(answers[1].stdout.lines().any(|line| line.len() > 132));

    // Busybox `ps` has no BSD options.
    assert_eq!(answers[4].exit_status, 1);
    assert!(
        answers[4].stderr.contains("invalid option"),
        "{:?}",
        answers[4]
    );
    fleet.shutdown().await;
}

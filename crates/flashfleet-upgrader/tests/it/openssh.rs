//! One end-to-end upgrade against a real OpenSSH server (Debian's `openssh-server`), started by
//! the test on a loopback port with its own configuration, host key and authorized keys.
//!
//! The "device" is a directory: a `ForceCommand` wrapper logs each command exactly as the
//! upgrader sent it, then runs it with the device's absolute paths (`/etc`, `/tmp`, `/sbin`,
//! `/proc`) moved into that directory, and with shell scripts standing in for `uci` and
//! `sysupgrade`. The fake flash rewrites the release file and kills the SSH session's server
//! process, so the client sees the connection end without an exit status, as on a real flash.
//!
//! Skipped, with a notice, where `/usr/sbin/sshd` is missing (the CI script installs it).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flashfleet_boards::test_image::TestImage;
use flashfleet_devsim::ClientCredentials;
use flashfleet_models::UpgradeOptions;
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_upgrader::openwrt::OpenWrtUpgrader;
use flashfleet_upgrader::{ConnectionTarget, UpgradeContext, UpgradeOutcome, Upgrader};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::support::{
    GL_MT300N_V2_BOARD, GL_MT300N_V2_TYPE, ImageFile, RecordingReporter, device_with_id,
    fast_settings, sha256_of_file,
};

const SSHD: &str = "/usr/sbin/sshd";
const IMAGE_NAME: &str =
    "openwrt-23.05.3-ramips-mt76x8-glinet_gl-mt300n-v2-squashfs-sysupgrade.bin";

/// Runs the client's command (logged first) with the device's paths moved under the device
/// root and the device's own programs first in `PATH`.
const DEVICE_SHELL: &str = r#"#!/bin/sh
root="$(dirname "$0")/root"
printf '%s\n' "$SSH_ORIGINAL_COMMAND" >> "$(dirname "$0")/commands.log"
export DEVICE_ROOT="$root"
export PATH="$root/bin:$PATH"
command=$(printf '%s' "$SSH_ORIGINAL_COMMAND" | sed -e "s#\(^\|[ '\"=>]\)/\(etc\|tmp\|sbin\|proc\)/#\1$root/\2/#g")
exec /bin/sh -c "$command"
"#;

/// `uci [-q] get <option>`: the device's UUID dashless and uppercase, as some configurations
/// hold it; no compat version.
const UCI: &str = r#"#!/bin/sh
[ "$1" = "-q" ] && shift
case "$1 $2" in
  "get openwisp.http.uuid") cat "$DEVICE_ROOT/uuid" ;;
  *) exit 1 ;;
esac
"#;

/// `sysupgrade [--test] [flags] <image>`: the test passes for an existing image; a flash
/// installs the next release and kills the SSH session's server process (its first `sshd`
/// ancestor), which ends the connection without an exit status.
const SYSUPGRADE: &str = r#"#!/bin/sh
test_only=0
flags=""
image=""
for argument in "$@"; do
  case "$argument" in
    --test|-T) test_only=1 ;;
    -*) flags="$flags $argument" ;;
    *) image="$argument" ;;
  esac
done
[ -f "$image" ] || { echo "Image file not found." >&2; exit 1; }
[ "$test_only" = 1 ] && exit 0
echo "Commencing upgrade. Closing all shell sessions." >&2
cp "$DEVICE_ROOT/next_release" "$DEVICE_ROOT/etc/openwrt_release"
echo "$flags" > "$DEVICE_ROOT/flashed_with"
pid=$$
while [ "$pid" -gt 1 ]; do
  pid=$(cut -d ' ' -f 4 "/proc/$pid/stat")
  case "$(cat "/proc/$pid/comm")" in sshd|sshd-session) kill -9 "$pid"; exit 0 ;; esac
done
exit 1
"#;

const OLD_RELEASE: &str = "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.0'\n\
    DISTRIB_REVISION='r23497-6637af95aa'\nDISTRIB_TARGET='ramips/mt76x8'\n";
const NEW_RELEASE: &str = "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\n\
    DISTRIB_REVISION='r23809-234f1a2efa'\nDISTRIB_TARGET='ramips/mt76x8'\n";

struct OpenSshDevice {
    directory: tempfile::TempDir,
    port: u16,
    sshd: Child,
}

impl OpenSshDevice {
    fn path(&self, relative: &str) -> PathBuf {
        self.directory.path().join(relative)
    }

    fn commands(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("commands.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn start(
        credentials: &ClientCredentials,
        host_key: &ClientCredentials,
        uuid: &str,
    ) -> OpenSshDevice {
        let directory = tempfile::tempdir().unwrap();
        let base = directory.path();
        let root = base.join("root");
        for folder in [
            "etc/openwisp",
            "etc/init.d",
            "tmp/sysinfo",
            "sbin",
            "bin",
            "proc/sys/vm",
        ] {
            std::fs::create_dir_all(root.join(folder)).unwrap();
        }
        write(&root.join("uuid"), &format!("{uuid}\n"), false);
        write(&root.join("etc/openwrt_release"), OLD_RELEASE, false);
        write(&root.join("next_release"), NEW_RELEASE, false);
        write(
            &root.join("tmp/sysinfo/board_name"),
            &format!("{GL_MT300N_V2_BOARD}\n"),
            false,
        );
        write(
            &root.join("tmp/sysinfo/model"),
            "GL.iNet GL-MT300N-V2\n",
            false,
        );
        write(
            &root.join("proc/meminfo"),
            "MemTotal: 131072 kB\nMemAvailable: 65536 kB\n",
            false,
        );
        write(&root.join("proc/sys/vm/drop_caches"), "", false);
        write(&root.join("bin/uci"), UCI, true);
        write(&root.join("sbin/sysupgrade"), SYSUPGRADE, true);
        write(&base.join("device-shell"), DEVICE_SHELL, true);
        host_key
            .write_private_key(&base.join("host_ed25519"))
            .unwrap();
        write(
            &base.join("authorized_keys"),
            &format!("{}\n", credentials.public_key_openssh),
            false,
        );

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {base}/host_ed25519\n\
             AuthorizedKeysFile {base}/authorized_keys\nPidFile none\nUsePAM no\n\
             PermitRootLogin yes\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nForceCommand {base}/device-shell\nLogLevel INFO\n",
            base = base.display()
        );
        write(&base.join("sshd_config"), &config, false);
        // OpenSSH's privilege separation directory, which the package's service would create.
        let _ = std::fs::create_dir_all("/run/sshd");

        let mut sshd = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(base.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Ready once it says it listens.
        let mut stderr = BufReader::new(sshd.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(20), async {
            let mut seen = Vec::new();
            while let Some(line) = stderr.next_line().await.unwrap() {
                if line.starts_with("Server listening on 127.0.0.1") {
                    return Ok(());
                }
                seen.push(line);
            }
            Err(seen)
        })
        .await;
        match listening {
            Ok(Ok(())) => {}
            Ok(Err(seen)) => panic!("sshd stopped before listening: {seen:#?}"),
            Err(_) => panic!("sshd did not listen within 20 s"),
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        OpenSshDevice {
            directory,
            port,
            sshd,
        }
    }
}

fn write(path: &Path, content: &str, executable: bool) {
    std::fs::write(path, content).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_against_a_real_openssh_server_succeeds_end_to_end() {
    if !Path::new(SSHD).exists() {
        eprintln!(
            "NOTICE: skipping the OpenSSH end-to-end upgrade: {SSHD} is missing \
             (apt-get install openssh-server)"
        );
        return;
    }
    let credentials = ClientCredentials::generate();
    let host_key = ClientCredentials::generate();
    let device_id = uuid::Uuid::new_v4();
    let dashless_uppercase = device_id.simple().to_string().to_uppercase();
    let mut device = OpenSshDevice::start(&credentials, &host_key, &dashless_uppercase).await;

    let image = ImageFile::write(
        &TestImage::builder().payload_len(1024 * 1024).build(),
        IMAGE_NAME,
    );
    let reporter = RecordingReporter::new();
    let username = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
    let context = UpgradeContext {
        device: device_with_id(device_id),
        connection: ConnectionTarget {
            // The first address refuses connections: the next one is tried.
            addresses: vec!["127.0.0.2".to_owned(), "127.0.0.1".to_owned()],
            port: device.port,
            username,
            secret: CredentialsSecret::PrivateKey(SecretText::new(
                &credentials.private_key_openssh,
            )),
            known_host_key: None,
        },
        image: image.upgrade_image(GL_MT300N_V2_TYPE, true),
        options: UpgradeOptions::default(),
        reporter: Arc::clone(&reporter) as _,
        previous_flash: None,
    };

    let outcome = OpenWrtUpgrader::new(fast_settings())
        .upgrade(&context)
        .await;
    let commands = device.commands();
    device.sshd.kill().await.unwrap();

    let outcome = outcome.unwrap_or_else(|error| {
        panic!(
            "{error:?}\ncommands: {commands:#?}\nlog: {:#?}",
            reporter.lines()
        )
    });
    let UpgradeOutcome::Upgraded {
        release: Some(release),
    } = outcome
    else {
        panic!("unexpected outcome {outcome:?}");
    };
    assert_eq!(
        (release.version.as_str(), release.board_name.as_str()),
        ("23.05.3", GL_MT300N_V2_BOARD)
    );

    let path = format!("/tmp/{IMAGE_NAME}");
    assert_eq!(
        commands,
        [
            "uci get openwisp.http.uuid".to_owned(),
            "test -f /etc/openwisp/firmware_checksum".to_owned(),
            "cat /tmp/sysinfo/board_name".to_owned(),
            "cat /tmp/sysinfo/model".to_owned(),
            "uci -q get system.@system[0].compat_version".to_owned(),
            "cat /etc/openwrt_release".to_owned(),
            "rm -rf /tmp/opkg-lists/".to_owned(),
            "sync && echo 3 > /proc/sys/vm/drop_caches".to_owned(),
            "cat /proc/meminfo | grep MemAvailable".to_owned(),
            format!("scp -t '{path}'"),
            format!("/sbin/sysupgrade --test {path}"),
            "cat /proc/sys/kernel/random/boot_id".to_owned(),
            "rm /etc/openwisp/checksum 2> /dev/null".to_owned(),
            format!("/sbin/sysupgrade -v -c {path}"),
            "cat /etc/openwrt_release".to_owned(),
            "cat /tmp/sysinfo/board_name".to_owned(),
            "mkdir -p /etc/openwisp".to_owned(),
            format!("echo {} > /etc/openwisp/firmware_checksum", image.sha256),
        ]
    );
    // The whole image arrived, the flash ran with upstream's default flags, the marker names
    // the image, and the host key of first contact was recorded.
    assert_eq!(
        sha256_of_file(&device.path(&format!("root{path}"))),
        image.sha256
    );
    assert_eq!(
        std::fs::read_to_string(device.path("root/flashed_with"))
            .unwrap()
            .trim(),
        "-v -c"
    );
    assert_eq!(
        std::fs::read_to_string(device.path("root/etc/openwisp/firmware_checksum")).unwrap(),
        format!("{}\n", image.sha256)
    );
    let host_keys = reporter.host_keys();
    assert_eq!(host_keys.len(), 1);
    assert_eq!(
        format!("{} {}", host_keys[0].algorithm, host_keys[0].key),
        host_key.public_key_openssh.trim()
    );
    // This device has no /proc/sys/kernel/random/boot_id: no boot id was recorded.
    assert_eq!(reporter.flash_boot_ids(), [None]);
    let lines = reporter.lines();
    assert!(lines.contains(&"Device identity verified successfully".to_owned()));
    assert!(lines.contains(&"Upgrade completed successfully.".to_owned()));
}

//! What a simulated fleet is made of: devices, their addresses, their faults, the reboot timing
//! and the credentials clients log in with.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use uuid::Uuid;

/// The services upstream's OpenWrt upgrader stops, in its order, when memory is short: the
/// default `/etc/init.d` entries of a simulated device.
pub const UPSTREAM_SERVICES: [&str; 10] = [
    "uhttpd",
    "dnsmasq",
    "openwisp_config",
    "openwisp-config",
    "openwisp-monitoring",
    "cron",
    "rpcd",
    "rssileds",
    "odhcpd",
    "log",
];

/// A whole simulated fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The devices, in order; device `i` gets the `i`-th address of `addressing`.
    pub devices: Vec<DeviceSpec>,
    /// How devices bind.
    pub addressing: Addressing,
    /// How a flash unfolds in time.
    pub reboot: RebootTiming,
    /// The credentials every device accepts.
    pub credentials: ClientCredentials,
}

impl FleetConfig {
    /// A fleet of `devices` on `127.0.0.1` with ephemeral ports, the default reboot timing and
    /// freshly generated credentials.
    pub fn on_ephemeral_ports(devices: Vec<DeviceSpec>) -> FleetConfig {
        FleetConfig {
            devices,
            addressing: Addressing::Ports {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: 0,
            },
            reboot: RebootTiming::default(),
            credentials: ClientCredentials::generate(),
        }
    }
}

/// How the devices of a fleet bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Device `i` listens on `first + i`, all on the same port. Any address of `127.0.0.0/8`
    /// binds on Linux without setup, so this gives every device its own IP, as in a real
    /// network.
    LoopbackRange {
        /// Address of the first device, for example `127.20.0.1`.
        first: Ipv4Addr,
        /// The port every device listens on.
        port: u16,
    },
    /// Device `i` listens on `ip`, port `base_port + i`; with `base_port` 0 every device gets an
    /// ephemeral port chosen by the operating system (kept across reboots).
    Ports {
        /// The address every device listens on.
        ip: IpAddr,
        /// Port of the first device, or 0 for ephemeral ports.
        base_port: u16,
    },
}

/// How a flash unfolds in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebootTiming {
    /// Time between "Commencing upgrade. Closing all shell sessions." and the moment every
    /// session of the device is cut.
    pub close_after: Duration,
    /// How long connections are refused after the sessions were cut, before the device answers
    /// with its new release.
    pub down_for: Duration,
}

impl Default for RebootTiming {
    /// 200 ms until the sessions are cut, then 1 s down.
    fn default() -> Self {
        RebootTiming {
            close_after: Duration::from_millis(200),
            down_for: Duration::from_secs(1),
        }
    }
}

/// The credentials every device of a fleet accepts: a password and an Ed25519 key.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The user name, `root` on OpenWrt.
    pub username: String,
    /// The password accepted with `username`.
    pub password: String,
    /// The client private key, OpenSSH PEM text (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private_key_openssh: String,
    /// The matching public key, one line in OpenSSH format (`ssh-ed25519 AAAA...`); devices
    /// accept this key.
    pub public_key_openssh: String,
}

impl ClientCredentials {
    /// User `root`, password `openwrt` and a fresh Ed25519 key pair.
    pub fn generate() -> ClientCredentials {
        let private_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .expect("the operating system's random generator works");
        let private_key_openssh = private_key
            .to_openssh(LineEnding::LF)
            .expect("an Ed25519 key encodes in OpenSSH format")
            .to_string();
        let public_key_openssh = private_key
            .public_key()
            .to_openssh()
            .expect("an Ed25519 public key encodes in OpenSSH format");
        ClientCredentials {
            username: "root".to_owned(),
            password: "openwrt".to_owned(),
            private_key_openssh,
            public_key_openssh,
        }
    }

    /// Writes the private key to `path`, readable by its owner only (as `ssh` requires).
    pub fn write_private_key(&self, path: &Path) -> io::Result<()> {
        use std::io::Write as _;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt as _;

        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.write_all(self.private_key_openssh.as_bytes())
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .field("private_key_openssh", &"***")
            .field("public_key_openssh", &self.public_key_openssh)
            .finish()
    }
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// What `uci get openwisp.http.uuid` prints: the flashfleet device id.
    pub uuid: Uuid,
    /// `/tmp/sysinfo/board_name`, for example `tplink,archer-c7-v2`.
    pub board_name: String,
    /// `/tmp/sysinfo/model`, for example `TP-Link Archer C7 v2`.
    pub model: String,
    /// The release the device runs at start.
    pub release: Release,
    /// `uci get system.@system[0].compat_version`; `None` means unset (OpenWrt then uses `1.0`).
    pub compat_version: Option<String>,
    /// `MemAvailable` in `/proc/meminfo` with every service running and an empty `/tmp`.
    pub mem_available_kib: u64,
    /// Whether `/proc/meminfo` has a `MemAvailable` line (kernels before 3.14 have only
    /// `MemFree`, which makes the upgrader fall back to it).
    pub reports_mem_available: bool,
    /// The `/etc/init.d/<name>` scripts that exist.
    pub services: Vec<String>,
    /// Whether `/sbin/wifi` exists.
    pub has_wifi: bool,
    /// The initial content of `/etc/openwisp/firmware_checksum` (without newline), if any.
    pub checksum: Option<String>,
    /// The faults the device starts with.
    pub faults: Faults,
}

impl DeviceSpec {
    /// A healthy OpenWrt 23.05.0 device: 64 MiB available, the upstream services and `/sbin/wifi`,
    /// no compat version, no checksum file, no fault.
    pub fn openwrt(uuid: Uuid, board_name: impl Into<String>, model: impl Into<String>) -> Self {
        DeviceSpec {
            uuid,
            board_name: board_name.into(),
            model: model.into(),
            release: Release::default(),
            compat_version: None,
            mem_available_kib: 64 * 1024,
            reports_mem_available: true,
            services: UPSTREAM_SERVICES
                .iter()
                .map(|&name| name.to_owned())
                .collect(),
            has_wifi: true,
            checksum: None,
            faults: Faults::default(),
        }
    }
}

/// An OpenWrt release, as `/etc/openwrt_release` and `ubus call system board` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `DISTRIB_ID`, `OpenWrt`.
    pub distribution: String,
    /// `DISTRIB_RELEASE`, for example `23.05.0` or `SNAPSHOT`.
    pub version: String,
    /// `DISTRIB_REVISION`, for example `r23497-6637af95aa`.
    pub revision: String,
    /// `DISTRIB_TARGET`, for example `ath79/generic`.
    pub target: String,
    /// `DISTRIB_ARCH`, for example `mips_24kc`.
    pub arch: String,
}

impl Release {
    /// `DISTRIB_DESCRIPTION`: distribution, version and revision.
    pub fn description(&self) -> String {
        format!("{} {} {}", self.distribution, self.version, self.revision)
    }
}

impl Default for Release {
    /// OpenWrt 23.05.0 r23497-6637af95aa on ath79/generic (mips_24kc).
    fn default() -> Self {
        Release {
            distribution: "OpenWrt".to_owned(),
            version: "23.05.0".to_owned(),
            revision: "r23497-6637af95aa".to_owned(),
            target: "ath79/generic".to_owned(),
            arch: "mips_24kc".to_owned(),
        }
    }
}

/// Faults injected into one device; change them at run time with
/// [`SimDevice::set_faults`](crate::SimDevice::set_faults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Cut the connection once an upload has received this many bytes. Fires once: the field
    /// is cleared when it does, so the next attempt succeeds.
    pub drop_during_upload_after_bytes: Option<u64>,
    /// Throttle uploads to this many bytes per second.
    pub link_bytes_per_sec: Option<u64>,
    /// A trickling link that keeps moving: the device reads one chunk of 32 KiB of an upload
    /// (`scp -t` or `cat >`) per this delay. Connections opened while it is set get a receive
    /// window of that size, so the client is never more than about a window ahead of the
    /// device: each of its blocking calls waits one or two delays, and a per-call stall
    /// timeout longer than that never fires, while the whole upload takes its number of
    /// chunks times the delay.
    pub upload_chunk_delay: Option<Duration>,
    /// After flashing, refuse connections forever.
    pub never_comes_back: bool,
    /// Reboot after flashing but keep the old release (a failed flash that fell back).
    pub comes_back_with_old_release: bool,
    /// `uci get openwisp.http.uuid` prints another UUID than the device's.
    pub identity_mismatch: bool,
    /// `uci get openwisp.http.uuid` finds nothing (`uci: Entry not found`, exit 1).
    pub uuid_missing: bool,
    /// The flash command prints its messages and then neither returns nor closes; the device
    /// does not reboot, and its process list shows `sysupgrade` running from then on (even
    /// after the client closed the session).
    pub sysupgrade_hangs: bool,
    /// Stopping services frees no memory, so the upgrader's second memory check fails too.
    pub low_memory: bool,
}

//! One simulated device: its state (identity, release, files, uploads, services, memory, host
//! key, command log) and [`SimDevice`], the handle tests inspect and steer it with.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flashfleet_boards::{ImageInspection, ImageMetadata};
use russh::keys::{HashAlg, PrivateKey};
use serde::Serialize as _;
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::{DeviceSpec, Faults, Release};

/// A file received by a device (through `scp -t` or `cat >`), summarized: the simulator never
/// keeps the bytes of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadedFile {
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the bytes received, lowercase hex.
    pub sha256: String,
    /// Whether the file carries fwtool metadata that parses (what `fwtool -i` would extract).
    pub metadata_present: bool,
    /// Whether the file carries a fwtool signature chunk.
    pub signature_present: bool,
    /// Whether the upload ended normally; `false` when the connection broke in the middle,
    /// which leaves a truncated file behind, as OpenSSH's and dropbear's `scp` do.
    pub complete: bool,
}

/// Where a device is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DevicePhase {
    /// Answering SSH.
    Running,
    /// `sysupgrade` said "Commencing upgrade"; the sessions are about to be cut.
    Flashing,
    /// Sessions cut, connections refused: flashing and rebooting (forever with
    /// [`Faults::never_comes_back`]).
    Down,
}

/// A running simulated device. Cheap to clone; every clone sees the same device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub(crate) shared: Arc<DeviceShared>,
}

impl SimDevice {
    /// The address the device listens on (the same across reboots).
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// The device's UUID (what `uci get openwisp.http.uuid` prints unless a fault says
    /// otherwise).
    pub fn uuid(&self) -> Uuid {
        self.shared.lock().uuid
    }

    /// The release the device runs now.
    pub fn release(&self) -> Release {
        self.shared.lock().release.clone()
    }

    /// How many flash commands started a flash on the device: a `sysupgrade` (not `--test`)
    /// that accepted its image and went on to cut the sessions, counted when it cut them. A
    /// hanging `sysupgrade` ([`Faults::sysupgrade_hangs`]) never gets there and is not counted;
    /// [`SimDevice::sysupgrade_running`] shows it.
    pub fn flash_count(&self) -> u32 {
        self.shared.lock().flash_count
    }

    /// The boot id the device prints for `cat /proc/sys/kernel/random/boot_id`: a random UUID,
    /// hyphenated lowercase as Linux prints it, new at every boot (when the device comes back
    /// after a flash, whatever release it then runs).
    pub fn boot_id(&self) -> String {
        self.shared.lock().boot_id.hyphenated().to_string()
    }

    /// Whether a `sysupgrade` process runs, as `ps` shows it: from "Commencing upgrade" until
    /// the sessions are cut, and for good with [`Faults::sysupgrade_hangs`].
    pub fn sysupgrade_running(&self) -> bool {
        self.shared.lock().sysupgrade.is_some()
    }

    /// Where the device is in its life cycle.
    pub fn phase(&self) -> DevicePhase {
        self.shared.lock().phase.as_phase()
    }

    /// The exact content of a small text file, for example `/etc/openwisp/firmware_checksum`
    /// (with the newline `echo` wrote), the generated system files (`/etc/openwrt_release`,
    /// `/tmp/sysinfo/board_name`, `/proc/meminfo`, ...) or a small uploaded text file.
    pub fn file(&self, path: &str) -> Option<String> {
        self.shared.lock().read_file(path)
    }

    /// What was uploaded to `path` and is still there (`/tmp` is emptied by a reboot).
    pub fn uploaded(&self, path: &str) -> Option<UploadedFile> {
        self.shared
            .lock()
            .uploads
            .get(path)
            .map(|upload| upload.file.clone())
    }

    /// The most uploads (SCP or `cat >`) the device received at once since it started: more
    /// than one means two clients wrote images to it at the same time.
    pub fn most_uploads_at_once(&self) -> u32 {
        self.shared.lock().most_uploads_at_once
    }

    /// The services stopped through `/etc/init.d/<name> stop` and not started again, in the
    /// order they were stopped.
    pub fn stopped_services(&self) -> Vec<String> {
        self.shared.lock().stopped_services.clone()
    }

    /// SHA-256 fingerprint of the current host key, as `ssh-keygen -l` prints it
    /// (`SHA256:...`). Changes after a flash with `-n`.
    pub fn host_key_fingerprint(&self) -> String {
        self.shared.lock().host_key_fingerprint()
    }

    /// Every exec command received, in order, exactly as sent.
    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().commands.clone()
    }

    /// The faults in effect now.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the faults; takes effect for the next command or upload chunk.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Current `MemAvailable` in KiB, as `/proc/meminfo` reports it.
    pub fn mem_available_kib(&self) -> u64 {
        self.shared.lock().mem_available_kib()
    }
}

/// What every connection handler and the device task share.
#[derive(Debug)]
pub(crate) struct DeviceShared {
    pub(crate) address: SocketAddr,
    state: Mutex<DeviceState>,
    /// Signalled once when the device goes from running to flashing.
    pub(crate) flash_started: Notify,
    /// A duplicate of every open connection's socket, to cut it as a dying device would.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection_id: AtomicU64,
}

impl DeviceShared {
    pub(crate) fn new(address: SocketAddr, state: DeviceState) -> DeviceShared {
        DeviceShared {
            address,
            state: Mutex::new(state),
            flash_started: Notify::new(),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, DeviceState> {
        // A panic while holding the lock leaves consistent-enough state for a simulator.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn register_connection(&self, socket: TcpStream) -> u64 {
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        self.connections_lock().insert(id, socket);
        id
    }

    pub(crate) fn forget_connection(&self, id: u64) {
        self.connections_lock().remove(&id);
    }

    /// Shuts one connection down (both directions): the client sees the stream end.
    pub(crate) fn cut_connection(&self, id: u64) {
        if let Some(socket) = self.connections_lock().remove(&id) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Shuts every connection down, as the death of all processes would.
    pub(crate) fn cut_all_connections(&self) {
        for (_, socket) in self.connections_lock().drain() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Starts a flash unless one is under way; the device task then cuts the sessions.
    pub(crate) fn begin_flash(&self, plan: FlashPlan) {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Running) {
            state.phase = Phase::Flashing(plan);
            drop(state);
            self.flash_started.notify_one();
        }
    }

    fn connections_lock(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a flash will change when the device comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlashPlan {
    pub(crate) release: Release,
    pub(crate) keep_config: bool,
    /// The image's compat version, which the device takes when its configuration is reset.
    pub(crate) image_compat_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    Flashing(FlashPlan),
    Down(Option<FlashPlan>),
}

impl Phase {
    fn as_phase(&self) -> DevicePhase {
        match self {
            Phase::Running => DevicePhase::Running,
            Phase::Flashing(_) => DevicePhase::Flashing,
            Phase::Down(_) => DevicePhase::Down,
        }
    }
}

/// An upload as stored: the summary and what inspecting it gave.
#[derive(Debug, Clone)]
pub(crate) struct StoredUpload {
    pub(crate) file: UploadedFile,
    /// The inspection, or why the trailer chain could not be read.
    pub(crate) inspection: Result<ImageInspection, String>,
}

impl StoredUpload {
    pub(crate) fn metadata(&self) -> Result<Option<&ImageMetadata>, &str> {
        match &self.inspection {
            Ok(inspection) => Ok(inspection.metadata.as_ref()),
            Err(problem) => Err(problem),
        }
    }
}

/// The mutable state of one device.
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub(crate) uuid: Uuid,
    pub(crate) board_name: String,
    pub(crate) model: String,
    pub(crate) release: Release,
    pub(crate) compat_version: Option<String>,
    base_mem_available_kib: u64,
    reports_mem_available: bool,
    pub(crate) services: Vec<String>,
    pub(crate) has_wifi: bool,
    pub(crate) faults: Faults,
    /// Small text files written by commands or uploads, by absolute path.
    pub(crate) files: BTreeMap<String, String>,
    pub(crate) uploads: BTreeMap<String, StoredUpload>,
    /// Uploads receiving right now, and the most ever received at once.
    uploads_in_flight: u32,
    most_uploads_at_once: u32,
    pub(crate) stopped_services: Vec<String>,
    pub(crate) wifi_down: bool,
    pub(crate) flash_count: u32,
    host_key: PrivateKey,
    pub(crate) commands: Vec<String>,
    pub(crate) phase: Phase,
    /// `/proc/sys/kernel/random/boot_id`: new at every boot.
    pub(crate) boot_id: Uuid,
    /// The `sysupgrade` process that commenced an upgrade and has not died yet.
    pub(crate) sysupgrade: Option<Process>,
}

/// A process `ps` lists besides the device's resident ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) pid: u32,
    /// Its command line, arguments separated by spaces (`/proc/<pid>/cmdline`).
    pub(crate) command_line: String,
}

/// The process id the `index`-th command received by the device runs with (its position in
/// [`DeviceState::commands`]), above the resident daemons'.
pub(crate) fn pid_of_command(index: usize) -> u32 {
    u32::try_from(index).map_or(u32::MAX, |index| index.saturating_add(2000))
}

const CHECKSUM_PATH: &str = "/etc/openwisp/firmware_checksum";

impl DeviceState {
    pub(crate) fn new(spec: DeviceSpec, host_key: PrivateKey) -> DeviceState {
        let mut files = BTreeMap::new();
        if let Some(checksum) = spec.checksum {
            files.insert(CHECKSUM_PATH.to_owned(), format!("{checksum}\n"));
        }
        DeviceState {
            uuid: spec.uuid,
            board_name: spec.board_name,
            model: spec.model,
            release: spec.release,
            compat_version: spec.compat_version,
            base_mem_available_kib: spec.mem_available_kib,
            reports_mem_available: spec.reports_mem_available,
            services: spec.services,
            has_wifi: spec.has_wifi,
            faults: spec.faults,
            files,
            uploads: BTreeMap::new(),
            uploads_in_flight: 0,
            most_uploads_at_once: 0,
            stopped_services: Vec::new(),
            wifi_down: false,
            flash_count: 0,
            host_key,
            commands: Vec::new(),
            phase: Phase::Running,
            boot_id: Uuid::new_v4(),
            sysupgrade: None,
        }
    }

    pub(crate) fn host_key(&self) -> &PrivateKey {
        &self.host_key
    }

    pub(crate) fn host_key_fingerprint(&self) -> String {
        self.host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The UUID `uci` prints: the device's, or with [`Faults::identity_mismatch`] its bitwise
    /// complement.
    pub(crate) fn configured_uuid(&self) -> Option<Uuid> {
        if self.faults.uuid_missing {
            None
        } else if self.faults.identity_mismatch {
            Some(Uuid::from_u128(!self.uuid.as_u128()))
        } else {
            Some(self.uuid)
        }
    }

    /// `MemAvailable`: the base amount, plus up to half of it again as services are stopped
    /// (nothing with [`Faults::low_memory`]), minus what files in `/tmp` (a RAM file system)
    /// take.
    pub(crate) fn mem_available_kib(&self) -> u64 {
        let freed = if self.faults.low_memory || self.services.is_empty() {
            0
        } else {
            self.base_mem_available_kib / 2 * self.stopped_services.len() as u64
                / self.services.len() as u64
        };
        let in_tmp: u64 = self
            .uploads
            .iter()
            .filter(|(path, _)| path.starts_with("/tmp/"))
            .map(|(_, upload)| upload.file.size)
            .sum::<u64>()
            / 1024;
        (self.base_mem_available_kib + freed).saturating_sub(in_tmp)
    }

    fn meminfo(&self) -> String {
        let available = self.mem_available_kib();
        let total = self.base_mem_available_kib * 2;
        let mut meminfo = String::new();
        let mut line = |label: &str, kib: u64| {
            let _ = writeln!(meminfo, "{label:<16}{kib:>8} kB");
        };
        line("MemTotal:", total);
        line("MemFree:", available * 3 / 4);
        if self.reports_mem_available {
            line("MemAvailable:", available);
        }
        line("Buffers:", available / 32);
        line("Cached:", available / 8);
        meminfo
    }

    fn openwrt_release(&self) -> String {
        let release = &self.release;
        format!(
            "DISTRIB_ID='{}'\nDISTRIB_RELEASE='{}'\nDISTRIB_REVISION='{}'\nDISTRIB_TARGET='{}'\n\
             DISTRIB_ARCH='{}'\nDISTRIB_DESCRIPTION='{}'\nDISTRIB_TAINTS=''\n",
            release.distribution,
            release.version,
            release.revision,
            release.target,
            release.arch,
            release.description()
        )
    }

    fn os_release(&self) -> String {
        let release = &self.release;
        format!(
            "NAME=\"{dist}\"\nVERSION=\"{version}\"\nID=\"openwrt\"\nID_LIKE=\"lede openwrt\"\n\
             PRETTY_NAME=\"{dist} {version}\"\nVERSION_ID=\"{version_id}\"\n\
             HOME_URL=\"https://openwrt.org/\"\nBUILD_ID=\"{revision}\"\n\
             OPENWRT_BOARD=\"{target}\"\nOPENWRT_ARCH=\"{arch}\"\nOPENWRT_TAINTS=\"\"\n\
             OPENWRT_DEVICE_MANUFACTURER=\"OpenWrt\"\nOPENWRT_RELEASE=\"{description}\"\n",
            dist = release.distribution,
            version = release.version,
            version_id = release.version.to_lowercase(),
            revision = release.revision,
            target = release.target,
            arch = release.arch,
            description = release.description(),
        )
    }

    /// `ubus call system board`, tab-indented like ubus prints it.
    pub(crate) fn ubus_system_board(&self) -> String {
        let release = &self.release;
        let board = json!({
            "kernel": "5.15.134",
            "hostname": "OpenWrt",
            "system": "simulated by flashfleet-devsim",
            "model": self.model,
            "board_name": self.board_name,
            "rootfs_type": "squashfs",
            "release": {
                "distribution": release.distribution,
                "version": release.version,
                "revision": release.revision,
                "target": release.target,
                "description": release.description(),
            }
        });
        pretty_json(&board)
    }

    /// `ubus call system info`: uptime and memory.
    pub(crate) fn ubus_system_info(&self) -> String {
        let available = self.mem_available_kib() * 1024;
        let info = json!({
            "localtime": chrono::Utc::now().timestamp(),
            "uptime": 3600,
            "load": [0, 0, 0],
            "memory": {
                "total": self.base_mem_available_kib * 2 * 1024,
                "free": available * 3 / 4,
                "shared": 0,
                "buffered": available / 32,
                "available": available,
                "cached": available / 8,
            },
        });
        pretty_json(&info)
    }

    /// Files that exist whatever was written: executables and generated system files.
    fn is_system_file(&self, path: &str) -> bool {
        if let Some(service) = path.strip_prefix("/etc/init.d/") {
            return self.services.iter().any(|name| name == service);
        }
        match path {
            "/sbin/wifi" => self.has_wifi,
            "/sbin/sysupgrade"
            | "/sbin/uci"
            | "/bin/ubus"
            | "/bin/ash"
            | "/bin/sh"
            | "/usr/bin/scp"
            | "/proc/sys/vm/drop_caches" => true,
            _ => self.generated_file(path).is_some(),
        }
    }

    fn generated_file(&self, path: &str) -> Option<String> {
        Some(match path {
            "/tmp/sysinfo/board_name" => format!("{}\n", self.board_name),
            "/tmp/sysinfo/model" => format!("{}\n", self.model),
            "/etc/openwrt_release" => self.openwrt_release(),
            "/etc/openwrt_version" => format!("{}\n", self.release.revision),
            "/usr/lib/os-release" | "/etc/os-release" => self.os_release(),
            "/proc/meminfo" => self.meminfo(),
            "/proc/sys/kernel/random/boot_id" => format!("{}\n", self.boot_id.hyphenated()),
            _ => return None,
        })
    }

    /// The content of a readable text file, or `None`.
    pub(crate) fn read_file(&self, path: &str) -> Option<String> {
        self.generated_file(path)
            .or_else(|| self.files.get(path).cloned())
    }

    /// Whether `path` names a file (`test -f`).
    pub(crate) fn file_exists(&self, path: &str) -> bool {
        self.is_system_file(path)
            || self.files.contains_key(path)
            || self.uploads.contains_key(path)
    }

    /// Whether `path` names a directory (`test -d`): a parent of any file, or a standard one.
    pub(crate) fn directory_exists(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        if path.is_empty()
            || matches!(
                path,
                "/tmp" | "/etc" | "/etc/init.d" | "/etc/config" | "/root" | "/proc" | "/sbin"
            )
        {
            return true;
        }
        let prefix = format!("{path}/");
        self.files
            .keys()
            .chain(self.uploads.keys())
            .any(|file| file.starts_with(&prefix))
    }

    /// Writes a text file (as a shell redirection does), replacing any upload at that path.
    pub(crate) fn write_file(&mut self, path: &str, content: &str, append: bool) {
        self.uploads.remove(path);
        let file = self.files.entry(path.to_owned()).or_default();
        if !append {
            file.clear();
        }
        file.push_str(content);
    }

    /// Removes a file; returns whether something was there.
    pub(crate) fn remove_file(&mut self, path: &str) -> bool {
        let removed_file = self.files.remove(path).is_some();
        let removed_upload = self.uploads.remove(path).is_some();
        removed_file || removed_upload
    }

    /// Removes every file under `directory`; returns whether something was there.
    pub(crate) fn remove_tree(&mut self, directory: &str) -> bool {
        let prefix = format!("{}/", directory.trim_end_matches('/'));
        let before = self.files.len() + self.uploads.len();
        self.files.retain(|path, _| !path.starts_with(&prefix));
        self.uploads.retain(|path, _| !path.starts_with(&prefix));
        before != self.files.len() + self.uploads.len()
    }

    /// Forgets what was at `path` before an upload starts writing it (the file is truncated).
    pub(crate) fn begin_upload(&mut self, path: &str) {
        self.files.remove(path);
        self.uploads.remove(path);
        self.uploads_in_flight += 1;
        self.most_uploads_at_once = self.most_uploads_at_once.max(self.uploads_in_flight);
    }

    pub(crate) fn store_upload(
        &mut self,
        path: String,
        upload: StoredUpload,
        text: Option<String>,
    ) {
        self.uploads_in_flight = self.uploads_in_flight.saturating_sub(1);
        self.files.remove(&path);
        if let Some(text) = text {
            self.files.insert(path.clone(), text);
        }
        self.uploads.insert(path, upload);
    }

    /// The sessions were cut: what the device loses at once (RAM, running services).
    pub(crate) fn go_down(&mut self) {
        let plan = match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Flashing(plan) => Some(plan),
            Phase::Down(plan) => plan,
            Phase::Running => None,
        };
        self.phase = Phase::Down(plan);
        self.flash_count += 1;
        // Every process dies with the sessions, the flashing `sysupgrade` too.
        self.sysupgrade = None;
        self.files.retain(|path, _| !path.starts_with("/tmp/"));
        self.uploads.retain(|path, _| !path.starts_with("/tmp/"));
        self.stopped_services.clear();
        self.wifi_down = false;
    }

    /// Whether the flash under way drops the configuration (and so the host key) when the
    /// device comes back.
    pub(crate) fn flash_resets_config(&self) -> bool {
        !self.faults.comes_back_with_old_release
            && matches!(&self.phase, Phase::Down(Some(plan)) if !plan.keep_config)
    }

    /// The device boots again: it takes the flashed release (unless
    /// [`Faults::comes_back_with_old_release`]) and, when the configuration was not kept,
    /// loses `/etc/openwisp` and gets a new host key.
    pub(crate) fn come_back(&mut self, new_host_key: impl FnOnce() -> Option<PrivateKey>) {
        // A new boot: a new boot id, whatever the device runs now.
        self.boot_id = Uuid::new_v4();
        self.sysupgrade = None;
        let plan = match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Down(plan) => plan,
            Phase::Flashing(plan) => Some(plan),
            Phase::Running => None,
        };
        let Some(plan) = plan else { return };
        if self.faults.comes_back_with_old_release {
            return;
        }
        self.release = plan.release;
        if !plan.keep_config {
            self.remove_tree("/etc/openwisp");
            if plan.image_compat_version.is_some() {
                self.compat_version = plan.image_compat_version;
            }
            if let Some(host_key) = new_host_key() {
                self.host_key = host_key;
            }
        }
    }
}

fn pretty_json(value: &serde_json::Value) -> String {
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
    // Serializing a `Value` into a `Vec` cannot fail.
    let _ = value.serialize(&mut serializer);
    let mut text = String::from_utf8_lossy(&text).into_owned();
    text.push('\n');
    text
}

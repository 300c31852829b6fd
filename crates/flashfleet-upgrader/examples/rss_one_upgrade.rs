//! Peak memory of one OpenWrt upgrade of a 64 MiB image, measured on this process.
//!
//! Starts one simulated device (flashfleet-devsim, in this process; it streams uploads and keeps
//! nothing whole), writes a 64 MiB sysupgrade image to a temporary file, resets the kernel's
//! peak-RSS mark (`/proc/self/clear_refs`), upgrades the device, and prints the resident set
//! before and the peak during the upgrade (`VmRSS`, `VmHWM` of `/proc/self/status`).
//!
//! ```text
//! cargo run --release -p flashfleet-upgrader --example rss_one_upgrade [-- <MiB>]
//! ```
//!
//! Linux only. Exits with status 1 when the peak exceeds the idle process by 32 MiB or more.

#![expect(clippy::print_stdout, reason = "an example prints its measurements")]

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flashfleet_boards::test_image::TestImage;
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::{DeviceId, NewDevice, OrganizationId, UpgradeOptions, UpgradePhase};
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use flashfleet_upgrader::{
    ConnectionTarget, HostKey, ImageSource, ReportError, Reporter, UpgradeContext, UpgradeImage,
    UpgradeOutcome, Upgrader,
};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncRead;

const LIMIT_MIB: u64 = 32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let image_mib: u64 = std::env::args()
        .nth(1)
        .map(|argument| argument.parse())
        .transpose()?
        .unwrap_or(64);

    // The image: streamed to a file in 64 KiB blocks, hashed by streaming it back.
    let directory = tempfile::tempdir()?;
    let image_path = directory
        .path()
        .join("openwrt-rss-test-squashfs-sysupgrade.bin");
    let test_image = TestImage::builder()
        .payload_len(image_mib * 1024 * 1024)
        .build();
    test_image.write_to(std::io::BufWriter::new(std::fs::File::create(&image_path)?))?;
    let size = std::fs::metadata(&image_path)?.len();
    let sha256 = sha256_of(&image_path)?;
    let metadata = flashfleet_boards::inspect_file(&image_path)?.metadata;

    let board_name = "glinet,gl-mt300n-v2";
    let mut spec = DeviceSpec::openwrt(uuid::Uuid::new_v4(), board_name, "GL-MT300N-V2");
    spec.mem_available_kib = (image_mib + 64) * 1024;
    let fleet = Fleet::start(FleetConfig {
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
    .await?;
    let device = fleet.device(0);
    let credentials = fleet.credentials();

    let mut new_device = NewDevice::new(OrganizationId::new(), "rss", "00:11:22:33:44:55".parse()?);
    new_device.id = Some(DeviceId(device.uuid()));
    let context = UpgradeContext {
        device: new_device.into_device(),
        connection: ConnectionTarget {
            addresses: vec![device.address().ip().to_string()],
            port: device.address().port(),
            username: credentials.username.clone(),
            secret: CredentialsSecret::PrivateKey(SecretText::new(
                &credentials.private_key_openssh,
            )),
            known_host_key: None,
        },
        image: UpgradeImage {
            file_name: "builds/1/openwrt-rss-test-squashfs-sysupgrade.bin".to_owned(),
            image_type: "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin".to_owned(),
            size,
            sha256: sha256.clone(),
            metadata,
            source: Arc::new(FileSource(image_path)),
        },
        options: UpgradeOptions::default(),
        reporter: Arc::new(QuietReporter),
        previous_flash: None,
    };
    let upgrader = OpenWrtUpgrader::new(OpenWrtSettings {
        reconnect_delay: Duration::from_millis(200),
        reconnect_retry_delay: Duration::from_millis(100),
        reconnect_max_retries: 50,
        ..OpenWrtSettings::default()
    });

    // Idle: everything set up, nothing transferred. From here the peak mark follows the upgrade.
    let idle = memory_status()?;
    reset_peak()?;
    let started = Instant::now();
    let outcome = upgrader.upgrade(&context).await?;
    let elapsed = started.elapsed();
    let during = memory_status()?;

    let checksum = device.file("/etc/openwisp/firmware_checksum");
    fleet.shutdown().await;

    let growth_kib = during.peak_kib.saturating_sub(idle.rss_kib);
    println!("image: {image_mib} MiB ({size} bytes), upgraded in {elapsed:.2?}");
    println!("outcome: {outcome:?}");
    println!("idle VmRSS:            {:>8} KiB", idle.rss_kib);
    println!("peak VmHWM (upgrade):  {:>8} KiB", during.peak_kib);
    println!("VmRSS after:           {:>8} KiB", during.rss_kib);
    println!(
        "peak above idle:       {growth_kib:>8} KiB ({:.1} MiB; limit {LIMIT_MIB} MiB)",
        growth_kib as f64 / 1024.0
    );
    let upgraded = matches!(outcome, UpgradeOutcome::Upgraded { .. })
        && checksum.as_deref().map(str::trim) == Some(sha256.as_str());
    if !upgraded {
        return Err("the upgrade did not end with the checksum marker on the device".into());
    }
    if growth_kib >= LIMIT_MIB * 1024 {
        println!("FAIL: the peak exceeds the limit");
        std::process::exit(1);
    }
    println!("OK");
    Ok(())
}

struct MemoryStatus {
    rss_kib: u64,
    peak_kib: u64,
}

fn memory_status() -> std::io::Result<MemoryStatus> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Ok(MemoryStatus {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    })
}

/// Resets `VmHWM` to the current resident set (Linux 4.0 and later).
fn reset_peak() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

fn sha256_of(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

struct FileSource(PathBuf);

#[async_trait]
impl ImageSource for FileSource {
    async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(tokio::fs::File::open(&self.0).await?))
    }
}

/// Accepts every report and keeps nothing (the measurement is about the upgrade).
struct QuietReporter;

#[async_trait]
impl Reporter for QuietReporter {
    async fn progress(&self, _: UpgradePhase, _: u8, _: Option<&str>) -> Result<(), ReportError> {
        Ok(())
    }

    async fn log(&self, _: &str) -> Result<(), ReportError> {
        Ok(())
    }

    async fn is_cancelled(&self) -> bool {
        false
    }

    async fn record_host_key(&self, _: &HostKey) -> Result<(), ReportError> {
        Ok(())
    }
}

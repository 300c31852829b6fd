//! Benchmark drivers of flashfleet.
//!
//! `mass-upgrade` measures one mass upgrade of a simulated fleet against the ideal time of the
//! same work, both in the same run and against the same fleet:
//!
//! 1. it starts `--devices` simulated OpenWrt devices (flashfleet-devsim, in this process), one
//!    per loopback address from `--first-ip`, all of the same board, whose sessions are cut
//!    100 ms after the flash and which stay down `--reboot-secs`;
//! 2. it writes one `--image-mib` MiB sysupgrade image with fwtool metadata for that board;
//! 3. it fills a SQLite database: builds 1.0 and 2.0 of one category, the devices on 1.0, their
//!    `openwrt-ssh` connections with the fleet's password;
//! 4. it runs one mass upgrade of build 2.0 through the engine and the OpenWrt upgrader, with
//!    `reconnect_delay` equal to the reboot time, and checks that every operation succeeded and
//!    every device runs the new release after exactly one flash;
//! 5. it uploads the same image to every device again with plain libssh2 SCP, as many at once
//!    as the engine uploads (`--max-uploads`), on the blocking pool: the ideal time is that
//!    upload time plus the reboot time.
//!
//! ```text
//! cargo run --release -p flashfleet-bench -- mass-upgrade --devices 1000 --image-mib 8 --reboot-secs 5
//! ```
//!
//! The last line printed is `ratio=<x> wall_s=<x> ideal_s=<x> peak_rss_mib=<x>`. Linux only
//! (`/proc/self`).
//!
//! `api` measures the REST API under load: the build list with 10,000 builds and the detail of
//! a mass upgrade with 10,000 operations, on SQLite or PostgreSQL (see the `api` module).
//!
//! ```text
//! cargo run --release -p flashfleet-bench -- api
//! cargo run --release -p flashfleet-bench -- api --database-url postgres://postgres@127.0.0.1:5432/flashfleet_test
//! ```

#![expect(clippy::print_stdout, reason = "a benchmark prints its measurements")]

mod api;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::{Args, Parser, Subcommand};
use flashfleet_boards::test_image::TestImage;
use flashfleet_db::{Db, DbConfig, SecretKey};
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use flashfleet_engine::{
    Engine, EngineConfig, Event, EventBus, FirmwareFiles, MassUpgradeRequest, RetryPolicy,
};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::{
    DeviceRepository, DirectoryRepository, FirmwareRepository, OperationFilter, UpgradeRepository,
};
use flashfleet_models::{
    BatchId, ConnectionType, DeviceFirmware, DeviceId, FirmwareImage, NewBuild, NewCategory,
    NewCredentials, NewDevice, NewDeviceConnection, NewFirmwareImage, NewOrganization, OperationId,
    PageRequest, Scope, StorageKey, UpgradePhase, UpgradeStatus,
};
use flashfleet_upgrader::UpgraderRegistry;
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The image type every device gets, its model in the image map, and its board name.
const IMAGE_TYPE: &str = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin";
const MODEL: &str = "TP-Link Archer C7 v2";
const BOARD_NAME: &str = "tplink,archer-c7-v2";
/// The release build 2.0 carries (in its metadata), and the devices report after the flash.
const NEW_RELEASE: &str = "23.05.3";
/// Where the raw uploads of the ideal go on each device (not the upgrader's path).
const RAW_REMOTE_PATH: &str = "/tmp/flashfleet-bench-raw.bin";
/// The upload buffer of the raw uploads, as the upgrader's.
const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;
/// The longest a mass upgrade may take before the benchmark gives up.
const MASS_UPGRADE_LIMIT: Duration = Duration::from_secs(1800);

type BenchError = Box<dyn std::error::Error + Send + Sync>;
type BenchResult<T> = Result<T, BenchError>;

#[derive(Parser, Debug)]
#[command(name = "flashfleet-bench", about = "Benchmark drivers of flashfleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One mass upgrade of a simulated fleet, against raw SSH uploads of the same image.
    MassUpgrade(MassUpgradeArgs),
    /// The REST API under load: the build list and a mass upgrade's detail.
    Api(api::ApiArgs),
}

#[derive(Args, Debug, Clone)]
struct MassUpgradeArgs {
    /// Simulated devices in the fleet.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Size of the image payload in MiB.
    #[arg(long, default_value_t = 8)]
    image_mib: u64,
    /// How long a device stays down after its flash (and the upgrader's reconnect delay).
    #[arg(long, default_value_t = 5.0)]
    reboot_secs: f64,
    /// Upgrades in flight at once (the engine's `max_in_flight`, and the parallelism of the raw
    /// uploads); every device by default.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Image uploads at once (the engine's `max_uploads`, and the parallelism of the raw
    /// uploads); the engine's default by default.
    #[arg(long)]
    max_uploads: Option<usize>,
    /// Threads of tokio's blocking pool, where libssh2 calls, SQLite queries and file reads
    /// run (tokio's default is 512).
    #[arg(long, default_value_t = 512)]
    blocking_threads: usize,
    /// Worker threads of the runtime; the number of cores by default.
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Worker threads of the simulated devices' own runtime; 0 runs them on the benchmark's
    /// runtime, beside the engine.
    #[arg(long, default_value_t = 2)]
    devsim_threads: usize,
    /// A read buffer in front of the engine's image file, in KiB (0: none). Each read of a
    /// bare `tokio::fs::File` is one trip through the blocking pool.
    #[arg(long, default_value_t = 0)]
    file_buffer_kib: usize,
    /// Connections of the SQLite pool.
    #[arg(long, default_value_t = 10)]
    db_pool: usize,
    /// Address of the first simulated device; device `i` listens on this address plus `i`.
    #[arg(long, default_value = "127.30.0.1")]
    first_ip: Ipv4Addr,
    /// The port every simulated device listens on.
    #[arg(long, default_value_t = 2222)]
    port: u16,
}

fn main() -> BenchResult<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Api(arguments) => api::run(&arguments).map(drop),
        Command::MassUpgrade(arguments) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder
                .enable_all()
                .max_blocking_threads(arguments.blocking_threads.max(1));
            if let Some(worker_threads) = arguments.worker_threads {
                builder.worker_threads(worker_threads.max(1));
            }
            let runtime = builder.build()?;
            // The simulated devices stand for other machines: by default they run on their own
            // runtime, so their SSH decryption and hashing do not queue the engine's tasks.
            let devsim_runtime = match arguments.devsim_threads {
                0 => None,
                threads => Some(
                    tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .worker_threads(threads)
                        .thread_name("devsim")
                        .build()?,
                ),
            };
            let fleet_config = fleet_config(&arguments)?;
            let fleet = match &devsim_runtime {
                Some(devsim_runtime) => devsim_runtime.block_on(Fleet::start(fleet_config))?,
                None => runtime.block_on(Fleet::start(fleet_config))?,
            };
            let result = runtime.block_on(mass_upgrade(arguments, &fleet));
            match &devsim_runtime {
                Some(devsim_runtime) => devsim_runtime.block_on(fleet.shutdown()),
                None => runtime.block_on(fleet.shutdown()),
            }
            result
        }
    }
}

/// The fleet: `--devices` devices of one board, cut 100 ms after the flash, down
/// `--reboot-secs`.
fn fleet_config(arguments: &MassUpgradeArgs) -> BenchResult<FleetConfig> {
    let devices = (0..arguments.devices.max(1))
        .map(|_| {
            let mut spec = DeviceSpec::openwrt(uuid::Uuid::new_v4(), BOARD_NAME, MODEL);
            spec.mem_available_kib = (arguments.image_mib * 2 + 64) * 1024;
            spec
        })
        .collect();
    Ok(FleetConfig {
        devices,
        addressing: Addressing::LoopbackRange {
            first: arguments.first_ip,
            port: arguments.port,
        },
        reboot: RebootTiming {
            close_after: Duration::from_millis(100),
            down_for: Duration::try_from_secs_f64(arguments.reboot_secs)?,
        },
        credentials: ClientCredentials::generate(),
    })
}

async fn mass_upgrade(arguments: MassUpgradeArgs, fleet: &Fleet) -> BenchResult<()> {
    let device_count = arguments.devices.max(1);
    let in_flight = arguments.max_in_flight.unwrap_or(device_count).max(1);
    let uploads = arguments
        .max_uploads
        .unwrap_or(EngineConfig::default().max_uploads)
        .clamp(1, in_flight);
    let reboot = Duration::try_from_secs_f64(arguments.reboot_secs)?;
    // 1. The fleet, started by `main` on its runtime.
    println!(
        "mass-upgrade: {device_count} devices, {} MiB image, {:.1} s reboot, {in_flight} in \
         flight, {uploads} uploads at once, {} blocking threads, {} devsim threads, {} cores",
        arguments.image_mib,
        reboot.as_secs_f64(),
        arguments.blocking_threads,
        arguments.devsim_threads,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let sampler = ThreadSampler::start();
    let directory = tempfile::tempdir()?;

    // 2. The image.
    let phase_started = Instant::now();
    let image = write_image(directory.path(), arguments.image_mib)?;
    println!(
        "image written in {:.2} s: {} bytes, sha256 {}",
        phase_started.elapsed().as_secs_f64(),
        image.size,
        image.sha256
    );

    // 3. The database.
    let phase_started = Instant::now();
    let db_url = format!("sqlite://{}", directory.path().join("bench.db").display());
    let mut db_config = DbConfig::new(db_url, SecretKey::generate()?);
    db_config.pool_size = arguments.db_pool.max(1);
    let db = Db::connect(&db_config).await?;
    let new_image = populate(&db, fleet, &image).await?;
    println!(
        "database filled in {:.2} s",
        phase_started.elapsed().as_secs_f64()
    );

    // 4. The mass upgrade.
    let engine_report = run_engine(
        &db,
        fleet,
        &image,
        &new_image,
        reboot,
        Limits {
            in_flight,
            uploads,
            file_buffer: arguments.file_buffer_kib * 1024,
        },
    )
    .await?;
    let upgrade_wall = engine_report.wall;
    check_fleet(fleet)?;
    println!(
        "mass upgrade: {:.2} s wall, {:.2} s CPU, {} retries, peak {} threads; every device \
         runs {NEW_RELEASE} after one flash",
        upgrade_wall.as_secs_f64(),
        engine_report.cpu_seconds,
        engine_report.retries,
        engine_report.peak_threads,
    );
    engine_report.timeline.print();

    let after_upgrade = memory_status()?;
    println!(
        "memory after the mass upgrade: peak VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        after_upgrade.peak_kib as f64 / 1024.0,
        after_upgrade.rss_kib as f64 / 1024.0
    );

    // 5. The ideal: raw uploads of the same image to every device, same parallelism.
    let cpu_before = cpu_seconds()?;
    sampler.reset_peak();
    // The peak of the raw phase alone (the process's peak is kept in `after_upgrade`).
    let peak_reset = reset_peak().is_ok();
    let raw_wall = raw_uploads(fleet, &image, uploads).await?;
    let raw_cpu = cpu_seconds()? - cpu_before;
    let ideal = raw_wall + reboot;
    let after_raw = memory_status()?;
    println!(
        "raw uploads: {:.2} s wall, {raw_cpu:.2} s CPU, peak {} threads, peak VmHWM {} MiB; \
         ideal = {:.2} s + {:.2} s reboot = {:.2} s",
        raw_wall.as_secs_f64(),
        sampler.peak(),
        if peak_reset {
            format!("{:.1}", after_raw.peak_kib as f64 / 1024.0)
        } else {
            "(not measured)".to_owned()
        },
        raw_wall.as_secs_f64(),
        reboot.as_secs_f64(),
        ideal.as_secs_f64()
    );

    let memory = memory_status()?;
    let total_cpu = cpu_seconds()?;
    sampler.stop();
    let ratio = upgrade_wall.as_secs_f64() / ideal.as_secs_f64();
    let peak_rss_mib = memory.peak_kib.max(after_upgrade.peak_kib) as f64 / 1024.0;
    println!(
        "process: peak VmHWM {peak_rss_mib:.1} MiB (VmRSS now {:.1} MiB), {total_cpu:.2} s CPU \
         in total (user+sys)",
        memory.rss_kib as f64 / 1024.0
    );
    println!(
        "ratio={ratio:.3} wall_s={:.2} ideal_s={:.2} peak_rss_mib={peak_rss_mib:.1}",
        upgrade_wall.as_secs_f64(),
        ideal.as_secs_f64()
    );
    Ok(())
}

/// The image of build 2.0, on disk.
struct ImageFile {
    path: PathBuf,
    file_name: String,
    size: u64,
    sha256: String,
    metadata: serde_json::Value,
}

fn write_image(directory: &Path, image_mib: u64) -> BenchResult<ImageFile> {
    let file_name = format!("openwrt-2.0-{IMAGE_TYPE}");
    let path = directory.join(&file_name);
    let test_image = TestImage::builder()
        .payload_len(image_mib * 1024 * 1024)
        .supported_devices([BOARD_NAME])
        .version_field("version", NEW_RELEASE)
        .version_field("target", "ath79/generic")
        .version_field("board", "tplink_archer-c7-v2")
        .build();
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&path)?);
    test_image.write_to(&mut writer)?;
    writer.flush()?;
    drop(writer);
    let metadata = serde_json::from_slice(
        test_image
            .metadata_json()
            .ok_or("the test image has no metadata")?,
    )?;
    let mut file = std::fs::File::open(&path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; UPLOAD_BUFFER_BYTES];
    let mut size = 0_u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(ImageFile {
        path,
        file_name,
        size,
        sha256: hex::encode(hasher.finalize()),
        metadata,
    })
}

/// Firmware storage of one file: every key opens the image of build 2.0 with
/// `tokio::fs::File`, behind a read buffer of `buffer` bytes when not zero.
struct OneFile {
    path: PathBuf,
    buffer: usize,
}

#[async_trait]
impl FirmwareFiles for OneFile {
    async fn open(&self, _key: &StorageKey) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        let file = tokio::fs::File::open(&self.path).await?;
        if self.buffer == 0 {
            Ok(Box::new(file))
        } else {
            Ok(Box::new(tokio::io::BufReader::with_capacity(
                self.buffer,
                file,
            )))
        }
    }
}

/// Organization, category, builds 1.0 and 2.0, and every device of `fleet` on 1.0 with its
/// connection; returns the image of 2.0.
async fn populate(db: &Db, fleet: &Fleet, image: &ImageFile) -> BenchResult<FirmwareImage> {
    let organization = db
        .insert_organization(&NewOrganization::new("Bench", "bench").into_organization())
        .await?;
    let category = db
        .insert_category(&NewCategory::new(Some(organization.id), "Routers").into_category())
        .await?;
    let old_build = db
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await?;
    let new_build = db
        .insert_build(&NewBuild::new(category.id, "2.0").into_build())
        .await?;
    let old_file_name = format!("openwrt-1.0-{IMAGE_TYPE}");
    let mut old_image = NewFirmwareImage {
        build_id: old_build.id,
        image_type: IMAGE_TYPE.to_owned(),
        file_name: old_file_name.clone(),
        size: image.size,
        sha256: "1".repeat(64),
        storage_key: StorageKey::for_image(old_build.id, &old_file_name),
        metadata: None,
        details: Default::default(),
    };
    old_image.validate(|_| true)?;
    let old_image = db.insert_image(&old_image.into_image()).await?;
    let mut new_image = NewFirmwareImage {
        build_id: new_build.id,
        image_type: IMAGE_TYPE.to_owned(),
        file_name: image.file_name.clone(),
        size: image.size,
        sha256: image.sha256.clone(),
        storage_key: StorageKey::for_image(new_build.id, &image.file_name),
        metadata: Some(image.metadata.clone()),
        details: Default::default(),
    };
    new_image.validate(|_| true)?;
    let new_image = db.insert_image(&new_image.into_image()).await?;

    // Every device listens on the same port with the same password: one set of credentials.
    let client = fleet.credentials();
    let mut credentials = NewCredentials::new(
        Some(organization.id),
        "bench root",
        client.username.clone(),
        CredentialsSecret::Password(SecretText::new(&client.password)),
    );
    credentials.connection_type = ConnectionType::openwrt_ssh();
    credentials.port = fleet.device(0).address().port();
    credentials.validate()?;
    let credentials = db
        .insert_credentials(&credentials.into_credentials())
        .await?;

    for (index, sim_device) in fleet.devices().iter().enumerate() {
        let [_, high, middle, low] = u32::try_from(index)?.to_be_bytes();
        let mac = format!("02:be:00:{high:02x}:{middle:02x}:{low:02x}");
        let mut new_device =
            NewDevice::new(organization.id, format!("bench-{index}"), mac.parse()?);
        new_device.id = Some(DeviceId(sim_device.uuid()));
        new_device.model = MODEL.to_owned();
        new_device.board_name = BOARD_NAME.to_owned();
        new_device.os = "OpenWrt 23.05.0".to_owned();
        new_device.management_ip = Some(sim_device.address().ip().to_string());
        let device = db.insert_device(&new_device.into_device()).await?;
        db.insert_connection(
            &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
        )
        .await?;
        db.insert_device_firmware(&DeviceFirmware::new(device.id, old_image.id, true))
            .await?;
    }
    Ok(new_image)
}

/// What the engine's run measured.
struct EngineReport {
    wall: Duration,
    cpu_seconds: f64,
    retries: u32,
    peak_threads: u64,
    timeline: Timeline,
}

/// How much the engine does at once.
struct Limits {
    in_flight: usize,
    uploads: usize,
    file_buffer: usize,
}

async fn run_engine(
    db: &Db,
    fleet: &Fleet,
    image: &ImageFile,
    new_image: &FirmwareImage,
    reboot: Duration,
    limits: Limits,
) -> BenchResult<EngineReport> {
    let settings = OpenWrtSettings {
        reconnect_delay: reboot,
        reconnect_retry_delay: Duration::from_millis(500),
        reconnect_max_retries: 120,
        ..OpenWrtSettings::default()
    };
    let mut upgraders = UpgraderRegistry::empty();
    upgraders.register(
        ConnectionType::OPENWRT_SSH,
        Arc::new(OpenWrtUpgrader::new(settings)),
    );
    let config = EngineConfig {
        name: "flashfleet-bench".to_owned(),
        max_in_flight: limits.in_flight,
        max_uploads: limits.uploads,
        max_preparing: EngineConfig::default()
            .max_preparing
            .max(limits.uploads * 2),
        lease: Duration::from_secs(60),
        heartbeat: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
        task_timeout: Duration::from_secs(1500),
        verification_budget: Duration::from_secs(900),
        retry: RetryPolicy {
            max_retries: 4,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            jitter: true,
        },
    };
    // Room for every event of every operation, so the timeline misses none.
    let events = EventBus::new(fleet.devices().len() * 32 + 1024);
    let collector = Timeline::collect(&events);
    let engine = Engine::new(
        Arc::new(db.clone()),
        upgraders,
        Arc::new(OneFile {
            path: image.path.clone(),
            buffer: limits.file_buffer,
        }),
        events,
        config,
    );
    let sampler = ThreadSampler::start();
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let request = MassUpgradeRequest {
        build_id: Some(new_image.build_id),
        upgrade_all: false,
        ..MassUpgradeRequest::default()
    };
    let mass_upgrade = engine
        .start_mass_upgrade(&Scope::All, &request, false)
        .await?;
    let queued_at = started.elapsed();
    if mass_upgrade.operations.len() != fleet.devices().len() || !mass_upgrade.skipped.is_empty() {
        return Err(format!(
            "the mass upgrade queued {} operations for {} devices ({} skipped)",
            mass_upgrade.operations.len(),
            fleet.devices().len(),
            mass_upgrade.skipped.len()
        )
        .into());
    }
    let batch_id = mass_upgrade.batch.id;
    // Operations waiting for a retry are left by `run_until_idle`: run again until none is left.
    while unfinished(db, batch_id).await? > 0 {
        if started.elapsed() > MASS_UPGRADE_LIMIT {
            return Err("the mass upgrade did not end in time".into());
        }
        engine.run_until_idle().await?;
        if unfinished(db, batch_id).await? > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let wall = started.elapsed();
    let cpu_seconds = cpu_seconds()? - cpu_before;
    let peak_threads = sampler.peak();
    sampler.stop();
    drop(engine);

    let operations = db
        .list_operations(
            &Scope::All,
            &OperationFilter {
                batch_id: Some(batch_id),
                ..OperationFilter::default()
            },
            PageRequest::all(),
        )
        .await?
        .items;
    let mut retries = 0;
    let mut failures = Vec::new();
    for operation in &operations {
        retries += operation.attempts;
        if operation.status != UpgradeStatus::Success {
            failures.push(format!(
                "{} ({}): {}",
                operation.device_id,
                operation.status.as_str(),
                operation.log.lines().last().unwrap_or_default()
            ));
        }
    }
    if operations.len() != fleet.devices().len() || !failures.is_empty() {
        let shown = failures.iter().take(10).cloned().collect::<Vec<_>>();
        return Err(format!(
            "{} of {} operations did not succeed, for example:\n{}",
            failures.len(),
            operations.len(),
            shown.join("\n")
        )
        .into());
    }
    let mut timeline = collector.finish().await;
    timeline.queued_at = queued_at;
    Ok(EngineReport {
        wall,
        cpu_seconds,
        retries,
        peak_threads,
        timeline,
    })
}

async fn unfinished(db: &Db, batch_id: BatchId) -> BenchResult<u64> {
    Ok(db
        .list_operations(
            &Scope::All,
            &OperationFilter {
                batch_id: Some(batch_id),
                status: Some(UpgradeStatus::InProgress),
                ..OperationFilter::default()
            },
            PageRequest {
                offset: 0,
                limit: 1,
            },
        )
        .await?
        .count)
}

/// Every device runs the new release, flashed once.
fn check_fleet(fleet: &Fleet) -> BenchResult<()> {
    let wrong: Vec<String> = fleet
        .devices()
        .iter()
        .filter(|device| device.release().version != NEW_RELEASE || device.flash_count() != 1)
        .map(|device| {
            format!(
                "{}: release {}, {} flashes",
                device.uuid(),
                device.release().version,
                device.flash_count()
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} devices are not on {NEW_RELEASE} after one flash, for example {}",
            wrong.len(),
            wrong[0]
        )
        .into())
    }
}

/// When each operation first entered each phase, and when it ended, from the event bus.
struct Timeline {
    started: Instant,
    queued_at: Duration,
    /// Per operation: per phase index, the first time seen; and the time it finished.
    operations: HashMap<OperationId, ([Option<Duration>; UpgradePhase::ALL.len()], Duration)>,
    lagged: u64,
}

struct TimelineCollector {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Timeline>,
}

impl Timeline {
    fn collect(events: &EventBus) -> TimelineCollector {
        let mut receiver = events.subscribe();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut timeline = Timeline {
                started: Instant::now(),
                queued_at: Duration::ZERO,
                operations: HashMap::new(),
                lagged: 0,
            };
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(Event::Operation(operation)) => timeline.record(&operation),
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            timeline.lagged += missed;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    () = stopped.notified() => {
                        while let Ok(event) = receiver.try_recv() {
                            if let Event::Operation(operation) = event {
                                timeline.record(&operation);
                            }
                        }
                        break;
                    }
                }
            }
            timeline
        });
        TimelineCollector { stop, task }
    }

    fn record(&mut self, operation: &flashfleet_models::UpgradeOperation) {
        let now = self.started.elapsed();
        let entry = self
            .operations
            .entry(operation.id)
            .or_insert(([None; UpgradePhase::ALL.len()], Duration::ZERO));
        if let Some(index) = UpgradePhase::ALL
            .iter()
            .position(|phase| *phase == operation.phase)
        {
            entry.0[index].get_or_insert(now);
        }
        if operation.status != UpgradeStatus::InProgress {
            entry.1 = now;
        }
    }

    /// Prints, for each phase, when operations first entered it (min, median, max from the
    /// start), and how long the main stretches took per operation.
    fn print(&self) {
        let seconds = |duration: Duration| duration.as_secs_f64();
        println!(
            "timeline (s from start_mass_upgrade; queued after {:.2} s; {} events lost):",
            seconds(self.queued_at),
            self.lagged
        );
        println!(
            "  {:<20} {:>8} {:>8} {:>8}",
            "entered phase", "min", "median", "max"
        );
        for (index, phase) in UpgradePhase::ALL.iter().enumerate() {
            let times: Vec<Duration> = self
                .operations
                .values()
                .filter_map(|(phases, _)| phases[index])
                .collect();
            if let Some((minimum, median, maximum)) = spread(times) {
                println!(
                    "  {:<20} {:>8.2} {:>8.2} {:>8.2}",
                    phase.as_str(),
                    seconds(minimum),
                    seconds(median),
                    seconds(maximum)
                );
            }
        }
        let ends: Vec<Duration> = self.operations.values().map(|(_, end)| *end).collect();
        if let Some((minimum, median, maximum)) = spread(ends) {
            println!(
                "  {:<20} {:>8.2} {:>8.2} {:>8.2}",
                "finished",
                seconds(minimum),
                seconds(median),
                seconds(maximum)
            );
        }
        let position = |wanted: UpgradePhase| {
            UpgradePhase::ALL
                .iter()
                .position(|phase| *phase == wanted)
                .unwrap_or(0)
        };
        let stretches = [
            (
                "connect..upload",
                UpgradePhase::Connecting,
                Some(UpgradePhase::Uploading),
            ),
            (
                "upload",
                UpgradePhase::Uploading,
                Some(UpgradePhase::TestingImage),
            ),
            (
                "test..flash",
                UpgradePhase::TestingImage,
                Some(UpgradePhase::Flashing),
            ),
            (
                "flash..reconnect",
                UpgradePhase::Flashing,
                Some(UpgradePhase::Reconnecting),
            ),
            ("reconnect..end", UpgradePhase::Reconnecting, None),
        ];
        println!(
            "  {:<20} {:>8} {:>8} {:>8}",
            "per operation", "min", "median", "max"
        );
        for (name, from, to) in stretches {
            let durations: Vec<Duration> = self
                .operations
                .values()
                .filter_map(|(phases, end)| {
                    let start = phases[position(from)]?;
                    let stop = match to {
                        Some(to) => phases[position(to)]?,
                        None => *end,
                    };
                    Some(stop.saturating_sub(start))
                })
                .collect();
            if let Some((minimum, median, maximum)) = spread(durations) {
                println!(
                    "  {name:<20} {:>8.2} {:>8.2} {:>8.2}",
                    seconds(minimum),
                    seconds(median),
                    seconds(maximum)
                );
            }
        }
    }
}

impl TimelineCollector {
    async fn finish(self) -> Timeline {
        self.stop.notify_one();
        self.task.await.unwrap_or_else(|_| Timeline {
            started: Instant::now(),
            queued_at: Duration::ZERO,
            operations: HashMap::new(),
            lagged: 0,
        })
    }
}

fn spread(mut values: Vec<Duration>) -> Option<(Duration, Duration, Duration)> {
    values.sort();
    Some((*values.first()?, values[values.len() / 2], *values.last()?))
}

/// Uploads the image to every device of `fleet` with plain libssh2 SCP, `parallelism` at once
/// on the blocking pool; returns the wall time of all uploads.
async fn raw_uploads(
    fleet: &Fleet,
    image: &ImageFile,
    parallelism: usize,
) -> BenchResult<Duration> {
    let semaphore = Arc::new(Semaphore::new(parallelism));
    let credentials = fleet.credentials();
    let started = Instant::now();
    let mut uploads = JoinSet::new();
    for device in fleet.devices() {
        let semaphore = Arc::clone(&semaphore);
        let address = device.address();
        let username = credentials.username.clone();
        let password = credentials.password.clone();
        let path = image.path.clone();
        let size = image.size;
        uploads.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            tokio::task::spawn_blocking(move || {
                raw_upload(address, &username, &password, &path, size)
            })
            .await?
        });
    }
    while let Some(upload) = uploads.join_next().await {
        upload??;
    }
    let wall = started.elapsed();
    let incomplete = fleet
        .devices()
        .iter()
        .filter(|device| {
            device
                .uploaded(RAW_REMOTE_PATH)
                .is_none_or(|uploaded| !uploaded.complete || uploaded.size != image.size)
        })
        .count();
    if incomplete > 0 {
        return Err(format!("{incomplete} devices did not receive the raw upload").into());
    }
    Ok(wall)
}

/// Connects, authenticates and sends the image with `scp -t`, as the upgrader's upload does.
fn raw_upload(
    address: SocketAddr,
    username: &str,
    password: &str,
    path: &Path,
    size: u64,
) -> BenchResult<()> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    let mut session = ssh2::Session::new()?;
    session.set_tcp_stream(stream);
    session.set_timeout(30_000);
    session.handshake()?;
    session.userauth_password(username, password)?;
    let mut channel = session.scp_send(Path::new(RAW_REMOTE_PATH), 0o644, size, None)?;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; UPLOAD_BUFFER_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        channel.write_all(&buffer[..read])?;
    }
    channel.write_all(&[0])?;
    channel.send_eof()?;
    channel.wait_eof()?;
    channel.close()?;
    channel.wait_close()?;
    let status = channel.exit_status()?;
    let _ = session.disconnect(None, "done", None);
    if status == 0 {
        Ok(())
    } else {
        Err(format!("scp to {address} exited with status {status}").into())
    }
}

/// Samples the thread count of the process (`Threads:` of `/proc/self/status`) every 50 ms.
struct ThreadSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ThreadSampler {
    fn start() -> ThreadSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sampled_peak, stopped) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
                    let threads = status_field(&status, "Threads:");
                    sampled_peak.fetch_max(threads, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        ThreadSampler { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn reset_peak(&self) {
        self.peak.store(0, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct MemoryStatus {
    rss_kib: u64,
    peak_kib: u64,
}

fn memory_status() -> std::io::Result<MemoryStatus> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(MemoryStatus {
        rss_kib: status_field(&status, "VmRSS:"),
        peak_kib: status_field(&status, "VmHWM:"),
    })
}

/// Resets `VmHWM` to the current resident set (Linux 4.0 and later).
fn reset_peak() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of the process so far (`/proc/self/stat` fields 14 and 15, in
/// clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
fn cpu_seconds() -> BenchResult<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start with field 3.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> BenchResult<u64> {
        Ok(fields
            .get(index - 3)
            .ok_or("unexpected /proc/self/stat")?
            .parse()?)
    };
    Ok((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

//! `flashfleet-devsim`: runs a fleet of simulated OpenWrt devices by hand, until Ctrl-C, and
//! prints how to reach each device.

use std::error::Error;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};

/// Simulated OpenWrt devices over SSH (user root, password or Ed25519 key).
#[derive(Debug, Parser)]
#[command(name = "flashfleet-devsim", version)]
struct Arguments {
    /// How many devices to run.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Port of the first device; device i listens on base-port + i (0: ports chosen by the OS).
    #[arg(long, default_value_t = 2222)]
    base_port: u16,
    /// Address every device listens on (with --base-port).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    ip: IpAddr,
    /// Give each device its own loopback address instead, starting here (e.g. 127.20.0.1), all
    /// on --base-port.
    #[arg(long)]
    loopback_range: Option<Ipv4Addr>,
    /// The board name of every device (/tmp/sysinfo/board_name).
    #[arg(long, default_value = "tplink,archer-c7-v2")]
    board: String,
    /// The model of every device (/tmp/sysinfo/model).
    #[arg(long, default_value = "TP-Link Archer C7 v2")]
    model: String,
    /// Milliseconds between "Commencing upgrade" and the sessions being cut.
    #[arg(long, default_value_t = 200)]
    close_after_ms: u64,
    /// Milliseconds a flashing device refuses connections.
    #[arg(long, default_value_t = 1000)]
    down_for_ms: u64,
    /// Where to write the client private key (default: a new directory in the temp dir).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Also write the fleet as a device list for `flashfleet devices import` (CSV: id, name,
    /// mac_address, address, port, model, board_name, os, username, password).
    #[arg(long, value_name = "FILE")]
    devices_csv: Option<PathBuf>,
    /// Also write a sysupgrade image for the fleet's board (OpenWrt metadata included) that
    /// flashes the devices to --image-version; name it after its image type, such as
    /// openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// The release the --image file carries.
    #[arg(long, default_value = "24.10.0")]
    image_version: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let arguments = Arguments::parse();
    let credentials = ClientCredentials::generate();
    let key_file = match &arguments.key_file {
        Some(path) => path.clone(),
        None => {
            let directory =
                std::env::temp_dir().join(format!("flashfleet-devsim-{}", std::process::id()));
            std::fs::create_dir_all(&directory)?;
            directory.join("id_ed25519")
        }
    };
    credentials.write_private_key(&key_file)?;

    let devices = (0..arguments.devices)
        .map(|_| DeviceSpec::openwrt(uuid::Uuid::new_v4(), &arguments.board, &arguments.model))
        .collect();
    let addressing = match arguments.loopback_range {
        Some(first) => Addressing::LoopbackRange {
            first,
            port: arguments.base_port,
        },
        None => Addressing::Ports {
            ip: arguments.ip,
            base_port: arguments.base_port,
        },
    };
    let started = Instant::now();
    let fleet = Fleet::start(FleetConfig {
        devices,
        addressing,
        reboot: RebootTiming {
            close_after: Duration::from_millis(arguments.close_after_ms),
            down_for: Duration::from_millis(arguments.down_for_ms),
        },
        credentials,
    })
    .await?;
    let elapsed = started.elapsed();

    if let Some(path) = &arguments.devices_csv {
        write_devices_csv(path, &fleet, &arguments)?;
    }
    if let Some(path) = &arguments.image {
        flashfleet_boards::test_image::TestImage::builder()
            .payload_len(256 * 1024)
            .supported_devices([arguments.board.as_str()])
            .version_field("version", &arguments.image_version)
            .version_field("revision", "r28427-6df0e3d02a")
            .version_field("target", &flashfleet_devsim::Release::default().target)
            .version_field("board", &arguments.board.replace(',', "_"))
            .build()
            .write_to(std::io::BufWriter::new(std::fs::File::create(path)?))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} devices ready in {} ms; user {}, password {}, private key {}",
        fleet.devices().len(),
        elapsed.as_millis(),
        fleet.credentials().username,
        fleet.credentials().password,
        key_file.display()
    )?;
    writeln!(stdout, "index\taddress\tport\tuuid\tboard\thost key")?;
    for (index, device) in fleet.devices().iter().enumerate() {
        let address = device.address();
        writeln!(
            stdout,
            "{index}\t{}\t{}\t{}\t{}\t{}",
            address.ip(),
            address.port(),
            device.uuid(),
            arguments.board,
            device.host_key_fingerprint()
        )?;
    }
    if let Some(device) = fleet.devices().first() {
        let address = device.address();
        writeln!(
            stdout,
            "try: ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i {} -p {} {}@{} ubus call system board",
            key_file.display(),
            address.port(),
            fleet.credentials().username,
            address.ip()
        )?;
    }
    writeln!(stdout, "Ctrl-C stops the fleet.")?;
    stdout.flush()?;
    drop(stdout);

    tokio::signal::ctrl_c().await?;
    fleet.shutdown().await;
    Ok(())
}

/// The fleet as `flashfleet devices import` reads it: one row per device, with the id its
/// configuration reports, a locally administered MAC address and the fleet's password.
fn write_devices_csv(
    path: &std::path::Path,
    fleet: &Fleet,
    arguments: &Arguments,
) -> Result<(), Box<dyn Error>> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        file,
        "id,name,mac_address,address,port,model,board_name,os,username,password"
    )?;
    for (index, device) in fleet.devices().iter().enumerate() {
        let address = device.address();
        let [high, low] = u16::try_from(index).unwrap_or(u16::MAX).to_be_bytes();
        writeln!(
            file,
            "{},devsim-{index},02:00:5e:00:{high:02x}:{low:02x},{},{},\"{}\",\"{}\",\"{}\",{},{}",
            device.uuid(),
            address.ip(),
            address.port(),
            arguments.model,
            arguments.board,
            device.release().description(),
            fleet.credentials().username,
            fleet.credentials().password,
        )?;
    }
    file.flush()?;
    Ok(())
}

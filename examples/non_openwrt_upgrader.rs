//! An upgrader for a device that is not OpenWrt, written from scratch against the `Upgrader`
//! contract: an embedded Linux board with two root file system slots (A/B), updated with
//! SWUpdate and switched with U-Boot's environment (`fw_printenv` / `fw_setenv`).
//!
//! The upgrader talks to the device through a small transport seam ([`DeviceShell`]: run a
//! command, upload a stream), so it runs here against an in-process simulated board, without a
//! network; in production the same upgrader would get an SSH implementation of the seam.
//!
//! Run with `cargo run --example non_openwrt_upgrader`: it registers the upgrader next to the
//! built-in OpenWrt one, validates some options, then upgrades the simulated board, printing
//! every phase and log line, and checks that the board now boots the other slot with the new
//! version.

#![expect(clippy::print_stdout, reason = "an example prints what it does")]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashfleet::models::credentials::{CredentialsSecret, SecretText};
use flashfleet::models::{
    DeviceId, NewDevice, OrganizationId, UpgradeOptions, UpgradePhase, ValidationErrors,
};
use flashfleet::upgrader::{
    ConnectionTarget, DeviceRelease, HostKey, ImageSource, ReportError, Reporter, UpgradeContext,
    UpgradeError, UpgradeImage, UpgradeOutcome, Upgrader, UpgraderRegistry,
};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// How the upgrader reaches a device: one shell command at a time, and uploads.
#[async_trait]
trait DeviceShell: Send + Sync {
    /// Runs `command`; returns its exit status and output.
    async fn run(&self, command: &str) -> io::Result<(i32, String)>;
    /// Stores the stream at `path`; returns the bytes written.
    async fn upload(&self, image: Box<dyn AsyncRead + Send + Unpin>, path: &str)
    -> io::Result<u64>;
}

/// Opens a [`DeviceShell`] on a device.
#[async_trait]
trait Connector: Send + Sync {
    async fn connect(&self, target: &ConnectionTarget) -> io::Result<Box<dyn DeviceShell>>;
}

/// SWUpdate on an A/B board.
struct SwupdateUpgrader {
    connector: Arc<dyn Connector>,
    reboot_delay: Duration,
    retry_delay: Duration,
    max_retries: u32,
}

const STAGED_IMAGE: &str = "/var/tmp/update.swu";
const CHECKSUM_FILE: &str = "/etc/flashfleet/firmware_checksum";

impl SwupdateUpgrader {
    async fn run(shell: &dyn DeviceShell, command: &str) -> Result<String, UpgradeError> {
        match shell.run(command).await {
            Ok((0, output)) => Ok(output.trim().to_owned()),
            Ok((status, output)) => Err(UpgradeError::failed(format!(
                "`{command}` exited with {status}: {}",
                output.trim()
            ))),
            Err(error) => Err(UpgradeError::Recoverable {
                message: format!("`{command}` failed: {error}"),
                source: Some(Box::new(error)),
            }),
        }
    }

    async fn reconnect(
        &self,
        context: &UpgradeContext,
    ) -> Result<Box<dyn DeviceShell>, UpgradeError> {
        for attempt in 1..=self.max_retries {
            match self.connector.connect(&context.connection).await {
                Ok(shell) => return Ok(shell),
                Err(error) => {
                    context
                        .log(&format!("attempt {attempt}: not reachable yet ({error})"))
                        .await?;
                    tokio::time::sleep(self.retry_delay).await;
                }
            }
        }
        Err(UpgradeError::FlashedNotSeenAgain {
            message: "the board did not come back after the update".to_owned(),
        })
    }
}

#[async_trait]
impl Upgrader for SwupdateUpgrader {
    /// One option: `"keep_settings"` (boolean, default true), passed to SWUpdate as a
    /// selection.
    fn validate_options(
        &self,
        options: &UpgradeOptions,
        _allow_force: bool,
    ) -> Result<(), ValidationErrors> {
        let valid = options
            .0
            .iter()
            .all(|(key, value)| key == "keep_settings" && value.is_boolean());
        if valid {
            Ok(())
        } else {
            Err(ValidationErrors::field(
                "upgrade_options",
                "only the boolean option \"keep_settings\" is accepted",
            ))
        }
    }

    async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        context
            .enter(UpgradePhase::Connecting, "connecting to the board")
            .await?;
        let shell = self
            .connector
            .connect(&context.connection)
            .await
            .map_err(|error| UpgradeError::recoverable(format!("connection failed: {error}")))?;

        context
            .enter(UpgradePhase::VerifyingIdentity, "checking the board's id")
            .await?;
        let id = Self::run(shell.as_ref(), "cat /etc/flashfleet/device-id").await?;
        if id != context.device.id.to_string() {
            return Err(UpgradeError::aborted(format!(
                "this board is {id}, not {}",
                context.device.id
            )));
        }
        context.checkpoint().await?;

        context
            .enter(
                UpgradePhase::ComparingChecksum,
                "comparing the installed image",
            )
            .await?;
        let (_, marker) = shell
            .run(&format!("cat {CHECKSUM_FILE}"))
            .await
            .map_err(|error| UpgradeError::recoverable(error.to_string()))?;
        if marker.trim() == context.image.sha256 {
            return Ok(UpgradeOutcome::AlreadyInstalled);
        }
        context.checkpoint().await?;

        context
            .enter(UpgradePhase::Uploading, "uploading the update")
            .await?;
        let stream = context
            .image
            .source
            .open()
            .await
            .map_err(|error| UpgradeError::recoverable(error.to_string()))?;
        let written = shell
            .upload(stream, STAGED_IMAGE)
            .await
            .map_err(|error| UpgradeError::recoverable(format!("upload failed: {error}")))?;
        if written != context.image.size {
            return Err(UpgradeError::recoverable(format!(
                "uploaded {written} of {} bytes",
                context.image.size
            )));
        }
        context.checkpoint().await?;

        context
            .enter(
                UpgradePhase::TestingImage,
                "letting SWUpdate check the update",
            )
            .await?;
        Self::run(shell.as_ref(), &format!("swupdate -c -i {STAGED_IMAGE}"))
            .await
            .map_err(|error| {
                UpgradeError::aborted(format!("the board refused the update: {error}"))
            })?;
        let active = Self::run(shell.as_ref(), "fw_printenv -n rootfs_slot").await?;
        let target = if active == "a" { "b" } else { "a" };
        context.checkpoint().await?;

        // Recorded before anything writes the other slot (a guarded write: at most once per
        // operation). A board without a boot id to read passes `None`.
        context
            .begin_flash(None, &format!("installing into slot {target}"))
            .await?;
        let keep = context.options.flag("keep_settings").unwrap_or(true);
        let selection = if keep {
            "stable,keep"
        } else {
            "stable,factory"
        };
        let installed = Self::run(
            shell.as_ref(),
            &format!("swupdate -i {STAGED_IMAGE} -e {selection}-{target}"),
        )
        .await;
        if let Err(error) = installed {
            return Err(UpgradeError::FlashedNotSeenAgain {
                message: format!("SWUpdate failed while writing slot {target}: {error}"),
            });
        }
        let _ = shell
            .run(&format!(
                "fw_setenv rootfs_slot {target} && fw_setenv upgrade_available 1 && reboot"
            ))
            .await;
        drop(shell);

        context
            .enter(
                UpgradePhase::WaitingForReboot,
                "waiting for the board to reboot",
            )
            .await?;
        tokio::time::sleep(self.reboot_delay).await;
        context
            .enter(UpgradePhase::Reconnecting, "reconnecting")
            .await?;
        self.verify(context).await
    }

    async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        let shell = self.reconnect(context).await?;
        let not_seen = |message: String| UpgradeError::FlashedNotSeenAgain { message };
        let slot = Self::run(shell.as_ref(), "fw_printenv -n rootfs_slot")
            .await
            .map_err(|error| not_seen(error.to_string()))?;
        let version = Self::run(shell.as_ref(), ". /etc/os-release && echo $VERSION_ID")
            .await
            .map_err(|error| not_seen(error.to_string()))?;
        // This firmware's images are named `example-os-<version>.swu`.
        let expected = context
            .image
            .file_name
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_prefix("example-os-"))
            .and_then(|name| name.strip_suffix(".swu"))
            .ok_or_else(|| not_seen("the image name carries no version".to_owned()))?;
        if version != expected {
            return Err(not_seen(format!(
                "the board boots slot {slot} with version {version}, not {expected}"
            )));
        }
        context
            .log(&format!(
                "the board boots slot {slot} with version {version}"
            ))
            .await?;
        // Confirms the new slot to U-Boot (no fallback on the next boot) and marks the image.
        Self::run(
            shell.as_ref(),
            &format!(
                "fw_setenv upgrade_available 0 && echo {} > {CHECKSUM_FILE}",
                context.image.sha256
            ),
        )
        .await
        .map_err(|error| not_seen(error.to_string()))?;
        Ok(UpgradeOutcome::Upgraded {
            release: Some(DeviceRelease {
                distribution: "ExampleOS".to_owned(),
                version,
                ..DeviceRelease::default()
            }),
        })
    }
}

/// The simulated board: its U-Boot environment, slots, staged file and reboot state.
#[derive(Default)]
struct Board {
    id: String,
    active_slot: String,
    versions: [String; 2],
    upgrade_available: bool,
    staged_bytes: u64,
    staged_version: Option<String>,
    checksum: String,
    /// Connection attempts still refused (rebooting).
    down_for_attempts: u32,
}

struct SimulatedBoard(Arc<Mutex<Board>>);

fn slot_index(slot: &str) -> usize {
    usize::from(slot == "b")
}

#[async_trait]
impl DeviceShell for SimulatedBoard {
    async fn run(&self, command: &str) -> io::Result<(i32, String)> {
        let mut board = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        let answer = match command {
            "cat /etc/flashfleet/device-id" => (0, board.id.clone()),
            "fw_printenv -n rootfs_slot" => (0, board.active_slot.clone()),
            ". /etc/os-release && echo $VERSION_ID" => {
                (0, board.versions[slot_index(&board.active_slot)].clone())
            }
            command if command == format!("cat {CHECKSUM_FILE}") => (0, board.checksum.clone()),
            command if command == format!("swupdate -c -i {STAGED_IMAGE}") => {
                if board.staged_bytes > 0 {
                    (0, String::new())
                } else {
                    (1, "no update".to_owned())
                }
            }
            command if command.starts_with(&format!("swupdate -i {STAGED_IMAGE} -e ")) => {
                let target = command.rsplit('-').next().unwrap_or("a").to_owned();
                let version = board.staged_version.clone().unwrap_or_default();
                board.versions[slot_index(&target)] = version;
                (0, format!("installed into slot {target}"))
            }
            command if command.starts_with("fw_setenv rootfs_slot ") => {
                let target = command.split_whitespace().nth(2).unwrap_or("a").to_owned();
                board.active_slot = target;
                board.upgrade_available = true;
                board.down_for_attempts = 2;
                (0, String::new())
            }
            command if command.starts_with("fw_setenv upgrade_available 0 && echo ") => {
                board.upgrade_available = false;
                board.checksum = command
                    .split_whitespace()
                    .nth(5)
                    .unwrap_or_default()
                    .to_owned();
                (0, String::new())
            }
            other => (127, format!("sh: {other}: not found")),
        };
        Ok(answer)
    }

    async fn upload(
        &self,
        mut image: Box<dyn AsyncRead + Send + Unpin>,
        _path: &str,
    ) -> io::Result<u64> {
        // Streamed through a small buffer, as a real transfer would be.
        let mut buffer = vec![0; 16 * 1024];
        let mut written = 0;
        loop {
            let read = image.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            written += read as u64;
        }
        let mut board = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        board.staged_bytes = written;
        board.staged_version = Some("2.0".to_owned());
        Ok(written)
    }
}

#[async_trait]
impl Connector for SimulatedBoard {
    async fn connect(&self, _target: &ConnectionTarget) -> io::Result<Box<dyn DeviceShell>> {
        let mut board = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        if board.down_for_attempts > 0 {
            board.down_for_attempts -= 1;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            ));
        }
        Ok(Box::new(SimulatedBoard(Arc::clone(&self.0))))
    }
}

/// An image of `size` pseudo-bytes, generated as it is read.
struct GeneratedImage {
    size: u64,
}

#[async_trait]
impl ImageSource for GeneratedImage {
    async fn open(&self) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(tokio::io::repeat(0xA5).take(self.size)))
    }
}

/// Prints every report.
struct PrintingReporter;

#[async_trait]
impl Reporter for PrintingReporter {
    async fn progress(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError> {
        println!("[{progress:>3}%] {phase}: {}", line.unwrap_or(""));
        Ok(())
    }

    async fn log(&self, line: &str) -> Result<(), ReportError> {
        println!("       {line}");
        Ok(())
    }

    async fn is_cancelled(&self) -> bool {
        false
    }

    async fn record_host_key(&self, host_key: &HostKey) -> Result<(), ReportError> {
        println!("       host key {}", host_key.algorithm);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device_id = DeviceId::new();
    let board = Arc::new(Mutex::new(Board {
        id: device_id.to_string(),
        active_slot: "a".to_owned(),
        versions: ["1.4".to_owned(), "1.3".to_owned()],
        ..Board::default()
    }));
    let upgrader = Arc::new(SwupdateUpgrader {
        connector: Arc::new(SimulatedBoard(Arc::clone(&board))),
        reboot_delay: Duration::from_millis(50),
        retry_delay: Duration::from_millis(20),
        max_retries: 5,
    });

    let mut registry = UpgraderRegistry::default();
    registry.register("swupdate-ssh", upgrader.clone());
    println!("registered connection types: {registry:?}");
    for options in [
        serde_json::json!({"keep_settings": false}),
        serde_json::json!({"c": true}),
    ] {
        let verdict =
            upgrader.validate_options(&UpgradeOptions::from_json(options.clone())?, false);
        println!(
            "options {options}: {}",
            if verdict.is_ok() {
                "accepted"
            } else {
                "refused"
            }
        );
    }

    let mut new_device = NewDevice::new(
        OrganizationId::new(),
        "board-1",
        "02:00:00:00:00:01".parse()?,
    );
    new_device.id = Some(device_id);
    let context = UpgradeContext {
        device: new_device.into_device(),
        connection: ConnectionTarget {
            addresses: vec!["board-1.example".to_owned()],
            port: 22,
            username: "root".to_owned(),
            secret: CredentialsSecret::Password(SecretText::new("not used by the simulation")),
            known_host_key: None,
        },
        image: UpgradeImage {
            file_name: "example-os-2.0.swu".to_owned(),
            image_type: "example-os.swu".to_owned(),
            size: 8 * 1024 * 1024,
            sha256: "5f1d0e1c9a3b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170605".to_owned(),
            metadata: None,
            source: Arc::new(GeneratedImage {
                size: 8 * 1024 * 1024,
            }),
        },
        options: UpgradeOptions::from_json(serde_json::json!({"keep_settings": true}))?,
        previous_flash: None,
        reporter: Arc::new(PrintingReporter),
    };

    let outcome = upgrader.upgrade(&context).await?;
    println!("outcome: {outcome:?}");
    {
        let board = board.lock().map_err(|_| "poisoned")?;
        assert_eq!(board.active_slot, "b");
        assert_eq!(board.versions[1], "2.0");
        assert!(!board.upgrade_available, "the new slot is confirmed");
        assert_eq!(board.checksum, context.image.sha256);
        println!(
            "the board boots slot {} with version {}",
            board.active_slot, board.versions[1]
        );
    }
    // A second run finds the marker and changes nothing.
    let again = upgrader.upgrade(&context).await?;
    println!("second run: {again:?}");
    assert_eq!(again, UpgradeOutcome::AlreadyInstalled);
    Ok(())
}

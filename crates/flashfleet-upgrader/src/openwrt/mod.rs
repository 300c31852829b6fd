//! The OpenWrt upgrader over SSH: upstream's `OpenWrt` upgrader step by step, deciding the
//! outcome from facts read on the device.
//!
//! [`OpenWrtUpgrader::upgrade`](crate::Upgrader::upgrade) runs, reporting each phase before its
//! work:
//!
//! 1. **connect** (every address in turn; the host key is recorded on first contact and must
//!    not change afterwards) — failure is recoverable;
//! 2. **identity**: `uci get openwisp.http.uuid` must be the device's id (dashless or uppercase
//!    accepted), else abort;
//! 3. **checksum**: when `/etc/openwisp/firmware_checksum` holds the image's SHA-256, the image
//!    is already installed;
//! 4. **already running** (beyond upstream): when the release version and revision the device
//!    reports (`/etc/openwrt_release`) are the image's metadata `version.version` and
//!    `version.revision` (both given), on a board among the metadata's supported devices
//!    (unless it lists none), the device is not flashed: the checksum marker is written and
//!    the image is already installed;
//! 5. **fit** (beyond upstream): the board name, model and compat version read from the device
//!    are checked against the image metadata, or the image map when the image has none; an
//!    image that does not fit is refused unless `-F` was allowed and asked for;
//! 6. **memory**: caches freed, and non-critical services stopped when the image still does
//!    not fit in RAM (started again on any failure or cancellation before the flash);
//! 7. **upload** over SCP, streamed, within a total deadline of `connect_timeout` plus the
//!    image size at [`OpenWrtSettings::min_upload_throughput`]. Past the deadline, or when the
//!    upgrade future is dropped (the engine's task timeout, or the engine stops), the
//!    connection is shut down, so the blocking transfer ends at once and lets go of the image
//!    stream — any failure is recoverable;
//! 8. **test**: `sysupgrade --test`, abort on failure;
//! 9. **flash**: the boot id is read (`cat /proc/sys/kernel/random/boot_id`; `None` on a device
//!    without one), `Flashing` is reported with it through
//!    [`UpgradeContext::begin_flash`](crate::UpgradeContext::begin_flash), and only once that
//!    returned `Ok` the flash command is sent, with a bounded wait. Its exit status proves
//!    nothing (libssh2 reports 0 for a session killed without one), so neither it nor its
//!    output decides anything;
//! 10. **wait** `reconnect_delay`, then **reconnect** up to `reconnect_max_retries` times;
//! 11. **verify** (beyond upstream): the release and board read from the device must be the
//!     image's (when it has metadata); a device that came back with its old release or as
//!     another board is [`UpgradeError::FlashedNotSeenAgain`];
//! 12. **checksum marker** written, so the same image is not flashed again.
//!
//! Cancellation is honoured at checkpoints between the steps before the flash. When another
//! engine holds the operation ([`UpgradeError::LeaseLost`]), the upgrader stops at once and
//! sends nothing more to the device, not even to start the stopped services again.
//!
//! [`OpenWrtUpgrader::verify`](crate::Upgrader::verify), for an operation found at or past
//! `Flashing` (after a crash, a restart or a timeout), decides from facts read on the device and
//! logs each decision with the facts behind it:
//!
//! 1. **reconnect**, bounded as after a flash;
//! 2. **same boot?** When the device answers with the boot id recorded before the flash command
//!    ([`UpgradeContext::previous_flash`](crate::UpgradeContext::previous_flash)), it has not
//!    rebooted since. Then `ps w` tells whether a flash is under way (a `sysupgrade` process,
//!    or procd's stage 2 `upgraded`):
//!    - **running**: wait for it, polling every `reconnect_retry_delay` for at most
//!      `reconnect_delay + reconnect_max_retries × reconnect_retry_delay`, then reconnect as
//!      after a reboot and decide as in 3 (never flashing again); still running at the end is
//!      [`UpgradeError::FlashedNotSeenAgain`];
//!    - **not running, and the device runs its old release** (not the image's): that proves
//!      the flash command never reached it. One log line with those facts goes to
//!      [`Reporter::restart_unflashed`](crate::Reporter::restart_unflashed), which takes the
//!      operation back before its flash, and the whole upgrade runs again. This is the only
//!      way to a second flash command;
//! 3. **otherwise** (another boot id, none recorded or readable, no process list): success only
//!    when the device runs the image (release and board as in step 11, checksum marker
//!    written); a device running its old or another release is
//!    [`UpgradeError::FlashedNotSeenAgain`] saying what it runs, and one that cannot be reached
//!    or read is [`UpgradeError::FlashedNotSeenAgain`] saying that what it runs could not be
//!    verified.
//!
//! Custom OpenWrt-based firmwares change the flash command, paths and delays through
//! [`OpenWrtSettings`] (see `examples/custom_upgrader.rs` of the `flashfleet` package).

mod commands;
mod memory;
mod session;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashfleet_boards::{
    DeviceIdentity, ImageMap, ImageMetadata, SysupgradeOptions, Verdict, check_compatibility,
};
use flashfleet_models::{UpgradeOptions, UpgradePhase, ValidationErrors};

pub use crate::openwrt::settings::OpenWrtSettings;

use crate::openwrt::commands::format_seconds;
use crate::openwrt::session::{
    CommandOutput, DeviceSession, HostKeyPolicy, SessionError, Timeouts,
};
use crate::{
    DeviceRelease, HostKey, ReportError, UpgradeContext, UpgradeError, UpgradeOutcome, Upgrader,
};

/// The OpenWrt upgrader (upstream `openwisp_firmware_upgrader.upgraders.openwrt.OpenWrt`),
/// registered as `openwrt-ssh` in the default [`UpgraderRegistry`](crate::UpgraderRegistry).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flashfleet_upgrader::UpgraderRegistry;
/// use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
///
/// let settings = OpenWrtSettings {
///     reconnect_delay: Duration::from_secs(120),
///     ..OpenWrtSettings::default()
/// };
/// let mut registry = UpgraderRegistry::empty();
/// registry.register("openwrt-ssh", Arc::new(OpenWrtUpgrader::new(settings)));
/// ```
#[derive(Clone, Debug)]
pub struct OpenWrtUpgrader {
    settings: OpenWrtSettings,
    image_map: Arc<ImageMap>,
}

impl OpenWrtUpgrader {
    /// An upgrader with these settings, checking images without metadata against the built-in
    /// OpenWrt image map.
    pub fn new(settings: OpenWrtSettings) -> Self {
        Self {
            settings,
            image_map: Arc::new(ImageMap::openwrt().clone()),
        }
    }

    /// The same upgrader checking images without metadata against `image_map` (for example
    /// the built-in map with the operator's custom images).
    pub fn with_image_map(mut self, image_map: ImageMap) -> Self {
        self.image_map = Arc::new(image_map);
        self
    }

    /// Its settings.
    pub fn settings(&self) -> &OpenWrtSettings {
        &self.settings
    }

    /// Where an image stored as `file_name` is uploaded (upstream `get_remote_path`):
    /// [`OpenWrtSettings::remote_upload_dir`] and the last path segment of `file_name`, or
    /// [`OpenWrtSettings::remote_file_name`] when set.
    ///
    /// ```
    /// use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
    ///
    /// let upgrader = OpenWrtUpgrader::new(OpenWrtSettings::default());
    /// assert_eq!(upgrader.remote_path("builds/1/openwrt-x86-64.bin"), "/tmp/openwrt-x86-64.bin");
    /// ```
    pub fn remote_path(&self, file_name: &str) -> String {
        let file_name = match &self.settings.remote_file_name {
            Some(file_name) => file_name.as_str(),
            None => file_name.rsplit('/').next().unwrap_or(file_name),
        };
        format!(
            "{}/{}",
            self.settings.remote_upload_dir.trim_end_matches('/'),
            file_name
        )
    }

    /// The flash command for an image uploaded to `remote_path` with `options` (upstream
    /// `get_upgrade_command`), from [`OpenWrtSettings::upgrade_command`].
    ///
    /// ```
    /// use flashfleet_models::UpgradeOptions;
    /// use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
    ///
    /// let upgrader = OpenWrtUpgrader::new(OpenWrtSettings::default());
    /// assert_eq!(
    ///     upgrader.upgrade_command("/tmp/x.bin", &UpgradeOptions::default()),
    ///     "/sbin/sysupgrade -v -c /tmp/x.bin"
    /// );
    /// ```
    pub fn upgrade_command(&self, remote_path: &str, options: &UpgradeOptions) -> String {
        commands::upgrade(
            &self.settings.upgrade_command,
            &self.settings.sysupgrade,
            &options.sysupgrade_flags(),
            remote_path,
        )
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.settings.connect_timeout,
            command: self.settings.command_timeout,
        }
    }
}

#[async_trait]
impl Upgrader for OpenWrtUpgrader {
    /// Upstream's schema and rules: sysupgrade's flags as booleans, `-n` without `-o` or `-c`,
    /// `-F` only when `allow_force`.
    fn validate_options(
        &self,
        options: &UpgradeOptions,
        allow_force: bool,
    ) -> Result<(), ValidationErrors> {
        options.validate_openwrt(allow_force)
    }

    async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        let mut attempt = Attempt::new(self, context);
        attempt.enter_quietly(UpgradePhase::Connecting).await?;
        let session = attempt.connect_before_flash().await?;
        let previous_release = match attempt.prepare(&session).await {
            Ok(Prepared::AlreadyInstalled) => {
                session.close().await;
                return Ok(UpgradeOutcome::AlreadyInstalled);
            }
            Ok(Prepared::ReadyToFlash { previous_release }) => previous_release,
            Err(error) if error.is_lease_lost() => {
                // Another engine holds the operation: nothing more reaches the device.
                session.abandon();
                return Err(error);
            }
            Err(error) => {
                attempt.restore(&session, &error).await;
                session.close().await;
                return Err(error);
            }
        };
        // From here on the device may be flashing: no cancellation, no retry.
        attempt.flash(session).await?;
        attempt.wait_for_reboot().await?;
        let session = attempt.reconnect().await?;
        attempt
            .finish(session, previous_release.as_ref(), None)
            .await
    }

    /// Decides from facts read on the device what became of the flash recorded in
    /// [`UpgradeContext::previous_flash`]: see the module documentation. Flashes again (through
    /// [`Upgrader::upgrade`]) only once the device proved that the earlier flash command never
    /// reached it and [`Reporter::restart_unflashed`](crate::Reporter::restart_unflashed)
    /// took the operation back before its flash.
    async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        let mut attempt = Attempt::new(self, context);
        // The operation is at or past `Flashing`: no phase is reported (phases only go
        // forward), only log lines.
        attempt.report_phases = false;
        attempt.verifying = true;
        let session = attempt.reconnect().await?;
        match attempt.verify_flash(session).await? {
            Verified::Outcome(outcome) => Ok(outcome),
            Verified::NeverFlashed => self.upgrade(context).await,
        }
    }
}

/// Which exit statuses a command may end with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Accept {
    /// Only these.
    Only(&'static [i32]),
    /// Any status (upstream's `raise_unexpected_exit=False`); the command must still report
    /// one.
    Any,
}

/// How a command failed.
#[derive(Debug)]
pub(crate) enum CommandError {
    /// The session failed (connection lost, timeout).
    Session(SessionError),
    /// The connection ended before the command reported its exit status.
    NoExitStatus { command: String },
    /// It exited with a status not accepted.
    Unexpected {
        command: String,
        status: i32,
        output: String,
    },
}

impl CommandError {
    /// What this failure means before the flash: a broken session is transient
    /// (recoverable), a command that answered badly is final.
    pub(crate) fn before_flash(self) -> UpgradeError {
        match self {
            CommandError::Session(error) => UpgradeError::Recoverable {
                message: error.to_string(),
                source: Some(Box::new(error)),
            },
            CommandError::NoExitStatus { command } => UpgradeError::recoverable(format!(
                "the connection was lost while running `{command}`"
            )),
            error @ CommandError::Unexpected { .. } => UpgradeError::failed(error.to_string()),
        }
    }

    /// What this failure means after the flash: the device may run the image, but what it
    /// runs could not be established.
    fn after_flash(self, what: &str) -> UpgradeError {
        UpgradeError::FlashedNotSeenAgain {
            message: format!("{what}: {self}"),
        }
    }

    /// Whether the session broke (rather than the command answering).
    fn is_session_lost(&self) -> bool {
        matches!(
            self,
            CommandError::Session(_) | CommandError::NoExitStatus { .. }
        )
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Session(error) => error.fmt(formatter),
            CommandError::NoExitStatus { command } => write!(
                formatter,
                "the connection was lost while running `{command}`"
            ),
            CommandError::Unexpected {
                command,
                status,
                output,
            } if output.is_empty() => {
                write!(
                    formatter,
                    "`{command}` failed: Unexpected exit code: {status}"
                )
            }
            CommandError::Unexpected {
                command,
                status,
                output,
            } => write!(
                formatter,
                "`{command}` failed with exit code {status}: {output}"
            ),
        }
    }
}

enum Prepared {
    AlreadyInstalled,
    ReadyToFlash {
        previous_release: Option<DeviceRelease>,
    },
}

/// What [`Attempt::verify_flash`] found.
enum Verified {
    /// Decided from facts.
    Outcome(UpgradeOutcome),
    /// The earlier flash command never reached the device, and the operation was taken back
    /// before its flash: upgrade again.
    NeverFlashed,
}

/// Whether a flash is under way, from the device's process list.
enum FlashProcess {
    /// These processes run.
    Running(Vec<String>),
    /// None runs.
    NotRunning,
    /// The process list could not be read (why).
    Unknown(String),
}

/// How waiting for a flash under way ended.
enum FlashWait {
    /// No flash process runs any more; the session is still up.
    Ended,
    /// The device cut the session (it is going down to flash or reboot).
    SessionLost,
    /// The flash process still runs at the end of the budget.
    StillRunning,
}

/// What the device says it is, read before the flash.
struct DeviceFacts {
    board_name: String,
    model: String,
    compat_version: Option<String>,
    /// The release it runs, with its board name.
    release: Option<DeviceRelease>,
}

/// One run of the upgrader for one context: the state the steps share.
pub(crate) struct Attempt<'a> {
    pub(crate) upgrader: &'a OpenWrtUpgrader,
    pub(crate) context: &'a UpgradeContext,
    /// Whether non-critical services are stopped (and must be started again before giving
    /// up).
    pub(crate) services_stopped: bool,
    /// The sysupgrade flags of the options.
    flags: Vec<String>,
    /// The host key the device is known by: recorded earlier, or at this attempt's first
    /// contact.
    host_key: Option<HostKey>,
    /// Whether phases are reported (not when only verifying).
    report_phases: bool,
    /// Whether this is [`Upgrader::verify`] (the checksum marker may already be there, and
    /// failures to read the device say that what it runs could not be verified).
    verifying: bool,
}

impl<'a> Attempt<'a> {
    fn new(upgrader: &'a OpenWrtUpgrader, context: &'a UpgradeContext) -> Self {
        Self {
            upgrader,
            context,
            services_stopped: false,
            flags: context.options.sysupgrade_flags(),
            host_key: context.connection.known_host_key.clone(),
            report_phases: true,
            verifying: false,
        }
    }

    fn keeps_configuration(&self) -> bool {
        !self.flags.iter().any(|flag| flag == "-n")
    }

    fn forced(&self) -> bool {
        self.flags.iter().any(|flag| flag == "-F")
    }

    /// Runs `command` with the command timeout.
    pub(crate) async fn run(
        &self,
        session: &DeviceSession,
        command: &str,
        accept: Accept,
    ) -> Result<CommandOutput, CommandError> {
        let answer = session
            .exec(command, self.upgrader.settings.command_timeout)
            .await
            .map_err(CommandError::Session)?;
        let Some(status) = answer.exit_status else {
            return Err(CommandError::NoExitStatus {
                command: command.to_owned(),
            });
        };
        match accept {
            Accept::Only(accepted) if !accepted.contains(&status) => {
                Err(CommandError::Unexpected {
                    command: command.to_owned(),
                    status,
                    output: answer.output,
                })
            }
            _ => Ok(answer),
        }
    }

    async fn enter_quietly(&self, phase: UpgradePhase) -> Result<(), UpgradeError> {
        Ok(self
            .context
            .reporter
            .progress(phase, phase.milestone(), None)
            .await?)
    }

    /// Reports a phase after the flash command was sent: cancellation is no longer possible,
    /// and a report that cannot be persisted ends the upgrade as "may have flashed", never as
    /// something the engine would retry.
    async fn enter_after_flash(
        &self,
        phase: UpgradePhase,
        line: Option<&str>,
    ) -> Result<(), UpgradeError> {
        if !self.report_phases {
            return match line {
                Some(line) => self.log_after_flash(line).await,
                None => Ok(()),
            };
        }
        after_flash_report(
            self.context
                .reporter
                .progress(phase, phase.milestone(), line)
                .await,
        )
    }

    async fn log_after_flash(&self, line: &str) -> Result<(), UpgradeError> {
        after_flash_report(self.context.reporter.log(line).await)
    }

    async fn connect_before_flash(&mut self) -> Result<DeviceSession, UpgradeError> {
        let policy = match &self.host_key {
            Some(host_key) => HostKeyPolicy::Expect(host_key.clone()),
            None => HostKeyPolicy::AcceptAny,
        };
        let session =
            DeviceSession::connect(&self.context.connection, &policy, self.upgrader.timeouts())
                .await
                .map_err(|error| match error.host_key_changed() {
                    Some(changed) => UpgradeError::aborted(format!(
                        "Refusing to upgrade: {changed}. The device may have been replaced, or \
                         its address may now belong to another host; if the change is \
                         legitimate, forget the recorded host key and try again."
                    )),
                    None => UpgradeError::Recoverable {
                        message: format!("Connection failed: {error}"),
                        source: Some(Box::new(error)),
                    },
                })?;
        tracing::debug!(device = %self.context.device.id, address = session.address(), "connected");
        if self.host_key.is_none() {
            let host_key = session.host_key().clone();
            self.context.reporter.record_host_key(&host_key).await?;
            self.host_key = Some(host_key);
        }
        Ok(session)
    }

    /// Everything before the flash command, up to and including the `Flashing` report.
    async fn prepare(&mut self, session: &DeviceSession) -> Result<Prepared, UpgradeError> {
        let context = self.context;
        context
            .enter(
                UpgradePhase::VerifyingIdentity,
                "Connection successful, starting upgrade...",
            )
            .await?;
        context.checkpoint().await?;
        self.verify_identity(session).await?;

        context
            .enter(
                UpgradePhase::ComparingChecksum,
                "Device identity verified successfully",
            )
            .await?;
        context.checkpoint().await?;
        if self.compare_checksum(session).await? {
            return Ok(Prepared::AlreadyInstalled);
        }
        let facts = self.read_facts(session).await?;
        if let Some(release) = self.runs_image_already(&facts) {
            self.mark_already_installed(session, release).await?;
            return Ok(Prepared::AlreadyInstalled);
        }
        self.check_fit(&facts).await?;
        let previous_release = facts.release;
        context.checkpoint().await?;

        self.enter_quietly(UpgradePhase::CheckingMemory).await?;
        memory::ensure_room_for_image(self, session).await?;
        context.checkpoint().await?;

        self.enter_quietly(UpgradePhase::Uploading).await?;
        let remote_path = self.upgrader.remote_path(&context.image.file_name);
        self.upload(session, &remote_path).await?;
        context.checkpoint().await?;

        if self.upgrader.settings.test_image {
            self.enter_quietly(UpgradePhase::TestingImage).await?;
            self.test_image(session, &remote_path).await?;
            context.checkpoint().await?;
        }

        // The boot id read just before the flash command is what later tells a device that
        // never rebooted (so never flashed) from one that did.
        let boot_id = self
            .read_boot_id(session)
            .await
            .map_err(CommandError::before_flash)?;
        context
            .begin_flash(boot_id.as_deref(), "Upgrade operation in progress...")
            .await?;
        Ok(Prepared::ReadyToFlash { previous_release })
    }

    /// The device's boot id, `None` when it has none to read.
    async fn read_boot_id(&self, session: &DeviceSession) -> Result<Option<String>, CommandError> {
        let answer = self
            .run(session, commands::READ_BOOT_ID, Accept::Any)
            .await?;
        Ok(if answer.exit_status == Some(0) {
            commands::parse_boot_id(&answer.output)
        } else {
            None
        })
    }

    async fn verify_identity(&self, session: &DeviceSession) -> Result<(), UpgradeError> {
        let answer = self
            .run(session, commands::READ_UUID, Accept::Only(&[0, 1]))
            .await
            .map_err(CommandError::before_flash)?;
        if answer.exit_status == Some(1) || answer.output.trim().is_empty() {
            let line = "Could not read device UUID from configuration";
            self.context.log(line).await?;
            return Err(UpgradeError::aborted(line));
        }
        let expected = self.context.device.id.to_string();
        let found = commands::normalize_uuid(&answer.output);
        if found != expected {
            let line = format!(
                "Device UUID mismatch: expected \"{expected}\", found \"{found}\" in device \
                 configuration"
            );
            self.context.log(&line).await?;
            return Err(UpgradeError::aborted(line));
        }
        Ok(())
    }

    /// Whether the device's checksum marker names this image.
    async fn compare_checksum(&self, session: &DeviceSession) -> Result<bool, UpgradeError> {
        let checksum_file = &self.upgrader.settings.checksum_file;
        let exists = self
            .run(
                session,
                &commands::test_file(checksum_file),
                Accept::Only(&[0, 1]),
            )
            .await
            .map_err(CommandError::before_flash)?;
        if exists.exit_status != Some(0) {
            self.context
                .log(
                    "Image checksum file not found, proceeding with the upload of the new \
                     image...",
                )
                .await?;
            return Ok(false);
        }
        self.context.log("Image checksum file found").await?;
        let marker = self
            .run(
                session,
                &commands::cat_file(checksum_file),
                Accept::Only(&[0]),
            )
            .await
            .map_err(CommandError::before_flash)?;
        if marker.output.trim() == self.context.image.sha256 {
            self.context
                .log(
                    "Firmware already upgraded previously. Identical checksum found in the \
                     filesystem, upgrade not needed.",
                )
                .await?;
            return Ok(true);
        }
        self.context
            .log("Checksum different, proceeding with the upload of the new image...")
            .await?;
        Ok(false)
    }

    /// What the device says it is: board, model, compat version and release.
    async fn read_facts(&self, session: &DeviceSession) -> Result<DeviceFacts, UpgradeError> {
        let read = |command: &'static str| async move {
            let answer = self
                .run(session, command, Accept::Any)
                .await
                .map_err(CommandError::before_flash)?;
            Ok::<_, UpgradeError>((answer.exit_status == Some(0)).then_some(answer.output))
        };
        let board_name = read(commands::READ_BOARD_NAME)
            .await?
            .map(|board_name| board_name.trim().to_owned())
            .unwrap_or_default();
        let model = read(commands::READ_MODEL).await?.unwrap_or_default();
        let compat_version = read(commands::READ_COMPAT_VERSION).await?;
        let release = read(commands::READ_RELEASE)
            .await?
            .and_then(|text| commands::parse_openwrt_release(&text))
            .map(|release| DeviceRelease {
                board_name: board_name.clone(),
                ..release
            });
        Ok(DeviceFacts {
            board_name,
            model,
            compat_version,
            release,
        })
    }

    /// The release the device runs when it is the image's: the release version and revision
    /// the image's metadata gives (both), on a board the metadata lists (when it lists any).
    fn runs_image_already<'f>(&self, facts: &'f DeviceFacts) -> Option<&'f DeviceRelease> {
        let metadata = self.context.image.metadata.as_ref()?;
        let release = facts.release.as_ref()?;
        runs_image(metadata, release).then_some(release)
    }

    /// A device that already runs the image is not flashed: the checksum marker is written
    /// (best effort: without it, the release alone says so next time).
    async fn mark_already_installed(
        &self,
        session: &DeviceSession,
        release: &DeviceRelease,
    ) -> Result<(), UpgradeError> {
        let settings = &self.upgrader.settings;
        self.context
            .log(&format!(
                "The device already runs {} on board \"{}\", the release of the image: upgrade \
                 not needed. Writing checksum file to {}",
                describe(release),
                release.board_name,
                settings.checksum_file
            ))
            .await?;
        let commands = [
            commands::make_parent_directory(&settings.checksum_file),
            commands::write_checksum(&self.context.image.sha256, &settings.checksum_file),
        ];
        for command in commands {
            if let Err(error) = self.run(session, &command, Accept::Only(&[0])).await {
                self.context
                    .log(&format!("Could not write the checksum file: {error}"))
                    .await?;
                break;
            }
        }
        Ok(())
    }

    /// Refuses an image that does not fit the device, from what the device says it is.
    async fn check_fit(&self, facts: &DeviceFacts) -> Result<(), UpgradeError> {
        let DeviceFacts {
            board_name,
            model,
            compat_version,
            ..
        } = facts;
        let image = &self.context.image;
        let identity = DeviceIdentity {
            board_name,
            model,
            compat_version: compat_version.as_deref().map(str::trim),
        };
        let options = SysupgradeOptions {
            keep_config: self.keeps_configuration(),
            ignore_minor_compat_version: false,
        };
        let verdict = check_compatibility(
            &self.upgrader.image_map,
            &image.image_type,
            image.metadata.as_ref(),
            &identity,
            options,
        );
        let fits = matches!(
            verdict,
            Verdict::Compatible
                | Verdict::Unknown {
                    map_lists_model: true
                }
        );
        if fits {
            return Ok(());
        }
        let facts = format!(
            "board \"{board_name}\", model \"{model}\", compat version {}",
            compat_version.as_deref().unwrap_or("1.0")
        );
        if self.forced() {
            self.context
                .log(&format!(
                    "The image does not fit this device ({facts}): {verdict}. Flashing anyway \
                     because -F was given."
                ))
                .await?;
            return Ok(());
        }
        let line = format!("The image does not fit this device ({facts}): {verdict}.");
        self.context.log(&line).await?;
        Err(UpgradeError::aborted(line))
    }

    async fn upload(&self, session: &DeviceSession, remote_path: &str) -> Result<(), UpgradeError> {
        let image = &self.context.image;
        let stream = image
            .source
            .open()
            .await
            .map_err(|error| UpgradeError::Recoverable {
                message: format!("could not open the image: {error}"),
                source: Some(Box::new(error)),
            })?;
        let settings = &self.upgrader.settings;
        session
            .upload(
                stream,
                remote_path,
                image.size,
                settings.command_timeout,
                settings.upload_deadline(image.size),
            )
            .await
            .map_err(|error| {
                let message = match &error {
                    SessionError::UploadDeadline { .. } => format!(
                        "Upload too slow: {error} (the deadline is the connect timeout, {} s, \
                         plus {} bytes at the minimum upload throughput of {} bytes/s)",
                        format_seconds(settings.connect_timeout),
                        image.size,
                        settings.min_upload_throughput
                    ),
                    _ => error.to_string(),
                };
                UpgradeError::Recoverable {
                    message,
                    source: Some(Box::new(error)),
                }
            })
    }

    async fn test_image(
        &self,
        session: &DeviceSession,
        remote_path: &str,
    ) -> Result<(), UpgradeError> {
        let command =
            commands::test_image(&self.upgrader.settings.sysupgrade, &self.flags, remote_path);
        match self.run(session, &command, Accept::Only(&[0])).await {
            Ok(_) => {
                self.context
                    .log(
                        "Sysupgrade test passed successfully, proceeding with the upgrade \
                         operation...",
                    )
                    .await?;
                Ok(())
            }
            Err(CommandError::Unexpected { output, status, .. }) => {
                let output = if output.is_empty() {
                    format!("Unexpected exit code: {status}")
                } else {
                    output
                };
                self.context.log(&output).await?;
                Err(UpgradeError::aborted(format!(
                    "the device refused the image (`{command}` failed): {output}"
                )))
            }
            Err(error) => Err(error.before_flash()),
        }
    }

    /// Starts again what was stopped before giving up with `error` (before the flash). Best
    /// effort: a broken session is replaced once; failures are logged.
    async fn restore(&mut self, session: &DeviceSession, error: &UpgradeError) {
        // Another engine holds the operation: nothing more may reach the device.
        if !self.services_stopped || error.is_lease_lost() {
            return;
        }
        let line = if matches!(error, UpgradeError::Cancelled) {
            "Restarting non-critical services..."
        } else {
            "Starting non critical services again..."
        };
        let _ = self.context.log(line).await;
        if memory::start_services(self, session).await.is_ok() {
            return;
        }
        let policy = match &self.host_key {
            Some(host_key) => HostKeyPolicy::Expect(host_key.clone()),
            None => HostKeyPolicy::AcceptAny,
        };
        let outcome = match DeviceSession::connect(
            &self.context.connection,
            &policy,
            self.upgrader.timeouts(),
        )
        .await
        {
            Ok(fresh) => {
                let outcome = memory::start_services(self, &fresh).await;
                fresh.close().await;
                outcome
            }
            Err(error) => Err(UpgradeError::recoverable(error.to_string())),
        };
        if let Err(error) = outcome {
            let _ = self
                .context
                .log(&format!(
                    "Could not start the non critical services again ({error}); reboot the \
                     device to restore them."
                ))
                .await;
        }
    }

    /// Sends the flash command (after openwisp-config's checksum removal) and closes the
    /// session. Neither the exit status nor the output decides anything.
    async fn flash(&self, session: DeviceSession) -> Result<(), UpgradeError> {
        let settings = &self.upgrader.settings;
        // Any answer will do; a failure is followed by the flash attempt all the same.
        let _ = session
            .exec(commands::REMOVE_CONFIG_CHECKSUM, settings.command_timeout)
            .await;
        let remote_path = self.upgrader.remote_path(&self.context.image.file_name);
        let command = self
            .upgrader
            .upgrade_command(&remote_path, &self.context.options);
        let line = match session.exec(&command, settings.upgrade_timeout).await {
            Ok(answer) => (!answer.output.is_empty()).then_some(answer.output),
            Err(SessionError::Timeout { .. }) => Some(format!(
                "The upgrade command did not end within {} seconds; its session was closed.",
                format_seconds(settings.upgrade_timeout)
            )),
            Err(error) => Some(format!("The upgrade command's session ended: {error}")),
        };
        session.close().await;
        if let Some(line) = line {
            self.log_after_flash(&line).await?;
        }
        Ok(())
    }

    async fn wait_for_reboot(&self) -> Result<(), UpgradeError> {
        let delay = self.upgrader.settings.reconnect_delay;
        self.enter_after_flash(
            UpgradePhase::WaitingForReboot,
            Some(&format!(
                "SSH connection closed, will wait {} seconds before attempting to reconnect...",
                format_seconds(delay)
            )),
        )
        .await?;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Reconnects after the flash, `reconnect_max_retries` attempts `reconnect_retry_delay`
    /// apart. The recorded host key must not change, unless the configuration was not kept
    /// (`-n` regenerates it): then the new key is recorded.
    async fn reconnect(&mut self) -> Result<DeviceSession, UpgradeError> {
        let settings = &self.upgrader.settings;
        self.enter_after_flash(UpgradePhase::Reconnecting, None)
            .await?;
        let policy = match (&self.host_key, self.keeps_configuration()) {
            (Some(host_key), true) => HostKeyPolicy::Expect(host_key.clone()),
            _ => HostKeyPolicy::AcceptAny,
        };
        let addresses = self.context.connection.addresses.join(", ");
        let attempts = settings.reconnect_max_retries.max(1);
        for attempt in 1..=attempts {
            let trying =
                format!("Trying to reconnect to device at {addresses} (attempt n.{attempt})...");
            match DeviceSession::connect(
                &self.context.connection,
                &policy,
                self.upgrader.timeouts(),
            )
            .await
            {
                Ok(session) => {
                    self.log_after_flash(&trying).await?;
                    self.accept_new_host_key(&session).await?;
                    return Ok(session);
                }
                Err(error) => {
                    if let Some(changed) = error.host_key_changed() {
                        self.log_after_flash(&trying).await?;
                        let message = format!(
                            "The device came back after the flash with another SSH host key \
                             although its configuration was kept: {changed}. Not trusting it."
                        );
                        self.log_after_flash(&message).await?;
                        return Err(UpgradeError::FlashedNotSeenAgain { message });
                    }
                    self.log_after_flash(&trying).await?;
                    if attempt < attempts {
                        self.log_after_flash(&format!(
                            "Device not reachable yet, ({error}).\nretrying in {} seconds...",
                            format_seconds(settings.reconnect_retry_delay)
                        ))
                        .await?;
                        tokio::time::sleep(settings.reconnect_retry_delay).await;
                    } else {
                        self.log_after_flash(&format!("Device not reachable yet, ({error})."))
                            .await?;
                    }
                }
            }
        }
        let message = if self.verifying {
            "Giving up, device not reachable anymore after upgrade: could not verify what the \
             device runs."
                .to_owned()
        } else {
            "Giving up, device not reachable anymore after upgrade".to_owned()
        };
        self.log_after_flash(&message).await?;
        Err(UpgradeError::FlashedNotSeenAgain { message })
    }

    async fn accept_new_host_key(&mut self, session: &DeviceSession) -> Result<(), UpgradeError> {
        let presented = session.host_key();
        if self.host_key.as_ref() == Some(presented) {
            return Ok(());
        }
        after_flash_report(self.context.reporter.record_host_key(presented).await)?;
        if self.host_key.is_some() {
            self.log_after_flash(&format!(
                "The device presents a new SSH host key after a flash that did not keep its \
                 configuration; recorded {} {}.",
                presented.algorithm,
                fingerprint_hint(presented)
            ))
            .await?;
        }
        self.host_key = Some(presented.clone());
        Ok(())
    }

    /// [`Upgrader::verify`] once reconnected: decides from the boot id, the process list and
    /// what the device runs (see the module documentation), logging each decision with its
    /// facts. Closes `session`.
    async fn verify_flash(&mut self, session: DeviceSession) -> Result<Verified, UpgradeError> {
        let recorded = self
            .context
            .previous_flash
            .as_ref()
            .and_then(|flash| flash.boot_id.clone());
        let boot_id = match self.read_boot_id(&session).await {
            Ok(boot_id) => boot_id,
            Err(error) => return Err(self.unverifiable(session, error).await),
        };
        let recorded = match (recorded, boot_id) {
            (Some(recorded), Some(boot_id)) if recorded == boot_id => recorded,
            (None, _) => {
                let line = "No boot id was recorded before the flash command: deciding from \
                            what the device runs.";
                return self.decide_by_facts(session, line, None).await;
            }
            (Some(recorded), None) => {
                let line = format!(
                    "The device has no boot id to compare with the one read before the flash \
                     command ({recorded}): deciding from what it runs."
                );
                return self.decide_by_facts(session, &line, None).await;
            }
            (Some(recorded), Some(boot_id)) => {
                let line = format!(
                    "The device rebooted since the flash command (boot id {boot_id}, {recorded} \
                     before the flash): deciding from what it runs."
                );
                return self.decide_by_facts(session, &line, None).await;
            }
        };
        // Not rebooted since the boot id was read before the flash command.
        match self.flash_process(&session).await {
            Ok(FlashProcess::NotRunning) => self.restart_if_never_flashed(session, &recorded).await,
            Ok(FlashProcess::Running(processes)) => {
                let budget = reconnect_budget(&self.upgrader.settings);
                self.log_after_flash(&format!(
                    "The device has not rebooted since the flash command (boot id {recorded} \
                     unchanged) and runs `{}`: the flash is under way; waiting for it to end \
                     (at most {} seconds).",
                    processes.join("`, `"),
                    format_seconds(budget)
                ))
                .await?;
                let waited = self.wait_for_flash(&session, budget).await;
                self.after_flash_wait(session, waited, &recorded, budget)
                    .await
            }
            Ok(FlashProcess::Unknown(why)) => {
                let line = format!(
                    "The device has not rebooted since the flash command (boot id {recorded} \
                     unchanged), and whether a flash is under way is unknown ({why}): not \
                     flashing again; deciding from what it runs."
                );
                self.decide_by_facts(session, &line, None).await
            }
            Err(error) if error.is_session_lost() => {
                self.log_after_flash(&format!(
                    "The device has not rebooted since the flash command (boot id {recorded} \
                     unchanged) and cut the connection: the flash may be under way."
                ))
                .await?;
                self.after_flash_wait(session, FlashWait::SessionLost, &recorded, Duration::ZERO)
                    .await
            }
            Err(error) => Err(self.unverifiable(session, error).await),
        }
    }

    /// The device has not rebooted since the flash command and no flash runs: when it runs
    /// another release than the image's, that proves the flash command never reached it, and
    /// the operation is taken back before its flash ([`Verified::NeverFlashed`]). Otherwise
    /// decides from what it runs.
    async fn restart_if_never_flashed(
        &mut self,
        session: DeviceSession,
        boot_id: &str,
    ) -> Result<Verified, UpgradeError> {
        let release = match self.logged(self.read_release(&session).await).await {
            Ok(Some(release)) => release,
            Ok(None) => {
                let line = format!(
                    "The device has not rebooted since the flash command (boot id {boot_id} \
                     unchanged) and no sysupgrade is running, but what it runs cannot be read: \
                     not flashing again."
                );
                return self.decide_by_facts(session, &line, Some(None)).await;
            }
            Err(error) => {
                session.close().await;
                return Err(error);
            }
        };
        let other_release = match self
            .context
            .image
            .metadata
            .as_ref()
            .and_then(|metadata| differs_from_image(metadata, &release))
        {
            Some(differs) => differs,
            // Without a release to compare with, only the checksum marker can tell.
            None => match self.logged(self.marker_names_image(&session).await).await {
                Ok(marked) => !marked,
                Err(error) => {
                    session.close().await;
                    return Err(error);
                }
            },
        };
        if !other_release {
            let line = format!(
                "The device has not rebooted since the flash command (boot id {boot_id} \
                 unchanged), no sysupgrade is running, and it runs {}, which is the image's: \
                 deciding from what it runs.",
                describe(&release)
            );
            return self
                .decide_by_facts(session, &line, Some(Some(release)))
                .await;
        }
        session.close().await;
        let not_the_image = match self.context.image.metadata.as_ref() {
            Some(metadata) => format!(", not the image's {}", expected_release(metadata)),
            None => ", without the checksum marker of the image".to_owned(),
        };
        let line = format!(
            "The flash command never reached the device: its boot id is still {boot_id}, the \
             one read before the flash command, it runs {} on board \"{}\"{not_the_image}, and \
             no sysupgrade is running. Starting the upgrade again.",
            describe(&release),
            release.board_name
        );
        match self.context.reporter.restart_unflashed(&line).await {
            Ok(()) => Ok(Verified::NeverFlashed),
            Err(ReportError::Persistence(source)) => {
                let message = format!(
                    "{line} But the operation could not be taken back before its flash \
                     ({source}): not flashing again."
                );
                self.log_after_flash(&message).await?;
                Err(UpgradeError::FlashedNotSeenAgain { message })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Polls the process list every `reconnect_retry_delay` until no flash process runs, the
    /// device cuts the session, or `budget` is spent.
    async fn wait_for_flash(&self, session: &DeviceSession, budget: Duration) -> FlashWait {
        let settings = &self.upgrader.settings;
        let started = tokio::time::Instant::now();
        loop {
            let waited = started.elapsed();
            if waited >= budget {
                return FlashWait::StillRunning;
            }
            tokio::time::sleep(settings.reconnect_retry_delay.min(budget - waited)).await;
            match self.flash_process(session).await {
                Ok(FlashProcess::NotRunning) => return FlashWait::Ended,
                Err(error) if error.is_session_lost() => return FlashWait::SessionLost,
                Ok(FlashProcess::Running(_) | FlashProcess::Unknown(_)) | Err(_) => {}
            }
        }
    }

    /// After waiting for a flash under way: reconnects as after a reboot and decides from what
    /// the device runs (never flashing again: the flash command did reach it).
    async fn after_flash_wait(
        &mut self,
        session: DeviceSession,
        waited: FlashWait,
        boot_id: &str,
        budget: Duration,
    ) -> Result<Verified, UpgradeError> {
        match waited {
            FlashWait::StillRunning => {
                session.close().await;
                let message = format!(
                    "The flash is still under way after {} seconds (boot id {boot_id} unchanged, \
                     sysupgrade still running): could not verify what the device runs.",
                    format_seconds(budget)
                );
                self.log_after_flash(&message).await?;
                return Err(UpgradeError::FlashedNotSeenAgain { message });
            }
            FlashWait::Ended => {
                session.close().await;
                self.log_after_flash(
                    "The flash process ended without the device cutting the connection; \
                     reconnecting to see what it runs.",
                )
                .await?;
            }
            FlashWait::SessionLost => {
                session.abandon();
                self.wait_for_reboot().await?;
            }
        }
        let session = self.reconnect().await?;
        let line = match self.read_boot_id(&session).await {
            Ok(Some(now)) if now == boot_id => format!(
                "The device has still not rebooted (boot id {now}): deciding from what it runs."
            ),
            Ok(Some(now)) => format!(
                "The device rebooted (boot id {now}, {boot_id} before the flash): deciding from \
                 what it runs."
            ),
            Ok(None) => {
                "The device no longer shows a boot id: deciding from what it runs.".to_owned()
            }
            Err(error) => return Err(self.unverifiable(session, error).await),
        };
        self.decide_by_facts(session, &line, None).await
    }

    /// Whether a flash process runs, from the process list.
    async fn flash_process(&self, session: &DeviceSession) -> Result<FlashProcess, CommandError> {
        let answer = self
            .run(session, commands::PROCESS_LIST, Accept::Any)
            .await?;
        if answer.exit_status != Some(0) {
            return Ok(FlashProcess::Unknown(format!(
                "`{}` failed: {}",
                commands::PROCESS_LIST,
                answer.output
            )));
        }
        let programs = self.flash_programs();
        let programs: Vec<&str> = programs.iter().map(String::as_str).collect();
        Ok(
            match commands::processes_running(&answer.output, &programs) {
                None => FlashProcess::Unknown(format!(
                    "`{}` printed no process list",
                    commands::PROCESS_LIST
                )),
                Some(found) if found.is_empty() => FlashProcess::NotRunning,
                Some(found) => FlashProcess::Running(found),
            },
        )
    }

    /// The programs whose process means a flash under way: `sysupgrade` (the configured one
    /// too), procd's stage 2 `upgraded`, and the program of a custom flash command.
    fn flash_programs(&self) -> Vec<String> {
        let file_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
        let mut programs = vec![
            "sysupgrade".to_owned(),
            "upgraded".to_owned(),
            file_name(&self.upgrader.settings.sysupgrade),
        ];
        let command = self
            .upgrader
            .upgrade_command("/tmp/image", &self.context.options);
        programs.extend(command.split_whitespace().next().map(file_name));
        programs.sort();
        programs.dedup();
        programs
    }

    /// Logs `line` (the facts behind the decision), then decides from what the device runs:
    /// success only when it runs the image. Closes `session`.
    async fn decide_by_facts(
        &self,
        session: DeviceSession,
        line: &str,
        known_release: Option<Option<DeviceRelease>>,
    ) -> Result<Verified, UpgradeError> {
        if let Err(error) = self.log_after_flash(line).await {
            session.abandon();
            return Err(error);
        }
        self.finish(session, None, known_release)
            .await
            .map(Verified::Outcome)
    }

    /// `result`, with the message of a failure after the flash written to the log.
    async fn logged<T>(&self, result: Result<T, UpgradeError>) -> Result<T, UpgradeError> {
        match result {
            Err(UpgradeError::FlashedNotSeenAgain { message }) => {
                self.log_after_flash(&message).await?;
                Err(UpgradeError::FlashedNotSeenAgain { message })
            }
            other => other,
        }
    }

    /// The device answered, but reading it failed: what it runs could not be verified.
    async fn unverifiable(&self, session: DeviceSession, error: CommandError) -> UpgradeError {
        session.close().await;
        let message = format!("Reconnected, but could not verify what the device runs: {error}");
        match self.log_after_flash(&message).await {
            Ok(()) => UpgradeError::FlashedNotSeenAgain { message },
            Err(error) => error,
        }
    }

    /// After reconnecting: reads what the device runs (unless `known_release` holds it
    /// already), compares it with the image, writes the checksum marker; then closes the
    /// session.
    async fn finish(
        &self,
        session: DeviceSession,
        previous_release: Option<&DeviceRelease>,
        known_release: Option<Option<DeviceRelease>>,
    ) -> Result<UpgradeOutcome, UpgradeError> {
        let outcome = self
            .check_and_mark(&session, previous_release, known_release)
            .await;
        match &outcome {
            Err(error) if error.is_lease_lost() => session.abandon(),
            _ => session.close().await,
        }
        outcome
    }

    async fn check_and_mark(
        &self,
        session: &DeviceSession,
        previous_release: Option<&DeviceRelease>,
        known_release: Option<Option<DeviceRelease>>,
    ) -> Result<UpgradeOutcome, UpgradeError> {
        let settings = &self.upgrader.settings;
        self.enter_after_flash(UpgradePhase::VerifyingVersion, None)
            .await?;
        let release = match known_release {
            Some(release) => release,
            None => self.logged(self.read_release(session).await).await?,
        };
        // When verifying, the marker may be there already.
        let marked = if self.verifying {
            self.logged(self.marker_names_image(session).await).await?
        } else {
            false
        };
        if let Some(release) = &release {
            self.log_after_flash(&format!(
                "The device runs {} on board \"{}\".",
                describe(release),
                release.board_name
            ))
            .await?;
        }
        match &self.context.image.metadata {
            Some(metadata) => {
                if let Err(message) =
                    compare_release(metadata, release.as_ref(), previous_release, self.forced())
                {
                    self.log_after_flash(&message).await?;
                    return Err(UpgradeError::FlashedNotSeenAgain { message });
                }
            }
            None if self.verifying && !marked => {
                let message = "The device is reachable, but the image has no metadata to \
                               compare its release with and the device has no checksum marker \
                               for it: cannot tell whether it runs the image."
                    .to_owned();
                self.log_after_flash(&message).await?;
                return Err(UpgradeError::FlashedNotSeenAgain { message });
            }
            None => {}
        }
        if !marked {
            self.enter_after_flash(
                UpgradePhase::WritingChecksum,
                Some(&format!(
                    "Connected! Writing checksum file to {}",
                    settings.checksum_file
                )),
            )
            .await?;
            let commands = [
                commands::make_parent_directory(&settings.checksum_file),
                commands::write_checksum(&self.context.image.sha256, &settings.checksum_file),
            ];
            for command in commands {
                if let Err(error) = self.run(session, &command, Accept::Only(&[0])).await {
                    // The device runs the image; only the marker is missing, so the next
                    // upgrade to this image would flash it again.
                    self.log_after_flash(&format!("Could not write the checksum file: {error}"))
                        .await?;
                    break;
                }
            }
        }
        self.log_after_flash("Upgrade completed successfully.")
            .await?;
        Ok(UpgradeOutcome::Upgraded { release })
    }

    async fn marker_names_image(&self, session: &DeviceSession) -> Result<bool, UpgradeError> {
        let checksum_file = &self.upgrader.settings.checksum_file;
        let answer = self
            .run(session, &commands::cat_file(checksum_file), Accept::Any)
            .await
            .map_err(|error| {
                error.after_flash("could not verify what the device runs (its checksum file)")
            })?;
        Ok(answer.exit_status == Some(0) && answer.output.trim() == self.context.image.sha256)
    }

    /// The release (`/etc/openwrt_release`, else `ubus call system board`) and board name.
    async fn read_release(
        &self,
        session: &DeviceSession,
    ) -> Result<Option<DeviceRelease>, UpgradeError> {
        let unreadable = "reconnected after the flash, but could not verify what the device runs";
        let release_file = self
            .run(session, commands::READ_RELEASE, Accept::Any)
            .await
            .map_err(|error| error.after_flash(unreadable))?;
        let mut release = if release_file.exit_status == Some(0) {
            commands::parse_openwrt_release(&release_file.output)
        } else {
            None
        };
        if release.is_none() {
            let ubus = self
                .run(session, commands::UBUS_SYSTEM_BOARD, Accept::Any)
                .await
                .map_err(|error| error.after_flash(unreadable))?;
            if ubus.exit_status == Some(0) {
                release = commands::parse_ubus_board(&ubus.output);
            }
        }
        let board = self
            .run(session, commands::READ_BOARD_NAME, Accept::Any)
            .await
            .map_err(|error| error.after_flash(unreadable))?;
        if let Some(release) = &mut release
            && board.exit_status == Some(0)
            && !board.output.trim().is_empty()
        {
            release.board_name = board.output.trim().to_owned();
        }
        Ok(release)
    }
}

/// A report after the flash: a cancellation cannot stop anything any more, and a persistence
/// failure must not make the engine retry (flash again). A lost lease stops the upgrade at
/// once: another engine holds the operation now.
fn after_flash_report(result: Result<(), ReportError>) -> Result<(), UpgradeError> {
    match result {
        Ok(()) | Err(ReportError::Cancelled) => Ok(()),
        Err(ReportError::LeaseLost) => Err(UpgradeError::LeaseLost),
        Err(error) => Err(UpgradeError::FlashedNotSeenAgain {
            message: format!("the flash command was sent, then {error}"),
        }),
    }
}

/// Whether `release` is the image's: the release version and revision of the metadata (both
/// given) on a board among its supported devices (when it lists any).
fn runs_image(metadata: &ImageMetadata, release: &DeviceRelease) -> bool {
    let expected = &metadata.version;
    let (Some(version), Some(revision)) = (&expected.version, &expected.revision) else {
        return false;
    };
    *version == release.version
        && *revision == release.revision
        && metadata
            .active_supported_devices()
            .is_none_or(|devices| devices.is_empty() || devices.contains(&release.board_name))
}

/// Whether `release` is another release than the image's, by the version and revision the
/// metadata gives; `None` when it gives neither.
fn differs_from_image(metadata: &ImageMetadata, release: &DeviceRelease) -> Option<bool> {
    let expected = &metadata.version;
    if expected.version.is_none() && expected.revision.is_none() {
        return None;
    }
    Some(
        expected
            .version
            .as_deref()
            .is_some_and(|version| version != release.version)
            || expected
                .revision
                .as_deref()
                .is_some_and(|revision| revision != release.revision),
    )
}

/// Whether the release read after the reboot is the image's: version and revision as the
/// metadata gives them, and the board among its supported devices (unless `-F` flashed it
/// anyway). The error says what was observed.
fn compare_release(
    metadata: &ImageMetadata,
    release: Option<&DeviceRelease>,
    previous_release: Option<&DeviceRelease>,
    forced: bool,
) -> Result<(), String> {
    let Some(release) = release else {
        return Err(
            "The device is reachable again, but neither /etc/openwrt_release nor \
                    `ubus call system board` says what it runs: could not verify what the \
                    device runs."
                .to_owned(),
        );
    };
    let expected = &metadata.version;
    let version_differs = expected
        .version
        .as_deref()
        .is_some_and(|version| version != release.version)
        || expected
            .revision
            .as_deref()
            .is_some_and(|revision| revision != release.revision);
    let board_unsupported = !forced
        && metadata
            .active_supported_devices()
            .is_some_and(|devices| !devices.contains(&release.board_name));
    let expected_release = expected_release(metadata);
    if version_differs {
        let unchanged = previous_release.is_some_and(|previous| {
            previous.version == release.version && previous.revision == release.revision
        });
        return Err(if unchanged {
            format!(
                "The device came back still running its previous release ({}), not the \
                 image's {expected_release}: the image was not installed.",
                describe(release)
            )
        } else {
            format!(
                "The device came back running {}, not the image's {expected_release}.",
                describe(release)
            )
        });
    }
    if board_unsupported {
        return Err(format!(
            "The device came back as board \"{}\", which the image does not support ({}).",
            release.board_name,
            metadata
                .active_supported_devices()
                .unwrap_or_default()
                .join(" ")
        ));
    }
    Ok(())
}

/// How long the device may take to come back from a flash: `reconnect_delay` plus
/// `reconnect_max_retries` times `reconnect_retry_delay`.
fn reconnect_budget(settings: &OpenWrtSettings) -> Duration {
    settings.reconnect_delay.saturating_add(
        settings
            .reconnect_retry_delay
            .saturating_mul(settings.reconnect_max_retries),
    )
}

/// The release the image's metadata gives, such as `OpenWrt 23.05.3 r23809-234f1a2efa`.
fn expected_release(metadata: &ImageMetadata) -> String {
    let expected = &metadata.version;
    [
        expected.dist.as_deref(),
        expected.version.as_deref(),
        expected.revision.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

fn describe(release: &DeviceRelease) -> String {
    [
        release.distribution.as_str(),
        release.version.as_str(),
        release.revision.as_str(),
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join(" ")
}

/// The start of a host key, enough to tell two keys apart in a log line.
fn fingerprint_hint(host_key: &HostKey) -> String {
    let tail: String = host_key
        .key
        .chars()
        .rev()
        .take(16)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ImageMetadata {
        ImageMetadata::from_json(
            br#"{"metadata_version":"1.1","compat_version":"1.0",
                 "supported_devices":["glinet,gl-mt300n-v2"],
                 "version":{"dist":"OpenWrt","version":"23.05.3","revision":"r23809-234f1a2efa",
                            "target":"ramips/mt76x8","board":"glinet_gl-mt300n-v2"}}"#,
        )
        .unwrap()
    }

    fn release(version: &str, revision: &str, board_name: &str) -> DeviceRelease {
        DeviceRelease {
            distribution: "OpenWrt".to_owned(),
            version: version.to_owned(),
            revision: revision.to_owned(),
            target: "ramips/mt76x8".to_owned(),
            board_name: board_name.to_owned(),
        }
    }

    #[test]
    fn the_image_release_on_a_supported_board_is_a_success() {
        let now = release("23.05.3", "r23809-234f1a2efa", "glinet,gl-mt300n-v2");
        assert_eq!(
            compare_release(&metadata(), Some(&now), None, false),
            Ok(())
        );
    }

    #[test]
    fn the_old_release_is_reported_as_not_installed() {
        let before = release("22.03.5", "r20134-5f15225c1e", "glinet,gl-mt300n-v2");
        let error = compare_release(&metadata(), Some(&before), Some(&before), false).unwrap_err();
        assert!(
            error
                .contains("still running its previous release (OpenWrt 22.03.5 r20134-5f15225c1e)"),
            "{error}"
        );
        let other = release("23.05.2", "r23630-842932a63d", "glinet,gl-mt300n-v2");
        let error = compare_release(&metadata(), Some(&other), Some(&before), false).unwrap_err();
        assert!(error.contains("running OpenWrt 23.05.2"), "{error}");
    }

    #[test]
    fn another_board_is_refused_unless_forced() {
        let now = release("23.05.3", "r23809-234f1a2efa", "tplink,archer-c7-v2");
        let error = compare_release(&metadata(), Some(&now), None, false).unwrap_err();
        assert!(error.contains("board \"tplink,archer-c7-v2\""), "{error}");
        assert_eq!(compare_release(&metadata(), Some(&now), None, true), Ok(()));
    }

    #[test]
    fn an_unreadable_release_is_not_a_success() {
        assert!(compare_release(&metadata(), None, None, false).is_err());
    }

    #[test]
    fn remote_paths_keep_only_the_file_name_or_the_configured_one() {
        let file_name =
            "builds/1.0/openwrt-ramips-mt76x8-glinet_gl-mt300n-v2-squashfs-sysupgrade.bin";
        let upgrader = OpenWrtUpgrader::new(OpenWrtSettings::default());
        assert_eq!(
            upgrader.remote_path(file_name),
            "/tmp/openwrt-ramips-mt76x8-glinet_gl-mt300n-v2-squashfs-sysupgrade.bin"
        );
        let custom = OpenWrtUpgrader::new(OpenWrtSettings {
            remote_file_name: Some("firmware.img".to_owned()),
            remote_upload_dir: "/var/tmp/".to_owned(),
            ..OpenWrtSettings::default()
        });
        assert_eq!(custom.remote_path(file_name), "/var/tmp/firmware.img");
    }

    #[test]
    fn options_follow_upstreams_rules() {
        let upgrader = OpenWrtUpgrader::new(OpenWrtSettings::default());
        let options = |value| UpgradeOptions::from_json(value).unwrap();
        assert!(
            upgrader
                .validate_options(&options(serde_json::json!({})), false)
                .is_ok()
        );
        assert!(
            upgrader
                .validate_options(&options(serde_json::json!({"F": true})), false)
                .is_err()
        );
        assert!(
            upgrader
                .validate_options(&options(serde_json::json!({"F": true})), true)
                .is_ok()
        );
        assert!(
            upgrader
                .validate_options(&options(serde_json::json!({"n": true, "c": true})), true)
                .is_err()
        );
        assert_eq!(
            upgrader.upgrade_command(
                "/tmp/x.bin",
                &options(serde_json::json!({"n": true, "F": true}))
            ),
            "/sbin/sysupgrade -v -n -F /tmp/x.bin"
        );
    }
}

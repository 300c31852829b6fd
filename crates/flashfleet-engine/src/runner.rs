//! Running one claimed operation: from the rows to an [`UpgradeContext`], through the upgrader,
//! to the operation's final status (or its next attempt).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use flashfleet_boards::ImageMetadata;
use flashfleet_models::repository::{Completion, ProgressUpdate, Repository};
use flashfleet_models::{
    Device, FirmwareImage, RepoError, Scope, StorageKey, UpgradeOperation, UpgradePhase,
    UpgradeStatus,
};
use flashfleet_upgrader::{
    ConnectionTarget, FlashRecord, HostKey, ImageSource, UpgradeContext, UpgradeError,
    UpgradeImage, UpgradeOutcome, UpgraderRegistry,
};
use std::pin::Pin;

use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::events::{Event, EventBus};
use crate::files::FirmwareFiles;
use crate::reporter::{HeldLease, OperationReporter, detached};

/// What every operation of an engine shares.
pub(crate) struct Shared {
    pub(crate) repository: Arc<dyn Repository>,
    pub(crate) upgraders: UpgraderRegistry,
    pub(crate) files: Arc<dyn FirmwareFiles>,
    pub(crate) events: EventBus,
    pub(crate) config: EngineConfig,
    /// One permit per upload allowed at once ([`EngineConfig::max_uploads`]).
    pub(crate) upload_permits: Arc<Semaphore>,
    /// One permit per upgrade allowed at once between connecting and the end of the upload
    /// ([`EngineConfig::max_preparing`]).
    pub(crate) preparing_permits: Arc<Semaphore>,
    /// Set when the engine stops: every operation stops at its next report or checkpoint
    /// (each one persisted) and gives its lease back, to be recovered by its phase.
    pub(crate) stopping: Arc<AtomicBool>,
}

/// Upstream's log line for an operation past its time limit.
const TIMED_OUT: &str = "Operation timed out.";

/// The start of the log line of an operation found at or past the flash whose device could
/// not be asked what it runs: it ends `failed`, its image not recorded as installed.
const COULD_NOT_VERIFY: &str = "could not verify what the device runs";

/// Runs `operation` (claimed by this engine with `lease`) to its end or its next attempt.
///
/// Whatever fails on the way is an attempt of the operation: persisted (`attempts`, `started`,
/// the reason in the log) and retried by the retry policy, or, at or past the flash, ended
/// `failed` with the reason. Only a lost lease ends a run without a write: the operation is
/// another engine's now.
pub(crate) async fn run_operation(
    shared: &Shared,
    operation: UpgradeOperation,
    lease: Arc<HeldLease>,
) -> Result<(), EngineError> {
    let run = Run {
        shared,
        operation: &operation,
        lease: &lease,
    };
    match run.run().await {
        Ok(()) => Ok(()),
        Err(_) if lease.is_lost() => Ok(()),
        Err(EngineError::Repository(RepoError::LeaseLost { .. })) => {
            lease.lose();
            tracing::warn!(operation = %operation.id, "another engine holds this operation now; this run stops without writing");
            Ok(())
        }
        // Ended meanwhile (cancelled by a user, or finished): nothing is left to do.
        Err(EngineError::Repository(RepoError::Transition(transition))) => {
            tracing::debug!(operation = %operation.id, %transition, "the operation changed under this run");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(operation = %operation.id, %error, "the run failed; counting it as an attempt");
            run.failed_attempt(&error.to_string()).await
        }
    }
}

/// How an upgrader's future ended under [`Run::watch`].
enum Watched<T> {
    /// It returned this.
    Ended(T),
    /// Its time limit passed.
    TimedOut,
    /// The run let go of the operation (lease lapsed or lost, or the engine stops).
    Left,
}

/// One run of one claimed operation.
struct Run<'a> {
    shared: &'a Shared,
    operation: &'a UpgradeOperation,
    lease: &'a Arc<HeldLease>,
}

/// How to reach a device for one run.
struct Target {
    connection: flashfleet_models::DeviceConnection,
    credentials: flashfleet_models::Credentials,
    upgrader: Arc<dyn flashfleet_upgrader::Upgrader>,
}

impl Run<'_> {
    fn repository(&self) -> &Arc<dyn Repository> {
        &self.shared.repository
    }

    async fn run(&self) -> Result<(), EngineError> {
        let operation = self.operation;
        let Some(device) = self
            .repository()
            .device(&Scope::All, operation.device_id)
            .await?
        else {
            // Deleting a device deletes its operations: nothing is left to do.
            return Ok(());
        };
        if operation.phase.is_past_flash() {
            // An earlier attempt stopped at or past the flash (its engine died, stopped or
            // timed out): never end it without asking the device what it runs.
            return self.verify_after_flash(&device, true).await;
        }
        if let Some(started) = operation.started {
            let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
            if elapsed > self.shared.config.task_timeout {
                return self
                    .finish(UpgradeStatus::Failed, TIMED_OUT.to_owned(), false)
                    .await;
            }
        }
        if device.is_deactivated {
            let line = "Upgrade aborted because the device has been deactivated.".to_owned();
            return self.finish(UpgradeStatus::Aborted, line, false).await;
        }
        let Some(image) = self.image().await? else {
            let line = "The image of this upgrade has been deleted.".to_owned();
            return self.finish(UpgradeStatus::Failed, line, false).await;
        };
        let target = match self.target(&device).await? {
            Ok(target) => target,
            // No connection, no upgrader, undecryptable credentials: final (upstream leaves
            // such an operation in progress forever, §9.3).
            Err(line) => return self.finish(UpgradeStatus::Failed, line, false).await,
        };
        if operation.phase != UpgradePhase::Queued {
            // An earlier attempt stopped before the flash (its engine died): start it over.
            let update = ProgressUpdate {
                phase: UpgradePhase::Queued,
                progress: 0,
                log_line: Some(format!(
                    "The previous attempt stopped in phase \"{}\" before the flash; starting again.",
                    operation.phase
                )),
            };
            self.record(update).await?;
        }
        let (context, reporter) = self.context(&device, &image, &target, None);
        // The task timeout counts from the first start of the operation (upstream's soft time
        // limit counted per celery run; here a retried or recovered operation cannot outlive
        // it). Dropping the upgrader's future at the deadline cuts no database transaction:
        // the reporter runs each write on a task of its own (`detached`).
        let elapsed = operation
            .started
            .map_or(std::time::Duration::ZERO, |started| {
                (Utc::now() - started).to_std().unwrap_or_default()
            });
        let remaining = self.shared.config.task_timeout.saturating_sub(elapsed);
        let result = match self
            .watch(remaining, target.upgrader.upgrade(&context))
            .await?
        {
            Watched::Ended(result) => Ok(result),
            Watched::TimedOut => Err(()),
            Watched::Left => return Ok(()),
        };
        let Ok(result) = result else {
            if reporter.phase().is_past_flash() {
                // The flash was persisted before the deadline: the device decides.
                let line = format!(
                    "The operation reached its time limit ({} s) after the flash; checking what the device runs.",
                    self.shared.config.task_timeout.as_secs()
                );
                self.log(line).await?;
                return self.verify_after_flash(&device, false).await;
            }
            return self
                .finish(UpgradeStatus::Failed, TIMED_OUT.to_owned(), false)
                .await;
        };
        self.conclude(result, reporter.phase(), target.connection.id)
            .await
    }

    /// Runs `work` (an upgrader's future) within `limit` while this engine surely holds the
    /// lease. When the lease lapses or is lost first, `work` is dropped at once (which closes
    /// its SSH connections; its writes in flight still end, see `detached`) and the operation
    /// is left to whoever claims it next, by its phase; when the engine stops, the lease is
    /// given back.
    async fn watch<T>(
        &self,
        limit: std::time::Duration,
        work: impl Future<Output = T>,
    ) -> Result<Watched<T>, EngineError> {
        let result = tokio::select! {
            result = tokio::time::timeout(limit, work) => result,
            () = self.lease.expired() => {
                tracing::warn!(operation = %self.operation.id, "the lease lapsed or was lost during the upgrade; stopped at once, leaving the operation to its next claim");
                return Ok(Watched::Left);
            }
        };
        if self.lease.is_lost() {
            // Another engine owns the operation now: it decides how it ends.
            return Ok(Watched::Left);
        }
        if self.shared.stopping.load(Ordering::SeqCst) {
            self.give_back().await?;
            return Ok(Watched::Left);
        }
        Ok(match result {
            Ok(result) => Watched::Ended(result),
            Err(_) => Watched::TimedOut,
        })
    }

    /// Decides an operation at or past the flash from what the device runs: the upgrader's
    /// `verify` (which flashes again only when the device proves the first flash never
    /// reached it), within the verification budget. Only when that is impossible (no usable
    /// connection, the budget spent) does it end `failed`, not installed, saying so.
    async fn verify_after_flash(
        &self,
        device: &Device,
        recovered: bool,
    ) -> Result<(), EngineError> {
        let Some(operation) = self
            .repository()
            .operation(&Scope::All, self.operation.id)
            .await?
        else {
            return Ok(());
        };
        if recovered {
            self.log(format!(
                "The previous attempt stopped in phase \"{}\", after the flash command; checking what the device runs now (it is flashed again only if it proves the flash command never reached it).",
                operation.phase
            ))
            .await?;
        }
        if device.is_deactivated {
            self.log(
                "The device has been deactivated; checking what it runs before ending the operation."
                    .to_owned(),
            )
            .await?;
        }
        // A deleted image is verified against the image as it was when the flash was
        // recorded.
        let image = match self.image().await? {
            Some(image) => Some(image),
            None => operation.flash_image.clone().map(|image| *image),
        };
        let Some(image) = image else {
            let line = format!("{COULD_NOT_VERIFY}: the image of this upgrade has been deleted.");
            return self
                .finish(UpgradeStatus::Failed, capitalized(&line), false)
                .await;
        };
        let target = match self.target(device).await? {
            Ok(target) => target,
            Err(reason) => {
                let line = format!("{COULD_NOT_VERIFY}: {reason}");
                return self
                    .finish(UpgradeStatus::Failed, capitalized(&line), false)
                    .await;
            }
        };
        let previous_flash = FlashRecord {
            attempts: operation.flash_attempts,
            boot_id: operation.flash_boot_id.clone(),
        };
        let (context, reporter) = self.context(device, &image, &target, Some(previous_flash));
        let budget = self.shared.config.verification_budget;
        let result = match self.watch(budget, target.upgrader.verify(&context)).await? {
            Watched::Ended(result) => Ok(result),
            Watched::TimedOut => Err(()),
            Watched::Left => return Ok(()),
        };
        let Ok(result) = result else {
            let line = format!(
                "{COULD_NOT_VERIFY} within the verification budget of {} s; the image is not recorded as installed.",
                budget.as_secs()
            );
            return self
                .finish(UpgradeStatus::Failed, capitalized(&line), false)
                .await;
        };
        self.conclude(result, reporter.phase(), target.connection.id)
            .await
    }

    /// Turns the upgrader's result into the operation's final status, or its next attempt.
    /// `phase` is where the operation was last recorded.
    async fn conclude(
        &self,
        result: Result<UpgradeOutcome, UpgradeError>,
        phase: UpgradePhase,
        connection_id: flashfleet_models::DeviceConnectionId,
    ) -> Result<(), EngineError> {
        match result {
            Ok(UpgradeOutcome::Upgraded { .. }) => {
                let line = "Upgrade completed successfully.".to_owned();
                self.finish(UpgradeStatus::Success, line, true).await
            }
            Ok(UpgradeOutcome::AlreadyInstalled) => {
                let line = "Firmware already upgraded previously. Identical checksum found in the filesystem, upgrade not needed.".to_owned();
                self.finish(UpgradeStatus::Success, line, true).await
            }
            Ok(_) => {
                self.finish(UpgradeStatus::Success, String::new(), true)
                    .await
            }
            Err(UpgradeError::Recoverable { message, .. }) if phase.is_past_flash() => {
                // Retrying past the flash would only verify again; an upgrader that cannot
                // tell what the device runs has said so.
                let line = capitalized(&format!("{COULD_NOT_VERIFY}: {message}"));
                self.finish(UpgradeStatus::Failed, line, false).await
            }
            Err(UpgradeError::Recoverable { message, .. }) => self.retry_or_fail(&message).await,
            Err(UpgradeError::Aborted { reason }) => {
                self.finish(UpgradeStatus::Aborted, reason, false).await
            }
            Err(UpgradeError::Cancelled) => {
                // Cancelled through the repository already (that is how the upgrader learnt
                // it); finishing again is refused, which is fine.
                match self
                    .finish(UpgradeStatus::Cancelled, String::new(), false)
                    .await
                {
                    Err(EngineError::Repository(RepoError::Transition(_))) => Ok(()),
                    other => other,
                }
            }
            Err(UpgradeError::LeaseLost) => {
                self.lease.lose();
                Ok(())
            }
            Err(UpgradeError::FlashedNotSeenAgain { message }) => {
                self.repository()
                    .record_connection_attempt(connection_id, false, &message)
                    .await?;
                tracing::warn!(operation = %self.operation.id, "flashed, but the device does not run the image: {message}");
                // Only facts say installed: the device stays a candidate of the next mass
                // upgrade, whose checks skip a device that already runs the image.
                self.finish(UpgradeStatus::Failed, message, false).await
            }
            Err(error) => {
                self.finish(UpgradeStatus::Failed, error.to_string(), false)
                    .await
            }
        }
    }

    /// Counts a failed attempt whose reason is `message`: retried by the retry policy before
    /// the flash, ended `failed` at or past it (or when no retry is left).
    async fn failed_attempt(&self, message: &str) -> Result<(), EngineError> {
        let phase = self
            .repository()
            .operation(&Scope::All, self.operation.id)
            .await?
            .map_or(self.operation.phase, |stored| stored.phase);
        let outcome = if phase.is_past_flash() {
            let line = capitalized(&format!("{COULD_NOT_VERIFY}: {message}"));
            self.finish(UpgradeStatus::Failed, line, false).await
        } else {
            self.retry_or_fail(message).await
        };
        match outcome {
            Err(EngineError::Repository(
                RepoError::LeaseLost { .. } | RepoError::Transition(_),
            )) => Ok(()),
            other => other,
        }
    }

    /// Schedules the next attempt after a recoverable failure, or fails the operation when no
    /// retry is left.
    async fn retry_or_fail(&self, message: &str) -> Result<(), EngineError> {
        let retry = self.operation.attempts + 1;
        match self.shared.config.retry.delay_before(retry) {
            Some(delay) => {
                let line = format!(
                    "Detected a recoverable failure: {message}.\nThe upgrade operation will be retried soon."
                );
                let fence = self.lease.fence.clone();
                if let Some(stored) = self
                    .repository()
                    .schedule_retry(self.operation.id, &fence, delay, &line)
                    .await?
                {
                    self.shared
                        .events
                        .publish(Event::Operation(Box::new(stored)));
                }
                Ok(())
            }
            None => {
                let line = format!("Max retries exceeded. Upgrade failed: {message}.");
                self.finish(UpgradeStatus::Failed, line, false).await
            }
        }
    }

    /// The engine stops: the operation stopped at a persisted point. Give it back to the
    /// queue; whoever claims it next starts it over (before the flash) or verifies it.
    async fn give_back(&self) -> Result<(), EngineError> {
        if let Err(error) = self
            .repository()
            .release_lease(self.operation.id, &self.lease.fence.clone())
            .await
        {
            tracing::warn!(operation = %self.operation.id, %error, "could not release the lease of a stopped operation; it is claimed again once the lease expires");
        }
        tracing::info!(operation = %self.operation.id, "stopped with the engine; left for the next claim");
        Ok(())
    }

    async fn image(&self) -> Result<Option<FirmwareImage>, EngineError> {
        Ok(match self.operation.image_id {
            Some(image_id) => self.repository().image(&Scope::All, image_id).await?,
            None => None,
        })
    }

    /// The first enabled connection of `device` with a registered upgrader, or why there is
    /// none (a final reason, for the log).
    async fn target(&self, device: &Device) -> Result<Result<Target, String>, EngineError> {
        let connections = match self.repository().connections(device.id).await {
            Ok(connections) => connections,
            // A secret key that changed since the credentials were stored: no retry can help.
            Err(RepoError::Undecryptable { message }) => {
                return Ok(Err(format!(
                    "The credentials of this device cannot be used: {message}."
                )));
            }
            Err(error) => return Err(error.into()),
        };
        let connections: Vec<_> = connections
            .into_iter()
            .filter(|(connection, _)| connection.enabled)
            .collect();
        if connections.is_empty() {
            return Ok(Err("No device connection available".to_owned()));
        }
        Ok(connections
            .into_iter()
            .find_map(|(connection, credentials)| {
                self.shared
                    .upgraders
                    .get(&connection.connection_type)
                    .map(|upgrader| Target {
                        connection,
                        credentials,
                        upgrader,
                    })
            })
            .ok_or_else(|| {
                "No upgrader is registered for the connection types of this device".to_owned()
            }))
    }

    fn context(
        &self,
        device: &Device,
        image: &FirmwareImage,
        target: &Target,
        previous_flash: Option<FlashRecord>,
    ) -> (UpgradeContext, Arc<OperationReporter>) {
        let reporter = Arc::new(OperationReporter {
            repository: Arc::clone(self.repository()),
            operation_id: self.operation.id,
            connection_id: target.connection.id,
            events: self.shared.events.clone(),
            position: Mutex::new((self.operation.phase, self.operation.progress)),
            lease: Arc::clone(self.lease),
            stopping: Arc::clone(&self.shared.stopping),
            preparing_permits: Arc::clone(&self.shared.preparing_permits),
            preparing: tokio::sync::Mutex::new(None),
        });
        let context = UpgradeContext {
            connection: ConnectionTarget {
                addresses: device.management_ip.iter().cloned().collect(),
                port: target.credentials.port,
                username: target.credentials.username.clone(),
                secret: target.credentials.secret.clone(),
                known_host_key: target
                    .connection
                    .host_key
                    .as_deref()
                    .and_then(parse_host_key),
            },
            image: upgrade_image(self.shared, image),
            options: self.operation.upgrade_options.clone(),
            reporter: Arc::clone(&reporter) as Arc<dyn flashfleet_upgrader::Reporter>,
            device: device.clone(),
            previous_flash,
        };
        (context, reporter)
    }

    /// Records progress of the operation (fenced), publishing it.
    async fn record(&self, update: ProgressUpdate) -> Result<(), EngineError> {
        let repository = Arc::clone(self.repository());
        let (id, fence) = (self.operation.id, self.lease.fence.clone());
        let stored =
            detached(async move { repository.record_progress(id, &fence, &update).await }).await?;
        if let Some(stored) = stored {
            self.shared
                .events
                .publish(Event::Operation(Box::new(stored)));
        }
        Ok(())
    }

    /// Appends `line` to the log where the operation is.
    async fn log(&self, line: String) -> Result<(), EngineError> {
        let Some(stored) = self
            .repository()
            .operation(&Scope::All, self.operation.id)
            .await?
        else {
            return Ok(());
        };
        self.record(ProgressUpdate {
            phase: stored.phase,
            progress: stored.progress,
            log_line: Some(line),
        })
        .await
    }

    /// Ends the operation with `status`, logging `line` (when not empty), publishing the
    /// operation and its batch.
    async fn finish(
        &self,
        status: UpgradeStatus,
        line: String,
        installed: bool,
    ) -> Result<(), EngineError> {
        let shared = self.shared;
        // Upgraders usually log why they stop before returning the reason: do not repeat it.
        let already_logged = !line.is_empty()
            && shared
                .repository
                .operation(&Scope::All, self.operation.id)
                .await?
                .is_some_and(|stored| {
                    stored
                        .log
                        .lines()
                        .last()
                        .is_some_and(|last| last.contains(line.as_str()))
                });
        let completion = Completion {
            status,
            log_line: (!line.is_empty() && !already_logged).then_some(line),
            installed,
        };
        let repository = Arc::clone(&shared.repository);
        let (id, fence) = (self.operation.id, self.lease.fence.clone());
        let Some(stored) = detached(async move {
            repository
                .complete_operation(id, Some(&fence), &completion)
                .await
        })
        .await?
        else {
            return Ok(());
        };
        let batch_id = stored.batch_id;
        shared.events.publish(Event::Operation(Box::new(stored)));
        if let Some(batch_id) = batch_id
            && let Some((batch, counters)) =
                shared.repository.refresh_batch_status(batch_id).await?
        {
            shared.events.publish(Event::Batch {
                batch: Box::new(batch),
                counters,
            });
        }
        Ok(())
    }
}

/// `text` with its first letter in upper case, for a log line.
fn capitalized(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

fn parse_host_key(stored: &str) -> Option<HostKey> {
    let (algorithm, key) = stored.split_once(' ')?;
    Some(HostKey {
        algorithm: algorithm.to_owned(),
        key: key.to_owned(),
    })
}

fn upgrade_image(shared: &Shared, image: &FirmwareImage) -> UpgradeImage {
    UpgradeImage {
        file_name: image.storage_key.file_name().to_owned(),
        image_type: image.image_type.clone(),
        size: image.size,
        sha256: image.sha256.clone(),
        metadata: image_metadata(image),
        source: Arc::new(StoredImage {
            files: Arc::clone(&shared.files),
            key: image.storage_key.clone(),
            upload_permits: Arc::clone(&shared.upload_permits),
        }),
    }
}

/// An image's bytes, read from firmware storage each time the upgrader opens it. Opening waits
/// for an upload permit, held until the stream is dropped: upgraders open the image to upload
/// it, so this bounds the uploads running at once without the upgraders knowing.
struct StoredImage {
    files: Arc<dyn FirmwareFiles>,
    key: StorageKey,
    upload_permits: Arc<Semaphore>,
}

#[async_trait]
impl ImageSource for StoredImage {
    async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        let permit = Arc::clone(&self.upload_permits)
            .acquire_owned()
            .await
            .map_err(|_| std::io::Error::other("the engine is shutting down"))?;
        let stream = self.files.open(&self.key).await?;
        Ok(Box::new(PermittedStream {
            stream,
            _permit: permit,
        }))
    }
}

/// A stream that holds an upload permit for as long as it lives.
struct PermittedStream {
    stream: Box<dyn AsyncRead + Send + Unpin>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for PermittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

/// The fwtool metadata stored with `image` (its JSON as the image carries it), if any and
/// readable.
pub(crate) fn image_metadata(image: &FirmwareImage) -> Option<ImageMetadata> {
    let metadata = image.metadata.as_ref()?;
    ImageMetadata::from_json(metadata.to_string().as_bytes()).ok()
}

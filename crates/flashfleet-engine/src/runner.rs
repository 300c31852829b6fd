//! Running one claimed operation: from the rows to an [`UpgradeContext`], through the upgrader,
//! to the operation's final status (or its next attempt).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use flashfleet_boards::ImageMetadata;
use flashfleet_models::repository::{Completion, ProgressUpdate, Repository};
use flashfleet_models::{
    Device, FirmwareImage, Scope, StorageKey, UpgradeOperation, UpgradePhase, UpgradeStatus, time,
};
use flashfleet_upgrader::{
    ConnectionTarget, HostKey, ImageSource, UpgradeContext, UpgradeError, UpgradeImage,
    UpgradeOutcome, UpgraderRegistry,
};
use std::pin::Pin;

use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::events::{Event, EventBus};
use crate::files::FirmwareFiles;
use crate::reporter::OperationReporter;

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

/// Runs `operation` (claimed by this engine) to its end or its next attempt.
pub(crate) async fn run_operation(
    shared: &Shared,
    operation: UpgradeOperation,
    lease_lost: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let repository = &shared.repository;
    if let Some(started) = operation.started {
        let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
        if elapsed > shared.config.task_timeout {
            return finish(
                shared,
                &operation,
                UpgradeStatus::Failed,
                TIMED_OUT.to_owned(),
                false,
            )
            .await;
        }
    }
    let Some(device) = repository.device(&Scope::All, operation.device_id).await? else {
        // Deleting a device deletes its operations: nothing is left to do.
        return Ok(());
    };
    if device.is_deactivated {
        let line = "Upgrade aborted because the device has been deactivated.".to_owned();
        return finish(shared, &operation, UpgradeStatus::Aborted, line, false).await;
    }
    let image = match operation.image_id {
        Some(image_id) => repository.image(&Scope::All, image_id).await?,
        None => None,
    };
    let Some(image) = image else {
        let line = "The image of this upgrade has been deleted.".to_owned();
        return finish(shared, &operation, UpgradeStatus::Failed, line, false).await;
    };
    let connections: Vec<_> = repository
        .connections(device.id)
        .await?
        .into_iter()
        .filter(|(connection, _)| connection.enabled)
        .collect();
    if connections.is_empty() {
        // Upstream logs this and leaves the operation in progress forever (§9.3).
        let line = "No device connection available".to_owned();
        return finish(shared, &operation, UpgradeStatus::Failed, line, false).await;
    }
    let Some((connection, credentials, upgrader)) =
        connections
            .into_iter()
            .find_map(|(connection, credentials)| {
                shared
                    .upgraders
                    .get(&connection.connection_type)
                    .map(|upgrader| (connection, credentials, upgrader))
            })
    else {
        // Upstream leaves the operation in progress forever here too (§9.3).
        let line = "No upgrader is registered for the connection types of this device".to_owned();
        return finish(shared, &operation, UpgradeStatus::Failed, line, false).await;
    };

    let reporter = Arc::new(OperationReporter {
        repository: Arc::clone(repository),
        operation_id: operation.id,
        connection_id: connection.id,
        events: shared.events.clone(),
        position: Mutex::new((operation.phase, operation.progress)),
        lease_lost: Arc::clone(&lease_lost),
        stopping: Arc::clone(&shared.stopping),
        preparing_permits: Arc::clone(&shared.preparing_permits),
        preparing: tokio::sync::Mutex::new(None),
    });
    let context = UpgradeContext {
        connection: ConnectionTarget {
            addresses: device.management_ip.iter().cloned().collect(),
            port: credentials.port,
            username: credentials.username.clone(),
            secret: credentials.secret.clone(),
            known_host_key: connection.host_key.as_deref().and_then(parse_host_key),
        },
        image: upgrade_image(shared, &image),
        options: operation.upgrade_options.clone(),
        reporter,
        device: device.clone(),
    };
    if operation.phase.is_past_flash() {
        // An earlier attempt stopped after the flash command may have reached the device: say
        // so before the upgrader only checks what the device runs now.
        let update = ProgressUpdate {
            phase: operation.phase,
            progress: operation.progress,
            log_line: Some(format!(
                "The previous attempt stopped in phase \"{}\", after the flash command; checking what the device runs now, without flashing it again.",
                operation.phase
            )),
        };
        if let Some(stored) = repository.record_progress(operation.id, &update).await? {
            shared.events.publish(Event::Operation(Box::new(stored)));
        }
    } else if operation.phase != UpgradePhase::Queued {
        // An earlier attempt stopped before the flash (its engine died): start it over.
        let update = ProgressUpdate {
            phase: UpgradePhase::Queued,
            progress: 0,
            log_line: Some(format!(
                "The previous attempt stopped in phase \"{}\" before the flash; starting again.",
                operation.phase
            )),
        };
        if let Some(stored) = repository.record_progress(operation.id, &update).await? {
            shared.events.publish(Event::Operation(Box::new(stored)));
        }
    }
    // The task timeout counts from the first start of the operation (upstream's soft time
    // limit counted per celery run; here a retried or recovered operation cannot outlive it).
    let elapsed = operation
        .started
        .map_or(std::time::Duration::ZERO, |started| {
            (Utc::now() - started).to_std().unwrap_or_default()
        });
    let remaining = shared.config.task_timeout.saturating_sub(elapsed);
    let run = async {
        if operation.phase.is_past_flash() {
            // The engine that ran this operation stopped after the flash command may have
            // been sent: only check what the device runs now, never flash it again.
            upgrader.verify(&context).await
        } else {
            upgrader.upgrade(&context).await
        }
    };
    let result = tokio::time::timeout(remaining, run).await;
    if lease_lost.load(Ordering::SeqCst) {
        // Another engine owns the operation now: it decides how it ends.
        return Ok(());
    }
    if shared.stopping.load(Ordering::SeqCst) {
        // The engine stops: the operation stopped at a persisted point. Give it back to the
        // queue; whoever claims it next starts it over (before the flash) or verifies it.
        if let Err(error) = repository
            .release_lease(operation.id, &shared.config.name)
            .await
        {
            tracing::warn!(operation = %operation.id, %error, "could not release the lease of a stopped operation; it is claimed again once the lease expires");
        }
        tracing::info!(operation = %operation.id, "stopped with the engine; left for the next claim");
        return Ok(());
    }
    let Ok(result) = result else {
        return finish(
            shared,
            &operation,
            UpgradeStatus::Failed,
            TIMED_OUT.to_owned(),
            false,
        )
        .await;
    };
    conclude(shared, &operation, &device, connection.id, result).await
}

/// Turns the upgrader's result into the operation's final status, or its next attempt.
async fn conclude(
    shared: &Shared,
    operation: &UpgradeOperation,
    device: &Device,
    connection_id: flashfleet_models::DeviceConnectionId,
    result: Result<UpgradeOutcome, UpgradeError>,
) -> Result<(), EngineError> {
    match result {
        Ok(UpgradeOutcome::Upgraded { .. }) => {
            let line = "Upgrade completed successfully.".to_owned();
            finish(shared, operation, UpgradeStatus::Success, line, true).await
        }
        Ok(UpgradeOutcome::AlreadyInstalled) => {
            let line = "Firmware already upgraded previously. Identical checksum found in the filesystem, upgrade not needed.".to_owned();
            finish(shared, operation, UpgradeStatus::Success, line, true).await
        }
        Ok(_) => {
            finish(
                shared,
                operation,
                UpgradeStatus::Success,
                String::new(),
                true,
            )
            .await
        }
        Err(UpgradeError::Recoverable { message, .. }) => {
            let retry = operation.attempts + 1;
            match shared.config.retry.delay_before(retry) {
                Some(delay) => {
                    let next = time::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                    let line = format!(
                        "Detected a recoverable failure: {message}.\nThe upgrade operation will be retried soon."
                    );
                    if let Some(stored) = shared
                        .repository
                        .schedule_retry(operation.id, next, &line)
                        .await?
                    {
                        shared.events.publish(Event::Operation(Box::new(stored)));
                    }
                    Ok(())
                }
                None => {
                    let line = format!("Max retries exceeded. Upgrade failed: {message}.");
                    finish(shared, operation, UpgradeStatus::Failed, line, false).await
                }
            }
        }
        Err(UpgradeError::Aborted { reason }) => {
            finish(shared, operation, UpgradeStatus::Aborted, reason, false).await
        }
        Err(UpgradeError::Cancelled) => {
            // Cancelled through the repository already (that is how the upgrader learnt it);
            // finishing again is refused, which is fine.
            match finish(
                shared,
                operation,
                UpgradeStatus::Cancelled,
                String::new(),
                false,
            )
            .await
            {
                Err(EngineError::Repository(flashfleet_models::RepoError::Transition(_))) => Ok(()),
                other => other,
            }
        }
        Err(UpgradeError::FlashedNotSeenAgain { message }) => {
            shared
                .repository
                .record_connection_attempt(connection_id, false, &message)
                .await?;
            tracing::warn!(device = %device.id, "flashed but not seen again: {message}");
            finish(shared, operation, UpgradeStatus::Failed, message, true).await
        }
        Err(error) => {
            finish(
                shared,
                operation,
                UpgradeStatus::Failed,
                error.to_string(),
                false,
            )
            .await
        }
    }
}

/// Ends `operation` with `status`, logging `line` (when not empty), publishing the operation
/// and its batch.
async fn finish(
    shared: &Shared,
    operation: &UpgradeOperation,
    status: UpgradeStatus,
    line: String,
    installed: bool,
) -> Result<(), EngineError> {
    // Upgraders usually log why they stop before returning the reason: do not repeat it.
    let already_logged = !line.is_empty()
        && shared
            .repository
            .operation(&Scope::All, operation.id)
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
    let Some(stored) = shared
        .repository
        .complete_operation(operation.id, &completion)
        .await?
    else {
        return Ok(());
    };
    let batch_id = stored.batch_id;
    shared.events.publish(Event::Operation(Box::new(stored)));
    if let Some(batch_id) = batch_id
        && let Some((batch, counters)) = shared.repository.refresh_batch_status(batch_id).await?
    {
        shared.events.publish(Event::Batch {
            batch: Box::new(batch),
            counters,
        });
    }
    Ok(())
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

//! The engine's [`Reporter`]: every report of an upgrader is persisted through the repository
//! (and published on the event bus) before the upgrader goes on, as a write fenced by the lease
//! the engine claimed the operation with.
//!
//! Every repository call runs on a task of its own that this reporter awaits ([`detached`]):
//! when the upgrader's future is dropped (the task timeout, the verification budget), a write
//! in flight still runs to its end, so no database transaction is ever cut in the middle (a
//! cut SQLite transaction would keep the database's write lock on its pooled connection).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use async_trait::async_trait;
use flashfleet_models::repository::{ProgressUpdate, Repository};
use flashfleet_models::{
    DeviceConnectionId, Fence, OperationId, RepoError, Scope, UpgradeOperation, UpgradePhase,
    UpgradeStatus,
};
use flashfleet_upgrader::{HostKey, ReportError, Reporter};

use crate::events::{Event, EventBus};

/// The lease an engine holds on one running operation: the fence its writes carry, until when
/// it is surely still held (by this process's monotonic clock), and whether it was lost.
///
/// The local deadline is the claim's (or the last renewal's) start plus the lease: it passes
/// before the database's expiry, which counted from a later instant. Once it passes without a
/// renewal, the run stops at once (its upgrader's future is dropped, which closes its SSH
/// connections), so an engine whose heartbeat is late has let go of the device before
/// another engine can claim the operation.
#[derive(Debug)]
pub(crate) struct HeldLease {
    pub(crate) fence: Fence,
    valid_until: Mutex<tokio::time::Instant>,
    lost: AtomicBool,
    changed: tokio::sync::Notify,
}

impl HeldLease {
    /// A lease claimed with `fence` by a claim that started at `claimed_at`, for `lease`.
    pub(crate) fn new(fence: Fence, claimed_at: tokio::time::Instant, lease: Duration) -> Self {
        Self {
            fence,
            valid_until: Mutex::new(claimed_at + lease),
            lost: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Marks the lease lost: the operation's run writes nothing more and stops at once.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || tokio::time::Instant::now() >= self.valid_until()
    }

    /// A renewal that started at `renewed_at` extended the lease by `lease`.
    pub(crate) fn renewed(&self, renewed_at: tokio::time::Instant, lease: Duration) {
        let mut valid_until = self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *valid_until = (*valid_until).max(renewed_at + lease);
    }

    fn valid_until(&self) -> tokio::time::Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns once the lease is lost, or its local deadline passed without a renewal.
    pub(crate) async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            if self.is_lost() {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(self.valid_until()) => {}
            }
        }
    }
}

/// Runs `future` (a repository call) on a task of its own and waits for it: if the caller is
/// dropped meanwhile, the call still runs to its end instead of being cut in the middle of a
/// transaction.
pub(crate) async fn detached<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(future).await {
        Ok(value) => value,
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        // Tasks are never aborted; only a runtime shutting down cancels one, and then nothing
        // waits for this value any more.
        Err(join_error) => panic!("a repository task was cancelled: {join_error}"),
    }
}

/// Persists the reports of one operation's upgrader.
pub(crate) struct OperationReporter {
    pub(crate) repository: Arc<dyn Repository>,
    pub(crate) operation_id: OperationId,
    pub(crate) connection_id: DeviceConnectionId,
    pub(crate) events: EventBus,
    /// The phase and progress last recorded, for log lines reported without a phase.
    pub(crate) position: Mutex<(UpgradePhase, u8)>,
    /// The lease this run holds: its writes carry its fence; once lost, report nothing more.
    pub(crate) lease: Arc<HeldLease>,
    /// Set when the engine stops: report nothing more, stop at the next checkpoint.
    pub(crate) stopping: Arc<AtomicBool>,
    /// Permits for the steps from connecting to the end of the upload.
    pub(crate) preparing_permits: Arc<Semaphore>,
    /// The permit this operation holds while in those steps.
    pub(crate) preparing: tokio::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl OperationReporter {
    /// Why this run must stop now, if it must: its lease was lost, or the engine stops.
    fn must_stop(&self) -> Result<(), ReportError> {
        if self.lease.is_lost() {
            Err(ReportError::LeaseLost)
        } else if self.stopping.load(Ordering::SeqCst) {
            Err(ReportError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The phase last recorded.
    pub(crate) fn phase(&self) -> UpgradePhase {
        self.position
            .lock()
            .map(|position| position.0)
            .unwrap_or(UpgradePhase::Queued)
    }

    /// Takes or gives back the permit of the steps before the upload's end, for `phase`.
    async fn enter_phase(&self, phase: UpgradePhase) {
        // Entering the steps before the upload waits for a permit (the operation stays queued
        // meanwhile); leaving the upload gives it back.
        let mut preparing = self.preparing.lock().await;
        let in_preparation = (UpgradePhase::Connecting..=UpgradePhase::Uploading).contains(&phase);
        if in_preparation && preparing.is_none() {
            *preparing = Arc::clone(&self.preparing_permits)
                .acquire_owned()
                .await
                .ok();
        } else if !in_preparation {
            *preparing = None;
        }
    }

    /// Persists one write (run detached, with the run's fence), then records and publishes
    /// the stored operation.
    async fn persist<F, W>(&self, write: W) -> Result<(), ReportError>
    where
        W: FnOnce(Fence) -> F,
        F: Future<Output = Result<Option<UpgradeOperation>, RepoError>> + Send + 'static,
    {
        self.must_stop()?;
        let fence = self.lease.fence.clone();
        match detached(write(fence.clone())).await {
            Ok(Some(operation)) => {
                if let Ok(mut position) = self.position.lock() {
                    *position = (operation.phase, operation.progress);
                }
                self.events.publish(Event::Operation(Box::new(operation)));
                Ok(())
            }
            // Deleted meanwhile: nobody wants this upgrade any more.
            Ok(None) => Err(ReportError::Cancelled),
            Err(RepoError::LeaseLost { .. }) => {
                tracing::warn!(operation = %self.operation_id, %fence, "a write was refused: another engine holds this operation now; stopping at once");
                self.lease.lose();
                Err(ReportError::LeaseLost)
            }
            Err(RepoError::Transition(transition)) => {
                if self.is_cancelled().await {
                    Err(ReportError::Cancelled)
                } else {
                    Err(ReportError::Persistence(Box::new(transition)))
                }
            }
            Err(error) => Err(ReportError::Persistence(Box::new(error))),
        }
    }

    async fn record(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError> {
        self.must_stop()?;
        if phase == UpgradePhase::Flashing && self.phase() < UpgradePhase::Flashing {
            // Entering the flash is the guarded write of `begin_flash`, whichever way an
            // upgrader reports it.
            return self
                .begin_flash(None, line.unwrap_or("Upgrade operation in progress..."))
                .await;
        }
        self.enter_phase(phase).await;
        let update = ProgressUpdate {
            phase,
            progress,
            log_line: line.map(str::to_owned),
        };
        let id = self.operation_id;
        self.persist(|fence| {
            let (repository, update) = (Arc::clone(&self.repository), update.clone());
            async move { repository.record_progress(id, &fence, &update).await }
        })
        .await
    }
}

#[async_trait]
impl Reporter for OperationReporter {
    async fn progress(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError> {
        self.record(phase, progress, line).await
    }

    async fn log(&self, line: &str) -> Result<(), ReportError> {
        let (phase, progress) = self
            .position
            .lock()
            .map(|position| *position)
            .unwrap_or((UpgradePhase::Queued, 0));
        self.record(phase, progress, Some(line)).await
    }

    async fn is_cancelled(&self) -> bool {
        if self.must_stop().is_err() {
            return true;
        }
        let repository = Arc::clone(&self.repository);
        let id = self.operation_id;
        match detached(async move { repository.operation(&Scope::All, id).await }).await {
            Ok(Some(operation)) => operation.status == UpgradeStatus::Cancelled,
            Ok(None) => true,
            // Unknown: carry on; the next report will fail if the database is really gone.
            Err(_) => false,
        }
    }

    async fn checkpoint(&self) -> Result<(), ReportError> {
        self.must_stop()?;
        if self.is_cancelled().await {
            // Lost or stopping meanwhile, or cancelled by a user.
            self.must_stop()?;
            return Err(ReportError::Cancelled);
        }
        Ok(())
    }

    async fn record_host_key(&self, host_key: &HostKey) -> Result<(), ReportError> {
        self.must_stop()?;
        let repository = Arc::clone(&self.repository);
        let (connection_id, host_key) = (self.connection_id, host_key.to_string());
        detached(async move { repository.record_host_key(connection_id, &host_key).await })
            .await
            .map(|_| ())
            .map_err(|error| ReportError::Persistence(Box::new(error)))
    }

    async fn begin_flash(&self, boot_id: Option<&str>, line: &str) -> Result<(), ReportError> {
        self.must_stop()?;
        self.enter_phase(UpgradePhase::Flashing).await;
        let id = self.operation_id;
        self.persist(|fence| {
            let repository = Arc::clone(&self.repository);
            let (boot_id, line) = (boot_id.map(str::to_owned), line.to_owned());
            async move {
                repository
                    .begin_flash(id, &fence, boot_id.as_deref(), &line)
                    .await
            }
        })
        .await
    }

    async fn restart_unflashed(&self, line: &str) -> Result<(), ReportError> {
        let id = self.operation_id;
        self.persist(|fence| {
            let (repository, line) = (Arc::clone(&self.repository), line.to_owned());
            async move { repository.restart_unflashed(id, &fence, &line).await }
        })
        .await
    }
}

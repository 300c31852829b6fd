//! The engine's [`Reporter`]: every report of an upgrader is persisted through the repository
//! (and published on the event bus) before the upgrader goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use async_trait::async_trait;
use flashfleet_models::repository::{ProgressUpdate, Repository};
use flashfleet_models::{
    DeviceConnectionId, OperationId, RepoError, Scope, UpgradePhase, UpgradeStatus,
};
use flashfleet_upgrader::{HostKey, ReportError, Reporter};

use crate::events::{Event, EventBus};

/// Persists the reports of one operation's upgrader.
pub(crate) struct OperationReporter {
    pub(crate) repository: Arc<dyn Repository>,
    pub(crate) operation_id: OperationId,
    pub(crate) connection_id: DeviceConnectionId,
    pub(crate) events: EventBus,
    /// The phase and progress last recorded, for log lines reported without a phase.
    pub(crate) position: Mutex<(UpgradePhase, u8)>,
    /// Set when another engine took the operation over: report nothing more, stop.
    pub(crate) lease_lost: Arc<AtomicBool>,
    /// Set when the engine stops: report nothing more, stop at the next checkpoint.
    pub(crate) stopping: Arc<AtomicBool>,
    /// Permits for the steps from connecting to the end of the upload.
    pub(crate) preparing_permits: Arc<Semaphore>,
    /// The permit this operation holds while in those steps.
    pub(crate) preparing: tokio::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl OperationReporter {
    /// Whether this run must stop: its lease was lost, or the engine stops.
    fn must_stop(&self) -> bool {
        self.lease_lost.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst)
    }

    async fn record(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError> {
        if self.must_stop() {
            return Err(ReportError::Cancelled);
        }
        {
            // Entering the steps before the upload waits for a permit (the operation stays
            // queued meanwhile); leaving the upload gives it back.
            let mut preparing = self.preparing.lock().await;
            let in_preparation =
                (UpgradePhase::Connecting..=UpgradePhase::Uploading).contains(&phase);
            if in_preparation && preparing.is_none() {
                *preparing = Arc::clone(&self.preparing_permits)
                    .acquire_owned()
                    .await
                    .ok();
            } else if !in_preparation {
                *preparing = None;
            }
        }
        let update = ProgressUpdate {
            phase,
            progress,
            log_line: line.map(str::to_owned),
        };
        match self
            .repository
            .record_progress(self.operation_id, &update)
            .await
        {
            Ok(Some(operation)) => {
                if let Ok(mut position) = self.position.lock() {
                    *position = (operation.phase, operation.progress);
                }
                self.events.publish(Event::Operation(Box::new(operation)));
                Ok(())
            }
            // Deleted meanwhile: nobody wants this upgrade any more.
            Ok(None) => Err(ReportError::Cancelled),
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
        if self.must_stop() {
            return true;
        }
        match self
            .repository
            .operation(&Scope::All, self.operation_id)
            .await
        {
            Ok(Some(operation)) => operation.status == UpgradeStatus::Cancelled,
            Ok(None) => true,
            // Unknown: carry on; the next report will fail if the database is really gone.
            Err(_) => false,
        }
    }

    async fn record_host_key(&self, host_key: &HostKey) -> Result<(), ReportError> {
        self.repository
            .record_host_key(self.connection_id, &host_key.to_string())
            .await
            .map(|_| ())
            .map_err(|error| ReportError::Persistence(Box::new(error)))
    }
}

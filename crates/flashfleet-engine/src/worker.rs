//! The engine's loop: claim what is due, run it, renew the leases of what runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flashfleet_boards::ImageMap;
use flashfleet_models::repository::Repository;
use flashfleet_models::{Fence, Lease, OperationId};
use flashfleet_upgrader::UpgraderRegistry;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::events::EventBus;
use crate::files::FirmwareFiles;
use crate::reporter::HeldLease;
use crate::runner::{Shared, run_operation};

/// Runs queued upgrade operations. Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    image_map: Arc<ImageMap>,
}

impl Engine {
    /// An engine over `repository`, running upgrades with `upgraders` on images read from
    /// `files`, publishing changes on `events`.
    pub fn new(
        repository: Arc<dyn Repository>,
        upgraders: UpgraderRegistry,
        files: Arc<dyn FirmwareFiles>,
        events: EventBus,
        config: EngineConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                repository,
                upgraders,
                files,
                events,
                upload_permits: Arc::new(tokio::sync::Semaphore::new(config.max_uploads.max(1))),
                preparing_permits: Arc::new(tokio::sync::Semaphore::new(
                    config.max_preparing.max(1),
                )),
                stopping: Arc::new(AtomicBool::new(false)),
                config,
            }),
            wake: Arc::new(Notify::new()),
            image_map: Arc::new(ImageMap::openwrt().clone()),
        }
    }

    /// Uses `image_map` (the built-in OpenWrt map with the operator's custom images) instead of
    /// the built-in map.
    pub fn with_image_map(mut self, image_map: Arc<ImageMap>) -> Self {
        self.image_map = image_map;
        self
    }

    /// The image-to-board map this engine matches devices with.
    pub fn image_map(&self) -> &ImageMap {
        &self.image_map
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The upgraders this engine runs, by connection type (the connection types a device
    /// connection may use).
    pub fn upgraders(&self) -> &UpgraderRegistry {
        &self.shared.upgraders
    }

    /// The event bus this engine publishes on.
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Tells the engine that work was queued, so it claims now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims and runs operations until `shutdown` is cancelled; then stops claiming, has every
    /// operation in flight stop at its next report or cancellation checkpoint (each a persisted
    /// step) and give its lease back, and returns once they all stopped. An operation stopped
    /// before the flash is started over by whichever engine claims it next; one at or past the
    /// flash is only verified.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        self.work(Some(shutdown)).await
    }

    /// Claims and runs operations until none is claimable and none is running (operations
    /// waiting for a later retry are left for later). For tests, benchmarks and one-shot tools.
    pub async fn run_until_idle(&self) -> Result<(), EngineError> {
        self.work(None).await
    }

    async fn work(&self, shutdown: Option<CancellationToken>) -> Result<(), EngineError> {
        let leases: Leases = Arc::new(Mutex::new(HashMap::new()));
        // The heartbeat runs on a task of its own (and renews through the repository's lease
        // connections), so that claiming, joining and the reports of the upgrades it keeps
        // alive never delay it. It is stopped by a flag, never aborted: a renewal in flight
        // ends its transaction.
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&self.shared),
            Arc::clone(&leases),
            stop_heartbeat.clone(),
        ));
        let result = self.claim_and_run(shutdown, &leases).await;
        stop_heartbeat.cancel();
        if let Err(join_error) = heartbeat.await {
            tracing::error!(%join_error, "the heartbeat task failed");
        }
        result
    }

    async fn claim_and_run(
        &self,
        shutdown: Option<CancellationToken>,
        leases: &Leases,
    ) -> Result<(), EngineError> {
        let config = &self.shared.config;
        let mut running: JoinSet<(OperationId, Result<(), EngineError>)> = JoinSet::new();
        // Operations this engine claimed again while their task still ran here (see below),
        // with the fence of that claim.
        let mut reclaimed: HashMap<OperationId, Fence> = HashMap::new();
        // Which operation each task runs, to forget a task that panicked.
        let mut tasks: HashMap<tokio::task::Id, OperationId> = HashMap::new();
        let stopping = || {
            shutdown
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
        };
        loop {
            if !stopping() && running.len() < config.max_in_flight {
                // Before the claim: the local deadline of each lease passes before the
                // database's expiry.
                let claimed_at = tokio::time::Instant::now();
                let claimed = self
                    .shared
                    .repository
                    .claim_operations(
                        &config.name,
                        config.lease,
                        config.max_in_flight - running.len(),
                    )
                    .await;
                let claimed = match claimed {
                    Ok(claimed) => claimed,
                    // A one-shot run with nothing running: report the failure to the caller.
                    Err(error) if running.is_empty() && shutdown.is_none() => {
                        return Err(error.into());
                    }
                    // Never drop the operations in flight (their tasks would be cut in the
                    // middle), and a serving engine outlives a database outage: claim again at
                    // the next turn.
                    Err(error) => {
                        tracing::warn!(%error, "could not claim operations; retrying");
                        Vec::new()
                    }
                };
                for operation in claimed {
                    let id = operation.id;
                    let Some(fence) = operation.lease.as_ref().map(Lease::fence) else {
                        tracing::error!(operation = %id, "a claimed operation carries no lease; skipped");
                        continue;
                    };
                    let running_here = lock(leases).get(&id).cloned();
                    if let Some(previous) = running_here {
                        // Its task has not been joined yet: it ended with a retry due at once,
                        // or it stopped because its lease lapsed (its local deadline passes
                        // before the database's expiry, so it no longer acts on the device).
                        // Either way it writes nothing more with its old fence; the new claim
                        // is given back when the task is joined, so the operation is claimed
                        // afresh and recovered by its phase, never run twice at once.
                        tracing::debug!(operation = %id, "claimed again while its task ends here");
                        previous.lose();
                        reclaimed.insert(id, fence);
                        continue;
                    }
                    let shared = Arc::clone(&self.shared);
                    let lease = Arc::new(HeldLease::new(fence, claimed_at, config.lease));
                    lock(leases).insert(id, Arc::clone(&lease));
                    let task = running
                        .spawn(async move { (id, run_operation(&shared, operation, lease).await) });
                    tasks.insert(task.id(), id);
                }
            }
            if running.is_empty() && (shutdown.is_none() || stopping()) {
                return Ok(());
            }
            if stopping() && !self.shared.stopping.swap(true, Ordering::SeqCst) {
                tracing::info!(
                    running = running.len(),
                    "stopping: no new claims; operations in flight stop at their next persisted step"
                );
            }
            let poll = tokio::time::sleep(config.poll_interval);
            tokio::select! {
                finished = running.join_next_with_id(), if !running.is_empty() => {
                    let (task, outcome) = match finished {
                        Some(Ok((task, (_, result)))) => (task, Ok(result)),
                        Some(Err(join_error)) => (join_error.id(), Err(join_error)),
                        None => continue,
                    };
                    if let Some(id) = tasks.remove(&task) {
                        lock(leases).remove(&id);
                        if let Some(fence) = reclaimed.remove(&id) {
                            self.release_reclaimed(id, &fence).await;
                        }
                        match outcome {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                tracing::error!(operation = %id, %error, "running an upgrade failed");
                            }
                            // A panicked task's lease is no longer renewed: the operation is
                            // recovered by its phase once the lease expires.
                            Err(join_error) => {
                                tracing::error!(operation = %id, %join_error, "an upgrade task panicked");
                            }
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = poll, if shutdown.is_some() => {}
                _ = cancelled(shutdown.as_ref()), if !stopping() => {}
            }
        }
    }

    /// Gives back the lease of an operation claimed again while its task ran here, once that
    /// task ended, so that the operation is claimed afresh rather than when the lease expires.
    async fn release_reclaimed(&self, id: OperationId, fence: &Fence) {
        if let Err(error) = self.shared.repository.release_lease(id, fence).await {
            tracing::warn!(operation = %id, %error, "could not give a lease back; it will expire");
        }
    }
}

/// The leases held on the operations this engine runs, shared with the heartbeat.
type Leases = Arc<Mutex<HashMap<OperationId, Arc<HeldLease>>>>;

fn lock(leases: &Leases) -> std::sync::MutexGuard<'_, HashMap<OperationId, Arc<HeldLease>>> {
    leases
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Renews the leases of the operations in flight every heartbeat until `stop`. A lease not
/// renewed was lost (another engine claimed the operation since, with a new epoch) or its
/// operation ended: either way its run writes nothing more, and stops at its next report.
/// The renewal itself is never cut: `stop` is only looked at between renewals.
async fn heartbeat(shared: Arc<Shared>, leases: Leases, stop: CancellationToken) {
    let mut interval = tokio::time::interval(shared.config.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let held: Vec<(OperationId, Arc<HeldLease>)> = lock(&leases)
            .iter()
            .filter(|(_, lease)| !lease.is_lost())
            .map(|(id, lease)| (*id, Arc::clone(lease)))
            .collect();
        if held.is_empty() {
            continue;
        }
        let fences: Vec<(OperationId, Fence)> = held
            .iter()
            .map(|(id, lease)| (*id, lease.fence.clone()))
            .collect();
        let renewed_at = tokio::time::Instant::now();
        let renewed = match shared
            .repository
            .renew_leases(&fences, shared.config.lease)
            .await
        {
            Ok(renewed) => renewed,
            Err(error) => {
                tracing::warn!(%error, "could not renew leases; retrying at the next heartbeat");
                continue;
            }
        };
        for (id, lease) in &held {
            if renewed.contains(id) {
                lease.renewed(renewed_at, shared.config.lease);
            } else if lock(&leases).contains_key(id) {
                tracing::debug!(operation = %id, "lease not renewed (lost or ended); this run writes nothing more");
                lease.lose();
            }
        }
    }
}

async fn cancelled(shutdown: Option<&CancellationToken>) {
    match shutdown {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

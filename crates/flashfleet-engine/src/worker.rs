//! The engine's loop: claim what is due, run it, renew the leases of what runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flashfleet_boards::ImageMap;
use flashfleet_models::repository::Repository;
use flashfleet_models::{OperationId, Scope, time};
use flashfleet_upgrader::UpgraderRegistry;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::events::EventBus;
use crate::files::FirmwareFiles;
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
        let config = &self.shared.config;
        let mut running: JoinSet<(OperationId, Result<(), EngineError>)> = JoinSet::new();
        let mut leases: HashMap<OperationId, Arc<AtomicBool>> = HashMap::new();
        // Operations this engine claimed again while their task still ran here (see below).
        let mut reclaimed: HashSet<OperationId> = HashSet::new();
        // Which operation each task runs, to forget a task that panicked.
        let mut tasks: HashMap<tokio::task::Id, OperationId> = HashMap::new();
        let mut heartbeat = tokio::time::interval(config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = || {
            shutdown
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
        };
        loop {
            if !stopping() && running.len() < config.max_in_flight {
                let lease_until = time::now() + lease_duration(config);
                let claimed = self
                    .shared
                    .repository
                    .claim_operations(
                        &config.name,
                        lease_until,
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
                    if leases.contains_key(&id) {
                        // Its task has not been joined yet: it still runs, and its lease
                        // expired (a heartbeat came too late, on a loaded machine), or it just
                        // ended with a retry due at once. Either way a second task would run
                        // the same upgrade twice at once. The claim renewed the lease; it is
                        // given back when the task is joined, so a retry is claimed afresh.
                        tracing::debug!(operation = %id, "claimed again while its task runs here");
                        reclaimed.insert(id);
                        continue;
                    }
                    let shared = Arc::clone(&self.shared);
                    let lost = Arc::new(AtomicBool::new(false));
                    leases.insert(id, Arc::clone(&lost));
                    let task = running
                        .spawn(async move { (id, run_operation(&shared, operation, lost).await) });
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
                        leases.remove(&id);
                        if reclaimed.remove(&id) {
                            self.release_reclaimed(id).await;
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
                _ = heartbeat.tick() => {
                    self.renew(&leases).await;
                }
                _ = self.wake.notified() => {}
                _ = poll, if shutdown.is_some() => {}
                _ = cancelled(shutdown.as_ref()), if !stopping() => {}
            }
        }
    }

    /// Gives back the lease of an operation claimed again while its task ran here, once that
    /// task ended, so that the operation (a retry) is claimed afresh rather than when the lease
    /// expires.
    async fn release_reclaimed(&self, id: OperationId) {
        let name = &self.shared.config.name;
        if let Err(error) = self.shared.repository.release_lease(id, name).await {
            tracing::warn!(operation = %id, %error, "could not give a lease back; it will expire");
        }
    }

    /// Renews the leases of the operations in flight. A lease found lost (this engine could not
    /// renew it in time and another engine claimed the operation) is flagged: the operation's
    /// task stops at its next report and writes nothing more. Tasks are never aborted, so no
    /// database transaction is ever cut in the middle.
    async fn renew(&self, leases: &HashMap<OperationId, Arc<AtomicBool>>) {
        if leases.is_empty() {
            return;
        }
        let config = &self.shared.config;
        let ids: Vec<OperationId> = leases.keys().copied().collect();
        let lease_until = time::now() + lease_duration(config);
        let renewed = match self
            .shared
            .repository
            .renew_leases(&config.name, &ids, lease_until)
            .await
        {
            Ok(renewed) => renewed,
            Err(error) => {
                tracing::warn!(%error, "could not renew leases; retrying at the next heartbeat");
                return;
            }
        };
        for id in ids.iter().filter(|id| !renewed.contains(id)) {
            // Not renewed: finished (or waiting for a retry) meanwhile, or taken over by another
            // engine. Only the last one is lost.
            let taken_over = match self.shared.repository.operation(&Scope::All, *id).await {
                Ok(Some(operation)) => {
                    !operation.status.is_final()
                        && operation
                            .lease
                            .is_some_and(|lease| lease.owner != config.name)
                }
                Ok(None) | Err(_) => false,
            };
            if taken_over && let Some(lost) = leases.get(id) {
                tracing::warn!(operation = %id, "lease lost to another engine; stopping this run");
                lost.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn lease_duration(config: &EngineConfig) -> chrono::Duration {
    chrono::Duration::from_std(config.lease).unwrap_or(chrono::TimeDelta::MAX)
}

async fn cancelled(shutdown: Option<&CancellationToken>) {
    match shutdown {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

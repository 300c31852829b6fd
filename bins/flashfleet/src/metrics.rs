//! Prometheus metrics at `/metrics` (OpenMetrics text).
//!
//! - `flashfleet_operations{status}`: upgrade operations per status, read from the database at
//!   each scrape (so every server sharing a database reports the same, fleet-wide numbers);
//! - `flashfleet_queue_depth`: unfinished operations no engine has started yet (phase
//!   `queued`), also from the database;
//! - `flashfleet_upgrade_duration_seconds{status}`: how long the operations this server's
//!   engine finished took, from their first start to their end;
//! - `flashfleet_uploaded_bytes_total`: bytes of images this server's engine sent to devices
//!   (counted when an upload completes and the device starts testing the image);
//! - `flashfleet_ssh_failures_total`: failures of the device connection (connecting, the
//!   transfer) that this server's engine retried, i.e. recoverable failures that scheduled
//!   another attempt.
//!
//! The last three come from the engine's event bus.

use std::collections::HashMap;
use std::sync::Arc;

use flashfleet_engine::Event;
use flashfleet_models::repository::{OperationFilter, Repository};
use flashfleet_models::{
    ImageId, OperationId, PageRequest, Scope, UpgradeOperation, UpgradePhase, UpgradeStatus,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// The label of metrics per operation status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// Upper bounds of the upgrade duration buckets, in seconds: 15 s to 2 h.
const DURATION_BUCKETS: [f64; 10] = [
    15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    operations: Family<StatusLabel, Gauge>,
    queue_depth: Gauge,
    durations: Family<StatusLabel, Histogram>,
    uploaded_bytes: Counter,
    ssh_failures: Counter,
    repository: Arc<dyn Repository>,
}

impl Metrics {
    /// Metrics of the operations in `repository`.
    pub fn new(repository: Arc<dyn Repository>) -> Metrics {
        let mut registry = Registry::default();
        let operations = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "flashfleet_operations",
            "Upgrade operations per status (whole database)",
            operations.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "flashfleet_queue_depth",
            "Unfinished upgrade operations no engine has started yet",
            queue_depth.clone(),
        );
        let durations = Family::<StatusLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        registry.register(
            "flashfleet_upgrade_duration_seconds",
            "Duration of the upgrade operations this server finished, first start to end",
            durations.clone(),
        );
        let uploaded_bytes = Counter::default();
        registry.register(
            "flashfleet_uploaded_bytes",
            "Bytes of images this server sent to devices",
            uploaded_bytes.clone(),
        );
        let ssh_failures = Counter::default();
        registry.register(
            "flashfleet_ssh_failures",
            "Failures of the device connection (connect, transfer) this server retried",
            ssh_failures.clone(),
        );
        Metrics {
            registry,
            operations,
            queue_depth,
            durations,
            uploaded_bytes,
            ssh_failures,
            repository,
        }
    }

    /// The metrics as OpenMetrics text, with the database counts read now.
    pub async fn render(&self) -> anyhow::Result<String> {
        for status in UpgradeStatus::ALL {
            let filter = OperationFilter {
                status: Some(status),
                ..OperationFilter::default()
            };
            let count = self.count(&filter).await?;
            self.operations
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_owned(),
                })
                .set(count);
        }
        let queued = OperationFilter {
            status: Some(UpgradeStatus::InProgress),
            phase: Some(UpgradePhase::Queued),
            ..OperationFilter::default()
        };
        self.queue_depth.set(self.count(&queued).await?);
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    async fn count(&self, filter: &OperationFilter) -> anyhow::Result<i64> {
        let page = self
            .repository
            .list_operations(&Scope::All, filter, PageRequest::page(1, 1))
            .await?;
        Ok(i64::try_from(page.count).unwrap_or(i64::MAX))
    }

    /// Counts what the engine's events say until the bus closes.
    pub async fn follow(self: Arc<Self>, mut events: Receiver<Event>) {
        let mut seen: HashMap<OperationId, (UpgradePhase, u32)> = HashMap::new();
        let mut image_sizes: HashMap<ImageId, u64> = HashMap::new();
        loop {
            match events.recv().await {
                Ok(Event::Operation(operation)) => {
                    self.observe(&operation, &mut seen, &mut image_sizes).await;
                }
                Ok(_) => {}
                // Missed events are missed counts; carry on with the next ones.
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "metrics missed engine events");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn observe(
        &self,
        operation: &UpgradeOperation,
        seen: &mut HashMap<OperationId, (UpgradePhase, u32)>,
        image_sizes: &mut HashMap<ImageId, u64>,
    ) {
        let previous = seen.get(&operation.id).copied();
        if operation.phase == UpgradePhase::TestingImage
            && previous.is_none_or(|(phase, _)| phase < UpgradePhase::TestingImage)
            && let Some(image_id) = operation.image_id
        {
            let size = match image_sizes.get(&image_id) {
                Some(size) => Some(*size),
                None => match self.repository.image(&Scope::All, image_id).await {
                    Ok(Some(image)) => {
                        image_sizes.insert(image_id, image.size);
                        Some(image.size)
                    }
                    Ok(None) | Err(_) => None,
                },
            };
            if let Some(size) = size {
                self.uploaded_bytes.inc_by(size);
            }
        }
        if let Some((_, attempts)) = previous
            && operation.attempts > attempts
        {
            self.ssh_failures
                .inc_by(u64::from(operation.attempts - attempts));
        }
        if operation.status.is_final() {
            seen.remove(&operation.id);
            if let (Some(started), Some(finished)) = (operation.started, operation.finished) {
                let seconds = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
                self.durations
                    .get_or_create(&StatusLabel {
                        status: operation.status.as_str().to_owned(),
                    })
                    .observe(seconds);
            }
        } else {
            seen.insert(operation.id, (operation.phase, operation.attempts));
        }
    }
}

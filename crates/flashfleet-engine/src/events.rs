//! The in-process event bus: every persisted change of an operation or a batch is published
//! here, for the API's live streams and for integrators.

use flashfleet_models::{BatchCounters, BatchUpgradeOperation, UpgradeOperation};
use tokio::sync::broadcast;

/// A persisted change.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An operation changed (progress, phase, log, status); carries the operation as stored.
    Operation(Box<UpgradeOperation>),
    /// A batch's counters or status changed.
    Batch {
        /// The batch as stored.
        batch: Box<BatchUpgradeOperation>,
        /// Its operations per status.
        counters: BatchCounters,
    },
}

/// A broadcast channel of [`Event`]s. Subscribers that fall behind lose the oldest events
/// (`RecvError::Lagged`) and should re-read the state from the repository.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Publishes `event` to every current subscriber (none is fine).
    pub fn publish(&self, event: Event) {
        // An error only means nobody listens right now.
        let _ = self.sender.send(event);
    }

    /// A receiver of the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

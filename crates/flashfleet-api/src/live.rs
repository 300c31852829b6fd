//! Live progress without reloading (upstream's WebSocket routes, as Server-Sent Events): one
//! stream per operation, per mass upgrade and per device, carrying the same JSON as the REST
//! resources.
//!
//! - `upgrade-operation/<id>/events/`: `operation` events (the operation as `GET
//!   upgrade-operation/<id>/` returns it), then `end` once it finished.
//! - `batch-upgrade-operation/<id>/events/`: first the state (`batch`, then one `operation` per
//!   operation), then an `operation` event for each change of one of its operations and a
//!   `batch` event (the detail without `upgradeoperations`) for each change of its counters or
//!   status; once it finished, the final state of every operation not sent yet, then `end`.
//! - `device/<id>/events/`: `operation` events for the device's operations (the latest five
//!   first, as upstream's socket sends them); it does not end.
//!
//! Changes come from the engine's event bus as they are persisted. Each stream also re-reads
//! its object every `live_poll_interval`, so that what another server's engine did (several
//! servers on one PostgreSQL) reaches the client too, and after the bus dropped events for a
//! slow client. A comment line every 15 seconds keeps proxies from closing an idle stream.
//! Only operations of devices in the caller's organizations are sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use flashfleet_engine::Event;
use flashfleet_models::repository::OperationFilter;
use flashfleet_models::{BatchId, DeviceId, OperationId, PageRequest, Scope, UpgradeOperation};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::Caller;
use crate::batches::{batch_detail, visible_batch};
use crate::devices::visible_device;
use crate::error::ApiError;
use crate::operations::OperationJson;
use crate::state::ApiState;

/// How often an idle stream sends a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How far back a re-read looks beyond its last read, for clocks of other servers that lag.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// How many of a device's operations its stream starts with (upstream's socket: 5).
const DEVICE_HISTORY: u64 = 5;

/// Live changes of one upgrade operation.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/events/", tag = "live",
    params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`operation` events with the operation's JSON, then `end`"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn operation_events(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let id = OperationId(*id);
    state
        .repository()
        .operation(&scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("UpgradeOperation"))?;
    Ok(event_stream(LiveStream::new(
        state.get_ref().clone(),
        scope,
        Subject::Operation(id),
    )))
}

/// Live changes of one mass upgrade.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/events/", tag = "live",
    params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`batch` and `operation` events, then `end`"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn batch_events(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let id = BatchId(*id);
    visible_batch(&state, &scope, id).await?;
    Ok(event_stream(LiveStream::new(
        state.get_ref().clone(),
        scope,
        Subject::Batch(id),
    )))
}

/// Live changes of one device's upgrade operations.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/device/{id}/events/", tag = "live",
    params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`operation` events for the device's operations"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn device_events(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let device = visible_device(&state, &scope, DeviceId(*id)).await?;
    Ok(event_stream(LiveStream::new(
        state.get_ref().clone(),
        scope,
        Subject::Device(device.id),
    )))
}

/// The response carrying `stream` as Server-Sent Events.
pub fn event_stream(stream: LiveStream) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream.into_stream())
}

/// What a live stream follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// One operation.
    Operation(OperationId),
    /// One mass upgrade and its operations.
    Batch(BatchId),
    /// The operations of one device.
    Device(DeviceId),
}

/// The state of one live stream: what it follows, what it sent last.
pub struct LiveStream {
    state: ApiState,
    scope: Scope,
    subject: Subject,
    /// The `modified` time of each operation last sent, so re-reads send only changes.
    sent: HashMap<OperationId, DateTime<Utc>>,
    /// The last batch event sent.
    sent_batch: Option<String>,
    /// Whether each device is in the caller's scope.
    visible_devices: HashMap<DeviceId, bool>,
    /// When the stream last re-read the database.
    last_poll: DateTime<Utc>,
    /// Whether the subject reached its end (a finished operation or mass upgrade).
    done: bool,
}

impl LiveStream {
    /// A stream of `subject` for a caller whose read scope is `scope`.
    pub fn new(state: ApiState, scope: Scope, subject: Subject) -> LiveStream {
        LiveStream {
            state,
            scope,
            subject,
            sent: HashMap::new(),
            sent_batch: None,
            visible_devices: HashMap::new(),
            last_poll: DateTime::<Utc>::MIN_UTC,
            done: false,
        }
    }

    /// The stream of event frames: the current state first, then changes, until the subject
    /// finished (or, for a device, until the client leaves).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
        let receiver = self.state.engine().events().subscribe();
        let poll_interval = self.state.config().live_poll_interval;
        let (sender, frames) = tokio::sync::mpsc::channel::<Bytes>(64);
        actix_web::rt::spawn(async move {
            let mut live = self;
            let mut receiver = receiver;
            if let Err(error) = live.run(&mut receiver, &sender, poll_interval).await {
                tracing::warn!(%error, "live stream stopped");
                let _ = sender
                    .send(frame(
                        "error",
                        &serde_json::json!({"detail": error.detail(), "code": error.code()}),
                    ))
                    .await;
            }
        });
        futures_util::stream::unfold(frames, |mut frames| async move {
            frames.recv().await.map(|bytes| (Ok(bytes), frames))
        })
    }

    async fn run(
        &mut self,
        receiver: &mut tokio::sync::broadcast::Receiver<Event>,
        sender: &tokio::sync::mpsc::Sender<Bytes>,
        poll_interval: Duration,
    ) -> Result<(), ApiError> {
        let mut poll = tokio::time::interval(poll_interval.max(Duration::from_millis(50)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.reset();
        loop {
            let frames = tokio::select! {
                _ = poll.tick() => self.reread().await?,
                event = receiver.recv() => match event {
                    Ok(event) => self.on_event(event).await?,
                    // The bus dropped events for this slow client: read the state again.
                    Err(RecvError::Lagged(_)) => self.reread().await?,
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = keep_alive.tick() => vec![Bytes::from_static(b": keep-alive\n\n")],
                () = sender.closed() => return Ok(()),
            };
            for bytes in frames {
                if sender.send(bytes).await.is_err() {
                    return Ok(());
                }
            }
            if self.done {
                for bytes in self.final_frames().await? {
                    if sender.send(bytes).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = sender.send(frame("end", &serde_json::json!({}))).await;
                return Ok(());
            }
        }
    }

    /// Frames for the changes since the last read, from the database.
    async fn reread(&mut self) -> Result<Vec<Bytes>, ApiError> {
        let since = self.last_poll;
        self.last_poll = flashfleet_models::time::now();
        let repository = self.state.repository();
        let mut frames = Vec::new();
        match self.subject {
            Subject::Operation(id) => {
                if let Some(operation) = repository.operation(&self.scope, id).await? {
                    frames.extend(self.operation_frame(operation));
                }
            }
            Subject::Batch(id) => {
                // After the first read, only what changed since the last one (with a margin
                // for the clocks of other servers); `operation_frame` drops what was sent.
                let filter = OperationFilter {
                    batch_id: Some(id),
                    modified_since: (since > DateTime::<Utc>::MIN_UTC)
                        .then(|| since - CLOCK_MARGIN),
                    ..OperationFilter::default()
                };
                for operation in repository
                    .list_operations(&self.scope, &filter, PageRequest::all())
                    .await?
                    .items
                    .into_iter()
                    .rev()
                {
                    frames.extend(self.operation_frame(operation));
                }
                frames.extend(self.batch_frame(id).await?);
            }
            Subject::Device(device) => {
                let filter = OperationFilter {
                    device_id: Some(device),
                    ..OperationFilter::default()
                };
                let mut latest = repository
                    .list_operations(&self.scope, &filter, PageRequest::page(1, DEVICE_HISTORY))
                    .await?
                    .items;
                latest.reverse();
                for operation in latest {
                    frames.extend(self.operation_frame(operation));
                }
            }
        }
        Ok(frames)
    }

    /// Frames for what the client has not seen of a finished mass upgrade's operations: a
    /// re-read can find the batch finished after listing its operations, while the last of
    /// them finished in between (its bus event still queued), so the stream reads every
    /// operation once more before `end`: each is final by then.
    async fn final_frames(&mut self) -> Result<Vec<Bytes>, ApiError> {
        let Subject::Batch(id) = self.subject else {
            return Ok(Vec::new());
        };
        let filter = OperationFilter {
            batch_id: Some(id),
            ..OperationFilter::default()
        };
        let operations = self
            .state
            .repository()
            .list_operations(&self.scope, &filter, PageRequest::all())
            .await?
            .items;
        Ok(operations
            .into_iter()
            .rev()
            .filter_map(|operation| self.operation_frame(operation))
            .collect())
    }

    /// Frames for one event of the bus, if it concerns this stream.
    async fn on_event(&mut self, event: Event) -> Result<Vec<Bytes>, ApiError> {
        match (event, self.subject) {
            (Event::Operation(operation), Subject::Operation(id)) if operation.id == id => {
                Ok(self.operation_frame(*operation).into_iter().collect())
            }
            (Event::Operation(operation), Subject::Batch(id)) if operation.batch_id == Some(id) => {
                if self.is_visible(operation.device_id).await? {
                    Ok(self.operation_frame(*operation).into_iter().collect())
                } else {
                    Ok(Vec::new())
                }
            }
            (Event::Operation(operation), Subject::Device(id)) if operation.device_id == id => {
                Ok(self.operation_frame(*operation).into_iter().collect())
            }
            (Event::Batch { batch, .. }, Subject::Batch(id)) if batch.id == id => {
                Ok(self.batch_frame(id).await?.into_iter().collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// An `operation` frame, unless this version was sent already.
    fn operation_frame(&mut self, operation: UpgradeOperation) -> Option<Bytes> {
        if self
            .sent
            .get(&operation.id)
            .is_some_and(|modified| *modified >= operation.modified)
        {
            return None;
        }
        self.sent.insert(operation.id, operation.modified);
        if matches!(self.subject, Subject::Operation(id) if id == operation.id)
            && operation.status.is_final()
        {
            self.done = true;
        }
        let mut json = OperationJson::from(operation);
        if matches!(self.subject, Subject::Device(_)) {
            json.created = None;
        }
        Some(frame("operation", &json))
    }

    /// A `batch` frame, unless it equals the last one sent.
    async fn batch_frame(&mut self, id: BatchId) -> Result<Option<Bytes>, ApiError> {
        let detail = batch_detail(&self.state, &self.scope, id, false).await?;
        if ["success", "failed", "cancelled"].contains(&detail.status.as_str()) {
            self.done = true;
        }
        let text = serde_json::to_string(&detail).unwrap_or_default();
        if self.sent_batch.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        let bytes = Bytes::from(format!("event: batch\ndata: {text}\n\n"));
        self.sent_batch = Some(text);
        Ok(Some(bytes))
    }

    async fn is_visible(&mut self, device: DeviceId) -> Result<bool, ApiError> {
        if let Some(visible) = self.visible_devices.get(&device) {
            return Ok(*visible);
        }
        let visible = self
            .state
            .repository()
            .device(&self.scope, device)
            .await?
            .is_some();
        self.visible_devices.insert(device, visible);
        Ok(visible)
    }
}

/// One Server-Sent Events frame.
fn frame(event: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

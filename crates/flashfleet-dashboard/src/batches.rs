//! Mass upgrades: `GET /batches/` (the list), `GET /batches/{id}/` (counters, progress bars and
//! each device's phase, kept up to date by the page's script), `GET /batches/{id}/events` (the
//! API's live stream of that batch, for the signed-in user) and `POST /batches/{id}/cancel`.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use askama::Template;
use flashfleet_api::live::{LiveStream, Subject, event_stream};
use flashfleet_models::repository::{BatchFilter, DeviceFilter};
use flashfleet_models::{BatchId, PageRequest, Scope};
use uuid::Uuid;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::{Layout, StatusLabel, iso_time, redirect, render};
use crate::session::Viewer;

struct BatchRow {
    id: String,
    build: String,
    status: StatusLabel,
    progress_report: String,
    created: String,
}

#[derive(Template)]
#[template(path = "batches.html")]
struct BatchesPage {
    layout: Layout,
    batches: Vec<BatchRow>,
}

struct OperationRow {
    id: String,
    device: String,
    device_name: String,
    status: StatusLabel,
    phase: String,
    progress: u8,
    modified: String,
}

/// One counter of the batch page.
struct Counter {
    key: &'static str,
    label: &'static str,
    value: u64,
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    layout: Layout,
    id: String,
    build: String,
    build_label: String,
    status: StatusLabel,
    finished: bool,
    total: u64,
    completed: u64,
    percent: u64,
    counters: Vec<Counter>,
    operations: Vec<OperationRow>,
    created: String,
    options: String,
    can_cancel: bool,
}

/// `GET /batches/`.
pub(crate) async fn list(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let batches = api
        .repository()
        .list_batches(
            &viewer.caller.read_scope(),
            &BatchFilter::default(),
            PageRequest::page(1, 100),
        )
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let mut rows = Vec::with_capacity(batches.items.len());
    for batch in batches.items {
        let counters = api
            .repository()
            .batch_counters(batch.id)
            .await
            .map_err(flashfleet_api::ApiError::from)?;
        let (build, category) =
            flashfleet_api::builds::visible_build(api, &Scope::All, batch.build_id).await?;
        rows.push(BatchRow {
            id: batch.id.to_string(),
            build: format!("{} {}", category.name, build.version),
            status: StatusLabel::new(batch.status.as_str()),
            progress_report: counters.progress_report(),
            created: iso_time(batch.created),
        });
    }
    render(&BatchesPage {
        layout: Layout::new(&viewer, "batches"),
        batches: rows,
    })
}

/// `GET /batches/{id}/`.
pub(crate) async fn detail(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let scope = viewer.caller.read_scope();
    let batch = flashfleet_api::batches::visible_batch(api, &scope, BatchId(*id)).await?;
    let detail = flashfleet_api::batches::batch_detail(api, &scope, batch.id, true).await?;
    let (build, category) =
        flashfleet_api::builds::visible_build(api, &Scope::All, batch.build_id).await?;
    let names: HashMap<Uuid, String> = api
        .repository()
        .list_devices(&scope, &DeviceFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?
        .items
        .into_iter()
        .map(|device| (device.id.0, device.name))
        .collect();
    let mut operations: Vec<OperationRow> = detail
        .upgradeoperations
        .unwrap_or_default()
        .into_iter()
        .map(|operation| OperationRow {
            id: operation.id.to_string(),
            device: operation.device.to_string(),
            device_name: names
                .get(&operation.device)
                .cloned()
                .unwrap_or_else(|| operation.device.to_string()),
            status: StatusLabel::new(&operation.status),
            phase: operation.phase,
            progress: operation.progress,
            modified: iso_time(operation.modified.0),
        })
        .collect();
    operations.sort_by(|a, b| a.device_name.cmp(&b.device_name));
    let counters = &detail.counters;
    render(&BatchPage {
        layout: Layout::new(&viewer, "batches"),
        id: batch.id.to_string(),
        build: build.id.to_string(),
        build_label: format!("{} {}", category.name, build.version),
        finished: batch.status.is_final(),
        status: StatusLabel::new(batch.status.as_str()),
        total: counters.total,
        completed: counters.completed,
        percent: (counters.completed * 100)
            .checked_div(counters.total)
            .unwrap_or(0),
        counters: vec![
            Counter {
                key: "total",
                label: "Devices",
                value: counters.total,
            },
            Counter {
                key: "in_progress",
                label: "In progress",
                value: counters.in_progress,
            },
            Counter {
                key: "success",
                label: "Succeeded",
                value: counters.success,
            },
            Counter {
                key: "failed",
                label: "Failed",
                value: counters.failed,
            },
            Counter {
                key: "aborted",
                label: "Aborted",
                value: counters.aborted,
            },
            Counter {
                key: "cancelled",
                label: "Cancelled",
                value: counters.cancelled,
            },
        ],
        operations,
        created: iso_time(batch.created),
        options: serde_json::to_string(&batch.upgrade_options).unwrap_or_default(),
        can_cancel: !batch.status.is_final() && viewer.caller.can_change(category.organization_id),
    })
}

/// `GET /batches/{id}/events`: the API's live stream of the batch (`batch` and `operation`
/// events, then `end`), for the signed-in user's scope.
pub(crate) async fn events(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let scope = viewer.caller.read_scope();
    let batch = flashfleet_api::batches::visible_batch(api, &scope, BatchId(*id)).await?;
    Ok(event_stream(LiveStream::new(
        api.clone(),
        scope,
        Subject::Batch(batch.id),
    )))
}

/// `POST /batches/{id}/cancel`: cancels what has not started flashing.
pub(crate) async fn cancel(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    form: web::Form<crate::session::CsrfForm>,
) -> Result<HttpResponse, DashboardError> {
    viewer.check_csrf(&form.csrf)?;
    let cancelled =
        flashfleet_api::batches::cancel_batch(dashboard.api(), &viewer.caller, BatchId(*id))
            .await?;
    tracing::info!(batch = %id, cancelled, user = %viewer.caller.actor.username, "mass upgrade cancelled from the dashboard");
    Ok(redirect(&format!("/batches/{id}/")))
}

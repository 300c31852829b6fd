//! Mass upgrades (upstream endpoints 9 and 10): `batch-upgrade-operation/` and
//! `batch-upgrade-operation/<id>/`, plus `batch-upgrade-operation/<id>/cancel/`.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use flashfleet_models::page::BatchOrder;
use flashfleet_models::repository::{BatchFilter, OperationFilter};
use flashfleet_models::{
    BatchCounters, BatchId, BatchStatus, BatchUpgradeOperation, Details, PageRequest, Scope,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::builds::{BuildJson, visible_build};
use crate::error::ApiError;
use crate::input::Input;
use crate::operations::OperationJson;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// A mass upgrade as upstream's list shows it (`id, build, created, modified, upgrade_options,
/// status, group, location`), then flashfleet's own fields.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchJson {
    /// Its id.
    pub id: Uuid,
    /// The build it installs.
    pub build: BuildJson,
    /// When it was started.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
    /// The sysupgrade options of its operations.
    #[schema(value_type = Object)]
    pub upgrade_options: serde_json::Value,
    /// `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    pub status: String,
    /// The device group it was limited to.
    pub group: Option<Uuid>,
    /// Always `null`: flashfleet has no locations (upstream's location filter).
    pub location: Option<Uuid>,
    /// Whether devices with no known firmware were included.
    pub upgrade_all: bool,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

/// Counts of a mass upgrade's operations per status.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CountersJson {
    /// Every operation.
    pub total: u64,
    /// Unfinished.
    pub in_progress: u64,
    /// Succeeded.
    pub success: u64,
    /// Failed.
    pub failed: u64,
    /// Aborted.
    pub aborted: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Finished (every status but in-progress).
    pub completed: u64,
}

impl From<&BatchCounters> for CountersJson {
    fn from(counters: &BatchCounters) -> Self {
        CountersJson {
            total: counters.total,
            in_progress: counters.in_progress,
            success: counters.success,
            failed: counters.failed,
            aborted: counters.aborted,
            cancelled: counters.cancelled,
            completed: counters.completed(),
        }
    }
}

/// A mass upgrade as upstream's detail shows it: the list fields with its progress report,
/// its rates (integers, as upstream truncates them) and its operations.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchDetailJson {
    /// Its id.
    pub id: Uuid,
    /// The build it installs.
    pub build: BuildJson,
    /// `"<finished> out of <total>"`.
    pub progress_report: String,
    /// Percentage of operations that succeeded.
    pub success_rate: u64,
    /// Percentage that failed.
    pub failed_rate: u64,
    /// Percentage that were aborted.
    pub aborted_rate: u64,
    /// Percentage that were cancelled.
    pub cancelled_rate: u64,
    /// Its operations (of the caller's devices), newest first; absent from live events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgradeoperations: Option<Vec<OperationJson>>,
    /// When it was started.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
    /// The sysupgrade options of its operations.
    #[schema(value_type = Object)]
    pub upgrade_options: serde_json::Value,
    /// Its status.
    pub status: String,
    /// The device group it was limited to.
    pub group: Option<Uuid>,
    /// Always `null` (no locations).
    pub location: Option<Uuid>,
    /// Whether devices with no known firmware were included.
    pub upgrade_all: bool,
    /// Operations per status.
    pub counters: CountersJson,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl BatchDetailJson {
    /// The detail of `batch` (as `list` shows it) with `counters` and `operations`.
    pub fn new(
        batch: BatchJson,
        counters: &BatchCounters,
        operations: Option<Vec<OperationJson>>,
    ) -> BatchDetailJson {
        BatchDetailJson {
            id: batch.id,
            build: batch.build,
            progress_report: counters.progress_report(),
            success_rate: counters.rate(counters.success),
            failed_rate: counters.rate(counters.failed),
            aborted_rate: counters.rate(counters.aborted),
            cancelled_rate: counters.rate(counters.cancelled),
            upgradeoperations: operations,
            created: batch.created,
            modified: batch.modified,
            upgrade_options: batch.upgrade_options,
            status: batch.status,
            group: batch.group,
            location: None,
            upgrade_all: batch.upgrade_all,
            counters: counters.into(),
            details: batch.details,
        }
    }
}

/// What cancelling a mass upgrade did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCancelledJson {
    /// How many operations were cancelled (those past the flash finish on their own).
    pub cancelled: usize,
    /// The mass upgrade as it is now, without its operations.
    pub batch: BatchDetailJson,
}

/// Lists mass upgrades (`-created`; filters `build`, `status`, `created`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/", tag = "firmware-upgrader",
    params(
        ("build" = Option<Uuid>, Query),
        ("status" = Option<String>, Query, description = "idle, in-progress, success, failed, cancelled"),
        ("created" = Option<String>, Query, description = "Exact creation time (RFC 3339)"),
        ("created__gte" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("created__lt" = Option<String>, Query, description = "Created before (RFC 3339)"),
        ("organization" = Option<String>, Query, description = "Organization slug"),
        ("ordering" = Option<String>, Query, description = "created, modified; `-` for descending"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query),
    ),
    responses((status = 200, body = Paginated<BatchJson>), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let time_message = "Enter a valid date/time.";
    let status = query.filter_text("status").and_then(|text| {
        match BatchStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
        {
            Some(status) => Some(status),
            None => {
                query.error(
                    "status",
                    format!("Select a valid choice. {text} is not one of the available choices."),
                );
                None
            }
        }
    });
    let filter = BatchFilter {
        build_id: query.filter_id("build"),
        status,
        organization_slug: query.filter_text("organization"),
        created: query.filter_parsed::<DateTime<Utc>>("created", time_message),
        created_after: query.filter_parsed::<DateTime<Utc>>("created__gte", time_message),
        created_before: query.filter_parsed::<DateTime<Utc>>("created__lt", time_message),
        ordering: query.ordering::<BatchOrder>(),
    };
    query.finish()?;
    let scope = caller.read_scope();
    let batches = state
        .repository()
        .list_batches(&scope, &filter, pagination.request())
        .await?;
    let mut items = Vec::with_capacity(batches.items.len());
    for batch in batches.items {
        items.push(batch_json(&state, batch).await?);
    }
    pagination.respond(
        &request,
        &state,
        flashfleet_models::Page {
            count: batches.count,
            items,
        },
    )
}

/// One mass upgrade with its operations.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchDetailJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let detail = batch_detail(&state, &caller.read_scope(), BatchId(*id), true).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Cancels every operation of a mass upgrade that has not started flashing.
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/cancel/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchCancelledJson), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn cancel(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let cancelled = cancel_batch(&state, &caller, BatchId(*id)).await?;
    let detail = batch_detail(&state, &scope, BatchId(*id), false).await?;
    Ok(HttpResponse::Ok().json(BatchCancelledJson {
        cancelled,
        batch: detail,
    }))
}

/// Cancels every operation of the mass upgrade `id` that has not started flashing, for
/// `caller` (404 when it cannot see the batch, 403 when it may not change its build): how many
/// operations were cancelled.
pub async fn cancel_batch(
    state: &ApiState,
    caller: &Caller,
    id: BatchId,
) -> Result<usize, ApiError> {
    let batch = visible_batch(state, &caller.read_scope(), id).await?;
    let (_, category) = visible_build(state, &Scope::All, batch.build_id).await?;
    caller.require_change(category.organization_id)?;
    let cancelled = state
        .engine()
        .cancel_mass_upgrade(&caller.write_scope(), batch.id)
        .await?;
    Ok(cancelled.len())
}

/// The batch `id` if the caller sees it, upstream's 404 otherwise.
pub async fn visible_batch(
    state: &ApiState,
    scope: &Scope,
    id: BatchId,
) -> Result<BatchUpgradeOperation, ApiError> {
    state
        .repository()
        .batch(scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("BatchUpgradeOperation"))
}

/// The list JSON of `batch`.
pub(crate) async fn batch_json(
    state: &ApiState,
    batch: BatchUpgradeOperation,
) -> Result<BatchJson, ApiError> {
    let (build, category) = visible_build(state, &Scope::All, batch.build_id).await?;
    Ok(BatchJson {
        id: batch.id.0,
        build: BuildJson::new(build, &category),
        created: batch.created.into(),
        modified: batch.modified.into(),
        upgrade_options: serde_json::to_value(&batch.upgrade_options).unwrap_or_default(),
        status: batch.status.as_str().to_owned(),
        group: batch.group_id.map(|id| id.0),
        location: None,
        upgrade_all: batch.upgrade_all,
        details: batch.details,
    })
}

/// The detail JSON of the batch `id`, with its operations (those of devices in `scope`) when
/// `with_operations`.
pub async fn batch_detail(
    state: &ApiState,
    scope: &Scope,
    id: BatchId,
    with_operations: bool,
) -> Result<BatchDetailJson, ApiError> {
    let batch = visible_batch(state, scope, id).await?;
    let counters = state.repository().batch_counters(batch.id).await?;
    let operations = if with_operations {
        let filter = OperationFilter {
            batch_id: Some(batch.id),
            ..OperationFilter::default()
        };
        Some(
            state
                .repository()
                .list_operations(scope, &filter, PageRequest::all())
                .await?
                .items
                .into_iter()
                .map(OperationJson::from)
                .collect(),
        )
    } else {
        None
    };
    let batch = batch_json(state, batch).await?;
    Ok(BatchDetailJson::new(batch, &counters, operations))
}

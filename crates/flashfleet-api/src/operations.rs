//! Upgrade operations (upstream endpoints 11 to 14): `upgrade-operation/`,
//! `upgrade-operation/<id>/`, `upgrade-operation/<id>/cancel/` and
//! `device/<id>/upgrade-operation/`.

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::page::OperationOrder;
use flashfleet_models::repository::OperationFilter;
use flashfleet_models::{
    Details, DeviceId, OperationId, OrganizationId, UpgradeOperation, UpgradeStatus,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::devices::visible_device;
use crate::error::{ApiError, cancel_message};
use crate::input::Input;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The statuses a filter accepts, for its error message.
const STATUS_CHOICES: &str = "in-progress, success, failed, cancelled, aborted";

/// An upgrade operation as the API shows it: upstream's `UpgradeOperationSerializer` (`id,
/// device, image, status, log, progress, modified, created`), then what flashfleet records
/// beyond it. The per-device list leaves `created` out, as upstream's does.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OperationJson {
    /// Its id.
    pub id: Uuid,
    /// The device.
    pub device: Uuid,
    /// The image; `null` once the image was deleted.
    pub image: Option<Uuid>,
    /// `in-progress`, `success`, `failed`, `cancelled` or `aborted`.
    pub status: String,
    /// What happened, line by line.
    pub log: String,
    /// 0 to 100 (upstream's milestones: 10 connected, 15 identity verified, 20 checksum
    /// compared, 65 flashing, 90 reconnected, 100 done).
    pub progress: u8,
    /// When it last changed.
    pub modified: Timestamp,
    /// When it was queued (absent in the per-device list, as upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// The mass upgrade it belongs to, if any.
    pub batch: Option<Uuid>,
    /// The step it is at (`queued`, `connecting`, ..., `flashing`, ..., `done`).
    pub phase: String,
    /// The sysupgrade options it runs with.
    #[schema(value_type = Object)]
    pub upgrade_options: serde_json::Value,
    /// How many attempts were made (retries of recoverable failures).
    pub attempts: u32,
    /// When the next attempt may start, while waiting for a retry.
    pub next_attempt_at: Option<Timestamp>,
    /// When the first attempt started.
    pub started: Option<Timestamp>,
    /// When it ended.
    pub finished: Option<Timestamp>,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<UpgradeOperation> for OperationJson {
    fn from(operation: UpgradeOperation) -> Self {
        OperationJson {
            id: operation.id.0,
            device: operation.device_id.0,
            image: operation.image_id.map(|id| id.0),
            status: operation.status.as_str().to_owned(),
            log: operation.log,
            progress: operation.progress,
            modified: operation.modified.into(),
            created: Some(operation.created.into()),
            batch: operation.batch_id.map(|id| id.0),
            phase: operation.phase.as_str().to_owned(),
            upgrade_options: serde_json::to_value(&operation.upgrade_options).unwrap_or_default(),
            attempts: operation.attempts,
            next_attempt_at: operation.next_attempt_at.map(Timestamp),
            started: operation.started.map(Timestamp),
            finished: operation.finished.map(Timestamp),
            details: operation.details,
        }
    }
}

/// The answer to a cancellation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelledJson {
    /// Upstream's "Upgrade operation cancelled successfully".
    pub message: String,
    /// The operation as it is now.
    pub operation: OperationJson,
}

/// Lists upgrade operations (`-created`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/upgrade-operation/", tag = "firmware-upgrader",
    params(
        ("device" = Option<Uuid>, Query), ("image" = Option<Uuid>, Query),
        ("status" = Option<String>, Query, description = "in-progress, success, failed, cancelled, aborted"),
        ("phase" = Option<String>, Query, description = "queued, connecting, ..., flashing, ..., done"),
        ("device__organization" = Option<Uuid>, Query), ("device__organization__slug" = Option<String>, Query),
        ("organization" = Option<String>, Query, description = "Organization slug"),
        ("ordering" = Option<String>, Query, description = "device_id, created, modified; `-` for descending"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query),
    ),
    responses((status = 200, body = Paginated<OperationJson>), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let filter = OperationFilter {
        device_id: query.filter_id("device"),
        image_id: query.filter_id("image"),
        batch_id: query.filter_id("batch"),
        status: status_filter(&mut query),
        organization_slug: query
            .filter_text("device__organization__slug")
            .or_else(|| query.filter_text("organization")),
        organization_id: query.filter_id::<OrganizationId>("device__organization"),
        phase: query.filter_parsed("phase", "Select a valid choice of phase."),
        ordering: query.ordering::<OperationOrder>(),
        ..OperationFilter::default()
    };
    query.finish()?;
    let page = state
        .repository()
        .list_operations(&caller.read_scope(), &filter, pagination.request())
        .await?
        .map(OperationJson::from);
    pagination.respond(&request, &state, page)
}

/// One upgrade operation.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OperationJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let operation = state
        .repository()
        .operation(&caller.read_scope(), OperationId(*id))
        .await?
        .ok_or_else(|| ApiError::no_match("UpgradeOperation"))?;
    Ok(HttpResponse::Ok().json(OperationJson::from(operation)))
}

/// Cancels an operation that has not started flashing (409 once it has, or once it ended).
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/cancel/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CancelledJson), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 409, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn cancel(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let cancelled = cancel_operation(&state, &caller, OperationId(*id)).await?;
    Ok(HttpResponse::Ok().json(CancelledJson {
        message: "Upgrade operation cancelled successfully".into(),
        operation: cancelled.into(),
    }))
}

/// Cancels the operation `id` for `caller`, if it has not started flashing (409 once it has,
/// or once it ended; 404 when the caller cannot see it; 403 when it may not change its device).
pub async fn cancel_operation(
    state: &ApiState,
    caller: &Caller,
    id: OperationId,
) -> Result<UpgradeOperation, ApiError> {
    let not_found = || {
        ApiError::not_found("Upgrade operation not found")
            .with_member("error", "Upgrade operation not found")
    };
    let operation = state
        .repository()
        .operation(&caller.read_scope(), id)
        .await?
        .ok_or_else(not_found)?;
    let device = visible_device(state, &caller.read_scope(), operation.device_id).await?;
    caller.require_change(Some(device.organization_id))?;
    match state
        .engine()
        .cancel_operation(&caller.write_scope(), operation.id)
        .await
    {
        Ok(cancelled) => Ok(cancelled),
        Err(flashfleet_engine::EngineError::Repository(flashfleet_models::RepoError::Cancel(
            error,
        ))) => {
            let message = cancel_message(&error);
            Err(ApiError::Conflict {
                detail: message.clone(),
            }
            .with_member("error", message))
        }
        Err(flashfleet_engine::EngineError::NotFound { .. }) => Err(not_found()),
        Err(error) => Err(ApiError::from(error)),
    }
}

/// The operations of one device (`-created`; filter `status`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/device/{id}/upgrade-operation/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path), ("status" = Option<String>, Query),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<OperationJson>), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_for_device(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let device = visible_device(&state, &scope, DeviceId(*id)).await?;
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let filter = OperationFilter {
        device_id: Some(device.id),
        status: status_filter(&mut query),
        ..OperationFilter::default()
    };
    query.finish()?;
    let page = state
        .repository()
        .list_operations(&scope, &filter, pagination.request())
        .await?
        .map(|operation| OperationJson {
            created: None,
            ..OperationJson::from(operation)
        });
    pagination.respond(&request, &state, page)
}

fn status_filter(query: &mut Input) -> Option<UpgradeStatus> {
    let text = query.filter_text("status")?;
    match UpgradeStatus::ALL
        .into_iter()
        .find(|status| status.as_str() == text)
    {
        Some(status) => Some(status),
        None => {
            query.error(
                "status",
                format!(
                    "Select a valid choice. {text} is not one of the available choices ({STATUS_CHOICES})."
                ),
            );
            None
        }
    }
}

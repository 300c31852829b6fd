//! The firmware of a device (upstream endpoint 15): `device/<id>/firmware/`.
//!
//! `PUT` assigns an image: when it differs from the one the device runs (or that one is not
//! installed), an upgrade operation is queued at once, through the same engine call as the
//! dashboard. Beyond upstream, the body may carry `upgrade_options`; `-F` needs an owner of the
//! device's organization or a superuser.

use actix_web::{HttpResponse, web};
use flashfleet_models::device_firmware::DEACTIVATED_DEVICE;
use flashfleet_models::repository::OperationFilter;
use flashfleet_models::{
    Details, Device, DeviceFirmware, DeviceId, ImageId, PageRequest, Scope, UpgradeOperation,
    UpgradeOptions,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::devices::{visible_device, writable_device};
use crate::error::ApiError;
use crate::input::Input;
use crate::state::ApiState;
use crate::timestamp::Timestamp;
use crate::upgrades::upgrade_options;

/// The id of an operation, as upstream's `PUT` response names it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationRef {
    /// The operation's id.
    pub id: Uuid,
}

/// A device's firmware record: upstream's `id, image, installed, modified`, then flashfleet's
/// fields; after a `PUT` or `PATCH`, the device's latest `upgrade_operation`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceFirmwareJson {
    /// Its id.
    pub id: Uuid,
    /// The image the device runs or is being upgraded to.
    pub image: Uuid,
    /// Whether the device runs it.
    pub installed: bool,
    /// When it last changed.
    pub modified: Timestamp,
    /// The device.
    pub device: Uuid,
    /// When it was created.
    pub created: Timestamp,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
    /// After a change: the device's latest upgrade operation (`null` when it never had one;
    /// upstream answers 500 there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_operation: Option<Option<OperationRef>>,
}

impl From<DeviceFirmware> for DeviceFirmwareJson {
    fn from(record: DeviceFirmware) -> Self {
        DeviceFirmwareJson {
            id: record.id.0,
            image: record.image_id.0,
            installed: record.installed,
            modified: record.modified.into(),
            device: record.device_id.0,
            created: record.created.into(),
            details: record.details,
            upgrade_operation: None,
        }
    }
}

/// The body of a firmware assignment.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct DeviceFirmwareInput {
    /// The image: of the device's organization or shared, for its model, and (when the device
    /// already has a record) of the same category.
    image: Uuid,
    /// sysupgrade options (`c`, `o`, `n`, `u`, `p`, `k`, `F`).
    #[schema(value_type = Option<Object>)]
    upgrade_options: Option<serde_json::Value>,
}

/// The firmware record of a device.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/device/{id}/firmware/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceFirmwareJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let device = visible_device(&state, &caller.read_scope(), DeviceId(*id)).await?;
    let record = existing_record(&state, &device).await?;
    Ok(HttpResponse::Ok().json(DeviceFirmwareJson::from(record)))
}

/// Assigns an image to a device (`PUT` creates the record, answering 201; `PATCH` needs one),
/// queueing its upgrade when the image changes or is not installed.
#[utoipa::path(
    put, path = "/api/v1/firmware-upgrader/device/{id}/firmware/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    request_body(content = DeviceFirmwareInput, content_type = "application/json"),
    responses((status = 200, body = DeviceFirmwareJson), (status = 201, body = DeviceFirmwareJson),
        (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let device = writable_device(&state, &caller, DeviceId(*id), DEACTIVATED_DEVICE).await?;
    let current = state.repository().device_firmware(device.id).await?;
    if current.is_none() && input.is_partial() {
        return Err(ApiError::no_match("DeviceFirmware"));
    }
    let image_id = input.required_id::<ImageId>("image");
    let options = upgrade_options(&mut input);
    input.finish()?;
    let image_id = match (image_id, &current) {
        (Some(image_id), _) => image_id,
        (None, Some(current)) => current.image_id,
        (None, None) => return Err(ApiError::invalid_field("image", crate::input::REQUIRED)),
    };
    let operation = assign_image(
        &state,
        &caller,
        &device,
        current.as_ref(),
        image_id,
        options,
    )
    .await?;
    let record = existing_record(&state, &device).await?;
    let latest = match operation {
        Some(operation) => Some(operation),
        None => latest_operation(&state, device.id).await?,
    };
    let mut json = DeviceFirmwareJson::from(record);
    json.upgrade_operation = Some(latest.map(|operation| OperationRef { id: operation.id.0 }));
    Ok(if current.is_none() {
        HttpResponse::Created().json(json)
    } else {
        HttpResponse::Ok().json(json)
    })
}

/// Deletes the firmware record of a device (the device is then "without known firmware").
#[utoipa::path(
    delete, path = "/api/v1/firmware-upgrader/device/{id}/firmware/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let device = writable_device(&state, &caller, DeviceId(*id), DEACTIVATED_DEVICE).await?;
    existing_record(&state, &device).await?;
    state.repository().delete_device_firmware(device.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Assigns `image_id` to `device` (whose firmware record is `current`) for `caller`, queueing
/// its upgrade when the image changes or is not installed: the queued operation, if any. The
/// image must be of the same category as the current one; `-F` needs an owner or superuser.
/// Check first that the caller may change the device ([`writable_device`]).
pub async fn assign_image(
    state: &ApiState,
    caller: &Caller,
    device: &Device,
    current: Option<&DeviceFirmware>,
    image_id: ImageId,
    options: UpgradeOptions,
) -> Result<Option<UpgradeOperation>, ApiError> {
    check_same_category(state, &caller.read_scope(), current, image_id).await?;
    Ok(state
        .engine()
        .upgrade_device(
            &caller.write_scope(),
            device.id,
            image_id,
            options,
            caller.may_force(device.organization_id),
        )
        .await?)
}

async fn existing_record(state: &ApiState, device: &Device) -> Result<DeviceFirmware, ApiError> {
    state
        .repository()
        .device_firmware(device.id)
        .await?
        .ok_or_else(|| ApiError::no_match("DeviceFirmware"))
}

async fn latest_operation(
    state: &ApiState,
    device: DeviceId,
) -> Result<Option<UpgradeOperation>, ApiError> {
    let filter = OperationFilter {
        device_id: Some(device),
        ..OperationFilter::default()
    };
    Ok(state
        .repository()
        .list_operations(&Scope::All, &filter, PageRequest::page(1, 1))
        .await?
        .items
        .into_iter()
        .next())
}

/// Upstream offers a device that has a firmware record only images of the same category as its
/// current image (`get_image_queryset_for_device`).
async fn check_same_category(
    state: &ApiState,
    scope: &Scope,
    current: Option<&DeviceFirmware>,
    image_id: ImageId,
) -> Result<(), ApiError> {
    let Some(current) = current else {
        return Ok(());
    };
    let repository = state.repository();
    let invalid = || {
        ApiError::invalid_field(
            "image",
            format!("Invalid pk \"{image_id}\" - object does not exist."),
        )
    };
    let Some(new_image) = repository.image(scope, image_id).await? else {
        return Err(invalid());
    };
    let Some(current_image) = repository.image(&Scope::All, current.image_id).await? else {
        return Ok(());
    };
    if new_image.build_id == current_image.build_id {
        return Ok(());
    }
    let new_build = repository.build(&Scope::All, new_image.build_id).await?;
    let current_build = repository
        .build(&Scope::All, current_image.build_id)
        .await?;
    match (new_build, current_build) {
        (Some((new_build, _)), Some((current_build, _)))
            if new_build.category_id == current_build.category_id =>
        {
            Ok(())
        }
        _ => Err(invalid()),
    }
}

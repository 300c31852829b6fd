//! Devices (openwisp-controller's `/api/v1/controller/device/` and `.../<id>/`), with
//! openwisp-controller's `deactivate/` and `activate/` actions and flashfleet's `register/`,
//! where a device (or the tool that provisions it) reports its model, OS and board.
//!
//! Everyone sees the devices of their organizations; managers create, change and delete them.
//! A deactivated device is read-only until it is activated again (it can still be deleted).
//!
//! Whenever a device's model, OS identifier or board name becomes known or changes, the
//! engine's device hook records which image it runs (`Engine::device_registered`), so mass
//! upgrades include it; a failing hook is logged, the device is saved all the same.

use std::str::FromStr;

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::device::{
    BOARD_NAME_MAX_LENGTH, MODEL_MAX_LENGTH, NAME_MAX_LENGTH, OS_MAX_LENGTH,
};
use flashfleet_models::repository::DeviceFilter;
use flashfleet_models::{
    Details, Device, DeviceGroupId, DeviceId, MacAddress, NewDevice, NewDeviceConnection,
    OrganizationId, PageRequest, Scope,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::organizations::writable_organization;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The 403 of a change to a deactivated device.
pub const DEACTIVATED_DEVICE_CHANGE: &str = "Changes are not allowed for deactivated devices.";

/// The 409 of deleting a device whose upgrade has not finished.
pub const UPGRADE_IN_PROGRESS: &str = "The device has an upgrade in progress: cancel it, or wait for it to end, before deleting the device.";

/// The most characters of a management address accepted (a host name: 253).
const MANAGEMENT_IP_MAX_LENGTH: usize = 253;
/// The most characters of a MAC address as written (`0011.2233.4455` to `00:11:22:33:44:55`).
const MAC_ADDRESS_MAX_LENGTH: usize = 17;

/// A device as the API shows it: openwisp-controller's fields (without `key`, `last_ip`,
/// `system`, `notes` and `config`, which flashfleet has no use for), then flashfleet's.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceJson {
    /// Its id.
    pub id: Uuid,
    /// Its name (unique in its organization).
    pub name: String,
    /// Its organization.
    pub organization: Uuid,
    /// Its group, if any.
    pub group: Option<Uuid>,
    /// Its MAC address (`AA:BB:CC:DD:EE:FF`, unique in its organization).
    pub mac_address: String,
    /// The address the upgrader connects to (IP address or host name).
    pub management_ip: Option<String>,
    /// The hardware model the device reports (matched against the boards of image types).
    pub model: String,
    /// The OS identifier the device reports (matched against a build's `os`).
    pub os: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// The board name the device reports (matched against image metadata).
    pub board_name: String,
    /// A deactivated device is never upgraded, and read-only until activated.
    pub is_deactivated: bool,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<Device> for DeviceJson {
    fn from(device: Device) -> Self {
        DeviceJson {
            id: device.id.0,
            name: device.name,
            organization: device.organization_id.0,
            group: device.group_id.map(|id| id.0),
            mac_address: device.mac_address.to_string(),
            management_ip: device.management_ip,
            model: device.model,
            os: device.os,
            created: device.created.into(),
            modified: device.modified.into(),
            board_name: device.board_name,
            is_deactivated: device.is_deactivated,
            details: device.details,
        }
    }
}

/// The body of a device create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct DeviceInput {
    /// Its name (required, at most 64 characters).
    name: String,
    /// Its organization: one the caller manages (it cannot change later).
    organization: Uuid,
    /// Its group: of the same organization.
    group: Option<Uuid>,
    /// Its MAC address: `00:11:22:33:44:55`, `00-11-22-33-44-55`, `0011.2233.4455` or
    /// `001122334455`.
    mac_address: String,
    /// An IP address or host name.
    management_ip: Option<String>,
    /// Hardware model (at most 64 characters).
    model: Option<String>,
    /// OS identifier (at most 128 characters).
    os: Option<String>,
    /// Board name (at most 128 characters).
    board_name: Option<String>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// What a device reports when it registers (every field optional: the others stay).
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct RegistrationInput {
    /// Hardware model (`/tmp/sysinfo/model`).
    model: Option<String>,
    /// OS identifier (`OpenWrt 23.05.3 r23809-234f1a2efa`).
    os: Option<String>,
    /// Board name (`/tmp/sysinfo/board_name`).
    board_name: Option<String>,
    /// The address to reach it at.
    management_ip: Option<String>,
}

/// Lists devices, newest first (filters `organization`, `group`, `model`, `os`).
#[utoipa::path(
    get, path = "/api/v1/controller/device/", tag = "controller",
    params(
        ("organization" = Option<String>, Query, description = "Only devices of the organization with this slug"),
        ("group" = Option<Uuid>, Query, description = "Only devices of this group"),
        ("model" = Option<String>, Query, description = "Only devices of exactly this model"),
        ("os" = Option<String>, Query, description = "Only devices with exactly this OS identifier"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query),
    ),
    responses((status = 200, body = Paginated<DeviceJson>), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let filter = DeviceFilter {
        organization_slug: query.filter_text("organization"),
        group_id: query.filter_id("group"),
        model: query.filter_text("model"),
        os: query.filter_text("os"),
    };
    query.finish()?;
    let page = state
        .repository()
        .list_devices(&caller.read_scope(), &filter, pagination.request())
        .await?
        .map(DeviceJson::from);
    pagination.respond(&request, &state, page)
}

/// Creates a device, attaches the auto-add credentials of its organization and the shared
/// ones, and records which image it runs when its model and OS are known.
#[utoipa::path(
    post, path = "/api/v1/controller/device/", tag = "controller",
    request_body(content = DeviceInput, content_type = "application/json"),
    responses((status = 201, body = DeviceJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let organization_id = match input.required_id::<OrganizationId>("organization") {
        Some(id) => writable_organization(&state, &caller, &mut input, "organization", id).await?,
        None => None,
    };
    let name = input.required_string("name", NAME_MAX_LENGTH);
    let mac_address = read_mac_address(&mut input);
    let group_id = read_group(&state, &caller, &mut input).await?.flatten();
    let facts = Facts::read(&mut input);
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let (Some(organization_id), Some(name), Some(mac_address)) =
        (organization_id, name, mac_address)
    else {
        return Err(ApiError::internal(
            "reading a device",
            "checked fields are missing",
        ));
    };
    let mut new_device = NewDevice::new(organization_id, name, mac_address);
    new_device.group_id = group_id;
    new_device.details = details;
    let mut device = new_device.into_device();
    facts.apply(&mut device);
    device.validate()?;
    let stored = state.repository().insert_device(&device).await?;
    attach_auto_add_credentials(&state, &stored).await;
    if !stored.model.is_empty() || !stored.os.is_empty() {
        run_device_hook(&state, stored.id).await;
    }
    Ok(HttpResponse::Created().json(DeviceJson::from(stored)))
}

/// One device.
#[utoipa::path(
    get, path = "/api/v1/controller/device/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let device = visible_device(&state, &caller.read_scope(), DeviceId(*id)).await?;
    Ok(HttpResponse::Ok().json(DeviceJson::from(device)))
}

/// Changes a device (`PUT` whole, `PATCH` partial); a new model, OS identifier or board name
/// runs the device hook.
#[utoipa::path(
    put, path = "/api/v1/controller/device/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    request_body(content = DeviceInput, content_type = "application/json"),
    responses((status = 200, body = DeviceJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let device = writable_device(&state, &caller, DeviceId(*id), DEACTIVATED_DEVICE_CHANGE).await?;
    let mut changed = device.clone();
    if let Some(organization_id) = input.required_id::<OrganizationId>("organization")
        && organization_id != device.organization_id
    {
        input.error(
            "organization",
            "The organization of a device cannot be changed.",
        );
    }
    if let Some(name) = input.required_string("name", NAME_MAX_LENGTH) {
        changed.name = name;
    }
    if let Some(mac_address) = read_mac_address(&mut input) {
        changed.mac_address = mac_address;
    }
    if let Some(group_id) = read_group(&state, &caller, &mut input).await? {
        changed.group_id = group_id;
    }
    let facts = Facts::read(&mut input);
    if let Some(details) = input.object("details") {
        changed.details = details;
    }
    input.finish()?;
    facts.apply(&mut changed);
    save_device(&state, &device, changed).await
}

/// Deletes a device with its connections, firmware record and finished upgrade operations;
/// refused (409) while it has an unfinished upgrade, as upstream's admin refuses it.
#[utoipa::path(
    delete, path = "/api/v1/controller/device/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let device = visible_device(&state, &caller.read_scope(), DeviceId(*id)).await?;
    caller.require_change(Some(device.organization_id))?;
    if state
        .repository()
        .unfinished_operation(device.id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict {
            detail: UPGRADE_IN_PROGRESS.to_owned(),
        });
    }
    if !state.repository().delete_device(device.id).await? {
        return Err(ApiError::not_found("device not found"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Records what a device reports about itself (`model`, `os`, `board_name`, `management_ip`;
/// absent fields stay) and runs the device hook, which records the image it runs.
#[utoipa::path(
    post, path = "/api/v1/controller/device/{id}/register/", tag = "controller",
    params(("id" = Uuid, Path)),
    request_body(content = RegistrationInput, content_type = "application/json"),
    responses((status = 200, body = DeviceJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn register(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let device = writable_device(&state, &caller, DeviceId(*id), DEACTIVATED_DEVICE_CHANGE).await?;
    let facts = Facts::read(&mut input);
    input.finish()?;
    let mut changed = device.clone();
    facts.apply(&mut changed);
    changed.validate()?;
    let stored = state
        .repository()
        .update_device(&changed)
        .await?
        .ok_or_else(|| ApiError::not_found("device not found"))?;
    run_device_hook(&state, stored.id).await;
    Ok(HttpResponse::Ok().json(DeviceJson::from(stored)))
}

/// Deactivates a device (openwisp-controller's action): it is never upgraded, and read-only,
/// until activated again.
#[utoipa::path(
    post, path = "/api/v1/controller/device/{id}/deactivate/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceJson), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn deactivate(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_deactivated(&state, &caller, DeviceId(*id), true).await
}

/// Activates a deactivated device (openwisp-controller's action).
#[utoipa::path(
    post, path = "/api/v1/controller/device/{id}/activate/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceJson), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn activate(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_deactivated(&state, &caller, DeviceId(*id), false).await
}

/// The device `id` if the caller sees it; upstream's 404 "device not found" otherwise.
pub async fn visible_device(
    state: &ApiState,
    scope: &Scope,
    id: DeviceId,
) -> Result<Device, ApiError> {
    state
        .repository()
        .device(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device not found"))
}

/// A device the caller may change: visible (else 404), of an organization the caller manages
/// (else 403), not deactivated (else 403 with `deactivated`).
pub async fn writable_device(
    state: &ApiState,
    caller: &Caller,
    id: DeviceId,
    deactivated: &str,
) -> Result<Device, ApiError> {
    let device = visible_device(state, &caller.read_scope(), id).await?;
    caller.require_change(Some(device.organization_id))?;
    if device.is_deactivated {
        return Err(ApiError::permission_denied(deactivated));
    }
    Ok(device)
}

/// Runs the engine's device hook (upstream's automatic device firmware detection). The device
/// is saved already: a failure is logged, not answered.
pub(crate) async fn run_device_hook(state: &ApiState, device_id: DeviceId) {
    if let Err(error) = state.engine().device_registered(device_id).await {
        tracing::warn!(device = %device_id, %error, "the device hook failed; the device is saved");
    }
}

/// What a device reports about itself: the fields registration may change.
struct Facts {
    model: Option<String>,
    os: Option<String>,
    board_name: Option<String>,
    management_ip: Option<Option<String>>,
}

impl Facts {
    fn read(input: &mut Input) -> Facts {
        Facts {
            model: input.optional_string("model", MODEL_MAX_LENGTH),
            os: input.optional_string("os", OS_MAX_LENGTH),
            board_name: input.optional_string("board_name", BOARD_NAME_MAX_LENGTH),
            management_ip: input.nullable_string("management_ip", MANAGEMENT_IP_MAX_LENGTH),
        }
    }

    fn apply(self, device: &mut Device) {
        if let Some(model) = self.model {
            device.model = model.trim().to_owned();
        }
        if let Some(os) = self.os {
            device.os = os.trim().to_owned();
        }
        if let Some(board_name) = self.board_name {
            device.board_name = board_name.trim().to_owned();
        }
        if let Some(management_ip) = self.management_ip {
            device.management_ip = management_ip.map(|address| address.trim().to_owned());
        }
    }
}

/// Validates and stores `changed`, the new state of `device`, running the device hook when
/// what identifies its firmware changed.
async fn save_device(
    state: &ApiState,
    device: &Device,
    changed: Device,
) -> Result<HttpResponse, ApiError> {
    changed.validate()?;
    let stored = state
        .repository()
        .update_device(&changed)
        .await?
        .ok_or_else(|| ApiError::not_found("device not found"))?;
    if stored.model != device.model
        || stored.os != device.os
        || stored.board_name != device.board_name
    {
        run_device_hook(state, stored.id).await;
    }
    Ok(HttpResponse::Ok().json(DeviceJson::from(stored)))
}

async fn set_deactivated(
    state: &ApiState,
    caller: &Caller,
    id: DeviceId,
    is_deactivated: bool,
) -> Result<HttpResponse, ApiError> {
    let mut device = visible_device(state, &caller.read_scope(), id).await?;
    caller.require_change(Some(device.organization_id))?;
    if device.is_deactivated != is_deactivated {
        device.is_deactivated = is_deactivated;
        device = state
            .repository()
            .update_device(&device)
            .await?
            .ok_or_else(|| ApiError::not_found("device not found"))?;
    }
    Ok(HttpResponse::Ok().json(DeviceJson::from(device)))
}

/// The `mac_address` of a body, parsed in any form the model accepts.
fn read_mac_address(input: &mut Input) -> Option<MacAddress> {
    let text = input.required_string("mac_address", MAC_ADDRESS_MAX_LENGTH)?;
    match MacAddress::from_str(&text) {
        Ok(mac_address) => Some(mac_address),
        Err(errors) => {
            for message in errors.messages("mac_address") {
                input.error("mac_address", message.clone());
            }
            None
        }
    }
}

/// The `group` of a body: `None` when absent, `Some(None)` for null; a group the caller cannot
/// change is not among the choices ("Invalid pk"). The repository checks that the group and
/// the device share their organization.
async fn read_group(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
) -> Result<Option<Option<DeviceGroupId>>, ApiError> {
    let Some(group_id) = input.nullable_id::<DeviceGroupId>("group") else {
        return Ok(None);
    };
    let Some(group_id) = group_id else {
        return Ok(Some(None));
    };
    if state
        .repository()
        .group(&caller.write_scope(), group_id)
        .await?
        .is_none()
    {
        input.error(
            "group",
            format!("Invalid pk \"{group_id}\" - object does not exist."),
        );
        return Ok(None);
    }
    Ok(Some(Some(group_id)))
}

/// Attaches the credentials of the device's organization and the shared credentials that have
/// `auto_add` (openwisp-controller does it when a device gets its configuration). The device is
/// stored already: a failure is logged, not answered.
async fn attach_auto_add_credentials(state: &ApiState, device: &Device) {
    let scope = Scope::Organizations {
        ids: vec![device.organization_id],
        include_shared: true,
    };
    let credentials = match state
        .repository()
        .list_credentials(&scope, PageRequest::all())
        .await
    {
        Ok(page) => page.items,
        Err(error) => {
            tracing::warn!(device = %device.id, %error, "could not read the auto-add credentials");
            return;
        }
    };
    for credentials in credentials
        .iter()
        .filter(|credentials| credentials.auto_add)
    {
        let connection =
            NewDeviceConnection::new(device.id, credentials.id).into_connection(credentials);
        if let Err(error) = state.repository().insert_connection(&connection).await {
            tracing::warn!(device = %device.id, credentials = %credentials.id, %error, "could not attach auto-add credentials");
        }
    }
}

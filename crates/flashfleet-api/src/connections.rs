//! Device connections (openwisp-controller's `/api/v1/controller/device/<id>/connection/` and
//! `.../<connection id>/`): which credentials reach a device, and which upgrader
//! (`update_strategy`, a connection type) handles it through them.
//!
//! Whoever sees the device sees its connections; whoever may change the device changes them
//! (not while it is deactivated). Credentials of another organization than the device's are
//! refused; creating a connection runs the device hook, as upstream's signal on
//! `DeviceConnection` creation does.

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::{
    ConnectionType, Credentials, CredentialsId, Details, Device, DeviceConnection,
    DeviceConnectionId, DeviceId, NewDeviceConnection,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::credentials::read_connection_type;
use crate::devices::{DEACTIVATED_DEVICE_CHANGE, run_device_hook, visible_device, writable_device};
use crate::error::ApiError;
use crate::input::Input;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The most characters of an update strategy as written (openwisp-controller's dotted paths
/// fit).
const UPDATE_STRATEGY_MAX_LENGTH: usize = 128;

/// A device connection as the API shows it (openwisp-controller's `DeviceConnectionSerializer`,
/// plus the recorded host key and `details`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionJson {
    /// Its id.
    pub id: Uuid,
    /// The credentials it logs in with.
    pub credentials: Uuid,
    /// The connection type, which picks the upgrader (`openwrt-ssh`).
    pub update_strategy: String,
    /// A disabled connection is never used.
    pub enabled: bool,
    /// Whether the last attempt worked; `null` before the first.
    pub is_working: Option<bool>,
    /// Why the last attempt failed.
    pub failure_reason: String,
    /// When it was last tried.
    pub last_attempt: Option<Timestamp>,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// The SSH host key the device presented at first contact (read only).
    pub host_key: Option<String>,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<DeviceConnection> for ConnectionJson {
    fn from(connection: DeviceConnection) -> Self {
        ConnectionJson {
            id: connection.id.0,
            credentials: connection.credentials_id.0,
            update_strategy: connection.connection_type.as_str().to_owned(),
            enabled: connection.enabled,
            is_working: connection.is_working,
            failure_reason: connection.failure_reason,
            last_attempt: connection.last_attempt.map(Timestamp::from),
            created: connection.created.into(),
            modified: connection.modified.into(),
            host_key: connection.host_key,
            details: connection.details,
        }
    }
}

/// The body of a connection create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct ConnectionInput {
    /// Credentials of the device's organization, or shared ones.
    credentials: Uuid,
    /// A connection type the engine has an upgrader for (`openwrt-ssh`, or
    /// openwisp-controller's `openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt`);
    /// blank or absent: the credentials' connector.
    update_strategy: Option<String>,
    /// Whether it may be used (default true).
    enabled: Option<bool>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Lists the connections of a device, working ones first, then oldest first.
#[utoipa::path(
    get, path = "/api/v1/controller/device/{id}/connection/", tag = "controller",
    params(("id" = Uuid, Path), ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<ConnectionJson>), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let device = visible_device(&state, &caller.read_scope(), DeviceId(*id)).await?;
    let connections = state.repository().connections(device.id).await?;
    let page = pagination
        .page_of(connections)
        .map(|(connection, _)| ConnectionJson::from(connection));
    pagination.respond(&request, &state, page)
}

/// Attaches credentials to a device, then runs the device hook.
#[utoipa::path(
    post, path = "/api/v1/controller/device/{id}/connection/", tag = "controller",
    params(("id" = Uuid, Path)),
    request_body(content = ConnectionInput, content_type = "application/json"),
    responses((status = 201, body = ConnectionJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let device = writable_device(&state, &caller, DeviceId(*id), DEACTIVATED_DEVICE_CHANGE).await?;
    let credentials = read_credentials(&state, &caller, &mut input).await?;
    let connection_type = read_update_strategy(&state, &mut input).flatten();
    let enabled = input.boolean("enabled").unwrap_or(true);
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let Some(credentials) = credentials else {
        return Err(ApiError::internal(
            "reading a device connection",
            "checked credentials are missing",
        ));
    };
    let mut connection = NewDeviceConnection::new(device.id, credentials.id);
    connection.connection_type = connection_type;
    connection.enabled = enabled;
    connection.details = details;
    let stored = state
        .repository()
        .insert_connection(&connection.into_connection(&credentials))
        .await?;
    run_device_hook(&state, device.id).await;
    Ok(HttpResponse::Created().json(ConnectionJson::from(stored)))
}

/// One connection of a device.
#[utoipa::path(
    get, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "controller",
    params(("id" = Uuid, Path), ("connection_id" = Uuid, Path)),
    responses((status = 200, body = ConnectionJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (device_id, connection_id) = path.into_inner();
    let device = visible_device(&state, &caller.read_scope(), DeviceId(device_id)).await?;
    let (connection, _) = device_connection(&state, &device, connection_id).await?;
    Ok(HttpResponse::Ok().json(ConnectionJson::from(connection)))
}

/// Changes a connection (`PUT` whole, `PATCH` partial).
#[utoipa::path(
    put, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "controller",
    params(("id" = Uuid, Path), ("connection_id" = Uuid, Path)),
    request_body(content = ConnectionInput, content_type = "application/json"),
    responses((status = 200, body = ConnectionJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let (device_id, connection_id) = path.into_inner();
    let device = writable_device(
        &state,
        &caller,
        DeviceId(device_id),
        DEACTIVATED_DEVICE_CHANGE,
    )
    .await?;
    let (mut connection, mut credentials) =
        device_connection(&state, &device, connection_id).await?;
    if (input.has("credentials") || !input.is_partial())
        && let Some(new_credentials) = read_credentials(&state, &caller, &mut input).await?
    {
        connection.credentials_id = new_credentials.id;
        credentials = new_credentials;
    }
    if let Some(connection_type) = read_update_strategy(&state, &mut input) {
        connection.connection_type =
            connection_type.unwrap_or_else(|| credentials.connection_type.clone());
    }
    if let Some(enabled) = input.boolean("enabled") {
        connection.enabled = enabled;
    }
    if let Some(details) = input.object("details") {
        connection.details = details;
    }
    input.finish()?;
    let stored = state
        .repository()
        .update_connection(&connection)
        .await?
        .ok_or_else(|| ApiError::no_match("DeviceConnection"))?;
    Ok(HttpResponse::Ok().json(ConnectionJson::from(stored)))
}

/// Detaches credentials from a device.
#[utoipa::path(
    delete, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "controller",
    params(("id" = Uuid, Path), ("connection_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (device_id, connection_id) = path.into_inner();
    let device = writable_device(
        &state,
        &caller,
        DeviceId(device_id),
        DEACTIVATED_DEVICE_CHANGE,
    )
    .await?;
    let (connection, _) = device_connection(&state, &device, connection_id).await?;
    if !state.repository().delete_connection(connection.id).await? {
        return Err(ApiError::no_match("DeviceConnection"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The connection `id` of `device` with its credentials, a 404 when the device has none such.
async fn device_connection(
    state: &ApiState,
    device: &Device,
    id: Uuid,
) -> Result<(DeviceConnection, Credentials), ApiError> {
    let id = DeviceConnectionId(id);
    state
        .repository()
        .connections(device.id)
        .await?
        .into_iter()
        .find(|(connection, _)| connection.id == id)
        .ok_or_else(|| ApiError::no_match("DeviceConnection"))
}

/// The `credentials` of a body, if the caller sees them (its organizations' and shared ones);
/// records DRF's "This field is required." or "Invalid pk" otherwise. Whether they fit the
/// device's organization is the repository's check.
async fn read_credentials(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
) -> Result<Option<Credentials>, ApiError> {
    let Some(credentials_id) = input.required_id::<CredentialsId>("credentials") else {
        return Ok(None);
    };
    let credentials = state
        .repository()
        .credentials(&caller.read_scope(), credentials_id)
        .await?;
    if credentials.is_none() {
        input.error(
            "credentials",
            format!("Invalid pk \"{credentials_id}\" - object does not exist."),
        );
    }
    Ok(credentials)
}

/// The `update_strategy` of a body: `None` when absent, `Some(None)` when blank (the
/// credentials' connector then).
fn read_update_strategy(state: &ApiState, input: &mut Input) -> Option<Option<ConnectionType>> {
    let text = input
        .nullable_string("update_strategy", UPDATE_STRATEGY_MAX_LENGTH)?
        .filter(|text| !text.trim().is_empty());
    match text {
        None => Some(None),
        Some(text) => read_connection_type(state, input, "update_strategy", &text).map(Some),
    }
}

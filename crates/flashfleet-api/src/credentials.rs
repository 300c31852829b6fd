//! Credentials (openwisp-controller's `/api/v1/controller/credential/` and `.../<id>/`): how
//! to log in to devices.
//!
//! `connector` is a connection type of the engine's upgraders (`openwrt-ssh`);
//! openwisp-controller's dotted paths are accepted and mapped. `params` is
//! `{username, password | key, port}` on input; the secret is stored encrypted and **never**
//! returned or logged: responses show `{username, port, auth: "password" | "key"}`. An update
//! that gives neither `password` nor `key` keeps the stored secret, since clients cannot read it
//! back.
//!
//! Everyone sees the credentials of their organizations and the shared ones; managers change
//! their organizations' credentials; only superusers create or change shared credentials.

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::credentials::SecretText;
use flashfleet_models::{
    ConnectionType, Credentials, CredentialsId, CredentialsSecret, Details, NewCredentials,
    OrganizationId, Scope, ValidationErrors,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Input, REQUIRED};
use crate::organizations::owning_organization;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// openwisp-controller's SSH connector, which its credentials name: flashfleet's `openwrt-ssh`.
const OPENWISP_SSH_CONNECTOR: &str = "openwisp_controller.connection.connectors.ssh.Ssh";
/// The most characters of a name (openwisp-controller).
const NAME_MAX_LENGTH: usize = 64;
/// The most characters of a connector as written (openwisp-controller's dotted paths fit).
const CONNECTOR_MAX_LENGTH: usize = 128;
/// The most characters of a username.
const USERNAME_MAX_LENGTH: usize = 64;
/// The most characters of a password.
const PASSWORD_MAX_LENGTH: usize = 1024;
/// The most characters of a private key (an RSA 8192 key in PEM is about 6.5 KiB).
const KEY_MAX_LENGTH: usize = 16 * 1024;
/// The port when `params` gives none.
const DEFAULT_PORT: u16 = 22;

/// The parameters of credentials as the API shows them: the secret's kind, never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParamsJson {
    /// The SSH user.
    pub username: String,
    /// The SSH port.
    pub port: u16,
    /// How the user authenticates: `password` or `key`.
    pub auth: &'static str,
}

/// Credentials as the API shows them (openwisp-controller's `CredentialSerializer`, plus
/// `details`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsJson {
    /// Their id.
    pub id: Uuid,
    /// The connection type of the connections made with them (`openwrt-ssh`).
    pub connector: String,
    /// Their name (unique in the organization).
    pub name: String,
    /// Their organization; `null` for shared credentials.
    pub organization: Option<Uuid>,
    /// Whether they are attached to new devices of the organization automatically.
    pub auto_add: bool,
    /// User, port and the kind of secret.
    pub params: ParamsJson,
    /// When they were created.
    pub created: Timestamp,
    /// When they were last changed.
    pub modified: Timestamp,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<Credentials> for CredentialsJson {
    fn from(credentials: Credentials) -> Self {
        let auth = match credentials.secret {
            CredentialsSecret::Password(_) => "password",
            CredentialsSecret::PrivateKey(_) => "key",
        };
        CredentialsJson {
            id: credentials.id.0,
            connector: credentials.connection_type.as_str().to_owned(),
            name: credentials.name,
            organization: credentials.organization_id.map(|id| id.0),
            auto_add: credentials.auto_add,
            params: ParamsJson {
                username: credentials.username,
                port: credentials.port,
                auth,
            },
            created: credentials.created.into(),
            modified: credentials.modified.into(),
            details: credentials.details,
        }
    }
}

/// The `params` of a credentials body.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct ParamsInput {
    /// The SSH user (required).
    username: String,
    /// A password: this or `key` (required on create; kept when both are absent on update).
    password: Option<String>,
    /// A private key in OpenSSH or PEM format: this or `password`.
    key: Option<String>,
    /// The SSH port (22 when absent).
    port: Option<u16>,
}

/// The body of a credentials create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct CredentialsInput {
    /// A connection type the engine has an upgrader for (`openwrt-ssh`), or
    /// openwisp-controller's `openwisp_controller.connection.connectors.ssh.Ssh` or
    /// `openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt`.
    connector: String,
    /// Their name (required, at most 64 characters).
    name: String,
    /// Their organization: one the caller manages; `null` (shared) only for superusers. It
    /// cannot change later.
    organization: Option<Uuid>,
    /// Whether to attach them to new devices automatically.
    auto_add: Option<bool>,
    /// User, secret and port.
    params: ParamsInput,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Lists the credentials of the caller's organizations and the shared ones, by name.
#[utoipa::path(
    get, path = "/api/v1/controller/credential/", tag = "controller",
    params(("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<CredentialsJson>), (status = 401, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let page = state
        .repository()
        .list_credentials(&caller.read_scope(), pagination.request())
        .await?
        .map(CredentialsJson::from);
    pagination.respond(&request, &state, page)
}

/// Creates credentials (the secret stored encrypted).
#[utoipa::path(
    post, path = "/api/v1/controller/credential/", tag = "controller",
    request_body(content = CredentialsInput, content_type = "application/json"),
    responses((status = 201, body = CredentialsJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let connection_type = read_connector(&state, &mut input);
    let name = input.required_string("name", NAME_MAX_LENGTH);
    let organization_id = owning_organization(
        &state,
        &caller,
        &mut input,
        "Only superusers can create or edit shared credentials",
    )
    .await?;
    let auto_add = input.boolean("auto_add").unwrap_or(false);
    let params = read_params(&mut input, None);
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let (Some(connection_type), Some(name), Some(params)) = (connection_type, name, params) else {
        return Err(ApiError::internal(
            "reading credentials",
            "checked fields are missing",
        ));
    };
    let mut credentials =
        NewCredentials::new(organization_id, name, params.username, params.secret);
    credentials.connection_type = connection_type;
    credentials.port = params.port;
    credentials.auto_add = auto_add;
    credentials.details = details;
    credentials.validate().map_err(params_errors)?;
    let stored = state
        .repository()
        .insert_credentials(&credentials.into_credentials())
        .await?;
    Ok(HttpResponse::Created().json(CredentialsJson::from(stored)))
}

/// One set of credentials.
#[utoipa::path(
    get, path = "/api/v1/controller/credential/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CredentialsJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let credentials = visible_credentials(&state, &caller.read_scope(), CredentialsId(*id)).await?;
    Ok(HttpResponse::Ok().json(CredentialsJson::from(credentials)))
}

/// Changes credentials (`PUT` whole, `PATCH` partial); without `password` and `key` the stored
/// secret stays.
#[utoipa::path(
    put, path = "/api/v1/controller/credential/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    request_body(content = CredentialsInput, content_type = "application/json"),
    responses((status = 200, body = CredentialsJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let mut credentials =
        visible_credentials(&state, &caller.read_scope(), CredentialsId(*id)).await?;
    caller.require_change(credentials.organization_id)?;
    if let Some(connection_type) = read_connector(&state, &mut input) {
        credentials.connection_type = connection_type;
    }
    if let Some(name) = input.required_string("name", NAME_MAX_LENGTH) {
        credentials.name = name;
    }
    if let Some(organization_id) = input.nullable_id::<OrganizationId>("organization")
        && organization_id != credentials.organization_id
    {
        input.error(
            "organization",
            "The organization of credentials cannot be changed.",
        );
    }
    if let Some(auto_add) = input.boolean("auto_add") {
        credentials.auto_add = auto_add;
    }
    if let Some(params) = read_params(&mut input, Some(&credentials)) {
        credentials.username = params.username;
        credentials.port = params.port;
        credentials.secret = params.secret;
    }
    if let Some(details) = input.object("details") {
        credentials.details = details;
    }
    input.finish()?;
    credentials.validate().map_err(params_errors)?;
    let stored = state
        .repository()
        .update_credentials(&credentials)
        .await?
        .ok_or_else(|| ApiError::no_match("Credentials"))?;
    Ok(HttpResponse::Ok().json(CredentialsJson::from(stored)))
}

/// Deletes credentials and the device connections that use them.
#[utoipa::path(
    delete, path = "/api/v1/controller/credential/{id}/", tag = "controller",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let credentials = visible_credentials(&state, &caller.read_scope(), CredentialsId(*id)).await?;
    caller.require_change(credentials.organization_id)?;
    if !state
        .repository()
        .delete_credentials(credentials.id)
        .await?
    {
        return Err(ApiError::no_match("Credentials"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The credentials `id` if the caller sees them, a 404 otherwise.
pub(crate) async fn visible_credentials(
    state: &ApiState,
    scope: &Scope,
    id: CredentialsId,
) -> Result<Credentials, ApiError> {
    state
        .repository()
        .credentials(scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("Credentials"))
}

/// The connection type named by the text field `field` (`None` when absent, blank or not a
/// connection type the engine has an upgrader for, which records DRF's "not a valid choice").
/// openwisp-controller's dotted paths are mapped to flashfleet's names.
pub(crate) fn read_connection_type(
    state: &ApiState,
    input: &mut Input,
    field: &str,
    text: &str,
) -> Option<ConnectionType> {
    let text = text.trim();
    let connection_type = if text == OPENWISP_SSH_CONNECTOR {
        ConnectionType::openwrt_ssh()
    } else {
        ConnectionType::new(text)
    };
    let known = state
        .engine()
        .upgraders()
        .connection_types()
        .any(|registered| *registered == connection_type);
    if known {
        Some(connection_type)
    } else {
        input.error(field, format!("\"{text}\" is not a valid choice."));
        None
    }
}

fn read_connector(state: &ApiState, input: &mut Input) -> Option<ConnectionType> {
    let text = input.required_string("connector", CONNECTOR_MAX_LENGTH)?;
    read_connection_type(state, input, "connector", &text)
}

/// The parameters of a body, read.
struct Params {
    username: String,
    port: u16,
    secret: CredentialsSecret,
}

/// The `params` object of a body, required unless the update is partial. Its errors are
/// reported on `params` as `<key>: <message>`, and never repeat a secret. Without `password`
/// and `key`, the secret of `stored` is kept; on a partial update, so are its user and port.
fn read_params(input: &mut Input, stored: Option<&Credentials>) -> Option<Params> {
    let Some(fields) = input.object("params") else {
        if !input.is_partial() && !input.has("params") {
            input.error("params", REQUIRED);
        }
        return None;
    };
    let mut params = Input::new(fields, input.is_partial() && stored.is_some());
    let username = params.required_string("username", USERNAME_MAX_LENGTH);
    let port = params.integer("port", u64::from(u16::MAX));
    let password = params
        .optional_string("password", PASSWORD_MAX_LENGTH)
        .filter(|password| !password.is_empty());
    let key = params
        .optional_string("key", KEY_MAX_LENGTH)
        .filter(|key| !key.trim().is_empty());
    let secret = match (password, key, stored) {
        (Some(_), Some(_), _) => {
            params.error(
                ValidationErrors::NON_FIELD,
                "Give either a password or a key, not both.",
            );
            None
        }
        (Some(password), None, _) => Some(CredentialsSecret::Password(SecretText::new(password))),
        (None, Some(key), _) => Some(CredentialsSecret::PrivateKey(SecretText::new(key))),
        (None, None, Some(stored)) => Some(stored.secret.clone()),
        (None, None, None) => {
            params.error(ValidationErrors::NON_FIELD, "Give a password or a key.");
            None
        }
    };
    let errors = params.take_errors();
    for (key, messages) in errors.iter() {
        for message in messages {
            input.error("params", params_message(key, message));
        }
    }
    let username = username.or_else(|| {
        stored
            .filter(|_| input.is_partial())
            .map(|stored| stored.username.clone())
    })?;
    let port = match port {
        Some(port) => u16::try_from(port).ok()?,
        None => stored
            .filter(|_| input.is_partial())
            .map_or(DEFAULT_PORT, |stored| stored.port),
    };
    Some(Params {
        username,
        port,
        secret: secret?,
    })
}

/// The model's validation errors, with those of the parameters moved under `params`.
fn params_errors(errors: ValidationErrors) -> ApiError {
    let mut moved = ValidationErrors::new();
    for (field, messages) in errors.iter() {
        for message in messages {
            match field {
                "username" | "port" | "password" | "key" => {
                    moved.add("params", params_message(field, message));
                }
                _ => moved.add(field, message.clone()),
            }
        }
    }
    ApiError::Invalid(moved)
}

fn params_message(key: &str, message: &str) -> String {
    if key == ValidationErrors::NON_FIELD {
        message.to_owned()
    } else {
        format!("{key}: {message}")
    }
}

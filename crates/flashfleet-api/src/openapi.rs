//! The OpenAPI 3.1 document (generated from the handlers' annotations by utoipa) at
//! `/api/v1/openapi.json`, and the Swagger UI at `/api/v1/docs/` with its assets compiled in,
//! so the docs work on a machine without internet.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{
    batches, builds, categories, connections, credentials, device_firmware, devices, images, live,
    operations, organizations, pagination, upgrades, users,
};

/// An error body (`application/problem+json`, RFC 9457), see the crate's `error` module.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "documents the error body in the OpenAPI document")]
pub struct Problem {
    /// `urn:flashfleet:problem:<code>` (on a 400, upstream's list of messages of a field named
    /// `type` takes its place).
    #[schema(rename = "type", value_type = Value)]
    problem_type: String,
    /// The HTTP status's name.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// What went wrong, for programs: `not_authenticated`, `authentication_failed`,
    /// `permission_denied`, `not_found`, `method_not_allowed`, `invalid`, `bad_request`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`, `throttled`, `unavailable`,
    /// `internal_error`.
    code: String,
    /// The id of the request in the server's logs.
    request_id: Option<String>,
    /// On a 400: each field's messages (also at the top level, as upstream answers).
    #[schema(value_type = Option<Object>)]
    errors: Option<serde_json::Value>,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashfleet",
        description = "Firmware upgrades for fleets of OpenWrt routers over SSH. The paths, fields and \
            shapes of openwisp-firmware-upgrader's REST API, plus openwisp-controller's devices and \
            credentials and openwisp-users' tokens, organizations and users.",
    ),
    paths(
        categories::list, categories::create, categories::get, categories::update, categories::delete,
        builds::list, builds::create, builds::get, builds::update, builds::delete,
        upgrades::dry_run, upgrades::start,
        images::list, images::create, images::get, images::delete, images::download,
        batches::list, batches::get, batches::cancel,
        operations::list, operations::get, operations::cancel, operations::list_for_device,
        device_firmware::get, device_firmware::update, device_firmware::delete,
        live::operation_events, live::batch_events, live::device_events,
        devices::list, devices::create, devices::get, devices::update, devices::delete,
        devices::register, devices::deactivate, devices::activate,
        connections::list, connections::create, connections::get, connections::update, connections::delete,
        credentials::list, credentials::create, credentials::get, credentials::update, credentials::delete,
        users::obtain_token,
        organizations::list, organizations::create, organizations::get, organizations::update, organizations::delete,
        users::list, users::create, users::get, users::update, users::delete,
    ),
    components(schemas(Problem, pagination::Paginated<categories::CategoryJson>)),
    modifiers(&BearerAuth),
    tags(
        (name = "firmware-upgrader", description = "openwisp-firmware-upgrader's API"),
        (name = "live", description = "Live progress as Server-Sent Events"),
        (name = "controller", description = "openwisp-controller's devices, device connections and credentials"),
        (name = "users", description = "openwisp-users' tokens, organizations and users"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

/// The Swagger UI at `docs/` of the scope it is mounted in, reading `/api/v1/openapi.json`.
pub fn docs() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").config(Config::from("/api/v1/openapi.json"))
}

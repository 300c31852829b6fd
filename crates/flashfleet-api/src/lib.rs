//! flashfleet's REST API on actix-web.
//!
//! - **Upstream's API, unchanged for its clients**: the paths, methods, JSON fields and shapes
//!   of openwisp-firmware-upgrader under `/api/v1/firmware-upgrader/` (categories, builds,
//!   images with multipart upload and download, the dry run and mass upgrade of a build, mass
//!   upgrades, upgrade operations with cancel, a device's firmware), upstream's pagination
//!   (`page`, `page_size`; `count`, `next`, `previous`, `results` with absolute URLs), filters
//!   and ordering; openwisp-controller's devices, credentials and device connections under
//!   `/api/v1/controller/`; openwisp-users' token, organization and user endpoints under
//!   `/api/v1/users/`.
//! - **Authentication and tenancy**: bearer tokens, or an embedding application's own
//!   [`Authenticator`]; every query is scoped to the caller's organizations, and another
//!   organization's object is a 404, never a 403 that would confirm it exists. A per-user rate
//!   limit ([`ApiConfig::throttle`]).
//! - **Errors** are `application/problem+json` with a stable `code` and the `request_id` that
//!   the logs carry, plus upstream's keys ([`ApiError`]).
//! - **OpenAPI 3.1** at `/api/v1/openapi.json`, Swagger UI at `/api/v1/docs/` (assets built in).
//! - **Live progress** as Server-Sent Events, from the engine's event bus ([`live`]).
//!
//! Mount it with [`configure`] into any actix-web app that carries a `web::Data<ApiState>`.
//!
//! Invariants:
//! - handlers change nothing themselves that the engine owns: upgrades are queued, cancelled
//!   and planned through `flashfleet_engine::Engine`, so the API and any other front end (the
//!   dashboard) follow the same rules;
//! - only this crate (of the libraries) names actix-web;
//! - secrets (passwords, SSH keys, token secrets) are never part of a response or a log line,
//!   except a token's secret in the one response that creates it.

mod auth;
pub mod batches;
pub mod builds;
pub mod categories;
mod config;
pub mod connections;
pub mod credentials;
pub mod device_firmware;
pub mod devices;
mod error;
pub mod images;
pub mod input;
pub mod live;
pub mod openapi;
pub mod operations;
pub mod organizations;
pub mod pagination;
mod request_context;
mod routes;
mod state;
mod throttle;
pub mod timestamp;
pub mod upgrades;
pub mod users;

pub use crate::auth::{AuthError, AuthRequest, Authenticator, Caller, TokenAuthenticator};
pub use crate::config::{ApiConfig, Throttle};
pub use crate::error::{ApiError, PROBLEM_JSON};
pub use crate::openapi::{ApiDoc, document_json as openapi_json};
pub use crate::request_context::{
    REQUEST_ID_HEADER, RequestId, current_request_id, request_context,
};
pub use crate::routes::{FIRMWARE_UPGRADER_PREFIX, configure};
pub use crate::state::ApiState;
pub use crate::timestamp::Timestamp;

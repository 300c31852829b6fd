//! flashfleet's web dashboard: the pages operators use to pick a build, upload its images, see
//! which devices a mass upgrade would touch, confirm it and watch it live, and to look after
//! single devices (their firmware, upgrade history and logs, a single upgrade, a cancel).
//!
//! Server-rendered pages (askama templates, checked at compile time) with a little JavaScript
//! (local times, live progress over Server-Sent Events); the stylesheet and the script are part
//! of the binary, so nothing is built or fetched at run time. Mount it with [`configure`] next
//! to the API.
//!
//! Invariants:
//! - the same rules as the API: every read is scoped to the signed-in user's organizations
//!   (another organization's object is a 404), every action goes through the API crate's
//!   action functions and so through the same engine calls, roles and `-F` rule;
//! - sessions are cookies encrypted and authenticated with a key derived from the server's
//!   secret key (any server sharing that key accepts them), `HttpOnly`, `SameSite=Strict`,
//!   `Secure` when configured, expiring; every `POST` carries the session's CSRF token;
//! - no password, token or device secret is ever part of a page or a log line;
//! - this crate does not name diesel: persistence is reached through the repository traits.

mod batches;
mod builds;
mod categories;
mod config;
mod devices;
mod error;
mod layout;
mod mass_upgrades;
mod routes;
mod session;
mod sign_in;
mod static_files;

use actix_web::cookie::Key;
use flashfleet_api::ApiState;

pub use crate::config::DashboardConfig;
pub use crate::error::DashboardError;
pub use crate::routes::configure;
pub use crate::session::SESSION_TOKEN_NAME;

/// What the dashboard's handlers reach through `web::Data<Dashboard>`: the API's state (its
/// repository, engine, storage and settings) and the key of the session cookies. Cheap to
/// clone.
#[derive(Clone)]
pub struct Dashboard {
    api: ApiState,
    session_key: Key,
    config: DashboardConfig,
}

impl Dashboard {
    /// The dashboard over the API's `api` state, with session cookies encrypted by a key
    /// derived from `session_secret` (32 secret bytes, the same on every server that should
    /// accept the same sessions).
    pub fn new(api: ApiState, session_secret: &[u8; 32], config: DashboardConfig) -> Dashboard {
        Dashboard {
            api,
            session_key: Key::derive_from(session_secret),
            config,
        }
    }

    /// The API's state.
    pub fn api(&self) -> &ApiState {
        &self.api
    }

    /// The settings.
    pub fn config(&self) -> &DashboardConfig {
        &self.config
    }

    pub(crate) fn session_key(&self) -> &Key {
        &self.session_key
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Dashboard")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

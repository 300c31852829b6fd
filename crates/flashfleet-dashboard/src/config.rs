//! The dashboard's settings.

use std::time::Duration;

/// How the dashboard keeps its sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// How long a sign-in lasts.
    pub session_lifetime: Duration,
    /// Whether session cookies are `Secure` (sent over HTTPS only): set it when the server is
    /// reached through HTTPS (a TLS-terminating proxy).
    pub secure_cookie: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            session_lifetime: Duration::from_secs(12 * 60 * 60),
            secure_cookie: false,
        }
    }
}

//! Sessions: an encrypted, authenticated cookie (`flashfleet_session`) holding the session's
//! token, until when it is valid, and the session's CSRF token; and the [`Viewer`] extractor
//! of signed-in pages.
//!
//! The cookie is encrypted with AES-256-GCM under a key derived from the server's secret key
//! (actix-web's private cookie jar), so a client can neither read nor forge it, and every
//! server sharing the secret key accepts it. A signed-in session is also an API token of the
//! user (named [`SESSION_TOKEN_NAME`]) in the database, whose secret only the encrypted cookie
//! carries: each request authenticates it as the API authenticates tokens (a deactivated user
//! or a removed membership takes effect at once), and signing out deletes it, so a copy of the
//! cookie stops working everywhere, on every server sharing the database.

use actix_web::cookie::{Cookie, CookieJar, SameSite, time};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::Utc;
use flashfleet_api::Caller;
use flashfleet_models::{ApiToken, TokenSecret, UserId};
use serde::{Deserialize, Serialize};

use crate::Dashboard;
use crate::error::DashboardError;

/// The name of the session cookie.
pub(crate) const COOKIE_NAME: &str = "flashfleet_session";

/// The name of the API token behind each signed-in dashboard session.
pub const SESSION_TOKEN_NAME: &str = "dashboard session";

/// What the session cookie holds.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The secret of the session's token; `None` before signing in (the sign-in form's CSRF
    /// token only).
    token: Option<String>,
    /// The CSRF token every form of this session carries.
    pub(crate) csrf: String,
    /// Until when the session is valid (Unix seconds).
    expires: i64,
}

impl Session {
    /// A new anonymous session (the sign-in form's), with a fresh CSRF token.
    pub(crate) fn anonymous(dashboard: &Dashboard) -> Result<Session, DashboardError> {
        Ok(Session {
            token: None,
            csrf: random_token()?,
            expires: Utc::now()
                .timestamp()
                .saturating_add(lifetime_secs(dashboard)),
        })
    }

    /// A new session of `user`, with a fresh CSRF token and a new session token stored in the
    /// database. The user's session tokens older than the session lifetime (sessions never
    /// signed out) are deleted on the way.
    pub(crate) async fn sign_in(
        dashboard: &Dashboard,
        user: UserId,
    ) -> Result<Session, DashboardError> {
        let repository = dashboard.api().repository();
        // No session has expired when the lifetime reaches back before any representable time.
        let expired_before = chrono::Duration::try_seconds(lifetime_secs(dashboard))
            .and_then(|lifetime| Utc::now().checked_sub_signed(lifetime));
        let tokens = repository
            .tokens(user)
            .await
            .map_err(|error| DashboardError::internal("reading the user's sessions", error))?;
        for token in tokens.iter().filter(|token| {
            token.name == SESSION_TOKEN_NAME
                && expired_before.is_some_and(|before| token.created < before)
        }) {
            repository
                .delete_token(token.id)
                .await
                .map_err(|error| DashboardError::internal("deleting an expired session", error))?;
        }
        let token = flashfleet_models::NewApiToken::generate(user, SESSION_TOKEN_NAME)
            .map_err(|error| DashboardError::internal("making a session token", error))?;
        repository
            .insert_token(&token.token)
            .await
            .map_err(|error| DashboardError::internal("storing a session", error))?;
        let mut session = Session::anonymous(dashboard)?;
        session.token = Some(token.secret.expose().to_owned());
        Ok(session)
    }

    /// The valid session of `request`, if it has one.
    pub(crate) fn of_request(dashboard: &Dashboard, request: &HttpRequest) -> Option<Session> {
        let cookie = request.cookie(COOKIE_NAME)?;
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        let decrypted = jar.private(dashboard.session_key()).get(COOKIE_NAME)?;
        let session: Session = serde_json::from_str(decrypted.value()).ok()?;
        (session.expires > Utc::now().timestamp()).then_some(session)
    }

    /// The secret of the session's token, once signed in.
    fn token(&self) -> Option<TokenSecret> {
        self.token.clone().map(TokenSecret::new)
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), DashboardError> {
        let expected = self.csrf.as_bytes();
        let given = token.as_bytes();
        let difference = expected.iter().zip(given).fold(
            u8::from(expected.len() != given.len()),
            |difference, (a, b)| difference | (a ^ b),
        );
        if difference == 0 && !expected.is_empty() {
            Ok(())
        } else {
            Err(DashboardError::Csrf)
        }
    }

    /// Sets this session's cookie on `response`.
    pub(crate) fn store(
        &self,
        dashboard: &Dashboard,
        response: &mut HttpResponse,
    ) -> Result<(), DashboardError> {
        let value = serde_json::to_string(self)
            .map_err(|error| DashboardError::internal("writing a session", error))?;
        let mut jar = CookieJar::new();
        jar.private_mut(dashboard.session_key()).add(session_cookie(
            dashboard,
            value,
            Some(self.expires),
        ));
        for cookie in jar.delta() {
            response
                .add_cookie(cookie)
                .map_err(|error| DashboardError::internal("setting a cookie", error))?;
        }
        Ok(())
    }

    /// Removes the session cookie (signing out).
    pub(crate) fn clear(
        dashboard: &Dashboard,
        response: &mut HttpResponse,
    ) -> Result<(), DashboardError> {
        let mut cookie = session_cookie(dashboard, String::new(), None);
        cookie.make_removal();
        response
            .add_cookie(&cookie)
            .map_err(|error| DashboardError::internal("removing a cookie", error))
    }
}

fn session_cookie(dashboard: &Dashboard, value: String, expires: Option<i64>) -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE_NAME, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(dashboard.config().secure_cookie)
        .finish();
    if let Some(expires) =
        expires.and_then(|expires| time::OffsetDateTime::from_unix_timestamp(expires).ok())
    {
        cookie.set_expires(expires);
    }
    cookie
}

/// The session lifetime in seconds.
fn lifetime_secs(dashboard: &Dashboard) -> i64 {
    i64::try_from(dashboard.config().session_lifetime.as_secs()).unwrap_or(i64::MAX)
}

impl std::fmt::Debug for Session {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token's secret nor the CSRF token.
        formatter
            .debug_struct("Session")
            .field("signed_in", &self.token.is_some())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes, hexadecimal.
fn random_token() -> Result<String, DashboardError> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| DashboardError::internal("making a CSRF token", error.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The signed-in user of a page: extracting it requires a valid session (else the browser is
/// sent to the sign-in page) of an active user.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    /// The user as the API sees callers (roles, scopes, `-F`).
    pub(crate) caller: Caller,
    /// The session.
    pub(crate) session: Session,
    /// The session's token in the database.
    pub(crate) token: ApiToken,
}

impl Viewer {
    /// `Ok` when `token` is the session's CSRF token.
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), DashboardError> {
        self.session.check_csrf(token)
    }

    /// Ends the session: its token is deleted, so no copy of the cookie works any more.
    pub(crate) async fn sign_out(&self, dashboard: &Dashboard) -> Result<(), DashboardError> {
        dashboard
            .api()
            .repository()
            .delete_token(self.token.id)
            .await
            .map_err(|error| DashboardError::internal("ending a session", error))?;
        Ok(())
    }
}

impl FromRequest for Viewer {
    type Error = DashboardError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let dashboard = request.app_data::<web::Data<Dashboard>>().cloned();
        let request = request.clone();
        Box::pin(async move {
            let dashboard = dashboard.ok_or_else(|| {
                DashboardError::internal(
                    "mounting the dashboard",
                    "web::Data<Dashboard> is missing",
                )
            })?;
            let sign_in = || DashboardError::SignIn {
                next: request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
            };
            let session = Session::of_request(&dashboard, &request).ok_or_else(sign_in)?;
            let secret = session.token().ok_or_else(sign_in)?;
            let repository = dashboard.api().repository();
            let (token, actor) = repository
                .authenticate_token(&secret)
                .await
                .map_err(|error| DashboardError::internal("reading the signed-in user", error))?
                .filter(|(token, _)| token.name == SESSION_TOKEN_NAME)
                .ok_or_else(sign_in)?;
            Ok(Viewer {
                caller: Caller { actor },
                session,
                token,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(csrf: &str) -> Session {
        Session {
            token: None,
            csrf: csrf.to_owned(),
            expires: 0,
        }
    }

    #[test]
    fn only_the_sessions_own_token_passes() {
        assert!(session("abc").check_csrf("abc").is_ok());
        assert!(session("abc").check_csrf("abd").is_err());
        assert!(session("abc").check_csrf("ab").is_err());
        assert!(session("abc").check_csrf("abcd").is_err());
        assert!(session("").check_csrf("").is_err());
    }
}

/// A form that carries only the CSRF token (the cancel buttons).
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    /// The session's CSRF token.
    pub(crate) csrf: String,
}

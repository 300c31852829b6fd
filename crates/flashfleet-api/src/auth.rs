//! Who is calling: the [`Authenticator`] extension point, the built-in bearer tokens, and the
//! [`Caller`] extractor every protected handler takes.
//!
//! An embedding application brings its own users by implementing [`Authenticator`] (its
//! sessions, its API keys, its single sign-on) and handing it to
//! [`ApiState::with_authenticator`](crate::ApiState::with_authenticator): the API then asks it
//! for the [`Actor`] of each request and applies flashfleet's tenancy rules to that actor.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpRequest, web};
use async_trait::async_trait;
use flashfleet_models::repository::Repository;
use flashfleet_models::{Actor, OrganizationId, Role, Scope, TokenSecret};
use futures_util::future::LocalBoxFuture;

use crate::error::{ApiError, BoxError};
use crate::state::ApiState;

/// What an authenticator sees of a request.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The request's headers (`Authorization`, `Cookie`, ...).
    pub headers: &'a HeaderMap,
    /// The address of the peer, when known.
    pub peer_addr: Option<SocketAddr>,
}

impl<'a> AuthRequest<'a> {
    /// What an authenticator sees of `headers` from `peer_addr`.
    pub fn new(headers: &'a HeaderMap, peer_addr: Option<SocketAddr>) -> Self {
        Self { headers, peer_addr }
    }

    /// The credentials of an `Authorization: <scheme> <credentials>` header, when the scheme is
    /// `scheme` (compared without case).
    pub fn authorization(&self, scheme: &str) -> Option<&'a str> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (given_scheme, credentials) = value.trim().split_once(' ')?;
        given_scheme
            .eq_ignore_ascii_case(scheme)
            .then(|| credentials.trim())
    }
}

/// Why an authenticator refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries credentials, and they are wrong (401 with this message).
    #[error("{0}")]
    Invalid(String),
    /// The authenticator could not decide (its user store is down): a 500.
    #[error("the authenticator failed")]
    Backend(#[source] BoxError),
}

/// Decides who sent a request.
///
/// Return `Ok(None)` when the request carries no credentials this authenticator understands
/// (the API answers 401 "Authentication credentials were not provided."), and
/// [`AuthError::Invalid`] when it carries credentials that are wrong. The [`Actor`] returned is
/// trusted as is: its memberships decide what the caller sees and may change.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The actor who sent the request.
    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Option<Actor>, AuthError>;
}

/// The built-in authenticator: `Authorization: Bearer <token>` with tokens from
/// `POST /api/v1/users/token/` (openwisp-users' scheme), looked up by their hash.
pub struct TokenAuthenticator {
    repository: Arc<dyn Repository>,
}

impl TokenAuthenticator {
    /// Tokens of the users in `repository`.
    pub fn new(repository: Arc<dyn Repository>) -> Self {
        Self { repository }
    }
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Option<Actor>, AuthError> {
        let Some(token) = request.authorization("Bearer") else {
            return Ok(None);
        };
        if token.is_empty() || token.contains(' ') {
            return Err(AuthError::Invalid(
                "Invalid token header. Token string should not contain spaces.".into(),
            ));
        }
        match self
            .repository
            .authenticate_token(&TokenSecret::new(token))
            .await
        {
            Ok(Some((_, actor))) => Ok(Some(actor)),
            Ok(None) => Err(AuthError::Invalid("Invalid token.".into())),
            Err(error) => Err(AuthError::Backend(Box::new(error))),
        }
    }
}

/// The authenticated caller of a request: extract it in a handler to require authentication.
///
/// Extraction authenticates with the configured [`Authenticator`] and counts the request
/// against the caller's rate limit.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who is calling.
    pub actor: Actor,
}

impl Caller {
    /// The scope of what the caller may see: its organizations and shared objects.
    pub fn read_scope(&self) -> Scope {
        self.actor.read_scope()
    }

    /// The scope of what the caller may change: the organizations it manages.
    pub fn write_scope(&self) -> Scope {
        self.actor.write_scope()
    }

    /// Whether the caller may change objects of `organization` (`None`: shared objects, which
    /// only superusers change).
    pub fn can_change(&self, organization: Option<OrganizationId>) -> bool {
        self.actor.can_change(organization)
    }

    /// Whether the caller may use sysupgrade's dangerous `-F` (force) on devices of
    /// `organization`: superusers and the organization's owners.
    pub fn may_force(&self, organization: OrganizationId) -> bool {
        self.actor.is_superuser || self.actor.role_in(organization) == Some(Role::Owner)
    }

    /// `Ok` when the caller may change objects of `organization`, upstream's 403 otherwise.
    /// Call it only for objects the caller can see (others are a 404 before this point).
    pub fn require_change(&self, organization: Option<OrganizationId>) -> Result<(), ApiError> {
        if self.can_change(organization) {
            return Ok(());
        }
        Err(match organization {
            None => {
                ApiError::permission_denied("Only superusers can create or edit shared objects.")
            }
            Some(_) => {
                ApiError::permission_denied("You do not have permission to perform this action.")
            }
        })
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<ApiState>>().cloned();
        let headers = request.headers().clone();
        let peer_addr = request.peer_addr();
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::internal(
                    "mounting the API",
                    "web::Data<ApiState> is missing from the app data",
                )
            })?;
            // Authenticated on a task of its own: when another extractor of the handler fails,
            // this future is dropped, and a database query must not be cut in the middle.
            let authenticator = state.authenticator_handle();
            let authenticated = actix_web::rt::spawn(async move {
                authenticator
                    .authenticate(&AuthRequest::new(&headers, peer_addr))
                    .await
            })
            .await
            .map_err(|join_error| ApiError::internal("authenticating", join_error))?;
            let actor = authenticated
                .map_err(|error| match error {
                    AuthError::Invalid(detail) => ApiError::AuthenticationFailed { detail },
                    AuthError::Backend(source) => ApiError::internal("authenticating", source),
                })?
                .ok_or(ApiError::NotAuthenticated)?;
            state.check_throttle(&format!("user:{}", actor.user_id))?;
            Ok(Caller { actor })
        })
    }
}

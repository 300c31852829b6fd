//! openwisp-users' token endpoint (`/api/v1/users/token/`) and users (`/api/v1/users/user/`
//! and `.../<id>/`).
//!
//! **Tokens**: `POST` a form or JSON with `username` and `password` for a new bearer token,
//! `{"token": "<40 hex>"}`. Every call makes a new token: only their hashes are stored, so an
//! existing one cannot be shown again (openwisp-users returns the same token each time). Calls
//! are rate limited per client address and per username.
//!
//! **Users**, with the rules of upstream §6:
//! - superusers see and manage everyone;
//! - owners and managers see the users of the organizations they manage, and change or delete
//!   those who belong to no other organization, are not superusers and own none of them
//!   (so a manager can never take over an account with wider rights); they give roles up to
//!   `manager` in the organizations they manage, never `owner` or `is_superuser`;
//! - everyone sees themselves.
//!
//! `organization_users` lists a user's memberships: `{organization, is_admin, role}`, where
//! `is_admin` is openwisp-users' flag (true for owners and managers) and `role` flashfleet's
//! (`owner`, `manager`, `member`; on input it wins over `is_admin`). Given on an update, it
//! replaces the memberships in the organizations the caller manages; others stay. Callers see
//! only the memberships in their own organizations. `password` is write-only, hashed with
//! argon2id.

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::user::{USERNAME_MAX_LENGTH, validate_user};
use flashfleet_models::{
    Details, Membership, NewApiToken, NewUser, OrganizationId, Page, PasswordHash, Role, Scope,
    User, UserId, ValidationErrors,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::organizations::writable_organization;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// DRF's answer to a wrong username or password.
pub const INVALID_CREDENTIALS: &str = "Unable to log in with provided credentials.";
/// The name tokens made by the token endpoint get.
pub const TOKEN_NAME: &str = "api";

/// The most characters of a password accepted (argon2 reads any length; this bounds the work).
pub const PASSWORD_MAX_LENGTH: usize = 4096;
/// The most characters of an e-mail address (Django's `EmailField`).
const EMAIL_MAX_LENGTH: usize = 254;
/// The message when a user would belong to none of the caller's organizations.
const NO_ORGANIZATION: &str = "Give at least one organization you manage.";

/// A new token (DRF's `obtain_auth_token` answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenJson {
    /// The token's secret, 40 hexadecimal characters: send it as `Authorization: Bearer
    /// <token>`. It is shown once and never again.
    pub token: String,
}

/// The body of a token request (JSON or a form).
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct TokenInput {
    /// The username.
    username: String,
    /// The password.
    password: String,
}

/// A membership as the API shows it (openwisp-users' `organization_users` item, plus `role`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationUserJson {
    /// The organization.
    pub organization: Uuid,
    /// openwisp-users' flag: whether the user manages the organization (owner or manager).
    pub is_admin: bool,
    /// `owner`, `manager` or `member`.
    pub role: &'static str,
}

/// A user as the API shows it (openwisp-users' fields flashfleet has, plus `details`); never
/// the password.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserJson {
    /// Its id.
    pub id: Uuid,
    /// The login name (unique).
    pub username: String,
    /// The e-mail address.
    pub email: String,
    /// Whether the user may do everything everywhere.
    pub is_superuser: bool,
    /// An inactive user cannot log in or use tokens.
    pub is_active: bool,
    /// The memberships in the caller's organizations.
    pub organization_users: Vec<OrganizationUserJson>,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl UserJson {
    /// The JSON of `user` with the memberships of `memberships` that `caller` may see.
    pub fn new(user: User, memberships: &[Membership], caller: &Caller) -> Self {
        let scope = caller.read_scope();
        UserJson {
            id: user.id.0,
            username: user.username,
            email: user.email,
            is_superuser: user.is_superuser,
            is_active: user.is_active,
            organization_users: memberships
                .iter()
                .filter(|membership| scope.contains(Some(membership.organization_id)))
                .map(|membership| OrganizationUserJson {
                    organization: membership.organization_id.0,
                    is_admin: membership.role.can_manage(),
                    role: membership.role.as_str(),
                })
                .collect(),
            created: user.created.into(),
            modified: user.modified.into(),
            details: user.details,
        }
    }
}

/// A membership in a request body.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct OrganizationUserInput {
    /// An organization the caller manages.
    organization: Uuid,
    /// openwisp-users' flag: `true` makes a manager, `false` a member (when `role` is absent).
    is_admin: Option<bool>,
    /// `owner` (superusers only), `manager` or `member`.
    role: Option<String>,
}

/// The body of a user create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct UserInput {
    /// The login name: letters, digits and `@.+-_`, at most 150 characters.
    username: String,
    /// The password (required on create; on update, absent keeps it). Never shown.
    password: Option<String>,
    /// The e-mail address.
    email: Option<String>,
    /// Only superusers make superusers.
    is_superuser: Option<bool>,
    /// Whether the user may log in (default true).
    is_active: Option<bool>,
    /// The memberships in the organizations the caller manages (at least one unless the caller
    /// is a superuser).
    organization_users: Option<Vec<OrganizationUserInput>>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Exchanges a username and password for a new bearer token (no authentication; rate limited
/// per client address and username).
#[utoipa::path(
    post, path = "/api/v1/users/token/", tag = "users",
    request_body(content = TokenInput, content_type = "application/json"),
    responses((status = 200, body = TokenJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn obtain_token(
    request: HttpRequest,
    state: web::Data<ApiState>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let address = request.peer_addr();
    check_address_throttle(&state, address)?;
    let username = input.required_string("username", USERNAME_MAX_LENGTH);
    let password = input.required_string("password", PASSWORD_MAX_LENGTH);
    input.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::internal(
            "reading a token request",
            "checked fields are missing",
        ));
    };
    let Some(user) = check_password(&state, &username, password).await? else {
        return Err(ApiError::invalid_field(
            "non_field_errors",
            INVALID_CREDENTIALS,
        ));
    };
    let token = NewApiToken::generate(user.id, TOKEN_NAME)
        .map_err(|error| ApiError::internal("making a token", error))?;
    state.repository().insert_token(&token.token).await?;
    tracing::info!(user = %user.username, token = %token.token.id, "made a token");
    Ok(HttpResponse::Ok().json(TokenJson {
        token: token.secret.expose().to_owned(),
    }))
}

/// Counts a sign-in attempt from `address` against the rate limit of sign-ins per address.
pub fn check_address_throttle(
    state: &ApiState,
    address: Option<std::net::SocketAddr>,
) -> Result<(), ApiError> {
    let address = address.map_or_else(|| "unknown".to_owned(), |address| address.ip().to_string());
    state.check_throttle(&format!("token-address:{address}"))
}

/// The active user `username` if `password` is theirs (counted against the rate limit of
/// sign-ins per username). Unknown users cost the same work, so the time taken does not tell
/// which usernames exist.
pub async fn check_password(
    state: &ApiState,
    username: &str,
    password: String,
) -> Result<Option<User>, ApiError> {
    state.check_throttle(&format!("token-username:{username}"))?;
    let user = state.repository().user_by_username(username).await?;
    let hash = user
        .as_ref()
        .filter(|user| user.is_active)
        .and_then(|user| user.password_hash.clone());
    // argon2 takes tens of milliseconds: off the request's thread. Unknown users cost the same
    // work, so the answer's timing does not tell which usernames exist.
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => hash.verify(&password),
        None => {
            let _ = PasswordHash::hash(&password);
            false
        }
    })
    .await
    .map_err(|error| ApiError::internal("checking a password", error))?;
    Ok(user.filter(|_| verified))
}

/// Lists the users the caller sees, by username.
#[utoipa::path(
    get, path = "/api/v1/users/user/", tag = "users",
    params(("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<UserJson>), (status = 401, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let repository = state.repository();
    let page = match user_scope(&caller) {
        Some(scope) => repository.list_users(&scope, pagination.request()).await?,
        // Someone who manages nothing sees only themselves.
        None => pagination.page_of(
            repository
                .user(caller.actor.user_id)
                .await?
                .into_iter()
                .collect(),
        ),
    };
    let mut items = Vec::with_capacity(page.items.len());
    for user in page.items {
        let memberships = repository.memberships(user.id).await?;
        items.push(UserJson::new(user, &memberships, &caller));
    }
    pagination.respond(
        &request,
        &state,
        Page {
            count: page.count,
            items,
        },
    )
}

/// Creates a user with its memberships.
#[utoipa::path(
    post, path = "/api/v1/users/user/", tag = "users",
    request_body(content = UserInput, content_type = "application/json"),
    responses((status = 201, body = UserJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let username = input.required_string("username", USERNAME_MAX_LENGTH);
    let password = input.required_string("password", PASSWORD_MAX_LENGTH);
    let email = input
        .optional_string("email", EMAIL_MAX_LENGTH)
        .unwrap_or_default();
    let is_superuser = read_is_superuser(&caller, &mut input).unwrap_or(false);
    let is_active = input.boolean("is_active").unwrap_or(true);
    let memberships = read_memberships(&state, &caller, &mut input, &[]).await?;
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::internal(
            "reading a user",
            "checked fields are missing",
        ));
    };
    let memberships = memberships.unwrap_or_default();
    if !caller.actor.is_superuser && memberships.is_empty() {
        return Err(ApiError::invalid_field(
            "organization_users",
            NO_ORGANIZATION,
        ));
    }
    validate_user(&username, &email)?;
    let mut new_user = NewUser::new(username);
    new_user.email = email;
    new_user.is_superuser = is_superuser;
    new_user.password_hash = Some(hash_password(password).await?);
    new_user.details = details;
    let mut user = new_user.into_user();
    user.is_active = is_active;
    let stored = state.repository().insert_user(&user).await?;
    save_memberships(&state, &caller, stored.id, &[], &memberships).await?;
    let memberships = state.repository().memberships(stored.id).await?;
    Ok(HttpResponse::Created().json(UserJson::new(stored, &memberships, &caller)))
}

/// One user.
#[utoipa::path(
    get, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (user, memberships) = visible_user(&state, &caller, UserId(*id)).await?;
    Ok(HttpResponse::Ok().json(UserJson::new(user, &memberships, &caller)))
}

/// Changes a user (`PUT` whole, `PATCH` partial; `password` only when given).
#[utoipa::path(
    put, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    request_body(content = UserInput, content_type = "application/json"),
    responses((status = 200, body = UserJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let (mut user, current) = visible_user(&state, &caller, UserId(*id)).await?;
    require_change_user(&caller, &user, &current)?;
    if let Some(username) = input.required_string("username", USERNAME_MAX_LENGTH) {
        user.username = username;
    }
    let password = input
        .optional_string("password", PASSWORD_MAX_LENGTH)
        .filter(|password| !password.is_empty());
    if let Some(email) = input.optional_string("email", EMAIL_MAX_LENGTH) {
        user.email = email;
    }
    if let Some(is_superuser) = read_is_superuser(&caller, &mut input) {
        user.is_superuser = is_superuser;
    }
    if let Some(is_active) = input.boolean("is_active") {
        user.is_active = is_active;
    }
    let memberships = read_memberships(&state, &caller, &mut input, &current).await?;
    if let Some(details) = input.object("details") {
        user.details = details;
    }
    input.finish()?;
    if let Some(memberships) = &memberships
        && !caller.actor.is_superuser
        && memberships.is_empty()
    {
        return Err(ApiError::invalid_field(
            "organization_users",
            NO_ORGANIZATION,
        ));
    }
    validate_user(&user.username, &user.email)?;
    if let Some(password) = password {
        user.password_hash = Some(hash_password(password).await?);
    }
    let stored = state
        .repository()
        .update_user(&user)
        .await?
        .ok_or_else(|| ApiError::no_match("User"))?;
    if let Some(memberships) = memberships {
        save_memberships(&state, &caller, stored.id, &current, &memberships).await?;
    }
    let memberships = state.repository().memberships(stored.id).await?;
    Ok(HttpResponse::Ok().json(UserJson::new(stored, &memberships, &caller)))
}

/// Deletes a user with its memberships and tokens.
#[utoipa::path(
    delete, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (user, memberships) = visible_user(&state, &caller, UserId(*id)).await?;
    require_change_user(&caller, &user, &memberships)?;
    if !state.repository().delete_user(user.id).await? {
        return Err(ApiError::no_match("User"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The scope of the users a caller lists: every user for superusers, the users of the
/// organizations it manages otherwise; `None` when it manages none.
fn user_scope(caller: &Caller) -> Option<Scope> {
    if caller.actor.is_superuser {
        return Some(Scope::All);
    }
    let managed = caller.actor.managed_organizations();
    (!managed.is_empty()).then_some(Scope::Organizations {
        ids: managed,
        include_shared: false,
    })
}

/// The user `id` with its memberships, if the caller sees it (itself, a user of an
/// organization it manages, anyone for superusers); a 404 otherwise.
async fn visible_user(
    state: &ApiState,
    caller: &Caller,
    id: UserId,
) -> Result<(User, Vec<Membership>), ApiError> {
    let repository = state.repository();
    let Some(user) = repository.user(id).await? else {
        return Err(ApiError::no_match("User"));
    };
    let memberships = repository.memberships(user.id).await?;
    let visible = caller.actor.is_superuser
        || user.id == caller.actor.user_id
        || memberships
            .iter()
            .any(|membership| caller.can_change(Some(membership.organization_id)));
    if visible {
        Ok((user, memberships))
    } else {
        Err(ApiError::no_match("User"))
    }
}

/// `Ok` when the caller may change or delete `user`, whose memberships are `memberships`: a
/// superuser may change anyone; others only users who are not superusers, belong to at least
/// one organization, and only to organizations the caller manages, owning none of them unless
/// the user is the caller.
fn require_change_user(
    caller: &Caller,
    user: &User,
    memberships: &[Membership],
) -> Result<(), ApiError> {
    if caller.actor.is_superuser {
        return Ok(());
    }
    if user.is_superuser {
        return Err(ApiError::permission_denied(
            "Only superusers can change superusers.",
        ));
    }
    let is_caller = user.id == caller.actor.user_id;
    let allowed = !memberships.is_empty()
        && memberships.iter().all(|membership| {
            caller.can_change(Some(membership.organization_id))
                && (membership.role != Role::Owner || is_caller)
        });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::permission_denied(
            "You do not have permission to perform this action.",
        ))
    }
}

/// `is_superuser` of a body; only superusers may set it.
fn read_is_superuser(caller: &Caller, input: &mut Input) -> Option<bool> {
    let is_superuser = input.boolean("is_superuser")?;
    if is_superuser && !caller.actor.is_superuser {
        input.error(
            "is_superuser",
            "Only superusers can grant superuser status.",
        );
        return None;
    }
    Some(is_superuser)
}

/// `organization_users` of a body: `None` when absent. Each organization must be one the
/// caller manages, appear once, and get `owner` only from a superuser (or keep it, when the
/// user already owns it: `current`).
async fn read_memberships(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
    current: &[Membership],
) -> Result<Option<Vec<(OrganizationId, Role)>>, ApiError> {
    const FIELD: &str = "organization_users";
    let Some(value) = input.raw(FIELD).cloned() else {
        return Ok(None);
    };
    let items = match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        // Forms carry the list as JSON text.
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            _ => {
                input.error(FIELD, "Expected a list of items but got type \"str\".");
                return Ok(None);
            }
        },
        _ => {
            input.error(FIELD, "Expected a list of items.");
            return Ok(None);
        }
    };
    let mut memberships: Vec<(OrganizationId, Role)> = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(fields) = item else {
            input.error(FIELD, "Invalid data. Expected a dictionary.");
            continue;
        };
        let Some((organization_id, role)) = read_membership(input, fields) else {
            continue;
        };
        if memberships
            .iter()
            .any(|(listed, _)| *listed == organization_id)
        {
            input.error(
                FIELD,
                format!("Organization \"{organization_id}\" is listed twice."),
            );
            continue;
        }
        if writable_organization(state, caller, input, FIELD, organization_id)
            .await?
            .is_none()
        {
            continue;
        }
        let owns_already = current.iter().any(|membership| {
            membership.organization_id == organization_id && membership.role == Role::Owner
        });
        if role == Role::Owner && !caller.actor.is_superuser && !owns_already {
            input.error(
                FIELD,
                "Only superusers can make a user owner of an organization.",
            );
            continue;
        }
        memberships.push((organization_id, role));
    }
    Ok(Some(memberships))
}

/// One `{organization, is_admin, role}` item; its errors are recorded on `organization_users`.
fn read_membership(
    input: &mut Input,
    fields: Map<String, Value>,
) -> Option<(OrganizationId, Role)> {
    let mut item = Input::new(fields, false);
    let organization_id = item.required_id::<OrganizationId>("organization");
    let is_admin = item.boolean("is_admin");
    let role = match item.filter_text("role") {
        Some(text) => match text.trim().parse::<Role>() {
            Ok(role) => Some(role),
            Err(_) => {
                item.error("role", format!("\"{text}\" is not a valid choice."));
                None
            }
        },
        None if is_admin == Some(true) => Some(Role::Manager),
        None => Some(Role::Member),
    };
    for (field, messages) in item.take_errors().iter() {
        for message in messages {
            input.error("organization_users", format!("{field}: {message}"));
        }
    }
    Some((organization_id?, role?))
}

/// Applies the memberships `wanted` of user `user_id`: those of `current` in organizations the
/// caller manages and not wanted are removed, the others set.
async fn save_memberships(
    state: &ApiState,
    caller: &Caller,
    user_id: UserId,
    current: &[Membership],
    wanted: &[(OrganizationId, Role)],
) -> Result<(), ApiError> {
    let repository = state.repository();
    for membership in current {
        let listed = wanted
            .iter()
            .any(|(organization_id, _)| *organization_id == membership.organization_id);
        if !listed && caller.can_change(Some(membership.organization_id)) {
            repository
                .remove_membership(user_id, membership.organization_id)
                .await?;
        }
    }
    for (organization_id, role) in wanted {
        let unchanged = current.iter().any(|membership| {
            membership.organization_id == *organization_id && membership.role == *role
        });
        if !unchanged {
            repository
                .set_membership(user_id, *organization_id, *role)
                .await?;
        }
    }
    Ok(())
}

/// `password` hashed with argon2id, off the request's thread.
async fn hash_password(password: String) -> Result<PasswordHash, ApiError> {
    tokio::task::spawn_blocking(move || PasswordHash::hash(&password))
        .await
        .map_err(|error| ApiError::internal("hashing a password", error))?
        .map_err(|errors: ValidationErrors| ApiError::Invalid(errors))
}

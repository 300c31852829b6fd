//! Builds (upstream endpoints 1 and 2): `build/` and `build/<id>/`.
//!
//! A build belongs to a category; it is visible where its category is, and changed by whoever
//! may change its category (shared builds: superusers only).

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::build::{OS_MAX_LENGTH, VERSION_MAX_LENGTH, normalize_os, validate_build};
use flashfleet_models::page::BuildOrder;
use flashfleet_models::repository::BuildFilter;
use flashfleet_models::{Build, BuildId, Category, CategoryId, Details, NewBuild, Scope};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The most characters of a changelog accepted (upstream: unbounded text).
const CHANGELOG_MAX_LENGTH: usize = 1_000_000;

/// The category of a build as the build shows it (upstream's `category_relation`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CategoryRelation {
    /// The category's name.
    pub name: String,
    /// The category's organization; `null` when shared.
    pub organization: Option<Uuid>,
}

/// A build as the API shows it (upstream's `BuildSerializer`, plus `details`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BuildJson {
    /// Its id.
    pub id: Uuid,
    /// Its category's name and organization.
    pub category_relation: CategoryRelation,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// Its version (unique in the category).
    pub version: String,
    /// The OS identifier devices report when they run it (unique per organization).
    pub os: Option<String>,
    /// Free text.
    pub changelog: String,
    /// Its category.
    pub category: Uuid,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl BuildJson {
    /// The JSON of `build` in `category`.
    pub fn new(build: Build, category: &Category) -> Self {
        BuildJson {
            id: build.id.0,
            category_relation: CategoryRelation {
                name: category.name.clone(),
                organization: category.organization_id.map(|id| id.0),
            },
            created: build.created.into(),
            modified: build.modified.into(),
            version: build.version,
            os: build.os,
            changelog: build.changelog,
            category: build.category_id.0,
            details: build.details,
        }
    }
}

/// The body of a build create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct BuildInput {
    /// Its category: one the caller may change.
    category: Uuid,
    /// Its version (at most 32 characters).
    version: String,
    /// The OS identifier (at most 64 characters).
    os: Option<String>,
    /// Free text.
    changelog: Option<String>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Lists builds (`-created, -version`; filters `category`, `version`, `os`, `organization`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/", tag = "firmware-upgrader",
    params(
        ("category" = Option<Uuid>, Query, description = "Only builds of this category"),
        ("version" = Option<String>, Query, description = "Only builds with exactly this version"),
        ("os" = Option<String>, Query, description = "Only builds with exactly this OS identifier"),
        ("organization" = Option<String>, Query, description = "Only builds of the organization with this slug"),
        ("ordering" = Option<String>, Query, description = "version, created, modified; `-` for descending"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query),
    ),
    responses((status = 200, body = Paginated<BuildJson>), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
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
    let filter = BuildFilter {
        category_id: query.filter_id("category"),
        version: query.filter_text("version"),
        os: query.filter_text("os"),
        organization_slug: query.filter_text("organization"),
        ordering: query.ordering::<BuildOrder>(),
    };
    query.finish()?;
    let page = state
        .repository()
        .list_builds(&caller.read_scope(), &filter, pagination.request())
        .await?
        .map(|(build, category)| BuildJson::new(build, &category));
    pagination.respond(&request, &state, page)
}

/// Creates a build.
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/build/", tag = "firmware-upgrader",
    request_body(content = BuildInput, content_type = "application/json"),
    responses((status = 201, body = BuildJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    input: Input,
) -> Result<HttpResponse, ApiError> {
    let (stored, category) = create_build(&state, &caller, input).await?;
    Ok(HttpResponse::Created().json(BuildJson::new(stored, &category)))
}

/// Creates the build `input` describes (`category`, `version`, `os`, `changelog`, `details`)
/// with the create endpoint's checks and rules: the handler behind `POST build/`, for other
/// front ends (the dashboard's form). Returns the build and its category.
///
/// # Errors
/// [`ApiError::Invalid`] with each field's messages, or the repository's error.
pub async fn create_build(
    state: &ApiState,
    caller: &Caller,
    mut input: Input,
) -> Result<(Build, Category), ApiError> {
    let category = writable_category(state, caller, &mut input).await?;
    let version = input.required_string("version", VERSION_MAX_LENGTH);
    let os = input.nullable_string("os", OS_MAX_LENGTH).flatten();
    let changelog = input
        .optional_string("changelog", CHANGELOG_MAX_LENGTH)
        .unwrap_or_default();
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let (Some(category), Some(version)) = (category, version) else {
        return Err(ApiError::internal(
            "reading a build",
            "checked fields are missing",
        ));
    };
    let mut build = NewBuild::new(category.id, version);
    build.os = os;
    build.changelog = changelog;
    build.details = details;
    build.validate()?;
    let stored = state.repository().insert_build(&build.into_build()).await?;
    Ok((stored, category))
}

/// One build.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BuildJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (build, category) = visible_build(&state, &caller.read_scope(), BuildId(*id)).await?;
    Ok(HttpResponse::Ok().json(BuildJson::new(build, &category)))
}

/// Changes a build (`PUT` whole, `PATCH` partial).
#[utoipa::path(
    put, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    request_body(content = BuildInput, content_type = "application/json"),
    responses((status = 200, body = BuildJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let (mut build, mut category) =
        visible_build(&state, &caller.read_scope(), BuildId(*id)).await?;
    caller.require_change(category.organization_id)?;
    if (input.has("category") || !input.is_partial())
        && let Some(new_category) = writable_category(&state, &caller, &mut input).await?
    {
        build.category_id = new_category.id;
        category = new_category;
    }
    if let Some(version) = input.required_string("version", VERSION_MAX_LENGTH) {
        build.version = version;
    }
    if let Some(os) = input.nullable_string("os", OS_MAX_LENGTH) {
        build.os = normalize_os(os);
    }
    if let Some(changelog) = input.optional_string("changelog", CHANGELOG_MAX_LENGTH) {
        build.changelog = changelog;
    }
    if let Some(details) = input.object("details") {
        build.details = details;
    }
    input.finish()?;
    validate_build(&build.version, build.os.as_deref())?;
    let stored = state
        .repository()
        .update_build(&build)
        .await?
        .ok_or_else(|| ApiError::no_match("Build"))?;
    Ok(HttpResponse::Ok().json(BuildJson::new(stored, &category)))
}

/// Deletes a build with its images (files included).
#[utoipa::path(
    delete, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (build, category) = visible_build(&state, &caller.read_scope(), BuildId(*id)).await?;
    caller.require_change(category.organization_id)?;
    let keys = state
        .repository()
        .delete_build(build.id)
        .await?
        .ok_or_else(|| ApiError::no_match("Build"))?;
    crate::images::delete_files(&state, &keys).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The build `id` with its category if the caller sees it, upstream's 404 otherwise.
pub async fn visible_build(
    state: &ApiState,
    scope: &Scope,
    id: BuildId,
) -> Result<(Build, Category), ApiError> {
    state
        .repository()
        .build(scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("Build"))
}

/// The `category` of a build body, if the caller may put builds in it (DRF's related-field
/// choices limited to the caller's managed organizations: shared categories only for
/// superusers); records "This field is required." or "Invalid pk" otherwise.
async fn writable_category(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
) -> Result<Option<Category>, ApiError> {
    let Some(category_id) = input.required_id::<CategoryId>("category") else {
        return Ok(None);
    };
    let category = state
        .repository()
        .category(&caller.write_scope(), category_id)
        .await?;
    if category.is_none() {
        input.error(
            "category",
            format!("Invalid pk \"{category_id}\" - object does not exist."),
        );
    }
    Ok(category)
}

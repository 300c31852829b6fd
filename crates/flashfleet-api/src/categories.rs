//! Firmware categories (upstream endpoints 7 and 8): `category/` and `category/<id>/`.
//!
//! Everyone sees the categories of their organizations and the shared ones; managers change
//! their organizations' categories; only superusers create or change shared categories.

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::category::{NAME_MAX_LENGTH, validate_category};
use flashfleet_models::page::CategoryOrder;
use flashfleet_models::repository::CategoryFilter;
use flashfleet_models::{Category, CategoryId, Details, NewCategory, OrganizationId, Scope};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::organizations::owning_organization;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The most characters of a category's description accepted (upstream: unbounded text).
const DESCRIPTION_MAX_LENGTH: usize = 65_535;

/// A category as the API shows it (upstream's `CategorySerializer`, plus `details`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryJson {
    /// Its id.
    pub id: Uuid,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// Its name (unique per organization).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Its organization; `null` for a shared category.
    pub organization: Option<Uuid>,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<Category> for CategoryJson {
    fn from(category: Category) -> Self {
        CategoryJson {
            id: category.id.0,
            created: category.created.into(),
            modified: category.modified.into(),
            name: category.name,
            description: category.description,
            organization: category.organization_id.map(|id| id.0),
            details: category.details,
        }
    }
}

/// The body of a category create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct CategoryInput {
    /// Its name (required, at most 64 characters).
    name: String,
    /// Free text.
    description: Option<String>,
    /// Its organization: one the caller manages; `null` (shared) only for superusers.
    organization: Option<Uuid>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Lists categories (`-name, -created`; `?organization=<slug>`, `?ordering=`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/category/", tag = "firmware-upgrader",
    params(
        ("organization" = Option<String>, Query, description = "Only categories of the organization with this slug"),
        ("ordering" = Option<String>, Query, description = "name, created, modified; `-` for descending"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query),
    ),
    responses((status = 200, body = Paginated<CategoryJson>), (status = 401, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let filter = CategoryFilter {
        organization_slug: query.filter_text("organization"),
        ordering: query.ordering::<CategoryOrder>(),
    };
    query.finish()?;
    let page = state
        .repository()
        .list_categories(&caller.read_scope(), &filter, pagination.request())
        .await?
        .map(CategoryJson::from);
    pagination.respond(&request, &state, page)
}

/// Creates a category.
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/category/", tag = "firmware-upgrader",
    request_body(content = CategoryInput, content_type = "application/json"),
    responses((status = 201, body = CategoryJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    input: Input,
) -> Result<HttpResponse, ApiError> {
    let stored = create_category(&state, &caller, input).await?;
    Ok(HttpResponse::Created().json(CategoryJson::from(stored)))
}

/// Creates the category `input` describes (`name`, `description`, `organization`, `details`)
/// with the create endpoint's checks and rules: the handler behind `POST category/`, for
/// other front ends (the dashboard's form).
///
/// # Errors
/// [`ApiError::Invalid`] with each field's messages, or the repository's error.
pub async fn create_category(
    state: &ApiState,
    caller: &Caller,
    mut input: Input,
) -> Result<Category, ApiError> {
    let name = input.required_string("name", NAME_MAX_LENGTH);
    let description = input
        .optional_string("description", DESCRIPTION_MAX_LENGTH)
        .unwrap_or_default();
    let organization_id = category_organization(state, caller, &mut input).await?;
    let details = input.object("details").unwrap_or_default();
    input.finish()?;
    let Some(name) = name else {
        return Err(ApiError::internal(
            "reading a category",
            "a name was checked",
        ));
    };
    let mut category = NewCategory::new(organization_id, name);
    category.description = description;
    category.details = details;
    category.validate()?;
    Ok(state
        .repository()
        .insert_category(&category.into_category())
        .await?)
}

/// One category.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CategoryJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let category = visible_category(&state, &caller.read_scope(), CategoryId(*id)).await?;
    Ok(HttpResponse::Ok().json(CategoryJson::from(category)))
}

/// Changes a category (`PUT` whole, `PATCH` partial).
#[utoipa::path(
    put, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    request_body(content = CategoryInput, content_type = "application/json"),
    responses((status = 200, body = CategoryJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let mut category = visible_category(&state, &caller.read_scope(), CategoryId(*id)).await?;
    caller.require_change(category.organization_id)?;
    if let Some(name) = input.required_string("name", NAME_MAX_LENGTH) {
        category.name = name;
    }
    if let Some(description) = input.optional_string("description", DESCRIPTION_MAX_LENGTH) {
        category.description = description;
    }
    if input.has("organization") {
        category.organization_id = category_organization(&state, &caller, &mut input).await?;
    }
    if let Some(details) = input.object("details") {
        category.details = details;
    }
    input.finish()?;
    validate_category(&category.name)?;
    let stored = state
        .repository()
        .update_category(&category)
        .await?
        .ok_or_else(|| ApiError::no_match("Category"))?;
    Ok(HttpResponse::Ok().json(CategoryJson::from(stored)))
}

/// Deletes a category with its builds and their images (files included).
#[utoipa::path(
    delete, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let category = visible_category(&state, &caller.read_scope(), CategoryId(*id)).await?;
    caller.require_change(category.organization_id)?;
    let keys = state
        .repository()
        .delete_category(category.id)
        .await?
        .ok_or_else(|| ApiError::no_match("Category"))?;
    crate::images::delete_files(&state, &keys).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The category `id` if the caller sees it, upstream's 404 otherwise.
pub(crate) async fn visible_category(
    state: &ApiState,
    scope: &Scope,
    id: CategoryId,
) -> Result<Category, ApiError> {
    state
        .repository()
        .category(scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("Category"))
}

/// The `organization` of a category body: an organization the caller manages, or `null`
/// (shared) for superusers only.
async fn category_organization(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
) -> Result<Option<OrganizationId>, ApiError> {
    owning_organization(
        state,
        caller,
        input,
        "Only superusers can create or edit shared categories",
    )
    .await
}

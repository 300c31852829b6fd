//! Organizations (openwisp-users' `/api/v1/users/organization/` and `.../<id>/`).
//!
//! Superusers create and delete organizations; owners and managers see and change their own
//! (except `is_active`, which only superusers change); members see theirs.
//!
//! openwisp-users' `description`, `email` and `url`, which flashfleet's model has no columns
//! for, are kept in the organization's `details` under those keys and shown as fields of their
//! own (and not again inside `details`).

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_models::organization::{NAME_MAX_LENGTH, SLUG_MAX_LENGTH, validate_organization};
use flashfleet_models::{Details, NewOrganization, Organization, OrganizationId, Scope};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::pagination::{Paginated, Pagination};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// openwisp-users' fields that live in `details`.
const DETAILS_FIELDS: [&str; 3] = ["description", "email", "url"];
/// The most characters of a description accepted (upstream: unbounded text).
const DESCRIPTION_MAX_LENGTH: usize = 65_535;
/// The most characters of an e-mail address (Django's `EmailField`).
const EMAIL_MAX_LENGTH: usize = 254;
/// The most characters of a URL (Django's `URLField`).
const URL_MAX_LENGTH: usize = 200;

/// An organization as the API shows it (openwisp-users' `OrganizationSerializer`, plus
/// `details`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationJson {
    /// Its id.
    pub id: Uuid,
    /// Its name (unique).
    pub name: String,
    /// An inactive organization keeps its data, but its members cannot use it.
    pub is_active: bool,
    /// Its short name (unique), which list filters take (`?organization=<slug>`).
    pub slug: String,
    /// Free text.
    pub description: String,
    /// Its contact e-mail address.
    pub email: String,
    /// Its web site.
    pub url: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl From<Organization> for OrganizationJson {
    fn from(organization: Organization) -> Self {
        let mut details = organization.details;
        let mut take = |key: &str| match details.remove(key) {
            Some(Value::String(text)) => text,
            _ => String::new(),
        };
        let description = take("description");
        let email = take("email");
        let url = take("url");
        OrganizationJson {
            id: organization.id.0,
            name: organization.name,
            is_active: organization.is_active,
            slug: organization.slug,
            description,
            email,
            url,
            created: organization.created.into(),
            modified: organization.modified.into(),
            details,
        }
    }
}

/// The body of an organization create or update.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct OrganizationInput {
    /// Its name (required, at most 200 characters).
    name: String,
    /// Its short name: letters, digits, `-` and `_`; made from the name when absent.
    slug: Option<String>,
    /// Whether it is active (only superusers change it).
    is_active: Option<bool>,
    /// Free text.
    description: Option<String>,
    /// Its contact e-mail address.
    email: Option<String>,
    /// Its web site (`http://` or `https://`).
    url: Option<String>,
    /// Integrators' own fields.
    #[schema(value_type = Option<Object>)]
    details: Option<Details>,
}

/// Lists the organizations the caller belongs to (every one for superusers), by name.
#[utoipa::path(
    get, path = "/api/v1/users/organization/", tag = "users",
    params(("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<OrganizationJson>), (status = 401, body = crate::openapi::Problem, content_type = "application/problem+json")),
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
        .list_organizations(&caller.read_scope(), pagination.request())
        .await?
        .map(OrganizationJson::from);
    pagination.respond(&request, &state, page)
}

/// Creates an organization (superusers only).
#[utoipa::path(
    post, path = "/api/v1/users/organization/", tag = "users",
    request_body(content = OrganizationInput, content_type = "application/json"),
    responses((status = 201, body = OrganizationJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    require_superuser(&caller)?;
    let name = input.required_string("name", NAME_MAX_LENGTH);
    let slug = input
        .nullable_string("slug", SLUG_MAX_LENGTH)
        .flatten()
        .or_else(|| name.as_deref().map(slugify));
    let is_active = input.boolean("is_active").unwrap_or(true);
    let mut details = input.object("details").unwrap_or_default();
    read_details_fields(&mut input, &mut details);
    input.finish()?;
    let (Some(name), Some(slug)) = (name, slug) else {
        return Err(ApiError::internal(
            "reading an organization",
            "a name was checked",
        ));
    };
    let mut organization = NewOrganization::new(name, slug);
    organization.is_active = is_active;
    organization.details = details;
    organization.validate()?;
    let stored = state
        .repository()
        .insert_organization(&organization.into_organization())
        .await?;
    Ok(HttpResponse::Created().json(OrganizationJson::from(stored)))
}

/// One organization.
#[utoipa::path(
    get, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrganizationJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let organization =
        visible_organization(&state, &caller.read_scope(), OrganizationId(*id)).await?;
    Ok(HttpResponse::Ok().json(OrganizationJson::from(organization)))
}

/// Changes an organization (`PUT` whole, `PATCH` partial): its owners and managers, and
/// superusers; only superusers change `is_active`.
#[utoipa::path(
    put, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    request_body(content = OrganizationInput, content_type = "application/json"),
    responses((status = 200, body = OrganizationJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn update(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let mut organization =
        visible_organization(&state, &caller.read_scope(), OrganizationId(*id)).await?;
    caller.require_change(Some(organization.id))?;
    if let Some(name) = input.required_string("name", NAME_MAX_LENGTH) {
        organization.name = name;
    }
    if let Some(slug) = input.nullable_string("slug", SLUG_MAX_LENGTH) {
        organization.slug = slug.unwrap_or_else(|| slugify(&organization.name));
    }
    if let Some(is_active) = input.boolean("is_active")
        && is_active != organization.is_active
    {
        if caller.actor.is_superuser {
            organization.is_active = is_active;
        } else {
            input.error(
                "is_active",
                "Only superusers can activate or deactivate an organization.",
            );
        }
    }
    if let Some(details) = input.object("details") {
        // The fields kept in `details` keep their values unless the body changes them.
        let kept: Vec<(String, Value)> = DETAILS_FIELDS
            .iter()
            .filter_map(|key| {
                let value = organization.details.get(*key)?;
                Some(((*key).to_owned(), value.clone()))
            })
            .collect();
        organization.details = details;
        organization.details.extend(kept);
    }
    read_details_fields(&mut input, &mut organization.details);
    input.finish()?;
    validate_organization(&organization.name, &organization.slug)?;
    let stored = state
        .repository()
        .update_organization(&organization)
        .await?
        .ok_or_else(|| ApiError::no_match("Organization"))?;
    Ok(HttpResponse::Ok().json(OrganizationJson::from(stored)))
}

/// Deletes an organization with everything it owns, firmware files included (superusers only).
#[utoipa::path(
    delete, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let organization =
        visible_organization(&state, &caller.read_scope(), OrganizationId(*id)).await?;
    require_superuser(&caller)?;
    let keys = state
        .repository()
        .delete_organization(organization.id)
        .await?
        .ok_or_else(|| ApiError::no_match("Organization"))?;
    crate::images::delete_files(&state, &keys).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The organization `id` named by the body field `field`, if the caller may put objects in it
/// (it manages it, or is a superuser); otherwise records DRF's "Invalid pk" error on `field`
/// (the organization is not among the choices, whether or not it exists) and returns `None`.
pub(crate) async fn writable_organization(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
    field: &str,
    id: OrganizationId,
) -> Result<Option<OrganizationId>, ApiError> {
    let scope = caller.write_scope();
    let found = match &scope {
        Scope::Organizations { ids, .. } if !ids.contains(&id) => None,
        _ => state.repository().organization(&scope, id).await?,
    };
    match found {
        Some(organization) if organization.is_active => Ok(Some(organization.id)),
        _ => {
            input.error(
                field,
                format!("Invalid pk \"{id}\" - object does not exist."),
            );
            Ok(None)
        }
    }
}

/// The `organization` of a body for an object that may be shared: an organization the caller
/// manages, or `null` (shared), which only superusers may give; `shared_refused` is the message
/// others get then.
pub(crate) async fn owning_organization(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
    shared_refused: &str,
) -> Result<Option<OrganizationId>, ApiError> {
    match input.nullable_id::<OrganizationId>("organization") {
        Some(Some(organization_id)) => {
            Ok(
                writable_organization(state, caller, input, "organization", organization_id)
                    .await?,
            )
        }
        None | Some(None) => {
            if !caller.actor.is_superuser && !input.has_error("organization") {
                input.error("organization", shared_refused);
            }
            Ok(None)
        }
    }
}

/// The organization `id` if the caller sees it, upstream's 404 otherwise.
async fn visible_organization(
    state: &ApiState,
    scope: &Scope,
    id: OrganizationId,
) -> Result<Organization, ApiError> {
    state
        .repository()
        .organization(scope, id)
        .await?
        .ok_or_else(|| ApiError::no_match("Organization"))
}

fn require_superuser(caller: &Caller) -> Result<(), ApiError> {
    if caller.actor.is_superuser {
        Ok(())
    } else {
        Err(ApiError::permission_denied(
            "You do not have permission to perform this action.",
        ))
    }
}

/// Reads `description`, `email` and `url` into `details` (a blank value removes the key).
fn read_details_fields(input: &mut Input, details: &mut Details) {
    let description = input.optional_string("description", DESCRIPTION_MAX_LENGTH);
    let email = input.optional_string("email", EMAIL_MAX_LENGTH);
    let url = input.optional_string("url", URL_MAX_LENGTH);
    if let Some(email) = &email
        && !email.is_empty()
        && !is_email(email)
    {
        input.error("email", "Enter a valid email address.");
    }
    if let Some(url) = &url
        && !url.is_empty()
        && !is_url(url)
    {
        input.error("url", "Enter a valid URL.");
    }
    for (key, value) in DETAILS_FIELDS.into_iter().zip([description, email, url]) {
        match value.map(|text| text.trim().to_owned()) {
            Some(text) if text.is_empty() => {
                details.remove(key);
            }
            Some(text) => {
                details.insert(key.to_owned(), Value::String(text));
            }
            None => {}
        }
    }
}

/// Django's `slugify`, for ASCII: lowercase letters and digits, other runs become one `-`.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for character in name.trim().chars() {
        if character.is_ascii_alphanumeric() || character == '_' {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

fn is_email(text: &str) -> bool {
    let text = text.trim();
    match text.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn is_url(text: &str) -> bool {
    let text = text.trim();
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !text.chars().any(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_made_like_djangos() {
        assert_eq!(slugify("ACME Networks, Inc."), "acme-networks-inc");
        assert_eq!(slugify("  Lab_2  "), "lab_2");
        assert_eq!(slugify("Zürich"), "z-rich");
    }

    #[test]
    fn emails_and_urls_are_checked_loosely() {
        assert!(is_email("ops@example.org"));
        assert!(!is_email("ops@localhost"));
        assert!(!is_email("not an email@x.org"));
        assert!(is_url("https://example.org/path"));
        assert!(!is_url("ftp://example.org"));
        assert!(!is_url("https://"));
    }
}

//! `GET /categories/`: the firmware categories the user sees, with their organization, and
//! `POST /categories/`: the form that creates one, through the API's own create path (same
//! checks, same rules: managers create in their organizations, only superusers shared ones).

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use askama::Template;
use flashfleet_models::PageRequest;
use flashfleet_models::repository::CategoryFilter;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::{Layout, iso_time, redirect, render, render_with_status};
use crate::session::Viewer;

struct CategoryRow {
    id: String,
    name: String,
    description: String,
    organization: String,
    created: String,
    highlighted: bool,
}

/// An organization the form offers; an empty id is "shared" (superusers only).
pub(crate) struct OrganizationChoice {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Template)]
#[template(path = "categories.html")]
struct CategoriesPage {
    layout: Layout,
    categories: Vec<CategoryRow>,
    /// Where the viewer may create a category; empty: no form.
    choices: Vec<OrganizationChoice>,
    /// What the form held when it was refused, and why.
    form: CategoryForm,
    error: Option<String>,
}

/// The query of the categories page.
#[derive(Debug, Deserialize)]
pub(crate) struct CategoriesQuery {
    /// The category just created, to highlight.
    created: Option<Uuid>,
}

/// The fields of the create form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CategoryForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// The organization's id; empty for a shared category.
    #[serde(default)]
    organization: String,
}

/// `GET /categories/`.
pub(crate) async fn list(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    query: web::Query<CategoriesQuery>,
) -> Result<HttpResponse, DashboardError> {
    let page = categories_page(
        &dashboard,
        &viewer,
        query.created,
        CategoryForm::default(),
        None,
    )
    .await?;
    render(&page)
}

/// `POST /categories/`: creates a category, then shows it highlighted in the list; a refused
/// form comes back with its values and the API's messages.
pub(crate) async fn create(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    form: web::Form<CategoryForm>,
) -> Result<HttpResponse, DashboardError> {
    let form = form.into_inner();
    viewer.check_csrf(&form.csrf)?;
    let mut fields = Map::new();
    fields.insert(
        "name".to_owned(),
        Value::String(form.name.trim().to_owned()),
    );
    fields.insert(
        "description".to_owned(),
        Value::String(form.description.clone()),
    );
    fields.insert(
        "organization".to_owned(),
        if form.organization.is_empty() {
            Value::Null
        } else {
            Value::String(form.organization.clone())
        },
    );
    let input = flashfleet_api::input::Input::new(fields, false);
    match flashfleet_api::categories::create_category(dashboard.api(), &viewer.caller, input).await
    {
        Ok(category) => {
            tracing::info!(category = %category.id, user = %viewer.caller.actor.username, "category created from the dashboard");
            Ok(redirect(&format!("/categories/?created={}", category.id)))
        }
        Err(error) => {
            let (status, message) = DashboardError::from(error).into_form_refusal()?;
            let page = categories_page(&dashboard, &viewer, None, form, Some(message)).await?;
            render_with_status(&page, status)
        }
    }
}

async fn categories_page(
    dashboard: &Dashboard,
    viewer: &Viewer,
    created: Option<Uuid>,
    form: CategoryForm,
    error: Option<String>,
) -> Result<CategoriesPage, DashboardError> {
    let repository = dashboard.api().repository();
    let scope = viewer.caller.read_scope();
    let organizations = organization_names(dashboard, viewer).await?;
    let categories = repository
        .list_categories(&scope, &CategoryFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let categories = categories
        .items
        .into_iter()
        .map(|category| CategoryRow {
            id: category.id.to_string(),
            highlighted: created == Some(category.id.0),
            name: category.name,
            description: category.description,
            organization: category
                .organization_id
                .and_then(|id| organizations.get(&id.0).cloned())
                .unwrap_or_else(|| "shared".to_owned()),
            created: iso_time(category.created),
        })
        .collect();
    let mut choices: Vec<OrganizationChoice> = organizations
        .iter()
        .filter(|(id, _)| {
            viewer
                .caller
                .can_change(Some(flashfleet_models::OrganizationId(**id)))
        })
        .map(|(id, name)| OrganizationChoice {
            id: id.to_string(),
            name: name.clone(),
        })
        .collect();
    choices.sort_by(|a, b| a.name.cmp(&b.name));
    if viewer.caller.can_change(None) {
        choices.push(OrganizationChoice {
            id: String::new(),
            name: "Shared (every organization)".to_owned(),
        });
    }
    Ok(CategoriesPage {
        layout: Layout::new(viewer, "categories"),
        categories,
        choices,
        form,
        error,
    })
}

/// The names of the organizations the viewer sees, by id.
pub(crate) async fn organization_names(
    dashboard: &Dashboard,
    viewer: &Viewer,
) -> Result<HashMap<uuid::Uuid, String>, DashboardError> {
    let organizations = dashboard
        .api()
        .repository()
        .list_organizations(&viewer.caller.read_scope(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    Ok(organizations
        .items
        .into_iter()
        .map(|organization| (organization.id.0, organization.name))
        .collect())
}

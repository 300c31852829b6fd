//! `GET /categories/`: the firmware categories the user sees, with their organization.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use askama::Template;
use flashfleet_models::PageRequest;
use flashfleet_models::repository::CategoryFilter;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::{Layout, iso_time, render};
use crate::session::Viewer;

struct CategoryRow {
    id: String,
    name: String,
    description: String,
    organization: String,
    created: String,
}

#[derive(Template)]
#[template(path = "categories.html")]
struct CategoriesPage {
    layout: Layout,
    categories: Vec<CategoryRow>,
}

/// `GET /categories/`.
pub(crate) async fn list(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
) -> Result<HttpResponse, DashboardError> {
    let repository = dashboard.api().repository();
    let scope = viewer.caller.read_scope();
    let organizations = organization_names(&dashboard, &viewer).await?;
    let categories = repository
        .list_categories(&scope, &CategoryFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let categories = categories
        .items
        .into_iter()
        .map(|category| CategoryRow {
            id: category.id.to_string(),
            name: category.name,
            description: category.description,
            organization: category
                .organization_id
                .and_then(|id| organizations.get(&id.0).cloned())
                .unwrap_or_else(|| "shared".to_owned()),
            created: iso_time(category.created),
        })
        .collect();
    render(&CategoriesPage {
        layout: Layout::new(&viewer, "categories"),
        categories,
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

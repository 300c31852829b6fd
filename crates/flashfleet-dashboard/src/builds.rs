//! Builds and their images: `GET /builds/` (with the form of a new build), `POST /builds/`
//! (through the API's own create path), `GET /builds/{id}/` (the images with their metadata
//! and boards, the upload form) and `POST /builds/{id}/images` (the upload, through the API's
//! own upload path: streamed to storage, checked, then kept).

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use flashfleet_models::repository::{BuildFilter, CategoryFilter, ImageFilter};
use flashfleet_models::{Build, BuildId, Category, PageRequest};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::{Layout, iso_time, redirect, render, render_with_status};
use crate::session::Viewer;

struct BuildRow {
    id: String,
    version: String,
    category: String,
    os: String,
    created: String,
}

/// A category the new-build form offers.
struct CategoryChoice {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage {
    layout: Layout,
    builds: Vec<BuildRow>,
    /// The categories the viewer may add builds to; empty: no form.
    categories: Vec<CategoryChoice>,
    /// What the form held when it was refused, and why.
    form: BuildForm,
    error: Option<String>,
}

/// The fields of the new-build form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BuildForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    version: String,
    /// The OS identifier; empty for none.
    #[serde(default)]
    os: String,
    #[serde(default)]
    changelog: String,
}

/// One image as its build's page shows it.
struct ImageRow {
    id: String,
    image_type: String,
    label: String,
    file_name: String,
    size: String,
    sha256: String,
    boards: Vec<String>,
    /// The board names the image's own metadata lists (`supported_devices`).
    metadata_boards: Vec<String>,
    metadata: Option<String>,
    release: String,
    created: String,
    highlighted: bool,
}

#[derive(Template)]
#[template(path = "build.html")]
struct BuildPage {
    layout: Layout,
    id: String,
    version: String,
    category: String,
    os: String,
    changelog: String,
    created: String,
    images: Vec<ImageRow>,
    can_change: bool,
    error: Option<String>,
}

/// `GET /builds/`.
pub(crate) async fn list(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
) -> Result<HttpResponse, DashboardError> {
    render(&builds_page(&dashboard, &viewer, BuildForm::default(), None).await?)
}

/// `POST /builds/`: creates a build, then opens its page (where its images are uploaded); a
/// refused form comes back with its values and the API's messages.
pub(crate) async fn create(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    form: web::Form<BuildForm>,
) -> Result<HttpResponse, DashboardError> {
    let form = form.into_inner();
    viewer.check_csrf(&form.csrf)?;
    let mut fields = Map::new();
    fields.insert("category".to_owned(), Value::String(form.category.clone()));
    fields.insert(
        "version".to_owned(),
        Value::String(form.version.trim().to_owned()),
    );
    let os = form.os.trim();
    fields.insert(
        "os".to_owned(),
        if os.is_empty() {
            Value::Null
        } else {
            Value::String(os.to_owned())
        },
    );
    fields.insert(
        "changelog".to_owned(),
        Value::String(form.changelog.clone()),
    );
    let input = flashfleet_api::input::Input::new(fields, false);
    match flashfleet_api::builds::create_build(dashboard.api(), &viewer.caller, input).await {
        Ok((build, _)) => {
            tracing::info!(build = %build.id, user = %viewer.caller.actor.username, "build created from the dashboard");
            Ok(redirect(&format!("/builds/{}/", build.id)))
        }
        Err(error) => {
            let (status, message) = DashboardError::from(error).into_form_refusal()?;
            let page = builds_page(&dashboard, &viewer, form, Some(message)).await?;
            render_with_status(&page, status)
        }
    }
}

async fn builds_page(
    dashboard: &Dashboard,
    viewer: &Viewer,
    form: BuildForm,
    error: Option<String>,
) -> Result<BuildsPage, DashboardError> {
    let repository = dashboard.api().repository();
    let scope = viewer.caller.read_scope();
    let builds = repository
        .list_builds(&scope, &BuildFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let builds = builds
        .items
        .into_iter()
        .map(|(build, category)| BuildRow {
            id: build.id.to_string(),
            version: build.version,
            category: category.name,
            os: build.os.unwrap_or_default(),
            created: iso_time(build.created),
        })
        .collect();
    let categories = repository
        .list_categories(&scope, &CategoryFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let mut categories: Vec<CategoryChoice> = categories
        .items
        .into_iter()
        .filter(|category| viewer.caller.can_change(category.organization_id))
        .map(|category| CategoryChoice {
            id: category.id.to_string(),
            name: category.name,
        })
        .collect();
    categories.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(BuildsPage {
        layout: Layout::new(viewer, "builds"),
        builds,
        categories,
        form,
        error,
    })
}

/// The query of a build's page.
#[derive(Debug, Deserialize)]
pub(crate) struct BuildQuery {
    /// The image just uploaded, to highlight.
    uploaded: Option<Uuid>,
}

/// `GET /builds/{id}/`.
pub(crate) async fn detail(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    query: web::Query<BuildQuery>,
) -> Result<HttpResponse, DashboardError> {
    let (build, category) = flashfleet_api::builds::visible_build(
        dashboard.api(),
        &viewer.caller.read_scope(),
        BuildId(*id),
    )
    .await?;
    let page = build_page(&dashboard, &viewer, build, category, query.uploaded, None).await?;
    render(&page)
}

/// The CSRF token of a multipart form, in its URL: it is checked before the upload is read.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfQuery {
    csrf: String,
}

/// `POST /builds/{id}/images?csrf=...`: uploads an image (multipart `file`, optional `type`).
pub(crate) async fn upload(
    request: HttpRequest,
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    query: web::Query<CsrfQuery>,
    multipart: Multipart,
) -> Result<HttpResponse, DashboardError> {
    viewer.check_csrf(&query.csrf)?;
    let build_id = BuildId(*id);
    let content_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let api = dashboard.api();
    match flashfleet_api::images::upload(api, &viewer.caller, build_id, content_length, multipart)
        .await
    {
        Ok(image) => Ok(redirect(&format!(
            "/builds/{build_id}/?uploaded={}",
            image.id
        ))),
        Err(error) => {
            // What the user can fix is shown on the build's page, next to the form.
            let (status, message) = DashboardError::from(error).into_form_refusal()?;
            let (build, category) =
                flashfleet_api::builds::visible_build(api, &viewer.caller.read_scope(), build_id)
                    .await?;
            let page =
                build_page(&dashboard, &viewer, build, category, None, Some(message)).await?;
            render_with_status(&page, status)
        }
    }
}

async fn build_page(
    dashboard: &Dashboard,
    viewer: &Viewer,
    build: Build,
    category: Category,
    uploaded: Option<Uuid>,
    error: Option<String>,
) -> Result<BuildPage, DashboardError> {
    let api = dashboard.api();
    let images = api
        .repository()
        .list_images(
            &viewer.caller.read_scope(),
            build.id,
            &ImageFilter::default(),
            PageRequest::all(),
        )
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let images = images
        .items
        .into_iter()
        .map(|image| {
            let (label, boards) = flashfleet_api::images::image_boards(api, &image);
            let release = image
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.pointer("/version/version"))
                .and_then(|version| version.as_str())
                .unwrap_or("")
                .to_owned();
            let metadata_boards = image
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.get("supported_devices"))
                .and_then(|devices| devices.as_array())
                .map(|devices| {
                    devices
                        .iter()
                        .filter_map(|device| device.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ImageRow {
                metadata_boards,
                id: image.id.to_string(),
                highlighted: uploaded == Some(image.id.0),
                label: label.unwrap_or_default(),
                file_name: image.file_name,
                size: human_size(image.size),
                sha256: image.sha256,
                boards,
                metadata: image
                    .metadata
                    .as_ref()
                    .and_then(|metadata| serde_json::to_string_pretty(metadata).ok()),
                release,
                created: iso_time(image.created),
                image_type: image.image_type,
            }
        })
        .collect();
    Ok(BuildPage {
        layout: Layout::new(viewer, "builds"),
        id: build.id.to_string(),
        version: build.version,
        os: build.os.unwrap_or_default(),
        changelog: build.changelog,
        created: iso_time(build.created),
        can_change: viewer.caller.can_change(category.organization_id),
        category: category.name,
        images,
        error,
    })
}

/// A size in bytes as people read it (KiB, MiB).
fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(192 * 1024), "192.0 KiB");
        assert_eq!(human_size(30 * 1024 * 1024 + 512 * 1024), "30.5 MiB");
    }
}

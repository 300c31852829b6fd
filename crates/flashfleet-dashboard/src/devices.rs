//! Devices: `GET /devices/` (each device with the firmware it runs), `GET /devices/{id}/` (its
//! firmware, upgrade history with each operation's log, the form that assigns an image),
//! `POST /devices/{id}/firmware` (a single upgrade, through the API's `assign_image`) and
//! `POST /operations/{id}/cancel` (through the API's `cancel_operation`).

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use askama::Template;
use flashfleet_models::device_firmware::DEACTIVATED_DEVICE;
use flashfleet_models::repository::{BuildFilter, DeviceFilter, ImageFilter, OperationFilter};
use flashfleet_models::{
    Device, DeviceId, ImageId, OperationId, PageRequest, Scope, UpgradeOptions,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::Dashboard;
use crate::categories::organization_names;
use crate::error::DashboardError;
use crate::layout::{Layout, StatusLabel, iso_time, redirect, render};
use crate::session::Viewer;

/// How many devices a page of the list shows.
const DEVICES_PER_PAGE: u64 = 100;

struct DeviceRow {
    id: String,
    name: String,
    organization: String,
    model: String,
    address: String,
    firmware: String,
    installed: bool,
    deactivated: bool,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    devices: Vec<DeviceRow>,
    count: u64,
    /// The neighbour pages' numbers, when they exist.
    previous: Option<u64>,
    next: Option<u64>,
    /// The first and last position shown.
    first: u64,
    last: u64,
}

/// The query of the device list.
#[derive(Debug, Deserialize)]
pub(crate) struct DevicesQuery {
    /// The page, from 1.
    page: Option<u64>,
}

struct OperationRow {
    id: String,
    status: StatusLabel,
    phase: String,
    progress: u8,
    image: String,
    batch: String,
    created: String,
    finished: String,
    log: String,
    cancellable: bool,
}

struct ImageChoice {
    id: String,
    label: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    layout: Layout,
    id: String,
    name: String,
    organization: String,
    model: String,
    board_name: String,
    os: String,
    address: String,
    deactivated: bool,
    firmware: String,
    installed: bool,
    can_change: bool,
    may_force: bool,
    images: Vec<ImageChoice>,
    operations: Vec<OperationRow>,
    message: Option<String>,
}

/// `GET /devices/?page=N`: the devices, newest first, a hundred a page.
pub(crate) async fn list(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    query: web::Query<DevicesQuery>,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let scope = viewer.caller.read_scope();
    let organizations = organization_names(&dashboard, &viewer).await?;
    let page = query.page.unwrap_or(1).max(1);
    let devices = api
        .repository()
        .list_devices(
            &scope,
            &DeviceFilter::default(),
            PageRequest::page(page, DEVICES_PER_PAGE),
        )
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let last_page = devices.count.div_ceil(DEVICES_PER_PAGE).max(1);
    if page > last_page {
        return Ok(redirect(&format!("/devices/?page={last_page}")));
    }
    let labels = image_labels(&dashboard, &scope).await?;
    let ids: Vec<DeviceId> = devices.items.iter().map(|device| device.id).collect();
    let records: HashMap<Uuid, flashfleet_models::DeviceFirmware> = api
        .repository()
        .device_firmwares(&ids)
        .await
        .map_err(flashfleet_api::ApiError::from)?
        .into_iter()
        .map(|record| (record.device_id.0, record))
        .collect();
    let first = (page - 1) * DEVICES_PER_PAGE + 1;
    let shown = devices.items.len() as u64;
    let rows = devices
        .items
        .into_iter()
        .map(|device| {
            let record = records.get(&device.id.0);
            DeviceRow {
                id: device.id.to_string(),
                organization: organizations
                    .get(&device.organization_id.0)
                    .cloned()
                    .unwrap_or_default(),
                model: device.model,
                address: device.management_ip.unwrap_or_default(),
                firmware: record
                    .map(|record| labels.get(&record.image_id.0).cloned().unwrap_or_default())
                    .unwrap_or_default(),
                installed: record.is_some_and(|record| record.installed),
                deactivated: device.is_deactivated,
                name: device.name,
            }
        })
        .collect();
    render(&DevicesPage {
        layout: Layout::new(&viewer, "devices"),
        count: devices.count,
        devices: rows,
        previous: (page > 1).then(|| page - 1),
        next: (page < last_page).then(|| page + 1),
        first,
        last: first + shown.saturating_sub(1),
    })
}

/// The query of a device's page.
#[derive(Debug, Deserialize)]
pub(crate) struct DeviceQuery {
    /// What the last action did.
    done: Option<String>,
}

/// `GET /devices/{id}/`.
pub(crate) async fn detail(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    query: web::Query<DeviceQuery>,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let scope = viewer.caller.read_scope();
    let device = flashfleet_api::devices::visible_device(api, &scope, DeviceId(*id)).await?;
    let message = match query.done.as_deref() {
        Some("queued") => Some("The upgrade is queued.".to_owned()),
        Some("unchanged") => {
            Some("The device already runs this image; nothing was queued.".to_owned())
        }
        Some("cancelled") => Some("The upgrade was cancelled.".to_owned()),
        _ => None,
    };
    render(&device_page(&dashboard, &viewer, device, message).await?)
}

async fn device_page(
    dashboard: &Dashboard,
    viewer: &Viewer,
    device: Device,
    message: Option<String>,
) -> Result<DevicePage, DashboardError> {
    let api = dashboard.api();
    let repository = api.repository();
    let scope = viewer.caller.read_scope();
    let labels = image_labels(dashboard, &scope).await?;
    let organizations = organization_names(dashboard, viewer).await?;
    let record = repository
        .device_firmware(device.id)
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let filter = OperationFilter {
        device_id: Some(device.id),
        ..OperationFilter::default()
    };
    let operations = repository
        .list_operations(&scope, &filter, PageRequest::page(1, 50))
        .await
        .map_err(flashfleet_api::ApiError::from)?
        .items
        .into_iter()
        .map(|operation| OperationRow {
            id: operation.id.to_string(),
            cancellable: !operation.status.is_final(),
            status: StatusLabel::new(operation.status.as_str()),
            phase: operation.phase.as_str().to_owned(),
            progress: operation.progress,
            image: operation
                .image_id
                .and_then(|image| labels.get(&image.0).cloned())
                .unwrap_or_else(|| "(deleted image)".to_owned()),
            batch: operation
                .batch_id
                .map(|batch| batch.to_string())
                .unwrap_or_default(),
            created: iso_time(operation.created),
            finished: operation.finished.map(iso_time).unwrap_or_default(),
            log: operation.log,
        })
        .collect();
    let current_image = record.as_ref().map(|record| record.image_id.0);
    let mut images: Vec<ImageChoice> = candidate_images(dashboard, &scope, &device)
        .await?
        .into_iter()
        .map(|(id, label)| ImageChoice {
            current: current_image == Some(id),
            id: id.to_string(),
            label,
        })
        .collect();
    images.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(DevicePage {
        layout: Layout::new(viewer, "devices"),
        id: device.id.to_string(),
        organization: organizations
            .get(&device.organization_id.0)
            .cloned()
            .unwrap_or_default(),
        can_change: viewer.caller.can_change(Some(device.organization_id))
            && !device.is_deactivated,
        may_force: viewer.caller.may_force(device.organization_id),
        name: device.name,
        model: device.model,
        board_name: device.board_name,
        os: device.os,
        address: device.management_ip.unwrap_or_default(),
        deactivated: device.is_deactivated,
        firmware: current_image
            .and_then(|image| labels.get(&image).cloned())
            .unwrap_or_default(),
        installed: record.is_some_and(|record| record.installed),
        images,
        operations,
        message,
    })
}

/// The assign form.
#[derive(Deserialize)]
pub(crate) struct AssignForm {
    csrf: String,
    image: Uuid,
    #[serde(default)]
    flag_n: Option<String>,
    #[serde(default, rename = "flag_F")]
    flag_force: Option<String>,
}

/// `POST /devices/{id}/firmware`: assigns an image, queueing the device's upgrade.
pub(crate) async fn assign(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    form: web::Form<AssignForm>,
) -> Result<HttpResponse, DashboardError> {
    viewer.check_csrf(&form.csrf)?;
    let api = dashboard.api();
    let device = flashfleet_api::devices::writable_device(
        api,
        &viewer.caller,
        DeviceId(*id),
        DEACTIVATED_DEVICE,
    )
    .await?;
    let current = api
        .repository()
        .device_firmware(device.id)
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let mut options = serde_json::Map::new();
    if form.flag_n.is_some() {
        options.insert("n".to_owned(), serde_json::Value::Bool(true));
    }
    if form.flag_force.is_some() {
        options.insert("F".to_owned(), serde_json::Value::Bool(true));
    }
    let options = UpgradeOptions::from_json(serde_json::Value::Object(options))
        .map_err(flashfleet_api::ApiError::Invalid)?;
    let operation = flashfleet_api::device_firmware::assign_image(
        api,
        &viewer.caller,
        &device,
        current.as_ref(),
        ImageId(form.image),
        options,
    )
    .await?;
    let done = if operation.is_some() {
        "queued"
    } else {
        "unchanged"
    };
    tracing::info!(device = %device.id, image = %form.image, user = %viewer.caller.actor.username, done, "image assigned from the dashboard");
    Ok(redirect(&format!("/devices/{}/?done={done}", device.id)))
}

/// `POST /operations/{id}/cancel`: cancels an operation that has not started flashing.
pub(crate) async fn cancel_operation(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    form: web::Form<crate::session::CsrfForm>,
) -> Result<HttpResponse, DashboardError> {
    viewer.check_csrf(&form.csrf)?;
    let operation = flashfleet_api::operations::cancel_operation(
        dashboard.api(),
        &viewer.caller,
        OperationId(*id),
    )
    .await?;
    tracing::info!(operation = %operation.id, user = %viewer.caller.actor.username, "operation cancelled from the dashboard");
    Ok(redirect(&format!(
        "/devices/{}/?done=cancelled",
        operation.device_id
    )))
}

/// "<category> <version> · <image type>" of every image the viewer sees, by id.
async fn image_labels(
    dashboard: &Dashboard,
    scope: &Scope,
) -> Result<HashMap<Uuid, String>, DashboardError> {
    Ok(all_images(dashboard, scope)
        .await?
        .into_iter()
        .map(|(image, label, _)| (image, label))
        .collect())
}

/// The images that fit `device` (its model or board name among the image's boards).
async fn candidate_images(
    dashboard: &Dashboard,
    scope: &Scope,
    device: &Device,
) -> Result<Vec<(Uuid, String)>, DashboardError> {
    Ok(all_images(dashboard, scope)
        .await?
        .into_iter()
        .filter(|(_, _, boards)| {
            boards
                .iter()
                .any(|board| *board == device.model || *board == device.board_name)
        })
        .map(|(image, label, _)| (image, label))
        .collect())
}

/// Every image the viewer sees: its id, label and boards.
async fn all_images(
    dashboard: &Dashboard,
    scope: &Scope,
) -> Result<Vec<(Uuid, String, Vec<String>)>, DashboardError> {
    let api = dashboard.api();
    let repository = api.repository();
    let builds = repository
        .list_builds(scope, &BuildFilter::default(), PageRequest::all())
        .await
        .map_err(flashfleet_api::ApiError::from)?;
    let mut images = Vec::new();
    for (build, category) in builds.items {
        let build_images = repository
            .list_images(scope, build.id, &ImageFilter::default(), PageRequest::all())
            .await
            .map_err(flashfleet_api::ApiError::from)?;
        for image in build_images.items {
            let (_, boards) = flashfleet_api::images::image_boards(api, &image);
            images.push((
                image.id.0,
                format!("{} {} · {}", category.name, build.version, image.image_type),
                boards,
            ));
        }
    }
    Ok(images)
}

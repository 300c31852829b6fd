//! The mass-upgrade flow: `GET /builds/{id}/upgrade` (options, then the dry run: devices per
//! model, a compatibility verdict per device, the devices left out and why) and `POST
//! /builds/{id}/upgrade` (the confirmation, which starts the mass upgrade and goes to its
//! page). Both go through the API crate's `plan` and `start_mass_upgrade`.

use actix_web::{HttpResponse, web};
use askama::Template;
use flashfleet_engine::MassUpgradeRequest;
use flashfleet_models::upgrade_options::OPENWRT_FLAGS;
use flashfleet_models::{BuildId, Category, UpgradeOptions};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::{Layout, StatusLabel, redirect, render};
use crate::session::Viewer;

/// A sysupgrade flag of the options form.
struct FlagField {
    key: &'static str,
    title: &'static str,
    checked: bool,
    dangerous: bool,
}

struct PlannedRow {
    device: String,
    name: String,
    model: String,
    board_name: String,
    image_type: String,
    verdict: StatusLabel,
    message: String,
    included: bool,
}

struct SkippedRow {
    device: String,
    name: String,
    reason: String,
}

struct ModelCount {
    model: String,
    devices: usize,
}

#[derive(Template)]
#[template(path = "dry_run.html")]
struct DryRunPage {
    layout: Layout,
    build: String,
    version: String,
    category: String,
    flags: Vec<FlagField>,
    upgrade_all: bool,
    can_start: bool,
    planned: bool,
    total: usize,
    compatible: usize,
    incompatible: usize,
    unknown: usize,
    skipped_count: usize,
    by_model: Vec<ModelCount>,
    rows: Vec<PlannedRow>,
    skipped: Vec<SkippedRow>,
    error: Option<String>,
}

/// `GET /builds/{id}/upgrade`: the options form; with `plan=1`, the dry run of those options
/// and the confirmation form.
pub(crate) async fn dry_run(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, DashboardError> {
    let api = dashboard.api();
    let scope = viewer.caller.read_scope();
    let (build, category) =
        flashfleet_api::builds::visible_build(api, &scope, BuildId(*id)).await?;
    let choices = Choices::read(&query);
    let may_force = may_force(&viewer, &category);
    let mut page = DryRunPage {
        layout: Layout::new(&viewer, "batches"),
        build: build.id.to_string(),
        version: build.version,
        category: category.name.clone(),
        flags: OPENWRT_FLAGS
            .iter()
            .filter(|(key, _)| *key != "F" || may_force)
            .map(|&(key, title)| FlagField {
                key,
                title,
                checked: choices.flags.iter().any(|flag| flag.as_str() == key),
                dangerous: key == "F",
            })
            .collect(),
        upgrade_all: choices.upgrade_all,
        can_start: viewer.caller.can_change(category.organization_id),
        planned: false,
        total: 0,
        compatible: 0,
        incompatible: 0,
        unknown: 0,
        skipped_count: 0,
        by_model: Vec::new(),
        rows: Vec::new(),
        skipped: Vec::new(),
        error: None,
    };
    if !choices.plan {
        return render(&page);
    }
    let request = match choices.request(build.id) {
        Ok(request) => request,
        Err(message) => {
            page.error = Some(message);
            return render(&page);
        }
    };
    let plan = flashfleet_api::upgrades::plan(api, &scope, &request).await?;
    page.planned = true;
    page.total = plan.summary.total;
    page.compatible = plan.summary.compatible;
    page.incompatible = plan.summary.incompatible;
    page.unknown = plan.summary.unknown;
    page.skipped_count = plan.summary.skipped;
    page.by_model = plan
        .summary
        .by_model
        .into_iter()
        .map(|(model, devices)| ModelCount { model, devices })
        .collect();
    page.rows = plan
        .plan
        .into_iter()
        .map(|planned| PlannedRow {
            device: planned.device.to_string(),
            name: planned.name,
            model: planned.model,
            board_name: planned.board_name,
            image_type: planned.image_type,
            verdict: StatusLabel::new(verdict_class(planned.verdict.status)),
            message: planned.verdict.message,
            included: planned.included,
        })
        .collect();
    page.skipped = plan
        .skipped
        .into_iter()
        .map(|skipped| SkippedRow {
            device: skipped.device.to_string(),
            name: skipped.name,
            reason: skipped.reason,
        })
        .collect();
    render(&page)
}

/// `POST /builds/{id}/upgrade`: starts the mass upgrade confirmed on the dry run's page.
pub(crate) async fn start(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    id: web::Path<Uuid>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, DashboardError> {
    let csrf = form
        .iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    viewer.check_csrf(csrf)?;
    let api = dashboard.api();
    let (build, category) =
        flashfleet_api::builds::visible_build(api, &viewer.caller.read_scope(), BuildId(*id))
            .await?;
    viewer.caller.require_change(category.organization_id)?;
    let request = Choices::read(&form)
        .request(build.id)
        .map_err(flashfleet_api::ApiError::bad_request)?;
    let started =
        flashfleet_api::upgrades::start_mass_upgrade(&viewer.caller, api, &category, &request)
            .await?;
    tracing::info!(batch = %started.batch, user = %viewer.caller.actor.username, "mass upgrade started from the dashboard");
    Ok(redirect(&format!("/batches/{}/", started.batch)))
}

/// What the options form chose.
struct Choices {
    upgrade_all: bool,
    flags: Vec<String>,
    plan: bool,
}

impl Choices {
    fn read(fields: &[(String, String)]) -> Choices {
        let mut choices = Choices {
            upgrade_all: false,
            flags: Vec::new(),
            plan: false,
        };
        for (name, _) in fields {
            match name.as_str() {
                "upgrade_all" => choices.upgrade_all = true,
                "plan" => choices.plan = true,
                name => {
                    if let Some(flag) = name.strip_prefix("flag_")
                        && OPENWRT_FLAGS.iter().any(|(key, _)| *key == flag)
                    {
                        choices.flags.push(flag.to_owned());
                    }
                }
            }
        }
        choices
    }

    /// The engine's request for these choices, or why the options are refused.
    fn request(&self, build: BuildId) -> Result<MassUpgradeRequest, String> {
        let options: Map<String, Value> = self
            .flags
            .iter()
            .map(|flag| (flag.clone(), Value::Bool(true)))
            .collect();
        let upgrade_options =
            UpgradeOptions::from_json(Value::Object(options)).map_err(|errors| {
                errors
                    .iter()
                    .flat_map(|(_, messages)| messages.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })?;
        Ok(MassUpgradeRequest {
            build_id: Some(build),
            upgrade_all: self.upgrade_all,
            upgrade_options,
            ..MassUpgradeRequest::default()
        })
    }
}

/// Whether the viewer may use `-F` on devices of `category`'s organization (the API's rule).
fn may_force(viewer: &Viewer, category: &Category) -> bool {
    match category.organization_id {
        Some(organization) => viewer.caller.may_force(organization),
        None => viewer.caller.actor.is_superuser,
    }
}

/// The label class of a verdict.
fn verdict_class(status: &str) -> &str {
    match status {
        "compatible" | "compatible_without_keeping_config" => "compatible",
        "incompatible" => "incompatible",
        _ => "unknown",
    }
}

//! The dry run and the start of a mass upgrade (upstream endpoint 3): `GET` and `POST` on
//! `build/<id>/upgrade/`.
//!
//! The dry run answers upstream's two lists (`device_firmwares`, `devices`) and, beyond
//! upstream, the plan device by device: the image each would get and what OpenWrt would say of
//! it (the compatibility verdict), and the devices left out with the reason. Only devices of
//! the caller's organizations are shown, also for shared builds (upstream lists every
//! organization's devices to any manager).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use flashfleet_boards::Verdict;
use flashfleet_engine::{MassUpgradeRequest, UpgradePlan};
use flashfleet_models::{
    BuildId, Category, DeviceGroupId, DeviceId, RepoError, Scope, UpgradeOptions, ValidationErrors,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::builds::visible_build;
use crate::error::ApiError;
use crate::input::Input;
use crate::state::ApiState;

/// What OpenWrt would say of an image on a device.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictJson {
    /// `compatible`, `compatible_without_keeping_config`, `incompatible` or `unknown` (the
    /// image has no metadata: only the image map speaks for it).
    pub status: &'static str,
    /// The verdict in words.
    pub message: String,
    /// The verdict with its details (reason, compat versions).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<&Verdict> for VerdictJson {
    fn from(verdict: &Verdict) -> Self {
        let status = match verdict {
            Verdict::Compatible => "compatible",
            Verdict::CompatibleWithoutKeepingConfig { .. } => "compatible_without_keeping_config",
            Verdict::Incompatible { .. } => "incompatible",
            _ => "unknown",
        };
        VerdictJson {
            status,
            message: verdict.to_string(),
            detail: serde_json::to_value(verdict).unwrap_or_default(),
        }
    }
}

/// One device of a dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedDeviceJson {
    /// The device.
    pub device: Uuid,
    /// Its name.
    pub name: String,
    /// Its organization.
    pub organization: Uuid,
    /// Its model (`/tmp/sysinfo/model`).
    pub model: String,
    /// Its board name (`/tmp/sysinfo/board_name`).
    pub board_name: String,
    /// Its firmware record; `null` for a device with no known firmware.
    pub device_firmware: Option<Uuid>,
    /// The image it would get.
    pub image: Uuid,
    /// That image's type.
    pub image_type: String,
    /// What OpenWrt would say.
    pub verdict: VerdictJson,
    /// Whether the mass upgrade would include it (an incompatible image is left out unless the
    /// options force it with `-F`).
    pub included: bool,
}

/// A device the build concerns that a mass upgrade leaves out.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedDeviceJson {
    /// The device.
    pub device: Uuid,
    /// Its name.
    pub name: String,
    /// Why it is left out.
    pub reason: String,
}

/// Counts of a dry run.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PlanSummaryJson {
    /// Devices that would be upgraded.
    pub total: usize,
    /// Of which OpenWrt accepts the image.
    pub compatible: usize,
    /// Of which OpenWrt refuses the image (left out unless forced).
    pub incompatible: usize,
    /// Of which nothing can be said (images without metadata).
    pub unknown: usize,
    /// Devices left out for other reasons.
    pub skipped: usize,
    /// Devices that would be upgraded, per model.
    pub by_model: BTreeMap<String, usize>,
}

/// The dry run of a mass upgrade: upstream's two lists, then the plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunJson {
    /// Firmware records of the devices that run an image of the build's category (upstream).
    pub device_firmwares: Vec<Uuid>,
    /// Devices with no known firmware whose model an image of the build lists (upstream).
    pub devices: Vec<Uuid>,
    /// Every device the mass upgrade would touch, with its image and verdict.
    pub plan: Vec<PlannedDeviceJson>,
    /// Devices left out, and why.
    pub skipped: Vec<SkippedDeviceJson>,
    /// Counts.
    pub summary: PlanSummaryJson,
}

/// The body of a mass upgrade.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct MassUpgradeInput {
    /// Also upgrade devices with no known firmware whose model matches (default false).
    upgrade_all: Option<bool>,
    /// Only devices of this group.
    group: Option<Uuid>,
    /// Not supported (flashfleet has no locations); must be absent or null.
    location: Option<Uuid>,
    /// Only these devices (of those the build concerns).
    devices: Option<Vec<Uuid>>,
    /// sysupgrade options (`c`, `o`, `n`, `u`, `p`, `k`, `F`); `F` needs an owner or superuser.
    #[schema(value_type = Option<Object>)]
    upgrade_options: Option<serde_json::Value>,
    /// Integrators' own fields of the mass upgrade.
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

/// What starting a mass upgrade did.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedJson {
    /// The mass upgrade (upstream's only key).
    pub batch: Uuid,
    /// How many operations were queued.
    pub operations: usize,
    /// Devices left out, and why.
    pub skipped: Vec<SkippedDeviceJson>,
}

/// The dry run: which devices a mass upgrade of this build would touch.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/{id}/upgrade/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path), ("group" = Option<Uuid>, Query, description = "Only devices of this group"),
        ("upgrade_options" = Option<String>, Query, description = "sysupgrade options as JSON, for the verdicts (`{\"n\": true}`)")),
    responses((status = 200, body = DryRunJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn dry_run(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let (build, _) = visible_build(&state, &scope, BuildId(*id)).await?;
    let mut query = Input::from_query(&request);
    let mut mass_upgrade = read_request(&mut query, build.id);
    query.finish()?;
    mass_upgrade.upgrade_all = true;
    Ok(HttpResponse::Ok().json(plan(&state, &scope, &mass_upgrade).await?))
}

/// The dry run of `mass_upgrade` for a caller whose read scope is `scope`: the devices it
/// would touch (of the caller's organizations only), each with its image and verdict, and
/// those it would leave out, with the reason. Check first that the caller sees the build.
pub async fn plan(
    state: &ApiState,
    scope: &Scope,
    mass_upgrade: &MassUpgradeRequest,
) -> Result<DryRunJson, ApiError> {
    let plan = state
        .engine()
        .plan_mass_upgrade(scope, mass_upgrade)
        .await
        .map_err(filter_errors)?;
    Ok(dry_run_json(scope, mass_upgrade, plan))
}

/// Starts a mass upgrade of this build: `201 {"batch": <id>}`.
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/build/{id}/upgrade/", tag = "firmware-upgrader",
    params(("id" = Uuid, Path)),
    request_body(content = MassUpgradeInput, content_type = "application/json"),
    responses((status = 201, body = StartedJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn start(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<Uuid>,
    mut input: Input,
) -> Result<HttpResponse, ApiError> {
    let (build, category) = visible_build(&state, &caller.read_scope(), BuildId(*id)).await?;
    caller.require_change(category.organization_id)?;
    let mut mass_upgrade = read_request(&mut input, build.id);
    mass_upgrade.upgrade_all = input.boolean("upgrade_all").unwrap_or(false);
    mass_upgrade.details = input.object("details").unwrap_or_default();
    input.finish()?;
    Ok(HttpResponse::Created()
        .json(start_mass_upgrade(&caller, &state, &category, &mass_upgrade).await?))
}

/// Starts `mass_upgrade` (of a build of `category`) for `caller`: the engine queues one
/// operation per device; `-F` needs an owner of the category's organization or a superuser.
/// Check first that the caller sees the build and may change it.
pub async fn start_mass_upgrade(
    caller: &Caller,
    state: &ApiState,
    category: &Category,
    mass_upgrade: &MassUpgradeRequest,
) -> Result<StartedJson, ApiError> {
    let allow_force = match category.organization_id {
        Some(organization) => caller.may_force(organization),
        None => caller.actor.is_superuser,
    };
    let started = state
        .engine()
        .start_mass_upgrade(&caller.write_scope(), mass_upgrade, allow_force)
        .await
        .map_err(|error| match filter_errors(error) {
            // Upstream answers its batch errors as {"error": "<message>"}.
            ApiError::Invalid(errors) => {
                let message = errors.to_string();
                ApiError::Invalid(errors).with_member("error", message)
            }
            other => other,
        })?;
    tracing::info!(batch = %started.batch.id, build = ?mass_upgrade.build_id, operations = started.operations.len(), "mass upgrade started");
    Ok(StartedJson {
        batch: started.batch.id.0,
        operations: started.operations.len(),
        skipped: started
            .skipped
            .into_iter()
            .map(|skipped| SkippedDeviceJson {
                device: skipped.device.id.0,
                name: skipped.device.name,
                reason: skipped.reason,
            })
            .collect(),
    })
}

/// The parameters common to the dry run (query) and the start (body).
fn read_request(input: &mut Input, build: BuildId) -> MassUpgradeRequest {
    let group_id = input.nullable_id::<DeviceGroupId>("group").flatten();
    if let Some(Some(location)) = input.nullable_id::<Uuid>("location") {
        input.error(
            "location",
            format!("Invalid pk \"{location}\" - object does not exist."),
        );
    }
    let devices = input.id_list::<DeviceId>("devices");
    let upgrade_options = upgrade_options(input);
    MassUpgradeRequest {
        build_id: Some(build),
        group_id,
        devices,
        upgrade_options,
        ..MassUpgradeRequest::default()
    }
}

/// The `upgrade_options` field: an object of sysupgrade flags (empty when absent).
pub(crate) fn upgrade_options(input: &mut Input) -> UpgradeOptions {
    let Some(options) = input.object("upgrade_options") else {
        return UpgradeOptions::default();
    };
    match UpgradeOptions::from_json(serde_json::Value::Object(options)) {
        Ok(options) => options,
        Err(errors) => {
            for (field, messages) in errors.iter() {
                let field = if field == ValidationErrors::NON_FIELD {
                    "upgrade_options"
                } else {
                    field
                };
                for message in messages {
                    input.error(field, message.clone());
                }
            }
            UpgradeOptions::default()
        }
    }
}

/// A group that does not exist or is outside the caller's organizations is an invalid choice,
/// as upstream's serializer says.
fn filter_errors(error: flashfleet_engine::EngineError) -> ApiError {
    match error {
        flashfleet_engine::EngineError::Repository(RepoError::Invalid(errors))
            if !errors.messages("group").is_empty() =>
        {
            let mut renamed = ValidationErrors::new();
            for (field, messages) in errors.iter() {
                for message in messages {
                    let message = if field == "group" && message == "Invalid group." {
                        "Invalid pk - object does not exist.".to_owned()
                    } else {
                        message.clone()
                    };
                    renamed.add(field, message);
                }
            }
            ApiError::Invalid(renamed)
        }
        error => error.into(),
    }
}

fn dry_run_json(scope: &Scope, request: &MassUpgradeRequest, plan: UpgradePlan) -> DryRunJson {
    let force = request.upgrade_options.flag("F") == Some(true);
    let mut json = DryRunJson {
        device_firmwares: Vec::new(),
        devices: Vec::new(),
        plan: Vec::new(),
        skipped: Vec::new(),
        summary: PlanSummaryJson::default(),
    };
    for planned in plan.upgrades {
        if !scope.contains(Some(planned.device.organization_id)) {
            continue;
        }
        match &planned.device_firmware {
            Some(device_firmware) => json.device_firmwares.push(device_firmware.id.0),
            None => json.devices.push(planned.device.id.0),
        }
        let included = !matches!(planned.verdict, Verdict::Incompatible { .. }) || force;
        match &planned.verdict {
            Verdict::Compatible | Verdict::CompatibleWithoutKeepingConfig { .. } => {
                json.summary.compatible += 1;
            }
            Verdict::Incompatible { .. } => json.summary.incompatible += 1,
            _ => json.summary.unknown += 1,
        }
        json.summary.total += 1;
        *json
            .summary
            .by_model
            .entry(planned.device.model.clone())
            .or_default() += 1;
        json.plan.push(PlannedDeviceJson {
            device: planned.device.id.0,
            name: planned.device.name,
            organization: planned.device.organization_id.0,
            model: planned.device.model,
            board_name: planned.device.board_name,
            device_firmware: planned.device_firmware.map(|record| record.id.0),
            image: planned.image.id.0,
            image_type: planned.image.image_type,
            verdict: VerdictJson::from(&planned.verdict),
            included,
        });
    }
    for skipped in plan.skipped {
        if !scope.contains(Some(skipped.device.organization_id)) {
            continue;
        }
        json.skipped.push(SkippedDeviceJson {
            device: skipped.device.id.0,
            name: skipped.device.name,
            reason: skipped.reason,
        });
    }
    json.summary.skipped = json.skipped.len();
    json
}

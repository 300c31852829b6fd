//! Single and mass upgrades: which devices a build would touch (the dry run), queueing them,
//! and cancelling.

use std::collections::HashSet;

use flashfleet_boards::{DeviceIdentity, SysupgradeOptions, Verdict, check_compatibility};
use flashfleet_models::batch::{NO_DEVICES_FOUND, validate_batch_group};
use flashfleet_models::device_firmware::{AssignmentCheck, validate_assignment};
use flashfleet_models::repository::{ImageFilter, OperationFilter};
use flashfleet_models::{
    BatchId, BatchStatus, BatchUpgradeOperation, BuildId, Details, Device, DeviceFirmware,
    DeviceGroupId, DeviceId, FirmwareImage, ImageId, NewBatch, NewUpgradeOperation, OperationId,
    PageRequest, RepoError, Scope, UpgradeOperation, UpgradeOptions, UpgradeStatus,
    ValidationErrors,
};

use crate::error::EngineError;
use crate::events::Event;
use crate::runner::image_metadata;
use crate::worker::Engine;

/// What a mass upgrade of a build should do.
#[derive(Clone, Debug, Default)]
pub struct MassUpgradeRequest {
    /// The build to install.
    pub build_id: Option<BuildId>,
    /// Also upgrade devices with no known firmware whose model matches an image of the build
    /// (upstream's `upgrade_all`).
    pub upgrade_all: bool,
    /// Only devices of this group.
    pub group_id: Option<DeviceGroupId>,
    /// Only these devices (of those the build would touch).
    pub devices: Option<Vec<DeviceId>>,
    /// Options for every upgrade.
    pub upgrade_options: UpgradeOptions,
    /// Integrators' fields of the batch.
    pub details: Details,
}

/// One device a mass upgrade would touch.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedUpgrade {
    /// The device.
    pub device: Device,
    /// Its firmware record (`None`: a device with no known firmware, matched by its model).
    pub device_firmware: Option<DeviceFirmware>,
    /// The image of the build it would get.
    pub image: FirmwareImage,
    /// What OpenWrt would say of that image on that device (from the image's metadata, or the
    /// image map when the image has none).
    pub verdict: Verdict,
}

/// A device the build concerns but a mass upgrade leaves out, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedDevice {
    /// The device.
    pub device: Device,
    /// Why it is left out.
    pub reason: String,
}

/// The dry run of a mass upgrade: what it would do, written nowhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpgradePlan {
    /// Devices that would be upgraded: known devices first, then devices without known
    /// firmware, each part newest first (upstream's order).
    pub upgrades: Vec<PlannedUpgrade>,
    /// Devices left out, and why.
    pub skipped: Vec<SkippedDevice>,
}

/// What [`Engine::start_mass_upgrade`] queued.
#[derive(Clone, Debug, PartialEq)]
pub struct StartedMassUpgrade {
    /// The batch.
    pub batch: BatchUpgradeOperation,
    /// One queued operation per upgraded device.
    pub operations: Vec<UpgradeOperation>,
    /// Devices left out, and why.
    pub skipped: Vec<SkippedDevice>,
}

impl Engine {
    /// The dry run of a mass upgrade (upstream §1.5): the devices whose firmware belongs to the
    /// build's category and that have an image of this build for their image type, plus, with
    /// `upgrade_all`, devices without firmware record whose model an image of the build lists;
    /// narrowed by group and device list; each with the compatibility verdict of its image.
    /// `scope` is the caller's: a build outside it is not found.
    pub async fn plan_mass_upgrade(
        &self,
        scope: &Scope,
        request: &MassUpgradeRequest,
    ) -> Result<UpgradePlan, EngineError> {
        let repository = &self.shared().repository;
        let build_id = request
            .build_id
            .ok_or_else(|| invalid("build", "This field is required."))?;
        let Some((build, category)) = repository.build(scope, build_id).await? else {
            return Err(EngineError::NotFound { what: "build" });
        };
        if let Some(group_id) = request.group_id {
            let group = repository
                .group(scope, group_id)
                .await?
                .ok_or_else(|| invalid("group", "Invalid group."))?;
            validate_batch_group(category.organization_id, Some(group.organization_id))
                .map_err(|errors| EngineError::Repository(RepoError::Invalid(errors)))?;
        }
        let images = repository
            .list_images(
                &Scope::All,
                build.id,
                &ImageFilter::default(),
                PageRequest::all(),
            )
            .await?
            .items;
        let image_map = self.image_map();
        let mut boards: Vec<String> = images
            .iter()
            .filter_map(|image| image_map.boards_for_image(&image.image_type))
            .flatten()
            .cloned()
            .collect();
        boards.sort();
        boards.dedup();
        let candidates = repository
            .upgrade_candidates(
                &build,
                category.organization_id,
                &boards,
                request.upgrade_all,
                request.group_id,
            )
            .await?;
        let keep_config = !request
            .upgrade_options
            .sysupgrade_flags()
            .iter()
            .any(|flag| flag == "-n");
        // Devices with an unfinished operation are left out (queue_batch guarantees it under
        // concurrency; reading them here lets the plan say so, and lets a mass upgrade whose
        // devices are all busy be refused before a batch is written).
        let busy: HashSet<DeviceId> = repository
            .list_operations(
                &Scope::All,
                &OperationFilter {
                    status: Some(UpgradeStatus::InProgress),
                    organization_id: category.organization_id,
                    ..OperationFilter::default()
                },
                PageRequest::all(),
            )
            .await?
            .items
            .into_iter()
            .map(|operation| operation.device_id)
            .collect();
        let mut plan = UpgradePlan::default();
        for candidate in candidates {
            if let Some(devices) = &request.devices
                && !devices.contains(&candidate.device.id)
            {
                continue;
            }
            if busy.contains(&candidate.device.id) {
                plan.skipped.push(SkippedDevice {
                    device: candidate.device,
                    reason: BUSY.to_owned(),
                });
                continue;
            }
            let image = match &candidate.current_image_type {
                Some(current_type) => images
                    .iter()
                    .find(|image| &image.image_type == current_type),
                None => images.iter().find(|image| {
                    image_map.lists_board(&image.image_type, &candidate.device.model)
                }),
            };
            let Some(image) = image else {
                plan.skipped.push(SkippedDevice {
                    reason: format!(
                        "build {} has no image of type \"{}\"",
                        build.version,
                        candidate.current_image_type.as_deref().unwrap_or_default()
                    ),
                    device: candidate.device,
                });
                continue;
            };
            let verdict = verdict(image_map, image, &candidate.device, keep_config);
            plan.upgrades.push(PlannedUpgrade {
                device: candidate.device,
                device_firmware: candidate.device_firmware,
                image: image.clone(),
                verdict,
            });
        }
        Ok(plan)
    }

    /// Starts a mass upgrade: plans it ([`Engine::plan_mass_upgrade`]) and queues one operation
    /// per device in one transaction. Devices whose image OpenWrt would refuse are left out
    /// (unless the options force the flash with `-F`), as are devices with an unfinished
    /// operation. Refused with upstream's "No devices found ..." when nothing is left.
    pub async fn start_mass_upgrade(
        &self,
        scope: &Scope,
        request: &MassUpgradeRequest,
        allow_force: bool,
    ) -> Result<StartedMassUpgrade, EngineError> {
        let plan = self.plan_mass_upgrade(scope, request).await?;
        let force = request.upgrade_options.flag("F") == Some(true);
        let mut skipped = plan.skipped;
        let mut batch = NewBatch::new(
            request
                .build_id
                .ok_or_else(|| invalid("build", "This field is required."))?,
        );
        batch.group_id = request.group_id;
        batch.upgrade_options = request.upgrade_options.clone();
        batch.upgrade_all = request.upgrade_all;
        batch.details = request.details.clone();
        let batch = batch.into_batch();
        let mut upgrades = Vec::new();
        for planned in plan.upgrades {
            if let Verdict::Incompatible { .. } = &planned.verdict
                && !force
            {
                skipped.push(SkippedDevice {
                    reason: planned.verdict.to_string(),
                    device: planned.device,
                });
                continue;
            }
            if let Err(errors) = self
                .check_options(&planned.device, &request.upgrade_options, allow_force)
                .await?
            {
                return Err(EngineError::Repository(RepoError::Invalid(errors)));
            }
            let device_firmware = match planned.device_firmware {
                Some(mut existing) => {
                    existing.image_id = planned.image.id;
                    existing
                }
                None => DeviceFirmware::new(planned.device.id, planned.image.id, false),
            };
            let mut operation = NewUpgradeOperation::new(planned.device.id, planned.image.id);
            operation.batch_id = Some(batch.id);
            operation.upgrade_options = request.upgrade_options.clone();
            upgrades.push((device_firmware, operation.into_operation()));
        }
        if upgrades.is_empty() {
            return Err(invalid(ValidationErrors::NON_FIELD, NO_DEVICES_FOUND));
        }
        let (batch, operations, busy) = self
            .shared()
            .repository
            .queue_batch(&batch, &upgrades)
            .await?;
        for device_id in busy {
            if let Some(device) = self
                .shared()
                .repository
                .device(&Scope::All, device_id)
                .await?
            {
                skipped.push(SkippedDevice {
                    device,
                    reason: BUSY.to_owned(),
                });
            }
        }
        for operation in &operations {
            self.shared()
                .events
                .publish(Event::Operation(Box::new(operation.clone())));
        }
        if let Some((stored, counters)) = self
            .shared()
            .repository
            .refresh_batch_status(batch.id)
            .await?
        {
            self.shared().events.publish(Event::Batch {
                batch: Box::new(stored),
                counters,
            });
        }
        self.wake();
        Ok(StartedMassUpgrade {
            batch,
            operations,
            skipped,
        })
    }

    /// Assigns `image_id` to `device_id` and queues its upgrade (upstream's DeviceFirmware save,
    /// §1.4): refused for deactivated devices, images of another organization, devices without
    /// connection, models the image does not list, invalid options, and devices with an
    /// unfinished operation. Assigning the image a device already runs (installed) starts
    /// nothing and returns `None`.
    pub async fn upgrade_device(
        &self,
        scope: &Scope,
        device_id: DeviceId,
        image_id: ImageId,
        upgrade_options: UpgradeOptions,
        allow_force: bool,
    ) -> Result<Option<UpgradeOperation>, EngineError> {
        let repository = &self.shared().repository;
        let device = repository
            .device(scope, device_id)
            .await?
            .ok_or(EngineError::NotFound { what: "device" })?;
        let image = repository.image(scope, image_id).await?.ok_or_else(|| {
            invalid(
                "image",
                format!("Invalid pk \"{image_id}\" - object does not exist."),
            )
        })?;
        let Some((_, category)) = repository.build(&Scope::All, image.build_id).await? else {
            return Err(EngineError::NotFound { what: "build" });
        };
        let current = repository.device_firmware(device.id).await?;
        let starts_upgrade = DeviceFirmware::starts_upgrade(current.as_ref(), image.id);
        let has_connection = !repository.connections(device.id).await?.is_empty();
        let image_map = self.image_map();
        let boards: Vec<String> = image_map
            .boards_for_image(&image.image_type)
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        let metadata_lists_board = image_metadata(&image)
            .and_then(|metadata| metadata.active_supported_devices().map(<[String]>::to_vec))
            .is_some_and(|devices| devices.contains(&device.board_name));
        // An image typed from its own metadata lists board names, not models: accept the device
        // when its board name is listed.
        let boards = if boards.is_empty() && metadata_lists_board {
            vec![device.model.clone()]
        } else {
            boards
        };
        validate_assignment(&AssignmentCheck {
            device: &device,
            image_organization: category.organization_id,
            image_boards: &boards,
            has_connection,
            starts_upgrade,
            skip_connection_check: false,
        })
        .map_err(|errors| EngineError::Repository(RepoError::Invalid(errors)))?;
        if !starts_upgrade {
            return Ok(None);
        }
        if let Err(errors) = self
            .check_options(&device, &upgrade_options, allow_force)
            .await?
        {
            return Err(EngineError::Repository(RepoError::Invalid(errors)));
        }
        let device_firmware = match current {
            Some(mut existing) => {
                existing.image_id = image.id;
                existing
            }
            None => DeviceFirmware::new(device.id, image.id, false),
        };
        let mut operation = NewUpgradeOperation::new(device.id, image.id);
        operation.upgrade_options = upgrade_options;
        let operation = repository
            .queue_upgrade(&device_firmware, &operation.into_operation())
            .await?;
        self.shared()
            .events
            .publish(Event::Operation(Box::new(operation.clone())));
        self.wake();
        Ok(Some(operation))
    }

    /// Cancels an operation that has not reached the flash (upstream `cancel()`); refused with
    /// the reason otherwise. The upgrader notices at its next checkpoint and restores what it
    /// changed.
    pub async fn cancel_operation(
        &self,
        scope: &Scope,
        id: OperationId,
    ) -> Result<UpgradeOperation, EngineError> {
        let repository = &self.shared().repository;
        if repository.operation(scope, id).await?.is_none() {
            return Err(EngineError::NotFound {
                what: "upgrade operation",
            });
        }
        let cancelled = repository
            .cancel_operation(id)
            .await?
            .ok_or(EngineError::NotFound {
                what: "upgrade operation",
            })?;
        let batch_id = cancelled.batch_id;
        self.shared()
            .events
            .publish(Event::Operation(Box::new(cancelled.clone())));
        if let Some(batch_id) = batch_id
            && let Some((batch, counters)) = repository.refresh_batch_status(batch_id).await?
        {
            self.shared().events.publish(Event::Batch {
                batch: Box::new(batch),
                counters,
            });
        }
        Ok(cancelled)
    }

    /// Cancels every operation of a batch that has not reached the flash; the others finish.
    /// Returns the cancelled operations.
    pub async fn cancel_mass_upgrade(
        &self,
        scope: &Scope,
        id: BatchId,
    ) -> Result<Vec<UpgradeOperation>, EngineError> {
        let repository = &self.shared().repository;
        if repository.batch(scope, id).await?.is_none() {
            return Err(EngineError::NotFound {
                what: "mass upgrade",
            });
        }
        let filter = OperationFilter {
            batch_id: Some(id),
            status: Some(flashfleet_models::UpgradeStatus::InProgress),
            ..OperationFilter::default()
        };
        let unfinished = repository
            .list_operations(&Scope::All, &filter, PageRequest::all())
            .await?
            .items;
        let mut cancelled = Vec::new();
        for operation in unfinished {
            match self.cancel_operation(&Scope::All, operation.id).await {
                Ok(operation) => cancelled.push(operation),
                // Past the flash, or finished meanwhile: it finishes on its own.
                Err(EngineError::Repository(RepoError::Cancel(_) | RepoError::Transition(_))) => {}
                Err(error) => return Err(error),
            }
        }
        if cancelled.is_empty()
            && let Some(batch) = repository.batch(&Scope::All, id).await?
            && batch.status == BatchStatus::Idle
        {
            repository
                .set_batch_status(id, BatchStatus::Cancelled)
                .await
                .ok();
        }
        Ok(cancelled)
    }

    /// Checks `options` with the upgrader of the device's first connection that has one.
    async fn check_options(
        &self,
        device: &Device,
        options: &UpgradeOptions,
        allow_force: bool,
    ) -> Result<Result<(), ValidationErrors>, EngineError> {
        if options.is_empty() {
            return Ok(Ok(()));
        }
        let connections = self.shared().repository.connections(device.id).await?;
        let upgrader = connections
            .iter()
            .find_map(|(connection, _)| self.shared().upgraders.get(&connection.connection_type));
        Ok(match upgrader {
            Some(upgrader) => upgrader.validate_options(options, allow_force),
            None => Err(ValidationErrors::non_field(
                "No related connection or credentials found for this device.",
            )),
        })
    }
}

fn verdict(
    image_map: &flashfleet_boards::ImageMap,
    image: &FirmwareImage,
    device: &Device,
    keep_config: bool,
) -> Verdict {
    let metadata = image_metadata(image);
    if device.board_name.is_empty() && metadata.is_some() {
        // The device has not reported its board name yet: the metadata cannot be checked.
        return Verdict::Unknown {
            map_lists_model: image_map.lists_board(&image.image_type, &device.model),
        };
    }
    check_compatibility(
        image_map,
        &image.image_type,
        metadata.as_ref(),
        &DeviceIdentity {
            board_name: &device.board_name,
            model: &device.model,
            compat_version: None,
        },
        SysupgradeOptions {
            keep_config,
            ignore_minor_compat_version: false,
        },
    )
}

/// Why a device with an unfinished operation is left out of a mass upgrade.
const BUSY: &str = "another upgrade operation is in progress";

fn invalid(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::Repository(RepoError::Invalid(ValidationErrors::field(field, message)))
}

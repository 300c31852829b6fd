//! Device hooks for an embedding controller (upstream §3.6): when a device registers or reports
//! another OS, and when an image is added, record which image devices run — without upgrading
//! anything.

use flashfleet_models::repository::{BuildFilter, DeviceFilter, ImageFilter};
use flashfleet_models::{
    Device, DeviceFirmware, DeviceId, FirmwareImage, ImageId, PageRequest, Scope,
};

use crate::error::EngineError;
use crate::worker::Engine;

impl Engine {
    /// Call when a device registers, or reports another OS identifier (openwisp-controller's
    /// `device_registered` signal): when a build of the device's organization (or a shared
    /// build) has the device's OS identifier and an image for the device's model, records that
    /// the device runs that image (installed), so later mass upgrades of the category include
    /// it. Never starts an upgrade, and leaves a device with an unfinished upgrade alone.
    /// Returns the record written, if any.
    pub async fn device_registered(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<DeviceFirmware>, EngineError> {
        let repository = &self.shared().repository;
        let device = repository
            .device(&Scope::All, device_id)
            .await?
            .ok_or(EngineError::NotFound { what: "device" })?;
        let Some(image) = self.image_running_on(&device).await? else {
            return Ok(None);
        };
        let current = repository.device_firmware(device.id).await?;
        if current
            .as_ref()
            .is_some_and(|current| current.image_id == image.id && current.installed)
        {
            return Ok(None);
        }
        if current.is_some() && repository.unfinished_operation(device.id).await?.is_some() {
            // An upgrade is under way: its outcome decides the record.
            return Ok(None);
        }
        let device_firmware = match current {
            Some(mut current) => {
                current.image_id = image.id;
                current.installed = true;
                current
            }
            None => DeviceFirmware::new(device.id, image.id, true),
        };
        let stored = repository.save_device_firmware(&device_firmware).await?;
        tracing::info!(device = %device.id, image = %image.id, "recorded the image a device runs from its OS identifier");
        Ok(Some(stored))
    }

    /// Call when an image is added (upstream's `create_all_device_firmwares`): every device of
    /// the build's organization (any organization for a shared build) that has no firmware
    /// record, reports the build's OS identifier and has a model the image lists, is recorded
    /// as running it. Returns the records written.
    pub async fn image_added(&self, image_id: ImageId) -> Result<Vec<DeviceFirmware>, EngineError> {
        let repository = &self.shared().repository;
        let image = repository
            .image(&Scope::All, image_id)
            .await?
            .ok_or(EngineError::NotFound { what: "image" })?;
        let Some((build, category)) = repository.build(&Scope::All, image.build_id).await? else {
            return Ok(Vec::new());
        };
        let Some(os) = build.os else {
            return Ok(Vec::new());
        };
        let scope = match category.organization_id {
            Some(organization_id) => Scope::Organizations {
                ids: vec![organization_id],
                include_shared: false,
            },
            None => Scope::All,
        };
        let filter = DeviceFilter {
            os: Some(os),
            ..DeviceFilter::default()
        };
        let devices = repository
            .list_devices(&scope, &filter, PageRequest::all())
            .await?
            .items;
        let mut recorded = Vec::new();
        for device in devices {
            if device.is_deactivated
                || !self
                    .image_map()
                    .lists_board(&image.image_type, &device.model)
            {
                continue;
            }
            if repository.device_firmware(device.id).await?.is_some() {
                continue;
            }
            recorded.push(
                repository
                    .save_device_firmware(&DeviceFirmware::new(device.id, image.id, true))
                    .await?,
            );
        }
        Ok(recorded)
    }

    /// The image of the newest build whose OS identifier the device reports and that has an
    /// image for the device's model.
    async fn image_running_on(
        &self,
        device: &Device,
    ) -> Result<Option<FirmwareImage>, EngineError> {
        if device.os.is_empty() || device.model.is_empty() {
            return Ok(None);
        }
        let image_types: Vec<&str> = self
            .image_map()
            .images_for_board(&device.model)
            .iter()
            .map(|entry| entry.image_type())
            .collect();
        if image_types.is_empty() {
            return Ok(None);
        }
        let repository = &self.shared().repository;
        let scope = Scope::Organizations {
            ids: vec![device.organization_id],
            include_shared: true,
        };
        let filter = BuildFilter {
            os: Some(device.os.clone()),
            ..BuildFilter::default()
        };
        for (build, _) in repository
            .list_builds(&scope, &filter, PageRequest::all())
            .await?
            .items
        {
            let images = repository
                .list_images(
                    &Scope::All,
                    build.id,
                    &ImageFilter::default(),
                    PageRequest::all(),
                )
                .await?
                .items;
            // Image types are listed in the map's candidate order: the first that matches wins.
            for image_type in &image_types {
                if let Some(image) = images.iter().find(|image| image.image_type == *image_type) {
                    return Ok(Some(image.clone()));
                }
            }
        }
        Ok(None)
    }
}

//! Devices (openwisp-controller's `/api/v1/controller/device/`).

use flashfleet_models::{Device, DeviceId, Scope};

use crate::error::ApiError;
use crate::state::ApiState;

/// The device `id` if the caller sees it; upstream's 404 "device not found" otherwise.
pub(crate) async fn visible_device(
    state: &ApiState,
    scope: &Scope,
    id: DeviceId,
) -> Result<Device, ApiError> {
    state
        .repository()
        .device(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device not found"))
}

//! Memory for the upload (upstream `check_memory`): free caches, and when the image still does
//! not fit in RAM, stop non-critical services, try again, and start them again when that was
//! not enough.
//!
//! Unlike upstream (its §9.8 bug), `test -f /sbin/wifi && /sbin/wifi down` may exit non-zero:
//! on a device without `/sbin/wifi` the `test` fails with status 1, which upstream treats as a
//! failed command and so fails the whole upgrade. Radios are handled like the init scripts,
//! whose commands may exit with any status.

use crate::UpgradeError;
use crate::openwrt::commands::{self, format_mib};
use crate::openwrt::session::DeviceSession;
use crate::openwrt::{Accept, Attempt};

/// Makes sure the image fits in the device's memory, stopping services if needed; `Aborted`
/// (with the services started again) when it cannot.
pub(crate) async fn ensure_room_for_image(
    attempt: &mut Attempt<'_>,
    session: &DeviceSession,
) -> Result<(), UpgradeError> {
    let image_size = attempt.context.image.size;
    free_memory(attempt, session).await?;
    let available = available_memory(attempt, session).await?;
    if image_size < available {
        return Ok(());
    }
    attempt
        .context
        .log(&format!(
            "The image size ({} MiB) is greater than the available memory on the system ({} MiB).\n\
             For this reason the upgrade procedure will try to free up memory by stopping non \
             critical services.\n\
             WARNING: it is recommended to reboot the device is the upgrade fails unexpectedly \
             because these services will not be restarted automatically.\n\
             NOTE: The reboot can be avoided if the status of the upgrade becomes \"aborted\" \
             because in this case the system will restart the services automatically.",
            format_mib(image_size),
            format_mib(available)
        ))
        .await?;
    stop_services(attempt, session).await?;
    free_memory(attempt, session).await?;
    let available = available_memory(attempt, session).await?;
    if image_size < available {
        attempt
            .context
            .log(&format!(
                "Enough available memory was freed up on the system ({} MiB)!\n\
                 Proceeding to upload of the image file...",
                format_mib(available)
            ))
            .await?;
        return Ok(());
    }
    attempt
        .context
        .log(&format!(
            "There is still not enough available memory on the system ({} MiB).\n\
             Starting non critical services again...",
            format_mib(available)
        ))
        .await?;
    start_services(attempt, session).await?;
    let line = "Non critical services started, aborting upgrade.";
    attempt.context.log(line).await?;
    Err(UpgradeError::aborted(format!(
        "not enough memory for the image ({} MiB) even after stopping non critical services \
         ({} MiB available)",
        format_mib(image_size),
        format_mib(available)
    )))
}

/// Starts the services stopped by [`ensure_room_for_image`] again.
pub(crate) async fn start_services(
    attempt: &mut Attempt<'_>,
    session: &DeviceSession,
) -> Result<(), UpgradeError> {
    for service in &attempt.upgrader.settings.non_critical_services {
        attempt
            .run(session, &commands::service(service, "start"), Accept::Any)
            .await
            .map_err(|error| error.before_flash())?;
    }
    attempt
        .run(session, commands::WIFI_UP, Accept::Any)
        .await
        .map_err(|error| error.before_flash())?;
    attempt.services_stopped = false;
    Ok(())
}

async fn stop_services(
    attempt: &mut Attempt<'_>,
    session: &DeviceSession,
) -> Result<(), UpgradeError> {
    // Marked first: a failure half-way must still start again what was stopped.
    attempt.services_stopped = true;
    for service in &attempt.upgrader.settings.non_critical_services {
        attempt
            .run(session, &commands::service(service, "stop"), Accept::Any)
            .await
            .map_err(|error| error.before_flash())?;
    }
    attempt
        .run(session, commands::WIFI_DOWN, Accept::Any)
        .await
        .map_err(|error| error.before_flash())?;
    Ok(())
}

async fn free_memory(attempt: &Attempt<'_>, session: &DeviceSession) -> Result<(), UpgradeError> {
    for command in [commands::REMOVE_OPKG_LISTS, commands::DROP_CACHES] {
        attempt
            .run(session, command, Accept::Only(&[0]))
            .await
            .map_err(|error| error.before_flash())?;
    }
    Ok(())
}

async fn available_memory(
    attempt: &Attempt<'_>,
    session: &DeviceSession,
) -> Result<u64, UpgradeError> {
    let mut answer = attempt
        .run(session, commands::MEM_AVAILABLE, Accept::Only(&[0, 1]))
        .await
        .map_err(|error| error.before_flash())?;
    if answer.exit_status == Some(1) {
        // Kernels older than 3.14 have no MemAvailable.
        answer = attempt
            .run(session, commands::MEM_FREE, Accept::Only(&[0]))
            .await
            .map_err(|error| error.before_flash())?;
    }
    commands::parse_meminfo_bytes(&answer.output).ok_or_else(|| {
        UpgradeError::failed(format!(
            "could not read the available memory from `{}`",
            answer.output
        ))
    })
}

//! Crash points: for every persisted step of an upgrade, an engine runs a devsim device (real
//! SSH) until that step is persisted, then dies (its runtime is dropped, nothing runs on); a
//! second engine on the same database takes the operation over. Whatever the step, the device
//! is flashed at most once, the operation ends, and it ends `success` if and only if the device
//! runs the new release, with the firmware record saying the same.

use std::time::Duration;

use flashfleet_db::testing::TestDb;
use flashfleet_devsim::RebootTiming;
use flashfleet_models::repository::{DeviceRepository, UpgradeRepository};
use flashfleet_models::{DeviceId, Scope, UpgradeOptions, UpgradePhase, UpgradeStatus};

use crate::support::fast_config;
use crate::world::{NEW_VERSION, World};

/// How long the second engine may take to end the operation.
const BOUND: Duration = Duration::from_secs(90);

async fn crash_after(phase: UpgradePhase) {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let reboot = RebootTiming {
            close_after: Duration::from_millis(50),
            down_for: Duration::from_millis(300),
        };
        let world = World::start(db, 1, 256 * 1024, reboot, |_| {}).await;
        let device = world.fleet.devices()[0].clone();
        let device_id = DeviceId(device.uuid());
        let operation = world
            .engine(db, fast_config("api"))
            .upgrade_device(
                &Scope::All,
                device_id,
                world.new_image.id,
                UpgradeOptions::default(),
                false,
            )
            .await
            .expect("a test step")
            .expect("a test step");

        // The first engine, on a runtime of its own, dies right after persisting `phase`.
        let dying_db = db.clone().with_own_faults();
        dying_db.faults().halt_after(Some(phase));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a test step");
        let dying = world.engine(&dying_db, fast_config("engine-dying"));
        runtime.spawn(async move { dying.run_until_idle().await });
        tokio::time::timeout(Duration::from_secs(60), dying_db.faults().halted())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "backend: {}: the first engine never persisted {phase}",
                    test_db.backend()
                )
            });
        runtime.shutdown_background();
        // Its heartbeat died with it: its lease runs out.
        db.expire_lease(operation.id).await.expect("a test step");

        let next = world.engine(db, fast_config("engine-next"));
        tokio::time::timeout(BOUND, next.run_until_idle())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "backend: {}: crashed after {phase}: the operation did not end within {BOUND:?}",
                    test_db.backend()
                )
            })
            .expect("a test step");

        let stored = db
            .operation(&Scope::All, operation.id)
            .await
            .expect("a test step")
            .expect("a test step");
        let firmware = db
            .device_firmware(device_id)
            .await
            .expect("a test step")
            .expect("a test step");
        let context = format!(
            "backend: {}: crashed after {phase}: flashed {} times, runs {}: {}",
            test_db.backend(),
            device.flash_count(),
            device.release().version,
            stored.log
        );
        assert!(stored.status.is_final(), "{context}");
        assert!(device.flash_count() <= 1, "{context}");
        let runs_the_image = device.release().version == NEW_VERSION;
        assert_eq!(
            stored.status == UpgradeStatus::Success,
            runs_the_image,
            "{context}"
        );
        assert_eq!(
            (firmware.image_id, firmware.installed),
            (world.new_image.id, runs_the_image),
            "{context}"
        );
        // How the second engine took the operation over, by the step the first one reached.
        let expected_recovery = match phase {
            UpgradePhase::Queued | UpgradePhase::Done => None,
            UpgradePhase::Flashing => Some("The flash command never reached the device"),
            phase if phase.is_past_flash() => {
                Some("after the flash command; checking what the device runs now")
            }
            _ => Some("before the flash; starting again"),
        };
        if let Some(line) = expected_recovery {
            assert!(stored.log.contains(line), "{context}");
        }
        assert_eq!(
            stored.flash_attempts,
            if phase == UpgradePhase::Flashing {
                2
            } else {
                1
            },
            "{context}"
        );
        // And here the device is healthy: every crash point ends with one flash and success.
        assert_eq!(
            (stored.status, device.flash_count()),
            (UpgradeStatus::Success, 1),
            "{context}"
        );
        world.fleet.shutdown().await;
    }
}

macro_rules! crash_points {
    ($($name:ident: $phase:expr,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_after($phase).await;
            }
        )*
    };
}

crash_points! {
    crash_point_queued: UpgradePhase::Queued,
    crash_point_connecting: UpgradePhase::Connecting,
    crash_point_verifying_identity: UpgradePhase::VerifyingIdentity,
    crash_point_comparing_checksum: UpgradePhase::ComparingChecksum,
    crash_point_checking_memory: UpgradePhase::CheckingMemory,
    crash_point_uploading: UpgradePhase::Uploading,
    crash_point_testing_image: UpgradePhase::TestingImage,
    // Persisted `flashing`, the flash command not sent: the next engine finds the same boot id,
    // the old release and no sysupgrade running, and flashes once.
    crash_point_flashing_before_the_command: UpgradePhase::Flashing,
    crash_point_waiting_for_reboot: UpgradePhase::WaitingForReboot,
    crash_point_reconnecting: UpgradePhase::Reconnecting,
    crash_point_verifying_version: UpgradePhase::VerifyingVersion,
    crash_point_writing_checksum: UpgradePhase::WritingChecksum,
    crash_point_done: UpgradePhase::Done,
}

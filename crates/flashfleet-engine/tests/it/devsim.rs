//! The whole chain on real SSH: an image uploaded to firmware storage, then the engine runs a
//! mass upgrade with the OpenWrt upgrader against simulated OpenWrt devices, reading the image
//! from that storage.

use std::time::Duration;

use flashfleet_db::testing::TestDb;
use flashfleet_devsim::RebootTiming;
use flashfleet_engine::MassUpgradeRequest;
use flashfleet_models::repository::{DeviceRepository, UpgradeRepository};
use flashfleet_models::{BatchStatus, DeviceId, Scope, UpgradeStatus};

use crate::support::fast_config;
use crate::world::{NEW_VERSION, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mass_upgrade_of_simulated_openwrt_devices_flashes_each_exactly_once() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let reboot = RebootTiming {
            close_after: Duration::from_millis(50),
            down_for: Duration::from_millis(300),
        };
        let world = World::start(db, 6, 256 * 1024, reboot, |_| {}).await;
        let engine = world.engine(db, fast_config("engine"));
        let request = MassUpgradeRequest {
            build_id: Some(world.newer.id),
            ..MassUpgradeRequest::default()
        };
        let started = engine
            .start_mass_upgrade(&Scope::All, &request, false)
            .await
            .unwrap();
        assert_eq!(
            started.operations.len(),
            6,
            "backend: {}",
            test_db.backend()
        );
        engine.run_until_idle().await.unwrap();

        for operation in &started.operations {
            let stored = db
                .operation(&Scope::All, operation.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.status,
                UpgradeStatus::Success,
                "backend: {}: {}",
                test_db.backend(),
                stored.log
            );
            assert_eq!(stored.image_id, Some(world.new_image.id));
        }
        for simulated in world.fleet.devices() {
            assert_eq!(simulated.flash_count(), 1, "backend: {}", test_db.backend());
            assert_eq!(simulated.release().version, NEW_VERSION);
            assert_eq!(
                simulated
                    .file("/etc/openwisp/firmware_checksum")
                    .map(|text| text.trim().to_owned()),
                Some(world.sha256.clone())
            );
            let firmware = db
                .device_firmware(DeviceId(simulated.uuid()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (firmware.image_id, firmware.installed),
                (world.new_image.id, true)
            );
        }
        let batch = db
            .batch(&Scope::All, started.batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            batch.status,
            BatchStatus::Success,
            "backend: {}",
            test_db.backend()
        );
        world.fleet.shutdown().await;
    }
}

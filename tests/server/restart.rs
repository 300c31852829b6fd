//! A server killed in the middle of a mass upgrade loses nothing: started again, it finishes
//! every operation and flashes no device twice.

use std::time::Duration;

use serde_json::json;

use crate::client::NEW_VERSION;
use crate::support::{fleet, import_fleet, sites};

const DEVICES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_during_a_mass_upgrade_finishes_it_after_a_restart() {
    for (index, (site, _directory, _test_db)) in sites().await.into_iter().enumerate() {
        let fleet = fleet(DEVICES, 40 + index as u8, Duration::from_millis(1500)).await;
        import_fleet(&site, &fleet);
        let token = site.admin_token();
        // Ten upgrades at a time, so the kill finds some finished, some in flight (before and
        // after their flash) and most still queued.
        let mut first = site
            .serve("first", &[("FLASHFLEET_ENGINE__MAX_IN_FLIGHT", "10")])
            .await;
        let api = first.api(&token);
        let build = api.publish_new_build().await;
        let (status, started) = api
            .post(
                &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
                json!({"upgrade_all": true}),
            )
            .await;
        assert_eq!(status, 201, "{started}");
        assert_eq!(started["operations"], DEVICES);
        let batch = started["batch"].as_str().unwrap().to_owned();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (_, done) = api
                .get("/api/v1/firmware-upgrader/upgrade-operation/?status=success&page_size=1")
                .await;
            let (_, flashing) = api
                .get("/api/v1/firmware-upgrader/upgrade-operation/?phase=waiting-for-reboot&page_size=1")
                .await;
            if done["count"].as_u64().unwrap_or(0) >= 5
                && flashing["count"].as_u64().unwrap_or(0) >= 1
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no upgrade finished in time:\n{}",
                first.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first.kill();

        let second = site.serve("second", &[]).await;
        let api = second.api(&token);
        let detail = api.wait_for_batch(&batch, Duration::from_secs(240)).await;
        let operations = detail["upgradeoperations"].as_array().unwrap();
        assert_eq!(operations.len(), DEVICES);
        for operation in operations {
            assert_ne!(operation["status"], "in-progress", "{operation}");
        }
        // The kill caught upgrades in flight: some were started over (killed before their
        // flash) or only verified (killed after it).
        let recovered = operations
            .iter()
            .filter(|operation| {
                operation["log"]
                    .as_str()
                    .unwrap_or("")
                    .contains("The previous attempt stopped")
            })
            .count();
        assert!(recovered > 0, "the kill caught no upgrade in flight");
        let mut succeeded = 0;
        for device in fleet.devices() {
            assert!(
                device.flash_count() <= 1,
                "device {} was flashed {} times",
                device.uuid(),
                device.flash_count()
            );
            let operation = operations
                .iter()
                .find(|operation| operation["device"] == device.uuid().to_string())
                .unwrap();
            if operation["status"] == "success" {
                succeeded += 1;
                assert_eq!(device.flash_count(), 1, "{operation}");
                assert_eq!(device.release().version, NEW_VERSION, "{operation}");
            } else {
                // Killed between recording "flashing" and the flash command reaching the
                // device: the next server only verifies (it never flashes twice blindly),
                // finds the old release, and says so.
                assert_eq!(device.flash_count(), 0, "{operation}");
                assert!(
                    operation["log"]
                        .as_str()
                        .unwrap()
                        .contains("The device came back running"),
                    "{operation}"
                );
            }
        }
        assert!(
            succeeded >= DEVICES * 3 / 4,
            "only {succeeded} of {DEVICES} succeeded: {}",
            detail["progress_report"]
        );
        fleet.shutdown().await;
    }
}

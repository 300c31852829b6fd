//! The end-to-end scenario of the `flashfleet` binary, against the sample application: same
//! requests, same checks, with the sample's connection type and its fields in every object's
//! `details`; then proof that the sample's upgrader and storage did the work.

use std::collections::BTreeSet;

use flashfleet_db::testing::TestDb;
use futures_util::TryStreamExt as _;
use object_store::{ObjectMeta, ObjectStore as _};
use serde_json::json;

use crate::app::{SampleApp, TENANT};
use crate::client::{Api, NEW_VERSION, new_image};
use crate::scenario::{self, Target, old_image};
use crate::upgrader::{PREFLIGHT, SAMPLE_SSH};

/// As many devices as the binary's end-to-end test upgrades.
const DEVICES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sample_app_runs_the_end_to_end_scenario_with_its_own_upgrader_storage_and_fields() {
    for (index, test_db) in TestDb::all().await.into_iter().enumerate() {
        let backend = test_db.backend();
        let app = SampleApp::start(test_db.db()).await;
        let details = json!({"site": "lab-3", "rollout_ring": "canary", "cost_center": 4711});
        let target = Target {
            base: app.base.clone(),
            superuser_token: app.superuser_token.clone(),
            connector: SAMPLE_SSH.to_owned(),
            details: details.as_object().unwrap().clone(),
        };
        // Loopback networks 127.90.0.0 and 127.91.0.0: no other test uses them.
        let outcome = scenario::run(&target, DEVICES, 90 + index as u8).await;
        assert!(outcome.operation_events >= DEVICES, "{backend}");
        let api = Api::new(&app.base, &app.superuser_token);
        let batch = outcome.last_batch_event["id"].as_str().unwrap();
        let (status, rest) = api
            .get(&format!(
                "/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"
            ))
            .await;
        assert_eq!(status, 200, "{rest}");
        assert_eq!(rest["details"], details, "{backend}");
        assert_eq!(rest["status"], outcome.last_batch_event["status"]);

        // The sample's upgrader ran every upgrade, after its pre-flight check, which wrote its
        // line into each operation's log.
        assert_eq!(app.upgrader_calls.upgrades(), DEVICES, "{backend}");
        assert_eq!(app.upgrader_calls.refused(), 0, "{backend}");
        assert_eq!(app.upgrader_calls.verifications(), 0, "{backend}");
        let (status, operations) = api
            .get("/api/v1/firmware-upgrader/upgrade-operation/?page_size=100")
            .await;
        assert_eq!(status, 200, "{operations}");
        let operations = operations["results"].as_array().unwrap();
        assert_eq!(operations.len(), DEVICES, "{backend}");
        for operation in operations {
            assert_eq!(operation["status"], "success", "{operation}");
            let log = operation["log"].as_str().unwrap();
            assert!(
                log.lines().any(|line| line.starts_with(PREFLIGHT)
                    && line.ends_with("is in rollout ring canary")),
                "{backend}: {log}"
            );
        }

        // The two images went through the tenant store: on the shared backend they are under
        // the tenant's prefix, flashfleet sees the same keys without it, and the store counted
        // exactly their bytes in, and at least one copy per device out.
        let prefix = format!("tenants/{TENANT}/");
        let on_shared: Vec<ObjectMeta> = app.shared.list(None).try_collect().await.unwrap();
        let shared_keys: BTreeSet<String> = on_shared
            .iter()
            .map(|meta| {
                let location = meta.location.as_ref();
                location
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{location} is outside the tenant's prefix"))
                    .to_owned()
            })
            .collect();
        let flashfleet_keys: BTreeSet<String> = app
            .store
            .list_keys("")
            .await
            .unwrap()
            .iter()
            .map(|key| key.as_str().to_owned())
            .collect();
        assert_eq!(shared_keys.len(), 2, "{backend}: {shared_keys:?}");
        assert_eq!(shared_keys, flashfleet_keys, "{backend}");
        let image_bytes = (old_image().len() + new_image().len()) as u64;
        assert_eq!(
            on_shared.iter().map(|meta| meta.size).sum::<u64>(),
            image_bytes,
            "{backend}"
        );
        assert_eq!(app.storage_usage.objects_written(), 2, "{backend}");
        assert_eq!(app.storage_usage.bytes_written(), image_bytes, "{backend}");
        assert!(
            app.storage_usage.bytes_read() >= (DEVICES * new_image().len()) as u64,
            "{backend}: {} bytes read",
            app.storage_usage.bytes_read()
        );

        // A device whose details lose their rollout ring is refused by the pre-flight check:
        // the operation is aborted with the check's reason, and the device is left alone.
        let device = &outcome.fleet.devices()[0];
        let id = device.uuid();
        let (status, changed) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/controller/device/{id}/"),
                json!({"details": {"site": "lab-3"}}),
            )
            .await;
        assert_eq!(status, 200, "{changed}");
        let (status, builds) = api
            .get("/api/v1/firmware-upgrader/build/?version=23.05.0")
            .await;
        assert_eq!(status, 200, "{builds}");
        let old_build = builds["results"][0]["id"].as_str().unwrap().to_owned();
        let (_, images) = api
            .get(&format!(
                "/api/v1/firmware-upgrader/build/{old_build}/image/"
            ))
            .await;
        let old_image_id = images["results"][0]["id"].as_str().unwrap().to_owned();
        let (status, assigned) = api
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/firmware-upgrader/device/{id}/firmware/"),
                json!({"image": old_image_id}),
            )
            .await;
        assert!(status == 200 || status == 201, "{status}: {assigned}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let refused = loop {
            let (_, operations) = api
                .get(&format!(
                    "/api/v1/firmware-upgrader/upgrade-operation/?device={id}&ordering=-created&page_size=1"
                ))
                .await;
            let latest = operations["results"][0].clone();
            if latest["image"] == json!(old_image_id) && latest["status"] != "in-progress" {
                break latest;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend}: the refused upgrade did not end: {latest}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(refused["status"], "aborted", "{backend}: {refused}");
        assert!(
            refused["log"]
                .as_str()
                .unwrap()
                .contains(&format!("{PREFLIGHT} device ")),
            "{backend}: {refused}"
        );
        assert!(
            refused["log"]
                .as_str()
                .unwrap()
                .contains("has no rollout_ring in its details"),
            "{backend}: {refused}"
        );
        assert_eq!(app.upgrader_calls.refused(), 1, "{backend}");
        assert_eq!(app.upgrader_calls.upgrades(), DEVICES, "{backend}");
        assert_eq!(device.flash_count(), 1, "{backend}");
        assert_eq!(device.release().version, NEW_VERSION, "{backend}");

        outcome.fleet.shutdown().await;
        app.stop().await;
    }
}

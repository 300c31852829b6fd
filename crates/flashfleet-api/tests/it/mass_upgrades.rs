//! The dry run and mass upgrades of a build, the batch list and detail, and cancelling.

use actix_web::http::StatusCode;
use flashfleet_models::repository::{DeviceRepository, FirmwareRepository};
use flashfleet_models::{Build, DeviceFirmware, NewBuild};
use serde_json::json;

use crate::support::{Tenant, TestApi, apis, connected_device, stored_image};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";

/// Build 1.0 (installed on `known`) and 2.0 of one category, a device with no firmware record
/// (`firmwareless`), all of `tenant`.
struct Fleet {
    new_build: Build,
    known: flashfleet_models::Device,
    known_record: DeviceFirmware,
    firmwareless: flashfleet_models::Device,
}

async fn fleet(api: &TestApi, tenant: &Tenant) -> Fleet {
    let category = api.category(Some(&tenant.organization), "Routers").await;
    let old_build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await
        .unwrap();
    let new_build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "2.0").into_build())
        .await
        .unwrap();
    let old_image = stored_image(api.db(), old_build.id, COMFAST).await;
    stored_image(api.db(), new_build.id, COMFAST).await;
    let known = connected_device(api.db(), &tenant.organization, "known", COMFAST_MODEL).await;
    let known_record = api
        .db()
        .insert_device_firmware(&DeviceFirmware::new(known.id, old_image.id, true))
        .await
        .unwrap();
    let firmwareless = connected_device(
        api.db(),
        &tenant.organization,
        "firmwareless",
        COMFAST_MODEL,
    )
    .await;
    Fleet {
        new_build,
        known,
        known_record,
        firmwareless,
    }
}

#[actix_web::test]
async fn the_dry_run_lists_upstreams_two_lists_and_a_verdict_per_device() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let fleet = fleet(&api, &tenant).await;
        let other = api.tenant("other").await;
        connected_device(api.db(), &other.organization, "foreign", COMFAST_MODEL).await;
        let dry_run = api
            .get(
                &format!(
                    "/api/v1/firmware-upgrader/build/{}/upgrade/",
                    fleet.new_build.id
                ),
                &tenant.member,
            )
            .await;
        assert_eq!(dry_run.status, StatusCode::OK, "{:?}", dry_run.body);
        assert_eq!(
            dry_run.get("device_firmwares"),
            &json!([fleet.known_record.id.to_string()])
        );
        assert_eq!(
            dry_run.get("devices"),
            &json!([fleet.firmwareless.id.to_string()])
        );
        let plan = dry_run.get("plan").as_array().unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0]["device"], fleet.known.id.to_string());
        assert_eq!(
            plan[0]["verdict"]["status"], "unknown",
            "no metadata in the image"
        );
        assert_eq!(dry_run.body["summary"]["by_model"][COMFAST_MODEL], 2);
    }
}

#[actix_web::test]
async fn a_mass_upgrade_queues_operations_and_the_batch_reports_them() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let fleet = fleet(&api, &tenant).await;
        let path = format!(
            "/api/v1/firmware-upgrader/build/{}/upgrade/",
            fleet.new_build.id
        );
        let member = api.post(&path, &tenant.member, json!({})).await;
        assert_eq!(member.status, StatusCode::FORBIDDEN);
        let started = api
            .post(&path, &tenant.manager, json!({"upgrade_all": true}))
            .await;
        assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
        assert_eq!(started.get("operations"), 2);
        let batch = started.get("batch").as_str().unwrap().to_owned();
        let list = api
            .get(
                "/api/v1/firmware-upgrader/batch-upgrade-operation/",
                &tenant.member,
            )
            .await;
        assert_eq!(list.get("count"), 1);
        let keys: Vec<&String> = list.body["results"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            &keys[..8],
            [
                "id",
                "build",
                "created",
                "modified",
                "upgrade_options",
                "status",
                "group",
                "location"
            ]
        );
        let detail = api
            .get(
                &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"),
                &tenant.member,
            )
            .await;
        assert_eq!(detail.status, StatusCode::OK);
        assert_eq!(detail.get("progress_report"), "0 out of 2");
        assert_eq!(detail.get("status"), "in-progress");
        assert_eq!(detail.get("upgradeoperations").as_array().unwrap().len(), 2);
        assert_eq!(detail.body["build"]["version"], "2.0");
        let again = api
            .post(&path, &tenant.manager, json!({"upgrade_all": true}))
            .await;
        assert_eq!(
            again.status,
            StatusCode::BAD_REQUEST,
            "every device is busy"
        );
        assert_eq!(
            again.get("error"),
            "No devices found matching the specified filters. Please adjust your group and/or location filters."
        );
        let filtered = api
            .get(
                "/api/v1/firmware-upgrader/batch-upgrade-operation/?status=success",
                &tenant.member,
            )
            .await;
        assert_eq!(filtered.get("count"), 0);
        let bad = api
            .get(
                "/api/v1/firmware-upgrader/batch-upgrade-operation/?status=done",
                &tenant.member,
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let cancelled = api
            .post(
                &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/cancel/"),
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
        assert_eq!(cancelled.get("cancelled"), 2);
        assert_eq!(cancelled.body["batch"]["status"], "cancelled");
        assert_eq!(cancelled.body["batch"]["cancelled_rate"], 100);
        assert!(
            api.db()
                .device_firmware(fleet.known.id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[actix_web::test]
async fn only_known_devices_without_upgrade_all_and_force_needs_an_owner() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let fleet = fleet(&api, &tenant).await;
        let path = format!(
            "/api/v1/firmware-upgrader/build/{}/upgrade/",
            fleet.new_build.id
        );
        let forced = api
            .post(
                &path,
                &tenant.manager,
                json!({"upgrade_options": {"F": true}}),
            )
            .await;
        assert_eq!(forced.status, StatusCode::BAD_REQUEST, "{:?}", forced.body);
        let invalid = api
            .post(
                &path,
                &tenant.owner,
                json!({"upgrade_options": {"n": true, "c": true}}),
            )
            .await;
        assert_eq!(
            invalid.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            invalid.body
        );
        let started = api
            .post(
                &path,
                &tenant.owner,
                json!({"upgrade_options": {"F": true}}),
            )
            .await;
        assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
        assert_eq!(started.get("operations"), 1, "only the known device");
    }
}

#[actix_web::test]
async fn shared_builds_are_mass_upgraded_by_superusers_only() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let category = api.category(None, "Shared").await;
        let build = api
            .db()
            .insert_build(&NewBuild::new(category.id, "1.0").into_build())
            .await
            .unwrap();
        stored_image(api.db(), build.id, COMFAST).await;
        connected_device(api.db(), &tenant.organization, "mine", COMFAST_MODEL).await;
        let other = api.tenant("other").await;
        connected_device(api.db(), &other.organization, "theirs", COMFAST_MODEL).await;
        let path = format!("/api/v1/firmware-upgrader/build/{}/upgrade/", build.id);
        let dry_run = api.get(&path, &tenant.manager).await;
        assert_eq!(
            dry_run.get("devices").as_array().unwrap().len(),
            1,
            "only the caller's devices, not every organization's"
        );
        let refused = api
            .post(&path, &tenant.manager, json!({"upgrade_all": true}))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let started = api
            .post(&path, &api.superuser, json!({"upgrade_all": true}))
            .await;
        assert_eq!(started.status, StatusCode::CREATED);
        assert_eq!(started.get("operations"), 2);
    }
}

//! Upgrade operations, a device's firmware, and cancelling.

use actix_web::http::{Method, StatusCode};
use flashfleet_models::repository::{DeviceRepository, FirmwareRepository, UpgradeRepository};
use flashfleet_models::{NewBuild, OperationId};
use serde_json::{Value, json};

use crate::support::{Tenant, TestApi, apis, connected_device, stored_image};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";

/// A device of `tenant` with an image assigned through `PUT device/<id>/firmware/`.
async fn assigned(api: &TestApi, tenant: &Tenant) -> (String, Value) {
    let category = api.category(Some(&tenant.organization), "Routers").await;
    let build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await
        .unwrap();
    let image = stored_image(api.db(), build.id, COMFAST).await;
    let device = connected_device(api.db(), &tenant.organization, "ap-1", COMFAST_MODEL).await;
    let path = format!("/api/v1/firmware-upgrader/device/{}/firmware/", device.id);
    let missing = api.get(&path, &tenant.manager).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.get("detail"),
        "No DeviceFirmware matches the given query."
    );
    let patch_missing = api
        .call(
            Method::PATCH,
            &path,
            Some(&tenant.manager),
            Some(json!({"image": image.id.to_string()})),
        )
        .await;
    assert_eq!(patch_missing.status, StatusCode::NOT_FOUND);
    let put = api
        .call(
            Method::PUT,
            &path,
            Some(&tenant.manager),
            Some(json!({"image": image.id.to_string()})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    (device.id.to_string(), put.body)
}

#[actix_web::test]
async fn assigning_an_image_queues_an_operation_shown_in_every_list() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let (device, record) = assigned(&api, &tenant).await;
        assert_eq!(record["installed"], false);
        let operation = record["upgrade_operation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let list = api
            .get(
                "/api/v1/firmware-upgrader/upgrade-operation/",
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
                "id", "device", "image", "status", "log", "progress", "modified", "created"
            ]
        );
        let by_device = api
            .get(
                &format!("/api/v1/firmware-upgrader/device/{device}/upgrade-operation/"),
                &tenant.member,
            )
            .await;
        assert_eq!(by_device.get("count"), 1);
        assert!(
            by_device.body["results"][0].get("created").is_none(),
            "upstream's per-device list has no `created`"
        );
        for query in [
            format!("?device={device}"),
            "?status=in-progress".to_owned(),
            "?organization=acme".to_owned(),
            format!("?device__organization={}", tenant.organization.id),
            "?device__organization__slug=acme".to_owned(),
        ] {
            let filtered = api
                .get(
                    &format!("/api/v1/firmware-upgrader/upgrade-operation/{query}"),
                    &tenant.member,
                )
                .await;
            assert_eq!(filtered.get("count"), 1, "{query}");
        }
        let none = api
            .get(
                "/api/v1/firmware-upgrader/upgrade-operation/?status=success",
                &tenant.member,
            )
            .await;
        assert_eq!(none.get("count"), 0);
        let detail = api
            .get(
                &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/"),
                &tenant.member,
            )
            .await;
        assert_eq!(detail.get("status"), "in-progress");
        assert_eq!(detail.get("phase"), "queued");
    }
}

#[actix_web::test]
async fn cancelling_before_the_flash_works_once_and_after_it_is_a_conflict() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let (_, record) = assigned(&api, &tenant).await;
        let operation = record["upgrade_operation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/cancel/");
        let member = api.post(&path, &tenant.member, json!({})).await;
        assert_eq!(member.status, StatusCode::FORBIDDEN);
        let cancelled = api.post(&path, &tenant.manager, json!({})).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
        assert_eq!(
            cancelled.get("message"),
            "Upgrade operation cancelled successfully"
        );
        assert_eq!(cancelled.body["operation"]["status"], "cancelled");
        let again = api.post(&path, &tenant.manager, json!({})).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert_eq!(
            again.get("error"),
            "Cannot cancel operation with status: cancelled"
        );
        assert_eq!(again.get("code"), "conflict");
        let missing = api
            .post(
                "/api/v1/firmware-upgrader/upgrade-operation/00000000-0000-0000-0000-000000000000/cancel/",
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.get("error"), "Upgrade operation not found");
    }
}

#[actix_web::test]
async fn an_operation_that_is_flashing_cannot_be_cancelled() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let (_, record) = assigned(&api, &tenant).await;
        let operation: OperationId = record["upgrade_operation"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // An engine claimed it and recorded its flash.
        let claimed = api
            .db()
            .claim_operations("engine", std::time::Duration::from_secs(30), 100)
            .await
            .unwrap();
        let fence = claimed
            .iter()
            .find(|claimed| claimed.id == operation)
            .and_then(|claimed| claimed.lease.as_ref())
            .map(flashfleet_models::Lease::fence)
            .unwrap();
        api.db()
            .begin_flash(operation, &fence, None, "Upgrade operation in progress...")
            .await
            .unwrap();
        let refused = api
            .post(
                &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/cancel/"),
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(
            refused.get("error"),
            "Cannot cancel upgrade: firmware reflashing has already started"
        );
    }
}

#[actix_web::test]
async fn firmware_of_a_deactivated_device_cannot_change_and_images_must_fit() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let (device, _) = assigned(&api, &tenant).await;
        let path = format!("/api/v1/firmware-upgrader/device/{device}/firmware/");
        let other_category = api.category(Some(&tenant.organization), "Other").await;
        let other_build = api
            .db()
            .insert_build(&NewBuild::new(other_category.id, "9").into_build())
            .await
            .unwrap();
        let other_image = stored_image(api.db(), other_build.id, COMFAST).await;
        let other = api
            .call(
                Method::PUT,
                &path,
                Some(&tenant.manager),
                Some(json!({"image": other_image.id.to_string()})),
            )
            .await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST, "another category");
        let device_id = device.parse().unwrap();
        let mut stored = api
            .db()
            .device(&flashfleet_models::Scope::All, device_id)
            .await
            .unwrap()
            .unwrap();
        stored.is_deactivated = true;
        api.db().update_device(&stored).await.unwrap();
        let refused = api
            .call(Method::DELETE, &path, Some(&tenant.manager), None)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.get("detail"),
            "Firmware upgrades are not allowed for deactivated devices."
        );
        assert_eq!(api.get(&path, &tenant.manager).await.status, StatusCode::OK);
    }
}

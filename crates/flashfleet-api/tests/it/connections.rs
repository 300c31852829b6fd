//! `controller/device/<id>/connection/`: attaching credentials to devices.

use actix_web::http::{Method, StatusCode};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::DeviceRepository;
use flashfleet_models::{Credentials, MacAddress, NewCredentials, NewDevice, Organization};
use serde_json::{Value, json};

use crate::support::{TestApi, apis};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";
const OS: &str = "OpenWrt 23.05.3 r23809-234f1a2efa";

/// A device stored directly (no hook runs), with model and OS.
async fn stored_device(api: &TestApi, organization: &Organization, name: &str, last: u8) -> String {
    let mut device = NewDevice::new(
        organization.id,
        name,
        MacAddress::from_bytes([2, 0, 0, 0, 0, last]),
    );
    device.model = COMFAST_MODEL.into();
    device.os = OS.into();
    let device = api.db().insert_device(&device.into_device()).await.unwrap();
    device.id.to_string()
}

async fn credentials(
    api: &TestApi,
    organization: Option<&Organization>,
    name: &str,
) -> Credentials {
    api.db()
        .insert_credentials(
            &NewCredentials::new(
                organization.map(|organization| organization.id),
                name,
                "root",
                CredentialsSecret::Password(SecretText::new("pw")),
            )
            .into_credentials(),
        )
        .await
        .unwrap()
}

fn connections_path(device: &str) -> String {
    format!("/api/v1/controller/device/{device}/connection/")
}

#[actix_web::test]
async fn a_manager_attaches_changes_and_detaches_credentials() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let device = stored_device(&api, &tenant.organization, "ap", 1).await;
        let own = credentials(&api, Some(&tenant.organization), "own").await;
        let shared = credentials(&api, None, "shared").await;
        let path = connections_path(&device);
        let created = api
            .post(
                &path,
                &tenant.manager,
                json!({"credentials": own.id.to_string()}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(
            created.keys(),
            [
                "id",
                "credentials",
                "update_strategy",
                "enabled",
                "is_working",
                "failure_reason",
                "last_attempt",
                "created",
                "modified",
                "host_key",
                "details"
            ]
        );
        assert_eq!(created.get("update_strategy"), "openwrt-ssh");
        assert_eq!(created.get("enabled"), true);
        assert_eq!(created.get("is_working"), &Value::Null);
        let id = created.get("id").as_str().unwrap().to_owned();
        let twice = api
            .post(
                &path,
                &tenant.manager,
                json!({"credentials": own.id.to_string()}),
            )
            .await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            twice.get("__all__"),
            &json!(["Device connection with this Device and Credentials already exists."])
        );

        let list = api.get(&path, &tenant.member).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.get("count"), 1);
        assert_eq!(list.body["results"][0]["id"], id.as_str());
        let detail = format!("{path}{id}/");
        assert_eq!(
            api.get(&detail, &tenant.member).await.get("credentials"),
            own.id.to_string().as_str()
        );
        let patched = api
            .patch(
                &detail,
                &tenant.manager,
                json!({"enabled": false, "credentials": shared.id.to_string(),
                    "update_strategy": "openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt"}),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
        assert_eq!(patched.get("enabled"), false);
        assert_eq!(patched.get("credentials"), shared.id.to_string().as_str());
        assert_eq!(patched.get("update_strategy"), "openwrt-ssh");
        let unknown = api
            .patch(
                &detail,
                &tenant.manager,
                json!({"update_strategy": "telnet"}),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            unknown.get("update_strategy"),
            &json!(["\"telnet\" is not a valid choice."])
        );
        let put_incomplete = api.put(&detail, &tenant.manager, json!({})).await;
        assert_eq!(put_incomplete.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            put_incomplete.get("credentials"),
            &json!(["This field is required."])
        );

        let refused = api.delete(&detail, &tenant.member).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let deleted = api.delete(&detail, &tenant.manager).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = api.get(&detail, &tenant.manager).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(
            gone.get("detail"),
            "No DeviceConnection matches the given query."
        );
        assert_eq!(api.get(&path, &tenant.manager).await.get("count"), 0);
    }
}

#[actix_web::test]
async fn credentials_of_another_organization_are_refused() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let device = stored_device(&api, &tenant.organization, "ap", 1).await;
        let foreign = credentials(&api, Some(&other.organization), "theirs").await;
        let path = connections_path(&device);
        let invisible = api
            .post(
                &path,
                &tenant.manager,
                json!({"credentials": foreign.id.to_string()}),
            )
            .await;
        assert_eq!(invisible.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            invisible.get("credentials"),
            &json!([format!(
                "Invalid pk \"{}\" - object does not exist.",
                foreign.id
            )])
        );
        let mismatched = api
            .post(
                &path,
                &api.superuser,
                json!({"credentials": foreign.id.to_string()}),
            )
            .await;
        assert_eq!(mismatched.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            mismatched.get("credentials"),
            &json!([
                "The organization of the credentials doesn't match the organization of the device"
            ])
        );
        let by_member = api
            .post(
                &path,
                &tenant.member,
                json!({"credentials": foreign.id.to_string()}),
            )
            .await;
        assert_eq!(by_member.status, StatusCode::FORBIDDEN);

        let their_device = stored_device(&api, &other.organization, "theirs", 2).await;
        let their_path = connections_path(&their_device);
        for method in [Method::GET, Method::POST] {
            let reply = api
                .call(
                    method.clone(),
                    &their_path,
                    Some(&tenant.owner),
                    Some(json!({})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(reply.get("detail"), "device not found");
        }
    }
}

#[actix_web::test]
async fn attaching_credentials_runs_the_device_hook() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let image = api
            .build_with_image(&tenant.organization, OS, COMFAST)
            .await;
        let device = stored_device(&api, &tenant.organization, "ap", 1).await;
        let firmware = format!("/api/v1/firmware-upgrader/device/{device}/firmware/");
        assert_eq!(
            api.get(&firmware, &tenant.manager).await.status,
            StatusCode::NOT_FOUND
        );
        let own = credentials(&api, Some(&tenant.organization), "own").await;
        let created = api
            .post(
                &connections_path(&device),
                &tenant.manager,
                json!({"credentials": own.id.to_string()}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let record = api.get(&firmware, &tenant.manager).await;
        assert_eq!(record.status, StatusCode::OK, "{}", api.backend());
        assert_eq!(record.get("image"), image.id.to_string().as_str());
        assert_eq!(record.get("installed"), true);
    }
}

//! `controller/device/`: openwisp-controller's shapes, validation, tenancy, registration and the
//! device hook, deactivation.

use actix_web::http::{Method, StatusCode};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::DeviceRepository;
use flashfleet_models::{DeviceId, NewCredentials, NewDeviceGroup, Organization, Scope};
use serde_json::{Value, json};

use crate::support::{Reply, TestApi, apis, connected_device};

const DEVICES: &str = "/api/v1/controller/device/";
const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";
const OS: &str = "OpenWrt 23.05.3 r23809-234f1a2efa";

/// Creates device `name` of `organization` (MAC `02:00:00:00:00:<last>`) with `extra` fields,
/// as the holder of `token`; asserts it was created.
async fn created_device(
    api: &TestApi,
    token: &str,
    organization: &Organization,
    name: &str,
    last: u8,
    extra: Value,
) -> Reply {
    let mut body = json!({"name": name, "organization": organization.id.to_string(),
        "mac_address": format!("02:00:00:00:00:{last:02x}")});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let created = api.post(DEVICES, token, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created
}

fn device_path(id: &str) -> String {
    format!("{DEVICES}{id}/")
}

/// The firmware record the API shows for device `id`.
async fn firmware_of(api: &TestApi, id: &str) -> Value {
    let reply = api
        .get(
            &format!("/api/v1/firmware-upgrader/device/{id}/firmware/"),
            &api.superuser,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

#[actix_web::test]
async fn a_manager_creates_lists_changes_and_deletes_devices_of_its_organization() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let organization = tenant.organization.id.to_string();
        let created = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({
                    "name": "ap-1", "organization": organization, "mac_address": "00-11-22-aa-bb-cc",
                    "management_ip": "10.0.0.1", "details": {"rack": 3},
                }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(
            created.keys(),
            [
                "id",
                "name",
                "organization",
                "group",
                "mac_address",
                "management_ip",
                "model",
                "os",
                "created",
                "modified",
                "board_name",
                "is_deactivated",
                "details"
            ],
            "openwisp-controller's key order, then flashfleet's"
        );
        assert_eq!(created.get("mac_address"), "00:11:22:AA:BB:CC");
        assert_eq!(created.get("organization"), organization.as_str());
        assert_eq!(created.get("group"), &Value::Null);
        assert_eq!(created.get("details"), &json!({"rack": 3}));
        let id = created.get("id").as_str().unwrap().to_owned();
        let second = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap-2", "organization": organization, "mac_address": "001122334455",
                    "model": COMFAST_MODEL}),
            )
            .await;
        assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);

        let list = api.get(DEVICES, &tenant.member).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.get("count"), 2);
        assert_eq!(
            list.body["results"][0]["name"],
            "ap-2",
            "newest first, {}",
            api.backend()
        );
        let filtered = api
            .get(
                &format!(
                    "{DEVICES}?model={}&organization=acme",
                    COMFAST_MODEL.replace(' ', "%20")
                ),
                &tenant.member,
            )
            .await;
        assert_eq!(filtered.get("count"), 1, "{:?}", filtered.body);
        let none = api
            .get(&format!("{DEVICES}?organization=other"), &tenant.member)
            .await;
        assert_eq!(none.get("count"), 0);
        let bad_filter = api
            .get(&format!("{DEVICES}?group=nope"), &tenant.member)
            .await;
        assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);

        let path = device_path(&id);
        let read = api.get(&path, &tenant.member).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.get("name"), "ap-1");
        let patched = api
            .patch(
                &path,
                &tenant.manager,
                json!({"name": "ap-1b", "management_ip": null}),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
        assert_eq!(patched.get("name"), "ap-1b");
        assert_eq!(patched.get("management_ip"), &Value::Null);
        assert_eq!(patched.get("mac_address"), "00:11:22:AA:BB:CC");
        let put = api
            .put(
                &path,
                &tenant.manager,
                json!({"name": "ap-1c", "organization": organization, "mac_address": "00:11:22:aa:bb:cd"}),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        assert_eq!(put.get("mac_address"), "00:11:22:AA:BB:CD");
        let put_incomplete = api
            .put(&path, &tenant.manager, json!({"name": "ap-1d"}))
            .await;
        assert_eq!(put_incomplete.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            put_incomplete.get("mac_address"),
            &json!(["This field is required."])
        );

        let deleted = api.delete(&path, &tenant.manager).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(
            api.get(&path, &tenant.manager).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[actix_web::test]
async fn invalid_devices_get_upstreams_field_errors() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let organization = tenant.organization.id.to_string();
        let empty = api.post(DEVICES, &tenant.manager, json!({})).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        for field in ["name", "organization", "mac_address"] {
            assert_eq!(
                empty.get(field),
                &json!(["This field is required."]),
                "{field}"
            );
        }
        let bad = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap", "organization": organization, "mac_address": "00:11:22",
                    "management_ip": "not an address!", "model": "m".repeat(65)}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            bad.get("mac_address"),
            &json!(["Enter a valid MAC address."])
        );
        assert_eq!(
            bad.get("model"),
            &json!(["Ensure this field has no more than 64 characters."])
        );
        let bad_address = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap", "organization": organization, "mac_address": "00:11:22:33:44:55",
                    "management_ip": "not an address!"}),
            )
            .await;
        assert_eq!(bad_address.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            bad_address.get("management_ip"),
            &json!(["Enter a valid IPv4 or IPv6 address or host name."])
        );

        let foreign = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap", "organization": other.organization.id.to_string(),
                    "mac_address": "00:11:22:33:44:55"}),
            )
            .await;
        assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            foreign.get("organization")[0],
            format!(
                "Invalid pk \"{}\" - object does not exist.",
                other.organization.id
            )
        );
        let by_member = api
            .post(
                DEVICES,
                &tenant.member,
                json!({"name": "ap", "organization": organization, "mac_address": "00:11:22:33:44:55"}),
            )
            .await;
        assert_eq!(by_member.status, StatusCode::BAD_REQUEST);
        assert!(by_member.get("organization").is_array());

        let foreign_group = api
            .db()
            .insert_group(&NewDeviceGroup::new(other.organization.id, "core").into_group())
            .await
            .unwrap();
        let refused = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap", "organization": organization, "mac_address": "00:11:22:33:44:55",
                    "group": foreign_group.id.to_string()}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("group")[0],
            format!(
                "Invalid pk \"{}\" - object does not exist.",
                foreign_group.id
            )
        );
        let group = api
            .db()
            .insert_group(&NewDeviceGroup::new(tenant.organization.id, "edge").into_group())
            .await
            .unwrap();
        let created = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap", "organization": organization, "mac_address": "00:11:22:33:44:55",
                    "group": group.id.to_string()}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(created.get("group"), group.id.to_string().as_str());
        let listed = api
            .get(&format!("{DEVICES}?group={}", group.id), &tenant.member)
            .await;
        assert_eq!(listed.get("count"), 1);

        let twice = api
            .post(
                DEVICES,
                &tenant.manager,
                json!({"name": "ap-2", "organization": organization, "mac_address": "00:11:22:33:44:55"}),
            )
            .await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            twice.get("mac_address"),
            &json!(["A device with this MAC address already exists in this organization."])
        );
        let moved = api
            .patch(
                &device_path(created.get("id").as_str().unwrap()),
                &api.superuser,
                json!({"organization": other.organization.id.to_string()}),
            )
            .await;
        assert_eq!(moved.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            moved.get("organization"),
            &json!(["The organization of a device cannot be changed."])
        );
    }
}

#[actix_web::test]
async fn another_organizations_device_is_not_found_and_members_cannot_change_devices() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let created = created_device(
            &api,
            &other.manager,
            &other.organization,
            "ap",
            1,
            json!({}),
        )
        .await;
        let path = device_path(created.get("id").as_str().unwrap());
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "x"}))),
            (Method::DELETE, None),
        ] {
            let reply = api
                .call(method.clone(), &path, Some(&tenant.owner), body)
                .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(reply.get("detail"), "device not found");
        }
        for action in ["register", "deactivate", "activate"] {
            let reply = api
                .post(&format!("{path}{action}/"), &tenant.owner, json!({}))
                .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{action}");
        }
        assert_eq!(api.get(DEVICES, &tenant.owner).await.get("count"), 0);

        let refused = api.patch(&path, &other.member, json!({"name": "x"})).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.get("code"), "permission_denied");
        for action in ["register", "deactivate"] {
            let reply = api
                .post(&format!("{path}{action}/"), &other.member, json!({}))
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{action}");
        }
        assert_eq!(
            api.delete(&path, &other.member).await.status,
            StatusCode::FORBIDDEN
        );
        let anonymous = api.call(Method::GET, DEVICES, None, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
}

#[actix_web::test]
async fn registering_a_device_records_the_image_it_runs() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let image = api
            .build_with_image(&tenant.organization, OS, COMFAST)
            .await;
        let created = created_device(
            &api,
            &tenant.manager,
            &tenant.organization,
            "ap",
            1,
            json!({}),
        )
        .await;
        let id = created.get("id").as_str().unwrap().to_owned();
        let unknown = api
            .get(
                &format!("/api/v1/firmware-upgrader/device/{id}/firmware/"),
                &tenant.manager,
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "no model nor OS yet");

        let registered = api
            .post(
                &format!("{}register/", device_path(&id)),
                &tenant.manager,
                json!({"model": COMFAST_MODEL, "os": OS, "board_name": "comfast,cf-e375ac",
                    "management_ip": "192.0.2.7"}),
            )
            .await;
        assert_eq!(registered.status, StatusCode::OK, "{:?}", registered.body);
        assert_eq!(registered.get("model"), COMFAST_MODEL);
        assert_eq!(registered.get("os"), OS);
        assert_eq!(registered.get("board_name"), "comfast,cf-e375ac");
        assert_eq!(registered.get("management_ip"), "192.0.2.7");
        let record = firmware_of(&api, &id).await;
        assert_eq!(record["image"], image.id.to_string().as_str());
        assert_eq!(record["installed"], true, "{}", api.backend());

        let partial = api
            .post(
                &format!("{}register/", device_path(&id)),
                &tenant.manager,
                json!({"management_ip": "192.0.2.8"}),
            )
            .await;
        assert_eq!(partial.status, StatusCode::OK);
        assert_eq!(partial.get("os"), OS, "absent facts stay");
        let invalid = api
            .post(
                &format!("{}register/", device_path(&id)),
                &tenant.manager,
                json!({"management_ip": "no such address!"}),
            )
            .await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        assert!(invalid.get("management_ip").is_array());
    }
}

#[actix_web::test]
async fn creating_or_changing_a_device_with_model_and_os_runs_the_hook() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let image = api
            .build_with_image(&tenant.organization, OS, COMFAST)
            .await;
        let created = created_device(
            &api,
            &tenant.manager,
            &tenant.organization,
            "ap-1",
            1,
            json!({"model": COMFAST_MODEL, "os": OS}),
        )
        .await;
        let record = firmware_of(&api, created.get("id").as_str().unwrap()).await;
        assert_eq!(record["image"], image.id.to_string().as_str());

        let other = created_device(
            &api,
            &tenant.manager,
            &tenant.organization,
            "ap-2",
            2,
            json!({"model": COMFAST_MODEL, "os": "OpenWrt 22.03"}),
        )
        .await;
        let id = other.get("id").as_str().unwrap().to_owned();
        assert_eq!(
            api.get(
                &format!("/api/v1/firmware-upgrader/device/{id}/firmware/"),
                &tenant.manager
            )
            .await
            .status,
            StatusCode::NOT_FOUND,
            "no build has that OS"
        );
        let patched = api
            .patch(&device_path(&id), &tenant.manager, json!({"os": OS}))
            .await;
        assert_eq!(patched.status, StatusCode::OK);
        let record = firmware_of(&api, &id).await;
        assert_eq!(record["image"], image.id.to_string().as_str());
    }
}

#[actix_web::test]
async fn a_deactivated_device_is_read_only_until_activated() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let created = created_device(
            &api,
            &tenant.manager,
            &tenant.organization,
            "ap",
            1,
            json!({}),
        )
        .await;
        let path = device_path(created.get("id").as_str().unwrap());
        let deactivated = api
            .post(&format!("{path}deactivate/"), &tenant.manager, json!({}))
            .await;
        assert_eq!(deactivated.status, StatusCode::OK, "{:?}", deactivated.body);
        assert_eq!(deactivated.get("is_deactivated"), true);
        let refused = api
            .patch(&path, &tenant.manager, json!({"name": "x"}))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.get("detail"),
            "Changes are not allowed for deactivated devices."
        );
        let refused = api
            .post(
                &format!("{path}register/"),
                &tenant.manager,
                json!({"os": OS}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            api.get(&path, &tenant.member).await.get("is_deactivated"),
            true
        );
        let activated = api
            .post(&format!("{path}activate/"), &tenant.manager, json!({}))
            .await;
        assert_eq!(activated.status, StatusCode::OK);
        assert_eq!(activated.get("is_deactivated"), false);
        assert_eq!(
            api.patch(&path, &tenant.manager, json!({"name": "x"}))
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            api.call(
                Method::GET,
                &format!("{path}activate/"),
                Some(&tenant.manager),
                None
            )
            .await
            .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}

#[actix_web::test]
async fn a_new_device_gets_the_auto_add_credentials_of_its_organization_and_shared_ones() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let mut stored = Vec::new();
        for (organization, name, auto_add) in [
            (Some(tenant.organization.id), "own auto", true),
            (Some(tenant.organization.id), "own manual", false),
            (None, "shared auto", true),
            (Some(other.organization.id), "foreign auto", true),
        ] {
            let mut credentials = NewCredentials::new(
                organization,
                name,
                "root",
                CredentialsSecret::Password(SecretText::new("pw")),
            );
            credentials.auto_add = auto_add;
            stored.push(
                api.db()
                    .insert_credentials(&credentials.into_credentials())
                    .await
                    .unwrap(),
            );
        }
        let created = created_device(
            &api,
            &tenant.manager,
            &tenant.organization,
            "ap",
            1,
            json!({}),
        )
        .await;
        let id: uuid::Uuid = created.get("id").as_str().unwrap().parse().unwrap();
        assert!(
            api.db()
                .device(&Scope::All, DeviceId(id))
                .await
                .unwrap()
                .is_some()
        );
        let mut attached: Vec<_> = api
            .db()
            .connections(DeviceId(id))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, credentials)| credentials.name)
            .collect();
        attached.sort();
        assert_eq!(attached, ["own auto", "shared auto"], "{}", api.backend());
    }
}

#[actix_web::test]
async fn a_device_with_an_unfinished_upgrade_is_not_deleted() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let image = api
            .build_with_image(&tenant.organization, OS, COMFAST)
            .await;
        let device = connected_device(api.db(), &tenant.organization, "ap", COMFAST_MODEL).await;
        let assigned = api
            .put(
                &format!("/api/v1/firmware-upgrader/device/{}/firmware/", device.id),
                &tenant.manager,
                json!({"image": image.id.to_string()}),
            )
            .await;
        assert_eq!(assigned.status, StatusCode::CREATED, "{:?}", assigned.body);
        let operation = assigned.body["upgrade_operation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = device_path(&device.id.to_string());
        let refused = api.delete(&path, &tenant.manager).await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(refused.get("code"), "conflict");
        let cancelled = api
            .post(
                &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/cancel/"),
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
        assert_eq!(
            api.delete(&path, &tenant.manager).await.status,
            StatusCode::NO_CONTENT
        );
    }
}

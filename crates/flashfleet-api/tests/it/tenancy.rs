//! Every route of the API, from the OpenAPI document: a user of organization A can neither read
//! nor change anything of organization B. Objects of B are not found (404, never 403); lists
//! never show them; creating with B's objects is refused; and B's objects are unchanged
//! afterwards.

use std::collections::BTreeMap;

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::TestRequest;
use flashfleet_models::repository::{DeviceRepository, FirmwareRepository, UpgradeRepository};
use flashfleet_models::{DeviceFirmware, NewBuild, Scope};
use serde_json::{Value, json};

use crate::support::{Tenant, TestApi, apis, connected_device, multipart, stored_image};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";

/// The ids of everything organization B has, by the name of the path parameter that names it.
struct Victim {
    organization: String,
    member_user: String,
    category: String,
    build: String,
    image: String,
    device: String,
    credentials: String,
    connection: String,
    batch: String,
    operation: String,
}

impl Victim {
    /// Every id of B, to look for in responses.
    fn ids(&self) -> Vec<&str> {
        vec![
            &self.organization,
            &self.member_user,
            &self.category,
            &self.build,
            &self.image,
            &self.device,
            &self.credentials,
            &self.connection,
            &self.batch,
            &self.operation,
        ]
    }

    /// `template` with its parameters replaced by B's ids; panics on a parameter the test does
    /// not know, so a new route cannot escape it.
    fn fill(&self, template: &str) -> String {
        let mut path = template.to_owned();
        let id = if template.starts_with("/api/v1/controller/credential/") {
            &self.credentials
        } else if template.starts_with("/api/v1/controller/device/")
            || template.starts_with("/api/v1/firmware-upgrader/device/")
        {
            &self.device
        } else if template.starts_with("/api/v1/firmware-upgrader/build/{build}/image/") {
            &self.image
        } else if template.starts_with("/api/v1/firmware-upgrader/build/") {
            &self.build
        } else if template.starts_with("/api/v1/firmware-upgrader/category/") {
            &self.category
        } else if template.starts_with("/api/v1/firmware-upgrader/batch-upgrade-operation/") {
            &self.batch
        } else if template.starts_with("/api/v1/firmware-upgrader/upgrade-operation/") {
            &self.operation
        } else if template.starts_with("/api/v1/users/organization/") {
            &self.organization
        } else if template.starts_with("/api/v1/users/user/") {
            &self.member_user
        } else {
            panic!("the tenancy test does not know which object {template} names")
        };
        path = path.replace("{build}", &self.build);
        path = path.replace("{connection_id}", &self.connection);
        path = path.replace("{id}", id);
        assert!(!path.contains('{'), "unknown parameter in {template}");
        path
    }
}

/// Organization B with one of everything: a category, a build with an image, a device with
/// credentials, a connection and a firmware record, a mass upgrade with its operation, and a
/// member.
async fn victim(api: &TestApi, tenant: &Tenant) -> Victim {
    let category = api.category(Some(&tenant.organization), "B routers").await;
    let old_build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await
        .unwrap();
    let old_image = stored_image(api.db(), old_build.id, COMFAST).await;
    let build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "2.0").into_build())
        .await
        .unwrap();
    let uploaded = api
        .upload(
            &build.id.to_string(),
            &tenant.manager,
            "b.bin",
            b"organization b's firmware",
            Some(COMFAST),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let device = connected_device(api.db(), &tenant.organization, "b-ap", COMFAST_MODEL).await;
    api.db()
        .insert_device_firmware(&DeviceFirmware::new(device.id, old_image.id, true))
        .await
        .unwrap();
    let (connection, credentials) = api.db().connections(device.id).await.unwrap().remove(0);
    let started = api
        .post(
            &format!("/api/v1/firmware-upgrader/build/{}/upgrade/", build.id),
            &tenant.manager,
            json!({}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
    let operation = api
        .db()
        .unfinished_operation(device.id)
        .await
        .unwrap()
        .unwrap();
    let members = api.get("/api/v1/users/user/", &tenant.member).await;
    Victim {
        organization: tenant.organization.id.to_string(),
        member_user: members.body["results"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        category: category.id.to_string(),
        build: build.id.to_string(),
        image: uploaded.get("id").as_str().unwrap().to_owned(),
        device: device.id.to_string(),
        credentials: credentials.id.to_string(),
        connection: connection.id.to_string(),
        batch: started.get("batch").as_str().unwrap().to_owned(),
        operation: operation.id.to_string(),
    }
}

/// A body that would be accepted if the object were the caller's: B's objects as references.
fn body_for(victim: &Victim) -> Value {
    json!({
        "name": "taken over",
        "organization": victim.organization,
        "category": victim.category,
        "version": "9.9",
        "image": victim.image,
        "credentials": victim.credentials,
        "mac_address": "02:00:00:00:99:99",
        "username": "intruder",
        "password": "a long enough password",
        "organization_users": [{"organization": victim.organization, "is_admin": true}],
        "connector": "openwrt-ssh",
        "params": {"username": "root", "password": "x", "port": 22},
        "model": "x",
        "os": "x",
        "upgrade_all": true,
    })
}

/// What superusers see of B's objects: compared before and after, nothing of it may change.
async fn snapshot(api: &TestApi, victim: &Victim) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for path in [
        format!("/api/v1/users/organization/{}/", victim.organization),
        format!("/api/v1/users/user/{}/", victim.member_user),
        format!("/api/v1/firmware-upgrader/category/{}/", victim.category),
        format!("/api/v1/firmware-upgrader/build/{}/", victim.build),
        format!(
            "/api/v1/firmware-upgrader/build/{}/image/{}/",
            victim.build, victim.image
        ),
        format!("/api/v1/controller/device/{}/", victim.device),
        format!("/api/v1/controller/credential/{}/", victim.credentials),
        format!(
            "/api/v1/controller/device/{}/connection/{}/",
            victim.device, victim.connection
        ),
        format!(
            "/api/v1/firmware-upgrader/device/{}/firmware/",
            victim.device
        ),
        format!(
            "/api/v1/firmware-upgrader/batch-upgrade-operation/{}/",
            victim.batch
        ),
        format!(
            "/api/v1/firmware-upgrader/upgrade-operation/{}/",
            victim.operation
        ),
    ] {
        let reply = api.get(&path, &api.superuser).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        state.insert(path, reply.body);
    }
    state
}

#[actix_web::test]
async fn no_route_lets_a_user_of_one_organization_read_or_change_another_organizations_objects() {
    for api in apis().await {
        let intruders = api.tenant("a").await;
        let owner_of_b = api.tenant("b").await;
        let victim = victim(&api, &owner_of_b).await;
        let before = snapshot(&api, &victim).await;

        let document = api
            .send(TestRequest::get().uri("/api/v1/openapi.json"))
            .await;
        let paths = document.get("paths").as_object().unwrap().clone();
        let mut checked = 0;
        for (template, operations) in &paths {
            if template == "/api/v1/users/token/" {
                continue;
            }
            let mut methods: Vec<Method> = operations
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|method| method.to_uppercase().parse().ok())
                .collect();
            if methods.contains(&Method::PUT) {
                methods.push(Method::PATCH);
            }
            for token in [&intruders.owner, &intruders.manager, &intruders.member] {
                for method in &methods {
                    let path = victim.fill(template);
                    let reply = if template.ends_with("/image/") && method == Method::POST {
                        let (content_type, body) =
                            multipart("intruder.bin", b"intruder", Some(COMFAST));
                        api.send(
                            TestRequest::default()
                                .method(method.clone())
                                .uri(&path)
                                .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
                                .insert_header((header::CONTENT_TYPE, content_type))
                                .set_payload(body),
                        )
                        .await
                    } else {
                        let body = (method != Method::GET && method != Method::DELETE)
                            .then(|| body_for(&victim));
                        api.call(method.clone(), &path, Some(token), body).await
                    };
                    let has_parameters = template.contains('{');
                    if has_parameters {
                        assert_eq!(
                            reply.status,
                            StatusCode::NOT_FOUND,
                            "{method} {template} on organization B's object, {}: {:?}",
                            api.backend(),
                            reply.body
                        );
                    } else {
                        assert!(
                            reply.status == StatusCode::OK || reply.status.is_client_error(),
                            "{method} {template}: {} {:?}",
                            reply.status,
                            reply.body
                        );
                        assert_ne!(
                            reply.status,
                            StatusCode::CREATED,
                            "{method} {template} created something with organization B's objects: {:?}",
                            reply.body
                        );
                    }
                    let text = String::from_utf8_lossy(&reply.bytes);
                    for id in victim.ids() {
                        // A refusal may repeat the id the caller sent ("Invalid pk ..."); a
                        // success must not show any.
                        if reply.status.is_success() {
                            assert!(
                                !text.contains(id),
                                "{method} {template} shows organization B's {id}: {text}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 150,
            "only {checked} requests: is the OpenAPI document complete?"
        );
        assert_eq!(
            snapshot(&api, &victim).await,
            before,
            "organization B's objects changed, {}",
            api.backend()
        );
        let operation = api
            .db()
            .operation(&Scope::All, victim.operation.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            operation.status,
            flashfleet_models::UpgradeStatus::InProgress
        );
    }
}

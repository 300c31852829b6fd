//! `controller/credential/`: shapes, connectors, shared credentials, tenancy, and secrets that
//! never leave the server.

use actix_web::http::{Method, StatusCode};
use flashfleet_models::repository::DeviceRepository;
use flashfleet_models::{CredentialsId, Scope};
use serde_json::{Value, json};

use crate::support::{Reply, TestApi, apis};

const CREDENTIALS: &str = "/api/v1/controller/credential/";
const PASSWORD: &str = "correct-horse-battery-staple-7731";
const NEW_PASSWORD: &str = "second-secret-password-4410";
const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAsecretkeymaterial9921\n-----END OPENSSH PRIVATE KEY-----\n";

/// A credentials body with the `openwrt-ssh` connector.
fn body(name: &str, organization: Value, params: Value) -> Value {
    json!({"connector": "openwrt-ssh", "name": name, "organization": organization, "params": params})
}

fn assert_no_secret(reply: &Reply) {
    let text = String::from_utf8_lossy(&reply.bytes);
    for secret in [PASSWORD, NEW_PASSWORD, "secretkeymaterial9921"] {
        assert!(!text.contains(secret), "a secret in a response: {text}");
    }
}

async fn stored_secret(api: &TestApi, id: &str) -> String {
    api.db()
        .credentials(&Scope::All, CredentialsId(id.parse().unwrap()))
        .await
        .unwrap()
        .unwrap()
        .secret
        .expose()
        .to_owned()
}

#[actix_web::test]
async fn secrets_are_stored_and_never_returned_in_any_response() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let organization = tenant.organization.id.to_string();
        let mut replies = Vec::new();
        let created = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                json!({"connector": "openwrt-ssh", "name": "root", "organization": organization,
                    "auto_add": true, "params": {"username": "root", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(
            created.keys(),
            [
                "id",
                "connector",
                "name",
                "organization",
                "auto_add",
                "params",
                "created",
                "modified",
                "details"
            ]
        );
        assert_eq!(
            created.get("params"),
            &json!({"username": "root", "port": 22, "auth": "password"})
        );
        assert_eq!(created.get("auto_add"), true);
        let id = created.get("id").as_str().unwrap().to_owned();
        assert_eq!(stored_secret(&api, &id).await, PASSWORD);
        let path = format!("{CREDENTIALS}{id}/");
        replies.push(created);

        replies.push(api.get(CREDENTIALS, &tenant.member).await);
        replies.push(api.get(&path, &tenant.member).await);
        let patched = api
            .patch(&path, &tenant.manager, json!({"params": {"port": 2222}}))
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
        assert_eq!(
            patched.get("params"),
            &json!({"username": "root", "port": 2222, "auth": "password"})
        );
        assert_eq!(
            stored_secret(&api, &id).await,
            PASSWORD,
            "no secret given: the stored one stays"
        );
        replies.push(patched);
        let changed = api
            .put(
                &path,
                &tenant.manager,
                json!({"connector": "openwrt-ssh", "name": "root",
                    "params": {"username": "admin", "password": NEW_PASSWORD}}),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
        assert_eq!(
            changed.get("params"),
            &json!({"username": "admin", "port": 22, "auth": "password"})
        );
        assert_eq!(stored_secret(&api, &id).await, NEW_PASSWORD);
        replies.push(changed);
        let keyed = api
            .patch(
                &path,
                &tenant.manager,
                json!({"params": {"username": "admin", "key": KEY}}),
            )
            .await;
        assert_eq!(keyed.status, StatusCode::OK, "{:?}", keyed.body);
        assert_eq!(keyed.get("params")["auth"], "key");
        assert_eq!(stored_secret(&api, &id).await, KEY);
        replies.push(keyed);

        // Refusals must not echo the secret either.
        replies.push(
            api.post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "",
                    json!(organization),
                    json!({"username": "", "password": PASSWORD, "port": 0}),
                ),
            )
            .await,
        );
        replies.push(
            api.post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD, "key": KEY}),
                ),
            )
            .await,
        );
        replies.push(
            api.post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": ["not", PASSWORD]}),
                ),
            )
            .await,
        );
        replies.push(
            api.post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "key": "not a key but secretkeymaterial9921"}),
                ),
            )
            .await,
        );
        replies.push(
            api.post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "root",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD}),
                ),
            )
            .await,
        );
        replies.push(
            api.patch(
                &path,
                &tenant.member,
                json!({"params": {"password": PASSWORD}}),
            )
            .await,
        );
        for reply in &replies {
            assert_no_secret(reply);
        }
        assert_eq!(
            replies
                .iter()
                .filter(|reply| reply.status == StatusCode::BAD_REQUEST)
                .count(),
            5,
            "every refusal above was answered: {:?}",
            replies.iter().map(|reply| reply.status).collect::<Vec<_>>()
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
async fn invalid_parameters_are_reported_on_params() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let organization = tenant.organization.id.to_string();
        let missing = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                json!({"organization": organization}),
            )
            .await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        for field in ["connector", "name", "params"] {
            assert_eq!(
                missing.get(field),
                &json!(["This field is required."]),
                "{field}"
            );
        }
        let both = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD, "key": KEY}),
                ),
            )
            .await;
        assert_eq!(
            both.get("params"),
            &json!(["Give either a password or a key, not both."])
        );
        let neither = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body("x", json!(organization), json!({"port": 70000})),
            )
            .await;
        assert_eq!(
            neither.get("params"),
            &json!([
                "Give a password or a key.",
                "port: Ensure this value is less than or equal to 65535.",
                "username: This field is required."
            ])
        );
        let zero_port = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD, "port": 0}),
                ),
            )
            .await;
        assert_eq!(
            zero_port.get("params"),
            &json!(["port: Ensure this value is greater than or equal to 1."])
        );
        let bad_key = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "key": "nope"}),
                ),
            )
            .await;
        assert_eq!(
            bad_key.get("params"),
            &json!(["key: the private key is not in OpenSSH or PEM format"])
        );
        let twice = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD}),
                ),
            )
            .await;
        assert_eq!(twice.status, StatusCode::CREATED);
        let twice = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "x",
                    json!(organization),
                    json!({"username": "root", "password": PASSWORD}),
                ),
            )
            .await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            twice.get("name"),
            &json!(["Credentials with this name already exist in this organization."])
        );
    }
}

#[actix_web::test]
async fn openwisp_connector_paths_are_mapped_and_unknown_connectors_refused() {
    for api in apis().await {
        for (given, expected) in [
            (
                "openwisp_controller.connection.connectors.ssh.Ssh",
                "openwrt-ssh",
            ),
            (
                "openwisp_controller.connection.connectors.openwrt.ssh.OpenWrt",
                "openwrt-ssh",
            ),
        ] {
            let created = api
                .post(
                    CREDENTIALS,
                    &api.superuser,
                    json!({"connector": given, "name": given, "organization": null,
                        "params": {"username": "root", "password": PASSWORD}}),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
            assert_eq!(created.get("connector"), expected);
            assert_eq!(created.get("organization"), &serde_json::Value::Null);
        }
        let unknown = api
            .post(
                CREDENTIALS,
                &api.superuser,
                json!({"connector": "snmp", "name": "x", "organization": null,
                    "params": {"username": "root", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            unknown.get("connector"),
            &json!(["\"snmp\" is not a valid choice."])
        );
    }
}

#[actix_web::test]
async fn shared_credentials_are_read_by_everyone_and_changed_by_superusers_only() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let refused = api
            .post(
                CREDENTIALS,
                &tenant.manager,
                body(
                    "shared",
                    json!(null),
                    json!({"username": "root", "password": PASSWORD}),
                ),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("organization"),
            &json!(["Only superusers can create or edit shared credentials"])
        );
        let shared = api
            .post(
                CREDENTIALS,
                &api.superuser,
                json!({"connector": "openwrt-ssh", "name": "shared",
                    "params": {"username": "root", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(shared.status, StatusCode::CREATED, "{:?}", shared.body);
        let shared_path = format!("{CREDENTIALS}{}/", shared.get("id").as_str().unwrap());
        assert_eq!(
            api.get(&shared_path, &tenant.member).await.status,
            StatusCode::OK
        );
        let refused = api
            .patch(&shared_path, &tenant.manager, json!({"name": "mine"}))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            api.delete(&shared_path, &tenant.owner).await.status,
            StatusCode::FORBIDDEN
        );

        let foreign = api
            .post(
                CREDENTIALS,
                &other.manager,
                json!({"connector": "openwrt-ssh", "name": "theirs",
                    "organization": other.organization.id.to_string(),
                    "params": {"username": "root", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(foreign.status, StatusCode::CREATED);
        let foreign_path = format!("{CREDENTIALS}{}/", foreign.get("id").as_str().unwrap());
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "x"}))),
            (Method::DELETE, None),
        ] {
            let reply = api
                .call(method.clone(), &foreign_path, Some(&tenant.owner), body)
                .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        }
        let list = api.get(CREDENTIALS, &tenant.member).await;
        assert_eq!(list.get("count"), 1, "shared only: {:?}", list.body);
        assert_eq!(api.get(CREDENTIALS, &api.superuser).await.get("count"), 2);
        let refused = api
            .patch(&foreign_path, &other.member, json!({"name": "x"}))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let moved = api
            .patch(
                &foreign_path,
                &api.superuser,
                json!({"organization": tenant.organization.id.to_string()}),
            )
            .await;
        assert_eq!(moved.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            moved.get("organization"),
            &json!(["The organization of credentials cannot be changed."])
        );
    }
}

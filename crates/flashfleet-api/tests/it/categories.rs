//! `category/`: upstream's shapes, order, and who may do what.

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use crate::support::apis;

#[actix_web::test]
async fn a_manager_creates_lists_changes_and_deletes_categories_of_its_organization() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let organization = tenant.organization.id.to_string();
        let created = api
            .post(
                "/api/v1/firmware-upgrader/category/",
                &tenant.manager,
                json!({"name": "Routers", "description": "core", "organization": organization}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let keys: Vec<&str> = created
            .body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            &keys[..6],
            [
                "id",
                "created",
                "modified",
                "name",
                "description",
                "organization"
            ],
            "upstream's key order"
        );
        let id = created.get("id").as_str().unwrap().to_owned();
        api.post(
            "/api/v1/firmware-upgrader/category/",
            &tenant.manager,
            json!({"name": "Access points", "organization": organization}),
        )
        .await;
        let list = api
            .get("/api/v1/firmware-upgrader/category/", &tenant.member)
            .await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.get("count"), 2);
        let names: Vec<&str> = list.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|category| category["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["Routers", "Access points"],
            "-name, {}",
            api.backend()
        );
        let patched = api
            .call(
                Method::PATCH,
                &format!("/api/v1/firmware-upgrader/category/{id}/"),
                Some(&tenant.manager),
                Some(json!({"description": "edge"})),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
        assert_eq!(patched.get("description"), "edge");
        assert_eq!(patched.get("name"), "Routers");
        let deleted = api
            .call(
                Method::DELETE,
                &format!("/api/v1/firmware-upgrader/category/{id}/"),
                Some(&tenant.manager),
                None,
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = api
            .get(
                &format!("/api/v1/firmware-upgrader/category/{id}/"),
                &tenant.manager,
            )
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.get("detail"), "No Category matches the given query.");
    }
}

#[actix_web::test]
async fn a_member_reads_but_cannot_change() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let category = api.category(Some(&tenant.organization), "Routers").await;
        let path = format!("/api/v1/firmware-upgrader/category/{}/", category.id);
        assert_eq!(api.get(&path, &tenant.member).await.status, StatusCode::OK);
        let refused = api
            .call(
                Method::PATCH,
                &path,
                Some(&tenant.member),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.get("code"), "permission_denied");
        let refused = api
            .post(
                "/api/v1/firmware-upgrader/category/",
                &tenant.member,
                json!({"name": "x", "organization": tenant.organization.id.to_string()}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("organization")[0],
            format!(
                "Invalid pk \"{}\" - object does not exist.",
                tenant.organization.id
            )
        );
    }
}

#[actix_web::test]
async fn shared_categories_are_read_by_managers_and_written_by_superusers_only() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let refused = api
            .post(
                "/api/v1/firmware-upgrader/category/",
                &tenant.manager,
                json!({"name": "Shared", "organization": null}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("organization"),
            &json!(["Only superusers can create or edit shared categories"])
        );
        let created = api
            .post(
                "/api/v1/firmware-upgrader/category/",
                &api.superuser,
                json!({"name": "Shared", "organization": null}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let path = format!(
            "/api/v1/firmware-upgrader/category/{}/",
            created.get("id").as_str().unwrap()
        );
        assert_eq!(api.get(&path, &tenant.manager).await.status, StatusCode::OK);
        let refused = api
            .call(Method::DELETE, &path, Some(&tenant.manager), None)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
}

#[actix_web::test]
async fn an_empty_category_gets_upstreams_required_message() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let refused = api
            .post(
                "/api/v1/firmware-upgrader/category/",
                &tenant.manager,
                json!({"organization": tenant.organization.id.to_string()}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.get("name"), &json!(["This field is required."]));
        assert_eq!(refused.get("code"), "invalid");
    }
}

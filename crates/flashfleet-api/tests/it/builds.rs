//! `build/`: upstream's shapes, filters, ordering and pagination.

use actix_web::http::{Method, StatusCode};
use flashfleet_api::ApiConfig;
use flashfleet_db::testing::TestDb;
use serde_json::{Value, json};

use crate::support::{TestApi, apis};

async fn create_build(api: &TestApi, token: &str, category: &str, version: &str) -> Value {
    let created = api
        .post(
            "/api/v1/firmware-upgrader/build/",
            token,
            json!({"category": category, "version": version, "os": format!("OpenWrt {version}"), "changelog": "notes"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body
}

#[actix_web::test]
async fn a_build_has_upstreams_shape_and_its_category_relation() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let category = api.category(Some(&tenant.organization), "Routers").await;
        let build = create_build(&api, &tenant.manager, &category.id.to_string(), "1.0").await;
        let keys: Vec<&String> = build.as_object().unwrap().keys().collect();
        assert_eq!(
            &keys[..8],
            [
                "id",
                "category_relation",
                "created",
                "modified",
                "version",
                "os",
                "changelog",
                "category"
            ]
        );
        assert_eq!(
            build["category_relation"],
            json!({"name": "Routers", "organization": tenant.organization.id.to_string()})
        );
        let created = build["created"].as_str().unwrap();
        assert!(
            created.ends_with('Z') && created.len() == "2026-11-22T05:33:32.581978Z".len(),
            "{created}"
        );
    }
}

#[actix_web::test]
async fn duplicate_and_empty_builds_get_upstreams_errors() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let category = api.category(Some(&tenant.organization), "Routers").await;
        create_build(&api, &tenant.manager, &category.id.to_string(), "1.0").await;
        let duplicate = api
            .post(
                "/api/v1/firmware-upgrader/build/",
                &tenant.manager,
                json!({"category": category.id.to_string(), "version": "1.0"}),
            )
            .await;
        assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            duplicate.get("non_field_errors"),
            &json!(["The fields category, version must make a unique set."])
        );
        let empty = api
            .post(
                "/api/v1/firmware-upgrader/build/",
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        assert_eq!(empty.get("version"), &json!(["This field is required."]));
        assert_eq!(empty.get("category"), &json!(["This field is required."]));
        let same_os = api
            .post(
                "/api/v1/firmware-upgrader/build/",
                &tenant.manager,
                json!({"category": category.id.to_string(), "version": "1.1", "os": "OpenWrt 1.0"}),
            )
            .await;
        assert_eq!(same_os.status, StatusCode::BAD_REQUEST);
        assert!(
            same_os.get("os")[0]
                .as_str()
                .unwrap()
                .starts_with("A build with this OS identifier (\"OpenWrt 1.0\")")
        );
    }
}

#[actix_web::test]
async fn a_manager_cannot_put_builds_in_a_shared_category() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let shared = api.category(None, "Shared").await;
        let refused = api
            .post(
                "/api/v1/firmware-upgrader/build/",
                &tenant.manager,
                json!({"category": shared.id.to_string(), "version": "1.0"}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("category"),
            &json!([format!(
                "Invalid pk \"{}\" - object does not exist.",
                shared.id
            )])
        );
        create_build(&api, &api.superuser, &shared.id.to_string(), "1.0").await;
        let list = api
            .get("/api/v1/firmware-upgrader/build/", &tenant.member)
            .await;
        assert_eq!(list.get("count"), 1, "shared builds are visible");
    }
}

#[actix_web::test]
async fn lists_are_filtered_ordered_and_paginated_with_absolute_urls() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let routers = api.category(Some(&tenant.organization), "Routers").await;
        let points = api.category(Some(&tenant.organization), "Points").await;
        for version in ["1.0", "1.1", "1.2"] {
            create_build(&api, &tenant.manager, &routers.id.to_string(), version).await;
        }
        create_build(&api, &tenant.manager, &points.id.to_string(), "9.0").await;
        let filtered = api
            .get(
                &format!("/api/v1/firmware-upgrader/build/?category={}", routers.id),
                &tenant.manager,
            )
            .await;
        assert_eq!(filtered.get("count"), 3);
        let by_version = api
            .get(
                "/api/v1/firmware-upgrader/build/?version=1.1&organization=acme",
                &tenant.manager,
            )
            .await;
        assert_eq!(by_version.get("count"), 1);
        let other_slug = api
            .get(
                "/api/v1/firmware-upgrader/build/?organization=nobody",
                &tenant.manager,
            )
            .await;
        assert_eq!(other_slug.get("count"), 0);
        let first = api
            .get(
                "/api/v1/firmware-upgrader/build/?page_size=1&ordering=version",
                &tenant.manager,
            )
            .await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.get("count"), 4);
        assert_eq!(first.body["results"][0]["version"], "1.0");
        assert_eq!(first.get("previous"), &Value::Null);
        assert_eq!(
            first.get("next"),
            "http://localhost:8080/api/v1/firmware-upgrader/build/?ordering=version&page=2&page_size=1"
        );
        assert_eq!(first.headers.get("x-total-count").unwrap(), "4");
        let second = api
            .get(
                "/api/v1/firmware-upgrader/build/?page=2&page_size=1&ordering=version",
                &tenant.manager,
            )
            .await;
        assert_eq!(second.body["results"][0]["version"], "1.1");
        assert_eq!(
            second.get("previous"),
            "http://localhost:8080/api/v1/firmware-upgrader/build/?ordering=version&page_size=1"
        );
        let past = api
            .get(
                "/api/v1/firmware-upgrader/build/?page=9&page_size=1",
                &tenant.manager,
            )
            .await;
        assert_eq!(past.status, StatusCode::NOT_FOUND);
        assert_eq!(past.get("detail"), "Invalid page.");
        let huge = api
            .get(
                "/api/v1/firmware-upgrader/build/?page_size=100000",
                &tenant.manager,
            )
            .await;
        assert_eq!(huge.status, StatusCode::OK);
        let bad_order = api
            .get(
                "/api/v1/firmware-upgrader/build/?ordering=secret",
                &tenant.manager,
            )
            .await;
        assert_eq!(bad_order.status, StatusCode::BAD_REQUEST);
        assert!(bad_order.body["ordering"].is_array());
        let bad_category = api
            .get(
                "/api/v1/firmware-upgrader/build/?category=nope",
                &tenant.manager,
            )
            .await;
        assert_eq!(bad_category.status, StatusCode::BAD_REQUEST);
    }
}

#[actix_web::test]
async fn the_configured_base_url_wins_over_the_request_host() {
    let api = TestApi::with_config(
        TestDb::sqlite().await,
        ApiConfig {
            base_url: Some("https://firmware.example.com/".into()),
            throttle: None,
            ..ApiConfig::default()
        },
    )
    .await;
    let tenant = api.tenant("acme").await;
    let category = api.category(Some(&tenant.organization), "Routers").await;
    for version in ["1", "2"] {
        create_build(&api, &tenant.manager, &category.id.to_string(), version).await;
    }
    let page = api
        .get(
            "/api/v1/firmware-upgrader/build/?page_size=1",
            &tenant.manager,
        )
        .await;
    assert_eq!(
        page.get("next"),
        "https://firmware.example.com/api/v1/firmware-upgrader/build/?page=2&page_size=1"
    );
}

#[actix_web::test]
async fn updating_and_deleting_a_build() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let category = api.category(Some(&tenant.organization), "Routers").await;
        let build = create_build(&api, &tenant.manager, &category.id.to_string(), "1.0").await;
        let path = format!(
            "/api/v1/firmware-upgrader/build/{}/",
            build["id"].as_str().unwrap()
        );
        let put = api
            .call(
                Method::PUT,
                &path,
                Some(&tenant.manager),
                Some(json!({"category": category.id.to_string(), "version": "1.0.1", "os": ""})),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        assert_eq!(put.get("version"), "1.0.1");
        assert_eq!(put.get("os"), &Value::Null);
        let put_missing = api
            .call(Method::PUT, &path, Some(&tenant.manager), Some(json!({})))
            .await;
        assert_eq!(put_missing.status, StatusCode::BAD_REQUEST);
        let member = api
            .call(Method::DELETE, &path, Some(&tenant.member), None)
            .await;
        assert_eq!(member.status, StatusCode::FORBIDDEN);
        let deleted = api
            .call(Method::DELETE, &path, Some(&tenant.manager), None)
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert!(deleted.bytes.is_empty());
    }
}

//! The OpenAPI document and the docs UI.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use flashfleet_db::testing::TestDb;

use crate::support::TestApi;

#[actix_web::test]
async fn the_openapi_document_is_3_1_and_lists_upstreams_paths() {
    let api = TestApi::new(TestDb::sqlite().await).await;
    let document = api
        .send(TestRequest::get().uri("/api/v1/openapi.json"))
        .await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.get("openapi").as_str().unwrap().starts_with("3.1"));
    let paths = document.get("paths").as_object().unwrap();
    for path in [
        "/api/v1/firmware-upgrader/build/",
        "/api/v1/firmware-upgrader/build/{id}/",
        "/api/v1/firmware-upgrader/build/{id}/upgrade/",
        "/api/v1/firmware-upgrader/build/{build}/image/",
        "/api/v1/firmware-upgrader/build/{build}/image/{id}/download/",
        "/api/v1/firmware-upgrader/category/",
        "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/",
        "/api/v1/firmware-upgrader/upgrade-operation/{id}/cancel/",
        "/api/v1/firmware-upgrader/device/{id}/firmware/",
        "/api/v1/firmware-upgrader/device/{id}/upgrade-operation/",
        "/api/v1/controller/device/",
        "/api/v1/controller/device/{id}/",
        "/api/v1/controller/device/{id}/register/",
        "/api/v1/controller/device/{id}/deactivate/",
        "/api/v1/controller/device/{id}/activate/",
        "/api/v1/controller/device/{id}/connection/",
        "/api/v1/controller/device/{id}/connection/{connection_id}/",
        "/api/v1/controller/credential/",
        "/api/v1/controller/credential/{id}/",
        "/api/v1/users/token/",
        "/api/v1/users/organization/",
        "/api/v1/users/organization/{id}/",
        "/api/v1/users/user/",
        "/api/v1/users/user/{id}/",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
}

#[actix_web::test]
async fn the_docs_ui_is_served_without_internet() {
    let api = TestApi::new(TestDb::sqlite().await).await;
    let page = api.send(TestRequest::get().uri("/api/v1/docs/")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.bytes);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "no asset from the internet: {html}"
    );
    let initializer = api
        .send(TestRequest::get().uri("/api/v1/docs/swagger-initializer.js"))
        .await;
    assert_eq!(initializer.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&initializer.bytes).contains("/api/v1/openapi.json"));
    let bundle = api
        .send(TestRequest::get().uri("/api/v1/docs/swagger-ui-bundle.js"))
        .await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.bytes.len() > 100_000);
}

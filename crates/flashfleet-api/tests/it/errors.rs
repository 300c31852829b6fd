//! Authentication, unknown routes and methods, request ids and the rate limit.

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::TestRequest;
use flashfleet_api::{ApiConfig, Throttle};
use flashfleet_db::testing::TestDb;

use crate::support::{TestApi, apis};

#[actix_web::test]
async fn requests_without_or_with_wrong_credentials_get_upstreams_401() {
    for api in apis().await {
        let anonymous = api
            .call(Method::GET, "/api/v1/firmware-upgrader/build/", None, None)
            .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            anonymous.get("detail"),
            "Authentication credentials were not provided."
        );
        assert_eq!(
            anonymous.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        assert_eq!(
            anonymous.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let wrong = api
            .call(
                Method::GET,
                "/api/v1/firmware-upgrader/build/",
                Some("0000000000000000000000000000000000000000"),
                None,
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.get("detail"), "Invalid token.");
        let token_scheme = api
            .send(
                TestRequest::get()
                    .uri("/api/v1/firmware-upgrader/build/")
                    .insert_header((header::AUTHORIZATION, format!("Token {}", api.superuser))),
            )
            .await;
        assert_eq!(
            token_scheme.status,
            StatusCode::UNAUTHORIZED,
            "upstream accepts only Bearer"
        );
    }
}

#[actix_web::test]
async fn every_response_carries_a_request_id_that_error_bodies_repeat() {
    let api = TestApi::new(TestDb::sqlite().await).await;
    let ok = api
        .get("/api/v1/firmware-upgrader/build/", &api.superuser)
        .await;
    assert!(ok.headers.get("x-request-id").is_some());
    let missing = api
        .send(
            TestRequest::get()
                .uri("/api/v1/firmware-upgrader/build/00000000-0000-0000-0000-000000000000/")
                .insert_header((header::AUTHORIZATION, format!("Bearer {}", api.superuser)))
                .insert_header(("x-request-id", "trace-me-42")),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.get("request_id"), "trace-me-42");
    assert_eq!(missing.headers.get("x-request-id").unwrap(), "trace-me-42");
    assert_eq!(missing.get("detail"), "No Build matches the given query.");
    let forged = api
        .send(
            TestRequest::get()
                .uri("/api/v1/firmware-upgrader/build/")
                .insert_header(("x-request-id", "two words")),
        )
        .await;
    assert_ne!(forged.get("request_id"), "two words");
    assert!(forged.get("request_id").as_str().is_some());
}

#[actix_web::test]
async fn unknown_routes_methods_ids_and_bodies_are_clear_client_errors() {
    let api = TestApi::new(TestDb::sqlite().await).await;
    let token = api.superuser.clone();
    let unknown = api.get("/api/v1/firmware-upgrader/nothing/", &token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.get("code"), "not_found");
    let bad_id = api
        .get("/api/v1/firmware-upgrader/build/not-a-uuid/", &token)
        .await;
    assert_eq!(bad_id.status, StatusCode::NOT_FOUND);
    let method = api
        .call(
            Method::DELETE,
            "/api/v1/firmware-upgrader/build/",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        method.headers.get(header::ALLOW).unwrap(),
        "GET, POST, HEAD, OPTIONS"
    );
    let head = api
        .call(
            Method::HEAD,
            "/api/v1/firmware-upgrader/build/",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    let malformed = api
        .send(
            TestRequest::post()
                .uri("/api/v1/firmware-upgrader/category/")
                .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload("{not json"),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed
            .get("detail")
            .as_str()
            .unwrap()
            .starts_with("JSON parse error"),
        "{:?}",
        malformed.body
    );
    let form = api
        .send(
            TestRequest::post()
                .uri("/api/v1/firmware-upgrader/category/")
                .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .set_payload("name=Shared+routers&organization="),
        )
        .await;
    assert_eq!(form.status, StatusCode::CREATED, "{:?}", form.body);
    assert_eq!(form.get("organization"), &serde_json::Value::Null);
    let media = api
        .send(
            TestRequest::post()
                .uri("/api/v1/firmware-upgrader/category/")
                .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
                .insert_header((header::CONTENT_TYPE, "text/plain"))
                .set_payload("name"),
        )
        .await;
    assert_eq!(media.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[actix_web::test]
async fn a_user_over_the_rate_limit_gets_429_with_retry_after() {
    let api = TestApi::with_config(
        TestDb::sqlite().await,
        ApiConfig {
            throttle: Some(Throttle::per_minute(3)),
            ..ApiConfig::default()
        },
    )
    .await;
    for _ in 0..3 {
        let reply = api
            .get("/api/v1/firmware-upgrader/build/", &api.superuser)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let throttled = api
        .get("/api/v1/firmware-upgrader/build/", &api.superuser)
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = throttled
        .headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert!(
        throttled
            .get("detail")
            .as_str()
            .unwrap()
            .starts_with("Request was throttled. Expected available in")
    );
    let other = api.tenant("acme").await;
    let reply = api
        .get("/api/v1/firmware-upgrader/build/", &other.member)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "the limit is per user");
}

#[actix_web::test]
async fn apis_over_every_backend_answer() {
    for api in apis().await {
        let reply = api
            .get("/api/v1/firmware-upgrader/category/", &api.superuser)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", api.backend());
    }
}

//! Server-Sent Events: the state first, then every persisted change, then `end`.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use flashfleet_models::NewBuild;
use flashfleet_models::repository::FirmwareRepository;
use serde_json::{Value, json};

use crate::support::{TestApi, apis, connected_device, stored_image};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const COMFAST_MODEL: &str = "COMFAST CF-E375AC";

/// Reads frames of a streaming response until `until` says stop (or 10 s pass).
async fn read_events(
    body: &mut actix_web::body::BoxBody,
    until: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&events) {
        let chunk = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|context| std::pin::Pin::new(&mut *body).poll_next(context)),
        )
        .await
        .expect("the events arrive in time");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = value.to_owned();
                }
            }
            if !name.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

async fn queued_operation(api: &TestApi) -> (crate::support::Tenant, String, String) {
    let tenant = api.tenant("acme").await;
    let category = api.category(Some(&tenant.organization), "Routers").await;
    let build = api
        .db()
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await
        .unwrap();
    stored_image(api.db(), build.id, COMFAST).await;
    for name in ["ap-1", "ap-2"] {
        connected_device(api.db(), &tenant.organization, name, COMFAST_MODEL).await;
    }
    let started = api
        .post(
            &format!("/api/v1/firmware-upgrader/build/{}/upgrade/", build.id),
            &tenant.manager,
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
    let batch = started.get("batch").as_str().unwrap().to_owned();
    let operations = api
        .get(
            "/api/v1/firmware-upgrader/upgrade-operation/",
            &tenant.manager,
        )
        .await;
    let operation = operations.body["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (tenant, batch, operation)
}

#[actix_web::test]
async fn an_operation_stream_sends_the_state_the_change_and_the_end() {
    for api in apis().await {
        let (tenant, _, operation) = queued_operation(&api).await;
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(api.state.clone()))
                .configure(flashfleet_api::configure),
        )
        .await;
        let response = test::call_service(
            &app,
            TestRequest::get()
                .uri(&format!(
                    "/api/v1/firmware-upgrader/upgrade-operation/{operation}/events/"
                ))
                .insert_header((header::AUTHORIZATION, format!("Bearer {}", tenant.member)))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/event-stream"
        );
        let mut body = response.into_body();
        let first = read_events(&mut body, |events| !events.is_empty()).await;
        assert_eq!(first[0].0, "operation");
        assert_eq!(first[0].1["status"], "in-progress");
        assert_eq!(first[0].1["id"], operation.as_str());
        let cancelled = api
            .post(
                &format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/cancel/"),
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::OK);
        let rest = read_events(&mut body, |events| {
            events.last().is_some_and(|(name, _)| name == "end")
        })
        .await;
        let statuses: Vec<&Value> = rest
            .iter()
            .filter(|(name, _)| name == "operation")
            .map(|(_, operation)| &operation["status"])
            .collect();
        assert_eq!(statuses, [&json!("cancelled")], "{}", api.backend());
        assert_eq!(rest.last().unwrap().0, "end");
    }
}

#[actix_web::test]
async fn a_batch_stream_follows_its_operations_to_the_end() {
    for api in apis().await {
        let (tenant, batch, _) = queued_operation(&api).await;
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(api.state.clone()))
                .configure(flashfleet_api::configure),
        )
        .await;
        let response = test::call_service(
            &app,
            TestRequest::get()
                .uri(&format!(
                    "/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/events/"
                ))
                .insert_header((header::AUTHORIZATION, format!("Bearer {}", tenant.member)))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let state = read_events(&mut body, |events| {
            events.iter().any(|(name, _)| name == "batch")
        })
        .await;
        assert_eq!(
            state.iter().filter(|(name, _)| name == "operation").count(),
            2,
            "the operations come first"
        );
        let batch_state = &state.last().unwrap().1;
        assert_eq!(batch_state["progress_report"], "0 out of 2");
        assert!(batch_state.get("upgradeoperations").is_none());
        let cancelled = api
            .post(
                &format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/cancel/"),
                &tenant.manager,
                json!({}),
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::OK);
        let rest = read_events(&mut body, |events| {
            events.last().is_some_and(|(name, _)| name == "end")
        })
        .await;
        let last_batch = rest
            .iter()
            .rev()
            .find(|(name, _)| name == "batch")
            .map(|(_, batch)| batch)
            .unwrap();
        assert_eq!(last_batch["status"], "cancelled");
        assert_eq!(last_batch["progress_report"], "2 out of 2");
    }
}

#[actix_web::test]
async fn streams_of_other_organizations_are_not_found() {
    for api in apis().await {
        let (_, batch, operation) = queued_operation(&api).await;
        let stranger = api.tenant("other").await;
        for path in [
            format!("/api/v1/firmware-upgrader/upgrade-operation/{operation}/events/"),
            format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/events/"),
        ] {
            let reply = api.get(&path, &stranger.manager).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        }
    }
}

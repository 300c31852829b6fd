//! `build/<build>/image/`: multipart uploads checked against the map and the image's metadata,
//! downloads with upstream's permissions, and no file left behind.

use actix_web::http::{Method, StatusCode, header};
use flashfleet_api::ApiConfig;
use flashfleet_boards::test_image::TestImage;
use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::FirmwareRepository;
use flashfleet_models::{Build, NewBuild};
use serde_json::json;

use crate::support::{Tenant, TestApi, apis};

const COMFAST: &str = "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin";
const GL_MT300N: &str = "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin";

async fn build(api: &TestApi, tenant: Option<&Tenant>, version: &str) -> Build {
    let category = api
        .category(
            tenant.map(|tenant| &tenant.organization),
            &format!("Routers {version}"),
        )
        .await;
    api.db()
        .insert_build(&NewBuild::new(category.id, version).into_build())
        .await
        .unwrap()
}

async fn stored_keys(api: &TestApi) -> Vec<String> {
    api.state
        .store()
        .list_keys("")
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.to_string())
        .collect()
}

#[actix_web::test]
async fn an_images_file_url_carries_the_scope_the_api_is_mounted_under() {
    use actix_web::{App, test, web};

    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, Some(&tenant), "1.0").await;
        // An embedding application's own app, with the API under `/portal`.
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(api.state.clone()))
                .service(web::scope("/portal").configure(flashfleet_api::configure)),
        )
        .await;
        let bytes: Vec<u8> = (0..4096_u32).map(|index| (index * 7 % 251) as u8).collect();
        let (content_type, body) =
            crate::support::multipart("fw-sysupgrade.bin", &bytes, Some(COMFAST));
        let request = test::TestRequest::post()
            .uri(&format!(
                "/portal/api/v1/firmware-upgrader/build/{}/image/",
                build.id
            ))
            .insert_header((header::AUTHORIZATION, format!("Bearer {}", tenant.manager)))
            .insert_header((header::CONTENT_TYPE, content_type))
            .set_payload(body)
            .to_request();
        let uploaded: serde_json::Value = test::call_and_read_body_json(&app, request).await;
        let file = uploaded["file"].as_str().unwrap().to_owned();
        assert_eq!(
            file,
            format!(
                "http://localhost:8080/portal/api/v1/firmware-upgrader/build/{}/image/{}/download/",
                build.id,
                uploaded["id"].as_str().unwrap()
            ),
            "{}",
            api.backend()
        );
        let request = test::TestRequest::get()
            .uri(file.trim_start_matches("http://localhost:8080"))
            .insert_header((header::AUTHORIZATION, format!("Bearer {}", tenant.manager)))
            .to_request();
        let downloaded = test::call_and_read_body(&app, request).await;
        assert_eq!(downloaded.to_vec(), bytes, "{}", api.backend());
    }
}

#[actix_web::test]
async fn an_upload_with_an_explicit_type_has_upstreams_shape_and_downloads_back() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, Some(&tenant), "1.0").await;
        let bytes: Vec<u8> = (0..4096_u32).map(|index| (index * 7 % 251) as u8).collect();
        let uploaded = api
            .upload(
                &build.id.to_string(),
                &tenant.manager,
                "fw-sysupgrade.bin",
                &bytes,
                Some(COMFAST),
            )
            .await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
        let keys: Vec<&String> = uploaded.body.as_object().unwrap().keys().collect();
        assert_eq!(
            &keys[..6],
            ["id", "created", "modified", "file", "type", "build"]
        );
        assert_eq!(uploaded.get("type"), COMFAST);
        assert_eq!(uploaded.get("size"), 4096);
        assert_eq!(uploaded.get("boards"), &json!(["COMFAST CF-E375AC"]));
        let image = uploaded.get("id").as_str().unwrap().to_owned();
        let download_path = format!(
            "/api/v1/firmware-upgrader/build/{}/image/{image}/download/",
            build.id
        );
        assert_eq!(
            uploaded.get("file"),
            &json!(format!("http://localhost:8080{download_path}"))
        );
        let download = api.get(&download_path, &tenant.manager).await;
        assert_eq!(download.status, StatusCode::OK);
        assert_eq!(download.bytes, bytes);
        assert_eq!(
            download.headers.get(header::CONTENT_DISPOSITION).unwrap(),
            "inline; filename=\"fw-sysupgrade.bin\""
        );
        assert_eq!(
            download.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/octet-stream"
        );
        let member = api.get(&download_path, &tenant.member).await;
        assert_eq!(
            member.status,
            StatusCode::FORBIDDEN,
            "members do not download"
        );
        let list = api
            .get(
                &format!("/api/v1/firmware-upgrader/build/{}/image/", build.id),
                &tenant.member,
            )
            .await;
        assert_eq!(list.get("count"), 1);
    }
}

#[actix_web::test]
async fn the_type_comes_from_the_file_name_and_the_images_metadata() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, Some(&tenant), "1.0").await;
        let image = TestImage::builder().payload_len(8192).build().to_bytes();
        let uploaded = api
            .upload(
                &build.id.to_string(),
                &tenant.manager,
                &format!("openwrt-{GL_MT300N}"),
                &image,
                None,
            )
            .await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
        assert_eq!(uploaded.get("type"), GL_MT300N);
        assert_eq!(
            uploaded.body["metadata"]["version"]["board"],
            "glinet_gl-mt300n-v2"
        );
        let contradicting = api
            .upload(
                &build.id.to_string(),
                &tenant.manager,
                "image.bin",
                &image,
                Some(COMFAST),
            )
            .await;
        assert_eq!(contradicting.status, StatusCode::BAD_REQUEST);
        assert!(
            contradicting.get("file")[0]
                .as_str()
                .unwrap()
                .contains("ramips/mt76x8"),
            "{:?}",
            contradicting.body
        );
        assert_eq!(
            stored_keys(&api).await.len(),
            1,
            "refused uploads leave nothing"
        );
    }
}

#[actix_web::test]
async fn refused_uploads_get_upstreams_errors_and_leave_no_file() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, Some(&tenant), "1.0").await;
        let build_id = build.id.to_string();
        let first = api
            .upload(
                &build_id,
                &tenant.manager,
                "a.bin",
                b"firmware",
                Some(COMFAST),
            )
            .await;
        assert_eq!(first.status, StatusCode::CREATED);
        let duplicate = api
            .upload(
                &build_id,
                &tenant.manager,
                "b.bin",
                b"firmware",
                Some(COMFAST),
            )
            .await;
        assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            duplicate.get("__all__"),
            &json!(["Firmware Image with this Build and Type already exists."])
        );
        let unknown = api
            .upload(
                &build_id,
                &tenant.manager,
                "c.bin",
                b"firmware",
                Some("not-a-known-type.bin"),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            unknown.get("type"),
            &json!(["\"not-a-known-type.bin\" is not a valid choice."])
        );
        let underivable = api
            .upload(
                &build_id,
                &tenant.manager,
                "firmware.bin",
                b"firmware",
                None,
            )
            .await;
        assert_eq!(
            underivable.get("type"),
            &json!(["Could not find boards for this type"])
        );
        let empty = api
            .upload(&build_id, &tenant.manager, "d.bin", b"", Some(GL_MT300N))
            .await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{:?}", empty.body);
        let no_file = api
            .send(
                actix_web::test::TestRequest::post()
                    .uri(&format!("/api/v1/firmware-upgrader/build/{build_id}/image/"))
                    .insert_header((header::AUTHORIZATION, format!("Bearer {}", tenant.manager)))
                    .insert_header((
                        header::CONTENT_TYPE,
                        "multipart/form-data; boundary=xyz",
                    ))
                    .set_payload(
                        "--xyz\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nx\r\n--xyz--\r\n",
                    ),
            )
            .await;
        assert_eq!(no_file.status, StatusCode::BAD_REQUEST);
        assert_eq!(no_file.get("file"), &json!(["No file was submitted."]));
        let member = api
            .upload(
                &build_id,
                &tenant.member,
                "e.bin",
                b"firmware",
                Some(GL_MT300N),
            )
            .await;
        assert_eq!(member.status, StatusCode::FORBIDDEN);
        assert_eq!(stored_keys(&api).await.len(), 1, "{}", api.backend());
    }
}

#[actix_web::test]
async fn an_oversized_upload_is_413_and_leaves_no_file() {
    let api = TestApi::with_config(
        TestDb::sqlite().await,
        ApiConfig {
            max_file_size: Some(1000),
            throttle: None,
            ..ApiConfig::default()
        },
    )
    .await;
    let tenant = api.tenant("acme").await;
    let build = build(&api, Some(&tenant), "1.0").await;
    let refused = api
        .upload(
            &build.id.to_string(),
            &tenant.manager,
            "big.bin",
            &vec![7_u8; 5000],
            Some(COMFAST),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.get("code"), "payload_too_large");
    assert!(stored_keys(&api).await.is_empty());
    let accepted = api
        .upload(
            &build.id.to_string(),
            &tenant.manager,
            "small.bin",
            &[7_u8; 1000],
            Some(COMFAST),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::CREATED);
}

#[actix_web::test]
async fn deleting_an_image_or_its_build_deletes_the_files() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, Some(&tenant), "1.0").await;
        let build_id = build.id.to_string();
        let first = api
            .upload(&build_id, &tenant.manager, "a.bin", b"one", Some(COMFAST))
            .await;
        api.upload(&build_id, &tenant.manager, "b.bin", b"two", Some(GL_MT300N))
            .await;
        assert_eq!(stored_keys(&api).await.len(), 2);
        let image = first.get("id").as_str().unwrap();
        let deleted = api
            .call(
                Method::DELETE,
                &format!("/api/v1/firmware-upgrader/build/{build_id}/image/{image}/"),
                Some(&tenant.manager),
                None,
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(stored_keys(&api).await.len(), 1);
        let deleted = api
            .call(
                Method::DELETE,
                &format!("/api/v1/firmware-upgrader/build/{build_id}/"),
                Some(&tenant.manager),
                None,
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert!(stored_keys(&api).await.is_empty(), "{}", api.backend());
    }
}

#[actix_web::test]
async fn images_of_shared_builds_are_downloaded_by_superusers_only() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let build = build(&api, None, "1.0").await;
        let uploaded = api
            .upload(
                &build.id.to_string(),
                &api.superuser,
                "a.bin",
                b"one",
                Some(COMFAST),
            )
            .await;
        assert_eq!(uploaded.status, StatusCode::CREATED);
        let path = format!(
            "/api/v1/firmware-upgrader/build/{}/image/{}/download/",
            build.id,
            uploaded.get("id").as_str().unwrap()
        );
        assert_eq!(
            api.get(&path, &tenant.manager).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(api.get(&path, &api.superuser).await.status, StatusCode::OK);
        let refused = api
            .upload(
                &build.id.to_string(),
                &tenant.manager,
                "b.bin",
                b"two",
                Some(GL_MT300N),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
}

#[actix_web::test]
async fn an_image_is_only_found_under_its_own_build() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let first = build(&api, Some(&tenant), "1.0").await;
        let second = build(&api, Some(&tenant), "2.0").await;
        let uploaded = api
            .upload(
                &first.id.to_string(),
                &tenant.manager,
                "a.bin",
                b"one",
                Some(COMFAST),
            )
            .await;
        let image = uploaded.get("id").as_str().unwrap();
        let wrong = api
            .get(
                &format!(
                    "/api/v1/firmware-upgrader/build/{}/image/{image}/download/",
                    second.id
                ),
                &tenant.manager,
            )
            .await;
        assert_eq!(wrong.status, StatusCode::NOT_FOUND);
        let missing_build = api
            .get(
                "/api/v1/firmware-upgrader/build/00000000-0000-0000-0000-000000000000/image/",
                &tenant.manager,
            )
            .await;
        assert_eq!(missing_build.status, StatusCode::NOT_FOUND);
        assert_eq!(missing_build.get("detail"), "build not found");
    }
}

//! The end-to-end scenario an operator goes through, over HTTP only: organization, manager,
//! tokens, credentials, category, builds and images, devices that register, the dry run, the
//! mass upgrade followed live to its end, and what the devices run afterwards.
//!
//! It runs against the `flashfleet` binary (`end_to_end.rs`) and against the sample
//! application composed from the library crates (`tests/sample_app`).

use std::net::Ipv4Addr;
use std::time::Duration;

use flashfleet_devsim::{ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming};
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::client::{Api, BOARD_NAME, IMAGE_FILE, MODEL, NEW_VERSION, free_port, new_image};

/// The release the simulated devices run at first (devsim's default), as their OS identifier.
const OLD_OS: &str = "OpenWrt 23.05.0 r23497-6637af95aa";

/// What the scenario needs to know of the server it runs against.
pub(crate) struct Target {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// A superuser's token.
    pub(crate) superuser_token: String,
    /// The connector (connection type) the credentials use.
    pub(crate) connector: String,
    /// Integrators' fields to put into every object's `details`, checked on the way back.
    pub(crate) details: Map<String, Value>,
}

/// What the scenario did.
pub(crate) struct Outcome {
    /// The fleet, after the mass upgrade.
    pub(crate) fleet: Fleet,
    /// The last `batch` event of the live stream.
    pub(crate) last_batch_event: Value,
    /// How many `operation` events the live stream carried.
    pub(crate) operation_events: usize,
}

/// Runs the scenario with `devices` simulated devices on loopback addresses `127.<net>.0.x`.
pub(crate) async fn run(target: &Target, devices: usize, net: u8) -> Outcome {
    let client = reqwest::Client::new();
    let details = Value::Object(target.details.clone());
    let superuser = Api::new(&target.base, &target.superuser_token);

    let (status, organization) = superuser
        .post(
            "/api/v1/users/organization/",
            json!({"name": "Acme Networks", "slug": "acme", "details": details}),
        )
        .await;
    assert_eq!(status, 201, "{organization}");
    assert_eq!(organization["details"], details);
    let organization = organization["id"].as_str().unwrap().to_owned();
    let (status, manager) = superuser
        .post(
            "/api/v1/users/user/",
            json!({
                "username": "noc",
                "password": "a long enough passphrase",
                "organization_users": [{"organization": organization, "is_admin": true}],
            }),
        )
        .await;
    assert_eq!(status, 201, "{manager}");
    // openwisp-users' token endpoint takes a form.
    let token = client
        .post(format!("{}/api/v1/users/token/", target.base))
        .form(&[
            ("username", "noc"),
            ("password", "a long enough passphrase"),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(token.len(), 40);
    let api = Api::new(&target.base, &token);

    let mut credentials = ClientCredentials::generate();
    credentials.password = "fleet-secret-7431".to_owned();
    let port = free_port();
    let (status, stored) = api
        .post(
            "/api/v1/controller/credential/",
            json!({
                "name": "fleet root",
                "organization": organization,
                "connector": target.connector,
                "auto_add": true,
                "params": {"username": credentials.username, "password": credentials.password, "port": port},
                "details": details,
            }),
        )
        .await;
    assert_eq!(status, 201, "{stored}");
    assert!(!stored.to_string().contains(&credentials.password));

    let (status, category) = api
        .post(
            "/api/v1/firmware-upgrader/category/",
            json!({"name": "Archer C7", "organization": organization, "details": details}),
        )
        .await;
    assert_eq!(status, 201, "{category}");
    assert_eq!(category["details"], details);
    let mut builds = Vec::new();
    for (version, os, image) in [
        ("23.05.0", OLD_OS, old_image()),
        (
            NEW_VERSION,
            "OpenWrt 24.10.0 r28427-6df0e3d02a",
            new_image(),
        ),
    ] {
        let (status, build) = api
            .post(
                "/api/v1/firmware-upgrader/build/",
                json!({"category": category["id"], "version": version, "os": os, "details": details}),
            )
            .await;
        assert_eq!(status, 201, "{build}");
        assert_eq!(build["details"], details);
        let build = build["id"].as_str().unwrap().to_owned();
        let uploaded = api.upload(&build, IMAGE_FILE, image).await;
        assert!(
            uploaded["boards"]
                .as_array()
                .unwrap()
                .contains(&json!(MODEL))
        );
        builds.push((build, uploaded["id"].as_str().unwrap().to_owned()));
    }
    let (old_image_id, (new_build, new_image_id)) = (builds[0].1.clone(), builds[1].clone());

    // The devices are created first (their ids are what their configuration will say), then
    // they come up and register what they run.
    let first = Ipv4Addr::new(127, net, 0, 1);
    let mut ids = Vec::new();
    for index in 0..devices {
        let address = Ipv4Addr::from(u32::from(first) + index as u32);
        let [high, low] = u16::try_from(index).unwrap().to_be_bytes();
        let (status, device) = api
            .post(
                "/api/v1/controller/device/",
                json!({
                    "organization": organization,
                    "name": format!("ap-{index:02}"),
                    "mac_address": format!("02:00:5e:02:{high:02x}:{low:02x}"),
                    "management_ip": address.to_string(),
                    "details": details,
                }),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        assert_eq!(device["details"], details);
        ids.push(uuid::Uuid::parse_str(device["id"].as_str().unwrap()).unwrap());
    }
    let fleet = Fleet::start(FleetConfig {
        devices: ids
            .iter()
            .map(|id| DeviceSpec::openwrt(*id, BOARD_NAME, MODEL))
            .collect(),
        addressing: flashfleet_devsim::Addressing::LoopbackRange { first, port },
        reboot: RebootTiming {
            close_after: Duration::from_millis(100),
            down_for: Duration::from_millis(800),
        },
        credentials,
    })
    .await
    .expect("the simulated fleet starts");
    for id in &ids {
        let (status, device) = api
            .post(
                &format!("/api/v1/controller/device/{id}/register/"),
                json!({"model": MODEL, "board_name": BOARD_NAME, "os": OLD_OS}),
            )
            .await;
        assert_eq!(status, 200, "{device}");
        assert_eq!(device["details"], details, "registering keeps the details");
        let (status, firmware) = api
            .get(&format!("/api/v1/firmware-upgrader/device/{id}/firmware/"))
            .await;
        assert_eq!(
            status, 200,
            "registration recorded the image it runs: {firmware}"
        );
        assert_eq!(
            (&firmware["image"], &firmware["installed"]),
            (&json!(old_image_id), &json!(true))
        );
    }

    let (status, plan) = api
        .get(&format!(
            "/api/v1/firmware-upgrader/build/{new_build}/upgrade/"
        ))
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["device_firmwares"].as_array().unwrap().len(), devices);
    assert_eq!(plan["summary"]["compatible"], devices, "{plan}");
    let (status, started) = api
        .post(
            &format!("/api/v1/firmware-upgrader/build/{new_build}/upgrade/"),
            json!({"details": details}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let batch = started["batch"].as_str().unwrap().to_owned();

    // Follow the mass upgrade live, to its end.
    let mut stream = client
        .get(format!(
            "{}/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/events/",
            target.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut text = String::new();
    let mut last_batch_event = Value::Null;
    let mut operation_events = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    'stream: loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the mass upgrade ends in time")
            .expect("the stream stays open until the end")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let event = frame.lines().find_map(|line| line.strip_prefix("event: "));
            let data = frame.lines().find_map(|line| line.strip_prefix("data: "));
            match (event, data) {
                (Some("end"), _) => break 'stream,
                (Some("batch"), Some(data)) => {
                    last_batch_event = serde_json::from_str(data).unwrap()
                }
                (Some("operation"), Some(_)) => operation_events += 1,
                (Some("error"), data) => panic!("the stream failed: {data:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(last_batch_event["status"], "success", "{last_batch_event}");
    assert_eq!(
        last_batch_event["progress_report"],
        format!("{devices} out of {devices}")
    );
    assert_eq!(last_batch_event["details"], details);

    for device in fleet.devices() {
        assert_eq!(device.flash_count(), 1);
        assert_eq!(device.release().version, NEW_VERSION);
        let (_, firmware) = api
            .get(&format!(
                "/api/v1/firmware-upgrader/device/{}/firmware/",
                device.uuid()
            ))
            .await;
        assert_eq!(
            (&firmware["image"], &firmware["installed"]),
            (&json!(new_image_id), &json!(true))
        );
    }
    Outcome {
        fleet,
        last_batch_event,
        operation_events,
    }
}

/// The image of the build the devices run at first.
pub(crate) fn old_image() -> Vec<u8> {
    flashfleet_boards::test_image::TestImage::builder()
        .payload_len(64 * 1024)
        .supported_devices([BOARD_NAME])
        .version_field("version", "23.05.0")
        .version_field("revision", "r23497-6637af95aa")
        .version_field("target", "ath79/generic")
        .version_field("board", "tplink_archer-c7-v2")
        .build()
        .to_bytes()
}

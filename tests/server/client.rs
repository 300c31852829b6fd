//! A client of flashfleet's REST API and what the scenario shares with the sample application:
//! the simulated board, the images, free ports. Nothing here starts a process, so
//! `tests/sample_app` includes this file as well.

use std::net::{Ipv4Addr, TcpListener};

use flashfleet_boards::test_image::TestImage;
use serde_json::Value;

/// The board and model of every simulated device.
pub(crate) const BOARD_NAME: &str = "tplink,archer-c7-v2";
pub(crate) const MODEL: &str = "TP-Link Archer C7 v2";
/// The image type of that board in the built-in map.
pub(crate) const IMAGE_FILE: &str =
    "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin";
/// The release the new image carries.
pub(crate) const NEW_VERSION: &str = "24.10.0";

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A client of the REST API.
#[derive(Clone)]
pub(crate) struct Api {
    /// The HTTP client, shared by the requests of this client.
    pub(crate) client: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    token: String,
}

impl Api {
    /// A client of the API at `base` with `token`.
    pub(crate) fn new(base: &str, token: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `GET path`: the status and the JSON body.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the server answers");
        read(response).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// `method path` with a JSON body (`PUT`, `PATCH`, ...).
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        read(response).await
    }

    /// Uploads `bytes` as `file_name` to build `build`.
    pub(crate) async fn upload(&self, build: &str, file_name: &str, bytes: Vec<u8>) -> Value {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned()),
        );
        let response = self
            .client
            .post(format!(
                "{}/api/v1/firmware-upgrader/build/{build}/image/",
                self.base
            ))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .expect("the server answers");
        let (status, body) = read(response).await;
        assert_eq!(status, 201, "upload: {body}");
        body
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The image of the new build: a sysupgrade image for the simulated board, release
/// `NEW_VERSION`.
pub(crate) fn new_image() -> Vec<u8> {
    TestImage::builder()
        .payload_len(192 * 1024)
        .supported_devices([BOARD_NAME])
        .version_field("version", NEW_VERSION)
        .version_field("revision", "r28427-6df0e3d02a")
        .version_field("target", "ath79/generic")
        .version_field("board", "tplink_archer-c7-v2")
        .build()
        .to_bytes()
}

//! The S3 backend against a real S3-compatible server: moto's standalone server
//! (`python3 -m pip install 'moto[server]'`) on a loopback port.
//!
//! Without moto the test prints a notice and passes, unless `FLASHFLEET_REQUIRE_S3_TESTS=1`
//! (CI sets it), in which case it fails.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use flashfleet_models::BuildId;
use flashfleet_storage::{FirmwareStore, StorageConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::contract::{LIMIT, check_store};
use crate::support::{read_back, s3_config, store_small_file};

const REQUIRE_VARIABLE: &str = "FLASHFLEET_REQUIRE_S3_TESTS";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_keeps_the_contract_on_an_s3_compatible_server() {
    let Some(moto) = MotoServer::start().await else {
        return;
    };
    let bucket = "flashfleet-firmware";
    moto.create_bucket(bucket).await;
    let store = FirmwareStore::from_config(&moto.config(bucket, ""), Some(LIMIT)).unwrap();

    check_store(&store).await;

    // Aborted, refused and dropped uploads left no incomplete multipart upload either.
    let uploads = moto.request("GET", &format!("/{bucket}?uploads")).await;
    assert!(uploads.contains("ListMultipartUploadsResult"), "{uploads}");
    assert!(!uploads.contains("<UploadId>"), "{uploads}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_prefix_keeps_flashfleets_files_apart() {
    let Some(moto) = MotoServer::start().await else {
        return;
    };
    let bucket = "shared-bucket";
    moto.create_bucket(bucket).await;
    let prefixed =
        FirmwareStore::from_config(&moto.config(bucket, "flashfleet/firmware"), None).unwrap();
    let whole_bucket = FirmwareStore::from_config(&moto.config(bucket, ""), None).unwrap();

    let key = store_small_file(&prefixed, BuildId::new(), "openwrt.bin", b"image").await;

    assert_eq!(
        prefixed.list_keys("").await.unwrap(),
        std::slice::from_ref(&key)
    );
    assert_eq!(read_back(&prefixed, &key).await.unwrap(), b"image");
    let in_bucket = whole_bucket.list_keys("").await.unwrap();
    assert_eq!(in_bucket.len(), 1);
    assert_eq!(in_bucket[0].as_str(), format!("flashfleet/firmware/{key}"));

    prefixed.delete(&key).await.unwrap();
    assert!(whole_bucket.list_keys("").await.unwrap().is_empty());
}

/// A moto server on a free loopback port, killed when dropped.
struct MotoServer {
    address: SocketAddr,
    child: Child,
}

impl MotoServer {
    /// Starts moto and waits (bounded) until it serves; `None`, after a notice, when moto is
    /// not installed and the tests need not run.
    async fn start() -> Option<MotoServer> {
        let installed = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            if std::env::var(REQUIRE_VARIABLE).is_ok_and(|value| value == "1") {
                panic!(
                    "{REQUIRE_VARIABLE}=1 but moto is not installed (python3 -m pip install 'moto[server]')"
                );
            }
            eprintln!(
                "notice: moto is not installed (python3 -m pip install 'moto[server]'); the S3 storage tests are skipped"
            );
            return None;
        }

        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // The server is up when werkzeug says where it runs; its log then keeps being read, so
        // that a full pipe never blocks it.
        let mut lines = BufReader::new(stderr).lines();
        let running_line = format!("Running on http://{address}");
        let mut log = Vec::new();
        let started = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let running = line.contains(&running_line);
                log.push(line);
                if running {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(started, Ok(true)),
            "moto did not start on {address}: {}",
            log.join("\n")
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(MotoServer { address, child })
    }

    /// Storage configuration for `bucket` on this server.
    fn config(&self, bucket: &str, prefix: &str) -> StorageConfig {
        s3_config(
            &format!("http://{}", self.address),
            bucket,
            prefix,
            "testing",
        )
    }

    /// Creates `bucket` (object_store does not create buckets).
    async fn create_bucket(&self, bucket: &str) {
        let response = self.request("PUT", &format!("/{bucket}")).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// Sends one unsigned request (moto does not check signatures) and returns the whole
    /// response.
    async fn request(&self, method: &str, target: &str) -> String {
        let mut connection = TcpStream::connect(self.address).await.unwrap();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        );
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).await.unwrap();
        response
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // `kill_on_drop` would kill it too; killing here says so where the guard is.
        let _ = self.child.start_kill();
    }
}

//! The `flashfleet` binary as a process, a simulated fleet on loopback, and what the server
//! tests ask of the API beyond the scenario's requests (the client itself is `client.rs`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use serde_json::{Value, json};

use crate::client::{Api, BOARD_NAME, IMAGE_FILE, MODEL, NEW_VERSION, free_port, new_image};

/// The `flashfleet` binary of this build (built by `cargo test --workspace`; built here when a
/// test of this package runs alone).
pub(crate) fn flashfleet_binary() -> PathBuf {
    let directory = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    let binary = directory.join("flashfleet");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "flashfleet-server", "--bin", "flashfleet"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the flashfleet binary failed");
    }
    binary
}

/// Where a server keeps its data and which database it uses.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    /// The data directory (secret key, firmware files; the SQLite database by default).
    pub(crate) data_dir: PathBuf,
    /// The database URL, `None` for the default SQLite file in the data directory.
    pub(crate) database_url: Option<String>,
}

impl Site {
    /// The environment of every `flashfleet` process of this site: short engine and OpenWrt
    /// timings, no rate limit.
    fn environment(&self) -> Vec<(String, String)> {
        let mut variables = vec![
            ("FLASHFLEET_DATA_DIR", self.data_dir.display().to_string()),
            ("FLASHFLEET_API__THROTTLE", "none".to_owned()),
            ("FLASHFLEET_ENGINE__LEASE", "2s".to_owned()),
            ("FLASHFLEET_ENGINE__HEARTBEAT", "500ms".to_owned()),
            ("FLASHFLEET_ENGINE__POLL_INTERVAL", "200ms".to_owned()),
            ("FLASHFLEET_ENGINE__RETRY__BACKOFF", "1s".to_owned()),
            ("FLASHFLEET_ENGINE__RETRY__BACKOFF_MAX", "2s".to_owned()),
            ("FLASHFLEET_OPENWRT__RECONNECT_DELAY", "300ms".to_owned()),
            (
                "FLASHFLEET_OPENWRT__RECONNECT_RETRY_DELAY",
                "200ms".to_owned(),
            ),
            (
                "FLASHFLEET_OPENWRT__RECONNECT_MAX_RETRIES",
                "100".to_owned(),
            ),
            ("FLASHFLEET_OPENWRT__UPGRADE_TIMEOUT", "5s".to_owned()),
            ("FLASHFLEET_OPENWRT__CONNECT_TIMEOUT", "3s".to_owned()),
            ("FLASHFLEET_OPENWRT__COMMAND_TIMEOUT", "20s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        if let Some(url) = &self.database_url {
            variables.push(("FLASHFLEET_DATABASE_URL", url.clone()));
        }
        variables
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    /// Runs `flashfleet <arguments>` to its end; its standard output, or a panic with its
    /// standard error.
    pub(crate) fn run(&self, arguments: &[&str]) -> String {
        let output = Command::new(flashfleet_binary())
            .args(arguments)
            .envs(self.environment())
            .current_dir(&self.data_dir)
            .output()
            .expect("flashfleet runs");
        assert!(
            output.status.success(),
            "flashfleet {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A superuser `admin` and its token.
    pub(crate) fn admin_token(&self) -> String {
        self.run(&[
            "createsuperuser",
            "--username",
            "admin",
            "--password",
            "correct horse battery staple",
        ]);
        self.run(&["token", "create", "--username", "admin"])
            .trim()
            .to_owned()
    }

    /// Starts `flashfleet serve` with `extra` variables and waits until it is ready.
    pub(crate) async fn serve(&self, name: &str, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = self.data_dir.join(format!("{name}.log"));
        let child = Command::new(flashfleet_binary())
            .arg("serve")
            .envs(self.environment())
            .env("FLASHFLEET_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLASHFLEET_ENGINE__NAME", name)
            .envs(extra.iter().map(|(name, value)| (*name, *value)))
            .current_dir(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("flashfleet serve starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_until_ready().await;
        server
    }
}

/// A running `flashfleet serve`.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    log: PathBuf,
}

impl Server {
    async fn wait_until_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready:\n{}", self.log_text());
    }

    /// What the server logged.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server without warning (SIGKILL).
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("the server can be killed");
        self.child.wait().expect("the killed server is reaped");
    }

    /// A client of this server's API with `token`.
    pub(crate) fn api(&self, token: &str) -> Api {
        Api::new(&self.base, token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server tests ask of the API beyond the scenario's requests.
impl Api {
    /// The text of `GET path` (metrics).
    pub(crate) async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .expect("a text body")
    }

    /// A shared category, a build of `NEW_VERSION` and its image; the build's id.
    pub(crate) async fn publish_new_build(&self) -> String {
        let (status, category) = self
            .post(
                "/api/v1/firmware-upgrader/category/",
                json!({"name": "Archer C7", "organization": null}),
            )
            .await;
        assert_eq!(status, 201, "{category}");
        let (status, build) = self
            .post(
                "/api/v1/firmware-upgrader/build/",
                json!({
                    "category": category["id"],
                    "version": NEW_VERSION,
                    "os": format!("OpenWrt {NEW_VERSION} r28427-6df0e3d02a"),
                }),
            )
            .await;
        assert_eq!(status, 201, "{build}");
        let build = build["id"].as_str().expect("an id").to_owned();
        self.upload(&build, IMAGE_FILE, new_image()).await;
        build
    }

    /// Waits until the mass upgrade `batch` ended (bounded); its detail.
    pub(crate) async fn wait_for_batch(&self, batch: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, detail) = self
                .get(&format!(
                    "/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"
                ))
                .await;
            assert_eq!(status, 200, "{detail}");
            if ["success", "failed", "cancelled"].contains(&detail["status"].as_str().unwrap_or(""))
            {
                return detail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the mass upgrade did not end in time: {}",
                detail["progress_report"]
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `count` simulated devices, each on its own loopback address (127.<net>.0.1, .2, ...) on one
/// port, rebooting for `down_for` after a flash.
pub(crate) async fn fleet(count: usize, net: u8, down_for: Duration) -> Fleet {
    let specs = (0..count)
        .map(|_| DeviceSpec::openwrt(uuid::Uuid::new_v4(), BOARD_NAME, MODEL))
        .collect();
    Fleet::start(FleetConfig {
        devices: specs,
        addressing: Addressing::LoopbackRange {
            first: Ipv4Addr::new(127, net, 0, 1),
            port: free_port(),
        },
        reboot: RebootTiming {
            close_after: Duration::from_millis(100),
            down_for,
        },
        credentials: ClientCredentials::generate(),
    })
    .await
    .expect("the simulated fleet starts")
}

/// Imports `fleet` into organization `acme` with `flashfleet devices import`.
pub(crate) fn import_fleet(site: &Site, fleet: &Fleet) {
    let mut csv =
        String::from("id,name,mac_address,address,port,model,board_name,username,password\n");
    for (index, device) in fleet.devices().iter().enumerate() {
        let [high, low] = u16::try_from(index).expect("a small fleet").to_be_bytes();
        csv.push_str(&format!(
            "{},sim-{index},02:00:5e:01:{high:02x}:{low:02x},{},{},\"{MODEL}\",\"{BOARD_NAME}\",{},{}\n",
            device.uuid(),
            device.address().ip(),
            device.address().port(),
            fleet.credentials().username,
            fleet.credentials().password,
        ));
    }
    let path = site.data_dir.join("devices.csv");
    std::fs::write(&path, csv).expect("the device list is written");
    site.run(&[
        "devices",
        "import",
        path.to_str().expect("a UTF-8 path"),
        "--organization",
        "acme",
        "--create-organizations",
    ]);
}

/// The backends to run a server test on: SQLite, and PostgreSQL when
/// `FLASHFLEET_TEST_POSTGRES_URL` is set (a schema of its own, dropped with the guard).
pub(crate) async fn sites() -> Vec<(
    Site,
    tempfile::TempDir,
    Option<flashfleet_db::testing::TestDb>,
)> {
    let mut sites = Vec::new();
    let directory = tempfile::tempdir().expect("a temporary directory");
    sites.push((
        Site {
            data_dir: directory.path().to_path_buf(),
            database_url: None,
        },
        directory,
        None,
    ));
    if let Some(test_db) = flashfleet_db::testing::TestDb::postgres().await {
        let directory = tempfile::tempdir().expect("a temporary directory");
        sites.push((
            Site {
                data_dir: directory.path().to_path_buf(),
                database_url: Some(test_db.url().to_owned()),
            },
            directory,
            Some(test_db),
        ));
    }
    sites
}

//! The server's configuration: one value, loaded once (TOML file, then `FLASHFLEET_*`
//! environment variables), validated once, then converted into each library crate's own
//! configuration (`DbConfig`, `EngineConfig`, `OpenWrtSettings`, `ImageMap`, ...) by the
//! methods below, which are the only place that knows how the two correspond.
//!
//! Every setting of upstream openwisp-firmware-upgrader (§5 of its behaviour spec) has a key
//! here; README.md has the table.

mod environment;
mod render;
mod storage;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use flashfleet_boards::{BoardMapConfig, CustomImage, ImageMap};
use flashfleet_db::{DbConfig, SecretKey};
use flashfleet_engine::{EngineConfig, RetryPolicy};
use flashfleet_upgrader::UpgraderRegistry;
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize, Serializer};

pub use crate::config::storage::StorageConfig;
pub use crate::config::values::{HumanDuration, MaxFileSize, Throttle, ThrottlePeriod};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "flashfleet.toml";

/// What secrets are replaced with when the configuration is printed.
pub const REDACTED: &str = "[redacted]";

/// The upgraders this server knows, by the name `[upgraders]` gives them.
pub const KNOWN_UPGRADERS: &[&str] = &["openwrt"];

/// The whole configuration of the `flashfleet` server.
///
/// Every field has a default, so an empty file (or none) is a valid configuration that serves
/// on 127.0.0.1:8000 with SQLite and firmware files under `./flashfleet-data/`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address the server listens on (also `FLASHFLEET_LISTEN`).
    pub listen: SocketAddr,
    /// Where flashfleet keeps its data: the SQLite database, firmware files and the secret key,
    /// unless their own settings say otherwise.
    pub data_dir: PathBuf,
    /// Log format on standard error: "human" (readable lines) or "json" (one JSON object per
    /// line).
    pub log_format: LogFormat,
    /// Which logs to write, as a tracing EnvFilter directive ("info",
    /// "flashfleet_engine=debug,info", ...). RUST_LOG wins when it is set.
    pub log_level: String,
    /// The file holding the key that encrypts device credentials at rest (base64 of 32 bytes).
    /// Generated with mode 0600 on first use; refused when other users may read it.
    /// Default: <data_dir>/secret.key.
    pub secret_key_file: Option<PathBuf>,
    /// The secret key itself (base64 of 32 bytes), instead of `secret_key_file`. Better given
    /// as FLASHFLEET_SECRET_KEY than written in a file.
    #[serde(serialize_with = "serialize_secret")]
    #[schemars(with = "Option<String>")]
    pub secret_key: Option<SecretString>,
    /// The database.
    pub database: DatabaseConfig,
    /// Where firmware files are kept: `backend = "local"` with `path`, `backend = "s3"` with
    /// `bucket`, `prefix`, `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`, `virtual_hosted_style`, or `backend = "memory"` (tests). Upstream
    /// OPENWISP_FIRMWARE_PRIVATE_STORAGE_INSTANCE. Default: local, in <data_dir>/firmware.
    #[serde(serialize_with = "storage::serialize_redacted")]
    pub storage: Option<StorageConfig>,
    /// Firmware uploads.
    pub upload: UploadConfig,
    /// The REST API.
    pub api: ApiConfig,
    /// The web dashboard at `/`.
    pub dashboard: DashboardSection,
    /// The upgrade engine. Durations are seconds or strings such as "90s" or "3m".
    pub engine: EngineSection,
    /// The OpenWrt upgrader (upstream OPENWISP_FIRMWARE_UPGRADER_OPENWRT_SETTINGS and the
    /// OpenWrt upgrader's constants).
    pub openwrt: OpenWrtSection,
    /// Which upgrader handles each connection type (upstream OPENWISP_FIRMWARE_UPGRADERS_MAP).
    /// Known upgraders: "openwrt". Giving this table replaces the default one.
    pub upgraders: BTreeMap<String, String>,
    /// Image types added to the built-in OpenWrt image map, before it (upstream
    /// OPENWISP_CUSTOM_OPENWRT_IMAGES), each with `image_type`, `label` and `boards` (device
    /// models as in /tmp/sysinfo/model). One with a built-in image type replaces it.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub custom_images: Vec<CustomImage>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The `[database]` section. `Debug` hides the password of the URL.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (also
    /// FLASHFLEET_DATABASE_URL). Default: sqlite://<data_dir>/flashfleet.db.
    #[serde(serialize_with = "serialize_url")]
    pub url: Option<String>,
    /// Connections in the pool (SQLite has one writer at a time whatever this says).
    pub max_connections: usize,
    /// How long a query waits for a free connection of the pool before it fails.
    pub acquire_timeout: HumanDuration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url_password))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The `[upload]` section.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// The largest firmware file accepted, in bytes; 0 or "unlimited" for no limit (upstream
    /// OPENWISP_FIRMWARE_UPGRADER_MAX_FILE_SIZE, 30 MiB).
    pub max_file_size: MaxFileSize,
}

/// The `[api]` section.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Whether the REST API is served (upstream OPENWISP_FIRMWARE_UPGRADER_API).
    pub enabled: bool,
    /// The base of the URLs of firmware file downloads, such as "https://fw.example.com"
    /// (upstream OPENWISP_FIRMWARE_API_BASEURL). Default: the host of each request.
    pub base_url: Option<String>,
    /// Requests per client: "<n>/second", "/minute", "/hour" or "/day"; "none" disables
    /// throttling.
    pub throttle: Throttle,
    /// Items per page when the client does not ask (upstream OPENWISP_API_DEFAULT_PAGE_SIZE).
    pub default_page_size: u32,
    /// The most items per page a client may ask for (upstream OPENWISP_API_MAX_PAGE_SIZE).
    pub max_page_size: u32,
}

/// The `[dashboard]` section.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSection {
    /// Whether the web dashboard is served at `/` (sign in with a user's username and
    /// password).
    pub enabled: bool,
    /// How long a dashboard sign-in lasts.
    pub session_lifetime: HumanDuration,
    /// Whether the session cookie is sent over HTTPS only: set it when operators reach the
    /// server through HTTPS (a TLS-terminating proxy).
    pub secure_cookie: bool,
}

/// The `[engine]` section.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// The name this engine writes into the leases it holds; unique per process among the
    /// servers sharing a database. Default: <hostname>-<pid>.
    pub name: Option<String>,
    /// An upgrade unfinished this long after its first start fails (upstream
    /// OPENWISP_FIRMWARE_UPGRADER_TASK_TIMEOUT).
    pub task_timeout: HumanDuration,
    /// Upgrades running at once in this server.
    pub max_in_flight: usize,
    /// Image uploads running at once in this server.
    pub max_uploads: usize,
    /// Upgrades at once between connecting and the end of the upload; the others wait, queued.
    pub max_preparing: usize,
    /// How long a claim on an upgrade lasts without a heartbeat.
    pub lease: HumanDuration,
    /// How often leases are renewed (well below `lease`).
    pub heartbeat: HumanDuration,
    /// How often the queue is polled when idle.
    pub poll_interval: HumanDuration,
    /// How long the engine may spend finding out what a device runs when an upgrade is at or
    /// past its flash and cannot simply finish (after a crash or restart, past task_timeout):
    /// when spent, the upgrade fails with "could not verify what the device runs".
    pub verification_budget: HumanDuration,
    /// Retries of recoverable failures (upstream OPENWISP_FIRMWARE_UPGRADER_RETRY_OPTIONS).
    pub retry: RetrySection,
}

/// The `[engine.retry]` section.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Retries after the first attempt (upstream `max_retries`).
    pub max_retries: u32,
    /// Delay before the first retry, doubled for each next one (upstream `retry_backoff`).
    pub backoff: HumanDuration,
    /// Longest delay between retries (upstream `retry_backoff_max`).
    pub backoff_max: HumanDuration,
    /// Whether delays are jittered (upstream `retry_jitter`); a jittered delay lies between
    /// the delay and twice it.
    pub jitter: bool,
}

/// The `[openwrt]` section: the settings of the OpenWrt upgrader.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OpenWrtSection {
    /// Wait after the flash command before the first reconnection attempt.
    pub reconnect_delay: HumanDuration,
    /// Wait between two reconnection attempts.
    pub reconnect_retry_delay: HumanDuration,
    /// Reconnection attempts before giving up.
    pub reconnect_max_retries: u32,
    /// How long the flash command may run before its session is closed.
    pub upgrade_timeout: HumanDuration,
    /// How long any other command may run; also bounds the SSH handshake and each step of an
    /// upload (upstream OPENWISP_SSH_COMMAND_TIMEOUT).
    pub command_timeout: HumanDuration,
    /// How long a TCP connection to one address may take (upstream
    /// OPENWISP_SSH_CONNECTION_TIMEOUT).
    pub connect_timeout: HumanDuration,
    /// The slowest upload accepted, in bytes per second: an upload may take connect_timeout
    /// plus the image size at this rate in all, then it is cut and retried later.
    pub min_upload_throughput: u64,
    /// Where the image is uploaded on the device.
    pub remote_upload_dir: String,
    /// The file name the image gets on the device. Default: the image's own file name.
    pub remote_file_name: Option<String>,
    /// The checksum marker written after an upgrade and compared before the next one.
    pub checksum_file: String,
    /// The sysupgrade program.
    pub sysupgrade: String,
    /// The flash command; {sysupgrade}, {flags} and {path} are replaced.
    pub upgrade_command: String,
    /// Whether to run `sysupgrade --test` on the uploaded image and abort when it fails.
    pub test_image: bool,
    /// Services stopped (then started again) when the device lacks memory for the upload.
    pub non_critical_services: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("./flashfleet-data"),
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            secret_key_file: None,
            secret_key: None,
            database: DatabaseConfig::default(),
            storage: None,
            upload: UploadConfig::default(),
            api: ApiConfig::default(),
            dashboard: DashboardSection::default(),
            engine: EngineSection::default(),
            openwrt: OpenWrtSection::default(),
            upgraders: BTreeMap::from([("openwrt-ssh".to_owned(), "openwrt".to_owned())]),
            custom_images: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            acquire_timeout: flashfleet_db::DEFAULT_ACQUIRE_TIMEOUT.into(),
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            max_file_size: MaxFileSize::DEFAULT,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: None,
            throttle: Throttle::DEFAULT,
            default_page_size: 10,
            max_page_size: 100,
        }
    }
}

impl Default for DashboardSection {
    fn default() -> Self {
        let dashboard = flashfleet_dashboard::DashboardConfig::default();
        Self {
            enabled: true,
            session_lifetime: dashboard.session_lifetime.into(),
            secure_cookie: dashboard.secure_cookie,
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            name: None,
            task_timeout: engine.task_timeout.into(),
            max_in_flight: engine.max_in_flight,
            max_uploads: engine.max_uploads,
            max_preparing: engine.max_preparing,
            lease: engine.lease.into(),
            heartbeat: engine.heartbeat.into(),
            poll_interval: engine.poll_interval.into(),
            verification_budget: engine.verification_budget.into(),
            retry: RetrySection::default(),
        }
    }
}

impl Default for RetrySection {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        Self {
            max_retries: retry.max_retries,
            backoff: retry.backoff.into(),
            backoff_max: retry.backoff_max.into(),
            jitter: retry.jitter,
        }
    }
}

impl Default for OpenWrtSection {
    fn default() -> Self {
        let settings = OpenWrtSettings::default();
        Self {
            reconnect_delay: settings.reconnect_delay.into(),
            reconnect_retry_delay: settings.reconnect_retry_delay.into(),
            reconnect_max_retries: settings.reconnect_max_retries,
            upgrade_timeout: settings.upgrade_timeout.into(),
            command_timeout: settings.command_timeout.into(),
            connect_timeout: settings.connect_timeout.into(),
            min_upload_throughput: settings.min_upload_throughput,
            remote_upload_dir: settings.remote_upload_dir,
            remote_file_name: settings.remote_file_name,
            checksum_file: settings.checksum_file,
            sysupgrade: settings.sysupgrade,
            upgrade_command: settings.upgrade_command,
            test_image: settings.test_image,
            non_critical_services: settings.non_critical_services,
        }
    }
}

/// A configuration as loaded, with where it came from.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The configuration, validated, with the defaults that depend on `data_dir` filled in.
    pub config: Config,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// `FLASHFLEET_*` environment variables that name no setting and were ignored.
    pub ignored_variables: Vec<String>,
}

impl Config {
    /// Loads the configuration: the built-in defaults, then the TOML file `file` (or
    /// `./flashfleet.toml` when it exists and `file` is `None`), then the `FLASHFLEET_*`
    /// variables of `environment`; validates it and fills in the defaults that depend on
    /// `data_dir`.
    pub fn load(
        file: Option<&Path>,
        environment: &[(String, String)],
    ) -> anyhow::Result<LoadedConfig> {
        let file = match file {
            Some(file) => Some(file.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|file| file.is_file()),
        };
        let mut table = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("could not read the configuration file {}", file.display())
                })?;
                toml::from_str::<toml::Table>(&text).with_context(|| {
                    format!(
                        "the configuration file {} is not valid TOML",
                        file.display()
                    )
                })?
            }
            None => toml::Table::new(),
        };
        let ignored_variables = environment::apply(&mut table, environment)?;
        let origin = match &file {
            Some(file) => format!("the configuration file {}", file.display()),
            None => "the built-in defaults".to_owned(),
        };
        let config: Config = toml::Value::Table(table).try_into().with_context(|| {
            format!("invalid configuration (from {origin} and FLASHFLEET_* variables)")
        })?;
        config.validate()?;
        Ok(LoadedConfig {
            config: config.resolved(),
            file,
            ignored_variables,
        })
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must not be empty".to_owned());
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            problems.push(format!(
                "log_level `{}` is not a valid filter: {error}",
                self.log_level
            ));
        }
        if let Some(secret_key) = &self.secret_key
            && let Err(error) = SecretKey::from_base64(secret_key.expose_secret())
        {
            problems.push(format!("secret_key: {error}"));
        }
        if let Some(url) = &self.database.url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|prefix| url.starts_with(prefix))
        {
            problems.push("database.url must start with sqlite:// or postgres://".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        if let Some(StorageConfig::S3 { bucket, .. }) = &self.storage
            && bucket.trim().is_empty()
        {
            problems.push("storage.bucket must not be empty".to_owned());
        }
        if self.api.default_page_size == 0 || self.api.max_page_size < self.api.default_page_size {
            problems.push(
                "api.default_page_size must be at least 1 and at most api.max_page_size".to_owned(),
            );
        }
        let engine = &self.engine;
        for (name, value) in [
            ("max_in_flight", engine.max_in_flight),
            ("max_uploads", engine.max_uploads),
            ("max_preparing", engine.max_preparing),
        ] {
            if value == 0 {
                problems.push(format!("engine.{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("task_timeout", engine.task_timeout),
            ("lease", engine.lease),
            ("heartbeat", engine.heartbeat),
            ("poll_interval", engine.poll_interval),
            ("verification_budget", engine.verification_budget),
        ] {
            if value.get().is_zero() {
                problems.push(format!("engine.{name} must be longer than zero"));
            }
        }
        if self.openwrt.min_upload_throughput == 0 {
            problems.push("openwrt.min_upload_throughput must be at least 1".to_owned());
        }
        if engine.heartbeat.get() >= engine.lease.get() {
            problems.push("engine.heartbeat must be shorter than engine.lease".to_owned());
        }
        if engine
            .name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            problems.push("engine.name must not be empty".to_owned());
        }
        if self.openwrt.upgrade_command.trim().is_empty() {
            problems.push("openwrt.upgrade_command must not be empty".to_owned());
        }
        for (connection_type, upgrader) in &self.upgraders {
            if connection_type.trim().is_empty() {
                problems.push("upgraders: a connection type must not be empty".to_owned());
            }
            if !KNOWN_UPGRADERS.contains(&upgrader.as_str()) {
                problems.push(format!(
                    "upgraders.{connection_type}: unknown upgrader `{upgrader}` (known: {})",
                    KNOWN_UPGRADERS.join(", ")
                ));
            }
        }
        if let Err(error) = ImageMap::from_config(&self.board_map_config()) {
            problems.push(format!("custom_images: {error}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  - {}", problems.join("\n  - "))
        }
    }

    /// The same configuration with the defaults that depend on `data_dir` written out
    /// (database URL, secret key file, storage).
    pub fn resolved(mut self) -> Config {
        self.database.url = Some(self.database_url());
        self.secret_key_file = Some(self.secret_key_path());
        self.storage = Some(self.storage_config());
        self
    }

    /// The configuration as TOML with its secrets replaced by `[redacted]`: what `serve`
    /// logs at start and `flashfleet config` prints.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("could not render the configuration as TOML")
    }

    /// The built-in defaults as commented TOML (`flashfleet config --defaults`).
    pub fn defaults_toml() -> anyhow::Result<String> {
        render::defaults_toml()
    }

    /// The database URL: `database.url`, or SQLite in `data_dir`.
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.data_dir.join("flashfleet.db").display())
        })
    }

    /// Where the secret key file is: `secret_key_file`, or `secret.key` in `data_dir`.
    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    /// The firmware storage: `[storage]`, or a local directory `firmware` in `data_dir`.
    pub fn storage_config(&self) -> StorageConfig {
        self.storage
            .clone()
            .unwrap_or_else(|| StorageConfig::Local {
                path: self.data_dir.join("firmware"),
            })
    }

    /// The API's configuration.
    pub fn api_config(&self) -> flashfleet_api::ApiConfig {
        flashfleet_api::ApiConfig {
            base_url: self.api.base_url.clone(),
            default_page_size: u64::from(self.api.default_page_size),
            max_page_size: u64::from(self.api.max_page_size),
            throttle: self.api.throttle.to_api(),
            max_file_size: self.max_file_size(),
            ..flashfleet_api::ApiConfig::default()
        }
    }

    /// The dashboard configuration.
    pub fn dashboard_config(&self) -> flashfleet_dashboard::DashboardConfig {
        let mut dashboard = flashfleet_dashboard::DashboardConfig::default();
        dashboard.session_lifetime = self.dashboard.session_lifetime.get();
        dashboard.secure_cookie = self.dashboard.secure_cookie;
        dashboard
    }

    /// The upload size limit in bytes; `None` when unlimited.
    pub fn max_file_size(&self) -> Option<u64> {
        self.upload.max_file_size.bytes()
    }

    /// The database configuration, with the key that encrypts device secrets.
    pub fn db_config(&self, secret_key: SecretKey) -> DbConfig {
        let mut db_config = DbConfig::new(self.database_url(), secret_key);
        db_config.pool_size = self.database.max_connections;
        db_config.acquire_timeout = self.database.acquire_timeout.get();
        db_config
    }

    /// The engine configuration.
    pub fn engine_config(&self) -> EngineConfig {
        let engine = &self.engine;
        EngineConfig {
            name: engine.name.clone().unwrap_or_else(default_engine_name),
            max_in_flight: engine.max_in_flight,
            max_uploads: engine.max_uploads,
            max_preparing: engine.max_preparing,
            lease: engine.lease.get(),
            heartbeat: engine.heartbeat.get(),
            poll_interval: engine.poll_interval.get(),
            task_timeout: engine.task_timeout.get(),
            verification_budget: engine.verification_budget.get(),
            retry: RetryPolicy {
                max_retries: engine.retry.max_retries,
                backoff: engine.retry.backoff.get(),
                backoff_max: engine.retry.backoff_max.get(),
                jitter: engine.retry.jitter,
            },
        }
    }

    /// The OpenWrt upgrader's settings.
    pub fn openwrt_settings(&self) -> OpenWrtSettings {
        let openwrt = self.openwrt.clone();
        OpenWrtSettings {
            reconnect_delay: openwrt.reconnect_delay.get(),
            reconnect_retry_delay: openwrt.reconnect_retry_delay.get(),
            reconnect_max_retries: openwrt.reconnect_max_retries,
            upgrade_timeout: openwrt.upgrade_timeout.get(),
            command_timeout: openwrt.command_timeout.get(),
            connect_timeout: openwrt.connect_timeout.get(),
            min_upload_throughput: openwrt.min_upload_throughput,
            remote_upload_dir: openwrt.remote_upload_dir,
            remote_file_name: openwrt.remote_file_name,
            checksum_file: openwrt.checksum_file,
            sysupgrade: openwrt.sysupgrade,
            upgrade_command: openwrt.upgrade_command,
            test_image: openwrt.test_image,
            non_critical_services: openwrt.non_critical_services,
        }
    }

    /// The custom images as the image map's configuration.
    pub fn board_map_config(&self) -> BoardMapConfig {
        BoardMapConfig {
            custom_images: self.custom_images.clone(),
        }
    }

    /// The image map: the built-in OpenWrt table with the custom images.
    pub fn image_map(&self) -> anyhow::Result<ImageMap> {
        ImageMap::from_config(&self.board_map_config()).context("invalid custom_images")
    }

    /// The upgraders of `[upgraders]`, each configured from this configuration.
    pub fn upgrader_registry(&self) -> anyhow::Result<UpgraderRegistry> {
        let image_map = self.image_map()?;
        let mut registry = UpgraderRegistry::empty();
        for (connection_type, upgrader) in &self.upgraders {
            match upgrader.as_str() {
                "openwrt" => registry.register(
                    connection_type,
                    Arc::new(
                        OpenWrtUpgrader::new(self.openwrt_settings())
                            .with_image_map(image_map.clone()),
                    ),
                ),
                other => bail!("upgraders.{connection_type}: unknown upgrader `{other}`"),
            };
        }
        Ok(registry)
    }
}

/// `<hostname>-<pid>`: unique per process among servers sharing a database.
fn default_engine_name() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|hostname| hostname.trim().to_owned())
        .filter(|hostname| !hostname.is_empty())
        .unwrap_or_else(|| "flashfleet".to_owned());
    format!("{hostname}-{}", std::process::id())
}

fn serialize_secret<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    secret.as_ref().map(|_| REDACTED).serialize(serializer)
}

fn serialize_url<S: Serializer>(url: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    url.as_deref()
        .map(redact_url_password)
        .serialize(serializer)
}

/// `url` with the password of its user information replaced by `[redacted]`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load(toml_text: &str, environment: &[(&str, &str)]) -> anyhow::Result<Config> {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("flashfleet.toml");
        std::fs::write(&file, toml_text).unwrap();
        let environment: Vec<(String, String)> = environment
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Config::load(Some(&file), &environment).map(|loaded| loaded.config)
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            config.database_url(),
            "sqlite://./flashfleet-data/flashfleet.db"
        );
        assert_eq!(
            config.secret_key_path(),
            Path::new("./flashfleet-data/secret.key")
        );
        assert!(matches!(
            config.storage_config(),
            StorageConfig::Local { path } if path == Path::new("./flashfleet-data/firmware")
        ));
        assert_eq!(config.max_file_size(), Some(30 * 1024 * 1024));
        assert_eq!(
            config.engine_config().task_timeout,
            Duration::from_secs(1500)
        );
        assert_eq!(config.engine_config().retry, RetryPolicy::default());
        assert_eq!(config.openwrt_settings(), OpenWrtSettings::default());
        assert_eq!(config.api.throttle, Throttle::DEFAULT);
    }

    #[test]
    fn library_defaults_survive_the_round_trip_through_the_sections() {
        let config = Config::default();
        let engine = config.engine_config();
        let library = EngineConfig::default();
        assert_eq!(
            (
                engine.max_in_flight,
                engine.max_uploads,
                engine.max_preparing
            ),
            (
                library.max_in_flight,
                library.max_uploads,
                library.max_preparing
            )
        );
        assert_eq!(
            (engine.lease, engine.heartbeat),
            (library.lease, library.heartbeat)
        );
        assert_eq!(config.openwrt_settings(), OpenWrtSettings::default());
    }

    #[test]
    fn derived_paths_follow_data_dir() {
        let config = load("data_dir = \"/srv/ff\"", &[]).unwrap();
        assert_eq!(
            config.database.url.as_deref(),
            Some("sqlite:///srv/ff/flashfleet.db")
        );
        assert_eq!(
            config.secret_key_file.as_deref(),
            Some(Path::new("/srv/ff/secret.key"))
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = load(
            "listen = \"0.0.0.0:9000\"\n[engine]\ntask_timeout = 60\n",
            &[
                ("FLASHFLEET_LISTEN", "127.0.0.1:9100"),
                ("FLASHFLEET_ENGINE__TASK_TIMEOUT", "3m"),
                ("FLASHFLEET_ENGINE__RETRY__MAX_RETRIES", "7"),
                (
                    "FLASHFLEET_DATABASE_URL",
                    "postgres://flash:pw@db:5432/flash",
                ),
                ("FLASHFLEET_UPLOAD__MAX_FILE_SIZE", "unlimited"),
                ("FLASHFLEET_API__ENABLED", "false"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.engine.task_timeout, HumanDuration::from_secs(180));
        assert_eq!(config.engine.retry.max_retries, 7);
        assert_eq!(config.database_url(), "postgres://flash:pw@db:5432/flash");
        assert_eq!(config.max_file_size(), None);
        assert!(!config.api.enabled);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_clearly() {
        let error = load("[engine]\ntask_timeot = 5\n", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("task_timeot"), "{error:#}");
        let error = load("[api]\nthrottle = \"10/fortnight\"\n", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("10/fortnight"), "{error:#}");
        let error = load("", &[("FLASHFLEET_ENGINE__LEASE", "soon")]).unwrap_err();
        assert!(
            format!("{error:#}").contains("`soon` is not a duration"),
            "{error:#}"
        );
        let error = load("listen = \"nowhere\"", &[]).unwrap_err();
        assert!(
            format!("{error:#}").contains("invalid configuration"),
            "{error:#}"
        );
    }

    #[test]
    fn validation_reports_every_problem() {
        let error = load(
            "log_level = \"[\"\n[engine]\nheartbeat = 60\nlease = 30\n[upgraders]\nsnmp = \"magic\"\n\
             [[custom_images]]\nimage_type = \"x\"\nlabel = \"X\"\nboards = []\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("log_level"), "{error}");
        assert!(
            error.contains("engine.heartbeat must be shorter"),
            "{error}"
        );
        assert!(error.contains("unknown upgrader `magic`"), "{error}");
        assert!(error.contains("custom_images"), "{error}");
    }

    #[test]
    fn storage_and_custom_images_are_read() {
        let config = load(
            "[storage]\nbackend = \"s3\"\nbucket = \"firmware\"\nsecret_access_key = \"hunter2\"\n\
             [[custom_images]]\nimage_type = \"customimage-squashfs-sysupgrade.bin\"\n\
             label = \"Custom WAP-1200\"\nboards = [\"CWAP1200\"]\n",
            &[],
        )
        .unwrap();
        let StorageConfig::S3 { bucket, region, .. } = config.storage_config() else {
            panic!("not S3");
        };
        assert_eq!(
            (bucket.as_str(), region.as_str()),
            ("firmware", "us-east-1")
        );
        let image_map = config.image_map().unwrap();
        assert_eq!(
            image_map.entries().next().map(|entry| entry.image_type()),
            Some("customimage-squashfs-sysupgrade.bin")
        );
        let registry = config.upgrader_registry().unwrap();
        assert_eq!(
            registry
                .connection_types()
                .map(|kind| kind.as_str())
                .collect::<Vec<_>>(),
            ["openwrt-ssh"]
        );
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let config = load(
            "[database]\nurl = \"postgres://flash:hunter2@db/flash\"\n\
             [storage]\nbackend = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"s3cr3t-key\"\n",
            &[(
                "FLASHFLEET_SECRET_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )],
        )
        .unwrap();
        let rendered = config.to_redacted_toml().unwrap();
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(!rendered.contains("s3cr3t-key"), "{rendered}");
        assert!(!rendered.contains("AAAAAAAA"), "{rendered}");
        assert!(
            rendered.contains("postgres://flash:[redacted]@db/flash"),
            "{rendered}"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("s3cr3t-key"));
        // The rendering is valid TOML that reads back.
        let _: toml::Table = toml::from_str(&rendered).unwrap();
    }

    #[test]
    fn url_passwords_are_redacted_and_other_urls_kept() {
        assert_eq!(
            redact_url_password("postgres://u:p@h:5432/d?sslmode=require"),
            "postgres://u:[redacted]@h:5432/d?sslmode=require"
        );
        assert_eq!(redact_url_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url_password("sqlite://./x.db"), "sqlite://./x.db");
    }
}

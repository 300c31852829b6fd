//! `api`: the REST API under load.
//!
//! 1. It creates a fresh database: a SQLite file in a temporary directory by default, or a
//!    schema of its own in the PostgreSQL database of `--database-url` (dropped afterwards),
//!    with the pool size of a server (`--db-pool`, the server's default of 10).
//! 2. It fills it through the repository API: one organization with a manager and the
//!    manager's token, one category, `--builds` builds in it, one image of the first build,
//!    `--operations` devices, and one mass upgrade of the first build with one queued operation
//!    per device (stored in one transaction by `queue_batch`, as the engine does). No engine
//!    runs, so the operations stay as they are during the measurement.
//! 3. It serves the real API in this process: `flashfleet_api::configure` (with its request-id
//!    middleware) in an actix-web `HttpServer` on 127.0.0.1:0, on an actix system over a
//!    multi-threaded tokio runtime, as `flashfleet serve` does, without the per-user rate
//!    limit.
//! 4. For each endpoint, `--connections` clients (one keep-alive connection each) send
//!    requests back to back with the manager's bearer token, for `--warmup-secs`, then for
//!    `--duration-secs`; every response must be 200 with the expected `count` (build list) or
//!    the expected operations (batch detail), or the run fails. It records the latency of
//!    every request that ends in the measured window.
//!
//! The last line printed is `api backend=<x> builds=<n> operations=<n> connections=<n>
//! duration_s=<x>` followed by `<endpoint>_rps`, `_p50_ms`, `_p99_ms`, `_max_ms` and
//! `_requests` for `build_list` and `batch_detail`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use clap::Args;
use flashfleet_api::{ApiConfig, ApiState};
use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, EngineConfig, EventBus};
use flashfleet_models::repository::{
    DeviceRepository, DirectoryRepository, FirmwareRepository, UpgradeRepository,
};
use flashfleet_models::{
    BatchId, DeviceFirmware, NewApiToken, NewBatch, NewBuild, NewCategory, NewDevice,
    NewFirmwareImage, NewOrganization, NewUpgradeOperation, NewUser, Role, StorageKey,
};
use flashfleet_storage::{FirmwareStore, StorageConfig};
use flashfleet_upgrader::UpgraderRegistry;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::{BOARD_NAME, BenchResult, IMAGE_TYPE, MODEL};

/// Inserts in flight at once while filling the database.
const FILL_CONCURRENCY: usize = 8;
/// The longest one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Items per page of the build list: the API's default page size, since the benchmark's
/// request does not ask for another.
const DEFAULT_PAGE_SIZE: usize = 10;

/// The options of `api`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ApiArgs {
    /// A PostgreSQL server database to run on, in a fresh schema dropped afterwards (such as
    /// postgres://postgres@127.0.0.1:5432/flashfleet_test); a temporary SQLite file by
    /// default.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Builds in the one category (the build list's `count`).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) builds: usize,
    /// Devices, and operations of the one mass upgrade (the batch detail's operations).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) operations: usize,
    /// Concurrent clients, each on one keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub(crate) connections: usize,
    /// Measured time per endpoint, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration_secs: f64,
    /// Load before the measured time, per endpoint, in seconds (checked, not counted).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup_secs: f64,
    /// Connections of the database pool (the server's default).
    #[arg(long, default_value_t = 10)]
    pub(crate) db_pool: usize,
    /// HTTP worker threads of the server; actix-web's default (one per physical core) when
    /// absent, as `flashfleet serve`.
    #[arg(long)]
    pub(crate) http_workers: Option<usize>,
}

/// What one endpoint measured.
#[derive(Clone, Debug)]
pub(crate) struct EndpointReport {
    /// The endpoint's name in the machine-readable line.
    pub(crate) name: &'static str,
    /// Requests that ended in the measured window (every one checked).
    pub(crate) requests: usize,
    /// Requests checked in all, warm-up and tail included.
    pub(crate) checked: usize,
    /// Requests per second in the measured window.
    pub(crate) requests_per_second: f64,
    /// Median latency.
    pub(crate) p50: Duration,
    /// 99th percentile latency.
    pub(crate) p99: Duration,
    /// Slowest request.
    pub(crate) max: Duration,
    /// Size of one response body, in bytes.
    pub(crate) body_bytes: usize,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub(crate) struct ApiReport {
    /// `sqlite` or `postgresql`.
    pub(crate) backend: &'static str,
    /// `GET /api/v1/firmware-upgrader/build/`.
    pub(crate) build_list: EndpointReport,
    /// `GET /api/v1/firmware-upgrader/batch-upgrade-operation/{id}/`.
    pub(crate) batch_detail: EndpointReport,
}

/// Runs the benchmark on an actix system over a multi-threaded tokio runtime (as `flashfleet
/// serve` runs), printing its measurements.
pub(crate) fn run(arguments: &ApiArgs) -> BenchResult<ApiReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    actix_web::rt::System::with_tokio_rt(move || runtime).block_on(bench(arguments))
}

async fn bench(arguments: &ApiArgs) -> BenchResult<ApiReport> {
    let builds = arguments.builds.max(1);
    let operations = arguments.operations.max(1);
    let connections = arguments.connections.max(1);
    let duration = Duration::try_from_secs_f64(arguments.duration_secs)?;
    let warmup = Duration::try_from_secs_f64(arguments.warmup_secs)?;
    let pool = arguments.db_pool.max(1);
    let test_db = match &arguments.database_url {
        Some(url) => TestDb::postgres_at(url, pool).await?,
        None => TestDb::sqlite_with_pool(pool).await?,
    };
    let backend = match test_db.backend() {
        flashfleet_db::Backend::Sqlite => "sqlite",
        flashfleet_db::Backend::Postgres => "postgresql",
    };
    println!(
        "api: {backend}, {builds} builds, {operations} operations, {connections} connections, \
         {:.1} s warm-up + {:.1} s per endpoint, pool of {pool}, {} cores, load average {}",
        warmup.as_secs_f64(),
        duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );

    let started = Instant::now();
    let fixture = fill(test_db.db(), builds, operations).await?;
    println!(
        "database filled in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    if std::env::var_os("FLASHFLEET_BENCH_SKIP_OPTIMIZE").is_none() {
        // What `flashfleet serve` does every hour: the planner's statistics of the filled
        // tables.
        test_db.db().optimize().await?;
    }
    let server = Server::start(test_db.db(), arguments.http_workers)?;
    let base = format!("http://{}/api/v1/firmware-upgrader", server.address);
    let load = Load {
        token: fixture.token.clone(),
        connections,
        warmup,
        duration,
    };
    let result = async {
        let build_list = load
            .measure(
                "build_list",
                &format!("{base}/build/"),
                Expect::BuildList {
                    count: builds,
                    page: builds.min(DEFAULT_PAGE_SIZE),
                },
            )
            .await?;
        print_endpoint("GET /build/", &build_list);
        let batch_detail = load
            .measure(
                "batch_detail",
                &format!("{base}/batch-upgrade-operation/{}/", fixture.batch.0),
                Expect::BatchDetail { operations },
            )
            .await?;
        print_endpoint("GET /batch-upgrade-operation/{id}/", &batch_detail);
        Ok::<_, crate::BenchError>((build_list, batch_detail))
    }
    .await;
    server.stop().await;
    let (build_list, batch_detail) = result?;
    println!("load average after the run: {}", load_average());
    let report = ApiReport {
        backend,
        build_list,
        batch_detail,
    };
    let mut line = format!(
        "api backend={} builds={builds} operations={operations} \
         connections={connections} duration_s={:.1}",
        report.backend,
        duration.as_secs_f64()
    );
    for endpoint in [&report.build_list, &report.batch_detail] {
        line.push_str(&format!(
            " {name}_rps={:.1} {name}_p50_ms={:.2} {name}_p99_ms={:.2} {name}_max_ms={:.2} \
             {name}_requests={}",
            endpoint.requests_per_second,
            milliseconds(endpoint.p50),
            milliseconds(endpoint.p99),
            milliseconds(endpoint.max),
            endpoint.requests,
            name = endpoint.name,
        ));
    }
    println!("{line}");
    Ok(report)
}

fn print_endpoint(label: &str, endpoint: &EndpointReport) {
    println!(
        "{label}: {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests \
         measured, {} checked, {} bytes per response)",
        endpoint.requests_per_second,
        milliseconds(endpoint.p50),
        milliseconds(endpoint.p99),
        milliseconds(endpoint.max),
        endpoint.requests,
        endpoint.checked,
        endpoint.body_bytes,
    );
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `/proc/loadavg`'s first three fields (the machine is shared with other builds).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// What the database holds for the benchmark.
struct Fixture {
    /// The manager's bearer token.
    token: String,
    /// The mass upgrade.
    batch: BatchId,
}

/// Fills `db`: an organization with a manager and the manager's token, a category with
/// `builds` builds, one image of the first build, `operations` devices, and one mass upgrade
/// of the first build with one queued operation per device.
async fn fill(db: &Db, builds: usize, operations: usize) -> BenchResult<Fixture> {
    let organization = db
        .insert_organization(&NewOrganization::new("Bench", "bench").into_organization())
        .await?;
    let manager = db
        .insert_user(&NewUser::new("bench-manager").into_user())
        .await?;
    db.set_membership(manager.id, organization.id, Role::Manager)
        .await?;
    let token = NewApiToken::generate(manager.id, "bench")?;
    db.insert_token(&token.token).await?;
    let category = db
        .insert_category(&NewCategory::new(Some(organization.id), "Routers").into_category())
        .await?;

    let first_build = db
        .insert_build(&NewBuild::new(category.id, "1.0").into_build())
        .await?;
    futures_util::stream::iter(1..builds)
        .map(|index| {
            let build = NewBuild::new(category.id, format!("1.{index}")).into_build();
            async move { db.insert_build(&build).await }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;

    let file_name = format!("openwrt-1.0-{IMAGE_TYPE}");
    let mut image = NewFirmwareImage {
        build_id: first_build.id,
        image_type: IMAGE_TYPE.to_owned(),
        file_name: file_name.clone(),
        size: 8 * 1024 * 1024,
        sha256: "1".repeat(64),
        storage_key: StorageKey::for_image(first_build.id, &file_name),
        metadata: None,
        details: Default::default(),
    };
    image.validate(|_| true)?;
    let image = db.insert_image(&image.into_image()).await?;

    let devices: Vec<_> = futures_util::stream::iter(0..operations)
        .map(|index| {
            let device = u32::try_from(index).map(|number| {
                let [_, high, middle, low] = number.to_be_bytes();
                let mac = format!("02:be:01:{high:02x}:{middle:02x}:{low:02x}");
                (index, mac)
            });
            async move {
                let (index, mac) = device?;
                let mut device =
                    NewDevice::new(organization.id, format!("bench-{index}"), mac.parse()?);
                device.model = MODEL.to_owned();
                device.board_name = BOARD_NAME.to_owned();
                device.os = "OpenWrt 23.05.0".to_owned();
                Ok::<_, crate::BenchError>(db.insert_device(&device.into_device()).await?)
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect()
        .await?;

    let batch = NewBatch::new(first_build.id).into_batch();
    let upgrades: Vec<_> = devices
        .iter()
        .map(|device| {
            let mut operation = NewUpgradeOperation::new(device.id, image.id);
            operation.batch_id = Some(batch.id);
            (
                DeviceFirmware::new(device.id, image.id, false),
                operation.into_operation(),
            )
        })
        .collect();
    let (batch, queued, busy) = db.queue_batch(&batch, &upgrades).await?;
    if queued.len() != operations || !busy.is_empty() {
        return Err(format!(
            "the mass upgrade queued {} operations of {operations}",
            queued.len()
        )
        .into());
    }
    Ok(Fixture {
        token: token.secret.expose().to_owned(),
        batch: batch.id,
    })
}

/// The API served by actix-web in this process.
struct Server {
    address: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves `flashfleet_api::configure` on 127.0.0.1 with a port of its own, composed as
    /// `flashfleet serve` composes it, without the per-user rate limit (one user sends every
    /// request) and with no engine running.
    fn start(db: &Db, workers: Option<usize>) -> BenchResult<Server> {
        let store = FirmwareStore::from_config(&StorageConfig::Memory, None)?;
        let engine = Engine::new(
            Arc::new(db.clone()),
            UpgraderRegistry::default(),
            Arc::new(store.clone()),
            EventBus::default(),
            EngineConfig::default(),
        );
        let state = ApiState::new(
            Arc::new(db.clone()),
            engine,
            store,
            ApiConfig {
                throttle: None,
                ..ApiConfig::default()
            },
        );
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(flashfleet_api::configure)
        })
        .disable_signals();
        if let Some(workers) = workers {
            server = server.workers(workers.max(1));
        }
        let server = server.bind(("127.0.0.1", 0))?;
        let address = *server
            .addrs()
            .first()
            .ok_or("the HTTP server listens on no address")?;
        let server = server.run();
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        Ok(Server {
            address,
            handle,
            task,
        })
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        if let Ok(Err(error)) = self.task.await {
            eprintln!("the HTTP server stopped with an error: {error}");
        }
    }
}

/// What every response of an endpoint must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A page of the build list: `count` builds in all, `page` of them in `results`.
    BuildList { count: usize, page: usize },
    /// The batch detail: `operations` operations, each in `upgradeoperations`.
    BatchDetail { operations: usize },
}

#[derive(Deserialize)]
struct ListBody {
    count: usize,
    results: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct BatchBody {
    counters: CountersBody,
    upgradeoperations: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct CountersBody {
    total: usize,
}

impl Expect {
    /// Checks one response body.
    fn check(self, body: &[u8]) -> Result<(), String> {
        match self {
            Expect::BuildList { count, page } => {
                let list: ListBody = serde_json::from_slice(body)
                    .map_err(|error| format!("the build list is not a page: {error}"))?;
                if list.count != count || list.results.len() != page {
                    return Err(format!(
                        "the build list has count {} and {} results, expected {count} and {page}",
                        list.count,
                        list.results.len()
                    ));
                }
            }
            Expect::BatchDetail { operations } => {
                let batch: BatchBody = serde_json::from_slice(body)
                    .map_err(|error| format!("the batch detail is not one: {error}"))?;
                if batch.counters.total != operations || batch.upgradeoperations.len() != operations
                {
                    return Err(format!(
                        "the batch detail counts {} operations and lists {}, expected {operations}",
                        batch.counters.total,
                        batch.upgradeoperations.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The load: so many clients with the manager's token, for a warm-up then a measured time.
struct Load {
    token: String,
    connections: usize,
    warmup: Duration,
    duration: Duration,
}

/// What one client saw.
struct ClientRecord {
    latencies: Vec<Duration>,
    checked: usize,
    body_bytes: usize,
}

impl Load {
    async fn measure(
        &self,
        name: &'static str,
        url: &str,
        expect: Expect,
    ) -> BenchResult<EndpointReport> {
        let start = Instant::now();
        let window_start = start + self.warmup;
        let window_end = window_start + self.duration;
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..self.connections {
            // One client per connection: its pool holds the one keep-alive connection it uses.
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(REQUEST_TIMEOUT)
                .build()?;
            let url = url.to_owned();
            let token = self.token.clone();
            clients.spawn(async move {
                client_loop(client, url, token, expect, window_start, window_end).await
            });
        }
        let mut latencies = Vec::new();
        let mut checked = 0;
        let mut body_bytes = 0;
        while let Some(joined) = clients.join_next().await {
            let record = joined??;
            latencies.extend(record.latencies);
            checked += record.checked;
            body_bytes = body_bytes.max(record.body_bytes);
        }
        latencies.sort_unstable();
        Ok(EndpointReport {
            name,
            requests: latencies.len(),
            checked,
            requests_per_second: latencies.len() as f64 / self.duration.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            body_bytes,
        })
    }
}

/// Sends requests back to back until `window_end`, checking each response; keeps the latency
/// of those that end inside `[window_start, window_end]`.
async fn client_loop(
    client: reqwest::Client,
    url: String,
    token: String,
    expect: Expect,
    window_start: Instant,
    window_end: Instant,
) -> Result<ClientRecord, crate::BenchError> {
    let mut record = ClientRecord {
        latencies: Vec::new(),
        checked: 0,
        body_bytes: 0,
    };
    while Instant::now() < window_end {
        let sent = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let ended = Instant::now();
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            )
            .into());
        }
        expect.check(&body)?;
        record.checked += 1;
        record.body_bytes = body.len();
        if ended >= window_start && ended <= window_end {
            record.latencies.push(ended - sent);
        }
    }
    Ok(record)
}

/// The `quantile` of sorted `latencies` (nearest rank), zero for none.
fn percentile(latencies: &[Duration], quantile: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(database_url: Option<String>) -> ApiArgs {
        ApiArgs {
            database_url,
            builds: 50,
            operations: 50,
            connections: 4,
            duration_secs: 1.0,
            warmup_secs: 0.2,
            db_pool: 4,
            http_workers: Some(2),
        }
    }

    fn assert_measured(report: &ApiReport) {
        for endpoint in [&report.build_list, &report.batch_detail] {
            assert!(
                endpoint.requests > 0,
                "{}: no request measured on {}",
                endpoint.name,
                report.backend
            );
            assert!(endpoint.checked >= endpoint.requests);
            assert!(endpoint.p50 <= endpoint.p99 && endpoint.p99 <= endpoint.max);
            assert!(endpoint.requests_per_second > 0.0);
        }
    }

    #[test]
    fn the_api_benchmark_checks_every_response_on_sqlite() {
        let report = run(&tiny(None)).expect("the benchmark runs and every response is right");
        assert_eq!(report.backend, "sqlite");
        assert_measured(&report);
    }

    #[test]
    fn the_api_benchmark_checks_every_response_on_postgresql() {
        let Some(url) = std::env::var(flashfleet_db::testing::POSTGRES_URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            eprintln!("notice: FLASHFLEET_TEST_POSTGRES_URL is not set; skipped");
            return;
        };
        let report = run(&tiny(Some(url))).expect("the benchmark runs and every response is right");
        assert_eq!(report.backend, "postgresql");
        assert_measured(&report);
    }

    #[test]
    fn wrong_counts_fail_the_check() {
        let list = Expect::BuildList { count: 50, page: 2 };
        assert!(list.check(br#"{"count":50,"results":[{},{}]}"#).is_ok());
        assert!(list.check(br#"{"count":49,"results":[{},{}]}"#).is_err());
        assert!(list.check(br#"{"count":50,"results":[{}]}"#).is_err());
        assert!(list.check(b"not json").is_err());
        let batch = Expect::BatchDetail { operations: 2 };
        assert!(
            batch
                .check(br#"{"counters":{"total":2},"upgradeoperations":[{},{}]}"#)
                .is_ok()
        );
        assert!(
            batch
                .check(br#"{"counters":{"total":2},"upgradeoperations":[{}]}"#)
                .is_err()
        );
        assert!(
            batch
                .check(br#"{"counters":{"total":3},"upgradeoperations":[{},{}]}"#)
                .is_err()
        );
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let latencies: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&latencies, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&latencies, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}

//! The sample's server, composed from the library crates the way `flashfleet serve` composes
//! them (bins/flashfleet/src/stack.rs and commands/serve.rs), with the sample's own parts:
//! firmware storage on a [`TenantStore`] over a shared in-memory backend, and the
//! [`SampleUpgrader`] under [`SAMPLE_SSH`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use flashfleet_api::{ApiConfig, ApiState};
use flashfleet_db::Db;
use flashfleet_engine::{Engine, EngineConfig, EngineError, EventBus, RetryPolicy};
use flashfleet_models::repository::DirectoryRepository as _;
use flashfleet_models::{NewApiToken, NewUser, PasswordHash};
use flashfleet_storage::{FirmwareStore, FirmwareStoreOptions};
use flashfleet_upgrader::UpgraderRegistry;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::custom_storage::{TenantStore, Usage};
use crate::upgrader::{SAMPLE_SSH, SampleUpgrader, UpgraderCalls};

/// The tenant whose files the sample keeps on the shared backend.
pub(crate) const TENANT: &str = "sample-app";

/// The sample's server, running on the test's runtime.
pub(crate) struct SampleApp {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// The token of the superuser `admin`.
    pub(crate) superuser_token: String,
    /// The backend the tenant store writes to, shared by every tenant.
    pub(crate) shared: Arc<InMemory>,
    /// What the sample's tenant stored and read.
    pub(crate) storage_usage: Arc<Usage>,
    /// What the sample's upgrader did.
    pub(crate) upgrader_calls: Arc<UpgraderCalls>,
    /// Firmware storage as the API and the engine use it.
    pub(crate) store: FirmwareStore,
    shutdown: CancellationToken,
    engine: JoinHandle<Result<(), EngineError>>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
}

impl SampleApp {
    /// Starts the sample's server on `db` (migrated), with a superuser and its token.
    pub(crate) async fn start(db: &Db) -> SampleApp {
        let superuser_token = create_superuser(db).await;

        let shared = Arc::new(InMemory::new());
        let tenant_store = TenantStore::new(Arc::clone(&shared) as Arc<dyn ObjectStore>, TENANT);
        let storage_usage = tenant_store.usage();
        let store = FirmwareStore::new(Arc::new(tenant_store), FirmwareStoreOptions::default());

        let upgrader_calls = Arc::new(UpgraderCalls::default());
        let mut upgraders = UpgraderRegistry::empty();
        upgraders.register(
            SAMPLE_SSH,
            Arc::new(SampleUpgrader::new(Arc::clone(&upgrader_calls))),
        );
        let engine = Engine::new(
            Arc::new(db.clone()),
            upgraders,
            Arc::new(store.clone()),
            EventBus::default(),
            EngineConfig {
                name: "sample-app".to_owned(),
                lease: Duration::from_secs(2),
                heartbeat: Duration::from_millis(500),
                poll_interval: Duration::from_millis(200),
                retry: RetryPolicy {
                    backoff: Duration::from_secs(1),
                    backoff_max: Duration::from_secs(2),
                    ..RetryPolicy::default()
                },
                ..EngineConfig::default()
            },
        );
        let shutdown = CancellationToken::new();
        let engine_task = tokio::spawn({
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });

        let api = ApiState::new(
            Arc::new(db.clone()),
            engine,
            store.clone(),
            ApiConfig {
                throttle: None,
                live_poll_interval: Duration::from_millis(500),
                ..ApiConfig::default()
            },
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(api.clone()))
                .configure(flashfleet_api::configure)
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(("127.0.0.1", 0))
        .expect("the sample binds a loopback port");
        let address = server.addrs()[0];
        let server = server.run();
        let http = server.handle();
        let http_task = tokio::spawn(server);
        SampleApp {
            base: format!("http://{address}"),
            superuser_token,
            shared,
            storage_usage,
            upgrader_calls,
            store,
            shutdown,
            engine: engine_task,
            http,
            http_task,
        }
    }

    /// Stops the engine (every operation at a persisted step) and the HTTP server.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.engine)
            .await
            .expect("the engine stops in time")
            .expect("the engine task did not panic")
            .expect("the engine stopped cleanly");
        self.http.stop(true).await;
        self.http_task
            .await
            .expect("the HTTP server task did not panic")
            .expect("the HTTP server stopped cleanly");
    }
}

/// A superuser `admin` and a token of it, as `flashfleet createsuperuser` and `flashfleet
/// token create` make them.
async fn create_superuser(db: &Db) -> String {
    let mut new_user = NewUser::new("admin");
    new_user.is_superuser = true;
    new_user.validate().expect("a valid user");
    new_user.password_hash =
        Some(PasswordHash::hash("correct horse battery staple").expect("a valid password"));
    let user = db
        .insert_user(&new_user.into_user())
        .await
        .expect("the superuser is stored");
    let new_token = NewApiToken::generate(user.id, "sample-app").expect("a token");
    db.insert_token(&new_token.token)
        .await
        .expect("the token is stored");
    new_token.secret.expose().to_owned()
}

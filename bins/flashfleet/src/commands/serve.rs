//! `flashfleet serve`: the REST API, the web dashboard (at `/`) and the upgrade engine in one
//! process, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Shutdown (SIGTERM or SIGINT): the server stops being ready, stops claiming upgrades, has
//! every upgrade in flight stop at its next persisted step and give its lease back (so a
//! restarted server, or another one on the same PostgreSQL, takes it over by its phase:
//! started over before the flash, only verified after it), finishes the HTTP requests in
//! flight, and exits. Waiting is bounded by [`SHUTDOWN_GRACE`]; what is still running then is
//! recovered like after a crash, when its lease expires.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use flashfleet_api::ApiState;
use flashfleet_dashboard::Dashboard;
use flashfleet_models::repository::DirectoryRepository;
use flashfleet_models::{PageRequest, Scope, StorageKey};
use flashfleet_storage::StorageError;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::secret_key;
use crate::stack::Stack;

/// How long a stopping server waits for its upgrades to reach a persisted step and for its
/// HTTP requests to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The options of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on, such as 127.0.0.1:8000 or 0.0.0.0:8000 (default: `listen`
    /// of the configuration, also FLASHFLEET_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(config: &Config, args: &Args, hints: &mut impl Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    // An actix system on a multi-threaded runtime: the engine's tasks run on every core, the
    // HTTP workers on their own threads.
    actix_web::rt::System::with_tokio_rt(move || runtime).block_on(serve(
        config,
        args.listen.unwrap_or(config.listen),
        hints,
    ))
}

/// What the operational endpoints need.
struct Operations {
    stack: Stack,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn serve(config: &Config, listen: SocketAddr, hints: &mut impl Write) -> anyhow::Result<()> {
    let stack = Stack::build(config).await?;
    if stack
        .db
        .list_users(&Scope::All, PageRequest::page(1, 1))
        .await?
        .count
        == 0
    {
        write_first_run_hint(hints, listen, config.dashboard.enabled)?;
    }
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(true));
    tokio::spawn(refresh_planner_statistics(
        stack.db.clone(),
        shutdown.clone(),
    ));
    let metrics = Arc::new(Metrics::new(Arc::new(stack.db.clone())));
    tokio::spawn(Arc::clone(&metrics).follow(stack.engine.events().subscribe()));
    let engine = tokio::spawn({
        let engine = stack.engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    let api_state = ApiState::new(
        Arc::new(stack.db.clone()),
        stack.engine.clone(),
        stack.store.clone(),
        config.api_config(),
    );
    let dashboard = if config.dashboard.enabled {
        // The session cookies' key comes from the server's secret key, so every server sharing
        // the secret key (and the database) accepts the same sessions.
        let (secret_key, _) = secret_key::load_or_generate(config)?;
        Some(Dashboard::new(
            api_state.clone(),
            &secret_key.derive("dashboard sessions"),
            config.dashboard_config(),
        ))
    } else {
        None
    };
    let api = config.api.enabled.then_some(api_state);
    let operations = web::Data::new(Operations {
        stack: stack.clone(),
        metrics,
        ready: Arc::clone(&ready),
    });
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(operations.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text));
        if let Some(api) = &api {
            app = app
                .app_data(web::Data::new(api.clone()))
                .configure(flashfleet_api::configure);
        }
        if let Some(dashboard) = &dashboard {
            // Last: the dashboard's scope answers every path the routes above do not.
            let dashboard = dashboard.clone();
            app = app.configure(move |service_config| {
                flashfleet_dashboard::configure(service_config, dashboard)
            });
        }
        app
    })
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .bind(listen)
    .with_context(|| format!("could not listen on {listen}"))?
    .run();
    let handle = server.handle();
    tracing::info!(
        address = %listen,
        api = config.api.enabled,
        dashboard = config.dashboard.enabled,
        engine = %config.engine_config().name,
        "serving: the dashboard at http://{listen}/, the API at http://{listen}/api/v1/ (docs at /api/v1/docs/), health at /healthz and /readyz, metrics at /metrics"
    );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => {
            shutdown.cancel();
            result.context("the HTTP server stopped")?;
        }
        signal = stop_signal() => {
            tracing::info!(signal = signal?, "stopping: finishing the steps and requests in flight");
            ready.store(false, Ordering::SeqCst);
            shutdown.cancel();
            // The command is sent now; its answer comes once the server future (awaited
            // below) has finished.
            let _stopping_http = handle.stop(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, engine).await {
                Ok(Ok(Ok(()))) => tracing::info!("the engine stopped; every upgrade in flight is at a persisted step"),
                Ok(Ok(Err(error))) => tracing::error!(%error, "the engine stopped with an error"),
                Ok(Err(join_error)) => tracing::error!(%join_error, "the engine task failed"),
                Err(_) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "upgrades still running after the grace period are recovered when their leases expire"),
            }
            server.await.context("the HTTP server stopped")?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn write_first_run_hint(
    hints: &mut impl Write,
    listen: SocketAddr,
    dashboard: bool,
) -> anyhow::Result<()> {
    write!(
        hints,
        "flashfleet: no user exists yet. Create an administrator and an API token with:\n\
         \n    flashfleet createsuperuser --username admin --password '<a password>'\n    \
         flashfleet token create --username admin\n\
         \nor, once the administrator exists, POST username and password to \
         http://{listen}/api/v1/users/token/ ; then call the API with the header\n    \
         Authorization: Bearer <token>\n"
    )
    .context("could not write to standard error")?;
    if dashboard {
        writeln!(
            hints,
            "The dashboard is at http://{listen}/ (sign in with the administrator's username \
             and password)."
        )
        .context("could not write to standard error")?;
    }
    writeln!(hints).context("could not write to standard error")
}

/// The name of the first stop signal received.
async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// `GET /healthz`: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database and firmware storage answer, and the server is not stopping.
async fn readyz(operations: web::Data<Operations>) -> HttpResponse {
    // On a task of its own, as the API's requests: a client going away must not drop a
    // database query in the middle (see `flashfleet_api`'s request context).
    actix_web::rt::spawn(readiness(operations))
        .await
        .unwrap_or_else(|_| HttpResponse::InternalServerError().finish())
}

async fn readiness(operations: web::Data<Operations>) -> HttpResponse {
    let mut problems = Vec::new();
    if !operations.ready.load(Ordering::SeqCst) {
        problems.push("stopping".to_owned());
    }
    if let Err(error) = operations.stack.db.ping().await {
        problems.push(format!("database: {error}"));
    }
    // Any answer of the storage backend but a failure will do: the probe key does not exist.
    match operations
        .stack
        .store
        .open(&StorageKey::from_stored("readyz/probe"))
        .await
    {
        Ok(_) | Err(StorageError::NotFound { .. }) => {}
        Err(error) => problems.push(format!("storage: {error}")),
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        tracing::warn!(?problems, "not ready");
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "problems": problems}))
    }
}

/// `GET /metrics`.
async fn metrics_text(operations: web::Data<Operations>) -> HttpResponse {
    let metrics = Arc::clone(&operations.metrics);
    let rendered = actix_web::rt::spawn(async move { metrics.render().await })
        .await
        .unwrap_or_else(|join_error| Err(anyhow::anyhow!("{join_error}")));
    match rendered {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(error) => {
            tracing::error!(%error, "could not read the metrics");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

/// How often the database's planner statistics are refreshed.
const PLANNER_STATISTICS_PERIOD: Duration = Duration::from_secs(3600);

/// Refreshes the database's planner statistics at start and every hour, until `shutdown`
/// ([`flashfleet_db::Db::optimize`]: SQLite plans the build list of a large catalogue
/// several times faster with them). A failure is logged and tried again at the next period.
async fn refresh_planner_statistics(db: flashfleet_db::Db, shutdown: CancellationToken) {
    let mut period = tokio::time::interval(PLANNER_STATISTICS_PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = period.tick() => {}
        }
        if let Err(error) = db.optimize().await {
            tracing::warn!(%error, "could not refresh the database's planner statistics");
        }
    }
}

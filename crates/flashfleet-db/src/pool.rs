//! The [`Db`] handle: a connection pool of either backend, and the macros that run one query
//! body on whichever backend is in use.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::SimpleAsyncConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::crypto::{SecretCipher, SecretKey};
use crate::error::DbError;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// SQLite settings of every pooled connection: wait for the write lock instead of failing at
/// once, write-ahead logging so readers never block the writer, enforced foreign keys.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 15000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// `ANALYZE` of flashfleet's own tables on PostgreSQL (the database may hold others).
const POSTGRES_ANALYZE: &str = "ANALYZE organizations, users, memberships, api_tokens, \
     categories, builds, firmware_images, device_groups, devices, credentials, \
     device_connections, device_firmwares, batch_upgrade_operations, upgrade_operations;";

pub(crate) type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;

/// [`DbConfig::acquire_timeout`] by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the pool kept for the engine's lease renewals, so a heartbeat never waits
/// behind the queries of the upgrades it keeps alive.
const LEASE_POOL_SIZE: usize = 2;

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `sqlite://<path>` (the file and its directory are created when missing) or
    /// `postgres://user@host:port/database` (`postgresql://` also works).
    pub url: String,
    /// Connections in the pool. SQLite has one writer at a time whatever this says.
    pub pool_size: usize,
    /// The key that encrypts device secrets at rest.
    pub secret_key: SecretKey,
    /// Whether [`Db::connect`] applies pending migrations (the default).
    pub run_migrations: bool,
    /// How long a query waits for a free pooled connection before it fails (10 s by
    /// default): a saturated pool is an error, never an endless wait.
    pub acquire_timeout: Duration,
}

impl DbConfig {
    /// A configuration for `url` with a pool of 10 connections that applies migrations.
    pub fn new(url: impl Into<String>, secret_key: SecretKey) -> Self {
        Self {
            url: url.into(),
            pool_size: 10,
            secret_key,
            run_migrations: true,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

pub(crate) enum Pool {
    Postgres(DeadPool<AsyncPgConnection>),
    Sqlite(DeadPool<SqliteAsyncConnection>),
}

/// A handle to the database; cheap to clone, shared by every task.
///
/// It implements every repository trait of `flashfleet-models`.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: Arc<Pool>,
    /// A small pool of its own for lease renewals ([`LEASE_POOL_SIZE`]).
    pub(crate) lease_pool: Arc<Pool>,
    /// How long a query waits for a pooled connection.
    pub(crate) acquire_timeout: Duration,
    pub(crate) cipher: SecretCipher,
    backend: Backend,
    /// Added to this process's clock wherever the handle stamps a time (`modified`, `started`,
    /// ...): zero, except in tests that simulate a server whose clock is off. Leases never
    /// use it: they are written and compared with the database's clock.
    clock_skew: chrono::TimeDelta,
    /// Faults injected by tests.
    #[cfg(feature = "testing")]
    pub(crate) faults: Arc<crate::testing::Faults>,
}

/// The pool of lease renewals, in the shape the `with_conn!` and `with_transaction!` macros
/// take.
pub(crate) struct LeasePool {
    pub(crate) pool: Arc<Pool>,
    pub(crate) acquire_timeout: Duration,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Connects to the database of `config`, applying pending migrations unless disabled.
    pub async fn connect(config: &DbConfig) -> Result<Db, DbError> {
        let backend = backend_of(&config.url)?;
        if config.run_migrations {
            migrate(&config.url).await?;
        }
        let pool = build_pool(backend, &config.url, config.pool_size.max(1)).await?;
        let lease_pool = build_pool(backend, &config.url, LEASE_POOL_SIZE).await?;
        Ok(Db {
            pool: Arc::new(pool),
            lease_pool: Arc::new(lease_pool),
            acquire_timeout: config.acquire_timeout,
            cipher: SecretCipher::new(&config.secret_key),
            backend,
            clock_skew: chrono::TimeDelta::zero(),
            #[cfg(feature = "testing")]
            faults: Arc::default(),
        })
    }

    /// The time this handle stamps rows with: this process's clock (plus the skew of
    /// [`Db::with_clock_skew`] in tests).
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        flashfleet_models::time::now() + self.clock_skew
    }

    /// The same database, as seen by a server whose clock is `skew` off (tests of clock skew
    /// between servers sharing one database).
    #[cfg(feature = "testing")]
    pub fn with_clock_skew(mut self, skew: chrono::TimeDelta) -> Db {
        self.clock_skew = skew;
        self
    }

    /// The faults injected into this handle and its clones.
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> &crate::testing::Faults {
        &self.faults
    }

    /// The same database through a handle whose faults are its own (another server's).
    #[cfg(feature = "testing")]
    pub fn with_own_faults(mut self) -> Db {
        self.faults = Arc::default();
        self
    }

    pub(crate) fn lease_pool(&self) -> LeasePool {
        LeasePool {
            pool: Arc::clone(&self.lease_pool),
            acquire_timeout: self.acquire_timeout,
        }
    }

    /// Which backend this handle talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), DbError> {
        with_conn!(self, |connection| {
            connection.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    /// Refreshes the query planner's statistics. Call it now and then (`flashfleet serve`
    /// does, at start and every hour).
    ///
    /// Both databases plan from statistics that `ANALYZE` stores, and without them they guess:
    /// the build list of a large catalogue, for one, then reads and sorts every build instead
    /// of walking the list's index, five times slower at 10,000 builds (BENCHMARKS.md). On
    /// SQLite this runs `PRAGMA optimize`, which analyzes only the tables whose statistics
    /// are missing or stale, within a bounded effort, as SQLite advises for long-lived
    /// connections (each pooled connection also runs it when it opens). On PostgreSQL it
    /// runs `ANALYZE` on flashfleet's tables, which autovacuum otherwise does on its own
    /// schedule (about a minute after a bulk change, by default).
    pub async fn optimize(&self) -> Result<(), DbError> {
        match &*self.pool {
            Pool::Postgres(pool) => {
                let mut connection = pool.get().await.map_err(DbError::connect)?;
                connection.batch_execute(POSTGRES_ANALYZE).await?;
                Ok(())
            }
            Pool::Sqlite(pool) => {
                let mut connection = pool.get().await.map_err(DbError::connect)?;
                connection
                    .batch_execute("PRAGMA optimize = 0x10002;")
                    .await?;
                Ok(())
            }
        }
    }
}

/// A pool of `size` connections to `url`, checked by opening one.
async fn build_pool(backend: Backend, url: &str, size: usize) -> Result<Pool, DbError> {
    Ok(match backend {
        Backend::Postgres => {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
            let pool = DeadPool::builder(manager)
                .max_size(size)
                .build()
                .map_err(DbError::connect)?;
            // Fail now, with a clear error, rather than at the first request.
            drop(pool.get().await.map_err(DbError::connect)?);
            Pool::Postgres(pool)
        }
        Backend::Sqlite => {
            let path = sqlite_path(url)?;
            let mut manager_config = ManagerConfig::<SqliteAsyncConnection>::default();
            manager_config.custom_setup = Box::new(|url| {
                let url = url.to_owned();
                Box::pin(async move { open_sqlite(&url).await })
            });
            let manager = AsyncDieselConnectionManager::<SqliteAsyncConnection>::new_with_config(
                path,
                manager_config,
            );
            let pool = DeadPool::builder(manager)
                .max_size(size)
                .build()
                .map_err(DbError::connect)?;
            drop(pool.get().await.map_err(DbError::connect)?);
            Pool::Sqlite(pool)
        }
    })
}

/// Applies the pending migrations of the backend of `url`, outside any pool.
///
/// Runs on the blocking thread pool: diesel's migration harness is synchronous (and
/// diesel_async's `AsyncMigrationHarness` panics on a current-thread runtime).
pub async fn migrate(url: &str) -> Result<(), DbError> {
    let backend = backend_of(url)?;
    let url = url.to_owned();
    let migration = tokio::task::spawn_blocking(move || -> Result<(), DbError> {
        match backend {
            Backend::Postgres => {
                use diesel::Connection;
                let mut connection = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
                    .map_err(DbError::connect)?;
                connection
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map_err(DbError::Migration)?;
            }
            Backend::Sqlite => {
                use diesel::Connection;
                let path = sqlite_path(&url)?;
                create_parent_directory(path)?;
                let mut connection = SqliteConnection::establish(path).map_err(DbError::connect)?;
                diesel::connection::SimpleConnection::batch_execute(
                    &mut connection,
                    SQLITE_PRAGMAS,
                )?;
                connection
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(DbError::Migration)?;
            }
        }
        Ok(())
    });
    migration
        .await
        .map_err(|error| DbError::Migration(Box::new(error)))?
}

/// Reverts every applied migration, then applies them all again (for the schema tests, which
/// check that each `down.sql` undoes its `up.sql`).
#[cfg(feature = "testing")]
pub(crate) async fn redo_migrations(url: &str, backend: Backend) -> Result<(), DbError> {
    use diesel::Connection;
    let url = url.to_owned();
    let redo = tokio::task::spawn_blocking(move || -> Result<(), DbError> {
        // `EmbeddedMigrations` is not `Copy`: the caller passes the constant twice.
        fn redo<C: MigrationHarness<B>, B: diesel::backend::Backend>(
            connection: &mut C,
            to_revert: EmbeddedMigrations,
            to_apply: EmbeddedMigrations,
        ) -> Result<(), DbError> {
            connection
                .revert_all_migrations(to_revert)
                .map_err(DbError::Migration)?;
            connection
                .run_pending_migrations(to_apply)
                .map_err(DbError::Migration)?;
            Ok(())
        }
        match backend {
            Backend::Postgres => {
                let mut connection = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
                    .map_err(DbError::connect)?;
                redo(&mut connection, POSTGRES_MIGRATIONS, POSTGRES_MIGRATIONS)
            }
            Backend::Sqlite => {
                let mut connection =
                    SqliteConnection::establish(sqlite_path(&url)?).map_err(DbError::connect)?;
                redo(&mut connection, SQLITE_MIGRATIONS, SQLITE_MIGRATIONS)
            }
        }
    });
    redo.await
        .map_err(|error| DbError::Migration(Box::new(error)))?
}

async fn open_sqlite(path: &str) -> diesel::ConnectionResult<SqliteAsyncConnection> {
    use diesel_async::AsyncConnection;
    let mut connection = SqliteAsyncConnection::establish(path).await?;
    connection
        .batch_execute(SQLITE_PRAGMAS)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    // SQLite's advice for long-lived connections: refresh missing or stale planner statistics
    // when the connection opens (bounded effort), and now and then after (`Db::optimize`).
    connection
        .batch_execute("PRAGMA optimize = 0x10002;")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(connection)
}

fn backend_of(url: &str) -> Result<Backend, DbError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        sqlite_path(url)?;
        Ok(Backend::Sqlite)
    } else {
        Err(DbError::InvalidUrl {
            reason: "the URL must start with sqlite:// or postgres://".to_owned(),
        })
    }
}

fn sqlite_path(url: &str) -> Result<&str, DbError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || path.contains(":memory:") || path.starts_with("file:") {
        return Err(DbError::InvalidUrl {
            reason: "SQLite needs a file path (an in-memory database would differ per pooled connection)"
                .to_owned(),
        });
    }
    Ok(path)
}

fn create_parent_directory(path: &str) -> Result<(), DbError> {
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| DbError::Connect {
            message: format!("could not create directory {}: {error}", parent.display()),
        })?;
    }
    Ok(())
}

/// Serializes the transactions that check a rule no constraint can express (such as "one OS
/// identifier per organization") before writing: inside a transaction, `lock_rule(key)` makes
/// every other transaction that locks the same key wait until this one ends.
///
/// On PostgreSQL this is a transaction-scoped advisory lock (read committed would otherwise let
/// two transactions both see "no conflict" and both write). On SQLite write transactions
/// already hold the database's single write lock from their start (`BEGIN IMMEDIATE`), so there
/// is nothing more to do.
pub(crate) trait RuleLock {
    /// Takes the lock of `key` until the end of the current transaction.
    async fn lock_rule(&mut self, key: &str) -> Result<(), DbError>;
}

impl RuleLock for AsyncPgConnection {
    async fn lock_rule(&mut self, key: &str) -> Result<(), DbError> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(key)
            .execute(self)
            .await?;
        Ok(())
    }
}

impl RuleLock for SqliteAsyncConnection {
    async fn lock_rule(&mut self, _key: &str) -> Result<(), DbError> {
        Ok(())
    }
}

/// The database's clock: leases are written and compared with it, never with an engine's, so
/// servers whose clocks disagree still agree on whose lease is live.
pub(crate) trait DatabaseClock {
    /// The database server's current time in UTC (microseconds on PostgreSQL, milliseconds on
    /// SQLite, whose clock is the machine's own: an SQLite file is shared only by the
    /// processes of one machine).
    async fn database_now(&mut self) -> Result<chrono::NaiveDateTime, DbError>;
}

#[derive(diesel::QueryableByName)]
struct NowRow {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    now: chrono::NaiveDateTime,
}

impl DatabaseClock for AsyncPgConnection {
    async fn database_now(&mut self) -> Result<chrono::NaiveDateTime, DbError> {
        use diesel_async::RunQueryDsl;
        let row: NowRow = diesel::sql_query(
            "SELECT CAST(timezone('UTC', clock_timestamp()) AS TIMESTAMP) AS now",
        )
        .get_result(self)
        .await?;
        Ok(row.now)
    }
}

impl DatabaseClock for SqliteAsyncConnection {
    async fn database_now(&mut self) -> Result<chrono::NaiveDateTime, DbError> {
        use diesel_async::RunQueryDsl;
        let row: NowRow = diesel::sql_query("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now")
            .get_result(self)
            .await?;
        Ok(row.now)
    }
}

/// Runs `$body` with `$connection` bound to a pooled connection of whichever backend `$db` uses;
/// the body is compiled once per backend. Evaluates to `Result<T, DbError>`.
macro_rules! with_conn {
    ($db:expr, |$connection:ident| $body:expr) => {{
        match &*$db.pool {
            $crate::pool::Pool::Postgres(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = $crate::pool::acquire!(pool, $db.acquire_timeout)?;
                    let $connection: &mut diesel_async::AsyncPgConnection = &mut pooled;
                    $body
                }
                .await;
                result
            }
            $crate::pool::Pool::Sqlite(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = $crate::pool::acquire!(pool, $db.acquire_timeout)?;
                    let $connection: &mut $crate::pool::SqliteAsyncConnection = &mut pooled;
                    $body
                }
                .await;
                result
            }
        }
    }};
}

/// Like `with_conn!`, inside a transaction that commits when the body returns `Ok` and rolls
/// back otherwise. On SQLite the transaction is `BEGIN IMMEDIATE`: it takes the write lock at
/// once (waiting up to the busy timeout), so two writers never deadlock upgrading read locks.
macro_rules! with_transaction {
    ($db:expr, |$connection:ident| $body:expr) => {{
        match &*$db.pool {
            $crate::pool::Pool::Postgres(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = $crate::pool::acquire!(pool, $db.acquire_timeout)?;
                    diesel_async::AsyncConnection::transaction::<_, $crate::error::DbError, _>(
                        &mut *pooled,
                        async |$connection| $body,
                    )
                    .await
                }
                .await;
                result
            }
            $crate::pool::Pool::Sqlite(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = $crate::pool::acquire!(pool, $db.acquire_timeout)?;
                    pooled
                        .immediate_transaction::<_, $crate::error::DbError, _>(
                            async |$connection| $body,
                        )
                        .await
                }
                .await;
                result
            }
        }
    }};
}

/// A connection of `$pool`, waiting at most `$timeout` for one to be free. Evaluates to
/// `Result<pooled connection, DbError>`.
macro_rules! acquire {
    ($pool:expr, $timeout:expr) => {{
        let timeout: std::time::Duration = $timeout;
        match tokio::time::timeout(timeout, $pool.get()).await {
            Ok(pooled) => pooled.map_err($crate::error::DbError::connect),
            Err(_) => Err($crate::error::DbError::connect(format!(
                "no database connection became free within {} s (the pool is saturated)",
                timeout.as_secs_f64()
            ))),
        }
    }};
}

pub(crate) use {acquire, with_conn, with_transaction};

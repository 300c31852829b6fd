//! The [`Db`] handle: a connection pool of either backend, and the macros that run one query
//! body on whichever backend is in use.

use std::path::Path;
use std::sync::Arc;

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
}

impl DbConfig {
    /// A configuration for `url` with a pool of 10 connections that applies migrations.
    pub fn new(url: impl Into<String>, secret_key: SecretKey) -> Self {
        Self {
            url: url.into(),
            pool_size: 10,
            secret_key,
            run_migrations: true,
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
    pub(crate) cipher: SecretCipher,
    backend: Backend,
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
        let pool_size = config.pool_size.max(1);
        let pool = match backend {
            Backend::Postgres => {
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new(config.url.as_str());
                let pool = DeadPool::builder(manager)
                    .max_size(pool_size)
                    .build()
                    .map_err(DbError::connect)?;
                // Fail now, with a clear error, rather than at the first request.
                drop(pool.get().await.map_err(DbError::connect)?);
                Pool::Postgres(pool)
            }
            Backend::Sqlite => {
                let path = sqlite_path(&config.url)?;
                let mut manager_config = ManagerConfig::<SqliteAsyncConnection>::default();
                manager_config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    Box::pin(async move { open_sqlite(&url).await })
                });
                let manager =
                    AsyncDieselConnectionManager::<SqliteAsyncConnection>::new_with_config(
                        path,
                        manager_config,
                    );
                let pool = DeadPool::builder(manager)
                    .max_size(pool_size)
                    .build()
                    .map_err(DbError::connect)?;
                drop(pool.get().await.map_err(DbError::connect)?);
                Pool::Sqlite(pool)
            }
        };
        Ok(Db {
            pool: Arc::new(pool),
            cipher: SecretCipher::new(&config.secret_key),
            backend,
        })
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

/// Runs `$body` with `$connection` bound to a pooled connection of whichever backend `$db` uses;
/// the body is compiled once per backend. Evaluates to `Result<T, DbError>`.
macro_rules! with_conn {
    ($db:expr, |$connection:ident| $body:expr) => {{
        match &*$db.pool {
            $crate::pool::Pool::Postgres(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = pool.get().await.map_err($crate::error::DbError::connect)?;
                    let $connection: &mut diesel_async::AsyncPgConnection = &mut pooled;
                    $body
                }
                .await;
                result
            }
            $crate::pool::Pool::Sqlite(pool) => {
                let result: Result<_, $crate::error::DbError> = async {
                    let mut pooled = pool.get().await.map_err($crate::error::DbError::connect)?;
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
                    let mut pooled = pool.get().await.map_err($crate::error::DbError::connect)?;
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
                    let mut pooled = pool.get().await.map_err($crate::error::DbError::connect)?;
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

pub(crate) use {with_conn, with_transaction};

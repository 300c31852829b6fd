//! A fresh, migrated database for each test, on every backend available here.
//!
//! - SQLite: a new file in a temporary directory that is removed with the [`TestDb`].
//! - PostgreSQL: a new schema `test_<random>` in the database of `FLASHFLEET_TEST_POSTGRES_URL`,
//!   selected through `search_path` in the connection URL so every pooled connection uses it,
//!   and dropped with the [`TestDb`]. Schemas left over by crashed runs (older than an hour) are
//!   swept on first use.
//!
//! Where `FLASHFLEET_TEST_POSTGRES_URL` is unset, [`TestDb::all`] returns only SQLite and prints
//! a notice once; where it is set but PostgreSQL cannot be reached, tests fail.

use std::sync::Once;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::{Backend, Db, DbConfig, DbError, SecretKey};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VARIABLE: &str = "FLASHFLEET_TEST_POSTGRES_URL";

/// A database that only one test uses, removed when dropped.
pub struct TestDb {
    db: Db,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(
        // Held for its Drop, which deletes the directory.
        #[expect(dead_code, reason = "kept alive for its Drop")] tempfile::TempDir,
    ),
    Postgres {
        server_url: String,
        schema: String,
    },
}

impl TestDb {
    /// A migrated SQLite database in a fresh temporary file.
    pub async fn sqlite() -> TestDb {
        TestDb::sqlite_with_pool(TEST_POOL_SIZE)
            .await
            .expect("a migrated SQLite test database")
    }

    /// A migrated SQLite database in a fresh temporary file, with `pool_size` pooled
    /// connections (for benchmarks, which size their pool as a server would).
    pub async fn sqlite_with_pool(pool_size: usize) -> Result<TestDb, DbError> {
        let directory = tempfile::tempdir().map_err(DbError::connect)?;
        let url = format!(
            "sqlite://{}",
            directory.path().join("flashfleet-test.db").display()
        );
        let db = Db::connect(&config(&url, pool_size)).await?;
        Ok(TestDb {
            db,
            url,
            cleanup: Cleanup::Sqlite(directory),
        })
    }

    /// A migrated PostgreSQL schema of its own, if `FLASHFLEET_TEST_POSTGRES_URL` is set.
    pub async fn postgres() -> Option<TestDb> {
        let server_url = std::env::var(POSTGRES_URL_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())?;
        Some(
            TestDb::postgres_at(&server_url, TEST_POOL_SIZE)
                .await
                .unwrap_or_else(|error| {
                    panic!("{POSTGRES_URL_VARIABLE} is set but no test schema could be created in it: {error}")
                }),
        )
    }

    /// A migrated schema of its own in the PostgreSQL database at `server_url`, with
    /// `pool_size` pooled connections, dropped with the [`TestDb`] (for benchmarks, which take
    /// the server's URL from their command line).
    pub async fn postgres_at(server_url: &str, pool_size: usize) -> Result<TestDb, DbError> {
        sweep_leftover_schemas(server_url).await;
        let schema = format!("test_{}_{}", unix_seconds(), uuid::Uuid::new_v4().simple());
        let mut connection = AsyncPgConnection::establish(server_url)
            .await
            .map_err(DbError::connect)?;
        connection
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await?;
        let separator = if server_url.contains('?') { '&' } else { '?' };
        let url = format!("{server_url}{separator}options=-c%20search_path%3D{schema}");
        // From here on the schema exists: dropping the value drops it, also when migrating
        // fails.
        let cleanup = Cleanup::Postgres {
            server_url: server_url.to_owned(),
            schema,
        };
        let db = match Db::connect(&config(&url, pool_size)).await {
            Ok(db) => db,
            Err(error) => {
                drop_schema(&cleanup);
                return Err(error);
            }
        };
        Ok(TestDb { db, url, cleanup })
    }

    /// A test database on every backend available: SQLite always, PostgreSQL when
    /// `FLASHFLEET_TEST_POSTGRES_URL` is set (a notice is printed once otherwise).
    pub async fn all() -> Vec<TestDb> {
        let mut databases = vec![TestDb::sqlite().await];
        match TestDb::postgres().await {
            Some(postgres) => databases.push(postgres),
            None => {
                static NOTICE: Once = Once::new();
                NOTICE.call_once(|| {
                    eprintln!(
                        "notice: {POSTGRES_URL_VARIABLE} is not set; the PostgreSQL half of the database tests is skipped"
                    );
                });
            }
        }
        databases
    }

    /// The database handle.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The URL of this database (with the schema selected, for PostgreSQL), for tests that open
    /// a second handle, as a second server would.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reverts every migration and applies them again, checking that each `down.sql` undoes its
    /// `up.sql` (tables created by `up.sql` that `down.sql` forgets make the second `up` fail).
    pub async fn redo_migrations(&self) -> Result<(), crate::DbError> {
        crate::pool::redo_migrations(&self.url, self.backend()).await
    }

    /// A configuration for this database with the same secret key as [`TestDb::db`]'s.
    pub fn config(&self) -> DbConfig {
        config(&self.url, TEST_POOL_SIZE)
    }
}

/// Pooled connections of a test database.
const TEST_POOL_SIZE: usize = 4;

/// Every test database uses one fixed key, so tests can open a second handle on it.
fn config(url: &str, pool_size: usize) -> DbConfig {
    let key = SecretKey::from_base64("dGVzdC1rZXktZm9yLWZsYXNoZmxlZXQtdGVzdHMtMzI=")
        .expect("the test key is valid");
    let mut config = DbConfig::new(url, key);
    config.pool_size = pool_size;
    config
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_schema(&self.cleanup);
    }
}

/// Drops the PostgreSQL schema of `cleanup`, if it is one.
fn drop_schema(cleanup: &Cleanup) {
    if let Cleanup::Postgres { server_url, schema } = cleanup {
        let server_url = server_url.clone();
        let statement = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        // Drop cannot await, and may run inside a runtime: use a short-lived runtime on a
        // thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut connection = AsyncPgConnection::establish(&server_url).await.ok()?;
                connection.batch_execute(&statement).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test schema {schema}; the next run sweeps it");
        }
    }
}

/// Drops `test_<unix seconds>_<random>` schemas created more than an hour ago: left by runs that
/// crashed before dropping theirs. Schemas of runs in progress are younger and stay.
async fn sweep_leftover_schemas(server_url: &str) {
    static SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEEP
        .get_or_init(|| async {
            let Ok(mut connection) = AsyncPgConnection::establish(server_url).await else {
                return;
            };
            let cutoff = unix_seconds().saturating_sub(3600);
            let sweep = format!(
                r#"
                DO $$
                DECLARE leftover record;
                BEGIN
                  FOR leftover IN
                    SELECT nspname FROM pg_namespace
                    WHERE nspname ~ '^test_[0-9]+_[0-9a-f]+$'
                      AND split_part(nspname, '_', 2)::bigint < {cutoff}
                  LOOP
                    EXECUTE format('DROP SCHEMA %I CASCADE', leftover.nspname);
                  END LOOP;
                END $$;
                "#
            );
            if let Err(error) = connection.batch_execute(&sweep).await {
                eprintln!("warning: could not sweep leftover test schemas: {error}");
            }
        })
        .await;
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Faults a test injects into a [`Db`] handle (and its clones), to reach the sequences that
/// crash and race tests need: a heartbeat that comes late, a write that takes its time inside
/// its transaction, a process that dies right after persisting a step, a backend that fails.
/// Set them through [`Db::faults`]; a handle made with [`Db::with_own_faults`] has its own.
#[derive(Debug, Default)]
pub struct Faults {
    renew_delay: std::sync::Mutex<Option<std::time::Duration>>,
    write_delay: std::sync::Mutex<Option<std::time::Duration>>,
    halt_after: std::sync::Mutex<Option<flashfleet_models::UpgradePhase>>,
    halted: tokio::sync::Notify,
    halted_once: std::sync::atomic::AtomicBool,
    fail_connections: std::sync::atomic::AtomicBool,
}

impl Faults {
    /// `renew_leases` sleeps `delay` before it renews (a heartbeat that comes late).
    pub fn delay_renewals(&self, delay: Option<std::time::Duration>) {
        *lock(&self.renew_delay) = delay;
    }

    /// Every guarded write of an operation sleeps `delay` inside its transaction, after its
    /// update and before its commit (a slow disk, a long lock wait).
    pub fn delay_writes(&self, delay: Option<std::time::Duration>) {
        *lock(&self.write_delay) = delay;
    }

    /// The first write that leaves an operation in `phase` (a claim for `Queued`, progress, the
    /// flash, the completion for `Done`) commits, then never returns: the process "dies" right
    /// after persisting that step. [`Faults::halted`] tells when.
    pub fn halt_after(&self, phase: Option<flashfleet_models::UpgradePhase>) {
        *lock(&self.halt_after) = phase;
    }

    /// Waits until a write halted (see [`Faults::halt_after`]).
    pub async fn halted(&self) {
        loop {
            let notified = self.halted.notified();
            if self.halted_once.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// `connections` fails with a backend error (a database that answers some queries only).
    pub fn fail_connections(&self, fail: bool) {
        self.fail_connections
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn renew_delay(&self) -> Option<std::time::Duration> {
        *lock(&self.renew_delay)
    }

    pub(crate) fn write_delay(&self) -> Option<std::time::Duration> {
        *lock(&self.write_delay)
    }

    pub(crate) fn connections_fail(&self) -> bool {
        self.fail_connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Called after a write left an operation in `phase`: halts forever if it is the phase to
    /// halt after.
    pub(crate) async fn after_write(&self, phase: flashfleet_models::UpgradePhase) {
        if *lock(&self.halt_after) != Some(phase)
            || self
                .halted_once
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.halted.notify_waiters();
        std::future::pending::<()>().await;
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! flashfleet's persistence: the diesel implementation of the repository traits of
//! `flashfleet-models`, on **SQLite** (the embedded default) and **PostgreSQL** (production,
//! where several servers share one database), from one code path.
//!
//! [`Db`] is a handle over a connection pool of either backend, chosen at run time by the URL
//! (`sqlite://path/to/file.db` or `postgres://...`). Every query body is written once and
//! compiled for both backends by the private `with_conn!`/`with_transaction!` macros.
//! Migrations (`migrations/postgres`, `migrations/sqlite` at the workspace root) are embedded
//! and applied by [`Db::connect`].
//!
//! Invariants:
//! - only this crate names diesel: the rest of flashfleet sees the repository traits and
//!   [`DbError`];
//! - uniqueness rules (one firmware record per device, one unfinished operation per device,
//!   unique build version per category, unique image type per build, ...) are database
//!   constraints, so they hold under concurrency on both backends;
//! - device secrets are stored encrypted with the configured [`SecretKey`]; API token secrets
//!   are never stored, only their hashes.
//!
//! With the `testing` feature, [`testing::TestDb`] gives each test a fresh database on each
//! available backend.

mod crypto;
mod device;
mod directory;
mod error;
mod firmware;
mod ordering;
mod pool;
mod rows;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod upgrade;

pub use crate::crypto::SecretKey;
pub use crate::error::DbError;
pub use crate::pool::{Backend, DEFAULT_ACQUIRE_TIMEOUT, Db, DbConfig, migrate};

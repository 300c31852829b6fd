//! Integration tests of `flashfleet-db`: every repository trait of `flashfleet-models`, exercised
//! through the public [`Db`](flashfleet_db::Db) handle on every backend available here (SQLite
//! always, PostgreSQL when `FLASHFLEET_TEST_POSTGRES_URL` is set), so both backends pass the very
//! same assertions.
//!
//! One module per feature; fixtures live in `support`.

mod concurrency;
mod devices;
mod directory;
mod fencing;
mod firmware;
mod model;
mod ordering;
mod queue;
mod schema;
mod support;
mod upgrades;

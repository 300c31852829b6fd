//! Integration tests of the API: the real actix-web app on a fresh database per test, on SQLite
//! and (when `FLASHFLEET_TEST_POSTGRES_URL` is set) PostgreSQL.

#![expect(clippy::unwrap_used, reason = "tests")]

mod builds;
mod categories;
mod connections;
mod credentials;
mod devices;
mod errors;
mod images;
mod live;
mod mass_upgrades;
mod openapi;
mod operations;
mod organizations;
mod support;
mod tenancy;
mod users;

//! Tests of the `flashfleet` binary: each runs the built binary against a temporary data
//! directory (and, for database commands, against every test database backend).

#![expect(clippy::unwrap_used, reason = "tests")]

mod config;
mod devices;
mod image;
mod migrate;
mod support;
mod users;

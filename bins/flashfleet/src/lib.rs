//! The reference upgrade server of the flashfleet crates and its command line (the binary
//! `flashfleet` of this package).
//!
//! It composes every crate: [`config`] reads the configuration (TOML file, then `FLASHFLEET_*`
//! environment variables) and converts it into each crate's own configuration, [`logging`]
//! sets up tracing, and [`commands`] holds one module per subcommand. Every subcommand works on
//! a fresh machine with the defaults: data under `./flashfleet-data/` (SQLite database,
//! firmware files, secret key).
//!
//! Invariants:
//! - configuration is a value built once and passed down: no globals;
//! - standard output carries only what a command produces (a token, a table, JSON, a report),
//!   so it can be piped; logs and progress go to standard error;
//! - secrets (the secret key, database and S3 passwords, device passwords and keys, token
//!   secrets other than the one `token create` hands out) never appear in output, logs or
//!   `Debug`.

pub mod commands;
pub mod config;
pub mod database;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod secret_key;
pub mod stack;

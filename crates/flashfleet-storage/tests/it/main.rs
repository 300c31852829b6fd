//! Integration tests of flashfleet-storage: one test binary, one module per backend, and the
//! checks every backend must pass in `contract`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod config;
mod contract;
mod local;
mod memory;
mod s3;
mod support;

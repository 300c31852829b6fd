//! The sample application, flashfleet's counterpart of upstream's `SAMPLE_APP`: an
//! integrator's own server composed from the library crates alone (not the `flashfleet`
//! binary), with its own upgrader, its own storage backend and its own fields in every
//! object's `details`, running the same end-to-end scenario as the binary
//! (`tests/server/scenario.rs`).
//!
//! - `app.rs` composes the server: database, firmware storage on the example's
//!   [`TenantStore`](custom_storage::TenantStore), the engine with the sample's upgrader, and
//!   an actix-web server mounting `flashfleet_api::configure`;
//! - `upgrader.rs` is the sample's upgrader: OpenWrt's, behind a pre-flight check of its own;
//! - `end_to_end.rs` runs the scenario against it on every database backend.

#![expect(clippy::unwrap_used, reason = "tests")]

mod app;
#[path = "../server/client.rs"]
mod client;
#[path = "../../examples/custom_storage.rs"]
#[expect(
    dead_code,
    reason = "the example's `main` and helpers; the sample uses its storage backend"
)]
mod custom_storage;
mod end_to_end;
#[path = "../server/scenario.rs"]
mod scenario;
mod upgrader;

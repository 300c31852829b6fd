//! flashfleet: firmware upgrades for fleets of OpenWrt routers, and through custom upgraders any
//! embedded Linux device, over SSH.
//!
//! This umbrella crate re-exports the library crates under short names, so an embedding
//! controller can depend on one crate. Each module is the crate of one concern; see
//! `ARCHITECTURE.md` for how they fit together.
//!
//! Nothing is defined here: every item lives in one of the re-exported crates.

pub use flashfleet_api as api;
pub use flashfleet_boards as boards;
pub use flashfleet_db as db;
pub use flashfleet_engine as engine;
pub use flashfleet_models as models;
pub use flashfleet_storage as storage;
pub use flashfleet_upgrader as upgrader;

/// The code blocks of README.md, compiled as doctests so the README cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

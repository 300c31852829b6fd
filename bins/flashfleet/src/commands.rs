//! The subcommands, one module each.

pub mod createsuperuser;
pub mod devices;
pub mod image;
pub mod image_types;
pub mod migrate;
pub mod serve;
pub mod show_config;
pub mod token;

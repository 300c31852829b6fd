//! Integration tests of flashfleet-devsim: simulated devices driven over real SSH by the ssh2
//! crate (libssh2), the client the OpenWrt upgrader uses.

mod auth;
mod commands;
mod flash;
mod fleet;
mod support;
mod sysupgrade;
mod uploads;

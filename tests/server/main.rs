//! Tests of the `flashfleet` binary as operators run it: `serve` as a process, driven through
//! its REST API and its command line, against simulated OpenWrt devices on loopback.

#![expect(clippy::unwrap_used, reason = "tests")]

mod client;
mod dashboard;
mod end_to_end;
mod instances;
mod restart;
mod scenario;
mod support;
mod webdriver;

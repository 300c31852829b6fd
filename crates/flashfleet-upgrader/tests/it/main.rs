//! Integration tests of the OpenWrt upgrader over real SSH: simulated devices (devsim) and a
//! real OpenSSH server.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod devsim;
mod openssh;
mod support;

//! Integration tests of the OpenWrt upgrader over real SSH: simulated devices (devsim) and a
//! real OpenSSH server.

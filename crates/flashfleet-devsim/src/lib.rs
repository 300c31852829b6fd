//! Simulated OpenWrt devices over real SSH, for the tests, benchmarks and demos of flashfleet.
//!
//! [`Fleet::start`] runs many devices in the current tokio runtime, each an in-process SSH
//! server (russh, Ed25519 only) on its own loopback address or port, with its own state: board
//! name, model, release, UUID, boot id, free memory, checksum file, services, compat version. A
//! device answers the commands the OpenWrt upgrader sends (`uci get openwisp.http.uuid`,
//! `test -f`, `cat`, the memory commands, `/etc/init.d/<service> stop`, `ubus call system
//! board`, `cat /proc/sys/kernel/random/boot_id`, busybox `ps w`, ...), accepts uploads into
//! `/tmp` over SCP (`scp -t`) or `cat >`, checks images in `sysupgrade --test` by their fwtool
//! metadata exactly as OpenWrt does, and on a real `sysupgrade` prints "Commencing upgrade.
//! Closing all shell sessions." (from then on `ps` lists the `sysupgrade` process), cuts every
//! session without an exit status, refuses connections for [`RebootTiming::down_for`] and then
//! answers with the release of the image and a new boot id. [`Faults`] inject what goes wrong
//! in the field: dropped, slow and trickling uploads, devices that never come back or come back
//! with the old release, low memory, identity mismatches, and a hanging `sysupgrade`.
//! [`SimDevice`] lets tests inspect each device (release, boot id, flash count, whether a
//! `sysupgrade` runs, files, uploads, commands received, host key) and change its faults.
//!
//! ```no_run
//! # async fn example() -> Result<(), flashfleet_devsim::DevsimError> {
//! use flashfleet_devsim::{DeviceSpec, Fleet, FleetConfig};
//!
//! let device = DeviceSpec::openwrt(
//!     uuid::Uuid::new_v4(),
//!     "tplink,archer-c7-v2",
//!     "TP-Link Archer C7 v2",
//! );
//! let fleet = Fleet::start(FleetConfig::on_ephemeral_ports(vec![device])).await?;
//! let address = fleet.device(0).address();
//! let credentials = fleet.credentials();
//! // ... connect with ssh2 to `address` as `credentials.username` ...
//! fleet.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Reading the flash command's output with libssh2 (the `ssh2` crate): `sysupgrade` writes its
//! messages to stderr, and once the device cuts the connection libssh2 no longer hands out what
//! it buffered for the other stream, so merge stderr into stdout first
//! (`channel.handle_extended_data(ssh2::ExtendedData::Merge)`). The read then ends with a
//! transport error, and `exit_status()` reports 0 because none was sent: decide by reconnecting
//! and reading the release, as the upgrader must on real devices.
//!
//! Invariants:
//! - The simulator never holds an upload whole in memory: bytes stream through SHA-256 and the
//!   fwtool inspector, only a summary (and the content of small text files) is kept, so it can
//!   run in the same process as the upgrader whose memory use is being measured.
//! - A device that flashes never sends an exit status for the flash command; every other
//!   command gets one.
//! - Image checks are `flashfleet_boards::check_metadata`, the function that decides as
//!   OpenWrt's `fwtool_check_image`; the simulator has no second opinion.
//! - Nothing here knows about the database, the engine or HTTP; the only flashfleet crate used
//!   is `flashfleet-boards`.
//! - No global state: every fleet is independent, so tests run in parallel.

mod commands;
mod config;
mod device;
mod error;
mod fleet;
mod session;
mod shell;
mod sysupgrade;
mod upload;

pub use crate::config::{
    Addressing, ClientCredentials, DeviceSpec, Faults, FleetConfig, RebootTiming, Release,
    UPSTREAM_SERVICES,
};
pub use crate::device::{DevicePhase, SimDevice, UploadedFile};
pub use crate::error::DevsimError;
pub use crate::fleet::Fleet;

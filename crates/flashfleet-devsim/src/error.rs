//! The error type of this crate.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong while starting a simulated fleet.
///
/// Once a fleet runs, nothing a client does is an error of the simulator: bad commands get the
/// exit codes and messages an OpenWrt device would give, and broken connections end their
/// session only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevsimError {
    /// A device could not listen on its address.
    #[error("could not listen on {address}")]
    Bind {
        /// The address the device should listen on.
        address: SocketAddr,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// The addressing scheme cannot give every device an address.
    #[error("cannot address device #{index}: {problem}")]
    Addressing {
        /// Zero-based index of the device.
        index: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// The client public key of the [`ClientCredentials`](crate::ClientCredentials) could not be
    /// parsed.
    #[error("the client public key is not a valid OpenSSH public key")]
    InvalidClientKey {
        /// What the key parser reported.
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    /// A host key could not be generated.
    #[error("could not generate an Ed25519 host key")]
    KeyGeneration {
        /// What the key generator reported.
        #[source]
        source: russh::keys::ssh_key::Error,
    },
}

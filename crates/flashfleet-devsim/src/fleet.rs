//! Starting, running and stopping a fleet: one listener and one task per device, the reboot
//! cycle of a flash (cut sessions, refuse connections, come back with the new release).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Addressing, ClientCredentials, FleetConfig, RebootTiming};
use crate::device::{DeviceShared, DeviceState, SimDevice};
use crate::error::DevsimError;
use crate::session::{Authorized, Connection, TRICKLE_WINDOW};

/// The identification string devices send, as OpenWrt's dropbear does.
const SERVER_ID: &str = "SSH-2.0-dropbear_2022.82";

/// How long to wait between attempts to listen again after a reboot, when the port is still
/// taken.
const REBIND_RETRY: Duration = Duration::from_millis(20);

/// A running fleet of simulated devices. Dropping it stops every device, as
/// [`Fleet::shutdown`] does, without waiting.
#[derive(Debug)]
pub struct Fleet {
    devices: Vec<SimDevice>,
    credentials: ClientCredentials,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts every device of `config`, each listening on its own address; returns once all
    /// accept connections.
    pub async fn start(config: FleetConfig) -> Result<Fleet, DevsimError> {
        let public_key = PublicKey::from_openssh(&config.credentials.public_key_openssh)
            .map_err(|source| DevsimError::InvalidClientKey { source })?;
        let authorized = Arc::new(Authorized {
            username: config.credentials.username.clone(),
            password: config.credentials.password.clone(),
            public_key,
        });
        let cancel = CancellationToken::new();
        let mut fleet = Fleet {
            devices: Vec::with_capacity(config.devices.len()),
            credentials: config.credentials,
            cancel,
            tasks: JoinSet::new(),
        };
        for (index, spec) in config.devices.into_iter().enumerate() {
            let address = device_address(config.addressing, index)?;
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| DevsimError::Bind { address, source })?;
            let address = listener
                .local_addr()
                .map_err(|source| DevsimError::Bind { address, source })?;
            let state = DeviceState::new(spec, new_host_key()?);
            let shared = Arc::new(DeviceShared::new(address, state));
            fleet.tasks.spawn(run_device(
                Arc::clone(&shared),
                Arc::clone(&authorized),
                listener,
                config.reboot,
                fleet.cancel.clone(),
            ));
            fleet.devices.push(SimDevice { shared });
        }
        Ok(fleet)
    }

    /// The devices, in the order of [`FleetConfig::devices`].
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// Device `index`.
    ///
    /// # Panics
    ///
    /// When there is no such device.
    pub fn device(&self, index: usize) -> &SimDevice {
        &self.devices[index]
    }

    /// The credentials every device accepts.
    pub fn credentials(&self) -> &ClientCredentials {
        &self.credentials
    }

    /// Stops every device: listeners are closed and sessions cut.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn device_address(addressing: Addressing, index: usize) -> Result<SocketAddr, DevsimError> {
    let offset = u32::try_from(index).map_err(|_| DevsimError::Addressing {
        index,
        problem: "too many devices",
    })?;
    match addressing {
        Addressing::LoopbackRange { first, port } => {
            let ip = u32::from(first)
                .checked_add(offset)
                .ok_or(DevsimError::Addressing {
                    index,
                    problem: "the address range overflows",
                })?;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        Addressing::Ports { ip, base_port: 0 } => Ok(SocketAddr::new(ip, 0)),
        Addressing::Ports { ip, base_port } => {
            let port = u16::try_from(u32::from(base_port) + offset).map_err(|_| {
                DevsimError::Addressing {
                    index,
                    problem: "the port range goes past 65535",
                }
            })?;
            Ok(SocketAddr::new(ip, port))
        }
    }
}

pub(crate) fn new_host_key() -> Result<PrivateKey, DevsimError> {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|source| DevsimError::KeyGeneration { source })
}

/// The server configurations of one boot: the usual one, and the one for a trickling link.
struct ServerConfigs {
    normal: Arc<Config>,
    trickle: Arc<Config>,
}

impl ServerConfigs {
    fn new(host_key: PrivateKey) -> ServerConfigs {
        ServerConfigs {
            normal: server_config(host_key.clone(), Config::default().window_size),
            trickle: server_config(host_key, TRICKLE_WINDOW),
        }
    }

    /// The configuration for a connection opened now.
    fn for_connection(&self, device: &DeviceShared) -> &Arc<Config> {
        if device.lock().faults.upload_chunk_delay.is_some() {
            &self.trickle
        } else {
            &self.normal
        }
    }
}

fn server_config(host_key: PrivateKey, window_size: u32) -> Arc<Config> {
    Arc::new(Config {
        window_size,
        server_id: SshId::Standard(Cow::Borrowed(SERVER_ID)),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(10),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        inactivity_timeout: Some(Duration::from_secs(3600)),
        nodelay: true,
        ..Config::default()
    })
}

/// The life of one device: accept connections until a flash, cut the sessions, stay down, come
/// back; until the fleet is cancelled.
async fn run_device(
    device: Arc<DeviceShared>,
    authorized: Arc<Authorized>,
    first_listener: TcpListener,
    timing: RebootTiming,
    cancel: CancellationToken,
) {
    let mut listener = Some(first_listener);
    loop {
        let current = match listener.take() {
            Some(listener) => listener,
            None => match rebind(device.address, &cancel).await {
                Some(listener) => listener,
                None => break,
            },
        };
        let configs = ServerConfigs::new(device.lock().host_key().clone());
        if !serve_until_flash(&device, &authorized, &current, &configs, timing, &cancel).await {
            break;
        }
        // The flash: nothing listens any more, every session dies without an exit status.
        drop(current);
        device.cut_all_connections();
        let never_comes_back = {
            let mut state = device.lock();
            state.go_down();
            state.faults.never_comes_back
        };
        if never_comes_back {
            cancel.cancelled().await;
            break;
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(timing.down_for) => {}
        }
        let key_changes = device.lock().flash_resets_config();
        let new_key = if key_changes {
            new_host_key().ok()
        } else {
            None
        };
        device.lock().come_back(|| new_key);
    }
    device.cut_all_connections();
}

/// Accepts connections until a flash has cut the sessions (`true`) or the fleet stops
/// (`false`).
async fn serve_until_flash(
    device: &Arc<DeviceShared>,
    authorized: &Arc<Authorized>,
    listener: &TcpListener,
    configs: &ServerConfigs,
    timing: RebootTiming,
    cancel: &CancellationToken,
) -> bool {
    let mut cut_at = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = device.flash_started.notified(), if cut_at.is_none() => {
                cut_at = Some(tokio::time::Instant::now() + timing.close_after);
            }
            () = sleep_until(cut_at) => return true,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    start_session(device, authorized, configs.for_connection(device), stream);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn start_session(
    device: &Arc<DeviceShared>,
    authorized: &Arc<Authorized>,
    config: &Arc<Config>,
    stream: TcpStream,
) {
    // A duplicate of the socket lets the device cut the connection from outside the session
    // task: russh runs each session on its own task, which aborting ours would not end.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(duplicate) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let connection_id = device.register_connection(duplicate);
    let handler = Connection::new(Arc::clone(device), Arc::clone(authorized), connection_id);
    let config = Arc::clone(config);
    tokio::spawn(async move {
        if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
            let _ = session.await;
        }
    });
}

/// Listens on `address` again after a reboot, retrying while the port is still held.
async fn rebind(address: SocketAddr, cancel: &CancellationToken) -> Option<TcpListener> {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Some(listener),
            Err(error) => {
                tracing::debug!(%address, %error, "listening again after the reboot failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(REBIND_RETRY) => {}
                }
            }
        }
    }
}

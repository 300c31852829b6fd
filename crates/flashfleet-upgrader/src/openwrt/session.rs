//! One SSH session with a device, on libssh2 (`ssh2`), driven from async code.
//!
//! libssh2 is blocking: every call runs on tokio's blocking pool, bounded twice — by libssh2's
//! own timeout (per call) and by an async timeout around the blocking task (for an upload, its
//! total deadline). When the async timeout fires, the TCP connection is shut down from the
//! outside, which makes the blocked libssh2 call return, so no thread is left waiting forever
//! on a hung device.
//!
//! The same happens when the async side is dropped (the engine drops an upgrade future on its
//! task timeout or when it stops): a drop guard ([`ShutdownOnDrop`], [`ConnectAbort`]) shuts the
//! connection down, so the blocking thread returns at once and lets go of what it holds — the
//! image stream of an upload, and with it the engine's upload permit.
//!
//! Exit statuses: libssh2 answers 0 when the server never sent one (a session killed by
//! `sysupgrade`). A command whose connection broke before the channel closed cleanly is
//! reported with `exit_status: None`, never as 0.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flashfleet_models::credentials::CredentialsSecret;
use tokio::io::AsyncRead;

use crate::context::{ConnectionTarget, HostKey};

/// At most this much of a command's stdout (and as much of its stderr) is kept; the rest is
/// read and dropped, so a chatty command cannot grow memory.
const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Buffer of the upload loop.
const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;
/// How long the async side waits beyond a blocking call's own timeout before it shuts the
/// connection down.
const GRACE: Duration = Duration::from_secs(2);

/// Timeouts of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// TCP connect, per address.
    pub(crate) connect: Duration,
    /// SSH handshake and authentication; default for commands.
    pub(crate) command: Duration,
}

/// Which host key the device must present.
#[derive(Clone, Debug)]
pub(crate) enum HostKeyPolicy {
    /// Exactly this one (recorded earlier).
    Expect(HostKey),
    /// Any: first contact, or after a flash that did not keep the configuration. The caller
    /// records the key presented.
    AcceptAny,
}

/// What a command answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandOutput {
    /// Stdout, then stderr on its own line, each trimmed (as openwisp-controller returns it).
    pub(crate) output: String,
    /// The exit status; `None` when the connection ended before the channel closed cleanly
    /// (the command was killed with its session, or the device went away).
    pub(crate) exit_status: Option<i32>,
}

/// What went wrong with a session. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// No address to try.
    #[error("the device has no address to connect to")]
    NoAddress,
    /// TCP connection or name resolution failed.
    #[error("could not connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    /// The SSH handshake failed.
    #[error("SSH handshake with {address} failed: {source}")]
    Handshake {
        address: String,
        #[source]
        source: ssh2::Error,
    },
    /// The device presented another host key than the recorded one.
    #[error(
        "{address} presented the SSH host key {presented}, but {expected} was recorded for this device"
    )]
    HostKeyChanged {
        address: String,
        presented: HostKey,
        expected: HostKey,
    },
    /// The credentials were refused.
    #[error("authentication as {username} on {address} failed: {message}")]
    Authentication {
        address: String,
        username: String,
        message: String,
    },
    /// Every address failed.
    #[error("{}", join_errors(.0))]
    AllAddresses(Vec<SessionError>),
    /// A command or transfer did not finish in time; the connection was closed.
    #[error("`{command}` did not finish within {} s", .timeout.as_secs_f64())]
    Timeout { command: String, timeout: Duration },
    /// An upload did not finish within its total deadline; the connection was shut down.
    #[error(
        "the upload to {remote_path} did not finish within its deadline of {} s: {sent} of \
         {size} bytes sent; the connection was closed",
        .deadline.as_secs_f64()
    )]
    UploadDeadline {
        remote_path: String,
        sent: u64,
        size: u64,
        deadline: Duration,
    },
    /// The session broke during a command or transfer.
    #[error("SSH error during `{command}`: {message}")]
    Transport { command: String, message: String },
    /// The image stream failed or ended early.
    #[error("could not read the image: {0}")]
    Image(#[source] io::Error),
    /// The blocking task panicked or was cancelled.
    #[error("the SSH worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl SessionError {
    /// Whether this is a host key refusal (never retried, never another address).
    pub(crate) fn host_key_changed(&self) -> Option<&SessionError> {
        match self {
            SessionError::HostKeyChanged { .. } => Some(self),
            SessionError::AllAddresses(errors) => errors.iter().find_map(Self::host_key_changed),
            _ => None,
        }
    }
}

fn join_errors(errors: &[SessionError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An authenticated SSH session with a device, usable from async code. Cloning shares it.
#[derive(Clone)]
pub(crate) struct DeviceSession {
    inner: Arc<BlockingSession>,
}

struct BlockingSession {
    session: ssh2::Session,
    /// A handle on the session's socket, to shut the connection down from another thread.
    socket: TcpStream,
    address: String,
    host_key: HostKey,
}

impl DeviceSession {
    /// Connects to the first address of `target` that answers, checks the host key against
    /// `policy` (before authenticating, so no credential reaches an impostor) and
    /// authenticates.
    pub(crate) async fn connect(
        target: &ConnectionTarget,
        policy: &HostKeyPolicy,
        timeouts: Timeouts,
    ) -> Result<DeviceSession, SessionError> {
        let target = target.clone();
        let policy = policy.clone();
        // Each address costs at most its connect timeout plus the handshake and authentication
        // timeouts; name resolution is bounded by the system resolver.
        let per_address = timeouts.connect + timeouts.command * 2;
        let bound =
            per_address * u32::try_from(target.addresses.len().max(1)).unwrap_or(1) + GRACE * 2;
        let abort = Arc::new(ConnectAbort::default());
        // Armed until the blocking task answered: a timeout, or this future dropped, abandons
        // the connection under way.
        let guard = AbandonOnDrop(Some(Arc::clone(&abort)));
        let task = tokio::task::spawn_blocking(move || {
            let result = connect_blocking(&target, &policy, timeouts, &abort);
            abort.finished();
            result
        });
        let result = match tokio::time::timeout(bound, task).await {
            Ok(Ok(result)) => result.map(|inner| DeviceSession {
                inner: Arc::new(inner),
            }),
            Ok(Err(join_error)) => Err(SessionError::Worker(join_error.to_string())),
            Err(_) => {
                return Err(SessionError::Timeout {
                    command: "connect".to_owned(),
                    timeout: bound,
                });
            }
        };
        guard.disarm();
        result
    }

    /// The address this session is connected to.
    pub(crate) fn address(&self) -> &str {
        &self.inner.address
    }

    /// The host key the device presented.
    pub(crate) fn host_key(&self) -> &HostKey {
        &self.inner.host_key
    }

    /// Runs `command`, giving it at most `timeout`. On timeout the connection is shut down
    /// (the session is unusable afterwards).
    pub(crate) async fn exec(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, SessionError> {
        let inner = Arc::clone(&self.inner);
        let owned_command = command.to_owned();
        // Armed until the blocking call answered: if this future is dropped, or libssh2 does
        // not honour its own timeout (a hung read), the connection is cut so the blocked call
        // returns and its thread goes back to the pool.
        let guard = ShutdownOnDrop(Some(Arc::clone(&self.inner)));
        let task = tokio::task::spawn_blocking(move || inner.exec(&owned_command, timeout));
        let result = match tokio::time::timeout(timeout + GRACE, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(SessionError::Worker(join_error.to_string())),
            Err(_) => {
                return Err(SessionError::Timeout {
                    command: command.to_owned(),
                    timeout,
                });
            }
        };
        guard.disarm();
        result
    }

    /// Uploads `size` bytes of `image` to `remote_path` with SCP (`scp -t`, as OpenWrt's
    /// dropbear offers no SFTP), streaming: at most one buffer of the image is in memory. The
    /// transfer fails when one step makes no progress for `stall_timeout`, and when the whole
    /// upload takes longer than `deadline` (a trickling link that keeps moving): then the
    /// connection is shut down, which ends the blocking transfer at once, and the image stream
    /// is dropped before this returns (within [`GRACE`]).
    pub(crate) async fn upload(
        &self,
        image: Box<dyn AsyncRead + Send + Unpin>,
        remote_path: &str,
        size: u64,
        stall_timeout: Duration,
        deadline: Duration,
    ) -> Result<(), SessionError> {
        let inner = Arc::clone(&self.inner);
        let sent = Arc::new(AtomicU64::new(0));
        let owned_path = remote_path.to_owned();
        // The bridge blocks on the runtime it is created in, from the blocking thread.
        let reader = tokio_util::io::SyncIoBridge::new(image);
        // Armed until the transfer ended: past the deadline, or if this future is dropped, the
        // connection is cut so the blocking thread stops and drops the image stream.
        let guard = ShutdownOnDrop(Some(Arc::clone(&self.inner)));
        let mut task = tokio::task::spawn_blocking({
            let sent = Arc::clone(&sent);
            move || inner.upload(reader, &owned_path, size, stall_timeout, &sent)
        });
        let result = match tokio::time::timeout(deadline, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(SessionError::Worker(join_error.to_string())),
            Err(_) => {
                drop(guard);
                // The transfer fails at once on the shut socket; wait for it to let go of the
                // image stream.
                let _ = tokio::time::timeout(GRACE, task).await;
                return Err(SessionError::UploadDeadline {
                    remote_path: remote_path.to_owned(),
                    sent: sent.load(Ordering::SeqCst),
                    size,
                    deadline,
                });
            }
        };
        guard.disarm();
        result
    }

    /// Drops the session without a word to the device: the connection is shut down, nothing
    /// more is sent (not even an SSH disconnect message).
    pub(crate) fn abandon(self) {
        self.inner.shutdown();
    }

    /// Closes the session politely (best effort, bounded by a short timeout).
    pub(crate) async fn close(self) {
        let inner = self.inner;
        let task = tokio::task::spawn_blocking(move || {
            inner.session.set_timeout(1000);
            let _ = inner.session.disconnect(None, "upgrade step done", None);
            inner.shutdown();
        });
        let _ = tokio::time::timeout(GRACE, task).await;
    }
}

impl BlockingSession {
    fn shutdown(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    fn exec(&self, command: &str, timeout: Duration) -> Result<CommandOutput, SessionError> {
        let deadline = Instant::now() + timeout;
        let transport = |error: &dyn std::fmt::Display| SessionError::Transport {
            command: command.to_owned(),
            message: error.to_string(),
        };
        let timed_out = || SessionError::Timeout {
            command: command.to_owned(),
            timeout,
        };
        self.session.set_timeout(remaining_ms(deadline));
        let mut channel = self
            .session
            .channel_session()
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        channel
            .exec(command)
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;

        let mut stdout = Vec::new();
        let stdout_end = read_capped(&self.session, &mut channel, &mut stdout, deadline);
        let mut stderr = Vec::new();
        // After a broken stdout, what stderr had already received is still worth reading (a
        // killed `sysupgrade` prints its last words there).
        let stderr_end = match stdout_end {
            StreamEnd::Eof | StreamEnd::Broken => {
                let stderr_end =
                    read_capped(&self.session, &mut channel.stderr(), &mut stderr, deadline);
                match stdout_end {
                    StreamEnd::Eof => stderr_end,
                    _ => StreamEnd::Broken,
                }
            }
            StreamEnd::TimedOut => StreamEnd::TimedOut,
        };
        let exit_status = match stderr_end {
            StreamEnd::Eof => {
                self.session.set_timeout(remaining_ms(deadline));
                match channel.wait_close() {
                    // A process killed by a signal has no exit status (libssh2 answers 0).
                    Ok(()) => match channel.exit_signal() {
                        Ok(signal) if signal.exit_signal.is_some() => None,
                        _ => channel.exit_status().ok(),
                    },
                    Err(error) if is_timeout(&error) => return Err(timed_out()),
                    Err(_) => None,
                }
            }
            StreamEnd::TimedOut => return Err(timed_out()),
            StreamEnd::Broken => None,
        };
        Ok(CommandOutput {
            output: join_output(&stdout, &stderr),
            exit_status,
        })
    }

    fn upload(
        &self,
        mut image: impl Read,
        remote_path: &str,
        size: u64,
        stall_timeout: Duration,
        sent_so_far: &AtomicU64,
    ) -> Result<(), SessionError> {
        let command = format!("scp -t {remote_path}");
        let transport = |error: &dyn std::fmt::Display| SessionError::Transport {
            command: command.clone(),
            message: error.to_string(),
        };
        let timed_out = || SessionError::Timeout {
            command: command.clone(),
            timeout: stall_timeout,
        };
        // libssh2's timeout applies to each blocking call: a transfer that stalls for this long
        // fails, a slow one that keeps moving goes on.
        self.session.set_timeout(duration_ms(stall_timeout));
        let mut channel = self
            .session
            .scp_send(Path::new(remote_path), 0o644, size, None)
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        let mut buffer = vec![0; UPLOAD_BUFFER_BYTES];
        let mut sent = 0_u64;
        while sent < size {
            let wanted = usize::try_from((size - sent).min(UPLOAD_BUFFER_BYTES as u64))
                .unwrap_or(UPLOAD_BUFFER_BYTES);
            let read = match image.read(&mut buffer[..wanted]) {
                Ok(0) => {
                    return Err(SessionError::Image(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the image ended after {sent} of {size} bytes"),
                    )));
                }
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(SessionError::Image(error)),
            };
            channel
                .write_all(&buffer[..read])
                .map_err(|error| io_error(error, &transport, &timed_out))?;
            sent += read as u64;
            sent_so_far.store(sent, Ordering::SeqCst);
        }
        // The SCP source ends a file with a status byte; OpenSSH's (and dropbear's) `scp -t`
        // waits for it and exits 1 without it. libssh2 does not send it.
        channel
            .write_all(&[0])
            .map_err(|error| io_error(error, &transport, &timed_out))?;
        channel
            .send_eof()
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        channel
            .wait_eof()
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        channel
            .close()
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        channel
            .wait_close()
            .map_err(|error| ssh_error(error, &transport, &timed_out))?;
        match channel.exit_status() {
            Ok(0) => Ok(()),
            Ok(status) => Err(transport(&format!("scp exited with status {status}"))),
            Err(error) => Err(transport(&error)),
        }
    }
}

/// Shuts the session's connection down when dropped armed: the async side stopped waiting for
/// a blocking call (dropped, or past its timeout), so the call must return at once.
struct ShutdownOnDrop(Option<Arc<BlockingSession>>);

impl ShutdownOnDrop {
    /// The blocking call answered: nothing to cut.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.shutdown();
        }
    }
}

/// How the async side of a connection attempt abandons it: the blocking side registers each
/// TCP connection it opens, and stops before the next address once abandoned.
#[derive(Default)]
struct ConnectAbort {
    abandoned: AtomicBool,
    /// A handle on the connection being set up.
    socket: Mutex<Option<TcpStream>>,
}

impl ConnectAbort {
    /// Registers the connection being set up; an error when the attempt was abandoned.
    fn watch(&self, stream: &TcpStream) -> io::Result<()> {
        let handle = stream.try_clone()?;
        let mut socket = self
            .socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.is_abandoned() {
            return Err(abandoned());
        }
        *socket = Some(handle);
        Ok(())
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// The attempt ended: forget the handle (the session keeps its own).
    fn finished(&self) {
        self.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    /// Shuts the connection being set up down and stops the attempt.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(socket) = socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn abandoned() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "the connection attempt was abandoned",
    )
}

/// Abandons a connection attempt when dropped armed.
struct AbandonOnDrop(Option<Arc<ConnectAbort>>);

impl AbandonOnDrop {
    /// The attempt answered: nothing to abandon.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take() {
            abort.abandon();
        }
    }
}

enum StreamEnd {
    Eof,
    TimedOut,
    Broken,
}

/// Reads `stream` to its end, keeping at most [`MAX_OUTPUT_BYTES`].
fn read_capped(
    session: &ssh2::Session,
    stream: &mut impl Read,
    kept: &mut Vec<u8>,
    deadline: Instant,
) -> StreamEnd {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return StreamEnd::TimedOut;
        }
        session.set_timeout(remaining_ms(deadline));
        match stream.read(&mut buffer) {
            Ok(0) => return StreamEnd::Eof,
            Ok(read) => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..read.min(room)]);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::TimedOut => return StreamEnd::TimedOut,
            Err(_) => return StreamEnd::Broken,
        }
    }
}

fn join_output(stdout: &[u8], stderr: &[u8]) -> String {
    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr);
    let (stdout, stderr) = (stdout.trim(), stderr.trim());
    match (stdout.is_empty(), stderr.is_empty()) {
        (_, true) => stdout.to_owned(),
        (true, false) => stderr.to_owned(),
        (false, false) => format!("{stdout}\n{stderr}"),
    }
}

fn is_timeout(error: &ssh2::Error) -> bool {
    // LIBSSH2_ERROR_TIMEOUT
    error.code() == ssh2::ErrorCode::Session(-9)
}

fn ssh_error(
    error: ssh2::Error,
    transport: &dyn Fn(&dyn std::fmt::Display) -> SessionError,
    timed_out: &dyn Fn() -> SessionError,
) -> SessionError {
    if is_timeout(&error) {
        timed_out()
    } else {
        transport(&error)
    }
}

fn io_error(
    error: io::Error,
    transport: &dyn Fn(&dyn std::fmt::Display) -> SessionError,
    timed_out: &dyn Fn() -> SessionError,
) -> SessionError {
    if error.kind() == io::ErrorKind::TimedOut {
        timed_out()
    } else {
        transport(&error)
    }
}

fn duration_ms(duration: Duration) -> u32 {
    // 0 would mean "no timeout" to libssh2.
    u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

fn remaining_ms(deadline: Instant) -> u32 {
    duration_ms(deadline.saturating_duration_since(Instant::now()))
}

fn connect_blocking(
    target: &ConnectionTarget,
    policy: &HostKeyPolicy,
    timeouts: Timeouts,
    abort: &ConnectAbort,
) -> Result<BlockingSession, SessionError> {
    if target.addresses.is_empty() {
        return Err(SessionError::NoAddress);
    }
    let mut errors = Vec::new();
    for address in &target.addresses {
        if abort.is_abandoned() {
            errors.push(SessionError::Connect {
                address: display_address(address, target.port),
                source: abandoned(),
            });
            break;
        }
        match connect_address(address, target, policy, timeouts, abort) {
            Ok(session) => return Ok(session),
            // A changed host key is refused outright: another address would be another host.
            Err(error @ SessionError::HostKeyChanged { .. }) => return Err(error),
            Err(error) => errors.push(error),
        }
    }
    if errors.len() == 1 {
        Err(errors.remove(0))
    } else {
        Err(SessionError::AllAddresses(errors))
    }
}

fn connect_address(
    address: &str,
    target: &ConnectionTarget,
    policy: &HostKeyPolicy,
    timeouts: Timeouts,
    abort: &ConnectAbort,
) -> Result<BlockingSession, SessionError> {
    let display = display_address(address, target.port);
    let connect_error = |source: io::Error| SessionError::Connect {
        address: display.clone(),
        source,
    };
    let socket_addresses: Vec<SocketAddr> = (address, target.port)
        .to_socket_addrs()
        .map_err(connect_error)?
        .collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name resolved to nothing");
    let mut connected = None;
    for socket_address in socket_addresses {
        match TcpStream::connect_timeout(&socket_address, timeouts.connect) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(error) => last_error = error,
        }
    }
    let stream = connected.ok_or_else(|| connect_error(last_error))?;
    // From here on an abandoned attempt shuts this connection down, which ends the handshake
    // or authentication under way.
    abort.watch(&stream).map_err(connect_error)?;
    // libssh2 makes the socket non-blocking and bounds every call with its own timeout; this
    // second handle lets another thread shut the connection down.
    let handle = stream.try_clone().map_err(connect_error)?;

    let mut session = ssh2::Session::new().map_err(|source| SessionError::Handshake {
        address: display.clone(),
        source,
    })?;
    session.set_tcp_stream(stream);
    session.set_timeout(duration_ms(timeouts.command));
    session
        .handshake()
        .map_err(|source| SessionError::Handshake {
            address: display.clone(),
            source,
        })?;
    let presented = presented_host_key(&session).ok_or_else(|| SessionError::Transport {
        command: "handshake".to_owned(),
        message: format!("{display} presented no host key"),
    })?;
    if let HostKeyPolicy::Expect(expected) = policy
        && *expected != presented
    {
        let _ = session.disconnect(None, "host key mismatch", None);
        return Err(SessionError::HostKeyChanged {
            address: display,
            presented,
            expected: expected.clone(),
        });
    }
    authenticate(&session, target).map_err(|message| SessionError::Authentication {
        address: display.clone(),
        username: target.username.clone(),
        message,
    })?;
    Ok(BlockingSession {
        session,
        socket: handle,
        address: display,
        host_key: presented,
    })
}

fn authenticate(session: &ssh2::Session, target: &ConnectionTarget) -> Result<(), String> {
    let result = match &target.secret {
        CredentialsSecret::Password(password) => {
            session.userauth_password(&target.username, password.expose())
        }
        CredentialsSecret::PrivateKey(key) => {
            session.userauth_pubkey_memory(&target.username, None, key.expose(), None)
        }
    };
    // libssh2's messages name the method, never the secret.
    result.map_err(|error| error.message().to_owned())?;
    if session.authenticated() {
        Ok(())
    } else {
        Err("the server did not accept the credentials".to_owned())
    }
}

/// The host key of the handshake as `known_hosts` records it: the algorithm named inside the
/// key blob (SSH wire format: a length-prefixed name first) and the blob in base64.
fn presented_host_key(session: &ssh2::Session) -> Option<HostKey> {
    let (blob, _kind) = session.host_key()?;
    let name_length = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let algorithm = std::str::from_utf8(blob.get(4..4 + name_length)?).ok()?;
    Some(HostKey {
        algorithm: algorithm.to_owned(),
        key: base64::engine::general_purpose::STANDARD.encode(blob),
    })
}

fn display_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_and_stderr_are_joined_like_openwisp_controller() {
        assert_eq!(join_output(b"out\n", b""), "out");
        assert_eq!(join_output(b"", b" err\n"), "err");
        assert_eq!(join_output(b"out\n", b"err\n"), "out\nerr");
        assert_eq!(join_output(b"", b""), "");
    }

    #[test]
    fn timeouts_never_become_infinite() {
        assert_eq!(duration_ms(Duration::ZERO), 1);
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn addresses_print_with_their_port() {
        assert_eq!(display_address("10.0.0.1", 22), "10.0.0.1:22");
        assert_eq!(display_address("fe80::1", 2222), "[fe80::1]:2222");
    }

    #[test]
    fn a_changed_host_key_is_found_among_address_failures() {
        let key = |name: &str| HostKey {
            algorithm: "ssh-ed25519".to_owned(),
            key: name.to_owned(),
        };
        let changed = SessionError::AllAddresses(vec![
            SessionError::NoAddress,
            SessionError::HostKeyChanged {
                address: "a:22".to_owned(),
                presented: key("new"),
                expected: key("old"),
            },
        ]);
        assert!(changed.host_key_changed().is_some());
        assert!(SessionError::NoAddress.host_key_changed().is_none());
    }
}

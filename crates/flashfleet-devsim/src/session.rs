//! One SSH connection to a simulated device: authentication, exec channels, uploads, and the
//! injected faults that act on a connection (dropped and throttled uploads).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::time::Instant;

use crate::commands::{self, Invocation, Status};
use crate::device::DeviceShared;
use crate::upload::{ScpSink, Upload};

/// The receive window of a connection opened while [`Faults::upload_chunk_delay`] is set, and
/// the chunk the device reads per delay: 32 KiB, one packet of libssh2 and OpenSSH. The client
/// cannot run more than about one window ahead of the trickle.
///
/// [`Faults::upload_chunk_delay`]: crate::Faults::upload_chunk_delay
pub(crate) const TRICKLE_WINDOW: u32 = 32 * 1024;

/// The credentials a device accepts, parsed once per fleet.
#[derive(Debug)]
pub(crate) struct Authorized {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) public_key: PublicKey,
}

/// The russh handler of one connection.
pub(crate) struct Connection {
    device: Arc<DeviceShared>,
    authorized: Arc<Authorized>,
    connection_id: u64,
    channels: HashMap<ChannelId, ChannelState>,
}

enum ChannelState {
    /// Opened, no command yet.
    Open,
    /// `scp -t`.
    Scp(Transfer<ScpSink>),
    /// `cat > path`.
    Cat(Transfer<Upload>),
    /// The command ended (its exit status was sent) or will never end (flash, hang): further
    /// data is ignored.
    Done,
}

/// An upload channel and the time its first byte came (for throttling).
struct Transfer<T> {
    receiver: T,
    started: Option<Instant>,
    /// Bytes fed through the throttle so far on this channel.
    throttled_bytes: u64,
}

impl<T> Transfer<T> {
    fn new(receiver: T) -> Transfer<T> {
        Transfer {
            receiver,
            started: None,
            throttled_bytes: 0,
        }
    }
}

impl Connection {
    pub(crate) fn new(
        device: Arc<DeviceShared>,
        authorized: Arc<Authorized>,
        connection_id: u64,
    ) -> Connection {
        Connection {
            device,
            authorized,
            connection_id,
            channels: HashMap::new(),
        }
    }

    fn finish_command(
        session: &mut Session,
        channel: ChannelId,
        status: u32,
    ) -> Result<(), russh::Error> {
        session.eof(channel)?;
        session.exit_status_request(channel, status)?;
        session.close(channel)
    }

    /// Applies the upload faults to `bytes` arriving on an upload channel: how many of them to
    /// accept before cutting the connection (`None`: all), after sleeping for the throttle and
    /// the trickle ([`Faults::upload_chunk_delay`]: one chunk per delay).
    ///
    /// [`Faults::upload_chunk_delay`]: crate::Faults::upload_chunk_delay
    async fn upload_faults(
        &self,
        started: &mut Option<Instant>,
        throttled_bytes: &mut u64,
        file_bytes_so_far: u64,
        bytes: usize,
    ) -> Option<u64> {
        let faults = self.device.lock().faults.clone();
        let started = *started.get_or_insert_with(Instant::now);
        *throttled_bytes += bytes as u64;
        if let Some(rate) = faults.link_bytes_per_sec.filter(|rate| *rate > 0) {
            let due = started + Duration::from_secs_f64(*throttled_bytes as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        if let Some(delay) = faults.upload_chunk_delay {
            // One window per delay: the window these bytes complete is read a delay after the
            // previous one.
            let windows = throttled_bytes.div_ceil(u64::from(TRICKLE_WINDOW));
            let due = started + delay.saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
            tokio::time::sleep_until(due).await;
        }
        let limit = faults.drop_during_upload_after_bytes?;
        (file_bytes_so_far + bytes as u64 >= limit).then(|| limit.saturating_sub(file_bytes_so_far))
    }

    /// Cuts this connection because of [`Faults::drop_during_upload_after_bytes`], which fires
    /// once.
    ///
    /// [`Faults::drop_during_upload_after_bytes`]: crate::Faults::drop_during_upload_after_bytes
    fn drop_connection(&mut self) -> russh::Error {
        self.device.lock().faults.drop_during_upload_after_bytes = None;
        self.abandon_uploads();
        self.device.cut_connection(self.connection_id);
        russh::Error::Disconnect
    }

    /// Stores what the interrupted uploads of this connection received, as a truncated file.
    fn abandon_uploads(&mut self) {
        let mut finished = Vec::new();
        for state in self.channels.values_mut() {
            match std::mem::replace(state, ChannelState::Done) {
                ChannelState::Scp(mut transfer) => finished.extend(transfer.receiver.abandon()),
                ChannelState::Cat(transfer) => finished.push(transfer.receiver),
                ChannelState::Open | ChannelState::Done => {}
            }
        }
        if finished.is_empty() {
            return;
        }
        let mut device = self.device.lock();
        for upload in finished {
            let (path, stored, text) = upload.finish(false);
            device.store_upload(path, stored, text);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.abandon_uploads();
        self.device.forget_connection(self.connection_id);
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if user == self.authorized.username && password == self.authorized.password {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        public_key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        self.auth_publickey(user, public_key).await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        public_key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        if user == self.authorized.username
            && public_key.key_data() == self.authorized.public_key.key_data()
        {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), ChannelState::Open);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Interactive shells are not simulated; exec requests are.
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Stock OpenWrt has no sftp-server.
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !matches!(self.channels.get(&channel), Some(ChannelState::Open)) {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        let line = String::from_utf8_lossy(data).into_owned();
        self.device.lock().commands.push(line.clone());
        match commands::invocation(&line) {
            Invocation::ScpSink { target } => {
                self.channels.insert(
                    channel,
                    ChannelState::Scp(Transfer::new(ScpSink::new(target))),
                );
                session.data(channel, vec![0u8])?;
            }
            Invocation::CatUpload { path } => {
                self.device.lock().begin_upload(&path);
                self.channels
                    .insert(channel, ChannelState::Cat(Transfer::new(Upload::new(path))));
            }
            Invocation::SyntaxError(message) => {
                self.channels.insert(channel, ChannelState::Done);
                session.extended_data(channel, 1, format!("/bin/ash: {message}\n").into_bytes())?;
                Self::finish_command(session, channel, 2)?;
            }
            Invocation::Script(script) => {
                self.channels.insert(channel, ChannelState::Done);
                let output = commands::run(&mut self.device.lock(), &script);
                if !output.stdout.is_empty() {
                    session.data(channel, output.stdout)?;
                }
                if !output.stderr.is_empty() {
                    session.extended_data(channel, 1, output.stderr)?;
                }
                match output.status {
                    Status::Exit(code) => Self::finish_command(session, channel, code)?,
                    Status::Flash(plan) => self.device.begin_flash(plan),
                    Status::Hang => {}
                }
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(mut state) = self.channels.remove(&channel) else {
            return Ok(());
        };
        let result = match &mut state {
            ChannelState::Scp(transfer) => {
                let so_far = transfer
                    .receiver
                    .current_upload()
                    .map_or(0, Upload::received);
                let accept = self
                    .upload_faults(
                        &mut transfer.started,
                        &mut transfer.throttled_bytes,
                        so_far,
                        data.len(),
                    )
                    .await;
                let accepted = match accept {
                    Some(count) => &data[..(count as usize).min(data.len())],
                    None => data,
                };
                let is_directory = |target: &str| {
                    target.ends_with('/') || self.device.lock().directory_exists(target)
                };
                let step = transfer.receiver.feed(accepted, is_directory);
                if let Some(path) = &step.started {
                    self.device.lock().begin_upload(path);
                }
                if let Some(upload) = step.finished {
                    let (path, stored, text) = upload.finish(true);
                    self.device.lock().store_upload(path, stored, text);
                }
                if !step.reply.is_empty() {
                    session.data(channel, step.reply)?;
                }
                if accept.is_some() {
                    self.channels.insert(channel, state);
                    return Err(self.drop_connection());
                }
                if step.failed {
                    Self::finish_command(session, channel, 1)?;
                    state = ChannelState::Done;
                }
                Ok(())
            }
            ChannelState::Cat(transfer) => {
                let accept = self
                    .upload_faults(
                        &mut transfer.started,
                        &mut transfer.throttled_bytes,
                        transfer.receiver.received(),
                        data.len(),
                    )
                    .await;
                match accept {
                    Some(count) => {
                        transfer
                            .receiver
                            .feed(&data[..(count as usize).min(data.len())]);
                        self.channels.insert(channel, state);
                        return Err(self.drop_connection());
                    }
                    None => transfer.receiver.feed(data),
                }
                Ok(())
            }
            ChannelState::Open | ChannelState::Done => Ok(()),
        };
        self.channels.insert(channel, state);
        result
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.insert(channel, ChannelState::Done) {
            Some(ChannelState::Scp(mut transfer)) => {
                let incomplete = transfer.receiver.is_incomplete();
                if let Some(upload) = transfer.receiver.abandon() {
                    let (path, stored, text) = upload.finish(false);
                    self.device.lock().store_upload(path, stored, text);
                }
                if incomplete {
                    session.extended_data(channel, 1, b"scp: unexpected end of file\n".to_vec())?;
                }
                Self::finish_command(session, channel, u32::from(incomplete))
            }
            Some(ChannelState::Cat(transfer)) => {
                let (path, stored, text) = transfer.receiver.finish(true);
                self.device.lock().store_upload(path, stored, text);
                Self::finish_command(session, channel, 0)
            }
            Some(other) => {
                self.channels.insert(channel, other);
                Ok(())
            }
            None => {
                self.channels.remove(&channel);
                Ok(())
            }
        }
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.remove(&channel) {
            let upload = match state {
                ChannelState::Scp(mut transfer) => transfer.receiver.abandon(),
                ChannelState::Cat(transfer) => Some(transfer.receiver),
                ChannelState::Open | ChannelState::Done => None,
            };
            if let Some(upload) = upload {
                let (path, stored, text) = upload.finish(false);
                self.device.lock().store_upload(path, stored, text);
            }
        }
        Ok(())
    }
}

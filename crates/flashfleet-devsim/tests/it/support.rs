//! The ssh2 client the tests drive devices with, run on tokio's blocking pool, and fleet
//! builders.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flashfleet_boards::test_image::{TestImage, TestImageBuilder};
use flashfleet_devsim::{ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming};

/// The board of the devices the tests build by default.
pub(crate) const BOARD: &str = "tplink,archer-c7-v2";
/// Their model.
pub(crate) const MODEL: &str = "TP-Link Archer C7 v2";

/// How a test client logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    Password,
    Key,
}

/// What a command printed and its exit status as libssh2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) exit_status: i32,
}

/// A device spec with the default board and a fresh UUID.
pub(crate) fn device() -> DeviceSpec {
    DeviceSpec::openwrt(uuid::Uuid::new_v4(), BOARD, MODEL)
}

/// A fleet of `devices` on ephemeral ports with a fast reboot.
pub(crate) async fn fleet(devices: Vec<DeviceSpec>) -> Fleet {
    let mut config = FleetConfig::on_ephemeral_ports(devices);
    config.reboot = RebootTiming {
        close_after: Duration::from_millis(100),
        down_for: Duration::from_millis(500),
    };
    Fleet::start(config).await.expect("the fleet starts")
}

/// An image for the default board, released as `version`.
pub(crate) fn image_for_board(version: &str) -> TestImageBuilder {
    TestImage::builder()
        .payload_len(256 * 1024)
        .supported_devices([BOARD, "archer-c7-v2"])
        .version_field("version", version)
        .version_field("revision", &format!("r1-{version}"))
        .version_field("target", "ath79/generic")
}

/// Connects and logs in (blocking).
pub(crate) fn connect(
    address: SocketAddr,
    credentials: &ClientCredentials,
    login: Login,
) -> Result<ssh2::Session, String> {
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("connect: {error}"))?;
    let mut session = ssh2::Session::new().map_err(|error| error.to_string())?;
    session.set_tcp_stream(tcp);
    session.set_timeout(30_000);
    session
        .handshake()
        .map_err(|error| format!("handshake: {error}"))?;
    match login {
        Login::Password => session
            .userauth_password(&credentials.username, &credentials.password)
            .map_err(|error| format!("password: {error}"))?,
        Login::Key => session
            .userauth_pubkey_memory(
                &credentials.username,
                None,
                &credentials.private_key_openssh,
                None,
            )
            .map_err(|error| format!("key: {error}"))?,
    }
    if !session.authenticated() {
        return Err("not authenticated".to_owned());
    }
    Ok(session)
}

/// Runs one command on an open session (blocking).
pub(crate) fn exec(session: &ssh2::Session, command: &str) -> Answer {
    let mut channel = session.channel_session().expect("a channel opens");
    channel.exec(command).expect("exec is accepted");
    let mut stdout = String::new();
    channel.read_to_string(&mut stdout).expect("stdout reads");
    let mut stderr = String::new();
    channel
        .stderr()
        .read_to_string(&mut stderr)
        .expect("stderr reads");
    channel.wait_close().expect("the channel closes");
    Answer {
        stdout,
        stderr,
        exit_status: channel.exit_status().expect("an exit status"),
    }
}

/// Uploads `image` to `path` with SCP, as the upgrader does (blocking).
pub(crate) fn scp_upload(
    session: &ssh2::Session,
    path: &str,
    image: &TestImage,
) -> Result<(), String> {
    let mut remote = session
        .scp_send(std::path::Path::new(path), 0o644, image.len(), None)
        .map_err(|error| format!("scp_send: {error}"))?;
    image
        .write_to(&mut remote)
        .map_err(|error| format!("write: {error}"))?;
    remote.flush().map_err(|error| format!("flush: {error}"))?;
    remote
        .send_eof()
        .map_err(|error| format!("send_eof: {error}"))?;
    remote
        .wait_eof()
        .map_err(|error| format!("wait_eof: {error}"))?;
    remote.close().map_err(|error| format!("close: {error}"))?;
    remote
        .wait_close()
        .map_err(|error| format!("wait_close: {error}"))?;
    Ok(())
}

/// Runs blocking client code on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the client code does not panic")
}

/// Connects with the password and runs `commands` in one session.
pub(crate) async fn run_all(fleet: &Fleet, index: usize, commands: &[&str]) -> Vec<Answer> {
    let address = fleet.device(index).address();
    let credentials = fleet.credentials().clone();
    let commands: Vec<String> = commands.iter().map(|&command| command.to_owned()).collect();
    blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        commands
            .iter()
            .map(|command| exec(&session, command))
            .collect()
    })
    .await
}

/// Connects with the password and runs one command.
pub(crate) async fn run(fleet: &Fleet, index: usize, command: &str) -> Answer {
    run_all(fleet, index, &[command])
        .await
        .pop()
        .expect("one answer")
}

/// Uploads `image` to `path` on device `index`.
pub(crate) async fn upload(fleet: &Fleet, index: usize, path: &str, image: TestImage) {
    let address = fleet.device(index).address();
    let credentials = fleet.credentials().clone();
    let path = path.to_owned();
    blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        scp_upload(&session, &path, &image).expect("the upload works");
    })
    .await;
}

/// Tries to log in until it works or `limit` passes; returns the time it took.
pub(crate) async fn wait_until_reachable(
    fleet: &Fleet,
    index: usize,
    limit: Duration,
) -> Option<Duration> {
    let address = fleet.device(index).address();
    let credentials = fleet.credentials().clone();
    blocking(move || {
        let started = Instant::now();
        while started.elapsed() < limit {
            if connect(address, &credentials, Login::Password).is_ok() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    })
    .await
}

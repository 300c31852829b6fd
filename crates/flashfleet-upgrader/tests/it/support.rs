//! What the integration tests share: a reporter that records everything in memory, an image
//! source over a temporary file, contexts for simulated devices, short settings.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use flashfleet_boards::test_image::TestImage;
use flashfleet_boards::{ImageMetadata, inspect_file};
use flashfleet_devsim::{ClientCredentials, SimDevice};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::{
    Device, DeviceId, NewDevice, OrganizationId, UpgradeOptions, UpgradePhase,
};
use flashfleet_upgrader::openwrt::OpenWrtSettings;
use flashfleet_upgrader::{
    ConnectionTarget, HostKey, ImageSource, ReportError, Reporter, UpgradeContext, UpgradeImage,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

/// What the upgrader reported, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `progress(phase, progress, line)`.
    Progress {
        phase: UpgradePhase,
        progress: u8,
        line: Option<String>,
    },
    /// `log(line)`.
    Log(String),
    /// `record_host_key(key)`.
    HostKey(HostKey),
    /// `begin_flash(boot_id, line)`: the operation entered `Flashing`.
    BeginFlash {
        boot_id: Option<String>,
        line: String,
    },
    /// `restart_unflashed(line)`: the operation went back before its flash.
    RestartUnflashed(String),
}

/// A reporter that keeps every report in memory. It can be told to behave as if a user
/// cancelled the operation as the upgrader enters a phase, or as if another engine claimed the
/// operation (the lease is lost) at a phase, and to note how many commands a device had
/// received when `Flashing` was reported. Like the engine's, it lets an operation enter
/// `Flashing` once, and again only after `restart_unflashed`.
#[derive(Default)]
pub(crate) struct RecordingReporter {
    events: Mutex<Vec<Event>>,
    cancel_on: Mutex<Option<UpgradePhase>>,
    cancelled: AtomicBool,
    lose_lease_on: Mutex<Option<UpgradePhase>>,
    lease_lost: AtomicBool,
    watched_device: Mutex<Option<SimDevice>>,
    commands_before_flashing: AtomicUsize,
    /// Whether the operation is at or past `Flashing` (as the engine's guarded write knows).
    flashing: AtomicBool,
}

impl RecordingReporter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Cancels the operation (as a user would) when the upgrader enters `phase`.
    pub(crate) fn cancel_on(&self, phase: UpgradePhase) {
        *self.cancel_on.lock().unwrap() = Some(phase);
    }

    /// Refuses every report with `LeaseLost` from the moment the upgrader enters `phase`
    /// (that report included), as the engine's reporter does once another engine claimed the
    /// operation.
    pub(crate) fn lose_lease_on(&self, phase: UpgradePhase) {
        *self.lose_lease_on.lock().unwrap() = Some(phase);
    }

    /// The operation was found at or past `Flashing` (an earlier attempt persisted it).
    pub(crate) fn already_flashing(&self) {
        self.flashing.store(true, Ordering::SeqCst);
    }

    /// The boot ids `begin_flash` recorded, in order.
    pub(crate) fn flash_boot_ids(&self) -> Vec<Option<String>> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::BeginFlash { boot_id, .. } => Some(boot_id),
                _ => None,
            })
            .collect()
    }

    /// The lines `restart_unflashed` was called with.
    pub(crate) fn restarts(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::RestartUnflashed(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    fn refuse_when_lease_lost(&self, phase: Option<UpgradePhase>) -> Result<(), ReportError> {
        if phase.is_some() && *self.lose_lease_on.lock().unwrap() == phase {
            self.lease_lost.store(true, Ordering::SeqCst);
        }
        if self.lease_lost.load(Ordering::SeqCst) {
            Err(ReportError::LeaseLost)
        } else {
            Ok(())
        }
    }

    /// Notes how many commands `device` had received when `Flashing` gets reported.
    pub(crate) fn watch(&self, device: &SimDevice) {
        *self.watched_device.lock().unwrap() = Some(device.clone());
    }

    /// How many commands the watched device had received when `Flashing` was reported.
    pub(crate) fn commands_before_flashing(&self) -> usize {
        self.commands_before_flashing.load(Ordering::SeqCst)
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Every log line, from `log`, `progress`, `begin_flash` and `restart_unflashed`, in
    /// order.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Progress { line, .. } => line,
                Event::Log(line)
                | Event::BeginFlash { line, .. }
                | Event::RestartUnflashed(line) => Some(line),
                Event::HostKey(_) => None,
            })
            .collect()
    }

    /// The phases entered, in order (`begin_flash` enters `Flashing`, `restart_unflashed` goes
    /// back to `Queued`).
    pub(crate) fn phases(&self) -> Vec<UpgradePhase> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Progress { phase, .. } => Some(phase),
                Event::BeginFlash { .. } => Some(UpgradePhase::Flashing),
                Event::RestartUnflashed(_) => Some(UpgradePhase::Queued),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn host_keys(&self) -> Vec<HostKey> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::HostKey(host_key) => Some(host_key),
                _ => None,
            })
            .collect()
    }

    /// Whether some log line contains `text`.
    pub(crate) fn logged(&self, text: &str) -> bool {
        self.lines().iter().any(|line| line.contains(text))
    }
}

#[async_trait]
impl Reporter for RecordingReporter {
    async fn progress(
        &self,
        phase: UpgradePhase,
        progress: u8,
        line: Option<&str>,
    ) -> Result<(), ReportError> {
        assert_ne!(
            phase,
            UpgradePhase::Flashing,
            "`Flashing` is entered through `begin_flash` only"
        );
        self.refuse_when_lease_lost(Some(phase))?;
        self.events.lock().unwrap().push(Event::Progress {
            phase,
            progress,
            line: line.map(str::to_owned),
        });
        if *self.cancel_on.lock().unwrap() == Some(phase) {
            self.cancelled.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn log(&self, line: &str) -> Result<(), ReportError> {
        self.refuse_when_lease_lost(None)?;
        self.events
            .lock()
            .unwrap()
            .push(Event::Log(line.to_owned()));
        Ok(())
    }

    async fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    async fn record_host_key(&self, host_key: &HostKey) -> Result<(), ReportError> {
        self.refuse_when_lease_lost(None)?;
        self.events
            .lock()
            .unwrap()
            .push(Event::HostKey(host_key.clone()));
        Ok(())
    }

    async fn begin_flash(&self, boot_id: Option<&str>, line: &str) -> Result<(), ReportError> {
        self.refuse_when_lease_lost(Some(UpgradePhase::Flashing))?;
        if self.flashing.swap(true, Ordering::SeqCst) {
            return Err(ReportError::Persistence(
                "the operation is already at or past the flash".into(),
            ));
        }
        if let Some(device) = self.watched_device.lock().unwrap().as_ref() {
            self.commands_before_flashing
                .store(device.commands().len(), Ordering::SeqCst);
        }
        self.events.lock().unwrap().push(Event::BeginFlash {
            boot_id: boot_id.map(str::to_owned),
            line: line.to_owned(),
        });
        if *self.cancel_on.lock().unwrap() == Some(UpgradePhase::Flashing) {
            self.cancelled.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn restart_unflashed(&self, line: &str) -> Result<(), ReportError> {
        self.refuse_when_lease_lost(None)?;
        if !self.flashing.swap(false, Ordering::SeqCst) {
            return Err(ReportError::Persistence(
                "the operation is not at or past the flash".into(),
            ));
        }
        self.events
            .lock()
            .unwrap()
            .push(Event::RestartUnflashed(line.to_owned()));
        Ok(())
    }

    async fn checkpoint(&self) -> Result<(), ReportError> {
        self.refuse_when_lease_lost(None)?;
        if self.cancelled.load(Ordering::SeqCst) {
            Err(ReportError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// An image written to a temporary file, streamed from it each time it is opened.
pub(crate) struct ImageFile {
    _directory: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    /// What the image says about itself.
    pub(crate) metadata: Option<ImageMetadata>,
    /// How many streams of the image were opened, and how many of them dropped.
    streams: Arc<StreamCounts>,
}

/// Streams of an image opened and dropped, observable from async code.
pub(crate) struct StreamCounts {
    opened: tokio::sync::watch::Sender<usize>,
    /// Bytes read from every stream.
    read: tokio::sync::watch::Sender<u64>,
    dropped: tokio::sync::watch::Sender<usize>,
}

impl Default for StreamCounts {
    fn default() -> Self {
        StreamCounts {
            opened: tokio::sync::watch::Sender::new(0),
            read: tokio::sync::watch::Sender::new(0),
            dropped: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ImageFile {
    /// Writes `image` to a temporary file named `file_name`.
    pub(crate) fn write(image: &TestImage, file_name: &str) -> ImageFile {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(file_name);
        let file = std::fs::File::create(&path).unwrap();
        image.write_to(std::io::BufWriter::new(file)).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let sha256 = sha256_of_file(&path);
        let metadata = inspect_file(&path).unwrap().metadata;
        ImageFile {
            _directory: directory,
            path,
            size,
            sha256,
            metadata,
            streams: Arc::default(),
        }
    }

    /// How many times the image was opened.
    pub(crate) fn times_opened(&self) -> usize {
        *self.streams.opened.borrow()
    }

    /// How many streams of the image were dropped (the upload let go of them).
    pub(crate) fn times_dropped(&self) -> usize {
        *self.streams.dropped.borrow()
    }

    /// Waits until `bytes` of the image were read (an upload is under way), for at most
    /// `limit`; whether they were.
    pub(crate) async fn read_at_least(&self, bytes: u64, limit: Duration) -> bool {
        let mut read = self.streams.read.subscribe();
        tokio::time::timeout(limit, read.wait_for(|read| *read >= bytes))
            .await
            .is_ok()
    }

    /// Waits until `count` streams of the image were dropped, for at most `limit`; whether
    /// they were.
    pub(crate) async fn dropped_at_least(&self, count: usize, limit: Duration) -> bool {
        let mut dropped = self.streams.dropped.subscribe();
        tokio::time::timeout(limit, dropped.wait_for(|dropped| *dropped >= count))
            .await
            .is_ok()
    }

    /// The image for a context: `image_type` and the metadata the server would have read
    /// (`with_metadata: false` for a server that knows none).
    pub(crate) fn upgrade_image(&self, image_type: &str, with_metadata: bool) -> UpgradeImage {
        UpgradeImage {
            file_name: format!(
                "builds/1/{}",
                self.path.file_name().unwrap().to_string_lossy()
            ),
            image_type: image_type.to_owned(),
            size: self.size,
            sha256: self.sha256.clone(),
            metadata: if with_metadata {
                self.metadata.clone()
            } else {
                None
            },
            source: Arc::new(FileSource {
                path: self.path.clone(),
                streams: Arc::clone(&self.streams),
            }),
        }
    }
}

struct FileSource {
    path: PathBuf,
    streams: Arc<StreamCounts>,
}

#[async_trait]
impl ImageSource for FileSource {
    async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        let file = tokio::fs::File::open(&self.path).await?;
        self.streams.opened.send_modify(|opened| *opened += 1);
        Ok(Box::new(ObservedStream {
            file,
            streams: Arc::clone(&self.streams),
        }))
    }
}

/// A stream of the image that counts its own drop (the engine's upload permit goes with it).
struct ObservedStream {
    file: tokio::fs::File,
    streams: Arc<StreamCounts>,
}

impl AsyncRead for ObservedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let poll = std::pin::Pin::new(&mut self.file).poll_read(context, buffer);
        let read = (buffer.filled().len() - before) as u64;
        if read > 0 {
            self.streams.read.send_modify(|total| *total += read);
        }
        poll
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        self.streams.dropped.send_modify(|dropped| *dropped += 1);
    }
}

pub(crate) fn sha256_of_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hex::encode(hasher.finalize())
}

/// The image type the built-in map lists for the GL.iNet GL-MT300N-V2 (model `GL-MT300N-V2`).
pub(crate) const GL_MT300N_V2_TYPE: &str = "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin";
/// The board name of that device.
pub(crate) const GL_MT300N_V2_BOARD: &str = "glinet,gl-mt300n-v2";
/// Its model, as the map lists it.
pub(crate) const GL_MT300N_V2_MODEL: &str = "GL-MT300N-V2";

/// A flashfleet device with this id.
pub(crate) fn device_with_id(id: uuid::Uuid) -> Device {
    let mut new_device = NewDevice::new(
        OrganizationId::new(),
        "router-1",
        "00:11:22:33:44:55".parse().unwrap(),
    );
    new_device.id = Some(DeviceId(id));
    new_device.model = GL_MT300N_V2_MODEL.to_owned();
    new_device.board_name = GL_MT300N_V2_BOARD.to_owned();
    new_device.into_device()
}

/// How the tests authenticate.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Auth {
    Password,
    Key,
}

/// A context upgrading the simulated `device` with `image`.
pub(crate) fn devsim_context(
    device: &SimDevice,
    credentials: &ClientCredentials,
    auth: Auth,
    image: UpgradeImage,
    options: serde_json::Value,
    reporter: Arc<RecordingReporter>,
) -> UpgradeContext {
    let secret = match auth {
        Auth::Password => CredentialsSecret::Password(SecretText::new(&credentials.password)),
        Auth::Key => {
            CredentialsSecret::PrivateKey(SecretText::new(&credentials.private_key_openssh))
        }
    };
    UpgradeContext {
        device: device_with_id(device.uuid()),
        connection: ConnectionTarget {
            addresses: vec![device.address().ip().to_string()],
            port: device.address().port(),
            username: credentials.username.clone(),
            secret,
            known_host_key: None,
        },
        image,
        options: UpgradeOptions::from_json(options).unwrap(),
        reporter,
        previous_flash: None,
    }
}

/// Short delays: the simulated devices reboot in a fraction of a second.
pub(crate) fn fast_settings() -> OpenWrtSettings {
    OpenWrtSettings {
        reconnect_delay: Duration::from_millis(100),
        reconnect_retry_delay: Duration::from_millis(100),
        reconnect_max_retries: 40,
        upgrade_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        ..OpenWrtSettings::default()
    }
}

/// `SHA256:<base64 without padding>` of a host key, as `ssh-keygen -l` prints it.
pub(crate) fn fingerprint(host_key: &HostKey) -> String {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&host_key.key)
        .unwrap();
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&blob))
    )
}

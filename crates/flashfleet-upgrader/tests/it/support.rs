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
}

/// A reporter that keeps every report in memory. It can be told to behave as if a user
/// cancelled the operation as the upgrader enters a phase, and to note how many commands a
/// device had received when `Flashing` was reported.
#[derive(Default)]
pub(crate) struct RecordingReporter {
    events: Mutex<Vec<Event>>,
    cancel_on: Mutex<Option<UpgradePhase>>,
    cancelled: AtomicBool,
    watched_device: Mutex<Option<SimDevice>>,
    commands_before_flashing: AtomicUsize,
}

impl RecordingReporter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Cancels the operation (as a user would) when the upgrader enters `phase`.
    pub(crate) fn cancel_on(&self, phase: UpgradePhase) {
        *self.cancel_on.lock().unwrap() = Some(phase);
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

    /// Every log line, from `log` and from `progress`, in order.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Progress { line, .. } => line,
                Event::Log(line) => Some(line),
                Event::HostKey(_) => None,
            })
            .collect()
    }

    /// The phases entered, in order.
    pub(crate) fn phases(&self) -> Vec<UpgradePhase> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Progress { phase, .. } => Some(phase),
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
        if phase == UpgradePhase::Flashing
            && let Some(device) = self.watched_device.lock().unwrap().as_ref()
        {
            self.commands_before_flashing
                .store(device.commands().len(), Ordering::SeqCst);
        }
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
        self.events
            .lock()
            .unwrap()
            .push(Event::HostKey(host_key.clone()));
        Ok(())
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
    opened: Arc<AtomicUsize>,
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
            opened: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many times the image was opened.
    pub(crate) fn times_opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
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
                opened: Arc::clone(&self.opened),
            }),
        }
    }
}

struct FileSource {
    path: PathBuf,
    opened: Arc<AtomicUsize>,
}

#[async_trait]
impl ImageSource for FileSource {
    async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(tokio::fs::File::open(&self.path).await?))
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

//! A scripted upgrader, in-memory firmware files, and a device ready to upgrade.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use flashfleet_db::Db;
use flashfleet_engine::{EngineConfig, FirmwareFiles, RetryPolicy};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::{
    DeviceRepository, DirectoryRepository, FirmwareRepository, UpgradeRepository,
};
use flashfleet_models::{
    DeviceFirmware, DeviceId, FirmwareImage, NewBuild, NewCategory, NewCredentials, NewDevice,
    NewDeviceConnection, NewFirmwareImage, NewOrganization, NewUpgradeOperation, Organization,
    StorageKey, UpgradeOperation, UpgradeOptions, UpgradePhase, ValidationErrors,
};
use flashfleet_upgrader::{UpgradeContext, UpgradeError, UpgradeOutcome, Upgrader};
use tokio::io::AsyncRead;

/// The connection type the scripted upgrader is registered under.
pub(crate) const SCRIPTED: &str = "scripted";

/// What the scripted upgrader does for a device, attempt after attempt (the last step repeats).
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Succeed,
    FailRecoverably,
    Abort,
    /// Flashes, then finds the device back on its old release.
    ComesBackOld,
}

/// An upgrader that follows a script per device and counts calls.
#[derive(Default)]
pub(crate) struct ScriptedUpgrader {
    pub(crate) scripts: Mutex<HashMap<DeviceId, Vec<Step>>>,
    pub(crate) upgrades: Mutex<HashMap<DeviceId, u32>>,
    pub(crate) verifications: Mutex<HashMap<DeviceId, u32>>,
    /// How long each upgrade's upload takes (to make upgrades overlap).
    pub(crate) duration: Duration,
    /// Uploads open right now, and the most seen at once.
    pub(crate) uploads: Mutex<(usize, usize)>,
    /// Upgrades between connecting and the end of their upload right now, and the most seen.
    pub(crate) preparing: Mutex<(usize, usize)>,
    /// Flash commands "sent" (after `Flashing` was persisted), per device.
    pub(crate) flashes: Mutex<HashMap<DeviceId, u32>>,
    /// Upgrades running right now per device, and the most seen at once for any device.
    pub(crate) concurrent: Mutex<(HashMap<DeviceId, u32>, u32)>,
}

impl ScriptedUpgrader {
    pub(crate) fn upgrades_of(&self, device: DeviceId) -> u32 {
        self.upgrades
            .lock()
            .expect("an unpoisoned lock")
            .get(&device)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn flashes_of(&self, device: DeviceId) -> u32 {
        self.flashes
            .lock()
            .expect("an unpoisoned lock")
            .get(&device)
            .copied()
            .unwrap_or(0)
    }

    /// The most upgrades seen running at once for one device.
    pub(crate) fn most_at_once(&self) -> u32 {
        self.concurrent.lock().expect("an unpoisoned lock").1
    }

    pub(crate) fn verifications_of(&self, device: DeviceId) -> u32 {
        self.verifications
            .lock()
            .expect("an unpoisoned lock")
            .get(&device)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Upgrader for ScriptedUpgrader {
    fn validate_options(
        &self,
        _options: &UpgradeOptions,
        _allow_force: bool,
    ) -> Result<(), ValidationErrors> {
        Ok(())
    }

    async fn upgrade(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        let device = context.device.id;
        {
            let mut concurrent = self.concurrent.lock().expect("an unpoisoned lock");
            let now = {
                let count = concurrent.0.entry(device).or_default();
                *count += 1;
                *count
            };
            concurrent.1 = concurrent.1.max(now);
        }
        // Counts the run out however it ends, also when the engine drops it.
        let _running = Running {
            upgrader: self,
            device,
        };
        self.scripted_upgrade(context).await
    }

    async fn verify(&self, context: &UpgradeContext) -> Result<UpgradeOutcome, UpgradeError> {
        *self
            .verifications
            .lock()
            .expect("an unpoisoned lock")
            .entry(context.device.id)
            .or_default() += 1;
        context
            .enter(UpgradePhase::VerifyingVersion, "verifying")
            .await?;
        Ok(UpgradeOutcome::Upgraded { release: None })
    }
}

impl ScriptedUpgrader {
    async fn scripted_upgrade(
        &self,
        context: &UpgradeContext,
    ) -> Result<UpgradeOutcome, UpgradeError> {
        let device = context.device.id;
        let attempt = {
            let mut upgrades = self.upgrades.lock().expect("an unpoisoned lock");
            let count = upgrades.entry(device).or_default();
            *count += 1;
            *count
        };
        let step = {
            let scripts = self.scripts.lock().expect("an unpoisoned lock");
            let script = scripts
                .get(&device)
                .cloned()
                .unwrap_or_else(|| vec![Step::Succeed]);
            script
                .get(attempt as usize - 1)
                .or(script.last())
                .cloned()
                .unwrap_or(Step::Succeed)
        };
        context
            .enter(UpgradePhase::Connecting, "connecting")
            .await?;
        if let Step::Succeed | Step::ComesBackOld = step {
            {
                let mut preparing = self.preparing.lock().expect("an unpoisoned lock");
                preparing.0 += 1;
                preparing.1 = preparing.1.max(preparing.0);
            }
            context.enter(UpgradePhase::Uploading, "uploading").await?;
            let image = context
                .image
                .source
                .open()
                .await
                .map_err(|error| UpgradeError::recoverable(error.to_string()))?;
            {
                let mut uploads = self.uploads.lock().expect("an unpoisoned lock");
                uploads.0 += 1;
                uploads.1 = uploads.1.max(uploads.0);
            }
            if !self.duration.is_zero() {
                tokio::time::sleep(self.duration).await;
            }
            self.uploads.lock().expect("an unpoisoned lock").0 -= 1;
            drop(image);
            self.preparing.lock().expect("an unpoisoned lock").0 -= 1;
        }
        match step {
            Step::Succeed | Step::ComesBackOld => {
                context.begin_flash(None, "flashing").await?;
                *self
                    .flashes
                    .lock()
                    .expect("an unpoisoned lock")
                    .entry(device)
                    .or_default() += 1;
                if let Step::ComesBackOld = step {
                    let message = "The device came back still running its previous release (OpenWrt 23.05.0): the image was not installed.";
                    context.log(message).await?;
                    return Err(UpgradeError::FlashedNotSeenAgain {
                        message: message.to_owned(),
                    });
                }
                Ok(UpgradeOutcome::Upgraded { release: None })
            }
            Step::FailRecoverably => Err(UpgradeError::recoverable("Connection failed")),
            Step::Abort => Err(UpgradeError::aborted("Device UUID mismatch")),
        }
    }
}

/// One run of the scripted upgrader, counted out when dropped.
struct Running<'a> {
    upgrader: &'a ScriptedUpgrader,
    device: DeviceId,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut concurrent) = self.upgrader.concurrent.lock() {
            *concurrent.0.entry(self.device).or_default() -= 1;
        }
    }
}

/// Firmware files that are all empty.
pub(crate) struct EmptyFiles;

#[async_trait]
impl FirmwareFiles for EmptyFiles {
    async fn open(&self, _key: &StorageKey) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(tokio::io::empty()))
    }
}

/// Fast settings: no waiting between retries, short leases.
pub(crate) fn fast_config(name: &str) -> EngineConfig {
    EngineConfig {
        name: name.to_owned(),
        max_in_flight: 8,
        max_uploads: 2,
        max_preparing: 4,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        task_timeout: Duration::from_secs(1500),
        verification_budget: Duration::from_secs(60),
        retry: RetryPolicy {
            max_retries: 2,
            backoff: Duration::ZERO,
            backoff_max: Duration::ZERO,
            jitter: false,
        },
    }
}

/// An organization with one build and one image.
pub(crate) struct Fixture {
    pub(crate) organization: Organization,
    pub(crate) image: FirmwareImage,
}

pub(crate) async fn fixture(db: &Db) -> Fixture {
    let organization = db
        .insert_organization(&NewOrganization::new("ACME", "acme").into_organization())
        .await
        .expect("test setup");
    let category = db
        .insert_category(&NewCategory::new(Some(organization.id), "APs").into_category())
        .await
        .expect("test setup");
    let build = db
        .insert_build(&NewBuild::new(category.id, "2.0").into_build())
        .await
        .expect("test setup");
    let mut new_image = NewFirmwareImage {
        build_id: build.id,
        image_type: "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin".into(),
        file_name: "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin".into(),
        size: 4,
        sha256: "0".repeat(64),
        storage_key: StorageKey::for_image(build.id, "openwrt.bin"),
        metadata: None,
        details: Default::default(),
    };
    new_image.validate(|_| true).expect("test setup");
    let image = db
        .insert_image(&new_image.into_image())
        .await
        .expect("test setup");
    Fixture {
        organization,
        image,
    }
}

/// A device with a scripted connection, and an operation queued to put the fixture's image on
/// it.
pub(crate) async fn queued_device(db: &Db, fixture: &Fixture, name: &str) -> UpgradeOperation {
    let mac = format!(
        "02:00:00:{:02X}:{:02X}:{:02X}",
        name.len(),
        name.bytes().map(u32::from).sum::<u32>() % 256,
        name.bytes().last().unwrap_or(0)
    );
    let mut new_device = NewDevice::new(
        fixture.organization.id,
        name,
        mac.parse().expect("test setup"),
    );
    new_device.model = "TP-Link Archer C7 v2".into();
    new_device.management_ip = Some("127.0.0.1".into());
    let device = db
        .insert_device(&new_device.into_device())
        .await
        .expect("test setup");
    let mut credentials = NewCredentials::new(
        Some(fixture.organization.id),
        format!("{name} root"),
        "root",
        CredentialsSecret::Password(SecretText::new("secret")),
    );
    credentials.connection_type = flashfleet_models::ConnectionType::new(SCRIPTED);
    let credentials = db
        .insert_credentials(&credentials.into_credentials())
        .await
        .expect("test setup");
    db.insert_connection(
        &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
    )
    .await
    .expect("test setup");
    db.queue_upgrade(
        &DeviceFirmware::new(device.id, fixture.image.id, false),
        &NewUpgradeOperation::new(device.id, fixture.image.id).into_operation(),
    )
    .await
    .expect("test setup")
}

/// Leaves `operation` as an engine that claimed it, recorded `phase` (through the guarded
/// flash write for `Flashing` and later) and died would: its lease held by "crashed", then
/// expired.
pub(crate) async fn crashed_at(db: &Db, operation: &UpgradeOperation, phase: UpgradePhase) {
    let fence = db
        .claim_for_test(operation.id, "crashed")
        .await
        .expect("test setup");
    if phase.is_past_flash() {
        db.begin_flash(operation.id, &fence, None, "flashing")
            .await
            .expect("test setup");
    }
    if phase != UpgradePhase::Flashing {
        db.record_progress(
            operation.id,
            &fence,
            &flashfleet_models::repository::ProgressUpdate {
                phase,
                progress: phase.milestone(),
                log_line: None,
            },
        )
        .await
        .expect("test setup");
    }
    db.expire_lease(operation.id).await.expect("test setup");
}

/// The operation as stored now.
pub(crate) async fn stored(db: &Db, operation: &UpgradeOperation) -> UpgradeOperation {
    db.operation(&flashfleet_models::Scope::All, operation.id)
        .await
        .expect("a test step")
        .expect("a test step")
}

/// Whether the firmware record of the operation's device says its image is installed.
pub(crate) async fn installed(db: &Db, operation: &UpgradeOperation) -> bool {
    db.device_firmware(operation.device_id)
        .await
        .expect("a test step")
        .expect("a test step")
        .installed
}

//! A simulated world for the engine's end-to-end tests: an image stored in firmware storage
//! as the API stores an upload, a fleet of simulated OpenWrt devices (devsim, real SSH on
//! loopback) registered with their connections, and engines running the OpenWrt upgrader.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use flashfleet_boards::test_image::TestImage;
use flashfleet_db::Db;
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use flashfleet_engine::{Engine, EngineConfig, EventBus};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::{DeviceRepository, FirmwareRepository};
use flashfleet_models::{
    Build, ConnectionType, DeviceFirmware, DeviceId, FirmwareImage, NewBuild, NewCredentials,
    NewDevice, NewDeviceConnection, NewFirmwareImage, Scope,
};
use flashfleet_storage::{FirmwareStore, FirmwareStoreOptions};
use flashfleet_upgrader::UpgraderRegistry;
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use sha2::{Digest as _, Sha256};
use tokio_util::io::ReaderStream;

use crate::support::fixture;

pub(crate) const BOARD_NAME: &str = "tplink,archer-c7-v2";
pub(crate) const MODEL: &str = "TP-Link Archer C7 v2";
/// The release of the image the world's devices are upgraded to.
pub(crate) const NEW_VERSION: &str = "24.10.0";

/// Devices on the fixture's image (installed), and a newer build's image in storage.
pub(crate) struct World {
    pub(crate) fleet: Fleet,
    pub(crate) store: FirmwareStore,
    pub(crate) newer: Build,
    pub(crate) new_image: FirmwareImage,
    pub(crate) sha256: String,
    _directory: tempfile::TempDir,
}

impl World {
    /// `devices` devices with `spec` applied to each, rebooting with `reboot`.
    pub(crate) async fn start(
        db: &Db,
        devices: usize,
        image_bytes: u64,
        reboot: RebootTiming,
        spec: impl Fn(&mut DeviceSpec),
    ) -> World {
        let directory = tempfile::tempdir().expect("a test step");
        let image_path = directory
            .path()
            .join("openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin");
        TestImage::builder()
            .payload_len(image_bytes)
            .supported_devices([BOARD_NAME])
            .version_field("version", NEW_VERSION)
            .version_field("revision", "r28427-6df0e3d02a")
            .build()
            .write_to(std::fs::File::create(&image_path).expect("a test step"))
            .expect("a test step");
        let sha256: String = Sha256::digest(std::fs::read(&image_path).expect("a test step"))
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let file_name = image_path
            .file_name()
            .expect("a test step")
            .to_string_lossy()
            .into_owned();
        let store = FirmwareStore::local(
            directory.path().join("storage"),
            FirmwareStoreOptions::default(),
        )
        .expect("a test step");

        let fixture = fixture(db).await;
        let (build, _) = db
            .build(&Scope::All, fixture.image.build_id)
            .await
            .expect("a test step")
            .expect("a test step");
        let newer = db
            .insert_build(&NewBuild::new(build.category_id, NEW_VERSION).into_build())
            .await
            .expect("a test step");
        // The image is stored as the API stores an upload: streamed, inspected, committed.
        let staged = store
            .upload(
                newer.id,
                &file_name,
                ReaderStream::new(
                    tokio::fs::File::open(&image_path)
                        .await
                        .expect("a test step"),
                ),
            )
            .await
            .expect("a test step");
        assert_eq!(staged.sha256(), sha256);
        let metadata = staged
            .inspection()
            .expect("a test step")
            .metadata
            .as_ref()
            .expect("a test step");
        let mut new_image = NewFirmwareImage {
            build_id: newer.id,
            image_type: String::new(),
            file_name: file_name.clone(),
            size: staged.size(),
            sha256: staged.sha256().to_owned(),
            storage_key: staged.storage_key().clone(),
            metadata: Some(serde_json::from_str(metadata.raw_json()).expect("a test step")),
            details: Default::default(),
        };
        new_image
            .validate(|image_type| image_type == fixture.image.image_type)
            .expect("a test step");
        staged.commit().await.expect("a test step");
        let new_image = db
            .insert_image(&new_image.into_image())
            .await
            .expect("a test step");

        let specs: Vec<DeviceSpec> = (0..devices)
            .map(|_| {
                let mut device = DeviceSpec::openwrt(uuid::Uuid::new_v4(), BOARD_NAME, MODEL);
                spec(&mut device);
                device
            })
            .collect();
        let fleet = Fleet::start(FleetConfig {
            devices: specs,
            addressing: Addressing::Ports {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: 0,
            },
            reboot,
            credentials: ClientCredentials::generate(),
        })
        .await
        .expect("a test step");
        for (index, simulated) in fleet.devices().iter().enumerate() {
            let mut new_device = NewDevice::new(
                fixture.organization.id,
                format!("ap-{index}"),
                format!("02:00:00:00:01:{index:02X}")
                    .parse()
                    .expect("a test step"),
            );
            new_device.id = Some(DeviceId(simulated.uuid()));
            new_device.model = MODEL.into();
            new_device.board_name = BOARD_NAME.into();
            new_device.management_ip = Some(simulated.address().ip().to_string());
            let device = db
                .insert_device(&new_device.into_device())
                .await
                .expect("a test step");
            let mut credentials = NewCredentials::new(
                Some(fixture.organization.id),
                format!("ap-{index} root"),
                fleet.credentials().username.clone(),
                CredentialsSecret::Password(SecretText::new(fleet.credentials().password.clone())),
            );
            credentials.port = simulated.address().port();
            credentials.connection_type = ConnectionType::openwrt_ssh();
            let credentials = db
                .insert_credentials(&credentials.into_credentials())
                .await
                .expect("a test step");
            db.insert_connection(
                &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
            )
            .await
            .expect("a test step");
            db.insert_device_firmware(&DeviceFirmware::new(device.id, fixture.image.id, true))
                .await
                .expect("a test step");
        }
        World {
            fleet,
            store,
            newer,
            new_image,
            sha256,
            _directory: directory,
        }
    }

    /// An engine on `db` running the OpenWrt upgrader with short delays and `config`.
    pub(crate) fn engine(&self, db: &Db, config: EngineConfig) -> Engine {
        self.engine_with(db, config, |_| {})
    }

    /// Like [`World::engine`], with the OpenWrt settings changed by `settings`.
    pub(crate) fn engine_with(
        &self,
        db: &Db,
        config: EngineConfig,
        settings: impl FnOnce(&mut OpenWrtSettings),
    ) -> Engine {
        let mut openwrt = OpenWrtSettings {
            reconnect_delay: Duration::from_millis(200),
            reconnect_retry_delay: Duration::from_millis(100),
            reconnect_max_retries: 50,
            upgrade_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..OpenWrtSettings::default()
        };
        settings(&mut openwrt);
        let mut upgraders = UpgraderRegistry::empty();
        upgraders.register(
            ConnectionType::OPENWRT_SSH,
            Arc::new(OpenWrtUpgrader::new(openwrt)),
        );
        Engine::new(
            Arc::new(db.clone()),
            upgraders,
            Arc::new(self.store.clone()),
            EventBus::default(),
            config,
        )
    }
}

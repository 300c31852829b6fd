//! The whole chain on real SSH: an image uploaded to firmware storage, then the engine runs a
//! mass upgrade with the OpenWrt upgrader against simulated OpenWrt devices, reading the image
//! from that storage.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use flashfleet_boards::test_image::TestImage;
use flashfleet_db::testing::TestDb;
use flashfleet_devsim::{
    Addressing, ClientCredentials, DeviceSpec, Fleet, FleetConfig, RebootTiming,
};
use flashfleet_engine::{Engine, EventBus, MassUpgradeRequest};
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::{DeviceRepository, FirmwareRepository, UpgradeRepository};
use flashfleet_models::{
    BatchStatus, ConnectionType, DeviceFirmware, DeviceId, NewBuild, NewCredentials, NewDevice,
    NewDeviceConnection, NewFirmwareImage, Scope, UpgradeStatus,
};
use flashfleet_storage::{FirmwareStore, FirmwareStoreOptions};
use flashfleet_upgrader::UpgraderRegistry;
use flashfleet_upgrader::openwrt::{OpenWrtSettings, OpenWrtUpgrader};
use sha2::{Digest as _, Sha256};
use tokio_util::io::ReaderStream;

use crate::support::{fast_config, fixture};

const BOARD_NAME: &str = "tplink,archer-c7-v2";
const MODEL: &str = "TP-Link Archer C7 v2";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mass_upgrade_of_simulated_openwrt_devices_flashes_each_exactly_once() {
    let directory = tempfile::tempdir().unwrap();
    let image_path = directory
        .path()
        .join("openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin");
    TestImage::builder()
        .payload_len(256 * 1024)
        .supported_devices([BOARD_NAME])
        .version_field("version", "24.10.0")
        .version_field("revision", "r28427-6df0e3d02a")
        .build()
        .write_to(std::fs::File::create(&image_path).unwrap())
        .unwrap();
    let bytes = std::fs::read(&image_path).unwrap();
    let sha256 = hex_digest(&bytes);
    let file_name = image_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let store = FirmwareStore::local(
        directory.path().join("storage"),
        FirmwareStoreOptions::default(),
    )
    .unwrap();

    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let (build, _) = db
            .build(&Scope::All, fixture.image.build_id)
            .await
            .unwrap()
            .unwrap();
        let newer = db
            .insert_build(&NewBuild::new(build.category_id, "24.10.0").into_build())
            .await
            .unwrap();
        // The image is stored as the API stores an upload: streamed, inspected, committed.
        let staged = store
            .upload(
                newer.id,
                &file_name,
                ReaderStream::new(tokio::fs::File::open(&image_path).await.unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(staged.sha256(), sha256);
        let metadata = staged.inspection().unwrap().metadata.as_ref().unwrap();
        let mut new_image = NewFirmwareImage {
            build_id: newer.id,
            image_type: String::new(),
            file_name: file_name.clone(),
            size: staged.size(),
            sha256: staged.sha256().to_owned(),
            storage_key: staged.storage_key().clone(),
            metadata: Some(serde_json::from_str(metadata.raw_json()).unwrap()),
            details: Default::default(),
        };
        new_image
            .validate(|image_type| image_type == fixture.image.image_type)
            .unwrap();
        staged.commit().await.unwrap();
        let new_image = db.insert_image(&new_image.into_image()).await.unwrap();

        let specs: Vec<DeviceSpec> = (0..6)
            .map(|_| DeviceSpec::openwrt(uuid::Uuid::new_v4(), BOARD_NAME, MODEL))
            .collect();
        let fleet = Fleet::start(FleetConfig {
            devices: specs,
            addressing: Addressing::Ports {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: 0,
            },
            reboot: RebootTiming {
                close_after: Duration::from_millis(50),
                down_for: Duration::from_millis(300),
            },
            credentials: ClientCredentials::generate(),
        })
        .await
        .unwrap();
        for (index, simulated) in fleet.devices().iter().enumerate() {
            let mut new_device = NewDevice::new(
                fixture.organization.id,
                format!("ap-{index}"),
                format!("02:00:00:00:01:{index:02X}").parse().unwrap(),
            );
            new_device.id = Some(DeviceId(simulated.uuid()));
            new_device.model = MODEL.into();
            new_device.board_name = BOARD_NAME.into();
            new_device.management_ip = Some(simulated.address().ip().to_string());
            let device = db.insert_device(&new_device.into_device()).await.unwrap();
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
                .unwrap();
            db.insert_connection(
                &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
            )
            .await
            .unwrap();
            db.insert_device_firmware(&DeviceFirmware::new(device.id, fixture.image.id, true))
                .await
                .unwrap();
        }

        let settings = OpenWrtSettings {
            reconnect_delay: Duration::from_millis(200),
            reconnect_retry_delay: Duration::from_millis(100),
            reconnect_max_retries: 50,
            upgrade_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..OpenWrtSettings::default()
        };
        let mut upgraders = UpgraderRegistry::empty();
        upgraders.register(
            ConnectionType::OPENWRT_SSH,
            Arc::new(OpenWrtUpgrader::new(settings)),
        );
        let engine = Engine::new(
            Arc::new(db.clone()),
            upgraders,
            Arc::new(store.clone()),
            EventBus::default(),
            fast_config("engine"),
        );
        let request = MassUpgradeRequest {
            build_id: Some(newer.id),
            ..MassUpgradeRequest::default()
        };
        let started = engine
            .start_mass_upgrade(&Scope::All, &request, false)
            .await
            .unwrap();
        assert_eq!(
            started.operations.len(),
            6,
            "backend: {}",
            test_db.backend()
        );
        engine.run_until_idle().await.unwrap();

        for operation in &started.operations {
            let stored = db
                .operation(&Scope::All, operation.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.status,
                UpgradeStatus::Success,
                "backend: {}: {}",
                test_db.backend(),
                stored.log
            );
            assert_eq!(stored.image_id, Some(new_image.id));
        }
        for simulated in fleet.devices() {
            assert_eq!(simulated.flash_count(), 1, "backend: {}", test_db.backend());
            assert_eq!(simulated.release().version, "24.10.0");
            assert_eq!(
                simulated
                    .file("/etc/openwisp/firmware_checksum")
                    .map(|text| text.trim().to_owned()),
                Some(sha256.clone())
            );
            let firmware = db
                .device_firmware(DeviceId(simulated.uuid()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (firmware.image_id, firmware.installed),
                (new_image.id, true)
            );
        }
        let batch = db
            .batch(&Scope::All, started.batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            batch.status,
            BatchStatus::Success,
            "backend: {}",
            test_db.backend()
        );
        fleet.shutdown().await;
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

//! Device hooks: recording which image a device runs from its OS identifier.

use std::sync::Arc;

use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, EventBus};
use flashfleet_models::repository::{
    DeviceRepository, FirmwareRepository, OperationFilter, UpgradeRepository,
};
use flashfleet_models::{
    FirmwareImage, NewBuild, NewDevice, NewFirmwareImage, PageRequest, Scope, StorageKey,
};
use flashfleet_upgrader::UpgraderRegistry;

use crate::support::{EmptyFiles, Fixture, fast_config, fixture};

const OS: &str = "OpenWrt 23.05.3 r23809-234f1a2efa";

fn engine(db: &flashfleet_db::Db) -> Engine {
    Engine::new(
        Arc::new(db.clone()),
        UpgraderRegistry::empty(),
        Arc::new(EmptyFiles),
        EventBus::default(),
        fast_config("engine"),
    )
}

async fn build_with_os(
    db: &flashfleet_db::Db,
    fixture: &Fixture,
    version: &str,
    os: &str,
) -> FirmwareImage {
    let (build, _) = db
        .build(&Scope::All, fixture.image.build_id)
        .await
        .expect("the fixture build")
        .expect("present");
    let mut new_build = NewBuild::new(build.category_id, version);
    new_build.os = Some(os.to_owned());
    let build = db
        .insert_build(&new_build.into_build())
        .await
        .expect("a build");
    let mut image = NewFirmwareImage {
        build_id: build.id,
        image_type: fixture.image.image_type.clone(),
        file_name: format!("{version}.bin"),
        size: 4,
        sha256: "2".repeat(64),
        storage_key: StorageKey::for_image(build.id, "image.bin"),
        metadata: None,
        details: Default::default(),
    };
    image.validate(|_| true).expect("a valid image");
    db.insert_image(&image.into_image())
        .await
        .expect("an image")
}

async fn device_with_os(
    db: &flashfleet_db::Db,
    fixture: &Fixture,
    name: &str,
    os: &str,
) -> flashfleet_models::Device {
    let mut new_device = NewDevice::new(
        fixture.organization.id,
        name,
        format!(
            "02:00:00:00:{:02X}:{:02X}",
            name.len(),
            name.bytes().map(u32::from).sum::<u32>() % 256
        )
        .parse()
        .expect("a MAC"),
    );
    new_device.model = "TP-Link Archer C7 v2".into();
    new_device.os = os.into();
    db.insert_device(&new_device.into_device())
        .await
        .expect("a device")
}

#[tokio::test]
async fn a_registered_device_is_recorded_on_the_build_of_its_os_without_upgrading() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let image = build_with_os(db, &fixture, "3.0", OS).await;
        let device = device_with_os(db, &fixture, "ap", OS).await;
        let engine = engine(db);

        let recorded = engine.device_registered(device.id).await.unwrap().unwrap();
        assert_eq!(
            (recorded.image_id, recorded.installed),
            (image.id, true),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            engine.device_registered(device.id).await.unwrap(),
            None,
            "nothing changes the second time"
        );
        let operations = db
            .list_operations(&Scope::All, &OperationFilter::default(), PageRequest::all())
            .await
            .unwrap();
        assert_eq!(
            operations.count,
            0,
            "backend: {}: no upgrade is started",
            test_db.backend()
        );

        let mut unknown = device_with_os(db, &fixture, "unknown-os", "Some OS").await;
        assert_eq!(engine.device_registered(unknown.id).await.unwrap(), None);
        // The device reports another OS: a build with that OS identifier now matches.
        let newer = build_with_os(db, &fixture, "4.0", "OpenWrt 24.10.0").await;
        unknown.os = "OpenWrt 24.10.0".into();
        db.update_device(&unknown).await.unwrap();
        let recorded = engine.device_registered(unknown.id).await.unwrap().unwrap();
        assert_eq!(
            recorded.image_id,
            newer.id,
            "backend: {}",
            test_db.backend()
        );
        let mut moved = device.clone();
        moved.os = "OpenWrt 24.10.0".into();
        db.update_device(&moved).await.unwrap();
        let recorded = engine.device_registered(device.id).await.unwrap().unwrap();
        assert_eq!(
            (recorded.image_id, recorded.installed),
            (newer.id, true),
            "backend: {}: an OS change moves the record",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn an_added_image_records_the_devices_that_run_its_build() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let matching = device_with_os(db, &fixture, "matching", OS).await;
        let other = device_with_os(db, &fixture, "other-os", "Other").await;
        let image = build_with_os(db, &fixture, "3.0", OS).await;

        let recorded = engine(db).image_added(image.id).await.unwrap();
        assert_eq!(
            recorded
                .iter()
                .map(|record| record.device_id)
                .collect::<Vec<_>>(),
            [matching.id],
            "backend: {}",
            test_db.backend()
        );
        assert!(db.device_firmware(other.id).await.unwrap().is_none());
    }
}

//! Mass upgrades and single upgrades: the dry run, starting, running, cancelling.

use std::sync::Arc;

use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, EngineError, EventBus, MassUpgradeRequest};
use flashfleet_models::repository::{
    DeviceRepository, FirmwareRepository, OperationFilter, UpgradeRepository,
};
use flashfleet_models::{
    BatchStatus, Constraint, DeviceFirmware, NewBuild, NewFirmwareImage, PageRequest, RepoError,
    Scope, StorageKey, UpgradeOptions, UpgradeStatus,
};
use flashfleet_upgrader::UpgraderRegistry;

use crate::support::{EmptyFiles, SCRIPTED, ScriptedUpgrader, fast_config, fixture, queued_device};

fn engine(db: &flashfleet_db::Db) -> Engine {
    let mut upgraders = UpgraderRegistry::empty();
    upgraders.register(
        SCRIPTED,
        Arc::new(ScriptedUpgrader::default()) as Arc<dyn flashfleet_upgrader::Upgrader>,
    );
    Engine::new(
        Arc::new(db.clone()),
        upgraders,
        Arc::new(EmptyFiles),
        EventBus::default(),
        fast_config("engine"),
    )
}

/// Builds "1.0" next to the fixture's "2.0", with an image of the same type.
async fn older_image(
    db: &flashfleet_db::Db,
    fixture: &crate::support::Fixture,
) -> flashfleet_models::FirmwareImage {
    let (build, _) = db
        .build(&Scope::All, fixture.image.build_id)
        .await
        .expect("test setup")
        .expect("test setup");
    let older = db
        .insert_build(&NewBuild::new(build.category_id, "1.0").into_build())
        .await
        .expect("test setup");
    let mut image = NewFirmwareImage {
        build_id: older.id,
        image_type: fixture.image.image_type.clone(),
        file_name: "old.bin".into(),
        size: 4,
        sha256: "1".repeat(64),
        storage_key: StorageKey::for_image(older.id, "old.bin"),
        metadata: None,
        details: Default::default(),
    };
    image.validate(|_| true).expect("test setup");
    db.insert_image(&image.into_image())
        .await
        .expect("test setup")
}

/// A device on `image` (installed, no operation), made with the fixture's helper.
async fn device_on(
    db: &flashfleet_db::Db,
    fixture: &crate::support::Fixture,
    name: &str,
    image: &flashfleet_models::FirmwareImage,
) -> flashfleet_models::Device {
    let operation = queued_device(db, fixture, name).await;
    // Remove the queued operation and put the device on `image`, installed.
    db.delete_device_firmware(operation.device_id)
        .await
        .expect("test setup");
    db.insert_device_firmware(&DeviceFirmware::new(operation.device_id, image.id, true))
        .await
        .expect("test setup");
    db.cancel_operation(operation.id).await.expect("test setup");
    db.device(&Scope::All, operation.device_id)
        .await
        .expect("test setup")
        .expect("test setup")
}

#[tokio::test]
async fn the_dry_run_lists_upstreams_target_set_with_verdicts_and_writes_nothing() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let older = older_image(db, &fixture).await;
        let known = device_on(db, &fixture, "known", &older).await;
        let current = device_on(db, &fixture, "current", &fixture.image).await;
        let mut retired = device_on(db, &fixture, "retired", &older).await;
        retired.is_deactivated = true;
        db.update_device(&retired).await.unwrap();
        let firmwareless = {
            let operation = queued_device(db, &fixture, "firmwareless").await;
            db.cancel_operation(operation.id).await.unwrap();
            db.delete_device_firmware(operation.device_id)
                .await
                .unwrap();
            operation.device_id
        };
        let engine = engine(db);
        let operations_before = db
            .list_operations(&Scope::All, &OperationFilter::default(), PageRequest::all())
            .await
            .unwrap()
            .count;

        let request = MassUpgradeRequest {
            build_id: Some(fixture.image.build_id),
            ..MassUpgradeRequest::default()
        };
        let plan = engine
            .plan_mass_upgrade(&Scope::All, &request)
            .await
            .unwrap();
        let planned: Vec<_> = plan
            .upgrades
            .iter()
            .map(|upgrade| upgrade.device.id)
            .collect();
        assert_eq!(
            planned,
            [known.id],
            "backend: {}: only the known device on another build",
            test_db.backend()
        );
        assert_eq!(plan.upgrades[0].image.id, fixture.image.id);
        assert!(
            matches!(
                plan.upgrades[0].verdict,
                flashfleet_boards::Verdict::Unknown {
                    map_lists_model: true
                }
            ),
            "an image without metadata has an unknown verdict backed by the map: {:?}",
            plan.upgrades[0].verdict
        );

        let with_firmwareless = MassUpgradeRequest {
            upgrade_all: true,
            ..request.clone()
        };
        let plan = engine
            .plan_mass_upgrade(&Scope::All, &with_firmwareless)
            .await
            .unwrap();
        let planned: Vec<_> = plan
            .upgrades
            .iter()
            .map(|upgrade| upgrade.device.id)
            .collect();
        assert_eq!(
            planned,
            [known.id, firmwareless],
            "backend: {}",
            test_db.backend()
        );
        assert!(!planned.contains(&current.id) && !planned.contains(&retired.id));

        let operations_after = db
            .list_operations(&Scope::All, &OperationFilter::default(), PageRequest::all())
            .await
            .unwrap()
            .count;
        assert_eq!(
            operations_before,
            operations_after,
            "backend: {}: a dry run writes nothing",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_mass_upgrade_queues_runs_and_ends_with_its_batch_status() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let older = older_image(db, &fixture).await;
        let first = device_on(db, &fixture, "first", &older).await;
        let second = device_on(db, &fixture, "second", &older).await;
        let engine = engine(db);
        let request = MassUpgradeRequest {
            build_id: Some(fixture.image.build_id),
            ..MassUpgradeRequest::default()
        };

        let started = engine
            .start_mass_upgrade(&Scope::All, &request, false)
            .await
            .unwrap();
        assert_eq!(
            started.batch.status,
            BatchStatus::InProgress,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(started.operations.len(), 2);
        for device in [&first, &second] {
            let firmware = db.device_firmware(device.id).await.unwrap().unwrap();
            assert_eq!(
                (firmware.image_id, firmware.installed),
                (fixture.image.id, false)
            );
        }
        engine.run_until_idle().await.unwrap();

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
        let counters = db.batch_counters(batch.id).await.unwrap();
        assert_eq!((counters.total, counters.success), (2, 2));
        let again = engine
            .start_mass_upgrade(&Scope::All, &request, false)
            .await;
        assert!(
            matches!(again, Err(EngineError::Repository(RepoError::Invalid(ref errors))) if errors.messages("__all__")[0].starts_with("No devices found")),
            "backend: {}: nothing left to upgrade: {again:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn cancelling_a_mass_upgrade_before_it_runs_cancels_every_operation() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let older = older_image(db, &fixture).await;
        device_on(db, &fixture, "first", &older).await;
        device_on(db, &fixture, "second", &older).await;
        let engine = engine(db);
        let request = MassUpgradeRequest {
            build_id: Some(fixture.image.build_id),
            ..MassUpgradeRequest::default()
        };
        let started = engine
            .start_mass_upgrade(&Scope::All, &request, false)
            .await
            .unwrap();

        let cancelled = engine
            .cancel_mass_upgrade(&Scope::All, started.batch.id)
            .await
            .unwrap();
        assert_eq!(cancelled.len(), 2, "backend: {}", test_db.backend());
        engine.run_until_idle().await.unwrap();
        let batch = db
            .batch(&Scope::All, started.batch.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            batch.status,
            BatchStatus::Cancelled,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_single_upgrade_follows_upstreams_rules() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let older = older_image(db, &fixture).await;
        let device = device_on(db, &fixture, "ap-1", &older).await;
        let engine = engine(db);

        assert_eq!(
            engine
                .upgrade_device(
                    &Scope::All,
                    device.id,
                    older.id,
                    UpgradeOptions::default(),
                    false
                )
                .await
                .unwrap(),
            None,
            "backend: {}: the installed image again starts nothing",
            test_db.backend()
        );
        let operation = engine
            .upgrade_device(
                &Scope::All,
                device.id,
                fixture.image.id,
                UpgradeOptions::default(),
                false,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(operation.status, UpgradeStatus::InProgress);
        let busy = engine
            .upgrade_device(
                &Scope::All,
                device.id,
                older.id,
                UpgradeOptions::default(),
                false,
            )
            .await;
        assert!(
            matches!(
                busy,
                Err(EngineError::Repository(RepoError::AlreadyExists {
                    constraint: Constraint::OneUnfinishedOperationPerDevice
                }))
            ),
            "backend: {}: {busy:?}",
            test_db.backend()
        );
        let mut other_model = device.clone();
        other_model.model = "Some Other Router".into();
        db.update_device(&other_model).await.unwrap();
        engine
            .cancel_operation(&Scope::All, operation.id)
            .await
            .unwrap();
        let mismatch = engine
            .upgrade_device(
                &Scope::All,
                device.id,
                older.id,
                UpgradeOptions::default(),
                false,
            )
            .await;
        assert!(
            matches!(mismatch, Err(EngineError::Repository(RepoError::Invalid(ref errors))) if errors.messages("__all__") == ["Device model and image model do not match"]),
            "backend: {}: {mismatch:?}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_share_one_mass_upgrade_and_run_each_operation_once() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let older = older_image(db, &fixture).await;
        let mut devices = Vec::new();
        for index in 0..20 {
            devices.push(device_on(db, &fixture, &format!("ap-{index}"), &older).await);
        }
        let upgrader = Arc::new(ScriptedUpgrader {
            duration: std::time::Duration::from_millis(20),
            ..ScriptedUpgrader::default()
        });
        let registry = |upgrader: &Arc<ScriptedUpgrader>| {
            let mut upgraders = UpgraderRegistry::empty();
            upgraders.register(
                SCRIPTED,
                Arc::clone(upgrader) as Arc<dyn flashfleet_upgrader::Upgrader>,
            );
            upgraders
        };
        let first = Engine::new(
            Arc::new(db.clone()),
            registry(&upgrader),
            Arc::new(EmptyFiles),
            EventBus::default(),
            fast_config("engine-a"),
        );
        let second_db = flashfleet_db::Db::connect(&test_db.config()).await.unwrap();
        let second = Engine::new(
            Arc::new(second_db),
            registry(&upgrader),
            Arc::new(EmptyFiles),
            EventBus::default(),
            fast_config("engine-b"),
        );
        let request = MassUpgradeRequest {
            build_id: Some(fixture.image.build_id),
            ..MassUpgradeRequest::default()
        };
        let started = first
            .start_mass_upgrade(&Scope::All, &request, false)
            .await
            .unwrap();
        assert_eq!(started.operations.len(), 20);

        let (first_result, second_result) =
            tokio::join!(first.run_until_idle(), second.run_until_idle());
        first_result.unwrap();
        second_result.unwrap();

        for device in &devices {
            assert_eq!(
                upgrader.upgrades_of(device.id),
                1,
                "backend: {}: run exactly once",
                test_db.backend()
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
        let counters = db.batch_counters(batch.id).await.unwrap();
        assert_eq!((counters.total, counters.success), (20, 20));
    }
}

//! Running operations: outcomes, retries, recovery after a crash, timeouts, two engines.

use std::sync::Arc;
use std::time::Duration;

use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, Event, EventBus};
use flashfleet_models::repository::{DeviceRepository, UpgradeRepository};
use flashfleet_models::{Scope, UpgradePhase, UpgradeStatus};
use flashfleet_upgrader::UpgraderRegistry;

use crate::support::{
    EmptyFiles, SCRIPTED, ScriptedUpgrader, Step, crashed_at, fast_config, fixture, queued_device,
};

fn engine(db: &flashfleet_db::Db, upgrader: &Arc<ScriptedUpgrader>, name: &str) -> Engine {
    let mut upgraders = UpgraderRegistry::empty();
    upgraders.register(
        SCRIPTED,
        Arc::clone(upgrader) as Arc<dyn flashfleet_upgrader::Upgrader>,
    );
    Engine::new(
        Arc::new(db.clone()),
        upgraders,
        Arc::new(EmptyFiles),
        EventBus::default(),
        fast_config(name),
    )
}

#[tokio::test]
async fn a_queued_operation_runs_to_success_and_marks_the_firmware_installed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        let engine = engine(db, &upgrader, "engine-a");
        let mut events = engine.events().subscribe();

        engine.run_until_idle().await.unwrap();

        let stored = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.status, stored.progress, stored.phase),
            (UpgradeStatus::Success, 100, UpgradePhase::Done),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            stored.log,
            "connecting\nuploading\nflashing\nUpgrade completed successfully.",
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(stored.lease, None);
        let firmware = db
            .device_firmware(operation.device_id)
            .await
            .unwrap()
            .unwrap();
        assert!(firmware.installed, "backend: {}", test_db.backend());
        let mut statuses = Vec::new();
        while let Ok(Event::Operation(published)) = events.try_recv() {
            statuses.push((published.phase, published.status));
        }
        assert_eq!(
            statuses,
            [
                (UpgradePhase::Connecting, UpgradeStatus::InProgress),
                (UpgradePhase::Uploading, UpgradeStatus::InProgress),
                (UpgradePhase::Flashing, UpgradeStatus::InProgress),
                (UpgradePhase::Done, UpgradeStatus::Success)
            ],
            "backend: {}: every persisted change is published",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn recoverable_failures_are_retried_and_give_up_after_the_last_retry() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let recovers = queued_device(db, &fixture, "recovers").await;
        let never = queued_device(db, &fixture, "never").await;
        let aborts = queued_device(db, &fixture, "aborts").await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        {
            let mut scripts = upgrader.scripts.lock().unwrap();
            scripts.insert(
                recovers.device_id,
                vec![Step::FailRecoverably, Step::Succeed],
            );
            scripts.insert(never.device_id, vec![Step::FailRecoverably]);
            scripts.insert(aborts.device_id, vec![Step::Abort]);
        }
        engine(db, &upgrader, "engine-a")
            .run_until_idle()
            .await
            .unwrap();

        let recovered = db
            .operation(&Scope::All, recovers.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (recovered.status, recovered.attempts),
            (UpgradeStatus::Success, 1),
            "backend: {}",
            test_db.backend()
        );
        assert!(recovered.log.contains("Detected a recoverable failure: Connection failed.\nThe upgrade operation will be retried soon."));
        let failed = db.operation(&Scope::All, never.id).await.unwrap().unwrap();
        assert_eq!(
            (failed.status, failed.attempts),
            (UpgradeStatus::Failed, 2),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            failed
                .log
                .ends_with("Max retries exceeded. Upgrade failed: Connection failed."),
            "{}",
            failed.log
        );
        assert_eq!(
            upgrader.upgrades_of(never.device_id),
            3,
            "one attempt and two retries"
        );
        let aborted = db.operation(&Scope::All, aborts.id).await.unwrap().unwrap();
        assert_eq!(
            aborted.status,
            UpgradeStatus::Aborted,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            upgrader.upgrades_of(aborts.device_id),
            1,
            "aborts are not retried"
        );
        assert!(
            !db.device_firmware(aborts.device_id)
                .await
                .unwrap()
                .unwrap()
                .installed
        );
    }
}

#[tokio::test]
async fn an_operation_left_past_the_flash_by_a_crashed_engine_is_only_verified() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let before_flash = queued_device(db, &fixture, "before").await;
        let after_flash = queued_device(db, &fixture, "after").await;
        // A previous engine claimed both, reached these phases, and died: its leases expired.
        crashed_at(db, &before_flash, UpgradePhase::Uploading).await;
        crashed_at(db, &after_flash, UpgradePhase::Flashing).await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        engine(db, &upgrader, "engine-b")
            .run_until_idle()
            .await
            .unwrap();

        assert_eq!(
            (
                upgrader.upgrades_of(before_flash.device_id),
                upgrader.verifications_of(before_flash.device_id)
            ),
            (1, 0)
        );
        assert_eq!(
            (
                upgrader.upgrades_of(after_flash.device_id),
                upgrader.verifications_of(after_flash.device_id)
            ),
            (0, 1),
            "backend: {}: never flash twice blindly",
            test_db.backend()
        );
        for operation in [&before_flash, &after_flash] {
            let stored = db
                .operation(&Scope::All, operation.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.status,
                UpgradeStatus::Success,
                "backend: {}",
                test_db.backend()
            );
        }
        // The log tells the operator what the recovering engine did with each.
        let log_of = |operation: &flashfleet_models::UpgradeOperation| {
            let id = operation.id;
            async move { db.operation(&Scope::All, id).await.unwrap().unwrap().log }
        };
        let before_log = log_of(&before_flash).await;
        assert!(
            before_log.contains(
                "The previous attempt stopped in phase \"uploading\" before the flash; starting again."
            ),
            "{before_log}"
        );
        let after_log = log_of(&after_flash).await;
        assert!(
            after_log.contains(
                "The previous attempt stopped in phase \"flashing\", after the flash command; checking what the device runs now"
            ),
            "{after_log}"
        );
    }
}

#[tokio::test]
async fn operations_past_the_task_timeout_fail_and_free_their_device() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let stuck = queued_device(db, &fixture, "stuck").await;
        crashed_at(db, &stuck, UpgradePhase::Uploading).await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        let mut config = crate::support::fast_config("engine-b");
        config.task_timeout = Duration::ZERO;
        let mut upgraders = UpgraderRegistry::empty();
        upgraders.register(
            SCRIPTED,
            Arc::clone(&upgrader) as Arc<dyn flashfleet_upgrader::Upgrader>,
        );
        Engine::new(
            Arc::new(db.clone()),
            upgraders,
            Arc::new(EmptyFiles),
            EventBus::default(),
            config,
        )
        .run_until_idle()
        .await
        .unwrap();

        let stored = db.operation(&Scope::All, stuck.id).await.unwrap().unwrap();
        assert_eq!(
            stored.status,
            UpgradeStatus::Failed,
            "backend: {}",
            test_db.backend()
        );
        assert!(stored.log.ends_with("Operation timed out."));
        assert_eq!(upgrader.upgrades_of(stuck.device_id), 0);
        assert!(
            db.unfinished_operation(stuck.device_id)
                .await
                .unwrap()
                .is_none(),
            "the device is free again"
        );
    }
}

#[tokio::test]
async fn a_device_without_connection_fails_instead_of_waiting_forever() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        for (connection, _) in db.connections(operation.device_id).await.unwrap() {
            db.delete_connection(connection.id).await.unwrap();
        }
        let upgrader = Arc::new(ScriptedUpgrader::default());
        engine(db, &upgrader, "engine-a")
            .run_until_idle()
            .await
            .unwrap();
        let stored = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.status,
            UpgradeStatus::Failed,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(stored.log, "No device connection available");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_on_one_database_never_run_one_operation_twice() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let mut operations = Vec::new();
        for index in 0..24 {
            operations.push(queued_device(db, &fixture, &format!("ap-{index}")).await);
        }
        let upgrader = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(30),
            ..ScriptedUpgrader::default()
        });
        let second_db = flashfleet_db::Db::connect(&test_db.config()).await.unwrap();
        let first = engine(db, &upgrader, "engine-a");
        let second = engine(&second_db, &upgrader, "engine-b");
        let (first_result, second_result) =
            tokio::join!(first.run_until_idle(), second.run_until_idle());
        first_result.unwrap();
        second_result.unwrap();

        for operation in &operations {
            assert_eq!(
                upgrader.upgrades_of(operation.device_id),
                1,
                "backend: {}: run exactly once",
                test_db.backend()
            );
            let stored = db
                .operation(&Scope::All, operation.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.status,
                UpgradeStatus::Success,
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_and_preparing_upgrades_at_once_stay_within_their_limits() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        for index in 0..6 {
            queued_device(db, &fixture, &format!("ap-{index}")).await;
        }
        let upgrader = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(50),
            ..ScriptedUpgrader::default()
        });
        // fast_config runs 8 upgrades at once but only 2 uploads.
        engine(db, &upgrader, "engine-a")
            .run_until_idle()
            .await
            .unwrap();
        let (open, most) = *upgrader.uploads.lock().unwrap();
        assert_eq!((open, most), (0, 2), "backend: {}", test_db.backend());
        // 6 upgrades would all connect at once; only 4 may prepare (connect..upload).
        let (preparing, most) = *upgrader.preparing.lock().unwrap();
        assert_eq!((preparing, most), (0, 4), "backend: {}", test_db.backend());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_engine_leaves_its_operations_at_their_last_persisted_step() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let slow = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(500),
            ..ScriptedUpgrader::default()
        });
        let stopping_engine = engine(db, &slow, "engine-stopping");
        let mut events = stopping_engine.events().subscribe();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let engine = stopping_engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        loop {
            match events.recv().await.unwrap() {
                Event::Operation(stored) if stored.phase == UpgradePhase::Uploading => break,
                _ => {}
            }
        }
        // Stop while the image is uploading: the next report (flashing) is refused.
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let stopped = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stopped.status, stopped.phase, stopped.lease.clone()),
            (UpgradeStatus::InProgress, UpgradePhase::Uploading, None),
            "stopped before the flash with its lease given back, backend: {}",
            test_db.backend()
        );

        let upgrader = Arc::new(ScriptedUpgrader::default());
        engine(db, &upgrader, "engine-restarted")
            .run_until_idle()
            .await
            .unwrap();
        let finished = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.status, UpgradeStatus::Success);
        assert_eq!(
            (
                slow.upgrades_of(finished.device_id),
                upgrader.upgrades_of(finished.device_id)
            ),
            (1, 1),
            "started over once by the next engine"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_heartbeat_comes_late_stops_its_run_and_never_runs_an_upgrade_twice_at_once()
 {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let slow = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(1500),
            ..ScriptedUpgrader::default()
        });
        let mut upgraders = UpgraderRegistry::empty();
        upgraders.register(
            SCRIPTED,
            Arc::clone(&slow) as Arc<dyn flashfleet_upgrader::Upgrader>,
        );
        // As on a machine too loaded to renew in time: the heartbeat's renewals take longer
        // than the lease, so the lease lapses in the middle of the upload.
        let late_db = db.clone().with_own_faults();
        late_db
            .faults()
            .delay_renewals(Some(Duration::from_millis(1500)));
        let config = flashfleet_engine::EngineConfig {
            lease: Duration::from_secs(1),
            heartbeat: Duration::from_millis(200),
            ..fast_config("engine-late")
        };
        let late = Engine::new(
            Arc::new(late_db.clone()),
            upgraders,
            Arc::new(EmptyFiles),
            EventBus::default(),
            config,
        );
        let mut events = late.events().subscribe();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let engine = late.clone();
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        // The first run stops when its lease lapses; the engine claims the operation again
        // once the database lets it and starts it over. Then the heartbeat recovers.
        tokio::time::timeout(Duration::from_secs(30), async {
            while slow.upgrades_of(operation.device_id) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the upgrade is started over after its lease lapsed");
        late_db.faults().delay_renewals(None);
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match events.recv().await.unwrap() {
                    Event::Operation(stored) if stored.status.is_final() => break,
                    _ => {}
                }
            }
        })
        .await
        .expect("the upgrade ends");
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let finished = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                finished.status,
                slow.most_at_once(),
                slow.flashes_of(finished.device_id),
                finished.flash_attempts
            ),
            (UpgradeStatus::Success, 1, 1, 1),
            "never two runs at once, one flash; backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(
            finished.log.contains("before the flash; starting again"),
            "{}",
            finished.log
        );
    }
}

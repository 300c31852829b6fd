//! Device safety under races and crashes, with a scripted upgrader: fenced leases, the
//! database's clock, outcomes only from facts, verification past the flash, failures that are
//! attempts, and writes that a timeout cannot cut.

use std::sync::Arc;
use std::time::Duration;

use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, EngineConfig, EventBus};
use flashfleet_models::repository::{DeviceRepository, DirectoryRepository, FirmwareRepository};
use flashfleet_models::{NewOrganization, Scope, UpgradeOptions, UpgradePhase, UpgradeStatus};
use flashfleet_upgrader::UpgraderRegistry;

use crate::support::{
    EmptyFiles, SCRIPTED, ScriptedUpgrader, Step, crashed_at, fast_config, fixture, installed,
    queued_device, stored,
};

fn engine_with(db: &Db, upgrader: &Arc<ScriptedUpgrader>, config: EngineConfig) -> Engine {
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
        config,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_an_engine_whose_clock_is_60_s_ahead_cannot_take_a_live_lease() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let upgrader = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(1500),
            ..ScriptedUpgrader::default()
        });
        let honest = engine_with(db, &upgrader, fast_config("engine-honest"));
        // A server whose clock runs 60 s ahead: with leases written and compared by the
        // engines' clocks, it would see the honest engine's 30 s lease as long expired.
        let skewed_db = db
            .clone()
            .with_own_faults()
            .with_clock_skew(chrono::TimeDelta::seconds(60));
        let skewed = engine_with(&skewed_db, &upgrader, fast_config("engine-skewed"));

        let honest_run = tokio::spawn({
            let honest = honest.clone();
            async move { honest.run_until_idle().await }
        });
        // Once the honest engine holds the lease, the skewed one tries, again and again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stored(db, &operation).await.lease.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "never claimed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while !stored(db, &operation).await.status.is_final() {
            skewed.run_until_idle().await.expect("a test step");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        honest_run.await.expect("a test step").expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, upgrader.upgrades_of(operation.device_id)),
            (UpgradeStatus::Success, 1),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_a_late_heartbeat_lets_the_next_engine_take_over_and_the_first_flash_nothing() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        // The upload takes 2 s; the first engine's lease lasts 1 s and its heartbeat renews 3 s
        // late, so the lease expires in the middle of the upload.
        let upgrader = Arc::new(ScriptedUpgrader {
            duration: Duration::from_millis(2000),
            ..ScriptedUpgrader::default()
        });
        let late_db = db.clone().with_own_faults();
        late_db
            .faults()
            .delay_renewals(Some(Duration::from_secs(3)));
        let late = engine_with(
            &late_db,
            &upgrader,
            EngineConfig {
                lease: Duration::from_secs(1),
                heartbeat: Duration::from_millis(200),
                ..fast_config("engine-late")
            },
        );
        let punctual_db = db.clone().with_own_faults();
        let punctual = engine_with(&punctual_db, &upgrader, fast_config("engine-punctual"));

        let late_run = tokio::spawn({
            let late = late.clone();
            async move { late.run_until_idle().await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while upgrader.upgrades_of(operation.device_id) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The second engine polls until the first one's lease expired and the operation was
        // claimed again (by either engine: the late one may win the claim, and lapse again).
        while upgrader.upgrades_of(operation.device_id) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "never taken over");
            punctual.run_until_idle().await.expect("a test step");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Then the late engine's heartbeat recovers, so that whichever engine holds the
        // operation can finish it.
        late_db.faults().delay_renewals(None);
        late_run.await.expect("a test step").expect("a test step");
        while !stored(db, &operation).await.status.is_final() {
            assert!(tokio::time::Instant::now() < deadline, "never finished");
            punctual.run_until_idle().await.expect("a test step");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let finished = stored(db, &operation).await;
        assert_eq!(
            finished.status,
            UpgradeStatus::Success,
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert_eq!(
            (
                upgrader.flashes_of(operation.device_id),
                finished.flash_attempts,
                upgrader.most_at_once()
            ),
            (1, 1, 1),
            "backend: {}: one flash, never two runs at once",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn an_operation_found_waiting_for_reboot_after_the_task_timeout_is_verified_not_failed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        crashed_at(db, &operation, UpgradePhase::WaitingForReboot).await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        let config = EngineConfig {
            task_timeout: Duration::ZERO,
            ..fast_config("engine-b")
        };
        engine_with(db, &upgrader, config)
            .run_until_idle()
            .await
            .expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, installed(db, &operation).await),
            (UpgradeStatus::Success, true),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert_eq!(
            (
                upgrader.upgrades_of(operation.device_id),
                upgrader.verifications_of(operation.device_id)
            ),
            (0, 1),
            "verified, never flashed again"
        );
    }
}

#[tokio::test]
async fn a_deactivated_device_past_the_flash_is_verified_before_its_operation_ends() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        crashed_at(db, &operation, UpgradePhase::Reconnecting).await;
        let mut device = db
            .device(&Scope::All, operation.device_id)
            .await
            .expect("a test step")
            .expect("a test step");
        device.is_deactivated = true;
        db.update_device(&device).await.expect("a test step");
        let upgrader = Arc::new(ScriptedUpgrader::default());
        engine_with(db, &upgrader, fast_config("engine-b"))
            .run_until_idle()
            .await
            .expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            finished.status,
            UpgradeStatus::Success,
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(finished.log.contains("deactivated; checking what it runs"));
        assert_eq!(upgrader.verifications_of(operation.device_id), 1);
    }
}

#[tokio::test]
async fn past_the_flash_without_an_upgrader_the_operation_fails_as_unverified_and_not_installed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        crashed_at(db, &operation, UpgradePhase::Flashing).await;
        // This server has no upgrader for the device's connection type.
        Engine::new(
            Arc::new(db.clone()),
            UpgraderRegistry::empty(),
            Arc::new(EmptyFiles),
            EventBus::default(),
            fast_config("engine-b"),
        )
        .run_until_idle()
        .await
        .expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, installed(db, &operation).await),
            (UpgradeStatus::Failed, false),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            finished
                .log
                .lines()
                .last()
                .is_some_and(|line| line.starts_with("Could not verify what the device runs")),
            "{}",
            finished.log
        );
    }
}

#[tokio::test]
async fn a_flash_the_device_did_not_take_is_failed_not_installed_and_can_be_assigned_again() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let upgrader = Arc::new(ScriptedUpgrader::default());
        upgrader
            .scripts
            .lock()
            .expect("a test step")
            .insert(operation.device_id, vec![Step::ComesBackOld, Step::Succeed]);
        let engine = engine_with(db, &upgrader, fast_config("engine-a"));
        engine.run_until_idle().await.expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, installed(db, &operation).await),
            (UpgradeStatus::Failed, false),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(finished.log.contains("still running its previous release"));
        // Assigning the image again starts a new operation: the device does not run it.
        let again = engine
            .upgrade_device(
                &Scope::All,
                operation.device_id,
                fixture.image.id,
                UpgradeOptions::default(),
                false,
            )
            .await
            .expect("a test step");
        assert!(again.is_some(), "backend: {}", test_db.backend());
        engine.run_until_idle().await.expect("a test step");
        assert!(installed(db, &operation).await);
    }
}

#[tokio::test]
async fn credentials_that_do_not_decrypt_fail_the_operation_at_once_naming_the_cause() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        // A server started with another secret key than the one that stored the credentials.
        let mut config = test_db.config();
        config.secret_key = flashfleet_db::SecretKey::generate().expect("a test step");
        let other_key = Db::connect(&config).await.expect("a test step");
        let upgrader = Arc::new(ScriptedUpgrader::default());
        tokio::time::timeout(
            Duration::from_secs(30),
            engine_with(&other_key, &upgrader, fast_config("engine-b")).run_until_idle(),
        )
        .await
        .expect("the operation ends instead of being claimed again and again")
        .expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, finished.attempts),
            (UpgradeStatus::Failed, 0),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(
            finished.log.contains("secret key") && finished.log.contains("does not decrypt"),
            "{}",
            finished.log
        );
        assert!(
            !finished.log.contains("secret\""),
            "never the secret itself"
        );
        assert_eq!(upgrader.upgrades_of(operation.device_id), 0);
    }
}

#[tokio::test]
async fn a_failure_before_the_first_report_is_an_attempt_and_ends_the_operation() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let failing = db.clone().with_own_faults();
        failing.faults().fail_connections(true);
        let upgrader = Arc::new(ScriptedUpgrader::default());
        tokio::time::timeout(
            Duration::from_secs(30),
            engine_with(&failing, &upgrader, fast_config("engine-a")).run_until_idle(),
        )
        .await
        .expect("the operation ends instead of being claimed again and again")
        .expect("a test step");

        let finished = stored(db, &operation).await;
        // fast_config allows 2 retries: three attempts in all, each persisted.
        assert_eq!(
            (finished.status, finished.attempts),
            (UpgradeStatus::Failed, 2),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(finished.started.is_some());
        assert_eq!(
            finished
                .log
                .matches("Detected a recoverable failure")
                .count(),
            2,
            "{}",
            finished.log
        );
        assert!(
            finished
                .log
                .ends_with("Max retries exceeded. Upgrade failed: storage backend failed: database query failed."),
            "{}",
            finished.log
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_in_flight_at_the_task_timeout_ends_its_transaction() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        let slow = db.clone();
        // The upgrader's first report holds its write transaction open past the task timeout.
        slow.faults()
            .delay_writes(Some(Duration::from_millis(1500)));
        let upgrader = Arc::new(ScriptedUpgrader::default());
        let config = EngineConfig {
            task_timeout: Duration::from_millis(500),
            ..fast_config("engine-a")
        };
        engine_with(&slow, &upgrader, config)
            .run_until_idle()
            .await
            .expect("a test step");
        slow.faults().delay_writes(None);

        let finished = stored(db, &operation).await;
        assert_eq!(
            finished.status,
            UpgradeStatus::Failed,
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert!(finished.log.ends_with("Operation timed out."));
        // The write cut off by the timeout still committed (its report is in the log), and no
        // pooled connection kept a transaction open: a plain write goes through at once (on
        // SQLite an open transaction would hold the write lock for the busy timeout, 15 s).
        assert!(finished.log.starts_with("connecting"), "{}", finished.log);
        let insert = tokio::time::timeout(
            Duration::from_secs(5),
            db.insert_organization(&NewOrganization::new("Other", "other").into_organization()),
        )
        .await
        .expect("no transaction left open holds the database");
        insert.expect("a test step");
    }
}

#[tokio::test]
async fn an_operation_past_the_flash_whose_image_was_deleted_is_still_verified() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let fixture = fixture(db).await;
        let operation = queued_device(db, &fixture, "ap-1").await;
        crashed_at(db, &operation, UpgradePhase::WaitingForReboot).await;
        db.delete_image(fixture.image.id)
            .await
            .expect("a test step")
            .expect("the image existed");
        let upgrader = Arc::new(ScriptedUpgrader::default());
        engine_with(db, &upgrader, fast_config("engine-b"))
            .run_until_idle()
            .await
            .expect("a test step");

        let finished = stored(db, &operation).await;
        assert_eq!(
            (finished.status, finished.image_id),
            (UpgradeStatus::Success, None),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert_eq!(
            finished.flash_image.as_ref().map(|image| image.id),
            Some(fixture.image.id),
            "the image as it was at the flash"
        );
        assert_eq!(upgrader.verifications_of(operation.device_id), 1);
    }
}

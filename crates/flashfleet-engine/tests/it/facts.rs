//! Safety on real SSH (devsim devices): two engines and a late heartbeat, a device that comes
//! back on its old release, and an upload that trickles.

use std::time::Duration;

use flashfleet_db::testing::TestDb;
use flashfleet_devsim::RebootTiming;
use flashfleet_engine::{Engine, EngineConfig, RetryPolicy};
use flashfleet_models::{
    DeviceId, Scope, UpgradeOperation, UpgradeOptions, UpgradePhase, UpgradeStatus,
};

use crate::support::{fast_config, installed, stored};
use crate::world::{NEW_VERSION, World};

fn reboot() -> RebootTiming {
    RebootTiming {
        close_after: Duration::from_millis(50),
        down_for: Duration::from_millis(300),
    }
}

async fn assign(engine: &Engine, world: &World, index: usize) -> UpgradeOperation {
    engine
        .upgrade_device(
            &Scope::All,
            DeviceId(world.fleet.devices()[index].uuid()),
            world.new_image.id,
            UpgradeOptions::default(),
            false,
        )
        .await
        .expect("a test step")
        .expect("a test step")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_a_late_heartbeat_against_a_second_engine_flashes_once_and_never_overlaps_uploads()
{
    for test_db in TestDb::all().await {
        let db = test_db.db();
        // A link slow enough that the upload outlasts the first engine's lease.
        let world = World::start(db, 1, 512 * 1024, reboot(), |device| {
            device.faults.upload_chunk_delay = Some(Duration::from_millis(150));
        })
        .await;
        let device = world.fleet.devices()[0].clone();
        let operation = assign(&world.engine(db, fast_config("api")), &world, 0).await;

        let late_db = db.clone().with_own_faults();
        late_db
            .faults()
            .delay_renewals(Some(Duration::from_secs(3)));
        let late = world.engine(
            &late_db,
            EngineConfig {
                lease: Duration::from_secs(1),
                heartbeat: Duration::from_millis(200),
                ..fast_config("engine-late")
            },
        );
        let punctual_db = db.clone().with_own_faults();
        let punctual = world.engine(&punctual_db, fast_config("engine-punctual"));

        let late_run = tokio::spawn({
            let late = late.clone();
            async move { late.run_until_idle().await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while stored(db, &operation).await.phase < UpgradePhase::Uploading {
            assert!(tokio::time::Instant::now() < deadline, "never uploading");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Once the operation was taken over (by either engine: the late one may win the claim,
        // and lapse again), the late engine's heartbeat recovers, so that whichever engine
        // holds the operation can finish it.
        let mut recovered = false;
        while !stored(db, &operation).await.status.is_final() {
            assert!(tokio::time::Instant::now() < deadline, "never finished");
            punctual.run_until_idle().await.expect("a test step");
            if !recovered
                && stored(db, &operation)
                    .await
                    .log
                    .contains("before the flash; starting again")
            {
                late_db.faults().delay_renewals(None);
                recovered = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        late_run.await.expect("a test step").expect("a test step");

        let finished = stored(db, &operation).await;
        let context = format!("backend: {}: {}", test_db.backend(), finished.log);
        assert_eq!(finished.status, UpgradeStatus::Success, "{context}");
        assert_eq!(
            (device.flash_count(), device.most_uploads_at_once()),
            (1, 1),
            "one flash, and never two uploads at once: {context}"
        );
        assert!(
            finished.log.contains("before the flash; starting again"),
            "the second engine took over: {context}"
        );
        world.fleet.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_comes_back_on_its_old_release_is_failed_not_installed_and_stays_a_candidate()
{
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let world = World::start(db, 1, 256 * 1024, reboot(), |device| {
            device.faults.comes_back_with_old_release = true;
        })
        .await;
        let device = world.fleet.devices()[0].clone();
        let engine = world.engine(db, fast_config("engine"));
        let operation = assign(&engine, &world, 0).await;
        engine.run_until_idle().await.expect("a test step");

        let finished = stored(db, &operation).await;
        let context = format!("backend: {}: {}", test_db.backend(), finished.log);
        assert_eq!(
            (finished.status, installed(db, &operation).await),
            (UpgradeStatus::Failed, false),
            "{context}"
        );
        assert!(
            finished.log.contains("still running its previous release"),
            "the log says what the device runs: {context}"
        );
        assert_eq!(device.flash_count(), 1);

        // Assigning the image again starts a new operation, which flashes the device again
        // (it does not run the image) and, the fault gone, succeeds.
        let mut faults = device.faults();
        faults.comes_back_with_old_release = false;
        device.set_faults(faults);
        let again = assign(&engine, &world, 0).await;
        engine.run_until_idle().await.expect("a test step");
        let finished = stored(db, &again).await;
        assert_eq!(
            (finished.status, installed(db, &again).await),
            (UpgradeStatus::Success, true),
            "backend: {}: {}",
            test_db.backend(),
            finished.log
        );
        assert_eq!(
            (device.flash_count(), device.release().version.as_str()),
            (2, NEW_VERSION)
        );
        world.fleet.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickling_upload_is_cut_at_its_deadline_and_frees_the_only_upload_permit() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        // Device 0 reads one 32 KiB window a second, so a 1 MiB upload would take over 30 s
        // without ever stalling for a whole command timeout (3 s).
        let world = World::start(db, 2, 1024 * 1024, reboot(), |_| {}).await;
        let slow = world.fleet.devices()[0].clone();
        let mut faults = slow.faults();
        faults.upload_chunk_delay = Some(Duration::from_secs(1));
        slow.set_faults(faults);
        let healthy = world.fleet.devices()[1].clone();
        let config = EngineConfig {
            max_uploads: 1,
            retry: RetryPolicy {
                max_retries: 0,
                ..fast_config("engine").retry
            },
            ..fast_config("engine")
        };
        // At least 256 KiB/s: the 1 MiB upload has 2 s + 4 s in all.
        let engine = world.engine_with(db, config, |settings| {
            settings.command_timeout = Duration::from_secs(3);
            settings.min_upload_throughput = 256 * 1024;
        });
        let trickling = assign(&engine, &world, 0).await;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        // Once the slow device holds the only upload permit, the healthy one is assigned.
        let started = tokio::time::Instant::now();
        while stored(db, &trickling).await.phase < UpgradePhase::Uploading {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never uploading"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waiting = assign(&engine, &world, 1).await;
        while !(stored(db, &trickling).await.status.is_final()
            && stored(db, &waiting).await.status.is_final())
        {
            assert!(started.elapsed() < Duration::from_secs(60), "never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        running.await.expect("a test step").expect("a test step");

        let cut = stored(db, &trickling).await;
        let served = stored(db, &waiting).await;
        let context = format!(
            "backend: {}:\n{}\n---\n{}",
            test_db.backend(),
            cut.log,
            served.log
        );
        assert_eq!(served.status, UpgradeStatus::Success, "{context}");
        assert_eq!(cut.status, UpgradeStatus::Failed, "{context}");
        assert!(cut.log.contains("Upload too slow"), "{context}");
        // The healthy device did not wait for the trickle to end (over 30 s): only for the
        // slow upload's deadline.
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "took {:?}: {context}",
            started.elapsed()
        );
        assert_eq!((slow.flash_count(), healthy.flash_count()), (0, 1));
        world.fleet.shutdown().await;
    }
}

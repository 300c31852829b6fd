//! Uniqueness rules under concurrency: tasks on two `Db` handles (two servers sharing one
//! database) race to break the same rule; exactly one may win, the others get the rule's
//! `AlreadyExists`, and the stored rows show the winner only.

use std::future::Future;
use std::sync::Arc;

use flashfleet_db::testing::TestDb;
use flashfleet_db::{Backend, Db};
use flashfleet_models::repository::{
    BuildFilter, DeviceRepository, FirmwareRepository, ImageFilter, OperationFilter,
    ProgressUpdate, UpgradeRepository,
};
use flashfleet_models::{
    CancelError, Constraint, DeviceFirmware, NewBuild, NewUpgradeOperation, PageRequest, RepoError,
    RepoResult, Scope, UpgradePhase, UpgradeStatus,
};
use tokio::sync::Barrier;

use crate::support::{BOARD, IMAGE_TYPE, build, chain, device, device_firmware, image, new_image};

/// How many tasks race.
const RACERS: usize = 8;

/// Says once per test when PostgreSQL, where the races are real, is not part of the run.
fn notice_without_postgres(databases: &[TestDb], test: &str) {
    if !databases
        .iter()
        .any(|test_db| test_db.backend() == Backend::Postgres)
    {
        eprintln!("notice: {test}: no PostgreSQL test database; only SQLite races were run");
    }
}

/// Runs `RACERS` tasks at once, alternating between two handles on the same database, each
/// calling `attempt_for(handle, index)` as soon as all are ready. Returns the results by index.
async fn race<T, F, Fut>(test_db: &TestDb, attempt_for: F) -> Vec<RepoResult<T>>
where
    T: Send + 'static,
    F: Fn(Db, usize) -> Fut,
    Fut: Future<Output = RepoResult<T>> + Send + 'static,
{
    let handles = [
        test_db.db().clone(),
        Db::connect(&test_db.config())
            .await
            .expect("a second handle"),
    ];
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks = (0..RACERS).map(|index| {
        let barrier = Arc::clone(&barrier);
        let attempt = attempt_for(handles[index % 2].clone(), index);
        tokio::spawn(async move {
            barrier.wait().await;
            attempt.await
        })
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("a racing task panicked"))
        .collect()
}

/// Checks that exactly one result is `Ok` and every other is `AlreadyExists { expected }`;
/// returns the index of the winner.
fn single_winner<T: std::fmt::Debug>(
    results: &[RepoResult<T>],
    expected: Constraint,
    backend: Backend,
) -> usize {
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, result)| result.is_ok())
        .map(|(index, _)| index)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "backend: {backend}: exactly one winner expected: {results:?}"
    );
    for result in results.iter().filter(|result| result.is_err()) {
        assert!(
            matches!(result, Err(RepoError::AlreadyExists { constraint }) if *constraint == expected),
            "backend: {backend}: losers must get {expected:?}: {result:?}"
        );
    }
    winners[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_unfinished_operations_for_one_device_exactly_one_is_stored() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent operations");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let operations: Vec<_> = (0..RACERS)
            .map(|_| NewUpgradeOperation::new(device.id, chain.image.id).into_operation())
            .collect();

        let results = race(&test_db, |handle, index| {
            let operation = operations[index].clone();
            async move { handle.insert_operation(&operation).await }
        })
        .await;
        let winner = single_winner(
            &results,
            Constraint::OneUnfinishedOperationPerDevice,
            test_db.backend(),
        );
        let stored = db
            .list_operations(
                &Scope::All,
                &OperationFilter {
                    device_id: Some(device.id),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
            )
            .await
            .unwrap();
        assert_eq!(
            (stored.count, stored.items),
            (1, vec![operations[winner].clone()]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_firmware_records_for_one_device_exactly_one_is_stored() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent firmware records");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let records: Vec<_> = (0..RACERS)
            .map(|index| DeviceFirmware::new(device.id, chain.image.id, index % 2 == 0))
            .collect();

        let results = race(&test_db, |handle, index| {
            let record = records[index].clone();
            async move { handle.insert_device_firmware(&record).await }
        })
        .await;
        let winner = single_winner(
            &results,
            Constraint::OneFirmwarePerDevice,
            test_db.backend(),
        );
        assert_eq!(
            db.device_firmware(device.id).await.unwrap(),
            Some(records[winner].clone()),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_builds_with_one_version_exactly_one_is_stored() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent builds");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let builds: Vec<_> = (0..RACERS)
            .map(|_| NewBuild::new(chain.category.id, "9.0").into_build())
            .collect();

        let results = race(&test_db, |handle, index| {
            let build = builds[index].clone();
            async move { handle.insert_build(&build).await }
        })
        .await;
        let winner = single_winner(&results, Constraint::BuildVersion, test_db.backend());
        let stored = db
            .list_builds(
                &Scope::All,
                &BuildFilter {
                    version: Some("9.0".into()),
                    ..BuildFilter::default()
                },
                PageRequest::all(),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                stored.count,
                stored
                    .items
                    .into_iter()
                    .map(|(build, _)| build)
                    .collect::<Vec<_>>()
            ),
            (1, vec![builds[winner].clone()]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_images_with_one_type_exactly_one_is_stored() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent images");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let build = build(db, &chain.category, "2.0", None).await;
        let images: Vec<_> = (0..RACERS)
            .map(|_| new_image(build.id, IMAGE_TYPE))
            .collect();

        let results = race(&test_db, |handle, index| {
            let image = images[index].clone();
            async move { handle.insert_image(&image).await }
        })
        .await;
        let winner = single_winner(&results, Constraint::ImageType, test_db.backend());
        let stored = db
            .list_images(
                &Scope::All,
                build.id,
                &ImageFilter::default(),
                PageRequest::all(),
            )
            .await
            .unwrap();
        assert_eq!(
            (stored.count, stored.items),
            (1, vec![images[winner].clone()]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_builds_with_one_os_identifier_in_an_organization_exactly_one_is_stored() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent build OS identifiers");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let os = "OpenWrt 23.05.3 r23809-234f1a2efa";
        let builds: Vec<_> = (0..RACERS)
            .map(|index| {
                let mut build = NewBuild::new(chain.category.id, format!("race-{index}"));
                build.os = Some(os.into());
                build.into_build()
            })
            .collect();

        let results = race(&test_db, |handle, index| {
            let build = builds[index].clone();
            async move { handle.insert_build(&build).await }
        })
        .await;
        let winners = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(
            winners,
            1,
            "backend: {}: one OS identifier per organization, also under concurrency: {results:?}",
            test_db.backend()
        );
        for result in results.iter().filter(|result| result.is_err()) {
            assert!(
                matches!(result, Err(RepoError::Invalid(errors)) if !errors.messages("os").is_empty()),
                "backend: {}: {result:?}",
                test_db.backend()
            );
        }
        let stored = db
            .list_builds(
                &Scope::All,
                &BuildFilter {
                    os: Some(os.into()),
                    ..BuildFilter::default()
                },
                PageRequest::all(),
            )
            .await
            .unwrap();
        assert_eq!(stored.count, 1, "backend: {}", test_db.backend());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_upgrades_queued_for_one_device_the_firmware_record_is_the_winners() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "concurrent queued upgrades");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let second = image(
            db,
            &build(db, &chain.category, "2.0", None).await,
            IMAGE_TYPE,
        )
        .await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let record = device_firmware(db, &device, &chain.image, true).await;
        let attempts: Vec<_> = (0..RACERS)
            .map(|index| {
                let image_id = if index % 2 == 0 {
                    second.id
                } else {
                    chain.image.id
                };
                let mut changed = record.clone();
                changed.image_id = image_id;
                let operation = NewUpgradeOperation::new(device.id, image_id).into_operation();
                (changed, operation)
            })
            .collect();

        let results = race(&test_db, |handle, index| {
            let (changed, operation) = attempts[index].clone();
            async move { handle.queue_upgrade(&changed, &operation).await }
        })
        .await;
        let winner = single_winner(
            &results,
            Constraint::OneUnfinishedOperationPerDevice,
            test_db.backend(),
        );
        let (_, winning_operation) = &attempts[winner];
        let stored = db.device_firmware(device.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.id, Some(stored.image_id), stored.installed),
            (record.id, winning_operation.image_id, false),
            "backend: {}: the firmware record must match the queued operation",
            test_db.backend()
        );
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            Some(winning_operation.clone()),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_the_flash_never_leaves_a_cancelled_operation_past_the_flash() {
    let databases = TestDb::all().await;
    notice_without_postgres(&databases, "cancel against flash");
    for test_db in databases {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let other = Db::connect(&test_db.config()).await.unwrap();
        for round in 0..10 {
            let operation = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
            db.insert_operation(&operation).await.unwrap();
            let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
            db.record_progress(
                operation.id,
                &fence,
                &ProgressUpdate {
                    phase: UpgradePhase::TestingImage,
                    progress: 60,
                    log_line: None,
                },
            )
            .await
            .unwrap()
            .unwrap();

            let barrier = Arc::new(Barrier::new(2));
            let cancel = {
                let (db, barrier, id) = (db.clone(), Arc::clone(&barrier), operation.id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    db.cancel_operation(id).await
                })
            };
            let flash = {
                let (db, barrier, id, fence) = (
                    other.clone(),
                    Arc::clone(&barrier),
                    operation.id,
                    fence.clone(),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    db.begin_flash(id, &fence, None, "Flashing").await
                })
            };
            let cancelled = cancel.await.unwrap();
            let flashed = flash.await.unwrap();
            let stored = db
                .operation(&Scope::All, operation.id)
                .await
                .unwrap()
                .unwrap();
            match (&cancelled, &flashed) {
                // Cancelled first: the engine's flash is refused as a transition out of
                // `cancelled`.
                (Ok(Some(_)), Err(RepoError::Transition(_))) => {
                    assert_eq!(
                        stored.status,
                        UpgradeStatus::Cancelled,
                        "backend: {}: round {round}",
                        test_db.backend()
                    );
                    assert!(
                        stored.phase < UpgradePhase::Flashing || stored.phase == UpgradePhase::Done,
                        "backend: {}: round {round}: cancelled in phase {}",
                        test_db.backend(),
                        stored.phase
                    );
                    assert_eq!(
                        stored.flash_attempts,
                        0,
                        "backend: {}: round {round}: a cancelled operation was never flashed",
                        test_db.backend()
                    );
                }
                (Err(RepoError::Cancel(CancelError::FlashStarted { .. })), Ok(Some(_))) => {
                    assert_eq!(
                        (stored.status, stored.phase),
                        (UpgradeStatus::InProgress, UpgradePhase::Flashing),
                        "backend: {}: round {round}",
                        test_db.backend()
                    );
                    assert_eq!(
                        stored.flash_attempts,
                        1,
                        "backend: {}: round {round}",
                        test_db.backend()
                    );
                    db.complete_operation(
                        operation.id,
                        Some(&fence),
                        &flashfleet_models::repository::Completion {
                            status: UpgradeStatus::Success,
                            log_line: None,
                            installed: true,
                        },
                    )
                    .await
                    .unwrap()
                    .unwrap();
                }
                other => panic!(
                    "backend: {}: round {round}: exactly one of cancel and flash must win: {other:?}",
                    test_db.backend()
                ),
            }
        }
    }
}

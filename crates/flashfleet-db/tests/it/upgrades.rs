//! Upgrade operations, mass upgrades and the choice of devices for a mass upgrade
//! (`UpgradeRepository`): the status machines as the repository enforces them.

use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::{
    BatchFilter, Completion, DeviceRepository, OperationFilter, ProgressUpdate, UpgradeCandidate,
    UpgradeRepository,
};
use flashfleet_models::upgrade_operation::CANCELLED_BY_USER;
use flashfleet_models::{
    BatchCounters, BatchStatus, BatchUpgradeOperation, CancelError, Constraint, Device,
    DeviceFirmware, DeviceGroupId, FirmwareImage, NewBatch, NewDeviceGroup, NewUpgradeOperation,
    OperationId, OrganizationId, Page, PageRequest, RepoError, Scope, UpgradeOperation,
    UpgradeOptions, UpgradePhase, UpgradeStatus,
};

use crate::support::{
    BOARD, IMAGE_TYPE, ago, build, category, chain, details, device, device_firmware, image,
    new_batch, new_device, new_operation, operation, organization, scope,
};

fn progress(phase: UpgradePhase, progress: u8, log_line: Option<&str>) -> ProgressUpdate {
    ProgressUpdate {
        phase,
        progress,
        log_line: log_line.map(str::to_owned),
    }
}

fn completion(status: UpgradeStatus, installed: bool, log_line: Option<&str>) -> Completion {
    Completion {
        status,
        log_line: log_line.map(str::to_owned),
        installed,
    }
}

fn options(json: serde_json::Value) -> UpgradeOptions {
    UpgradeOptions::from_json(json).expect("options are a JSON object")
}

async fn stored_operation(db: &Db, id: OperationId) -> UpgradeOperation {
    db.operation(&Scope::All, id)
        .await
        .expect("reading an operation")
        .expect("the operation exists")
}

#[tokio::test]
async fn operations_round_trip_field_by_field() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let batch = db
            .insert_batch(&NewBatch::new(chain.build.id).into_batch())
            .await
            .unwrap();
        let mut finished = NewUpgradeOperation::new(device.id, chain.image.id);
        finished.batch_id = Some(batch.id);
        finished.upgrade_options = options(serde_json::json!({"c": true, "n": false}));
        finished.details = details();
        let mut finished = finished.into_operation();
        finished.status = UpgradeStatus::Success;
        finished.phase = UpgradePhase::Done;
        finished.progress = 100;
        finished.log = "Connection successful\nUpgrade completed successfully".into();
        finished.attempts = 2;
        finished.flash_attempts = 1;
        finished.flash_boot_id = Some("6f1c0a52-8d5e-4a3b-9b7e-3f2d1c0b9a87".into());
        finished.next_attempt_at = Some(ago(7));
        finished.started = Some(ago(10));
        finished.finished = Some(ago(1));
        finished.created = ago(11);
        finished.modified = ago(1);
        let queued = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();

        for operation in [finished, queued] {
            assert_eq!(
                db.insert_operation(&operation).await.unwrap(),
                operation,
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(
                stored_operation(db, operation.id).await,
                operation,
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn batches_round_trip_field_by_field() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let group = db
            .insert_group(&NewDeviceGroup::new(chain.organization.id, "Rooftop").into_group())
            .await
            .unwrap();
        let mut new = NewBatch::new(chain.build.id);
        new.group_id = Some(group.id);
        new.upgrade_all = true;
        new.upgrade_options = options(serde_json::json!({"c": false, "k": true}));
        new.details = details();
        let mut full = new.into_batch();
        full.status = BatchStatus::Cancelled;
        full.created = ago(30);
        full.modified = ago(20);
        let idle = NewBatch::new(chain.build.id).into_batch();

        for batch in [full, idle] {
            assert_eq!(
                db.insert_batch(&batch).await.unwrap(),
                batch,
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(
                db.batch(&Scope::All, batch.id).await.unwrap(),
                Some(batch),
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn a_device_has_at_most_one_unfinished_operation() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let other_device = device_in(db, chain.organization.id, "ap-2").await;
        let first = operation(db, &device, &chain.image).await;

        let second = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        let refused = db.insert_operation(&second).await;
        assert!(
            matches!(
                refused,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::OneUnfinishedOperationPerDevice
                })
            ),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            Some(first.clone()),
            "backend: {}",
            test_db.backend()
        );
        // Finished operations do not count, and other devices are independent.
        operation(db, &other_device, &chain.image).await;
        db.insert_operation(&new_operation(
            &device,
            &chain.image,
            UpgradeStatus::Failed,
            3,
        ))
        .await
        .unwrap();

        db.complete_operation(
            first.id,
            None,
            &completion(UpgradeStatus::Failed, false, None),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.insert_operation(&second).await.unwrap(),
            second,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            Some(second),
            "backend: {}",
            test_db.backend()
        );
    }
}

async fn device_in(db: &Db, organization_id: OrganizationId, name: &str) -> Device {
    device(db, organization_id, name, BOARD).await
}

#[tokio::test]
async fn recording_progress_moves_the_phase_forward_and_appends_log_lines() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let mut queued = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        queued.created = ago(10);
        queued.modified = queued.created;
        db.insert_operation(&queued).await.unwrap();
        let fence = db.claim_for_test(queued.id, "engine-a").await.unwrap();

        let connecting = db
            .record_progress(
                queued.id,
                &fence,
                &progress(UpgradePhase::Connecting, 5, Some("Connecting to 10.0.0.1")),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                connecting.status,
                connecting.phase,
                connecting.progress,
                connecting.log.as_str()
            ),
            (
                UpgradeStatus::InProgress,
                UpgradePhase::Connecting,
                5,
                "Connecting to 10.0.0.1"
            ),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            connecting.modified > queued.modified,
            "backend: {}",
            test_db.backend()
        );
        let verified = db
            .record_progress(
                queued.id,
                &fence,
                &progress(UpgradePhase::VerifyingIdentity, 15, None),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (verified.phase, verified.progress, verified.log.as_str()),
            (
                UpgradePhase::VerifyingIdentity,
                15,
                "Connecting to 10.0.0.1"
            ),
            "backend: {}",
            test_db.backend()
        );
        let uploading = db
            .record_progress(
                queued.id,
                &fence,
                &progress(UpgradePhase::Uploading, 25, Some("Uploading the image")),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            uploading.log,
            "Connecting to 10.0.0.1\nUploading the image",
            "backend: {}",
            test_db.backend()
        );
        // The same phase again, with more progress, is fine.
        let further = db
            .record_progress(
                queued.id,
                &fence,
                &progress(UpgradePhase::Uploading, 40, Some("40%")),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (further.phase, further.progress),
            (UpgradePhase::Uploading, 40),
            "backend: {}",
            test_db.backend()
        );
        let stored = stored_operation(db, queued.id).await;
        assert_eq!(stored, further, "backend: {}", test_db.backend());
        assert_eq!(
            (
                stored.device_id,
                stored.image_id,
                stored.created,
                stored.log.as_str()
            ),
            (
                device.id,
                Some(chain.image.id),
                queued.created,
                "Connecting to 10.0.0.1\nUploading the image\n40%"
            ),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.record_progress(
                OperationId::new(),
                &fence,
                &progress(UpgradePhase::Connecting, 5, None)
            )
            .await
            .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn progress_that_would_move_the_phase_back_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        db.record_progress(
            operation.id,
            &fence,
            &progress(UpgradePhase::TestingImage, 60, Some("Testing")),
        )
        .await
        .unwrap()
        .unwrap();
        let before = stored_operation(db, operation.id).await;

        let back = db
            .record_progress(
                operation.id,
                &fence,
                &progress(UpgradePhase::Connecting, 5, Some("stale")),
            )
            .await;
        assert!(
            matches!(back, Err(RepoError::Transition(_))),
            "backend: {}: {back:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            before,
            "backend: {}: a refused update changes nothing",
            test_db.backend()
        );
        // Back to the queue before the flash is a retry, and allowed.
        let requeued = db
            .record_progress(
                operation.id,
                &fence,
                &progress(UpgradePhase::Queued, 60, None),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            requeued.phase,
            UpgradePhase::Queued,
            "backend: {}",
            test_db.backend()
        );
        // After the flash (entered through `begin_flash`), never.
        db.begin_flash(operation.id, &fence, None, "Flashing")
            .await
            .unwrap()
            .unwrap();
        for phase in [UpgradePhase::Queued, UpgradePhase::Uploading] {
            let refused = db
                .record_progress(operation.id, &fence, &progress(phase, 10, None))
                .await;
            assert!(
                matches!(refused, Err(RepoError::Transition(_))),
                "backend: {}: {phase}: {refused:?}",
                test_db.backend()
            );
        }
        assert_eq!(
            stored_operation(db, operation.id).await.phase,
            UpgradePhase::Flashing,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn progress_on_a_finished_operation_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        let finished = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::Aborted, false, Some("Identity mismatch")),
            )
            .await
            .unwrap()
            .unwrap();

        // The engine that held it writes nothing more: its writes are refused as transitions
        // out of a final status.
        let refused = db
            .record_progress(
                operation.id,
                &fence,
                &progress(UpgradePhase::Uploading, 30, Some("late")),
            )
            .await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            finished,
            "backend: {}",
            test_db.backend()
        );
        // Even a fence that holds the finished operation writes no progress: the status machine
        // refuses it.
        let holding = db.claim_for_test(operation.id, "engine-b").await.unwrap();
        let held = stored_operation(db, operation.id).await;
        let refused = db
            .record_progress(
                operation.id,
                &holding,
                &progress(UpgradePhase::Uploading, 30, Some("late")),
            )
            .await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            held,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            (held.status, held.log.as_str()),
            (finished.status, finished.log.as_str()),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn completing_an_operation_sets_the_final_status_and_marks_the_firmware_installed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let next = image(
            db,
            &build(db, &chain.category, "2.0", None).await,
            IMAGE_TYPE,
        )
        .await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let mut record = device_firmware(db, &device, &chain.image, true).await;
        record.image_id = next.id;
        let queued = NewUpgradeOperation::new(device.id, next.id).into_operation();
        db.queue_upgrade(&record, &queued).await.unwrap();
        let fence = db.claim_for_test(queued.id, "engine-a").await.unwrap();
        db.record_progress(
            queued.id,
            &fence,
            &progress(UpgradePhase::Uploading, 30, Some("up")),
        )
        .await
        .unwrap()
        .unwrap();

        let before = flashfleet_models::time::now();
        let completed = db
            .complete_operation(
                queued.id,
                Some(&fence),
                &completion(
                    UpgradeStatus::Success,
                    true,
                    Some("Upgrade completed successfully"),
                ),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            completed.status,
            UpgradeStatus::Success,
            "backend: {}",
            test_db.backend()
        );
        assert!(
            completed
                .finished
                .is_some_and(|finished| finished >= before),
            "backend: {}: finished {:?}",
            test_db.backend(),
            completed.finished
        );
        assert_eq!(
            completed.log,
            "up\nUpgrade completed successfully",
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, queued.id).await,
            completed,
            "backend: {}",
            test_db.backend()
        );
        let firmware = db.device_firmware(device.id).await.unwrap().unwrap();
        assert_eq!(
            (firmware.id, firmware.image_id, firmware.installed),
            (record.id, next.id, true),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.complete_operation(
                OperationId::new(),
                None,
                &completion(UpgradeStatus::Success, true, None)
            )
            .await
            .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_completion_without_install_leaves_the_firmware_record_not_installed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let queued = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        db.queue_upgrade(
            &DeviceFirmware::new(device.id, chain.image.id, false),
            &queued,
        )
        .await
        .unwrap();

        let failed = db
            .complete_operation(
                queued.id,
                None,
                &completion(UpgradeStatus::Failed, false, Some("sysupgrade failed")),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                failed.status,
                failed.log.as_str(),
                failed.finished.is_some()
            ),
            (UpgradeStatus::Failed, "sysupgrade failed", true),
            "backend: {}",
            test_db.backend()
        );
        let firmware = db.device_firmware(device.id).await.unwrap().unwrap();
        assert!(!firmware.installed, "backend: {}", test_db.backend());
    }
}

#[tokio::test]
async fn completing_an_operation_twice_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let failed = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::Failed, false, None),
            )
            .await
            .unwrap()
            .unwrap();

        let again = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::Success, true, Some("late success")),
            )
            .await;
        assert!(
            matches!(again, Err(RepoError::Transition(_))),
            "backend: {}: {again:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            failed,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn completing_an_operation_with_the_in_progress_status_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let refused = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::InProgress, false, None),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(RepoError::Transition(_)) | Err(RepoError::Invalid(_))
            ),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            operation,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn cancelling_before_the_flash_ends_the_operation_with_upstreams_log_line() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let queued_device = device_in(db, chain.organization.id, "ap-1").await;
        let uploading_device = device_in(db, chain.organization.id, "ap-2").await;
        let queued = operation(db, &queued_device, &chain.image).await;
        let uploading = operation(db, &uploading_device, &chain.image).await;
        let fence = db.claim_for_test(uploading.id, "engine-a").await.unwrap();
        db.record_progress(
            uploading.id,
            &fence,
            &progress(UpgradePhase::Uploading, 40, Some("Uploading the image")),
        )
        .await
        .unwrap()
        .unwrap();

        let cancelled = db.cancel_operation(queued.id).await.unwrap().unwrap();
        assert_eq!(
            (cancelled.status, cancelled.log.as_str()),
            (UpgradeStatus::Cancelled, CANCELLED_BY_USER),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            cancelled.finished.is_some(),
            "backend: {}",
            test_db.backend()
        );
        let cancelled = db.cancel_operation(uploading.id).await.unwrap().unwrap();
        assert_eq!(
            (cancelled.status, cancelled.log.clone()),
            (
                UpgradeStatus::Cancelled,
                format!("Uploading the image\n{CANCELLED_BY_USER}")
            ),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, uploading.id).await,
            cancelled,
            "backend: {}",
            test_db.backend()
        );
        // The device is free for a new operation.
        assert_eq!(
            db.unfinished_operation(uploading_device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        operation(db, &uploading_device, &chain.image).await;
        assert_eq!(
            db.cancel_operation(OperationId::new()).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn cancelling_once_the_flash_may_have_started_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let flashing_device = device_in(db, chain.organization.id, "ap-1").await;
        let threshold_device = device_in(db, chain.organization.id, "ap-2").await;
        let flashing = operation(db, &flashing_device, &chain.image).await;
        let fence = db.claim_for_test(flashing.id, "engine-a").await.unwrap();
        let flashed = db
            .begin_flash(flashing.id, &fence, None, "Flashing")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (flashed.phase, flashed.progress),
            (UpgradePhase::Flashing, 65),
            "backend: {}",
            test_db.backend()
        );
        // Upstream's rule is the progress threshold: 65 refuses even before the flash phase.
        let at_threshold = operation(db, &threshold_device, &chain.image).await;
        let fence = db
            .claim_for_test(at_threshold.id, "engine-a")
            .await
            .unwrap();
        db.record_progress(
            at_threshold.id,
            &fence,
            &progress(UpgradePhase::TestingImage, 65, None),
        )
        .await
        .unwrap()
        .unwrap();

        for (id, phase) in [
            (flashing.id, UpgradePhase::Flashing),
            (at_threshold.id, UpgradePhase::TestingImage),
        ] {
            let before = stored_operation(db, id).await;
            let refused = db.cancel_operation(id).await;
            assert!(
                matches!(
                    &refused,
                    Err(RepoError::Cancel(CancelError::FlashStarted { phase: refused_phase }))
                        if *refused_phase == phase
                ),
                "backend: {}: {refused:?}",
                test_db.backend()
            );
            assert_eq!(
                stored_operation(db, id).await,
                before,
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn cancelling_a_finished_operation_is_refused_with_its_status() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let succeeded = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::Success, true, None),
            )
            .await
            .unwrap()
            .unwrap();

        let refused = db.cancel_operation(operation.id).await;
        assert!(
            matches!(
                refused,
                Err(RepoError::Cancel(CancelError::Finished {
                    status: UpgradeStatus::Success
                }))
            ),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            succeeded,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_stale_worker_cannot_resurrect_a_cancelled_operation() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;
        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        db.record_progress(
            operation.id,
            &fence,
            &progress(UpgradePhase::Uploading, 30, Some("Uploading")),
        )
        .await
        .unwrap()
        .unwrap();
        let cancelled = db.cancel_operation(operation.id).await.unwrap().unwrap();
        assert_eq!(
            cancelled.lease,
            None,
            "backend: {}: cancelling ends the worker's lease",
            test_db.backend()
        );

        // The worker has not noticed yet and reports its next steps: every write is refused as
        // a transition out of `cancelled` (the worker then learns it was cancelled).
        let progressed = db
            .record_progress(
                operation.id,
                &fence,
                &progress(UpgradePhase::TestingImage, 60, Some("Testing the image")),
            )
            .await;
        assert!(
            matches!(progressed, Err(RepoError::Transition(_))),
            "backend: {}: {progressed:?}",
            test_db.backend()
        );
        let flashed = db.begin_flash(operation.id, &fence, None, "Flashing").await;
        assert!(
            matches!(flashed, Err(RepoError::Transition(_))),
            "backend: {}: {flashed:?}",
            test_db.backend()
        );
        let completed = db
            .complete_operation(
                operation.id,
                Some(&fence),
                &completion(UpgradeStatus::Success, true, None),
            )
            .await;
        assert!(
            matches!(completed, Err(RepoError::Transition(_))),
            "backend: {}: {completed:?}",
            test_db.backend()
        );
        let retried = db
            .schedule_retry(
                operation.id,
                &fence,
                std::time::Duration::from_secs(60),
                "Retrying",
            )
            .await;
        assert!(
            matches!(retried, Err(RepoError::Transition(_))),
            "backend: {}: {retried:?}",
            test_db.backend()
        );
        // Nor does an unfenced (administrator's) completion turn it into a success.
        let completed = db
            .complete_operation(
                operation.id,
                None,
                &completion(UpgradeStatus::Success, true, None),
            )
            .await;
        assert!(
            matches!(completed, Err(RepoError::Transition(_))),
            "backend: {}: {completed:?}",
            test_db.backend()
        );
        let stored = stored_operation(db, operation.id).await;
        assert_eq!(stored, cancelled, "backend: {}", test_db.backend());
        assert_eq!(
            stored.status,
            UpgradeStatus::Cancelled,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn scheduling_a_retry_sets_the_next_attempt_and_counts_it() {
    /// How far the database's clock may be from this process's (one machine here).
    const SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let operation = operation(db, &device, &chain.image).await;

        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        let first_delay = std::time::Duration::from_secs(60);
        let before = flashfleet_models::time::now();
        let retried = db
            .schedule_retry(
                operation.id,
                &fence,
                first_delay,
                "Connection refused, retrying",
            )
            .await
            .unwrap()
            .unwrap();
        let after = flashfleet_models::time::now();
        assert_eq!(
            (
                retried.status,
                retried.attempts,
                retried.log.as_str(),
                retried.lease.clone()
            ),
            (
                UpgradeStatus::InProgress,
                operation.attempts + 1,
                "Connection refused, retrying",
                None
            ),
            "backend: {}: a retry counts the attempt and gives the lease back",
            test_db.backend()
        );
        let delay = chrono::TimeDelta::seconds(60);
        assert!(
            retried.next_attempt_at.is_some_and(|next| next >= before + delay - SLACK
                && next <= after + delay + SLACK),
            "backend: {}: next attempt {:?}, expected {delay} after [{before}, {after}]",
            test_db.backend(),
            retried.next_attempt_at
        );
        let started = retried.started;
        assert!(
            started.is_some_and(|started| started >= before - SLACK && started <= after + SLACK),
            "backend: {}: a retry sets `started` when no attempt had started: {started:?}",
            test_db.backend()
        );

        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        let before = flashfleet_models::time::now();
        let again = db
            .schedule_retry(
                operation.id,
                &fence,
                std::time::Duration::from_secs(300),
                "Timed out, retrying",
            )
            .await
            .unwrap()
            .unwrap();
        let after = flashfleet_models::time::now();
        let delay = chrono::TimeDelta::seconds(300);
        assert_eq!(
            (again.attempts, again.log.as_str(), again.started),
            (
                operation.attempts + 2,
                "Connection refused, retrying\nTimed out, retrying",
                started
            ),
            "backend: {}: `started` is set once",
            test_db.backend()
        );
        assert!(
            again.next_attempt_at.is_some_and(|next| next >= before + delay - SLACK
                && next <= after + delay + SLACK),
            "backend: {}: next attempt {:?}",
            test_db.backend(),
            again.next_attempt_at
        );
        assert_eq!(
            stored_operation(db, operation.id).await,
            again,
            "backend: {}",
            test_db.backend()
        );

        // The retry gave the lease back: the fence it was written with writes nothing more.
        let refused = db
            .schedule_retry(
                operation.id,
                &fence,
                std::time::Duration::from_secs(60),
                "twice",
            )
            .await;
        assert!(
            matches!(refused, Err(RepoError::LeaseLost { .. })),
            "backend: {}: {refused:?}",
            test_db.backend()
        );

        db.complete_operation(
            operation.id,
            None,
            &completion(UpgradeStatus::Failed, false, None),
        )
        .await
        .unwrap()
        .unwrap();
        // A finished operation takes no retry, even written with a fence that holds it.
        let fence = db.claim_for_test(operation.id, "engine-a").await.unwrap();
        let refused = db
            .schedule_retry(
                operation.id,
                &fence,
                std::time::Duration::from_secs(540),
                "too late",
            )
            .await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            db.schedule_retry(
                OperationId::new(),
                &fence,
                std::time::Duration::from_secs(60),
                "x"
            )
            .await
            .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn queueing_an_upgrade_creates_the_firmware_record_not_installed_with_the_operation() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let record = DeviceFirmware::new(device.id, chain.image.id, false);
        let mut new = NewUpgradeOperation::new(device.id, chain.image.id);
        new.upgrade_options = options(serde_json::json!({"c": true}));
        let queued = new.into_operation();

        assert_eq!(
            db.queue_upgrade(&record, &queued).await.unwrap(),
            queued,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            stored_operation(db, queued.id).await,
            queued,
            "backend: {}",
            test_db.backend()
        );
        let stored = db.device_firmware(device.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.device_id, stored.image_id, stored.installed),
            (device.id, chain.image.id, false),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn queueing_an_upgrade_points_an_existing_firmware_record_at_the_new_image() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let next = image(
            db,
            &build(db, &chain.category, "2.0", None).await,
            IMAGE_TYPE,
        )
        .await;
        let device = device_in(db, chain.organization.id, "ap-1").await;
        let mut record = DeviceFirmware::new(device.id, chain.image.id, true);
        record.created = ago(60);
        record.modified = record.created;
        db.insert_device_firmware(&record).await.unwrap();

        let mut changed = record.clone();
        changed.image_id = next.id;
        let queued = NewUpgradeOperation::new(device.id, next.id).into_operation();
        db.queue_upgrade(&changed, &queued).await.unwrap();

        let stored = db.device_firmware(device.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.id, stored.image_id, stored.installed, stored.created),
            (record.id, next.id, false, record.created),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            stored.modified > record.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.unfinished_operation(device.id).await.unwrap(),
            Some(queued),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn queueing_an_upgrade_for_a_busy_device_changes_nothing() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let next = image(
            db,
            &build(db, &chain.category, "2.0", None).await,
            IMAGE_TYPE,
        )
        .await;
        let known = device_in(db, chain.organization.id, "known").await;
        let unknown = device_in(db, chain.organization.id, "unknown").await;
        let record = device_firmware(db, &known, &chain.image, true).await;
        operation(db, &known, &chain.image).await;
        let busy_unknown = operation(db, &unknown, &chain.image).await;

        // A device with a firmware record: the record must keep its image and state.
        let mut changed = record.clone();
        changed.image_id = next.id;
        let refused = db
            .queue_upgrade(
                &changed,
                &NewUpgradeOperation::new(known.id, next.id).into_operation(),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::OneUnfinishedOperationPerDevice
                })
            ),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(known.id).await.unwrap(),
            Some(record),
            "backend: {}: the firmware record change was not rolled back",
            test_db.backend()
        );
        // A device without one: no record may be left behind.
        let refused = db
            .queue_upgrade(
                &DeviceFirmware::new(unknown.id, next.id, false),
                &NewUpgradeOperation::new(unknown.id, next.id).into_operation(),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::OneUnfinishedOperationPerDevice
                })
            ),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(unknown.id).await.unwrap(),
            None,
            "backend: {}: the firmware record insert was not rolled back",
            test_db.backend()
        );
        assert_eq!(
            db.list_operations(
                &Scope::All,
                &OperationFilter {
                    device_id: Some(unknown.id),
                    ..OperationFilter::default()
                },
                PageRequest::all()
            )
            .await
            .unwrap()
            .items,
            [busy_unknown],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn operations_are_listed_newest_first_filtered_and_scoped() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let second_image = image(db, &acme.build, "second.bin").await;
        let d1 = device_in(db, acme.organization.id, "d1").await;
        let d2 = device_in(db, acme.organization.id, "d2").await;
        let u1 = device_in(db, umbrella.organization.id, "u1").await;
        let batch = db
            .insert_batch(&NewBatch::new(acme.build.id).into_batch())
            .await
            .unwrap();

        let mut op_a = new_operation(&d1, &acme.image, UpgradeStatus::Success, 5);
        op_a.batch_id = Some(batch.id);
        let op_b = new_operation(&d1, &second_image, UpgradeStatus::InProgress, 1);
        let mut op_c = new_operation(&d2, &acme.image, UpgradeStatus::Failed, 3);
        op_c.batch_id = Some(batch.id);
        let op_u = new_operation(&u1, &umbrella.image, UpgradeStatus::InProgress, 2);
        for operation in [&op_a, &op_b, &op_c, &op_u] {
            db.insert_operation(operation).await.unwrap();
        }

        let ids = |page: Page<UpgradeOperation>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|operation| operation.id)
                    .collect::<Vec<_>>(),
            )
        };
        let everything = OperationFilter::default();
        let cases = [
            (
                Scope::All,
                everything.clone(),
                PageRequest::page(1, 3),
                (4, vec![op_b.id, op_u.id, op_c.id]),
            ),
            (
                Scope::All,
                everything.clone(),
                PageRequest::page(2, 3),
                (4, vec![op_a.id]),
            ),
            (
                scope(&[acme.organization.id], true),
                everything.clone(),
                PageRequest::all(),
                (3, vec![op_b.id, op_c.id, op_a.id]),
            ),
            (
                Scope::All,
                OperationFilter {
                    device_id: Some(d1.id),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (2, vec![op_b.id, op_a.id]),
            ),
            (
                Scope::All,
                OperationFilter {
                    image_id: Some(acme.image.id),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (2, vec![op_c.id, op_a.id]),
            ),
            (
                Scope::All,
                OperationFilter {
                    batch_id: Some(batch.id),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (2, vec![op_c.id, op_a.id]),
            ),
            (
                Scope::All,
                OperationFilter {
                    status: Some(UpgradeStatus::InProgress),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (2, vec![op_b.id, op_u.id]),
            ),
            (
                Scope::All,
                OperationFilter {
                    organization_slug: Some("umbrella".into()),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (1, vec![op_u.id]),
            ),
            (
                scope(&[acme.organization.id], true),
                OperationFilter {
                    organization_slug: Some("umbrella".into()),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (0, vec![]),
            ),
            (
                Scope::All,
                OperationFilter {
                    device_id: Some(d1.id),
                    status: Some(UpgradeStatus::Success),
                    ..OperationFilter::default()
                },
                PageRequest::all(),
                (1, vec![op_a.id]),
            ),
        ];
        for (scope, filter, page, expected) in cases {
            assert_eq!(
                ids(db.list_operations(&scope, &filter, page).await.unwrap()),
                expected,
                "backend: {}: {scope:?} {filter:?} {page:?}",
                test_db.backend()
            );
        }
        let only_acme = scope(&[acme.organization.id], true);
        assert_eq!(
            db.operation(&only_acme, op_u.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.operation(&only_acme, op_c.id).await.unwrap(),
            Some(op_c),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn batches_are_listed_newest_first_filtered_and_scoped() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let acme_next = build(db, &acme.category, "2.0", None).await;
        let shared = build(db, &category(db, None, "Shared").await, "1.0", None).await;

        let old = new_batch(&acme.build, BatchStatus::Idle, 4);
        let newest = new_batch(&acme_next, BatchStatus::InProgress, 1);
        let foreign = new_batch(&umbrella.build, BatchStatus::Failed, 3);
        let of_shared = new_batch(&shared, BatchStatus::Success, 2);
        for batch in [&old, &newest, &foreign, &of_shared] {
            db.insert_batch(batch).await.unwrap();
        }

        let ids = |page: Page<BatchUpgradeOperation>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|batch| batch.id)
                    .collect::<Vec<_>>(),
            )
        };
        let everything = BatchFilter::default();
        let with_shared = scope(&[acme.organization.id], true);
        let without_shared = scope(&[acme.organization.id], false);
        let cases = [
            (
                Scope::All,
                everything.clone(),
                PageRequest::page(1, 3),
                (4, vec![newest.id, of_shared.id, foreign.id]),
            ),
            (
                Scope::All,
                everything.clone(),
                PageRequest::page(2, 3),
                (4, vec![old.id]),
            ),
            (
                with_shared.clone(),
                everything.clone(),
                PageRequest::all(),
                (3, vec![newest.id, of_shared.id, old.id]),
            ),
            (
                without_shared.clone(),
                everything.clone(),
                PageRequest::all(),
                (2, vec![newest.id, old.id]),
            ),
            (
                Scope::All,
                BatchFilter {
                    build_id: Some(acme.build.id),
                    ..BatchFilter::default()
                },
                PageRequest::all(),
                (1, vec![old.id]),
            ),
            (
                Scope::All,
                BatchFilter {
                    status: Some(BatchStatus::InProgress),
                    ..BatchFilter::default()
                },
                PageRequest::all(),
                (1, vec![newest.id]),
            ),
            (
                Scope::All,
                BatchFilter {
                    organization_slug: Some("acme".into()),
                    ..BatchFilter::default()
                },
                PageRequest::all(),
                (2, vec![newest.id, old.id]),
            ),
        ];
        for (scope, filter, page, expected) in cases {
            assert_eq!(
                ids(db.list_batches(&scope, &filter, page).await.unwrap()),
                expected,
                "backend: {}: {scope:?} {filter:?} {page:?}",
                test_db.backend()
            );
        }
        assert_eq!(
            db.batch(&with_shared, foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.batch(&with_shared, of_shared.id).await.unwrap(),
            Some(of_shared.clone()),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.batch(&without_shared, of_shared.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

/// Stores a batch of `build` with `status`, and one operation per entry of `statuses`, each on
/// a device of its own.
async fn batch_with_operations(
    db: &Db,
    chain: &crate::support::Chain,
    status: BatchStatus,
    statuses: &[UpgradeStatus],
    label: &str,
) -> BatchUpgradeOperation {
    let batch = db
        .insert_batch(&new_batch(&chain.build, status, 0))
        .await
        .expect("storing a batch");
    for (index, status) in statuses.iter().enumerate() {
        let device = device_in(db, chain.organization.id, &format!("{label}-{index}")).await;
        let mut operation = new_operation(&device, &chain.image, *status, 0);
        operation.batch_id = Some(batch.id);
        db.insert_operation(&operation)
            .await
            .expect("storing an operation");
    }
    batch
}

#[tokio::test]
async fn batch_counters_count_the_operations_of_the_batch_by_status() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        use UpgradeStatus::*;
        let batch = batch_with_operations(
            db,
            &chain,
            BatchStatus::InProgress,
            &[InProgress, Success, Success, Failed, Aborted, Cancelled],
            "counted",
        )
        .await;
        // Operations of another batch and without batch are not counted.
        batch_with_operations(db, &chain, BatchStatus::InProgress, &[Success], "other").await;
        let loose = device_in(db, chain.organization.id, "loose").await;
        operation(db, &loose, &chain.image).await;

        assert_eq!(
            db.batch_counters(batch.id).await.unwrap(),
            BatchCounters {
                total: 6,
                in_progress: 1,
                success: 2,
                failed: 1,
                aborted: 1,
                cancelled: 1,
            },
            "backend: {}",
            test_db.backend()
        );
        let empty = batch_with_operations(db, &chain, BatchStatus::Idle, &[], "empty").await;
        assert_eq!(
            db.batch_counters(empty.id).await.unwrap(),
            BatchCounters::default(),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn refreshing_a_batch_status_follows_masters_rule_where_failed_beats_cancelled() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        use UpgradeStatus::*;
        let cases: [(&[UpgradeStatus], BatchStatus); 6] = [
            (&[InProgress, Failed, Success], BatchStatus::InProgress),
            (&[Failed, Cancelled, Success], BatchStatus::Failed),
            (&[Aborted, Success], BatchStatus::Failed),
            (&[Cancelled, Success], BatchStatus::Cancelled),
            (&[Success, Success], BatchStatus::Success),
            (&[], BatchStatus::InProgress),
        ];
        for (index, (statuses, expected)) in cases.into_iter().enumerate() {
            let batch = batch_with_operations(
                db,
                &chain,
                BatchStatus::InProgress,
                statuses,
                &format!("case{index}"),
            )
            .await;
            let (refreshed, counters) = db.refresh_batch_status(batch.id).await.unwrap().unwrap();
            assert_eq!(
                (refreshed.status, counters.total),
                (expected, statuses.len() as u64),
                "backend: {}: {statuses:?}",
                test_db.backend()
            );
            assert_eq!(
                db.batch(&Scope::All, batch.id)
                    .await
                    .unwrap()
                    .map(|batch| batch.status),
                Some(expected),
                "backend: {}: {statuses:?}",
                test_db.backend()
            );
        }
        assert_eq!(
            db.refresh_batch_status(flashfleet_models::BatchId::new())
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_batch_status_follows_the_operations_as_they_finish() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let batch = db
            .insert_batch(&NewBatch::new(chain.build.id).into_batch())
            .await
            .unwrap();
        db.set_batch_status(batch.id, BatchStatus::InProgress)
            .await
            .unwrap()
            .unwrap();
        let mut operations = Vec::new();
        for name in ["ap-1", "ap-2"] {
            let device = device_in(db, chain.organization.id, name).await;
            let mut new = NewUpgradeOperation::new(device.id, chain.image.id);
            new.batch_id = Some(batch.id);
            let operation = new.into_operation();
            db.queue_upgrade(
                &DeviceFirmware::new(device.id, chain.image.id, false),
                &operation,
            )
            .await
            .unwrap();
            operations.push(operation);
        }

        db.complete_operation(
            operations[0].id,
            None,
            &completion(UpgradeStatus::Success, true, None),
        )
        .await
        .unwrap()
        .unwrap();
        let (refreshed, counters) = db.refresh_batch_status(batch.id).await.unwrap().unwrap();
        assert_eq!(
            (refreshed.status, counters.in_progress, counters.success),
            (BatchStatus::InProgress, 1, 1),
            "backend: {}",
            test_db.backend()
        );
        db.cancel_operation(operations[1].id)
            .await
            .unwrap()
            .unwrap();
        let (refreshed, counters) = db.refresh_batch_status(batch.id).await.unwrap().unwrap();
        assert_eq!(
            (refreshed.status, counters.cancelled, counters.completed()),
            (BatchStatus::Cancelled, 1, 2),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn setting_a_batch_status_is_refused_where_the_status_machine_forbids_it() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let mut batch = NewBatch::new(chain.build.id).into_batch();
        batch.created = ago(10);
        batch.modified = batch.created;
        db.insert_batch(&batch).await.unwrap();

        let refused = db.set_batch_status(batch.id, BatchStatus::Success).await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {}: idle to success: {refused:?}",
            test_db.backend()
        );
        let started = db
            .set_batch_status(batch.id, BatchStatus::InProgress)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            started.status,
            BatchStatus::InProgress,
            "backend: {}",
            test_db.backend()
        );
        assert!(
            started.modified > batch.modified,
            "backend: {}",
            test_db.backend()
        );
        let refused = db.set_batch_status(batch.id, BatchStatus::Idle).await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {}: in-progress to idle: {refused:?}",
            test_db.backend()
        );
        db.set_batch_status(batch.id, BatchStatus::Success)
            .await
            .unwrap()
            .unwrap();
        for to in [
            BatchStatus::Failed,
            BatchStatus::InProgress,
            BatchStatus::Cancelled,
        ] {
            let refused = db.set_batch_status(batch.id, to).await;
            assert!(
                matches!(refused, Err(RepoError::Transition(_))),
                "backend: {}: success to {to}: {refused:?}",
                test_db.backend()
            );
        }
        let same = db
            .set_batch_status(batch.id, BatchStatus::Success)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            same.status,
            BatchStatus::Success,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.batch(&Scope::All, batch.id)
                .await
                .unwrap()
                .map(|b| b.status),
            Some(BatchStatus::Success),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.set_batch_status(flashfleet_models::BatchId::new(), BatchStatus::InProgress)
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

/// What a candidate list says, comparable at a glance: device name, firmware record id and
/// current image type.
fn summary(
    candidates: &[UpgradeCandidate],
) -> Vec<(
    String,
    Option<flashfleet_models::DeviceFirmwareId>,
    Option<String>,
)> {
    candidates
        .iter()
        .map(|candidate| {
            (
                candidate.device.name.clone(),
                candidate.device_firmware.as_ref().map(|record| record.id),
                candidate.current_image_type.clone(),
            )
        })
        .collect()
}

/// Stores a device named `name` created `minutes_ago` ago, optionally deactivated, in a group,
/// with another model.
async fn aged_device(
    db: &Db,
    organization_id: OrganizationId,
    name: &str,
    minutes_ago: i64,
    model: &str,
    deactivated: bool,
    group_id: Option<DeviceGroupId>,
) -> Device {
    let mut device = new_device(organization_id, name, minutes_ago);
    device.model = model.into();
    device.is_deactivated = deactivated;
    device.group_id = group_id;
    db.insert_device(&device).await.expect("storing a device")
}

/// Stores a firmware record of `device` on `image` created `minutes_ago` ago.
async fn aged_firmware(
    db: &Db,
    device: &Device,
    image: &FirmwareImage,
    installed: bool,
    minutes_ago: i64,
) -> DeviceFirmware {
    let mut record = DeviceFirmware::new(device.id, image.id, installed);
    record.created = ago(minutes_ago);
    record.modified = record.created;
    db.insert_device_firmware(&record)
        .await
        .expect("storing a firmware record")
}

#[tokio::test]
async fn upgrade_candidates_are_devices_of_the_category_not_yet_running_this_build() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let org = acme.id;
        let routers = category(db, Some(org), "Routers").await;
        let old = image(db, &build(db, &routers, "1.0", None).await, IMAGE_TYPE).await;
        let target_build = build(db, &routers, "2.0", None).await;
        let target = image(db, &target_build, IMAGE_TYPE).await;
        let newer = image(db, &build(db, &routers, "3.0", None).await, IMAGE_TYPE).await;
        let elsewhere = category(db, Some(org), "Switches").await;
        let other_category = image(db, &build(db, &elsewhere, "2.0", None).await, "sw.bin").await;

        let on_target_pending =
            aged_device(db, org, "on-target-pending", 1, BOARD, false, None).await;
        let on_target_installed =
            aged_device(db, org, "on-target-installed", 2, BOARD, false, None).await;
        let on_newer = aged_device(db, org, "on-newer", 3, BOARD, false, None).await;
        let deactivated = aged_device(db, org, "deactivated", 4, BOARD, true, None).await;
        let on_old = aged_device(db, org, "on-old", 5, BOARD, false, None).await;
        let on_other = aged_device(db, org, "on-other-category", 6, BOARD, false, None).await;
        aged_device(db, org, "firmwareless", 7, BOARD, false, None).await;
        aged_device(db, org, "firmwareless-other-model", 8, "Other", false, None).await;
        aged_device(db, org, "firmwareless-deactivated", 9, BOARD, true, None).await;
        aged_device(
            db,
            org,
            "firmwareless-second-board",
            10,
            "Board Two",
            false,
            None,
        )
        .await;

        // Known devices are ordered by their firmware record, newest first (upstream's
        // `_find_related_device_firmwares` orders DeviceFirmware by `-created`): the records
        // are aged against the devices so that the two orders differ.
        let on_old_record = aged_firmware(db, &on_old, &old, true, 1).await;
        let on_newer_record = aged_firmware(db, &on_newer, &newer, true, 2).await;
        let pending = aged_firmware(db, &on_target_pending, &target, false, 3).await;
        aged_firmware(db, &on_target_installed, &target, true, 4).await;
        aged_firmware(db, &deactivated, &old, true, 5).await;
        aged_firmware(db, &on_other, &other_category, true, 6).await;

        let boards = vec![BOARD.to_owned(), "Board Two".to_owned()];
        let known = vec![
            (
                "on-old".to_owned(),
                Some(on_old_record.id),
                Some(IMAGE_TYPE.to_owned()),
            ),
            (
                "on-newer".to_owned(),
                Some(on_newer_record.id),
                Some(IMAGE_TYPE.to_owned()),
            ),
            (
                "on-target-pending".to_owned(),
                Some(pending.id),
                Some(IMAGE_TYPE.to_owned()),
            ),
        ];
        let candidates = db
            .upgrade_candidates(&target_build, Some(org), &boards, false, None)
            .await
            .unwrap();
        assert_eq!(
            summary(&candidates),
            known,
            "backend: {}: known devices only",
            test_db.backend()
        );
        assert_eq!(
            candidates[1].device,
            on_newer,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            candidates[1].device_firmware,
            Some(on_newer_record),
            "backend: {}",
            test_db.backend()
        );

        let mut with_firmwareless = known.clone();
        with_firmwareless.push(("firmwareless".into(), None, None));
        with_firmwareless.push(("firmwareless-second-board".into(), None, None));
        assert_eq!(
            summary(
                &db.upgrade_candidates(&target_build, Some(org), &boards, true, None)
                    .await
                    .unwrap()
            ),
            with_firmwareless,
            "backend: {}: known devices first, then firmwareless ones (newest device first)",
            test_db.backend()
        );
        let mut one_board = known.clone();
        one_board.push(("firmwareless".into(), None, None));
        assert_eq!(
            summary(
                &db.upgrade_candidates(&target_build, Some(org), &[BOARD.to_owned()], true, None)
                    .await
                    .unwrap()
            ),
            one_board,
            "backend: {}: only firmwareless devices of the given boards",
            test_db.backend()
        );
        assert_eq!(
            summary(
                &db.upgrade_candidates(&target_build, Some(org), &[], true, None)
                    .await
                    .unwrap()
            ),
            known,
            "backend: {}: no board, no firmwareless device",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn upgrade_candidates_can_be_narrowed_to_a_group_and_an_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await.id;
        let umbrella = organization(db, "umbrella").await.id;
        let group = db
            .insert_group(&NewDeviceGroup::new(acme, "Rooftop").into_group())
            .await
            .unwrap()
            .id;
        // A shared category: its builds reach devices of every organization.
        let shared = category(db, None, "Shared").await;
        let old = image(db, &build(db, &shared, "1.0", None).await, IMAGE_TYPE).await;
        let target = build(db, &shared, "2.0", None).await;

        let a1 = aged_device(db, acme, "a1", 1, BOARD, false, Some(group)).await;
        let a2 = aged_device(db, acme, "a2", 2, BOARD, false, None).await;
        let u1 = aged_device(db, umbrella, "u1", 3, BOARD, false, None).await;
        aged_device(db, acme, "a3", 4, BOARD, false, Some(group)).await;
        aged_device(db, umbrella, "u2", 5, BOARD, false, None).await;
        for (minutes_ago, device) in [(1, &a1), (2, &a2), (3, &u1)] {
            aged_firmware(db, device, &old, true, minutes_ago).await;
        }

        let boards = [BOARD.to_owned()];
        let names = |candidates: Vec<UpgradeCandidate>| {
            candidates
                .into_iter()
                .map(|candidate| candidate.device.name)
                .collect::<Vec<_>>()
        };
        let cases: [(Option<OrganizationId>, Option<DeviceGroupId>, Vec<&str>); 4] = [
            (None, None, vec!["a1", "a2", "u1", "a3", "u2"]),
            (Some(acme), None, vec!["a1", "a2", "a3"]),
            (None, Some(group), vec!["a1", "a3"]),
            (Some(umbrella), Some(group), vec![]),
        ];
        for (organization_id, group_id, expected) in cases {
            assert_eq!(
                names(
                    db.upgrade_candidates(&target, organization_id, &boards, true, group_id)
                        .await
                        .unwrap()
                ),
                expected,
                "backend: {}: organization {organization_id:?}, group {group_id:?}",
                test_db.backend()
            );
        }
    }
}

//! The durable queue: claiming operations with leases, heartbeats, expiry and fairness.

use std::time::Duration;

use flashfleet_db::testing::TestDb;
use flashfleet_db::{Backend, Db};
use flashfleet_models::repository::{
    Completion, DeviceRepository, ProgressUpdate, UpgradeRepository,
};
use flashfleet_models::{Fence, OperationId, Scope, UpgradePhase, UpgradeStatus};

use crate::support::{BOARD, chain, device, operation};

/// A lease of `minutes` minutes.
fn minutes(minutes: u64) -> Duration {
    Duration::from_secs(minutes * 60)
}

/// The fences of `claimed`, as `renew_leases` takes them.
fn fences(claimed: &[flashfleet_models::UpgradeOperation]) -> Vec<(OperationId, Fence)> {
    claimed
        .iter()
        .map(|operation| {
            let lease = operation
                .lease
                .as_ref()
                .expect("a claimed operation has a lease");
            (operation.id, lease.fence())
        })
        .collect()
}

#[tokio::test]
async fn claimed_operations_carry_a_lease_and_are_not_claimed_again_until_it_expires() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let mut queued = Vec::new();
        for name in ["ap-1", "ap-2", "ap-3"] {
            let device = device(db, chain.organization.id, name, BOARD).await;
            queued.push(operation(db, &device, &chain.image).await.id);
        }

        let claimed = db
            .claim_operations("engine-a", minutes(1), 10)
            .await
            .unwrap();
        let mut claimed_ids: Vec<OperationId> =
            claimed.iter().map(|operation| operation.id).collect();
        claimed_ids.sort();
        queued.sort();
        assert_eq!(claimed_ids, queued, "backend: {}", test_db.backend());
        assert!(
            claimed.iter().all(|operation| operation
                .lease
                .as_ref()
                .is_some_and(|lease| lease.owner == "engine-a")),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            claimed
                .iter()
                .all(|operation| operation.lease.as_ref().map(|lease| lease.epoch) == Some(1)),
            "backend: {}: a first claim has epoch 1",
            test_db.backend()
        );
        assert!(
            db.claim_operations("engine-b", minutes(1), 10)
                .await
                .unwrap()
                .is_empty(),
            "backend: {}: a held lease keeps others away",
            test_db.backend()
        );

        // The holder renews its leases.
        let held = fences(&claimed);
        let mut renewed = db.renew_leases(&held, minutes(1)).await.unwrap();
        renewed.sort();
        assert_eq!(renewed, queued, "backend: {}", test_db.backend());

        // engine-a stops renewing: once its leases expire, engine-b recovers the operations.
        for id in &queued {
            db.expire_lease(*id).await.unwrap();
        }
        let recovered = db
            .claim_operations("engine-b", minutes(1), 10)
            .await
            .unwrap();
        assert_eq!(recovered.len(), 3, "backend: {}", test_db.backend());
        assert!(
            recovered.iter().all(|operation| operation
                .lease
                .as_ref()
                .is_some_and(|lease| lease.owner == "engine-b" && lease.epoch == 2)),
            "backend: {}: a recovery claim moves the epoch on",
            test_db.backend()
        );
        assert!(
            db.renew_leases(&held, minutes(1)).await.unwrap().is_empty(),
            "backend: {}: a lost lease cannot be renewed by its former holder",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn operations_waiting_for_a_retry_or_finished_are_not_claimed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let waiting_device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let waiting = operation(db, &waiting_device, &chain.image).await;
        let fence = db.claim_for_test(waiting.id, "engine-a").await.unwrap();
        db.schedule_retry(waiting.id, &fence, minutes(5), "retry later")
            .await
            .unwrap()
            .unwrap();
        let finished_device = device(db, chain.organization.id, "ap-2", BOARD).await;
        let finished = operation(db, &finished_device, &chain.image).await;
        db.complete_operation(
            finished.id,
            None,
            &Completion {
                status: UpgradeStatus::Failed,
                log_line: None,
                installed: false,
            },
        )
        .await
        .unwrap();

        assert!(
            db.claim_operations("engine-a", minutes(1), 10)
                .await
                .unwrap()
                .is_empty(),
            "backend: {}",
            test_db.backend()
        );
        // Once due, the retried operation is claimable again (a retry without delay is due at
        // once; the test claim only provides a fence to write it with).
        let fence = db.claim_for_test(waiting.id, "engine-a").await.unwrap();
        db.schedule_retry(waiting.id, &fence, Duration::ZERO, "retry now")
            .await
            .unwrap()
            .unwrap();
        let claimed = db
            .claim_operations("engine-a", minutes(1), 10)
            .await
            .unwrap();
        assert_eq!(
            claimed
                .iter()
                .map(|operation| operation.id)
                .collect::<Vec<_>>(),
            [waiting.id],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn claims_take_turns_between_organizations() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let busy = chain(db, "busy").await;
        for index in 0..5 {
            let device = device(db, busy.organization.id, &format!("busy-{index}"), BOARD).await;
            operation(db, &device, &busy.image).await;
        }
        let quiet = chain(db, "quiet").await;
        let quiet_device = device(db, quiet.organization.id, "quiet-1", BOARD).await;
        let quiet_operation = operation(db, &quiet_device, &quiet.image).await;

        let claimed = db
            .claim_operations("engine-a", minutes(1), 2)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2, "backend: {}", test_db.backend());
        assert!(
            claimed
                .iter()
                .any(|operation| operation.id == quiet_operation.id),
            "backend: {}: the quiet organization's only operation waits behind nobody",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_released_lease_makes_the_operation_claimable_and_finishing_clears_the_lease() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let queued = operation(db, &device, &chain.image).await;
        let claimed = db
            .claim_operations("engine-a", minutes(1), 1)
            .await
            .unwrap();
        let fence_a = claimed[0].lease.as_ref().unwrap().fence();
        let other_owner = Fence {
            owner: "engine-b".into(),
            epoch: fence_a.epoch,
        };
        let other_epoch = Fence {
            owner: "engine-a".into(),
            epoch: fence_a.epoch + 1,
        };
        for wrong in [&other_owner, &other_epoch] {
            assert!(
                !db.release_lease(queued.id, wrong).await.unwrap(),
                "backend: {}: {wrong}",
                test_db.backend()
            );
        }
        assert!(
            db.release_lease(queued.id, &fence_a).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        let released = db.operation(&Scope::All, queued.id).await.unwrap().unwrap();
        assert_eq!(released.lease, None, "backend: {}", test_db.backend());
        let claimed = db
            .claim_operations("engine-b", minutes(1), 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "backend: {}", test_db.backend());
        let fence_b = claimed[0].lease.as_ref().unwrap().fence();
        assert_eq!(
            fence_b.epoch,
            fence_a.epoch + 1,
            "backend: {}: a claim after a release still moves the epoch on",
            test_db.backend()
        );

        // Progress keeps the lease; completion clears it.
        let progressed = db
            .record_progress(
                queued.id,
                &fence_b,
                &ProgressUpdate {
                    phase: UpgradePhase::Connecting,
                    progress: 5,
                    log_line: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            progressed.lease.map(|lease| lease.fence()),
            Some(fence_b.clone()),
            "backend: {}",
            test_db.backend()
        );
        let completed = db
            .complete_operation(
                queued.id,
                Some(&fence_b),
                &Completion {
                    status: UpgradeStatus::Success,
                    log_line: None,
                    installed: true,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(completed.lease, None, "backend: {}", test_db.backend());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_claiming_at_once_never_claim_one_operation_twice() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let mut queued = Vec::new();
        for index in 0..40 {
            let device = device(db, chain.organization.id, &format!("ap-{index}"), BOARD).await;
            queued.push(operation(db, &device, &chain.image).await.id);
        }
        let second = Db::connect(&test_db.config()).await.unwrap();
        let engines = [("engine-a", db.clone()), ("engine-b", second)];
        let tasks = engines.into_iter().map(|(name, handle)| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // Small batches, so both engines keep claiming while the other does.
                loop {
                    let claimed = handle.claim_operations(name, minutes(1), 3).await.unwrap();
                    if claimed.is_empty() {
                        break mine;
                    }
                    mine.extend(claimed.into_iter().map(|operation| operation.id));
                }
            })
        });
        let results = futures_util::future::join_all(tasks).await;
        let mut all: Vec<OperationId> = results
            .into_iter()
            .flat_map(|result| result.unwrap())
            .collect();
        let claimed_total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            claimed_total,
            "backend: {}: an operation was claimed twice",
            test_db.backend()
        );
        queued.sort();
        assert_eq!(
            all,
            queued,
            "backend: {}: every operation is claimed once",
            test_db.backend()
        );
        if test_db.backend() == Backend::Postgres {
            eprintln!("claims raced on PostgreSQL with FOR UPDATE SKIP LOCKED");
        }
    }
}

#[tokio::test]
async fn a_batch_is_queued_in_one_transaction_leaving_busy_devices_out() {
    use flashfleet_models::{BatchStatus, DeviceFirmware, NewBatch, NewUpgradeOperation, Scope};
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let free = device(db, chain.organization.id, "free", BOARD).await;
        let busy = device(db, chain.organization.id, "busy", BOARD).await;
        let running = operation(db, &busy, &chain.image).await;
        let batch = NewBatch::new(chain.build.id).into_batch();
        let upgrades: Vec<_> = [&free, &busy]
            .into_iter()
            .map(|device| {
                let mut operation = NewUpgradeOperation::new(device.id, chain.image.id);
                operation.batch_id = Some(batch.id);
                (
                    DeviceFirmware::new(device.id, chain.image.id, true),
                    operation.into_operation(),
                )
            })
            .collect();

        let (stored, operations, left_out) = db.queue_batch(&batch, &upgrades).await.unwrap();

        assert_eq!(
            stored.status,
            BatchStatus::InProgress,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(operations.len(), 1, "backend: {}", test_db.backend());
        assert_eq!(
            (operations[0].device_id, operations[0].batch_id),
            (free.id, Some(batch.id))
        );
        assert_eq!(left_out, [busy.id], "backend: {}", test_db.backend());
        let firmware = db.device_firmware(free.id).await.unwrap().unwrap();
        assert!(
            !firmware.installed,
            "backend: {}: a queued upgrade is not installed yet",
            test_db.backend()
        );
        let untouched = db
            .operation(&Scope::All, running.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.batch_id, None, "backend: {}", test_db.backend());
        assert_eq!(db.batch_counters(batch.id).await.unwrap().total, 1);
    }
}

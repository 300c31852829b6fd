//! Fencing of the engine's writes: every claim moves an operation's lease epoch on, every write
//! an engine makes for an operation carries the fence (owner and epoch) it claimed with, and a
//! former holder whose lease was claimed since writes nothing. Leases are written and compared
//! with the database's clock. The flash is entered once per operation, through `begin_flash`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::{
    Completion, DeviceRepository, ProgressUpdate, UpgradeRepository,
};
use flashfleet_models::{
    DeviceFirmware, Fence, NewUpgradeOperation, OperationId, RepoError, RepoResult, Scope,
    UpgradeOperation, UpgradePhase, UpgradeStatus,
};
use tokio::sync::Barrier;

use crate::support::{BOARD, Chain, chain, device, operation};

/// The lease engines claim with in these tests.
const LEASE: Duration = Duration::from_secs(30);

/// How far a lease's expiry may be from this process's expectation (the database runs on this
/// machine, so its clock is this process's).
const SLACK: TimeDelta = TimeDelta::seconds(5);

fn progress(phase: UpgradePhase, progress: u8, log_line: &str) -> ProgressUpdate {
    ProgressUpdate {
        phase,
        progress,
        log_line: Some(log_line.to_owned()),
    }
}

fn completion(status: UpgradeStatus, installed: bool) -> Completion {
    Completion {
        status,
        log_line: None,
        installed,
    }
}

/// The fence of a claimed operation.
fn fence_of(operation: &UpgradeOperation) -> Fence {
    operation
        .lease
        .as_ref()
        .expect("a claimed operation carries its lease")
        .fence()
}

fn ids(operations: &[UpgradeOperation]) -> Vec<OperationId> {
    operations.iter().map(|operation| operation.id).collect()
}

async fn stored(db: &Db, id: OperationId) -> UpgradeOperation {
    db.operation(&Scope::All, id)
        .await
        .expect("reading an operation")
        .expect("the operation exists")
}

/// Stores a device named `name` with a queued operation putting `chain`'s image on it.
async fn queued(db: &Db, chain: &Chain, name: &str) -> UpgradeOperation {
    let device = device(db, chain.organization.id, name, BOARD).await;
    operation(db, &device, &chain.image).await
}

/// Whether `result` is a lost lease reported for `fence`.
fn lease_lost<T>(result: &RepoResult<T>, fence: &Fence) -> bool {
    matches!(result, Err(RepoError::LeaseLost { fence: refused, .. }) if *refused == fence.to_string())
}

/// Whether `expires_at` is `LEASE` from now, give or take `SLACK`.
fn expires_a_lease_from_now(expires_at: DateTime<Utc>) -> bool {
    let expected =
        flashfleet_models::time::now() + TimeDelta::from_std(LEASE).expect("a test step");
    (expires_at - expected).abs() <= SLACK
}

#[tokio::test]
async fn fencing_a_stale_holder_cannot_write_after_another_claim() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let operation = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        db.queue_upgrade(
            &DeviceFirmware::new(device.id, chain.image.id, false),
            &operation,
        )
        .await
        .expect("a test step");
        let id = operation.id;

        let claimed = db
            .claim_operations("engine-a", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [id], "backend: {backend}");
        let a = fence_of(&claimed[0]);
        assert_eq!(
            a,
            Fence {
                owner: "engine-a".into(),
                epoch: 1
            },
            "backend: {backend}"
        );
        db.record_progress(
            id,
            &a,
            &progress(UpgradePhase::TestingImage, 60, "Testing the image"),
        )
        .await
        .expect("a test step")
        .expect("a test step");

        // engine-a stops renewing (stalled, not dead); engine-b recovers the operation.
        db.expire_lease(id).await.expect("a test step");
        let claimed = db
            .claim_operations("engine-b", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [id], "backend: {backend}");
        let b = fence_of(&claimed[0]);
        assert_eq!(
            b,
            Fence {
                owner: "engine-b".into(),
                epoch: 2
            },
            "backend: {backend}: the recovery claim moves the epoch on"
        );
        let flashed = db
            .begin_flash(id, &b, Some("boot-b"), "Flashing (engine-b)")
            .await
            .expect("a test step")
            .expect("a test step");
        assert_eq!(
            (
                flashed.phase,
                flashed.flash_attempts,
                flashed.flash_boot_id.as_deref()
            ),
            (UpgradePhase::Flashing, 1, Some("boot-b")),
            "backend: {backend}"
        );
        let before = stored(db, id).await;

        // engine-a wakes up and carries on with its stale fence: every write is refused.
        let flash = db
            .begin_flash(id, &a, Some("boot-a"), "Flashing (engine-a)")
            .await;
        assert!(lease_lost(&flash, &a), "backend: {backend}: {flash:?}");
        let progressed = db
            .record_progress(
                id,
                &a,
                &progress(UpgradePhase::WaitingForReboot, 70, "Waiting (engine-a)"),
            )
            .await;
        assert!(
            lease_lost(&progressed, &a),
            "backend: {backend}: {progressed:?}"
        );
        let completed = db
            .complete_operation(id, Some(&a), &completion(UpgradeStatus::Success, true))
            .await;
        assert!(
            lease_lost(&completed, &a),
            "backend: {backend}: {completed:?}"
        );
        let retried = db
            .schedule_retry(id, &a, Duration::from_secs(60), "Retrying (engine-a)")
            .await;
        assert!(lease_lost(&retried, &a), "backend: {backend}: {retried:?}");
        assert_eq!(
            db.renew_leases(&[(id, a.clone())], LEASE)
                .await
                .expect("a test step"),
            Vec::<OperationId>::new(),
            "backend: {backend}: a lost lease is not renewed"
        );
        assert!(
            !db.release_lease(id, &a).await.expect("a test step"),
            "backend: {backend}: a lost lease is not released"
        );

        let after = stored(db, id).await;
        assert_eq!(
            after, before,
            "backend: {backend}: refused writes change nothing"
        );
        assert_eq!(
            (
                after.lease.as_ref().map(|lease| lease.fence()),
                after.status,
                after.phase,
                after.flash_attempts,
                after.flash_boot_id.as_deref()
            ),
            (
                Some(b.clone()),
                UpgradeStatus::InProgress,
                UpgradePhase::Flashing,
                1,
                Some("boot-b")
            ),
            "backend: {backend}"
        );
        assert!(
            !db.device_firmware(device.id)
                .await
                .expect("a test step")
                .expect("a test step")
                .installed,
            "backend: {backend}: the refused completion marked nothing installed"
        );
        // engine-b still holds it.
        assert_eq!(
            db.renew_leases(&[(id, b.clone())], LEASE)
                .await
                .expect("a test step"),
            [id],
            "backend: {backend}"
        );
    }
}

#[tokio::test]
async fn fencing_a_second_flash_needs_restart_unflashed() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let chain = chain(db, "acme").await;
        let id = queued(db, &chain, "ap-1").await.id;
        let fence = db
            .claim_for_test(id, "engine-a")
            .await
            .expect("a test step");

        // Before the flash there is nothing to restart.
        let refused = db.restart_unflashed(id, &fence, "Not flashed").await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {backend}: queued: {refused:?}"
        );
        db.record_progress(
            id,
            &fence,
            &progress(UpgradePhase::TestingImage, 60, "Testing the image"),
        )
        .await
        .expect("a test step")
        .expect("a test step");
        let testing = stored(db, id).await;
        let refused = db.restart_unflashed(id, &fence, "Not flashed").await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {backend}: testing the image: {refused:?}"
        );
        // Progress never enters the flash: only `begin_flash` does.
        let refused = db
            .record_progress(
                id,
                &fence,
                &progress(UpgradePhase::Flashing, 65, "Flashing"),
            )
            .await;
        assert!(
            matches!(refused, Err(RepoError::Transition(_))),
            "backend: {backend}: progress into the flash: {refused:?}"
        );
        assert_eq!(
            stored(db, id).await,
            testing,
            "backend: {backend}: refused writes change nothing"
        );

        let first = db
            .begin_flash(id, &fence, Some("boot-1"), "Flashing")
            .await
            .expect("a test step")
            .expect("a test step");
        assert_eq!(
            (
                first.phase,
                first.progress,
                first.flash_attempts,
                first.flash_boot_id.as_deref()
            ),
            (UpgradePhase::Flashing, 65, 1, Some("boot-1")),
            "backend: {backend}"
        );
        assert!(
            first.log.ends_with("Testing the image\nFlashing"),
            "backend: {backend}: {:?}",
            first.log
        );
        let again = db
            .begin_flash(id, &fence, Some("boot-2"), "Flashing again")
            .await;
        assert!(
            matches!(again, Err(RepoError::Transition(_))),
            "backend: {backend}: a second flash with the same fence: {again:?}"
        );
        assert_eq!(
            stored(db, id).await,
            first,
            "backend: {backend}: flash_attempts stays 1"
        );
        // Nor after the flash moved on.
        db.record_progress(
            id,
            &fence,
            &progress(UpgradePhase::WaitingForReboot, 70, "Waiting for the reboot"),
        )
        .await
        .expect("a test step")
        .expect("a test step");
        let again = db
            .begin_flash(id, &fence, Some("boot-2"), "Flashing again")
            .await;
        assert!(
            matches!(again, Err(RepoError::Transition(_))),
            "backend: {backend}: waiting for the reboot: {again:?}"
        );

        // The device proved the flash never reached it: back to the queue, then a new flash.
        let restarted = db
            .restart_unflashed(id, &fence, "Same boot id, old release: not flashed")
            .await
            .expect("a test step")
            .expect("a test step");
        assert_eq!(
            (
                restarted.status,
                restarted.phase,
                restarted.progress,
                restarted.flash_attempts
            ),
            (UpgradeStatus::InProgress, UpgradePhase::Queued, 0, 1),
            "backend: {backend}"
        );
        assert!(
            restarted
                .log
                .ends_with("\nSame boot id, old release: not flashed"),
            "backend: {backend}: {:?}",
            restarted.log
        );
        let second = db
            .begin_flash(id, &fence, Some("boot-2"), "Flashing (second attempt)")
            .await
            .expect("a test step")
            .expect("a test step");
        assert_eq!(
            (
                second.phase,
                second.flash_attempts,
                second.flash_boot_id.as_deref()
            ),
            (UpgradePhase::Flashing, 2, Some("boot-2")),
            "backend: {backend}"
        );
        assert_eq!(stored(db, id).await, second, "backend: {backend}");
        // A boot id the upgrader could not read is recorded as unknown.
        db.restart_unflashed(id, &fence, "Not flashed")
            .await
            .expect("a test step")
            .expect("a test step");
        let third = db
            .begin_flash(id, &fence, None, "Flashing (third attempt)")
            .await
            .expect("a test step")
            .expect("a test step");
        assert_eq!(
            (third.flash_attempts, third.flash_boot_id),
            (3, None),
            "backend: {backend}"
        );
    }
}

#[tokio::test]
async fn fencing_leases_use_the_database_clock() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let ahead = db.clone().with_clock_skew(TimeDelta::seconds(60));
        let behind = db.clone().with_clock_skew(TimeDelta::seconds(-60));
        let chain = chain(db, "acme").await;
        let first = queued(db, &chain, "ap-1").await.id;

        let claimed = db
            .claim_operations("engine-a", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [first], "backend: {backend}");
        let lease = claimed[0].lease.clone().expect("a test step");
        assert!(
            expires_a_lease_from_now(lease.expires_at),
            "backend: {backend}: {lease:?}"
        );
        // By its own clock the lease expired 30 s ago; by the database's it has 30 s to go.
        let taken = ahead
            .claim_operations("engine-ahead", LEASE, 10)
            .await
            .expect("a test step");
        assert!(
            taken.is_empty(),
            "backend: {backend}: a server whose clock is ahead took a live lease: {taken:?}"
        );
        assert_eq!(
            stored(db, first).await.lease,
            Some(lease),
            "backend: {backend}"
        );

        // Expired by the database's clock: claimable for a server whose clock is behind.
        db.expire_lease(first).await.expect("a test step");
        let recovered = behind
            .claim_operations("engine-behind", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&recovered), [first], "backend: {backend}");
        let behind_lease = recovered[0].lease.clone().expect("a test step");
        assert_eq!(
            (behind_lease.owner.as_str(), behind_lease.epoch),
            ("engine-behind", 2),
            "backend: {backend}"
        );
        assert!(
            expires_a_lease_from_now(behind_lease.expires_at),
            "backend: {backend}: the lease of a server whose clock is behind: {behind_lease:?}"
        );

        // The expiry of a claim by a server whose clock is ahead is the database's too.
        let second = queued(db, &chain, "ap-2").await.id;
        let claimed = ahead
            .claim_operations("engine-ahead", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [second], "backend: {backend}");
        let ahead_lease = claimed[0].lease.clone().expect("a test step");
        assert!(
            expires_a_lease_from_now(ahead_lease.expires_at),
            "backend: {backend}: the lease of a server whose clock is ahead: {ahead_lease:?}"
        );

        // Renewals too.
        for (handle, id, lease) in [
            (&ahead, second, &ahead_lease),
            (&behind, first, &behind_lease),
        ] {
            assert_eq!(
                handle
                    .renew_leases(&[(id, lease.fence())], LEASE)
                    .await
                    .expect("a test step"),
                [id],
                "backend: {backend}"
            );
            let renewed = stored(db, id).await.lease.expect("a test step");
            assert!(
                expires_a_lease_from_now(renewed.expires_at) && renewed.epoch == lease.epoch,
                "backend: {backend}: renewed by {}: {renewed:?}",
                lease.owner
            );
        }

        // A lease that expired a moment ago by the database's clock is expired for a server
        // whose own clock says it has a minute to go.
        let third = queued(db, &chain, "ap-3").await.id;
        let claimed = db
            .claim_operations("engine-a", Duration::from_millis(500), 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [third], "backend: {backend}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let recovered = behind
            .claim_operations("engine-behind", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(
            ids(&recovered),
            [third],
            "backend: {backend}: a lease that just expired"
        );

        // A retry is due by the database's clock as well: one due now from a server whose
        // clock is ahead is claimable now.
        let retried = ahead
            .schedule_retry(second, &ahead_lease.fence(), Duration::ZERO, "Retrying")
            .await
            .expect("a test step")
            .expect("a test step");
        let now = flashfleet_models::time::now();
        assert!(
            retried
                .next_attempt_at
                .is_some_and(|next| (next - now).abs() <= SLACK),
            "backend: {backend}: next attempt {:?}",
            retried.next_attempt_at
        );
        let claimed = db
            .claim_operations("engine-a", LEASE, 10)
            .await
            .expect("a test step");
        assert_eq!(ids(&claimed), [second], "backend: {backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_concurrent_claims_increment_the_epoch_once_each() {
    const OPERATIONS: usize = 20;
    const CLAIMERS: usize = 8;
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let mut operations = Vec::new();
        for index in 0..OPERATIONS {
            let chain = if index % 2 == 0 { &acme } else { &umbrella };
            operations.push(queued(db, chain, &format!("ap-{index}")).await.id);
        }
        operations.sort();

        let handles = [
            db.clone(),
            Db::connect(&test_db.config()).await.expect("a test step"),
        ];
        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let tasks = (0..CLAIMERS).map(|index| {
            let handle = handles[index % 2].clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let owner = format!("engine-{index}");
                barrier.wait().await;
                let mut mine = Vec::new();
                // Small batches, so that the claimers keep claiming while the others do.
                loop {
                    let claimed = handle
                        .claim_operations(&owner, LEASE, 2)
                        .await
                        .expect("a test step");
                    if claimed.is_empty() {
                        break (owner, mine);
                    }
                    mine.extend(claimed);
                }
            })
        });
        let results: Vec<(String, Vec<UpgradeOperation>)> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|joined| joined.expect("a claimer panicked"))
            .collect();

        let mut claimed: Vec<OperationId> =
            results.iter().flat_map(|(_, mine)| ids(mine)).collect();
        claimed.sort();
        assert_eq!(
            claimed, operations,
            "backend: {backend}: every operation is claimed exactly once"
        );
        for (owner, mine) in &results {
            for operation in mine {
                let expected = Fence {
                    owner: owner.clone(),
                    epoch: 1,
                };
                assert_eq!(
                    fence_of(operation),
                    expected,
                    "backend: {backend}: as claimed"
                );
                assert_eq!(
                    stored(db, operation.id)
                        .await
                        .lease
                        .map(|lease| lease.fence()),
                    Some(expected),
                    "backend: {backend}: as stored"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_begin_flash_racing_from_two_fences_never_lets_both_succeed() {
    const ROUNDS: usize = 20;
    /// How many times each engine calls `begin_flash` at once.
    const CALLS: usize = 3;
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let other = Db::connect(&test_db.config()).await.expect("a test step");
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        for round in 0..ROUNDS {
            let operation = operation(db, &device, &chain.image).await;
            let id = operation.id;
            let claimed = db
                .claim_operations("engine-a", LEASE, 1)
                .await
                .expect("a test step");
            assert_eq!(ids(&claimed), [id], "backend: {backend}: round {round}");
            let a = fence_of(&claimed[0]);
            db.expire_lease(id).await.expect("a test step");
            let claimed = other
                .claim_operations("engine-b", LEASE, 1)
                .await
                .expect("a test step");
            assert_eq!(ids(&claimed), [id], "backend: {backend}: round {round}");
            let b = fence_of(&claimed[0]);
            assert_eq!(b.epoch, a.epoch + 1, "backend: {backend}: round {round}");

            let barrier = Arc::new(Barrier::new(2 * CALLS));
            let mut tasks = Vec::new();
            for call in 0..2 * CALLS {
                let (handle, fence) = if call % 2 == 0 {
                    (db.clone(), a.clone())
                } else {
                    (other.clone(), b.clone())
                };
                let barrier = Arc::clone(&barrier);
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let boot_id = format!("boot-{}", fence.owner);
                    let result = handle
                        .begin_flash(id, &fence, Some(&boot_id), "Flashing")
                        .await;
                    (fence, result)
                }));
            }
            let results: Vec<(Fence, RepoResult<Option<UpgradeOperation>>)> =
                futures_util::future::join_all(tasks)
                    .await
                    .into_iter()
                    .map(|joined| joined.expect("a flashing task panicked"))
                    .collect();

            let succeeded: Vec<&Fence> = results
                .iter()
                .filter(|(_, result)| matches!(result, Ok(Some(_))))
                .map(|(fence, _)| fence)
                .collect();
            assert_eq!(
                succeeded,
                [&b],
                "backend: {backend}: round {round}: only the holder flashes, once: {results:?}"
            );
            for (fence, result) in &results {
                if *fence == a {
                    assert!(
                        lease_lost(result, &a),
                        "backend: {backend}: round {round}: {result:?}"
                    );
                } else if !matches!(result, Ok(Some(_))) {
                    assert!(
                        matches!(result, Err(RepoError::Transition(_))),
                        "backend: {backend}: round {round}: {result:?}"
                    );
                }
            }
            let after = stored(db, id).await;
            assert_eq!(
                (
                    after.phase,
                    after.flash_attempts,
                    after.flash_boot_id.as_deref(),
                    after.lease.as_ref().map(|lease| lease.fence())
                ),
                (UpgradePhase::Flashing, 1, Some("boot-engine-b"), Some(b)),
                "backend: {backend}: round {round}"
            );
            db.complete_operation(id, None, &completion(UpgradeStatus::Failed, false))
                .await
                .expect("a test step")
                .expect("a test step");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_begin_flash_racing_a_recovery_claim_flashes_once() {
    const ROUNDS: usize = 20;
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let other = Db::connect(&test_db.config()).await.expect("a test step");
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let mut outcomes = [0_usize; 3];
        for round in 0..ROUNDS {
            let operation = operation(db, &device, &chain.image).await;
            let id = operation.id;
            let claimed = db
                .claim_operations("engine-a", LEASE, 1)
                .await
                .expect("a test step");
            assert_eq!(ids(&claimed), [id], "backend: {backend}: round {round}");
            let a = fence_of(&claimed[0]);
            // engine-a stalls right before its flash: its lease expires unrenewed, and
            // engine-b's claim races engine-a's flash.
            db.expire_lease(id).await.expect("a test step");

            let barrier = Arc::new(Barrier::new(2));
            let stale = {
                let (db, barrier, a) = (db.clone(), Arc::clone(&barrier), a.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    db.begin_flash(id, &a, Some("boot-a"), "Flashing (engine-a)")
                        .await
                })
            };
            let recovery = {
                let (other, barrier) = (other.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let claimed = other.claim_operations("engine-b", LEASE, 1).await?;
                    let Some(claimed) = claimed.first() else {
                        return Ok(None);
                    };
                    let b = fence_of(claimed);
                    let flashed = other
                        .begin_flash(id, &b, Some("boot-b"), "Flashing (engine-b)")
                        .await;
                    RepoResult::Ok(Some((b, flashed)))
                })
            };
            let stale = stale.await.expect("a test step");
            let recovery = recovery.await.expect("a test step").expect("a test step");

            let after = stored(db, id).await;
            let (winner, index) = match (&stale, &recovery) {
                // engine-a flashed first; engine-b claimed it after (recovering it by its
                // phase) or found it locked, and may not flash it again.
                (Ok(Some(_)), None) => ("boot-a", 0),
                (Ok(Some(_)), Some((_, Err(RepoError::Transition(_))))) => ("boot-a", 1),
                // engine-b claimed first: engine-a's flash is fenced out.
                (Err(RepoError::LeaseLost { .. }), Some((b, Ok(Some(_))))) => {
                    assert_eq!(
                        after.lease.as_ref().map(|lease| lease.fence()),
                        Some(b.clone()),
                        "backend: {backend}: round {round}"
                    );
                    ("boot-b", 2)
                }
                other => panic!(
                    "backend: {backend}: round {round}: exactly one flash must succeed: {other:?}"
                ),
            };
            outcomes[index] += 1;
            assert_eq!(
                (
                    after.phase,
                    after.flash_attempts,
                    after.flash_boot_id.as_deref()
                ),
                (UpgradePhase::Flashing, 1, Some(winner)),
                "backend: {backend}: round {round}"
            );
            db.complete_operation(id, None, &completion(UpgradeStatus::Failed, false))
                .await
                .expect("a test step")
                .expect("a test step");
        }
        eprintln!(
            "backend: {backend}: engine-a flashed first {} times (engine-b unclaimed {}, refused {}), engine-b {} times",
            outcomes[0] + outcomes[1],
            outcomes[0],
            outcomes[1],
            outcomes[2]
        );
    }
}

/// Reveals a bug of `flashfleet-db` on PostgreSQL (not fixed here): a guarded write
/// (`record_progress`, `begin_flash`, ...) writes back every column it read, the lease's expiry
/// included, under a condition (status, `modified`, epoch) that a renewal does not change; a
/// renewal that commits between the write's read and its update is undone, though
/// `renew_leases` reported it renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_a_renewal_is_not_undone_by_a_concurrent_write() {
    const ROUNDS: usize = 50;
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend();
        let heartbeat = Db::connect(&test_db.config()).await.expect("a test step");
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let mut lost = Vec::new();
        for round in 0..ROUNDS {
            let id = operation(db, &device, &chain.image).await.id;
            // A short first lease, so that an undone renewal shows.
            let claimed = db
                .claim_operations("engine-a", Duration::from_secs(2), 1)
                .await
                .expect("a test step");
            let a = fence_of(&claimed[0]);
            let writer = {
                let (db, a) = (db.clone(), a.clone());
                tokio::spawn(async move {
                    for step in 0..20 {
                        db.record_progress(
                            id,
                            &a,
                            &progress(UpgradePhase::Connecting, step, "Connecting"),
                        )
                        .await
                        .expect("a test step")
                        .expect("a test step");
                    }
                })
            };
            let renewal = {
                let (heartbeat, a) = (heartbeat.clone(), a.clone());
                tokio::spawn(async move {
                    let pause = u64::try_from(round * 137 % 3000).unwrap_or_default();
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                    heartbeat
                        .renew_leases(&[(id, a)], LEASE)
                        .await
                        .expect("a test step")
                })
            };
            writer.await.expect("a test step");
            assert_eq!(
                renewal.await.expect("a test step"),
                [id],
                "backend: {backend}: round {round}"
            );
            let lease = stored(db, id).await.lease.expect("a test step");
            if !expires_a_lease_from_now(lease.expires_at) {
                lost.push((round, lease.expires_at - flashfleet_models::time::now()));
            }
            db.complete_operation(id, None, &completion(UpgradeStatus::Failed, false))
                .await
                .expect("a test step")
                .expect("a test step");
        }
        assert!(
            lost.is_empty(),
            "backend: {backend}: {} of {ROUNDS} renewals reported done were undone (round, \
             time left of the lease): {lost:?}",
            lost.len()
        );
    }
}

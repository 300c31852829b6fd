//! [`UpgradeRepository`] on the database: mass upgrades, upgrade operations and the queries
//! that pick the devices of a mass upgrade.
//!
//! Every status change is a guarded update: it applies only if the row is still what the caller
//! read (`status = 'in-progress'` and the same `modified`), re-reading and re-checking the
//! status machine when another writer got there first. A worker's progress can therefore never
//! turn a cancelled operation back to `in-progress` (upstream §9.2).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use flashfleet_models::repository::{
    BatchFilter, Completion, FirmwareRepository, OperationFilter, ProgressUpdate, UpgradeCandidate,
    UpgradeRepository,
};
use flashfleet_models::upgrade_operation::{CANCELLED_BY_USER, append_log, check_cancel};
use flashfleet_models::{
    BatchCounters, BatchId, BatchOrder, BatchStatus, BatchUpgradeOperation, Build, DeviceFirmware,
    DeviceGroupId, DeviceId, Fence, OperationId, OperationOrder, OrganizationId, Page, PageRequest,
    RepoError, RepoResult, Scope, UpgradeOperation, UpgradePhase, UpgradeStatus, time,
};

use crate::directory::{scope_ids, scope_includes_shared};
use crate::error::DbError;
use crate::ordering::then_order_by_keys;
use crate::pool::{DatabaseClock, Db, with_conn, with_transaction};
use crate::rows::{
    BatchRow, DeviceFirmwareRow, DeviceRow, OperationRow, convert_all, id_text, naive, utc,
};
use crate::schema::{
    batch_upgrade_operations, builds, categories, device_firmwares, devices, firmware_images,
    organizations, upgrade_operations,
};

const IN_PROGRESS: &str = "in-progress";
/// How often a guarded update re-reads a row that changed under it before giving up.
const GUARDED_UPDATE_ATTEMPTS: usize = 5;

/// What a guarded update of an operation does with the row it read.
enum OperationChange {
    /// Write this row (its status and `modified` were checked against the stored one).
    Write(Box<OperationRow>),
    /// Refuse with this error.
    Refuse(RepoError),
}

#[async_trait]
impl UpgradeRepository for Db {
    async fn insert_batch(
        &self,
        batch: &BatchUpgradeOperation,
    ) -> RepoResult<BatchUpgradeOperation> {
        let row = BatchRow::from_model(batch);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(batch_upgrade_operations::table)
                .values(&row)
                .returning(BatchRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn batch(&self, scope: &Scope, id: BatchId) -> RepoResult<Option<BatchUpgradeOperation>> {
        let found = with_conn!(self, |connection| {
            let row = batch_upgrade_operations::table
                .inner_join(builds::table.inner_join(categories::table))
                .filter(batch_upgrade_operations::id.eq(id_text(id)))
                .select((BatchRow::as_select(), categories::organization_id))
                .first::<(BatchRow, Option<String>)>(connection)
                .await
                .optional()?;
            row.map(|(batch, organization_id)| {
                let organization_id = organization_id
                    .map(|id| crate::rows::parse_id::<OrganizationId>(&id))
                    .transpose()?;
                Ok((batch.into_model()?, organization_id))
            })
            .transpose()
        })?;
        Ok(found
            .filter(|(_, organization_id)| scope.contains(*organization_id))
            .map(|(batch, _)| batch))
    }

    async fn list_batches(
        &self,
        scope: &Scope,
        filter: &BatchFilter,
        page: PageRequest,
    ) -> RepoResult<Page<BatchUpgradeOperation>> {
        let ids = scope_ids(scope);
        let shared = scope_includes_shared(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = crate::firmware::filter_category_scope!(
                    batch_upgrade_operations::table
                        .inner_join(builds::table.inner_join(categories::table))
                        .into_boxed(),
                    &ids,
                    shared
                );
                if let Some(build_id) = filter.build_id {
                    query = query.filter(batch_upgrade_operations::build_id.eq(id_text(build_id)));
                }
                if let Some(status) = filter.status {
                    query = query.filter(batch_upgrade_operations::status.eq(status.as_str()));
                }
                if let Some(slug) = &filter.organization_slug {
                    let organization = organizations::table
                        .filter(organizations::slug.eq(slug.clone()))
                        .select(organizations::id.nullable());
                    query = query.filter(categories::organization_id.eq_any(organization));
                }
                if let Some(created) = filter.created {
                    query = query.filter(batch_upgrade_operations::created.eq(naive(created)));
                }
                if let Some(after) = filter.created_after {
                    query = query.filter(batch_upgrade_operations::created.ge(naive(after)));
                }
                if let Some(before) = filter.created_before {
                    query = query.filter(batch_upgrade_operations::created.lt(naive(before)));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let ordered = then_order_by_keys!(filtered(), &filter.ordering, {
                BatchOrder::Created => batch_upgrade_operations::created,
                BatchOrder::Modified => batch_upgrade_operations::modified,
            });
            let rows = ordered
                .then_order_by((
                    batch_upgrade_operations::created.desc(),
                    batch_upgrade_operations::id.asc(),
                ))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(BatchRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, BatchRow::into_model)?,
            })
        })?)
    }

    async fn batch_counters(&self, id: BatchId) -> RepoResult<BatchCounters> {
        let batch_id = id_text(id);
        Ok(with_conn!(self, |connection| {
            let counters = count_batch_operations!(connection, &batch_id);
            Ok(counters)
        })?)
    }

    async fn set_batch_status(
        &self,
        id: BatchId,
        status: BatchStatus,
    ) -> RepoResult<Option<BatchUpgradeOperation>> {
        let batch_id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let Some(row) = batch_upgrade_operations::table
                .find(&batch_id)
                .select(BatchRow::as_select())
                .first(connection)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            let current = row.clone().into_model()?.status;
            current
                .transition(status)
                .map_err(|error| DbError::Domain(error.into()))?;
            let stored = diesel::update(
                batch_upgrade_operations::table
                    .find(&batch_id)
                    .filter(batch_upgrade_operations::status.eq(current.as_str())),
            )
            .set((
                batch_upgrade_operations::status.eq(status.as_str()),
                batch_upgrade_operations::modified.eq(naive(time::now())),
            ))
            .returning(BatchRow::as_returning())
            .get_result(connection)
            .await
            .optional()?;
            match stored {
                Some(stored) => Ok(Some(stored.into_model()?)),
                // Changed between the read and the write: only a concurrent writer can do that
                // inside this transaction on PostgreSQL; report it as a refused transition.
                None => Err(DbError::Domain(RepoError::Transition(
                    flashfleet_models::TransitionError {
                        from: current.to_string(),
                        to: status.to_string(),
                    },
                ))),
            }
        })?)
    }

    async fn refresh_batch_status(
        &self,
        id: BatchId,
    ) -> RepoResult<Option<(BatchUpgradeOperation, BatchCounters)>> {
        let batch_id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let refreshed = refresh_batch!(connection, &batch_id);
            refreshed
                .map(|(row, counters)| Ok((row.into_model()?, counters)))
                .transpose()
        })?)
    }

    async fn queue_upgrade(
        &self,
        device_firmware: &DeviceFirmware,
        operation: &UpgradeOperation,
    ) -> RepoResult<UpgradeOperation> {
        let mut firmware_row = DeviceFirmwareRow::from_model(device_firmware);
        firmware_row.installed = false;
        let operation_row = OperationRow::from_model(operation);
        let now = naive(time::now());
        Ok(with_transaction!(self, |connection| {
            diesel::insert_into(device_firmwares::table)
                .values(&firmware_row)
                .on_conflict(device_firmwares::device_id)
                .do_update()
                .set((
                    device_firmwares::image_id.eq(&firmware_row.image_id),
                    device_firmwares::installed.eq(false),
                    device_firmwares::modified.eq(now),
                ))
                .execute(connection)
                .await?;
            let stored = diesel::insert_into(upgrade_operations::table)
                .values(&operation_row)
                .returning(OperationRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn queue_batch(
        &self,
        batch: &BatchUpgradeOperation,
        upgrades: &[(DeviceFirmware, UpgradeOperation)],
    ) -> RepoResult<(BatchUpgradeOperation, Vec<UpgradeOperation>, Vec<DeviceId>)> {
        let mut batch_row = BatchRow::from_model(batch);
        let now = naive(time::now());
        let device_ids: Vec<String> = upgrades
            .iter()
            .map(|(_, operation)| id_text(operation.device_id))
            .collect();
        let (batch_row, operations, busy) = with_transaction!(self, |connection| {
            let busy: Vec<String> = upgrade_operations::table
                .filter(upgrade_operations::device_id.eq_any(&device_ids))
                .filter(upgrade_operations::status.eq(IN_PROGRESS))
                .select(upgrade_operations::device_id)
                .load(connection)
                .await?;
            let free: Vec<&(DeviceFirmware, UpgradeOperation)> = upgrades
                .iter()
                .filter(|(_, operation)| !busy.contains(&id_text(operation.device_id)))
                .collect();
            if !free.is_empty() {
                batch_row.status = BatchStatus::InProgress.as_str().to_owned();
            }
            let stored_batch = diesel::insert_into(batch_upgrade_operations::table)
                .values(&batch_row)
                .returning(BatchRow::as_returning())
                .get_result(connection)
                .await?;
            let mut operations = Vec::with_capacity(free.len());
            for (device_firmware, operation) in free {
                let mut firmware_row = DeviceFirmwareRow::from_model(device_firmware);
                firmware_row.installed = false;
                diesel::insert_into(device_firmwares::table)
                    .values(&firmware_row)
                    .on_conflict(device_firmwares::device_id)
                    .do_update()
                    .set((
                        device_firmwares::image_id.eq(&firmware_row.image_id),
                        device_firmwares::installed.eq(false),
                        device_firmwares::modified.eq(now),
                    ))
                    .execute(connection)
                    .await?;
                let mut operation_row = OperationRow::from_model(operation);
                operation_row.batch_id = Some(batch_row.id.clone());
                operations.push(
                    diesel::insert_into(upgrade_operations::table)
                        .values(&operation_row)
                        .returning(OperationRow::as_returning())
                        .get_result(connection)
                        .await?,
                );
            }
            Ok((stored_batch, operations, busy))
        })?;
        Ok((
            batch_row.into_model()?,
            convert_all(operations, OperationRow::into_model)?,
            busy.iter()
                .map(|id| crate::rows::parse_id(id))
                .collect::<Result<_, DbError>>()?,
        ))
    }

    async fn insert_operation(&self, operation: &UpgradeOperation) -> RepoResult<UpgradeOperation> {
        let row = OperationRow::from_model(operation);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(upgrade_operations::table)
                .values(&row)
                .returning(OperationRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn operation(
        &self,
        scope: &Scope,
        id: OperationId,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let found = with_conn!(self, |connection| {
            let row = upgrade_operations::table
                .inner_join(devices::table)
                .filter(upgrade_operations::id.eq(id_text(id)))
                .select((OperationRow::as_select(), devices::organization_id))
                .first::<(OperationRow, String)>(connection)
                .await
                .optional()?;
            row.map(|(operation, organization_id)| {
                Ok((
                    operation.into_model()?,
                    crate::rows::parse_id::<OrganizationId>(&organization_id)?,
                ))
            })
            .transpose()
        })?;
        Ok(found
            .filter(|(_, organization_id)| scope.contains(Some(*organization_id)))
            .map(|(operation, _)| operation))
    }

    async fn list_operations(
        &self,
        scope: &Scope,
        filter: &OperationFilter,
        page: PageRequest,
    ) -> RepoResult<Page<UpgradeOperation>> {
        let ids = scope_ids(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = upgrade_operations::table.into_boxed();
                // The organization filters go through a subquery on devices, present only when
                // needed: without it (a superuser's batch detail) the operations of a batch are
                // read newest first straight from their index, with no join and no sort.
                let narrows_devices = ids.is_some()
                    || filter.organization_id.is_some()
                    || filter.organization_slug.is_some();
                if narrows_devices {
                    let mut of_devices = devices::table.select(devices::id).into_boxed();
                    if let Some(ids) = &ids {
                        of_devices =
                            of_devices.filter(devices::organization_id.eq_any(ids.clone()));
                    }
                    if let Some(organization_id) = filter.organization_id {
                        of_devices = of_devices
                            .filter(devices::organization_id.eq(id_text(organization_id)));
                    }
                    if let Some(slug) = &filter.organization_slug {
                        let organization = organizations::table
                            .filter(organizations::slug.eq(slug.clone()))
                            .select(organizations::id);
                        of_devices =
                            of_devices.filter(devices::organization_id.eq_any(organization));
                    }
                    query = query.filter(upgrade_operations::device_id.eq_any(of_devices));
                }
                if let Some(device_id) = filter.device_id {
                    query = query.filter(upgrade_operations::device_id.eq(id_text(device_id)));
                }
                if let Some(image_id) = filter.image_id {
                    query = query.filter(upgrade_operations::image_id.eq(id_text(image_id)));
                }
                if let Some(batch_id) = filter.batch_id {
                    query = query.filter(upgrade_operations::batch_id.eq(id_text(batch_id)));
                }
                if let Some(status) = filter.status {
                    query = query.filter(upgrade_operations::status.eq(status.as_str()));
                }
                if let Some(phase) = filter.phase {
                    query = query.filter(upgrade_operations::phase.eq(phase.as_str()));
                }
                if let Some(since) = filter.modified_since {
                    query = query.filter(upgrade_operations::modified.ge(naive(since)));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let ordered = then_order_by_keys!(filtered(), &filter.ordering, {
                OperationOrder::Device => upgrade_operations::device_id,
                OperationOrder::Created => upgrade_operations::created,
                OperationOrder::Modified => upgrade_operations::modified,
            });
            let rows = ordered
                .then_order_by((
                    upgrade_operations::created.desc(),
                    upgrade_operations::id.asc(),
                ))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(OperationRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, OperationRow::into_model)?,
            })
        })?)
    }

    async fn unfinished_operation(
        &self,
        device_id: DeviceId,
    ) -> RepoResult<Option<UpgradeOperation>> {
        Ok(with_conn!(self, |connection| {
            let row = upgrade_operations::table
                .filter(upgrade_operations::device_id.eq(id_text(device_id)))
                .filter(upgrade_operations::status.eq(IN_PROGRESS))
                .select(OperationRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(OperationRow::into_model).transpose()
        })?)
    }

    async fn record_progress(
        &self,
        id: OperationId,
        fence: &Fence,
        update: &ProgressUpdate,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let now = self.now();
        self.change_operation(id, Some(fence), false, false, |operation, _| {
            if operation.status.is_final() {
                // Finished operations (for example cancelled ones) take no more progress.
                return refuse_transition(operation.status.as_str(), update.phase.as_str());
            }
            if update.phase == UpgradePhase::Flashing && operation.phase < UpgradePhase::Flashing {
                // Entering the flash is the guarded write of `begin_flash`, never progress.
                return refuse_transition(operation.phase.as_str(), update.phase.as_str());
            }
            if let Err(error) = operation.phase.advance(update.phase) {
                return OperationChange::Refuse(error.into());
            }
            let mut changed = operation.clone();
            changed.phase = update.phase;
            changed.progress = update.progress.min(100);
            if changed.started.is_none() && update.phase != UpgradePhase::Queued {
                changed.started = Some(now);
            }
            if let Some(line) = &update.log_line {
                append_log(&mut changed.log, line);
            }
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn begin_flash(
        &self,
        id: OperationId,
        fence: &Fence,
        boot_id: Option<&str>,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let now = self.now();
        // The image as it is now, kept with the flash: the operation can still be verified
        // if the image is deleted before it ends.
        let image_id = self
            .operation(&Scope::All, id)
            .await?
            .and_then(|stored| stored.image_id);
        let image = match image_id {
            Some(image_id) => FirmwareRepository::image(self, &Scope::All, image_id)
                .await?
                .map(Box::new),
            None => None,
        };
        self.change_operation(id, Some(fence), false, false, |operation, _| {
            if operation.status.is_final() || operation.phase.is_past_flash() {
                // Once per operation: a second flash needs `restart_unflashed` first.
                return refuse_transition(
                    if operation.status.is_final() {
                        operation.status.as_str()
                    } else {
                        operation.phase.as_str()
                    },
                    UpgradePhase::Flashing.as_str(),
                );
            }
            let mut changed = operation.clone();
            changed.phase = UpgradePhase::Flashing;
            changed.progress = UpgradePhase::Flashing.milestone();
            changed.started.get_or_insert(now);
            changed.flash_attempts = changed.flash_attempts.saturating_add(1);
            changed.flash_boot_id = boot_id.map(str::to_owned);
            changed.flash_image.clone_from(&image);
            append_log(&mut changed.log, log_line);
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn restart_unflashed(
        &self,
        id: OperationId,
        fence: &Fence,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>> {
        self.change_operation(id, Some(fence), false, false, |operation, _| {
            if operation.status.is_final() || !operation.phase.is_past_flash() {
                return refuse_transition(operation.phase.as_str(), UpgradePhase::Queued.as_str());
            }
            let mut changed = operation.clone();
            changed.phase = UpgradePhase::Queued;
            changed.progress = 0;
            append_log(&mut changed.log, log_line);
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn complete_operation(
        &self,
        id: OperationId,
        fence: Option<&Fence>,
        completion: &Completion,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let now = self.now();
        self.change_operation(id, fence, completion.installed, false, |operation, _| {
            if let Err(error) = operation.status.transition(completion.status) {
                return OperationChange::Refuse(error.into());
            }
            let mut changed = operation.clone();
            changed.status = completion.status;
            changed.finished = Some(now);
            changed.lease = None;
            changed.next_attempt_at = None;
            if completion.status == UpgradeStatus::Success {
                changed.phase = UpgradePhase::Done;
                changed.progress = 100;
            }
            if let Some(line) = &completion.log_line {
                append_log(&mut changed.log, line);
            }
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn cancel_operation(&self, id: OperationId) -> RepoResult<Option<UpgradeOperation>> {
        let now = self.now();
        self.change_operation(id, None, false, false, |operation, _| {
            if let Err(error) = check_cancel(operation.status, operation.phase, operation.progress)
            {
                return OperationChange::Refuse(error.into());
            }
            let mut changed = operation.clone();
            changed.status = UpgradeStatus::Cancelled;
            changed.finished = Some(now);
            changed.lease = None;
            changed.next_attempt_at = None;
            append_log(&mut changed.log, CANCELLED_BY_USER);
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn schedule_retry(
        &self,
        id: OperationId,
        fence: &Fence,
        delay: Duration,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let now = self.now();
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
        self.change_operation(id, Some(fence), false, true, |operation, database_now| {
            if operation.status.is_final() {
                return refuse_transition(operation.status.as_str(), UpgradePhase::Queued.as_str());
            }
            if let Err(error) = operation.phase.advance(UpgradePhase::Queued) {
                return OperationChange::Refuse(error.into());
            }
            let mut changed = operation.clone();
            changed.phase = UpgradePhase::Queued;
            changed.next_attempt_at = Some(time::truncate(
                database_now
                    .checked_add_signed(delay)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            ));
            changed.lease = None;
            changed.started.get_or_insert(now);
            changed.attempts = changed.attempts.saturating_add(1);
            append_log(&mut changed.log, log_line);
            OperationChange::Write(Box::new(OperationRow::from_model(&changed)))
        })
        .await
    }

    async fn claim_operations(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> RepoResult<Vec<UpgradeOperation>> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_transaction!(self, |connection| {
            let now = DatabaseClock::database_now(&mut *connection).await?;
            let lease_until = now.checked_add_signed(lease).unwrap_or(NaiveDateTime::MAX);
            let candidates = QueueQueries::claimable_in_turns(&mut *connection, now, limit).await?;
            let locked = QueueQueries::lock_claimable(&mut *connection, &candidates, now).await?;
            let claimed: Vec<OperationRow> = diesel::update(
                upgrade_operations::table
                    .filter(upgrade_operations::id.eq_any(&locked))
                    .filter(upgrade_operations::status.eq(IN_PROGRESS)),
            )
            .set((
                upgrade_operations::lease_owner.eq(Some(owner)),
                upgrade_operations::lease_expires_at.eq(Some(lease_until)),
                upgrade_operations::lease_epoch.eq(upgrade_operations::lease_epoch + 1),
            ))
            .returning(OperationRow::as_returning())
            .get_results(connection)
            .await?;
            Ok((candidates, claimed))
        })?;
        let (candidates, mut rows) = rows;
        #[cfg(feature = "testing")]
        if !rows.is_empty() {
            self.faults.after_write(UpgradePhase::Queued).await;
        }
        // Keep the fair order chosen by the candidate query.
        rows.sort_by_key(|row| candidates.iter().position(|candidate| *candidate == row.id));
        Ok(convert_all(rows, OperationRow::into_model)?)
    }

    async fn renew_leases(
        &self,
        fences: &[(OperationId, Fence)],
        lease: Duration,
    ) -> RepoResult<Vec<OperationId>> {
        if fences.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(feature = "testing")]
        if let Some(delay) = self.faults.renew_delay() {
            tokio::time::sleep(delay).await;
        }
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
        let fences: Vec<(String, String, i64)> = fences
            .iter()
            .map(|(id, fence)| {
                (
                    id_text(*id),
                    fence.owner.clone(),
                    i64::try_from(fence.epoch).unwrap_or(i64::MAX),
                )
            })
            .collect();
        // Its own pool: a heartbeat never waits behind the queries of the upgrades it keeps
        // alive.
        let renewed: Vec<String> = with_transaction!(self.lease_pool(), |connection| {
            let now = DatabaseClock::database_now(&mut *connection).await?;
            let lease_until = now.checked_add_signed(lease).unwrap_or(NaiveDateTime::MAX);
            let mut renewed = Vec::with_capacity(fences.len());
            for (id, owner, epoch) in &fences {
                let updated = diesel::update(
                    upgrade_operations::table
                        .find(id)
                        .filter(upgrade_operations::lease_owner.eq(owner))
                        .filter(upgrade_operations::lease_epoch.eq(epoch))
                        .filter(upgrade_operations::status.eq(IN_PROGRESS)),
                )
                .set(upgrade_operations::lease_expires_at.eq(Some(lease_until)))
                .execute(connection)
                .await?;
                if updated > 0 {
                    renewed.push(id.clone());
                }
            }
            Ok(renewed)
        })?;
        Ok(renewed
            .iter()
            .map(|id| crate::rows::parse_id(id))
            .collect::<Result<_, DbError>>()?)
    }

    async fn release_lease(&self, id: OperationId, fence: &Fence) -> RepoResult<bool> {
        let id = id_text(id);
        let epoch = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
        Ok(with_conn!(self, |connection| {
            let released = diesel::update(
                upgrade_operations::table
                    .find(&id)
                    .filter(upgrade_operations::lease_owner.eq(&fence.owner))
                    .filter(upgrade_operations::lease_epoch.eq(epoch)),
            )
            .set((
                upgrade_operations::lease_owner.eq(None::<String>),
                upgrade_operations::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
            ))
            .execute(connection)
            .await?;
            Ok(released > 0)
        })?)
    }

    async fn upgrade_candidates(
        &self,
        build: &Build,
        organization_id: Option<OrganizationId>,
        boards: &[String],
        include_firmwareless: bool,
        group_id: Option<DeviceGroupId>,
    ) -> RepoResult<Vec<UpgradeCandidate>> {
        let build_id = id_text(build.id);
        let category_id = id_text(build.category_id);
        let organization_id = organization_id.map(id_text);
        let group_id = group_id.map(id_text);
        let rows = with_conn!(self, |connection| {
            let mut known = device_firmwares::table
                .inner_join(devices::table)
                .inner_join(firmware_images::table.inner_join(builds::table))
                .filter(builds::category_id.eq(&category_id))
                .filter(diesel::dsl::not(
                    firmware_images::build_id
                        .eq(&build_id)
                        .and(device_firmwares::installed.eq(true)),
                ))
                .filter(devices::is_deactivated.eq(false))
                .into_boxed();
            if let Some(organization_id) = &organization_id {
                known = known.filter(devices::organization_id.eq(organization_id.clone()));
            }
            if let Some(group_id) = &group_id {
                known = known.filter(devices::group_id.eq(group_id.clone()));
            }
            let known: Vec<(DeviceRow, DeviceFirmwareRow, String)> = known
                .order((device_firmwares::created.desc(), device_firmwares::id.asc()))
                .select((
                    DeviceRow::as_select(),
                    DeviceFirmwareRow::as_select(),
                    firmware_images::image_type,
                ))
                .load(connection)
                .await?;
            let mut firmwareless: Vec<DeviceRow> = Vec::new();
            if include_firmwareless && !boards.is_empty() {
                let mut query = devices::table
                    .filter(diesel::dsl::not(devices::id.eq_any(
                        device_firmwares::table.select(device_firmwares::device_id),
                    )))
                    .filter(devices::model.eq_any(boards.to_vec()))
                    .filter(devices::is_deactivated.eq(false))
                    .into_boxed();
                if let Some(organization_id) = &organization_id {
                    query = query.filter(devices::organization_id.eq(organization_id.clone()));
                }
                if let Some(group_id) = &group_id {
                    query = query.filter(devices::group_id.eq(group_id.clone()));
                }
                firmwareless = query
                    .order((devices::created.desc(), devices::id.asc()))
                    .select(DeviceRow::as_select())
                    .load(connection)
                    .await?;
            }
            Ok((known, firmwareless))
        })?;
        let (known, firmwareless) = rows;
        let mut candidates = Vec::with_capacity(known.len() + firmwareless.len());
        for (device, device_firmware, image_type) in known {
            candidates.push(UpgradeCandidate {
                device: device.into_model()?,
                device_firmware: Some(device_firmware.into_model()?),
                current_image_type: Some(image_type),
            });
        }
        for device in firmwareless {
            candidates.push(UpgradeCandidate {
                device: device.into_model()?,
                device_firmware: None,
                current_image_type: None,
            });
        }
        Ok(candidates)
    }
}

impl Db {
    /// Reads operation `id`, asks `decide` what to do with it, and writes the result only if the
    /// row has not changed since it was read (same status, `modified`, lease epoch and expiry);
    /// re-reads and decides again when it has. With `fence`, refuses with
    /// [`RepoError::LeaseLost`] unless the operation is held with it: the epoch in the
    /// update's condition makes this a fenced write even against a claim committed between the
    /// read and the write. `decide` also gets the database's clock when `reads_database_clock` (else this
    /// handle's). When the operation
    /// finishes, in the same transaction: marks the device's firmware record installed if
    /// `mark_installed` (and it still points at the operation's image, upstream §2.3), and
    /// recomputes the batch status.
    async fn change_operation(
        &self,
        id: OperationId,
        fence: Option<&Fence>,
        mark_installed: bool,
        reads_database_clock: bool,
        decide: impl Fn(&UpgradeOperation, DateTime<Utc>) -> OperationChange + Send + Sync,
    ) -> RepoResult<Option<UpgradeOperation>> {
        let id = id_text(id);
        let decide = &decide;
        let stored = with_transaction!(self, |connection| {
            for _ in 0..GUARDED_UPDATE_ATTEMPTS {
                let Some(row) = upgrade_operations::table
                    .find(&id)
                    .select(OperationRow::as_select())
                    .first(connection)
                    .await
                    .optional()?
                else {
                    return Ok(None);
                };
                let read_modified = row.modified;
                let read_status = row.status.clone();
                let read_epoch = row.lease_epoch;
                let read_expiry = row.lease_expires_at;
                let operation = row.into_model()?;
                if let Some(fence) = fence
                    && operation.status.is_final()
                {
                    // Ended (cancelled by a user, finished): say so, rather than that the
                    // lease, which ending the operation released, is gone.
                    return Err(DbError::Domain(RepoError::Transition(
                        flashfleet_models::TransitionError {
                            from: operation.status.to_string(),
                            to: format!("a write of {fence}"),
                        },
                    )));
                }
                if let Some(fence) = fence
                    && !fence.holds(operation.lease.as_ref())
                {
                    return Err(DbError::Domain(RepoError::LeaseLost {
                        operation: id.clone(),
                        fence: fence.to_string(),
                    }));
                }
                let database_now = if reads_database_clock {
                    utc(DatabaseClock::database_now(&mut *connection).await?)
                } else {
                    self.now()
                };
                let mut changed = match decide(&operation, database_now) {
                    OperationChange::Refuse(error) => return Err(DbError::Domain(error)),
                    OperationChange::Write(changed) => *changed,
                };
                changed.modified = naive(self.now()).max(read_modified);
                // The row as read: status, `modified`, lease epoch and lease expiry (a
                // renewal committed since, on PostgreSQL, is not undone: decide again).
                let unchanged = upgrade_operations::table
                    .find(&id)
                    .filter(upgrade_operations::status.eq(&read_status))
                    .filter(upgrade_operations::modified.eq(read_modified))
                    .filter(upgrade_operations::lease_epoch.eq(read_epoch));
                let stored = match read_expiry {
                    Some(expiry) => {
                        diesel::update(
                            unchanged.filter(upgrade_operations::lease_expires_at.eq(expiry)),
                        )
                        .set(&changed)
                        .returning(OperationRow::as_returning())
                        .get_result(connection)
                        .await
                    }
                    None => {
                        diesel::update(
                            unchanged.filter(upgrade_operations::lease_expires_at.is_null()),
                        )
                        .set(&changed)
                        .returning(OperationRow::as_returning())
                        .get_result(connection)
                        .await
                    }
                }
                .optional()?;
                let Some(stored) = stored else {
                    // Another writer changed the row after it was read: decide again.
                    continue;
                };
                #[cfg(feature = "testing")]
                if let Some(delay) = self.faults.write_delay() {
                    tokio::time::sleep(delay).await;
                }
                if stored.status != IN_PROGRESS {
                    if let (true, Some(image_id)) = (mark_installed, &stored.image_id) {
                        diesel::update(
                            device_firmwares::table
                                .filter(device_firmwares::device_id.eq(&stored.device_id))
                                .filter(device_firmwares::image_id.eq(image_id)),
                        )
                        .set((
                            device_firmwares::installed.eq(true),
                            device_firmwares::modified.eq(stored.modified),
                        ))
                        .execute(connection)
                        .await?;
                    }
                    if let Some(batch_id) = &stored.batch_id {
                        refresh_batch!(connection, batch_id);
                    }
                }
                return Ok(Some(stored.into_model()?));
            }
            Err(DbError::Domain(RepoError::backend(
                "the operation kept changing while it was being updated",
                format!("gave up after {GUARDED_UPDATE_ATTEMPTS} attempts"),
            )))
        })?;
        #[cfg(feature = "testing")]
        if let Some(stored) = &stored {
            self.faults.after_write(stored.phase).await;
        }
        Ok(stored)
    }
}

/// Refuses a change from `from` to `to` as a transition error.
fn refuse_transition(from: &str, to: &str) -> OperationChange {
    OperationChange::Refuse(
        flashfleet_models::TransitionError {
            from: from.to_owned(),
            to: to.to_owned(),
        }
        .into(),
    )
}

/// Counts the operations of batch `$batch_id` per status.
macro_rules! count_batch_operations {
    ($connection:expr, $batch_id:expr) => {{
        let counts: Vec<(String, i64)> = upgrade_operations::table
            .filter(upgrade_operations::batch_id.eq($batch_id))
            .group_by(upgrade_operations::status)
            .select((upgrade_operations::status, diesel::dsl::count_star()))
            .load(&mut *$connection)
            .await?;
        let mut counters = BatchCounters::default();
        for (status, count) in counts {
            let status = status.parse::<UpgradeStatus>().map_err(DbError::Corrupt)?;
            counters.add(status, count.unsigned_abs());
        }
        counters
    }};
}

/// Recomputes the status of batch `$batch_id` from its operations and stores it when it
/// changed and the status machine allows it; evaluates to `Option<(BatchRow, BatchCounters)>`.
macro_rules! refresh_batch {
    ($connection:expr, $batch_id:expr) => {{
        let batch_id: &String = $batch_id;
        let row = batch_upgrade_operations::table
            .find(batch_id)
            .select(BatchRow::as_select())
            .first(&mut *$connection)
            .await
            .optional()?;
        match row {
            None => None,
            Some(row) => {
                let counters = count_batch_operations!($connection, batch_id);
                let current = row
                    .status
                    .parse::<BatchStatus>()
                    .map_err(DbError::Corrupt)?;
                let derived = counters.derive_status(current);
                if derived != current && current.transition(derived).is_ok() {
                    let stored = diesel::update(batch_upgrade_operations::table.find(batch_id))
                        .set((
                            batch_upgrade_operations::status.eq(derived.as_str()),
                            batch_upgrade_operations::modified.eq(naive(time::now())),
                        ))
                        .returning(BatchRow::as_returning())
                        .get_result(&mut *$connection)
                        .await?;
                    Some((stored, counters))
                } else {
                    Some((row, counters))
                }
            }
        }
    }};
}

use {count_batch_operations, refresh_batch};

/// The two queries of the durable queue that differ by backend.
trait QueueQueries {
    /// Up to `limit` ids of claimable operations: oldest first, taking turns between
    /// organizations (the n-th oldest of every organization before the (n+1)-th of any).
    async fn claimable_in_turns(
        &mut self,
        now: chrono::NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<String>, DbError>;

    /// Locks those of `ids` that are still claimable; on PostgreSQL rows another engine is
    /// claiming right now are skipped (`FOR UPDATE SKIP LOCKED`), on SQLite the write
    /// transaction is already exclusive.
    async fn lock_claimable(
        &mut self,
        ids: &[String],
        now: chrono::NaiveDateTime,
    ) -> Result<Vec<String>, DbError>;
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The claimable operations ranked within their organization; `{now}` and `{limit}` are the
/// backend's placeholders.
macro_rules! claimable_in_turns_sql {
    ($now:literal, $limit:literal) => {
        concat!(
            "SELECT id FROM (",
            " SELECT o.id AS id, o.created AS created, ROW_NUMBER() OVER (",
            "  PARTITION BY d.organization_id ORDER BY o.created, o.id) AS turn",
            " FROM upgrade_operations o JOIN devices d ON d.id = o.device_id",
            " WHERE o.status = 'in-progress'",
            "  AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ",
            $now,
            ")",
            "  AND (o.lease_expires_at IS NULL OR o.lease_expires_at < ",
            $now,
            ")",
            ") ranked ORDER BY turn, created, id LIMIT ",
            $limit
        )
    };
}

/// Narrows a query on `upgrade_operations` to operations claimable at `$now`.
macro_rules! claimable_at {
    ($query:expr, $now:expr) => {
        $query
            .filter(upgrade_operations::status.eq(IN_PROGRESS))
            .filter(
                upgrade_operations::next_attempt_at
                    .is_null()
                    .or(upgrade_operations::next_attempt_at.le($now)),
            )
            .filter(
                upgrade_operations::lease_expires_at
                    .is_null()
                    .or(upgrade_operations::lease_expires_at.lt($now)),
            )
    };
}

impl QueueQueries for diesel_async::AsyncPgConnection {
    async fn claimable_in_turns(
        &mut self,
        now: chrono::NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        let rows: Vec<IdRow> = diesel::sql_query(claimable_in_turns_sql!("$1", "$2"))
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .bind::<diesel::sql_types::BigInt, _>(limit)
            .load(self)
            .await?;
        Ok(rows.into_iter().map(|row| row.id).collect())
    }

    async fn lock_claimable(
        &mut self,
        ids: &[String],
        now: chrono::NaiveDateTime,
    ) -> Result<Vec<String>, DbError> {
        Ok(claimable_at!(
            upgrade_operations::table.filter(upgrade_operations::id.eq_any(ids)),
            now
        )
        .select(upgrade_operations::id)
        .for_update()
        .skip_locked()
        .load(self)
        .await?)
    }
}

impl QueueQueries for crate::pool::SqliteAsyncConnection {
    async fn claimable_in_turns(
        &mut self,
        now: chrono::NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        let rows: Vec<IdRow> = diesel::sql_query(claimable_in_turns_sql!("?", "?"))
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .bind::<diesel::sql_types::BigInt, _>(limit)
            .load(self)
            .await?;
        Ok(rows.into_iter().map(|row| row.id).collect())
    }

    async fn lock_claimable(
        &mut self,
        ids: &[String],
        now: chrono::NaiveDateTime,
    ) -> Result<Vec<String>, DbError> {
        Ok(claimable_at!(
            upgrade_operations::table.filter(upgrade_operations::id.eq_any(ids)),
            now
        )
        .select(upgrade_operations::id)
        .load(self)
        .await?)
    }
}

#[cfg(feature = "testing")]
impl Db {
    /// Claims operation `id` (whatever its lease or due time) for `owner` for 30 s, as an
    /// engine's claim would, and returns the fence of that claim (tests of writes that need
    /// one).
    pub async fn claim_for_test(&self, id: OperationId, owner: &str) -> RepoResult<Fence> {
        let id_text = id_text(id);
        let owner_text = owner.to_owned();
        let epoch: i64 = with_transaction!(self, |connection| {
            let now = DatabaseClock::database_now(&mut *connection).await?;
            let until = now + chrono::Duration::seconds(30);
            Ok(diesel::update(upgrade_operations::table.find(&id_text))
                .set((
                    upgrade_operations::lease_owner.eq(Some(&owner_text)),
                    upgrade_operations::lease_expires_at.eq(Some(until)),
                    upgrade_operations::lease_epoch.eq(upgrade_operations::lease_epoch + 1),
                ))
                .returning(upgrade_operations::lease_epoch)
                .get_result(connection)
                .await?)
        })?;
        Ok(Fence {
            owner: owner.to_owned(),
            epoch: u64::try_from(epoch).unwrap_or_default(),
        })
    }

    /// Makes every lease held on operation `id` expired, as if its holder had not renewed it
    /// for the lease's whole duration (tests of crash recovery and fencing). The epoch is kept:
    /// the holder's writes are refused only once another claim moves it on.
    pub async fn expire_lease(&self, id: OperationId) -> RepoResult<()> {
        let id = id_text(id);
        let long_ago = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        Ok(with_conn!(self, |connection| {
            diesel::update(
                upgrade_operations::table
                    .find(&id)
                    .filter(upgrade_operations::lease_owner.is_not_null()),
            )
            .set(upgrade_operations::lease_expires_at.eq(Some(long_ago)))
            .execute(connection)
            .await?;
            Ok(())
        })?)
    }
}

//! [`DeviceRepository`] on the database: groups, devices, credentials, connections and the
//! firmware record of each device.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use flashfleet_models::credentials::validate_connection;
use flashfleet_models::repository::{DeviceFilter, DeviceRepository};
use flashfleet_models::{
    Credentials, CredentialsId, Device, DeviceConnection, DeviceConnectionId, DeviceFirmware,
    DeviceGroup, DeviceGroupId, DeviceId, Page, PageRequest, RepoError, RepoResult, Scope, time,
};

use crate::directory::{scope_ids, scope_includes_shared};
use crate::error::DbError;
use crate::pool::{Db, with_conn, with_transaction};
use crate::rows::{
    CredentialsRow, DeviceConnectionRow, DeviceFirmwareRow, DeviceGroupRow, DeviceRow, convert_all,
    id_text, naive, parse_id,
};
use crate::schema::{
    credentials, device_connections, device_firmwares, device_groups, devices, organizations,
};

#[async_trait]
impl DeviceRepository for Db {
    async fn insert_group(&self, group: &DeviceGroup) -> RepoResult<DeviceGroup> {
        let row = DeviceGroupRow::from_model(group);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(device_groups::table)
                .values(&row)
                .returning(DeviceGroupRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn group(&self, scope: &Scope, id: DeviceGroupId) -> RepoResult<Option<DeviceGroup>> {
        let group = with_conn!(self, |connection| {
            let row = device_groups::table
                .find(id_text(id))
                .select(DeviceGroupRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(DeviceGroupRow::into_model).transpose()
        })?;
        Ok(group.filter(|group| scope.contains(Some(group.organization_id))))
    }

    async fn list_groups(&self, scope: &Scope, page: PageRequest) -> RepoResult<Page<DeviceGroup>> {
        let ids = scope_ids(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = device_groups::table.into_boxed();
                if let Some(ids) = &ids {
                    query = query.filter(device_groups::organization_id.eq_any(ids.clone()));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let rows = filtered()
                .order((device_groups::name.asc(), device_groups::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(DeviceGroupRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, DeviceGroupRow::into_model)?,
            })
        })?)
    }

    async fn insert_device(&self, device: &Device) -> RepoResult<Device> {
        let row = DeviceRow::from_model(device);
        Ok(with_transaction!(self, |connection| {
            check_group_organization!(connection, &row);
            let stored = diesel::insert_into(devices::table)
                .values(&row)
                .returning(DeviceRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn device(&self, scope: &Scope, id: DeviceId) -> RepoResult<Option<Device>> {
        let device = with_conn!(self, |connection| {
            let row = devices::table
                .find(id_text(id))
                .select(DeviceRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(DeviceRow::into_model).transpose()
        })?;
        Ok(device.filter(|device| scope.contains(Some(device.organization_id))))
    }

    async fn list_devices(
        &self,
        scope: &Scope,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> RepoResult<Page<Device>> {
        let ids = scope_ids(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = devices::table.into_boxed();
                if let Some(ids) = &ids {
                    query = query.filter(devices::organization_id.eq_any(ids.clone()));
                }
                if let Some(slug) = &filter.organization_slug {
                    let organization = organizations::table
                        .filter(organizations::slug.eq(slug.clone()))
                        .select(organizations::id);
                    query = query.filter(devices::organization_id.eq_any(organization));
                }
                if let Some(group_id) = filter.group_id {
                    query = query.filter(devices::group_id.eq(id_text(group_id)));
                }
                if let Some(model) = &filter.model {
                    query = query.filter(devices::model.eq(model.clone()));
                }
                if let Some(os) = &filter.os {
                    query = query.filter(devices::os.eq(os.clone()));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let rows = filtered()
                .order((devices::created.desc(), devices::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(DeviceRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, DeviceRow::into_model)?,
            })
        })?)
    }

    async fn update_device(&self, device: &Device) -> RepoResult<Option<Device>> {
        let mut row = DeviceRow::from_model(device);
        row.modified = naive(time::now());
        Ok(with_transaction!(self, |connection| {
            check_group_organization!(connection, &row);
            let stored = diesel::update(devices::table.find(row.id.clone()))
                .set(&row)
                .returning(DeviceRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(DeviceRow::into_model).transpose()
        })?)
    }

    async fn delete_device(&self, id: DeviceId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(devices::table.find(id_text(id)))
                .execute(connection)
                .await?;
            Ok(deleted > 0)
        })?)
    }

    async fn insert_credentials(&self, credentials: &Credentials) -> RepoResult<Credentials> {
        let row = CredentialsRow::from_model(credentials, &self.cipher)?;
        let cipher = &self.cipher;
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(credentials::table)
                .values(&row)
                .returning(CredentialsRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model(cipher)
        })?)
    }

    async fn credentials(
        &self,
        scope: &Scope,
        id: CredentialsId,
    ) -> RepoResult<Option<Credentials>> {
        let cipher = &self.cipher;
        let credentials = with_conn!(self, |connection| {
            let row = credentials::table
                .find(id_text(id))
                .select(CredentialsRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(|row| row.into_model(cipher)).transpose()
        })?;
        Ok(credentials.filter(|credentials| scope.contains(credentials.organization_id)))
    }

    async fn list_credentials(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> RepoResult<Page<Credentials>> {
        let ids = scope_ids(scope);
        let shared = scope_includes_shared(scope);
        let cipher = &self.cipher;
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = credentials::table.into_boxed();
                if let Some(ids) = &ids {
                    query = if shared {
                        query.filter(
                            credentials::organization_id
                                .eq_any(ids.clone())
                                .or(credentials::organization_id.is_null()),
                        )
                    } else {
                        query.filter(credentials::organization_id.eq_any(ids.clone()))
                    };
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let rows = filtered()
                .order((credentials::name.asc(), credentials::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(CredentialsRow::as_select())
                .load(connection)
                .await?;
            let items = convert_all(rows, |row| row.into_model(cipher))?;
            Ok(Page {
                count: count.unsigned_abs(),
                items,
            })
        })?)
    }

    async fn update_credentials(
        &self,
        credentials: &Credentials,
    ) -> RepoResult<Option<Credentials>> {
        let mut row = CredentialsRow::from_model(credentials, &self.cipher)?;
        row.modified = naive(time::now());
        let cipher = &self.cipher;
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(credentials::table.find(row.id.clone()))
                .set(&row)
                .returning(CredentialsRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(|row| row.into_model(cipher)).transpose()
        })?)
    }

    async fn delete_credentials(&self, id: CredentialsId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(credentials::table.find(id_text(id)))
                .execute(connection)
                .await?;
            Ok(deleted > 0)
        })?)
    }

    async fn insert_connection(
        &self,
        connection_model: &DeviceConnection,
    ) -> RepoResult<DeviceConnection> {
        let row = DeviceConnectionRow::from_model(connection_model);
        Ok(with_transaction!(self, |connection| {
            check_connection_organization!(connection, &row.device_id, &row.credentials_id);
            let stored = diesel::insert_into(device_connections::table)
                .values(&row)
                .returning(DeviceConnectionRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn update_connection(
        &self,
        connection_model: &DeviceConnection,
    ) -> RepoResult<Option<DeviceConnection>> {
        let row = DeviceConnectionRow::from_model(connection_model);
        let now = naive(time::now());
        Ok(with_transaction!(self, |connection| {
            // The device is the stored one: a connection never moves to another device.
            let device_id: Option<String> = device_connections::table
                .find(&row.id)
                .select(device_connections::device_id)
                .first(connection)
                .await
                .optional()?;
            let Some(device_id) = device_id else {
                return Ok(None);
            };
            check_connection_organization!(connection, &device_id, &row.credentials_id);
            let stored = diesel::update(device_connections::table.find(&row.id))
                .set((
                    device_connections::credentials_id.eq(&row.credentials_id),
                    device_connections::connection_type.eq(&row.connection_type),
                    device_connections::enabled.eq(row.enabled),
                    device_connections::details.eq(&row.details),
                    device_connections::modified.eq(now),
                ))
                .returning(DeviceConnectionRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model().map(Some)
        })?)
    }

    async fn connections(
        &self,
        device_id: DeviceId,
    ) -> RepoResult<Vec<(DeviceConnection, Credentials)>> {
        #[cfg(feature = "testing")]
        if self.faults.connections_fail() {
            return Err(RepoError::backend(
                "database query failed",
                "connections failed by a test fault",
            ));
        }
        let cipher = &self.cipher;
        Ok(with_conn!(self, |connection| {
            let rows = device_connections::table
                .inner_join(credentials::table)
                .filter(device_connections::device_id.eq(id_text(device_id)))
                .select((
                    DeviceConnectionRow::as_select(),
                    CredentialsRow::as_select(),
                ))
                .load::<(DeviceConnectionRow, CredentialsRow)>(connection)
                .await?;
            let mut pairs = convert_all(rows, |(device_connection, credentials)| {
                Ok((
                    device_connection.into_model()?,
                    credentials.into_model(cipher)?,
                ))
            })?;
            // Working first (upstream orders by `-is_working`), then never tried, then failing;
            // oldest first within each.
            pairs.sort_by_key(|(device_connection, _)| {
                let rank = match device_connection.is_working {
                    Some(true) => 0,
                    None => 1,
                    Some(false) => 2,
                };
                (rank, device_connection.created, device_connection.id)
            });
            Ok(pairs)
        })?)
    }

    async fn record_connection_attempt(
        &self,
        id: DeviceConnectionId,
        is_working: bool,
        failure_reason: &str,
    ) -> RepoResult<Option<DeviceConnection>> {
        let now = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(device_connections::table.find(id_text(id)))
                .set((
                    device_connections::is_working.eq(Some(is_working)),
                    device_connections::failure_reason.eq(failure_reason),
                    device_connections::last_attempt.eq(Some(now)),
                    device_connections::modified.eq(now),
                ))
                .returning(DeviceConnectionRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(DeviceConnectionRow::into_model).transpose()
        })?)
    }

    async fn record_host_key(
        &self,
        id: DeviceConnectionId,
        host_key: &str,
    ) -> RepoResult<Option<DeviceConnection>> {
        let now = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(device_connections::table.find(id_text(id)))
                .set((
                    device_connections::host_key.eq(Some(host_key)),
                    device_connections::modified.eq(now),
                ))
                .returning(DeviceConnectionRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(DeviceConnectionRow::into_model).transpose()
        })?)
    }

    async fn delete_connection(&self, id: DeviceConnectionId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(device_connections::table.find(id_text(id)))
                .execute(connection)
                .await?;
            Ok(deleted > 0)
        })?)
    }

    async fn device_firmware(&self, device_id: DeviceId) -> RepoResult<Option<DeviceFirmware>> {
        Ok(with_conn!(self, |connection| {
            let row = device_firmwares::table
                .filter(device_firmwares::device_id.eq(id_text(device_id)))
                .select(DeviceFirmwareRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(DeviceFirmwareRow::into_model).transpose()
        })?)
    }

    async fn device_firmwares(&self, device_ids: &[DeviceId]) -> RepoResult<Vec<DeviceFirmware>> {
        let mut records = Vec::with_capacity(device_ids.len());
        // Bounded batches keep each statement under SQLite's limit of bound parameters.
        for chunk in device_ids.chunks(500) {
            let ids: Vec<String> = chunk.iter().map(|id| id_text(*id)).collect();
            let rows: Vec<DeviceFirmwareRow> = with_conn!(self, |connection| {
                Ok(device_firmwares::table
                    .filter(device_firmwares::device_id.eq_any(&ids))
                    .select(DeviceFirmwareRow::as_select())
                    .load(connection)
                    .await?)
            })?;
            for row in rows {
                records.push(row.into_model()?);
            }
        }
        Ok(records)
    }

    async fn insert_device_firmware(
        &self,
        device_firmware: &DeviceFirmware,
    ) -> RepoResult<DeviceFirmware> {
        let row = DeviceFirmwareRow::from_model(device_firmware);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(device_firmwares::table)
                .values(&row)
                .returning(DeviceFirmwareRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn save_device_firmware(
        &self,
        device_firmware: &DeviceFirmware,
    ) -> RepoResult<DeviceFirmware> {
        let row = DeviceFirmwareRow::from_model(device_firmware);
        let now = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(device_firmwares::table)
                .values(&row)
                .on_conflict(device_firmwares::device_id)
                .do_update()
                .set((
                    device_firmwares::image_id.eq(&row.image_id),
                    device_firmwares::installed.eq(row.installed),
                    device_firmwares::details.eq(&row.details),
                    device_firmwares::modified.eq(now),
                ))
                .returning(DeviceFirmwareRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn delete_device_firmware(&self, device_id: DeviceId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(
                device_firmwares::table.filter(device_firmwares::device_id.eq(id_text(device_id))),
            )
            .execute(connection)
            .await?;
            Ok(deleted > 0)
        })?)
    }
}

/// Refuses a device whose group belongs to another organization; run inside the transaction
/// that writes the device.
macro_rules! check_group_organization {
    ($connection:expr, $row:expr) => {{
        let row: &DeviceRow = $row;
        if let Some(group_id) = &row.group_id {
            let group_organization: Option<String> = device_groups::table
                .find(group_id)
                .select(device_groups::organization_id)
                .first(&mut *$connection)
                .await
                .optional()?;
            match group_organization {
                None => {
                    return Err(DbError::Domain(RepoError::MissingReference {
                        what: "the device group".to_owned(),
                    }));
                }
                Some(organization_id) if organization_id != row.organization_id => {
                    return Err(DbError::Domain(RepoError::Invalid(
                        flashfleet_models::ValidationErrors::field(
                            "group",
                            "The organization of the group doesn't match the organization of the device",
                        ),
                    )));
                }
                Some(_) => {}
            }
        }
    }};
}

use check_group_organization;

/// Refuses, inside a transaction, a connection of the device `$device_id` with the credentials
/// `$credentials_id` when either is missing or the credentials belong to another organization
/// (openwisp-controller's rule, [`validate_connection`]).
macro_rules! check_connection_organization {
    ($connection:expr, $device_id:expr, $credentials_id:expr) => {{
        let device_organization: Option<String> = devices::table
            .find($device_id)
            .select(devices::organization_id)
            .first(&mut *$connection)
            .await
            .optional()?;
        let credentials_organization: Option<Option<String>> = credentials::table
            .find($credentials_id)
            .select(credentials::organization_id)
            .first(&mut *$connection)
            .await
            .optional()?;
        let (Some(device_organization), Some(credentials_organization)) =
            (device_organization, credentials_organization)
        else {
            return Err(DbError::Domain(RepoError::MissingReference {
                what: "the device or the credentials".to_owned(),
            }));
        };
        let credentials_organization = credentials_organization
            .map(|id| parse_id(&id))
            .transpose()?;
        validate_connection(parse_id(&device_organization)?, credentials_organization)
            .map_err(|errors| DbError::Domain(RepoError::Invalid(errors)))?;
    }};
}

use check_connection_organization;

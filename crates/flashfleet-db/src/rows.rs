//! Row structs (what diesel reads and writes) and their conversions to and from the models.
//!
//! Rows keep ids as text, JSON as text and times as naive UTC; the conversions are the one
//! place where those representations meet the typed models, and a value that does not convert
//! back is reported as corrupt data, never a panic.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use flashfleet_models::credentials::{ConnectionType, CredentialsSecret};
use flashfleet_models::{
    ApiToken, BatchStatus, BatchUpgradeOperation, Build, Category, Credentials, Details, Device,
    DeviceConnection, DeviceFirmware, DeviceGroup, FirmwareImage, Lease, MacAddress, Membership,
    Organization, PasswordHash, Role, StorageKey, UpgradeOperation, UpgradeOptions, UpgradePhase,
    UpgradeStatus, User,
};

use crate::crypto::SecretCipher;
use crate::error::DbError;
use crate::schema::*;

pub(crate) fn id_text(id: impl ToString) -> String {
    id.to_string()
}

pub(crate) fn parse_id<T: FromStr>(text: &str) -> Result<T, DbError> {
    text.parse()
        .map_err(|_| DbError::Corrupt(format!("malformed id `{text}`")))
}

fn parse_optional_id<T: FromStr>(text: Option<&str>) -> Result<Option<T>, DbError> {
    text.map(parse_id).transpose()
}

pub(crate) fn naive(time: DateTime<Utc>) -> NaiveDateTime {
    time.naive_utc()
}

pub(crate) fn utc(time: NaiveDateTime) -> DateTime<Utc> {
    time.and_utc()
}

fn details_text(details: &Details) -> String {
    serde_json::Value::Object(details.clone()).to_string()
}

fn parse_details(text: &str) -> Result<Details, DbError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(details)) => Ok(details),
        _ => Err(DbError::Corrupt("details are not a JSON object".to_owned())),
    }
}

fn options_text(options: &UpgradeOptions) -> String {
    serde_json::Value::Object(options.0.clone()).to_string()
}

fn parse_options(text: &str) -> Result<UpgradeOptions, DbError> {
    parse_details(text).map(UpgradeOptions)
}

fn parse_text<T: FromStr<Err = String>>(text: &str) -> Result<T, DbError> {
    text.parse().map_err(DbError::Corrupt)
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = organizations, treat_none_as_null = true)]
pub(crate) struct OrganizationRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) is_active: bool,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl OrganizationRow {
    pub(crate) fn from_model(organization: &Organization) -> Self {
        Self {
            id: id_text(organization.id),
            name: organization.name.clone(),
            slug: organization.slug.clone(),
            is_active: organization.is_active,
            details: details_text(&organization.details),
            created: naive(organization.created),
            modified: naive(organization.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<Organization, DbError> {
        Ok(Organization {
            id: parse_id(&self.id)?,
            name: self.name,
            slug: self.slug,
            is_active: self.is_active,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) email: String,
    pub(crate) is_superuser: bool,
    pub(crate) is_active: bool,
    pub(crate) password_hash: Option<String>,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl UserRow {
    pub(crate) fn from_model(user: &User) -> Self {
        Self {
            id: id_text(user.id),
            username: user.username.clone(),
            email: user.email.clone(),
            is_superuser: user.is_superuser,
            is_active: user.is_active,
            password_hash: user
                .password_hash
                .as_ref()
                .map(|hash| hash.as_phc().to_owned()),
            details: details_text(&user.details),
            created: naive(user.created),
            modified: naive(user.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<User, DbError> {
        Ok(User {
            id: parse_id(&self.id)?,
            username: self.username,
            email: self.email,
            is_superuser: self.is_superuser,
            is_active: self.is_active,
            password_hash: self.password_hash.map(PasswordHash::from_phc),
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = memberships)]
pub(crate) struct MembershipRow {
    pub(crate) user_id: String,
    pub(crate) organization_id: String,
    pub(crate) role: String,
    pub(crate) created: NaiveDateTime,
}

impl MembershipRow {
    pub(crate) fn into_model(self) -> Result<Membership, DbError> {
        Ok(Membership {
            user_id: parse_id(&self.user_id)?,
            organization_id: parse_id(&self.organization_id)?,
            role: parse_text::<Role>(&self.role)?,
            created: utc(self.created),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = api_tokens)]
pub(crate) struct ApiTokenRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) name: String,
    pub(crate) key_hash: String,
    pub(crate) prefix: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) last_used: Option<NaiveDateTime>,
}

impl ApiTokenRow {
    pub(crate) fn from_model(token: &ApiToken) -> Self {
        Self {
            id: id_text(token.id),
            user_id: id_text(token.user_id),
            name: token.name.clone(),
            key_hash: token.key_hash.clone(),
            prefix: token.prefix.clone(),
            created: naive(token.created),
            last_used: token.last_used.map(naive),
        }
    }

    pub(crate) fn into_model(self) -> Result<ApiToken, DbError> {
        Ok(ApiToken {
            id: parse_id(&self.id)?,
            user_id: parse_id(&self.user_id)?,
            name: self.name,
            key_hash: self.key_hash,
            prefix: self.prefix,
            created: utc(self.created),
            last_used: self.last_used.map(utc),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = categories, treat_none_as_null = true)]
pub(crate) struct CategoryRow {
    pub(crate) id: String,
    pub(crate) organization_id: Option<String>,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl CategoryRow {
    pub(crate) fn from_model(category: &Category) -> Self {
        Self {
            id: id_text(category.id),
            organization_id: category.organization_id.map(id_text),
            name: category.name.clone(),
            description: category.description.clone(),
            details: details_text(&category.details),
            created: naive(category.created),
            modified: naive(category.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<Category, DbError> {
        Ok(Category {
            id: parse_id(&self.id)?,
            organization_id: parse_optional_id(self.organization_id.as_deref())?,
            name: self.name,
            description: self.description,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = builds, treat_none_as_null = true)]
pub(crate) struct BuildRow {
    pub(crate) id: String,
    pub(crate) category_id: String,
    pub(crate) version: String,
    pub(crate) os: Option<String>,
    pub(crate) changelog: String,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl BuildRow {
    pub(crate) fn from_model(build: &Build) -> Self {
        Self {
            id: id_text(build.id),
            category_id: id_text(build.category_id),
            version: build.version.clone(),
            os: build.os.clone().filter(|os| !os.trim().is_empty()),
            changelog: build.changelog.clone(),
            details: details_text(&build.details),
            created: naive(build.created),
            modified: naive(build.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<Build, DbError> {
        Ok(Build {
            id: parse_id(&self.id)?,
            category_id: parse_id(&self.category_id)?,
            version: self.version,
            os: self.os,
            changelog: self.changelog,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = firmware_images, treat_none_as_null = true)]
pub(crate) struct FirmwareImageRow {
    pub(crate) id: String,
    pub(crate) build_id: String,
    pub(crate) image_type: String,
    pub(crate) file_name: String,
    pub(crate) size: i64,
    pub(crate) sha256: String,
    pub(crate) storage_key: String,
    pub(crate) metadata: Option<String>,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl FirmwareImageRow {
    pub(crate) fn from_model(image: &FirmwareImage) -> Result<Self, DbError> {
        Ok(Self {
            id: id_text(image.id),
            build_id: id_text(image.build_id),
            image_type: image.image_type.clone(),
            file_name: image.file_name.clone(),
            size: i64::try_from(image.size)
                .map_err(|_| DbError::Corrupt(format!("image size {} is too large", image.size)))?,
            sha256: image.sha256.clone(),
            storage_key: image.storage_key.as_str().to_owned(),
            metadata: image.metadata.as_ref().map(serde_json::Value::to_string),
            details: details_text(&image.details),
            created: naive(image.created),
            modified: naive(image.modified),
        })
    }

    pub(crate) fn into_model(self) -> Result<FirmwareImage, DbError> {
        Ok(FirmwareImage {
            id: parse_id(&self.id)?,
            build_id: parse_id(&self.build_id)?,
            image_type: self.image_type,
            file_name: self.file_name,
            size: u64::try_from(self.size)
                .map_err(|_| DbError::Corrupt("negative image size".to_owned()))?,
            sha256: self.sha256,
            storage_key: StorageKey::from_stored(self.storage_key),
            metadata: self
                .metadata
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|_| DbError::Corrupt("image metadata is not JSON".to_owned()))?,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = device_groups, treat_none_as_null = true)]
pub(crate) struct DeviceGroupRow {
    pub(crate) id: String,
    pub(crate) organization_id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl DeviceGroupRow {
    pub(crate) fn from_model(group: &DeviceGroup) -> Self {
        Self {
            id: id_text(group.id),
            organization_id: id_text(group.organization_id),
            name: group.name.clone(),
            description: group.description.clone(),
            details: details_text(&group.details),
            created: naive(group.created),
            modified: naive(group.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<DeviceGroup, DbError> {
        Ok(DeviceGroup {
            id: parse_id(&self.id)?,
            organization_id: parse_id(&self.organization_id)?,
            name: self.name,
            description: self.description,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = devices, treat_none_as_null = true)]
pub(crate) struct DeviceRow {
    pub(crate) id: String,
    pub(crate) organization_id: String,
    pub(crate) name: String,
    pub(crate) mac_address: String,
    pub(crate) model: String,
    pub(crate) board_name: String,
    pub(crate) os: String,
    pub(crate) management_ip: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) is_deactivated: bool,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl DeviceRow {
    pub(crate) fn from_model(device: &Device) -> Self {
        Self {
            id: id_text(device.id),
            organization_id: id_text(device.organization_id),
            name: device.name.clone(),
            mac_address: device.mac_address.to_string(),
            model: device.model.clone(),
            board_name: device.board_name.clone(),
            os: device.os.clone(),
            management_ip: device.management_ip.clone(),
            group_id: device.group_id.map(id_text),
            is_deactivated: device.is_deactivated,
            details: details_text(&device.details),
            created: naive(device.created),
            modified: naive(device.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<Device, DbError> {
        Ok(Device {
            id: parse_id(&self.id)?,
            organization_id: parse_id(&self.organization_id)?,
            name: self.name,
            mac_address: self.mac_address.parse::<MacAddress>().map_err(|_| {
                DbError::Corrupt(format!("malformed MAC address `{}`", self.mac_address))
            })?,
            model: self.model,
            board_name: self.board_name,
            os: self.os,
            management_ip: self.management_ip,
            group_id: parse_optional_id(self.group_id.as_deref())?,
            is_deactivated: self.is_deactivated,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = credentials, treat_none_as_null = true)]
pub(crate) struct CredentialsRow {
    pub(crate) id: String,
    pub(crate) organization_id: Option<String>,
    pub(crate) name: String,
    pub(crate) connection_type: String,
    pub(crate) username: String,
    pub(crate) port: i32,
    pub(crate) secret_kind: String,
    pub(crate) secret_ciphertext: String,
    pub(crate) auto_add: bool,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl CredentialsRow {
    pub(crate) fn from_model(
        credentials: &Credentials,
        cipher: &SecretCipher,
    ) -> Result<Self, DbError> {
        let id = id_text(credentials.id);
        let secret_ciphertext = cipher.encrypt(&id, credentials.secret.expose())?;
        Ok(Self {
            id,
            organization_id: credentials.organization_id.map(id_text),
            name: credentials.name.clone(),
            connection_type: credentials.connection_type.as_str().to_owned(),
            username: credentials.username.clone(),
            port: i32::from(credentials.port),
            secret_kind: credentials.secret.kind().to_owned(),
            secret_ciphertext,
            auto_add: credentials.auto_add,
            details: details_text(&credentials.details),
            created: naive(credentials.created),
            modified: naive(credentials.modified),
        })
    }

    pub(crate) fn into_model(self, cipher: &SecretCipher) -> Result<Credentials, DbError> {
        let secret_text = cipher.decrypt(&self.id, &self.secret_ciphertext)?;
        let secret =
            CredentialsSecret::from_kind(&self.secret_kind, secret_text).ok_or_else(|| {
                DbError::Corrupt(format!("unknown secret kind `{}`", self.secret_kind))
            })?;
        Ok(Credentials {
            id: parse_id(&self.id)?,
            organization_id: parse_optional_id(self.organization_id.as_deref())?,
            name: self.name,
            connection_type: ConnectionType::new(&self.connection_type),
            username: self.username,
            port: u16::try_from(self.port)
                .map_err(|_| DbError::Corrupt(format!("port {}", self.port)))?,
            secret,
            auto_add: self.auto_add,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = device_connections, treat_none_as_null = true)]
pub(crate) struct DeviceConnectionRow {
    pub(crate) id: String,
    pub(crate) device_id: String,
    pub(crate) credentials_id: String,
    pub(crate) connection_type: String,
    pub(crate) enabled: bool,
    pub(crate) is_working: Option<bool>,
    pub(crate) failure_reason: String,
    pub(crate) last_attempt: Option<NaiveDateTime>,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
    pub(crate) host_key: Option<String>,
}

impl DeviceConnectionRow {
    pub(crate) fn from_model(connection: &DeviceConnection) -> Self {
        Self {
            id: id_text(connection.id),
            device_id: id_text(connection.device_id),
            credentials_id: id_text(connection.credentials_id),
            connection_type: connection.connection_type.as_str().to_owned(),
            enabled: connection.enabled,
            is_working: connection.is_working,
            failure_reason: connection.failure_reason.clone(),
            last_attempt: connection.last_attempt.map(naive),
            host_key: connection.host_key.clone(),
            details: details_text(&connection.details),
            created: naive(connection.created),
            modified: naive(connection.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<DeviceConnection, DbError> {
        Ok(DeviceConnection {
            id: parse_id(&self.id)?,
            device_id: parse_id(&self.device_id)?,
            credentials_id: parse_id(&self.credentials_id)?,
            connection_type: ConnectionType::new(&self.connection_type),
            enabled: self.enabled,
            is_working: self.is_working,
            failure_reason: self.failure_reason,
            last_attempt: self.last_attempt.map(utc),
            host_key: self.host_key,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = device_firmwares, treat_none_as_null = true)]
pub(crate) struct DeviceFirmwareRow {
    pub(crate) id: String,
    pub(crate) device_id: String,
    pub(crate) image_id: String,
    pub(crate) installed: bool,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl DeviceFirmwareRow {
    pub(crate) fn from_model(device_firmware: &DeviceFirmware) -> Self {
        Self {
            id: id_text(device_firmware.id),
            device_id: id_text(device_firmware.device_id),
            image_id: id_text(device_firmware.image_id),
            installed: device_firmware.installed,
            details: details_text(&device_firmware.details),
            created: naive(device_firmware.created),
            modified: naive(device_firmware.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<DeviceFirmware, DbError> {
        Ok(DeviceFirmware {
            id: parse_id(&self.id)?,
            device_id: parse_id(&self.device_id)?,
            image_id: parse_id(&self.image_id)?,
            installed: self.installed,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = batch_upgrade_operations, treat_none_as_null = true)]
pub(crate) struct BatchRow {
    pub(crate) id: String,
    pub(crate) build_id: String,
    pub(crate) group_id: Option<String>,
    pub(crate) status: String,
    pub(crate) upgrade_options: String,
    pub(crate) upgrade_all: bool,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
}

impl BatchRow {
    pub(crate) fn from_model(batch: &BatchUpgradeOperation) -> Self {
        Self {
            id: id_text(batch.id),
            build_id: id_text(batch.build_id),
            group_id: batch.group_id.map(id_text),
            status: batch.status.as_str().to_owned(),
            upgrade_options: options_text(&batch.upgrade_options),
            upgrade_all: batch.upgrade_all,
            details: details_text(&batch.details),
            created: naive(batch.created),
            modified: naive(batch.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<BatchUpgradeOperation, DbError> {
        Ok(BatchUpgradeOperation {
            id: parse_id(&self.id)?,
            build_id: parse_id(&self.build_id)?,
            group_id: parse_optional_id(self.group_id.as_deref())?,
            status: parse_text::<BatchStatus>(&self.status)?,
            upgrade_options: parse_options(&self.upgrade_options)?,
            upgrade_all: self.upgrade_all,
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = upgrade_operations, treat_none_as_null = true)]
pub(crate) struct OperationRow {
    pub(crate) id: String,
    pub(crate) device_id: String,
    pub(crate) image_id: Option<String>,
    pub(crate) batch_id: Option<String>,
    pub(crate) status: String,
    pub(crate) phase: String,
    pub(crate) progress: i32,
    pub(crate) log: String,
    pub(crate) upgrade_options: String,
    pub(crate) attempts: i32,
    pub(crate) next_attempt_at: Option<NaiveDateTime>,
    pub(crate) started: Option<NaiveDateTime>,
    pub(crate) finished: Option<NaiveDateTime>,
    pub(crate) details: String,
    pub(crate) created: NaiveDateTime,
    pub(crate) modified: NaiveDateTime,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_expires_at: Option<NaiveDateTime>,
    /// Only a claim changes it (in SQL, `lease_epoch + 1`): never written back from a model,
    /// whose lease may be gone.
    #[diesel(skip_update)]
    pub(crate) lease_epoch: i64,
    pub(crate) flash_attempts: i32,
    pub(crate) flash_boot_id: Option<String>,
    pub(crate) flash_image: Option<String>,
}

impl OperationRow {
    pub(crate) fn from_model(operation: &UpgradeOperation) -> Self {
        Self {
            id: id_text(operation.id),
            device_id: id_text(operation.device_id),
            image_id: operation.image_id.map(id_text),
            batch_id: operation.batch_id.map(id_text),
            status: operation.status.as_str().to_owned(),
            phase: operation.phase.as_str().to_owned(),
            progress: i32::from(operation.progress.min(100)),
            log: operation.log.clone(),
            upgrade_options: options_text(&operation.upgrade_options),
            attempts: i32::try_from(operation.attempts).unwrap_or(i32::MAX),
            next_attempt_at: operation.next_attempt_at.map(naive),
            started: operation.started.map(naive),
            finished: operation.finished.map(naive),
            lease_owner: operation.lease.as_ref().map(|lease| lease.owner.clone()),
            lease_expires_at: operation
                .lease
                .as_ref()
                .map(|lease| naive(lease.expires_at)),
            // The epoch survives a released lease: the next claim increments it.
            lease_epoch: operation
                .lease
                .as_ref()
                .map_or(0, |lease| i64::try_from(lease.epoch).unwrap_or(i64::MAX)),
            flash_attempts: i32::try_from(operation.flash_attempts).unwrap_or(i32::MAX),
            flash_boot_id: operation.flash_boot_id.clone(),
            flash_image: operation
                .flash_image
                .as_ref()
                .map(|image| serde_json::to_string(image).unwrap_or_else(|_| "null".to_owned())),
            details: details_text(&operation.details),
            created: naive(operation.created),
            modified: naive(operation.modified),
        }
    }

    pub(crate) fn into_model(self) -> Result<UpgradeOperation, DbError> {
        Ok(UpgradeOperation {
            id: parse_id(&self.id)?,
            device_id: parse_id(&self.device_id)?,
            image_id: parse_optional_id(self.image_id.as_deref())?,
            batch_id: parse_optional_id(self.batch_id.as_deref())?,
            status: parse_text::<UpgradeStatus>(&self.status)?,
            phase: parse_text::<UpgradePhase>(&self.phase)?,
            progress: u8::try_from(self.progress)
                .map_err(|_| DbError::Corrupt(format!("progress {}", self.progress)))?,
            log: self.log,
            upgrade_options: parse_options(&self.upgrade_options)?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| DbError::Corrupt(format!("attempts {}", self.attempts)))?,
            next_attempt_at: self.next_attempt_at.map(utc),
            started: self.started.map(utc),
            finished: self.finished.map(utc),
            lease: match (self.lease_owner, self.lease_expires_at) {
                (Some(owner), Some(expires_at)) => Some(Lease {
                    owner,
                    expires_at: utc(expires_at),
                    epoch: u64::try_from(self.lease_epoch).map_err(|_| {
                        DbError::Corrupt(format!("lease epoch {}", self.lease_epoch))
                    })?,
                }),
                _ => None,
            },
            flash_attempts: u32::try_from(self.flash_attempts)
                .map_err(|_| DbError::Corrupt(format!("flash attempts {}", self.flash_attempts)))?,
            flash_boot_id: self.flash_boot_id,
            flash_image: self
                .flash_image
                .as_deref()
                .map(serde_json::from_str::<Option<FirmwareImage>>)
                .transpose()
                .map_err(|error| DbError::Corrupt(format!("flash image: {error}")))?
                .flatten()
                .map(Box::new),
            details: parse_details(&self.details)?,
            created: utc(self.created),
            modified: utc(self.modified),
        })
    }
}

/// Converts every row of `rows` with `convert`, failing on the first corrupt one.
pub(crate) fn convert_all<R, T>(
    rows: Vec<R>,
    convert: impl FnMut(R) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    rows.into_iter().map(convert).collect()
}

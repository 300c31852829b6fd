//! What the engine and the API need from persistence, as traits.
//!
//! `flashfleet-db` implements them on SQLite and PostgreSQL. An embedding controller that keeps
//! its own devices (or users) implements the traits it owns and delegates the rest, and hands
//! the result to the engine and the API as `Arc<dyn Repository>`.
//!
//! Conventions every implementation follows (the `flashfleet-db` tests check them on both
//! backends):
//! - Inserts take a complete model (built with the `New*::into_*` constructors, so ids and
//!   timestamps are set) and return it as stored.
//! - Lookups return `Ok(None)` for an object that does not exist **or is outside the scope**,
//!   so callers cannot tell the two apart (an API answers 404 for both).
//! - Updates set `modified` and return `Ok(None)` when the object does not exist.
//! - A broken uniqueness rule is [`RepoError::AlreadyExists`](crate::RepoError) naming the
//!   [`Constraint`](crate::Constraint), and holds under concurrency: of two concurrent inserts,
//!   exactly one wins.
//! - Status changes of operations and batches are conditional updates that check the status
//!   machine against the stored row, so a stale caller cannot overwrite a newer status.
//! - Deleting an object that owns firmware files returns their storage keys, so the caller can
//!   delete the files once the rows are gone.

use async_trait::async_trait;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::access::{Actor, Role, Scope};
use crate::batch::{BatchCounters, BatchStatus, BatchUpgradeOperation};
use crate::build::Build;
use crate::category::Category;
use crate::credentials::{Credentials, DeviceConnection};
use crate::device::{Device, DeviceGroup};
use crate::device_firmware::DeviceFirmware;
use crate::error::RepoResult;
use crate::firmware_image::{FirmwareImage, StorageKey};
use crate::id::{
    BatchId, BuildId, CategoryId, CredentialsId, DeviceConnectionId, DeviceGroupId, DeviceId,
    ImageId, OperationId, OrganizationId, TokenId, UserId,
};
use crate::organization::Organization;
use crate::page::{
    BatchOrder, BuildOrder, CategoryOrder, ImageOrder, OperationOrder, Page, PageRequest, SortKey,
};
use crate::token::{ApiToken, TokenSecret};
use crate::upgrade_operation::{Fence, UpgradeOperation, UpgradePhase, UpgradeStatus};
use crate::user::{Membership, User};

/// Organizations, users, memberships and API tokens.
#[async_trait]
pub trait DirectoryRepository: Send + Sync {
    /// Stores a new organization.
    async fn insert_organization(&self, organization: &Organization) -> RepoResult<Organization>;
    /// The organization `id`, if in `scope`.
    async fn organization(
        &self,
        scope: &Scope,
        id: OrganizationId,
    ) -> RepoResult<Option<Organization>>;
    /// The organization whose slug is `slug`, if in `scope`.
    async fn organization_by_slug(
        &self,
        scope: &Scope,
        slug: &str,
    ) -> RepoResult<Option<Organization>>;
    /// Organizations in `scope`, by name.
    async fn list_organizations(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> RepoResult<Page<Organization>>;
    /// Saves changed fields of an organization.
    async fn update_organization(
        &self,
        organization: &Organization,
    ) -> RepoResult<Option<Organization>>;
    /// Deletes an organization with everything it owns; `None` if it did not exist, else the
    /// storage keys of the firmware files that were deleted with it.
    async fn delete_organization(&self, id: OrganizationId) -> RepoResult<Option<Vec<StorageKey>>>;

    /// Stores a new user.
    async fn insert_user(&self, user: &User) -> RepoResult<User>;
    /// The user `id`.
    async fn user(&self, id: UserId) -> RepoResult<Option<User>>;
    /// The user named `username`.
    async fn user_by_username(&self, username: &str) -> RepoResult<Option<User>>;
    /// Users that belong to an organization in `scope` (every user for [`Scope::All`]), by
    /// username.
    async fn list_users(&self, scope: &Scope, page: PageRequest) -> RepoResult<Page<User>>;
    /// Saves changed fields of a user (including its password hash).
    async fn update_user(&self, user: &User) -> RepoResult<Option<User>>;
    /// Deletes a user with its memberships and tokens.
    async fn delete_user(&self, id: UserId) -> RepoResult<bool>;
    /// Gives `user_id` the role `role` in `organization_id` (replacing an existing role).
    async fn set_membership(
        &self,
        user_id: UserId,
        organization_id: OrganizationId,
        role: Role,
    ) -> RepoResult<Membership>;
    /// Removes `user_id` from `organization_id`.
    async fn remove_membership(
        &self,
        user_id: UserId,
        organization_id: OrganizationId,
    ) -> RepoResult<bool>;
    /// The memberships of `user_id`.
    async fn memberships(&self, user_id: UserId) -> RepoResult<Vec<Membership>>;
    /// The actor for `user_id`: `None` if the user does not exist or is inactive; memberships
    /// of inactive organizations are left out.
    async fn actor(&self, user_id: UserId) -> RepoResult<Option<Actor>>;

    /// Stores a new token (its hash).
    async fn insert_token(&self, token: &ApiToken) -> RepoResult<ApiToken>;
    /// The token whose secret is `secret` and its actor, recording the use (to the minute: a
    /// use within a minute of the recorded one is not written, so authenticating is a read);
    /// `None` when no token matches or its user is inactive.
    async fn authenticate_token(
        &self,
        secret: &TokenSecret,
    ) -> RepoResult<Option<(ApiToken, Actor)>>;
    /// The tokens of `user_id`, newest first.
    async fn tokens(&self, user_id: UserId) -> RepoResult<Vec<ApiToken>>;
    /// Deletes a token.
    async fn delete_token(&self, id: TokenId) -> RepoResult<bool>;
}

/// Filters and order of the category list (upstream endpoint 7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CategoryFilter {
    /// Only categories of the organization with this slug.
    pub organization_slug: Option<String>,
    /// The order, before upstream's default `-name, -created` (and the id).
    pub ordering: Vec<SortKey<CategoryOrder>>,
}

/// Filters and order of the build list (upstream endpoint 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildFilter {
    /// Only builds of this category.
    pub category_id: Option<CategoryId>,
    /// Only builds with exactly this version.
    pub version: Option<String>,
    /// Only builds with exactly this OS identifier.
    pub os: Option<String>,
    /// Only builds whose category belongs to the organization with this slug.
    pub organization_slug: Option<String>,
    /// The order, before upstream's default `-created, -version` (and the id).
    pub ordering: Vec<SortKey<BuildOrder>>,
}

/// Filters and order of the image list of a build (upstream endpoint 4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only images of exactly this type.
    pub image_type: Option<String>,
    /// The order, before upstream's default `-created` (and the id).
    pub ordering: Vec<SortKey<ImageOrder>>,
}

/// Categories, builds and images.
#[async_trait]
pub trait FirmwareRepository: Send + Sync {
    /// Stores a new category.
    async fn insert_category(&self, category: &Category) -> RepoResult<Category>;
    /// The category `id`, if in `scope`.
    async fn category(&self, scope: &Scope, id: CategoryId) -> RepoResult<Option<Category>>;
    /// Categories in `scope` matching `filter`, in `filter.ordering`, then upstream's order
    /// (`-name, -created`), then by id.
    async fn list_categories(
        &self,
        scope: &Scope,
        filter: &CategoryFilter,
        page: PageRequest,
    ) -> RepoResult<Page<Category>>;
    /// Saves changed fields of a category.
    async fn update_category(&self, category: &Category) -> RepoResult<Option<Category>>;
    /// Deletes a category with its builds and images; the storage keys of the deleted files.
    async fn delete_category(&self, id: CategoryId) -> RepoResult<Option<Vec<StorageKey>>>;

    /// Stores a new build; refuses an OS identifier already used in the same organization.
    async fn insert_build(&self, build: &Build) -> RepoResult<Build>;
    /// The build `id` if its category is in `scope`, with its category.
    async fn build(&self, scope: &Scope, id: BuildId) -> RepoResult<Option<(Build, Category)>>;
    /// Builds in `scope` matching `filter`, in `filter.ordering`, then upstream's order
    /// (`-created, -version`), then by id.
    async fn list_builds(
        &self,
        scope: &Scope,
        filter: &BuildFilter,
        page: PageRequest,
    ) -> RepoResult<Page<(Build, Category)>>;
    /// Saves changed fields of a build; refuses an OS identifier used by another build of the
    /// same organization.
    async fn update_build(&self, build: &Build) -> RepoResult<Option<Build>>;
    /// Deletes a build with its images; the storage keys of the deleted files.
    async fn delete_build(&self, id: BuildId) -> RepoResult<Option<Vec<StorageKey>>>;

    /// Stores a new image.
    async fn insert_image(&self, image: &FirmwareImage) -> RepoResult<FirmwareImage>;
    /// The image `id` if its build's category is in `scope`.
    async fn image(&self, scope: &Scope, id: ImageId) -> RepoResult<Option<FirmwareImage>>;
    /// The images of `build_id` if its category is in `scope`, matching `filter`, in
    /// `filter.ordering`, then newest first (upstream's `-created`), then by id.
    async fn list_images(
        &self,
        scope: &Scope,
        build_id: BuildId,
        filter: &ImageFilter,
        page: PageRequest,
    ) -> RepoResult<Page<FirmwareImage>>;
    /// Deletes an image (operations that used it keep a null image, device firmware records
    /// that point to it go); its storage key.
    async fn delete_image(&self, id: ImageId) -> RepoResult<Option<StorageKey>>;
}

/// Filters of the device list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only devices of the organization with this slug.
    pub organization_slug: Option<String>,
    /// Only devices of this group.
    pub group_id: Option<DeviceGroupId>,
    /// Only devices with exactly this model.
    pub model: Option<String>,
    /// Only devices with exactly this OS identifier.
    pub os: Option<String>,
}

/// Devices, device groups, credentials, connections and the firmware each device runs.
#[async_trait]
pub trait DeviceRepository: Send + Sync {
    /// Stores a new device group.
    async fn insert_group(&self, group: &DeviceGroup) -> RepoResult<DeviceGroup>;
    /// The group `id` if in `scope`.
    async fn group(&self, scope: &Scope, id: DeviceGroupId) -> RepoResult<Option<DeviceGroup>>;
    /// Groups in `scope`, by name.
    async fn list_groups(&self, scope: &Scope, page: PageRequest) -> RepoResult<Page<DeviceGroup>>;

    /// Stores a new device.
    async fn insert_device(&self, device: &Device) -> RepoResult<Device>;
    /// The device `id` if in `scope`.
    async fn device(&self, scope: &Scope, id: DeviceId) -> RepoResult<Option<Device>>;
    /// Devices in `scope` matching `filter`, newest first.
    async fn list_devices(
        &self,
        scope: &Scope,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> RepoResult<Page<Device>>;
    /// Saves changed fields of a device.
    async fn update_device(&self, device: &Device) -> RepoResult<Option<Device>>;
    /// Deletes a device with its connections, firmware record and operations.
    async fn delete_device(&self, id: DeviceId) -> RepoResult<bool>;

    /// Stores new credentials (the secret encrypted).
    async fn insert_credentials(&self, credentials: &Credentials) -> RepoResult<Credentials>;
    /// The credentials `id` if in `scope`, with the secret decrypted.
    async fn credentials(
        &self,
        scope: &Scope,
        id: CredentialsId,
    ) -> RepoResult<Option<Credentials>>;
    /// Credentials in `scope`, by name.
    async fn list_credentials(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> RepoResult<Page<Credentials>>;
    /// Saves changed fields of credentials (including the secret).
    async fn update_credentials(
        &self,
        credentials: &Credentials,
    ) -> RepoResult<Option<Credentials>>;
    /// Deletes credentials and the connections that use them.
    async fn delete_credentials(&self, id: CredentialsId) -> RepoResult<bool>;

    /// Attaches credentials to a device; refuses credentials of another organization.
    async fn insert_connection(
        &self,
        connection: &DeviceConnection,
    ) -> RepoResult<DeviceConnection>;
    /// Saves the fields of a connection its owner changes (credentials, connection type,
    /// `enabled`, `details`); the device, the outcome of the last attempt and the host key stay
    /// as stored. Refuses credentials of another organization than the device's, like
    /// [`DeviceRepository::insert_connection`]. `None` when the connection does not exist.
    async fn update_connection(
        &self,
        connection: &DeviceConnection,
    ) -> RepoResult<Option<DeviceConnection>>;
    /// The connections of `device_id`, working ones first, then oldest first.
    async fn connections(
        &self,
        device_id: DeviceId,
    ) -> RepoResult<Vec<(DeviceConnection, Credentials)>>;
    /// Records the outcome of a connection attempt (`failure_reason` empty on success).
    async fn record_connection_attempt(
        &self,
        id: DeviceConnectionId,
        is_working: bool,
        failure_reason: &str,
    ) -> RepoResult<Option<DeviceConnection>>;
    /// Records the SSH host key a device presented through this connection (`<algorithm>
    /// <base64>`), replacing the one recorded before.
    async fn record_host_key(
        &self,
        id: DeviceConnectionId,
        host_key: &str,
    ) -> RepoResult<Option<DeviceConnection>>;
    /// Detaches credentials from a device.
    async fn delete_connection(&self, id: DeviceConnectionId) -> RepoResult<bool>;

    /// The firmware record of `device_id`.
    async fn device_firmware(&self, device_id: DeviceId) -> RepoResult<Option<DeviceFirmware>>;
    /// The firmware records of those of `device_ids` that have one, in no particular order.
    /// The default asks [`DeviceRepository::device_firmware`] once per device; a database
    /// answers in one query.
    async fn device_firmwares(&self, device_ids: &[DeviceId]) -> RepoResult<Vec<DeviceFirmware>> {
        let mut records = Vec::new();
        for device_id in device_ids {
            if let Some(record) = self.device_firmware(*device_id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }
    /// Stores a new firmware record; a device has at most one.
    async fn insert_device_firmware(
        &self,
        device_firmware: &DeviceFirmware,
    ) -> RepoResult<DeviceFirmware>;
    /// Stores `device_firmware` as the firmware record of its device, replacing the image,
    /// `installed` and `details` of an existing record.
    async fn save_device_firmware(
        &self,
        device_firmware: &DeviceFirmware,
    ) -> RepoResult<DeviceFirmware>;
    /// Deletes the firmware record of `device_id`.
    async fn delete_device_firmware(&self, device_id: DeviceId) -> RepoResult<bool>;
}

/// Filters and order of the upgrade operation list (upstream endpoint 11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperationFilter {
    /// Only operations of this device.
    pub device_id: Option<DeviceId>,
    /// Only operations with this image.
    pub image_id: Option<ImageId>,
    /// Only operations of this batch.
    pub batch_id: Option<BatchId>,
    /// Only operations with this status.
    pub status: Option<UpgradeStatus>,
    /// Only operations in this phase (`Queued`: waiting for an engine).
    pub phase: Option<UpgradePhase>,
    /// Only operations changed at or after this time (live streams read what changed since
    /// their last look).
    pub modified_since: Option<DateTime<Utc>>,
    /// Only operations of devices of this organization (upstream's `device__organization`).
    pub organization_id: Option<OrganizationId>,
    /// Only operations of devices of the organization with this slug.
    pub organization_slug: Option<String>,
    /// The order, before upstream's default `-created` (and the id).
    pub ordering: Vec<SortKey<OperationOrder>>,
}

/// Filters and order of the batch list (upstream endpoint 9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchFilter {
    /// Only batches of this build.
    pub build_id: Option<BuildId>,
    /// Only batches with this status.
    pub status: Option<BatchStatus>,
    /// Only batches whose build's category belongs to the organization with this slug.
    pub organization_slug: Option<String>,
    /// Only batches created at exactly this time (upstream's `created` filter; times are stored
    /// with whole microseconds).
    pub created: Option<DateTime<Utc>>,
    /// Only batches created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only batches created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// The order, before upstream's default `-created` (and the id).
    pub ordering: Vec<SortKey<BatchOrder>>,
}

/// A change of an operation's phase and progress, with an optional log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// The phase the operation is now in.
    pub phase: UpgradePhase,
    /// Its progress, 0 to 100.
    pub progress: u8,
    /// A line to append to the log.
    pub log_line: Option<String>,
}

/// The end of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The final status.
    pub status: UpgradeStatus,
    /// A line to append to the log.
    pub log_line: Option<String>,
    /// Whether the device now runs the operation's image (upstream §2.3: success, "not needed",
    /// and a flash whose device did not come back).
    pub installed: bool,
}

/// A device that a mass upgrade of a build would touch, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct UpgradeCandidate {
    /// The device.
    pub device: Device,
    /// Its firmware record, for devices whose firmware is known (`None`: a "firmwareless"
    /// device matched by its model).
    pub device_firmware: Option<DeviceFirmware>,
    /// The image type it runs now (known devices only).
    pub current_image_type: Option<String>,
}

/// Mass upgrades, upgrade operations, and the queries that pick the devices of a mass upgrade.
#[async_trait]
pub trait UpgradeRepository: Send + Sync {
    /// Stores a new batch.
    async fn insert_batch(
        &self,
        batch: &BatchUpgradeOperation,
    ) -> RepoResult<BatchUpgradeOperation>;
    /// The batch `id` if its build's category is in `scope`.
    async fn batch(&self, scope: &Scope, id: BatchId) -> RepoResult<Option<BatchUpgradeOperation>>;
    /// Batches in `scope` matching `filter`, in `filter.ordering`, then newest first, then by id.
    async fn list_batches(
        &self,
        scope: &Scope,
        filter: &BatchFilter,
        page: PageRequest,
    ) -> RepoResult<Page<BatchUpgradeOperation>>;
    /// How many operations of the batch are in each status.
    async fn batch_counters(&self, id: BatchId) -> RepoResult<BatchCounters>;
    /// Changes the batch status if the status machine allows it from the stored status.
    async fn set_batch_status(
        &self,
        id: BatchId,
        status: BatchStatus,
    ) -> RepoResult<Option<BatchUpgradeOperation>>;
    /// Recomputes the batch status from its operations ([`BatchCounters::derive_status`]) and
    /// stores it when it changed.
    async fn refresh_batch_status(
        &self,
        id: BatchId,
    ) -> RepoResult<Option<(BatchUpgradeOperation, BatchCounters)>>;

    /// Points a device at an image and queues its upgrade in one transaction: saves the device's
    /// firmware record with `installed = false` (creating it if needed) and stores `operation`.
    /// Refused with [`Constraint::OneUnfinishedOperationPerDevice`](crate::Constraint) when
    /// the device already has an unfinished operation.
    async fn queue_upgrade(
        &self,
        device_firmware: &DeviceFirmware,
        operation: &UpgradeOperation,
    ) -> RepoResult<UpgradeOperation>;
    /// Stores a mass upgrade with its operations in one transaction: the batch is stored
    /// `in-progress` (or `idle` without operations), and for each `(firmware record,
    /// operation)` the device's firmware record points at the new image (not installed) and
    /// the operation is queued. Devices that already have an unfinished operation are left
    /// out and returned, so a concurrent single upgrade is never overwritten.
    async fn queue_batch(
        &self,
        batch: &BatchUpgradeOperation,
        upgrades: &[(DeviceFirmware, UpgradeOperation)],
    ) -> RepoResult<(BatchUpgradeOperation, Vec<UpgradeOperation>, Vec<DeviceId>)>;
    /// Stores an operation without touching the device's firmware record.
    async fn insert_operation(&self, operation: &UpgradeOperation) -> RepoResult<UpgradeOperation>;
    /// The operation `id` if its device is in `scope`.
    async fn operation(
        &self,
        scope: &Scope,
        id: OperationId,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// Operations in `scope` matching `filter`, in `filter.ordering`, then newest first, then by
    /// id.
    async fn list_operations(
        &self,
        scope: &Scope,
        filter: &OperationFilter,
        page: PageRequest,
    ) -> RepoResult<Page<UpgradeOperation>>;
    /// The unfinished operation of `device_id`, if any.
    async fn unfinished_operation(
        &self,
        device_id: DeviceId,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// Records progress of an unfinished operation claimed with `fence`. Refused with
    /// [`RepoError::LeaseLost`](crate::RepoError::LeaseLost) when the operation is no longer
    /// held with `fence`, and with a transition error when it has finished meanwhile (for
    /// example, cancelled) or the phase would go back: progress never overwrites a status.
    /// Entering [`UpgradePhase::Flashing`](crate::UpgradePhase::Flashing) goes through
    /// [`begin_flash`](UpgradeRepository::begin_flash) only.
    async fn record_progress(
        &self,
        id: OperationId,
        fence: &Fence,
        update: &ProgressUpdate,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// The guarded write before a flash command: the operation, held with `fence` and before
    /// [`UpgradePhase::Flashing`](crate::UpgradePhase::Flashing), enters it, counts a flash
    /// attempt and records `boot_id` (the device's boot id read just before), with `log_line`.
    /// Refused (lease lost, or a transition error) otherwise; the flash command is sent only
    /// after this write succeeded, so one operation sends at most one flash command per
    /// write.
    async fn begin_flash(
        &self,
        id: OperationId,
        fence: &Fence,
        boot_id: Option<&str>,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// Takes an operation held with `fence` that is at or past the flash back to
    /// [`UpgradePhase::Queued`](crate::UpgradePhase::Queued), logging `log_line`: only when
    /// the device proved that the flash command never reached it (same boot id as recorded
    /// before the flash, still the old release, no flash running). Keeps
    /// [`UpgradeOperation::flash_attempts`].
    async fn restart_unflashed(
        &self,
        id: OperationId,
        fence: &Fence,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// Ends an unfinished operation with `completion`, and marks the device's firmware record
    /// installed when `completion.installed`. With `fence`, only while the operation is held
    /// with it (an engine's write); without, whoever holds it (an administrator's). Refused
    /// when it had already ended.
    async fn complete_operation(
        &self,
        id: OperationId,
        fence: Option<&Fence>,
        completion: &Completion,
    ) -> RepoResult<Option<UpgradeOperation>>;
    /// Cancels an operation that has not reached the flash (a conditional update, as upstream's
    /// `cancel()`), appending upstream's log line; refused with the reason otherwise.
    async fn cancel_operation(&self, id: OperationId) -> RepoResult<Option<UpgradeOperation>>;
    /// Counts an attempt of an unfinished operation held with `fence` (setting `started` if no
    /// attempt had started yet), gives its lease back and makes its next attempt due `delay`
    /// from now by the database's clock, logging `log_line`.
    async fn schedule_retry(
        &self,
        id: OperationId,
        fence: &Fence,
        delay: Duration,
        log_line: &str,
    ) -> RepoResult<Option<UpgradeOperation>>;

    /// Claims up to `limit` operations that are ready to run for the engine named `owner`, for
    /// `lease` from now by the database's clock: unfinished, due (`next_attempt_at` unset or
    /// past), and not leased or with an expired lease (their engine stopped: the caller
    /// recovers them by their phase). Each claim increments the operation's lease epoch (its
    /// fencing token; see [`Lease`](crate::Lease)). Oldest first, taking turns between
    /// organizations so that one organization's mass upgrade does not starve another's. Two
    /// engines never claim the same operation.
    async fn claim_operations(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> RepoResult<Vec<UpgradeOperation>>;
    /// Extends the leases held with `fences` (the heartbeat) to `lease` from now by the
    /// database's clock; returns the ids whose lease was still held with its fence. A lease
    /// claimed since by another engine (or by this one again) is lost: its former holder must
    /// stop working on it.
    async fn renew_leases(
        &self,
        fences: &[(OperationId, Fence)],
        lease: Duration,
    ) -> RepoResult<Vec<OperationId>>;
    /// Gives up the lease held with `fence` on `id`; the operation stays as it is, claimable
    /// again. `false` when it was not held with `fence`.
    async fn release_lease(&self, id: OperationId, fence: &Fence) -> RepoResult<bool>;

    /// Upstream's `_find_related_device_firmwares` plus `_find_firmwareless_devices`: devices
    /// whose firmware record points at an image of the build's category (except those that
    /// already run this build), and, when `include_firmwareless`, devices without firmware
    /// record whose model is one of `boards`. Deactivated devices are left out; `group_id`
    /// narrows to a group; when `organization_id` is set, only devices of that organization.
    /// Known devices come first, most recently created firmware record first (upstream's
    /// `-created` on DeviceFirmware); then firmwareless devices, newest first.
    async fn upgrade_candidates(
        &self,
        build: &Build,
        organization_id: Option<OrganizationId>,
        boards: &[String],
        include_firmwareless: bool,
        group_id: Option<DeviceGroupId>,
    ) -> RepoResult<Vec<UpgradeCandidate>>;
}

/// Everything the engine and the API need: implemented for any type that implements the four
/// repositories.
pub trait Repository:
    DirectoryRepository + FirmwareRepository + DeviceRepository + UpgradeRepository
{
}

impl<T> Repository for T where
    T: DirectoryRepository + FirmwareRepository + DeviceRepository + UpgradeRepository
{
}

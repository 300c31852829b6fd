//! Fixtures shared by the test modules: models built with their constructors and stored through
//! the repository traits, plus small helpers for scopes, timestamps and details.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Duration, Utc};
use flashfleet_db::Db;
use flashfleet_models::credentials::SecretText;
use flashfleet_models::repository::{
    DeviceRepository, DirectoryRepository, FirmwareRepository, UpgradeRepository,
};
use flashfleet_models::{
    BatchStatus, BatchUpgradeOperation, Build, Category, Credentials, CredentialsSecret, Details,
    Device, DeviceConnection, DeviceFirmware, FirmwareImage, MacAddress, NewBatch, NewBuild,
    NewCategory, NewCredentials, NewDevice, NewDeviceConnection, NewFirmwareImage, NewOrganization,
    NewUpgradeOperation, NewUser, Organization, OrganizationId, Role, Scope, StorageKey,
    UpgradeOperation, UpgradePhase, UpgradeStatus, User,
};

/// `minutes` minutes before now (whole microseconds, as stored), for explicit, distinct
/// `created` values that make list orders deterministic.
pub(crate) fn ago(minutes: i64) -> DateTime<Utc> {
    flashfleet_models::time::now() - Duration::minutes(minutes)
}

/// A `details` object with every kind of JSON value (nested, unicode, float, null).
pub(crate) fn details() -> Details {
    match serde_json::json!({
        "site": "Zürich lab ✓",
        "rack": 3,
        "ratio": 1.5,
        "spare": null,
        "enabled": true,
        "nested": { "tags": ["a", "b"], "depth": { "level": 2 } }
    }) {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// The scope of a member of `ids`.
pub(crate) fn scope(ids: &[OrganizationId], include_shared: bool) -> Scope {
    Scope::Organizations {
        ids: ids.to_vec(),
        include_shared,
    }
}

/// A MAC address no other fixture uses.
pub(crate) fn unique_mac() -> MacAddress {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let [a, b, c, d] = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    MacAddress::from_bytes([0x02, 0x00, a, b, c, d])
}

/// Stores an active organization named after `slug`.
pub(crate) async fn organization(db: &Db, slug: &str) -> Organization {
    let organization =
        NewOrganization::new(format!("Organization {slug}"), slug).into_organization();
    db.insert_organization(&organization)
        .await
        .expect("storing an organization")
}

/// Stores a user (a superuser when `is_superuser`).
pub(crate) async fn user(db: &Db, username: &str, is_superuser: bool) -> User {
    let mut new_user = NewUser::new(username);
    new_user.is_superuser = is_superuser;
    db.insert_user(&new_user.into_user())
        .await
        .expect("storing a user")
}

/// Stores a user with `role` in `organization_id`.
pub(crate) async fn member(
    db: &Db,
    username: &str,
    organization_id: OrganizationId,
    role: Role,
) -> User {
    let user = user(db, username, false).await;
    db.set_membership(user.id, organization_id, role)
        .await
        .expect("storing a membership");
    user
}

/// Stores a category of `organization_id` (`None`: shared).
pub(crate) async fn category(
    db: &Db,
    organization_id: Option<OrganizationId>,
    name: &str,
) -> Category {
    let category = NewCategory::new(organization_id, name).into_category();
    db.insert_category(&category)
        .await
        .expect("storing a category")
}

/// An unsaved build of `category`, created `minutes_ago` minutes ago.
pub(crate) fn new_build(category: &Category, version: &str, minutes_ago: i64) -> Build {
    let mut build = NewBuild::new(category.id, version).into_build();
    build.created = ago(minutes_ago);
    build.modified = build.created;
    build
}

/// Stores a build of `category` with `version` and `os`.
pub(crate) async fn build(db: &Db, category: &Category, version: &str, os: Option<&str>) -> Build {
    let mut build = NewBuild::new(category.id, version);
    build.os = os.map(str::to_owned);
    db.insert_build(&build.into_build())
        .await
        .expect("storing a build")
}

/// An unsaved image of `build_id` of `image_type`.
pub(crate) fn new_image(build_id: flashfleet_models::BuildId, image_type: &str) -> FirmwareImage {
    let file_name = format!("openwrt-{image_type}");
    NewFirmwareImage {
        build_id,
        image_type: image_type.to_owned(),
        file_name: file_name.clone(),
        size: 7_340_032,
        sha256: "0123456789abcdef".repeat(4),
        storage_key: StorageKey::for_image(build_id, &file_name),
        metadata: None,
        details: Details::new(),
    }
    .into_image()
}

/// Stores an image of `build` of `image_type`.
pub(crate) async fn image(db: &Db, build: &Build, image_type: &str) -> FirmwareImage {
    db.insert_image(&new_image(build.id, image_type))
        .await
        .expect("storing an image")
}

/// The image type most fixtures use.
pub(crate) const IMAGE_TYPE: &str = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin";
/// The board of [`IMAGE_TYPE`].
pub(crate) const BOARD: &str = "TP-Link Archer C7 v2";

/// An unsaved device of `organization_id` with model [`BOARD`], created `minutes_ago` minutes
/// ago.
pub(crate) fn new_device(organization_id: OrganizationId, name: &str, minutes_ago: i64) -> Device {
    let mut new_device = NewDevice::new(organization_id, name, unique_mac());
    new_device.model = BOARD.to_owned();
    let mut device = new_device.into_device();
    device.created = ago(minutes_ago);
    device.modified = device.created;
    device
}

/// Stores a device of `organization_id` with model `model`.
pub(crate) async fn device(
    db: &Db,
    organization_id: OrganizationId,
    name: &str,
    model: &str,
) -> Device {
    let mut new_device = NewDevice::new(organization_id, name, unique_mac());
    new_device.model = model.to_owned();
    db.insert_device(&new_device.into_device())
        .await
        .expect("storing a device")
}

/// Unsaved password credentials of `organization_id` (`None`: shared).
pub(crate) fn new_credentials(
    organization_id: Option<OrganizationId>,
    name: &str,
    password: &str,
) -> Credentials {
    NewCredentials::new(
        organization_id,
        name,
        "root",
        CredentialsSecret::Password(SecretText::new(password)),
    )
    .into_credentials()
}

/// A private key in OpenSSH format (not a real one).
pub(crate) const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n";

/// A firmware chain of one organization: organization, category, build and image.
pub(crate) struct Chain {
    pub(crate) organization: Organization,
    pub(crate) category: Category,
    pub(crate) build: Build,
    pub(crate) image: FirmwareImage,
}

/// Stores an organization `slug` with category "Routers", build "1.0" and one image of
/// [`IMAGE_TYPE`].
pub(crate) async fn chain(db: &Db, slug: &str) -> Chain {
    let organization = organization(db, slug).await;
    let category = category(db, Some(organization.id), "Routers").await;
    let build = build(db, &category, "1.0", None).await;
    let image = image(db, &build, IMAGE_TYPE).await;
    Chain {
        organization,
        category,
        build,
        image,
    }
}

/// A device with credentials attached through a connection.
pub(crate) struct ConnectedDevice {
    pub(crate) device: Device,
    pub(crate) credentials: Credentials,
    pub(crate) connection: DeviceConnection,
}

/// Stores a device of `organization_id` named `name` with its own password credentials and a
/// connection.
pub(crate) async fn connected_device(
    db: &Db,
    organization_id: OrganizationId,
    name: &str,
) -> ConnectedDevice {
    let device = device(db, organization_id, name, BOARD).await;
    let credentials = db
        .insert_credentials(&new_credentials(
            Some(organization_id),
            &format!("{name} credentials"),
            "hunter2",
        ))
        .await
        .expect("storing credentials");
    let connection = db
        .insert_connection(
            &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
        )
        .await
        .expect("storing a connection");
    ConnectedDevice {
        device,
        credentials,
        connection,
    }
}

/// Stores a firmware record of `device` on `image`.
pub(crate) async fn device_firmware(
    db: &Db,
    device: &Device,
    image: &FirmwareImage,
    installed: bool,
) -> DeviceFirmware {
    db.insert_device_firmware(&DeviceFirmware::new(device.id, image.id, installed))
        .await
        .expect("storing a firmware record")
}

/// Stores a queued (in-progress) operation putting `image` on `device`.
pub(crate) async fn operation(db: &Db, device: &Device, image: &FirmwareImage) -> UpgradeOperation {
    db.insert_operation(&NewUpgradeOperation::new(device.id, image.id).into_operation())
        .await
        .expect("storing an operation")
}

/// An unsaved operation of `device` on `image` with `status`, created `minutes_ago` ago.
pub(crate) fn new_operation(
    device: &Device,
    image: &FirmwareImage,
    status: UpgradeStatus,
    minutes_ago: i64,
) -> UpgradeOperation {
    let mut operation = NewUpgradeOperation::new(device.id, image.id).into_operation();
    operation.status = status;
    if status.is_final() {
        operation.phase = UpgradePhase::Done;
        operation.finished = Some(ago(minutes_ago));
    }
    operation.created = ago(minutes_ago);
    operation.modified = operation.created;
    operation
}

/// An unsaved batch of `build` with `status`, created `minutes_ago` ago.
pub(crate) fn new_batch(
    build: &Build,
    status: BatchStatus,
    minutes_ago: i64,
) -> BatchUpgradeOperation {
    let mut batch = NewBatch::new(build.id).into_batch();
    batch.status = status;
    batch.created = ago(minutes_ago);
    batch.modified = batch.created;
    batch
}

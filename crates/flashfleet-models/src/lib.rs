//! The flashfleet domain: organizations, users, firmware categories, builds and images,
//! devices with their credentials, and the upgrade operations that move a device from one image
//! to another.
//!
//! What lives here:
//! - the model structs (one module per model), each with a UUID id, `created`/`modified` in UTC
//!   and a JSON `details` object that integrators fill with their own fields;
//! - every validation rule of upstream openwisp-firmware-upgrader (§1 of its behaviour spec) as
//!   a pure function returning [`ValidationErrors`];
//! - the status machines of upgrade operations and mass upgrades (§2), where an illegal
//!   transition is an error value, never a panic;
//! - the access rules of organizations and roles ([`access`]);
//! - the repository traits ([`repository`]) that describe what the engine and the API need from
//!   persistence, so an embedding controller can bring its own.
//!
//! **Invariant:** this crate does no I/O. It knows nothing of SQL, HTTP or SSH; the only system
//! calls it makes are reading the clock and the operating system's random number generator
//! (for ids, token secrets and password salts).

pub mod access;
pub mod batch;
pub mod build;
pub mod category;
pub mod credentials;
pub mod device;
pub mod device_firmware;
pub mod error;
pub mod firmware_image;
pub mod id;
pub mod organization;
pub mod page;
pub mod repository;
pub mod time;
pub mod token;
pub mod upgrade_operation;
pub mod upgrade_options;
pub mod user;

pub use access::{Actor, Role, Scope};
pub use batch::{BatchCounters, BatchStatus, BatchUpgradeOperation, NewBatch};
pub use build::{Build, NewBuild};
pub use category::{Category, NewCategory};
pub use credentials::{
    ConnectionType, Credentials, CredentialsSecret, DeviceConnection, NewCredentials,
    NewDeviceConnection,
};
pub use device::{Device, DeviceGroup, MacAddress, NewDevice, NewDeviceGroup};
pub use device_firmware::DeviceFirmware;
pub use error::{
    CancelError, Constraint, RepoError, RepoResult, TransitionError, ValidationErrors,
};
pub use firmware_image::{FirmwareImage, NewFirmwareImage, StorageKey};
pub use id::{
    BatchId, BuildId, CategoryId, CredentialsId, DeviceConnectionId, DeviceFirmwareId,
    DeviceGroupId, DeviceId, ImageId, OperationId, OrganizationId, TokenId, UserId,
};
pub use organization::{NewOrganization, Organization};
pub use page::{
    BatchOrder, BuildOrder, CategoryOrder, ImageOrder, OperationOrder, Page, PageRequest, SortKey,
};
pub use token::{ApiToken, NewApiToken, TokenSecret};
pub use upgrade_operation::{
    Fence, Lease, NewUpgradeOperation, UpgradeOperation, UpgradePhase, UpgradeStatus,
};
pub use upgrade_options::UpgradeOptions;
pub use user::{Membership, NewUser, PasswordHash, User};

/// The JSON object every model carries for integrators' own fields (upstream's sample app adds a
/// `details` field to each swappable model; here it is built in).
pub type Details = serde_json::Map<String, serde_json::Value>;

//! One id type per model, so ids of different models cannot be mixed up.
//!
//! Every id is a UUID (version 4 when generated here), serialized as its hyphenated string, as
//! upstream's API returns them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (version 4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(formatter)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id_type!(
    /// Id of an [`Organization`](crate::Organization).
    OrganizationId
);
id_type!(
    /// Id of a [`User`](crate::User).
    UserId
);
id_type!(
    /// Id of an [`ApiToken`](crate::ApiToken).
    TokenId
);
id_type!(
    /// Id of a [`Category`](crate::Category).
    CategoryId
);
id_type!(
    /// Id of a [`Build`](crate::Build).
    BuildId
);
id_type!(
    /// Id of a [`FirmwareImage`](crate::FirmwareImage).
    ImageId
);
id_type!(
    /// Id of a [`Device`](crate::Device).
    DeviceId
);
id_type!(
    /// Id of a [`DeviceGroup`](crate::DeviceGroup).
    DeviceGroupId
);
id_type!(
    /// Id of a set of [`Credentials`](crate::Credentials).
    CredentialsId
);
id_type!(
    /// Id of a [`DeviceConnection`](crate::DeviceConnection).
    DeviceConnectionId
);
id_type!(
    /// Id of a [`DeviceFirmware`](crate::DeviceFirmware).
    DeviceFirmwareId
);
id_type!(
    /// Id of a [`BatchUpgradeOperation`](crate::BatchUpgradeOperation).
    BatchId
);
id_type!(
    /// Id of an [`UpgradeOperation`](crate::UpgradeOperation).
    OperationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_hyphenated_uuids() {
        let id = BuildId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<BuildId>().ok(), Some(id));
        assert_eq!(serde_json::to_string(&id).ok(), Some(format!("\"{text}\"")));
    }

    #[test]
    fn a_malformed_id_is_an_error() {
        assert!("not-a-uuid".parse::<DeviceId>().is_err());
    }
}

//! Where firmware files are kept.
//!
//! `StorageConfig` is the `[storage]` section as the configuration file and the environment
//! spell it: the same variants, fields and serde shape as `flashfleet_storage::StorageConfig`,
//! plus what the server needs of a section (a JSON schema for `FLASHFLEET_STORAGE__*`
//! variables and the documented defaults, and a redacted rendering).
//! [`StorageConfig::to_library`] turns it into the storage crate's configuration.

use std::path::PathBuf;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// A firmware storage backend, selected by `backend`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// Files in a local directory.
    Local {
        /// The directory (created when missing).
        path: PathBuf,
    },
    /// An S3-compatible object store.
    S3 {
        /// The bucket.
        bucket: String,
        /// A prefix for every object key (default: none).
        #[serde(default)]
        prefix: String,
        /// The endpoint URL of an S3-compatible server other than AWS (for example MinIO).
        endpoint: Option<String>,
        /// The region (default `us-east-1`).
        #[serde(default = "default_region")]
        region: String,
        /// The access key id; without it, the usual AWS environment variables are used.
        access_key_id: Option<String>,
        /// The secret access key; without it, the usual AWS environment variables are used.
        #[schemars(with = "Option<String>")]
        secret_access_key: Option<SecretString>,
        /// Whether plain HTTP endpoints are allowed (default false).
        #[serde(default)]
        allow_http: bool,
        /// Whether the bucket is addressed as a host name (`bucket.endpoint`) rather than a
        /// path (default false).
        #[serde(default)]
        virtual_hosted_style: bool,
    },
    /// Files in memory, lost at exit (for tests).
    Memory,
}

impl StorageConfig {
    /// The storage crate's configuration of this section.
    pub fn to_library(&self) -> flashfleet_storage::StorageConfig {
        match self.clone() {
            StorageConfig::Local { path } => flashfleet_storage::StorageConfig::Local { path },
            StorageConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                virtual_hosted_style,
            } => flashfleet_storage::StorageConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                virtual_hosted_style,
            },
            StorageConfig::Memory => flashfleet_storage::StorageConfig::Memory,
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// What [`serialize_redacted`] writes: the storage configuration with its secret replaced.
#[derive(Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
enum RedactedStorage<'a> {
    Local {
        path: &'a PathBuf,
    },
    S3 {
        bucket: &'a str,
        prefix: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<&'a str>,
        region: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        access_key_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret_access_key: Option<&'static str>,
        allow_http: bool,
        virtual_hosted_style: bool,
    },
    Memory,
}

/// Serializes an optional storage configuration with the S3 secret access key redacted.
pub(crate) fn serialize_redacted<S: Serializer>(
    storage: &Option<StorageConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let redacted = storage.as_ref().map(|storage| match storage {
        StorageConfig::Local { path } => RedactedStorage::Local { path },
        StorageConfig::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
            virtual_hosted_style,
        } => RedactedStorage::S3 {
            bucket,
            prefix,
            endpoint: endpoint.as_deref(),
            region,
            access_key_id: access_key_id.as_deref(),
            secret_access_key: secret_access_key.as_ref().map(|_| super::REDACTED),
            allow_http: *allow_http,
            virtual_hosted_style: *virtual_hosted_style,
        },
        StorageConfig::Memory => RedactedStorage::Memory,
    });
    redacted.serialize(serializer)
}

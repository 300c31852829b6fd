//! Where firmware files are kept: [`StorageConfig`], the storage section of the server's
//! configuration.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// The directory of the default local storage, relative to the server's working directory.
pub const DEFAULT_LOCAL_PATH: &str = "./flashfleet-data/firmware";

/// The region of an S3 backend whose configuration names none.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Which backend stores firmware files, and how to reach it.
///
/// Read from the server's configuration file, tagged by `backend`:
///
/// ```
/// use flashfleet_storage::StorageConfig;
///
/// let config: StorageConfig = toml::from_str(
///     r#"
///     backend = "s3"
///     bucket = "firmware"
///     endpoint = "https://s3.example.net"
///     access_key_id = "AKIDEXAMPLE"
///     secret_access_key = "wJalrXUtnFEMI"
///     "#,
/// )
/// .unwrap();
/// assert!(matches!(config, StorageConfig::S3 { ref region, .. } if region == "us-east-1"));
/// // The secret stays out of logs.
/// assert!(!format!("{config:?}").contains("wJalrXUtnFEMI"));
/// ```
///
/// The default is the local directory [`DEFAULT_LOCAL_PATH`].
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum StorageConfig {
    /// Files in a local directory (`backend = "local"`), created when missing. Each build gets a
    /// subdirectory, removed once its last file is deleted.
    Local {
        /// The directory; relative paths are relative to the server's working directory.
        path: PathBuf,
    },
    /// An S3 bucket, or a bucket of an S3-compatible server such as MinIO or Ceph
    /// (`backend = "s3"`).
    ///
    /// Credentials not given here come from the usual AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then from the
    /// instance or container metadata services, as the AWS SDKs look for them. The other
    /// settings given here override their environment variables (`AWS_REGION`,
    /// `AWS_ENDPOINT`, ...).
    S3 {
        /// The bucket's name. It must exist.
        bucket: String,
        /// A key prefix under which flashfleet keeps its files, so one bucket can serve several
        /// purposes; empty (the default) for the bucket's root.
        #[serde(default)]
        prefix: String,
        /// The endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`); `None` for
        /// AWS itself (or `AWS_ENDPOINT`).
        endpoint: Option<String>,
        /// The region; [`DEFAULT_S3_REGION`] when not given.
        #[serde(default = "default_s3_region")]
        region: String,
        /// The access key id; `None` to take it from the environment.
        access_key_id: Option<String>,
        /// The secret access key; `None` to take it from the environment. Never printed:
        /// `Debug` shows it redacted.
        secret_access_key: Option<SecretString>,
        /// Whether plain `http://` endpoints are allowed (an S3-compatible server on a trusted
        /// network or loopback); off by default.
        #[serde(default)]
        allow_http: bool,
        /// Whether to address the bucket as a host name (`https://bucket.endpoint/key`) rather
        /// than as the first part of the path (`https://endpoint/bucket/key`, the default,
        /// which most S3-compatible servers expect).
        #[serde(default)]
        virtual_hosted_style: bool,
    },
    /// Files in memory (`backend = "memory"`), lost when the process ends: for tests and demos.
    Memory,
}

impl StorageConfig {
    /// Local storage in `path`.
    pub fn local(path: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig::Local { path: path.into() }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig::local(DEFAULT_LOCAL_PATH)
    }
}

fn default_s3_region() -> String {
    DEFAULT_S3_REGION.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_is_read_from_its_tag() {
        let local: StorageConfig =
            toml::from_str("backend = \"local\"\npath = \"/srv/fw\"").unwrap();
        assert!(matches!(local, StorageConfig::Local { path } if path.as_os_str() == "/srv/fw"));
        let memory: StorageConfig = toml::from_str("backend = \"memory\"").unwrap();
        assert!(matches!(memory, StorageConfig::Memory));
        let s3: StorageConfig = toml::from_str("backend = \"s3\"\nbucket = \"fw\"").unwrap();
        let StorageConfig::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
            virtual_hosted_style,
        } = s3
        else {
            panic!("not s3: {s3:?}");
        };
        assert_eq!(bucket, "fw");
        assert_eq!(prefix, "");
        assert_eq!(endpoint, None);
        assert_eq!(region, DEFAULT_S3_REGION);
        assert_eq!(access_key_id, None);
        assert!(secret_access_key.is_none());
        assert!(!allow_http);
        assert!(!virtual_hosted_style);
    }

    #[test]
    fn unknown_fields_and_backends_are_refused() {
        for text in [
            "backend = \"local\"\npath = \"/srv\"\npaht = \"/srv\"",
            "backend = \"s3\"\nbucket = \"fw\"\nsecret = \"x\"",
            "backend = \"ftp\"",
            "path = \"/srv\"",
        ] {
            assert!(toml::from_str::<StorageConfig>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_default_is_the_local_directory() {
        assert!(matches!(
            StorageConfig::default(),
            StorageConfig::Local { path } if path.as_os_str() == DEFAULT_LOCAL_PATH
        ));
    }
}

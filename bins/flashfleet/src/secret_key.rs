//! The key that encrypts device credentials at rest: from the configuration
//! (`FLASHFLEET_SECRET_KEY`), or from its file, which is generated with mode 0600 on first use
//! and refused when other users may read it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use flashfleet_db::SecretKey;
use secrecy::ExposeSecret as _;

use crate::config::Config;

/// Where the key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The configuration (`secret_key`, usually `FLASHFLEET_SECRET_KEY`).
    Configuration,
    /// An existing key file.
    File(PathBuf),
    /// A key file generated just now.
    Generated(PathBuf),
}

/// The secret key of `config`, generating its file when there is none yet.
pub fn load_or_generate(config: &Config) -> anyhow::Result<(SecretKey, KeyOrigin)> {
    if let Some(secret_key) = &config.secret_key {
        let key = SecretKey::from_base64(secret_key.expose_secret()).context("secret_key")?;
        return Ok((key, KeyOrigin::Configuration));
    }
    let path = config.secret_key_path();
    if path.exists() {
        return read(&path).map(|key| (key, KeyOrigin::File(path)));
    }
    let key = generate(&path)?;
    Ok((key, KeyOrigin::Generated(path)))
}

fn read(path: &Path) -> anyhow::Result<SecretKey> {
    check_private(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the secret key file {}", path.display()))?;
    SecretKey::from_base64(&text)
        .with_context(|| format!("the secret key file {} is not valid", path.display()))
}

fn generate(path: &Path) -> anyhow::Result<SecretKey> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create directory {}", parent.display()))?;
    }
    let key = SecretKey::generate().context("could not generate a secret key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create the secret key file {}", path.display()))?;
    writeln!(file, "{}", key.to_base64())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write the secret key file {}", path.display()))?;
    Ok(key)
}

/// Refuses a key file that users other than its owner may read or write.
#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("could not read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "the secret key file {} may be read by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(directory: &Path) -> Config {
        Config {
            data_dir: directory.join("data"),
            ..Config::default()
        }
    }

    #[test]
    fn a_key_is_generated_once_private_then_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let config = config_in(directory.path());
        let (first, origin) = load_or_generate(&config).unwrap();
        let path = directory.path().join("data/secret.key");
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, origin) = load_or_generate(&config).unwrap();
        assert_eq!(origin, KeyOrigin::File(path));
        assert_eq!(first.to_base64(), second.to_base64());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let directory = tempfile::tempdir().unwrap();
        let config = config_in(directory.path());
        load_or_generate(&config).unwrap();
        let path = config.secret_key_path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_generate(&config).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn the_configured_key_wins_and_a_bad_one_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let mut config = config_in(directory.path());
        config.secret_key = Some(key.to_base64().into());
        let (loaded, origin) = load_or_generate(&config).unwrap();
        assert_eq!(
            (loaded.to_base64(), origin),
            (key.to_base64(), KeyOrigin::Configuration)
        );
        assert!(!config.secret_key_path().exists());
        config.secret_key = Some("short".into());
        assert!(load_or_generate(&config).is_err());
    }
}

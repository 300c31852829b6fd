//! Opening the database for a command.

use anyhow::Context as _;
use flashfleet_db::Db;

use crate::config::{Config, redact_url_password};
use crate::secret_key::{self, KeyOrigin};

/// Connects to the configured database (creating it and applying pending migrations when
/// needed), with the secret key that encrypts device credentials.
pub async fn connect(config: &Config) -> anyhow::Result<Db> {
    let (secret_key, origin) = secret_key::load_or_generate(config)?;
    if let KeyOrigin::Generated(path) = origin {
        tracing::info!(path = %path.display(), "generated the secret key that encrypts device credentials");
    }
    let url = config.database_url();
    Db::connect(&config.db_config(secret_key))
        .await
        .with_context(|| format!("could not open the database {}", redact_url_password(&url)))
}

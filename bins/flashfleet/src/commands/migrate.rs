//! `flashfleet migrate`: creates the data directory, the secret key and the database, and
//! applies pending migrations.

use std::io::Write;

use anyhow::Context as _;

use crate::config::{Config, redact_url_password};
use crate::secret_key::{self, KeyOrigin};

/// Runs the command, saying what it did on `output`.
pub async fn run(config: &Config, output: &mut impl Write) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    if !data_dir.is_dir() {
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!("could not create the data directory {}", data_dir.display())
        })?;
        writeln!(output, "created the data directory {}", data_dir.display())?;
    }
    match secret_key::load_or_generate(config)?.1 {
        KeyOrigin::Generated(path) => writeln!(
            output,
            "generated the secret key that encrypts device credentials: {} (mode 0600; back it up)",
            path.display()
        )?,
        KeyOrigin::File(path) => {
            writeln!(output, "using the secret key in {}", path.display())?;
        }
        KeyOrigin::Configuration => {
            writeln!(output, "using the secret key from the configuration")?;
        }
    }
    let url = config.database_url();
    let shown_url = redact_url_password(&url);
    let new_file = sqlite_file(&url).filter(|path| !std::path::Path::new(path).exists());
    flashfleet_db::migrate(&url)
        .await
        .with_context(|| format!("could not migrate the database {shown_url}"))?;
    if let Some(path) = new_file {
        writeln!(output, "created the SQLite database {path}")?;
    }
    writeln!(
        output,
        "applied every pending migration: the database {shown_url} is up to date"
    )?;
    Ok(())
}

/// The file of a SQLite URL.
fn sqlite_file(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

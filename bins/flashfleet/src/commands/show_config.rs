//! `flashfleet config`: the effective configuration, or the documented defaults.

use std::io::Write;

use crate::config::{Config, LoadedConfig};

/// The options of `config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the built-in defaults as commented TOML (the content of defaults.toml) instead of
    /// the effective configuration.
    #[arg(long)]
    pub defaults: bool,
}

/// Prints the documented defaults.
pub fn print_defaults(output: &mut impl Write) -> anyhow::Result<()> {
    output.write_all(Config::defaults_toml()?.as_bytes())?;
    Ok(())
}

/// Prints the effective configuration, with its secrets redacted.
pub fn print_effective(loaded: &LoadedConfig, output: &mut impl Write) -> anyhow::Result<()> {
    let source = match &loaded.file {
        Some(file) => format!("{} and the environment", file.display()),
        None => "the built-in defaults and the environment".to_owned(),
    };
    writeln!(
        output,
        "# The effective configuration, from {source}; secrets are redacted."
    )?;
    output.write_all(loaded.config.to_redacted_toml()?.as_bytes())?;
    Ok(())
}

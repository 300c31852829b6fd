//! Logs: tracing-subscriber on standard error, readable lines or JSON objects, filtered by
//! `RUST_LOG` when it is set and by the configuration's `log_level` otherwise.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (the one process-wide thing tracing needs).
///
/// `rust_log` is the value of `RUST_LOG`, if set; it wins over `log_level`.
pub fn init(format: LogFormat, log_level: &str, rust_log: Option<&str>) -> anyhow::Result<()> {
    let filter = match rust_log.filter(|directive| !directive.trim().is_empty()) {
        Some(directive) => EnvFilter::try_new(directive)
            .with_context(|| format!("RUST_LOG `{directive}` is not a valid filter"))?,
        None => EnvFilter::try_new(log_level)
            .with_context(|| format!("log_level `{log_level}` is not a valid filter"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("could not install the logger: {error}"))
}

//! `flashfleet`: the command line of the reference upgrade server (see the `flashfleet_server`
//! library of this package for the pieces).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use flashfleet_server::commands::{
    createsuperuser, devices, image, image_types, migrate, serve, show_config, token,
};
use flashfleet_server::config::{Config, LoadedConfig};
use flashfleet_server::stack::Stack;
use flashfleet_server::{database, logging};

/// Firmware upgrades for fleets of OpenWrt routers over SSH.
#[derive(Debug, Parser)]
#[command(name = "flashfleet", version)]
struct Cli {
    /// The configuration file (TOML). Default: ./flashfleet.toml when it exists, else the
    /// built-in defaults. FLASHFLEET_* environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server: the REST API, the web dashboard and the upgrade engine, with /healthz,
    /// /readyz and /metrics. Stops on SIGTERM or SIGINT once the upgrades in flight reached a
    /// persisted step.
    Serve(serve::Args),
    /// Creates the data directory, the secret key and the database, and applies pending
    /// database migrations.
    Migrate,
    /// Creates a superuser: non-interactive with --username and --password, otherwise asks on
    /// the terminal.
    Createsuperuser(createsuperuser::Args),
    /// API tokens.
    #[command(subcommand)]
    Token(token::Command),
    /// Devices.
    #[command(subcommand)]
    Devices(devices::Command),
    /// Firmware images.
    #[command(subcommand)]
    Image(image::Command),
    /// Prints the image map (the built-in OpenWrt image types and the configured custom
    /// images) as a table or as JSON.
    ImageTypes(image_types::Args),
    /// Prints the effective configuration (secrets redacted), or with --defaults the
    /// documented defaults.
    Config(show_config::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // If standard error is gone there is nobody left to tell.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Command::Config(args) = &cli.command
        && args.defaults
    {
        return show_config::print_defaults(&mut stdout);
    }
    let loaded = load_config(cli.config.as_deref())?;
    let rust_log = std::env::var("RUST_LOG").ok();
    logging::init(
        loaded.config.log_format,
        &loaded.config.log_level,
        rust_log.as_deref(),
    )?;
    for variable in &loaded.ignored_variables {
        tracing::warn!(
            variable,
            "ignoring an environment variable that names no setting"
        );
    }
    let config = &loaded.config;
    match cli.command {
        Command::Config(_) => show_config::print_effective(&loaded, &mut stdout),
        Command::ImageTypes(args) => image_types::run(config, &args, &mut stdout),
        Command::Image(image::Command::Inspect(args)) => image::run(config, &args, &mut stdout),
        Command::Migrate => runtime()?.block_on(migrate::run(config, &mut stdout)),
        Command::Createsuperuser(args) => runtime()?.block_on(async {
            let db = database::connect(config).await?;
            createsuperuser::run(&db, args, &mut stdout).await
        }),
        Command::Token(command) => runtime()?.block_on(async {
            let db = database::connect(config).await?;
            token::run(&db, command, &mut stdout).await
        }),
        Command::Devices(command) => runtime()?.block_on(async {
            let stack = Stack::build(config).await?;
            devices::run(&stack, command, &mut stdout).await
        }),
        Command::Serve(args) => serve::run(config, &args, &mut std::io::stderr()),
    }
}

/// The configuration of `file` (or `./flashfleet.toml`) and the `FLASHFLEET_*` variables.
fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<LoadedConfig> {
    let mut environment = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with("FLASHFLEET_")) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("the environment variable {name} is not valid UTF-8"))?;
        environment.push((name.to_owned(), value));
    }
    Config::load(file, &environment)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

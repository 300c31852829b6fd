//! `flashfleet token`: API tokens.

use std::io::Write;

use anyhow::{Context as _, bail};
use flashfleet_db::Db;
use flashfleet_models::NewApiToken;
use flashfleet_models::repository::DirectoryRepository as _;

/// The `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Creates an API token for a user and prints its secret (40 hexadecimal characters) on
    /// standard output, once and alone: `TOKEN=$(flashfleet token create --username admin)`.
    Create(CreateArgs),
}

/// The options of `token create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The user the token authenticates.
    #[arg(long)]
    pub username: String,
    /// A name that tells the token apart from the user's other tokens.
    #[arg(long, default_value = "")]
    pub name: String,
}

/// Runs a `token` subcommand.
pub async fn run(db: &Db, command: Command, output: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Command::Create(args) => create(db, args, output).await,
    }
}

async fn create(db: &Db, args: CreateArgs, output: &mut impl Write) -> anyhow::Result<()> {
    let Some(user) = db.user_by_username(&args.username).await? else {
        bail!("no user named `{}`", args.username);
    };
    if !user.is_active {
        bail!("the user `{}` is inactive", user.username);
    }
    let new_token =
        NewApiToken::generate(user.id, args.name).context("could not generate a token")?;
    let token = db
        .insert_token(&new_token.token)
        .await
        .context("could not store the token")?;
    tracing::info!(user = %user.username, prefix = %token.prefix, "created an API token");
    writeln!(output, "{}", new_token.secret.expose())?;
    Ok(())
}

//! `flashfleet createsuperuser`: creates a user who may do everything.

use std::io::{BufRead as _, IsTerminal as _, Write};

use anyhow::{Context as _, bail};
use flashfleet_db::Db;
use flashfleet_models::repository::DirectoryRepository as _;
use flashfleet_models::{NewUser, PasswordHash};

/// The options of `createsuperuser`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Login name of the new superuser (asked on the terminal when missing).
    #[arg(long)]
    pub username: Option<String>,
    /// Its password (asked on the terminal, without echo, when missing). A password given here
    /// is visible to other users of the machine while the command runs.
    #[arg(long)]
    pub password: Option<String>,
    /// Its e-mail address.
    #[arg(long, default_value = "")]
    pub email: String,
}

/// Creates the superuser; prompts for what `args` lacks when standard input is a terminal.
pub async fn run(db: &Db, args: Args, output: &mut impl Write) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(username) => username,
        None if interactive => prompt_line("Username: ")?,
        None => bail!("no terminal to ask on: give --username and --password"),
    };
    let password = match args.password {
        Some(password) => password,
        None if interactive => prompt_new_password()?,
        None => bail!("no terminal to ask on: give --password"),
    };
    let mut new_user = NewUser::new(username.trim());
    new_user.email = args.email;
    new_user.is_superuser = true;
    new_user
        .validate()
        .with_context(|| format!("invalid user `{}`", new_user.username))?;
    if db.user_by_username(&new_user.username).await?.is_some() {
        bail!("a user named `{}` already exists", new_user.username);
    }
    new_user.password_hash = Some(PasswordHash::hash(&password).context("invalid password")?);
    let user = db
        .insert_user(&new_user.into_user())
        .await
        .context("could not create the user")?;
    writeln!(
        output,
        "created superuser `{}` ({})",
        user.username, user.id
    )?;
    Ok(())
}

fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn prompt_new_password() -> anyhow::Result<String> {
    let password =
        rpassword::prompt_password("Password: ").context("could not read the password")?;
    let again =
        rpassword::prompt_password("Password (again): ").context("could not read the password")?;
    if password != again {
        bail!("the two passwords differ");
    }
    Ok(password)
}

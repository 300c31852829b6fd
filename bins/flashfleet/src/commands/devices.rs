//! `flashfleet devices import`: devices, their SSH credentials (stored encrypted) and their
//! `openwrt-ssh` connections from a CSV or JSON list.
//!
//! Each row is imported on its own: a bad row is reported with its line and the others go on.
//! Importing the same list again changes nothing: a device is found by its MAC address in its
//! organization and updated, and the credentials this command created for it are updated
//! rather than created again. Passwords and keys are never printed.

mod rows;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use flashfleet_db::Db;
use flashfleet_engine::Engine;
use flashfleet_models::credentials::{CredentialsSecret, SecretText};
use flashfleet_models::repository::{
    DeviceFilter, DeviceRepository as _, DirectoryRepository as _,
};
use flashfleet_models::{
    ConnectionType, Credentials, Device, DeviceId, MacAddress, NewCredentials, NewDevice,
    NewDeviceConnection, NewOrganization, Organization, PageRequest, Scope,
};
use secrecy::ExposeSecret as _;

use crate::commands::devices::rows::DeviceRow;
use crate::progress::Progress;
use crate::stack::Stack;

/// The mark this command leaves in the `details` of the credentials it creates, so that a
/// second import updates them instead of creating more (and never touches others).
const IMPORT_MARK: &str = "flashfleet_devices_import";

/// The `devices` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Imports devices with their SSH credentials from a CSV file (with a header line) or a
    /// JSON array of objects. Columns: id (optional UUID), name, mac_address, address (management IP or host),
    /// model, board_name, os, organization (slug), username (default root), password or
    /// key_file (a private key file, relative to the list's folder), port (default 22).
    /// A device with the same MAC address in the same organization is updated.
    Import(ImportArgs),
}

/// The options of `devices import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The device list.
    pub file: PathBuf,
    /// The organization (slug) of rows without an `organization` column.
    #[arg(long, value_name = "SLUG")]
    pub organization: Option<String>,
    /// The format of the list; by default its extension (.csv or .json).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Create organizations that do not exist yet (named after their slug) instead of
    /// refusing their rows.
    #[arg(long)]
    pub create_organizations: bool,
}

/// The format of a device list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// What importing one row did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Runs a `devices` subcommand.
pub async fn run(stack: &Stack, command: Command, output: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Command::Import(args) => import(stack, &args, output).await,
    }
}

async fn import(stack: &Stack, args: &ImportArgs, output: &mut impl Write) -> anyhow::Result<()> {
    let db = &stack.db;
    let format = match args.format {
        Some(format) => format,
        None => format_of(&args.file)?,
    };
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("could not read {}", args.file.display()))?;
    let rows = match format {
        Format::Csv => rows::read_csv(&text),
        Format::Json => rows::read_json(&text),
    }
    .with_context(|| format!("could not read the device list {}", args.file.display()))?;
    let base_directory = args
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut importer = Importer {
        db,
        engine: &stack.engine,
        default_organization: args.organization.clone(),
        create_organizations: args.create_organizations,
        base_directory,
        organizations: HashMap::new(),
        devices: HashMap::new(),
    };
    let mut progress = Progress::new(rows.len() as u64, "rows");
    let mut counts: HashMap<Option<Outcome>, usize> = HashMap::new();
    for (line, row) in rows {
        progress.advance(&format!("line {line}"));
        let result = match row {
            Ok(row) => importer.import(row).await,
            Err(error) => Err(error),
        };
        let report = match &result {
            Ok((outcome, device, organization)) => format!(
                "line {line}: {} {} ({}) in {}",
                match outcome {
                    Outcome::Created => "created",
                    Outcome::Updated => "updated",
                    Outcome::Unchanged => "unchanged",
                },
                device.name,
                device.mac_address,
                organization
            ),
            Err(error) => format!("line {line}: failed: {error}"),
        };
        progress.print(output, &report)?;
        *counts
            .entry(result.as_ref().ok().map(|(outcome, _, _)| *outcome))
            .or_default() += 1;
    }
    progress.finish();
    let count = |outcome| counts.get(&outcome).copied().unwrap_or_default();
    let failed = count(None);
    writeln!(
        output,
        "{} created, {} updated, {} unchanged, {failed} failed",
        count(Some(Outcome::Created)),
        count(Some(Outcome::Updated)),
        count(Some(Outcome::Unchanged)),
    )?;
    if failed > 0 {
        bail!("{failed} rows of {} failed", args.file.display());
    }
    Ok(())
}

fn format_of(file: &Path) -> anyhow::Result<Format> {
    match file
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Ok(Format::Csv),
        Some("json") => Ok(Format::Json),
        _ => bail!(
            "cannot tell the format of {} from its extension: give --format csv or --format json",
            file.display()
        ),
    }
}

/// Imports rows one by one, remembering the organizations and devices it has seen.
struct Importer<'a> {
    db: &'a Db,
    /// For its device hook: which image each device runs, from its OS identifier.
    engine: &'a Engine,
    default_organization: Option<String>,
    create_organizations: bool,
    base_directory: PathBuf,
    organizations: HashMap<String, Organization>,
    /// The devices of each organization loaded so far, by MAC address.
    devices: HashMap<String, HashMap<MacAddress, Device>>,
}

impl Importer<'_> {
    /// Imports one row: its outcome, the device and its organization's slug.
    async fn import(&mut self, row: DeviceRow) -> Result<(Outcome, Device, String), String> {
        let slug = self.organization_slug(&row)?;
        let organization = self.organization(&slug).await?;
        let mac_address: MacAddress = row
            .mac_address
            .parse()
            .map_err(|error| format!("{error}"))?;
        let secret = self.secret(&row)?;
        let username = row
            .username
            .clone()
            .filter(|username| !username.trim().is_empty())
            .unwrap_or_else(|| "root".to_owned());
        let port = row.port.unwrap_or(22);

        let existing = self
            .devices_of(&organization)
            .await?
            .get(&mac_address)
            .cloned();
        let (device_outcome, device) = match existing {
            Some(device) => self.update_device(device, &row).await?,
            None => (
                Outcome::Created,
                self.create_device(&organization, mac_address, &row).await?,
            ),
        };
        self.devices
            .entry(organization.slug.clone())
            .or_default()
            .insert(mac_address, device.clone());
        let credentials_outcome = self
            .save_credentials(&organization, &device, username, port, secret)
            .await?;
        let outcome = match (device_outcome, credentials_outcome) {
            (Outcome::Created, _) => Outcome::Created,
            (Outcome::Unchanged, Outcome::Unchanged) => Outcome::Unchanged,
            _ => Outcome::Updated,
        };
        if outcome != Outcome::Unchanged && !device.os.is_empty() && !device.model.is_empty() {
            // Upstream records which image a registered device runs from its OS identifier
            // (the `device_registered` hook); a failure leaves the device imported.
            if let Err(error) = self.engine.device_registered(device.id).await {
                tracing::warn!(device = %device.id, %error, "could not record which image the device runs");
            }
        }
        Ok((outcome, device, organization.slug))
    }

    fn organization_slug(&self, row: &DeviceRow) -> Result<String, String> {
        let row_slug = row
            .organization
            .as_deref()
            .map(str::trim)
            .filter(|slug| !slug.is_empty());
        match (row_slug, self.default_organization.as_deref()) {
            (Some(row_slug), Some(option)) if row_slug != option => Err(format!(
                "organization `{row_slug}` differs from --organization `{option}`"
            )),
            (Some(slug), _) | (None, Some(slug)) => Ok(slug.to_owned()),
            (None, None) => Err(
                "no organization: add an `organization` column or give --organization".to_owned(),
            ),
        }
    }

    async fn organization(&mut self, slug: &str) -> Result<Organization, String> {
        if let Some(organization) = self.organizations.get(slug) {
            return Ok(organization.clone());
        }
        let found = self
            .db
            .organization_by_slug(&Scope::All, slug)
            .await
            .map_err(|error| error.to_string())?;
        let organization = match found {
            Some(organization) => organization,
            None if self.create_organizations => {
                let new_organization = NewOrganization::new(slug, slug);
                new_organization
                    .validate()
                    .map_err(|error| format!("organization `{slug}`: {error}"))?;
                let organization = self
                    .db
                    .insert_organization(&new_organization.into_organization())
                    .await
                    .map_err(|error| format!("could not create organization `{slug}`: {error}"))?;
                tracing::info!(slug, "created an organization");
                organization
            }
            None => {
                return Err(format!(
                    "organization `{slug}` does not exist (give --create-organizations to create it)"
                ));
            }
        };
        self.organizations
            .insert(slug.to_owned(), organization.clone());
        Ok(organization)
    }

    async fn devices_of(
        &mut self,
        organization: &Organization,
    ) -> Result<&HashMap<MacAddress, Device>, String> {
        if !self.devices.contains_key(&organization.slug) {
            let scope = Scope::Organizations {
                ids: vec![organization.id],
                include_shared: false,
            };
            let page = self
                .db
                .list_devices(&scope, &DeviceFilter::default(), PageRequest::all())
                .await
                .map_err(|error| error.to_string())?;
            let devices = page
                .items
                .into_iter()
                .map(|device| (device.mac_address, device))
                .collect();
            self.devices.insert(organization.slug.clone(), devices);
        }
        self.devices
            .get(&organization.slug)
            .ok_or_else(|| "the organization's devices could not be loaded".to_owned())
    }

    async fn create_device(
        &self,
        organization: &Organization,
        mac_address: MacAddress,
        row: &DeviceRow,
    ) -> Result<Device, String> {
        let mut new_device = NewDevice::new(organization.id, row.name.trim(), mac_address);
        new_device.id = row.id.map(DeviceId);
        new_device.model = text(&row.model).unwrap_or_default();
        new_device.board_name = text(&row.board_name).unwrap_or_default();
        new_device.os = text(&row.os).unwrap_or_default();
        new_device.management_ip = text(&row.address);
        new_device.validate().map_err(|error| error.to_string())?;
        self.db
            .insert_device(&new_device.into_device())
            .await
            .map_err(|error| error.to_string())
    }

    /// Sets the fields the row gives; the others keep their value.
    async fn update_device(
        &self,
        device: Device,
        row: &DeviceRow,
    ) -> Result<(Outcome, Device), String> {
        let mut changed = device.clone();
        changed.name = row.name.trim().to_owned();
        if let Some(model) = text(&row.model) {
            changed.model = model;
        }
        if let Some(board_name) = text(&row.board_name) {
            changed.board_name = board_name;
        }
        if let Some(os) = text(&row.os) {
            changed.os = os;
        }
        if let Some(address) = text(&row.address) {
            changed.management_ip = Some(address);
        }
        if changed == device {
            return Ok((Outcome::Unchanged, device));
        }
        changed.validate().map_err(|error| error.to_string())?;
        let updated = self
            .db
            .update_device(&changed)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| "the device was deleted meanwhile".to_owned())?;
        Ok((Outcome::Updated, updated))
    }

    fn secret(&self, row: &DeviceRow) -> Result<CredentialsSecret, String> {
        match (&row.password, &row.key_file) {
            (Some(_), Some(_)) => Err("give a password or a key_file, not both".to_owned()),
            (None, None) => Err("no credentials: give a password or a key_file".to_owned()),
            (Some(password), None) => Ok(CredentialsSecret::Password(SecretText::new(
                password.expose_secret(),
            ))),
            (None, Some(key_file)) => {
                let path = self.base_directory.join(key_file);
                let key = std::fs::read_to_string(&path).map_err(|error| {
                    format!("could not read key_file {}: {error}", path.display())
                })?;
                Ok(CredentialsSecret::PrivateKey(SecretText::new(key)))
            }
        }
    }

    /// Creates the device's credentials and connection, or updates the credentials this
    /// command created for it before.
    async fn save_credentials(
        &self,
        organization: &Organization,
        device: &Device,
        username: String,
        port: u16,
        secret: CredentialsSecret,
    ) -> Result<Outcome, String> {
        let connections = self
            .db
            .connections(device.id)
            .await
            .map_err(|error| error.to_string())?;
        let imported = connections
            .into_iter()
            .map(|(_, credentials)| credentials)
            .find(|credentials| credentials.details.contains_key(IMPORT_MARK));
        if let Some(credentials) = imported {
            if credentials.username == username
                && credentials.port == port
                && credentials.secret == secret
            {
                return Ok(Outcome::Unchanged);
            }
            let changed = Credentials {
                username,
                port,
                secret,
                ..credentials
            };
            changed.validate().map_err(|error| error.to_string())?;
            self.db
                .update_credentials(&changed)
                .await
                .map_err(|error| error.to_string())?;
            return Ok(Outcome::Updated);
        }
        let mut new_credentials = NewCredentials::new(
            Some(organization.id),
            credentials_name(device),
            username,
            secret,
        );
        new_credentials.port = port;
        new_credentials.connection_type = ConnectionType::openwrt_ssh();
        new_credentials
            .details
            .insert(IMPORT_MARK.to_owned(), serde_json::Value::Bool(true));
        new_credentials
            .validate()
            .map_err(|error| error.to_string())?;
        let credentials = self
            .db
            .insert_credentials(&new_credentials.into_credentials())
            .await
            .map_err(|error| format!("could not store the credentials: {error}"))?;
        let connection =
            NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials);
        self.db
            .insert_connection(&connection)
            .await
            .map_err(|error| format!("could not attach the credentials: {error}"))?;
        Ok(Outcome::Created)
    }
}

/// The name of the credentials created for `device`: unique, and telling whose they are.
fn credentials_name(device: &Device) -> String {
    let suffix = device.id.to_string();
    format!(
        "ssh {} {}",
        device.mac_address,
        &suffix[..8.min(suffix.len())]
    )
}

/// A cell's trimmed text, `None` when empty.
fn text(cell: &Option<String>) -> Option<String> {
    cell.as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

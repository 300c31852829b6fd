//! `flashfleet image inspect`: what flashfleet reads from firmware files before accepting
//! them: the OpenWrt (fwtool) metadata, the image type the map resolves, and, for a given
//! device, OpenWrt's compatibility verdict.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use flashfleet_boards::{
    DeviceIdentity, ImageInspection, ImageMap, ImageMetadata, ResolvedType, SysupgradeOptions,
    TypeSource, Verdict, check_compatibility, image_type_from_file_name, inspect_file,
};
use serde::Serialize;

use crate::config::Config;
use crate::progress::Progress;

/// The `image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Reads firmware files: their OpenWrt metadata, the image type the image map resolves
    /// for them and, with --board or --model, whether OpenWrt would accept them on such a
    /// device.
    Inspect(InspectArgs),
}

/// The options of `image inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The firmware files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The device's board name (/tmp/sysinfo/board_name, such as tplink,archer-c7-v2), checked
    /// against the image's metadata.
    #[arg(long, value_name = "BOARD_NAME")]
    pub board: Option<String>,
    /// The device's model (/tmp/sysinfo/model, such as "TP-Link Archer C7 v2"), checked
    /// against the image map for images without metadata.
    #[arg(long)]
    pub model: Option<String>,
    /// The device's compat version (uci get system.@system[0].compat_version; default 1.0).
    #[arg(long)]
    pub compat_version: Option<String>,
    /// Print JSON (an array, one object per file) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What was found out about one file.
#[derive(Debug, Serialize)]
struct FileReport {
    file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_present: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<ImageMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_type: Option<ResolvedType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_type_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compatibility: Option<Compatibility>,
}

/// The verdict for the device of `--board`/`--model`.
#[derive(Debug, Serialize)]
struct Compatibility {
    #[serde(flatten)]
    verdict: Option<Verdict>,
    message: String,
}

/// Inspects every file; fails when a file could not be read.
pub fn run(config: &Config, args: &InspectArgs, output: &mut impl Write) -> anyhow::Result<()> {
    let image_map = config.image_map()?;
    let mut progress = Progress::new(args.files.len() as u64, "files");
    let mut reports = Vec::with_capacity(args.files.len());
    for file in &args.files {
        if args.files.len() > 1 {
            progress.advance(&format!("inspecting {}", file.display()));
        }
        let report = inspect(&image_map, args, file);
        if !args.json {
            progress.print(output, &render(&report))?;
        }
        reports.push(report);
    }
    progress.finish();
    if args.json {
        serde_json::to_writer_pretty(&mut *output, &reports)?;
        writeln!(output)?;
    }
    let failed = reports
        .iter()
        .filter(|report| report.error.is_some())
        .count();
    if failed > 0 {
        bail!("{failed} of {} files could not be inspected", reports.len());
    }
    Ok(())
}

fn inspect(image_map: &ImageMap, args: &InspectArgs, file: &Path) -> FileReport {
    let mut report = FileReport {
        file: file.to_path_buf(),
        error: None,
        size: None,
        signature_present: None,
        metadata: None,
        image_type: None,
        image_type_error: None,
        compatibility: None,
    };
    let inspection: ImageInspection = match inspect_file(file) {
        Ok(inspection) => inspection,
        Err(error) => {
            report.error = Some(error_chain(&error));
            return report;
        }
    };
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    report.size = Some(inspection.image_len);
    report.signature_present = Some(inspection.signature_present);
    let metadata = inspection.metadata;
    let image_type = match image_map.resolve_image_type(&file_name, metadata.as_ref()) {
        Ok(resolved) => {
            let image_type = resolved.image_type.clone();
            report.image_type = Some(resolved);
            image_type
        }
        Err(error) => {
            report.image_type_error = Some(error.to_string());
            image_type_from_file_name(&file_name).to_owned()
        }
    };
    report.compatibility = compatibility(image_map, args, &image_type, metadata.as_ref());
    report.metadata = metadata;
    report
}

fn compatibility(
    image_map: &ImageMap,
    args: &InspectArgs,
    image_type: &str,
    metadata: Option<&ImageMetadata>,
) -> Option<Compatibility> {
    if args.board.is_none() && args.model.is_none() {
        return None;
    }
    if metadata.is_some() && args.board.is_none() {
        return Some(Compatibility {
            verdict: None,
            message:
                "the image has metadata, which OpenWrt checks against the board name: give --board"
                    .to_owned(),
        });
    }
    if metadata.is_none() && args.model.is_none() {
        return Some(Compatibility {
            verdict: None,
            message:
                "the image has no metadata; only the image map can tell, by model: give --model"
                    .to_owned(),
        });
    }
    let device = DeviceIdentity {
        board_name: args.board.as_deref().unwrap_or_default(),
        model: args.model.as_deref().unwrap_or_default(),
        compat_version: args.compat_version.as_deref(),
    };
    let verdict = check_compatibility(
        image_map,
        image_type,
        metadata,
        &device,
        SysupgradeOptions::default(),
    );
    Some(Compatibility {
        message: verdict.to_string(),
        verdict: Some(verdict),
    })
}

fn render(report: &FileReport) -> String {
    let mut lines = vec![report.file.display().to_string()];
    if let Some(error) = &report.error {
        lines.push(format!("  error: {error}"));
        return lines.join("\n");
    }
    if let Some(size) = report.size {
        lines.push(format!("  size: {size} bytes"));
    }
    match &report.metadata {
        Some(metadata) => {
            let version = &metadata.version;
            let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".to_owned());
            lines.push(format!(
                "  metadata: {} {} {} (target {}, board {}), compat_version {}",
                field(&version.dist),
                field(&version.version),
                field(&version.revision),
                field(&version.target),
                field(&version.board),
                metadata.compat_version_or_default()
            ));
            lines.push(format!(
                "  {}: {}",
                metadata.active_device_list_key(),
                metadata
                    .active_supported_devices()
                    .map_or_else(|| "(missing)".to_owned(), |devices| devices.join(", "))
            ));
        }
        None => lines.push("  metadata: none".to_owned()),
    }
    if report.signature_present == Some(true) {
        lines.push("  signature: present".to_owned());
    }
    match (&report.image_type, &report.image_type_error) {
        (Some(resolved), _) => {
            let source = match resolved.source {
                TypeSource::ImageMap => "from the image map; boards are device models",
                _ => "from the image metadata; boards are board names",
            };
            lines.push(format!(
                "  image type: {} \"{}\" ({source})",
                resolved.image_type, resolved.label
            ));
            lines.push(format!("  boards: {}", resolved.boards.join(", ")));
        }
        (None, Some(error)) => lines.push(format!("  image type: unknown: {error}")),
        (None, None) => {}
    }
    if let Some(compatibility) = &report.compatibility {
        lines.push(format!("  compatibility: {}", compatibility.message));
    }
    lines.join("\n")
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

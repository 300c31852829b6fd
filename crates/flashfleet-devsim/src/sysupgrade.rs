//! `/sbin/sysupgrade` as OpenWrt 23.05/24.10 runs it: option parsing, the image check of
//! `fwtool_check_image` (via [`flashfleet_boards::check_metadata`]), the messages and exit codes,
//! and the decision to flash.
//!
//! Platform checks (magic numbers) and signatures are not simulated: an image is valid when its
//! metadata fits the device. Without metadata the image is refused unless `-F` is given, as on
//! the targets that set `REQUIRE_IMAGE_METADATA=1`.

use flashfleet_boards::{
    DeviceIdentity, IncompatibleReason, SysupgradeOptions, Verdict, check_metadata,
};

use crate::commands::{Output, Status};
use crate::config::Release;
use crate::device::{DeviceState, FlashPlan};

/// The release a device reports after flashing an image without metadata (with `-F`): the
/// simulator cannot tell what such an image holds.
pub(crate) const UNKNOWN: &str = "unknown";

#[derive(Debug, Default)]
struct Options {
    verbosity: i32,
    keep_config: bool,
    force: bool,
    test: bool,
    ignore_minor_compat_version: bool,
    help: bool,
    image: Option<String>,
}

const USAGE: &str = "\
Usage: /sbin/sysupgrade [<upgrade-option>...] <image file or URL>
       /sbin/sysupgrade [-q] [-i] [-c] [-u] [-o] [-k] [-P] <backup-command> <file>

upgrade-option:
\t-f <config>  restore configuration from .tar.gz (file or url)
\t-i           interactive mode
\t-c           attempt to preserve all changed files in /etc/
\t-o           attempt to preserve all changed files in /, except those
\t             from packages but including changed confs.
\t-u           skip from backup files that are equal to those in /rom
\t-n           do not save configuration over reflash
\t-p           do not attempt to restore the partition table after flash.
\t-k           include in backup a list of current installed packages at
\t             /etc/backup/installed_packages.txt
\t-T | --test
\t             Verify image and config .tar.gz but do not actually flash.
\t-F | --force
\t             Flash image even if image checks fail, this is dangerous!
\t--ignore-minor-compat-version
\t             Flash image even if the minor compat version is incompatible.
\t-q           less verbose
\t-v           more verbose
\t-h | --help  display this help
";

/// Runs `sysupgrade` with `arguments` (without the command name) on `device`.
pub(crate) fn run(device: &DeviceState, arguments: &[String]) -> Output {
    let mut output = Output::default();
    let options = match parse(arguments) {
        Ok(options) => options,
        Err(option) => {
            output.stderr(&format!("Invalid option: {option}\n"));
            output.status = Status::Exit(1);
            return output;
        }
    };
    if options.help {
        output.stderr(USAGE);
        output.status = Status::Exit(0);
        return output;
    }
    let Some(image) = options.image.as_deref() else {
        output.stderr(USAGE);
        output.status = Status::Exit(1);
        return output;
    };
    let verbose = |output: &mut Output, message: &str| {
        if options.verbosity >= 1 {
            let date = chrono::Utc::now().format("%a %b %e %H:%M:%S UTC %Y");
            output.stderr(&format!("{date} upgrade: {message}\n"));
        }
    };

    let path = if image.starts_with('/') {
        image.to_owned()
    } else {
        format!("/root/{image}")
    };
    let Some(upload) = device.uploads.get(&path) else {
        output.stderr("Image file not found.\n");
        output.status = Status::Exit(1);
        return output;
    };

    let mut valid = true;
    let mut messages = Vec::new();
    let metadata = match upload.metadata() {
        Ok(Some(metadata)) => Some(metadata),
        Ok(None) => {
            messages.push("Image metadata not present".to_owned());
            if !options.force {
                messages.push(
                    "Use sysupgrade -F to override this check when downgrading or flashing to \
                     vendor firmware"
                        .to_owned(),
                );
            }
            valid = false;
            None
        }
        Err(_) => {
            messages.push("Invalid image metadata".to_owned());
            valid = false;
            None
        }
    };
    if let Some(metadata) = metadata {
        let identity = DeviceIdentity {
            board_name: &device.board_name,
            model: &device.model,
            compat_version: device.compat_version.as_deref(),
        };
        let sysupgrade_options = SysupgradeOptions {
            keep_config: options.keep_config,
            ignore_minor_compat_version: options.ignore_minor_compat_version,
        };
        let device_compat = device
            .compat_version
            .as_deref()
            .filter(|version| !version.is_empty())
            .unwrap_or("1.0");
        match check_metadata(metadata, &identity, sysupgrade_options) {
            Verdict::Compatible => {}
            Verdict::CompatibleWithoutKeepingConfig {
                image_compat_version,
                compat_message,
                ..
            } => {
                valid = false;
                messages.push(format!(
                    "The device is supported, but the config is incompatible to the new image \
                     ({device_compat}->{image_compat_version}). Please upgrade without keeping \
                     config (sysupgrade -n)."
                ));
                messages.extend(compat_message.filter(|message| !message.is_empty()));
            }
            Verdict::Incompatible { reason } => {
                valid = false;
                match reason {
                    IncompatibleReason::BoardNotSupported {
                        board_name,
                        supported_devices,
                    } => {
                        messages.push(format!("Device {board_name} not supported by this image"));
                        let mut list = "Supported devices:".to_owned();
                        for supported in supported_devices {
                            list.push(' ');
                            list.push_str(&supported);
                        }
                        messages.push(list);
                    }
                    IncompatibleReason::MajorCompatVersionDiffers {
                        image_compat_version,
                        compat_message,
                        ..
                    } => {
                        messages.push(format!(
                            "The device is supported, but this image is incompatible for \
                             sysupgrade based on the image version \
                             ({device_compat}->{image_compat_version})."
                        ));
                        messages.extend(compat_message.filter(|message| !message.is_empty()));
                    }
                    // `json_select` of the missing list fails silently in fwtool.sh.
                    _ => {}
                }
            }
            // `check_metadata` never answers `Unknown`; treat it as a failed check anyway.
            _ => valid = false,
        }
    }
    for message in &messages {
        verbose(&mut output, message);
    }
    if !valid {
        if options.force {
            output.stderr("Image check failed but --force given - will update anyway!\n");
        } else {
            output.stderr("Image check failed.\n");
            output.status = Status::Exit(1);
            return output;
        }
    }
    if options.keep_config && !options.test {
        verbose(&mut output, "Saving config files...");
    }
    if options.test {
        output.status = Status::Exit(0);
        return output;
    }
    verbose(
        &mut output,
        "Commencing upgrade. Closing all shell sessions.",
    );

    let image_version = metadata.map(|metadata| &metadata.version);
    let current = &device.release;
    let release = Release {
        distribution: image_version
            .and_then(|version| version.dist.clone())
            .unwrap_or_else(|| current.distribution.clone()),
        version: image_version
            .and_then(|version| version.version.clone())
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        revision: image_version
            .and_then(|version| version.revision.clone())
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        target: image_version
            .and_then(|version| version.target.clone())
            .unwrap_or_else(|| current.target.clone()),
        arch: current.arch.clone(),
    };
    let plan = FlashPlan {
        release,
        keep_config: options.keep_config,
        image_compat_version: metadata
            .map(|metadata| metadata.compat_version_or_default().to_owned()),
    };
    output.status = if device.faults.sysupgrade_hangs {
        Status::Hang
    } else {
        Status::Flash(plan)
    };
    output
}

/// Parses the options as `sysupgrade`'s `while [ -n "$1" ]` loop does: one option per word,
/// the first other word is the image.
fn parse(arguments: &[String]) -> Result<Options, String> {
    let mut options = Options {
        verbosity: 1,
        keep_config: true,
        ..Options::default()
    };
    let mut arguments = arguments.iter();
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "-v" => options.verbosity += 1,
            "-q" => options.verbosity -= 1,
            "-n" => options.keep_config = false,
            "-F" | "--force" => options.force = true,
            "-T" | "--test" => options.test = true,
            "--ignore-minor-compat-version" => options.ignore_minor_compat_version = true,
            "-h" | "--help" => options.help = true,
            // Accepted; what they change (backup contents, partitions, provisioning) is not
            // simulated.
            "-i" | "-c" | "-o" | "-u" | "-p" | "-k" | "-s" | "-P" | "--no-provisioning" => {}
            "-f" => {
                arguments.next();
            }
            "-b" | "-r" | "-l" => return Err(format!("{argument} (backups are not simulated)")),
            other if other.starts_with('-') && other.len() > 1 => return Err(other.to_owned()),
            image => {
                options.image = Some(image.to_owned());
                break;
            }
        }
    }
    Ok(options)
}

//! The commands the OpenWrt upgrader sends (upstream's, character for character, where upstream
//! has one) and the parsers of what the device answers.

use std::fmt::Write as _;
use std::time::Duration;

use crate::context::DeviceRelease;

/// Reads the device's UUID from openwisp-config's configuration.
pub(crate) const READ_UUID: &str = "uci get openwisp.http.uuid";
/// Removes the opkg package lists from `/tmp` (RAM) to free memory.
pub(crate) const REMOVE_OPKG_LISTS: &str = "rm -rf /tmp/opkg-lists/";
/// Drops the kernel's page cache.
pub(crate) const DROP_CACHES: &str = "sync && echo 3 > /proc/sys/vm/drop_caches";
/// The available memory line of `/proc/meminfo`.
pub(crate) const MEM_AVAILABLE: &str = "cat /proc/meminfo | grep MemAvailable";
/// The free memory line, for kernels without `MemAvailable`.
pub(crate) const MEM_FREE: &str = "cat /proc/meminfo | grep MemFree";
/// Takes the radios down to free memory.
pub(crate) const WIFI_DOWN: &str = "test -f /sbin/wifi && /sbin/wifi down";
/// Brings the radios up again.
pub(crate) const WIFI_UP: &str = "test -f /sbin/wifi && /sbin/wifi up";
/// Removes openwisp-config's persistent configuration checksum (openwisp-config >= 0.6), so the
/// device downloads its configuration again after the flash.
pub(crate) const REMOVE_CONFIG_CHECKSUM: &str = "rm /etc/openwisp/checksum 2> /dev/null";
/// The board name the metadata check of `sysupgrade` uses.
pub(crate) const READ_BOARD_NAME: &str = "cat /tmp/sysinfo/board_name";
/// The model the image map lists.
pub(crate) const READ_MODEL: &str = "cat /tmp/sysinfo/model";
/// The device's configuration compat version (`1.0` when unset).
pub(crate) const READ_COMPAT_VERSION: &str = "uci -q get system.@system[0].compat_version";
/// The release file.
pub(crate) const READ_RELEASE: &str = "cat /etc/openwrt_release";
/// The release as procd reports it, when the release file cannot be read.
pub(crate) const UBUS_SYSTEM_BOARD: &str = "ubus call system board";
/// The kernel's boot id: a random UUID, new at every boot, so a device that answers with the
/// same one has not rebooted.
pub(crate) const READ_BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";
/// The process list of OpenWrt's busybox `ps` (`PID USER VSZ STAT COMMAND`), 132 columns wide
/// (`w`): whether a flash is under way.
pub(crate) const PROCESS_LIST: &str = "ps w";

/// The boot id from what [`READ_BOOT_ID`] printed: one word, or `None`.
pub(crate) fn parse_boot_id(output: &str) -> Option<String> {
    let boot_id = output.trim();
    let one_word = !boot_id.is_empty()
        && boot_id.len() <= 64
        && !boot_id.contains(|c: char| c.is_whitespace() || c.is_control());
    one_word.then(|| boot_id.to_owned())
}

/// The lines of a process list ([`PROCESS_LIST`]) whose program is one of `programs` (file
/// names such as `sysupgrade`; a program run by a shell, `/bin/sh /sbin/sysupgrade ...`, counts
/// as the script it runs). `None` when the text is no process list (no header naming the
/// `COMMAND` column), so nothing can be concluded from it.
pub(crate) fn processes_running(list: &str, programs: &[&str]) -> Option<Vec<String>> {
    let mut lines = list.lines();
    let header = lines.find(|line| !line.trim().is_empty())?;
    let command_column = header
        .split_whitespace()
        .position(|column| matches!(column, "COMMAND" | "CMD"))?;
    let file_name = |word: &str| word.rsplit('/').next().unwrap_or(word).to_owned();
    let found = lines
        .filter(|line| {
            let mut words = line.split_whitespace().skip(command_column);
            let Some(first) = words.next() else {
                return false;
            };
            let mut program = file_name(first);
            if matches!(program.as_str(), "sh" | "ash" | "bash" | "dash")
                && let Some(script) = words.find(|word| !word.starts_with('-'))
            {
                program = file_name(script);
            }
            programs.iter().any(|name| *name == program)
        })
        .map(|line| line.trim().to_owned())
        .collect();
    Some(found)
}

/// `test -f <path>`.
pub(crate) fn test_file(path: &str) -> String {
    format!("test -f {}", shell_word(path))
}

/// `cat <path>`.
pub(crate) fn cat_file(path: &str) -> String {
    format!("cat {}", shell_word(path))
}

/// `mkdir -p <directory of path>`.
pub(crate) fn make_parent_directory(path: &str) -> String {
    let directory = match path.rfind('/') {
        Some(0) => "/",
        Some(slash) => &path[..slash],
        None => ".",
    };
    format!("mkdir -p {}", shell_word(directory))
}

/// `echo <checksum> > <path>`.
pub(crate) fn write_checksum(checksum: &str, path: &str) -> String {
    format!("echo {} > {}", shell_word(checksum), shell_word(path))
}

/// Starts or stops one init script when it exists.
pub(crate) fn service(service: &str, action: &str) -> String {
    let init_script = format!("/etc/init.d/{service}");
    let init_script = shell_word(&init_script);
    format!("test -f {init_script} && {init_script} {action}")
}

/// `<sysupgrade> --test [-n] [-F] <path>`: upstream's image test, with the flags that change
/// `sysupgrade`'s verdict (`-n`: the configuration is not kept, so a configuration-incompatible
/// image is accepted; `-F`: images failing their checks are accepted) so the test answers for
/// the flash that follows. With default options this is upstream's exact command.
pub(crate) fn test_image(sysupgrade: &str, flags: &[String], path: &str) -> String {
    let mut command = format!("{sysupgrade} --test");
    for flag in flags
        .iter()
        .filter(|flag| matches!(flag.as_str(), "-n" | "-F"))
    {
        command.push(' ');
        command.push_str(flag);
    }
    command.push(' ');
    command.push_str(&shell_word(path));
    command
}

/// The flash command from its template (see
/// [`OpenWrtSettings::upgrade_command`](crate::openwrt::OpenWrtSettings::upgrade_command)).
///
/// Flags are joined with spaces, so options that are all false leave two spaces between `-v`
/// and the path, exactly as upstream.
pub(crate) fn upgrade(template: &str, sysupgrade: &str, flags: &[String], path: &str) -> String {
    template
        .replace("{sysupgrade}", sysupgrade)
        .replace("{flags}", &flags.join(" "))
        .replace("{path}", &shell_word(path))
}

/// `word` as one shell word: unchanged when it holds only characters the shell treats
/// literally (as every path and checksum upstream sends does), single-quoted otherwise, so an
/// image file name cannot inject commands.
pub(crate) fn shell_word(word: &str) -> String {
    let literal = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | ':' | '@' | '%')
        });
    if literal {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The UUID of openwisp-config's output, normalised as upstream does with Python's
/// `uuid.UUID`: hyphenated lowercase when it parses (dashless, uppercase or braced forms are
/// accepted), the trimmed text otherwise.
pub(crate) fn normalize_uuid(output: &str) -> String {
    let trimmed = output.trim();
    match uuid::Uuid::parse_str(trimmed) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => trimmed.to_owned(),
    }
}

/// Bytes from a `/proc/meminfo` line such as `MemAvailable:   12345 kB` (the second token, in
/// KiB, times 1024).
pub(crate) fn parse_meminfo_bytes(output: &str) -> Option<u64> {
    output
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

/// Upstream's MiB figure: bytes / 2^20 rounded to two decimals, printed as Python prints a
/// float (`30.0`, `12.35`), and `0` for zero.
pub(crate) fn format_mib(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    let mib = (bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0;
    if mib.fract() == 0.0 {
        format!("{mib:.1}")
    } else {
        format!("{mib}")
    }
}

/// A delay in seconds as the log lines print it: `180`, `0.5`.
pub(crate) fn format_seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        let mut text = String::new();
        let _ = write!(text, "{}", duration.as_secs_f64());
        text
    }
}

/// The release from `/etc/openwrt_release` (shell variables such as
/// `DISTRIB_RELEASE='23.05.3'`); `None` when it names no release. The board name is not in
/// that file and stays empty.
pub(crate) fn parse_openwrt_release(text: &str) -> Option<DeviceRelease> {
    let mut release = DeviceRelease::default();
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote_shell_value(value.trim());
        match name.trim() {
            "DISTRIB_ID" => release.distribution = value,
            "DISTRIB_RELEASE" => release.version = value,
            "DISTRIB_REVISION" => release.revision = value,
            "DISTRIB_TARGET" => release.target = value,
            _ => {}
        }
    }
    (!release.version.is_empty() || !release.revision.is_empty()).then_some(release)
}

/// The release and board name from `ubus call system board`; `None` when the JSON has no
/// `release` object.
pub(crate) fn parse_ubus_board(text: &str) -> Option<DeviceRelease> {
    let board: serde_json::Value = serde_json::from_str(text).ok()?;
    let release = board.get("release")?.as_object()?;
    let field = |object: &serde_json::Map<String, serde_json::Value>, key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(DeviceRelease {
        distribution: field(release, "distribution"),
        version: field(release, "version"),
        revision: field(release, "revision"),
        target: field(release, "target"),
        board_name: board
            .get("board_name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A shell assignment's value without its quotes: `'x'`, `"x"` or `x`.
fn unquote_shell_value(value: &str) -> String {
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|flag| (*flag).to_owned()).collect()
    }

    #[test]
    fn upgrade_commands_match_upstreams_examples() {
        let template = "{sysupgrade} -v {flags} {path}";
        assert_eq!(
            upgrade(template, "/sbin/sysupgrade", &flags(&["-c"]), "/tmp/x.bin"),
            "/sbin/sysupgrade -v -c /tmp/x.bin"
        );
        assert_eq!(
            upgrade(
                template,
                "/sbin/sysupgrade",
                &flags(&["-c", "-F"]),
                "/tmp/x.bin"
            ),
            "/sbin/sysupgrade -v -c -F /tmp/x.bin"
        );
        assert_eq!(
            upgrade(template, "/sbin/sysupgrade", &[], "/tmp/x.bin"),
            "/sbin/sysupgrade -v  /tmp/x.bin"
        );
        assert_eq!(
            upgrade(
                "upgrade_firmware.sh --keep-config",
                "/sbin/sysupgrade",
                &flags(&["-c"]),
                "/tmp/firmware.img"
            ),
            "upgrade_firmware.sh --keep-config"
        );
    }

    #[test]
    fn the_image_test_carries_only_the_flags_that_change_its_verdict() {
        assert_eq!(
            test_image("/sbin/sysupgrade", &flags(&["-c"]), "/tmp/x.bin"),
            "/sbin/sysupgrade --test /tmp/x.bin"
        );
        assert_eq!(
            test_image(
                "/sbin/sysupgrade",
                &flags(&["-n", "-k", "-F"]),
                "/tmp/x.bin"
            ),
            "/sbin/sysupgrade --test -n -F /tmp/x.bin"
        );
    }

    #[test]
    fn bookkeeping_commands_are_upstreams() {
        let checksum_file = "/etc/openwisp/firmware_checksum";
        assert_eq!(
            test_file(checksum_file),
            "test -f /etc/openwisp/firmware_checksum"
        );
        assert_eq!(
            cat_file(checksum_file),
            "cat /etc/openwisp/firmware_checksum"
        );
        assert_eq!(
            make_parent_directory(checksum_file),
            "mkdir -p /etc/openwisp"
        );
        assert_eq!(make_parent_directory("/marker"), "mkdir -p /");
        assert_eq!(
            write_checksum("ab12", checksum_file),
            "echo ab12 > /etc/openwisp/firmware_checksum"
        );
        assert_eq!(
            service("uhttpd", "stop"),
            "test -f /etc/init.d/uhttpd && /etc/init.d/uhttpd stop"
        );
    }

    #[test]
    fn unusual_file_names_are_quoted_so_they_cannot_inject_commands() {
        assert_eq!(
            shell_word("/tmp/openwrt-23.05.3-x86-64.bin"),
            "/tmp/openwrt-23.05.3-x86-64.bin"
        );
        assert_eq!(shell_word("/tmp/a b;reboot"), "'/tmp/a b;reboot'");
        assert_eq!(shell_word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn uuids_are_normalised_like_pythons_uuid_parser() {
        let hyphenated = "5d8a3c4e-1f2b-4a6c-9d0e-7f8a9b0c1d2e";
        assert_eq!(normalize_uuid(&format!("{hyphenated}\n")), hyphenated);
        assert_eq!(
            normalize_uuid("5D8A3C4E1F2B4A6C9D0E7F8A9B0C1D2E"),
            hyphenated
        );
        assert_eq!(normalize_uuid(" not-a-uuid \n"), "not-a-uuid");
    }

    #[test]
    fn meminfo_lines_give_bytes() {
        assert_eq!(
            parse_meminfo_bytes("MemAvailable:     60812 kB\n"),
            Some(60812 * 1024)
        );
        assert_eq!(parse_meminfo_bytes("MemFree: x kB"), None);
        assert_eq!(parse_meminfo_bytes(""), None);
    }

    #[test]
    fn mib_figures_print_like_upstream() {
        assert_eq!(format_mib(0), "0");
        assert_eq!(format_mib(30 * 1_048_576), "30.0");
        assert_eq!(format_mib(1_048_576 + 524_288), "1.5");
        assert_eq!(format_mib(12_944_671), "12.35");
        assert_eq!(format_seconds(Duration::from_secs(180)), "180");
        assert_eq!(format_seconds(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn boot_ids_are_one_word() {
        assert_eq!(
            parse_boot_id("4b1c5b2e-8f0a-4a4e-9c51-2f0c3d9e7a10\n").as_deref(),
            Some("4b1c5b2e-8f0a-4a4e-9c51-2f0c3d9e7a10")
        );
        assert_eq!(parse_boot_id(""), None);
        assert_eq!(
            parse_boot_id("cat: can't open '/proc/sys/kernel/random/boot_id': No such file"),
            None
        );
    }

    #[test]
    fn a_running_sysupgrade_is_found_in_busybox_ps() {
        let programs = ["sysupgrade", "upgraded"];
        let running = "  PID USER       VSZ STAT COMMAND\n\
                       \x20   1 root      1652 S    /sbin/procd\n\
                       \x20 947 root      1148 S    /usr/sbin/dropbear -F -P /var/run/dropbear.1.pid -p 22\n\
                       \x202014 root      1236 S    /bin/sh /sbin/sysupgrade -v -c /tmp/x.bin\n\
                       \x202020 root      1188 R    ps w\n";
        assert_eq!(
            processes_running(running, &programs).unwrap(),
            ["2014 root      1236 S    /bin/sh /sbin/sysupgrade -v -c /tmp/x.bin"]
        );
        let stage2 =
            "  PID USER       VSZ STAT COMMAND\n    1 root      1000 S    /sbin/upgraded\n";
        assert_eq!(processes_running(stage2, &programs).unwrap().len(), 1);
        // Arguments naming sysupgrade do not make a process a sysupgrade.
        let idle = "  PID USER       VSZ STAT COMMAND\n\
                    \x20   1 root      1652 S    /sbin/procd\n\
                    \x20 300 root      1000 S    logread -f -e sysupgrade\n\
                    \x20 301 root      1000 S    /bin/sh /tmp/sysupgrade.img\n";
        assert_eq!(
            processes_running(idle, &programs).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            processes_running("/bin/ash: ps: not found", &programs),
            None
        );
        assert_eq!(processes_running("", &programs), None);
    }

    #[test]
    fn release_files_and_ubus_answers_are_parsed() {
        let release = parse_openwrt_release(
            "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.0'\nDISTRIB_REVISION='r23497-6637af95aa'\n\
             DISTRIB_TARGET='ramips/mt7621'\nDISTRIB_ARCH='mipsel_24kc'\n\
             DISTRIB_DESCRIPTION='OpenWrt 23.05.0 r23497-6637af95aa'\nDISTRIB_TAINTS=''\n",
        )
        .unwrap();
        assert_eq!(
            release,
            DeviceRelease {
                distribution: "OpenWrt".to_owned(),
                version: "23.05.0".to_owned(),
                revision: "r23497-6637af95aa".to_owned(),
                target: "ramips/mt7621".to_owned(),
                board_name: String::new(),
            }
        );
        assert_eq!(
            parse_openwrt_release("DISTRIB_RELEASE=\"19.07.10\"\n")
                .unwrap()
                .version,
            "19.07.10"
        );
        assert!(parse_openwrt_release("cat: can't open '/etc/openwrt_release'").is_none());

        let ubus = "{\n\t\"kernel\": \"5.15.150\",\n\t\"board_name\": \"glinet,gl-mt300n-v2\",\n\
                    \t\"release\": {\n\t\t\"distribution\": \"OpenWrt\",\n\t\t\"version\": \"23.05.3\",\n\
                    \t\t\"revision\": \"r23809-234f1a2efa\",\n\t\t\"target\": \"ramips/mt76x8\"\n\t}\n}";
        let release = parse_ubus_board(ubus).unwrap();
        assert_eq!(release.version, "23.05.3");
        assert_eq!(release.board_name, "glinet,gl-mt300n-v2");
        assert!(parse_ubus_board("Command failed: Not found").is_none());
    }
}

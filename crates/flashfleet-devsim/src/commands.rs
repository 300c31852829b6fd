//! The commands a simulated device runs: what an OpenWrt device answers to every command the
//! upgrader sends (spec section 1.2), plus the usual small tools around them.
//!
//! A command line is parsed by [`crate::shell`], then each simple command runs as a builtin
//! against the device state. Unknown commands fail as in `ash`: `/bin/ash: <name>: not found`,
//! exit 127.

use crate::device::{DeviceState, FlashPlan, Process, pid_of_command};
use crate::shell::{self, Connector, Pipeline, RedirectionTarget, Script, SimpleCommand};
use crate::sysupgrade;

/// What an exec request turns into.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// `scp -t <target>`: the SCP sink.
    ScpSink { target: String },
    /// `cat > <path>`: the channel's data is the file.
    CatUpload { path: String },
    /// Anything else.
    Script(Script),
    /// The line does not parse; the message follows `/bin/ash: `.
    SyntaxError(String),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Normal end with this exit status.
    Exit(u32),
    /// `sysupgrade` handed over to the flash: no exit status will ever come; the device cuts the
    /// session.
    Flash(FlashPlan),
    /// The command never ends.
    Hang,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) status: Status,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: Status::Exit(0),
        }
    }
}

impl Output {
    pub(crate) fn stdout(&mut self, text: &str) {
        self.stdout.extend_from_slice(text.as_bytes());
    }

    pub(crate) fn stderr(&mut self, text: &str) {
        self.stderr.extend_from_slice(text.as_bytes());
    }

    fn exit(status: u32) -> Output {
        Output {
            status: Status::Exit(status),
            ..Output::default()
        }
    }

    fn failure(status: u32, message: &str) -> Output {
        let mut output = Output::exit(status);
        output.stderr(message);
        output
    }

    fn exit_code(&self) -> Option<u32> {
        match self.status {
            Status::Exit(code) => Some(code),
            Status::Flash(_) | Status::Hang => None,
        }
    }
}

/// Classifies an exec request.
pub(crate) fn invocation(line: &str) -> Invocation {
    let script = match shell::parse(line) {
        Ok(script) => script,
        Err(message) => return Invocation::SyntaxError(message),
    };
    if script.rest.is_empty() && script.first.commands.len() == 1 {
        let command = &script.first.commands[0];
        let words: Vec<&str> = command.words.iter().map(String::as_str).collect();
        if let Some(target) = scp_sink_target(&words)
            && command.redirections.is_empty()
        {
            return Invocation::ScpSink { target };
        }
        if words == ["cat"]
            && let [redirection] = command.redirections.as_slice()
            && redirection.fd == 1
            && let RedirectionTarget::File {
                path,
                append: false,
            } = &redirection.target
        {
            return Invocation::CatUpload {
                path: absolute(path),
            };
        }
    }
    Invocation::Script(script)
}

/// `scp [-v] [-p] [-d] -t <target>` (flags may be combined: `-pt`), as libssh2 and OpenSSH send.
fn scp_sink_target(words: &[&str]) -> Option<String> {
    let (name, rest) = words.split_first()?;
    if !matches!(*name, "scp" | "/usr/bin/scp" | "/bin/scp") {
        return None;
    }
    let (target, flags) = rest.split_last()?;
    let mut sink = false;
    for flag in flags {
        let letters = flag.strip_prefix('-')?;
        if letters.is_empty() || !letters.chars().all(|c| "tpdvqr".contains(c)) {
            return None;
        }
        sink |= letters.contains('t');
    }
    sink.then(|| absolute(target))
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/root/{path}")
    }
}

/// Runs a parsed command line.
pub(crate) fn run(device: &mut DeviceState, script: &Script) -> Output {
    let mut total = run_pipeline(device, &script.first);
    for (connector, pipeline) in &script.rest {
        let Some(last) = total.exit_code() else {
            return total;
        };
        let run_it = match connector {
            Connector::And => last == 0,
            Connector::Or => last != 0,
            Connector::Then => true,
        };
        if run_it {
            let output = run_pipeline(device, pipeline);
            total.stdout.extend_from_slice(&output.stdout);
            total.stderr.extend_from_slice(&output.stderr);
            total.status = output.status;
        }
    }
    total
}

fn run_pipeline(device: &mut DeviceState, pipeline: &Pipeline) -> Output {
    let mut stdin: Option<Vec<u8>> = None;
    let mut stderr = Vec::new();
    let mut last = Output::default();
    for (position, command) in pipeline.commands.iter().enumerate() {
        let mut output = run_redirected(device, command, stdin.take());
        stderr.append(&mut output.stderr);
        if !matches!(output.status, Status::Exit(_)) {
            output.stderr = stderr;
            return output;
        }
        if position + 1 < pipeline.commands.len() {
            stdin = Some(std::mem::take(&mut output.stdout));
        }
        last = output;
    }
    last.stderr = stderr;
    last
}

/// Runs a simple command and applies its redirections.
fn run_redirected(
    device: &mut DeviceState,
    command: &SimpleCommand,
    stdin: Option<Vec<u8>>,
) -> Output {
    let mut output = run_simple(device, &command.words, stdin);
    for redirection in &command.redirections {
        let stream = match redirection.fd {
            1 => std::mem::take(&mut output.stdout),
            _ => std::mem::take(&mut output.stderr),
        };
        match &redirection.target {
            RedirectionTarget::Duplicate(1) => output.stdout.extend_from_slice(&stream),
            RedirectionTarget::Duplicate(_) => output.stderr.extend_from_slice(&stream),
            RedirectionTarget::File { path, append } => {
                let path = absolute(path);
                if let Err(message) = write_redirection(device, &path, &stream, *append) {
                    output.stderr(&format!("/bin/ash: can't create {path}: {message}\n"));
                    output.status = Status::Exit(1);
                }
            }
        }
    }
    output
}

fn write_redirection(
    device: &mut DeviceState,
    path: &str,
    bytes: &[u8],
    append: bool,
) -> Result<(), &'static str> {
    match path {
        "/dev/null" | "/proc/sys/vm/drop_caches" => Ok(()),
        _ if path.starts_with("/proc/")
            || path.starts_with("/sys/")
            || path.starts_with("/dev/") =>
        {
            Err("Permission denied")
        }
        _ if path.ends_with('/') || device.directory_exists(path) => Err("Is a directory"),
        _ => {
            device.write_file(path, &String::from_utf8_lossy(bytes), append);
            Ok(())
        }
    }
}

fn run_simple(device: &mut DeviceState, words: &[String], stdin: Option<Vec<u8>>) -> Output {
    let Some((name, arguments)) = words.split_first() else {
        return Output::exit(0);
    };
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    match name.as_str() {
        "true" | ":" | "sync" => Output::exit(0),
        "false" => Output::exit(1),
        "echo" => echo(&arguments),
        "uci" => uci(device, &arguments),
        "test" => test(device, &arguments),
        "[" => match arguments.split_last() {
            Some((&"]", arguments)) => test(device, arguments),
            _ => Output::failure(2, "[: missing ]\n"),
        },
        "cat" => cat(device, &arguments, stdin),
        "grep" => grep(&arguments, stdin),
        "rm" => rm(device, &arguments),
        "mkdir" => Output::exit(0),
        "sha256sum" => sha256sum(device, &arguments),
        "ubus" => ubus(device, &arguments),
        "sysupgrade" | "/sbin/sysupgrade" => {
            let arguments: Vec<String> = arguments
                .iter()
                .map(|&argument| argument.to_owned())
                .collect();
            let output = sysupgrade::run(device, &arguments);
            if matches!(output.status, Status::Flash(_) | Status::Hang) {
                // The script (`#!/bin/sh`) commenced the upgrade: it shows in `ps` until the
                // sessions are cut, or for good when it hangs.
                let pid = current_pid(device);
                device.sysupgrade.get_or_insert_with(|| Process {
                    pid,
                    command_line: format!("/bin/sh /sbin/sysupgrade {}", arguments.join(" ")),
                });
            }
            output
        }
        "ps" | "/bin/ps" => ps(device, name, &arguments),
        "wifi" | "/sbin/wifi" if device.has_wifi => wifi(device, &arguments),
        path if path.starts_with("/etc/init.d/") && device.file_exists(path) => {
            init_script(device, &path["/etc/init.d/".len()..], &arguments)
        }
        other => Output::failure(127, &format!("/bin/ash: {other}: not found\n")),
    }
}

/// The process id of the command being run (the last one the device received).
fn current_pid(device: &DeviceState) -> u32 {
    pid_of_command(device.commands.len().saturating_sub(1))
}

/// A resident process of an OpenWrt device, as `ps` lists it.
struct Resident {
    pid: u32,
    user: &'static str,
    /// Virtual memory size in KiB.
    vsz: u32,
    state: &'static str,
    command: &'static str,
    /// The init script whose `stop` ends it, for a service's daemon.
    service: Option<&'static str>,
}

/// The resident processes of an OpenWrt device.
const RESIDENT_PROCESSES: [Resident; 12] = [
    Resident {
        pid: 1,
        user: "root",
        vsz: 1652,
        state: "S",
        command: "/sbin/procd",
        service: None,
    },
    Resident {
        pid: 2,
        user: "root",
        vsz: 0,
        state: "SW",
        command: "[kthreadd]",
        service: None,
    },
    Resident {
        pid: 3,
        user: "root",
        vsz: 0,
        state: "IW<",
        command: "[rcu_gp]",
        service: None,
    },
    Resident {
        pid: 420,
        user: "root",
        vsz: 1128,
        state: "S",
        command: "/sbin/ubusd",
        service: None,
    },
    Resident {
        pid: 690,
        user: "root",
        vsz: 1224,
        state: "S",
        command: "/sbin/logd -S 64",
        service: Some("log"),
    },
    Resident {
        pid: 734,
        user: "root",
        vsz: 4452,
        state: "S",
        command: "/sbin/rpcd -t 30",
        service: Some("rpcd"),
    },
    Resident {
        pid: 947,
        user: "root",
        vsz: 1148,
        state: "S",
        command: "/usr/sbin/dropbear -F -P /var/run/dropbear.1.pid -p 22 -K 300 -T 3",
        service: None,
    },
    Resident {
        pid: 1089,
        user: "root",
        vsz: 5380,
        state: "S",
        command: "/sbin/netifd",
        service: None,
    },
    Resident {
        pid: 1150,
        user: "root",
        vsz: 3372,
        state: "S",
        command: "/usr/sbin/uhttpd -f -h /www -r OpenWrt -x /cgi-bin -u /ubus -t 60 -T 30 -k 20 -A 1 -n 3 -N 100 -R -p 0.0.0.0:80 -p [::]:80",
        service: Some("uhttpd"),
    },
    Resident {
        pid: 1404,
        user: "root",
        vsz: 1132,
        state: "S",
        command: "/usr/sbin/crond -f -c /etc/crontabs -l 5",
        service: Some("cron"),
    },
    Resident {
        pid: 1650,
        user: "dnsmasq",
        vsz: 1224,
        state: "S",
        command: "/usr/sbin/dnsmasq -C /var/etc/dnsmasq.conf.cfg01411c -k -x /var/run/dnsmasq/dnsmasq.cfg01411c.pid",
        service: Some("dnsmasq"),
    },
    Resident {
        pid: 1700,
        user: "root",
        vsz: 1160,
        state: "S",
        command: "/usr/sbin/odhcpd",
        service: Some("odhcpd"),
    },
];

/// Busybox `ps` as OpenWrt builds it (no `-o`, `-T` or BSD options): the header and one line
/// per process, `PID USER VSZ STAT COMMAND`, cut to 80 columns, 132 with `w`, uncut with `ww`
/// (the output is no terminal). Lists the resident daemons (a service's only while it is not
/// stopped), a `sysupgrade` that commenced an upgrade, and `ps` itself.
fn ps(device: &DeviceState, name: &str, arguments: &[&str]) -> Output {
    let mut wide = 0;
    for argument in arguments {
        let letters = argument.strip_prefix('-').unwrap_or(argument);
        match letters.chars().find(|&letter| letter != 'w') {
            None if !letters.is_empty() => wide += letters.len(),
            other => {
                let option = other.unwrap_or('-');
                return Output::failure(
                    1,
                    &format!("ps: invalid option -- '{option}'\nUsage: ps [-w]\n"),
                );
            }
        }
    }
    let width = match wide {
        0 => Some(80),
        1 => Some(132),
        _ => None,
    };
    let mut lines = vec!["  PID USER       VSZ STAT COMMAND".to_owned()];
    let mut line = |pid: u32, user: &str, vsz: u32, state: &str, command: &str| {
        let mut text = format!("{pid:>5} {user:<8} {vsz:>5} {state:<4} {command}");
        if let Some(width) = width
            && let Some((cut, _)) = text.char_indices().nth(width)
        {
            text.truncate(cut);
        }
        lines.push(text);
    };
    for process in RESIDENT_PROCESSES {
        let running = process.service.is_none_or(|service| {
            device.services.iter().any(|name| name == service)
                && !device.stopped_services.iter().any(|name| name == service)
        });
        if running {
            line(
                process.pid,
                process.user,
                process.vsz,
                process.state,
                process.command,
            );
        }
    }
    if let Some(sysupgrade) = &device.sysupgrade {
        line(sysupgrade.pid, "root", 1236, "S", &sysupgrade.command_line);
    }
    let own = std::iter::once(name)
        .chain(arguments.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    line(current_pid(device), "root", 1188, "R", &own);
    let mut output = Output::exit(0);
    for text in lines {
        output.stdout(&text);
        output.stdout("\n");
    }
    output
}

fn echo(arguments: &[&str]) -> Output {
    let (newline, arguments) = match arguments.split_first() {
        Some((&"-n", rest)) => (false, rest),
        _ => (true, arguments),
    };
    let mut output = Output::exit(0);
    output.stdout(&arguments.join(" "));
    if newline {
        output.stdout("\n");
    }
    output
}

fn uci(device: &DeviceState, arguments: &[&str]) -> Output {
    let (quiet, arguments) = match arguments.split_first() {
        Some((&"-q", rest)) => (true, rest),
        _ => (false, arguments),
    };
    let not_found = || {
        if quiet {
            Output::exit(1)
        } else {
            Output::failure(1, "uci: Entry not found\n")
        }
    };
    let value = match arguments {
        ["get", "openwisp.http.uuid"] => device.configured_uuid().map(|uuid| uuid.to_string()),
        ["get", "system.@system[0].compat_version"] => device.compat_version.clone(),
        ["get", "system.@system[0].hostname"] => Some("OpenWrt".to_owned()),
        ["get", _] => None,
        _ => {
            return Output::failure(
                1,
                "Usage: uci [<options>] <command> [<arguments>]\n(only `uci [-q] get` is simulated)\n",
            );
        }
    };
    match value {
        Some(value) => {
            let mut output = Output::exit(0);
            output.stdout(&format!("{value}\n"));
            output
        }
        None => not_found(),
    }
}

fn test(device: &DeviceState, arguments: &[&str]) -> Output {
    let verdict = match arguments {
        [] => false,
        ["!", rest @ ..] => {
            return Output::exit(u32::from(test(device, rest).exit_code() == Some(0)));
        }
        ["-f" | "-e" | "-r" | "-s", path] => device.file_exists(&absolute(path)),
        ["-x", path] => {
            let path = absolute(path);
            device.file_exists(&path)
                && (path.starts_with("/etc/init.d/")
                    || path.starts_with("/sbin/")
                    || path.starts_with("/bin/")
                    || path.starts_with("/usr/bin/"))
        }
        ["-d", path] => device.directory_exists(&absolute(path)),
        ["-n", text] => !text.is_empty(),
        ["-z", text] => text.is_empty(),
        [text] => !text.is_empty(),
        [left, "=" | "==", right] => left == right,
        [left, "!=", right] => left != right,
        _ => return Output::failure(2, "test: syntax not simulated\n"),
    };
    Output::exit(u32::from(!verdict))
}

fn cat(device: &DeviceState, arguments: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let mut output = Output::exit(0);
    if arguments.is_empty() {
        output.stdout = stdin.unwrap_or_default();
        return output;
    }
    for argument in arguments {
        let path = absolute(argument);
        match device.read_file(&path) {
            Some(content) => output.stdout(&content),
            None if device.uploads.contains_key(&path) => {
                output.stderr(&format!(
                    "cat: {path}: the simulator keeps no content of large uploads\n"
                ));
                output.status = Status::Exit(1);
            }
            None if device.directory_exists(&path) => {
                output.stderr("cat: read error: Is a directory\n");
                output.status = Status::Exit(1);
            }
            None => {
                output.stderr(&format!(
                    "cat: can't open '{argument}': No such file or directory\n"
                ));
                output.status = Status::Exit(1);
            }
        }
    }
    output
}

fn grep(arguments: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let [pattern] = arguments else {
        return Output::failure(
            2,
            "grep: only `grep PATTERN` on standard input is simulated\n",
        );
    };
    let input = String::from_utf8_lossy(stdin.as_deref().unwrap_or_default()).into_owned();
    let mut output = Output::exit(1);
    for line in input.lines().filter(|line| line.contains(pattern)) {
        output.stdout(&format!("{line}\n"));
        output.status = Status::Exit(0);
    }
    output
}

fn rm(device: &mut DeviceState, arguments: &[&str]) -> Output {
    let mut recursive = false;
    let mut force = false;
    let mut paths = Vec::new();
    for argument in arguments {
        match argument.strip_prefix('-') {
            Some(flags) if !flags.is_empty() => {
                recursive |= flags.contains('r') || flags.contains('R');
                force |= flags.contains('f');
            }
            _ => paths.push(absolute(argument)),
        }
    }
    let mut output = Output::exit(0);
    for path in paths {
        let trimmed = path.trim_end_matches('/');
        if device.remove_file(trimmed) {
            continue;
        }
        if device.directory_exists(trimmed) {
            if recursive {
                device.remove_tree(trimmed);
            } else {
                output.stderr(&format!("rm: '{path}' is a directory\n"));
                output.status = Status::Exit(1);
            }
        } else if !force {
            output.stderr(&format!(
                "rm: can't remove '{path}': No such file or directory\n"
            ));
            output.status = Status::Exit(1);
        }
    }
    output
}

fn sha256sum(device: &DeviceState, arguments: &[&str]) -> Output {
    use sha2::{Digest, Sha256};

    let mut output = Output::exit(0);
    for argument in arguments {
        let path = absolute(argument);
        if let Some(upload) = device.uploads.get(&path) {
            output.stdout(&format!("{}  {argument}\n", upload.file.sha256));
        } else if let Some(content) = device.read_file(&path) {
            let digest = hex::encode(Sha256::digest(content.as_bytes()));
            output.stdout(&format!("{digest}  {argument}\n"));
        } else {
            output.stderr(&format!(
                "sha256sum: can't open '{argument}': No such file or directory\n"
            ));
            output.status = Status::Exit(1);
        }
    }
    output
}

fn ubus(device: &DeviceState, arguments: &[&str]) -> Output {
    let mut output = Output::exit(0);
    match arguments {
        ["call", "system", "board", ..] => output.stdout(&device.ubus_system_board()),
        ["call", "system", "info", ..] => output.stdout(&device.ubus_system_info()),
        ["call", ..] => {
            output.stderr("Command failed: Not found\n");
            output.status = Status::Exit(4);
        }
        _ => {
            output.stderr("Usage: ubus [<options>] <command> [arguments...]\n");
            output.status = Status::Exit(1);
        }
    }
    output
}

fn wifi(device: &mut DeviceState, arguments: &[&str]) -> Output {
    match arguments {
        ["down"] => device.wifi_down = true,
        ["up"] | [] | ["reload"] => device.wifi_down = false,
        ["status"] => {
            let mut output = Output::exit(0);
            output.stdout(&format!(
                "{{\n\t\"radio0\": {{\n\t\t\"up\": {}\n\t}}\n}}\n",
                !device.wifi_down
            ));
            return output;
        }
        _ => {
            return Output::failure(
                1,
                "Usage: /sbin/wifi [config|up|down|reconf|reload|status]\n",
            );
        }
    }
    Output::exit(0)
}

fn init_script(device: &mut DeviceState, service: &str, arguments: &[&str]) -> Output {
    match arguments {
        ["stop"] => {
            if !device.stopped_services.iter().any(|name| name == service) {
                device.stopped_services.push(service.to_owned());
            }
        }
        ["start" | "restart" | "reload"] => device.stopped_services.retain(|name| name != service),
        ["enable" | "disable" | "enabled" | "boot"] => {}
        _ => {
            return Output::failure(
                1,
                &format!(
                    "Syntax: /etc/init.d/{service} [command]\n\nAvailable commands:\n\tstart\n\tstop\n\trestart\n\treload\n\tenable\n\tdisable\n"
                ),
            );
        }
    }
    Output::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_commands_are_recognized_in_every_spelling() {
        for (line, expected) in [
            ("scp -t /tmp/a.bin", "/tmp/a.bin"),
            ("scp -pt /tmp/a.bin", "/tmp/a.bin"),
            ("scp -t '/tmp/a.bin'", "/tmp/a.bin"),
            ("scp -p -t '/tmp/my image.bin'", "/tmp/my image.bin"),
            ("scp -v -d -t /tmp/", "/tmp/"),
            ("scp -t a.bin", "/root/a.bin"),
        ] {
            match invocation(line) {
                Invocation::ScpSink { target } => assert_eq!(target, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(matches!(
            invocation("cat > /tmp/x"),
            Invocation::CatUpload { path } if path == "/tmp/x"
        ));
        for line in [
            "scp -f /tmp/a",
            "scp /tmp/a",
            "cat >> /tmp/x",
            "cat /tmp/x > /tmp/y",
        ] {
            assert!(matches!(invocation(line), Invocation::Script(_)), "{line}");
        }
    }
}

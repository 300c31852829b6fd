//! A server killed again and again in the middle of one mass upgrade loses nothing: each time
//! it is started again, it takes over the operations the killed one left, and the last one
//! finishes the mass upgrade with every device flashed exactly once and recorded as it is.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Api, NEW_VERSION};
use crate::support::{Server, fleet, import_fleet, sites};

/// Enough devices that, with [`MAX_IN_FLIGHT`] upgrades at a time, each server of the test
/// starts some before the next kill, and most are still queued at the last one.
const DEVICES: usize = 60;

/// Upgrades at once in each server: several operations at different steps whenever a kill
/// condition is polled, on a loaded 2-core machine as well.
const MAX_IN_FLIGHT: &str = "8";

/// How long a device stays down after its flash: much longer than the few milliseconds
/// between reading a kill condition and the kill, so an operation seen flashing or waiting
/// for the reboot cannot end before the kill.
const REBOOT: Duration = Duration::from_secs(2);

/// How long one kill condition may take to appear.
const CONDITION_LIMIT: Duration = Duration::from_secs(60);

/// When the server is killed, in this order: once an operation of the batch is in progress in
/// one of these phases.
const KILLS: [(&str, &[&str]); 3] = [
    ("during the uploads", &["uploading"]),
    ("during the flashes", &["flashing"]),
    (
        "during the reboots",
        &["waiting-for-reboot", "reconnecting"],
    ),
];

/// What a recovered operation's log says (before or after the flash).
const RECOVERED: &str = "The previous attempt stopped in phase";

/// An operation seen just before a kill.
struct Caught {
    moment: &'static str,
    operation: String,
    phase: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_during_uploads_flashes_and_reboots_finishes_the_mass_upgrade() {
    for (index, (site, _directory, _test_db)) in sites().await.into_iter().enumerate() {
        let backend = if site.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        let began = Instant::now();
        let fleet = fleet(DEVICES, 70 + index as u8, REBOOT).await;
        import_fleet(&site, &fleet);
        let token = site.admin_token();
        let extra = [("FLASHFLEET_ENGINE__MAX_IN_FLIGHT", MAX_IN_FLIGHT)];
        let mut servers = vec![site.serve("serve-0", &extra).await];
        let api = servers[0].api(&token);
        let build = api.publish_new_build().await;
        let (status, started) = api
            .post(
                &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
                json!({"upgrade_all": true}),
            )
            .await;
        assert_eq!(status, 201, "{backend}: {started}");
        assert_eq!(started["operations"], DEVICES, "{backend}");
        let batch = started["batch"].as_str().unwrap().to_owned();

        let mut caught = Vec::new();
        for (number, (moment, phases)) in KILLS.into_iter().enumerate() {
            let server = servers.last_mut().unwrap();
            let (operation, phase) =
                operation_in_phase(&server.api(&token), &batch, phases, server, backend).await;
            server.kill();
            eprintln!(
                "{backend}: killed serve-{number} {moment} ({:.1} s): operation {operation} \
                 was {phase}",
                began.elapsed().as_secs_f64()
            );
            caught.push(Caught {
                moment,
                operation,
                phase,
            });
            servers.push(site.serve(&format!("serve-{}", number + 1), &extra).await);
        }

        let last = servers.last().unwrap();
        let api = last.api(&token);
        let detail = api.wait_for_batch(&batch, Duration::from_secs(120)).await;
        eprintln!(
            "{backend}: the mass upgrade ended after {:.1} s: {}",
            began.elapsed().as_secs_f64(),
            detail["progress_report"]
        );
        let operations = detail["upgradeoperations"].as_array().unwrap();
        assert_eq!(operations.len(), DEVICES, "{backend}");
        for operation in operations {
            assert_ne!(operation["status"], "in-progress", "{backend}: {operation}");
        }
        let log_of = |operation: &Value| operation["log"].as_str().unwrap_or("").to_owned();

        // Every kill caught an operation in flight, which the next server took over.
        let recovered: Vec<&Value> = operations
            .iter()
            .filter(|operation| log_of(operation).contains(RECOVERED))
            .collect();
        assert!(
            !recovered.is_empty(),
            "{backend}: no operation was recovered after the kills"
        );
        for kill in &caught {
            // An operation seen reconnecting may have ended in the instant before the kill;
            // one seen uploading, flashing or waiting for the reboot cannot have (its device
            // was still to be flashed or was down for `REBOOT`).
            if kill.phase == "reconnecting" {
                continue;
            }
            let operation = operations
                .iter()
                .find(|operation| operation["id"] == kill.operation.as_str())
                .unwrap();
            assert!(
                log_of(operation).contains(RECOVERED),
                "{backend}: the operation seen {} when the server was killed {} was not \
                 recovered by the next one: {operation:#}",
                kill.phase,
                kill.moment
            );
        }
        let after_flash = recovered
            .iter()
            .filter(|operation| log_of(operation).contains("after the flash command"))
            .count();
        let before_flash = recovered
            .iter()
            .filter(|operation| log_of(operation).contains("before the flash; starting again"))
            .count();
        let never_reached = recovered
            .iter()
            .filter(|operation| log_of(operation).contains("The flash command never reached"))
            .count();
        eprintln!(
            "{backend}: {} operations recovered ({before_flash} started over before their \
             flash, {after_flash} verified after it, {never_reached} of them flashed again as \
             the flash command never reached the device)",
            recovered.len()
        );

        let mut problems = Vec::new();
        for device in fleet.devices() {
            let operation = operations
                .iter()
                .find(|operation| operation["device"] == device.uuid().to_string())
                .unwrap();
            let status = operation["status"].as_str().unwrap_or("");
            let version = device.release().version;
            let flash_commands = device
                .commands()
                .iter()
                .filter(|command| is_flash_command(command))
                .count();
            let (firmware_status, firmware) = api
                .get(&format!(
                    "/api/v1/firmware-upgrader/device/{}/firmware/",
                    device.uuid()
                ))
                .await;
            let mut wrong = Vec::new();
            // What must hold whatever happens: no second flash, outcomes and records from
            // facts only.
            if device.flash_count() > 1 {
                wrong.push(format!("flashed {} times", device.flash_count()));
            }
            if flash_commands > 1 {
                wrong.push(format!("received {flash_commands} flash commands"));
            }
            if (status == "success") != (version == NEW_VERSION) {
                wrong.push(format!(
                    "the operation ended {status} but the device runs {version}"
                ));
            }
            if firmware_status != 200
                || firmware["image"] != operation["image"]
                || firmware["installed"] != json!(status == "success")
            {
                wrong.push(format!(
                    "the firmware record ({firmware_status}: {firmware}) disagrees with the \
                     operation ({status}, image {})",
                    operation["image"]
                ));
            }
            // What the product guarantees here: nothing failed, so every device ends upgraded,
            // flashed exactly once.
            if status != "success" {
                wrong.push(format!("the operation ended {status}, not success"));
            }
            if device.flash_count() != 1 {
                wrong.push(format!(
                    "flashed {} times, not exactly once",
                    device.flash_count()
                ));
            }
            if !wrong.is_empty() {
                problems.push(format!(
                    "device {} (operation {}, runs {version}, flash count {}, {flash_commands} \
                     flash commands received):\n  - {}\n  operation log:\n{}",
                    device.uuid(),
                    operation["id"],
                    device.flash_count(),
                    wrong.join("\n  - "),
                    log_of(operation)
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{backend}: {} of {DEVICES} devices are wrong after the kills ({}):\n\n{}",
            problems.len(),
            detail["progress_report"],
            problems.join("\n\n")
        );
        drop(servers);
        fleet.shutdown().await;
        eprintln!("{backend}: done in {:.1} s", began.elapsed().as_secs_f64());
    }
}

/// Polls the API until an operation of `batch` is in progress in one of `phases`; its id and
/// phase. Panics with `server`'s log when none is seen within [`CONDITION_LIMIT`].
async fn operation_in_phase(
    api: &Api,
    batch: &str,
    phases: &'static [&'static str],
    server: &Server,
    backend: &str,
) -> (String, &'static str) {
    let deadline = Instant::now() + CONDITION_LIMIT;
    loop {
        for phase in phases {
            let (status, page) = api
                .get(&format!(
                    "/api/v1/firmware-upgrader/upgrade-operation/?batch={batch}\
                     &status=in-progress&phase={phase}&page_size=1"
                ))
                .await;
            assert_eq!(status, 200, "{backend}: {page}");
            if let Some(operation) = page["results"]
                .as_array()
                .and_then(|results| results.first())
            {
                return (operation["id"].as_str().unwrap().to_owned(), phase);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no operation was {phases:?} within {CONDITION_LIMIT:?}:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `command` is the flash command: `sysupgrade` run without `--test`.
fn is_flash_command(command: &str) -> bool {
    let mut words = command.split_whitespace();
    words
        .next()
        .is_some_and(|program| program.rsplit('/').next() == Some("sysupgrade"))
        && !words.any(|word| word == "--test" || word == "-T")
}

//! Several servers on one PostgreSQL share the work of one mass upgrade.

use std::time::Duration;

use serde_json::json;

use crate::client::NEW_VERSION;
use crate::support::{Site, fleet, import_fleet};

const DEVICES: usize = 16;

/// Upgrades finished by the engine of the server with these metrics.
fn finished_here(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("flashfleet_upgrade_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgresql_share_a_mass_upgrade() {
    let Some(test_db) = flashfleet_db::testing::TestDb::postgres().await else {
        eprintln!(
            "notice: two_servers_on_one_postgresql_share_a_mass_upgrade needs \
             FLASHFLEET_TEST_POSTGRES_URL; skipped"
        );
        return;
    };
    // One data directory for both: the same secret key (device credentials) and the same
    // firmware files, as S3 would give servers on several machines.
    let directory = tempfile::tempdir().unwrap();
    let site = Site {
        data_dir: directory.path().to_path_buf(),
        database_url: Some(test_db.url().to_owned()),
    };
    let fleet = fleet(DEVICES, 60, Duration::from_millis(1000)).await;
    import_fleet(&site, &fleet);
    let token = site.admin_token();
    let limits = [("FLASHFLEET_ENGINE__MAX_IN_FLIGHT", "4")];
    let first = site.serve("first", &limits).await;
    let second = site.serve("second", &limits).await;
    let build = first.api(&token).publish_new_build().await;
    let (status, started) = first
        .api(&token)
        .post(
            &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let batch = started["batch"].as_str().unwrap();

    let detail = second
        .api(&token)
        .wait_for_batch(batch, Duration::from_secs(180))
        .await;
    assert_eq!(
        detail["status"],
        "success",
        "{}\n{}\n{}",
        detail["progress_report"],
        first.log_text(),
        second.log_text()
    );
    for device in fleet.devices() {
        assert_eq!(device.flash_count(), 1);
        assert_eq!(device.release().version, NEW_VERSION);
    }
    let by_first = finished_here(&first.api(&token).text("/metrics").await);
    let by_second = finished_here(&second.api(&token).text("/metrics").await);
    assert_eq!(by_first + by_second, DEVICES as u64);
    assert!(
        by_first > 0 && by_second > 0,
        "both servers ran upgrades: {by_first} and {by_second}"
    );
    fleet.shutdown().await;
}

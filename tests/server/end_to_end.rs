//! The whole story through the `flashfleet` binary: a server on a fresh data directory, driven
//! over HTTP, upgrading 20 simulated devices, followed live to the end.

use crate::scenario::{self, Target};
use crate::support::{Api, sites};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_upgrades_twenty_devices_through_the_api_and_watches_it_live() {
    for (index, (site, _directory, _test_db)) in sites().await.into_iter().enumerate() {
        let token = site.admin_token();
        let server = site.serve("e2e", &[]).await;
        let target = Target {
            base: server.base.clone(),
            superuser_token: token,
            connector: "openwrt-ssh".to_owned(),
            details: serde_json::Map::new(),
        };
        let outcome = scenario::run(&target, 20, 80 + index as u8).await;
        assert!(outcome.operation_events >= 20, "{}", server.log_text());
        // The live stream carries the REST resource: its last batch event is what a GET of
        // the batch returns once it has ended.
        let batch = outcome.last_batch_event["id"].as_str().unwrap();
        let (status, rest) = Api::new(&server.base, &target.superuser_token)
            .get(&format!(
                "/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/"
            ))
            .await;
        assert_eq!(status, 200, "{rest}");
        for field in [
            "id",
            "build",
            "status",
            "progress_report",
            "created",
            "details",
        ] {
            assert_eq!(rest[field], outcome.last_batch_event[field], "{field}");
        }
        outcome.fleet.shutdown().await;
    }
}

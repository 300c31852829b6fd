//! `flashfleet devices import`.

use flashfleet_db::testing::TestDb;
use flashfleet_models::credentials::CredentialsSecret;
use flashfleet_models::repository::{
    DeviceFilter, DeviceRepository as _, DirectoryRepository as _,
};
use flashfleet_models::{Device, NewOrganization, PageRequest, Scope};

use crate::support::Workspace;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

async fn devices(test_db: &TestDb) -> Vec<Device> {
    let mut devices = test_db
        .db()
        .list_devices(&Scope::All, &DeviceFilter::default(), PageRequest::all())
        .await
        .unwrap()
        .items;
    devices.sort_by(|first, second| first.name.cmp(&second.name));
    devices
}

#[tokio::test]
async fn a_csv_list_is_imported_row_by_row_and_again_without_duplicates() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        db.insert_organization(&NewOrganization::new("ACME", "acme").into_organization())
            .await
            .unwrap();
        let workspace = Workspace::on(&test_db);
        workspace.write("ap-3.key", KEY);
        let csv = "name,mac_address,address,model,board_name,os,username,password,key_file,port\n\
                   ap-1,00:11:22:33:44:01,10.0.0.1,TP-Link Archer C7 v2,\"tplink,archer-c7-v2\",OpenWrt 23.05.3,root,s3cret-one,,\n\
                   ap-2,not-a-mac,10.0.0.2,,,,root,s3cret-two,,\n\
                   ap-3,00-11-22-33-44-03,router3.example.net,,,,admin,,ap-3.key,2222\n";
        let list = workspace.write("devices.csv", csv);
        let list = list.to_str().unwrap();

        let run = workspace.run_err(&["devices", "import", list, "--organization", "acme"]);
        run.stdout_has("line 2: created ap-1 (00:11:22:33:44:01) in acme");
        run.stdout_has("line 3: failed: mac_address: Enter a valid MAC address.");
        run.stdout_has("line 4: created ap-3 (00:11:22:33:44:03) in acme");
        run.stdout_has("2 created, 0 updated, 0 unchanged, 1 failed");
        run.stderr_has("1 rows of");
        for secret in ["s3cret-one", "s3cret-two", "b3BlbnNzaC1rZXktdjEAAAAA"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{run:#?}"
            );
        }

        let imported = devices(&test_db).await;
        assert_eq!(imported.len(), 2);
        let ap1 = &imported[0];
        assert_eq!(
            (
                ap1.model.as_str(),
                ap1.board_name.as_str(),
                ap1.os.as_str(),
                ap1.management_ip.as_deref()
            ),
            (
                "TP-Link Archer C7 v2",
                "tplink,archer-c7-v2",
                "OpenWrt 23.05.3",
                Some("10.0.0.1")
            )
        );
        let connections = db.connections(ap1.id).await.unwrap();
        assert_eq!(connections.len(), 1);
        let (connection, credentials) = &connections[0];
        assert_eq!(connection.connection_type.as_str(), "openwrt-ssh");
        assert!(connection.enabled);
        assert_eq!(
            (credentials.username.as_str(), credentials.port),
            ("root", 22)
        );
        assert_eq!(
            credentials.secret,
            CredentialsSecret::Password(flashfleet_models::credentials::SecretText::new(
                "s3cret-one"
            ))
        );
        let (_, ap3_credentials) = &db.connections(imported[1].id).await.unwrap()[0];
        assert_eq!(
            (ap3_credentials.username.as_str(), ap3_credentials.port),
            ("admin", 2222)
        );
        assert_eq!(ap3_credentials.secret.kind(), "private_key");
        assert_eq!(ap3_credentials.secret.expose(), KEY);

        // The fixed list again: the two devices are unchanged, the third is created.
        workspace.write("devices.csv", csv.replace("not-a-mac", "00:11:22:33:44:02"));
        let run = workspace.run_ok(&["devices", "import", list, "--organization", "acme"]);
        run.stdout_has("line 2: unchanged ap-1");
        run.stdout_has("1 created, 0 updated, 2 unchanged, 0 failed");
        assert_eq!(devices(&test_db).await.len(), 3);
        assert_eq!(
            db.connections(ap1.id).await.unwrap().len(),
            1,
            "no duplicate credentials"
        );
    }
}

#[tokio::test]
async fn a_json_list_updates_devices_found_by_mac_address() {
    for test_db in TestDb::all().await {
        let workspace = Workspace::on(&test_db);
        let first = r#"[
  {"name": "gw", "mac_address": "AA:BB:CC:00:00:01", "address": "192.0.2.1",
   "organization": "branch-1", "password": "pw-one"}
]"#;
        let list = workspace.write("fleet.json", first);
        let list = list.to_str().unwrap();
        let run = workspace.run_err(&["devices", "import", list]);
        run.stdout_has("line 2: failed: organization `branch-1` does not exist");
        workspace.run_ok(&["devices", "import", list, "--create-organizations"]);
        let organization = test_db
            .db()
            .organization_by_slug(&Scope::All, "branch-1")
            .await
            .unwrap()
            .unwrap();

        let second = r#"[
  {"name": "gw-renamed", "mac_address": "aa-bb-cc-00-00-01", "address": "192.0.2.10",
   "organization": "branch-1", "password": "pw-two", "port": "2200"}
]"#;
        workspace.write("fleet.json", second);
        let run = workspace.run_ok(&["devices", "import", list]);
        run.stdout_has("line 2: updated gw-renamed");
        let all = devices(&test_db).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].organization_id, organization.id);
        assert_eq!(all[0].management_ip.as_deref(), Some("192.0.2.10"));
        let connections = test_db.db().connections(all[0].id).await.unwrap();
        assert_eq!(connections.len(), 1);
        assert_eq!(connections[0].1.secret.expose(), "pw-two");
        assert_eq!(connections[0].1.port, 2200);
    }
}

#[test]
fn unreadable_lists_are_refused_as_a_whole() {
    let workspace = Workspace::new();
    let list = workspace.write("devices.txt", "name,mac_address\n");
    let run = workspace.run_err(&["devices", "import", list.to_str().unwrap()]);
    run.stderr_has("--format csv");
    let list = workspace.write("devices.csv", "name,mac,colour\nx,y,z\n");
    let run = workspace.run_err(&["devices", "import", list.to_str().unwrap()]);
    run.stderr_has("unknown column `mac`");
    let list = workspace.write("devices.json", "[{\"name\": ");
    let run = workspace.run_err(&["devices", "import", list.to_str().unwrap()]);
    run.stderr_has("invalid JSON");
}

#[tokio::test]
async fn rows_without_credentials_or_with_both_kinds_fail_alone() {
    for test_db in TestDb::all().await {
        let workspace = Workspace::on(&test_db);
        workspace.write("k", KEY);
        let list = workspace.write(
            "d.csv",
            "name,mac_address,organization,password,key_file\n\
             a,00:00:00:00:00:01,org,,\nb,00:00:00:00:00:02,org,pw,k\nc,00:00:00:00:00:03,org,pw,\n",
        );
        let run = workspace.run_err(&[
            "devices",
            "import",
            list.to_str().unwrap(),
            "--create-organizations",
        ]);
        run.stdout_has("line 2: failed: no credentials");
        run.stdout_has("line 3: failed: give a password or a key_file, not both");
        run.stdout_has("line 4: created c");
    }
}

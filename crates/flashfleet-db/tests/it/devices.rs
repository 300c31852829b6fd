//! Devices, groups, credentials, connections and firmware records (`DeviceRepository`).

use flashfleet_db::Db;
use flashfleet_db::SecretKey;
use flashfleet_db::testing::TestDb;
use flashfleet_models::credentials::SecretText;
use flashfleet_models::repository::{DeviceFilter, DeviceRepository, UpgradeRepository};
use flashfleet_models::{
    ConnectionType, Constraint, Credentials, CredentialsSecret, Device, DeviceFirmware,
    DeviceGroup, NewCredentials, NewDevice, NewDeviceConnection, NewDeviceGroup, Page, PageRequest,
    RepoError, Scope,
};

use crate::support::{
    BOARD, PRIVATE_KEY, ago, chain, connected_device, details, device, device_firmware, image,
    new_credentials, new_device, operation, organization, scope, unique_mac,
};

#[tokio::test]
async fn device_groups_round_trip_and_are_listed_by_name_within_the_scope() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let mut new_group = NewDeviceGroup::new(acme.id, "Rooftop");
        new_group.description = "APs on the roof".into();
        new_group.details = details();
        let mut rooftop = new_group.into_group();
        rooftop.created = ago(9);
        rooftop.modified = ago(4);
        assert_eq!(
            db.insert_group(&rooftop).await.unwrap(),
            rooftop,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.group(&Scope::All, rooftop.id).await.unwrap(),
            Some(rooftop.clone()),
            "backend: {}",
            test_db.backend()
        );
        let basement = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Basement").into_group())
            .await
            .unwrap();
        let foreign = db
            .insert_group(&NewDeviceGroup::new(umbrella.id, "Attic").into_group())
            .await
            .unwrap();

        let only_acme = scope(&[acme.id], true);
        assert_eq!(
            db.group(&only_acme, foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        let listed = db
            .list_groups(&only_acme, PageRequest::all())
            .await
            .unwrap();
        assert_eq!(
            listed,
            Page {
                count: 2,
                items: vec![basement, rooftop]
            },
            "backend: {}",
            test_db.backend()
        );
        let everything = db
            .list_groups(&Scope::All, PageRequest::page(1, 1))
            .await
            .unwrap();
        assert_eq!(
            (everything.count, everything.items),
            (3, vec![foreign]),
            "backend: {}",
            test_db.backend()
        );
        let duplicate = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Rooftop").into_group())
            .await;
        assert!(
            matches!(
                duplicate,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::DeviceGroupName
                })
            ),
            "backend: {}: {duplicate:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn devices_round_trip_field_by_field() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let group = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Rooftop").into_group())
            .await
            .unwrap();
        let mut new = NewDevice::new(acme.id, "ap-1", "00:11:22:aa:bb:cc".parse().unwrap());
        new.id = Some(flashfleet_models::DeviceId::new());
        new.model = BOARD.into();
        new.board_name = "tplink,archer-c7-v2".into();
        new.os = "OpenWrt 23.05.3 r23809-234f1a2efa".into();
        new.management_ip = Some("fe80::1".into());
        new.group_id = Some(group.id);
        new.details = details();
        let mut full = new.into_device();
        full.is_deactivated = true;
        full.created = ago(120);
        full.modified = ago(60);
        let bare = NewDevice::new(acme.id, "ap-2", unique_mac()).into_device();

        for device in [full, bare] {
            assert_eq!(
                db.insert_device(&device).await.unwrap(),
                device,
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(
                db.device(&Scope::All, device.id).await.unwrap(),
                Some(device),
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn updating_a_device_persists_the_changes_including_cleared_fields() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let group = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Rooftop").into_group())
            .await
            .unwrap();
        let mut original = new_device(acme.id, "ap-1", 30);
        original.management_ip = Some("10.0.0.1".into());
        original.group_id = Some(group.id);
        db.insert_device(&original).await.unwrap();

        let mut changed = original.clone();
        changed.management_ip = None;
        changed.group_id = None;
        changed.os = "OpenWrt 24.10.0".into();
        changed.name = "ap-renamed".into();
        changed.is_deactivated = true;
        changed.details = details();
        let updated = db.update_device(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified > original.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            updated,
            Device {
                modified: updated.modified,
                ..changed
            },
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device(&Scope::All, original.id).await.unwrap(),
            Some(updated),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.update_device(&new_device(acme.id, "ghost", 0))
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn device_names_and_mac_addresses_are_unique_per_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let first = db
            .insert_device(&new_device(acme.id, "ap-1", 0))
            .await
            .unwrap();

        let mut same_name = new_device(acme.id, "ap-1", 0);
        same_name.mac_address = unique_mac();
        let error = db.insert_device(&same_name).await.unwrap_err();
        assert!(
            matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::DeviceName
                }
            ),
            "backend: {}: {error:?}",
            test_db.backend()
        );
        let mut same_mac = new_device(acme.id, "ap-2", 0);
        same_mac.mac_address = first.mac_address;
        let error = db.insert_device(&same_mac).await.unwrap_err();
        assert!(
            matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::DeviceMac
                }
            ),
            "backend: {}: {error:?}",
            test_db.backend()
        );
        // Both are free in another organization.
        let mut elsewhere = new_device(umbrella.id, "ap-1", 0);
        elsewhere.mac_address = first.mac_address;
        db.insert_device(&elsewhere).await.unwrap();
    }
}

fn names(page: Page<Device>) -> (u64, Vec<String>) {
    (
        page.count,
        page.items.into_iter().map(|device| device.name).collect(),
    )
}

#[tokio::test]
async fn devices_are_listed_newest_first_in_pages_within_the_scope() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        for (name, minutes_ago) in [("d", 4), ("a", 1), ("c", 3), ("b", 2), ("e", 5)] {
            db.insert_device(&new_device(acme.id, name, minutes_ago))
                .await
                .unwrap();
        }
        let foreign = db
            .insert_device(&new_device(umbrella.id, "foreign", 0))
            .await
            .unwrap();
        let only_acme = scope(&[acme.id], true);
        let filter = DeviceFilter::default();
        assert_eq!(
            names(
                db.list_devices(&only_acme, &filter, PageRequest::page(1, 2))
                    .await
                    .unwrap()
            ),
            (5, vec!["a".into(), "b".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            names(
                db.list_devices(&only_acme, &filter, PageRequest::page(3, 2))
                    .await
                    .unwrap()
            ),
            (5, vec!["e".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            names(
                db.list_devices(&Scope::All, &filter, PageRequest::page(1, 2))
                    .await
                    .unwrap()
            ),
            (6, vec!["foreign".into(), "a".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device(&only_acme, foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // Shared objects do not make another organization's devices visible.
        assert_eq!(
            db.device(&scope(&[], true), foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn device_filters_narrow_by_organization_group_model_and_os() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let group = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Rooftop").into_group())
            .await
            .unwrap();
        let specs = [
            (acme.id, "a1", "Model A", "OpenWrt 1", Some(group.id), 1),
            (acme.id, "a2", "Model B", "OpenWrt 1", None, 2),
            (acme.id, "a3", "Model A", "OpenWrt 2", Some(group.id), 3),
            (umbrella.id, "u1", "Model A", "OpenWrt 1", None, 4),
        ];
        for (organization_id, name, model, os, group_id, minutes_ago) in specs {
            let mut device = new_device(organization_id, name, minutes_ago);
            device.model = model.into();
            device.os = os.into();
            device.group_id = group_id;
            db.insert_device(&device).await.unwrap();
        }
        let cases = [
            (
                DeviceFilter {
                    organization_slug: Some("acme".into()),
                    ..DeviceFilter::default()
                },
                vec!["a1", "a2", "a3"],
            ),
            (
                DeviceFilter {
                    group_id: Some(group.id),
                    ..DeviceFilter::default()
                },
                vec!["a1", "a3"],
            ),
            (
                DeviceFilter {
                    model: Some("Model A".into()),
                    ..DeviceFilter::default()
                },
                vec!["a1", "a3", "u1"],
            ),
            (
                DeviceFilter {
                    os: Some("OpenWrt 1".into()),
                    ..DeviceFilter::default()
                },
                vec!["a1", "a2", "u1"],
            ),
            (
                DeviceFilter {
                    organization_slug: Some("umbrella".into()),
                    model: Some("Model A".into()),
                    os: Some("OpenWrt 1".into()),
                    group_id: None,
                },
                vec!["u1"],
            ),
            (
                DeviceFilter {
                    model: Some("Model".into()),
                    ..DeviceFilter::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            let expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
            assert_eq!(
                names(
                    db.list_devices(&Scope::All, &filter, PageRequest::all())
                        .await
                        .unwrap()
                ),
                (expected.len() as u64, expected),
                "backend: {}: {filter:?}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn credentials_round_trip_with_their_password_or_private_key() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let mut new = NewCredentials::new(
            Some(acme.id),
            "deploy key",
            "admin",
            CredentialsSecret::PrivateKey(SecretText::new(PRIVATE_KEY)),
        );
        new.connection_type = ConnectionType::new(ConnectionType::OPENWISP1_SSH);
        new.port = 2222;
        new.auto_add = true;
        new.details = details();
        let mut with_key = new.into_credentials();
        with_key.created = ago(8);
        with_key.modified = ago(2);
        let with_password = new_credentials(None, "shared root", "pässwörd with spaces ✓");

        for credentials in [with_key, with_password] {
            assert_eq!(
                db.insert_credentials(&credentials).await.unwrap(),
                credentials,
                "backend: {}",
                test_db.backend()
            );
            let fetched = db
                .credentials(&Scope::All, credentials.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                fetched.secret.expose(),
                credentials.secret.expose(),
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(fetched, credentials, "backend: {}", test_db.backend());
        }
    }
}

#[tokio::test]
async fn updating_credentials_replaces_the_secret() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let mut original = new_credentials(Some(acme.id), "root", "old password");
        original.created = ago(10);
        original.modified = original.created;
        db.insert_credentials(&original).await.unwrap();

        let mut changed = original.clone();
        changed.secret = CredentialsSecret::PrivateKey(SecretText::new(PRIVATE_KEY));
        changed.username = "admin".into();
        changed.port = 22022;
        let updated = db.update_credentials(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified > original.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            updated,
            Credentials {
                modified: updated.modified,
                ..changed
            },
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.credentials(&Scope::All, original.id).await.unwrap(),
            Some(updated),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.update_credentials(&new_credentials(None, "ghost", "x"))
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn credentials_read_with_another_secret_key_fail_because_they_are_encrypted() {
    for test_db in TestDb::all().await {
        let acme = organization(test_db.db(), "acme").await;
        let with_password = test_db
            .db()
            .insert_credentials(&new_credentials(Some(acme.id), "root", "hunter2"))
            .await
            .unwrap();
        let with_key = test_db
            .db()
            .insert_credentials(
                &NewCredentials::new(
                    Some(acme.id),
                    "key",
                    "root",
                    CredentialsSecret::PrivateKey(SecretText::new(PRIVATE_KEY)),
                )
                .into_credentials(),
            )
            .await
            .unwrap();

        // A second server with the same key reads them.
        let same_key = Db::connect(&test_db.config()).await.unwrap();
        assert_eq!(
            same_key
                .credentials(&Scope::All, with_password.id)
                .await
                .unwrap(),
            Some(with_password.clone()),
            "backend: {}",
            test_db.backend()
        );

        let mut config = test_db.config();
        config.secret_key = SecretKey::generate().unwrap();
        let other_key = Db::connect(&config).await.unwrap();
        // Everything but the secrets still reads.
        assert_eq!(
            other_key
                .device(&Scope::All, flashfleet_models::DeviceId::new())
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        for id in [with_password.id, with_key.id] {
            // Final, and said as such: retrying with this key cannot help.
            let result = other_key.credentials(&Scope::All, id).await;
            assert!(
                matches!(&result, Err(RepoError::Undecryptable { message })
                    if message.contains(&id.to_string()) && !message.contains("hunter2")),
                "backend: {}: {result:?}",
                test_db.backend()
            );
        }
        let listed = other_key
            .list_credentials(&Scope::All, PageRequest::all())
            .await;
        assert!(
            matches!(listed, Err(RepoError::Undecryptable { .. })),
            "backend: {}: {listed:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn credentials_are_listed_by_name_with_shared_ones_on_request() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        for (organization_id, name) in [
            (Some(acme.id), "charlie"),
            (None, "bravo"),
            (Some(umbrella.id), "alpha"),
            (Some(acme.id), "alpha"),
        ] {
            db.insert_credentials(&new_credentials(organization_id, name, "pw"))
                .await
                .unwrap();
        }
        let listed = |page: Page<Credentials>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|credentials| credentials.name)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            listed(
                db.list_credentials(&scope(&[acme.id], true), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (3, vec!["alpha".into(), "bravo".into(), "charlie".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            listed(
                db.list_credentials(&scope(&[acme.id], false), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (2, vec!["alpha".into(), "charlie".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            listed(
                db.list_credentials(&Scope::All, PageRequest::page(2, 3))
                    .await
                    .unwrap()
            ),
            (4, vec!["charlie".into()]),
            "backend: {}",
            test_db.backend()
        );
        for duplicate in [Some(acme.id), None] {
            let name = if duplicate.is_some() {
                "alpha"
            } else {
                "bravo"
            };
            let error = db
                .insert_credentials(&new_credentials(duplicate, name, "pw"))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    RepoError::AlreadyExists {
                        constraint: Constraint::CredentialsName
                    }
                ),
                "backend: {}: {error:?}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn a_connection_round_trips_with_its_credentials() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let connected = connected_device(db, acme.id, "ap-1").await;
        assert_eq!(
            connected.connection.connection_type,
            ConnectionType::openwrt_ssh(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(connected.device.id).await.unwrap(),
            [(connected.connection.clone(), connected.credentials.clone())],
            "backend: {}",
            test_db.backend()
        );

        let shared = db
            .insert_credentials(&new_credentials(None, "shared", "pw"))
            .await
            .unwrap();
        let mut new = NewDeviceConnection::new(connected.device.id, shared.id);
        new.connection_type = Some(ConnectionType::new(ConnectionType::OPENWISP1_SSH));
        new.enabled = false;
        new.details = details();
        let mut disabled = new.into_connection(&shared);
        disabled.created = connected.connection.created + chrono::Duration::seconds(1);
        disabled.modified = disabled.created;
        assert_eq!(
            db.insert_connection(&disabled).await.unwrap(),
            disabled,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(connected.device.id).await.unwrap(),
            [
                (connected.connection.clone(), connected.credentials.clone()),
                (disabled, shared)
            ],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn the_same_credentials_are_attached_once_and_only_to_devices_of_their_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let connected = connected_device(db, acme.id, "ap-1").await;

        let twice = db
            .insert_connection(
                &NewDeviceConnection::new(connected.device.id, connected.credentials.id)
                    .into_connection(&connected.credentials),
            )
            .await;
        assert!(
            matches!(
                twice,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::DeviceConnection
                })
            ),
            "backend: {}: {twice:?}",
            test_db.backend()
        );
        let foreign = db
            .insert_credentials(&new_credentials(Some(umbrella.id), "foreign", "pw"))
            .await
            .unwrap();
        let refused = db
            .insert_connection(
                &NewDeviceConnection::new(connected.device.id, foreign.id)
                    .into_connection(&foreign),
            )
            .await;
        assert!(
            matches!(&refused, Err(RepoError::Invalid(errors)) if !errors.messages("credentials").is_empty()),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(connected.device.id).await.unwrap().len(),
            1,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn connection_attempts_are_recorded_and_working_connections_come_first() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let device = device(db, acme.id, "ap-1", BOARD).await;
        let mut connections = Vec::new();
        for (name, minutes_ago) in [("untried", 30), ("failing", 20), ("working", 10)] {
            let credentials = db
                .insert_credentials(&new_credentials(Some(acme.id), name, "pw"))
                .await
                .unwrap();
            let mut connection =
                NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials);
            connection.created = ago(minutes_ago);
            connection.modified = connection.created;
            connections.push(db.insert_connection(&connection).await.unwrap());
        }
        let [untried, failing, working] = <[_; 3]>::try_from(connections).unwrap();

        let before = flashfleet_models::time::now();
        let failed = db
            .record_connection_attempt(failing.id, false, "Authentication failed.")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (failed.is_working, failed.failure_reason.as_str()),
            (Some(false), "Authentication failed."),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            failed.last_attempt.is_some_and(|attempt| attempt >= before),
            "backend: {}",
            test_db.backend()
        );
        // A success after a failure clears the reason.
        db.record_connection_attempt(working.id, false, "timed out")
            .await
            .unwrap()
            .unwrap();
        let worked = db
            .record_connection_attempt(working.id, true, "")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (worked.is_working, worked.failure_reason.as_str()),
            (Some(true), ""),
            "backend: {}",
            test_db.backend()
        );

        let order: Vec<_> = db
            .connections(device.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(connection, _)| connection.id)
            .collect();
        assert_eq!(
            order,
            [working.id, untried.id, failing.id],
            "backend: {}: working first, then oldest first",
            test_db.backend()
        );
        let stored: Vec<_> = db
            .connections(device.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(connection, _)| connection)
            .collect();
        assert_eq!(stored[0], worked, "backend: {}", test_db.backend());
        assert_eq!(stored[2], failed, "backend: {}", test_db.backend());
        assert_eq!(
            db.record_connection_attempt(flashfleet_models::DeviceConnectionId::new(), true, "")
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn updating_a_connection_changes_what_its_owner_sets_and_keeps_the_rest() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let connected = connected_device(db, acme.id, "ap-1").await;
        db.record_connection_attempt(connected.connection.id, false, "refused")
            .await
            .unwrap();
        db.record_host_key(connected.connection.id, "ssh-ed25519 AAAA")
            .await
            .unwrap();
        let shared = db
            .insert_credentials(&new_credentials(None, "shared", "pw"))
            .await
            .unwrap();

        let mut changed = connected.connection.clone();
        changed.credentials_id = shared.id;
        changed.connection_type = ConnectionType::new(ConnectionType::OPENWISP1_SSH);
        changed.enabled = false;
        changed.details = details();
        // Fields the owner does not set are kept as stored, whatever the caller sends.
        changed.device_id = connected_device(db, acme.id, "ap-2").await.device.id;
        changed.is_working = Some(true);
        changed.host_key = None;
        let stored = db.update_connection(&changed).await.unwrap().unwrap();
        assert_eq!(
            (
                stored.credentials_id,
                stored.connection_type.as_str(),
                stored.enabled,
                &stored.details
            ),
            (shared.id, ConnectionType::OPENWISP1_SSH, false, &details()),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            (
                stored.device_id,
                stored.is_working,
                stored.failure_reason.as_str(),
                stored.host_key.as_deref()
            ),
            (
                connected.device.id,
                Some(false),
                "refused",
                Some("ssh-ed25519 AAAA")
            ),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            stored.modified > connected.connection.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(connected.device.id).await.unwrap(),
            [(stored.clone(), shared)],
            "backend: {}",
            test_db.backend()
        );

        let foreign = db
            .insert_credentials(&new_credentials(Some(umbrella.id), "foreign", "pw"))
            .await
            .unwrap();
        let mut refused = stored.clone();
        refused.credentials_id = foreign.id;
        let refused = db.update_connection(&refused).await;
        assert!(
            matches!(&refused, Err(RepoError::Invalid(errors)) if !errors.messages("credentials").is_empty()),
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        let mut missing = stored.clone();
        missing.id = flashfleet_models::DeviceConnectionId::new();
        assert_eq!(
            db.update_connection(&missing).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_credentials_or_a_connection_detaches_them_from_the_device() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let first = connected_device(db, acme.id, "ap-1").await;
        let second = connected_device(db, acme.id, "ap-2").await;

        assert!(
            db.delete_credentials(first.credentials.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_credentials(first.credentials.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.credentials(&Scope::All, first.credentials.id)
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(first.device.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
        assert!(
            db.delete_connection(second.connection.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_connection(second.connection.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(second.device.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
        assert!(
            db.credentials(&Scope::All, second.credentials.id)
                .await
                .unwrap()
                .is_some(),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn the_firmware_records_of_many_devices_come_in_one_call() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let mut with_record = Vec::new();
        let mut all = Vec::new();
        // More devices than one statement's batch, every other one with a record.
        for index in 0..1003 {
            let device = device(db, chain.organization.id, &format!("ap-{index}"), BOARD).await;
            if index % 2 == 0 {
                let record = DeviceFirmware::new(device.id, chain.image.id, index % 4 == 0);
                db.insert_device_firmware(&record).await.unwrap();
                with_record.push(record);
            }
            all.push(device.id);
        }
        let mut records = db.device_firmwares(&all).await.unwrap();
        records.sort_by_key(|record| record.device_id.0);
        with_record.sort_by_key(|record| record.device_id.0);
        assert_eq!(records, with_record, "backend: {}", test_db.backend());
        assert_eq!(
            db.device_firmwares(&[]).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_device_has_at_most_one_firmware_record() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let mut record = DeviceFirmware::new(device.id, chain.image.id, true);
        record.details = details();
        record.created = ago(15);
        record.modified = ago(5);
        assert_eq!(
            db.insert_device_firmware(&record).await.unwrap(),
            record,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(device.id).await.unwrap(),
            Some(record.clone()),
            "backend: {}",
            test_db.backend()
        );
        let other = image(db, &chain.build, "other.bin").await;
        let second = db
            .insert_device_firmware(&DeviceFirmware::new(device.id, other.id, false))
            .await;
        assert!(
            matches!(
                second,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::OneFirmwarePerDevice
                })
            ),
            "backend: {}: {second:?}",
            test_db.backend()
        );
        assert!(
            db.delete_device_firmware(device.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_device_firmware(device.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // Once deleted, a new record is accepted.
        device_firmware(db, &device, &other, false).await;
    }
}

#[tokio::test]
async fn deleting_a_device_removes_its_connections_firmware_record_and_operations() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let connected = connected_device(db, chain.organization.id, "ap-1").await;
        let device = &connected.device;
        device_firmware(db, device, &chain.image, true).await;
        let operation = operation(db, device, &chain.image).await;

        assert!(
            db.delete_device(device.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_device(device.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device(&Scope::All, device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(device.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.connections(device.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.operation(&Scope::All, operation.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // Credentials are not the device's: they stay.
        assert!(
            db.credentials(&Scope::All, connected.credentials.id)
                .await
                .unwrap()
                .is_some(),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_group_is_visible_only_within_its_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let group: DeviceGroup = db
            .insert_group(&NewDeviceGroup::new(acme.id, "Rooftop").into_group())
            .await
            .unwrap();
        assert_eq!(
            db.group(&scope(&[], true), group.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.group(&scope(&[acme.id], false), group.id).await.unwrap(),
            Some(group),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_recorded_host_key_is_kept_with_the_connection_and_can_be_replaced() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let device = device(db, acme.id, "ap-1", BOARD).await;
        let credentials = db
            .insert_credentials(&new_credentials(Some(acme.id), "root", "pw"))
            .await
            .unwrap();
        let connection = db
            .insert_connection(
                &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
            )
            .await
            .unwrap();
        assert_eq!(connection.host_key, None, "backend: {}", test_db.backend());

        db.record_host_key(connection.id, "ssh-ed25519 AAAAfirst")
            .await
            .unwrap()
            .unwrap();
        let replaced = db
            .record_host_key(connection.id, "ssh-ed25519 AAAAsecond")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            replaced.host_key.as_deref(),
            Some("ssh-ed25519 AAAAsecond"),
            "backend: {}",
            test_db.backend()
        );
        let (stored, _) = db.connections(device.id).await.unwrap().remove(0);
        assert_eq!(
            stored.host_key.as_deref(),
            Some("ssh-ed25519 AAAAsecond"),
            "backend: {}",
            test_db.backend()
        );
        let missing = db
            .record_host_key(
                flashfleet_models::DeviceConnectionId::new(),
                "ssh-ed25519 AAAA",
            )
            .await
            .unwrap();
        assert!(missing.is_none(), "backend: {}", test_db.backend());
    }
}

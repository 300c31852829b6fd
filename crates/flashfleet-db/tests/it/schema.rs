//! The schema itself: migrations revert and re-apply cleanly, and the database enforces
//! references on both backends.

use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::{
    DeviceRepository, DirectoryRepository, FirmwareRepository, UpgradeRepository,
};
use flashfleet_models::{
    BuildId, CategoryId, DeviceFirmware, DeviceId, ImageId, NewBuild, NewUpgradeOperation,
    OrganizationId, PageRequest, RepoError, Role, Scope, UserId,
};

use crate::support::{BOARD, chain, device, new_device, new_image, organization, user};

#[tokio::test]
async fn migrations_revert_and_reapply_and_the_database_works_afterwards() {
    for test_db in TestDb::all().await {
        chain(test_db.db(), "before").await;
        test_db.redo_migrations().await.unwrap();

        // Reverting dropped every table: the data is gone, the schema is back.
        let db = test_db.db();
        assert_eq!(
            db.list_organizations(&Scope::All, PageRequest::all())
                .await
                .unwrap()
                .count,
            0,
            "backend: {}",
            test_db.backend()
        );
        let chain = chain(db, "after").await;
        let device = device(db, chain.organization.id, "ap-1", BOARD).await;
        let operation = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        db.queue_upgrade(
            &DeviceFirmware::new(device.id, chain.image.id, false),
            &operation,
        )
        .await
        .unwrap();
        // The constraints are back too.
        let again = NewUpgradeOperation::new(device.id, chain.image.id).into_operation();
        assert!(
            matches!(
                db.insert_operation(&again).await,
                Err(RepoError::AlreadyExists { .. })
            ),
            "backend: {}",
            test_db.backend()
        );
        // A second server connecting now finds nothing to migrate and reads the same data.
        let second = Db::connect(&test_db.config()).await.unwrap();
        assert_eq!(
            second.operation(&Scope::All, operation.id).await.unwrap(),
            Some(operation),
            "backend: {}",
            test_db.backend()
        );
    }
}

fn is_missing_reference<T: std::fmt::Debug>(result: &Result<T, RepoError>) -> bool {
    matches!(result, Err(RepoError::MissingReference { .. }))
}

#[tokio::test]
async fn references_to_missing_objects_are_refused_on_both_backends() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let alice = user(db, "alice", false).await;
        let chain = chain(db, "umbrella").await;
        let device = device(db, acme.id, "ap-1", BOARD).await;

        let orphan_device = db
            .insert_device(&new_device(OrganizationId::new(), "orphan", 0))
            .await;
        assert!(
            is_missing_reference(&orphan_device),
            "backend: {}: {orphan_device:?}",
            test_db.backend()
        );
        let orphan_build = db
            .insert_build(&NewBuild::new(CategoryId::new(), "1.0").into_build())
            .await;
        assert!(
            is_missing_reference(&orphan_build),
            "backend: {}: {orphan_build:?}",
            test_db.backend()
        );
        let orphan_image = db.insert_image(&new_image(BuildId::new(), "x.bin")).await;
        assert!(
            is_missing_reference(&orphan_image),
            "backend: {}: {orphan_image:?}",
            test_db.backend()
        );
        let orphan_firmware = db
            .insert_device_firmware(&DeviceFirmware::new(device.id, ImageId::new(), true))
            .await;
        assert!(
            is_missing_reference(&orphan_firmware),
            "backend: {}: {orphan_firmware:?}",
            test_db.backend()
        );
        let orphan_operation = db
            .insert_operation(
                &NewUpgradeOperation::new(DeviceId::new(), chain.image.id).into_operation(),
            )
            .await;
        assert!(
            is_missing_reference(&orphan_operation),
            "backend: {}: {orphan_operation:?}",
            test_db.backend()
        );
        let orphan_membership = db
            .set_membership(UserId::new(), acme.id, Role::Member)
            .await;
        assert!(
            is_missing_reference(&orphan_membership),
            "backend: {}: {orphan_membership:?}",
            test_db.backend()
        );
        let membership_of_nowhere = db
            .set_membership(alice.id, OrganizationId::new(), Role::Member)
            .await;
        assert!(
            is_missing_reference(&membership_of_nowhere),
            "backend: {}: {membership_of_nowhere:?}",
            test_db.backend()
        );
        assert_eq!(
            db.memberships(alice.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
    }
}

//! Categories, builds and images (`FirmwareRepository`), and what deleting them takes along.

use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::{
    BuildFilter, CategoryFilter, DeviceRepository, DirectoryRepository, FirmwareRepository,
    ImageFilter, UpgradeRepository,
};
use flashfleet_models::{
    Build, Category, Constraint, NewBuild, NewCategory, NewFirmwareImage, Page, PageRequest,
    RepoError, Scope, StorageKey,
};

use crate::support::{
    IMAGE_TYPE, ago, build, category, chain, details, device, device_firmware, image, new_build,
    new_image, operation, organization, scope,
};

/// The category filter of an organization slug.
fn of_organization(slug: Option<&str>) -> CategoryFilter {
    CategoryFilter {
        organization_slug: slug.map(str::to_owned),
        ..CategoryFilter::default()
    }
}

/// The image filter of an image type.
fn of_type(image_type: Option<&str>) -> ImageFilter {
    ImageFilter {
        image_type: image_type.map(str::to_owned),
        ..ImageFilter::default()
    }
}

fn sorted_keys(mut keys: Vec<StorageKey>) -> Vec<StorageKey> {
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    keys
}

#[tokio::test]
async fn categories_round_trip_field_by_field() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let mut new_category = NewCategory::new(Some(acme.id), "Access points");
        new_category.description = "Ceiling APs\nsecond line".into();
        new_category.details = details();
        let mut own = new_category.into_category();
        own.created = ago(20);
        own.modified = ago(10);
        let shared = NewCategory::new(None, "Shared").into_category();

        for category in [own, shared] {
            assert_eq!(
                db.insert_category(&category).await.unwrap(),
                category,
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(
                db.category(&Scope::All, category.id).await.unwrap(),
                Some(category),
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn updating_a_category_sets_modified_and_persists_the_changes() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let mut category = NewCategory::new(Some(acme.id), "Old").into_category();
        category.created = ago(60);
        category.modified = category.created;
        db.insert_category(&category).await.unwrap();

        let mut changed = category.clone();
        changed.name = "New".into();
        changed.description = "described".into();
        changed.details = details();
        let updated = db.update_category(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified > category.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            updated,
            Category {
                modified: updated.modified,
                ..changed
            },
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.category(&Scope::All, category.id).await.unwrap(),
            Some(updated),
            "backend: {}",
            test_db.backend()
        );
        let ghost = NewCategory::new(None, "Ghost").into_category();
        assert_eq!(
            db.update_category(&ghost).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

fn is_category_name_conflict(result: &Result<Category, RepoError>) -> bool {
    matches!(
        result,
        Err(RepoError::AlreadyExists {
            constraint: Constraint::CategoryName
        })
    )
}

#[tokio::test]
async fn a_category_name_is_unique_per_organization_and_among_shared_categories() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        category(db, Some(acme.id), "Routers").await;
        // The same name in another organization, and as a shared category, is fine.
        category(db, Some(umbrella.id), "Routers").await;
        category(db, None, "Routers").await;

        let again = db
            .insert_category(&NewCategory::new(Some(acme.id), "Routers").into_category())
            .await;
        assert!(
            is_category_name_conflict(&again),
            "backend: {}: {again:?}",
            test_db.backend()
        );
        let shared_again = db
            .insert_category(&NewCategory::new(None, "Routers").into_category())
            .await;
        assert!(
            is_category_name_conflict(&shared_again),
            "backend: {}: two shared categories with one name: {shared_again:?}",
            test_db.backend()
        );
        // Renaming into a taken name is refused too.
        let mut other = category(db, Some(acme.id), "Switches").await;
        other.name = "Routers".into();
        let renamed = db.update_category(&other).await;
        assert!(
            matches!(
                renamed,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::CategoryName
                })
            ),
            "backend: {}: {renamed:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn categories_of_other_organizations_are_hidden_and_shared_ones_shown_on_request() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let own = category(db, Some(acme.id), "Own").await;
        let foreign = category(db, Some(umbrella.id), "Foreign").await;
        let shared = category(db, None, "Shared").await;

        let with_shared = scope(&[acme.id], true);
        let without_shared = scope(&[acme.id], false);
        assert_eq!(
            db.category(&with_shared, foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.category(&with_shared, shared.id).await.unwrap(),
            Some(shared.clone()),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.category(&without_shared, shared.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        let names = |page: Page<Category>| {
            (
                page.count,
                page.items.into_iter().map(|c| c.name).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            names(
                db.list_categories(&with_shared, &of_organization(None), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (2, vec!["Shared".into(), "Own".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            names(
                db.list_categories(&without_shared, &of_organization(None), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (1, vec![own.name.clone()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            names(
                db.list_categories(&Scope::All, &of_organization(None), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (3, vec!["Shared".into(), "Own".into(), "Foreign".into()]),
            "backend: {}",
            test_db.backend()
        );
        // A slug filter narrows to that organization; a foreign slug shows nothing.
        assert_eq!(
            names(
                db.list_categories(
                    &Scope::All,
                    &of_organization(Some("umbrella")),
                    PageRequest::all()
                )
                .await
                .unwrap()
            ),
            (1, vec!["Foreign".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            names(
                db.list_categories(
                    &with_shared,
                    &of_organization(Some("umbrella")),
                    PageRequest::all()
                )
                .await
                .unwrap()
            ),
            (0, vec![]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn categories_are_listed_by_descending_name_then_newest_first_in_pages() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        for (organization_id, name, minutes_ago) in [
            (acme.id, "beta", 5),
            (acme.id, "alpha", 1),
            (acme.id, "gamma", 3),
            (umbrella.id, "beta", 2),
            (umbrella.id, "delta", 4),
        ] {
            let mut category = NewCategory::new(Some(organization_id), name).into_category();
            category.created = ago(minutes_ago);
            category.modified = category.created;
            db.insert_category(&category).await.unwrap();
        }
        let listed = |page: Page<Category>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|c| (c.name, c.organization_id == Some(acme.id)))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            listed(
                db.list_categories(&Scope::All, &of_organization(None), PageRequest::page(1, 3))
                    .await
                    .unwrap()
            ),
            (
                5,
                vec![
                    ("gamma".into(), true),
                    ("delta".into(), false),
                    // Two "beta": the newer (umbrella's, 2 minutes old) first.
                    ("beta".into(), false),
                ]
            ),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            listed(
                db.list_categories(&Scope::All, &of_organization(None), PageRequest::page(2, 3))
                    .await
                    .unwrap()
            ),
            (5, vec![("beta".into(), true), ("alpha".into(), true)]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn builds_round_trip_with_their_category() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let category = category(db, Some(acme.id), "Routers").await;
        let mut new = NewBuild::new(category.id, "23.05.3");
        new.os = Some("OpenWrt 23.05.3 r23809-234f1a2efa".into());
        new.changelog = "* fixes\n* more fixes".into();
        new.details = details();
        let mut build = new.into_build();
        build.created = ago(100);
        build.modified = ago(50);
        let bare = NewBuild::new(category.id, "23.05.4").into_build();

        for build in [build, bare] {
            assert_eq!(
                db.insert_build(&build).await.unwrap(),
                build,
                "backend: {}",
                test_db.backend()
            );
            assert_eq!(
                db.build(&Scope::All, build.id).await.unwrap(),
                Some((build, category.clone())),
                "backend: {}",
                test_db.backend()
            );
        }
    }
}

#[tokio::test]
async fn updating_a_build_persists_the_changes_and_can_clear_its_os() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let category = category(db, Some(acme.id), "Routers").await;
        let mut original = new_build(&category, "1.0", 30);
        original.os = Some("OpenWrt 1.0".into());
        db.insert_build(&original).await.unwrap();

        let mut changed = original.clone();
        changed.version = "1.0.1".into();
        changed.os = None;
        changed.changelog = "renamed".into();
        changed.details = details();
        let updated = db.update_build(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified > original.modified,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            updated,
            Build {
                modified: updated.modified,
                ..changed
            },
            "backend: {}",
            test_db.backend()
        );
        let (fetched, _) = db.build(&Scope::All, original.id).await.unwrap().unwrap();
        assert_eq!(fetched, updated, "backend: {}", test_db.backend());
        assert_eq!(fetched.os, None, "backend: {}", test_db.backend());
        // The OS identifier it gave up is free for another build.
        build(db, &category, "2.0", Some("OpenWrt 1.0")).await;
        assert_eq!(
            db.update_build(&NewBuild::new(category.id, "x").into_build())
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_build_version_is_unique_within_its_category() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let routers = category(db, Some(acme.id), "Routers").await;
        let switches = category(db, Some(acme.id), "Switches").await;
        build(db, &routers, "1.0", None).await;
        build(db, &switches, "1.0", None).await;

        let again = db
            .insert_build(&NewBuild::new(routers.id, "1.0").into_build())
            .await;
        assert!(
            matches!(
                again,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::BuildVersion
                })
            ),
            "backend: {}: {again:?}",
            test_db.backend()
        );
        let mut renamed = build(db, &routers, "2.0", None).await;
        renamed.version = "1.0".into();
        let update = db.update_build(&renamed).await;
        assert!(
            matches!(
                update,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::BuildVersion
                })
            ),
            "backend: {}: {update:?}",
            test_db.backend()
        );
    }
}

fn os_errors(result: &Result<Build, RepoError>) -> usize {
    match result {
        Err(RepoError::Invalid(errors)) => errors.messages("os").len(),
        _ => 0,
    }
}

fn os_errors_of_update(result: &Result<Option<Build>, RepoError>) -> usize {
    match result {
        Err(RepoError::Invalid(errors)) => errors.messages("os").len(),
        _ => 0,
    }
}

#[tokio::test]
async fn a_build_os_identifier_is_unique_within_an_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let routers = category(db, Some(acme.id), "Routers").await;
        let switches = category(db, Some(acme.id), "Switches").await;
        let foreign = category(db, Some(umbrella.id), "Routers").await;
        let shared = category(db, None, "Shared").await;
        let shared_too = category(db, None, "Shared too").await;
        let os = "OpenWrt 23.05.3 r23809-234f1a2efa";
        build(db, &routers, "1.0", Some(os)).await;

        // Another category of the same organization: refused, on the `os` field.
        let mut same_organization = NewBuild::new(switches.id, "9.9");
        same_organization.os = Some(os.into());
        let refused = db.insert_build(&same_organization.into_build()).await;
        assert!(
            os_errors(&refused) > 0,
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        // Another organization, and a shared category: fine.
        build(db, &foreign, "1.0", Some(os)).await;
        build(db, &shared, "1.0", Some(os)).await;
        // Shared categories count as one organization ("None").
        let mut shared_twice = NewBuild::new(shared_too.id, "1.0");
        shared_twice.os = Some(os.into());
        let refused = db.insert_build(&shared_twice.into_build()).await;
        assert!(
            os_errors(&refused) > 0,
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        // Builds without OS never conflict.
        build(db, &routers, "2.0", None).await;
        build(db, &switches, "2.0", None).await;
        // Updates: keeping its own OS is fine, taking another build's is refused.
        let mut other = build(db, &switches, "3.0", Some("OpenWrt other")).await;
        other.changelog = "unchanged os".into();
        assert!(
            db.update_build(&other).await.unwrap().is_some(),
            "backend: {}",
            test_db.backend()
        );
        other.os = Some(os.into());
        let refused = db.update_build(&other).await;
        assert!(
            os_errors_of_update(&refused) > 0,
            "backend: {}: {refused:?}",
            test_db.backend()
        );
        let (stored, _) = db.build(&Scope::All, other.id).await.unwrap().unwrap();
        assert_eq!(
            stored.os.as_deref(),
            Some("OpenWrt other"),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn builds_are_listed_newest_first_then_by_descending_version() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let category = category(db, Some(acme.id), "Routers").await;
        let same_time = ago(5);
        for (version, minutes_ago) in [("1.0", 30), ("3.0", 1), ("2.0", 10)] {
            db.insert_build(&new_build(&category, version, minutes_ago))
                .await
                .unwrap();
        }
        for version in ["2.5a", "2.5c", "2.5b"] {
            let mut build = new_build(&category, version, 0);
            build.created = same_time;
            build.modified = same_time;
            db.insert_build(&build).await.unwrap();
        }
        let versions = |page: Page<(Build, Category)>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|(build, _)| build.version)
                    .collect::<Vec<_>>(),
            )
        };
        let filter = BuildFilter::default();
        assert_eq!(
            versions(
                db.list_builds(&Scope::All, &filter, PageRequest::page(1, 4))
                    .await
                    .unwrap()
            ),
            (
                6,
                vec!["3.0".into(), "2.5c".into(), "2.5b".into(), "2.5a".into()]
            ),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            versions(
                db.list_builds(&Scope::All, &filter, PageRequest::page(2, 4))
                    .await
                    .unwrap()
            ),
            (6, vec!["2.0".into(), "1.0".into()]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn build_filters_narrow_by_category_version_os_and_organization() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let routers = category(db, Some(acme.id), "Routers").await;
        let switches = category(db, Some(acme.id), "Switches").await;
        let foreign = category(db, Some(umbrella.id), "Routers").await;
        let shared = category(db, None, "Shared").await;
        let r1 = build(db, &routers, "1.0", Some("OpenWrt 1.0")).await;
        let r2 = build(db, &routers, "2.0", Some("OpenWrt 2.0")).await;
        let s1 = build(db, &switches, "1.0", None).await;
        let f1 = build(db, &foreign, "1.0", Some("OpenWrt 1.0")).await;
        let h1 = build(db, &shared, "2.0", None).await;

        let ids = |page: Page<(Build, Category)>| {
            let mut ids: Vec<_> = page.items.iter().map(|(build, _)| build.id).collect();
            ids.sort();
            (page.count, ids)
        };
        let expect = |mut ids: Vec<flashfleet_models::BuildId>| {
            ids.sort();
            (ids.len() as u64, ids)
        };
        let cases = [
            (
                BuildFilter {
                    category_id: Some(routers.id),
                    ..BuildFilter::default()
                },
                vec![r1.id, r2.id],
            ),
            (
                BuildFilter {
                    version: Some("1.0".into()),
                    ..BuildFilter::default()
                },
                vec![r1.id, s1.id, f1.id],
            ),
            (
                BuildFilter {
                    os: Some("OpenWrt 1.0".into()),
                    ..BuildFilter::default()
                },
                vec![r1.id, f1.id],
            ),
            (
                BuildFilter {
                    organization_slug: Some("acme".into()),
                    ..BuildFilter::default()
                },
                vec![r1.id, r2.id, s1.id],
            ),
            (
                BuildFilter {
                    organization_slug: Some("acme".into()),
                    version: Some("1.0".into()),
                    ..BuildFilter::default()
                },
                vec![r1.id, s1.id],
            ),
            (
                BuildFilter {
                    version: Some("2.0".into()),
                    ..BuildFilter::default()
                },
                vec![r2.id, h1.id],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                ids(db
                    .list_builds(&Scope::All, &filter, PageRequest::all())
                    .await
                    .unwrap()),
                expect(expected),
                "backend: {}: {filter:?}",
                test_db.backend()
            );
        }
        // Every listed build comes with its own category.
        let listed = db
            .list_builds(&Scope::All, &BuildFilter::default(), PageRequest::all())
            .await
            .unwrap();
        assert!(
            listed
                .items
                .iter()
                .all(|(build, category)| build.category_id == category.id),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn builds_of_other_organizations_are_hidden_and_shared_ones_shown_on_request() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let own = build(db, &category(db, Some(acme.id), "Own").await, "1", None).await;
        let foreign = build(db, &category(db, Some(umbrella.id), "F").await, "1", None).await;
        let shared = build(db, &category(db, None, "Shared").await, "1", None).await;

        let with_shared = scope(&[acme.id], true);
        let without_shared = scope(&[acme.id], false);
        assert_eq!(
            db.build(&with_shared, foreign.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert!(
            db.build(&with_shared, shared.id).await.unwrap().is_some(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.build(&without_shared, shared.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        let listed_ids = |page: Page<(Build, Category)>| {
            let mut ids: Vec<_> = page.items.into_iter().map(|(build, _)| build.id).collect();
            ids.sort();
            ids
        };
        let mut expected = vec![own.id, shared.id];
        expected.sort();
        assert_eq!(
            listed_ids(
                db.list_builds(&with_shared, &BuildFilter::default(), PageRequest::all())
                    .await
                    .unwrap()
            ),
            expected,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            listed_ids(
                db.list_builds(&without_shared, &BuildFilter::default(), PageRequest::all())
                    .await
                    .unwrap()
            ),
            [own.id],
            "backend: {}",
            test_db.backend()
        );
        let all = db
            .list_builds(&Scope::All, &BuildFilter::default(), PageRequest::all())
            .await
            .unwrap();
        assert_eq!(all.count, 3, "backend: {}", test_db.backend());
    }
}

#[tokio::test]
async fn images_round_trip_including_their_metadata() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let build_id = chain.build.id;
        let mut image = NewFirmwareImage {
            build_id,
            image_type: "x86-64-generic-squashfs-combined.img.gz".into(),
            file_name: "openwrt-x86-64-generic-squashfs-combined.img.gz".into(),
            size: 5_000_000_000,
            sha256: "ABCDEF0123456789".repeat(4),
            storage_key: StorageKey::for_image(build_id, "openwrt-x86-64.img.gz"),
            metadata: Some(serde_json::json!({
                "supported_devices": ["generic"],
                "version": { "dist": "OpenWrt", "version": "23.05.3" },
                "compat_version": "1.0"
            })),
            details: details(),
        }
        .into_image();
        image.created = ago(7);
        image.modified = ago(3);

        assert_eq!(
            db.insert_image(&image).await.unwrap(),
            image,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&Scope::All, image.id).await.unwrap(),
            Some(image.clone()),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&Scope::All, chain.image.id).await.unwrap(),
            Some(chain.image),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn an_image_type_is_unique_within_its_build() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let again = db
            .insert_image(&new_image(chain.build.id, IMAGE_TYPE))
            .await;
        assert!(
            matches!(
                again,
                Err(RepoError::AlreadyExists {
                    constraint: Constraint::ImageType
                })
            ),
            "backend: {}: {again:?}",
            test_db.backend()
        );
        // The same type in another build is fine.
        let next = build(db, &chain.category, "2.0", None).await;
        image(db, &next, IMAGE_TYPE).await;
    }
}

#[tokio::test]
async fn images_are_listed_newest_first_by_build_and_type_within_the_scope() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let build = build(db, &chain.category, "2.0", None).await;
        for (image_type, minutes_ago) in [("a.bin", 3), ("b.bin", 1), ("c.bin", 2)] {
            let mut image = new_image(build.id, image_type);
            image.created = ago(minutes_ago);
            image.modified = image.created;
            db.insert_image(&image).await.unwrap();
        }
        let types = |page: Page<flashfleet_models::FirmwareImage>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|image| image.image_type)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            types(
                db.list_images(
                    &Scope::All,
                    build.id,
                    &of_type(None),
                    PageRequest::page(1, 2)
                )
                .await
                .unwrap()
            ),
            (3, vec!["b.bin".into(), "c.bin".into()]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            types(
                db.list_images(
                    &Scope::All,
                    build.id,
                    &of_type(Some("a.bin")),
                    PageRequest::all()
                )
                .await
                .unwrap()
            ),
            (1, vec!["a.bin".into()]),
            "backend: {}",
            test_db.backend()
        );
        let outsider = scope(&[umbrella.id], true);
        assert_eq!(
            types(
                db.list_images(&outsider, build.id, &of_type(None), PageRequest::all())
                    .await
                    .unwrap()
            ),
            (0, vec![]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&outsider, chain.image.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&scope(&[chain.organization.id], false), chain.image.id)
                .await
                .unwrap(),
            Some(chain.image.clone()),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn images_of_shared_builds_are_visible_only_with_shared_objects() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let shared = build(db, &category(db, None, "Shared").await, "1", None).await;
        let image = image(db, &shared, IMAGE_TYPE).await;
        assert_eq!(
            db.image(&scope(&[acme.id], true), image.id).await.unwrap(),
            Some(image.clone()),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&scope(&[acme.id], false), image.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_a_build_returns_the_storage_keys_of_its_images_and_removes_them() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let second = image(db, &chain.build, "second.bin").await;
        let other_build = build(db, &chain.category, "2.0", None).await;
        let kept = image(db, &other_build, IMAGE_TYPE).await;

        let keys = db.delete_build(chain.build.id).await.unwrap().unwrap();
        assert_eq!(
            sorted_keys(keys),
            sorted_keys(vec![
                chain.image.storage_key.clone(),
                second.storage_key.clone()
            ]),
            "backend: {}",
            test_db.backend()
        );
        for gone in [chain.image.id, second.id] {
            assert_eq!(
                db.image(&Scope::All, gone).await.unwrap(),
                None,
                "backend: {}",
                test_db.backend()
            );
        }
        assert_eq!(
            db.build(&Scope::All, chain.build.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&Scope::All, kept.id).await.unwrap(),
            Some(kept),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.delete_build(chain.build.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // A build without images returns no key.
        assert_eq!(
            db.delete_build(build(db, &chain.category, "3.0", None).await.id)
                .await
                .unwrap(),
            Some(vec![]),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_an_image_keeps_its_operations_and_drops_the_firmware_records_using_it() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let other = image(db, &chain.build, "other.bin").await;
        let on_image = device(db, chain.organization.id, "on-image", "m").await;
        let on_other = device(db, chain.organization.id, "on-other", "m").await;
        device_firmware(db, &on_image, &chain.image, true).await;
        let kept_firmware = device_firmware(db, &on_other, &other, true).await;
        let operation = operation(db, &on_image, &chain.image).await;

        assert_eq!(
            db.delete_image(chain.image.id).await.unwrap(),
            Some(chain.image.storage_key.clone()),
            "backend: {}",
            test_db.backend()
        );
        let kept = db
            .operation(&Scope::All, operation.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.image_id, None, "backend: {}", test_db.backend());
        assert_eq!(
            kept.status,
            operation.status,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(on_image.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.device_firmware(on_other.id).await.unwrap(),
            Some(kept_firmware),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.delete_image(chain.image.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_a_category_returns_the_storage_keys_of_all_its_images() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let next = build(db, &chain.category, "2.0", None).await;
        let next_image = image(db, &next, IMAGE_TYPE).await;
        let elsewhere = category(db, Some(chain.organization.id), "Elsewhere").await;
        let kept = image(db, &build(db, &elsewhere, "1.0", None).await, IMAGE_TYPE).await;

        let keys = db
            .delete_category(chain.category.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            sorted_keys(keys),
            sorted_keys(vec![chain.image.storage_key, next_image.storage_key]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.build(&Scope::All, next.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&Scope::All, kept.id).await.unwrap(),
            Some(kept),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.delete_category(chain.category.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_an_organization_returns_the_keys_of_all_its_images_and_removes_its_objects() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        let second_category = category(db, Some(chain.organization.id), "Switches").await;
        let second = image(
            db,
            &build(db, &second_category, "1.0", None).await,
            IMAGE_TYPE,
        )
        .await;
        let device = device(db, chain.organization.id, "ap", "m").await;
        device_firmware(db, &device, &chain.image, true).await;
        let operation = operation(db, &device, &chain.image).await;
        let umbrella = crate::support::chain(db, "umbrella").await;
        let shared = image(
            db,
            &build(db, &category(db, None, "Shared").await, "1", None).await,
            IMAGE_TYPE,
        )
        .await;

        let keys = db
            .delete_organization(chain.organization.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            sorted_keys(keys),
            sorted_keys(vec![chain.image.storage_key, second.storage_key]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.category(&Scope::All, chain.category.id).await.unwrap(),
            None,
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
            db.operation(&Scope::All, operation.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // Other organizations and shared firmware stay.
        assert_eq!(
            db.image(&Scope::All, umbrella.image.id).await.unwrap(),
            Some(umbrella.image),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.image(&Scope::All, shared.id).await.unwrap(),
            Some(shared),
            "backend: {}",
            test_db.backend()
        );
    }
}

//! The order of every list and its new filters: each ordering field ascending and descending
//! (alone and in pairs), the default order and then the id as tie-breakers, text in byte order
//! on both backends, pages that neither overlap nor skip a row, the scope still applied, the
//! creation-time filters of batches and the organization filter of operations.
//!
//! The fixtures are full of ties, so each expected order depends on the tie-breakers. It is
//! computed here by sorting the stored rows with the rule the repository promises (keys, then
//! the list's default order, then the id, text compared byte by byte), and a few orders are also
//! spelled out literally.

use std::cmp::Ordering;

use chrono::{DateTime, Duration, Utc};
use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::{
    BatchFilter, BuildFilter, CategoryFilter, FirmwareRepository, ImageFilter, OperationFilter,
    UpgradeRepository,
};
use flashfleet_models::{
    BatchOrder, BatchStatus, BuildOrder, CategoryOrder, ImageOrder, OperationOrder, Page,
    PageRequest, Scope, SortKey, UpgradeStatus,
};

use crate::support::{
    BOARD, ago, category, chain, device, new_batch, new_build, new_image, new_operation,
    organization, scope,
};

/// A time as a string that sorts like the time (fixed width, whole microseconds).
fn time_key(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The order `rows` must be listed in: by `keys`, then by `defaults`, then by id; `value` gives
/// a row's value of a field as a string that sorts like it (text compares bytes, as the
/// database must).
fn expected_order<T, F: Copy>(
    rows: &[T],
    keys: &[SortKey<F>],
    defaults: &[SortKey<F>],
    value: &impl Fn(&T, F) -> String,
    id: &impl Fn(&T) -> String,
) -> Vec<String> {
    let mut sorted: Vec<&T> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        keys.iter()
            .chain(defaults)
            .map(|key| {
                let ordering = value(a, key.field).cmp(&value(b, key.field));
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| id(a).cmp(&id(b)))
    });
    sorted.into_iter().map(id).collect()
}

/// Every ordering a list accepts with one or two keys: each field in each direction, and each
/// pair of different fields in each combination of directions.
fn orderings<F: Copy + PartialEq>(fields: &[F]) -> Vec<Vec<SortKey<F>>> {
    let both = |field: F| [SortKey::ascending(field), SortKey::descending(field)];
    let mut orderings: Vec<Vec<SortKey<F>>> = Vec::new();
    for &first in fields {
        for first_key in both(first) {
            orderings.push(vec![first_key]);
            for &second in fields.iter().filter(|&&second| second != first) {
                for second_key in both(second) {
                    orderings.push(vec![first_key, second_key]);
                }
            }
        }
    }
    orderings
}

/// The ids of a page, with its count.
fn ids_of<T>(page: Page<T>, id: impl Fn(&T) -> String) -> (u64, Vec<String>) {
    (page.count, page.items.iter().map(id).collect())
}

/// Checks `list` (ordering and page in; count and ids out) against the expected order of `rows`
/// for every ordering of `fields` and for no ordering at all (the default), both whole and in
/// pages of two, whose concatenation must be the whole list: every row exactly once.
async fn check_orders<T, F>(
    backend: &str,
    rows: &[T],
    fields: &[F],
    defaults: &[SortKey<F>],
    value: impl Fn(&T, F) -> String,
    id: impl Fn(&T) -> String,
    list: impl AsyncFn(Vec<SortKey<F>>, PageRequest) -> (u64, Vec<String>),
) where
    F: Copy + PartialEq + std::fmt::Debug,
{
    let count = u64::try_from(rows.len()).expect("a fixture of a few rows");
    let mut cases = orderings(fields);
    cases.push(Vec::new());
    for ordering in cases {
        let expected = expected_order(rows, &ordering, defaults, &value, &id);
        assert_eq!(
            list(ordering.clone(), PageRequest::all()).await,
            (count, expected.clone()),
            "backend: {backend}: ordering {ordering:?}"
        );
        let mut paged = Vec::new();
        for page in 1..=count.div_ceil(2) {
            let (page_count, ids) = list(ordering.clone(), PageRequest::page(page, 2)).await;
            assert_eq!(page_count, count, "backend: {backend}: {ordering:?}");
            paged.extend(ids);
        }
        assert_eq!(paged, expected, "backend: {backend}: pages of {ordering:?}");
    }
}

#[tokio::test]
async fn categories_are_ordered_by_each_field_then_by_name_and_age_then_id() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend().to_string();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut stored = Vec::new();
        for (organization_id, name, created, modified) in [
            (Some(acme.id), "alpha", 5, 1),
            (Some(acme.id), "Beta", 3, 1),
            (Some(acme.id), "Émile", 3, 4),
            (Some(acme.id), "_zeta", 1, 2),
            (Some(umbrella.id), "alpha", 5, 6),
            (None, "beta", 2, 2),
        ] {
            let mut category =
                flashfleet_models::NewCategory::new(organization_id, name).into_category();
            category.created = at(created);
            category.modified = at(modified);
            stored.push(db.insert_category(&category).await.unwrap());
        }
        let value = |category: &flashfleet_models::Category, field: CategoryOrder| match field {
            CategoryOrder::Name => category.name.clone(),
            CategoryOrder::Created => time_key(category.created),
            CategoryOrder::Modified => time_key(category.modified),
        };
        let id = |category: &flashfleet_models::Category| category.id.to_string();
        let defaults = [
            SortKey::descending(CategoryOrder::Name),
            SortKey::descending(CategoryOrder::Created),
        ];
        let of_acme = scope(&[acme.id], true);
        for (scope, visible) in [
            (Scope::All, stored.clone()),
            (
                of_acme.clone(),
                stored
                    .iter()
                    .filter(|category| of_acme.contains(category.organization_id))
                    .cloned()
                    .collect(),
            ),
        ] {
            check_orders(
                &backend,
                &visible,
                CategoryOrder::ALL,
                &defaults,
                value,
                id,
                async |ordering, page| {
                    let filter = CategoryFilter {
                        ordering,
                        ..CategoryFilter::default()
                    };
                    ids_of(db.list_categories(&scope, &filter, page).await.unwrap(), id)
                },
            )
            .await;
        }
        // Byte order, spelled out: upper case, then `_`, then lower case, then non-ASCII.
        let filter = CategoryFilter {
            organization_slug: Some("acme".into()),
            ordering: SortKey::parse_list("name").unwrap(),
        };
        let names: Vec<String> = db
            .list_categories(&Scope::All, &filter, PageRequest::all())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|category| category.name)
            .collect();
        assert_eq!(
            names,
            ["Beta", "_zeta", "alpha", "Émile"],
            "backend: {backend}"
        );
    }
}

#[tokio::test]
async fn builds_are_ordered_by_each_field_then_newest_first_and_by_version_then_id() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend().to_string();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let shared = category(db, None, "Shared").await;
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut stored = vec![
            (acme.build.clone(), acme.category.clone()),
            (umbrella.build.clone(), umbrella.category.clone()),
        ];
        for (category, version, created, modified) in [
            (&acme.category, "1.10", 5, 5),
            (&acme.category, "1.9", 4, 2),
            (&acme.category, "2.0-RC", 4, 2),
            (&acme.category, "2.0-rc", 1, 3),
            (&umbrella.category, "1.9", 5, 1),
            (&shared, "1.10", 2, 3),
        ] {
            let mut build = new_build(category, version, 0);
            build.created = at(created);
            build.modified = at(modified);
            stored.push((db.insert_build(&build).await.unwrap(), category.clone()));
        }
        let value = |(build, _): &(flashfleet_models::Build, flashfleet_models::Category),
                     field: BuildOrder| match field {
            BuildOrder::Version => build.version.clone(),
            BuildOrder::Created => time_key(build.created),
            BuildOrder::Modified => time_key(build.modified),
        };
        let id = |(build, _): &(flashfleet_models::Build, flashfleet_models::Category)| {
            build.id.to_string()
        };
        let defaults = [
            SortKey::descending(BuildOrder::Created),
            SortKey::descending(BuildOrder::Version),
        ];
        let of_acme = scope(&[acme.organization.id], true);
        for (scope, visible) in [
            (Scope::All, stored.clone()),
            (
                of_acme.clone(),
                stored
                    .iter()
                    .filter(|(_, category)| of_acme.contains(category.organization_id))
                    .cloned()
                    .collect(),
            ),
        ] {
            check_orders(
                &backend,
                &visible,
                BuildOrder::ALL,
                &defaults,
                value,
                id,
                async |ordering, page| {
                    let filter = BuildFilter {
                        ordering,
                        ..BuildFilter::default()
                    };
                    ids_of(db.list_builds(&scope, &filter, page).await.unwrap(), id)
                },
            )
            .await;
        }
        // Versions are text in byte order, as upstream's: `1.10` comes before `1.9`.
        let filter = BuildFilter {
            category_id: Some(acme.category.id),
            ordering: SortKey::parse_list("-version").unwrap(),
            ..BuildFilter::default()
        };
        let versions: Vec<String> = db
            .list_builds(&Scope::All, &filter, PageRequest::all())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|(build, _)| build.version)
            .collect();
        assert_eq!(
            versions,
            ["2.0-rc", "2.0-RC", "1.9", "1.10", "1.0"],
            "backend: {backend}"
        );
    }
}

#[tokio::test]
async fn images_are_ordered_by_each_field_then_newest_first_then_id() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend().to_string();
        let acme = chain(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut stored = vec![acme.image.clone()];
        for (image_type, created, modified) in [
            ("a.bin", 3, 1),
            ("A.bin", 3, 2),
            ("_x.bin", 1, 2),
            ("b.bin", 4, 1),
            ("é.bin", 3, 5),
        ] {
            let mut image = new_image(acme.build.id, image_type);
            image.created = at(created);
            image.modified = at(modified);
            stored.push(db.insert_image(&image).await.unwrap());
        }
        // An image of another build, never listed.
        let other_build = db
            .insert_build(&new_build(&acme.category, "2.0", 0))
            .await
            .unwrap();
        db.insert_image(&new_image(other_build.id, "a.bin"))
            .await
            .unwrap();
        let value = |image: &flashfleet_models::FirmwareImage, field: ImageOrder| match field {
            ImageOrder::Type => image.image_type.clone(),
            ImageOrder::Created => time_key(image.created),
            ImageOrder::Modified => time_key(image.modified),
        };
        let id = |image: &flashfleet_models::FirmwareImage| image.id.to_string();
        let defaults = [SortKey::descending(ImageOrder::Created)];
        for (scope, visible) in [
            (Scope::All, stored.clone()),
            (scope(&[acme.organization.id], false), stored.clone()),
            (scope(&[umbrella.id], true), Vec::new()),
        ] {
            check_orders(
                &backend,
                &visible,
                ImageOrder::ALL,
                &defaults,
                value,
                id,
                async |ordering, page| {
                    let filter = ImageFilter {
                        ordering,
                        ..ImageFilter::default()
                    };
                    ids_of(
                        db.list_images(&scope, acme.build.id, &filter, page)
                            .await
                            .unwrap(),
                        id,
                    )
                },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn batches_are_ordered_by_each_field_then_newest_first_then_id() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend().to_string();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let shared = db
            .insert_build(&new_build(&category(db, None, "Shared").await, "1.0", 0))
            .await
            .unwrap();
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut stored = Vec::new();
        for (build, organization_id, created, modified) in [
            (&acme.build, Some(acme.organization.id), 3, 3),
            (&acme.build, Some(acme.organization.id), 3, 1),
            (&umbrella.build, Some(umbrella.organization.id), 2, 1),
            (&shared, None, 1, 3),
            (&acme.build, Some(acme.organization.id), 4, 3),
            (&acme.build, Some(acme.organization.id), 4, 3),
        ] {
            let mut batch = new_batch(build, BatchStatus::Idle, 0);
            batch.created = at(created);
            batch.modified = at(modified);
            stored.push((db.insert_batch(&batch).await.unwrap(), organization_id));
        }
        let value = |(batch, _): &(
            flashfleet_models::BatchUpgradeOperation,
            Option<flashfleet_models::OrganizationId>,
        ),
                     field: BatchOrder| match field {
            BatchOrder::Created => time_key(batch.created),
            BatchOrder::Modified => time_key(batch.modified),
        };
        let id = |(batch, _): &(
            flashfleet_models::BatchUpgradeOperation,
            Option<flashfleet_models::OrganizationId>,
        )| batch.id.to_string();
        let defaults = [SortKey::descending(BatchOrder::Created)];
        let of_acme = scope(&[acme.organization.id], false);
        for (scope, visible) in [
            (Scope::All, stored.clone()),
            (
                of_acme.clone(),
                stored
                    .iter()
                    .filter(|(_, organization_id)| of_acme.contains(*organization_id))
                    .cloned()
                    .collect(),
            ),
        ] {
            check_orders(
                &backend,
                &visible,
                BatchOrder::ALL,
                &defaults,
                value,
                id,
                async |ordering, page| {
                    let filter = BatchFilter {
                        ordering,
                        ..BatchFilter::default()
                    };
                    ids_of(
                        db.list_batches(&scope, &filter, page).await.unwrap(),
                        |batch| batch.id.to_string(),
                    )
                },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn operations_are_ordered_by_each_field_then_newest_first_then_id() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let backend = test_db.backend().to_string();
        let acme = chain(db, "acme").await;
        let umbrella = chain(db, "umbrella").await;
        let mut devices = Vec::new();
        for name in ["d1", "d2", "d3"] {
            devices.push(device(db, acme.organization.id, name, BOARD).await);
        }
        let foreign = device(db, umbrella.organization.id, "u1", BOARD).await;
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut stored = Vec::new();
        for (device, image, created, modified) in [
            (&devices[0], &acme.image, 5, 5),
            (&devices[0], &acme.image, 3, 1),
            (&devices[1], &acme.image, 3, 3),
            (&devices[2], &acme.image, 1, 1),
            (&foreign, &umbrella.image, 3, 2),
            (&devices[1], &acme.image, 6, 1),
            (&devices[1], &acme.image, 6, 1),
        ] {
            let mut operation = new_operation(device, image, UpgradeStatus::Success, 0);
            operation.created = at(created);
            operation.modified = at(modified);
            stored.push((
                db.insert_operation(&operation).await.unwrap(),
                device.organization_id,
            ));
        }
        let value = |(operation, _): &(
            flashfleet_models::UpgradeOperation,
            flashfleet_models::OrganizationId,
        ),
                     field: OperationOrder| match field {
            OperationOrder::Device => operation.device_id.to_string(),
            OperationOrder::Created => time_key(operation.created),
            OperationOrder::Modified => time_key(operation.modified),
        };
        let id = |(operation, _): &(
            flashfleet_models::UpgradeOperation,
            flashfleet_models::OrganizationId,
        )| { operation.id.to_string() };
        let defaults = [SortKey::descending(OperationOrder::Created)];
        let of_acme = scope(&[acme.organization.id], true);
        let of_acme_only = |(_, organization_id): &&(_, flashfleet_models::OrganizationId)| {
            *organization_id == acme.organization.id
        };
        let acme_rows: Vec<_> = stored.iter().filter(of_acme_only).cloned().collect();
        let cases = [
            (Scope::All, OperationFilter::default(), stored.clone()),
            (
                of_acme.clone(),
                OperationFilter::default(),
                acme_rows.clone(),
            ),
            // Upstream's `device__organization`, alone and within a scope that hides it.
            (
                Scope::All,
                OperationFilter {
                    organization_id: Some(acme.organization.id),
                    ..OperationFilter::default()
                },
                acme_rows.clone(),
            ),
            (
                scope(&[umbrella.organization.id], true),
                OperationFilter {
                    organization_id: Some(acme.organization.id),
                    ..OperationFilter::default()
                },
                Vec::new(),
            ),
            // With the slug of the same organization, and of another one.
            (
                Scope::All,
                OperationFilter {
                    organization_id: Some(acme.organization.id),
                    organization_slug: Some("acme".into()),
                    ..OperationFilter::default()
                },
                acme_rows.clone(),
            ),
            (
                Scope::All,
                OperationFilter {
                    organization_id: Some(acme.organization.id),
                    organization_slug: Some("umbrella".into()),
                    ..OperationFilter::default()
                },
                Vec::new(),
            ),
        ];
        for (scope, filter, visible) in cases {
            check_orders(
                &backend,
                &visible,
                OperationOrder::ALL,
                &defaults,
                value,
                id,
                async |ordering, page| {
                    let filter = OperationFilter {
                        ordering,
                        ..filter.clone()
                    };
                    ids_of(
                        db.list_operations(&scope, &filter, page).await.unwrap(),
                        |operation| operation.id.to_string(),
                    )
                },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn operations_that_tie_on_every_field_are_paged_by_id_each_exactly_once() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = chain(db, "acme").await;
        let device = device(db, acme.organization.id, "ap-1", BOARD).await;
        let created = ago(1);
        let mut ids = Vec::new();
        for _ in 0..9 {
            let mut operation = new_operation(&device, &acme.image, UpgradeStatus::Failed, 0);
            operation.created = created;
            operation.modified = created;
            ids.push(db.insert_operation(&operation).await.unwrap().id);
        }
        ids.sort_by_key(ToString::to_string);
        for ordering in ["", "device", "-device_id,modified", "-modified,created"] {
            let filter = OperationFilter {
                device_id: Some(device.id),
                ordering: SortKey::parse_list(ordering).unwrap(),
                ..OperationFilter::default()
            };
            for size in 1..=4 {
                let mut listed = Vec::new();
                for page in 1..=9_u64.div_ceil(size) {
                    let page = db
                        .list_operations(&Scope::All, &filter, PageRequest::page(page, size))
                        .await
                        .unwrap();
                    assert_eq!(page.count, 9, "backend: {}", test_db.backend());
                    listed.extend(page.items.into_iter().map(|operation| operation.id));
                }
                assert_eq!(
                    listed,
                    ids,
                    "backend: {}: ordering {ordering:?}, pages of {size}",
                    test_db.backend()
                );
            }
        }
    }
}

#[tokio::test]
async fn batches_are_filtered_by_exact_creation_time_and_by_a_half_open_range() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = chain(db, "acme").await;
        let base = ago(0);
        let at = |minutes: i64| base - Duration::minutes(minutes);
        let mut batches = Vec::new();
        for minutes in [30, 20, 10] {
            let mut batch = new_batch(&acme.build, BatchStatus::Idle, 0);
            batch.created = at(minutes);
            batch.modified = batch.created;
            batches.push(db.insert_batch(&batch).await.unwrap().id);
        }
        let [oldest, middle, newest] = [batches[0], batches[1], batches[2]];
        let one_microsecond = Duration::microseconds(1);
        let cases = [
            (Some(at(20)), None, None, vec![middle]),
            (Some(at(20) + one_microsecond), None, None, vec![]),
            (None, Some(at(20)), None, vec![newest, middle]),
            (None, Some(at(20) + one_microsecond), None, vec![newest]),
            (None, None, Some(at(20)), vec![oldest]),
            (
                None,
                None,
                Some(at(20) + one_microsecond),
                vec![middle, oldest],
            ),
            (None, Some(at(30)), Some(at(10)), vec![middle, oldest]),
            (None, Some(at(10)), Some(at(30)), vec![]),
            (Some(at(10)), Some(at(30)), Some(at(5)), vec![newest]),
            (Some(at(30)), Some(at(20)), None, vec![]),
        ];
        for (created, created_after, created_before, expected) in cases {
            let filter = BatchFilter {
                created,
                created_after,
                created_before,
                ..BatchFilter::default()
            };
            let page = db
                .list_batches(&Scope::All, &filter, PageRequest::all())
                .await
                .unwrap();
            assert_eq!(
                (
                    page.count,
                    page.items
                        .into_iter()
                        .map(|batch| batch.id)
                        .collect::<Vec<_>>()
                ),
                (u64::try_from(expected.len()).unwrap(), expected),
                "backend: {}: {filter:?}",
                test_db.backend()
            );
        }
        // The filters combine with the scope.
        let umbrella = organization(db, "umbrella").await;
        let filter = BatchFilter {
            created: Some(at(20)),
            ..BatchFilter::default()
        };
        assert_eq!(
            db.list_batches(&scope(&[umbrella.id], true), &filter, PageRequest::all())
                .await
                .unwrap()
                .count,
            0,
            "backend: {}",
            test_db.backend()
        );
    }
}

/// `Db::optimize` gives the planner the statistics of the tables that lack them (the build list
/// of a large catalogue walks its index only with them): on SQLite they are in `sqlite_stat1`;
/// on PostgreSQL `ANALYZE` of flashfleet's tables must run in the test's own schema.
#[tokio::test]
async fn optimize_stores_the_planner_statistics() {
    use diesel::{Connection, RunQueryDsl};
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let chain = chain(db, "acme").await;
        for index in 0..300 {
            db.insert_build(&new_build(&chain.category, &format!("2.{index}"), index))
                .await
                .unwrap();
        }
        db.optimize().await.unwrap();
        db.optimize().await.unwrap();
        if test_db.backend() == flashfleet_db::Backend::Sqlite {
            let path = test_db.url().trim_start_matches("sqlite://");
            let mut connection = diesel::SqliteConnection::establish(path).unwrap();
            let analyzed: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'builds')",
            ))
            .get_result(&mut connection)
            .unwrap();
            assert!(analyzed > 0, "no statistics of builds");
        }
        let page = db
            .list_builds(
                &Scope::All,
                &BuildFilter::default(),
                PageRequest::page(1, 10),
            )
            .await
            .unwrap();
        assert_eq!(page.count, 301);
        assert_eq!(page.items.len(), 10);
    }
}

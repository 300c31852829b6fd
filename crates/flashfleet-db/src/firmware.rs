//! [`FirmwareRepository`] on the database: categories, builds and images.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use flashfleet_models::build::build_os_conflict;
use flashfleet_models::repository::{BuildFilter, CategoryFilter, FirmwareRepository, ImageFilter};
use flashfleet_models::{
    Build, BuildId, BuildOrder, Category, CategoryId, CategoryOrder, FirmwareImage, ImageId,
    ImageOrder, Page, PageRequest, RepoError, RepoResult, Scope, StorageKey, time,
};

use crate::directory::{scope_ids, scope_includes_shared};
use crate::error::DbError;
use crate::ordering::then_order_by_keys;
use crate::pool::{Db, with_conn, with_transaction};
use crate::rows::{BuildRow, CategoryRow, FirmwareImageRow, convert_all, id_text, naive};
use crate::schema::{builds, categories, firmware_images, organizations};

/// Narrows a boxed query to categories in `$scope` (`$ids`/`$shared` from `scope_ids` and
/// `scope_includes_shared`).
macro_rules! filter_category_scope {
    ($query:expr, $ids:expr, $shared:expr) => {{
        let mut query = $query;
        if let Some(ids) = $ids {
            query = if $shared {
                query.filter(
                    categories::organization_id
                        .eq_any(ids.clone())
                        .or(categories::organization_id.is_null()),
                )
            } else {
                query.filter(categories::organization_id.eq_any(ids.clone()))
            };
        }
        query
    }};
}

#[async_trait]
impl FirmwareRepository for Db {
    async fn insert_category(&self, category: &Category) -> RepoResult<Category> {
        let row = CategoryRow::from_model(category);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(categories::table)
                .values(&row)
                .returning(CategoryRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn category(&self, scope: &Scope, id: CategoryId) -> RepoResult<Option<Category>> {
        let category = with_conn!(self, |connection| {
            let row = categories::table
                .find(id_text(id))
                .select(CategoryRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(CategoryRow::into_model).transpose()
        })?;
        Ok(category.filter(|category| scope.contains(category.organization_id)))
    }

    async fn list_categories(
        &self,
        scope: &Scope,
        filter: &CategoryFilter,
        page: PageRequest,
    ) -> RepoResult<Page<Category>> {
        let ids = scope_ids(scope);
        let shared = scope_includes_shared(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query =
                    filter_category_scope!(categories::table.into_boxed(), &ids, shared);
                if let Some(slug) = &filter.organization_slug {
                    let organization = organizations::table
                        .filter(organizations::slug.eq(slug.clone()))
                        .select(organizations::id.nullable());
                    query = query.filter(categories::organization_id.eq_any(organization));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let ordered = then_order_by_keys!(filtered(), &filter.ordering, {
                CategoryOrder::Name => categories::name,
                CategoryOrder::Created => categories::created,
                CategoryOrder::Modified => categories::modified,
            });
            let rows = ordered
                .then_order_by((
                    categories::name.desc(),
                    categories::created.desc(),
                    categories::id.asc(),
                ))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(CategoryRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, CategoryRow::into_model)?,
            })
        })?)
    }

    async fn update_category(&self, category: &Category) -> RepoResult<Option<Category>> {
        let mut row = CategoryRow::from_model(category);
        row.modified = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(categories::table.find(row.id.clone()))
                .set(&row)
                .returning(CategoryRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(CategoryRow::into_model).transpose()
        })?)
    }

    async fn delete_category(&self, id: CategoryId) -> RepoResult<Option<Vec<StorageKey>>> {
        let id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let keys: Vec<String> = firmware_images::table
                .inner_join(builds::table)
                .filter(builds::category_id.eq(&id))
                .select(firmware_images::storage_key)
                .load(connection)
                .await?;
            let deleted = diesel::delete(categories::table.find(&id))
                .execute(connection)
                .await?;
            Ok((deleted > 0).then(|| keys.into_iter().map(StorageKey::from_stored).collect()))
        })?)
    }

    async fn insert_build(&self, build: &Build) -> RepoResult<Build> {
        let row = BuildRow::from_model(build);
        Ok(with_transaction!(self, |connection| {
            check_build_os_unique!(connection, &row);
            let stored = diesel::insert_into(builds::table)
                .values(&row)
                .returning(BuildRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn build(&self, scope: &Scope, id: BuildId) -> RepoResult<Option<(Build, Category)>> {
        let found = with_conn!(self, |connection| {
            let row = builds::table
                .inner_join(categories::table)
                .filter(builds::id.eq(id_text(id)))
                .select((BuildRow::as_select(), CategoryRow::as_select()))
                .first(connection)
                .await
                .optional()?;
            row.map(|(build, category)| Ok((build.into_model()?, category.into_model()?)))
                .transpose()
        })?;
        Ok(found.filter(|(_, category)| scope.contains(category.organization_id)))
    }

    async fn list_builds(
        &self,
        scope: &Scope,
        filter: &BuildFilter,
        page: PageRequest,
    ) -> RepoResult<Page<(Build, Category)>> {
        let ids = scope_ids(scope);
        let shared = scope_includes_shared(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = filter_category_scope!(
                    builds::table.inner_join(categories::table).into_boxed(),
                    &ids,
                    shared
                );
                if let Some(category_id) = filter.category_id {
                    query = query.filter(builds::category_id.eq(id_text(category_id)));
                }
                if let Some(version) = &filter.version {
                    query = query.filter(builds::version.eq(version.clone()));
                }
                if let Some(os) = &filter.os {
                    query = query.filter(builds::os.eq(os.clone()));
                }
                if let Some(slug) = &filter.organization_slug {
                    let organization = organizations::table
                        .filter(organizations::slug.eq(slug.clone()))
                        .select(organizations::id.nullable());
                    query = query.filter(categories::organization_id.eq_any(organization));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let ordered = then_order_by_keys!(filtered(), &filter.ordering, {
                BuildOrder::Version => builds::version,
                BuildOrder::Created => builds::created,
                BuildOrder::Modified => builds::modified,
            });
            let rows = ordered
                .then_order_by((
                    builds::created.desc(),
                    builds::version.desc(),
                    builds::id.asc(),
                ))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select((BuildRow::as_select(), CategoryRow::as_select()))
                .load(connection)
                .await?;
            let items = convert_all(rows, |(build, category)| {
                Ok((build.into_model()?, category.into_model()?))
            })?;
            Ok(Page {
                count: count.unsigned_abs(),
                items,
            })
        })?)
    }

    async fn update_build(&self, build: &Build) -> RepoResult<Option<Build>> {
        let mut row = BuildRow::from_model(build);
        row.modified = naive(time::now());
        Ok(with_transaction!(self, |connection| {
            check_build_os_unique!(connection, &row);
            let stored = diesel::update(builds::table.find(row.id.clone()))
                .set(&row)
                .returning(BuildRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(BuildRow::into_model).transpose()
        })?)
    }

    async fn delete_build(&self, id: BuildId) -> RepoResult<Option<Vec<StorageKey>>> {
        let id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let keys: Vec<String> = firmware_images::table
                .filter(firmware_images::build_id.eq(&id))
                .select(firmware_images::storage_key)
                .load(connection)
                .await?;
            let deleted = diesel::delete(builds::table.find(&id))
                .execute(connection)
                .await?;
            Ok((deleted > 0).then(|| keys.into_iter().map(StorageKey::from_stored).collect()))
        })?)
    }

    async fn insert_image(&self, image: &FirmwareImage) -> RepoResult<FirmwareImage> {
        let row = FirmwareImageRow::from_model(image)?;
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(firmware_images::table)
                .values(&row)
                .returning(FirmwareImageRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn image(&self, scope: &Scope, id: ImageId) -> RepoResult<Option<FirmwareImage>> {
        let found = with_conn!(self, |connection| {
            let row = firmware_images::table
                .inner_join(builds::table.inner_join(categories::table))
                .filter(firmware_images::id.eq(id_text(id)))
                .select((FirmwareImageRow::as_select(), categories::organization_id))
                .first::<(FirmwareImageRow, Option<String>)>(connection)
                .await
                .optional()?;
            row.map(|(image, organization_id)| {
                let organization_id = organization_id
                    .map(|id| crate::rows::parse_id(&id))
                    .transpose()?;
                Ok((image.into_model()?, organization_id))
            })
            .transpose()
        })?;
        Ok(found
            .filter(|(_, organization_id)| scope.contains(*organization_id))
            .map(|(image, _)| image))
    }

    async fn list_images(
        &self,
        scope: &Scope,
        build_id: BuildId,
        filter: &ImageFilter,
        page: PageRequest,
    ) -> RepoResult<Page<FirmwareImage>> {
        let ids = scope_ids(scope);
        let shared = scope_includes_shared(scope);
        let build_id = id_text(build_id);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = filter_category_scope!(
                    firmware_images::table
                        .inner_join(builds::table.inner_join(categories::table))
                        .filter(firmware_images::build_id.eq(build_id.clone()))
                        .into_boxed(),
                    &ids,
                    shared
                );
                if let Some(image_type) = &filter.image_type {
                    query = query.filter(firmware_images::image_type.eq(image_type.clone()));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let ordered = then_order_by_keys!(filtered(), &filter.ordering, {
                ImageOrder::Type => firmware_images::image_type,
                ImageOrder::Created => firmware_images::created,
                ImageOrder::Modified => firmware_images::modified,
            });
            let rows = ordered
                .then_order_by((firmware_images::created.desc(), firmware_images::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(FirmwareImageRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, FirmwareImageRow::into_model)?,
            })
        })?)
    }

    async fn delete_image(&self, id: ImageId) -> RepoResult<Option<StorageKey>> {
        let id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let key: Option<String> = firmware_images::table
                .find(&id)
                .select(firmware_images::storage_key)
                .first(connection)
                .await
                .optional()?;
            diesel::delete(firmware_images::table.find(&id))
                .execute(connection)
                .await?;
            Ok(key.map(StorageKey::from_stored))
        })?)
    }
}

/// Refuses a build whose OS identifier another build of the same organization (or, for a shared
/// category, another shared build) already has (upstream `Build.clean()`); run inside the
/// transaction that writes the build.
macro_rules! check_build_os_unique {
    ($connection:expr, $row:expr) => {{
        let row: &BuildRow = $row;
        if let Some(os) = &row.os {
            let organization_id: Option<String> = categories::table
                .find(&row.category_id)
                .select(categories::organization_id)
                .first(&mut *$connection)
                .await
                .optional()?
                .flatten();
            let lock_key = format!(
                "build-os:{}",
                organization_id.as_deref().unwrap_or("shared")
            );
            crate::pool::RuleLock::lock_rule(&mut *$connection, &lock_key).await?;
            let mut same_os = builds::table
                .inner_join(categories::table)
                .filter(builds::os.eq(os))
                .filter(builds::id.ne(&row.id))
                .into_boxed();
            same_os = match &organization_id {
                Some(organization_id) => {
                    same_os.filter(categories::organization_id.eq(organization_id))
                }
                None => same_os.filter(categories::organization_id.is_null()),
            };
            let conflicts: i64 = same_os.count().get_result(&mut *$connection).await?;
            if conflicts > 0 {
                let organization_name: Option<String> = match &organization_id {
                    Some(organization_id) => organizations::table
                        .find(organization_id)
                        .select(organizations::name)
                        .first(&mut *$connection)
                        .await
                        .optional()?,
                    None => None,
                };
                return Err(DbError::Domain(RepoError::Invalid(build_os_conflict(
                    os,
                    organization_name.as_deref(),
                ))));
            }
        }
    }};
}

use check_build_os_unique;
pub(crate) use filter_category_scope;

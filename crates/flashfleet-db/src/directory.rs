//! [`DirectoryRepository`] on the database: organizations, users, memberships, tokens.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use flashfleet_models::repository::DirectoryRepository;
use flashfleet_models::{
    Actor, ApiToken, Membership, Organization, OrganizationId, Page, PageRequest, RepoResult, Role,
    Scope, StorageKey, TokenId, TokenSecret, User, UserId, time,
};

use crate::pool::{Db, with_conn, with_transaction};
use crate::rows::{
    ApiTokenRow, MembershipRow, OrganizationRow, UserRow, convert_all, id_text, naive, parse_id,
};
use crate::schema::{
    api_tokens, builds, categories, firmware_images, memberships, organizations, users,
};

/// How precisely a token's `last_used` is kept: a use within this time of the recorded one is
/// not written again.
const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The organization ids of `scope` as text, or `None` for every organization.
pub(crate) fn scope_ids(scope: &Scope) -> Option<Vec<String>> {
    match scope {
        Scope::All => None,
        Scope::Organizations { ids, .. } => Some(ids.iter().map(|id| id_text(*id)).collect()),
    }
}

/// Whether shared (organization-less) objects are in `scope`.
pub(crate) fn scope_includes_shared(scope: &Scope) -> bool {
    scope.contains(None)
}

#[async_trait]
impl DirectoryRepository for Db {
    async fn insert_organization(&self, organization: &Organization) -> RepoResult<Organization> {
        let row = OrganizationRow::from_model(organization);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(organizations::table)
                .values(&row)
                .returning(OrganizationRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn organization(
        &self,
        scope: &Scope,
        id: OrganizationId,
    ) -> RepoResult<Option<Organization>> {
        if !scope.contains(Some(id)) {
            return Ok(None);
        }
        Ok(with_conn!(self, |connection| {
            let row = organizations::table
                .find(id_text(id))
                .select(OrganizationRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(OrganizationRow::into_model).transpose()
        })?)
    }

    async fn organization_by_slug(
        &self,
        scope: &Scope,
        slug: &str,
    ) -> RepoResult<Option<Organization>> {
        let organization = with_conn!(self, |connection| {
            let row = organizations::table
                .filter(organizations::slug.eq(slug))
                .select(OrganizationRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(OrganizationRow::into_model).transpose()
        })?;
        Ok(organization.filter(|organization| scope.contains(Some(organization.id))))
    }

    async fn list_organizations(
        &self,
        scope: &Scope,
        page: PageRequest,
    ) -> RepoResult<Page<Organization>> {
        let ids = scope_ids(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = organizations::table.into_boxed();
                if let Some(ids) = &ids {
                    query = query.filter(organizations::id.eq_any(ids.clone()));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let rows = filtered()
                .order((organizations::name.asc(), organizations::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(OrganizationRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, OrganizationRow::into_model)?,
            })
        })?)
    }

    async fn update_organization(
        &self,
        organization: &Organization,
    ) -> RepoResult<Option<Organization>> {
        let mut row = OrganizationRow::from_model(organization);
        row.modified = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(organizations::table.find(row.id.clone()))
                .set(&row)
                .returning(OrganizationRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(OrganizationRow::into_model).transpose()
        })?)
    }

    async fn delete_organization(&self, id: OrganizationId) -> RepoResult<Option<Vec<StorageKey>>> {
        let id = id_text(id);
        Ok(with_transaction!(self, |connection| {
            let keys: Vec<String> = firmware_images::table
                .inner_join(builds::table.inner_join(categories::table))
                .filter(categories::organization_id.eq(&id))
                .select(firmware_images::storage_key)
                .load(connection)
                .await?;
            let deleted = diesel::delete(organizations::table.find(&id))
                .execute(connection)
                .await?;
            Ok((deleted > 0).then(|| keys.into_iter().map(StorageKey::from_stored).collect()))
        })?)
    }

    async fn insert_user(&self, user: &User) -> RepoResult<User> {
        let row = UserRow::from_model(user);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(users::table)
                .values(&row)
                .returning(UserRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn user(&self, id: UserId) -> RepoResult<Option<User>> {
        Ok(with_conn!(self, |connection| {
            let row = users::table
                .find(id_text(id))
                .select(UserRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(UserRow::into_model).transpose()
        })?)
    }

    async fn user_by_username(&self, username: &str) -> RepoResult<Option<User>> {
        Ok(with_conn!(self, |connection| {
            let row = users::table
                .filter(users::username.eq(username))
                .select(UserRow::as_select())
                .first(connection)
                .await
                .optional()?;
            row.map(UserRow::into_model).transpose()
        })?)
    }

    async fn list_users(&self, scope: &Scope, page: PageRequest) -> RepoResult<Page<User>> {
        let ids = scope_ids(scope);
        Ok(with_conn!(self, |connection| {
            let filtered = || {
                let mut query = users::table.into_boxed();
                if let Some(ids) = &ids {
                    let members = memberships::table
                        .filter(memberships::organization_id.eq_any(ids.clone()))
                        .select(memberships::user_id);
                    query = query.filter(users::id.eq_any(members));
                }
                query
            };
            let count: i64 = filtered().count().get_result(connection).await?;
            let rows = filtered()
                .order((users::username.asc(), users::id.asc()))
                .limit(page.limit_i64())
                .offset(page.offset_i64())
                .select(UserRow::as_select())
                .load(connection)
                .await?;
            Ok(Page {
                count: count.unsigned_abs(),
                items: convert_all(rows, UserRow::into_model)?,
            })
        })?)
    }

    async fn update_user(&self, user: &User) -> RepoResult<Option<User>> {
        let mut row = UserRow::from_model(user);
        row.modified = naive(time::now());
        Ok(with_conn!(self, |connection| {
            let stored = diesel::update(users::table.find(row.id.clone()))
                .set(&row)
                .returning(UserRow::as_returning())
                .get_result(connection)
                .await
                .optional()?;
            stored.map(UserRow::into_model).transpose()
        })?)
    }

    async fn delete_user(&self, id: UserId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(users::table.find(id_text(id)))
                .execute(connection)
                .await?;
            Ok(deleted > 0)
        })?)
    }

    async fn set_membership(
        &self,
        user_id: UserId,
        organization_id: OrganizationId,
        role: Role,
    ) -> RepoResult<Membership> {
        let row = MembershipRow {
            user_id: id_text(user_id),
            organization_id: id_text(organization_id),
            role: role.as_str().to_owned(),
            created: naive(time::now()),
        };
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(memberships::table)
                .values(&row)
                .on_conflict((memberships::user_id, memberships::organization_id))
                .do_update()
                .set(memberships::role.eq(&row.role))
                .returning(MembershipRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn remove_membership(
        &self,
        user_id: UserId,
        organization_id: OrganizationId,
    ) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(
                memberships::table
                    .filter(memberships::user_id.eq(id_text(user_id)))
                    .filter(memberships::organization_id.eq(id_text(organization_id))),
            )
            .execute(connection)
            .await?;
            Ok(deleted > 0)
        })?)
    }

    async fn memberships(&self, user_id: UserId) -> RepoResult<Vec<Membership>> {
        Ok(with_conn!(self, |connection| {
            let rows = memberships::table
                .filter(memberships::user_id.eq(id_text(user_id)))
                .order((
                    memberships::created.asc(),
                    memberships::organization_id.asc(),
                ))
                .select(MembershipRow::as_select())
                .load(connection)
                .await?;
            convert_all(rows, MembershipRow::into_model)
        })?)
    }

    async fn actor(&self, user_id: UserId) -> RepoResult<Option<Actor>> {
        let Some(user) = self.user(user_id).await? else {
            return Ok(None);
        };
        self.actor_of(user).await
    }

    async fn insert_token(&self, token: &ApiToken) -> RepoResult<ApiToken> {
        let row = ApiTokenRow::from_model(token);
        Ok(with_conn!(self, |connection| {
            let stored = diesel::insert_into(api_tokens::table)
                .values(&row)
                .returning(ApiTokenRow::as_returning())
                .get_result(connection)
                .await?;
            stored.into_model()
        })?)
    }

    async fn authenticate_token(
        &self,
        secret: &TokenSecret,
    ) -> RepoResult<Option<(ApiToken, Actor)>> {
        let key_hash = secret.hash();
        let now = naive(time::now());
        let stale = now - LAST_USED_RESOLUTION;
        let found = with_conn!(self, |connection| {
            let stored = api_tokens::table
                .filter(api_tokens::key_hash.eq(&key_hash))
                .select(ApiTokenRow::as_select())
                .first(connection)
                .await
                .optional()?;
            let Some(mut token) = stored else {
                return Ok(None);
            };
            // The use is recorded at most once per `LAST_USED_RESOLUTION`: writing it on every
            // request made every authenticated GET a write (SQLite's one write lock, and a
            // PostgreSQL commit on the token's row), which bounded the whole API at about 100
            // requests/s (BENCHMARKS.md, "REST API").
            if token.last_used.is_none_or(|used| used < stale) {
                diesel::update(
                    api_tokens::table
                        .filter(api_tokens::id.eq(&token.id))
                        .filter(
                            api_tokens::last_used
                                .is_null()
                                .or(api_tokens::last_used.lt(stale)),
                        ),
                )
                .set(api_tokens::last_used.eq(Some(now)))
                .execute(connection)
                .await?;
                token.last_used = Some(now);
            }
            let user = users::table
                .find(&token.user_id)
                .select(UserRow::as_select())
                .first(connection)
                .await
                .optional()?;
            Ok(match user {
                Some(user) => Some((token.into_model()?, user.into_model()?)),
                None => None,
            })
        })?;
        let Some((token, user)) = found else {
            return Ok(None);
        };
        Ok(self.actor_of(user).await?.map(|actor| (token, actor)))
    }

    async fn tokens(&self, user_id: UserId) -> RepoResult<Vec<ApiToken>> {
        Ok(with_conn!(self, |connection| {
            let rows = api_tokens::table
                .filter(api_tokens::user_id.eq(id_text(user_id)))
                .order((api_tokens::created.desc(), api_tokens::id.asc()))
                .select(ApiTokenRow::as_select())
                .load(connection)
                .await?;
            convert_all(rows, ApiTokenRow::into_model)
        })?)
    }

    async fn delete_token(&self, id: TokenId) -> RepoResult<bool> {
        Ok(with_conn!(self, |connection| {
            let deleted = diesel::delete(api_tokens::table.find(id_text(id)))
                .execute(connection)
                .await?;
            Ok(deleted > 0)
        })?)
    }
}

impl Db {
    /// The actor of an active `user`: its memberships in active organizations.
    async fn actor_of(&self, user: User) -> RepoResult<Option<Actor>> {
        if !user.is_active {
            return Ok(None);
        }
        let user_id = id_text(user.id);
        let memberships: Vec<(String, String)> = with_conn!(self, |connection| {
            Ok(memberships::table
                .inner_join(organizations::table)
                .filter(memberships::user_id.eq(&user_id))
                .filter(organizations::is_active.eq(true))
                .order(memberships::created.asc())
                .select((memberships::organization_id, memberships::role))
                .load(connection)
                .await?)
        })?;
        let memberships = memberships
            .into_iter()
            .map(|(organization_id, role)| {
                let role = role
                    .parse::<Role>()
                    .map_err(crate::error::DbError::Corrupt)?;
                Ok((parse_id(&organization_id)?, role))
            })
            .collect::<Result<Vec<_>, crate::error::DbError>>()?;
        Ok(Some(Actor {
            user_id: user.id,
            username: user.username,
            is_superuser: user.is_superuser,
            memberships,
        }))
    }
}

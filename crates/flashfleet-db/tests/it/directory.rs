//! Organizations, users, memberships and API tokens (`DirectoryRepository`).

use flashfleet_db::testing::TestDb;
use flashfleet_models::repository::DirectoryRepository;
use flashfleet_models::{
    Actor, Constraint, NewApiToken, NewOrganization, NewUser, OrganizationId, PageRequest,
    PasswordHash, RepoError, Role, Scope, TokenSecret, UserId,
};

use crate::support::{ago, details, member, organization, scope, user};

#[tokio::test]
async fn organizations_round_trip_field_by_field() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let mut new_organization = NewOrganization::new("ACME Networks", "acme");
        new_organization.details = details();
        new_organization.is_active = false;
        let mut organization = new_organization.into_organization();
        organization.created = ago(90);
        organization.modified = ago(30);

        let stored = db.insert_organization(&organization).await.unwrap();
        assert_eq!(stored, organization, "backend: {}", test_db.backend());
        let fetched = db.organization(&Scope::All, organization.id).await.unwrap();
        assert_eq!(
            fetched,
            Some(organization.clone()),
            "backend: {}",
            test_db.backend()
        );
        let by_slug = db.organization_by_slug(&Scope::All, "acme").await.unwrap();
        assert_eq!(
            by_slug,
            Some(organization),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.organization_by_slug(&Scope::All, "nope").await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn updating_an_organization_sets_modified_and_persists_the_changes() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let mut organization = NewOrganization::new("Old name", "old").into_organization();
        organization.created = ago(60);
        organization.modified = organization.created;
        db.insert_organization(&organization).await.unwrap();

        let mut changed = organization.clone();
        changed.name = "New name".into();
        changed.slug = "new".into();
        changed.is_active = false;
        changed.details = details();
        let before = flashfleet_models::time::now();
        let updated = db.update_organization(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified >= before && updated.modified > organization.modified,
            "backend: {}: modified {} not set (before {before})",
            test_db.backend(),
            updated.modified
        );
        assert_eq!(
            updated,
            flashfleet_models::Organization {
                modified: updated.modified,
                ..changed
            },
            "backend: {}",
            test_db.backend()
        );
        let fetched = db.organization(&Scope::All, organization.id).await.unwrap();
        assert_eq!(fetched, Some(updated), "backend: {}", test_db.backend());
    }
}

#[tokio::test]
async fn updating_or_deleting_a_missing_organization_reports_it_absent() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let ghost = NewOrganization::new("Ghost", "ghost").into_organization();
        assert_eq!(
            db.update_organization(&ghost).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.delete_organization(ghost.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn organization_slugs_and_names_are_unique() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        organization(db, "acme").await;
        let same_slug = NewOrganization::new("Another name", "acme").into_organization();
        let error = db.insert_organization(&same_slug).await.unwrap_err();
        assert!(
            matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::OrganizationSlug
                }
            ),
            "backend: {}: {error:?}",
            test_db.backend()
        );
        let same_name = NewOrganization::new("Organization acme", "acme-2").into_organization();
        let error = db.insert_organization(&same_name).await.unwrap_err();
        assert!(
            matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::OrganizationName
                }
            ),
            "backend: {}: {error:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn organizations_outside_the_scope_are_reported_absent() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let only_acme = scope(&[acme.id], true);

        assert_eq!(
            db.organization(&only_acme, umbrella.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.organization_by_slug(&only_acme, "umbrella")
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.organization(&only_acme, acme.id).await.unwrap(),
            Some(acme.clone()),
            "backend: {}",
            test_db.backend()
        );
        let listed = db
            .list_organizations(&only_acme, PageRequest::all())
            .await
            .unwrap();
        assert_eq!(listed.count, 1, "backend: {}", test_db.backend());
        assert_eq!(listed.items, [acme], "backend: {}", test_db.backend());
        let nothing = db
            .list_organizations(&scope(&[], false), PageRequest::all())
            .await
            .unwrap();
        assert_eq!(
            (nothing.count, nothing.items.len()),
            (0, 0),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn organizations_are_listed_by_name_in_pages() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        for slug in ["delta", "alpha", "echo", "charlie", "bravo"] {
            organization(db, slug).await;
        }
        let slugs = |page: flashfleet_models::Page<flashfleet_models::Organization>| {
            (
                page.count,
                page.items.into_iter().map(|o| o.slug).collect::<Vec<_>>(),
            )
        };
        let first = db
            .list_organizations(&Scope::All, PageRequest::page(1, 2))
            .await
            .unwrap();
        assert_eq!(
            slugs(first),
            (5, vec!["alpha".to_owned(), "bravo".to_owned()]),
            "backend: {}",
            test_db.backend()
        );
        let second = db
            .list_organizations(&Scope::All, PageRequest::page(2, 2))
            .await
            .unwrap();
        assert_eq!(
            slugs(second),
            (5, vec!["charlie".to_owned(), "delta".to_owned()]),
            "backend: {}",
            test_db.backend()
        );
        let third = db
            .list_organizations(&Scope::All, PageRequest::page(3, 2))
            .await
            .unwrap();
        assert_eq!(
            slugs(third),
            (5, vec!["echo".to_owned()]),
            "backend: {}",
            test_db.backend()
        );
        let beyond = db
            .list_organizations(&Scope::All, PageRequest::page(4, 2))
            .await
            .unwrap();
        assert_eq!(slugs(beyond), (5, vec![]), "backend: {}", test_db.backend());
    }
}

#[tokio::test]
async fn users_round_trip_with_their_password_hash() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let mut new_user = NewUser::new("alice");
        new_user.email = "alice@example.org".into();
        new_user.is_superuser = true;
        new_user.password_hash = Some(PasswordHash::hash("correct horse").unwrap());
        new_user.details = details();
        let mut alice = new_user.into_user();
        alice.created = ago(10);
        alice.modified = ago(5);

        assert_eq!(
            db.insert_user(&alice).await.unwrap(),
            alice,
            "backend: {}",
            test_db.backend()
        );
        let fetched = db.user(alice.id).await.unwrap().unwrap();
        assert_eq!(fetched, alice, "backend: {}", test_db.backend());
        assert!(
            fetched.check_password("correct horse"),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.user_by_username("alice").await.unwrap(),
            Some(alice),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.user_by_username("bob").await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        let bob = NewUser::new("bob").into_user();
        db.insert_user(&bob).await.unwrap();
        assert_eq!(
            db.user(bob.id).await.unwrap().unwrap().password_hash,
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_second_user_with_the_same_username_is_refused() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        user(db, "alice", false).await;
        let error = db
            .insert_user(&NewUser::new("alice").into_user())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RepoError::AlreadyExists {
                    constraint: Constraint::Username
                }
            ),
            "backend: {}: {error:?}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn updating_a_user_changes_its_password_and_sets_modified() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let mut alice = NewUser::new("alice").into_user();
        alice.created = ago(30);
        alice.modified = alice.created;
        db.insert_user(&alice).await.unwrap();

        let mut changed = alice.clone();
        changed.password_hash = Some(PasswordHash::hash("new password").unwrap());
        changed.email = "alice@example.org".into();
        changed.is_active = false;
        let updated = db.update_user(&changed).await.unwrap().unwrap();
        assert!(
            updated.modified > alice.modified,
            "backend: {}",
            test_db.backend()
        );
        let fetched = db.user(alice.id).await.unwrap().unwrap();
        assert_eq!(fetched, updated, "backend: {}", test_db.backend());
        assert_eq!(
            (fetched.email.as_str(), fetched.is_active, fetched.created),
            ("alice@example.org", false, alice.created),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            fetched
                .password_hash
                .as_ref()
                .is_some_and(|hash| hash.verify("new password")),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.update_user(&NewUser::new("ghost").into_user())
                .await
                .unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn users_are_listed_by_username_within_the_organizations_of_the_scope() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        member(db, "carol", acme.id, Role::Member).await;
        let bob = member(db, "bob", acme.id, Role::Manager).await;
        db.set_membership(bob.id, umbrella.id, Role::Member)
            .await
            .unwrap();
        member(db, "dave", umbrella.id, Role::Owner).await;
        user(db, "alice", true).await;

        let usernames = |page: flashfleet_models::Page<flashfleet_models::User>| {
            (
                page.count,
                page.items
                    .into_iter()
                    .map(|user| user.username)
                    .collect::<Vec<_>>(),
            )
        };
        let acme_users = db
            .list_users(&scope(&[acme.id], true), PageRequest::all())
            .await
            .unwrap();
        assert_eq!(
            usernames(acme_users),
            (2, vec!["bob".to_owned(), "carol".to_owned()]),
            "backend: {}",
            test_db.backend()
        );
        // bob belongs to both organizations and is listed once.
        let both = db
            .list_users(&scope(&[acme.id, umbrella.id], false), PageRequest::all())
            .await
            .unwrap();
        assert_eq!(
            usernames(both),
            (3, vec!["bob".into(), "carol".into(), "dave".into()]),
            "backend: {}",
            test_db.backend()
        );
        let everyone = db
            .list_users(&Scope::All, PageRequest::page(1, 3))
            .await
            .unwrap();
        assert_eq!(
            usernames(everyone),
            (4, vec!["alice".into(), "bob".into(), "carol".into()]),
            "backend: {}",
            test_db.backend()
        );
    }
}

fn sorted(mut memberships: Vec<(OrganizationId, Role)>) -> Vec<(OrganizationId, Role)> {
    memberships.sort_by_key(|(organization_id, _)| *organization_id);
    memberships
}

#[tokio::test]
async fn setting_a_membership_again_replaces_the_role() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let alice = user(db, "alice", false).await;

        let membership = db
            .set_membership(alice.id, acme.id, Role::Member)
            .await
            .unwrap();
        assert_eq!(
            (
                membership.user_id,
                membership.organization_id,
                membership.role
            ),
            (alice.id, acme.id, Role::Member),
            "backend: {}",
            test_db.backend()
        );
        let replaced = db
            .set_membership(alice.id, acme.id, Role::Manager)
            .await
            .unwrap();
        assert_eq!(
            replaced.role,
            Role::Manager,
            "backend: {}",
            test_db.backend()
        );
        let memberships = db.memberships(alice.id).await.unwrap();
        assert_eq!(
            memberships
                .iter()
                .map(|membership| (membership.organization_id, membership.role))
                .collect::<Vec<_>>(),
            [(acme.id, Role::Manager)],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn removing_a_membership_takes_the_organization_out_of_the_actor() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let alice = member(db, "alice", acme.id, Role::Owner).await;
        db.set_membership(alice.id, umbrella.id, Role::Member)
            .await
            .unwrap();

        assert!(
            db.remove_membership(alice.id, acme.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.remove_membership(alice.id, acme.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        let actor = db.actor(alice.id).await.unwrap().unwrap();
        assert_eq!(
            actor.memberships,
            [(umbrella.id, Role::Member)],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn the_actor_lists_memberships_of_active_organizations_only() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let dormant = organization(db, "dormant").await;
        let alice = member(db, "alice", acme.id, Role::Manager).await;
        db.set_membership(alice.id, umbrella.id, Role::Member)
            .await
            .unwrap();
        db.set_membership(alice.id, dormant.id, Role::Owner)
            .await
            .unwrap();
        let mut deactivated = dormant.clone();
        deactivated.is_active = false;
        db.update_organization(&deactivated).await.unwrap().unwrap();

        let actor = db.actor(alice.id).await.unwrap().unwrap();
        assert_eq!(
            Actor {
                memberships: sorted(actor.memberships.clone()),
                ..actor
            },
            Actor {
                user_id: alice.id,
                username: "alice".into(),
                is_superuser: false,
                memberships: sorted(vec![(acme.id, Role::Manager), (umbrella.id, Role::Member)]),
            },
            "backend: {}",
            test_db.backend()
        );
        // The membership itself is kept: reactivating the organization brings it back.
        assert_eq!(
            db.memberships(alice.id).await.unwrap().len(),
            3,
            "backend: {}",
            test_db.backend()
        );
        db.update_organization(&dormant).await.unwrap().unwrap();
        let reactivated = db.actor(alice.id).await.unwrap().unwrap();
        assert_eq!(
            sorted(reactivated.memberships),
            sorted(vec![
                (acme.id, Role::Manager),
                (umbrella.id, Role::Member),
                (dormant.id, Role::Owner)
            ]),
            "backend: {}",
            test_db.backend()
        );
        let root = user(db, "root", true).await;
        let root_actor = db.actor(root.id).await.unwrap().unwrap();
        assert!(
            root_actor.is_superuser && root_actor.memberships.is_empty(),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn inactive_and_missing_users_have_no_actor() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let alice = member(db, "alice", acme.id, Role::Manager).await;
        let mut inactive = alice.clone();
        inactive.is_active = false;
        db.update_user(&inactive).await.unwrap().unwrap();

        assert_eq!(
            db.actor(alice.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.actor(UserId::new()).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_token_authenticates_its_user_with_the_right_secret_and_records_the_use() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let alice = member(db, "alice", acme.id, Role::Manager).await;
        let new_token = NewApiToken::generate(alice.id, "ci").unwrap();
        let stored = db.insert_token(&new_token.token).await.unwrap();
        assert_eq!(stored, new_token.token, "backend: {}", test_db.backend());
        assert_eq!(stored.last_used, None, "backend: {}", test_db.backend());

        let before = flashfleet_models::time::now();
        let (token, actor) = db
            .authenticate_token(&new_token.secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(token.id, stored.id, "backend: {}", test_db.backend());
        assert_eq!(
            (token.user_id, token.name.as_str(), token.prefix.as_str()),
            (alice.id, "ci", stored.prefix.as_str()),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            token.last_used.is_some_and(|used| used >= before),
            "backend: {}: last_used {:?}",
            test_db.backend(),
            token.last_used
        );
        assert_eq!(
            actor,
            Actor {
                user_id: alice.id,
                username: "alice".into(),
                is_superuser: false,
                memberships: vec![(acme.id, Role::Manager)],
            },
            "backend: {}",
            test_db.backend()
        );
        let listed = db.tokens(alice.id).await.unwrap();
        assert_eq!(listed.len(), 1, "backend: {}", test_db.backend());
        assert!(
            listed[0].last_used.is_some_and(|used| used >= before),
            "backend: {}: the use is stored",
            test_db.backend()
        );
        // A use within the minute is not written again: authenticating stays a read.
        let (again, _) = db
            .authenticate_token(&new_token.secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                again.last_used,
                db.tokens(alice.id).await.unwrap()[0].last_used
            ),
            (listed[0].last_used, listed[0].last_used),
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_wrong_secret_authenticates_nobody() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let alice = user(db, "alice", false).await;
        let new_token = NewApiToken::generate(alice.id, "ci").unwrap();
        db.insert_token(&new_token.token).await.unwrap();

        for wrong in [
            TokenSecret::new("0".repeat(40)),
            TokenSecret::new(""),
            // The stored hash itself is not a secret that authenticates.
            TokenSecret::new(new_token.token.key_hash.clone()),
        ] {
            assert_eq!(
                db.authenticate_token(&wrong).await.unwrap(),
                None,
                "backend: {}",
                test_db.backend()
            );
        }
        assert_eq!(
            db.tokens(alice.id).await.unwrap()[0].last_used,
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn a_token_of_an_inactive_user_authenticates_nobody() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let alice = user(db, "alice", false).await;
        let new_token = NewApiToken::generate(alice.id, "ci").unwrap();
        db.insert_token(&new_token.token).await.unwrap();
        let mut inactive = alice.clone();
        inactive.is_active = false;
        db.update_user(&inactive).await.unwrap().unwrap();

        assert_eq!(
            db.authenticate_token(&new_token.secret).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn tokens_are_listed_newest_first_and_deleted_one_by_one() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let alice = user(db, "alice", false).await;
        let bob = user(db, "bob", false).await;
        let mut ids = Vec::new();
        for (name, minutes_ago) in [("old", 30), ("newest", 1), ("middle", 10)] {
            let mut new_token = NewApiToken::generate(alice.id, name).unwrap();
            new_token.token.created = ago(minutes_ago);
            db.insert_token(&new_token.token).await.unwrap();
            ids.push(new_token.token.id);
        }
        let bobs = NewApiToken::generate(bob.id, "bob's").unwrap();
        db.insert_token(&bobs.token).await.unwrap();

        let names: Vec<String> = db
            .tokens(alice.id)
            .await
            .unwrap()
            .into_iter()
            .map(|token| token.name)
            .collect();
        assert_eq!(
            names,
            ["newest", "middle", "old"],
            "backend: {}",
            test_db.backend()
        );
        assert!(
            db.delete_token(ids[0]).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_token(ids[0]).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.tokens(alice.id).await.unwrap().len(),
            2,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.tokens(bob.id).await.unwrap(),
            [bobs.token],
            "backend: {}",
            test_db.backend()
        );
    }
}

#[tokio::test]
async fn deleting_a_user_removes_its_memberships_and_tokens() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let alice = member(db, "alice", acme.id, Role::Manager).await;
        let new_token = NewApiToken::generate(alice.id, "ci").unwrap();
        db.insert_token(&new_token.token).await.unwrap();

        assert!(
            db.delete_user(alice.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert!(
            !db.delete_user(alice.id).await.unwrap(),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.user(alice.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.memberships(alice.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.tokens(alice.id).await.unwrap(),
            [],
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.authenticate_token(&new_token.secret).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        // The username is free again.
        user(db, "alice", false).await;
    }
}

#[tokio::test]
async fn deleting_an_organization_removes_the_memberships_in_it() {
    for test_db in TestDb::all().await {
        let db = test_db.db();
        let acme = organization(db, "acme").await;
        let umbrella = organization(db, "umbrella").await;
        let alice = member(db, "alice", acme.id, Role::Manager).await;
        db.set_membership(alice.id, umbrella.id, Role::Member)
            .await
            .unwrap();

        assert_eq!(
            db.delete_organization(acme.id).await.unwrap(),
            Some(vec![]),
            "backend: {}",
            test_db.backend()
        );
        assert_eq!(
            db.organization(&Scope::All, acme.id).await.unwrap(),
            None,
            "backend: {}",
            test_db.backend()
        );
        let memberships = db.memberships(alice.id).await.unwrap();
        assert_eq!(
            memberships
                .iter()
                .map(|membership| membership.organization_id)
                .collect::<Vec<_>>(),
            [umbrella.id],
            "backend: {}",
            test_db.backend()
        );
        assert!(
            db.user(alice.id).await.unwrap().is_some(),
            "backend: {}",
            test_db.backend()
        );
    }
}

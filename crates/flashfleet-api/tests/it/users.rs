//! `users/token/` and `users/user/`: tokens from passwords, and who sees and manages whom.

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::TestRequest;
use flashfleet_api::{ApiConfig, Throttle};
use flashfleet_db::testing::TestDb;
use flashfleet_models::Role;
use flashfleet_models::repository::DirectoryRepository;
use serde_json::{Value, json};

use crate::support::{Reply, TestApi, apis, user_named, user_with_password};

const TOKEN: &str = "/api/v1/users/token/";
const USERS: &str = "/api/v1/users/user/";
const PASSWORD: &str = "s3cret-pass-0427";

fn user_path(id: impl std::fmt::Display) -> String {
    format!("{USERS}{id}/")
}

fn usernames(reply: &Reply) -> Vec<String> {
    reply.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn a_password_gets_a_new_bearer_token_each_time_from_json_or_a_form() {
    for api in apis().await {
        user_with_password(api.db(), "alice", PASSWORD).await;
        let first = api
            .call(
                Method::POST,
                TOKEN,
                None,
                Some(json!({"username": "alice", "password": PASSWORD})),
            )
            .await;
        assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
        let token = first.get("token").as_str().unwrap().to_owned();
        assert_eq!(token.len(), 40);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(first.body.as_object().unwrap().len(), 1);
        let me = api.get(USERS, &token).await;
        assert_eq!(me.status, StatusCode::OK, "the token authenticates");
        assert_eq!(usernames(&me), ["alice"]);

        let form = api
            .send(
                TestRequest::post()
                    .uri(TOKEN)
                    .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                    .set_payload(format!("username=alice&password={PASSWORD}")),
            )
            .await;
        assert_eq!(form.status, StatusCode::OK, "{:?}", form.body);
        assert_ne!(form.get("token"), token.as_str(), "a new token each time");

        for body in [
            json!({"username": "alice", "password": "wrong"}),
            json!({"username": "nobody", "password": PASSWORD}),
        ] {
            let refused = api.call(Method::POST, TOKEN, None, Some(body)).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                refused.get("non_field_errors"),
                &json!(["Unable to log in with provided credentials."])
            );
            assert!(!String::from_utf8_lossy(&refused.bytes).contains(PASSWORD));
        }
        let missing = api.call(Method::POST, TOKEN, None, Some(json!({}))).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(missing.get("username"), &json!(["This field is required."]));
        assert_eq!(missing.get("password"), &json!(["This field is required."]));
        let get = api.call(Method::GET, TOKEN, None, None).await;
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[actix_web::test]
async fn token_requests_are_throttled_per_address_and_per_username() {
    let api = TestApi::with_config(
        TestDb::sqlite().await,
        ApiConfig {
            throttle: Some(Throttle::per_minute(2)),
            ..ApiConfig::default()
        },
    )
    .await;
    let request = |address: &str, body: Value| {
        TestRequest::post()
            .uri(TOKEN)
            .peer_addr(address.parse().unwrap())
            .set_json(body)
    };
    for _ in 0..2 {
        let refused = api.send(request("10.0.0.1:4000", json!({}))).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }
    let throttled = api.send(request("10.0.0.1:4000", json!({}))).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers.get(header::RETRY_AFTER).is_some());

    let guess = json!({"username": "bob", "password": "guess"});
    for address in ["10.0.0.2:4000", "10.0.0.3:4000"] {
        let refused = api.send(request(address, guess.clone())).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{address}");
    }
    let throttled = api.send(request("10.0.0.4:4000", guess)).await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the username's allowance is spent, whatever the address"
    );
}

#[actix_web::test]
async fn a_superuser_creates_users_with_roles_and_a_hashed_password() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let organization = tenant.organization.id.to_string();
        let created = api
            .post(
                USERS,
                &api.superuser,
                json!({"username": "carol", "password": PASSWORD, "email": "carol@example.org",
                    "organization_users": [{"organization": organization, "is_admin": true}]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(
            created.keys(),
            [
                "id",
                "username",
                "email",
                "is_superuser",
                "is_active",
                "organization_users",
                "created",
                "modified",
                "details"
            ]
        );
        assert_eq!(
            created.get("organization_users"),
            &json!([{"organization": organization, "is_admin": true, "role": "manager"}])
        );
        assert!(!String::from_utf8_lossy(&created.bytes).contains(PASSWORD));
        let carol = user_named(api.db(), "carol").await;
        assert!(
            carol.check_password(PASSWORD),
            "stored as a hash that verifies"
        );
        assert_ne!(
            carol.password_hash.as_ref().unwrap().as_phc(),
            PASSWORD,
            "never in clear"
        );

        let superuser = api
            .patch(
                &user_path(carol.id),
                &api.superuser,
                json!({"is_superuser": true, "organization_users": [{"organization": organization, "role": "owner"}]}),
            )
            .await;
        assert_eq!(superuser.status, StatusCode::OK, "{:?}", superuser.body);
        assert_eq!(superuser.get("is_superuser"), true);
        assert_eq!(superuser.get("organization_users")[0]["role"], "owner");
        let all = api.get(USERS, &api.superuser).await;
        assert_eq!(all.get("count"), 5, "root, carol and acme's three users");
        let invalid = api
            .post(
                USERS,
                &api.superuser,
                json!({"username": "has space", "password": PASSWORD, "email": "nope"}),
            )
            .await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        assert!(invalid.get("username").is_array());
        assert_eq!(
            invalid.get("email"),
            &json!(["Enter a valid email address."])
        );
        let taken = api
            .post(
                USERS,
                &api.superuser,
                json!({"username": "carol", "password": "x"}),
            )
            .await;
        assert_eq!(
            taken.get("username"),
            &json!(["A user with that username already exists."])
        );
    }
}

#[actix_web::test]
async fn managers_manage_the_users_of_their_organizations_only() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let organization = tenant.organization.id.to_string();
        let listed = api.get(USERS, &tenant.manager).await;
        assert_eq!(
            usernames(&listed),
            ["acme-manager", "acme-member", "acme-owner"]
        );
        let outsider = user_named(api.db(), "umbrella-member").await;
        assert_eq!(
            api.get(&user_path(outsider.id), &tenant.manager)
                .await
                .status,
            StatusCode::NOT_FOUND
        );

        for (body, field) in [
            (
                json!({"username": "dave", "password": PASSWORD,
                    "organization_users": [{"organization": organization, "role": "owner"}]}),
                "organization_users",
            ),
            (
                json!({"username": "dave", "password": PASSWORD, "is_superuser": true,
                    "organization_users": [{"organization": organization}]}),
                "is_superuser",
            ),
            (
                json!({"username": "dave", "password": PASSWORD,
                    "organization_users": [{"organization": other.organization.id.to_string()}]}),
                "organization_users",
            ),
            (
                json!({"username": "dave", "password": PASSWORD}),
                "organization_users",
            ),
            (
                json!({"username": "dave", "password": PASSWORD,
                    "organization_users": [{"organization": organization, "role": "admin"}]}),
                "organization_users",
            ),
        ] {
            let refused = api.post(USERS, &tenant.manager, body.clone()).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(refused.get(field).is_array(), "{body}: {:?}", refused.body);
        }
        let created = api
            .post(
                USERS,
                &tenant.manager,
                json!({"username": "dave", "password": PASSWORD,
                    "organization_users": [{"organization": organization}]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(created.get("organization_users")[0]["role"], "member");
        let dave = created.get("id").as_str().unwrap().to_owned();
        let promoted = api
            .patch(
                &user_path(&dave),
                &tenant.manager,
                json!({"organization_users": [{"organization": organization, "role": "manager"}],
                    "email": "dave@example.org"}),
            )
            .await;
        assert_eq!(promoted.status, StatusCode::OK, "{:?}", promoted.body);
        assert_eq!(
            promoted.get("organization_users"),
            &json!([{"organization": organization, "is_admin": true, "role": "manager"}])
        );
        assert_eq!(promoted.get("email"), "dave@example.org");

        let owner = user_named(api.db(), "acme-owner").await;
        let refused = api
            .patch(
                &user_path(owner.id),
                &tenant.manager,
                json!({"email": "x@example.org"}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let manager = user_named(api.db(), "acme-manager").await;
        let own = api
            .patch(
                &user_path(manager.id),
                &tenant.manager,
                json!({"email": "me@example.org"}),
            )
            .await;
        assert_eq!(own.status, StatusCode::OK, "a manager changes itself");

        // A user who also belongs to another organization is seen but not changed.
        let member = user_named(api.db(), "acme-member").await;
        api.db()
            .set_membership(member.id, other.organization.id, Role::Member)
            .await
            .unwrap();
        let seen = api.get(&user_path(member.id), &tenant.manager).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(
            seen.get("organization_users"),
            &json!([{"organization": organization, "is_admin": false, "role": "member"}]),
            "only the memberships the caller may see"
        );
        let refused = api
            .patch(
                &user_path(member.id),
                &tenant.manager,
                json!({"password": "taken-over"}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            api.delete(&user_path(member.id), &tenant.manager)
                .await
                .status,
            StatusCode::FORBIDDEN
        );

        let root = user_named(api.db(), "root").await;
        api.db()
            .set_membership(root.id, tenant.organization.id, Role::Member)
            .await
            .unwrap();
        let refused = api
            .patch(
                &user_path(root.id),
                &tenant.manager,
                json!({"email": "x@example.org"}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.get("detail"),
            "Only superusers can change superusers."
        );

        let deleted = api.delete(&user_path(&dave), &tenant.manager).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(
            api.get(&user_path(&dave), &tenant.manager).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[actix_web::test]
async fn members_see_only_themselves() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let listed = api.get(USERS, &tenant.member).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(usernames(&listed), ["acme-member"]);
        assert_eq!(listed.get("count"), 1);
        let member = user_named(api.db(), "acme-member").await;
        let me = api.get(&user_path(member.id), &tenant.member).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.get("username"), "acme-member");
        let manager = user_named(api.db(), "acme-manager").await;
        assert_eq!(
            api.get(&user_path(manager.id), &tenant.member).await.status,
            StatusCode::NOT_FOUND
        );
        let refused = api
            .patch(
                &user_path(member.id),
                &tenant.member,
                json!({"is_superuser": true}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let refused = api
            .post(
                USERS,
                &tenant.member,
                json!({"username": "eve", "password": PASSWORD,
                    "organization_users": [{"organization": tenant.organization.id.to_string()}]}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            api.call(Method::GET, USERS, None, None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

//! `users/organization/`: openwisp-users' shape, and who creates, sees and changes what.

use actix_web::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::apis;

const ORGANIZATIONS: &str = "/api/v1/users/organization/";

#[actix_web::test]
async fn superusers_create_and_delete_organizations_with_upstreams_fields() {
    for api in apis().await {
        let created = api
            .post(
                ORGANIZATIONS,
                &api.superuser,
                json!({"name": "ACME Networks", "description": "Routers", "email": "ops@acme.example",
                    "url": "https://acme.example", "details": {"tier": "gold"}}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(
            created.keys(),
            [
                "id",
                "name",
                "is_active",
                "slug",
                "description",
                "email",
                "url",
                "created",
                "modified",
                "details"
            ],
            "openwisp-users' key order, then details"
        );
        assert_eq!(created.get("slug"), "acme-networks", "made from the name");
        assert_eq!(created.get("is_active"), true);
        assert_eq!(created.get("description"), "Routers");
        assert_eq!(created.get("email"), "ops@acme.example");
        assert_eq!(created.get("url"), "https://acme.example");
        assert_eq!(created.get("details"), &json!({"tier": "gold"}));
        let path = format!("{ORGANIZATIONS}{}/", created.get("id").as_str().unwrap());
        let read = api.get(&path, &api.superuser).await;
        assert_eq!(read.body, created.body);

        for (body, field, message) in [
            (
                json!({"name": "Other", "slug": "has space"}),
                "slug",
                "Enter a valid \u{201c}slug\u{201d} consisting of letters, numbers, underscores or hyphens.",
            ),
            (
                json!({"name": "Other", "slug": "acme-networks"}),
                "slug",
                "organization with this slug already exists.",
            ),
            (
                json!({"name": "Other", "email": "nope"}),
                "email",
                "Enter a valid email address.",
            ),
            (
                json!({"name": "Other", "url": "ftp://x.example"}),
                "url",
                "Enter a valid URL.",
            ),
            (json!({}), "name", "This field is required."),
        ] {
            let refused = api.post(ORGANIZATIONS, &api.superuser, body.clone()).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(refused.get(field), &json!([message]), "{body}");
        }

        let deleted = api.delete(&path, &api.superuser).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(
            api.get(&path, &api.superuser).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[actix_web::test]
async fn managers_change_their_organization_and_members_only_read_it() {
    for api in apis().await {
        let tenant = api.tenant("acme").await;
        let other = api.tenant("umbrella").await;
        let path = format!("{ORGANIZATIONS}{}/", tenant.organization.id);

        let refused = api
            .post(ORGANIZATIONS, &tenant.owner, json!({"name": "Mine"}))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let listed = api.get(ORGANIZATIONS, &tenant.member).await;
        assert_eq!(listed.get("count"), 1);
        assert_eq!(listed.body["results"][0]["slug"], "acme");
        assert_eq!(api.get(ORGANIZATIONS, &api.superuser).await.get("count"), 2);
        let theirs = format!("{ORGANIZATIONS}{}/", other.organization.id);
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "x"}))),
            (Method::DELETE, None),
        ] {
            let reply = api
                .call(method.clone(), &theirs, Some(&tenant.owner), body)
                .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(
                reply.get("detail"),
                "No Organization matches the given query."
            );
        }

        let changed = api
            .patch(
                &path,
                &tenant.manager,
                json!({"name": "ACME Corp", "description": "Edge routers", "is_active": true}),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
        assert_eq!(changed.get("name"), "ACME Corp");
        assert_eq!(changed.get("slug"), "acme");
        assert_eq!(changed.get("description"), "Edge routers");
        let cleared = api
            .patch(
                &path,
                &tenant.manager,
                json!({"description": "", "details": {"tier": "silver"}}),
            )
            .await;
        assert_eq!(cleared.get("description"), "");
        assert_eq!(cleared.get("details"), &json!({"tier": "silver"}));
        let kept = api
            .patch(&path, &tenant.manager, json!({"email": "noc@acme.example"}))
            .await;
        assert_eq!(kept.get("email"), "noc@acme.example");
        assert_eq!(kept.get("details"), &json!({"tier": "silver"}));
        let refused = api
            .patch(&path, &tenant.manager, json!({"is_active": false}))
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.get("is_active"),
            &json!(["Only superusers can activate or deactivate an organization."])
        );
        let refused = api.patch(&path, &tenant.member, json!({"name": "x"})).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            api.delete(&path, &tenant.owner).await.status,
            StatusCode::FORBIDDEN
        );
        let put = api
            .put(
                &path,
                &tenant.owner,
                json!({"name": "ACME", "slug": "acme"}),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        assert_eq!(put.get("email"), "noc@acme.example", "absent fields stay");
        let deactivated = api
            .patch(&path, &api.superuser, json!({"is_active": false}))
            .await;
        assert_eq!(deactivated.get("is_active"), false);
        assert_eq!(
            api.get(ORGANIZATIONS, &tenant.member).await.get("count"),
            0,
            "members of an inactive organization no longer see it"
        );
        assert_eq!(
            api.call(Method::GET, ORGANIZATIONS, None, None)
                .await
                .get("code"),
            &Value::String("not_authenticated".into())
        );
    }
}

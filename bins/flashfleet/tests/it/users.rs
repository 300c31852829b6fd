//! `flashfleet createsuperuser` and `flashfleet token create`.

use flashfleet_db::testing::TestDb;
use flashfleet_models::TokenSecret;
use flashfleet_models::repository::DirectoryRepository as _;

use crate::support::Workspace;

#[tokio::test]
async fn a_superuser_gets_a_token_that_authenticates() {
    for test_db in TestDb::all().await {
        let workspace = Workspace::on(&test_db);
        let run = workspace.run_ok(&[
            "createsuperuser",
            "--username",
            "admin",
            "--password",
            "correct horse",
            "--email",
            "admin@example.com",
        ]);
        run.stdout_has("created superuser `admin`");
        assert!(!run.stdout.contains("correct horse") && !run.stderr.contains("correct horse"));
        let user = test_db
            .db()
            .user_by_username("admin")
            .await
            .unwrap()
            .unwrap();
        assert!(user.is_superuser && user.is_active);
        assert_eq!(user.email, "admin@example.com");
        assert!(user.check_password("correct horse"));

        let run = workspace.run_ok(&["token", "create", "--username", "admin", "--name", "ci"]);
        let secret = run.stdout.strip_suffix('\n').unwrap();
        assert_eq!(secret.len(), 40, "{:?}", run.stdout);
        assert!(
            secret
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(!secret.contains('\n'));
        let (token, actor) = test_db
            .db()
            .authenticate_token(&TokenSecret::new(secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((token.name.as_str(), token.user_id), ("ci", user.id));
        assert_eq!(actor.user_id, user.id);
        assert!(
            !run.stderr.contains(secret),
            "the secret goes to stdout only"
        );
    }
}

#[tokio::test]
async fn an_existing_username_is_refused() {
    for test_db in TestDb::all().await {
        let workspace = Workspace::on(&test_db);
        workspace.run_ok(&["createsuperuser", "--username", "admin", "--password", "pw"]);
        let run = workspace.run_err(&["createsuperuser", "--username", "admin", "--password", "x"]);
        run.stderr_has("a user named `admin` already exists");
        let user = test_db
            .db()
            .user_by_username("admin")
            .await
            .unwrap()
            .unwrap();
        assert!(user.check_password("pw"), "the existing user is untouched");
    }
}

#[test]
fn without_a_terminal_missing_answers_are_an_error() {
    let workspace = Workspace::new();
    let run = workspace.run_err(&["createsuperuser", "--username", "admin"]);
    run.stderr_has("no terminal");
    let run = workspace.run_err(&["createsuperuser"]);
    run.stderr_has("--username");
}

#[test]
fn bad_users_and_unknown_users_are_refused() {
    let workspace = Workspace::new();
    let run = workspace.run_err(&[
        "createsuperuser",
        "--username",
        "has space",
        "--password",
        "x",
    ]);
    run.stderr_has("valid username");
    let run = workspace.run_err(&["createsuperuser", "--username", "bob", "--password", ""]);
    run.stderr_has("password");
    let run = workspace.run_err(&["token", "create", "--username", "nobody"]);
    run.stderr_has("no user named `nobody`");
    assert!(run.stdout.is_empty());
}

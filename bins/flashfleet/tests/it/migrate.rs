//! `flashfleet migrate`.

use flashfleet_db::testing::TestDb;
use flashfleet_db::{Db, DbConfig, SecretKey};

use crate::support::Workspace;

#[test]
fn migrate_creates_everything_on_a_fresh_machine_and_is_idempotent() {
    let workspace = Workspace::new();
    let run = workspace.run_ok(&["migrate"]);
    let data_dir = workspace.data_dir();
    run.stdout_has("created the data directory");
    run.stdout_has("generated the secret key");
    run.stdout_has("created the SQLite database");
    assert!(data_dir.join("flashfleet.db").is_file());
    let key_file = data_dir.join("secret.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = SecretKey::from_base64(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert!(
        !run.stdout.contains(&key.to_base64()),
        "the key is never printed"
    );

    let again = workspace.run_ok(&["migrate"]);
    assert!(!again.stdout.contains("created"), "{}", again.stdout);
    again.stdout_has("up to date");

    // The database is usable with the generated key, without applying anything more.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db_config = DbConfig::new(
            format!("sqlite://{}", data_dir.join("flashfleet.db").display()),
            key,
        );
        db_config.run_migrations = false;
        Db::connect(&db_config).await.unwrap().ping().await.unwrap();
    });
}

#[tokio::test]
async fn migrate_works_on_every_backend() {
    for test_db in TestDb::all().await {
        let run = Workspace::on(&test_db).run_ok(&["migrate"]);
        run.stdout_has("using the secret key from the configuration");
        run.stdout_has("up to date");
    }
}

#[test]
fn a_secret_key_file_others_can_read_is_refused() {
    let workspace = Workspace::new();
    workspace.run_ok(&["migrate"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key_file = workspace.data_dir().join("secret.key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let run = workspace.run_err(&["migrate"]);
        run.stderr_has("chmod 600");
    }
}

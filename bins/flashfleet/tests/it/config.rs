//! `flashfleet config`, configuration loading and `--help`.

use crate::support::Workspace;

#[test]
fn the_committed_defaults_file_is_what_config_defaults_prints() {
    let run = Workspace::new().run_ok(&["config", "--defaults"]);
    let committed = include_str!("../../defaults.toml");
    assert!(
        run.stdout == committed,
        "bins/flashfleet/defaults.toml is stale: regenerate it with \
         `cargo run -p flashfleet-server -- config --defaults > bins/flashfleet/defaults.toml`"
    );
}

#[test]
fn config_defaults_works_even_with_a_broken_configuration() {
    let workspace = Workspace::new();
    workspace.write("flashfleet.toml", "this is not toml");
    workspace.run_ok(&["config", "--defaults"]);
    let run = workspace.run_err(&["config"]);
    run.stderr_has("flashfleet.toml is not valid TOML");
}

#[test]
fn the_effective_configuration_merges_file_and_environment_and_hides_secrets() {
    let workspace = Workspace::new()
        .with_env("FLASHFLEET_ENGINE__TASK_TIMEOUT", "3m")
        .with_env(
            "FLASHFLEET_DATABASE_URL",
            "postgres://flash:hunter2@db.example/flash",
        )
        .with_env(
            "FLASHFLEET_SECRET_KEY",
            "c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1mb3ItdGVzdCE=",
        );
    workspace.write(
        "flashfleet.toml",
        "listen = \"0.0.0.0:9000\"\n[api]\nthrottle = \"50/hour\"\n\
         [storage]\nbackend = \"s3\"\nbucket = \"fw\"\nsecret_access_key = \"s3-secret\"\n",
    );
    let run = workspace.run_ok(&["config"]);
    let effective: toml::Table = toml::from_str(&run.stdout).unwrap();
    assert_eq!(effective["listen"].as_str(), Some("0.0.0.0:9000"));
    assert_eq!(effective["engine"]["task_timeout"].as_str(), Some("180s"));
    assert_eq!(effective["api"]["throttle"].as_str(), Some("50/hour"));
    assert_eq!(
        effective["database"]["url"].as_str(),
        Some("postgres://flash:[redacted]@db.example/flash")
    );
    assert_eq!(
        effective["storage"]["secret_access_key"].as_str(),
        Some("[redacted]")
    );
    assert_eq!(effective["secret_key"].as_str(), Some("[redacted]"));
    for secret in ["hunter2", "s3-secret", "c2VjcmV0"] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{run:#?}"
        );
    }
}

#[test]
fn derived_defaults_follow_the_data_directory() {
    let workspace = Workspace::new();
    let run = workspace.run_ok(&["config"]);
    let effective: toml::Table = toml::from_str(&run.stdout).unwrap();
    let data_dir = workspace.data_dir().display().to_string();
    assert_eq!(
        effective["database"]["url"].as_str(),
        Some(format!("sqlite://{data_dir}/flashfleet.db").as_str())
    );
    assert_eq!(effective["storage"]["backend"].as_str(), Some("local"));
    assert_eq!(
        effective["storage"]["path"].as_str(),
        Some(format!("{data_dir}/firmware").as_str())
    );
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:8000"));
}

#[test]
fn invalid_settings_are_refused_with_their_name() {
    let workspace = Workspace::new().with_env("FLASHFLEET_ENGINE__MAX_UPLOADS", "0");
    let run = workspace.run_err(&["config"]);
    run.stderr_has("engine.max_uploads must be at least 1");
    let workspace = Workspace::new();
    let file = workspace.write("custom.toml", "[engine]\nleese = \"30s\"\n");
    let run = workspace.run_err(&["--config", file.to_str().unwrap(), "config"]);
    run.stderr_has("leese");
    let run = workspace.run_err(&["--config", "missing.toml", "config"]);
    run.stderr_has("missing.toml");
}

#[test]
fn every_subcommand_has_help() {
    let workspace = Workspace::new();
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["createsuperuser", "--help"],
        &["token", "--help"],
        &["token", "create", "--help"],
        &["devices", "import", "--help"],
        &["image", "inspect", "--help"],
        &["image-types", "--help"],
        &["config", "--help"],
    ] {
        let run = workspace.run_ok(command);
        run.stdout_has("Usage: flashfleet");
    }
    let run = workspace.run_ok(&["--help"]);
    for subcommand in [
        "serve",
        "migrate",
        "createsuperuser",
        "token",
        "devices",
        "image",
        "image-types",
        "config",
    ] {
        run.stdout_has(subcommand);
    }
    workspace
        .run_ok(&["serve", "--help"])
        .stdout_has("--listen");
}

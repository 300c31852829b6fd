//! Tidy checks over the repository itself (rust-analyzer's "tidy" tests): conventions that
//! review would otherwise have to catch by eye.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crate_directories() -> Vec<PathBuf> {
    let mut directories: Vec<PathBuf> = fs::read_dir(workspace_root().join("crates"))
        .expect("crates/ exists")
        .map(|entry| entry.expect("a readable entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    directories.sort();
    directories
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(directory).expect("a readable directory") {
        let path = entry.expect("a readable entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_library_crate_starts_with_a_crate_doc() {
    for directory in crate_directories() {
        let lib = directory.join("src/lib.rs");
        let text = fs::read_to_string(&lib).expect("every crate is a library with src/lib.rs");
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no `//!` crate doc",
            lib.display()
        );
    }
}

#[test]
fn every_crate_opts_into_the_workspace_lints() {
    for directory in crate_directories() {
        let manifest = fs::read_to_string(directory.join("Cargo.toml")).expect("a manifest");
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{} does not use the workspace lints",
            directory.display()
        );
    }
}

#[test]
fn library_code_has_no_debugging_leftovers() {
    let mut files = Vec::new();
    for directory in crate_directories() {
        rust_files(&directory.join("src"), &mut files);
    }
    for file in files {
        let text = fs::read_to_string(&file).expect("a readable source file");
        for forbidden in ["dbg!(", "todo!(", "unimplemented!("] {
            assert!(
                !text.contains(forbidden),
                "{} contains {forbidden}",
                file.display()
            );
        }
    }
}

fn migration_names(backend: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(workspace_root().join("migrations").join(backend))
        .expect("a migrations folder per backend")
        .map(|entry| entry.expect("a readable entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn both_backends_have_the_same_migrations_each_with_up_and_down() {
    let postgres = migration_names("postgres");
    assert!(!postgres.is_empty());
    assert_eq!(postgres, migration_names("sqlite"));
    for backend in ["postgres", "sqlite"] {
        for name in &postgres {
            for file in ["up.sql", "down.sql"] {
                let path = workspace_root()
                    .join("migrations")
                    .join(backend)
                    .join(name)
                    .join(file);
                assert!(path.is_file(), "{} is missing", path.display());
            }
        }
    }
}

fn migration_sql(backend: &str) -> String {
    migration_names(backend)
        .iter()
        .map(|name| {
            fs::read_to_string(
                workspace_root()
                    .join("migrations")
                    .join(backend)
                    .join(name)
                    .join("up.sql"),
            )
            .expect("a readable up.sql")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_foreign_key_says_what_happens_on_delete() {
    for backend in ["postgres", "sqlite"] {
        for line in migration_sql(backend)
            .lines()
            .filter(|line| line.contains("REFERENCES"))
        {
            assert!(
                line.contains("ON DELETE"),
                "{backend}: `{}` has no ON DELETE rule",
                line.trim()
            );
        }
    }
}

#[test]
fn every_unique_constraint_is_named_in_the_database_error_translation() {
    let error_translation =
        fs::read_to_string(workspace_root().join("crates/flashfleet-db/src/error.rs"))
            .expect("flashfleet-db's error.rs");
    let sql = migration_sql("postgres");
    let mut names = Vec::new();
    for line in sql.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for window in words.windows(3) {
            if window[0] == "CONSTRAINT" && (window[2] == "UNIQUE" || window[2] == "PRIMARY") {
                names.push(window[1].to_owned());
            }
            if window[0] == "UNIQUE" && window[1] == "INDEX" {
                names.push(window[2].to_owned());
            }
        }
    }
    assert!(names.len() >= 10, "found only {names:?}");
    for name in names {
        assert!(
            error_translation.contains(&format!("\"{name}\"")),
            "unique constraint {name} is not mapped to a Constraint in crates/flashfleet-db/src/error.rs"
        );
    }
}

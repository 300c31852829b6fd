//! Running the built binary in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flashfleet_db::testing::TestDb;

/// The outcome of one run of the binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts that standard output contains `text`.
    pub(crate) fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}: {self:#?}"
        );
        self
    }

    /// Asserts that standard error contains `text`.
    pub(crate) fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}: {self:#?}"
        );
        self
    }
}

/// A temporary working directory with its own data directory and environment.
pub(crate) struct Workspace {
    directory: tempfile::TempDir,
    environment: Vec<(String, String)>,
}

impl Workspace {
    /// A workspace whose data directory is `<tmp>/data`, with defaults otherwise.
    pub(crate) fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let data_dir = directory.path().join("data").display().to_string();
        Self {
            directory,
            environment: vec![("FLASHFLEET_DATA_DIR".to_owned(), data_dir)],
        }
    }

    /// A workspace on the database of `test_db`, with its secret key.
    pub(crate) fn on(test_db: &TestDb) -> Self {
        Self::new()
            .with_env("FLASHFLEET_DATABASE_URL", test_db.url())
            .with_env(
                "FLASHFLEET_SECRET_KEY",
                &test_db.config().secret_key.to_base64(),
            )
    }

    /// The same workspace with one more environment variable.
    pub(crate) fn with_env(mut self, name: &str, value: &str) -> Self {
        self.environment.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The working directory.
    pub(crate) fn path(&self) -> &Path {
        self.directory.path()
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Writes `contents` to `name` in the working directory; returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Runs `flashfleet` with `arguments`, without standard input or terminal.
    pub(crate) fn run(&self, arguments: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_flashfleet"))
            .args(arguments)
            .current_dir(self.path())
            .env_clear()
            .envs(self.environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Runs `flashfleet` and expects it to succeed.
    pub(crate) fn run_ok(&self, arguments: &[&str]) -> Run {
        let run = self.run(arguments);
        assert!(run.success, "flashfleet {arguments:?} failed: {run:#?}");
        run
    }

    /// Runs `flashfleet` and expects it to fail.
    pub(crate) fn run_err(&self, arguments: &[&str]) -> Run {
        let run = self.run(arguments);
        assert!(!run.success, "flashfleet {arguments:?} succeeded: {run:#?}");
        run
    }
}

//! What the engine reports when it cannot do what was asked.

use flashfleet_models::RepoError;

/// The errors of `flashfleet-engine`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The object does not exist, or is outside the caller's scope.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
    },
    /// The repository refused or failed.
    #[error(transparent)]
    Repository(#[from] RepoError),
}

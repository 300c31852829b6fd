//! What the engine reports when it cannot do what was asked.

use flashfleet_models::RepoError;

/// The errors of `flashfleet-engine`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The repository refused or failed.
    #[error(transparent)]
    Repository(#[from] RepoError),
}

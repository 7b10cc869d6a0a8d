//! Weight fingerprints, leak detection and the active weight mark.

pub mod mark;

use std::path::Path;

use crate::detect::KeyTest;
use crate::registry::Registry;

/// Errors from fingerprinting.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A weight file that cannot be read.
    #[error(transparent)]
    Format(#[from] crate::error::FormatError),
    /// The active weight mark's detector failed (see [`mark::MarkError`]).
    #[error(transparent)]
    Mark(#[from] mark::MarkError),
}

/// Test the weights at `path` against every registered fingerprint and weight-mark key.
pub fn test_weights(path: &Path, registry: &Registry) -> Result<Vec<KeyTest>, FingerprintError> {
    let _ = crate::weights::model_weight_files(path)?;
    let mut tests = Vec::new();
    tests.extend(mark_tests(path, registry)?);
    Ok(tests)
}

// ---- active weight mark (src/fingerprint/mark.rs) -------------------------------------------
/// The weight-mark KeyTests of every registered `weights` key.
fn mark_tests(path: &Path, registry: &Registry) -> Result<Vec<KeyTest>, FingerprintError> {
    Ok(mark::test_marks(path, registry, None)?)
}

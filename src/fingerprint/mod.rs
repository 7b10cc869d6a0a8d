//! Weight fingerprints and leak detection.
//!
//! A fingerprint ([`Fingerprint`]) holds a few hundred token rows of a model's embedding and,
//! for every matrix, the Gram matrix of a few hidden units. A suspect is tested by aligning its
//! hidden units to the registered ones through the token rows, which survive every
//! transformation that keeps the vocabulary ([`compare`] states the test and its null). No tensor
//! name or stored layout is trusted: the embedding is found by shape, both orientations of every
//! matrix are tried, and layers are matched by score.

pub mod compare;
pub mod extract;
pub mod format;
pub mod invariant;
pub mod model;

use std::path::Path;

use rayon::prelude::*;

pub use compare::Suspect;
pub use extract::extract;
pub use format::Fingerprint;

use crate::detect::KeyTest;
use crate::registry::{EntryKind, Registry};

/// Errors from fingerprinting.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A weight file that cannot be read.
    #[error(transparent)]
    Format(#[from] crate::error::FormatError),
    /// A tensor that cannot be decoded.
    #[error(transparent)]
    Dequant(#[from] crate::weights::dequant::DequantError),
    /// The model has no vocab x hidden matrix to fingerprint.
    #[error("no token-embedding matrix (a 2-D tensor at least twice as long as it is wide)")]
    NoEmbedding,
    /// A fingerprint file that is malformed.
    #[error("bad fingerprint: {0}")]
    BadFingerprint(String),
    /// A registered fingerprint that cannot be read.
    #[error("{}: {source}", path.display())]
    Registered {
        /// The registry file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: Box<FingerprintError>,
    },
    /// The active weight mark's detector failed (see [`crate::mark::MarkError`]).
    #[error(transparent)]
    Mark(#[from] crate::mark::MarkError),
    /// A broken internal invariant (a bug, reported instead of a panic).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Read and validate a fingerprint file.
pub fn read_fingerprint(path: &Path) -> Result<Fingerprint, FingerprintError> {
    let wrap = |e: FingerprintError| FingerprintError::Registered {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let read = crate::input::read(
        path,
        crate::input::Kind::RegistryEntry,
        crate::input::Follow::Yes,
    );
    let bytes = read.map_err(|source| {
        wrap(FingerprintError::Format(crate::error::FormatError::Io {
            path: path.to_path_buf(),
            source,
        }))
    })?;
    Fingerprint::from_json(&bytes).map_err(wrap)
}

/// A registry entry's fingerprint, as parsed when the registry was opened.
pub fn registered_fingerprint(
    e: &crate::registry::Entry,
) -> Result<&Fingerprint, FingerprintError> {
    match e.validated() {
        Ok(crate::registry::Validated::Fingerprint(fp)) => Ok(fp),
        Ok(_) => Err(FingerprintError::BadFingerprint(format!(
            "{}: not a fingerprint",
            e.path.display()
        ))),
        Err(err) => Err(FingerprintError::BadFingerprint(err.to_string())),
    }
}

/// Test the weights at `path` against every registered fingerprint: one [`KeyTest`] per
/// fingerprint, with the raw p-value (the caller adjusts across entries) and, for matches, the
/// inferred alignment and layer map in `details`.
pub fn test_weights(path: &Path, registry: &Registry) -> Result<Vec<KeyTest>, FingerprintError> {
    let suspect = Suspect::open(path)?;
    let entries: Vec<_> = registry.of_kind(EntryKind::Fingerprint).collect();
    let tests = entries
        .par_iter()
        .map(|e| {
            let fp = registered_fingerprint(e)?;
            let mut t = suspect.test(fp)?;
            // The registry file name is the entry's name; the fingerprint's own name is kept.
            if t.name != e.name {
                t.details
                    .insert("fingerprint_name".into(), fp.name.clone().into());
                t.name = e.name.clone();
            }
            Ok(t)
        })
        .collect::<Result<Vec<_>, FingerprintError>>()?;
    for f in suspect_files(&suspect) {
        f.ensure_unchanged()?;
    }
    let mut tests = tests;
    tests.extend(mark_tests(path, registry)?);
    Ok(tests)
}

fn suspect_files(s: &Suspect) -> Vec<&crate::weights::MappedFile> {
    s.model().files().iter().map(|f| f.map()).collect()
}

// ---- active weight mark (src/mark/) ---------------------------------------------------------
/// The weight-mark KeyTests of every registered `weights` key, realigned through the
/// registered fingerprints where they reveal a permuted hidden axis.
fn mark_tests(path: &Path, registry: &Registry) -> Result<Vec<KeyTest>, FingerprintError> {
    crate::mark::test_marks_with_fingerprints(path, registry)
}

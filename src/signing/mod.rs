//! Release signing: OpenSSF Model Signing (OMS) v1.0 bundles with BLAKE3 per file and per tensor.
//!
//! # Bundle layout
//!
//! A signature is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope whose payload is an
//! in-toto Statement v1 with predicate type `https://model_signing/signature/v1.0`:
//!
//! ```text
//! bundle   {mediaType, verificationMaterial{publicKey{hint}, tlogEntries: []}, dsseEnvelope}
//! envelope {payload: base64(statement), payloadType: application/vnd.in-toto+json,
//!           signatures: [{sig: base64(signature over PAE(payloadType, payload)), keyid: ""}]}
//! statement {_type, subject: [{name, digest{sha256: root}, annotations{hallmark.tensors.v1}}],
//!            predicateType, predicate{serialization{method: files, hash_type, allow_symlinks,
//!            ignore_paths}, resources: [{name, algorithm, digest}]}}
//! ```
//!
//! * `root` is SHA-256 over the raw bytes of every resource digest, concatenated in resource
//!   order; resources are the model's files as POSIX paths relative to the model directory
//!   (`.` for a single-file model), sorted by path components (what model_signing emits).
//! * The key hint is the SHA-256 hex of the public key's SPKI PEM text.
//! * Ed25519 signs the PAE bytes; ECDSA P-256 signs SHA-256(PAE) and stores the DER signature.
//!
//! # Where the per-tensor digests live, and why there
//!
//! The OMS predicate schema forbids extra properties, so the per-tensor digests cannot be new
//! predicate fields. They go into the `annotations` of the statement's single subject, under the
//! key [`TENSORS_ANNOTATION`] (`hallmark.tensors.v1`). `annotations` is a field the in-toto
//! ResourceDescriptor defines for free-form data, so protobuf-based in-toto parsers accept it, and
//! model_signing 1.1.1 reads only `subject[0].name` and `subject[0].digest.sha256`
//! (`dsse_payload_to_manifest` in `_signing/signing.py`), so it ignores the annotation. Because the
//! annotation is inside the DSSE payload, the signature covers it exactly as it covers the
//! predicate. The interop tests check that model_signing verifies bundles that carry it.
//!
//! The annotation lists, for every safetensors and GGUF file, the header's byte range and BLAKE3
//! digest, and for every tensor its name, dtype, shape, absolute byte range and a
//! [`TENSOR_DIGEST`] digest (see [`hash`]): a BLAKE3-tree digest of the tensor's bytes that is
//! computed from the same BLAKE3 chaining values as the file digest, so signing hashes each byte
//! once, and that can be recomputed from the tensor's bytes alone when a loader checks just the
//! tensors it reads.
//!
//! # What verification proves
//!
//! A valid result proves that the holder of the private key matching the given public key signed
//! a statement listing exactly the files present (minus the ignored paths), with the same
//! contents. It says nothing about who holds the key, whether the model is safe, or where the
//! weights came from before they were signed.

pub mod bundle;
pub mod hash;
pub mod keys;
pub mod model;
mod pathcheck;
pub mod pki;
pub mod report;
pub mod reuse;
pub mod sign;
pub mod sigstore;
pub mod statement;
pub mod verify;

use std::path::PathBuf;

pub use bundle::Bundle;
pub use hash::HashType;
pub use keys::{KeyAlg, SigningKey, VerifyingKey};
pub use sign::{sign_model, sign_model_full, SignOptions, Signed};
pub use statement::{Method, TensorManifest, TENSORS_ANNOTATION, TENSOR_DIGEST};
pub use verify::{
    check_model, check_model_ignoring, verify_bundle, verify_bundle_with_certificate,
    verify_tensors, CertificatePolicy, FileReport, FileStatus, ModelReport, Signer, TensorCheck,
    VerifiedStatement,
};

use crate::error::FormatError;

/// A progress callback: called with the number of bytes just hashed (from several threads).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Everything that can go wrong while signing or verifying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// An I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weight file that is malformed (signing refuses it) or that could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A weight file that the strict readers refuse.
    #[error("{}: malformed weight file: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: FormatError,
    },
    /// A key file that cannot be used.
    #[error("key: {0}")]
    Key(String),
    /// A signature file that is not a well-formed OMS bundle.
    #[error("signature bundle: {0}")]
    Bundle(String),
    /// A bundle or payload over one of the limits in docs/limits.md.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A signed payload that is not a well-formed OMS statement.
    #[error("signed payload: {0}")]
    Payload(String),
    /// The public key does not match the key hint in the bundle.
    #[error(
        "the signature was made with another key (key hint {hint} does not match the public key)"
    )]
    KeyMismatch {
        /// The hint recorded in the bundle.
        hint: String,
    },
    /// No signature in the envelope verifies with the public key.
    #[error("the signature does not verify with this public key")]
    BadSignature,
    /// A symlink in the model while symlinks are not allowed.
    #[error("{}: is a symlink; pass --allow-symlinks to follow it", .0.display())]
    Symlink(PathBuf),
    /// Something in the model that is neither a regular file nor a directory.
    #[error("{}: not a regular file or directory", .0.display())]
    NotRegular(PathBuf),
    /// A file name that cannot be written in a bundle.
    #[error("{}: file name is not valid UTF-8", .0.display())]
    BadName(PathBuf),
    /// A feature of the bundle that hallmark does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A certificate file that cannot be read (not PEM, not a certificate).
    #[error("certificate: {0}")]
    BadCertificate(String),
    /// A signing certificate that does not validate: no path to a trusted root, expired, not
    /// allowed to sign, or not the key that made the signature.
    #[error("certificate not trusted: {0}")]
    Certificate(String),
    /// A signing identity that is not the one asked for.
    #[error("identity: {0}")]
    Identity(String),
    /// Sigstore evidence (transparency-log entry, inclusion proof, checkpoint, signed
    /// timestamps) that does not verify against the trusted root.
    #[error("sigstore: {0}")]
    Sigstore(String),
    /// An old signature or reuse state that `sign --reuse` cannot use.
    #[error("cannot reuse: {0}")]
    Reuse(String),
    /// A tensor asked for by name that the signature does not list.
    #[error("tensor `{0}` is not in the signature's per-tensor digests")]
    UnknownTensor(String),
}

impl SigningError {
    /// True when the error means "the signature is not valid for this key" (exit 1), as opposed
    /// to input that cannot be used at all (exit 2).
    pub fn is_invalid_signature(&self) -> bool {
        matches!(
            self,
            SigningError::KeyMismatch { .. }
                | SigningError::BadSignature
                | SigningError::Certificate(_)
                | SigningError::Identity(_)
                | SigningError::Sigstore(_)
        )
    }
}

/// Most files `sign` and `verify` hold open at once. Files are handled by this many plain threads
/// (each file is hashed by the rayon pool inside), so a model of any number of files needs at
/// most this many descriptors, whatever the rayon pool does while it waits.
pub const MAX_OPEN_FILES: usize = 16;

/// Run `f` on every item with at most [`MAX_OPEN_FILES`] (and at most the number of rayon
/// threads) running at once; results come back in item order. The first error stops the
/// remaining items from starting and is returned.
pub(crate) fn map_files_bounded<I, T, E, F>(items: &[I], f: F) -> Result<Vec<T>, E>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I) -> Result<T, E> + Sync,
{
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let workers = rayon::current_num_threads()
        .clamp(1, MAX_OPEN_FILES)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_err: Mutex<Option<(usize, E)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                match f(item) {
                    Ok(t) => {
                        if let Ok(mut o) = out.lock() {
                            o[i] = Some(t);
                        }
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut fe) = first_err.lock() {
                            // Report the error of the earliest item, as a sequential loop would.
                            if fe.as_ref().is_none_or(|(j, _)| i < *j) {
                                *fe = Some((i, e));
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some((_, e)) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    // Without an error every slot was filled (a worker that panicked re-raised at scope end).
    Ok(out
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect())
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io {
        path: path.to_path_buf(),
        source,
    }
}

//! Signing a model: list its files, strictly parse every weight file, hash everything once
//! (a few files at a time, each file multi-threaded), and sign the OMS statement.

use std::path::{Path, PathBuf};

use super::bundle::{Bundle, MAX_BUNDLE_LEN};
use super::hash::{blake3_bytes, hash_file, HashType};
use super::keys::SigningKey;
use super::model::{list_files, normalize_ignore};
use super::statement::{
    FileTensors, HeaderDigest, Resource, Serialization, Statement, TensorDigest, TensorManifest,
    DEFAULT_IGNORES, TENSOR_DIGEST,
};
use super::{map_files_bounded, Progress, SigningError};
use crate::fsutil::Follow;
use crate::weights::{self, MappedFile};

/// How to sign.
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// File digest algorithm (BLAKE3 by default; SHA-256 for verifiers that only hash SHA-256,
    /// such as model_signing's CLI).
    pub hash_type: HashType,
    /// Follow symlinks instead of refusing them.
    pub allow_symlinks: bool,
    /// Paths to leave out, relative to the model directory.
    pub ignore: Vec<String>,
    /// Where the signature will be written; left out of the hashed files when it lies inside
    /// the model directory.
    pub sig_path: Option<PathBuf>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            hash_type: HashType::Blake3,
            allow_symlinks: false,
            ignore: Vec::new(),
            sig_path: None,
        }
    }
}

/// The default signature path: `MODEL/model.sig` for a directory, `MODEL.sig` beside a file.
pub fn default_sig_path(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join("model.sig")
    } else {
        let mut s = model.as_os_str().to_owned();
        s.push(".sig");
        PathBuf::from(s)
    }
}

/// The name the statement's subject gets: the model path's final component.
pub fn subject_name(model: &Path) -> String {
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(n) if !n.is_empty() && n != ".." => n,
        _ => std::fs::canonicalize(model)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    }
}

/// True for a top-level file name that signature bundles use (`*.sig`, `*.sigstore`,
/// `*.sigstore.json`).
pub fn is_bundle_name(name: &str) -> bool {
    name.ends_with(".sig") || name.ends_with(".sigstore") || name.ends_with(".sigstore.json")
}

/// A top-level file named like a bundle, and whether it parses as one (else why not).
pub(crate) type SiblingBundle = (String, Result<(), String>);

/// The top-level files of a model directory named like signature bundles and not already
/// ignored, each with whether it parses as a bundle (read through the bundle size cap, never
/// following a symlink or blocking on a FIFO).
pub(crate) fn sibling_bundles(
    model: &Path,
    ignores: &[String],
) -> Result<Vec<SiblingBundle>, SigningError> {
    let mut out = Vec::new();
    if !model.is_dir() {
        return Ok(out);
    }
    let rd = std::fs::read_dir(model).map_err(super::io_err(model))?;
    for e in rd {
        let e = e.map_err(super::io_err(model))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_bundle_name(&name) || super::model::is_ignored(&name, ignores) {
            continue;
        }
        let ok = crate::fsutil::read_capped(&e.path(), MAX_BUNDLE_LEN, Follow::No)
            .map_err(|e| e.to_string())
            .and_then(|b| Bundle::parse(&b).map(|_| ()).map_err(|e| e.to_string()));
        out.push((name, ok));
    }
    out.sort();
    Ok(out)
}

/// The signature file's path relative to the model directory, if it lies inside it.
pub(crate) fn sig_relative(model: &Path, sig: Option<&Path>) -> Option<String> {
    let sig = sig?;
    if !model.is_dir() {
        return None;
    }
    let root = std::fs::canonicalize(model).ok()?;
    let parent = sig
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = std::fs::canonicalize(parent).ok()?;
    let full = parent.join(sig.file_name()?);
    let rel = full.strip_prefix(&root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/")).filter(|s| !s.is_empty())
}

/// Sign `model` with `key`; returns the bundle (the caller writes it).
///
/// Every `.safetensors` and `.gguf` file is parsed strictly first: a malformed weight file is an
/// error and nothing is signed.
pub fn sign_model(
    model: &Path,
    key: &SigningKey,
    opts: &SignOptions,
    progress: Progress<'_>,
) -> Result<Bundle, SigningError> {
    let mut ignores: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    ignores.extend(opts.ignore.iter().map(|s| normalize_ignore(s)));
    if let Some(rel) = sig_relative(model, opts.sig_path.as_deref()) {
        ignores.push(rel);
    }
    // Other signature bundles beside the model (a second signer's) are left out, and recorded
    // in the ignore list so every OMS verifier agrees; a file named like one that is not a
    // bundle is refused rather than skipped.
    for (name, ok) in sibling_bundles(model, &ignores)? {
        match ok {
            Ok(()) => ignores.push(name),
            Err(e) => {
                return Err(SigningError::Bundle(format!(
                    "{}: named like a signature bundle but is not one ({e}); \
                     remove it or pass --ignore {}",
                    crate::fsutil::shown(&model.join(&name)),
                    crate::fsutil::shown_str(&name)
                )))
            }
        }
    }
    ignores.sort();
    ignores.dedup();

    let listing = list_files(model, &ignores, opts.allow_symlinks)?;
    if let Some(s) = listing.symlinks.first() {
        return Err(SigningError::Symlink(model.join(s)));
    }
    if listing.files.is_empty() {
        return Err(SigningError::Unsupported(format!(
            "{}: no files to sign",
            model.display()
        )));
    }

    // Each file is opened, strictly parsed (weight files), hashed and closed by one of a few
    // workers, so memory and open descriptors do not grow with the number of files. A malformed
    // weight file stops the files not yet started, and nothing is signed.
    let follow = if opts.allow_symlinks {
        Follow::Yes
    } else {
        Follow::No
    };
    let hashed = map_files_bounded(&listing.files, |file| {
        let map = MappedFile::open_with(&file.path, follow)?;
        let parsed = if weights::is_weight_path(&file.path) {
            Some(
                weights::parse(map.bytes()).map_err(|source| SigningError::Malformed {
                    path: file.path.clone(),
                    source,
                })?,
            )
        } else {
            None
        };
        let spans: Vec<_> = parsed
            .iter()
            .flat_map(|pf| pf.tensors.iter().map(|t| t.range.clone()))
            .collect();
        let h = hash_file(map.bytes(), opts.hash_type, &spans, progress);
        let header = parsed
            .as_ref()
            .map(|pf| blake3_bytes(&map.bytes()[pf.header.start as usize..pf.header.end as usize]));
        map.ensure_unchanged()?;
        Ok::<_, SigningError>((h, header, parsed))
    })?;

    let mut resources = Vec::with_capacity(hashed.len());
    let mut files = Vec::new();
    for (file, (h, header, parsed)) in listing.files.iter().zip(hashed) {
        resources.push(Resource {
            name: file.name.clone(),
            algorithm: opts.hash_type,
            digest: h.file,
        });
        if let (Some(pf), Some(hd)) = (&parsed, header) {
            let tensors = pf
                .tensors
                .iter()
                .zip(&h.tensors)
                .map(|(t, d)| TensorDigest {
                    name: t.name.clone(),
                    dtype: t.dtype.name().to_string(),
                    shape: t.shape.clone(),
                    range: [t.range.start, t.range.end],
                    digest: d.map(hex::encode).unwrap_or_default(),
                })
                .collect();
            files.push(FileTensors {
                name: file.name.clone(),
                format: pf.format,
                header: HeaderDigest {
                    range: [pf.header.start, pf.header.end],
                    blake3: hex::encode(hd),
                },
                tensors,
            });
        }
    }
    let tensors = (!files.is_empty()).then(|| TensorManifest {
        scheme: TENSOR_DIGEST.to_string(),
        files,
    });
    let statement = Statement::new(
        subject_name(model),
        Serialization {
            hash_type: opts.hash_type,
            allow_symlinks: opts.allow_symlinks,
            ignore_paths: ignores,
        },
        resources,
        tensors,
    );
    let bundle = Bundle::sign(statement.to_payload()?, key);
    // A bundle verify would refuse is never written.
    let len = bundle.to_json().len() as u64;
    if len > MAX_BUNDLE_LEN {
        return Err(SigningError::Limit(format!(
            "the signature bundle would be {len} bytes, over the {MAX_BUNDLE_LEN}-byte limit"
        )));
    }
    Ok(bundle)
}

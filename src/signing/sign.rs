//! Signing a model: list its files, strictly parse every weight file, hash everything once
//! (a few files at a time, each file multi-threaded), and sign the OMS statement.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use super::bundle::{Bundle, MAX_BUNDLE_LEN};
use super::hash::{blake3_bytes, hash_file, hash_shards, shard_ranges, HashType};
use super::keys::{KeyAlg, SigningKey};
use super::model::{list_files, normalize_ignore};
use super::reuse::{FileStat, Reuse};
use super::statement::{
    FileTensors, HeaderDigest, Method, Resource, Serialization, Statement, TensorDigest,
    TensorManifest, DEFAULT_IGNORES, MAX_RESOURCES, TENSOR_DIGEST,
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
    /// Sign with model_signing's `shards` method: every file cut into pieces of this many
    /// bytes, each digested on its own (in parallel). `None`: the `files` method.
    pub shard_size: Option<u64>,
    /// Where the reuse state ([`super::reuse`]) will be written. When set, each file's stat is
    /// recorded in [`Signed::stats`], and the path is left out of the hashed files (and put in
    /// the signed ignore list) when it lies inside the model directory.
    pub state_path: Option<PathBuf>,
    /// An old, verified signature whose digests are taken for files whose stat is unchanged.
    pub reuse: Option<Reuse>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            hash_type: HashType::Blake3,
            allow_symlinks: false,
            ignore: Vec::new(),
            sig_path: None,
            shard_size: None,
            state_path: None,
            reuse: None,
        }
    }
}

/// The file digest `sign` uses when none is asked for: SHA-256 for ECDSA keys and for the
/// `shards` method (what model_signing's `verify key` command can check), BLAKE3 for Ed25519
/// keys (model_signing cannot verify those at all, so nothing is lost by the fast hash).
pub fn default_hash_type(alg: KeyAlg, sharded: bool) -> HashType {
    match alg {
        KeyAlg::P256 | KeyAlg::P384 | KeyAlg::P521 => HashType::Sha256,
        _ if sharded => HashType::Sha256,
        _ => HashType::Blake3,
    }
}

/// Why model_signing 1.1.1's CLI (`model_signing verify key`) cannot verify a bundle signed
/// with `alg`, `hash_type` and `method`; empty when it can. Its CLI accepts only EC keys,
/// always re-hashes with SHA-256 and always uses the `files` method.
pub fn model_signing_cli_gaps(alg: KeyAlg, hash_type: HashType, method: Method) -> Vec<String> {
    let mut out = Vec::new();
    if !alg.is_ecdsa() {
        out.push(format!(
            "it verifies EC (P-256, P-384, P-521) keys only, not {}",
            alg.name()
        ));
    }
    if hash_type != HashType::Sha256 {
        out.push(format!(
            "it re-hashes every file with SHA-256, not {}",
            hash_type.name()
        ));
    }
    if let Method::Shards { .. } = method {
        out.push(
            "it verifies the `files` method only, not `shards` (its Python API verifies \
             shards)"
                .into(),
        );
    }
    out
}

/// What [`sign_model_full`] produced.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The signature bundle (the caller writes it).
    pub bundle: Bundle,
    /// Each signed file's stat just before it was hashed (or as matched for reuse), when
    /// [`SignOptions::state_path`] was set.
    pub stats: std::collections::BTreeMap<String, FileStat>,
    /// Files whose digests were taken from the old signature, and their bytes.
    pub reused: (usize, u64),
    /// Files hashed, and their bytes.
    pub hashed: (usize, u64),
    /// Why nothing could be reused from the old signature, when it could not.
    pub reuse_note: Option<String>,
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

/// The top-level files of a model directory that are reuse state side-cars of a signature
/// (`NAME.reuse` where NAME is named like a bundle, holding a reuse state), not already ignored.
/// They are signer's state, not model content, so `sign` and `verify` leave them out, as they
/// do other signers' bundles.
pub(crate) fn sibling_states(
    model: &Path,
    ignores: &[String],
) -> Result<Vec<String>, SigningError> {
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
        let named = name.strip_suffix(".reuse").is_some_and(is_bundle_name);
        if !named || super::model::is_ignored(&name, ignores) {
            continue;
        }
        let state = crate::fsutil::read_capped(&e.path(), super::reuse::MAX_STATE_LEN, Follow::No)
            .is_ok_and(|b| super::reuse::is_state_file(&b));
        if state {
            out.push(name);
        }
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
    sign_model_full(model, key, opts, progress).map(|s| s.bundle)
}

/// `(shard range, digest)` of one file, in file order (the range `None` with `files`).
type OwnedParts = Vec<(Option<[u64; 2]>, Vec<u8>)>;

/// A file's digests, reused or computed.
struct FileDigests {
    /// `(shard range, digest)` in file order; one `(None, digest)` with the `files` method.
    parts: OwnedParts,
    tensors: Option<FileTensors>,
    stat: Option<FileStat>,
    reused: bool,
    len: u64,
}

/// [`sign_model`], with the reuse state and counts.
pub fn sign_model_full(
    model: &Path,
    key: &SigningKey,
    opts: &SignOptions,
    progress: Progress<'_>,
) -> Result<Signed, SigningError> {
    let method = match opts.shard_size {
        None => Method::Files,
        Some(0) => {
            return Err(SigningError::Unsupported(
                "the shard size must be at least 1 byte".into(),
            ))
        }
        Some(shard_size) => Method::Shards { shard_size },
    };
    let mut ignores: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    ignores.extend(opts.ignore.iter().map(|s| normalize_ignore(s)));
    if let Some(rel) = sig_relative(model, opts.sig_path.as_deref()) {
        ignores.push(rel);
    }
    if let Some(rel) = sig_relative(model, opts.state_path.as_deref()) {
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
    let states = sibling_states(model, &ignores)?;
    ignores.extend(states);
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
    if let Method::Shards { shard_size } = method {
        // A bundle verify would refuse is never made, and a tiny shard size is refused before
        // any byte is hashed.
        let mut shards = 0u64;
        // A lower bound on the bundle's size: each shard is a resource
        // `{"name":"PATH:START:END","digest":"<64 hex>","algorithm":"..."}` in a payload that
        // is base64 in the bundle (4/3). Checked here, so a bundle over the limit is refused
        // before any byte is hashed, not after.
        let mut bundle_len = 0u64;
        for f in &listing.files {
            let len = std::fs::metadata(&f.path)
                .map_err(super::io_err(&f.path))?
                .len();
            let n = len.div_ceil(shard_size);
            shards = shards.saturating_add(n);
            let per_shard = (f.name.len() as u64 + 100).saturating_mul(4) / 3;
            bundle_len = bundle_len.saturating_add(n.saturating_mul(per_shard));
        }
        if shards > MAX_RESOURCES as u64 {
            return Err(SigningError::Limit(format!(
                "{shards} shards, over the limit of {MAX_RESOURCES} resources; use a larger \
                 --shard-size"
            )));
        }
        if bundle_len > MAX_BUNDLE_LEN {
            return Err(SigningError::Limit(format!(
                "{shards} shards: the signature bundle would be over {bundle_len} bytes, over \
                 the {MAX_BUNDLE_LEN}-byte limit; use a larger --shard-size"
            )));
        }
        // model_signing splits a shard's name at every `:`.
        if let Some(f) = listing.files.iter().find(|f| f.name.contains(':')) {
            return Err(SigningError::Unsupported(format!(
                "{}: a file name with `:` cannot be named in a shards signature \
                 (shard names are `path:start:end`); sign without --shard-size",
                crate::fsutil::shown(&f.path)
            )));
        }
    }

    // What the old signature offers: for each file, its stat then and its digests, usable only
    // when the old signature used the same hash and method.
    let mut reuse_note = None;
    let mut reusable: HashMap<&str, (FileStat, OwnedParts)> = HashMap::new();
    let mut old_tensors: HashMap<&str, &FileTensors> = HashMap::new();
    if let Some(r) = &opts.reuse {
        let old = &r.statement.serialization;
        match &r.state {
            None => {
                reuse_note = Some(
                    "no reuse state beside the old signature; every file is hashed (the state \
                     for the next --reuse is written now)"
                        .to_string(),
                )
            }
            Some(_) if old.hash_type != opts.hash_type || old.method != method => {
                reuse_note = Some(format!(
                    "the old signature used {} with the `{}` method; every file is hashed",
                    old.hash_type.name(),
                    old.method.name()
                ))
            }
            Some(state) => {
                for (name, parts) in r.statement.files() {
                    if let Some(stat) = state.files.get(name) {
                        let parts = parts.into_iter().map(|(s, d)| (s, d.to_vec())).collect();
                        reusable.insert(name, (*stat, parts));
                    }
                }
                old_tensors = r
                    .statement
                    .tensors
                    .iter()
                    .flat_map(|m| m.files.iter().map(|f| (f.name.as_str(), f)))
                    .collect();
            }
        }
    }
    let want_stat = opts.state_path.is_some() || !reusable.is_empty();

    // Each file is opened, strictly parsed (weight files), hashed and closed by one of a few
    // workers, so memory and open descriptors do not grow with the number of files. A malformed
    // weight file stops the files not yet started, and nothing is signed.
    let follow = if opts.allow_symlinks {
        Follow::Yes
    } else {
        Follow::No
    };
    let hashed = map_files_bounded(&listing.files, |file| {
        // The stat is taken before hashing: any later write moves ctime, so the next --reuse
        // re-hashes the file.
        let stat = if want_stat {
            let (_, meta) = crate::fsutil::open_regular(&file.path, follow)
                .map_err(super::io_err(&file.path))?;
            FileStat::of(&meta)
        } else {
            None
        };
        let is_weight = weights::is_weight_path(&file.path);
        if let (Some(now), Some((then, parts))) = (stat, reusable.get(file.name.as_str())) {
            let tensors = old_tensors.get(file.name.as_str()).map(|t| (*t).clone());
            if now == *then && (tensors.is_some() || !is_weight) {
                return Ok(FileDigests {
                    parts: parts.clone(),
                    tensors,
                    stat,
                    reused: true,
                    len: now.size,
                });
            }
        }
        let map = MappedFile::open_with(&file.path, follow)?;
        let parsed = if is_weight {
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
        let (parts, tensor_digests) = match method {
            Method::Files => {
                let h = hash_file(map.bytes(), opts.hash_type, &spans, progress);
                (vec![(None, h.file)], h.tensors)
            }
            Method::Shards { shard_size } => {
                let ranges = shard_ranges(map.len(), shard_size);
                let h = hash_shards(map.bytes(), opts.hash_type, &ranges, &spans, progress);
                let parts = ranges
                    .into_iter()
                    .zip(h.shards)
                    .map(|(r, d)| (Some([r.start, r.end]), d))
                    .collect();
                (parts, h.tensors)
            }
        };
        let tensors = parsed.as_ref().map(|pf| {
            let hd = blake3_bytes(&map.bytes()[pf.header.start as usize..pf.header.end as usize]);
            FileTensors {
                name: file.name.clone(),
                format: pf.format,
                header: HeaderDigest {
                    range: [pf.header.start, pf.header.end],
                    blake3: hex::encode(hd),
                },
                tensors: pf
                    .tensors
                    .iter()
                    .zip(&tensor_digests)
                    .map(|(t, d)| TensorDigest {
                        name: t.name.clone(),
                        dtype: t.dtype.name().to_string(),
                        shape: t.shape.clone(),
                        range: [t.range.start, t.range.end],
                        digest: d.map(hex::encode).unwrap_or_default(),
                    })
                    .collect(),
            }
        });
        map.ensure_unchanged()?;
        Ok::<_, SigningError>(FileDigests {
            parts,
            tensors,
            stat,
            reused: false,
            len: map.len(),
        })
    })?;

    let mut resources = Vec::with_capacity(hashed.len());
    let mut files = Vec::new();
    let mut stats = std::collections::BTreeMap::new();
    let (mut reused, mut fresh) = ((0usize, 0u64), (0usize, 0u64));
    for (file, d) in listing.files.iter().zip(hashed) {
        let count = if d.reused { &mut reused } else { &mut fresh };
        count.0 += 1;
        count.1 += d.len;
        // With shards, an empty file has no shards and so no resource (as in model_signing).
        for (shard, digest) in d.parts {
            resources.push(Resource {
                name: file.name.clone(),
                shard,
                algorithm: opts.hash_type,
                digest,
            });
        }
        if let Some(mut t) = d.tensors {
            t.name = file.name.clone();
            files.push(t);
        }
        if let (Some(st), true) = (d.stat, opts.state_path.is_some()) {
            stats.insert(file.name.clone(), st);
        }
    }
    if resources.is_empty() {
        return Err(SigningError::Unsupported(format!(
            "{}: every file is empty, and the shards method signs no empty file; \
             sign without --shard-size",
            model.display()
        )));
    }
    let tensors = (!files.is_empty()).then(|| TensorManifest {
        scheme: TENSOR_DIGEST.to_string(),
        files,
    });
    let statement = Statement::new(
        subject_name(model),
        Serialization {
            method,
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
    Ok(Signed {
        bundle,
        stats,
        reused,
        hashed: fresh,
        reuse_note,
    })
}

//! Verification, in stages:
//!
//! 1. parse the bundle (no cryptography yet);
//! 2. check the key hint (or `rawBytes`) against the public key;
//! 3. check a signature over the DSSE PAE bytes;
//! 4. only then parse the signed payload (types, resources, root digest);
//! 5. list and hash the model's files and compare, naming every changed, missing, extra or
//!    renamed file and every changed tensor.
//!
//! Steps 1–4 are [`verify_bundle`] (a bare public key), [`verify_bundle_with_certificate`] (a
//! certificate chained to given roots) or `super::sigstore::verify_oms_bundle` (Sigstore
//! keyless), each returning a [`VerifiedStatement`] that nothing else can construct; step 5 is
//! [`check_model`] (everything) or [`verify_tensors`] (named tensors only).
//!
//! Verification material a mode cannot check is refused, never ignored: a bundle with a
//! certificate or transparency-log entries does not verify with a bare key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::bundle::{pae, Bundle, PAYLOAD_TYPE};
use super::hash::{blake3_bytes, hash_file, hash_shards, shard_ranges, tensor_digest, HashType};
use super::keys::VerifyingKey;
use super::model::{list_files, normalize_ignore, sort_names, ModelFile};
use super::sign::sig_relative;
use super::statement::{check_resource_name, FileTensors, Method, Statement, DEFAULT_IGNORES};
use super::{io_err, map_files_bounded, Progress, SigningError};
use crate::fsutil::Follow;
use crate::weights::MappedFile;

/// A statement whose signature has been checked against a public key. Only [`verify_bundle`]
/// makes one, so holding one means steps 1–4 passed.
#[derive(Clone, Debug)]
pub struct VerifiedStatement {
    statement: Statement,
    key_hint: String,
    signer: Signer,
    /// SHA-256 hex of the bundle bytes (what a reuse side-car names).
    bundle_sha256: String,
    /// The bare public key that verified the bundle (a reuse side-car is signed with its
    /// private half); `None` for certificate and Sigstore bundles.
    bare_key: Option<VerifyingKey>,
}

/// Who signed, as far as verification established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The holder of a given public key.
    Key {
        /// Its OMS key hint.
        hint: String,
    },
    /// The holder of a certificate that chains to a given root.
    Certificate {
        /// Subject distinguished name.
        subject: String,
        /// Issuer distinguished name.
        issuer: String,
        /// SHA-256 of the DER certificate, hex.
        fingerprint: String,
        /// Subject alternative names.
        sans: Vec<String>,
    },
    /// A Sigstore keyless signer: a Fulcio certificate logged in Rekor.
    Sigstore {
        /// The certificate's identity (email or URI subject alternative name).
        identity: String,
        /// The OIDC issuer recorded by Fulcio.
        issuer: String,
        /// SHA-256 of the DER certificate, hex.
        fingerprint: String,
        /// Rekor log index of the entry.
        log_index: u64,
        /// Time the log integrated the entry, or for a Rekor v2 entry (which records none) the
        /// earliest RFC 3161 timestamp (seconds since the Unix epoch).
        integrated_time: u64,
    },
}

impl VerifiedStatement {
    /// The signed statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// The key hint of the key that verified it (for a certificate: the hint of the
    /// certificate's public key).
    pub fn key_hint(&self) -> &str {
        &self.key_hint
    }
    /// Who signed.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// For the Sigstore verifier: wrap a statement whose evidence it checked.
    pub(crate) fn from_sigstore(
        statement: Statement,
        key_hint: String,
        signer: Signer,
        bundle: &[u8],
    ) -> Self {
        Self {
            statement,
            key_hint,
            signer,
            bundle_sha256: super::reuse::bundle_digest(bundle),
            bare_key: None,
        }
    }
}

/// Refuse verification material that a mode cannot check, naming the mode that can.
fn refuse_unchecked(bundle: &Bundle, certificates_ok: bool) -> Result<(), SigningError> {
    if !certificates_ok && !bundle.certificates.is_empty() {
        return Err(SigningError::Unsupported(
            "the bundle carries a signing certificate, which a bare public key cannot check; \
             verify with --cert-chain (private CA) or --sigstore (Sigstore keyless)"
                .into(),
        ));
    }
    if bundle.tlog_entries > 0 || bundle.timestamps > 0 {
        return Err(SigningError::Unsupported(format!(
            "the bundle carries {} transparency-log entr(ies) and {} signed timestamp(s), which \
             this mode cannot check; verify with --sigstore",
            bundle.tlog_entries, bundle.timestamps
        )));
    }
    Ok(())
}

/// How to trust a certificate bundle (model_signing's `verify certificate`).
#[derive(Clone, Debug)]
pub struct CertificatePolicy {
    /// Trusted root certificates, DER.
    pub roots: Vec<Vec<u8>>,
    /// When set, one of the signing certificate's subject alternative names must equal it.
    pub identity: Option<String>,
    /// Time at which every certificate in the path must be valid (seconds since the Unix
    /// epoch); see docs/signing.md for why this is "now" and not the certificate's issue time.
    pub at: u64,
}

/// Steps 1–4 for a bundle signed with a certificate: parse; validate the path from the signing
/// certificate (through the bundle's other certificates) to one of the roots at `policy.at`;
/// apply model_signing's usage rule and the identity; check a signature over PAE with the
/// certificate's key; parse the payload.
pub fn verify_bundle_with_certificate(
    bytes: &[u8],
    policy: &CertificatePolicy,
) -> Result<VerifiedStatement, SigningError> {
    use super::pki;
    // 1. Parse.
    let bundle = Bundle::parse(bytes)?;
    refuse_unchecked(&bundle, true)?;
    let Some((leaf_der, chain)) = bundle.certificates.split_first() else {
        return Err(SigningError::Unsupported(
            "the bundle carries no certificate (a bare-key bundle: verify with --pub)".into(),
        ));
    };
    let leaf = pki::LeafInfo::parse(leaf_der)?;
    // 2. Path to a trusted root, usage, identity.
    pki::validate_path(
        leaf_der,
        chain,
        &policy.roots,
        policy.at,
        pki::EkuPolicy::Any,
    )?;
    leaf.check_signing_usage()?;
    if let Some(id) = &policy.identity {
        if !leaf.has_identity(id) {
            return Err(SigningError::Identity(format!(
                "the signing certificate is for [{}], not `{id}`",
                leaf.sans
                    .iter()
                    .map(|s| s.value().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // 3. Signature over PAE with the certificate's key.
    let msg = pae(&bundle.payload_type, &bundle.payload);
    if !bundle.signatures.iter().any(|s| leaf.key.verify(&msg, s)) {
        return Err(SigningError::Certificate(
            "the signature was not made with the signing certificate's key".into(),
        ));
    }
    // 4. Payload.
    if bundle.payload_type != PAYLOAD_TYPE {
        return Err(SigningError::Unsupported(format!(
            "payload type `{}`",
            bundle.payload_type
        )));
    }
    let statement = Statement::from_payload(&bundle.payload)?;
    let spki = leaf.key.to_spki_der();
    Ok(VerifiedStatement {
        statement,
        key_hint: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spki_pem(&spki))),
        signer: Signer::Certificate {
            subject: leaf.subject.clone(),
            issuer: leaf.issuer.clone(),
            fingerprint: leaf.fingerprint.clone(),
            sans: leaf.sans.iter().map(|s| s.value().to_string()).collect(),
        },
        bundle_sha256: super::reuse::bundle_digest(bytes),
        bare_key: None,
    })
}

/// SPKI PEM text (64-column base64, LF), the text an OMS key hint hashes.
pub(crate) fn spki_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// Steps 1–4: parse the bundle, check the key hint and the signature, parse the payload.
pub fn verify_bundle(bytes: &[u8], key: &VerifyingKey) -> Result<VerifiedStatement, SigningError> {
    // 1. Parse.
    let bundle = Bundle::parse(bytes)?;
    refuse_unchecked(&bundle, false)?;
    // 2. Key hint.
    let hint = key.hint();
    if let Some(h) = &bundle.key_hint {
        if *h != hint {
            return Err(SigningError::KeyMismatch { hint: h.clone() });
        }
    }
    if let Some(raw) = &bundle.raw_key {
        // DER SPKI, as the Sigstore bundle schema says; model_signing 0.3 and 1.0.0 wrote the
        // key's PEM text there instead, which names the same key.
        let same = *raw == key.to_der()
            || std::str::from_utf8(raw)
                .ok()
                .and_then(|t| super::keys::spki_der_from_pem(t).ok())
                .is_some_and(|d| d == key.to_der());
        if !same {
            return Err(SigningError::KeyMismatch {
                hint: "rawBytes".into(),
            });
        }
    }
    // 3. Signature over PAE.
    let msg = pae(&bundle.payload_type, &bundle.payload);
    if !bundle.signatures.iter().any(|s| key.verify(&msg, s)) {
        return Err(SigningError::BadSignature);
    }
    // 4. Payload.
    if bundle.payload_type != PAYLOAD_TYPE {
        return Err(SigningError::Unsupported(format!(
            "payload type `{}`",
            bundle.payload_type
        )));
    }
    let statement = Statement::from_payload(&bundle.payload)?;
    Ok(VerifiedStatement {
        statement,
        key_hint: hint.clone(),
        signer: Signer::Key { hint },
        bundle_sha256: super::reuse::bundle_digest(bytes),
        bare_key: Some(key.clone()),
    })
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileStatus {
    /// Present and unchanged.
    Ok,
    /// Present with different contents.
    Changed,
    /// Signed but absent.
    Missing,
    /// Present but not signed.
    Extra,
    /// Present under a new name with the contents of the signed file `from` (which is absent).
    Renamed {
        /// The signed name.
        from: String,
    },
    /// A symlink, while the signature does not allow symlinks.
    Symlink,
}

impl FileStatus {
    /// A short lowercase label (`ok`, `changed`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::Changed => "changed",
            FileStatus::Missing => "missing",
            FileStatus::Extra => "extra",
            FileStatus::Renamed { .. } => "renamed",
            FileStatus::Symlink => "symlink",
        }
    }
}

/// The result for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// Resource name (relative POSIX path, `.` for a single-file model).
    pub name: String,
    /// What happened.
    pub status: FileStatus,
    /// For a changed weight file with signed tensor digests: the header differs.
    pub header_changed: bool,
    /// For a changed weight file: tensors whose bytes differ (or lie beyond the end of the file).
    pub changed_tensors: Vec<String>,
    /// For a changed weight file whose header and tensors all match: other bytes (padding,
    /// trailing data) changed.
    pub other_bytes_changed: bool,
    /// With the `shards` method, for a changed file: the signed shards `[start, end)` whose
    /// bytes differ or lie beyond the end of the file.
    pub changed_shards: Vec<[u64; 2]>,
    /// With the `shards` method, for a changed file whose size differs from the signed size:
    /// `(signed size, present size)`.
    pub size_changed: Option<(u64, u64)>,
}

/// The result of checking a model against a verified statement.
#[derive(Clone, Debug)]
pub struct ModelReport {
    /// One entry per file, sorted by name.
    pub files: Vec<FileReport>,
    /// The digest algorithm used.
    pub hash_type: HashType,
    /// The serialization method of the signature (`files` or `shards`).
    pub method: Method,
    /// With the `shards` method: present empty files that the signature does not list. The
    /// method cannot sign an empty file (it has no shards), so these are not verified; they do
    /// not make the result invalid, as model_signing does not either.
    pub unsigned_empty: Vec<String>,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Whether per-tensor digests were available.
    pub has_tensor_digests: bool,
    /// The ignore list recorded in the signed statement.
    pub signed_ignores: Vec<String>,
    /// Paths the verifier was asked to leave out (`verify --ignore`), normalised.
    pub user_ignores: Vec<String>,
    /// Paths present in the model that were not checked: those the signed ignore list, the
    /// default ignores, the user's ignore list or the signature's own path name, and the
    /// signature's own reuse side-car once its signature checked. Sorted. Nothing else is
    /// skipped: another file, whatever its name or content (another bundle included), is an
    /// extra file and fails verification, as with model_signing.
    pub ignored_present: Vec<String>,
    /// The subset of [`ModelReport::ignored_present`] that holds weight files (by extension),
    /// leaving out the user's own `--ignore` paths: a signature that skips weights proves
    /// nothing about them.
    pub ignored_weights: Vec<String>,
}

impl ModelReport {
    /// True when every file is [`FileStatus::Ok`].
    pub fn is_valid(&self) -> bool {
        self.files.iter().all(|f| f.status == FileStatus::Ok)
    }
    /// The files that are not OK.
    pub fn problems(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| f.status != FileStatus::Ok)
    }
}

/// File extensions of model weights in any common format.
pub const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "gguf",
    "ggml",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "h5",
    "keras",
    "msgpack",
    "npz",
    "pkl",
    "pb",
    "tflite",
    "mlmodel",
    "pdparams",
    "nemo",
];

fn is_weight_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| WEIGHT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Weight files at or under `path` (not following symlinks; at most 100,000 entries looked at).
fn weights_under(path: &Path, rel: &str) -> bool {
    if is_weight_name(rel) {
        return true;
    }
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .take(100_000)
        .filter_map(Result::ok)
        .any(|e| e.file_type().is_file() && is_weight_name(&e.file_name().to_string_lossy()))
}

fn ignores_for(model: &Path, st: &Statement, sig: Option<&Path>) -> Vec<String> {
    let mut ig: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
    ig.extend(
        st.serialization
            .ignore_paths
            .iter()
            .map(|s| normalize_ignore(s)),
    );
    if let Some(rel) = sig_relative(model, sig) {
        ig.push(rel);
    }
    ig
}

/// The signature's own reuse side-car (`SIG.reuse`) inside the model, when it is one: signed
/// with the private half of the key that verified the bundle and naming exactly this bundle.
/// Anything else at that path is not skipped (and fails as an extra file).
fn own_state(model: &Path, sig: &Path, verified: &VerifiedStatement) -> Option<String> {
    let key = verified.bare_key.as_ref()?;
    let path = super::reuse::state_path(sig);
    let rel = sig_relative(model, Some(&path))?;
    let bytes = crate::fsutil::read_capped(&path, super::reuse::MAX_STATE_LEN, Follow::No).ok()?;
    super::reuse::ReuseState::decode_for(&bytes, key, &verified.bundle_sha256).ok()?;
    Some(rel)
}

/// Step 5: hash the model's files and compare them with the verified statement.
///
/// `sig` is the signature's path, left out of the listing when it lies inside the model.
pub fn check_model(
    model: &Path,
    verified: &VerifiedStatement,
    sig: Option<&Path>,
    progress: Progress<'_>,
) -> Result<ModelReport, SigningError> {
    check_model_ignoring(model, verified, sig, &[], progress)
}

/// [`check_model`], also leaving out `user_ignores` (relative POSIX paths inside the model,
/// as model_signing's `--ignore-paths`): what the verifier, not the signer, chose to skip. A
/// signed file named there is still required (it is reported missing), so the list can only
/// skip files the signature does not cover.
pub fn check_model_ignoring(
    model: &Path,
    verified: &VerifiedStatement,
    sig: Option<&Path>,
    user_ignores: &[String],
    progress: Progress<'_>,
) -> Result<ModelReport, SigningError> {
    let st = &verified.statement;
    let hash_type = st.serialization.hash_type;
    let mut ignores = ignores_for(model, st, sig);
    let user: Vec<String> = user_ignores
        .iter()
        .map(|s| normalize_ignore(s))
        .filter(|s| !s.is_empty())
        .collect();
    ignores.extend(user.iter().cloned());
    // The bundle's own reuse side-car is skipped only when it verifies, even where the signed
    // ignore list names it (`sign --reuse` puts it there): otherwise any bytes at that path,
    // an old or a foreign side-car, would pass unchecked.
    if let Some(side) = sig.and_then(|s| sig_relative(model, Some(&super::reuse::state_path(s)))) {
        ignores.retain(|ig| *ig != side);
    }
    if let Some(rel) = sig.and_then(|s| own_state(model, s, verified)) {
        ignores.push(rel);
    }
    // A signed file is always verified: no ignore (git paths by default, the signer's list, the
    // verifier's --ignore) may skip it or a directory holding it. model_signing bundles made
    // with --no-ignore-git-paths sign `.gitattributes` and the like.
    let signed_names = st.files();
    ignores.retain(|ig| {
        !signed_names.iter().any(|(n, _)| {
            *n == ig.as_str()
                || (n.len() > ig.len()
                    && n.starts_with(ig.as_str())
                    && n.as_bytes()[ig.len()] == b'/')
        })
    });
    ignores.sort();
    ignores.dedup();
    let mut ignored_present = Vec::new();
    let mut ignored_weights = Vec::new();
    if model.is_dir() {
        for ig in &ignores {
            if ig.is_empty() || check_resource_name(ig).is_err() {
                continue;
            }
            let p = model.join(ig);
            if p.symlink_metadata().is_ok() {
                // What the verifier itself chose to skip is not the signer's omission.
                if !user.contains(ig) && weights_under(&p, ig) {
                    ignored_weights.push(ig.clone());
                }
                ignored_present.push(ig.clone());
            }
        }
    }
    let listing = list_files(model, &ignores, st.serialization.allow_symlinks)?;
    let tensors: HashMap<&str, &FileTensors> = st
        .tensors
        .iter()
        .flat_map(|m| m.files.iter().map(|f| (f.name.as_str(), f)))
        .collect();

    let method = st.serialization.method;
    // Signed file -> its parts `(shard range, digest)` in file order.
    type Parts = Vec<(Option<[u64; 2]>, Vec<u8>)>;
    let signed: BTreeMap<&str, Parts> = st
        .files()
        .into_iter()
        .map(|(n, p)| (n, p.into_iter().map(|(r, d)| (r, d.to_vec())).collect()))
        .collect();
    let follow = if st.serialization.allow_symlinks {
        Follow::Yes
    } else {
        Follow::No
    };
    let hash_one = |f: &ModelFile| {
        let map = MappedFile::open_with(&f.path, follow)?;
        let ft = tensors.get(f.name.as_str());
        let spans: Vec<_> = ft
            .iter()
            .flat_map(|t| t.tensors.iter().map(|x| x.range[0]..x.range[1]))
            .collect();
        let (parts, tensor_digests): (Parts, _) = match method {
            Method::Files => {
                let h = hash_file(map.bytes(), hash_type, &spans, progress);
                (vec![(None, h.file)], h.tensors)
            }
            Method::Shards { shard_size } => {
                // Never more shards than the signature lists for this file: when the size
                // changed, only the signed shards still inside the file are hashed (so a tiny
                // signed shard size cannot turn a large file into billions of digests).
                let len = map.len();
                let signed_parts = signed.get(f.name.as_str());
                let ranges: Vec<std::ops::Range<u64>> = match signed_parts {
                    Some(p) if signed_size(p) != len => p
                        .iter()
                        .filter_map(|(r, _)| r.filter(|r| r[1] <= len).map(|r| r[0]..r[1]))
                        .collect(),
                    _ => shard_ranges(len, shard_size),
                };
                let h = hash_shards(map.bytes(), hash_type, &ranges, &spans, progress);
                let parts = ranges
                    .into_iter()
                    .zip(h.shards)
                    .map(|(r, d)| (Some([r.start, r.end]), d))
                    .collect();
                (parts, h.tensors)
            }
        };
        let detail = ft.map(|t| tensor_detail(map.bytes(), t, &tensor_digests));
        map.ensure_unchanged()?;
        Ok::<_, SigningError>((f.name.clone(), parts, detail, map.len()))
    };
    // Hash every present signed file, computing signed tensor digests in the same pass.
    let (listed, unsigned): (Vec<&ModelFile>, Vec<&ModelFile>) = listing
        .files
        .iter()
        .partition(|f| signed.contains_key(f.name.as_str()));
    // The shards method has no resource for an empty file: one present but unlisted is not
    // verified (and not an extra file), as with model_signing.
    let mut unsigned_empty = Vec::new();
    let unsigned: Vec<&ModelFile> = if let Method::Shards { .. } = method {
        let mut keep = Vec::new();
        for f in unsigned {
            let meta = std::fs::metadata(&f.path).map_err(io_err(&f.path))?;
            if meta.is_file() && meta.len() == 0 {
                unsigned_empty.push(f.name.clone());
            } else {
                keep.push(f);
            }
        }
        keep
    } else {
        unsigned
    };
    let hashed = map_files_bounded(&listed, |f| hash_one(f))?;
    let mut present: std::collections::HashSet<String> =
        listing.files.iter().map(|f| f.name.clone()).collect();
    present.extend(listing.symlinks.iter().cloned());
    let any_missing = signed.keys().any(|n| !present.contains(*n));
    // An unsigned file is a failure whatever it holds, so it is hashed only when a signed file
    // is missing (to tell a rename from an addition); otherwise a huge extra file costs nothing.
    // With shards, only an unsigned file of a missing file's size can be that file renamed, and
    // only such a file is hashed (into no more shards than the missing file has).
    let candidate: Vec<bool> = match method {
        _ if !any_missing => vec![false; unsigned.len()],
        Method::Files => vec![true; unsigned.len()],
        Method::Shards { .. } => {
            let sizes: std::collections::HashSet<u64> = signed
                .iter()
                .filter(|(n, _)| !present.contains(**n))
                .map(|(_, p)| signed_size(p))
                .collect();
            let mut v = Vec::with_capacity(unsigned.len());
            for f in &unsigned {
                let len = std::fs::metadata(&f.path).map_err(io_err(&f.path))?.len();
                v.push(sizes.contains(&len));
            }
            v
        }
    };
    let to_hash: Vec<&ModelFile> = unsigned
        .iter()
        .zip(&candidate)
        .filter(|(_, c)| **c)
        .map(|(f, _)| *f)
        .collect();
    let mut extras: Vec<(String, Option<Parts>)> = map_files_bounded(&to_hash, |f| hash_one(f))?
        .into_iter()
        .map(|(name, parts, _, _)| (name, Some(parts)))
        .collect();
    extras.extend(
        unsigned
            .iter()
            .zip(&candidate)
            .filter(|(_, c)| !**c)
            .map(|(f, _)| (f.name.clone(), None)),
    );

    let mut reports = Vec::new();
    let mut bytes_hashed = 0;
    for (name, parts, detail, len) in hashed {
        bytes_hashed += len;
        match signed.get(name.as_str()) {
            None => {}
            // With shards the size is checked too: when it changed only the signed ranges were
            // hashed, and they may all still match.
            Some(want)
                if *want == parts && (method == Method::Files || signed_size(want) == len) =>
            {
                reports.push(simple(name, FileStatus::Ok))
            }
            Some(want) => {
                let (header_changed, changed_tensors) = detail.unwrap_or((false, vec![]));
                let other = st.tensors.is_some()
                    && tensors.contains_key(name.as_str())
                    && !header_changed
                    && changed_tensors.is_empty();
                // Signed shards whose bytes are not the same now.
                let now: HashMap<[u64; 2], &[u8]> = parts
                    .iter()
                    .filter_map(|(r, d)| r.map(|r| (r, d.as_slice())))
                    .collect();
                let changed_shards: Vec<[u64; 2]> = want
                    .iter()
                    .filter_map(|(r, d)| {
                        let r = (*r)?;
                        (now.get(&r) != Some(&d.as_slice())).then_some(r)
                    })
                    .collect();
                let size_changed = (method != Method::Files && signed_size(want) != len)
                    .then(|| (signed_size(want), len));
                reports.push(FileReport {
                    name,
                    status: FileStatus::Changed,
                    header_changed,
                    changed_tensors,
                    other_bytes_changed: other,
                    changed_shards,
                    size_changed,
                })
            }
        }
    }
    for s in &listing.symlinks {
        reports.push(simple(s.clone(), FileStatus::Symlink));
    }
    // Missing files; a missing file whose digest an extra file carries was renamed.
    let mut missing: Vec<&str> = signed
        .keys()
        .copied()
        .filter(|n| !present.contains(*n))
        .collect();
    for (name, parts) in extras {
        let from = parts.and_then(|parts| {
            missing
                .iter()
                .position(|m| signed.get(m).is_some_and(|d| *d == parts))
        });
        match from {
            Some(i) => {
                let from = missing.remove(i).to_string();
                reports.push(simple(name, FileStatus::Renamed { from }));
            }
            None => reports.push(simple(name, FileStatus::Extra)),
        }
    }
    for m in missing {
        reports.push(simple(m.to_string(), FileStatus::Missing));
    }
    sort_names(&mut reports, |r| &r.name);
    Ok(ModelReport {
        files: reports,
        hash_type,
        method,
        unsigned_empty,
        bytes_hashed,
        has_tensor_digests: st.tensors.is_some(),
        signed_ignores: st.serialization.ignore_paths.clone(),
        user_ignores: user,
        ignored_present,
        ignored_weights,
    })
}

/// The size a file had when signed with shards: the end of its last shard (0 for `files`).
fn signed_size(parts: &[(Option<[u64; 2]>, Vec<u8>)]) -> u64 {
    parts
        .iter()
        .filter_map(|(r, _)| r.map(|r| r[1]))
        .max()
        .unwrap_or(0)
}

fn simple(name: String, status: FileStatus) -> FileReport {
    FileReport {
        name,
        status,
        header_changed: false,
        changed_tensors: vec![],
        other_bytes_changed: false,
        changed_shards: vec![],
        size_changed: None,
    }
}

fn header_ok(bytes: &[u8], ft: &FileTensors) -> bool {
    let [a, b] = ft.header.range;
    a <= b
        && b <= bytes.len() as u64
        && hex::encode(blake3_bytes(&bytes[a as usize..b as usize]))
            == ft.header.blake3.to_ascii_lowercase()
}

/// (header changed, names of changed tensors) for a file with signed tensor digests.
fn tensor_detail(bytes: &[u8], ft: &FileTensors, got: &[Option<[u8; 32]>]) -> (bool, Vec<String>) {
    let changed = ft
        .tensors
        .iter()
        .zip(got)
        .filter(|(t, g)| g.map(hex::encode) != Some(t.digest.to_ascii_lowercase()))
        .map(|(t, _)| t.name.clone())
        .collect();
    (!header_ok(bytes, ft), changed)
}

/// Why the file `name` inside `model` cannot be read for a partial check: missing, or reached
/// through a symlink (the model path itself, a parent directory, or the file) while the
/// signature does not allow symlinks. `None` when it may be opened.
fn symlink_on_path(
    model: &Path,
    name: &str,
    allow_symlinks: bool,
) -> Result<Option<&'static str>, SigningError> {
    let mut path = model.to_path_buf();
    let parts: Vec<&str> = if name == "." {
        vec![]
    } else {
        name.split('/').collect()
    };
    // The model path itself, then each component below it.
    for i in 0..=parts.len() {
        if i > 0 {
            path.push(parts[i - 1]);
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() && !allow_symlinks => {
                return Ok(Some(if i == parts.len() {
                    "file is a symlink"
                } else {
                    "a parent directory is a symlink"
                }))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some("file missing")),
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(None)
}

/// The result of checking one named tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorCheck {
    /// The file (resource name) holding the tensor.
    pub file: String,
    /// Tensor name.
    pub name: String,
    /// True when the file's header and the tensor's bytes match the signed digests.
    pub ok: bool,
    /// Why not, when not OK.
    pub reason: Option<String>,
}

/// Verify only the named tensors against the signed per-tensor digests, reading only their
/// bytes and their file's header. Other bytes of the model are not checked.
pub fn verify_tensors(
    model: &Path,
    verified: &VerifiedStatement,
    names: &[&str],
) -> Result<Vec<TensorCheck>, SigningError> {
    let st = &verified.statement;
    let manifest = st.tensors.as_ref().ok_or_else(|| {
        SigningError::Unsupported("the signature carries no per-tensor digests".into())
    })?;
    // (file index, tensor index) for every requested name.
    let mut wanted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &n in names {
        let mut found = false;
        for (fi, f) in manifest.files.iter().enumerate() {
            for (ti, t) in f.tensors.iter().enumerate() {
                if t.name == n {
                    wanted.entry(fi).or_default().push(ti);
                    found = true;
                }
            }
        }
        if !found {
            return Err(SigningError::UnknownTensor(n.to_string()));
        }
    }
    let mut out = Vec::new();
    for (fi, tis) in wanted {
        let f = &manifest.files[fi];
        let path: PathBuf = if f.name == "." {
            model.to_path_buf()
        } else {
            model.join(&f.name)
        };
        let fail = |t: &str, why: &str| TensorCheck {
            file: f.name.clone(),
            name: t.to_string(),
            ok: false,
            reason: Some(why.to_string()),
        };
        match symlink_on_path(model, &f.name, st.serialization.allow_symlinks) {
            Ok(None) => {}
            Ok(Some(why)) => {
                out.extend(tis.iter().map(|&ti| fail(&f.tensors[ti].name, why)));
                continue;
            }
            Err(e) => return Err(e),
        }
        let follow = if st.serialization.allow_symlinks {
            Follow::Yes
        } else {
            Follow::No
        };
        let map = MappedFile::open_with(&path, follow)?;
        let bytes = map.bytes();
        let hdr = header_ok(bytes, f);
        let checks: Vec<TensorCheck> = tis
            .par_iter()
            .map(|&ti| {
                let t = &f.tensors[ti];
                if !hdr {
                    return fail(&t.name, "file header changed");
                }
                let [a, b] = t.range;
                if a > b || b > bytes.len() as u64 {
                    return fail(&t.name, "tensor lies beyond the end of the file");
                }
                if hex::encode(tensor_digest(bytes, a..b)) != t.digest.to_ascii_lowercase() {
                    return fail(&t.name, "tensor bytes changed");
                }
                TensorCheck {
                    file: f.name.clone(),
                    name: t.name.clone(),
                    ok: true,
                    reason: None,
                }
            })
            .collect();
        map.ensure_unchanged()?;
        out.extend(checks);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::signing::{sign_model, KeyAlg, SignOptions, SigningKey};
    use crate::weights::write::{safetensors_bytes, OwnedTensor};
    use crate::weights::DType;

    fn model(dir: &Path) -> PathBuf {
        let tensors: Vec<OwnedTensor> = (0..4u8)
            .map(|i| OwnedTensor {
                name: format!("t{i}"),
                dtype: DType::U8,
                shape: vec![3000 + i as u64],
                bytes: (0..3000 + i as usize).map(|j| (j as u8) ^ i).collect(),
            })
            .collect();
        let p = dir.join("m.safetensors");
        std::fs::write(&p, safetensors_bytes(&tensors, &[]).unwrap()).unwrap();
        p
    }

    /// Issue 24: the bundle's own reuse side-car is skipped only when it is signed with the
    /// bundle's key and names this bundle; anything else at its path is an extra file.
    #[test]
    fn own_reuse_side_car_is_skipped_only_when_it_verifies() {
        use crate::signing::reuse::{bundle_digest, ReuseState};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        std::fs::create_dir(&d).unwrap();
        model(&d);
        let key = SigningKey::generate(KeyAlg::P256);
        let sig = d.join("model.sig");
        let opts = SignOptions {
            sig_path: Some(sig.clone()),
            ..SignOptions::default()
        };
        let bytes = sign_model(&d, &key, &opts, &|_| {}).unwrap().to_json();
        std::fs::write(&sig, &bytes).unwrap();
        let v = verify_bundle(&bytes, &key.verifying_key()).unwrap();
        assert!(!v
            .statement()
            .serialization
            .ignore_paths
            .contains(&"model.sig.reuse".into()));
        let state = |k: &SigningKey, b: &[u8]| {
            ReuseState {
                bundle_sha256: bundle_digest(b),
                files: Default::default(),
            }
            .encode(k)
            .unwrap()
        };
        let side = d.join("model.sig.reuse");
        std::fs::write(&side, state(&key, &bytes)).unwrap();
        let r = check_model(&d, &v, Some(&sig), &|_| {}).unwrap();
        assert!(r.is_valid(), "{:?}", r.files);
        assert!(r.ignored_present.contains(&"model.sig.reuse".to_string()));
        for forged in [
            state(&SigningKey::generate(KeyAlg::P256), &bytes),
            state(&key, b"another bundle"),
            br#"{"format": "hallmark-reuse-state", "version": 1}"#.to_vec(),
        ] {
            std::fs::write(&side, forged).unwrap();
            let r = check_model(&d, &v, Some(&sig), &|_| {}).unwrap();
            assert!(!r.is_valid());
            assert!(r
                .files
                .iter()
                .any(|f| f.name == "model.sig.reuse" && f.status == FileStatus::Extra));
        }
        // Named in the signed ignore list (as `sign --reuse` writes it): still skipped only when
        // it verifies, so an old or foreign side-car cannot ride on the signer's ignore entry.
        let opts = SignOptions {
            sig_path: Some(sig.clone()),
            ignore: vec!["model.sig.reuse".into()],
            ..SignOptions::default()
        };
        std::fs::remove_file(&side).unwrap();
        let bytes = sign_model(&d, &key, &opts, &|_| {}).unwrap().to_json();
        std::fs::write(&sig, &bytes).unwrap();
        let v = verify_bundle(&bytes, &key.verifying_key()).unwrap();
        assert!(v
            .statement()
            .serialization
            .ignore_paths
            .contains(&"model.sig.reuse".into()));
        std::fs::write(&side, state(&key, &bytes)).unwrap();
        assert!(check_model(&d, &v, Some(&sig), &|_| {}).unwrap().is_valid());
        std::fs::write(&side, state(&key, b"an older bundle")).unwrap();
        let r = check_model(&d, &v, Some(&sig), &|_| {}).unwrap();
        assert!(!r.is_valid(), "{:?}", r.files);
    }

    #[test]
    fn library_round_trip_and_partial_verification() {
        let dir = tempfile::tempdir().unwrap();
        let m = model(dir.path());
        let key = SigningKey::generate(KeyAlg::Ed25519);
        let bundle = sign_model(&m, &key, &SignOptions::default(), &|_| {}).unwrap();
        let bytes = bundle.to_json();
        let v = verify_bundle(&bytes, &key.verifying_key()).unwrap();
        assert!(check_model(&m, &v, None, &|_| {}).unwrap().is_valid());

        // Flip a byte inside t2.
        let range = crate::weights::WeightFile::open(&m)
            .unwrap()
            .parsed()
            .tensor("t2")
            .unwrap()
            .range
            .clone();
        let mut b = std::fs::read(&m).unwrap();
        b[range.start as usize + 1500] ^= 4;
        std::fs::write(&m, &b).unwrap();
        let r = check_model(&m, &v, None, &|_| {}).unwrap();
        assert!(!r.is_valid());
        assert_eq!(r.files[0].changed_tensors, vec!["t2".to_string()]);
        let checks = verify_tensors(&m, &v, &["t1", "t2"]).unwrap();
        assert_eq!(
            checks
                .iter()
                .map(|c| (c.name.as_str(), c.ok))
                .collect::<Vec<_>>(),
            [("t1", true), ("t2", false)]
        );
        assert!(matches!(
            verify_tensors(&m, &v, &["nope"]),
            Err(SigningError::UnknownTensor(_))
        ));

        // Another key: hint mismatch, then (hint removed) bad signature.
        let other = SigningKey::generate(KeyAlg::Ed25519).verifying_key();
        assert!(matches!(
            verify_bundle(&bytes, &other),
            Err(SigningError::KeyMismatch { .. })
        ));
        let mut nohint = bundle.clone();
        nohint.key_hint = None;
        assert!(matches!(
            verify_bundle(&nohint.to_json(), &other),
            Err(SigningError::BadSignature)
        ));
    }
}

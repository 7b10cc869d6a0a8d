//! The JSON form of a verification: what `hallmark verify --json` prints and what the Python
//! package's `hallmark.verify` returns, built in one place so the two never differ.

use std::path::Path;

use serde_json::{json, Value};

use super::{FileStatus, Method, ModelReport, Signer, VerifiedStatement};

/// Who signed, as JSON: `{"kind": "key"|"certificate"|"sigstore", ...}`.
pub fn signer_json(s: &Signer) -> Value {
    match s {
        Signer::Key { hint } => json!({"kind": "key", "key_hint": hint}),
        Signer::Certificate {
            subject,
            issuer,
            fingerprint,
            sans,
        } => json!({"kind": "certificate", "subject": subject, "issuer": issuer,
            "fingerprint": fingerprint, "sans": sans}),
        Signer::Sigstore {
            identity,
            issuer,
            fingerprint,
            log_index,
            integrated_time,
        } => json!({"kind": "sigstore", "identity": identity, "issuer": issuer,
            "fingerprint": fingerprint, "log_index": log_index,
            "integrated_time": integrated_time}),
    }
}

/// The whole verification of `model` against the bundle at `sig`: validity (a signature
/// whose ignore list leaves out weight files is invalid unless `allow_ignored_weights`), every
/// file's status, the changed tensors and shards, the signer.
pub fn verify_json(
    model: &Path,
    sig: &Path,
    verified: &VerifiedStatement,
    r: &ModelReport,
    allow_ignored_weights: bool,
) -> Value {
    let weights_skipped = !r.ignored_weights.is_empty() && !allow_ignored_weights;
    let mut v = json!({
        "model": model,
        "signature": sig,
        "valid": r.is_valid() && !weights_skipped,
        "key_hint": verified.key_hint(),
        "hash_type": r.hash_type.name(),
        "bytes_hashed": r.bytes_hashed,
        "tensor_digests": r.has_tensor_digests,
        "files": r.files.iter().map(|f| {
            // A single-file model's one resource is named "." in the bundle (as in OMS); scripts
            // get the file's name.
            let name = if f.name == "." {
                model
                    .file_name()
                    .map_or_else(|| f.name.clone(), |n| n.to_string_lossy().into_owned())
            } else {
                f.name.clone()
            };
            let mut o = json!({"name": name, "status": f.status.label()});
            if let FileStatus::Renamed { from } = &f.status {
                o["from"] = json!(from);
            }
            if f.status == FileStatus::Changed {
                o["header_changed"] = json!(f.header_changed);
                o["changed_tensors"] = json!(f.changed_tensors);
                o["other_bytes_changed"] = json!(f.other_bytes_changed);
                if r.method != Method::Files {
                    o["changed_shards"] = json!(f.changed_shards);
                    if let Some((signed, now)) = f.size_changed {
                        o["signed_size"] = json!(signed);
                        o["size"] = json!(now);
                    }
                }
            }
            o
        }).collect::<Vec<_>>(),
    });
    v["subject"] = json!(verified.statement().subject_name);
    v["ignore_paths"] = json!(r.signed_ignores);
    v["user_ignores"] = json!(r.user_ignores);
    v["ignored_present"] = json!(r.ignored_present);
    v["ignored_weights"] = json!(r.ignored_weights);
    v["signer"] = signer_json(verified.signer());
    v["method"] = json!(r.method.name());
    if let Method::Shards { shard_size } = r.method {
        v["shard_size"] = json!(shard_size);
        v["unsigned_empty"] = json!(r.unsigned_empty);
    }
    v
}

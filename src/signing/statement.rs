//! The in-toto Statement v1 that an OMS v1.0 signature carries, and hallmark's per-tensor
//! annotation on its subject.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::hash::{HashType, TENSOR_DIGEST_SCHEME};
use super::SigningError;
use crate::weights::WeightFormat;

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The OMS v1.0 predicate type.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The subject annotation key under which hallmark records per-tensor digests.
pub const TENSORS_ANNOTATION: &str = "hallmark.tensors.v1";
/// The per-tensor digest scheme (see [`super::hash`]).
pub const TENSOR_DIGEST: &str = TENSOR_DIGEST_SCHEME;
/// Most resources (files) a statement may list.
pub const MAX_RESOURCES: usize = 1 << 20;
/// Most ignore paths a statement may record.
pub const MAX_IGNORE_PATHS: usize = 1 << 16;
/// Paths that are never hashed, relative to the model directory.
pub const DEFAULT_IGNORES: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// One signed file (`files` method) or one shard of a file (`shards` method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The file's relative POSIX path (`.` for a single-file model).
    pub name: String,
    /// With the `shards` method: the shard's byte range `[start, end)` in the file. The
    /// resource is then written as `name:start:end`, as model_signing names shards.
    pub shard: Option<[u64; 2]>,
    /// Digest algorithm.
    pub algorithm: HashType,
    /// Raw digest bytes.
    pub digest: Vec<u8>,
}

/// The OMS serialization method: one digest per file, or one per fixed-size shard of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `files`: one resource per file.
    Files,
    /// `shards`: every non-empty file cut into `shard_size`-byte shards (the last one shorter),
    /// one resource per shard. Empty files have no shards and so appear in no resource.
    Shards {
        /// Bytes per shard (positive).
        shard_size: u64,
    },
}

impl Method {
    /// The name used in bundles.
    pub fn name(self) -> &'static str {
        match self {
            Method::Files => "files",
            Method::Shards { .. } => "shards",
        }
    }
    /// The resource `algorithm` string for `hash_type` under this method: the plain hash name
    /// for `files`, `<hash>-sharded-<shard_size>` for `shards` (what model_signing writes and
    /// compares).
    pub fn algorithm(self, hash_type: HashType) -> String {
        match self {
            Method::Files => hash_type.name().to_string(),
            Method::Shards { shard_size } => format!("{}-sharded-{shard_size}", hash_type.name()),
        }
    }
}

/// How the model was serialized into resources (`predicate.serialization`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serialization {
    /// `files` or `shards`.
    pub method: Method,
    /// File digest algorithm.
    pub hash_type: HashType,
    /// Whether symlinks were followed.
    pub allow_symlinks: bool,
    /// Paths left out, relative to the model directory.
    pub ignore_paths: Vec<String>,
}

/// Per-tensor digests of every safetensors/GGUF file of a model (the `hallmark.tensors.v1`
/// annotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorManifest {
    /// The tensor digest scheme, [`TENSOR_DIGEST`].
    pub scheme: String,
    /// One entry per weight file, in resource order.
    pub files: Vec<FileTensors>,
}

/// The header digest and tensor digests of one weight file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTensors {
    /// The file's resource name.
    pub name: String,
    /// Container format.
    pub format: WeightFormat,
    /// The header: everything before the tensor data.
    pub header: HeaderDigest,
    /// Tensors in file order.
    pub tensors: Vec<TensorDigest>,
}

/// Byte range and BLAKE3 digest of a file's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderDigest {
    /// Absolute byte range `[start, end)`.
    pub range: [u64; 2],
    /// BLAKE3 of those bytes, lowercase hex.
    pub blake3: String,
}

/// One tensor's signed description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorDigest {
    /// Tensor name.
    pub name: String,
    /// Element type name (`F32`, `Q4_K`, ...).
    pub dtype: String,
    /// Row-major shape.
    pub shape: Vec<u64>,
    /// Absolute byte range `[start, end)` of the tensor's data.
    pub range: [u64; 2],
    /// Tensor digest ([`TENSOR_DIGEST`]), lowercase hex.
    pub digest: String,
}

/// One signed file's parts: `(shard range, digest)`, the range `None` with the `files` method.
pub type FileParts<'a> = Vec<(Option<[u64; 2]>, &'a [u8])>;

/// A parsed OMS v1.0 statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The model's name (basename of the signed path).
    pub subject_name: String,
    /// SHA-256 over the concatenated resource digests.
    pub root: [u8; 32],
    /// How the model was serialized.
    pub serialization: Serialization,
    /// Signed files, in payload order.
    pub resources: Vec<Resource>,
    /// hallmark's per-tensor digests, when present and in a known scheme.
    pub tensors: Option<TensorManifest>,
}

/// SHA-256 over the raw digests, in order: the OMS root digest.
pub fn root_digest(resources: &[Resource]) -> [u8; 32] {
    let mut h = Sha256::new();
    for r in resources {
        h.update(&r.digest);
    }
    h.finalize().into()
}

impl Statement {
    /// Build a statement; computes the root digest.
    pub fn new(
        subject_name: String,
        serialization: Serialization,
        resources: Vec<Resource>,
        tensors: Option<TensorManifest>,
    ) -> Self {
        let root = root_digest(&resources);
        Self {
            subject_name,
            root,
            serialization,
            resources,
            tensors,
        }
    }

    /// The JSON payload bytes (compact).
    pub fn to_payload(&self) -> Result<Vec<u8>, SigningError> {
        let mut subject = json!({
            "name": self.subject_name,
            "digest": {"sha256": hex::encode(self.root)},
        });
        if let Some(t) = &self.tensors {
            let v = serde_json::to_value(t).map_err(|e| SigningError::Payload(e.to_string()))?;
            subject["annotations"] = json!({ TENSORS_ANNOTATION: v });
        }
        let s = &self.serialization;
        let mut ser = json!({
            "method": s.method.name(),
            "hash_type": s.hash_type.name(),
            "allow_symlinks": s.allow_symlinks,
            "ignore_paths": s.ignore_paths,
        });
        if let Method::Shards { shard_size } = s.method {
            // An integer, unlike model_signing's own float: its verifier can then rebuild the
            // shards from the bundle alone.
            ser["shard_size"] = json!(shard_size);
        }
        let v = json!({
            "_type": STATEMENT_TYPE,
            "subject": [subject],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": ser,
                "resources": self.resources.iter().map(|r| json!({
                    "name": r.resource_name(),
                    "algorithm": s.method.algorithm(r.algorithm),
                    "digest": hex::encode(&r.digest),
                })).collect::<Vec<_>>(),
            },
        });
        serde_json::to_vec(&v).map_err(|e| SigningError::Payload(e.to_string()))
    }

    /// Parse and check a payload: types, one subject, `files` serialization, well-formed
    /// resources with unique safe names, and a root digest that matches the resources.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, SigningError> {
        let bad = |m: &str| SigningError::Payload(m.to_string());
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| SigningError::Payload(format!("not JSON: {e}")))?;
        if v.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
            return Err(bad("`_type` is not an in-toto Statement v1"));
        }
        let pt = v.get("predicateType").and_then(Value::as_str).unwrap_or("");
        if pt != PREDICATE_TYPE {
            return Err(SigningError::Unsupported(format!("predicate type `{pt}`")));
        }
        let subjects = v
            .get("subject")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`subject` is not an array"))?;
        let [subject] = subjects.as_slice() else {
            return Err(bad("expected exactly one subject"));
        };
        let subject_name = subject
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("subject has no name"))?
            .to_string();
        let root_hex = subject
            .pointer("/digest/sha256")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("subject has no sha256 digest"))?;
        let root: [u8; 32] = hex::decode(root_hex)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| bad("subject digest is not 32 bytes of hex"))?;

        let pred = v.get("predicate").ok_or_else(|| bad("no predicate"))?;
        let ser = pred
            .get("serialization")
            .ok_or_else(|| bad("no serialization"))?;
        let method = match ser.get("method").and_then(Value::as_str).unwrap_or("") {
            "files" => Method::Files,
            "shards" => Method::Shards {
                shard_size: parse_shard_size(ser.get("shard_size"))?,
            },
            m => {
                return Err(SigningError::Unsupported(format!(
                    "serialization method `{m}` (hallmark verifies `files` and `shards`)"
                )))
            }
        };
        let ht = ser.get("hash_type").and_then(Value::as_str).unwrap_or("");
        let hash_type = HashType::from_name(ht)
            .ok_or_else(|| SigningError::Unsupported(format!("hash type `{ht}`")))?;
        let allow_symlinks = match ser.get("allow_symlinks") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`allow_symlinks` is not a boolean")),
        };
        let ignore_paths = match ser.get("ignore_paths") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.len() > MAX_IGNORE_PATHS => {
                return Err(SigningError::Limit(format!(
                    "{} ignore paths, over the limit of {MAX_IGNORE_PATHS}",
                    a.len()
                )))
            }
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`ignore_paths` holds a non-string"))?,
            Some(_) => return Err(bad("`ignore_paths` is not an array")),
        };

        let res = pred
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`resources` is not an array"))?;
        if res.len() > MAX_RESOURCES {
            return Err(SigningError::Limit(format!(
                "{} resources, over the limit of {MAX_RESOURCES}",
                res.len()
            )));
        }
        let mut resources = Vec::with_capacity(res.len());
        let mut seen_items = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        for r in res {
            let full = r
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("resource without a name"))?;
            let (name, shard) = match method {
                Method::Files => (full, None),
                Method::Shards { .. } => {
                    let (n, a, b) = split_shard_name(full)?;
                    (n, Some([a, b]))
                }
            };
            check_resource_name(name)?;
            if !seen_items.insert(full) {
                return Err(SigningError::Payload(format!(
                    "resource `{full}` listed twice"
                )));
            }
            seen.insert(name);
            let alg = r.get("algorithm").and_then(Value::as_str).unwrap_or("");
            let base = match method {
                Method::Files => alg,
                // model_signing writes `sha256-sharded-<size>`; the plain name is accepted too.
                Method::Shards { shard_size } => alg
                    .strip_suffix(&format!("-sharded-{shard_size}"))
                    .unwrap_or(alg),
            };
            let algorithm = HashType::from_name(base)
                .ok_or_else(|| SigningError::Unsupported(format!("digest algorithm `{alg}`")))?;
            if algorithm != hash_type {
                return Err(SigningError::Payload(format!(
                    "resource `{full}` uses {alg} but hash_type is {ht}"
                )));
            }
            let digest = r
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| hex::decode(d).ok())
                .filter(|d| d.len() == algorithm.digest_len())
                .ok_or_else(|| {
                    SigningError::Payload(format!("resource `{name}` has a malformed digest"))
                })?;
            resources.push(Resource {
                name: name.to_string(),
                shard,
                algorithm,
                digest,
            });
        }
        if root_digest(&resources) != root {
            return Err(bad(
                "the subject's root digest does not match the resources",
            ));
        }
        if seen.contains(".") && seen.len() != 1 {
            return Err(bad("`.` (a single-file model) must be the only resource"));
        }
        if let Method::Shards { shard_size } = method {
            check_shard_tiling(&resources, shard_size)?;
        }

        let tensors = match subject.pointer(&format!("/annotations/{TENSORS_ANNOTATION}")) {
            None => None,
            Some(t) => {
                let m: TensorManifest = serde_json::from_value(t.clone()).map_err(|e| {
                    SigningError::Payload(format!("`{TENSORS_ANNOTATION}` annotation: {e}"))
                })?;
                // Tensor entries may only describe signed files (so they never name a path
                // outside the model).
                if let Some(f) = m.files.iter().find(|f| !seen.contains(f.name.as_str())) {
                    return Err(SigningError::Payload(format!(
                        "per-tensor digests for `{}`, which is not a signed resource",
                        f.name
                    )));
                }
                // An unknown scheme comes from a newer hallmark: file digests still verify.
                (m.scheme == TENSOR_DIGEST).then_some(m)
            }
        };
        Ok(Self {
            subject_name,
            root,
            serialization: Serialization {
                method,
                hash_type,
                allow_symlinks,
                ignore_paths,
            },
            resources,
            tensors,
        })
    }

    /// The signed files in resource order, each with its parts: one `(None, digest)` with the
    /// `files` method, the `(Some([start, end]), digest)` shards in file order with `shards`.
    pub fn files(&self) -> Vec<(&str, FileParts<'_>)> {
        let mut out: Vec<(&str, FileParts<'_>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for r in &self.resources {
            let i = *index.entry(r.name.as_str()).or_insert_with(|| {
                out.push((r.name.as_str(), Vec::new()));
                out.len() - 1
            });
            out[i].1.push((r.shard, r.digest.as_slice()));
        }
        for (_, parts) in &mut out {
            parts.sort_by_key(|p| p.0);
        }
        out
    }
}

impl Resource {
    /// The name written in the bundle: the path, or `path:start:end` for a shard.
    pub fn resource_name(&self) -> String {
        match self.shard {
            None => self.name.clone(),
            Some([a, b]) => format!("{}:{a}:{b}", self.name),
        }
    }
}

/// `shard_size`: a positive integer. model_signing 1.1.1 writes it as a float (`1000000000.0`),
/// so an integral float is accepted as well.
fn parse_shard_size(v: Option<&Value>) -> Result<u64, SigningError> {
    let bad = || SigningError::Payload("`shard_size` is not a positive integer".into());
    let Some(Value::Number(n)) = v else {
        return Err(bad());
    };
    let size = match n.as_u64() {
        Some(u) => u,
        None => {
            let f = n.as_f64().ok_or_else(bad)?;
            // Integral and exactly representable (below 2^53).
            if !(f.fract() == 0.0 && f > 0.0 && f <= 9_007_199_254_740_992.0) {
                return Err(bad());
            }
            f as u64
        }
    };
    if size == 0 {
        return Err(bad());
    }
    Ok(size)
}

/// Split a shard resource name `path:start:end` (exactly two colons, as model_signing requires;
/// decimal offsets with `start < end`).
fn split_shard_name(full: &str) -> Result<(&str, u64, u64), SigningError> {
    let bad = || SigningError::Payload(format!("shard resource `{full}` is not `path:start:end`"));
    let mut it = full.split(':');
    let (Some(p), Some(a), Some(b), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (num(a), num(b)) {
        (Some(a), Some(b)) if a < b => Ok((p, a, b)),
        _ => Err(bad()),
    }
}

/// Every file's shards must cut `[0, size)` exactly as model_signing does: consecutive,
/// starting at 0, all `shard_size` long except a shorter (non-empty) last one.
fn check_shard_tiling(resources: &[Resource], shard_size: u64) -> Result<(), SigningError> {
    let mut by_file: std::collections::HashMap<&str, Vec<[u64; 2]>> = Default::default();
    for r in resources {
        if let Some(s) = r.shard {
            by_file.entry(r.name.as_str()).or_default().push(s);
        }
    }
    for (name, mut shards) in by_file {
        shards.sort_unstable();
        let mut pos = 0u64;
        let n = shards.len();
        for (i, [a, b]) in shards.into_iter().enumerate() {
            let len = b - a;
            let ok = a == pos && (len == shard_size || (i + 1 == n && len < shard_size));
            if !ok {
                return Err(SigningError::Payload(format!(
                    "the shards of `{name}` do not cut the file into {shard_size}-byte pieces \
                     (shard {a}..{b})"
                )));
            }
            pos = b;
        }
    }
    Ok(())
}

/// A resource name must be `.` or a relative POSIX path without `.`/`..`/empty components.
pub(crate) fn check_resource_name(name: &str) -> Result<(), SigningError> {
    let ok = name == "."
        || (!name.is_empty()
            && !name.starts_with('/')
            && !name.contains('\\')
            && !name.contains('\0')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
    if ok {
        Ok(())
    } else {
        Err(SigningError::Payload(format!(
            "unsafe resource name `{name}`"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_manifest() -> impl Strategy<Value = TensorManifest> {
        let tensor = (
            "[a-z._0-9]{1,20}",
            prop::sample::select(vec!["F32", "BF16", "Q4_K", "I8"]),
            prop::collection::vec(0u64..5000, 0..4),
            any::<u64>(),
            any::<u64>(),
            prop::array::uniform32(any::<u8>()),
        )
            .prop_map(|(name, dtype, shape, a, b, d)| TensorDigest {
                name,
                dtype: dtype.to_string(),
                shape,
                range: [a.min(b), a.max(b)],
                digest: hex::encode(d),
            });
        let file = (
            "[a-z0-9-]{1,12}\\.(safetensors|gguf)",
            any::<bool>(),
            any::<u64>(),
            prop::array::uniform32(any::<u8>()),
            prop::collection::vec(tensor, 0..6),
        )
            .prop_map(|(name, gguf, hl, hd, tensors)| FileTensors {
                name,
                format: if gguf {
                    WeightFormat::Gguf
                } else {
                    WeightFormat::Safetensors
                },
                header: HeaderDigest {
                    range: [0, hl],
                    blake3: hex::encode(hd),
                },
                tensors,
            });
        prop::collection::vec(file, 0..4).prop_map(|files| TensorManifest {
            scheme: TENSOR_DIGEST.to_string(),
            files,
        })
    }

    fn arb_statement() -> impl Strategy<Value = Statement> {
        (
            "[^\\x00]{1,16}",
            prop::collection::btree_map(
                "[a-z0-9]{1,6}(/[a-z0-9_]{1,5}(\\.[a-z]{1,3})?){0,2}",
                prop::array::uniform32(any::<u8>()),
                1..6,
            ),
            any::<bool>(),
            prop::collection::vec("[a-z.]{1,8}", 0..3),
            prop::option::of(arb_manifest()),
        )
            .prop_map(|(subject, files, allow, ign, mut tensors)| {
                let resources: Vec<Resource> = files
                    .into_iter()
                    .map(|(name, d)| Resource {
                        shard: None,
                        name,
                        algorithm: HashType::Blake3,
                        digest: d.to_vec(),
                    })
                    .collect();
                // Per-tensor entries describe signed files.
                for (i, f) in tensors
                    .iter_mut()
                    .flat_map(|m| m.files.iter_mut())
                    .enumerate()
                {
                    f.name = resources[i % resources.len()].name.clone();
                }
                Statement::new(
                    subject,
                    Serialization {
                        method: Method::Files,
                        hash_type: HashType::Blake3,
                        allow_symlinks: allow,
                        ignore_paths: ign,
                    },
                    resources,
                    tensors,
                )
            })
    }

    proptest! {
        #[test]
        fn statement_round_trips(st in arb_statement()) {
            let bytes = st.to_payload().unwrap();
            let back = Statement::from_payload(&bytes).unwrap();
            prop_assert_eq!(back, st);
        }

        #[test]
        fn manifest_round_trips(m in arb_manifest()) {
            let v = serde_json::to_vec(&m).unwrap();
            let back: TensorManifest = serde_json::from_slice(&v).unwrap();
            prop_assert_eq!(back, m);
        }
    }

    #[test]
    fn tensor_entries_must_name_signed_files() {
        let mut st = Statement::new(
            "m".into(),
            Serialization {
                method: Method::Files,
                hash_type: HashType::Blake3,
                allow_symlinks: false,
                ignore_paths: vec![],
            },
            vec![Resource {
                shard: None,
                name: "a.gguf".into(),
                algorithm: HashType::Blake3,
                digest: vec![1; 32],
            }],
            None,
        );
        st.tensors = Some(TensorManifest {
            scheme: TENSOR_DIGEST.into(),
            files: vec![FileTensors {
                name: "../../etc/passwd".into(),
                format: WeightFormat::Gguf,
                header: HeaderDigest {
                    range: [0, 1],
                    blake3: String::new(),
                },
                tensors: vec![],
            }],
        });
        let p = st.to_payload().unwrap();
        assert!(matches!(
            Statement::from_payload(&p),
            Err(SigningError::Payload(_))
        ));
    }

    #[test]
    fn root_mismatch_and_unsafe_names_rejected() {
        let st = Statement::new(
            "m".into(),
            Serialization {
                method: Method::Files,
                hash_type: HashType::Sha256,
                allow_symlinks: false,
                ignore_paths: vec![],
            },
            vec![Resource {
                shard: None,
                name: "a".into(),
                algorithm: HashType::Sha256,
                digest: vec![1; 32],
            }],
            None,
        );
        let p = String::from_utf8(st.to_payload().unwrap()).unwrap();
        let tampered = p.replace(&"01".repeat(32), &"02".repeat(32));
        assert!(matches!(
            Statement::from_payload(tampered.as_bytes()),
            Err(SigningError::Payload(_))
        ));
        for name in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let bad = p.replace("\"name\":\"a\"", &format!("\"name\":{}", json!(name)));
            assert!(Statement::from_payload(bad.as_bytes()).is_err(), "{name}");
        }
    }

    fn shard_statement(shard_size: u64, files: &[(&str, u64)]) -> Statement {
        let mut resources = Vec::new();
        for (name, len) in files {
            for r in crate::signing::hash::shard_ranges(*len, shard_size) {
                resources.push(Resource {
                    name: name.to_string(),
                    shard: Some([r.start, r.end]),
                    algorithm: HashType::Sha256,
                    digest: vec![r.start as u8; 32],
                });
            }
        }
        Statement::new(
            "m".into(),
            Serialization {
                method: Method::Shards { shard_size },
                hash_type: HashType::Sha256,
                allow_symlinks: false,
                ignore_paths: vec![".git".into()],
            },
            resources,
            None,
        )
    }

    #[test]
    fn shard_statements_round_trip_in_model_signing_form() {
        let st = shard_statement(1000, &[("a.bin", 2500), ("sub/b", 1000)]);
        let p = st.to_payload().unwrap();
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["predicate"]["serialization"]["method"], "shards");
        assert_eq!(v["predicate"]["serialization"]["shard_size"], 1000);
        let r = &v["predicate"]["resources"];
        assert_eq!(r[0]["name"], "a.bin:0:1000");
        assert_eq!(r[2]["name"], "a.bin:2000:2500");
        assert_eq!(r[0]["algorithm"], "sha256-sharded-1000");
        assert_eq!(Statement::from_payload(&p).unwrap(), st);
        let files = st.files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].1.len(), 3);
        // model_signing 1.1.1 writes the size as a float.
        let text = String::from_utf8(p).unwrap();
        let float = text.replace("\"shard_size\":1000", "\"shard_size\":1000.0");
        assert_eq!(Statement::from_payload(float.as_bytes()).unwrap(), st);
    }

    #[test]
    fn malformed_shard_payloads_are_refused() {
        let st = shard_statement(1000, &[("a.bin", 2500)]);
        let text = String::from_utf8(st.to_payload().unwrap()).unwrap();
        for (from, to) in [
            ("\"shard_size\":1000", "\"shard_size\":0"),
            ("\"shard_size\":1000", "\"shard_size\":-5"),
            ("\"shard_size\":1000", "\"shard_size\":10.5"),
            ("\"shard_size\":1000", "\"shard_size\":\"1000\""),
            (",\"shard_size\":1000", ""),
            ("a.bin:0:1000", "a.bin:0:999"),
            ("a.bin:0:1000", "a.bin:0:1000:7"),
            ("a.bin:0:1000", "a.bin:x:1000"),
            ("a.bin:2000:2500", "a.bin:2000:2000"),
            ("a.bin:1000:2000", "../x:1000:2000"),
            ("sha256-sharded-1000", "sha256-sharded-999"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from}");
            let got = Statement::from_payload(bad.as_bytes());
            assert!(got.is_err(), "accepted {from} -> {to}");
        }
        // Missing shard: a gap in the middle.
        let mut gap = shard_statement(1000, &[("a.bin", 2500)]);
        gap.resources.remove(1);
        let gap = Statement::new(
            gap.subject_name.clone(),
            gap.serialization.clone(),
            gap.resources.clone(),
            None,
        );
        assert!(Statement::from_payload(&gap.to_payload().unwrap()).is_err());
    }
}

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

/// One signed file: its POSIX path relative to the model (`.` for a single-file model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Relative POSIX path.
    pub name: String,
    /// Digest algorithm.
    pub algorithm: HashType,
    /// Raw digest bytes.
    pub digest: Vec<u8>,
}

/// How the model was serialized into resources (`predicate.serialization`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serialization {
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
        let v = json!({
            "_type": STATEMENT_TYPE,
            "subject": [subject],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": {
                    "method": "files",
                    "hash_type": s.hash_type.name(),
                    "allow_symlinks": s.allow_symlinks,
                    "ignore_paths": s.ignore_paths,
                },
                "resources": self.resources.iter().map(|r| json!({
                    "name": r.name,
                    "algorithm": r.algorithm.name(),
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
        let method = ser.get("method").and_then(Value::as_str).unwrap_or("");
        if method != "files" {
            return Err(SigningError::Unsupported(format!(
                "serialization method `{method}` (hallmark verifies `files`)"
            )));
        }
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
        let mut seen = std::collections::HashSet::new();
        for r in res {
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("resource without a name"))?;
            check_resource_name(name)?;
            if !seen.insert(name) {
                return Err(SigningError::Payload(format!(
                    "resource `{name}` listed twice"
                )));
            }
            let alg = r.get("algorithm").and_then(Value::as_str).unwrap_or("");
            let algorithm = HashType::from_name(alg)
                .ok_or_else(|| SigningError::Unsupported(format!("digest algorithm `{alg}`")))?;
            if algorithm != hash_type {
                return Err(SigningError::Payload(format!(
                    "resource `{name}` uses {alg} but hash_type is {ht}"
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
                algorithm,
                digest,
            });
        }
        if root_digest(&resources) != root {
            return Err(bad(
                "the subject's root digest does not match the resources",
            ));
        }
        if resources.iter().any(|r| r.name == ".") && resources.len() != 1 {
            return Err(bad("`.` (a single-file model) must be the only resource"));
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
                hash_type,
                allow_symlinks,
                ignore_paths,
            },
            resources,
            tensors,
        })
    }
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
                hash_type: HashType::Blake3,
                allow_symlinks: false,
                ignore_paths: vec![],
            },
            vec![Resource {
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
                hash_type: HashType::Sha256,
                allow_symlinks: false,
                ignore_paths: vec![],
            },
            vec![Resource {
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
}

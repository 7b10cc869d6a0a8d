//! Testing one suspect against a whole registry: the `detect` command's logic, shared by the CLI
//! and the Python package (so a verdict never depends on which front end asked).
//!
//! A text is tested against every text watermark key; a weight file or directory against every
//! fingerprint and weight-mark key, and against every registered signer key when it carries a
//! signature bundle. The registry's damaged entries that concern the suspect's kind become error
//! results, so "no match" is never claimed over an incomplete registry.

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{finish, InputKind, KeyTest, Report, SIGNATURE_KIND};
use crate::fingerprint::FingerprintError;
use crate::registry::{EntryKind, Registry, RegistryError};
use crate::signing::SigningError;
use crate::textmark::TextmarkError;

/// Why a suspect could not be tested at all (as opposed to one registry entry failing, which is
/// an error result inside the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// I/O on the suspect.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A suspect that is neither weights nor UTF-8 text.
    #[error("{}: neither a weight file nor UTF-8 text", path.display())]
    NotText {
        /// The suspect.
        path: PathBuf,
    },
    /// The suspect's weights could not be read.
    #[error("examining {}: {source}", path.display())]
    Weights {
        /// The suspect.
        path: PathBuf,
        /// What is wrong with it.
        source: FingerprintError,
    },
    /// A registry file that could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Loading the text keys failed as a whole.
    #[error(transparent)]
    Textmark(#[from] TextmarkError),
    /// A registered signer key that cannot be used.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// A Parquet file that cannot be read as a text column.
    #[error("{}: {reason}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `alpha` outside (0, 1).
    #[error("alpha must be in (0, 1), got {0}")]
    Alpha(f64),
    /// A bug, caught instead of unwinding into the caller.
    #[error("internal error while {what}: {message}")]
    Internal {
        /// What was being done.
        what: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// `alpha` must be a probability strictly between 0 and 1.
pub fn check_alpha(alpha: f64) -> Result<(), DetectError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(DetectError::Alpha(alpha))
    }
}

/// Run one capability's tests; a panic inside (a bug) becomes [`DetectError::Internal`], never a
/// crash of the caller (a CLI run, a Python interpreter, a Spark executor).
fn guarded<T>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, DetectError>,
) -> Result<T, DetectError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(DetectError::Internal {
            what,
            message: crate::tokenizer::panic_message(&*p),
        })
    })
}

/// The registry's problems that concern a suspect of `kind`, as error results (an unreadable or
/// too-deep directory could hide entries of any kind, so it concerns every suspect).
pub fn problem_results(registry: &Registry, kind: InputKind) -> Vec<KeyTest> {
    registry
        .problems()
        .iter()
        .filter(|p| match kind {
            InputKind::Text => p.applies_to.text,
            InputKind::Weights => p.applies_to.weights,
        })
        .map(|p| match &p.entry {
            Some(e) => KeyTest::error(&e.name, entry_kind_name(e.kind), &p.reason),
            None => {
                let rel = p.path.strip_prefix(registry.dir()).unwrap_or(&p.path);
                KeyTest::error(rel.display().to_string(), "registry", &p.reason)
            }
        })
        .collect()
}

fn entry_kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::SignerKey => "pub",
        EntryKind::WatermarkKey => "wmkey",
        EntryKind::Fingerprint => "fingerprint",
    }
}

/// Test one text against every text watermark key of `registry` (a validated registry:
/// [`Registry::validate`]); `input` names it in the report.
pub fn detect_text(
    input: String,
    text: &str,
    registry: &Registry,
    alpha: f64,
) -> Result<Report, DetectError> {
    check_alpha(alpha)?;
    let t = guarded("testing text watermarks", || {
        Ok(crate::textmark::test_text(text, registry)?)
    })?;
    let mut tests = t.tests;
    tests.extend(problem_results(registry, InputKind::Text));
    Ok(finish(
        input,
        InputKind::Text,
        tests,
        alpha,
        t.scored_tokens,
    ))
}

/// Test many texts in parallel (rayon), results in input order. Each item is `(input, text)`;
/// a text whose test fails as a whole gives an `Err` for that item alone.
pub fn detect_texts<S: AsRef<str> + Sync>(
    items: &[(String, S)],
    registry: &Registry,
    alpha: f64,
) -> Vec<Result<Report, DetectError>> {
    items
        .par_iter()
        .with_min_len(4)
        .map(|(input, text)| detect_text(input.clone(), text.as_ref(), registry, alpha))
        .collect()
}

/// Test a weight file or directory against every fingerprint, weight-mark key and signer key of
/// `registry`.
pub fn detect_weights(
    suspect: &Path,
    registry: &Registry,
    alpha: f64,
) -> Result<Report, DetectError> {
    check_alpha(alpha)?;
    let mut tests = guarded("testing weights", || {
        crate::fingerprint::test_weights(suspect, registry).map_err(|source| DetectError::Weights {
            path: suspect.to_path_buf(),
            source,
        })
    })?;
    tests.extend(guarded("checking signatures", || {
        signature_results(suspect, registry)
    })?);
    tests.extend(problem_results(registry, InputKind::Weights));
    Ok(finish(
        suspect.display().to_string(),
        InputKind::Weights,
        tests,
        alpha,
        None,
    ))
}

/// Test a file by what it holds: weights (see [`is_weights`]) or UTF-8 text.
pub fn detect_path(path: &Path, registry: &Registry, alpha: f64) -> Result<Report, DetectError> {
    if is_weights(path)? {
        return detect_weights(path, registry, alpha);
    }
    let bytes = crate::input::read(path, crate::input::Kind::Text, crate::input::Follow::Yes)
        .map_err(io_at(path))?;
    let text = String::from_utf8(bytes).map_err(|_| DetectError::NotText {
        path: path.to_path_buf(),
    })?;
    detect_text(path.display().to_string(), &text, registry, alpha)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DetectError + '_ {
    move |source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The signature bundles a model carries: `MODEL.sig` beside a file; `*.sig` and
/// `*.sigstore.json` files at the top of a directory.
fn bundles_of(model: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let meta = std::fs::metadata(model).map_err(io_at(model))?;
    if !meta.is_dir() {
        let p = crate::signing::sign::default_sig_path(model);
        return Ok(if p.is_file() { vec![p] } else { Vec::new() });
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(model).map_err(io_at(model))? {
        let e = e.map_err(io_at(model))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".sig") || name.ends_with(".sigstore.json"))
            && e.file_type().map(|t| t.is_file()).unwrap_or(false)
        {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// One `signature` result per bundle the suspect carries: which registered signer signed it,
/// and whether the model's files still verify against it.
fn signature_results(model: &Path, registry: &Registry) -> Result<Vec<KeyTest>, DetectError> {
    use crate::signing::{check_model, verify_bundle};
    let mut signers = Vec::new();
    for e in registry.of_kind(EntryKind::SignerKey) {
        if let crate::registry::Validated::SignerKey(k) = e.validated()? {
            signers.push((e.name.clone(), k.clone()));
        }
    }
    if signers.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in bundles_of(model)? {
        let label = b
            .strip_prefix(model)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .unwrap_or(&b)
            .display()
            .to_string();
        // Listed as a regular file, opened without following a symlink swapped in since.
        let bytes =
            match crate::input::read(&b, crate::input::Kind::Bundle, crate::input::Follow::No) {
                Ok(b) => b,
                Err(e) => {
                    out.push(KeyTest::error(label, SIGNATURE_KIND, e.to_string()));
                    continue;
                }
            };
        let mut found = None;
        for (name, key) in &signers {
            match verify_bundle(&bytes, key) {
                Ok(v) => {
                    found = Some((name.clone(), key.hint(), v));
                    break;
                }
                Err(e) if e.is_invalid_signature() => continue,
                // A certificate or Sigstore bundle: registered public keys cannot check it (and
                // never do so by ignoring its evidence). Not an error of the registry: say how
                // to check it.
                Err(SigningError::Unsupported(m)) => {
                    found = None;
                    out.push(
                        KeyTest::exact(&label, SIGNATURE_KIND, false)
                            .with("bundle", b.display().to_string())
                            .with("signer", serde_json::Value::Null)
                            .with("verifies", serde_json::Value::Null)
                            .with(
                                "note",
                                format!(
                                    "not checkable with the registered keys: {m} \
                                     (hallmark verify MODEL --sig BUNDLE ...)"
                                ),
                            ),
                    );
                    break;
                }
                Err(e) => {
                    found = None;
                    out.push(KeyTest::error(&label, SIGNATURE_KIND, e.to_string()));
                    break;
                }
            }
        }
        let Some((signer, hint, verified)) = found else {
            if !out.iter().any(|t| t.name == label) {
                out.push(
                    KeyTest::exact(&label, SIGNATURE_KIND, false)
                        .with("bundle", b.display().to_string())
                        .with("signer", serde_json::Value::Null)
                        .with("note", "signed by no registered key"),
                );
            }
            continue;
        };
        let report = match check_model(model, &verified, Some(&b), &|_| {}) {
            Ok(r) => r,
            Err(e) => {
                out.push(KeyTest::error(&signer, SIGNATURE_KIND, e.to_string()));
                continue;
            }
        };
        let problems: Vec<serde_json::Value> = report
            .problems()
            .map(|f| serde_json::json!({"file": f.name, "status": f.status.label()}))
            .collect();
        out.push(
            KeyTest::exact(&signer, SIGNATURE_KIND, report.is_valid())
                .with("bundle", b.display().to_string())
                .with("signer", signer.clone())
                .with("key_hint", hint)
                .with("verifies", report.is_valid())
                .with("files", report.files.len() as u64)
                .with("problems", problems),
        );
    }
    Ok(out)
}

/// A directory, a file named `*.gguf` / `*.safetensors` (even an empty or damaged one: it is
/// then a weights error, not text), or a file whose first bytes are a weights header.
pub fn is_weights(p: &Path) -> Result<bool, DetectError> {
    let meta = std::fs::metadata(p).map_err(io_at(p))?;
    if meta.is_dir() {
        return Ok(true);
    }
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("gguf") | Some("safetensors")) {
        return Ok(true);
    }
    let mut head = [0u8; 9];
    let (mut f, _) = crate::input::open_regular(p, crate::input::Follow::Yes).map_err(io_at(p))?;
    let n = f.read(&mut head).map_err(io_at(p))?;
    Ok(crate::weights::sniff(&head[..n]).is_some())
}

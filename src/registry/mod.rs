//! The registry: a directory of signer public keys (`.pub`), watermark keys (`.wmkey`) and model
//! fingerprints (`.fp`) that `detect` tests every suspect against.
//!
//! The directory is `--registry DIR`, else `$HALLMARK_REGISTRY`, else `./keys`. Entries are plain
//! files. [`register`] validates an entry completely (it parses, its parameters are in range, a
//! key's embedded tokenizer loads and round-trips a sample text) before copying it in
//! atomically, so a half-copied or malformed entry never sits in the registry by hallmark's
//! hand. A registry can still be edited by other means, so reading it fails safe and loud:
//!
//! * the walk is bounded ([`MAX_DEPTH`], [`MAX_ENTRY_BYTES`]);
//! * every entry is read once, through the input layer, when the registry is opened, and parsed
//!   there ([`Entry::parsed`]); detectors use the parsed entry and never open the file again, so
//!   a file swapped for a FIFO or another key after opening changes nothing;
//! * anything that cannot be used is a [`Problem`] naming the path and the reason, which
//!   `detect` reports (exit 2, since "no match" is then not known) while it still tests the
//!   other entries. That includes objects that are not regular files: symlinks (never
//!   followed, whatever they point to: a registry cannot be redirected outside itself),
//!   FIFOs, sockets and devices.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::fsutil::{write_atomic, WriteMode};

/// Environment variable naming the default registry directory.
pub const REGISTRY_ENV: &str = "HALLMARK_REGISTRY";

/// Deepest sub-directory level scanned (the registry directory itself is level 0).
pub const MAX_DEPTH: usize = 8;

/// Largest registry file read (a key with an embedded tokenizer is a few MB).
pub const MAX_ENTRY_BYTES: u64 = crate::input::Kind::RegistryEntry.cap();

/// Most bytes read from one registry in all (entries past it are problems, named).
pub const MAX_REGISTRY_BYTES: u64 = 128 << 20;

/// The sample text a key's tokenizer must round-trip at registration.
const SAMPLE_TEXT: &str = "The quick brown fox jumps over the lazy dog, 12 times in 2024.";

/// What a registry entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A signer's public key (SPKI PEM), `.pub`.
    SignerKey,
    /// A secret watermark key (text or weight scheme), `.wmkey`.
    WatermarkKey,
    /// A model fingerprint, `.fp`.
    Fingerprint,
}

impl EntryKind {
    /// The kind a file's extension announces.
    pub fn from_path(p: &Path) -> Option<Self> {
        match p.extension()?.to_str()? {
            "pub" => Some(Self::SignerKey),
            "wmkey" => Some(Self::WatermarkKey),
            "fp" => Some(Self::Fingerprint),
            _ => None,
        }
    }
    /// The `format` field a JSON entry of this kind carries.
    pub fn json_format(self) -> Option<&'static str> {
        match self {
            Self::SignerKey => None,
            Self::WatermarkKey => Some("hallmark-wmkey"),
            Self::Fingerprint => Some("hallmark-fingerprint"),
        }
    }
    /// A short label for messages and results.
    pub fn label(self) -> &'static str {
        match self {
            Self::SignerKey => "signer public key",
            Self::WatermarkKey => "watermark key",
            Self::Fingerprint => "fingerprint",
        }
    }
}

/// Errors from reading or writing the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// I/O on a registry path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that cannot be registered or used.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One registered file.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Its name: the file name without extension.
    pub name: String,
    /// Where it lives (for messages: the file is not read again).
    pub path: PathBuf,
    /// The entry as read and parsed when the registry was opened; `None` for the entries
    /// [`register`] returns, which are not kept in memory.
    pub parsed: Option<Arc<Validated>>,
}

impl Entry {
    /// The parsed entry (see [`Entry::parsed`]).
    pub fn validated(&self) -> Result<&Validated, RegistryError> {
        self.parsed
            .as_deref()
            .ok_or_else(|| invalid(&self.path, "not read when the registry was opened"))
    }
}

/// Something in the registry directory that could not be used: an entry that is too large or
/// fails validation, or a directory that could not be (or was not) walked.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The entry, when the problem is one file; `None` for a directory.
    pub entry: Option<Entry>,
    /// The path involved.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
    /// Which suspects the entry would have been tested against (text, weights).
    pub applies_to: Applies,
}

/// Which kinds of suspect an entry is tested against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applies {
    /// Text suspects (text watermark keys).
    pub text: bool,
    /// Weight suspects (fingerprints, weight-mark keys, signer keys).
    pub weights: bool,
}

impl Applies {
    const BOTH: Self = Self {
        text: true,
        weights: true,
    };
    const TEXT: Self = Self {
        text: true,
        weights: false,
    };
    const WEIGHTS: Self = Self {
        text: false,
        weights: true,
    };
}

/// A registry directory and its entries, sorted by kind then name.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
    entries: Vec<Entry>,
    problems: Vec<Problem>,
    /// What a detector derived from the entries (the text detector's loaded tokenizers), built
    /// once per registry value.
    derived: OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// The registry directory to use when none is given: `$HALLMARK_REGISTRY`, else `./keys`.
pub fn default_dir() -> PathBuf {
    std::env::var_os(REGISTRY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("keys"))
}

impl Registry {
    /// Scan `dir` (recursively to [`MAX_DEPTH`], so `keys/test/` is included), reading and
    /// parsing every entry once (a text key's tokenizer is only loaded by the detector that
    /// uses it). A missing or unreadable top directory is an error; anything below it that
    /// cannot be read or used (too deep, too large, not a regular file, malformed) becomes a
    /// [`Problem`] instead, and is not among [`Registry::entries`].
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let top = std::fs::read_dir(dir).map_err(io_err(dir))?;
        let mut found = Vec::new();
        let mut problems = Vec::new();
        scan(dir, top, 0, &mut found, &mut problems);
        let mut entries = Vec::new();
        let mut total = 0u64;
        for mut e in found {
            let read = read_entry(&e.path).and_then(|b| {
                // The registry as a whole is bounded too: entries past the budget are named,
                // not read.
                total = total.saturating_add(b.len() as u64);
                if total > MAX_REGISTRY_BYTES {
                    return Err(invalid(
                        &e.path,
                        format!(
                            "not read: the registry's entries exceed {MAX_REGISTRY_BYTES} bytes \
                             in all"
                        ),
                    ));
                }
                Ok(b)
            });
            let bytes = match read {
                Ok(b) => zeroize::Zeroizing::new(b),
                Err(err) => {
                    problems.push(Problem {
                        applies_to: applies_to(e.kind, None),
                        entry: Some(e.clone()),
                        path: e.path,
                        reason: err.to_string(),
                    });
                    continue;
                }
            };
            match check_entry(e.kind, &e.path, &bytes, false) {
                Ok(v) => {
                    e.parsed = Some(Arc::new(v));
                    entries.push(e);
                }
                Err(err) => problems.push(Problem {
                    applies_to: applies_to(e.kind, Some(&bytes)),
                    entry: Some(e.clone()),
                    path: e.path,
                    reason: err.to_string(),
                }),
            }
        }
        entries.sort_by(|a, b| (a.kind, &a.name, &a.path).cmp(&(b.kind, &b.name, &b.path)));
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            dir: dir.to_path_buf(),
            entries,
            problems,
            derived: OnceLock::new(),
        })
    }
    /// What a detector derives from this registry's entries, built by `init` on first use and
    /// kept for the life of this value (and its clones made after). One slot: the text
    /// detector's key ring. A value of another type in the slot is an error.
    pub fn derived<T: std::any::Any + Send + Sync>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Option<Arc<T>> {
        self.derived
            .get_or_init(|| Arc::new(init()))
            .clone()
            .downcast::<T>()
            .ok()
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The usable entries (read and parsed when the registry was opened).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// What the walk could not use.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
    /// Entries of one kind.
    pub fn of_kind(&self, kind: EntryKind) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }
    /// The registry as opened: entries are checked (and broken ones moved to
    /// [`Registry::problems`]) by [`Registry::open`] already, reading each file once. Kept so
    /// callers written against the two-step API still work; it reads nothing.
    pub fn validate(&self) -> Registry {
        self.clone()
    }
}

/// A key file's `scheme` field, parsed without building the rest of the document.
#[derive(serde::Deserialize)]
struct SchemeOnly {
    #[serde(default)]
    scheme: Option<String>,
}

fn scheme_of(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<SchemeOnly>(bytes).ok()?.scheme
}

/// Which suspects an entry is tested against, from its kind and (for keys) its `scheme` field.
fn applies_to(kind: EntryKind, bytes: Option<&[u8]>) -> Applies {
    match kind {
        EntryKind::SignerKey | EntryKind::Fingerprint => Applies::WEIGHTS,
        EntryKind::WatermarkKey => {
            let scheme = bytes.and_then(scheme_of);
            match scheme.as_deref() {
                Some(crate::mark::SCHEME) => Applies::WEIGHTS,
                Some("kgw") | Some("gumbel") => Applies::TEXT,
                _ => Applies::BOTH,
            }
        }
    }
}

fn scan(
    dir: &Path,
    it: std::fs::ReadDir,
    depth: usize,
    out: &mut Vec<Entry>,
    problems: &mut Vec<Problem>,
) {
    fn dir_problem(problems: &mut Vec<Problem>, path: &Path, reason: String) {
        problems.push(Problem {
            entry: None,
            path: path.to_path_buf(),
            reason,
            applies_to: Applies::BOTH,
        })
    }
    for e in it {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                dir_problem(problems, dir, err.to_string());
                continue;
            }
        };
        let p = e.path();
        // file_type() does not follow symlinks: a symlink is neither walked nor used, and is
        // reported, as is anything else that is neither a directory nor a regular file.
        let Ok(ft) = e.file_type() else {
            dir_problem(problems, &p, "cannot read its type".into());
            continue;
        };
        if !ft.is_dir() && !ft.is_file() {
            let what = if ft.is_symlink() {
                "a symlink (symlinks in a registry are never followed; copy the file in, or \
                 `hallmark register` it)"
                    .to_string()
            } else {
                std::fs::symlink_metadata(&p)
                    .map(|m| crate::input::kind_of(&m).to_string())
                    .unwrap_or_else(|_| "not a regular file".into())
            };
            let kind = EntryKind::from_path(&p);
            problems.push(Problem {
                entry: kind.map(|kind| Entry {
                    kind,
                    name: entry_name(&p),
                    path: p.clone(),
                    parsed: None,
                }),
                reason: format!("{}: not usable: {what}", crate::fsutil::shown(&p)),
                path: p,
                applies_to: kind.map_or(Applies::BOTH, |k| applies_to(k, None)),
            });
            continue;
        }
        if ft.is_dir() {
            if depth + 1 > MAX_DEPTH {
                dir_problem(
                    problems,
                    &p,
                    format!("deeper than {MAX_DEPTH} levels; not searched for entries"),
                );
                continue;
            }
            match std::fs::read_dir(&p) {
                Ok(sub) => scan(&p, sub, depth + 1, out, problems),
                Err(err) => dir_problem(problems, &p, err.to_string()),
            }
        } else if ft.is_file() {
            if let Some(kind) = EntryKind::from_path(&p) {
                out.push(Entry {
                    kind,
                    name: entry_name(&p),
                    path: p,
                    parsed: None,
                });
            }
        }
    }
}

fn entry_name(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Read a registry file through the input layer: a regular file of at most
/// [`MAX_ENTRY_BYTES`], opened without following a symlink and without blocking on a FIFO.
pub fn read_entry(path: &Path) -> Result<Vec<u8>, RegistryError> {
    crate::input::read(
        path,
        crate::input::Kind::RegistryEntry,
        crate::input::Follow::No,
    )
    .map_err(io_err(path))
}

/// A fully parsed entry.
#[derive(Debug)]
pub enum Validated {
    /// A signer's public key.
    SignerKey(crate::signing::VerifyingKey),
    /// A text watermark key.
    TextKey(Box<crate::textmark::WatermarkKey>),
    /// A weight-mark key.
    WeightKey(Box<crate::mark::WeightKey>),
    /// A fingerprint.
    Fingerprint(Box<crate::fingerprint::Fingerprint>),
}

/// Check that `bytes` are a valid entry of `kind`: they parse, their parameters are in range,
/// and (with `tokenizer`) a text key's embedded tokenizer loads and round-trips a sample text.
pub fn check_entry(
    kind: EntryKind,
    path: &Path,
    bytes: &[u8],
    tokenizer: bool,
) -> Result<Validated, RegistryError> {
    let bad = |reason: String| invalid(path, reason);
    match kind {
        EntryKind::SignerKey => {
            let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 PEM".into()))?;
            let key = crate::signing::VerifyingKey::from_pem(text)
                .map_err(|e| bad(format!("not an Ed25519 or P-256 SPKI PEM public key ({e})")))?;
            Ok(Validated::SignerKey(key))
        }
        EntryKind::WatermarkKey => {
            let scheme = scheme_of(bytes);
            if scheme.as_deref() == Some(crate::mark::SCHEME) {
                let k = crate::mark::WeightKey::from_file_bytes(path, bytes)
                    .map_err(|e| bad(e.to_string()))?;
                return Ok(Validated::WeightKey(Box::new(k)));
            }
            let k =
                crate::textmark::WatermarkKey::from_json(bytes).map_err(|e| bad(e.to_string()))?;
            if tokenizer {
                check_tokenizer(&k).map_err(|e| bad(format!("embedded tokenizer: {e}")))?;
            }
            Ok(Validated::TextKey(Box::new(k)))
        }
        EntryKind::Fingerprint => {
            let fp = crate::fingerprint::Fingerprint::from_json(bytes)
                .map_err(|e| bad(e.to_string()))?;
            Ok(Validated::Fingerprint(Box::new(fp)))
        }
    }
}

/// The key's tokenizer loads, has the vocabulary size the key states, and encodes a sample text
/// into ids that decode and re-encode to the same ids.
fn check_tokenizer(k: &crate::textmark::WatermarkKey) -> Result<(), String> {
    let spec = k.tokenizer();
    let tok = spec.load().map_err(|e| e.to_string())?;
    if tok.vocab_size() != spec.vocab_size {
        return Err(format!(
            "{} tokens, but the key states {}",
            tok.vocab_size(),
            spec.vocab_size
        ));
    }
    let ids = tok.encode(SAMPLE_TEXT).map_err(|e| e.to_string())?;
    if ids.is_empty() || ids.iter().any(|&i| i as usize >= spec.vocab_size) {
        return Err("encodes a sample text to no ids, or to ids outside its vocabulary".into());
    }
    let back = tok
        .decode(&ids)
        .and_then(|t| tok.encode(&t))
        .map_err(|e| e.to_string())?;
    if back != ids {
        return Err("does not round-trip a sample text (decode then encode differs)".into());
    }
    // The split regex is untrusted: run it on texts that make backtracking regexes blow up,
    // under the same work budget `detect` applies, so a key that would stall detection is
    // refused here rather than found out on every document.
    for text in adversarial_texts() {
        if let Err(e) = tok.encode(&text) {
            return Err(format!(
                "fails on a {}-byte adversarial text: {e}",
                text.len()
            ));
        }
    }
    Ok(())
}

/// Texts of [`ADVERSARIAL_BYTES`] that trigger catastrophic backtracking in common regex
/// shapes (long runs of one character class, a run ended by a character that breaks it).
fn adversarial_texts() -> Vec<String> {
    let run = |unit: &str, tail: &str| {
        let mut s = unit.repeat(ADVERSARIAL_BYTES / unit.len().max(1));
        s.push_str(tail);
        s
    };
    vec![
        run("a", "!"),
        run(" ", "a"),
        run("1", "a"),
        run("\n", "a"),
        run("a ", "\u{0}"),
        run("!", "a"),
        run("é", "1"),
        run("'s", " "),
        run("a1 !\n", "\t"),
    ]
}

/// Length of each adversarial text tried at registration.
const ADVERSARIAL_BYTES: usize = 4096;

/// Keep letters, digits, `-`, `_` and `.` of a name (others become `_`), with no leading dot,
/// so a fingerprint's name can be its registry file name.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "unnamed".into()
    } else {
        s
    }
}

/// Copy `files` into the registry `dir` (created if missing). Every file is validated first
/// (see [`check_entry`]), so a bad file in the list changes nothing. A fingerprint is stored
/// under its own recorded name (sanitised); other entries keep their file name. Secrets keep
/// mode 0600. Registering identical content again succeeds and changes nothing (also when two
/// runs race: the copy is a temp file linked into place without replacing); an entry with the
/// same name but different content is refused rather than replaced.
pub fn register(dir: &Path, files: &[PathBuf]) -> Result<Vec<Entry>, RegistryError> {
    let mut staged = Vec::new();
    for f in files {
        let kind = EntryKind::from_path(f)
            .ok_or_else(|| invalid(f, "unknown entry type (expected .pub, .wmkey or .fp)"))?;
        let bytes = read_entry(f)?;
        let parsed = check_entry(kind, f, &bytes, true)?;
        let file_name = match &parsed {
            Validated::Fingerprint(fp) => format!("{}.fp", sanitize_name(&fp.name)),
            _ => f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| invalid(f, "no file name"))?,
        };
        if file_name.starts_with('.') {
            return Err(invalid(
                f,
                "a registry entry's name must not start with `.`",
            ));
        }
        let dest = dir.join(&file_name);
        if staged
            .iter()
            .any(|(_, d, _): &(EntryKind, PathBuf, Vec<u8>)| *d == dest)
        {
            return Err(invalid(
                f,
                format!("two files would be registered as {file_name}"),
            ));
        }
        if let Some(existing) = existing(&dest)? {
            if existing != bytes {
                return Err(invalid(
                    &dest,
                    "a different entry with this name is already registered",
                ));
            }
        }
        staged.push((kind, dest, bytes));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut out = Vec::new();
    for (kind, dest, bytes) in staged {
        let mode = if kind == EntryKind::WatermarkKey {
            WriteMode::Secret
        } else {
            WriteMode::PublicNoClobber
        };
        match write_atomic(&dest, &bytes, mode) {
            Ok(()) => {}
            // Another run put it there first: fine if it is the same content.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if existing(&dest)?.as_deref() != Some(&bytes[..]) {
                    return Err(invalid(
                        &dest,
                        "a different entry with this name is already registered",
                    ));
                }
            }
            Err(e) => return Err(io_err(&dest)(e)),
        }
        let name = dest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Entry {
            kind,
            name,
            path: dest,
            parsed: None,
        });
    }
    Ok(out)
}

/// The bytes of an existing registry file, `None` if there is none.
fn existing(dest: &Path) -> Result<Option<Vec<u8>>, RegistryError> {
    match dest.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(dest)(e)),
        Ok(_) => read_entry(dest).map(Some),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn weight_key() -> Vec<u8> {
        crate::mark::WeightKey::generate().to_file_bytes().to_vec()
    }

    /// A 2,100-level tree is walked to the depth cap and reported, not followed to the end.
    #[test]
    fn deep_tree_is_capped_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("w.wmkey"), weight_key()).unwrap();
        // Built bottom-up by renames: the full path is longer than PATH_MAX.
        let mut cur = d.path().join("c0");
        std::fs::create_dir(&cur).unwrap();
        for i in 1..2100 {
            let next = d.path().join(format!("c{i}"));
            std::fs::create_dir(&next).unwrap();
            std::fs::rename(&cur, next.join("d")).unwrap();
            cur = next;
        }
        let r = Registry::open(d.path()).unwrap();
        assert_eq!(r.entries().len(), 1);
        assert_eq!(r.problems().len(), 1, "{:?}", r.problems());
        assert!(r.problems()[0].reason.contains("deeper than"));
        assert_eq!(r.validate().entries().len(), 1);
    }

    /// Hostile entries are moved to problems by name; the valid ones stay usable.
    #[test]
    fn validate_separates_broken_entries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("w.wmkey"), weight_key()).unwrap();
        let kgw = br#"{"format":"hallmark-wmkey","version":1,"scheme":"kgw","delta":2.0}"#;
        std::fs::write(d.path().join("nogamma.wmkey"), kgw).unwrap();
        std::fs::write(
            d.path().join("hidden0.fp"),
            br#"{"format":"hallmark-fingerprint","version":2,"hidden":0}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("junk.pub"), b"not a key").unwrap();
        let r = Registry::open(d.path()).unwrap().validate();
        assert_eq!(r.entries().len(), 1);
        let mut names: Vec<_> = r
            .problems()
            .iter()
            .map(|p| p.entry.as_ref().unwrap().name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["hidden0", "junk", "nogamma"]);
        let nogamma = r
            .problems()
            .iter()
            .find(|p| p.path.ends_with("nogamma.wmkey"))
            .unwrap();
        assert_eq!(nogamma.applies_to, Applies::TEXT);
    }

    /// Registering the same content twice, or from two threads at once, gives one entry and
    /// two successes; different content under the same name is refused.
    #[test]
    fn register_is_idempotent_and_race_safe() {
        let src = tempfile::tempdir().unwrap();
        let reg = tempfile::tempdir().unwrap();
        let f = src.path().join("w.wmkey");
        std::fs::write(&f, weight_key()).unwrap();
        let files = vec![f.clone()];
        let a = std::thread::scope(|s| {
            let h: Vec<_> = (0..4)
                .map(|_| s.spawn(|| register(reg.path(), &files)))
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        assert!(a.iter().all(|r| r.is_ok()), "{a:?}");
        let names: Vec<_> = std::fs::read_dir(reg.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["w.wmkey"], "temp files left: {names:?}");
        std::fs::write(&f, weight_key()).unwrap();
        let e = register(reg.path(), &files).unwrap_err();
        assert!(e.to_string().contains("already registered"), "{e}");
    }

    #[test]
    fn oversized_entry_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.fp");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_ENTRY_BYTES + 1).unwrap();
        let e = read_entry(&p).unwrap_err();
        assert!(e.to_string().contains("limit for a registry entry"), "{e}");
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("../etc/passwd"), "_etc_passwd");
        assert_eq!(sanitize_name("SmolLM2 135M"), "SmolLM2_135M");
        assert_eq!(sanitize_name(".."), "unnamed");
    }
}

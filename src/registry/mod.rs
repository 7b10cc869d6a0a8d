//! The registry: a directory of signer public keys (`.pub`), watermark keys (`.wmkey`) and model
//! fingerprints (`.fp`) that `detect` tests every suspect against.
//!
//! The directory is `--registry DIR`, else `$HALLMARK_REGISTRY`, else `./keys`. Entries are plain
//! files; registering copies a file in atomically after checking that it is what its extension
//! says, so a half-copied or mistyped entry never sits in the registry.

use std::path::{Path, PathBuf};

use crate::fsutil::{write_atomic, WriteMode};

/// Environment variable naming the default registry directory.
pub const REGISTRY_ENV: &str = "HALLMARK_REGISTRY";

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
    /// A file that cannot be registered.
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

/// One registered file.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Its name: the file name without extension.
    pub name: String,
    /// Where it lives.
    pub path: PathBuf,
}

/// A registry directory and its entries, sorted by kind then name.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
    entries: Vec<Entry>,
}

/// The registry directory to use when none is given: `$HALLMARK_REGISTRY`, else `./keys`.
pub fn default_dir() -> PathBuf {
    std::env::var_os(REGISTRY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("keys"))
}

impl Registry {
    /// Scan `dir` (recursively, so `keys/test/` is included). A missing directory is an error.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let mut entries = Vec::new();
        scan(dir, &mut entries)?;
        entries.sort_by(|a, b| (a.kind, &a.name, &a.path).cmp(&(b.kind, &b.name, &b.path)));
        Ok(Self {
            dir: dir.to_path_buf(),
            entries,
        })
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// Entries of one kind.
    pub fn of_kind(&self, kind: EntryKind) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }
}

fn scan(dir: &Path, out: &mut Vec<Entry>) -> Result<(), RegistryError> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            scan(&p, out)?;
        } else if ft.is_file() {
            if let Some(kind) = EntryKind::from_path(&p) {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(Entry { kind, name, path: p });
            }
        }
    }
    Ok(())
}

/// Check that `bytes` are a plausible entry of `kind` (the owning module parses it fully when it
/// is used; this catches a mistyped or truncated file at registration time).
pub fn check_entry(kind: EntryKind, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    match kind.json_format() {
        None => {
            let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8 PEM".into()))?;
            if !text.contains("-----BEGIN PUBLIC KEY-----") {
                return Err(invalid("not an SPKI PEM public key".into()));
            }
        }
        Some(fmt) => {
            let v: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
            let got = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
            if got != fmt {
                return Err(invalid(format!("`format` is `{got}`, expected `{fmt}`")));
            }
            if v.get("version").and_then(|f| f.as_u64()).is_none() {
                return Err(invalid("missing `version`".into()));
            }
        }
    }
    Ok(())
}

/// Copy `files` into the registry `dir` (created if missing). Secrets keep mode 0600. An entry
/// with the same file name that differs in content is refused rather than replaced.
pub fn register(dir: &Path, files: &[PathBuf]) -> Result<Vec<Entry>, RegistryError> {
    // Check everything before writing anything, so a bad file in the list changes nothing.
    let mut staged = Vec::new();
    for f in files {
        let kind = EntryKind::from_path(f).ok_or_else(|| RegistryError::Invalid {
            path: f.clone(),
            reason: "unknown entry type (expected .pub, .wmkey or .fp)".into(),
        })?;
        let bytes = std::fs::read(f).map_err(io_err(f))?;
        check_entry(kind, f, &bytes)?;
        let file_name = f.file_name().ok_or_else(|| RegistryError::Invalid {
            path: f.clone(),
            reason: "no file name".into(),
        })?;
        let dest = dir.join(file_name);
        if let Ok(existing) = std::fs::read(&dest) {
            if existing != bytes {
                return Err(RegistryError::Invalid {
                    path: dest,
                    reason: "a different entry with this name is already registered".into(),
                });
            }
        }
        staged.push((kind, dest, bytes));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut out = Vec::new();
    for (kind, dest, bytes) in staged {
        if !dest.exists() {
            let mode = if kind == EntryKind::WatermarkKey {
                WriteMode::Secret
            } else {
                WriteMode::PublicNoClobber
            };
            write_atomic(&dest, &bytes, mode).map_err(io_err(&dest))?;
        }
        let name = dest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Entry {
            kind,
            name,
            path: dest,
        });
    }
    Ok(out)
}

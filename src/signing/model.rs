//! Which files make up a model: a single file, or every regular file under a directory, minus
//! ignored paths, named by POSIX paths relative to the model directory.

use std::path::{Component, Path, PathBuf};

use super::{io_err, SigningError};

/// One file of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Resource name: relative POSIX path, or `.` for a single-file model.
    pub name: String,
    /// Where it is on disk.
    pub path: PathBuf,
}

/// The files of a model, and the symlinks met where symlinks are not allowed.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Regular files (or followed symlinks), sorted by path components.
    pub files: Vec<ModelFile>,
    /// Symlinks found while `allow_symlinks` is off (resource names).
    pub symlinks: Vec<String>,
}

/// Normalise a user- or bundle-supplied ignore path to a relative POSIX path.
pub fn normalize_ignore(p: &str) -> String {
    p.trim_start_matches("./").trim_end_matches('/').to_string()
}

/// User-given ignore paths (`verify --ignore`, `sign --ignore`, Python `ignore=`) as relative
/// POSIX paths inside `model`: a relative path is taken as given (relative to the model), an
/// absolute path is made relative when it lies inside the model. A name that is not UTF-8
/// cannot be recorded in a statement and is refused.
pub fn relative_ignores(model: &Path, paths: &[PathBuf]) -> Result<Vec<String>, SigningError> {
    let root = std::fs::canonicalize(model).ok();
    let mut ignore = Vec::new();
    for p in paths {
        let rel = match std::fs::canonicalize(p)
            .ok()
            .zip(root.as_ref())
            .and_then(|(full, root)| full.strip_prefix(root).ok().map(|r| r.to_path_buf()))
        {
            Some(r) if p.is_absolute() => r,
            _ => p.clone(),
        };
        let s = rel
            .to_str()
            .ok_or_else(|| SigningError::BadName(p.to_path_buf()))?;
        ignore.push(s.replace('\\', "/"));
    }
    Ok(ignore)
}

/// True if `name` is `ignore` or lies under it.
pub fn is_ignored(name: &str, ignores: &[String]) -> bool {
    ignores.iter().any(|i| {
        !i.is_empty()
            && (name == i
                || (name.len() > i.len()
                    && name.starts_with(i.as_str())
                    && name.as_bytes()[i.len()] == b'/'))
    })
}

/// Sort resource names the way model_signing does (by path components).
pub fn sort_names<T>(items: &mut [T], name: impl Fn(&T) -> &str) {
    items.sort_by(|a, b| name(a).split('/').cmp(name(b).split('/')));
}

fn rel_name(root: &Path, path: &Path) -> Result<String, SigningError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| SigningError::BadName(path.to_path_buf()))?,
            ),
            _ => return Err(SigningError::BadName(path.to_path_buf())),
        }
    }
    Ok(parts.join("/"))
}

/// List the files of `model` (a file or a directory).
pub fn list_files(
    model: &Path,
    ignores: &[String],
    allow_symlinks: bool,
) -> Result<Listing, SigningError> {
    let meta = std::fs::symlink_metadata(model).map_err(io_err(model))?;
    let mut out = Listing::default();
    if meta.file_type().is_symlink() && !allow_symlinks {
        return Err(SigningError::Symlink(model.to_path_buf()));
    }
    let meta = std::fs::metadata(model).map_err(io_err(model))?;
    if meta.is_file() {
        out.files.push(ModelFile {
            name: ".".into(),
            path: model.to_path_buf(),
        });
        return Ok(out);
    }
    if !meta.is_dir() {
        return Err(SigningError::NotRegular(model.to_path_buf()));
    }
    let walker = walkdir::WalkDir::new(model)
        .follow_links(allow_symlinks)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| match rel_name(model, e.path()) {
            Ok(n) => !is_ignored(&n, ignores),
            Err(_) => true, // reported below
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| model.to_path_buf());
            match e.into_io_error() {
                Some(source) => SigningError::Io { path, source },
                None => SigningError::Io {
                    path,
                    source: std::io::Error::other("symlink loop"),
                },
            }
        })?;
        let name = rel_name(model, entry.path())?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if ft.is_symlink() {
            // Only reached when not following links.
            out.symlinks.push(name);
        } else if ft.is_file() {
            out.files.push(ModelFile {
                name,
                path: entry.path().to_path_buf(),
            });
        } else {
            return Err(SigningError::NotRegular(entry.path().to_path_buf()));
        }
    }
    sort_names(&mut out.files, |f| &f.name);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ignore_matching_is_by_component() {
        let ig = vec![".git".to_string(), "a/b".to_string()];
        assert!(is_ignored(".git", &ig));
        assert!(is_ignored(".git/config", &ig));
        assert!(!is_ignored(".gitignore", &ig));
        assert!(is_ignored("a/b/c", &ig));
        assert!(!is_ignored("a/bc", &ig));
    }

    #[test]
    fn sorts_like_model_signing() {
        let mut v = vec!["a.txt", "a/b", "B", "a"];
        sort_names(&mut v, |s| s);
        assert_eq!(v, ["B", "a", "a/b", "a.txt"]);
    }
}

//! Atomic file writes: every file hallmark writes goes to a sibling temp file, then is renamed.
//!
//! A crash or a full disk can therefore never leave a partially written signature, key or
//! fingerprint behind, and secrets are created with mode 0600 before any byte is written.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Every temporary hallmark creates next to a target is named `.hallmark-tmp-PID-...`, where
/// PID is the creating process; a crash leaves such a file (or folder) behind, and the next
/// write next to it removes it once that process is gone ([`remove_stale_temps`]).
pub const TEMP_PREFIX: &str = ".hallmark-tmp-";

/// The prefix for this process's temporaries.
pub fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

/// Temporaries this process has created and not yet renamed into place or removed.
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Record a live temporary, so an interrupt handler can remove it ([`remove_live_temps`]).
pub fn track_temp(path: &Path) {
    if let Ok(mut v) = LIVE_TEMPS.lock() {
        v.push(path.to_path_buf());
    }
}

/// Forget a temporary that was renamed into place or removed.
pub fn untrack_temp(path: &Path) {
    if let Ok(mut v) = LIVE_TEMPS.lock() {
        v.retain(|p| p != path);
    }
}

/// Remove every live temporary (files and folders). Called on SIGINT/SIGTERM before exiting;
/// the lock stays held by the caller's exit, so no new temporary can be registered after it.
pub fn remove_live_temps() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    let mut v = LIVE_TEMPS.lock().unwrap_or_else(|e| e.into_inner());
    for p in v.drain(..) {
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&p);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(_) => {}
        }
    }
    v
}

/// Remove the temporaries in `dir` left by hallmark processes that no longer run (a crash, a
/// kill -9). A temporary of a running process is left alone. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<u32>().ok());
        if pid.is_some_and(process_alive) {
            continue;
        }
        let p = e.path();
        let ok = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p).is_ok(),
            Ok(_) => std::fs::remove_file(&p).is_ok(),
            Err(_) => false,
        };
        removed += ok as usize;
    }
    removed
}

/// True when a process with this id exists (this process counts as alive).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(p) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// How an atomic write treats an existing destination and what mode the file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// A secret (private key, watermark key): mode 0600, never overwrites an existing file.
    Secret,
    /// A public artefact that must not clobber an existing file (public keys): mode 0644.
    PublicNoClobber,
    /// A public artefact that may replace an existing file (signatures, fingerprints): mode 0644.
    Public,
}

/// Write `bytes` to `dest` atomically (temp file in the same directory + rename).
///
/// With [`WriteMode::Secret`] or [`WriteMode::PublicNoClobber`] an existing `dest` is an error
/// of kind [`io::ErrorKind::AlreadyExists`] and nothing is written.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: WriteMode) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if mode != WriteMode::Public && dest.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; refusing to overwrite it",
                dest.display()
            ),
        ));
    }
    remove_stale_temps(dir);
    // tempfile creates the file 0600, so a secret is never readable by others, even briefly.
    // Its own errors name the temporary; the destination is what the user knows.
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: {}", dest.display(), io::Error::from(e.kind())),
            )
        })?;
    let tmp_path = tmp.path().to_path_buf();
    track_temp(&tmp_path);
    let r = finish_write(tmp, dest, bytes, mode);
    untrack_temp(&tmp_path);
    r
}

fn finish_write(
    mut tmp: tempfile::NamedTempFile,
    dest: &Path,
    bytes: &[u8],
    mode: WriteMode,
) -> io::Result<()> {
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    if mode != WriteMode::Secret {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    match mode {
        WriteMode::Public => tmp.persist(dest).map(|_| ()).map_err(|e| e.error),
        _ => tmp
            .persist_noclobber(dest)
            .map(|_| ())
            .map_err(|e| match e.error.kind() {
                io::ErrorKind::AlreadyExists => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} already exists; refusing to overwrite it",
                        dest.display()
                    ),
                ),
                _ => e.error,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_atomic(&p, b"one", WriteMode::Secret).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600);
        }
        let e = write_atomic(&p, b"two", WriteMode::Secret).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // no temp files left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn public_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.sig");
        write_atomic(&p, b"one", WriteMode::Public).unwrap();
        write_atomic(&p, b"two", WriteMode::Public).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }
}

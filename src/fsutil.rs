//! File-system helpers: atomic writes, non-blocking opens of regular files, and paths made safe
//! to print.
//!
//! * Every file hallmark writes goes to a sibling temp file, then is renamed: a crash or a full
//!   disk can never leave a partially written signature, key or fingerprint behind, and secrets
//!   are created with mode 0600 before any byte is written.
//! * Every file hallmark reads is opened with [`open_regular`]: a FIFO, socket or device in place
//!   of a file is refused instead of blocking the process forever.
//! * Every path or file name hallmark prints goes through [`shown`] / [`shown_str`], so a name
//!   holding terminal escapes cannot rewrite the lines around it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

// The reading half lives in the input layer; these names stay here for existing callers.
pub use crate::input::{kind_of, open_regular, read_capped, Follow};

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

/// Create a temporary with `create` and record it, so an interrupt handler can remove it
/// ([`remove_live_temps`]). The record lock is held while `create` runs: a signal that arrives
/// mid-creation waits for the record, and once the handler holds the lock no new temporary
/// can appear (it exits with the lock held).
pub fn create_tracked<T>(
    create: impl FnOnce() -> io::Result<T>,
    path_of: impl FnOnce(&T) -> PathBuf,
) -> io::Result<T> {
    let mut v = LIVE_TEMPS.lock().unwrap_or_else(|e| e.into_inner());
    let t = create()?;
    v.push(path_of(&t));
    Ok(t)
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
            Ok(m) if m.is_dir() => remove_busy_dir(&p),
            Ok(_) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(_) => {}
        }
    }
    v
}

/// Remove a temporary folder that other threads may still be writing into: it is first
/// renamed, so their path-based creates fail instead of adding entries behind
/// `remove_dir_all`'s back, then removed (retried, since a file opened just before the rename
/// may still appear in it).
fn remove_busy_dir(p: &Path) {
    let mut target = p.to_path_buf();
    if let Some(name) = p.file_name() {
        let mut dying = name.to_os_string();
        dying.push("-interrupted");
        let q = p.with_file_name(dying);
        if std::fs::rename(p, &q).is_ok() {
            target = q;
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir_all(&target).is_ok() || target.symlink_metadata().is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
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

/// A path made safe to print: control characters (`\x00`-`\x1f`, `\x7f`), backslashes and
/// bytes that are not UTF-8 are written as escapes, so a file name cannot move the cursor,
/// recolour the terminal or forge a line of output.
pub fn shown(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        escape_bytes(path.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    {
        shown_str(&path.to_string_lossy())
    }
}

/// [`shown`] for a name that is already a string (a resource or tensor name from a bundle).
pub fn shown_str(s: &str) -> String {
    escape_bytes(s.as_bytes())
}

fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                // C1 controls (U+0080-U+009F) are terminal controls too.
                c if (0x80..0xa0).contains(&(c as u32)) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32))
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
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
    let tmp = create_tracked(
        || {
            tempfile::Builder::new()
                .prefix(&temp_prefix())
                .tempfile_in(dir)
        },
        |t| t.path().to_path_buf(),
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {}", dest.display(), io::Error::from(e.kind())),
        )
    })?;
    let tmp_path = tmp.path().to_path_buf();
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
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_controls_and_bad_bytes() {
        assert_eq!(shown_str("a b/c.gguf"), "a b/c.gguf");
        assert_eq!(shown_str("x\x1b[2Ky\n"), "x\\x1b[2Ky\\n");
        assert_eq!(shown_str("a\\b\x7f\u{9b}"), "a\\\\b\\x7f\\u{9b}");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let p = Path::new(std::ffi::OsStr::from_bytes(b"w\xffz"));
            assert_eq!(shown(p), "w\\xffz");
        }
    }

    #[cfg(unix)]
    #[test]
    fn open_regular_refuses_fifo_symlink_and_dir_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let file = dir.path().join("r");
        std::fs::write(&file, b"abc").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link, Follow::Yes).is_ok());
        let e = open_regular(&link, Follow::No).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(open_regular(dir.path(), Follow::Yes).is_err());
        assert_eq!(read_capped(&file, 3, Follow::No).unwrap(), b"abc");
        assert!(read_capped(&file, 2, Follow::No).is_err());
        // The returned descriptor blocks again (O_NONBLOCK cleared).
        use std::os::fd::AsRawFd;
        let (f, _) = open_regular(&file, Follow::No).unwrap();
        // SAFETY: fcntl on an open descriptor.
        let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
    }

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

//! Atomic file writes: every file hallmark writes goes to a sibling temp file, then is renamed.
//!
//! A crash or a full disk can therefore never leave a partially written signature, key or
//! fingerprint behind, and secrets are created with mode 0600 before any byte is written.

use std::io::{self, Write};
use std::path::Path;

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
            format!("{} already exists; refusing to overwrite it", dest.display()),
        ));
    }
    // tempfile creates the file 0600, so a secret is never readable by others, even briefly.
    let mut tmp = tempfile::Builder::new()
        .prefix(".hallmark-tmp-")
        .tempfile_in(dir)?;
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
                    format!("{} already exists; refusing to overwrite it", dest.display()),
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

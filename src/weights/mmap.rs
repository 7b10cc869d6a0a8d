//! The only place in hallmark that memory-maps files.
//!
//! # Safety
//!
//! A memory map is only sound while no other process truncates or rewrites the file. hallmark
//! cannot prevent that; it narrows the window instead: [`MappedFile::ensure_unchanged`] compares
//! size and mtime with the values seen at open, and every reader calls it after it has read the
//! bytes it reports on, so a file that changed while it was hashed is refused rather than
//! trusted. A truncation during the read can still raise SIGBUS (as with every mmap-based tool,
//! b3sum included); small files and files that cannot be mapped are read into memory instead.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{FormatError, IoContext};
use crate::fsutil::{open_regular, Follow};

/// Files smaller than this are read into memory: mapping them costs more than it saves.
const MMAP_THRESHOLD: u64 = 16 * 1024;

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A read-only view of a whole file, memory-mapped when that pays off.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    backing: Backing,
    len: u64,
    mtime: Option<SystemTime>,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl MappedFile {
    /// Open and map (or read) `path`, following a symlink.
    ///
    /// Anything but a regular file (a FIFO, socket, device or directory) is refused without
    /// blocking (see [`open_regular`]).
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        Self::open_with(path, Follow::Yes)
    }

    /// [`MappedFile::open`], refusing a symlink in the last component when `follow` is
    /// [`Follow::No`] (signing and verification, where symlinks are refused unless allowed).
    pub fn open_with(path: &Path, follow: Follow) -> Result<Self, FormatError> {
        let (file, meta) = open_regular(path, follow).with_path(path)?;
        let len = meta.len();
        let mtime = meta.modified().ok();
        let backing = if len >= MMAP_THRESHOLD {
            // SAFETY: see the module docs: the map is read-only, and changes to the file while it
            // is mapped are detected by `ensure_unchanged` before any result is reported.
            match unsafe { memmap2::Mmap::map(&file) } {
                Ok(m) => {
                    #[cfg(unix)]
                    let _ = m.advise(memmap2::Advice::Sequential);
                    Backing::Mapped(m)
                }
                Err(_) => Backing::Owned(read_all(&file, len, path)?),
            }
        } else {
            Backing::Owned(read_all(&file, len, path)?)
        };
        let this = Self {
            path: path.to_path_buf(),
            file,
            backing,
            len,
            mtime,
        };
        if this.bytes().len() as u64 != len {
            return Err(FormatError::ChangedWhileReading(this.path));
        }
        Ok(this)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes at open time.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fail if the file's size or mtime differ from what was seen at open.
    pub fn ensure_unchanged(&self) -> Result<(), FormatError> {
        let meta = self.file.metadata().with_path(&self.path)?;
        let now_path = std::fs::metadata(&self.path).ok();
        let same_path = now_path
            .map(|m| m.len() == self.len && m.modified().ok() == self.mtime)
            .unwrap_or(false);
        if meta.len() != self.len || meta.modified().ok() != self.mtime || !same_path {
            return Err(FormatError::ChangedWhileReading(self.path.clone()));
        }
        Ok(())
    }
}

fn read_all(mut file: &File, len: u64, path: &Path) -> Result<Vec<u8>, FormatError> {
    let mut v = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut v).with_path(path)?;
    Ok(v)
}

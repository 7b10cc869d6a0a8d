//! The only place in hallmark that memory-maps files.
//!
//! # Safety
//!
//! A memory map is only sound while no other process truncates or rewrites the file. hallmark
//! cannot prevent that; it narrows the window instead: [`MappedFile::ensure_unchanged`] compares
//! size and mtime with the values seen at open, and every reader calls it after it has read the
//! bytes it reports on, so a file that changed while it was hashed is refused rather than
//! trusted. A truncation during the read would raise SIGBUS (as with every mmap-based tool,
//! b3sum included): hallmark catches it ([`guard`]): the faulting page of a live mapping is
//! replaced by a page of zeros, the mapping is marked, and `ensure_unchanged` then refuses the
//! file with an error instead of the process dying. Small files and files that cannot be mapped
//! are read into memory instead.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{FormatError, IoContext};
use crate::fsutil::{open_regular, Follow};

/// Files smaller than this are read into memory: mapping them costs more than it saves.
const MMAP_THRESHOLD: u64 = 16 * 1024;
/// Largest file read into memory when it cannot be mapped.
const READ_FALLBACK_MAX: u64 = 64 << 20;

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A read-only view of a whole file, memory-mapped when that pays off.
pub struct MappedFile {
    path: PathBuf,
    /// Identity of the file opened (device, inode): the descriptor itself is closed once the
    /// file is mapped or read, so a model of any number of files holds no descriptor open.
    id: (u64, u64),
    backing: Backing,
    len: u64,
    mtime: Option<SystemTime>,
    /// The mapping's slot in the SIGBUS guard, `None` if it is not mapped (or not guarded).
    guard_slot: Option<usize>,
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // Before the map itself is dropped (fields drop after this body).
        if let Some(s) = self.guard_slot.take() {
            guard::release(s);
        }
    }
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
                // Reading instead is a fallback for small files only: a file that could not be
                // mapped (address space exhausted, say) is never read whole into memory.
                Err(e) if len > READ_FALLBACK_MAX => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot map {len} bytes: {e}"),
                    ))
                    .with_path(path);
                }
                Err(_) => Backing::Owned(read_all(&file, len, path)?),
            }
        } else {
            Backing::Owned(read_all(&file, len, path)?)
        };
        let guard_slot = match &backing {
            Backing::Mapped(m) => guard::watch(m.as_ptr() as usize, m.len()),
            Backing::Owned(_) => None,
        };
        drop(file);
        let this = Self {
            path: path.to_path_buf(),
            id: file_id(&meta),
            backing,
            len,
            mtime,
            guard_slot,
        };
        if this.bytes().len() as u64 != len {
            return Err(FormatError::ChangedWhileReading(this.path.clone()));
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
        if self.guard_slot.is_some_and(guard::faulted) {
            return Err(FormatError::ChangedWhileReading(self.path.clone()));
        }
        // The file at the path must still be the one mapped (same device and inode), with the
        // size and mtime seen at open (a rewrite in place changes the mtime).
        let meta = std::fs::metadata(&self.path).with_path(&self.path)?;
        if file_id(&meta) != self.id || meta.len() != self.len || meta.modified().ok() != self.mtime
        {
            return Err(FormatError::ChangedWhileReading(self.path.clone()));
        }
        Ok(())
    }
}

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

fn read_all(mut file: &File, len: u64, path: &Path) -> Result<Vec<u8>, FormatError> {
    let mut v = Vec::new();
    // An allocation that fails is an error, not an abort.
    v.try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))
        .with_path(path)?;
    file.read_to_end(&mut v).with_path(path)?;
    Ok(v)
}

/// Turns SIGBUS on a live mapping (the file was truncated under it) into an error.
///
/// Each mapping is recorded in a fixed table of address ranges (atomics only: the signal
/// handler takes no lock and allocates nothing). On SIGBUS at an address inside a recorded
/// range, the handler maps a page of zeros over the faulting page (`MAP_FIXED`), marks the
/// range, and returns: the read resumes on zeros, and [`MappedFile::ensure_unchanged`], which
/// every reader calls before it reports, refuses the file. A SIGBUS anywhere else restores the
/// previous action, so the fault repeats and is handled as it would have been.
mod guard {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Mappings guarded at once; a mapping beyond them is unguarded (as before).
    const SLOTS: usize = 4096;

    #[allow(clippy::declare_interior_mutable_const)]
    const ZERO: AtomicUsize = AtomicUsize::new(0);
    #[allow(clippy::declare_interior_mutable_const)]
    const NO: AtomicBool = AtomicBool::new(false);
    static START: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
    static END: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
    static FAULTED: [AtomicBool; SLOTS] = [NO; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    static INSTALL: Once = Once::new();
    static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

    fn install() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value; the handler is an `extern "C"` function
        // of the SA_SIGINFO signature; PREVIOUS is written here once, before any handler runs.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            let prev = &raw mut PREVIOUS;
            if libc::sigaction(libc::SIGBUS, &sa, (*prev).as_mut_ptr()) == 0 {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    }

    /// Record a mapping; its slot, or `None` if the table is full or no handler is installed.
    pub(super) fn watch(start: usize, len: usize) -> Option<usize> {
        INSTALL.call_once(install);
        if !INSTALLED.load(Ordering::Acquire) || len == 0 {
            return None;
        }
        for i in 0..SLOTS {
            if START[i]
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                FAULTED[i].store(false, Ordering::Relaxed);
                END[i].store(start.saturating_add(len), Ordering::Release);
                START[i].store(start, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    /// Forget a mapping (before it is unmapped).
    pub(super) fn release(slot: usize) {
        END[slot].store(0, Ordering::Release);
        START[slot].store(0, Ordering::Release);
    }

    /// Whether a SIGBUS hit this mapping.
    pub(super) fn faulted(slot: usize) -> bool {
        FAULTED[slot].load(Ordering::Acquire)
    }

    extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for i in 0..SLOTS {
            let s = START[i].load(Ordering::Acquire);
            if s == 0 || s == usize::MAX || addr < s || addr >= END[i].load(Ordering::Acquire) {
                continue;
            }
            let at = addr & !(page - 1);
            // SAFETY: the page lies inside a live read-only mapping this process owns; it is
            // replaced by private zeros of the same protection. mmap is a plain system call.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                FAULTED[i].store(true, Ordering::Release);
                return;
            }
        }
        // Not one of ours: put the previous action back; returning re-runs the faulting
        // instruction, which then gets that action (by default, the process dies of SIGBUS).
        // SAFETY: PREVIOUS was filled by sigaction before this handler was installed.
        unsafe {
            let prev = &raw const PREVIOUS;
            libc::sigaction(sig, (*prev).as_ptr(), std::ptr::null_mut());
        }
    }
}

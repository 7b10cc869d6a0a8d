//! The input layer: every byte hallmark reads from outside (files named on the command line or
//! in the Python API, registry entries, stdin, JSON Lines streams) comes through here.
//!
//! The rules, in the order they are applied:
//!
//! 1. **Open without blocking, refuse what is not a regular file.** [`open_regular`] opens with
//!    `O_NONBLOCK` (a FIFO or a device cannot stall the open) and checks the type with `fstat` on
//!    the open descriptor (so a swap between check and open cannot fool it).
//! 2. **A cap per kind of input, checked on metadata before a byte is read** ([`Kind::cap`]), and
//!    again while reading, in case the file grows.
//! 3. **Read once.** [`read`] returns the bytes; parsers work on them, never on the path again.
//! 4. **Streams are bounded by bytes.** stdin is read through [`read_stdin`] (capped like a text
//!    document); line-oriented streams go through [`Lines`], which never holds more than one
//!    line of [`MAX_LINE_BYTES`]; a longer line, or one that is not UTF-8, is an error for that
//!    line alone, and the stream goes on.
//! 5. **Typed parsing with counted collections.** JSON is parsed into `serde` structs (unknown
//!    fields are skipped, not built); a list an attacker can grow is read with [`capped_seq`],
//!    which refuses the first element past its limit before allocating for it.
//!
//! Weight files are the one exception to "read into memory": they are memory-mapped by the
//! `weights` module, which opens them with [`open_regular`] too.

use std::fs::{File, Metadata};
use std::io::{self, BufRead, Read};
use std::path::Path;

use serde::Deserialize as _;

/// Whether [`open_regular`] follows a symlink in the last path component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow it (the user named the file; symlinked caches such as Hugging Face's are normal).
    Yes,
    /// Refuse it (`O_NOFOLLOW`): a file that was a regular file when a directory was listed must
    /// not have become a symlink by the time it is opened.
    No,
}

/// What an input is: each kind has its own size cap, checked before reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A text document to test (`detect FILE`, stdin, one `--jsonl` or `--parquet` document).
    Text,
    /// A registry entry (`.pub`, `.wmkey`, `.fp`) or a file given to `register`.
    RegistryEntry,
    /// A watermark key file given on the command line (`--wm-key`, Python `WatermarkKey.load`).
    WatermarkKey,
    /// A `tokenizer.json` (`wm-key --tokenizer`); a GGUF tokenizer is read as weights instead.
    Tokenizer,
    /// A public or private key in PEM.
    Pem,
    /// A certificate chain or a CA bundle in PEM.
    Certificates,
    /// A signature bundle (`.sig`, Sigstore bundle).
    Bundle,
    /// A prompt or other small text given as a file.
    Small,
}

/// Largest text document tested (tokenising costs about 125 bytes of memory per byte of text,
/// so one document stays near 128 MiB).
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// Largest JSON Lines line read (a document of [`MAX_TEXT_BYTES`] with every character
/// escaped, plus room for other fields).
pub const MAX_LINE_BYTES: usize = 8 << 20;

impl Kind {
    /// The largest file of this kind that is read.
    pub const fn cap(self) -> u64 {
        match self {
            Kind::Text => MAX_TEXT_BYTES,
            // A key embeds its tokenizer (Llama 3's tokenizer.json is 9 MB).
            Kind::RegistryEntry | Kind::WatermarkKey | Kind::Tokenizer => 32 << 20,
            Kind::Pem => 64 << 10,
            Kind::Certificates => 4 << 20,
            Kind::Bundle => 32 << 20,
            Kind::Small => 1 << 20,
        }
    }
    /// A name for messages.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Text => "a text document",
            Kind::RegistryEntry => "a registry entry",
            Kind::WatermarkKey => "a watermark key",
            Kind::Tokenizer => "a tokenizer",
            Kind::Pem => "a PEM key",
            Kind::Certificates => "a certificate file",
            Kind::Bundle => "a signature bundle",
            Kind::Small => "this kind of file",
        }
    }
}

/// Open `path` for reading without ever blocking, and only if it is a regular file.
///
/// The file is opened with `O_NONBLOCK` (and `O_NOFOLLOW` for [`Follow::No`]), its type is read
/// with `fstat` on the open descriptor (so a swap between check and open cannot fool it), and
/// anything but a regular file is refused with [`io::ErrorKind::InvalidInput`]. `O_NONBLOCK` is
/// cleared before the file is returned. Returns the file and the metadata seen at open.
pub fn open_regular(path: &Path, follow: Follow) -> io::Result<(File, Metadata)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if follow == Follow::No {
            flags |= libc::O_NOFOLLOW;
        }
        opts.custom_flags(flags);
    }
    let file = opts.open(path).map_err(|e| {
        #[cfg(unix)]
        if follow == Follow::No && e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(io::ErrorKind::InvalidInput, "is a symlink");
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta)),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns; no memory is passed.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((file, meta))
}

/// Read a whole regular file of at most `cap` bytes (checked on the open descriptor before any
/// byte is read, and again while reading, in case the file grows).
pub fn read_capped(path: &Path, cap: u64, follow: Follow) -> io::Result<Vec<u8>> {
    read_with(path, cap, follow, "this kind of file")
}

/// Read a whole regular file of the given kind (see [`Kind::cap`]). Errors do not name the
/// path: callers add it, the way they name it to the user.
pub fn read(path: &Path, kind: Kind, follow: Follow) -> io::Result<Vec<u8>> {
    read_with(path, kind.cap(), follow, kind.label())
}

/// Read the file at `path` of the given kind as UTF-8 text.
pub fn read_text(path: &Path, kind: Kind, follow: Follow) -> io::Result<String> {
    String::from_utf8(read(path, kind, follow)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn read_with(path: &Path, cap: u64, follow: Follow, what: &str) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular(path, follow)?;
    if meta.len() > cap {
        return Err(too_large(meta.len(), cap, what));
    }
    read_bounded(file, meta.len(), cap, what)
}

/// Read at most `cap` bytes from `r` (`hint` sizes the buffer; it is never trusted past `cap`).
fn read_bounded(r: impl Read, hint: u64, cap: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(usize::try_from(hint.min(cap)).unwrap_or(0));
    r.take(cap + 1).read_to_end(&mut v)?;
    if v.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {cap} bytes, over the limit for {what}"),
        ));
    }
    Ok(v)
}

fn too_large(len: u64, cap: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{len} bytes is over the {cap}-byte limit for {what}"),
    )
}

/// Read stdin as one text document: at most [`MAX_TEXT_BYTES`] (an endless stream such as
/// `/dev/zero` stops at the cap).
pub fn read_stdin() -> io::Result<Vec<u8>> {
    read_bounded(io::stdin().lock(), 0, MAX_TEXT_BYTES, Kind::Text.label())
}

/// A short name for a file type, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// One line of a [`Lines`] stream: its 1-based number and its text, or why it is unusable.
pub type Line = (u64, Result<String, String>);

/// The lines of a stream, each at most `cap` bytes: memory holds one line at a time, however
/// long the stream or the line. A line over the cap (skipped to its end without being kept) or
/// one that is not UTF-8 is an `Err` for that line; the next line is read normally. Only an
/// I/O error ends the stream.
pub struct Lines<R> {
    r: R,
    cap: usize,
    number: u64,
    buf: Vec<u8>,
}

impl<R> std::fmt::Debug for Lines<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("cap", &self.cap)
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> Lines<R> {
    /// Lines of `r`, each at most `cap` bytes (without the newline).
    pub fn new(r: R, cap: usize) -> Self {
        Self {
            r,
            cap,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// The next line, `None` at the end of the stream.
    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.buf.clear();
        let mut over = 0u64;
        let mut any = false;
        loop {
            let chunk = match self.r.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1),
                None => (chunk, chunk.len()),
            };
            let room = self.cap.saturating_sub(self.buf.len());
            if over == 0 && part.len() <= room {
                self.buf.extend_from_slice(part);
            } else {
                // Past the cap: count the bytes, keep none of them.
                over += (part.len() + self.buf.len()) as u64;
                self.buf.clear();
            }
            let ended = done > part.len();
            self.r.consume(done);
            if ended {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        if over > 0 {
            return Ok(Some((
                self.number,
                Err(format!(
                    "line is over the {}-byte limit for a line ({over}+ bytes); skipped",
                    self.cap
                )),
            )));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let text = match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(format!(
                "line is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            )),
        };
        Ok(Some((self.number, text)))
    }
}

/// One JSON Lines document: only `text` is built; other fields are skipped.
#[derive(serde::Deserialize)]
struct Doc {
    #[serde(default)]
    text: Option<String>,
}

/// The text of one JSON Lines line (`{"text": ...}`), or why the line is unusable (not an
/// object, no string `text`, or a text over [`MAX_TEXT_BYTES`]).
pub fn jsonl_document(line: &str) -> Result<String, String> {
    let doc: Doc = serde_json::from_str(line)
        .map_err(|e| format!("not a JSON object with a string field `text`: {e}"))?;
    let text = doc.text.ok_or("no string field `text`")?;
    check_text_len(text)
}

/// A document over [`MAX_TEXT_BYTES`] is an error for that document alone.
pub fn check_text_len(text: String) -> Result<String, String> {
    if text.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!(
            "`text` is {} bytes, over the {MAX_TEXT_BYTES}-byte limit for a text document",
            text.len()
        ));
    }
    Ok(text)
}

/// `#[serde(deserialize_with = ...)]` helper: a JSON array read into a `Vec` of at most `N`
/// elements. The element past the limit is refused before it is built, and the vector never
/// trusts a size hint, so an attacker's array costs at most `N` elements of memory.
pub fn capped_seq<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct V<T, const N: usize>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for V<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an array of at most {N} elements")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = seq.next_element()? {
                if v.len() == N {
                    return Err(serde::de::Error::custom(format!(
                        "limit exceeded: more than {N} elements in an array"
                    )));
                }
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(V::<T, N>(std::marker::PhantomData))
}

/// [`capped_seq`] for an optional field (`null` or absent is `None`).
pub fn capped_seq_opt<'de, D, T, const N: usize>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct W<T, const N: usize>(Vec<T>);
    impl<'de, T: serde::Deserialize<'de>, const N: usize> serde::Deserialize<'de> for W<T, N> {
        fn deserialize<D2: serde::Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
            capped_seq::<D2, T, N>(d).map(W)
        }
    }
    Ok(Option::<W<T, N>>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_bad_lines_are_one_error_each() {
        let mut data = b"one\r\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 100));
        data.extend(b"\n\xff\xfe\nlast");
        let mut l = Lines::new(io::BufReader::with_capacity(7, &data[..]), 10);
        assert_eq!(l.next_line().unwrap(), Some((1, Ok("one".into()))));
        let (n, e) = l.next_line().unwrap().unwrap();
        assert_eq!(n, 2);
        assert!(e.unwrap_err().contains("over the 10-byte limit"));
        let (n, e) = l.next_line().unwrap().unwrap();
        assert_eq!(n, 3);
        assert!(e.unwrap_err().contains("not UTF-8"));
        assert_eq!(l.next_line().unwrap(), Some((4, Ok("last".into()))));
        assert_eq!(l.next_line().unwrap(), None);
    }

    #[test]
    fn capped_seq_refuses_past_the_limit() {
        #[derive(serde::Deserialize, Debug)]
        struct S {
            #[serde(deserialize_with = "capped_seq::<_, _, 3>")]
            v: Vec<u8>,
            #[serde(default, deserialize_with = "capped_seq_opt::<_, _, 2>")]
            o: Option<Vec<u8>>,
        }
        let s: S = serde_json::from_str(r#"{"v":[1,2,3],"o":null}"#).unwrap();
        assert_eq!((s.v.len(), s.o), (3, None));
        let e = serde_json::from_str::<S>(r#"{"v":[1,2,3,4]}"#).unwrap_err();
        assert!(e.to_string().contains("limit exceeded"), "{e}");
        let e = serde_json::from_str::<S>(r#"{"v":[],"o":[1,2,3]}"#).unwrap_err();
        assert!(e.to_string().contains("limit exceeded"), "{e}");
    }

    #[test]
    fn read_checks_the_kind_cap_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.pub");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(Kind::Pem.cap() + 1)
            .unwrap();
        let e = read(&p, Kind::Pem, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("limit for a PEM key"), "{e}");
    }
}

//! Error types shared across stages.
//!
//! Each stage owns its error type (`weights` -> [`FormatError`], `signing` -> `SigningError`, ...);
//! the binary turns any of them into a `hallmark: ` diagnostic and exit code 2.

use std::io;
use std::path::{Path, PathBuf};

/// A weight file that cannot be trusted as well-formed.
///
/// Every rejection the strict readers make has its own variant so that tests (and users) can
/// tell exactly why a file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// An I/O error while reading or mapping a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Neither a safetensors nor a GGUF file.
    #[error("not a safetensors or GGUF file")]
    UnknownFormat,
    /// The file is shorter than the smallest valid file.
    #[error("file too small ({0} bytes)")]
    TooSmall(u64),
    /// The safetensors header length exceeds the 100 MB cap.
    #[error("safetensors header length {0} exceeds the 100 MB cap")]
    HeaderTooLarge(u64),
    /// The header length points past the end of the file.
    #[error("header length {len} runs past the end of the file ({file_len} bytes)")]
    HeaderPastEnd {
        /// Declared header length.
        len: u64,
        /// Actual file length.
        file_len: u64,
    },
    /// The header bytes are not valid UTF-8.
    #[error("header is not valid UTF-8")]
    NotUtf8,
    /// The header is not a JSON object (or is malformed JSON).
    #[error("header is not a JSON object: {0}")]
    NotJsonObject(String),
    /// Two tensors share a name (serde would silently keep only the last one).
    #[error("duplicate tensor name `{0}`")]
    DuplicateTensor(String),
    /// A `__metadata__` value that is not a string, or a malformed `__metadata__`.
    #[error("`__metadata__` must map strings to strings: {0}")]
    BadMetadata(String),
    /// A dtype the reader does not know.
    #[error("tensor `{name}`: unknown dtype `{dtype}`")]
    UnknownDtype {
        /// Tensor name.
        name: String,
        /// The dtype as written in the file.
        dtype: String,
    },
    /// A malformed tensor entry.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// shape x dtype overflows.
    #[error("tensor `{0}`: shape x dtype size overflows")]
    Overflow(String),
    /// A gap between tensors' data.
    #[error("gap in tensor data before tensor `{0}`")]
    Gap(String),
    /// Two tensors' data overlap.
    #[error("tensor `{0}` overlaps the previous tensor's data")]
    Overlap(String),
    /// A tensor's byte range does not match its shape and dtype.
    #[error("tensor `{name}`: data is {actual} bytes but shape x dtype needs {expected}")]
    SizeMismatch {
        /// Tensor name.
        name: String,
        /// Bytes the shape and dtype call for.
        expected: u64,
        /// Bytes the offsets span.
        actual: u64,
    },
    /// Bytes after the last tensor.
    #[error("{0} bytes of trailing data after the last tensor")]
    TrailingData(u64),
    /// The file ends before the data it declares.
    #[error("truncated: data needs {needed} bytes but only {available} are present")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A GGUF structural problem (bad magic/version, counts or lengths beyond caps or the file).
    #[error("GGUF: {0}")]
    Gguf(String),
    /// The file changed (size or mtime) while it was being read.
    #[error("{}: file changed while it was being read", .0.display())]
    ChangedWhileReading(PathBuf),
    /// A count or size over one of the limits in docs/limits.md (the file may be valid, but
    /// hallmark will not spend that much memory on it).
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A sharded checkpoint index that is malformed or inconsistent.
    #[error("shard index: {0}")]
    ShardIndex(String),
}

/// Attach a path to an `io::Error`.
pub trait IoContext<T> {
    /// Wrap the error in [`FormatError::Io`] naming `path`.
    fn with_path(self, path: &Path) -> Result<T, FormatError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn with_path(self, path: &Path) -> Result<T, FormatError> {
        self.map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// One line for an error and its causes, `outer: inner: ...`, skipping a cause whose text is
/// already included (errors that print their source): how every front end (the CLI, the Python
/// package) words a failure, so the two never disagree.
pub fn message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        cur = e.source();
    }
    msg
}

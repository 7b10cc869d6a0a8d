//! Weight files: strict safetensors and GGUF readers over `&[u8]`, and the one place that maps
//! files ([`mmap`]).
//!
//! A [`WeightFile`] is a mapped file plus its validated table of tensors; [`TensorView`] borrows
//! one tensor's bytes. Readers never trust a length they have not checked against the file.

pub mod dequant;
pub mod dtype;
pub mod gguf;
pub mod mmap;
pub mod safetensors;
pub mod write;

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use dtype::DType;
pub use mmap::MappedFile;

use crate::error::{FormatError, IoContext};

/// The container format of a weight file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Hugging Face safetensors.
    Safetensors,
    /// GGML universal format (llama.cpp).
    Gguf,
}

/// A metadata value (safetensors metadata are all strings; GGUF has typed values).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
    /// An array of values.
    Array(Vec<MetaValue>),
    /// A GGUF array too large to build into values (see [`gguf::MAX_METADATA_ELEMENTS`]): its
    /// element type, length and byte range in the file (after the type and count fields).
    /// Nothing hallmark hashes or fingerprints needs it.
    Unread {
        /// GGUF value type of the elements.
        element_type: u32,
        /// Number of elements.
        count: u64,
        /// Absolute byte range of the elements.
        range: Range<u64>,
    },
}

impl MetaValue {
    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as u64, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as f64, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }
    /// The array inside, if this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's entry in a file's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name as stored in the file.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, row-major (outermost dimension first) for both formats.
    pub shape: Vec<u64>,
    /// Absolute byte range of the tensor's data within the file.
    pub range: Range<u64>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The validated structure of a weight file.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    /// Container format.
    pub format: WeightFormat,
    /// Byte range of the header (everything before tensor data; for GGUF, before padding).
    pub header: Range<u64>,
    /// Tensors in file order (safetensors: data-offset order; GGUF: table order).
    pub tensors: Vec<TensorInfo>,
    /// Metadata key/values in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Data alignment (GGUF), 1 for safetensors.
    pub alignment: u64,
}

impl ParsedFile {
    /// Look up a metadata value.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Look up a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A borrowed view of one tensor's bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Name as stored in the file.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Shape, row-major.
    pub shape: &'a [u64],
    /// The raw stored bytes.
    pub bytes: &'a [u8],
}

/// Recognise a weight file from its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<WeightFormat> {
    if bytes.starts_with(gguf::MAGIC) {
        return Some(WeightFormat::Gguf);
    }
    // safetensors: 8-byte little-endian header length, then a JSON object.
    if bytes.len() >= 9 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(a);
        if (2..=safetensors::MAX_HEADER_LEN).contains(&n) && bytes[8] == b'{' {
            return Some(WeightFormat::Safetensors);
        }
    }
    None
}

/// Parse `bytes` as whichever weight format they are in.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile, FormatError> {
    match sniff(bytes) {
        Some(WeightFormat::Gguf) => gguf::parse(bytes),
        Some(WeightFormat::Safetensors) => safetensors::parse(bytes),
        None if bytes.len() < 9 => Err(FormatError::TooSmall(bytes.len() as u64)),
        None => Err(FormatError::UnknownFormat),
    }
}

/// A mapped and validated weight file.
#[derive(Debug)]
pub struct WeightFile {
    map: MappedFile,
    parsed: ParsedFile,
}

impl WeightFile {
    /// Map `path` and validate it strictly.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let map = MappedFile::open(path)?;
        let parsed = parse(map.bytes())?;
        Ok(Self { map, parsed })
    }
    /// The validated structure.
    pub fn parsed(&self) -> &ParsedFile {
        &self.parsed
    }
    /// The mapped file.
    pub fn map(&self) -> &MappedFile {
        &self.map
    }
    /// The file's path.
    pub fn path(&self) -> &Path {
        self.map.path()
    }
    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }
    /// The header bytes.
    pub fn header_bytes(&self) -> &[u8] {
        let r = &self.parsed.header;
        &self.map.bytes()[r.start as usize..r.end as usize]
    }
    /// A view of tensor `i` (in [`ParsedFile::tensors`] order).
    pub fn view(&self, i: usize) -> Option<TensorView<'_>> {
        let t = self.parsed.tensors.get(i)?;
        Some(TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: self
                .map
                .bytes()
                .get(t.range.start as usize..t.range.end as usize)?,
        })
    }
    /// Views of every tensor, in file order.
    pub fn views(&self) -> impl Iterator<Item = TensorView<'_>> {
        (0..self.parsed.tensors.len()).filter_map(|i| self.view(i))
    }
    /// A view of the tensor named `name`.
    pub fn view_by_name(&self, name: &str) -> Option<TensorView<'_>> {
        let i = self.parsed.tensors.iter().position(|t| t.name == name)?;
        self.view(i)
    }
}

/// True if `path` names a file whose extension marks it as a weight file hallmark reads.
pub fn is_weight_path(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("safetensors" | "gguf")
    )
}

/// The weight files that make up a model: the file itself, or the `.safetensors` / `.gguf`
/// files of a directory (sorted by name; not recursive).
pub fn model_weight_files(path: &Path) -> Result<Vec<PathBuf>, FormatError> {
    let meta = std::fs::metadata(path).with_path(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).with_path(path)? {
        let e = e.with_path(path)?;
        let p = e.path();
        if p.is_file() && is_weight_path(&p) {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(FormatError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no .safetensors or .gguf files in this directory",
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

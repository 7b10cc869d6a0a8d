//! Strict GGUF (v2, v3) reader over `&[u8]`: header, metadata and tensor table.
//!
//! Every count and length is checked against the bytes that remain and against the caps that
//! llama.cpp and candle apply (strings and arrays up to 2^30 elements, 4 dimensions, nesting depth
//! 64), so a hostile header can neither allocate unbounded memory nor index out of bounds. At
//! most [`MAX_METADATA_ELEMENTS`] array elements are built into values; larger arrays are kept as
//! byte ranges ([`MetaValue::Unread`]), so memory stays proportional to what is used.
//! Tensor shapes are reported row-major (outermost first), the reverse of GGML's `ne` order.

use std::collections::HashSet;

use super::{DType, MetaValue, ParsedFile, TensorInfo, WeightFormat};
use crate::error::FormatError;

/// The GGUF magic, `GGUF` in file order.
pub const MAGIC: &[u8; 4] = b"GGUF";
const MAX_ELEMENTS: u64 = 1 << 30;
const MAX_DIMS: u32 = 4;
const MAX_DEPTH: u32 = 64;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Most metadata keys a GGUF file may have (llama.cpp writes about 40).
pub const MAX_METADATA_KEYS: u64 = 1 << 16;
/// Most tensors one weight file may hold, in either format (the largest checkpoints hold a few
/// thousand per file).
pub const MAX_TENSORS: u64 = 1 << 18;
/// Most metadata array elements built into [`MetaValue`]s per file (a 262k-token vocabulary
/// with its merges and token types needs under 800k). Arrays past the budget are kept as
/// [`MetaValue::Unread`] byte ranges, so a hostile array costs no memory.
pub const MAX_METADATA_ELEMENTS: u64 = 1 << 21;
/// Most bytes of metadata strings built per file (a vocabulary and its merges take a few MB).
/// A string past the budget is kept as a [`MetaValue::Unread`] byte range, so a 512 MiB
/// string costs no memory.
pub const MAX_METADATA_STRING_BYTES: u64 = 64 << 20;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Array elements that may still be built into values.
    budget: u64,
    /// String bytes that may still be built into values.
    string_budget: u64,
}

fn err(msg: impl Into<String>) -> FormatError {
    FormatError::Gguf(msg.into())
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], FormatError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(err(format!(
                "{what}: needs {n} bytes at offset {} but only {remaining} remain",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string_bytes(&mut self, what: &str) -> Result<&'a [u8], FormatError> {
        let len = self.u64(what)?;
        if len > MAX_ELEMENTS {
            return Err(err(format!(
                "{what}: string length {len} exceeds the 2^30 cap"
            )));
        }
        self.take(len, what)
    }
    fn strict_string(&mut self, what: &str) -> Result<String, FormatError> {
        let b = self.string_bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| err(format!("{what}: not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: u32, what: &str) -> Result<MetaValue, FormatError> {
        if depth > MAX_DEPTH {
            return Err(err(format!("{what}: nesting deeper than {MAX_DEPTH}")));
        }
        Ok(match ty {
            0 => MetaValue::U64(self.array::<1>(what)?[0] as u64),
            1 => MetaValue::I64(self.array::<1>(what)?[0] as i8 as i64),
            2 => MetaValue::U64(u16::from_le_bytes(self.array(what)?) as u64),
            3 => MetaValue::I64(i16::from_le_bytes(self.array(what)?) as i64),
            4 => MetaValue::U64(self.u32(what)? as u64),
            5 => MetaValue::I64(i32::from_le_bytes(self.array(what)?) as i64),
            6 => MetaValue::F64(f32::from_le_bytes(self.array(what)?) as f64),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            // Values (token strings) may hold arbitrary bytes; keep them lossless enough to use.
            8 => {
                let start = self.pos as u64;
                let b = self.string_bytes(what)?;
                if b.len() as u64 > self.string_budget {
                    return Ok(MetaValue::Unread {
                        element_type: 8,
                        count: 1,
                        range: start..self.pos as u64,
                    });
                }
                self.string_budget -= b.len() as u64;
                MetaValue::String(String::from_utf8_lossy(b).into_owned())
            }
            9 => {
                let ety = self.u32(what)?;
                let count = self.u64(what)?;
                if count > MAX_ELEMENTS {
                    return Err(err(format!(
                        "{what}: array length {count} exceeds the 2^30 cap"
                    )));
                }
                let min = min_value_size(ety)
                    .ok_or_else(|| err(format!("{what}: unknown array element type {ety}")))?;
                if count.saturating_mul(min) > self.remaining() {
                    return Err(err(format!(
                        "{what}: array of {count} elements runs past the end of the file"
                    )));
                }
                if count > self.budget {
                    // Too large to build: walk over it (checking every length) and keep its
                    // place in the file instead.
                    let start = self.pos as u64;
                    for _ in 0..count {
                        self.skip(ety, depth + 1, what)?;
                    }
                    return Ok(MetaValue::Unread {
                        element_type: ety,
                        count,
                        range: start..self.pos as u64,
                    });
                }
                self.budget -= count;
                let mut v = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    v.push(self.value(ety, depth + 1, what)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(err(format!("{what}: unknown value type {t}"))),
        })
    }
}

impl Cursor<'_> {
    /// Step over one value of type `ty` without building it (every length is still checked).
    fn skip(&mut self, ty: u32, depth: u32, what: &str) -> Result<(), FormatError> {
        if depth > MAX_DEPTH {
            return Err(err(format!("{what}: nesting deeper than {MAX_DEPTH}")));
        }
        match ty {
            8 => {
                self.string_bytes(what)?;
            }
            9 => {
                let ety = self.u32(what)?;
                let count = self.u64(what)?;
                let min = min_value_size(ety)
                    .ok_or_else(|| err(format!("{what}: unknown array element type {ety}")))?;
                if count > MAX_ELEMENTS || count.saturating_mul(min) > self.remaining() {
                    return Err(err(format!(
                        "{what}: array of {count} elements runs past the end of the file"
                    )));
                }
                if matches!(ety, 8 | 9) {
                    for _ in 0..count {
                        self.skip(ety, depth + 1, what)?;
                    }
                } else {
                    self.take(count * min, what)?;
                }
            }
            7 => {
                self.value(ty, depth, what)?;
            }
            t => {
                let n = min_value_size(t)
                    .ok_or_else(|| err(format!("{what}: unknown value type {t}")))?;
                self.take(n, what)?;
            }
        }
        Ok(())
    }
}

fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10 | 11 | 12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// Parse and validate a whole GGUF file held in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile, FormatError> {
    let file_len = bytes.len() as u64;
    if bytes.len() < 24 {
        return Err(FormatError::TooSmall(file_len));
    }
    let mut c = Cursor {
        buf: bytes,
        pos: 0,
        budget: MAX_METADATA_ELEMENTS,
        string_budget: MAX_METADATA_STRING_BYTES,
    };
    if c.take(4, "magic")? != MAGIC {
        return Err(FormatError::UnknownFormat);
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(err(format!("unsupported version {version} (need 2 or 3)")));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A key/value needs at least 8 (key len) + 4 (type) + 1 bytes; a tensor info at least 8+4+4+8.
    if n_kv.saturating_mul(13) > c.remaining() {
        return Err(err(format!(
            "metadata count {n_kv} exceeds what the file can hold"
        )));
    }
    if n_tensors.saturating_mul(24) > c.remaining() {
        return Err(err(format!(
            "tensor count {n_tensors} exceeds what the file can hold"
        )));
    }
    if n_kv > MAX_METADATA_KEYS {
        return Err(FormatError::Limit(format!(
            "GGUF: {n_kv} metadata keys, over the limit of {MAX_METADATA_KEYS}"
        )));
    }
    if n_tensors > MAX_TENSORS {
        return Err(FormatError::Limit(format!(
            "GGUF: {n_tensors} tensors, over the limit of {MAX_TENSORS}"
        )));
    }
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut keys = HashSet::new();
    for i in 0..n_kv {
        let key = c.strict_string(&format!("metadata key #{i}"))?;
        if !keys.insert(key.clone()) {
            return Err(err(format!("duplicate metadata key `{key}`")));
        }
        let ty = c.u32(&key)?;
        let v = c.value(ty, 0, &key)?;
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U64(a))) if *a > 0 && a.is_power_of_two() && *a <= 1 << 20 => *a,
        Some((_, v)) => return Err(err(format!("bad general.alignment {v:?}"))),
    };

    let mut infos = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.strict_string(&format!("tensor #{i} name"))?;
        if !names.insert(name.clone()) {
            return Err(FormatError::DuplicateTensor(name));
        }
        let n_dims = c.u32(&name)?;
        if n_dims > MAX_DIMS {
            return Err(FormatError::BadTensor {
                name,
                reason: format!("{n_dims} dimensions (at most {MAX_DIMS})"),
            });
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&name)?);
        }
        let ty = c.u32(&name)?;
        let offset = c.u64(&name)?;
        let dtype = DType::from_ggml(ty).ok_or_else(|| FormatError::UnknownDtype {
            name: name.clone(),
            dtype: format!("ggml type {ty}"),
        })?;
        let elements = ne
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| FormatError::Overflow(name.clone()))?;
        if ne.first().copied().unwrap_or(1) % dtype.block_size() != 0 {
            return Err(FormatError::BadTensor {
                name,
                reason: format!(
                    "row length is not a multiple of the {dtype} block size {}",
                    dtype.block_size()
                ),
            });
        }
        let size = dtype
            .bytes_for(elements)
            .ok_or_else(|| FormatError::Overflow(name.clone()))?;
        if offset % alignment != 0 {
            return Err(FormatError::BadTensor {
                name,
                reason: format!("offset {offset} is not aligned to {alignment}"),
            });
        }
        ne.reverse();
        infos.push((name, dtype, ne, offset, size));
    }
    let header_end = c.pos as u64;
    let data_start = header_end.div_ceil(alignment) * alignment;
    if data_start > file_len && n_tensors > 0 {
        return Err(FormatError::Truncated {
            needed: data_start,
            available: file_len,
        });
    }
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dtype, shape, offset, size) in infos {
        let start = data_start
            .checked_add(offset)
            .ok_or_else(|| FormatError::Overflow(name.clone()))?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| FormatError::Overflow(name.clone()))?;
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            range: start..end,
        });
    }
    let mut sorted: Vec<&TensorInfo> = tensors.iter().collect();
    sorted.sort_by_key(|t| (t.range.start, t.range.end));
    let mut cursor = data_start;
    for t in &sorted {
        if t.range.start < cursor {
            return Err(FormatError::Overlap(t.name.clone()));
        }
        // Only alignment padding may sit between tensors: anything larger would be bytes that no
        // tensor digest covers.
        if t.range.start - cursor >= alignment {
            return Err(FormatError::Gap(t.name.clone()));
        }
        cursor = t.range.end;
    }
    if tensors.is_empty() {
        cursor = header_end;
    }
    if cursor > file_len {
        return Err(FormatError::Truncated {
            needed: cursor,
            available: file_len,
        });
    }
    if file_len - cursor >= alignment {
        return Err(FormatError::TrailingData(file_len - cursor));
    }
    Ok(ParsedFile {
        format: WeightFormat::Gguf,
        header: 0..header_end,
        tensors,
        metadata,
        alignment,
    })
}

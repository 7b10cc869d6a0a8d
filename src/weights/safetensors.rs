//! Strict safetensors header reader over `&[u8]`.
//!
//! On top of what the `safetensors` crate validates, this reader refuses duplicate tensor names
//! (which serde would silently collapse), non-string metadata and unknown fields, and reports a
//! specific error for gaps, overlaps, size mismatches, trailing and truncated data.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

use super::{DType, ParsedFile, TensorInfo, WeightFormat};
use crate::error::FormatError;

/// Largest header the reader accepts (the safetensors crate's own cap).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

enum Item {
    Metadata(serde_json::Value),
    Tensor(String, RawEntry),
}

struct Header(Vec<Item>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut items = Vec::new();
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format_args!("\0dup\0{key}")));
                    }
                    if key == "__metadata__" {
                        items.push(Item::Metadata(map.next_value()?));
                    } else {
                        let entry: RawEntry = map.next_value()?;
                        items.push(Item::Tensor(key, entry));
                    }
                }
                Ok(Header(items))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parse and validate a whole safetensors file held in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile, FormatError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(FormatError::TooSmall(file_len));
    };
    let mut arr = [0u8; 8];
    arr.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(arr);
    if n > MAX_HEADER_LEN {
        return Err(FormatError::HeaderTooLarge(n));
    }
    let data_start = 8 + n; // cannot overflow: n <= 1e8
    if data_start > file_len {
        return Err(FormatError::HeaderPastEnd { len: n, file_len });
    }
    let header_bytes = &bytes[8..data_start as usize];
    let text = std::str::from_utf8(header_bytes).map_err(|_| FormatError::NotUtf8)?;
    let header: Header = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if let Some(rest) = msg.strip_prefix("\0dup\0") {
            // serde_json appends " at line .. column .."; keep only the name.
            let name = rest.rsplit_once(" at line").map(|(a, _)| a).unwrap_or(rest);
            FormatError::DuplicateTensor(name.to_string())
        } else {
            FormatError::NotJsonObject(msg)
        }
    })?;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for item in header.0 {
        match item {
            Item::Metadata(v) => {
                let serde_json::Value::Object(obj) = v else {
                    return Err(FormatError::BadMetadata("not an object".into()));
                };
                for (k, v) in obj {
                    let serde_json::Value::String(s) = v else {
                        return Err(FormatError::BadMetadata(format!("value of `{k}` is not a string")));
                    };
                    metadata.insert(k, s);
                }
            }
            Item::Tensor(name, e) => {
                let dtype = DType::from_safetensors(&e.dtype).ok_or_else(|| {
                    FormatError::UnknownDtype {
                        name: name.clone(),
                        dtype: e.dtype.clone(),
                    }
                })?;
                let elements = e
                    .shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| FormatError::Overflow(name.clone()))?;
                let expected = dtype
                    .bytes_for(elements)
                    .ok_or_else(|| FormatError::Overflow(name.clone()))?;
                let [s, end] = e.data_offsets;
                if end < s {
                    return Err(FormatError::BadTensor {
                        name,
                        reason: format!("data_offsets [{s}, {end}] run backwards"),
                    });
                }
                if end - s != expected {
                    return Err(FormatError::SizeMismatch {
                        name,
                        expected,
                        actual: end - s,
                    });
                }
                let start = data_start
                    .checked_add(s)
                    .ok_or_else(|| FormatError::Overflow(name.clone()))?;
                let stop = data_start
                    .checked_add(end)
                    .ok_or_else(|| FormatError::Overflow(name.clone()))?;
                tensors.push(TensorInfo {
                    name,
                    dtype,
                    shape: e.shape,
                    range: start..stop,
                });
            }
        }
    }
    // Tensor data must tile the data section exactly, in offset order.
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    let mut cursor = data_start;
    for t in &tensors {
        if t.range.start > cursor {
            return Err(FormatError::Gap(t.name.clone()));
        }
        if t.range.start < cursor {
            return Err(FormatError::Overlap(t.name.clone()));
        }
        cursor = t.range.end;
    }
    if cursor > file_len {
        return Err(FormatError::Truncated {
            needed: cursor,
            available: file_len,
        });
    }
    if cursor < file_len {
        return Err(FormatError::TrailingData(file_len - cursor));
    }
    // Belt and braces: the reference implementation must agree.
    safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| FormatError::NotJsonObject(format!("rejected by the safetensors crate: {e}")))?;

    Ok(ParsedFile {
        format: WeightFormat::Safetensors,
        header: 0..data_start,
        tensors,
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k, super::MetaValue::String(v)))
            .collect(),
        alignment: 1,
    })
}

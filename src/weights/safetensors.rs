//! Strict safetensors header reader over `&[u8]`.
//!
//! On top of what the `safetensors` crate validates, this reader refuses duplicate tensor names
//! (which serde would silently collapse), non-string metadata and unknown fields, and reports a
//! specific error for gaps, overlaps, size mismatches, trailing and truncated data.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{DType, ParsedFile, TensorInfo, WeightFormat};
use crate::error::FormatError;

/// Largest header the reader accepts (the safetensors crate's own cap).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Most dimensions a safetensors tensor may have (real tensors have at most 5).
pub const MAX_DIMS: usize = 16;

/// Prefix of a serde error that reports a limit rather than malformed JSON.
const LIMIT_TAG: &str = "\0limit\0";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Shape,
    data_offsets: [u64; 2],
}

/// A shape of at most [`MAX_DIMS`] dimensions, refused as soon as it grows past the cap.
struct Shape(Vec<u64>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut v = Vec::new();
                while let Some(d) = seq.next_element::<u64>()? {
                    if v.len() == MAX_DIMS {
                        return Err(de::Error::custom(format_args!(
                            "{LIMIT_TAG}a tensor has more than {MAX_DIMS} dimensions"
                        )));
                    }
                    v.push(d);
                }
                Ok(Shape(v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `__metadata__`: a map of strings to strings, checked while it is read (a non-string value is
/// refused at its first byte, before it is built), of at most [`MAX_METADATA_ENTRIES`] entries.
struct Metadata(Vec<(String, String)>);

/// Most `__metadata__` entries read (writers store a handful; 100 MB of tiny entries would
/// otherwise cost over a gigabyte of small strings).
pub const MAX_METADATA_ENTRIES: usize = 1 << 16;

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if v.len() == MAX_METADATA_ENTRIES {
                        return Err(de::Error::custom(format_args!(
                            "limit exceeded: `__metadata__` has more than \
                             {MAX_METADATA_ENTRIES} entries"
                        )));
                    }
                    let val = map.next_value::<StrOnly>().map_err(|_| {
                        de::Error::custom(format_args!(
                            "{BAD_META_TAG}value of `{k}` is not a string"
                        ))
                    })?;
                    v.push((k, val.0));
                }
                Ok(Metadata(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Metadata, A::Error> {
                Err(de::Error::custom(format_args!(
                    "{BAD_META_TAG}not an object"
                )))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Metadata, E> {
                Err(E::custom(format_args!("{BAD_META_TAG}not an object")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string value; anything else fails without being read further.
struct StrOnly(String);

impl<'de> Deserialize<'de> for StrOnly {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOnly;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrOnly, E> {
                Ok(StrOnly(s.to_string()))
            }
        }
        d.deserialize_string(V)
    }
}

/// Prefix of a serde error about `__metadata__`.
const BAD_META_TAG: &str = "\0meta\0";

enum Item {
    Metadata(Vec<(String, String)>),
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
                        items.push(Item::Metadata(map.next_value::<Metadata>()?.0));
                    } else {
                        if items.len() as u64 > super::gguf::MAX_TENSORS {
                            return Err(de::Error::custom(format_args!(
                                "{LIMIT_TAG}more than {} tensors",
                                super::gguf::MAX_TENSORS
                            )));
                        }
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
        // serde_json appends " at line .. column .."; keep only what the visitor said.
        let cut = |rest: &str| {
            rest.rsplit_once(" at line")
                .map(|(a, _)| a)
                .unwrap_or(rest)
                .to_string()
        };
        if let Some(rest) = msg.strip_prefix("\0dup\0") {
            FormatError::DuplicateTensor(cut(rest))
        } else if let Some(rest) = msg.strip_prefix(LIMIT_TAG) {
            FormatError::Limit(format!("safetensors header: {}", cut(rest)))
        } else if let Some(rest) = msg.strip_prefix(BAD_META_TAG) {
            FormatError::BadMetadata(cut(rest))
        } else {
            FormatError::NotJsonObject(msg)
        }
    })?;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for item in header.0 {
        match item {
            Item::Metadata(pairs) => {
                // A repeated key keeps its last value (as a JSON object would).
                metadata.extend(pairs);
            }
            Item::Tensor(name, e) => {
                let dtype =
                    DType::from_safetensors(&e.dtype).ok_or_else(|| FormatError::UnknownDtype {
                        name: name.clone(),
                        dtype: e.dtype.clone(),
                    })?;
                let elements = e
                    .shape
                    .0
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
                    shape: e.shape.0,
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
    safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        FormatError::NotJsonObject(format!("rejected by the safetensors crate: {e}"))
    })?;

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

//! Writers for weight files, used by the test-model generator and by `mark` (which must preserve
//! dtype, tensor order and metadata of its input).

use super::{DType, MetaValue};

/// A tensor to write: name, dtype, row-major shape and raw stored bytes.
#[derive(Clone, Debug)]
pub struct OwnedTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<u64>,
    /// Raw stored bytes (`dtype.bytes_for(elements)` long).
    pub bytes: Vec<u8>,
}

/// Serialize a safetensors file; tensors are written in the given order.
pub fn safetensors_bytes(
    tensors: &[OwnedTensor],
    metadata: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0u64;
    for t in tensors {
        let elements: u64 = t.shape.iter().product();
        if t.dtype.block_size() != 1 || t.dtype.bytes_for(elements) != Some(t.bytes.len() as u64) {
            return Err(format!(
                "tensor `{}`: bytes do not match shape x dtype",
                t.name
            ));
        }
        let end = offset + t.bytes.len() as u64;
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| e.to_string())?;
    // Pad the header with spaces to 8 bytes, as the reference writer does, so data is aligned.
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset as usize);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) | MetaValue::Unread { .. } => 9,
    }
}

fn has_unread(v: &MetaValue) -> bool {
    match v {
        MetaValue::Unread { .. } => true,
        MetaValue::Array(items) => items.iter().any(has_unread),
        _ => false,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(b) => out.push(*b as u8),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            let ety = items.first().map(value_type).unwrap_or(10);
            out.extend_from_slice(&ety.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        // Refused by `gguf_bytes` before anything is written.
        MetaValue::Unread { element_type, .. } => {
            out.extend_from_slice(&element_type.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
        }
    }
}

/// Serialize a GGUF v3 file with the given metadata (written with 64-bit integer and float
/// types) and tensors, in order, aligned to `alignment` (32 if `general.alignment` is absent).
pub fn gguf_bytes(
    tensors: &[OwnedTensor],
    metadata: &[(String, MetaValue)],
) -> Result<Vec<u8>, String> {
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(32);
    if let Some((k, _)) = metadata.iter().find(|(_, v)| has_unread(v)) {
        return Err(format!(
            "metadata `{k}` holds an array that was not read; it cannot be written"
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(super::gguf::MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        // general.alignment must be a u32 for llama.cpp.
        if k == "general.alignment" {
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&(alignment as u32).to_le_bytes());
            continue;
        }
        out.extend_from_slice(&value_type(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        let id = t
            .dtype
            .ggml_id()
            .ok_or_else(|| format!("tensor `{}`: {} cannot be stored in GGUF", t.name, t.dtype))?;
        let elements: u64 = t.shape.iter().product();
        if t.dtype.bytes_for(elements) != Some(t.bytes.len() as u64) {
            return Err(format!(
                "tensor `{}`: bytes do not match shape x dtype",
                t.name
            ));
        }
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.bytes.len() as u64).div_ceil(alignment) * alignment;
    }
    let pad = |out: &mut Vec<u8>| {
        while !(out.len() as u64).is_multiple_of(alignment) {
            out.push(0);
        }
    };
    pad(&mut out);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
        pad(&mut out);
    }
    Ok(out)
}

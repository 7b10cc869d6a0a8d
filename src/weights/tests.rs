//! One test per rejection the strict readers make, plus round trips through the writers.

use super::write::{gguf_bytes, safetensors_bytes, OwnedTensor};
use super::*;
use crate::error::FormatError;

fn st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn t(name: &str, dtype: DType, shape: &[u64]) -> OwnedTensor {
    let n: u64 = shape.iter().product();
    let len = dtype.bytes_for(n).unwrap() as usize;
    OwnedTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        bytes: (0..len).map(|i| (i * 7 + name.len()) as u8).collect(),
    }
}

#[test]
fn safetensors_round_trip() {
    let ts = vec![t("a", DType::F32, &[2, 3]), t("b", DType::BF16, &[4])];
    let bytes = safetensors_bytes(&ts, &[("format".into(), "pt".into())]).unwrap();
    let p = parse(&bytes).unwrap();
    assert_eq!(p.format, WeightFormat::Safetensors);
    assert_eq!(p.tensors.len(), 2);
    assert_eq!(p.tensors[0].shape, vec![2, 3]);
    assert_eq!(p.meta("format").unwrap().as_str(), Some("pt"));
    let r = &p.tensors[1].range;
    assert_eq!(&bytes[r.start as usize..r.end as usize], &ts[1].bytes[..]);
}

#[test]
fn gguf_round_trip() {
    let ts = vec![t("w", DType::Q4_0, &[2, 64]), t("n", DType::F32, &[3])];
    let meta = vec![
        (
            "general.architecture".to_string(),
            MetaValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("b".into()),
            ]),
        ),
    ];
    let bytes = gguf_bytes(&ts, &meta).unwrap();
    let p = parse(&bytes).unwrap();
    assert_eq!(p.format, WeightFormat::Gguf);
    assert_eq!(p.tensors[0].shape, vec![2, 64]);
    assert_eq!(p.tensors[0].dtype, DType::Q4_0);
    assert_eq!(
        p.meta("general.architecture").unwrap().as_str(),
        Some("llama")
    );
    for (i, tt) in ts.iter().enumerate() {
        let r = &p.tensors[i].range;
        assert_eq!(&bytes[r.start as usize..r.end as usize], &tt.bytes[..]);
    }
}

#[test]
fn rejects_header_too_large() {
    let mut v = (200_000_000u64).to_le_bytes().to_vec();
    v.extend_from_slice(b"{}");
    assert!(matches!(
        safetensors::parse(&v),
        Err(FormatError::HeaderTooLarge(_))
    ));
}

#[test]
fn rejects_header_past_end() {
    let mut v = (1000u64).to_le_bytes().to_vec();
    v.extend_from_slice(b"{}");
    assert!(matches!(
        safetensors::parse(&v),
        Err(FormatError::HeaderPastEnd { .. })
    ));
}

#[test]
fn rejects_non_object_header() {
    let v = st("[1,2,3]", b"");
    assert!(matches!(
        safetensors::parse(&v),
        Err(FormatError::NotJsonObject(_))
    ));
}

#[test]
fn rejects_non_utf8() {
    let mut v = (4u64).to_le_bytes().to_vec();
    v.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    assert!(matches!(safetensors::parse(&v), Err(FormatError::NotUtf8)));
}

#[test]
fn rejects_duplicate_names() {
    let h = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    match safetensors::parse(&st(h, &[1, 2])) {
        Err(FormatError::DuplicateTensor(n)) => assert_eq!(n, "a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_gap() {
    let h = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#;
    assert!(matches!(safetensors::parse(&st(h, &[0; 3])), Err(FormatError::Gap(n)) if n == "b"));
}

#[test]
fn rejects_overlap() {
    let h = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
    assert!(
        matches!(safetensors::parse(&st(h, &[0; 3])), Err(FormatError::Overlap(n)) if n == "b")
    );
}

#[test]
fn rejects_trailing_and_truncated() {
    let h = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 3])),
        Err(FormatError::TrailingData(1))
    ));
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 1])),
        Err(FormatError::Truncated { .. })
    ));
}

#[test]
fn rejects_shape_overflow() {
    let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 4])),
        Err(FormatError::Overflow(_))
    ));
}

#[test]
fn rejects_size_mismatch() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 4])),
        Err(FormatError::SizeMismatch { .. })
    ));
}

#[test]
fn rejects_unknown_dtype() {
    let h = r#"{"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 1])),
        Err(FormatError::UnknownDtype { .. })
    ));
}

#[test]
fn rejects_non_string_metadata() {
    let h = r#"{"__metadata__":{"x":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    assert!(matches!(
        safetensors::parse(&st(h, &[0; 1])),
        Err(FormatError::BadMetadata(_))
    ));
}

fn gguf_prefix(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

#[test]
fn gguf_rejects_bad_version() {
    let mut v = gguf_prefix(0, 0);
    v[4] = 1;
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("version")));
}

#[test]
fn gguf_rejects_huge_counts() {
    let v = gguf_prefix(u64::MAX, 0);
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("tensor count")));
    let v = gguf_prefix(0, 1 << 40);
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("metadata count")));
}

#[test]
fn gguf_rejects_long_string() {
    let mut v = gguf_prefix(0, 1);
    v.extend_from_slice(&(1u64 << 31).to_le_bytes());
    v.extend_from_slice(b"abcdef");
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("cap")));
    let mut v = gguf_prefix(0, 1);
    v.extend_from_slice(&(1000u64).to_le_bytes());
    v.extend_from_slice(b"abcdef");
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("remain")));
}

#[test]
fn gguf_rejects_huge_array() {
    let mut v = gguf_prefix(0, 1);
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(b'k');
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&(1u64 << 29).to_le_bytes());
    v.extend_from_slice(&[0; 16]);
    assert!(matches!(gguf::parse(&v), Err(FormatError::Gguf(m)) if m.contains("past the end")));
}

#[test]
fn gguf_rejects_deep_nesting() {
    let mut v = gguf_prefix(0, 1);
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(b'k');
    v.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..70 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&[0; 64]);
    assert!(gguf::parse(&v).is_err());
}

#[test]
fn gguf_rejects_duplicates_dims_and_bounds() {
    let ts = vec![t("w", DType::F32, &[4]), t("w", DType::F32, &[4])];
    let b = gguf_bytes(&ts, &[]).unwrap();
    assert!(matches!(
        gguf::parse(&b),
        Err(FormatError::DuplicateTensor(_))
    ));

    let ts = vec![t("w", DType::F32, &[1, 1, 1, 1, 2])];
    let b = gguf_bytes(&ts, &[]).unwrap();
    assert!(matches!(
        gguf::parse(&b),
        Err(FormatError::BadTensor { .. })
    ));

    let ts = vec![t("w", DType::F32, &[64])];
    let mut b = gguf_bytes(&ts, &[]).unwrap();
    b.truncate(b.len() - 8);
    assert!(matches!(
        gguf::parse(&b),
        Err(FormatError::Truncated { .. })
    ));

    let mut b = gguf_bytes(&ts, &[]).unwrap();
    b.extend_from_slice(&[0; 64]);
    assert!(matches!(gguf::parse(&b), Err(FormatError::TrailingData(_))));
}

#[test]
fn gguf_rejects_unknown_type() {
    let ts = vec![t("w", DType::F32, &[4])];
    let mut b = gguf_bytes(&ts, &[]).unwrap();
    // the type id sits 12 bytes before the end of the tensor table entry (type u32 + offset u64)
    let hdr = gguf::parse(&b).unwrap().header.end as usize;
    b[hdr - 12..hdr - 8].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        gguf::parse(&b),
        Err(FormatError::UnknownDtype { .. })
    ));
}

#[test]
fn sniff_and_parse_never_panic_on_prefixes() {
    let ts = vec![t("w", DType::Q8_0, &[2, 32]), t("n", DType::F16, &[5])];
    for bytes in [
        gguf_bytes(&ts, &[]).unwrap(),
        safetensors_bytes(&[t("a", DType::F16, &[5])], &[]).unwrap(),
    ] {
        for n in 0..bytes.len() {
            let _ = parse(&bytes[..n]);
        }
    }
}

#[test]
fn gguf_huge_metadata_array_is_kept_as_a_range_not_built() {
    // One u8 array of 2^22 elements (over the element budget) and a small one after it.
    let mut v = gguf_prefix(0, 2);
    let put_str = |v: &mut Vec<u8>, s: &str| {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
    };
    put_str(&mut v, "junk");
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    let n: u64 = gguf::MAX_METADATA_ELEMENTS + 1;
    v.extend_from_slice(&n.to_le_bytes());
    let start = v.len() as u64;
    v.resize(v.len() + n as usize, 7);
    let end = v.len() as u64;
    put_str(&mut v, "small");
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&2u64.to_le_bytes());
    v.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
    let p = gguf::parse(&v).unwrap();
    assert_eq!(
        p.meta("junk"),
        Some(&MetaValue::Unread {
            element_type: 0,
            count: n,
            range: start..end
        })
    );
    assert_eq!(
        p.meta("small"),
        Some(&MetaValue::Array(vec![
            MetaValue::U64(1),
            MetaValue::U64(2)
        ]))
    );
    // A parsed file holding an unread array cannot be written back.
    assert!(gguf_bytes(&[], &p.metadata).is_err());
}

#[test]
fn limits_are_limit_errors() {
    let v = gguf_prefix(0, gguf::MAX_METADATA_KEYS + 1);
    let mut v2 = v.clone();
    v2.resize(v.len() + 14 * (gguf::MAX_METADATA_KEYS as usize + 1), 0);
    assert!(matches!(gguf::parse(&v2), Err(FormatError::Limit(_))));
    // safetensors: a non-string metadata value is refused at once, as BadMetadata.
    let hdr = br#"{"__metadata__":{"a":[1,2,3]}}"#;
    let mut b = (hdr.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hdr);
    assert!(
        matches!(safetensors::parse(&b), Err(FormatError::BadMetadata(m)) if m.contains("`a`"))
    );
    let hdr =
        br#"{"t":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#;
    let mut b = (hdr.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hdr);
    b.push(0);
    assert!(
        matches!(safetensors::parse(&b), Err(FormatError::Limit(m)) if m.contains("dimensions"))
    );
}

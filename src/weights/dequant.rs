//! Every stored element type read as f32, and f32 written back into the block formats.
//!
//! One view type: a tensor is read as an [`ndarray::Array2<f32>`] of `rows x cols`, where
//! `rows` is the outermost dimension and `cols` the product of the rest (a 1-D tensor is one
//! row). Reads are streamed: [`rows`] and [`col_block`] decode only the bytes of the rows or
//! columns asked for, so no caller needs a whole model (or even a whole tensor) in f32.
//!
//! The GGML block formats are decoded and encoded by candle's `k_quants` block types (the same
//! code candle's quantized models run on). Their fields are private and they are plain
//! `#[repr(C)]` structs of `f16`/`f32`/integer arrays with no padding (candle asserts their
//! sizes), so raw bytes are copied into a properly aligned `Vec<Block>` before decoding; no
//! unaligned pointer is ever cast.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use half::{bf16, f16};
use ndarray::Array2;

use super::{DType, TensorView};

/// Why a tensor could not be read as (or written from) f32.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DequantError {
    /// A dtype hallmark does not decode (the rarer importance-matrix quants, FP8, BOOL).
    #[error("tensor `{name}`: dtype {dtype} cannot be read as f32")]
    Unsupported {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// Shape, byte length and block size disagree, or a row/column range is out of bounds.
    #[error("tensor `{name}`: {reason}")]
    Layout {
        /// Tensor name.
        name: String,
        /// What does not fit.
        reason: String,
    },
}

/// True if [`rows`] can decode `dtype`.
pub fn supported(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        U8 | I8
            | I16
            | U16
            | I32
            | U32
            | I64
            | U64
            | F16
            | BF16
            | F32
            | F64
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
    )
}

/// `(rows, cols)` of a tensor read as a matrix: the outermost dimension by the rest.
pub fn matrix_shape(shape: &[u64]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n as usize),
        [r, rest @ ..] => (*r as usize, rest.iter().product::<u64>() as usize),
    }
}

fn layout(name: &str, reason: impl Into<String>) -> DequantError {
    DequantError::Layout {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Copy `bytes` (a whole number of blocks) into aligned blocks and decode them into `out`.
fn decode_blocks<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    let n = bytes.len() / size;
    let mut blocks: Vec<B> = (0..n).map(|_| B::zeros()).collect();
    // SAFETY: `B` is one of candle's `#[repr(C)]` block structs made only of f16/f32/integer
    // fields with no padding (candle const-asserts each size), so every byte pattern is a valid
    // `B`; `blocks` owns `n * size` properly aligned bytes and `bytes` holds at least that many.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), blocks.as_mut_ptr().cast::<u8>(), n * size);
    }
    B::to_float(&blocks, &mut out[..n * B::BLCK_SIZE]);
}

/// Quantize `xs` (a whole number of blocks) into raw block bytes.
fn encode_blocks<B: GgmlType>(xs: &[f32]) -> Vec<u8> {
    let n = xs.len() / B::BLCK_SIZE;
    let mut blocks: Vec<B> = (0..n).map(|_| B::zeros()).collect();
    B::from_float(&xs[..n * B::BLCK_SIZE], &mut blocks);
    let size = std::mem::size_of::<B>();
    let mut out = vec![0u8; n * size];
    // SAFETY: as in `decode_blocks`: a padding-free `#[repr(C)]` struct, read as its bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(blocks.as_ptr().cast::<u8>(), out.as_mut_ptr(), n * size);
    }
    out
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

/// Decode `bytes` of `dtype` into `out` (`out.len()` elements; `bytes` exactly that many).
fn decode(name: &str, dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    use DType::*;
    if dtype.bytes_for(out.len() as u64) != Some(bytes.len() as u64) {
        return Err(layout(name, "byte length does not match the element count"));
    }
    macro_rules! plain {
        ($n:literal, $f:expr) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                *o = $f(le::<$n>(c));
            }
        };
    }
    match dtype {
        F32 => plain!(4, f32::from_le_bytes),
        F16 => {
            // The slice conversion uses the CPU's f16 instructions when it has them.
            use half::slice::HalfFloatSliceExt;
            let h: Vec<f16> = bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            h.convert_to_f32_slice(out);
        }
        BF16 => plain!(2, |b| bf16::from_le_bytes(b).to_f32()),
        F64 => plain!(8, |b| f64::from_le_bytes(b) as f32),
        U8 => plain!(1, |b: [u8; 1]| b[0] as f32),
        I8 => plain!(1, |b: [u8; 1]| b[0] as i8 as f32),
        I16 => plain!(2, |b| i16::from_le_bytes(b) as f32),
        U16 => plain!(2, |b| u16::from_le_bytes(b) as f32),
        I32 => plain!(4, |b| i32::from_le_bytes(b) as f32),
        U32 => plain!(4, |b| u32::from_le_bytes(b) as f32),
        I64 => plain!(8, |b| i64::from_le_bytes(b) as f32),
        U64 => plain!(8, |b| u64::from_le_bytes(b) as f32),
        Q4_0 => decode_blocks::<BlockQ4_0>(bytes, out),
        Q4_1 => decode_blocks::<BlockQ4_1>(bytes, out),
        Q5_0 => decode_blocks::<BlockQ5_0>(bytes, out),
        Q5_1 => decode_blocks::<BlockQ5_1>(bytes, out),
        Q8_0 => decode_blocks::<BlockQ8_0>(bytes, out),
        Q8_1 => decode_blocks::<BlockQ8_1>(bytes, out),
        Q2_K => decode_blocks::<BlockQ2K>(bytes, out),
        Q3_K => decode_blocks::<BlockQ3K>(bytes, out),
        Q4_K => decode_blocks::<BlockQ4K>(bytes, out),
        Q5_K => decode_blocks::<BlockQ5K>(bytes, out),
        Q6_K => decode_blocks::<BlockQ6K>(bytes, out),
        Q8_K => decode_blocks::<BlockQ8K>(bytes, out),
        _ => {
            return Err(DequantError::Unsupported {
                name: name.to_string(),
                dtype,
            })
        }
    }
    Ok(())
}

fn check(view: &TensorView<'_>) -> Result<(usize, usize), DequantError> {
    if !supported(view.dtype) {
        return Err(DequantError::Unsupported {
            name: view.name.to_string(),
            dtype: view.dtype,
        });
    }
    let (r, c) = matrix_shape(view.shape);
    let bs = view.dtype.block_size() as usize;
    if c % bs != 0 {
        return Err(layout(
            view.name,
            format!(
                "row length {c} is not a multiple of the {} block size {bs}",
                view.dtype
            ),
        ));
    }
    let need = (r as u64)
        .checked_mul(c as u64)
        .and_then(|e| view.dtype.bytes_for(e));
    if need != Some(view.bytes.len() as u64) {
        return Err(layout(
            view.name,
            "byte length does not match shape x dtype",
        ));
    }
    Ok((r, c))
}

/// Rows `range` of a tensor as f32 (`range.len() x cols`). Decodes only those rows' bytes.
pub fn rows(
    view: &TensorView<'_>,
    range: std::ops::Range<usize>,
) -> Result<Array2<f32>, DequantError> {
    let (r, c) = check(view)?;
    if range.start > range.end || range.end > r {
        return Err(layout(view.name, format!("rows {range:?} out of 0..{r}")));
    }
    let row_bytes = (c as u64 / view.dtype.block_size() * view.dtype.block_bytes()) as usize;
    let bytes = &view.bytes[range.start * row_bytes..range.end * row_bytes];
    let mut out = vec![0f32; range.len() * c];
    decode(view.name, view.dtype, bytes, &mut out)?;
    Array2::from_shape_vec((range.len(), c), out).map_err(|e| layout(view.name, e.to_string()))
}

/// A whole tensor as f32 (`rows x cols`, see [`matrix_shape`]).
pub fn matrix(view: &TensorView<'_>) -> Result<Array2<f32>, DequantError> {
    let (r, _) = check(view)?;
    rows(view, 0..r)
}

/// Columns `range` of every row as f32 (`rows x range.len()`). Decodes only the storage blocks
/// that cover those columns, so a narrow column block of a quantized matrix is cheap.
pub fn col_block(
    view: &TensorView<'_>,
    range: std::ops::Range<usize>,
) -> Result<Array2<f32>, DequantError> {
    let (r, c) = check(view)?;
    if range.start > range.end || range.end > c {
        return Err(layout(
            view.name,
            format!("columns {range:?} out of 0..{c}"),
        ));
    }
    let bs = view.dtype.block_size() as usize;
    let bb = view.dtype.block_bytes() as usize;
    let row_bytes = c / bs * bb;
    let b0 = range.start / bs;
    let b1 = range.end.div_ceil(bs);
    let span = (b1 - b0) * bs;
    // Gather the covering blocks of every row into one buffer and decode them in one call.
    let mut gathered = Vec::with_capacity(r * (b1 - b0) * bb);
    for i in 0..r {
        let start = i * row_bytes + b0 * bb;
        gathered.extend_from_slice(&view.bytes[start..start + (b1 - b0) * bb]);
    }
    let mut buf = vec![0f32; r * span];
    decode(view.name, view.dtype, &gathered, &mut buf)?;
    let off = range.start - b0 * bs;
    let mut out = Array2::<f32>::zeros((r, range.len()));
    for (i, mut row) in out.rows_mut().into_iter().enumerate() {
        let base = i * span + off;
        row.assign(&ndarray::ArrayView1::from(&buf[base..base + range.len()]));
    }
    Ok(out)
}

/// Encode f32 values as `dtype` (float types, I8 by plain rounding, and the GGML block types).
///
/// `xs.len()` must be a multiple of the block size; integer types other than I8/U8 are refused.
pub fn encode(name: &str, dtype: DType, xs: &[f32]) -> Result<Vec<u8>, DequantError> {
    use DType::*;
    let bs = dtype.block_size() as usize;
    if !xs.len().is_multiple_of(bs) {
        return Err(layout(
            name,
            format!("{} values are not whole {dtype} blocks", xs.len()),
        ));
    }
    Ok(match dtype {
        F32 => xs.iter().flat_map(|v| v.to_le_bytes()).collect(),
        F16 => xs
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        BF16 => xs
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        F64 => xs.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
        I8 => xs
            .iter()
            .map(|v| v.round().clamp(-128.0, 127.0) as i8 as u8)
            .collect(),
        U8 => xs
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
        Q4_0 => encode_blocks::<BlockQ4_0>(xs),
        Q4_1 => encode_blocks::<BlockQ4_1>(xs),
        Q5_0 => encode_blocks::<BlockQ5_0>(xs),
        Q5_1 => encode_blocks::<BlockQ5_1>(xs),
        Q8_0 => encode_blocks::<BlockQ8_0>(xs),
        Q2_K => encode_blocks::<BlockQ2K>(xs),
        Q3_K => encode_blocks::<BlockQ3K>(xs),
        Q4_K => encode_blocks::<BlockQ4K>(xs),
        Q5_K => encode_blocks::<BlockQ5K>(xs),
        Q6_K => encode_blocks::<BlockQ6K>(xs),
        _ => {
            return Err(DequantError::Unsupported {
                name: name.to_string(),
                dtype,
            })
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view<'a>(dtype: DType, shape: &'a [u64], bytes: &'a [u8]) -> TensorView<'a> {
        TensorView {
            name: "t",
            dtype,
            shape,
            bytes,
        }
    }

    fn signal(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32 * 0.1))
            .collect()
    }

    #[test]
    fn round_trips_within_each_formats_error() {
        let shape = [4u64, 512];
        let xs = signal(2048);
        let max = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (dt, tol) in [
            (DType::F32, 0.0),
            (DType::F64, 1e-7),
            (DType::F16, 1e-3),
            (DType::BF16, 1e-2),
            (DType::Q8_0, 1e-2),
            (DType::Q6_K, 4e-2),
            (DType::Q5_0, 8e-2),
            (DType::Q5_1, 5e-2),
            (DType::Q5_K, 5e-2),
            (DType::Q4_0, 0.15),
            (DType::Q4_1, 0.1),
            (DType::Q4_K, 0.1),
            (DType::Q3_K, 0.3),
            (DType::Q2_K, 0.4),
        ] {
            let bytes = encode("t", dt, &xs).unwrap();
            let m = matrix(&view(dt, &shape, &bytes)).unwrap();
            assert_eq!(m.dim(), (4, 512));
            let err = m
                .iter()
                .zip(&xs)
                .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err <= tol * max, "{dt}: max error {err}");
        }
    }

    #[test]
    fn row_and_column_blocks_agree_with_the_whole() {
        let shape = [6u64, 512];
        let xs = signal(6 * 512);
        for dt in [DType::F16, DType::Q4_0, DType::Q4_K, DType::Q8_0] {
            let bytes = encode("t", dt, &xs).unwrap();
            let v = view(dt, &shape, &bytes);
            let all = matrix(&v).unwrap();
            let r = rows(&v, 2..5).unwrap();
            assert_eq!(r, all.slice(ndarray::s![2..5, ..]));
            let c = col_block(&v, 100..300).unwrap();
            assert_eq!(c, all.slice(ndarray::s![.., 100..300]));
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes, dtype and shape: a value or an error, never a panic.
        #[test]
        fn hostile_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            id in 0u32..40,
            r in 0u64..5,
            c in 0u64..300,
            a in 0usize..300,
            b in 0usize..300,
        ) {
            let dtype = DType::from_ggml(id).unwrap_or(DType::F32);
            let shape = [r, c];
            let v = view(dtype, &shape, &bytes);
            let _ = matrix(&v);
            let _ = rows(&v, a.min(b)..a.max(b));
            let _ = col_block(&v, a.min(b)..a.max(b));
            let _ = encode("t", dtype, &vec![0.5f32; a]);
        }
    }

    #[test]
    fn integers_read_as_their_values() {
        let b = [0x80u8, 0x7f, 0x01];
        let m = matrix(&view(DType::I8, &[3], &b)).unwrap();
        assert_eq!(m.as_slice().unwrap(), &[-128.0, 127.0, 1.0]);
        let m = matrix(&view(DType::U8, &[3], &b)).unwrap();
        assert_eq!(m.as_slice().unwrap(), &[128.0, 127.0, 1.0]);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let b = [0u8; 18];
        // 32 elements of Q4_0 in a row of 16 is not a whole block per row.
        assert!(matches!(
            matrix(&view(DType::Q4_0, &[2, 16], &b)),
            Err(DequantError::Layout { .. })
        ));
        assert!(matches!(
            matrix(&view(DType::F32, &[5], &b)),
            Err(DequantError::Layout { .. })
        ));
        assert!(matches!(
            matrix(&view(DType::IQ4_NL, &[32], &b)),
            Err(DequantError::Unsupported { .. })
        ));
        assert!(rows(&view(DType::Q4_0, &[1, 32], &b), 0..2).is_err());
    }
}

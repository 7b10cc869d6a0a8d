//! The mark's bridge to tensor storage: stored bytes <-> f32 values, through
//! [`crate::weights::dequant`] (no second dequantizer), and the scale fields of GGML block types
//! that carry the mark in quantized tensors.

use super::MarkError;
use crate::weights::dequant::{self, DequantError};
use crate::weights::{DType, TensorView};

/// Why a tensor cannot be converted.
pub type CodecError = DequantError;

/// True if the mark can read and rewrite `dtype`: floats and the GGML block types.
pub fn supported(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        F16 | BF16 | F32 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    )
}

/// True if the detector can read `dtype` (every dtype the dequantizer reads, integer exports
/// included: the statistic is scale-free).
pub fn readable(dtype: DType) -> bool {
    dequant::supported(dtype)
}

/// Decode `elements` values of `dtype` stored in `bytes`.
pub fn to_f32(
    name: &str,
    dtype: DType,
    elements: usize,
    bytes: &[u8],
) -> Result<Vec<f32>, CodecError> {
    let shape = [elements as u64];
    let view = TensorView {
        name,
        dtype,
        shape: &shape,
        bytes,
    };
    Ok(dequant::matrix(&view)?.into_raw_vec_and_offset().0)
}

/// Encode `values` as `dtype` (round to nearest for floats, candle's quantizer for blocks).
pub fn from_f32(name: &str, dtype: DType, values: &[f32]) -> Result<Vec<u8>, CodecError> {
    dequant::encode(name, dtype, values)
}

/// Byte offsets of the f16 scale fields inside one block of a GGML block type.
pub(super) fn scale_fields(d: DType) -> Option<&'static [usize]> {
    Some(match d {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => return None,
    })
}

pub(super) fn get_f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

pub(super) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

#[allow(clippy::needless_range_loop)]
/// Per-block least-squares steps of the scale fields that best carry `delta` (amplitude 1).
/// Returns the steps, one `Vec` per field, and the squared norm of the change they make.
pub(super) fn scale_steps(
    dtype: DType,
    bytes: &[u8],
    delta: &[f32],
    name: &str,
) -> Result<(Vec<Vec<f64>>, f64), MarkError> {
    let fields = scale_fields(dtype).ok_or_else(|| CodecError::Unsupported {
        name: name.into(),
        dtype,
    })?;
    let bb = dtype.block_bytes() as usize;
    let bs = dtype.block_size() as usize;
    let nb = bytes.len() / bb;
    // The dequantized values are linear in each scale field: get each field's basis by setting
    // it to 1 and the others to 0.
    let mut basis = Vec::new();
    for (fi, _) in fields.iter().enumerate() {
        let mut patched = bytes.to_vec();
        for b in 0..nb {
            for (fj, &off) in fields.iter().enumerate() {
                put_f16(
                    &mut patched[b * bb..],
                    off,
                    if fi == fj { 1.0 } else { 0.0 },
                );
            }
        }
        basis.push(to_f32(name, dtype, nb * bs, &patched)?);
    }
    let mut steps = vec![vec![0f64; nb]; fields.len()];
    let mut energy = 0.0;
    for b in 0..nb {
        let r = b * bs..(b + 1) * bs;
        let dl = &delta[r.clone()];
        let dot = |x: &[f32], y: &[f32]| -> f64 {
            x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        if fields.len() == 1 {
            let b0 = &basis[0][r];
            let g = dot(b0, b0);
            if g > 0.0 {
                let x = dot(b0, dl) / g;
                steps[0][b] = x;
                energy += x * x * g;
            }
        } else {
            let (b0, b1) = (&basis[0][r.clone()], &basis[1][r]);
            let (g00, g01, g11) = (dot(b0, b0), dot(b0, b1), dot(b1, b1));
            let (y0, y1) = (dot(b0, dl), dot(b1, dl));
            let det = g00 * g11 - g01 * g01;
            // Nearly collinear directions (a block of near-equal integers) would need large,
            // cancelling steps that f16 rounding cannot cancel: fit the first direction only.
            let (x0, x1) = if det > 0.01 * g00 * g11 && det > 0.0 {
                ((g11 * y0 - g01 * y1) / det, (g00 * y1 - g01 * y0) / det)
            } else if g00 > 0.0 {
                (y0 / g00, 0.0)
            } else {
                (0.0, 0.0)
            };
            steps[0][b] = x0;
            steps[1][b] = x1;
            energy += x0 * x0 * g00 + 2.0 * x0 * x1 * g01 + x1 * x1 * g11;
        }
    }
    Ok((steps, energy))
}

//! The mark's bridge to tensor storage: stored bytes <-> f32 values, through
//! [`crate::weights::dequant`] (no second dequantizer).

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

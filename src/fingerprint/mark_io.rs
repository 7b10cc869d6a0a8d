//! The mark's bridge to tensor storage: stored bytes <-> f32 values.
//!
//! This is a thin adapter, not a second dequantizer: plain floats go through `half`, GGML block
//! types through candle's `k_quants` (the same code candle's GGUF loader runs). It is the one
//! place to switch when `weights::dequant` lands.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::weights::DType;

/// Why a tensor cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The dtype has no f32 view here.
    #[error("dtype {0} is not supported")]
    Unsupported(DType),
    /// The bytes do not match shape x dtype.
    #[error("{0} bytes do not match the tensor's shape and dtype")]
    Size(usize),
    /// candle refused the data.
    #[error("quantized codec: {0}")]
    Candle(String),
}

fn ggml(dtype: DType) -> Option<GgmlDType> {
    Some(match dtype {
        DType::F32 => GgmlDType::F32,
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        DType::Q4_0 => GgmlDType::Q4_0,
        DType::Q4_1 => GgmlDType::Q4_1,
        DType::Q5_0 => GgmlDType::Q5_0,
        DType::Q5_1 => GgmlDType::Q5_1,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q2_K => GgmlDType::Q2K,
        DType::Q3_K => GgmlDType::Q3K,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q5_K => GgmlDType::Q5K,
        DType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// True if [`to_f32`] and [`from_f32`] handle `dtype`.
pub fn supported(dtype: DType) -> bool {
    ggml(dtype).is_some()
}

fn candle_err(e: candle_core::Error) -> CodecError {
    CodecError::Candle(e.to_string())
}

/// Decode `elements` values of `dtype` stored in `bytes`.
pub fn to_f32(dtype: DType, elements: usize, bytes: &[u8]) -> Result<Vec<f32>, CodecError> {
    if dtype.bytes_for(elements as u64) != Some(bytes.len() as u64) {
        return Err(CodecError::Size(bytes.len()));
    }
    match dtype {
        DType::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        DType::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        DType::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        _ => {
            let g = ggml(dtype).ok_or(CodecError::Unsupported(dtype))?;
            // candle reinterprets the slice as blocks: hand it an 8-byte aligned copy.
            let mut buf = vec![0u8; bytes.len() + 8];
            let off = (8 - buf.as_ptr() as usize % 8) % 8;
            let aligned = &mut buf[off..off + bytes.len()];
            aligned.copy_from_slice(bytes);
            let q =
                qtensor_from_ggml(g, aligned, vec![elements], &Device::Cpu).map_err(candle_err)?;
            q.dequantize(&Device::Cpu)
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(candle_err)
        }
    }
}

/// Encode `values` as `dtype` (round to nearest for floats, candle's quantizer for blocks).
pub fn from_f32(dtype: DType, values: &[f32]) -> Result<Vec<u8>, CodecError> {
    match dtype {
        DType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::F16 => Ok(values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect()),
        DType::BF16 => Ok(values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect()),
        _ => {
            let g = ggml(dtype).ok_or(CodecError::Unsupported(dtype))?;
            if values.len() as u64 % dtype.block_size() != 0 {
                return Err(CodecError::Size(values.len()));
            }
            let t = Tensor::from_slice(values, values.len(), &Device::Cpu).map_err(candle_err)?;
            let q = QTensor::quantize(&t, g).map_err(candle_err)?;
            Ok(q.data().map_err(candle_err)?.into_owned())
        }
    }
}

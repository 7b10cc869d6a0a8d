//! candle-transformers' quantized llama, kept as the reference the runner is checked against
//! (same logits) and as the baseline of the speed comparison.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use super::GenerateError;

/// candle-transformers' `ModelWeights` for one sequence.
pub struct ReferenceModel {
    inner: ModelWeights,
    pos: usize,
}

fn err(path: &Path, e: candle_core::Error) -> GenerateError {
    GenerateError::BadModel {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl ReferenceModel {
    /// Load with `ModelWeights::from_gguf` on the CPU.
    pub fn load(path: &Path) -> Result<Self, GenerateError> {
        let (mut file, _) =
            crate::input::open_regular(path, crate::input::Follow::Yes).map_err(|source| {
                GenerateError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let ct = gguf_file::Content::read(&mut file).map_err(|e| err(path, e))?;
        let inner =
            ModelWeights::from_gguf(ct, &mut file, &Device::Cpu).map_err(|e| err(path, e))?;
        Ok(Self { inner, pos: 0 })
    }

    /// Drop the KV cache and start a new sequence.
    pub fn reset(&mut self) {
        self.inner.clear_kv_cache();
        self.pos = 0;
    }

    /// Feed `tokens` after what was fed before; returns the last position's logits.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        let e = |e: candle_core::Error| GenerateError::BadModel {
            path: Default::default(),
            msg: e.to_string(),
        };
        let x = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(e)?;
        let logits = self.inner.forward(&x, self.pos).map_err(e)?;
        self.pos += tokens.len();
        logits
            .squeeze(0)
            .and_then(|l| l.to_dtype(candle_core::DType::F32))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(e)
    }
}

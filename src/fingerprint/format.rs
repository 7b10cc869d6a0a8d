//! The `.fp` file: versioned, self-describing JSON; arrays are little-endian f16, base64.

use base64::Engine;
use half::f16;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::FingerprintError;

/// The `format` field of every fingerprint file.
pub const FORMAT: &str = "hallmark-fingerprint";
/// The version this build writes. Version 3 adds the symmetry-invariant sketches
/// ([`InvariantSketch`]); version 2 files are still read (their identity tests run, the
/// symmetry-invariant line is reported as unavailable). Version 1 files (no FFN-neuron samples;
/// their test had no valid null for trained models) are refused with a request to re-fingerprint.
pub const VERSION: u64 = 3;
/// Most probes, FFN samples, sketches or file names a fingerprint file may list.
pub const MAX_LIST: usize = 1 << 16;
/// Most token rows a fingerprint file may list.
pub const MAX_ROWS: usize = 1 << 20;
/// The oldest version this build reads.
pub const MIN_VERSION: u64 = 2;

/// A model fingerprint: sampled token rows of the embedding and per-matrix sub-Grams.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u64,
    /// The registered model's name.
    pub name: String,
    /// What was fingerprinted (for the record; never used to match).
    pub source: Source,
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden (residual) size.
    pub hidden: usize,
    /// Sampled token rows of the embedding.
    pub embedding: EmbeddingSample,
    /// Hidden units `[0, probe_units)` whose sub-Grams the probes hold.
    pub probe_units: usize,
    /// One probe per (matrix, hidden-sized axis).
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_LIST>")]
    pub probes: Vec<Probe>,
    /// FFN-neuron samples of the registered model's feed-forward matrices.
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_LIST>")]
    pub ffn: Vec<NeuronSample>,
    /// Symmetry-invariant sketches of every matrix (version 3; absent in version 2 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invariant: Option<InvariantSketch>,
}

/// The symmetry-invariant second line of evidence: for every matrix `W` and each of its
/// residual-sized axes, the form `X WᵀW Xᵀ` on a few token rows `X` of the embedding, minus its
/// isotropic part (`tr(WᵀW)/H · X Xᵀ`), strict upper triangle. Any orthogonal map of the
/// residual stream (permutation, sign flips, rotation) cancels between `X` and `W`, and any
/// orthogonal map of the other axis (feed-forward neuron or head permutation, rotation within
/// a head) cancels inside `WᵀW`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvariantSketch {
    /// Token ids of the rows `X` (a subset of the embedding sample's rows).
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_ROWS>")]
    pub tokens: Vec<usize>,
    /// One sketch per (matrix, residual-sized axis).
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_LIST>")]
    pub sketches: Vec<Sketch>,
}

/// One matrix axis's invariant form (see [`InvariantSketch`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sketch {
    /// Tensor name (for reports).
    pub tensor: String,
    /// Stored shape `(rows, cols)`.
    pub shape: [usize; 2],
    /// The residual-sized axis (0 = rows, 1 = columns).
    pub axis: usize,
    /// The form as stored, `t(t-1)/2` values (t tokens), scaled to unit RMS, f16, base64.
    pub plain: String,
    /// The same form with the RMSNorm gain that feeds this matrix folded into it (as SliceGPT
    /// and QuaRot do before rotating), when the registered model has such a gain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<String>,
}
/// The first few neurons of one feed-forward matrix, read on hidden units `[0, probe_units)`.
/// Neurons of a feed-forward layer are exchangeable under training, so their labels in an
/// independently trained suspect are uniformly random: the identity test's null.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NeuronSample {
    /// Tensor name (for reports; the registered side is the publisher's own model).
    pub tensor: String,
    /// Stored shape `(rows, cols)`.
    pub shape: [usize; 2],
    /// The hidden-sized axis (0 = rows, 1 = columns); the other axis indexes neurons.
    pub axis: usize,
    /// Neurons `[0, neurons)` sampled.
    pub neurons: usize,
    /// The values were divided by this before rounding to f16.
    pub scale: f64,
    /// `neurons x probe_units` values, f16 little-endian, base64.
    pub values: String,
}

/// Provenance of a fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    /// Weight file names.
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_LIST>")]
    pub files: Vec<String>,
    /// `safetensors` / `gguf`.
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_LIST>")]
    pub formats: Vec<String>,
    /// Stored elements over all tensors.
    pub parameters: u64,
    /// The hallmark version that wrote the file.
    pub generator: String,
}

/// Token rows of the embedding, scaled by `scale` and stored as f16.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingSample {
    /// The tensor they came from (for reports).
    pub tensor: String,
    /// True if it was stored `hidden x vocab`.
    pub transposed: bool,
    /// Token ids of the rows, increasing.
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_ROWS>")]
    pub rows: Vec<usize>,
    /// The values were divided by this before rounding to f16.
    pub scale: f64,
    /// `rows.len() x hidden` values, f16 little-endian, base64.
    pub values: String,
}

/// The Gram matrix of hidden units `[0, u)` along one axis of one matrix, summed over the
/// other axis (so it does not depend on how that axis is ordered), divided by its mean diagonal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    /// Tensor name (for reports).
    pub tensor: String,
    /// Stored shape `(rows, cols)`.
    pub shape: [usize; 2],
    /// The hidden-sized axis the units index (0 = rows, 1 = columns).
    pub axis: usize,
    /// Upper triangle (with diagonal) row by row, f16 little-endian, base64.
    pub gram: String,
}

/// f32 values to base64 f16.
pub fn pack(xs: impl IntoIterator<Item = f32>) -> String {
    let bytes: Vec<u8> = xs
        .into_iter()
        .flat_map(|v| f16::from_f32(v).to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// base64 f16 back to f32, checking the count.
pub fn unpack(s: &str, n: usize, what: &str) -> Result<Vec<f32>, FingerprintError> {
    let bad = |r: String| FingerprintError::BadFingerprint(format!("{what}: {r}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() != 2 * n {
        return Err(bad(format!("{} bytes, expected {}", bytes.len(), 2 * n)));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad("non-finite value".into()));
    }
    Ok(v)
}

/// One registered matrix's invariant sketch: `(plain, folded)`, the folded one only for
/// matrices that RMSNorm gains feed.
pub type SketchPair = (Vec<f32>, Option<Vec<f32>>);

impl Fingerprint {
    /// Serialize to JSON bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, FingerprintError> {
        serde_json::to_vec(self).map_err(|e| FingerprintError::BadFingerprint(e.to_string()))
    }

    /// Parse and validate a fingerprint file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FingerprintError> {
        let fp: Fingerprint = serde_json::from_slice(bytes)
            .map_err(|e| FingerprintError::BadFingerprint(e.to_string()))?;
        if fp.format != FORMAT {
            return Err(FingerprintError::BadFingerprint(format!(
                "`format` is `{}`, expected `{FORMAT}`",
                fp.format
            )));
        }
        if !(MIN_VERSION..=VERSION).contains(&fp.version) {
            return Err(FingerprintError::BadFingerprint(format!(
                "version {} is not supported (this build reads {MIN_VERSION} to {VERSION}; run \
                 `hallmark fingerprint` again on the registered model)",
                fp.version
            )));
        }
        let e = &fp.embedding;
        if fp.hidden == 0
            || e.rows.is_empty()
            || e.rows.windows(2).any(|w| w[0] >= w[1])
            || e.rows.last().is_some_and(|&r| r >= fp.vocab)
            || fp.probe_units > fp.hidden
            || !(e.scale.is_finite() && e.scale > 0.0)
            || fp
                .probes
                .iter()
                .any(|p| p.axis > 1 || p.shape[p.axis] != fp.hidden)
            || fp.ffn.iter().any(|n| {
                n.axis > 1
                    || n.shape[n.axis] != fp.hidden
                    || n.neurons == 0
                    || n.neurons > n.shape[1 - n.axis]
                    || !(n.scale.is_finite() && n.scale > 0.0)
            })
        {
            return Err(FingerprintError::BadFingerprint(
                "inconsistent sizes".into(),
            ));
        }
        if let Some(inv) = &fp.invariant {
            if inv.tokens.len() < 2
                || inv.tokens.len() > super::invariant::MAX_SKETCH_TOKENS
                || inv.tokens.iter().any(|t| e.rows.binary_search(t).is_err())
                || inv
                    .sketches
                    .iter()
                    .any(|k| k.axis > 1 || k.shape[k.axis] != fp.hidden)
            {
                return Err(FingerprintError::BadFingerprint(
                    "inconsistent invariant sketch".into(),
                ));
            }
        }
        // Every array decodes to its stated size now, so a damaged file (truncated base64,
        // wrong counts) is refused when it is read, never in the middle of a comparison.
        fp.embedding_rows()?;
        for i in 0..fp.ffn.len() {
            fp.neuron_block(i)?;
        }
        for i in 0..fp.probes.len() {
            fp.probe_gram(i)?;
        }
        fp.sketches()?;
        Ok(fp)
    }

    /// The sampled embedding rows, `rows x hidden`, in the model's own scale.
    pub fn embedding_rows(&self) -> Result<Array2<f32>, FingerprintError> {
        let n = self.embedding.rows.len();
        let count = n
            .checked_mul(self.hidden)
            .ok_or_else(|| FingerprintError::BadFingerprint("embedding size overflows".into()))?;
        let v = unpack(&self.embedding.values, count, "embedding")?;
        let s = self.embedding.scale as f32;
        Array2::from_shape_vec((n, self.hidden), v.into_iter().map(|x| x * s).collect())
            .map_err(|e| FingerprintError::BadFingerprint(e.to_string()))
    }

    /// FFN sample `i`: `neurons x probe_units`, in the model's own scale.
    pub fn neuron_block(&self, i: usize) -> Result<Array2<f32>, FingerprintError> {
        let n = self
            .ffn
            .get(i)
            .ok_or(FingerprintError::Internal("ffn sample index"))?;
        let count = n
            .neurons
            .checked_mul(self.probe_units)
            .ok_or_else(|| FingerprintError::BadFingerprint("ffn sample size overflows".into()))?;
        let v = unpack(&n.values, count, "ffn sample")?;
        let s = n.scale as f32;
        Array2::from_shape_vec(
            (n.neurons, self.probe_units),
            v.into_iter().map(|x| x * s).collect(),
        )
        .map_err(|e| FingerprintError::BadFingerprint(e.to_string()))
    }

    /// The invariant sketches as `(plain, folded)` vectors of `t(t-1)/2` values each; empty for
    /// a version 2 file.
    pub fn sketches(&self) -> Result<Vec<SketchPair>, FingerprintError> {
        let Some(inv) = &self.invariant else {
            return Ok(Vec::new());
        };
        let t = inv.tokens.len();
        let n = t * (t - 1) / 2;
        inv.sketches
            .iter()
            .map(|k| {
                let plain = unpack(&k.plain, n, "invariant sketch")?;
                let folded = match &k.folded {
                    Some(f) => Some(unpack(f, n, "invariant sketch")?),
                    None => None,
                };
                Ok((plain, folded))
            })
            .collect()
    }

    /// Probe `i`'s Gram matrix (`probe_units` square, symmetric).
    pub fn probe_gram(&self, i: usize) -> Result<Array2<f32>, FingerprintError> {
        let u = self.probe_units;
        let p = self
            .probes
            .get(i)
            .ok_or(FingerprintError::Internal("probe index"))?;
        let count = u
            .checked_add(1)
            .and_then(|v| u.checked_mul(v))
            .ok_or_else(|| FingerprintError::BadFingerprint("probe size overflows".into()))?
            / 2;
        let tri = unpack(&p.gram, count, "probe")?;
        let mut g = Array2::<f32>::zeros((u, u));
        let mut k = 0;
        for a in 0..u {
            for b in a..u {
                g[[a, b]] = tri[k];
                g[[b, a]] = tri[k];
                k += 1;
            }
        }
        Ok(g)
    }
}

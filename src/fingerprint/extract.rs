//! Fingerprint extraction: reads only the sampled embedding rows and, per matrix, the first
//! `PROBE_UNITS` hidden units along each hidden-sized axis; matrices are read in parallel.

use std::path::Path;

use ndarray::{Array2, Axis};
use rayon::prelude::*;

use super::format::{self, EmbeddingSample, Fingerprint, NeuronSample, Probe, Source};
use super::model::Model;
use super::FingerprintError;
use crate::weights::dequant;

/// Token rows sampled from the embedding (fewer if the vocabulary is smaller).
pub const SAMPLE_ROWS: usize = 256;
/// Hidden units covered by each probe's sub-Gram (and by each FFN-neuron sample).
pub const PROBE_UNITS: usize = 32;
/// Neurons sampled from each feed-forward matrix.
pub const FFN_NEURONS: usize = 64;

/// Name fragments of feed-forward matrices (HF llama/BERT/GPT-2/Mistral, GGUF). Only the
/// registered side (the publisher's own model) is read by name; a suspect never is.
const FFN_NAMES: [&str; 7] = [
    "mlp",
    "ffn",
    "feed_forward",
    "intermediate",
    "fc1",
    "fc2",
    "c_fc",
];

/// The hidden axis of a registered feed-forward matrix named `name` of shape `(r, c)`, or
/// `None` when it is not one: its name says feed-forward (BERT's `output.dense` outside
/// attention included) and exactly one axis has the hidden size.
pub fn ffn_axis(name: &str, (r, c): (usize, usize), hidden: usize) -> Option<usize> {
    let n = name.to_ascii_lowercase();
    let named = FFN_NAMES.iter().any(|f| n.contains(f))
        || (n.contains("output.dense") && !n.contains("attention"));
    if !named || n.contains("attn") || n.contains("attention") || n.contains("norm") {
        return None;
    }
    match (r == hidden, c == hidden) {
        (true, false) => Some(0),
        (false, true) => Some(1),
        _ => None,
    }
}

/// Neurons `0..n` of a feed-forward matrix read on hidden units `units` (contiguous from 0):
/// `n x units.len()`.
pub(crate) fn neuron_rows(
    model: &Model,
    i: usize,
    hidden_axis: usize,
    n: usize,
    u: usize,
) -> Result<Array2<f32>, FingerprintError> {
    let v = model
        .view(i)
        .ok_or(FingerprintError::Internal("matrix view"))?;
    Ok(if hidden_axis == 1 {
        dequant::rows(&v, 0..n)?
            .slice(ndarray::s![.., ..u])
            .to_owned()
    } else {
        dequant::col_block(&v, 0..n)?
            .slice(ndarray::s![..u, ..])
            .t()
            .to_owned()
    })
}

/// `m` token ids spread evenly over `0..vocab` (the midpoints of `m` equal slices).
pub fn sample_rows(vocab: usize, m: usize) -> Vec<usize> {
    let m = m.min(vocab);
    let mut v: Vec<usize> = (0..m).map(|k| (2 * k + 1) * vocab / (2 * m)).collect();
    v.dedup();
    v
}

/// Hidden units `units` along `axis` of matrix `i`, with `signs` applied: one unit per column,
/// `(other axis) x units.len()`.
pub(crate) fn unit_columns(
    model: &Model,
    i: usize,
    axis: usize,
    units: &[usize],
    signs: &[f32],
) -> Result<Array2<f32>, FingerprintError> {
    let v = model
        .view(i)
        .ok_or(FingerprintError::Internal("matrix view"))?;
    let contiguous = units.iter().enumerate().all(|(k, &u)| u == units[0] + k);
    // `x` holds one unit per column: (other axis) x units.
    let x: Array2<f32> = if axis == 1 {
        if contiguous && !units.is_empty() {
            dequant::col_block(&v, units[0]..units[0] + units.len())?
        } else {
            // Scattered units: stream blocks of rows rather than decoding the whole matrix.
            let (r, _) = dequant::matrix_shape(v.shape);
            let mut x = Array2::<f32>::zeros((r, units.len()));
            for start in (0..r).step_by(256) {
                let end = (start + 256).min(r);
                let block = dequant::rows(&v, start..end)?;
                x.slice_mut(ndarray::s![start..end, ..])
                    .assign(&block.select(Axis(1), units));
            }
            x
        }
    } else {
        let mut rows = Array2::<f32>::zeros((units.len(), dequant::matrix_shape(v.shape).1));
        if contiguous && !units.is_empty() {
            rows = dequant::rows(&v, units[0]..units[0] + units.len())?;
        } else {
            for (k, &u) in units.iter().enumerate() {
                rows.row_mut(k).assign(&dequant::rows(&v, u..u + 1)?.row(0));
            }
        }
        rows.reversed_axes()
    };
    let mut x = x;
    for (mut c, s) in x.columns_mut().into_iter().zip(signs) {
        c *= *s;
    }
    Ok(x)
}

/// The Gram matrix of the columns of `x` (summed over its rows, so it does not depend on how
/// they are ordered), divided by its mean diagonal.
pub(crate) fn gram(x: &Array2<f32>) -> Array2<f32> {
    let mut g = x.t().dot(x);
    let d = g.diag().mean().unwrap_or(0.0);
    if d > 0.0 && d.is_finite() {
        g /= d;
    }
    g
}

/// Fingerprint the model at `path` (a weight file or a directory of them).
pub fn extract(path: &Path, name: &str) -> Result<Fingerprint, FingerprintError> {
    let model = Model::open(path)?;
    let all_emb = model.embeddings(usize::MAX);
    let emb = all_emb
        .first()
        .cloned()
        .ok_or(FingerprintError::NoEmbedding)?;
    let rows = sample_rows(emb.vocab, SAMPLE_ROWS);
    let h = emb.hidden;
    let u = PROBE_UNITS.min(h);
    let units: Vec<usize> = (0..u).collect();
    let ones = vec![1.0f32; u];

    let mut jobs = Vec::new();
    for i in 0..model.len() {
        if all_emb.iter().any(|e| e.matrix == i) {
            continue;
        }
        let (r, c) = model.shape(i);
        for (axis, n) in [(0, r), (1, c)] {
            if n == h {
                jobs.push((i, axis));
            }
        }
    }
    let ffn_jobs: Vec<(usize, usize)> = (0..model.len())
        .filter(|i| !all_emb.iter().any(|e| e.matrix == *i))
        .filter_map(|i| {
            let name = model.view(i)?.name.to_string();
            ffn_axis(&name, model.shape(i), h).map(|a| (i, a))
        })
        .collect();
    let ffn = ffn_jobs
        .par_iter()
        .map(|&(i, axis)| {
            let (r, c) = model.shape(i);
            let n = FFN_NEURONS.min(if axis == 0 { c } else { r });
            let x = neuron_rows(&model, i, axis, n, u)?;
            let scale = rms(x.iter());
            let v = model
                .view(i)
                .ok_or(FingerprintError::Internal("matrix view"))?;
            Ok(NeuronSample {
                tensor: v.name.to_string(),
                shape: [r, c],
                axis,
                neurons: n,
                scale,
                values: format::pack(x.iter().map(|v| (*v as f64 / scale) as f32)),
            })
        })
        .collect::<Result<Vec<_>, FingerprintError>>()?;
    let (z, probes) = rayon::join(
        || model.embedding_rows(&emb, &rows),
        || {
            jobs.par_iter()
                .map(|&(i, axis)| {
                    let g = gram(&unit_columns(&model, i, axis, &units, &ones)?);
                    let tri = (0..u).flat_map(|a| (a..u).map(move |b| (a, b)));
                    let v = model
                        .view(i)
                        .ok_or(FingerprintError::Internal("matrix view"))?;
                    let (r, c) = model.shape(i);
                    Ok(Probe {
                        tensor: v.name.to_string(),
                        shape: [r, c],
                        axis,
                        gram: format::pack(tri.map(|(a, b)| g[[a, b]])),
                    })
                })
                .collect::<Result<Vec<_>, FingerprintError>>()
        },
    );
    let z = z?;
    let probes = probes?;
    let excluded: Vec<usize> = all_emb.iter().map(|e| e.matrix).collect();
    let invariant = super::invariant::extract_sketches(&model, &emb, &excluded, &rows)?;
    for f in model.files() {
        f.map().ensure_unchanged()?;
    }
    let scale = rms(z.iter());
    let ev = model
        .view(emb.matrix)
        .ok_or(FingerprintError::Internal("embedding view"))?;
    Ok(Fingerprint {
        format: format::FORMAT.into(),
        version: format::VERSION,
        name: name.to_string(),
        source: Source {
            files: model
                .files()
                .iter()
                .map(|f| {
                    f.path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect(),
            formats: model
                .formats()
                .iter()
                .map(|f| format!("{f:?}").to_lowercase())
                .collect(),
            parameters: model.parameters(),
            generator: concat!("hallmark ", env!("CARGO_PKG_VERSION")).into(),
        },
        vocab: emb.vocab,
        hidden: h,
        embedding: EmbeddingSample {
            tensor: ev.name.to_string(),
            transposed: emb.transposed,
            rows,
            scale,
            values: format::pack(z.iter().map(|v| (*v as f64 / scale) as f32)),
        },
        probe_units: u,
        probes,
        ffn,
        invariant: Some(invariant),
    })
}

/// Root mean square of `xs`, or 1 when it is zero or not finite (a safe f16 scale).
fn rms<'a>(xs: impl ExactSizeIterator<Item = &'a f32>) -> f64 {
    let n = xs.len().max(1) as f64;
    let r = (xs.map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / n).sqrt();
    if r > 0.0 && r.is_finite() {
        r
    } else {
        1.0
    }
}

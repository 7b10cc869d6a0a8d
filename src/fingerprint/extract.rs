//! Fingerprint extraction: reads only the sampled embedding rows and, per matrix, the first
//! `PROBE_UNITS` hidden units along each hidden-sized axis; matrices are read in parallel.

use std::path::Path;

use ndarray::{Array2, Axis};
use rayon::prelude::*;

use super::format::{self, EmbeddingSample, Fingerprint, Probe, Source};
use super::model::Model;
use super::FingerprintError;
use crate::weights::dequant;

/// Token rows sampled from the embedding (fewer if the vocabulary is smaller).
pub const SAMPLE_ROWS: usize = 256;
/// Hidden units covered by each probe's sub-Gram.
pub const PROBE_UNITS: usize = 32;

/// `m` token ids spread evenly over `0..vocab` (the midpoints of `m` equal slices).
pub fn sample_rows(vocab: usize, m: usize) -> Vec<usize> {
    let m = m.min(vocab);
    let mut v: Vec<usize> = (0..m).map(|k| (2 * k + 1) * vocab / (2 * m)).collect();
    v.dedup();
    v
}

/// The Gram matrix of hidden units `units` along `axis` of matrix `i`, summed over the other
/// axis, with `signs` applied, divided by its mean diagonal.
pub(crate) fn unit_gram(
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
    let mut g = x.t().dot(&x);
    let d = g.diag().mean().unwrap_or(0.0);
    if d > 0.0 && d.is_finite() {
        g /= d;
    }
    Ok(g)
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
    let (z, probes) = rayon::join(
        || model.embedding_rows(&emb, &rows),
        || {
            jobs.par_iter()
                .map(|&(i, axis)| {
                    let g = unit_gram(&model, i, axis, &units, &ones)?;
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
    for f in model.files() {
        f.map().ensure_unchanged()?;
    }
    let rms =
        (z.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / z.len().max(1) as f64).sqrt();
    let scale = if rms > 0.0 && rms.is_finite() {
        rms
    } else {
        1.0
    };
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
    })
}

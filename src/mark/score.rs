//! Detection: the suspect's statistic against each key, its conservative p-value, and the
//! registry's `weights` keys as [`KeyTest`] results.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use super::{
    canonical_name, codec, infer_hidden, is_embedding_name, mean_std, open_all, orient, MarkError,
    Orient, View, WeightKey, MIN_EXPECTED_Z, PINELIS, SCHEME,
};
use crate::detect::KeyTest;
use crate::error::FormatError;
use crate::registry::{EntryKind, Registry};

/// A known correspondence of the suspect's hidden axis to the original's: suspect coordinate
/// `j` is original coordinate `perm[j]` multiplied by `sign[j]` (from a fingerprint alignment).
#[derive(Clone, Debug)]
pub struct HiddenAlignment {
    /// Original index of each suspect hidden coordinate.
    pub perm: Vec<usize>,
    /// Sign (+1/-1) of each suspect hidden coordinate relative to the original.
    pub sign: Vec<f32>,
}

/// The result of scoring one suspect against one key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MarkScore {
    /// Standardised statistic (≈ N(0,1) under the null; large and positive when marked).
    pub z: f64,
    /// z of the stored reading alone (N(0,1) under the null; `z` is the larger of the readings).
    pub z_stored: f64,
    /// Conservative one-sided p-value (Hoeffding / Pinelis bound, doubled when two readings of
    /// square matrices were tried).
    pub p: f64,
    /// Number of weights scored.
    pub scored_weights: u64,
    /// Number of matrices scored.
    pub matrices: usize,
    /// Hidden size used.
    pub hidden: u64,
    /// Which reading of square matrices gave the reported z (`stored` or `transposed`).
    pub reading: &'static str,
    /// z an intact mark of this key would reach on this many weights.
    pub expected_z_if_marked: f64,
    /// False when even an intact mark would be too weak to decide.
    pub decided: bool,
    /// Whether a hidden-axis alignment was applied.
    pub aligned: bool,
}

/// The conservative tail `P[S >= z ||c||]` of a Rademacher sum `S = sum h_j c_j`.
pub fn rademacher_tail(z: f64) -> f64 {
    if z.is_nan() || z <= 0.0 {
        return 1.0;
    }
    let hoeffding = (-z * z / 2.0).exp();
    let pinelis = PINELIS * crate::stats::normal_sf(z);
    hoeffding.min(pinelis).min(1.0)
}

/// Accumulators of one (key, reading) over the scored matrices, per content length `K`.
#[derive(Clone, Default)]
struct Acc {
    /// `K` -> (`d`, `e`) summed over the matrices with that content length.
    parts: BTreeMap<usize, (Vec<f64>, Vec<f64>)>,
    weights: u64,
    matrices: usize,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        for (k, (od, oe)) in &o.parts {
            let (d, e) = self
                .parts
                .entry(*k)
                .or_insert_with(|| (vec![0.0; od.len()], vec![0.0; oe.len()]));
            for (a, b) in d.iter_mut().zip(od) {
                *a += b;
            }
            for (a, b) in e.iter_mut().zip(oe) {
                *a += b;
            }
        }
        self.weights += o.weights;
        self.matrices += o.matrices;
    }
    /// The one matrix's contribution.
    fn of_matrix(v: &View<'_>, r: &[f32], sigma: f64) -> Self {
        let u = v.content_signs(r);
        let mut d = vec![0.0; v.c];
        let mut e = vec![0.0; v.c];
        let inv = 1.0 / sigma;
        match v.orient {
            Orient::HiddenCols => {
                for (k, &uk) in u.iter().enumerate().take(v.k) {
                    let row = &v.w[k * v.c..(k + 1) * v.c];
                    let uk = uk as f64 * inv;
                    for ((d, e), &x) in d.iter_mut().zip(e.iter_mut()).zip(row) {
                        let x = x as f64;
                        *d += uk * x;
                        *e += x * x * inv * inv;
                    }
                }
            }
            Orient::HiddenRows => {
                for (j, (dj, ej)) in d.iter_mut().zip(e.iter_mut()).enumerate() {
                    let row = &v.w[j * v.k..(j + 1) * v.k];
                    let (mut sd, mut se) = (0.0, 0.0);
                    for (&x, &uk) in row.iter().zip(&u) {
                        let x = x as f64;
                        sd += uk as f64 * x;
                        se += x * x;
                    }
                    *dj = sd * inv;
                    *ej = se * inv * inv;
                }
            }
        }
        let mut parts = BTreeMap::new();
        parts.insert(v.k, (d, e));
        Acc {
            parts,
            weights: (v.k * v.c) as u64,
            matrices: 1,
        }
    }
    /// z of the Rademacher sum over every class's coordinates, `r` projected out of each `d`.
    fn z(&self, hs: &BTreeMap<usize, Vec<f32>>, r: &[f32]) -> f64 {
        let (mut s, mut v) = (0.0, 0.0);
        for (k, (d, e)) in &self.parts {
            let Some(h) = hs.get(k) else {
                continue;
            };
            let c = d.len() as f64;
            let dr: f64 = d.iter().zip(r).map(|(d, &r)| d * r as f64).sum::<f64>() / c;
            for (((d, &rj), &e), &hj) in d.iter().zip(r).zip(e).zip(h) {
                if e > 0.0 {
                    let coef = (d - dr * rj as f64) / e;
                    s += coef * hj as f64;
                    v += coef * coef;
                }
            }
        }
        if v > 0.0 {
            s / v.sqrt()
        } else {
            0.0
        }
    }
}

/// Score the suspect `model` against each of `keys` (the weights are decoded once).
pub fn score_many(
    model: &Path,
    keys: &[&WeightKey],
    align: Option<&HiddenAlignment>,
) -> Result<Vec<MarkScore>, MarkError> {
    let (_, files) = open_all(model)?;
    let hidden = infer_hidden(
        files
            .iter()
            .flat_map(|f| f.parsed().tensors.iter().map(|t| t.shape.as_slice())),
    );
    let Some(hidden) = hidden else {
        return Ok(keys.iter().map(|k| empty_score(k, 0)).collect());
    };
    let c = hidden as usize;
    if let Some(a) = align {
        if a.perm.len() != c || a.sign.len() != c || a.perm.iter().any(|&p| p >= c) {
            return Err(MarkError::Output {
                path: model.to_path_buf(),
                reason: format!("hidden alignment does not match hidden size {c}"),
            });
        }
    }
    let any_square = files.iter().any(|f| {
        f.parsed()
            .tensors
            .iter()
            .any(|t| t.shape.len() == 2 && t.shape[0] == hidden && t.shape[1] == hidden)
    });
    let readings: &[bool] = if any_square { &[false, true] } else { &[false] };
    // Every (file, tensor) that any key scores under any reading.
    let mut todo: Vec<(usize, usize)> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (ti, t) in f.parsed().tensors.iter().enumerate() {
            if codec::readable(t.dtype)
                && orient(&t.shape, hidden, false).is_some()
                && !is_embedding_name(&t.name)
            {
                todo.push((fi, ti));
            }
        }
    }
    // Key vectors for every content length present, carried into the suspect's hidden
    // coordinates.
    let mut lens = std::collections::BTreeSet::new();
    for &(fi, ti) in &todo {
        let shape = &files[fi].parsed().tensors[ti].shape;
        for &flip in readings {
            if let Some(o) = orient(shape, hidden, flip) {
                lens.insert(View::content_len(shape, o));
            }
        }
    }
    let carry = |v: Vec<f32>| -> Vec<f32> {
        match align {
            None => v,
            Some(a) => a
                .perm
                .iter()
                .zip(&a.sign)
                .map(|(&p, &s)| v[p] * s)
                .collect(),
        }
    };
    type Vecs = (BTreeMap<usize, Vec<f32>>, Vec<f32>);
    let vecs: Vec<Vecs> = keys
        .iter()
        .map(|k| {
            let hs = lens.iter().map(|&l| (l, carry(k.h_vector(l, c)))).collect();
            (hs, carry(k.r_vector(c)))
        })
        .collect();
    let zero = || vec![vec![Acc::default(); readings.len()]; keys.len()];
    let accs = todo
        .par_iter()
        .map(|&(fi, ti)| -> Result<Vec<Vec<Acc>>, MarkError> {
            let t = &files[fi].parsed().tensors[ti];
            let mut out = zero();
            let canon = canonical_name(&t.name);
            let selected: Vec<bool> = keys.iter().map(|k| k.selects(&canon)).collect();
            if !selected.iter().any(|&s| s) {
                return Ok(out);
            }
            let view = files[fi].view(ti).ok_or_else(|| {
                MarkError::Format(FormatError::BadTensor {
                    name: t.name.clone(),
                    reason: "data out of range".into(),
                })
            })?;
            let n = t.elements() as usize;
            let w = codec::to_f32(&t.name, t.dtype, n, view.bytes)?;
            let (_, sigma) = mean_std(&w);
            if !(sigma > 0.0 && sigma.is_finite()) {
                return Ok(out);
            }
            for (ri, &flip) in readings.iter().enumerate() {
                let Some(o) = orient(&t.shape, hidden, flip) else {
                    continue;
                };
                let v = View::new(&w, &t.shape, o);
                for (ki, sel) in selected.iter().enumerate() {
                    if *sel {
                        out[ki][ri] = Acc::of_matrix(&v, &vecs[ki].1, sigma);
                    }
                }
            }
            Ok(out)
        })
        .try_reduce(zero, |mut a, b| {
            for (ak, bk) in a.iter_mut().zip(&b) {
                for (ar, br) in ak.iter_mut().zip(bk) {
                    ar.add(br);
                }
            }
            Ok(a)
        })?;
    Ok(keys
        .iter()
        .enumerate()
        .map(|(ki, key)| {
            let (hs, r) = &vecs[ki];
            let zs: Vec<f64> = accs[ki].iter().map(|a| a.z(hs, r)).collect();
            let (best, z) =
                zs.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (i, z)| if z > b.1 { (i, z) } else { b },
                    );
            let acc = &accs[ki][best];
            let p = (rademacher_tail(z) * readings.len() as f64).min(1.0);
            let expected = key.strength() * (acc.weights as f64).sqrt();
            MarkScore {
                z,
                z_stored: zs[0],
                p,
                scored_weights: acc.weights,
                matrices: acc.matrices,
                hidden,
                reading: if readings[best] {
                    "transposed"
                } else {
                    "stored"
                },
                expected_z_if_marked: expected,
                decided: expected >= MIN_EXPECTED_Z,
                aligned: align.is_some(),
            }
        })
        .collect())
}

fn empty_score(key: &WeightKey, hidden: u64) -> MarkScore {
    let _ = key;
    MarkScore {
        z: 0.0,
        z_stored: 0.0,
        p: 1.0,
        scored_weights: 0,
        matrices: 0,
        hidden,
        reading: "stored",
        expected_z_if_marked: 0.0,
        decided: false,
        aligned: false,
    }
}

/// Score `model` against one key.
pub fn score(
    model: &Path,
    key: &WeightKey,
    align: Option<&HiddenAlignment>,
) -> Result<MarkScore, MarkError> {
    let mut v = score_many(model, &[key], align)?;
    v.pop()
        .ok_or_else(|| MarkError::NothingToMark(model.to_path_buf()))
}

/// The registered `weights` keys: entry names and keys. Text-scheme keys are skipped.
pub fn registered_keys(registry: &Registry) -> Result<(Vec<String>, Vec<WeightKey>), MarkError> {
    let mut names = Vec::new();
    let mut keys = Vec::new();
    for e in registry.of_kind(EntryKind::WatermarkKey) {
        // As parsed when the registry was opened; the file is not read again.
        if let Ok(crate::registry::Validated::WeightKey(k)) = e.validated() {
            keys.push((**k).clone());
            names.push(e.name.clone());
        }
    }
    Ok((names, keys))
}

/// The [`KeyTest`] (kind `weights`) reporting one key's score.
pub fn key_test(name: String, key: &WeightKey, s: &MarkScore) -> KeyTest {
    let mut t = KeyTest::new(name, SCHEME, s.p)
        .with("key_id", key.id())
        .with("z", s.z)
        .with("scored_weights", s.scored_weights)
        .with("matrices", s.matrices as u64)
        .with("hidden", s.hidden)
        .with("reading", s.reading)
        .with("expected_z_if_marked", s.expected_z_if_marked)
        .with("aligned", s.aligned);
    if !s.decided {
        t.details.insert(
            "reason".into(),
            "too few weights: even an intact mark could not decide".into(),
        );
    }
    t.decided = s.decided;
    t
}

/// Test the suspect weights at `path` against every registered `weights` watermark key, with
/// an optional known hidden-axis alignment; one [`KeyTest`] (kind `weights`) per key.
/// (`detect` goes through [`super::test_marks_with_fingerprints`], which finds alignments itself.)
pub fn test_marks(
    path: &Path,
    registry: &Registry,
    align: Option<&HiddenAlignment>,
) -> Result<Vec<KeyTest>, MarkError> {
    let (names, keys) = registered_keys(registry)?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<&WeightKey> = keys.iter().collect();
    let scores = score_many(path, &refs, align)?;
    Ok(names
        .into_iter()
        .zip(keys.iter().zip(scores))
        .map(|(name, (key, s))| key_test(name, key, &s))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The tail bound is never below the exact tail of small Rademacher sums.
    #[test]
    fn tail_bound_dominates_exact_rademacher_tails() {
        for coefs in [
            vec![1.0; 16],
            (1..=16).map(|i| i as f64).collect::<Vec<_>>(),
        ] {
            let n = coefs.len();
            let norm = coefs.iter().map(|c| c * c).sum::<f64>().sqrt();
            let mut sums: Vec<f64> = (0..1u32 << n)
                .map(|m| {
                    (0..n)
                        .map(|i| if m >> i & 1 == 1 { coefs[i] } else { -coefs[i] })
                        .sum()
                })
                .collect();
            sums.sort_by(|a, b| b.total_cmp(a));
            let total = sums.len() as f64;
            for s in &sums {
                // P[S >= s], ties included.
                let ge = sums.partition_point(|&x| x >= *s - 1e-9);
                let exact = ge as f64 / total;
                assert!(rademacher_tail(s / norm) >= exact, "s={s} exact={exact}");
            }
        }
    }
}

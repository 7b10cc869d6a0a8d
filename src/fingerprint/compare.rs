//! Testing a suspect against one fingerprint.
//!
//! **The test** (see docs/fingerprint.md for the argument). The registered token rows are split
//! by position into halves A and B. In each half, suspect hidden units `J` (the first
//! [`TEST_UNITS`]) are matched to registered hidden units by absolute column correlation, keeping
//! only mutual best matches, which makes each half's matching a partial injection `π_A`, `π_B`.
//! The statistic is `F`, the number of units on which the two halves agree. Under the null (the
//! suspect is independent of the registered model, whose embedding rows are independent draws
//! with exchangeable hidden units, as at initialisation), `π_B` is a uniformly relabelled
//! injection independent of `π_A`, so for any `f` units the chance that all agree is
//! `(H - f)! / H!`; a union bound over the `C(n_A, f)` subsets gives the conservative p-value
//! `p = C(n_A, F) (H - F)! / H!`. A derived copy agrees on every unit, so `p ≈ H^-|J|`.
//!
//! Everything after the p-value (alignment, layer matching) is description, computed only for
//! suspects that already matched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::{s, Array1, Array2, Axis};
use rayon::prelude::*;
use serde_json::{json, Value};
use statrs::function::gamma::ln_gamma;

use super::extract::unit_gram;
use super::format::Fingerprint;
use super::model::{Embedding, Model};
use super::FingerprintError;
use crate::detect::KeyTest;

/// Suspect hidden units tested.
pub const TEST_UNITS: usize = 64;
/// Fewer shared token rows than this (both halves together) is too little to decide.
pub const MIN_ROWS: usize = 32;
/// Raw p-value below which the alignment and layer map are worked out for the report.
pub const DESCRIBE_BELOW: f64 = 1e-6;
/// Sub-Gram correlation from which a registered matrix counts as found in the suspect.
pub const PROBE_MATCH: f32 = 0.5;
/// Token rows used by [`invariant_similarity`].
pub const INVARIANT_TOKENS: usize = 64;
/// Embedding candidates tried in the suspect (input embedding and untied output head).
pub const MAX_CANDIDATES: usize = 2;

/// Decoded suspect embedding rows, keyed by (candidate, token ids).
type RowCache = HashMap<(usize, Vec<usize>), Arc<Array2<f32>>>;

/// A suspect model, mapped once and tested against many fingerprints.
pub struct Suspect {
    model: Model,
    embeddings: Vec<Embedding>,
    excluded: Vec<usize>,
    rows: Mutex<RowCache>,
}

impl std::fmt::Debug for Suspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspect")
            .field("embeddings", &self.embeddings)
            .finish()
    }
}

/// The outcome of the split-half agreement test on one embedding pairing.
#[derive(Clone, Debug)]
pub struct SplitTest {
    /// Natural log of the (conservative) p-value.
    pub ln_p: f64,
    /// Suspect units tested.
    pub tested: usize,
    /// Mutual matches in half A.
    pub mutual_a: usize,
    /// Units on which both halves agree.
    pub agree: usize,
    /// Token rows used (both halves).
    pub rows: usize,
}

/// Centre each column and scale it to unit length (zero columns stay zero). Row-wise passes,
/// so the row-major data is read in order.
fn standardize(z: &Array2<f32>) -> Array2<f32> {
    let n = z.nrows().max(1) as f32;
    let mean = z.sum_axis(Axis(0)) / n;
    let mut z = z - &mean;
    let mut ss = Array1::<f32>::zeros(z.ncols());
    for row in z.rows() {
        ss.zip_mut_with(&row, |a, &x| *a += x * x);
    }
    let inv = ss.mapv(|v| {
        let r = v.sqrt();
        if r > 0.0 && r.is_finite() {
            1.0 / r
        } else {
            0.0
        }
    });
    for mut row in z.rows_mut() {
        row *= &inv;
    }
    z
}

/// Mutual best matches of rows of `c` (|c|): `out[j] = Some(k)` when `k` is `j`'s best and `j` is
/// `k`'s best.
fn mutual(c: &Array2<f32>) -> Vec<Option<usize>> {
    let a = c.mapv(f32::abs);
    let best_col: Vec<usize> = a
        .columns()
        .into_iter()
        .map(|col| argmax(col.iter()))
        .collect();
    a.rows()
        .into_iter()
        .enumerate()
        .map(|(j, row)| {
            let k = argmax(row.iter());
            (!row.is_empty() && best_col[k] == j && row[k] > 0.0).then_some(k)
        })
        .collect()
}

fn argmax<'a>(it: impl Iterator<Item = &'a f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in it.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// ln C(n, k)
fn ln_choose(n: usize, k: usize) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// The split-half agreement test of suspect rows `zs` against registered rows `zr` (same
/// token rows, in the same order).
pub fn split_test(zs: &Array2<f32>, zr: &Array2<f32>) -> SplitTest {
    let n = zs.nrows().min(zr.nrows());
    let hr = zr.ncols();
    let j = TEST_UNITS.min(zs.ncols());
    let half = |par: usize| {
        let idx: Vec<usize> = (par..n).step_by(2).collect();
        let s = standardize(&zs.select(Axis(0), &idx).slice(s![.., ..j]).to_owned());
        let r = standardize(&zr.select(Axis(0), &idx));
        mutual(&s.t().dot(&r))
    };
    let (a, b) = rayon::join(|| half(0), || half(1));
    let mutual_a = a.iter().filter(|m| m.is_some()).count();
    let agree = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.is_some() && x == y)
        .count();
    let ln_p = if hr == 0 {
        0.0
    } else {
        (ln_choose(mutual_a, agree) + ln_gamma((hr - agree) as f64 + 1.0)
            - ln_gamma(hr as f64 + 1.0))
        .min(0.0)
    };
    SplitTest {
        ln_p,
        tested: j,
        mutual_a,
        agree,
        rows: n,
    }
}

impl Suspect {
    /// Map the suspect at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, FingerprintError> {
        let model = Model::open(path)?;
        let all = model.embeddings(usize::MAX);
        let excluded = all.iter().map(|e| e.matrix).collect();
        let embeddings = all.into_iter().take(MAX_CANDIDATES).collect();
        Ok(Self {
            model,
            embeddings,
            excluded,
            rows: Mutex::new(HashMap::new()),
        })
    }

    /// The mapped suspect.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The suspect's embedding rows `idx` of candidate `c`, decoded once per row set.
    fn rows(&self, c: usize, idx: &[usize]) -> Result<Arc<Array2<f32>>, FingerprintError> {
        let key = (c, idx.to_vec());
        if let Some(z) = self.rows.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(z);
        }
        let z = Arc::new(self.model.embedding_rows(&self.embeddings[c], idx)?);
        if let Ok(mut m) = self.rows.lock() {
            m.insert(key, z.clone());
        }
        Ok(z)
    }

    /// Test the suspect against one fingerprint.
    pub fn test(&self, fp: &Fingerprint) -> Result<KeyTest, FingerprintError> {
        let name = fp.name.clone();
        if self.embeddings.is_empty() {
            let mut t = KeyTest::new(name, "fingerprint", 1.0).with(
                "reason",
                "the suspect has no vocab x hidden embedding matrix to align through",
            );
            t.decided = false;
            return Ok(t);
        }
        let zr_all = fp.embedding_rows()?;
        let mut best: Option<(usize, SplitTest, Vec<usize>)> = None;
        for c in 0..self.embeddings.len() {
            let e = &self.embeddings[c];
            let keep: Vec<usize> = (0..fp.embedding.rows.len())
                .filter(|&k| fp.embedding.rows[k] < e.vocab)
                .collect();
            let idx: Vec<usize> = keep.iter().map(|&k| fp.embedding.rows[k]).collect();
            let zs = self.rows(c, &idx)?;
            let zr = zr_all.select(Axis(0), &keep);
            let t = split_test(&zs, &zr);
            if best.as_ref().is_none_or(|b| t.ln_p < b.1.ln_p) {
                best = Some((c, t, keep));
            }
        }
        let Some((c, t, keep)) = best else {
            return Err(FingerprintError::Internal("no candidate"));
        };
        let inv = {
            let idx: Vec<usize> = keep.iter().map(|&k| fp.embedding.rows[k]).collect();
            let zs = self.rows(c, &idx)?;
            invariant_similarity(&zs, &zr_all.select(Axis(0), &keep))
        };
        // Bonferroni over the suspect's embedding candidates.
        let ln_p = (t.ln_p + (self.embeddings.len() as f64).ln()).min(0.0);
        let p = ln_p.exp().max(f64::MIN_POSITIVE);
        let e = &self.embeddings[c];
        let sname = self
            .model
            .view(e.matrix)
            .map(|v| v.name.to_string())
            .unwrap_or_default();
        let mut kt = KeyTest::new(name, "fingerprint", p)
            .with("log10_p_raw", ln_p / std::f64::consts::LN_10)
            .with("rows_scored", t.rows)
            .with("units_tested", t.tested)
            .with("units_agreeing", t.agree)
            .with("invariant_similarity", inv)
            .with(
                "embedding",
                json!({"registered": fp.embedding.tensor, "suspect": sname,
                       "suspect_transposed": e.transposed != fp.embedding.transposed}),
            );
        if t.rows < MIN_ROWS || fp.hidden < 2 {
            kt.decided = false;
            kt.details.insert(
                "reason".into(),
                json!("too few shared token rows to decide"),
            );
            return Ok(kt);
        }
        if p <= DESCRIBE_BELOW {
            let zs = self.rows(
                c,
                &keep
                    .iter()
                    .map(|&k| fp.embedding.rows[k])
                    .collect::<Vec<_>>(),
            )?;
            let zr = zr_all.select(Axis(0), &keep);
            let (alignment, layers) = self.describe(fp, e, &zs, &zr)?;
            kt.details.insert("alignment".into(), alignment);
            for (k, v) in layers {
                kt.details.insert(k, v);
            }
        }
        Ok(kt)
    }

    /// Align the registered probe units into the suspect and match every probe.
    fn describe(
        &self,
        fp: &Fingerprint,
        e: &Embedding,
        zs: &Array2<f32>,
        zr: &Array2<f32>,
    ) -> Result<(Value, serde_json::Map<String, Value>), FingerprintError> {
        let u = fp.probe_units;
        let s = standardize(zs);
        let r = standardize(&zr.slice(s![.., ..u]).to_owned());
        let c = s.t().dot(&r); // suspect units x registered probe units
        let mut units = Vec::with_capacity(u);
        let mut signs = Vec::with_capacity(u);
        let mut corr = Vec::with_capacity(u);
        let mut ratio = Vec::with_capacity(u);
        for k in 0..u {
            let col = c.column(k);
            let j = argmax(col.mapv(f32::abs).iter());
            units.push(j);
            signs.push(if col[j] < 0.0 { -1.0f32 } else { 1.0 });
            corr.push(col[j].abs());
            let sd = |v: ndarray::ArrayView1<f32>| {
                let m = v.mean().unwrap_or(0.0);
                v.mapv(|x| (x - m) * (x - m)).mean().unwrap_or(0.0).sqrt()
            };
            let (a, b) = (sd(zs.column(j)), sd(zr.column(k)));
            if b > 0.0 {
                ratio.push(a / b);
            }
        }
        ratio.sort_by(f32::total_cmp);
        corr.sort_by(f32::total_cmp);
        let mut distinct = units.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let identity = units.iter().enumerate().filter(|(k, j)| k == *j).count();
        let alignment = json!({
            "hidden": {"registered": fp.hidden, "suspect": e.hidden},
            "vocab": {"registered": fp.vocab, "suspect": e.vocab,
                      "added": e.vocab as i64 - fp.vocab as i64},
            "probe_units_aligned": distinct.len(),
            "hidden_permuted": identity < u,
            "units_in_place": identity,
            "sign_flips": signs.iter().filter(|s| **s < 0.0).count(),
            "scale": ratio.get(ratio.len() / 2).copied().unwrap_or(f32::NAN),
            "median_unit_correlation": corr.get(corr.len() / 2).copied().unwrap_or(0.0),
        });

        // Suspect probes: every non-embedding matrix axis of the suspect's hidden size.
        let mut jobs = Vec::new();
        for i in 0..self.model.len() {
            if self.excluded.contains(&i) {
                continue;
            }
            let (rr, cc) = self.model.shape(i);
            for (axis, n) in [(0, rr), (1, cc)] {
                if n == e.hidden {
                    jobs.push((i, axis));
                }
            }
        }
        let grams: Vec<(usize, usize, Array1<f32>)> = jobs
            .par_iter()
            .map(|&(i, axis)| {
                let g = unit_gram(&self.model, i, axis, &units, &signs)?;
                Ok((i, axis, off_diagonal(&g)))
            })
            .collect::<Result<_, FingerprintError>>()?;
        let mut matched = Vec::new();
        let mut reg_layers: HashMap<String, (usize, usize)> = HashMap::new();
        let mut votes: HashMap<String, HashMap<String, usize>> = HashMap::new();
        // Score every registered probe against every suspect probe; a pair counts when each is
        // the other's best (so a dropped layer is not claimed by its look-alike neighbour).
        let reg_grams = (0..fp.probes.len())
            .map(|pi| fp.probe_gram(pi).map(|g| off_diagonal(&g)))
            .collect::<Result<Vec<_>, _>>()?;
        let score = Array2::from_shape_fn((reg_grams.len(), grams.len()), |(a, b)| {
            pearson(&reg_grams[a], &grams[b].2)
        });
        let best_reg: Vec<usize> = score
            .columns()
            .into_iter()
            .map(|c| argmax(c.iter()))
            .collect();
        for (pi, p) in fp.probes.iter().enumerate() {
            let layer = layer_of(&p.tensor);
            let entry = reg_layers.entry(layer.clone()).or_default();
            entry.1 += 1;
            if grams.is_empty() {
                continue;
            }
            let gi = argmax(score.row(pi).iter());
            let score = score[[pi, gi]];
            if score < PROBE_MATCH || best_reg[gi] != pi {
                continue;
            }
            entry.0 += 1;
            let (i, axis, _) = &grams[gi];
            let sname = self
                .model
                .view(*i)
                .map(|v| v.name.to_string())
                .unwrap_or_default();
            *votes
                .entry(layer)
                .or_default()
                .entry(layer_of(&sname))
                .or_default() += 1;
            matched.push(json!({
                "registered": p.tensor, "suspect": sname, "score": score,
                "transposed": *axis != p.axis,
            }));
        }
        let mut layer_names: Vec<&String> = reg_layers.keys().collect();
        layer_names.sort_by_key(|l| (l.parse::<usize>().unwrap_or(usize::MAX), (*l).clone()));
        let mut layer_map = serde_json::Map::new();
        let mut unmatched = Vec::new();
        for l in layer_names {
            match votes.get(l).and_then(|v| {
                v.iter()
                    .max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone())))
            }) {
                Some((to, _)) => {
                    layer_map.insert(l.clone(), json!(to));
                }
                None => unmatched.push(l.clone()),
            }
        }
        let mut dtypes: std::collections::BTreeMap<String, usize> = Default::default();
        for i in 0..self.model.len() {
            if let Some(v) = self.model.view(i) {
                *dtypes.entry(v.dtype.name().to_string()).or_default() += 1;
            }
        }
        let transposed = matched
            .iter()
            .filter(|m| m["transposed"] == json!(true))
            .count();
        let mut out = serde_json::Map::new();
        out.insert(
            "probes_matched".into(),
            json!(format!("{} of {}", matched.len(), fp.probes.len())),
        );
        out.insert("transposed_matrices".into(), json!(transposed));
        out.insert("suspect_matrix_dtypes".into(), json!(dtypes));
        out.insert("layer_map".into(), Value::Object(layer_map));
        out.insert("layers_not_found".into(), json!(unmatched));
        out.insert("matched_tensors".into(), Value::Array(matched));
        Ok((alignment, out))
    }
}

/// The alignment-free second line (HuRef-style): the correlation between the two models' Gram
/// matrices `X X^T` of [`INVARIANT_TOKENS`] shared token rows. `X X^T` does not change under any
/// orthogonal transform of the hidden space (permutation, sign, rotation) and the correlation
/// ignores scale. Reported as a similarity, not a p-value: independently trained models that
/// share a tokenizer and data can agree on it too, so it has no null that holds for them.
pub fn invariant_similarity(zs: &Array2<f32>, zr: &Array2<f32>) -> f32 {
    let n = zs.nrows().min(zr.nrows());
    let step = (n / INVARIANT_TOKENS).max(1);
    let idx: Vec<usize> = (0..n).step_by(step).take(INVARIANT_TOKENS).collect();
    let gram = |z: &Array2<f32>| {
        let x = z.select(Axis(0), &idx);
        let x = &x
            - &x.mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(x.ncols()));
        off_diagonal(&x.dot(&x.t()))
    };
    pearson(&gram(zs), &gram(zr))
}

/// The strict upper triangle of a square matrix as a vector.
fn off_diagonal(g: &Array2<f32>) -> Array1<f32> {
    let n = g.nrows();
    let mut v = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for a in 0..n {
        for b in a + 1..n {
            v.push(g[[a, b]]);
        }
    }
    Array1::from(v)
}

fn pearson(a: &Array1<f32>, b: &Array1<f32>) -> f32 {
    if a.len() != b.len() || a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (a.mean().unwrap_or(0.0), b.mean().unwrap_or(0.0));
    let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = ((x - ma) as f64, (y - mb) as f64);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        return 0.0;
    }
    (sab / (saa * sbb).sqrt()) as f32
}

/// The layer a tensor belongs to, read from the first number in its name (reports only);
/// `-` when the name has none.
fn layer_of(name: &str) -> String {
    let digits: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() {
        "-".into()
    } else {
        digits
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_agree_everywhere() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let z = Array2::from_shape_fn((128, 80), |_| rng.gen_range(-1.0f32..1.0));
        let t = split_test(&z, &z);
        assert_eq!(t.tested, 64);
        assert_eq!(t.agree, 64);
        assert!(t.ln_p < -200.0, "{}", t.ln_p);
    }

    #[test]
    fn independent_rows_rarely_agree() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let a = Array2::from_shape_fn((256, 96), |_| rng.gen_range(-1.0f32..1.0));
        let b = Array2::from_shape_fn((256, 96), |_| rng.gen_range(-1.0f32..1.0));
        let t = split_test(&a, &b);
        assert!(t.agree <= 3, "{t:?}");
        assert!(t.ln_p > (1e-3f64).ln());
    }

    #[test]
    fn agreement_bound_is_one_over_k_factorial_when_square() {
        // C(n, k) (n-k)!/n! = 1/k!
        let n = 50usize;
        for k in 0..6 {
            let lp = ln_choose(n, k) + ln_gamma((n - k) as f64 + 1.0) - ln_gamma(n as f64 + 1.0);
            assert!((lp + ln_gamma(k as f64 + 1.0)).abs() < 1e-9);
        }
    }

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), "12");
        assert_eq!(layer_of("blk.3.attn_q.weight"), "3");
        assert_eq!(layer_of("lm_head.weight"), "-");
    }
}

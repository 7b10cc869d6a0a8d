//! Simulated pairs of *independent* models that share token structure, the null that
//! independently trained models with one tokenizer and corpus present, without training.
//!
//! Each model's token rows are `shared token features x its own random loadings + noise`,
//! scaled by a shared per-token norm; optionally a few "outlier" units carry a large shared
//! token signal (as trained transformers develop), each at an index drawn independently per
//! model. Feed-forward neurons are shared "detectors" (directions in feature space) read through
//! each model's own loadings, in an order drawn independently per model. Nothing ties a unit or
//! neuron index of one model to the other's, which is what independent initialisation and
//! permutation-equivariant training guarantee; everything else is shared, so any statistic that
//! relies on the registered model's rows being independent draws is exposed.

use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use hallmark::fingerprint::compare::{
    combined_ln_p, ffn_ln_p, neuron_test, residual_test, IdentityTest,
};

/// Shared token features.
pub const FEATURES: usize = 16;
/// Token rows (as many as a fingerprint samples).
pub const ROWS: usize = 256;
/// Probe units (as a fingerprint stores).
pub const PROBE: usize = 32;
/// Feed-forward matrices per model.
pub const FFN_MATRICES: usize = 4;
/// Registered neurons sampled per matrix.
pub const FFN_SAMPLED: usize = 64;

fn normal(rng: &mut StdRng) -> f32 {
    rng.sample(StandardNormal)
}

/// What the two models share: token features, token norms, outlier signals, detectors.
struct Shared {
    phi: Array2<f32>,
    norm: Array1<f32>,
    outlier: Array2<f32>,
    detectors: Vec<Array2<f32>>,
}

/// One model of a pair: its loadings, token rows, outlier indices and neuron orders.
struct Side {
    loadings: Array2<f32>,
    rows: Array2<f32>,
    order: Vec<Vec<usize>>,
}

/// A pair of independent models sharing token structure.
pub struct Pair {
    hidden: usize,
    neurons: usize,
    noise: f32,
    shared: Shared,
    reg: Side,
    sus: Side,
    seed: u64,
}

impl Pair {
    /// A pair with `hidden` units, `neurons` per feed-forward matrix and `outliers` shared
    /// outlier signals, deterministic in `seed`.
    pub fn new(hidden: usize, neurons: usize, outliers: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Decaying feature strengths, as token geometry has a few dominant directions.
        let phi = Array2::from_shape_fn((ROWS, FEATURES), |(_, f)| {
            normal(&mut rng) / ((f + 1) as f32).sqrt()
        });
        let norm = Array1::from_shape_fn(ROWS, |_| (0.3 * normal(&mut rng)).exp());
        let outlier = Array2::from_shape_fn((ROWS, outliers), |_| 8.0 + 4.0 * normal(&mut rng));
        let detectors = (0..FFN_MATRICES)
            .map(|_| Array2::from_shape_fn((neurons, FEATURES), |_| normal(&mut rng)))
            .collect();
        let shared = Shared {
            phi,
            norm,
            outlier,
            detectors,
        };
        let noise = 0.3;
        let reg = Self::side(&shared, hidden, neurons, noise, &mut rng);
        let sus = Self::side(&shared, hidden, neurons, noise, &mut rng);
        Self {
            hidden,
            neurons,
            noise,
            shared,
            reg,
            sus,
            seed,
        }
    }

    fn side(s: &Shared, hidden: usize, neurons: usize, noise: f32, rng: &mut StdRng) -> Side {
        let loadings = Array2::from_shape_fn((FEATURES, hidden), |_| normal(rng));
        let mut rows = s.phi.dot(&loadings);
        for x in rows.iter_mut() {
            *x += noise * normal(rng);
        }
        let mut units: Vec<usize> = (0..hidden).collect();
        units.shuffle(rng);
        for (o, &u) in units.iter().take(s.outlier.ncols()).enumerate() {
            rows.column_mut(u).assign(&s.outlier.column(o));
        }
        for (mut r, n) in rows.rows_mut().into_iter().zip(s.norm.iter()) {
            r *= *n;
        }
        let order = (0..FFN_MATRICES)
            .map(|_| {
                let mut o: Vec<usize> = (0..neurons).collect();
                o.shuffle(rng);
                o
            })
            .collect();
        Side {
            loadings,
            rows,
            order,
        }
    }

    /// Neurons of matrix `m` of a side on hidden units `units` (signs applied), with fresh noise.
    fn neurons_on(
        &self,
        side: &Side,
        m: usize,
        n: usize,
        units: &[usize],
        signs: &[f32],
        rng: &mut StdRng,
    ) -> Array2<f32> {
        let d = &self.shared.detectors[m];
        Array2::from_shape_fn((n, units.len()), |(k, u)| {
            let det = d.row(side.order[m][k]);
            let w: f32 = det
                .iter()
                .zip(side.loadings.column(units[u]))
                .map(|(a, b)| a * b)
                .sum();
            signs[u] * (w + self.noise * 4.0 * normal(rng))
        })
    }

    /// Hidden units of each model.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Registered token rows (`ROWS x hidden`).
    pub fn registered_rows(&self) -> &Array2<f32> {
        &self.reg.rows
    }

    /// Suspect token rows (`ROWS x hidden`).
    pub fn suspect_rows(&self) -> &Array2<f32> {
        &self.sus.rows
    }

    /// Run the fingerprint test on the pair exactly as [`hallmark::fingerprint::Suspect::test`] combines it
    /// (one embedding candidate; registered matrix `m` paired with suspect matrix `m`):
    /// the residual test, the alignment, the per-matrix neuron tests and the combined `ln p`.
    pub fn test(&self) -> (IdentityTest, Vec<IdentityTest>, f64) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5eed);
        let (res, al) = residual_test(&self.sus.rows, &self.reg.rows, PROBE);
        let probe: Vec<usize> = (0..PROBE).collect();
        let ones = vec![1.0f32; PROBE];
        let k = FFN_SAMPLED.min(self.neurons);
        let tests: Vec<IdentityTest> = (0..FFN_MATRICES)
            .map(|m| {
                let reg = self.neurons_on(&self.reg, m, k, &probe, &ones, &mut rng);
                let sus =
                    self.neurons_on(&self.sus, m, self.neurons, &al.units, &al.signs, &mut rng);
                neuron_test(&reg, &sus)
            })
            .collect();
        let ffn = ffn_ln_p(&tests.iter().collect::<Vec<_>>());
        let ln_p = combined_ln_p(res.ln_p, ffn);
        (res, tests, ln_p)
    }
}

/// Feed-forward-like matrices per simulated model of [`SymPair`] (each read on the residual
/// axis, as `gate`/`up`/`q`/`k`/`v` are).
pub const SYM_MATRICES: usize = 8;

/// A simulated pair of *independent* models for the symmetry-invariant line
/// ([`hallmark::fingerprint::invariant`]): what trained impostors share, exaggerated.
///
/// Both models see the same token features `phi` (decaying strengths) through their own random
/// loadings, with a shared per-token norm and `outliers` shared outlier signals, each on a unit
/// drawn independently per model (the massive activations trained transformers develop). Each
/// matrix `m` reads features through a *reader* `R_m` that is a mix of a reader both models
/// share (weight `share`) and one of its own (weight `1 - share`): `share = 1` would be two
/// models that compute the same features in the same way, which no statistic of the weights
/// can tell apart; independently trained models sit below. Every matrix also reads the outlier
/// units with shared weights, plus its own noise; neuron order is drawn per model (the sketch
/// does not see it).
pub struct SymPair {
    reg: (Array2<f32>, Vec<Array2<f32>>),
    sus: (Array2<f32>, Vec<Array2<f32>>),
}

impl SymPair {
    /// A pair with `hidden` units, `neurons` rows per matrix, `outliers` shared outlier
    /// signals and reader sharing `share` in `[0, 1]`, deterministic in `seed`.
    pub fn new(hidden: usize, neurons: usize, outliers: usize, share: f32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let t = hallmark::fingerprint::invariant::SKETCH_TOKENS;
        let phi = Array2::from_shape_fn((t, FEATURES), |(_, f)| {
            normal(&mut rng) / ((f + 1) as f32).sqrt()
        });
        let norm = Array1::from_shape_fn(t, |_| (0.3 * normal(&mut rng)).exp());
        let outlier = Array2::from_shape_fn((t, outliers), |_| 8.0 + 4.0 * normal(&mut rng));
        let readers: Vec<Array2<f32>> = (0..SYM_MATRICES)
            .map(|_| Array2::from_shape_fn((neurons, FEATURES), |_| normal(&mut rng)))
            .collect();
        let out_w: Vec<Array2<f32>> = (0..SYM_MATRICES)
            .map(|_| Array2::from_shape_fn((neurons, outliers), |_| 0.05 * normal(&mut rng)))
            .collect();
        let side = |rng: &mut StdRng| {
            let loadings = Array2::from_shape_fn((FEATURES, hidden), |_| normal(rng));
            let mut x = phi.dot(&loadings);
            x.iter_mut().for_each(|v| *v += 0.3 * normal(rng));
            let mut units: Vec<usize> = (0..hidden).collect();
            units.shuffle(rng);
            let units = &units[..outliers.min(hidden)];
            for (o, &u) in units.iter().enumerate() {
                x.column_mut(u).assign(&outlier.column(o));
            }
            for (mut r, n) in x.rows_mut().into_iter().zip(norm.iter()) {
                r *= *n;
            }
            // Reading features: W = R (L^T / hidden), so W x ≈ R phi for a token's row x.
            let mats = (0..SYM_MATRICES)
                .map(|m| {
                    let own = Array2::from_shape_fn((neurons, FEATURES), |_| normal(rng));
                    let r = &readers[m] * share + own * (1.0 - share);
                    let mut w = r.dot(&loadings) / hidden as f32;
                    for (o, &u) in units.iter().enumerate() {
                        w.column_mut(u).assign(&out_w[m].column(o));
                    }
                    w.iter_mut().for_each(|v| *v += 0.05 * normal(rng));
                    let mut order: Vec<usize> = (0..neurons).collect();
                    order.shuffle(rng);
                    w.select(ndarray::Axis(0), &order)
                })
                .collect();
            (x, mats)
        };
        let reg = side(&mut rng);
        let sus = side(&mut rng);
        Self { reg, sus }
    }

    /// The symmetry line's score of the suspect against the registered model, computed by the
    /// detector's own functions (plain sketches: the simulated models have no norm gains).
    pub fn score(&self) -> f32 {
        use hallmark::fingerprint::invariant::{agreement, sketch};
        let reg: Vec<(Vec<f32>, Option<Vec<f32>>)> = self
            .reg
            .1
            .iter()
            .filter_map(|w| sketch(w, 1, &self.reg.0).map(|s| (s, None)))
            .collect();
        let sus: Vec<(usize, usize, Vec<f32>)> = self
            .sus
            .1
            .iter()
            .enumerate()
            .filter_map(|(i, w)| sketch(w, 1, &self.sus.0).map(|s| (i, 1, s)))
            .collect();
        agreement(&reg, &sus).score
    }

    /// The score of a disguised copy of the registered model: residual units permuted with
    /// sign flips and neurons permuted (the function is unchanged), plus `noise` relative
    /// Gaussian noise on every matrix (a fine-tune).
    pub fn copy_score(&self, noise: f32, seed: u64) -> f32 {
        use hallmark::fingerprint::invariant::{agreement, sketch};
        let mut rng = StdRng::seed_from_u64(seed);
        let h = self.reg.0.ncols();
        let mut perm: Vec<usize> = (0..h).collect();
        perm.shuffle(&mut rng);
        let signs: Vec<f32> = (0..h)
            .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let disguise = |m: &Array2<f32>| {
            let mut out = m.select(ndarray::Axis(1), &perm);
            for (mut c, s) in out.columns_mut().into_iter().zip(&signs) {
                c *= *s;
            }
            out
        };
        let x = disguise(&self.reg.0);
        let reg: Vec<(Vec<f32>, Option<Vec<f32>>)> = self
            .reg
            .1
            .iter()
            .filter_map(|w| sketch(w, 1, &self.reg.0).map(|s| (s, None)))
            .collect();
        let sus: Vec<(usize, usize, Vec<f32>)> = self
            .reg
            .1
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let mut d = disguise(w);
                let sd = (d.iter().map(|v| v * v).sum::<f32>() / d.len().max(1) as f32).sqrt();
                d.iter_mut()
                    .for_each(|v| *v += noise * sd * normal(&mut rng));
                let mut order: Vec<usize> = (0..d.nrows()).collect();
                order.shuffle(&mut rng);
                sketch(&d.select(ndarray::Axis(0), &order), 1, &x).map(|s| (i, 1, s))
            })
            .collect();
        agreement(&reg, &sus).score
    }
}

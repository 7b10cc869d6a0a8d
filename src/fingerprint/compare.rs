//! Testing a suspect against one fingerprint.
//!
//! **The null** (docs/fingerprint.md states it with its proof): the suspect was initialised
//! independently of the registered model, with weights whose law does not depend on how hidden
//! units are labelled, and then trained on anything (the same tokenizer and data included) by a
//! procedure that treats units alike (gradient methods, Adam, weight decay, dropout all do).
//! Then the suspect's residual-unit labels, and each feed-forward layer's neuron labels, are
//! uniformly random relative to the registered model's. Two **identity tests** ask whether units
//! sit where the registered model has them more often than random labels allow:
//!
//! 1. **Residual units.** Registered units `0..64` are matched to suspect units by absolute
//!    correlation of embedding columns over the fingerprint's token rows, keeping mutual best
//!    matches (`n` of them). `F` of them land on their own index. With `H` suspect units,
//!    `P(F >= f) <= C(n, f) (H - f)! / H!`.
//! 2. **Feed-forward neurons.** The registered probe units are aligned into the suspect through
//!    the token rows; registered feed-forward matrices are paired with suspect matrices by
//!    sub-Grams that do not depend on neuron order; registered neurons `0..64` are matched to the
//!    paired matrix's neurons on the aligned units. The fixed points of all matrices are combined
//!    by [`ffn_ln_p`]. This finds a copy whose residual space was permuted.
//!
//! The p-value is `2 min(p_res, p_ffn)` times the number of suspect embedding candidates.
//! Everything after it (lineage map, alignment report) is description.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ndarray::{s, Array1, Array2, Axis};
use rayon::prelude::*;
use serde_json::{json, Value};
use statrs::function::gamma::ln_gamma;

use super::extract::{gram, unit_columns};
use super::format::Fingerprint;
use super::invariant;
use super::model::{Embedding, Model};
use super::FingerprintError;
use crate::detect::{KeyTest, ScoreVerdict};

/// Registered hidden units tested by the residual identity test.
pub const TEST_UNITS: usize = 64;
/// Fewer shared token rows than this is too little to decide.
pub const MIN_ROWS: usize = 32;
/// Raw p-value below which the alignment and lineage map are worked out for the report.
pub const DESCRIBE_BELOW: f64 = 1e-6;
/// Sub-Gram correlation from which a registered matrix counts as found in the suspect.
pub const PROBE_MATCH: f32 = 0.5;
/// Token rows used by [`invariant_similarity`].
pub const INVARIANT_TOKENS: usize = 64;
/// Embedding candidates tried in the suspect (input embedding and untied output head).
pub const MAX_CANDIDATES: usize = 2;
/// Median correlation of the aligned probe units from which the feed-forward test is run (it
/// reads every suspect matrix, so it is skipped when the residual spaces visibly do not align;
/// skipping only makes the p-value larger).
pub const ALIGN_GATE: f32 = 0.5;
/// Token-geometry similarity ([`invariant_similarity`]) below which the symmetry-invariant line
/// is not computed: the suspect's embedding is then no orthogonal image of the registered one,
/// so no disguise of the kinds that line covers can explain it. A cost gate only (it reads
/// every suspect matrix once per token set).
pub const SYMMETRY_GATE: f32 = 0.3;

/// One suspect matrix axis read on the located probe units: `(matrix, axis, off-diagonal Gram,
/// the unit columns when the axis is neuron-like)`.
type MatrixRead = (usize, usize, Array1<f32>, Option<Array2<f32>>);

/// Decoded suspect embedding rows, keyed by (candidate, token ids).
type RowCache = HashMap<(usize, Vec<usize>), Arc<Array2<f32>>>;

/// A suspect's invariant sketches `(matrix, axis, sketch)`, keyed by (candidate, token ids).
type SketchCache = HashMap<(usize, Vec<usize>), Arc<Sketches>>;

/// A suspect model, mapped once and tested against many fingerprints.
pub struct Suspect {
    model: Model,
    embeddings: Vec<Embedding>,
    excluded: Vec<usize>,
    rows: Mutex<RowCache>,
    sketches: Mutex<SketchCache>,
}

impl std::fmt::Debug for Suspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspect")
            .field("embeddings", &self.embeddings)
            .finish()
    }
}

/// One identity test: registered units matched to suspect units (mutual best), and how many
/// landed on their own index.
#[derive(Clone, Debug)]
pub struct IdentityTest {
    /// Natural log of the conservative p-value `C(n, F) (N - F)! / N!`.
    pub ln_p: f64,
    /// Registered units tested.
    pub tested: usize,
    /// Mutual matches `(registered, suspect)`.
    pub pairs: Vec<(usize, usize)>,
    /// Matches on their own index (`F`).
    pub in_place: usize,
    /// Suspect units the matches were drawn from (`N`).
    pub labels: usize,
}

/// Where the registered probe units `0..u` sit in the suspect.
#[derive(Clone, Debug)]
pub struct Alignment {
    /// The suspect unit of each registered probe unit (best absolute correlation).
    pub units: Vec<usize>,
    /// Its sign.
    pub signs: Vec<f32>,
    /// Its absolute correlation.
    pub corr: Vec<f32>,
}

impl Alignment {
    /// Median absolute correlation of the aligned units.
    pub fn median_corr(&self) -> f32 {
        let mut c = self.corr.clone();
        c.sort_by(f32::total_cmp);
        c.get(c.len() / 2).copied().unwrap_or(0.0)
    }
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

/// Pearson correlations of every column of `reg` with every column of `sus` (same rows):
/// `reg.ncols() x sus.ncols()`.
pub fn correlations(reg: &Array2<f32>, sus: &Array2<f32>) -> Array2<f32> {
    standardize(reg).t().dot(&standardize(sus))
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

/// `ln [C(candidates, fixed) (labels - fixed)! / labels!]`, capped at 0: the chance that a
/// uniformly random labelling of `labels` units puts at least `fixed` of `candidates` matches
/// (distinct on both sides) on their own index (union bound over which ones).
pub fn fixed_point_ln_p(candidates: usize, fixed: usize, labels: usize) -> f64 {
    if fixed == 0 || fixed > candidates || fixed > labels {
        return 0.0;
    }
    (ln_choose(candidates, fixed) + ln_gamma((labels - fixed) as f64 + 1.0)
        - ln_gamma(labels as f64 + 1.0))
    .min(0.0)
}

/// The identity test from a correlation matrix `c` (registered units x suspect units).
pub fn identity_test(c: &Array2<f32>) -> IdentityTest {
    let pairs: Vec<(usize, usize)> = mutual(c)
        .into_iter()
        .enumerate()
        .filter_map(|(i, j)| j.map(|j| (i, j)))
        .collect();
    let in_place = pairs.iter().filter(|(i, j)| i == j).count();
    let labels = c.ncols();
    IdentityTest {
        ln_p: fixed_point_ln_p(pairs.len(), in_place, labels),
        tested: c.nrows(),
        pairs,
        in_place,
        labels,
    }
}

/// The residual identity test of suspect token rows `zs` against registered rows `zr` (same
/// token ids, same order), and the alignment of registered probe units `0..u` it implies.
pub fn residual_test(zs: &Array2<f32>, zr: &Array2<f32>, u: usize) -> (IdentityTest, Alignment) {
    let k = TEST_UNITS.min(zr.ncols()).max(u.min(zr.ncols()));
    let c = correlations(&zr.slice(s![.., ..k]).to_owned(), zs);
    let mut al = Alignment {
        units: Vec::with_capacity(u),
        signs: Vec::with_capacity(u),
        corr: Vec::with_capacity(u),
    };
    for row in c.rows().into_iter().take(u) {
        let j = argmax(row.mapv(f32::abs).iter());
        al.units.push(j);
        al.signs.push(if row[j] < 0.0 { -1.0 } else { 1.0 });
        al.corr.push(row[j].abs());
    }
    (identity_test(&c), al)
}

/// The feed-forward identity test of registered neurons `reg` (`neurons x u`, on probe units
/// `0..u`) against a suspect matrix's neurons `sus` (`neurons' x u`, on the aligned units).
pub fn neuron_test(reg: &Array2<f32>, sus: &Array2<f32>) -> IdentityTest {
    identity_test(&correlations(&reg.t().to_owned(), &sus.t().to_owned()))
}

/// The combined feed-forward p-value (natural log) over per-matrix identity tests. Two bounds,
/// both valid whichever matrices share a neuron labelling (a layer's gate, up and down
/// matrices do; layers do not), and the smaller is taken at the price of a factor 2:
/// * Bonferroni over the `K` matrices: `K min_m p_m`;
/// * pooled: `D` distinct registered indices in place among `P` matches in all, on the fewest
///   suspect neurons `N` of any matrix: `C(P, D) (N - D)! / N!`. Fixed points in independently
///   labelled layers are independent events, each at most as likely as under one labelling.
pub fn ffn_ln_p(tests: &[&IdentityTest]) -> f64 {
    if tests.is_empty() {
        return 0.0;
    }
    let single = tests.iter().map(|t| t.ln_p).fold(0.0, f64::min) + (tests.len() as f64).ln();
    let matches: usize = tests.iter().map(|t| t.pairs.len()).sum();
    let distinct: BTreeSet<usize> = tests
        .iter()
        .flat_map(|t| t.pairs.iter().filter(|(i, j)| i == j).map(|(i, _)| *i))
        .collect();
    let labels = tests.iter().map(|t| t.labels).min().unwrap_or(0);
    let pooled = fixed_point_ln_p(matches, distinct.len(), labels);
    (std::f64::consts::LN_2 + single.min(pooled)).min(0.0)
}

/// `ln p` of the whole test from its two parts: `2 min(p_res, p_ffn)`.
pub fn combined_ln_p(residual: f64, ffn: f64) -> f64 {
    (std::f64::consts::LN_2 + residual.min(ffn)).min(0.0)
}

/// What the probe pass found: per registered probe, the suspect matrix it was paired with, and
/// the feed-forward identity tests.
struct ProbePass {
    /// `(registered probe, suspect matrix, suspect axis, score)` for every paired probe.
    paired: Vec<(usize, usize, usize, f32)>,
    /// `(registered FFN sample, suspect matrix, test)`.
    ffn: Vec<(usize, usize, IdentityTest)>,
}

/// One candidate's evidence.
struct Candidate {
    c: usize,
    keep: Vec<usize>,
    residual: IdentityTest,
    alignment: Alignment,
    pass: Option<ProbePass>,
    ffn_ln_p: f64,
    ln_p: f64,
}

/// A suspect's invariant sketches: `(matrix, axis, sketch)` for every residual-sized matrix axis.
type Sketches = Vec<(usize, usize, Vec<f32>)>;

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
            sketches: Mutex::new(HashMap::new()),
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

    /// The suspect's invariant sketches on candidate `c`'s rows of `tokens`, computed once per
    /// token set (a registry of one architecture shares it).
    fn sketches(&self, c: usize, tokens: &[usize]) -> Result<Arc<Sketches>, FingerprintError> {
        let key = (c, tokens.to_vec());
        if let Some(s) = self.sketches.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(s);
        }
        let x = self.rows(c, tokens)?;
        let s = Arc::new(invariant::suspect_sketches(
            &self.model,
            &self.excluded,
            &x,
        )?);
        if let Ok(mut m) = self.sketches.lock() {
            m.insert(key, s.clone());
        }
        Ok(s)
    }

    /// The symmetry-invariant line: the best agreement over the suspect's embedding
    /// candidates, with the candidate it came from; `None` when the fingerprint has no sketch
    /// (version 2) or no candidate holds its tokens. [`Suspect::test`] runs it only when the
    /// identity tests do not decide and the token geometry passes [`SYMMETRY_GATE`]; this
    /// entry point runs it unconditionally (impostor measurements).
    pub fn symmetry(
        &self,
        fp: &Fingerprint,
    ) -> Result<Option<(invariant::Agreement, usize)>, FingerprintError> {
        let Some(inv) = &fp.invariant else {
            return Ok(None);
        };
        let reg = fp.sketches()?;
        if reg.is_empty() {
            return Ok(None);
        }
        let mut best: Option<(invariant::Agreement, usize)> = None;
        for (c, e) in self.embeddings.iter().enumerate() {
            if inv.tokens.iter().any(|&t| t >= e.vocab) {
                continue;
            }
            let sus = self.sketches(c, &inv.tokens)?;
            let a = invariant::agreement(&reg, &sus);
            if best.as_ref().is_none_or(|b| a.score > b.0.score) {
                best = Some((a, c));
            }
        }
        Ok(best)
    }

    fn name_of(&self, i: usize) -> String {
        self.model
            .view(i)
            .map(|v| v.name.to_string())
            .unwrap_or_default()
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
        let cands = self.embeddings.len() as f64;
        let mut best: Option<Candidate> = None;
        for c in 0..self.embeddings.len() {
            let e = &self.embeddings[c];
            let keep: Vec<usize> = (0..fp.embedding.rows.len())
                .filter(|&k| fp.embedding.rows[k] < e.vocab)
                .collect();
            let idx: Vec<usize> = keep.iter().map(|&k| fp.embedding.rows[k]).collect();
            let zs = self.rows(c, &idx)?;
            let zr = zr_all.select(Axis(0), &keep);
            let (residual, alignment) = residual_test(&zs, &zr, fp.probe_units);
            let decisive = combined_ln_p(residual.ln_p, 0.0) + cands.ln() <= DESCRIBE_BELOW.ln();
            let pass =
                if keep.len() >= MIN_ROWS && (decisive || alignment.median_corr() >= ALIGN_GATE) {
                    Some(self.probe_pass(fp, e, &alignment)?)
                } else {
                    None
                };
            let ffn_ln_p = pass
                .as_ref()
                .map(|p| ffn_ln_p(&p.ffn.iter().map(|(_, _, t)| t).collect::<Vec<_>>()))
                .unwrap_or(0.0);
            let ln_p = combined_ln_p(residual.ln_p, ffn_ln_p);
            if best.as_ref().is_none_or(|b| ln_p < b.ln_p) {
                best = Some(Candidate {
                    c,
                    keep,
                    residual,
                    alignment,
                    pass,
                    ffn_ln_p,
                    ln_p,
                });
            }
        }
        let Some(b) = best else {
            return Err(FingerprintError::Internal("no candidate"));
        };
        let zs = self.rows(
            b.c,
            &b.keep
                .iter()
                .map(|&k| fp.embedding.rows[k])
                .collect::<Vec<_>>(),
        )?;
        let zr = zr_all.select(Axis(0), &b.keep);
        // The similarity is description, not part of the p-value: report the most similar
        // candidate (a rotated copy has no p-value winner to pick it out).
        let mut inv = invariant_similarity(&zs, &zr);
        for (c, e) in self.embeddings.iter().enumerate() {
            if c == b.c {
                continue;
            }
            let keep: Vec<usize> = (0..fp.embedding.rows.len())
                .filter(|&k| fp.embedding.rows[k] < e.vocab)
                .collect();
            let idx: Vec<usize> = keep.iter().map(|&k| fp.embedding.rows[k]).collect();
            let zc = self.rows(c, &idx)?;
            inv = inv.max(invariant_similarity(&zc, &zr_all.select(Axis(0), &keep)));
        }
        // Bonferroni over the suspect's embedding candidates.
        let ln_p = (b.ln_p + cands.ln()).min(0.0);
        let p = ln_p.exp().max(f64::MIN_POSITIVE);
        let e = &self.embeddings[b.c];
        let log10 = |x: f64| x / std::f64::consts::LN_10;
        let ffn = match &b.pass {
            Some(pass) => json!({
                "matrices_tested": pass.ffn.len(),
                "neurons_matched": pass.ffn.iter().map(|(_, _, t)| t.pairs.len()).sum::<usize>(),
                "neurons_in_place": pass.ffn.iter().map(|(_, _, t)| t.in_place).sum::<usize>(),
                "log10_p": log10(b.ffn_ln_p),
            }),
            None => json!(null),
        };
        let mut kt = KeyTest::new(name, "fingerprint", p)
            .with("log10_p_raw", log10(ln_p))
            .with("rows_scored", b.keep.len())
            .with(
                "residual",
                json!({
                    "units_tested": b.residual.tested,
                    "units_matched": b.residual.pairs.len(),
                    "units_in_place": b.residual.in_place,
                    "suspect_units": b.residual.labels,
                    "log10_p": log10(b.residual.ln_p),
                }),
            )
            .with("ffn", ffn)
            .with("alignment_median_corr", b.alignment.median_corr())
            .with("invariant_similarity", inv)
            .with(
                "embedding",
                json!({"registered": fp.embedding.tensor, "suspect": self.name_of(e.matrix),
                       "suspect_transposed": e.transposed != fp.embedding.transposed}),
            );
        if b.keep.len() < MIN_ROWS || fp.hidden < 2 {
            kt.decided = false;
            kt.details.insert(
                "reason".into(),
                json!("too few shared token rows to decide"),
            );
            return Ok(kt);
        }
        // The symmetry-invariant line, when the identity tests do not already decide.
        if p > DESCRIBE_BELOW {
            let sym = if inv >= SYMMETRY_GATE {
                self.symmetry(fp)?
            } else {
                None
            };
            let (verdict, detail) = self.symmetry_detail(fp, sym, inv, &b.alignment, &zs, &zr);
            kt.score_verdict = verdict;
            kt.details.insert("symmetry".into(), detail);
        }
        if p <= DESCRIBE_BELOW {
            let pass = match b.pass {
                Some(pass) => pass,
                None => self.probe_pass(fp, e, &b.alignment)?,
            };
            let alignment = self.describe_alignment(fp, e, &zs, &zr, &b.alignment);
            kt.details.insert("alignment".into(), alignment);
            for (k, v) in self.lineage(fp, &pass) {
                kt.details.insert(k, v);
            }
        }
        Ok(kt)
    }

    /// The symmetry line's verdict and its report: score, thresholds, the impostor figures they
    /// rest on, and which symmetries the suspect shows (a smaller residual: pruning; units that
    /// correlate one to one with the registered ones: a permutation, else a rotation; token rows
    /// of another length: scaling).
    fn symmetry_detail(
        &self,
        fp: &Fingerprint,
        sym: Option<(invariant::Agreement, usize)>,
        inv: f32,
        al: &Alignment,
        zs: &Array2<f32>,
        zr: &Array2<f32>,
    ) -> (Option<ScoreVerdict>, Value) {
        let (largest, pairs) = invariant::LARGEST_IMPOSTOR;
        let Some((a, c)) = sym else {
            let why = if fp.invariant.is_none() {
                "the fingerprint has no invariant sketch (format version 2: run `hallmark \
                 fingerprint` again to add it)"
            } else if inv < SYMMETRY_GATE {
                "the suspect's token geometry is unlike the registered model's"
            } else {
                "the suspect's vocabulary does not hold the sketch's tokens"
            };
            let verdict = (fp.invariant.is_some()).then_some(ScoreVerdict::NoMatch);
            return (verdict, json!({"computed": false, "reason": why}));
        };
        let verdict = if a.score >= invariant::MATCH_SCORE {
            ScoreVerdict::Match
        } else if a.score >= invariant::UNDECIDED_SCORE {
            ScoreVerdict::Undecided
        } else {
            ScoreVerdict::NoMatch
        };
        let e = &self.embeddings[c];
        let mut symmetries = Vec::new();
        if e.hidden < fp.hidden {
            symmetries.push("pruning");
        }
        if al.median_corr() >= 0.9 {
            symmetries.push("permutation");
        } else {
            symmetries.push("rotation");
        }
        let rms =
            |z: &Array2<f32>| (z.iter().map(|v| v * v).sum::<f32>() / z.len().max(1) as f32).sqrt();
        let ratio = rms(zs) / rms(zr).max(f32::MIN_POSITIVE);
        if (ratio - 1.0).abs() > 0.05 {
            symmetries.push("scaling");
        }
        let folded = a.best.iter().filter(|b| b.2).count();
        let agreeing = a
            .best
            .iter()
            .filter(|b| b.0 >= invariant::MATCH_SCORE)
            .count();
        let mut layers: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        if let Some(inv) = &fp.invariant {
            for (k, b) in inv.sketches.iter().zip(&a.best) {
                let l = layers.entry(layer_of(&k.tensor)).or_default();
                l.1 += 1;
                if b.0 >= invariant::MATCH_SCORE {
                    l.0 += 1;
                }
            }
        }
        let layers_agreeing = layers.values().filter(|(a, n)| 2 * a > *n).count();
        let detail = json!({
            "computed": true,
            "score": a.score,
            "verdict": match verdict {
                ScoreVerdict::Match => "match",
                ScoreVerdict::Undecided => "undecided",
                ScoreVerdict::NoMatch => "no match",
            },
            "match_from": invariant::MATCH_SCORE,
            "undecided_from": invariant::UNDECIDED_SCORE,
            "largest_impostor_score": largest,
            "impostor_pairs": pairs,
            "symmetries": symmetries,
            "matrices_agreeing": format!("{agreeing} of {}", a.best.len()),
            "layers_agreeing": format!("{layers_agreeing} of {}", layers.len()),
            "folded_norm_gains": folded,
            "suspect_embedding": self.name_of(e.matrix),
        });
        (Some(verdict), detail)
    }

    /// Read the aligned probe units from every suspect matrix axis of the suspect's hidden
    /// size, pair registered probes with suspect matrices by their sub-Grams (mutual best, at
    /// least [`PROBE_MATCH`]; both orientations tried, so transposed, renamed, reordered and
    /// dropped layers are found) and run the feed-forward identity test on every registered
    /// feed-forward sample whose matrix was found.
    fn probe_pass(
        &self,
        fp: &Fingerprint,
        e: &Embedding,
        al: &Alignment,
    ) -> Result<ProbePass, FingerprintError> {
        let mut jobs = Vec::new();
        for i in 0..self.model.len() {
            if self.excluded.contains(&i) {
                continue;
            }
            let (rr, cc) = self.model.shape(i);
            for (axis, n) in [(0, rr), (1, cc)] {
                if n == e.hidden {
                    jobs.push((i, axis, if axis == 0 { cc } else { rr }));
                }
            }
        }
        // Neuron-like axes (longer than hidden, as feed-forward ones are) keep their columns
        // for the neuron test; the rest only need the Gram.
        let reads: Vec<MatrixRead> = jobs
            .par_iter()
            .map(|&(i, axis, other)| {
                let x = unit_columns(&self.model, i, axis, &al.units, &al.signs)?;
                let g = off_diagonal(&gram(&x));
                Ok((i, axis, g, (other != e.hidden).then_some(x)))
            })
            .collect::<Result<_, FingerprintError>>()?;
        let reg_grams = (0..fp.probes.len())
            .map(|pi| fp.probe_gram(pi).map(|g| off_diagonal(&g)))
            .collect::<Result<Vec<_>, _>>()?;
        let score = Array2::from_shape_fn((reg_grams.len(), reads.len()), |(a, b)| {
            pearson(&reg_grams[a], &reads[b].2)
        });
        let best_reg: Vec<usize> = score
            .columns()
            .into_iter()
            .map(|c| argmax(c.iter()))
            .collect();
        let mut paired = Vec::new();
        let mut by_probe: HashMap<usize, usize> = HashMap::new();
        if !reads.is_empty() {
            for pi in 0..fp.probes.len() {
                let gi = argmax(score.row(pi).iter());
                let sc = score[[pi, gi]];
                if sc >= PROBE_MATCH && best_reg[gi] == pi {
                    paired.push((pi, reads[gi].0, reads[gi].1, sc));
                    by_probe.insert(pi, gi);
                }
            }
        }
        let mut ffn = Vec::new();
        for (ni, n) in fp.ffn.iter().enumerate() {
            let Some(pi) = fp
                .probes
                .iter()
                .position(|p| p.tensor == n.tensor && p.axis == n.axis)
            else {
                continue;
            };
            let Some(&gi) = by_probe.get(&pi) else {
                continue;
            };
            let Some(x) = &reads[gi].3 else {
                continue;
            };
            let reg = fp.neuron_block(ni)?;
            ffn.push((ni, reads[gi].0, neuron_test(&reg, x)));
        }
        Ok(ProbePass { paired, ffn })
    }

    /// The alignment report: hidden permutation, sign flips, scale, vocabulary sizes.
    fn describe_alignment(
        &self,
        fp: &Fingerprint,
        e: &Embedding,
        zs: &Array2<f32>,
        zr: &Array2<f32>,
        al: &Alignment,
    ) -> Value {
        let sd = |v: ndarray::ArrayView1<f32>| {
            let m = v.mean().unwrap_or(0.0);
            v.mapv(|x| (x - m) * (x - m)).mean().unwrap_or(0.0).sqrt()
        };
        let mut ratio: Vec<f32> = al
            .units
            .iter()
            .enumerate()
            .filter_map(|(k, &j)| {
                let b = sd(zr.column(k));
                (b > 0.0).then(|| sd(zs.column(j)) / b)
            })
            .collect();
        ratio.sort_by(f32::total_cmp);
        let mut distinct = al.units.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let identity = al.units.iter().enumerate().filter(|(k, j)| k == *j).count();
        json!({
            "hidden": {"registered": fp.hidden, "suspect": e.hidden},
            "vocab": {"registered": fp.vocab, "suspect": e.vocab,
                      "added": e.vocab as i64 - fp.vocab as i64},
            "probe_units_aligned": distinct.len(),
            "hidden_permuted": identity < al.units.len(),
            "units_in_place": identity,
            "sign_flips": al.signs.iter().filter(|s| **s < 0.0).count(),
            "scale": ratio.get(ratio.len() / 2).copied().unwrap_or(f32::NAN),
            "median_unit_correlation": al.median_corr(),
        })
    }

    /// Which registered matrices and layers were found where, and per layer how many
    /// feed-forward neurons kept their place: the lineage map.
    fn lineage(&self, fp: &Fingerprint, pass: &ProbePass) -> serde_json::Map<String, Value> {
        let mut reg_layers: HashMap<String, (usize, usize)> = HashMap::new();
        let mut votes: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for p in &fp.probes {
            reg_layers.entry(layer_of(&p.tensor)).or_default().1 += 1;
        }
        let mut matched = Vec::new();
        for &(pi, i, axis, score) in &pass.paired {
            let p = &fp.probes[pi];
            let layer = layer_of(&p.tensor);
            reg_layers.entry(layer.clone()).or_default().0 += 1;
            let sname = self.name_of(i);
            *votes
                .entry(layer)
                .or_default()
                .entry(layer_of(&sname))
                .or_default() += 1;
            matched.push(json!({
                "registered": p.tensor, "suspect": sname, "score": score,
                "transposed": axis != p.axis,
            }));
        }
        let mut ffn_layers: HashMap<String, (usize, usize, usize)> = HashMap::new();
        for (ni, _, t) in &pass.ffn {
            let l = ffn_layers.entry(layer_of(&fp.ffn[*ni].tensor)).or_default();
            l.0 += t.in_place;
            l.1 += t.pairs.len();
            l.2 += t.tested;
        }
        let mut layer_names: Vec<&String> = reg_layers.keys().collect();
        layer_names.sort_by_key(|l| (l.parse::<usize>().unwrap_or(usize::MAX), (*l).clone()));
        let mut layer_map = serde_json::Map::new();
        let mut unmatched = Vec::new();
        let mut lineage = Vec::new();
        for l in layer_names {
            let to = votes.get(l).and_then(|v| {
                v.iter()
                    .max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone())))
                    .map(|(n, _)| n.clone())
            });
            match &to {
                Some(to) => {
                    layer_map.insert(l.clone(), json!(to));
                }
                None => unmatched.push(l.clone()),
            }
            let (found, total) = reg_layers[l];
            let mut entry = json!({
                "registered_layer": l,
                "suspect_layer": to,
                "matrices_found": format!("{found} of {total}"),
            });
            if let Some((in_place, matched, tested)) = ffn_layers.get(l) {
                entry["ffn_neurons_in_place"] = json!(format!("{in_place} of {tested}"));
                // Neurons found but elsewhere: the layer's neurons were permuted.
                entry["ffn_permuted"] = json!(*matched > 0 && in_place * 2 < *matched);
            }
            lineage.push(entry);
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
        out.insert("lineage".into(), Value::Array(lineage));
        out.insert("matched_tensors".into(), Value::Array(matched));
        out
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
    use rand::{Rng, SeedableRng};

    #[test]
    fn identical_rows_are_all_in_place() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let z = Array2::from_shape_fn((128, 80), |_| rng.gen_range(-1.0f32..1.0));
        let (t, al) = residual_test(&z, &z, 32);
        assert_eq!(t.tested, 64);
        assert_eq!(t.in_place, 64);
        assert!(t.ln_p < -200.0, "{}", t.ln_p);
        assert_eq!(al.units, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn permuted_rows_match_but_are_not_in_place() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let z = Array2::from_shape_fn((256, 96), |_| rng.gen_range(-1.0f32..1.0));
        let perm: Vec<usize> = (0..96).map(|k| (k * 37 + 11) % 96).collect();
        let zp = z.select(Axis(1), &perm);
        let (t, al) = residual_test(&zp, &z, 32);
        assert_eq!(t.pairs.len(), 64);
        assert!(t.in_place <= 1, "{t:?}");
        assert!(t.ln_p > (1e-3f64).ln());
        // The alignment recovers the permutation all the same.
        for (k, &j) in al.units.iter().enumerate() {
            assert_eq!(perm[j], k);
        }
    }

    #[test]
    fn fixed_point_bound_is_one_over_k_factorial_when_square() {
        // C(n, k) (n-k)!/n! = 1/k!
        let n = 50usize;
        for k in 1..6 {
            let lp = fixed_point_ln_p(n, k, n);
            assert!((lp + ln_gamma(k as f64 + 1.0)).abs() < 1e-9);
        }
        assert_eq!(fixed_point_ln_p(10, 0, 100), 0.0);
    }

    #[test]
    fn ffn_bound_takes_the_smaller_part_and_pays_two() {
        let t = |pairs: Vec<(usize, usize)>, labels: usize| {
            let in_place = pairs.iter().filter(|(i, j)| i == j).count();
            IdentityTest {
                ln_p: fixed_point_ln_p(pairs.len(), in_place, labels),
                tested: 64,
                pairs,
                in_place,
                labels,
            }
        };
        let full = t((0..64).map(|i| (i, i)).collect(), 1000);
        let none = t((0..64).map(|i| (i, i + 100)).collect(), 1000);
        let lp = ffn_ln_p(&[&full, &none]);
        assert!((lp - (full.ln_p + 2f64.ln() + 2f64.ln())).abs() < 1e-9);
        // The same four indices in place in three matrices count once in the pooled bound.
        let four = || t((0..4).map(|i| (i, i)).collect(), 1000);
        let (a, b, c) = (four(), four(), four());
        let pooled = fixed_point_ln_p(12, 4, 1000) + 2f64.ln();
        let single = a.ln_p + 3f64.ln() + 2f64.ln();
        assert!((ffn_ln_p(&[&a, &b, &c]) - pooled.min(single)).abs() < 1e-9);
        assert_eq!(ffn_ln_p(&[]), 0.0);
    }

    #[test]
    fn layer_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), "12");
        assert_eq!(layer_of("blk.3.attn_q.weight"), "3");
        assert_eq!(layer_of("lm_head.weight"), "-");
    }
}

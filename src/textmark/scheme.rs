//! The watermark schemes behind one trait: how each picks a token with the keyed PRF inside the
//! sampler, and how each scores a (context, token) pair at detection.
//!
//! * [`Kgw`]: green list of fraction γ, bias δ (Kirchenbauer et al. 2023). The biased
//!   distribution `p'(v) ∝ p(v)·e^{δ·green(v)}` (p after temperature, top-k, top-p) is sampled
//!   exactly by rejection: propose from p, keep a green token, keep a red one with probability
//!   e^{-δ}. Only the proposed tokens are hashed (≤ e^δ on average, capped, then an exact pass),
//!   so the cost does not grow with the vocabulary.
//! * [`Gumbel`]: token = argmax u_v^{1/p_v} (Aaronson), u_v from the PRF. Exact for any candidate
//!   set: the candidates are split into a head (p ≥ 2^-12) and a tail; a keyed uniform picks the
//!   tail with probability equal to its mass, and the race runs within the chosen part. Either way
//!   each token wins with probability exactly p_v, and only the head (≤ 4096 tokens) is hashed
//!   unless the tail is chosen. A context already used in this sequence falls back to ordinary
//!   sampling, so the output distribution stays exactly p.

use std::collections::HashSet;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::prf::{unit_open, unit_open_complement, Prf, Seed};
use super::sampling::{argmax, Candidates, SamplingParams, TokenSampler};
use crate::stats;

/// A text watermark scheme.
pub trait Scheme: Send + Sync + std::fmt::Debug {
    /// The scheme's name in key files (`kgw`, `gumbel`).
    fn name(&self) -> &'static str;
    /// Pick the next token. `seed` is the context's PRF seed, `None` when the context is shorter
    /// than the window or was already used (then sample ordinarily). `cands` holds the filtered
    /// distribution unless `params.temperature == 0` (greedy), where `logits` are used directly.
    fn choose(
        &self,
        seed: Option<Seed>,
        logits: &[f32],
        cands: &mut Candidates,
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> u32;
    /// Whether a context must be used at most once per sequence (distortion-free schemes).
    fn once_per_context(&self) -> bool {
        false
    }
    /// The detection score of a token whose PRF value is `value`.
    fn score(&self, value: u64) -> f64;
    /// The exact null p-value of a score sum `sum` over `n` distinct (context, token) pairs.
    fn p_value(&self, sum: f64, n: u64) -> f64;
    /// The null mean of one score.
    fn null_mean(&self) -> f64;
}

/// KGW green-list watermark.
#[derive(Clone, Debug)]
pub struct Kgw {
    gamma: f64,
    delta: f64,
    /// A value is green when below this threshold: P = thr / 2^64 = γ (to 2^-64).
    thr: u64,
    accept_red: f64,
}

/// Candidate sets up to this size are biased exactly (every candidate hashed).
const KGW_EXACT_MAX: usize = 64;
/// Proposals before the rejection sampler switches to the exact pass.
const KGW_MAX_PROPOSALS: usize = 64;

impl Kgw {
    /// γ in (0, 1), δ ≥ 0.
    pub fn new(gamma: f64, delta: f64) -> Self {
        let thr = (gamma * 18_446_744_073_709_551_616.0) as u64;
        Self {
            gamma,
            delta,
            thr,
            accept_red: (-delta).exp(),
        }
    }
    /// Green-list fraction γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
    /// Bias δ.
    pub fn delta(&self) -> f64 {
        self.delta
    }
    /// Whether token `v` is green in the context of `seed`.
    #[inline(always)]
    pub fn green(&self, seed: &Seed, v: u32) -> bool {
        seed.value(v) < self.thr
    }
}

impl Scheme for Kgw {
    fn name(&self) -> &'static str {
        "kgw"
    }

    fn choose(
        &self,
        seed: Option<Seed>,
        logits: &[f32],
        cands: &mut Candidates,
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> u32 {
        if params.temperature <= 0.0 {
            let Some(seed) = seed else {
                return argmax(logits);
            };
            // argmax(l + δ·green): only tokens within δ of the maximum can win.
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut best = (f64::NEG_INFINITY, 0u32);
            for (v, &l) in logits.iter().enumerate() {
                let l = l as f64;
                if l >= m - self.delta {
                    let b = l + if self.green(&seed, v as u32) {
                        self.delta
                    } else {
                        0.0
                    };
                    if b > best.0 {
                        best = (b, v as u32);
                    }
                }
            }
            return best.1;
        }
        let Some(seed) = seed else {
            return cands.draw(rng.gen::<f64>());
        };
        if cands.len() > KGW_EXACT_MAX {
            for _ in 0..KGW_MAX_PROPOSALS {
                let v = cands.draw(rng.gen::<f64>());
                if self.green(&seed, v) || rng.gen::<f64>() < self.accept_red {
                    return v;
                }
            }
        }
        // Exact pass: every candidate's weight w·e^{δ·green}.
        let boost = self.delta.exp();
        let biased = |i: usize| {
            let w = cands.weight(i) as f64;
            if self.green(&seed, cands.id(i)) {
                w * boost
            } else {
                w
            }
        };
        let total: f64 = (0..cands.len()).map(biased).sum();
        let target = rng.gen::<f64>() * total;
        let mut acc = 0.0;
        for i in 0..cands.len() {
            acc += biased(i);
            if target < acc {
                return cands.id(i);
            }
        }
        cands.id(cands.len().saturating_sub(1))
    }

    fn score(&self, value: u64) -> f64 {
        if value < self.thr {
            1.0
        } else {
            0.0
        }
    }

    fn p_value(&self, sum: f64, n: u64) -> f64 {
        stats::binomial_sf(sum.round() as u64, n, self.gamma)
    }

    fn null_mean(&self) -> f64 {
        self.gamma
    }
}

/// Gumbel-max (exponential minimum) distortion-free watermark.
#[derive(Clone, Debug, Default)]
pub struct Gumbel;

/// Candidates at or above this probability form the head of the Gumbel race.
const GUMBEL_HEAD_P: f64 = 1.0 / 4096.0;

impl Gumbel {
    /// The winner of the race argmin (−ln u_v)/w_v over the candidates `idx` yields for which
    /// `keep(w_v)` holds, whose weights are all at most `w_cap`.
    fn race(
        seed: &Seed,
        cands: &Candidates,
        idx: impl Iterator<Item = usize>,
        keep: impl Fn(f64) -> bool,
        w_cap: f64,
    ) -> Option<u32> {
        let mut best = f64::INFINITY;
        let mut arg = None;
        // A value below `floor` has 1 - u >= best·w_cap >= best·w, hence -ln u >= best·w: it
        // cannot win. One integer comparison rules out almost every candidate.
        let mut floor = 0u64;
        for i in idx {
            let v = cands.id(i);
            let x = seed.value(v);
            if x < floor {
                continue;
            }
            let w = cands.weight(i) as f64;
            // Zero (or NaN) weights never win; `keep` says whether i is in this race at all.
            if w.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !keep(w) {
                continue;
            }
            // -ln u >= 1 - u: most survivors are still ruled out without a logarithm.
            let c = unit_open_complement(x);
            if c >= best * w {
                continue;
            }
            let e = -unit_open(x).ln();
            if e < best * w {
                best = e / w;
                arg = Some(v);
                let margin = 1.0 - best * w_cap - 1e-9;
                floor = if margin > 0.0 {
                    (margin * 18_446_744_073_709_551_616.0) as u64
                } else {
                    0
                };
            }
        }
        arg
    }
}

impl Scheme for Gumbel {
    fn name(&self) -> &'static str {
        "gumbel"
    }

    fn choose(
        &self,
        seed: Option<Seed>,
        logits: &[f32],
        cands: &mut Candidates,
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> u32 {
        if params.temperature <= 0.0 {
            // Greedy decoding has no randomness to replace: nothing to watermark.
            return argmax(logits);
        }
        let Some(seed) = seed else {
            return cands.draw(rng.gen::<f64>());
        };
        // Head: candidates with p >= 2^-12 (at most 4096). The keyed split picks the tail with
        // probability equal to its mass, so every token still wins with probability p_v.
        let thr = (cands.total() * GUMBEL_HEAD_P) as f32;
        let mut head = Vec::new();
        cands.indices_at_least(thr, &mut head);
        let head_mass: f64 = head.iter().map(|&i| cands.weight(i) as f64).sum();
        let tail = ((cands.total() - head_mass) / cands.total()).max(0.0);
        let won = if head.len() == cands.len() || seed.split_uniform() >= tail {
            Self::race(&seed, cands, head.iter().copied(), |_| true, 1.0)
        } else {
            let thr = thr as f64;
            Self::race(&seed, cands, 0..cands.len(), |w| w < thr, thr)
        };
        won.unwrap_or_else(|| cands.draw(rng.gen::<f64>()))
    }

    fn once_per_context(&self) -> bool {
        true
    }

    fn score(&self, value: u64) -> f64 {
        -unit_open_complement(value).ln()
    }

    fn p_value(&self, sum: f64, n: u64) -> f64 {
        stats::gamma_sf(sum, n as f64)
    }

    fn null_mean(&self) -> f64 {
        1.0
    }
}

/// A [`TokenSampler`] that applies a keyed scheme at every step.
pub struct WatermarkSampler {
    scheme: Arc<dyn Scheme>,
    prf: Arc<Prf>,
    params: SamplingParams,
    rng: StdRng,
    cands: Candidates,
    used: HashSet<u64>,
}

impl WatermarkSampler {
    /// A sampler for one generated sequence; the same `seed`, key and logits give the same tokens.
    pub fn new(scheme: Arc<dyn Scheme>, prf: Arc<Prf>, params: SamplingParams, seed: u64) -> Self {
        Self {
            scheme,
            prf,
            params,
            rng: StdRng::seed_from_u64(seed),
            cands: Candidates::new(),
            used: HashSet::new(),
        }
    }
}

impl TokenSampler for WatermarkSampler {
    fn next_token(&mut self, context: &[u32], logits: &[f32]) -> u32 {
        let mut seed = self.prf.seed(context);
        if self.params.temperature > 0.0 {
            self.cands.fill(logits, &self.params);
            if let Some(s) = seed {
                if self.scheme.once_per_context() && !self.used.insert(s.id()) {
                    seed = None;
                }
            }
        }
        self.scheme
            .choose(seed, logits, &mut self.cands, &self.params, &mut self.rng)
    }
}

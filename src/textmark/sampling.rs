//! The sampling seam: every generation loop asks a [`TokenSampler`] for the next token, given the
//! context so far and the model's raw logits. The plain sampler and every watermark scheme
//! implement it, so temperature, top-k and top-p compose with any watermark.
//!
//! [`Candidates`] turns logits into the filtered next-token distribution in O(V): no sort of the
//! whole vocabulary (top-k keeps a small buffer above a rising threshold; top-p sorts only the
//! tokens in the probability buckets that can reach the nucleus), and a vectorisable `exp`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::generate::kernels::Kernel;

/// The kernel the samplers' vocabulary passes use (and [`super::strided`]): `HALLMARK_KERNEL`
/// if set and usable here, else the fastest this CPU runs. An unusable `HALLMARK_KERNEL` is
/// reported where a model loads; here it means "portable".
pub(crate) fn sampling_kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| Kernel::from_env().unwrap_or(Kernel::Scalar))
}

/// Sampling parameters shared by every scheme.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

/// Picks the next token. Called once per generation step.
///
/// Make one sampler per generated sequence: watermarking samplers remember which contexts they
/// have used within the sequence.
pub trait TokenSampler: Send {
    /// `context`: every token id so far (prompt, then generated); `logits`: raw next-token logits
    /// over the whole vocabulary (finite values). Returns the chosen token id.
    fn next_token(&mut self, context: &[u32], logits: &[f32]) -> u32;
}

/// The filtered next-token distribution after temperature, top-k and top-p: token ids and their
/// weights (unnormalised probabilities; the most likely token has weight 1). Order: most likely
/// first when top-p was applied, otherwise an unspecified but deterministic order. Buffers are
/// reused from step to step, and every pass over the vocabulary is a straight loop that the
/// compiler vectorises.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// Token ids; empty means "every token, id = index" (no filter).
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// Cumulative weight at the end of each block of [`BLOCK`] candidates.
    cum: Vec<f64>,
    total: f64,
    scratch: Vec<f32>,
}

/// Candidates per block of the cumulative sums used for drawing.
const BLOCK: usize = 64;

impl Candidates {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True when there is no candidate (only for empty logits).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Token id of candidate `i`.
    #[inline(always)]
    pub fn id(&self, i: usize) -> u32 {
        if self.ids.is_empty() {
            i as u32
        } else {
            self.ids[i]
        }
    }

    /// Weight (unnormalised probability) of candidate `i`.
    #[inline(always)]
    pub fn weight(&self, i: usize) -> f32 {
        self.weights[i]
    }

    /// All weights, in candidate order.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Sum of the weights.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Probability of candidate `i`.
    pub fn prob(&self, i: usize) -> f64 {
        if self.total > 0.0 {
            self.weights[i] as f64 / self.total
        } else {
            0.0
        }
    }

    /// `(id, probability)` of every candidate.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        (0..self.len()).map(|i| (self.id(i), self.prob(i)))
    }

    /// Recompute the distribution for `logits` under `params` (temperature 0 is treated as 1
    /// here; greedy decoding does not use candidates). Runs the widest kernel this CPU has
    /// (`HALLMARK_KERNEL` forces one); every kernel gives bit-identical candidates.
    pub fn fill(&mut self, logits: &[f32], params: &SamplingParams) {
        self.fill_with(sampling_kernel(), logits, params);
    }

    /// [`Candidates::fill`] with a given kernel (the portable one if this CPU cannot run it).
    /// The passes over the vocabulary are the same Rust code compiled for wider vectors, with
    /// no fused multiply-add and the same accumulation order, so the result does not depend on
    /// the kernel.
    pub fn fill_with(&mut self, kernel: Kernel, logits: &[f32], params: &SamplingParams) {
        #[cfg(target_arch = "x86_64")]
        if kernel != Kernel::Scalar && Kernel::Avx2.is_supported() {
            // SAFETY: this CPU has AVX2 (checked just above).
            unsafe { self.fill_avx2(logits, params) };
            return;
        }
        let _ = kernel;
        self.fill_portable(logits, params);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, logits: &[f32], params: &SamplingParams) {
        self.fill_portable(logits, params);
    }

    #[inline(always)]
    fn fill_portable(&mut self, logits: &[f32], params: &SamplingParams) {
        self.ids.clear();
        self.weights.clear();
        self.cum.clear();
        self.total = 0.0;
        let n = logits.len();
        if n == 0 {
            return;
        }
        let inv_t = if params.temperature > 0.0 {
            (1.0 / params.temperature) as f32
        } else {
            1.0
        };
        let src: &[f32] = match params.top_k {
            Some(k) if k < n => {
                top_k_ids(logits, k.max(1), &mut self.ids);
                self.scratch.clear();
                self.scratch
                    .extend(self.ids.iter().map(|&i| logits[i as usize]));
                &self.scratch
            }
            _ => logits,
        };
        let m = max_f32(src);
        self.weights.resize(src.len(), 0.0);
        for (w, &l) in self.weights.iter_mut().zip(src) {
            *w = fast_exp((l - m) * inv_t);
        }
        if let Some(p) = params.top_p.filter(|p| *p < 1.0) {
            let z = sum_f32(&self.weights);
            self.nucleus(p.max(0.0) * z);
        }
        self.cum.reserve(self.weights.len() / BLOCK + 1);
        let mut acc = 0.0;
        for b in self.weights.chunks(BLOCK) {
            acc += sum_f32(b);
            self.cum.push(acc);
        }
        self.total = acc;
    }

    /// Keep the most likely tokens, in order, until their weight reaches `target`.
    fn nucleus(&mut self, target: f64) {
        // Bucket by the f32 exponent of each weight (weights are in [0, 1]): tokens in higher
        // buckets always come first in sorted order, so only the boundary bucket and those above
        // it need sorting.
        let mut mass = [0f64; 256];
        for &w in &self.weights {
            mass[(w.to_bits() >> 23) as usize & 0xff] += w as f64;
        }
        let mut acc = 0.0;
        let mut cut = 0usize;
        for b in (0..256).rev() {
            acc += mass[b];
            if acc >= target {
                cut = b;
                break;
            }
        }
        let mut keep: Vec<(f32, u32)> = self
            .weights
            .iter()
            .enumerate()
            .filter(|(_, w)| (w.to_bits() >> 23) as usize & 0xff >= cut)
            .map(|(i, &w)| (w, self.id(i)))
            .collect();
        keep.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut acc = 0.0;
        let mut n = keep.len();
        for (i, (w, _)) in keep.iter().enumerate() {
            acc += *w as f64;
            if acc >= target {
                n = i + 1;
                break;
            }
        }
        keep.truncate(n.max(1));
        self.ids.clear();
        self.weights.clear();
        for (w, i) in keep {
            self.ids.push(i);
            self.weights.push(w);
        }
    }

    /// Index of the candidate at cumulative probability `u` in \[0, 1): a binary search over
    /// the block sums, then a scan of one block.
    pub fn draw_index(&self, u: f64) -> usize {
        let target = u * self.total;
        let b = self
            .cum
            .partition_point(|&c| c <= target)
            .min(self.cum.len().saturating_sub(1));
        let mut acc = if b == 0 { 0.0 } else { self.cum[b - 1] };
        let start = b * BLOCK;
        let end = (start + BLOCK).min(self.len());
        for i in start..end {
            acc += self.weights[i] as f64;
            if target < acc {
                return i;
            }
        }
        // Rounding at the very top: the last candidate with a positive weight.
        (0..end).rev().find(|&i| self.weights[i] > 0.0).unwrap_or(0)
    }

    /// The candidate token at cumulative probability `u` in \[0, 1).
    pub fn draw(&self, u: f64) -> u32 {
        if self.is_empty() {
            return 0;
        }
        self.id(self.draw_index(u))
    }

    /// Indices (ascending) of the candidates whose weight is at least `min_weight`.
    pub fn indices_at_least(&self, min_weight: f32, out: &mut Vec<usize>) {
        out.clear();
        // Weights are non-negative, so their bit patterns order like their values. A bit mask
        // per 32 weights (integer compares that vectorise, no branch per weight: a branchy
        // loop mispredicts on every flat distribution), then its set bits in order.
        let thr = min_weight.to_bits();
        for (c, chunk) in self.weights.chunks(32).enumerate() {
            let mut mask = 0u32;
            for (j, w) in chunk.iter().enumerate() {
                mask |= u32::from(w.to_bits() >= thr) << j;
            }
            while mask != 0 {
                out.push(c * 32 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
    }
}

/// Largest value (lane-wise accumulators, so the loop vectorises).
#[inline(always)]
fn max_f32(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] = acc[j].max(c[j]);
        }
    }
    acc.iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Sum in f64 (lane-wise accumulators, so the loop vectorises).
#[inline(always)]
fn sum_f32(w: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = w.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j] as f64;
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|&x| x as f64).sum::<f64>()
}

/// `exp(x)` for `x <= 0` in f32, relative error below 2e-7, branch-free so that loops over it
/// vectorise; identical on every IEEE-754 machine (no FMA, no table).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    // Below -87 the result would not be a normal f32: it is 0 (NaN also maps here).
    let keep = x >= -87.0;
    let x = x.max(-87.0);
    // n = round(x / ln 2) with the 1.5 * 2^23 trick (SSE2 has no vector floor), then a
    // Cody-Waite reduction r = x - n ln 2 in two exact-ish steps (Cephes' expf constants).
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_5e-4;
    // e^r on [-0.35, 0.35]: degree-6 Taylor polynomial (Horner).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // The integer n sits in t's low mantissa bits: read it there instead of a (saturating,
    // scalar) float-to-int conversion, so the whole function stays in vector lanes.
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let bits = (ni.wrapping_add(127) << 23) as u32;
    if keep {
        p * f32::from_bits(bits)
    } else {
        0.0
    }
}

/// The `k` largest logits' ids (ties: lower id first), in no particular order.
fn top_k_ids(logits: &[f32], k: usize, out: &mut Vec<u32>) {
    let rank = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    out.clear();
    out.extend(0..k as u32);
    let cap = (2 * k).max(64);
    let mut thr = *out.iter().min_by(|a, b| rank(b, a)).unwrap_or(&0);
    let mut thr_val = logits[thr as usize];
    // Chunks whose largest logit does not beat the threshold are skipped after one vectorised
    // maximum (most of them, once the threshold has risen).
    const CHUNK: usize = 32;
    let mut i = k;
    while i < logits.len() {
        let end = (i + CHUNK).min(logits.len());
        let chunk = &logits[i..end];
        if max_f32(chunk) > thr_val {
            for (j, &l) in chunk.iter().enumerate() {
                // Ids arrive in increasing order, so an equal logit never outranks the threshold.
                if l > thr_val {
                    out.push((i + j) as u32);
                    if out.len() >= cap {
                        out.select_nth_unstable_by(k - 1, rank);
                        out.truncate(k);
                        thr = out[k - 1];
                        thr_val = logits[thr as usize];
                    }
                }
            }
        }
        i = end;
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, rank);
        out.truncate(k);
    }
}

/// The candidate set, most likely first: a convenience for callers that want a plain list.
pub fn candidates(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f64)> {
    let mut c = Candidates::new();
    c.fill(logits, params);
    let mut v: Vec<(u32, f64)> = c.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Draw from a candidate list with a uniform `u` in \[0, 1).
pub fn draw(cands: &[(u32, f64)], u: f64) -> u32 {
    let mut acc = 0.0;
    for &(id, p) in cands {
        acc += p;
        if u < acc {
            return id;
        }
    }
    cands.last().map(|c| c.0).unwrap_or(0)
}

/// Ordinary seeded sampling with no watermark.
pub struct PlainSampler {
    params: SamplingParams,
    rng: StdRng,
    cands: Candidates,
}

impl PlainSampler {
    /// A sampler with a fixed seed: the same seed gives the same tokens.
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
            cands: Candidates::new(),
        }
    }
}

impl TokenSampler for PlainSampler {
    fn next_token(&mut self, _context: &[u32], logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        self.cands.fill(logits, &self.params);
        self.cands.draw(self.rng.gen::<f64>())
    }
}

/// Index of the largest logit (first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.gen_range(-8.0f32..8.0)).collect()
    }

    #[test]
    fn fast_exp_is_accurate() {
        // Down to -80 (below, results approach the subnormal range and lose relative precision).
        let mut x = -80.0f32;
        while x <= 0.0 {
            let (a, b) = (fast_exp(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "{x}: {a} vs {b}");
            x += 0.01;
        }
        assert_eq!(fast_exp(-1000.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn indices_at_least_are_exactly_the_heavy_candidates_in_order() {
        let mut c = Candidates::new();
        for (n, seed) in [(1, 1), (31, 2), (33, 3), (49_152, 4), (50_001, 5)] {
            c.fill(&logits(n, seed), &SamplingParams::default());
            for frac in [0.0, 1e-6, 2f64.powi(-12), 0.01, 0.5, 1.0, 2.0] {
                let thr = (c.total() * frac) as f32;
                let want: Vec<usize> = (0..c.len()).filter(|&i| c.weight(i) >= thr).collect();
                let mut got = vec![7];
                c.indices_at_least(thr, &mut got);
                assert_eq!(got, want, "n {n} threshold {frac}");
            }
        }
    }

    #[test]
    fn every_fill_kernel_gives_bit_identical_candidates() {
        let kernels = Kernel::supported();
        assert_eq!(kernels[0], Kernel::Scalar);
        let params = [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.7,
                top_k: None,
                top_p: None,
            },
            SamplingParams {
                temperature: 1.3,
                top_k: Some(40),
                top_p: None,
            },
            SamplingParams {
                temperature: 0.9,
                top_k: None,
                top_p: Some(0.9),
            },
        ];
        // Lengths off every vector width and block size; a vocabulary-sized one; banned
        // (-inf) and extreme logits as llama-cpp-python's other processors leave them.
        for (n, seed) in [(1, 1), (7, 2), (65, 3), (49_152, 4), (50_001, 5)] {
            let mut l = logits(n, seed);
            if n > 10 {
                l[3] = f32::NEG_INFINITY;
                l[4] = -1e30;
                l[5] = 40.0;
                l[n - 1] = -90.0;
            }
            for p in &params {
                let mut want = Candidates::new();
                want.fill_with(Kernel::Scalar, &l, p);
                for &k in &kernels[1..] {
                    let mut got = Candidates::new();
                    got.fill_with(k, &l, p);
                    let bits = |c: &Candidates| -> Vec<(u32, u32)> {
                        (0..c.len())
                            .map(|i| (c.id(i), c.weight(i).to_bits()))
                            .collect()
                    };
                    assert_eq!(bits(&got), bits(&want), "{k:?} n={n} {p:?}");
                    assert_eq!(got.total().to_bits(), want.total().to_bits());
                    assert_eq!(got.cum, want.cum);
                }
            }
        }
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let l = logits(5000, 1);
        let mut order: Vec<u32> = (0..5000).collect();
        order.sort_by(|a, b| l[*b as usize].total_cmp(&l[*a as usize]).then(a.cmp(b)));
        for k in [1, 7, 50, 999] {
            let mut got = Vec::new();
            top_k_ids(&l, k, &mut got);
            got.sort();
            let mut want = order[..k].to_vec();
            want.sort();
            assert_eq!(got, want, "k={k}");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let l = logits(3000, 2);
        let p = SamplingParams {
            temperature: 0.7,
            top_k: None,
            top_p: Some(0.9),
        };
        let mut c = Candidates::new();
        c.fill(&l, &p);
        // Reference: full softmax, sorted.
        let m = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let mut w: Vec<(f64, u32)> = l
            .iter()
            .enumerate()
            .map(|(i, &x)| (((x as f64 - m) / 0.7).exp(), i as u32))
            .collect();
        let z: f64 = w.iter().map(|x| x.0).sum();
        w.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut acc = 0.0;
        let n = w.iter().position(|x| {
            acc += x.0 / z;
            acc >= 0.9
        });
        assert_eq!(c.len(), n.unwrap() + 1);
        let ids: Vec<u32> = (0..10).map(|i| c.id(i)).collect();
        assert_eq!(ids, w[..10].iter().map(|x| x.1).collect::<Vec<_>>());
        assert!((c.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
        // Each probability matches the f64 softmax renormalised over the nucleus.
        let zn: f64 = w[..c.len()].iter().map(|x| x.0).sum();
        for (i, (id, p)) in c.iter().enumerate() {
            assert_eq!(id, w[i].1);
            assert!(
                (p / (w[i].0 / zn) - 1.0).abs() < 1e-6,
                "{p} vs {}",
                w[i].0 / zn
            );
        }
    }

    #[test]
    fn plain_sampler_is_reproducible_and_respects_top_k() {
        let l = logits(1000, 3);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: Some(5),
            top_p: None,
        };
        let run = |seed| {
            let mut s = PlainSampler::new(p, seed);
            (0..50).map(|_| s.next_token(&[], &l)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        let mut top = Vec::new();
        top_k_ids(&l, 5, &mut top);
        assert!(run(9).iter().all(|t| top.contains(t)));
    }
}

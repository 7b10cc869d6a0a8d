//! The sampling seam: every generation loop asks a [`TokenSampler`] for the next token, given the
//! context so far and the model's raw logits. The plain sampler and every watermark scheme
//! implement it, so temperature, top-k and top-p compose with any watermark.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
pub trait TokenSampler: Send {
    /// `context`: every token id so far (prompt, then generated); `logits`: raw next-token logits
    /// over the whole vocabulary. Returns the chosen token id.
    fn next_token(&mut self, context: &[u32], logits: &[f32]) -> u32;
}

/// The candidate set after temperature, top-k and top-p: token ids and their renormalised
/// probabilities, most likely first.
pub fn candidates(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f64)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = params
        .top_k
        .unwrap_or(logits.len())
        .clamp(1, logits.len().max(1));
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit);
    let t = if params.temperature > 0.0 {
        params.temperature
    } else {
        1.0
    };
    let max = idx
        .first()
        .map(|&i| logits[i as usize] as f64)
        .unwrap_or(0.0);
    let mut probs: Vec<(u32, f64)> = idx
        .iter()
        .map(|&i| (i, ((logits[i as usize] as f64 - max) / t).exp()))
        .collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    for p in &mut probs {
        p.1 /= z;
    }
    if let Some(top_p) = params.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
        let z: f64 = probs.iter().map(|p| p.1).sum();
        for p in &mut probs {
            p.1 /= z;
        }
    }
    probs
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
}

impl PlainSampler {
    /// A sampler with a fixed seed: the same seed gives the same tokens.
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl TokenSampler for PlainSampler {
    fn next_token(&mut self, _context: &[u32], logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let c = candidates(logits, &self.params);
        draw(&c, self.rng.gen::<f64>())
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

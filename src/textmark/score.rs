//! Detection on token ids: exact p-values over distinct (context, token) pairs, and the best
//! window for text where only a part is watermarked.
//!
//! * Every position with a full context window is scored once per distinct (context, token)
//!   pair (repeats carry no new evidence and would break independence).
//! * Whole text: p = P[Binomial(n, γ) ≥ G] (kgw) or P[Gamma(n, 1) ≥ S] (gumbel), exact.
//! * Windows: sizes 32, 64, 128, ... below n, at every half-size step (plus one flush with the
//!   end). The best window's raw p-value is multiplied by the number of windows W (Bonferroni,
//!   conservative under any dependence between overlapping windows).
//! * Reported p = min(1, 2·p_whole, 2·W·p_best_window): a weighted Bonferroni over the two
//!   questions, valid at every level α. With fewer than [`MIN_SCORED_TOKENS`] scored tokens the
//!   answer is "too short to decide".

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::key::WatermarkKey;
use super::prf::{ContextRule, Prf};
use super::scheme::Scheme;

/// Below this many scored tokens a text is "too short to decide".
pub const MIN_SCORED_TOKENS: usize = 16;
/// The smallest window of the windowed test, in scored tokens.
pub const MIN_WINDOW: usize = 32;

/// The best window of a windowed test.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowHit {
    /// First scored token of the window (index into the scored tokens).
    pub start: usize,
    /// Window length in scored tokens.
    pub len: usize,
    /// Token position (in the text's token ids) of the window's first scored token.
    pub token_start: usize,
    /// Token position one past the window's last scored token.
    pub token_end: usize,
    /// Score sum within the window (green count for kgw).
    pub statistic: f64,
    /// The window's own p-value, before the correction for the number of windows.
    pub p_raw: f64,
}

/// The result of testing one token sequence against one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// Distinct (context, token) pairs scored.
    pub scored: usize,
    /// Score sum over all of them (green count for kgw, Σ −ln(1−u) for gumbel).
    pub statistic: f64,
    /// Exact p-value of the whole text.
    pub p_whole: f64,
    /// The best window, when the text is long enough for windows.
    pub window: Option<WindowHit>,
    /// Number of windows tested.
    pub windows_tested: usize,
    /// The reported p-value (whole text and windows together, corrected).
    pub p_value: f64,
    /// False when fewer than [`MIN_SCORED_TOKENS`] tokens were scored.
    pub decided: bool,
}

/// Scores token ids against one key.
#[derive(Debug, Clone)]
pub struct Detector {
    scheme: Arc<dyn Scheme>,
    prf: Arc<Prf>,
}

/// PRF values are uniformly random already: hash them as themselves.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl Detector {
    /// The detector for `key`.
    pub fn new(key: &WatermarkKey) -> Self {
        Self {
            scheme: key.scheme_impl(),
            prf: Arc::new(key.prf()),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> &dyn Scheme {
        &*self.scheme
    }

    /// Per-token scores of the distinct (context, token) pairs, in text order, with the token
    /// position of each.
    pub fn scores(&self, ids: &[u32]) -> (Vec<f64>, Vec<usize>) {
        let h = self.prf.rule().width();
        let n = ids.len().saturating_sub(h);
        let mut seen: HashSet<u64, BuildHasherDefault<IdHasher>> =
            HashSet::with_capacity_and_hasher(n, Default::default());
        let mut scores = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        // Min-hash: each token's rank is computed once, then the minimum slides over them.
        let ranks: Vec<u64> = match self.prf.rule() {
            ContextRule::Min(_) => ids.iter().map(|&t| self.prf.rank(t)).collect(),
            ContextRule::Left(_) => Vec::new(),
        };
        for t in h..ids.len() {
            let seed = match self.prf.rule() {
                ContextRule::Left(_) => match self.prf.seed(&ids[t - h..t]) {
                    Some(s) => s,
                    None => continue,
                },
                ContextRule::Min(_) => {
                    let best = (t - h..t)
                        .map(|i| (ranks[i], ids[i]))
                        .fold((u64::MAX, u32::MAX), std::cmp::min);
                    self.prf.seed_of_min_token(best.1)
                }
            };
            let x = seed.value(ids[t]);
            // Distinct pairs give distinct values except with probability 2^-64.
            if seen.insert(x) {
                scores.push(self.scheme.score(x));
                pos.push(t);
            }
        }
        (scores, pos)
    }

    /// Test `ids` (the text's token ids, no special tokens).
    pub fn detect(&self, ids: &[u32]) -> Detection {
        let (scores, pos) = self.scores(ids);
        self.detect_scores(&scores, &pos)
    }

    /// Test precomputed scores (see [`Detector::scores`]).
    pub fn detect_scores(&self, scores: &[f64], pos: &[usize]) -> Detection {
        let n = scores.len();
        let mut prefix = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        prefix.push(0.0);
        for &s in scores {
            acc += s;
            prefix.push(acc);
        }
        let p_whole = self.scheme.p_value(acc, n as u64);
        let mut windows_tested = 0usize;
        let mut best: Option<WindowHit> = None;
        let mut size = MIN_WINDOW;
        while size < n {
            let step = size / 2;
            let mut starts: Vec<usize> = (0..=n - size).step_by(step).collect();
            if starts.last() != Some(&(n - size)) {
                starts.push(n - size);
            }
            windows_tested += starts.len();
            // All windows of one size share n, and the p-value falls as the sum rises: only the
            // largest sum of each size needs a p-value.
            let (start, sum) = starts
                .iter()
                .map(|&s| (s, prefix[s + size] - prefix[s]))
                .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            if sum > self.scheme.null_mean() * size as f64 {
                let p = self.scheme.p_value(sum, size as u64);
                if best.as_ref().is_none_or(|b| p < b.p_raw) {
                    best = Some(WindowHit {
                        start,
                        len: size,
                        token_start: pos[start],
                        token_end: pos[start + size - 1] + 1,
                        statistic: sum,
                        p_raw: p,
                    });
                }
            }
            size *= 2;
        }
        let mut p_value = if windows_tested > 0 {
            (2.0 * p_whole).min(1.0)
        } else {
            p_whole
        };
        if let Some(b) = &best {
            p_value = p_value.min(2.0 * windows_tested as f64 * b.p_raw);
        }
        Detection {
            scored: n,
            statistic: acc,
            p_whole,
            window: best,
            windows_tested,
            p_value: p_value.clamp(0.0, 1.0),
            decided: n >= MIN_SCORED_TOKENS,
        }
    }
}

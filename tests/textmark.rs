//! Text watermark: sampling, detection, statistics on a simulated language model, test vectors,
//! and the CLI end to end.
#![allow(clippy::unwrap_used, clippy::panic)]

use hallmark::textmark::{
    ContextRule, Detector, SamplingParams, SchemeParams, TokenSampler, TokenizerSpec, WatermarkKey,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeroize::Zeroizing;

/// A key with a fixed secret and a placeholder tokenizer (simulations work on ids).
fn key(scheme: SchemeParams, rule: ContextRule, secret: u8) -> WatermarkKey {
    let json = "{}";
    let spec = TokenizerSpec {
        source: "none".into(),
        vocab_size: 0,
        blake3: blake3::hash(json.as_bytes()).to_hex().to_string(),
        json: json.into(),
    };
    WatermarkKey::from_parts(Zeroizing::new([secret; 32]), scheme, rule, spec).unwrap()
}

const KGW: SchemeParams = SchemeParams::Kgw {
    gamma: 0.25,
    delta: 2.0,
};

/// A simulated language model: logits for the next token are N(0, σ²) i.i.d. per token, drawn
/// from an RNG seeded by the previous token, so the same context gives the same distribution
/// (as with a real model) and σ sets the entropy.
struct SimLm {
    vocab: usize,
    sigma: f32,
    salt: u64,
}

impl SimLm {
    fn logits(&self, context: &[u32]) -> Vec<f32> {
        let prev = context.last().copied().unwrap_or(0) as u64;
        let mut r = StdRng::seed_from_u64(self.salt ^ prev.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..self.vocab)
            .map(|_| {
                // Box-Muller
                let (a, b): (f64, f64) = (r.gen(), r.gen());
                ((-2.0 * (1.0 - a).ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
                    * self.sigma
            })
            .collect()
    }

    fn generate(&self, s: &mut dyn TokenSampler, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut ctx = prompt.to_vec();
        for _ in 0..n {
            let l = self.logits(&ctx);
            let t = s.next_token(&ctx, &l);
            ctx.push(t);
        }
        ctx[prompt.len()..].to_vec()
    }
}

#[test]
fn kgw_and_gumbel_round_trip_on_a_simulated_lm() {
    let lm = SimLm {
        vocab: 2000,
        sigma: 2.0,
        salt: 1,
    };
    for scheme in [KGW, SchemeParams::Gumbel] {
        let k = key(scheme, ContextRule::Left(1), 3);
        let d = Detector::new(&k);
        let mut s = k.sampler(SamplingParams::default(), 7);
        let ids = lm.generate(&mut *s, &[5], 200);
        let r = d.detect(&ids);
        assert!(r.decided && r.p_value < 1e-6, "{scheme:?}: {r:?}");
        // Another key does not see it.
        let other = Detector::new(&key(scheme, ContextRule::Left(1), 4));
        assert!(other.detect(&ids).p_value > 1e-3);
    }
}

// ---------------------------------------------------------------------------------------------
// A cheap simulated language model with controlled entropy, for the statistical tests.

/// Order-1 Markov "language model": after token `prev`, the token of rank r (0-based) has logit
/// −s·ln(r + 1) (a Zipf law; `s` sets the entropy), and ranks are laid over the vocabulary by a
/// permutation that depends on `prev` (v = (r·a + c(prev)) mod V), like a real model whose
/// preferences depend on the context.
struct ZipfLm {
    vocab: usize,
    logits_by_rank: Vec<f32>,
    probs_by_rank: Vec<f64>,
    cdf: Vec<f64>,
    mul: u64,
}

impl ZipfLm {
    fn new(vocab: usize, s: f64) -> Self {
        let logits_by_rank: Vec<f32> = (0..vocab)
            .map(|r| (-s * ((r + 1) as f64).ln()) as f32)
            .collect();
        let w: Vec<f64> = (0..vocab).map(|r| ((r + 1) as f64).powf(-s)).collect();
        let z: f64 = w.iter().sum();
        let probs_by_rank: Vec<f64> = w.iter().map(|x| x / z).collect();
        let mut acc = 0.0;
        let cdf = probs_by_rank
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        // An odd multiplier coprime with the vocabulary size (1,000,003 is prime).
        Self {
            vocab,
            logits_by_rank,
            probs_by_rank,
            cdf,
            mul: 1_000_003,
        }
    }
    fn offset(&self, prev: u32) -> u64 {
        (prev as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20
    }
    fn token_of_rank(&self, prev: u32, r: usize) -> u32 {
        ((r as u64 * self.mul + self.offset(prev)) % self.vocab as u64) as u32
    }
    fn logits(&self, context: &[u32]) -> Vec<f32> {
        let prev = context.last().copied().unwrap_or(0);
        let mut l = vec![0f32; self.vocab];
        // v(r) = (r·a + c) mod V, stepped without a division per token.
        let v = self.vocab as u64;
        let step = self.mul % v;
        let mut t = self.offset(prev) % v;
        for &x in &self.logits_by_rank {
            l[t as usize] = x;
            t += step;
            if t >= v {
                t -= v;
            }
        }
        l
    }
    /// Ordinary (unwatermarked) text, sampled directly from the ranks: fast.
    fn null_text(&self, rng: &mut StdRng, n: usize) -> Vec<u32> {
        let mut out = vec![rng.gen_range(0..self.vocab as u32)];
        for _ in 1..n {
            let u: f64 = rng.gen();
            let r = self.cdf.partition_point(|&c| c <= u).min(self.vocab - 1);
            out.push(self.token_of_rank(*out.last().unwrap(), r));
        }
        out
    }
    fn generate(&self, s: &mut dyn TokenSampler, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut ctx = prompt.to_vec();
        for _ in 0..n {
            let l = self.logits(&ctx);
            let t = s.next_token(&ctx, &l);
            ctx.push(t);
        }
        ctx[prompt.len()..].to_vec()
    }
    fn entropy(&self) -> f64 {
        -self
            .probs_by_rank
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>()
    }
}

/// Two-sided one-sample Kolmogorov-Smirnov statistic of `ps` against Uniform(0, 1).
fn ks_uniform(ps: &mut [f64]) -> f64 {
    ps.sort_by(|a, b| a.total_cmp(b));
    let n = ps.len() as f64;
    ps.iter()
        .enumerate()
        .map(|(i, &p)| ((i + 1) as f64 / n - p).max(p - i as f64 / n))
        .fold(0.0, f64::max)
}

/// The KS critical value at level 0.001 (asymptotic: sqrt(-ln(0.0005)/2) / sqrt(n)).
fn ks_critical_001(n: usize) -> f64 {
    1.949 / (n as f64).sqrt()
}

/// Randomised p-value of a green count: exactly Uniform(0, 1) under the null.
fn randomized_binomial_p(g: u64, n: u64, gamma: f64, u: f64) -> f64 {
    let ge = hallmark::stats::binomial_sf(g, n, gamma);
    let gt = hallmark::stats::binomial_sf(g + 1, n, gamma);
    gt + u * (ge - gt)
}

fn null_keys() -> Vec<WatermarkKey> {
    vec![
        key(KGW, ContextRule::Left(1), 11),
        key(KGW, ContextRule::Min(4), 12),
        key(
            SchemeParams::Kgw {
                gamma: 0.5,
                delta: 1.0,
            },
            ContextRule::Left(2),
            13,
        ),
        key(SchemeParams::Gumbel, ContextRule::Left(4), 14),
        key(SchemeParams::Gumbel, ContextRule::Left(1), 15),
    ]
}

#[test]
fn null_p_values_are_uniform_and_fpr_is_controlled() {
    // 20,000 unwatermarked texts of 100 tokens per key, from a low-entropy model (many repeated
    // pairs, which must be counted once) and a high-entropy one.
    let mut rng = StdRng::seed_from_u64(2024);
    for (lm_i, lm) in [ZipfLm::new(5000, 1.1), ZipfLm::new(5000, 0.6)]
        .iter()
        .enumerate()
    {
        let texts: Vec<Vec<u32>> = (0..10_000).map(|_| lm.null_text(&mut rng, 100)).collect();
        for k in null_keys() {
            let d = Detector::new(&k);
            let mut exact = Vec::new();
            let mut reported = Vec::new();
            for t in &texts {
                let r = d.detect(t);
                reported.push(r.p_value);
                exact.push(match k.scheme() {
                    SchemeParams::Kgw { gamma, .. } => {
                        randomized_binomial_p(r.statistic as u64, r.scored as u64, gamma, rng.gen())
                    }
                    SchemeParams::Gumbel => r.p_whole,
                });
            }
            let n = exact.len();
            let ks = ks_uniform(&mut exact);
            assert!(
                ks < ks_critical_001(n),
                "lm {lm_i} {k:?}: KS {ks} >= {}",
                ks_critical_001(n)
            );
            for alpha in [1e-2, 1e-3] {
                let fp = reported.iter().filter(|&&p| p <= alpha).count() as f64;
                // One-sided: the reported p-value (with windows) is conservative; the count must
                // not exceed the upper end of the binomial 99.9% interval for rate alpha.
                let upper = n as f64 * alpha + 3.1 * (n as f64 * alpha * (1.0 - alpha)).sqrt();
                assert!(
                    fp <= upper,
                    "lm {lm_i} {k:?}: {fp} false positives at {alpha} (max {upper})"
                );
            }
        }
    }
}

/// Green fraction and power of kgw (γ = 0.25, δ = 2, T = 200, temperature 1) on a Zipf model
/// of exponent `s`, with what theory predicts for them. Returns (entropy, measured green
/// fraction, exact expected fraction π, Theorem 4.2 bound, standard error, TPR at p <= 1e-5,
/// predicted TPR).
fn kgw_power(s: f64, texts: u64) -> (f64, f64, f64, f64, f64, f64, f64) {
    let (gamma, delta) = (0.25f64, 2.0f64);
    let lm = ZipfLm::new(5000, s);
    let alpha = delta.exp();
    let p = &lm.probs_by_rank;

    // Exact expectation for this distribution: with each token green independently with
    // probability γ, P[green] = E_g[Σ p_v α^g_v g_v / Σ p_v α^g_v]; Monte Carlo over g.
    let mut r = StdRng::seed_from_u64(77);
    let mc = 4000;
    let mut pi = 0.0;
    for _ in 0..mc {
        let (mut num, mut den) = (0.0, 0.0);
        for &pv in p {
            if r.gen::<f64>() < gamma {
                num += pv * alpha;
                den += pv * alpha;
            } else {
                den += pv;
            }
        }
        pi += num / den / mc as f64;
    }
    // The paper's Theorem 4.2 lower bound, via the spike entropy.
    let zmod = (1.0 - gamma) * (alpha - 1.0) / (1.0 + (alpha - 1.0) * gamma);
    let spike: f64 = p.iter().map(|&pv| pv / (1.0 + zmod * pv)).sum();
    let bound = gamma * alpha * spike / (1.0 + (alpha - 1.0) * gamma);

    let k = key(SchemeParams::Kgw { gamma, delta }, ContextRule::Left(1), 21);
    let d = Detector::new(&k);
    let (mut green, mut scored, mut detected, mut predicted) = (0.0, 0.0, 0usize, 0.0);
    for i in 0..texts {
        let mut smp = k.sampler(SamplingParams::default(), i);
        let ids = lm.generate(&mut *smp, &[i as u32], 200);
        let res = d.detect(&ids);
        green += res.statistic;
        scored += res.scored as f64;
        detected += (res.p_value <= 1e-5) as usize;
        // Predicted power at this length: P[Bin(n, π) >= k*] where k* is the smallest green
        // count whose whole-text p-value (x2 for the window test) reaches 1e-5.
        let n = res.scored as u64;
        let kstar = (0..=n)
            .find(|&g| 2.0 * hallmark::stats::binomial_sf(g, n, gamma) <= 1e-5)
            .unwrap_or(n + 1);
        predicted += hallmark::stats::binomial_sf(kstar, n, pi) / texts as f64;
    }
    let frac = green / scored;
    let se = (pi * (1.0 - pi) / scored).sqrt();
    let tpr = detected as f64 / texts as f64;
    eprintln!(
        "kgw, Zipf s = {s}: entropy {:.2} nats, green fraction {frac:.4} (theory {pi:.4}, \
         bound {bound:.4}), TPR@1e-5 {tpr:.3} (theory {predicted:.3})",
        lm.entropy()
    );
    (
        lm.entropy(),
        frac,
        pi,
        bound,
        se,
        tpr,
        predicted.clamp(0.0, 1.0),
    )
}

#[test]
fn kgw_power_matches_theory() {
    // High entropy (as in the paper's headline) and low entropy, where detection is harder.
    for (s, texts) in [(1.0, 150), (2.8, 150)] {
        let (_, frac, pi, bound, se, tpr, predicted) = kgw_power(s, texts);
        assert!(pi >= bound - 1e-3, "exact {pi} below the bound {bound}?");
        assert!(
            (frac - pi).abs() < 4.0 * se,
            "s={s}: green fraction {frac} vs theory {pi} (se {se})"
        );
        let tol = 3.0 * (predicted * (1.0 - predicted) / texts as f64).sqrt() + 0.03;
        assert!(
            (tpr - predicted).abs() <= tol,
            "s={s}: TPR {tpr} vs predicted {predicted}"
        );
        if s == 1.0 {
            assert!(tpr >= 0.98, "TPR {tpr} at T = 200");
        }
    }
}

/// Chi-square p-value of `counts` against probabilities `probs` (bins with tiny expectations
/// merged into their neighbours until each expects at least 5).
fn chi2_p(counts: &[u64], probs: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let (mut x, mut bins) = (0.0, 0usize);
    let (mut c, mut e) = (0.0, 0.0);
    for (&ci, &pi) in counts.iter().zip(probs) {
        c += ci as f64;
        e += pi * n as f64;
        if e >= 5.0 {
            x += (c - e) * (c - e) / e;
            bins += 1;
            c = 0.0;
            e = 0.0;
        }
    }
    if e > 0.0 {
        x += (c - e) * (c - e) / e.max(1e-9);
        bins += 1;
    }
    hallmark::stats::chi2_sf(x, (bins - 1) as f64)
}

/// Draw `n` tokens with `params` from fixed `logits`, each from a fresh context (or always the
/// same context when `repeat`), and compare the frequencies with the candidate distribution.
fn distribution_check(
    k: &WatermarkKey,
    logits: &[f32],
    params: SamplingParams,
    n: usize,
    repeat: bool,
) -> f64 {
    let cands = hallmark::textmark::sampling::candidates(logits, &params);
    let mut index = vec![usize::MAX; logits.len()];
    for (i, (id, _)) in cands.iter().enumerate() {
        index[*id as usize] = i;
    }
    let mut counts = vec![0u64; cands.len()];
    let mut s = k.sampler(params, 5);
    for i in 0..n {
        let ctx = if repeat { 7 } else { i as u32 };
        let t = s.next_token(&[ctx], logits);
        let j = index[t as usize];
        assert!(j != usize::MAX, "token {t} outside the candidate set");
        counts[j] += 1;
    }
    chi2_p(&counts, &cands.iter().map(|c| c.1).collect::<Vec<_>>())
}

#[test]
fn gumbel_leaves_the_sampling_distribution_unchanged() {
    let g = key(SchemeParams::Gumbel, ContextRule::Left(1), 31);
    let zipf = |v: usize, s: f64| ZipfLm::new(v, s).logits(&[0]);
    let full = SamplingParams::default();
    // All candidates in the race's head.
    let p = distribution_check(&g, &zipf(50, 1.0), full, 20_000, false);
    assert!(p > 1e-3, "head-only: chi-square p = {p}");
    // A flat distribution over 8,192 tokens: most of the mass in the tail (p < 2^-12).
    let p = distribution_check(&g, &zipf(8192, 0.3), full, 10_000, false);
    assert!(p > 1e-3, "head + tail: chi-square p = {p}");
    // Temperature, top-k and top-p compose with the watermark.
    let filtered = SamplingParams {
        temperature: 0.8,
        top_k: Some(30),
        top_p: Some(0.9),
    };
    let p = distribution_check(&g, &zipf(200, 1.0), filtered, 20_000, false);
    assert!(p > 1e-3, "filtered: chi-square p = {p}");
    // One context over and over: after its first use the sampler falls back to ordinary sampling.
    let p = distribution_check(&g, &zipf(50, 1.0), full, 20_000, true);
    assert!(p > 1e-3, "repeated context: chi-square p = {p}");
    // The check has power: kgw (which does bias the distribution) fails it.
    let p = distribution_check(
        &key(KGW, ContextRule::Left(1), 32),
        &zipf(50, 1.0),
        full,
        20_000,
        false,
    );
    assert!(p < 1e-6, "kgw should be detected as biased, p = {p}");
}

#[test]
fn kgw_sampler_composes_with_filters_and_greedy() {
    let k = key(KGW, ContextRule::Left(1), 41);
    let lm = ZipfLm::new(3000, 1.0);
    let d = Detector::new(&k);
    let l = lm.logits(&[3]);
    // top-k: every token among the k most likely.
    let mut top: Vec<u32> = (0..3000u32).collect();
    top.sort_by(|a, b| l[*b as usize].total_cmp(&l[*a as usize]));
    let params = SamplingParams {
        temperature: 0.7,
        top_k: Some(20),
        top_p: Some(0.95),
    };
    let mut s = k.sampler(params, 1);
    for i in 0..500 {
        let t = s.next_token(&[i], &l);
        assert!(top[..20].contains(&t));
    }
    // Same key, seed and logits: same tokens.
    let run = |seed| {
        let mut s = k.sampler(params, seed);
        lm.generate(&mut *s, &[9], 50)
    };
    assert_eq!(run(4), run(4));
    // Greedy: the biased argmax is deterministic and still watermarked.
    let greedy = SamplingParams {
        temperature: 0.0,
        top_k: None,
        top_p: None,
    };
    let mut s = k.sampler(greedy, 0);
    let ids = lm.generate(&mut *s, &[1], 150);
    let mut s2 = k.sampler(greedy, 99);
    assert_eq!(ids, lm.generate(&mut *s2, &[1], 150));
    let r = d.detect(&ids);
    assert!(r.decided, "{r:?}");
}

#[test]
fn windowed_detection_finds_a_pasted_paragraph() {
    // 200 watermarked tokens inside 1,000 tokens of unwatermarked text.
    let lm = ZipfLm::new(5000, 1.0);
    let mut rng = StdRng::seed_from_u64(5);
    for scheme in [KGW, SchemeParams::Gumbel] {
        let k = key(scheme, ContextRule::Left(1), 51);
        let d = Detector::new(&k);
        let mut found = 0;
        for i in 0..20 {
            let before = lm.null_text(&mut rng, 500);
            let mut s = k.sampler(SamplingParams::default(), i);
            let marked = lm.generate(&mut *s, &before, 200);
            let after = lm.null_text(&mut rng, 500);
            let doc: Vec<u32> = [before, marked, after].concat();
            let r = d.detect(&doc);
            let w = r.window.clone().unwrap();
            if r.p_value <= 1e-5 {
                found += 1;
                // The best window overlaps the pasted part.
                assert!(w.token_start < 700 && w.token_end > 500, "{w:?}");
            }
            assert!(r.p_value <= r.p_whole * 2.0 + 1e-300);
        }
        assert!(found >= 18, "{scheme:?}: found {found} / 20");
    }
}

#[test]
fn too_short_to_decide() {
    let k = key(KGW, ContextRule::Left(1), 61);
    let d = Detector::new(&k);
    let r = d.detect(&[1, 2, 3, 4, 5]);
    assert_eq!(r.scored, 4);
    assert!(!r.decided);
    // Repeats are counted once: a long text of one repeated pair is still too short.
    let r = d.detect(&[7; 500]);
    assert_eq!(r.scored, 1);
    assert!(!r.decided);
}

// ---------------------------------------------------------------------------------------------
// PRF test vectors: tests/vectors/textmark_prf.json, generated by `regenerate_prf_vectors`
// (`cargo test --release --test tests regenerate_prf_vectors -- --ignored`). A change to the
// PRF, the key derivation or the score mapping makes `prf_vectors_do_not_drift` fail.

fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/textmark_prf.json")
}

fn compute_vectors() -> serde_json::Value {
    let secrets: [[u8; 32]; 3] = [
        [0u8; 32],
        std::array::from_fn(|i| i as u8),
        std::array::from_fn(|i| (i as u8).wrapping_mul(167).wrapping_add(29)),
    ];
    let rules = [
        ContextRule::Left(1),
        ContextRule::Left(4),
        ContextRule::Min(4),
    ];
    let windows: [&[u32]; 3] = [
        &[0, 0, 0, 0],
        &[17, 4_000, 262_143, 49_151],
        &[u32::MAX - 1, 1, 2, 3],
    ];
    let tokens = [0u32, 1, 49_151, 262_143, u32::MAX - 1];
    let mut out = Vec::new();
    for secret in &secrets {
        for scheme in [KGW, SchemeParams::Gumbel] {
            let spec = TokenizerSpec {
                source: "none".into(),
                vocab_size: 0,
                blake3: blake3::hash(b"{}").to_hex().to_string(),
                json: "{}".into(),
            };
            for rule in rules {
                let k =
                    WatermarkKey::from_parts(Zeroizing::new(*secret), scheme, rule, spec.clone())
                        .unwrap();
                let prf = k.prf();
                let sch = k.scheme_impl();
                for w in windows {
                    let seed = prf.seed(w).unwrap();
                    for &t in &tokens {
                        let value = seed.value(t);
                        let mut v = serde_json::json!({
                            "key": hex::encode(secret),
                            "scheme": scheme.name(),
                            "context": rule.name(),
                            "context_width": rule.width(),
                            "window": w,
                            "token": t,
                            "value": format!("{value:016x}"),
                            // Floats as their shortest round-trip decimal text, compared exactly.
                            "score": format!("{:?}", sch.score(value)),
                        });
                        if let SchemeParams::Kgw { gamma, .. } = scheme {
                            v["gamma"] = gamma.into();
                            v["green"] = (sch.score(value) == 1.0).into();
                        }
                        out.push(v);
                    }
                    out.last_mut().unwrap()["split_uniform"] =
                        format!("{:?}", seed.split_uniform()).into();
                }
            }
        }
    }
    serde_json::json!({
        "description": "hallmark text watermark PRF v1: key (secret hex), scheme, context rule and width, \
                        window (the tokens before the position, oldest first; the last `context_width` are used), \
                        token -> 64-bit PRF value (hex), its score (kgw: 1 if green at gamma, gumbel: -ln(1-u)), \
                        and for the last token of each window the gumbel head/tail split uniform. See src/textmark/prf.rs.",
        "prf_version": hallmark::textmark::PRF_VERSION,
        "vectors": out,
    })
}

#[test]
#[ignore = "writes tests/vectors/textmark_prf.json; run only when the PRF version changes"]
fn regenerate_prf_vectors() {
    let text = serde_json::to_string_pretty(&compute_vectors()).unwrap() + "\n";
    std::fs::write(vectors_path(), text).unwrap();
}

#[test]
fn prf_vectors_do_not_drift() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let got = compute_vectors();
    assert_eq!(want["prf_version"], got["prf_version"]);
    let (w, g) = (
        want["vectors"].as_array().unwrap(),
        got["vectors"].as_array().unwrap(),
    );
    assert_eq!(w.len(), g.len());
    assert!(w.len() >= 200);
    for (a, b) in w.iter().zip(g) {
        assert_eq!(a, b, "PRF output drifted");
    }
    // Sanity of the stored data itself: kgw green fraction near gamma, values distinct.
    let greens = w.iter().filter(|v| v["green"] == true).count() as f64;
    let kgw = w.iter().filter(|v| v["scheme"] == "kgw").count() as f64;
    assert!((greens / kgw - 0.25).abs() < 0.1, "{greens} / {kgw}");
}

// ---------------------------------------------------------------------------------------------
// Real tokenizers, human-written null text, and the CLI end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture that must exist: a missing one fails the test (never skips it).
fn required(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run test-models/fetch.sh",
        p.display()
    );
    p
}

fn smollm2() -> PathBuf {
    required("test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn minilm_tokenizer() -> PathBuf {
    required("test-models/real/minilm/tokenizer.json")
}

/// The human-written null corpus shipped in test-models/human (see its README).
fn human_docs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("test-models/human/fortunes.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A language model over the whole-word tokens of a real vocabulary (so that decoding and
/// re-encoding give the same ids): a Zipf law over those words, arranged by the previous token.
struct WordLm {
    vocab: usize,
    words: Vec<u32>,
    logits_by_rank: Vec<f32>,
}

impl WordLm {
    fn new(tok: &hallmark::tokenizer::Tokenizer, prefix: &str) -> Self {
        let mut words: Vec<u32> = tok
            .inner()
            .get_vocab(false)
            .into_iter()
            .filter(|(s, _)| {
                s.strip_prefix(prefix)
                    .is_some_and(|w| w.len() >= 2 && w.bytes().all(|b| b.is_ascii_lowercase()))
            })
            .map(|(_, id)| id)
            .collect();
        words.sort();
        let logits_by_rank = (0..words.len()).map(|r| -((r + 1) as f32).ln()).collect();
        Self {
            vocab: tok.vocab_size(),
            words,
            logits_by_rank,
        }
    }
    fn logits(&self, context: &[u32]) -> Vec<f32> {
        let prev = context.last().copied().unwrap_or(0) as usize;
        let mut l = vec![f32::NEG_INFINITY; self.vocab];
        let n = self.words.len();
        let off = prev.wrapping_mul(7919) % n;
        for (r, &x) in self.logits_by_rank.iter().enumerate() {
            l[self.words[(r * 104_729 + off) % n] as usize] = x;
        }
        l
    }
    fn generate(&self, s: &mut dyn TokenSampler, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut ctx = prompt.to_vec();
        for _ in 0..n {
            let l = self.logits(&ctx);
            let t = s.next_token(&ctx, &l);
            ctx.push(t);
        }
        ctx[prompt.len()..].to_vec()
    }
}

#[test]
fn human_text_is_not_flagged() {
    // Every document of the human corpus, on two real tokenizers (SmolLM2's GGUF vocabulary and
    // MiniLM's tokenizer.json).
    let (gguf, mini) = (smollm2(), minilm_tokenizer());
    let docs = human_docs();
    assert!(docs.len() >= 500);
    let smol = hallmark::tokenizer::Tokenizer::from_path(&gguf).unwrap();
    let bert = hallmark::tokenizer::Tokenizer::from_path(&mini).unwrap();
    let enc = |t: &hallmark::tokenizer::Tokenizer| -> Vec<Vec<u32>> {
        docs.iter().map(|d| t.encode(d).unwrap()).collect()
    };
    let (smol_ids, bert_ids) = (enc(&smol), enc(&bert));
    let tokens: usize = smol_ids.iter().map(Vec::len).sum();
    let mut rng = StdRng::seed_from_u64(8);

    // 1. Validity: the p-value of a text that does not depend on the key is uniform over keys.
    // Each document gets its own key (with one fixed key, documents that share common n-grams
    // are not independent of each other, so a KS test across them would not be valid).
    for (i, k) in null_keys().into_iter().enumerate() {
        let ids = if i % 2 == 0 { &smol_ids } else { &bert_ids };
        let mut exact = Vec::new();
        for (j, t) in ids.iter().enumerate() {
            let mut secret = Zeroizing::new([0u8; 32]);
            secret.copy_from_slice(blake3::hash(format!("{i}/{j}").as_bytes()).as_bytes());
            let kj = WatermarkKey::from_parts(secret, k.scheme(), k.rule(), k.tokenizer().clone())
                .unwrap();
            let r = Detector::new(&kj).detect(t);
            if !r.decided {
                continue;
            }
            exact.push(match k.scheme() {
                SchemeParams::Kgw { gamma, .. } => {
                    randomized_binomial_p(r.statistic as u64, r.scored as u64, gamma, rng.gen())
                }
                SchemeParams::Gumbel => r.p_whole,
            });
        }
        let n = exact.len();
        assert!(n >= 2000, "{n} decided documents");
        let ks = ks_uniform(&mut exact);
        assert!(ks < ks_critical_001(n), "{k:?}: KS {ks} on human text");
    }

    // 2. False positives of fixed keys, with the reported (windowed, corrected) p-values.
    let mut all_reported = Vec::new();
    for (i, k) in null_keys().into_iter().enumerate() {
        let d = Detector::new(&k);
        let ids = if i % 2 == 0 { &smol_ids } else { &bert_ids };
        all_reported.extend(
            ids.iter()
                .map(|t| d.detect(t))
                .filter(|r| r.decided)
                .map(|r| r.p_value),
        );
    }
    let n = all_reported.len() as f64;
    for alpha in [1e-2, 1e-3] {
        let fp = all_reported.iter().filter(|&&p| p <= alpha).count() as f64;
        let upper = n * alpha + 3.1 * (n * alpha * (1.0 - alpha)).sqrt();
        eprintln!("human text: {fp} of {n} tests at p <= {alpha} (max {upper:.1})");
        assert!(
            fp <= upper,
            "{fp} false positives at {alpha} among {n} (max {upper})"
        );
    }
    let at_1e5 = all_reported.iter().filter(|&&p| p <= 1e-5).count();
    eprintln!(
        "human text: {} docs, {tokens} SmolLM2 tokens, {n} tests, {at_1e5} at p <= 1e-5",
        docs.len()
    );
    assert_eq!(at_1e5, 0);
}

fn hallmark(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hallmark"));
    c.args(args).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wm_key_cli_writes_secret_keys_and_refuses_bad_input() {
    let mini = minilm_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.wmkey");
    let (o, m) = (out.to_str().unwrap(), mini.to_str().unwrap());
    let (code, stdout, stderr) = hallmark(
        &["wm-key", "--scheme", "kgw", "--tokenizer", m, "--out", o],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("kgw") && stdout.contains("30522"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let before = std::fs::read(&out).unwrap();
    let k = WatermarkKey::load(&out).unwrap();
    assert_eq!(k.scheme(), KGW);
    assert_eq!(k.rule(), ContextRule::Left(1));
    assert_eq!(k.tokenizer().vocab_size, 30522);
    // The secret never shows in Debug output.
    let text = String::from_utf8(before.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let secret = v["key"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(!format!("{k:?}").contains(secret));
    // Never overwritten.
    let (code, _, stderr) = hallmark(
        &["wm-key", "--scheme", "gumbel", "--tokenizer", m, "--out", o],
        None,
    );
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("hallmark: ") && stderr.contains("already exists"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // Bad parameters, missing tokenizer, the weight scheme: exit 2, nothing written.
    let o2 = dir.path().join("k2.wmkey");
    let o2s = o2.to_str().unwrap();
    for args in [
        vec![
            "wm-key",
            "--scheme",
            "kgw",
            "--gamma",
            "1.5",
            "--tokenizer",
            m,
            "--out",
            o2s,
        ],
        vec![
            "wm-key",
            "--scheme",
            "kgw",
            "--delta=-1",
            "--tokenizer",
            m,
            "--out",
            o2s,
        ],
        vec![
            "wm-key",
            "--scheme",
            "kgw",
            "--context-width",
            "0",
            "--tokenizer",
            m,
            "--out",
            o2s,
        ],
        vec!["wm-key", "--scheme", "kgw", "--out", o2s],
        vec![
            "wm-key",
            "--scheme",
            "kgw",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
            "--out",
            o2s,
        ],
        // the weight mark takes no tokenizer
        vec![
            "wm-key",
            "--scheme",
            "weights",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
            "--out",
            o2s,
        ],
    ] {
        let (code, _, stderr) = hallmark(&args, None);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with("hallmark: "), "{stderr}");
        assert!(!o2.exists());
    }
    // Damaged or unsupported keys are refused with a message that says why.
    for (from, to, why) in [
        ("[UNK]", "[UNX]", "does not match its `blake3`"),
        (
            "\"version\": 1",
            "\"version\": 2",
            "unsupported key version 2",
        ),
        (
            "\"prf_version\": 1",
            "\"prf_version\": 9",
            "PRF version 9 is not supported",
        ),
        (secret, "abcd", "64 hex digits"),
        (
            "\"gamma\": 0.25",
            "\"gamma\": 0.0",
            "gamma must be in (0, 1)",
        ),
        (
            "\"context\": \"left\"",
            "\"context\": \"right\"",
            "`context` must be",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let e = WatermarkKey::from_json(text.replace(from, to).as_bytes()).unwrap_err();
        assert!(e.to_string().contains(why), "{from} -> {to}: {e}");
    }
}

#[test]
fn detect_cli_end_to_end_with_several_keys() {
    let (gguf, mini) = (smollm2(), minilm_tokenizer());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (g, m) = (gguf.to_str().unwrap(), mini.to_str().unwrap());
    let keys = [
        ("kgw-smol", vec!["--scheme", "kgw", "--tokenizer", g]),
        ("gumbel-smol", vec!["--scheme", "gumbel", "--tokenizer", g]),
        (
            "kgwmin-smol",
            vec![
                "--scheme",
                "kgw",
                "--context",
                "min",
                "--context-width",
                "3",
                "--tokenizer",
                g,
            ],
        ),
        ("kgw-minilm", vec!["--scheme", "kgw", "--tokenizer", m]),
    ];
    let mut files = Vec::new();
    for (name, args) in &keys {
        let out = d.join(format!("{name}.wmkey"));
        let mut a = vec!["wm-key"];
        a.extend(args.iter().copied());
        a.extend(["--out", out.to_str().unwrap()]);
        let (code, _, stderr) = hallmark(&a, None);
        assert_eq!(code, 0, "{stderr}");
        files.push(out.to_str().unwrap().to_string());
    }
    let reg = d.join("registry");
    let regs = reg.to_str().unwrap();
    let mut a = vec!["register"];
    a.extend(files.iter().map(String::as_str));
    a.extend(["--registry", regs]);
    let (code, _, stderr) = hallmark(&a, None);
    assert_eq!(code, 0, "{stderr}");
    // A weight-mark key in the registry is not a text key: skipped, not an error.
    std::fs::write(
        reg.join("weights.wmkey"),
        r#"{"format":"hallmark-wmkey","version":1,"scheme":"weights"}"#,
    )
    .unwrap();

    // Watermarked text from the gumbel key, and from the min-hash kgw key.
    let tok = hallmark::tokenizer::Tokenizer::from_path(&gguf).unwrap();
    let lm = WordLm::new(&tok, "Ġ");
    assert!(lm.words.len() > 5000);
    let mut texts = Vec::new();
    for name in ["gumbel-smol", "kgwmin-smol"] {
        let k = WatermarkKey::load(&reg.join(format!("{name}.wmkey"))).unwrap();
        let mut s = k.sampler(SamplingParams::default(), 1);
        let prompt = tok.encode("Once upon a time").unwrap();
        let ids = lm.generate(&mut *s, &prompt, 250);
        let text = tok.decode(&ids).unwrap();
        // Decoding and re-encoding these tokens gives the same ids.
        let back = tok.encode(&text).unwrap();
        let same = ids.iter().zip(&back).filter(|(a, b)| a == b).count();
        assert!(
            same as f64 >= 0.99 * ids.len() as f64,
            "{same} / {}",
            ids.len()
        );
        let f = d.join(format!("{name}.txt"));
        std::fs::write(&f, &text).unwrap();
        texts.push((name, f, text));
    }
    for (name, f, _) in &texts {
        let (code, stdout, stderr) = hallmark(
            &["detect", f.to_str().unwrap(), "--registry", regs, "--json"],
            None,
        );
        assert_eq!(code, 0, "{name}: {stdout} {stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["kind"], "text");
        assert_eq!(v["match"], true);
        assert!(v["scored_tokens"].as_u64().unwrap() >= 200);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 4, "{results:?}");
        for r in results {
            let is_it = r["name"] == *name;
            assert_eq!(r["match"], is_it, "{r}");
            assert!(r["p_value"].as_f64().unwrap() >= r["p_raw"].as_f64().unwrap());
            assert!(r["scored_tokens"].as_u64().unwrap() > 0);
            if is_it {
                assert!(r["p_value"].as_f64().unwrap() < 1e-6, "{r}");
            }
        }
    }
    // Human text: no match, exit 1; too short: "too short to decide", exit 3.
    let human = human_docs()
        .into_iter()
        .find(|t| t.split_whitespace().count() > 120)
        .unwrap();
    let (code, stdout, _) = hallmark(&["detect", "-", "--registry", regs, "--json"], Some(&human));
    assert_eq!(code, 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (v["match"].clone(), v["decided"].clone()),
        (false.into(), true.into())
    );
    let (code, stdout, _) = hallmark(&["detect", "-", "--registry", regs], Some("Hello there."));
    assert_eq!(code, 3, "too short to decide has its own exit code");
    assert!(stdout.contains("TOO SHORT TO DECIDE"), "{stdout}");
    // stdin with the watermarked text: match.
    let (code, stdout, _) = hallmark(&["detect", "-", "--registry", regs], Some(&texts[0].2));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("MATCH") && stdout.contains("gumbel-smol"),
        "{stdout}"
    );
    // JSONL: one line per document, in order.
    let jsonl = d.join("docs.jsonl");
    let lines: Vec<String> = [
        texts[0].2.as_str(),
        human.as_str(),
        "Hi.",
        texts[1].2.as_str(),
    ]
    .iter()
    .map(|t| serde_json::json!({ "text": t }).to_string())
    .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let (code, stdout, stderr) = hallmark(
        &[
            "detect",
            "--jsonl",
            jsonl.to_str().unwrap(),
            "--registry",
            regs,
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let out: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let matched: Vec<bool> = out.iter().map(|v| v["match"].as_bool().unwrap()).collect();
    assert_eq!(matched, [true, false, false, true]);
    assert_eq!(out[2]["decided"], false);
    // A JSONL line without text is an error object for that line; the others are still
    // tested (exit 2: no match, and one line could not be tested).
    std::fs::write(&jsonl, "{\"text\": \"ok\"}\n{\"nope\": 1}\n").unwrap();
    let (code, stdout, stderr) = hallmark(
        &[
            "detect",
            "--jsonl",
            jsonl.to_str().unwrap(),
            "--registry",
            regs,
            "--json",
        ],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    let out: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 2, "{stdout}");
    assert_eq!(out[0]["status"], "undecided");
    assert_eq!(out[1]["status"], "error");
    assert!(
        out[1]["error"].as_str().unwrap().contains("text"),
        "{stdout}"
    );
    // A damaged key is an error result for that key; the others are still tested.
    std::fs::write(
        reg.join("broken.wmkey"),
        r#"{"format":"hallmark-wmkey","version":1,"scheme":"kgw"}"#,
    )
    .unwrap();
    let (code, _, stderr) = hallmark(
        &["detect", texts[0].1.to_str().unwrap(), "--registry", regs],
        None,
    );
    assert_eq!(
        code, 0,
        "the watermarked text still matches its key: {stderr}"
    );
    assert!(
        stderr.starts_with("hallmark: ") && stderr.contains("broken"),
        "{stderr}"
    );
    let (code, stdout, _) = hallmark(&["detect", "-", "--registry", regs, "--json"], Some(&human));
    assert_eq!(
        code, 2,
        "no match over a registry with a broken key: {stdout}"
    );
}

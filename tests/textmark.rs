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

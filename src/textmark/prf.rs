//! The keyed pseudo-random function behind every text scheme (PRF version 1).
//!
//! Each value depends on the secret key, the scheme (domain separation), the context window
//! (the `h` tokens before the scored position) and the candidate token, and nothing else: the
//! same on every machine (integer arithmetic only), O(1) per (context, token), and no permutation
//! of the vocabulary is ever built.
//!
//! Construction (version 1):
//! 1. Subkeys: `k_ctx = BLAKE3-derive_key("hallmark textmark prf v1 <scheme> context", secret)[..16]`
//!    and `k_rank = ...("... <scheme> rank", secret)[..16]`.
//! 2. Context seed `(s0, s1) = SipHash-2-4-128(k_ctx, tag ‖ w_1 ‖ … ‖ w_n)`, every field a
//!    little-endian u32: for the left-hash rule `tag = 1` and the window's `h` tokens, oldest
//!    first; for the min-hash rule `tag = 2` and the single window token whose
//!    `SipHash-2-4-64(k_rank, token)` is smallest.
//! 3. Value of token `v`: `splitmix64(s0 + (v + 1)·0x9E3779B97F4A7C15) ^ s1`, a counter-mode
//!    generator keyed by the (secret, uniformly random) seed, so a step needs one SipHash and
//!    then about a nanosecond per candidate token. Index `2^32` (no token has it) is used for the
//!    Gumbel scheme's head/tail split.
//!
//! The cryptographic part (SipHash, a PRF) hides the key; the mixer only spreads each secret
//! 128-bit seed over token ids. Test vectors: `tests/vectors/textmark_prf.json`.

use siphasher::sip::SipHasher24 as Sip64;
use siphasher::sip128::{Hasher128, SipHasher24 as Sip128};
use std::hash::Hasher;
use zeroize::{Zeroize, Zeroizing};

/// The PRF version this code implements (stored in every key file).
pub const PRF_VERSION: u32 = 1;

/// Which tokens before a position seed its pseudo-random values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextRule {
    /// All of the last `h` tokens, in order (`h = 1` is KGW's left-hash).
    Left(usize),
    /// The one token among the last `h` with the smallest keyed rank (KGW's min-hash): an edit
    /// changes the seed only if it touches that token, so the mark resists edits better.
    Min(usize),
}

impl ContextRule {
    /// Window width `h`.
    pub fn width(self) -> usize {
        match self {
            ContextRule::Left(h) | ContextRule::Min(h) => h,
        }
    }
    /// Name used in key files: `left` or `min`.
    pub fn name(self) -> &'static str {
        match self {
            ContextRule::Left(_) => "left",
            ContextRule::Min(_) => "min",
        }
    }
}

/// Largest supported context width.
pub const MAX_CONTEXT_WIDTH: usize = 16;

/// A per-context seed: 128 secret pseudo-random bits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    s0: u64,
    s1: u64,
}

impl Seed {
    /// A 64-bit identifier of the context (for deduplication; never printed).
    pub fn id(&self) -> u64 {
        self.s0 ^ self.s1.rotate_left(32)
    }
    /// The PRF value of token `v` in this context.
    #[inline(always)]
    pub fn value(&self, v: u32) -> u64 {
        self.at(v as u64 + 1)
    }
    /// The value at counter `i` (token values use `v + 1`; `2^32 + 1` is the split value).
    #[inline(always)]
    fn at(&self, i: u64) -> u64 {
        splitmix64(self.s0.wrapping_add(i.wrapping_mul(GOLDEN))) ^ self.s1
    }
    /// A uniform in (0, 1) reserved for the Gumbel scheme's head/tail choice.
    pub fn split_uniform(&self) -> f64 {
        unit_open(self.at((1u64 << 32) + 1))
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Map a 64-bit value to a uniform in the open interval (0, 1): the midpoints of a 2^-52 grid
/// (every one exactly representable, as is its complement).
#[inline(always)]
pub fn unit_open(v: u64) -> f64 {
    ((v >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// `1 - unit_open(v)`, computed exactly (no cancellation near 1).
#[inline(always)]
pub fn unit_open_complement(v: u64) -> f64 {
    (((1u64 << 52) - (v >> 12)) as f64 - 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// The keyed PRF of one key and scheme.
pub struct Prf {
    k_ctx: Zeroizing<[u8; 16]>,
    k_rank: Zeroizing<[u8; 16]>,
    rule: ContextRule,
}

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prf")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl Prf {
    /// The PRF for `secret`, domain-separated by `scheme` (e.g. `kgw`, `gumbel`).
    pub fn new(secret: &[u8; 32], scheme: &str, rule: ContextRule) -> Self {
        let derive = |what: &str| {
            let mut full = blake3::derive_key(
                &format!("hallmark textmark prf v{PRF_VERSION} {scheme} {what}"),
                secret,
            );
            let mut k = Zeroizing::new([0u8; 16]);
            k.copy_from_slice(&full[..16]);
            full.zeroize();
            k
        };
        Self {
            k_ctx: derive("context"),
            k_rank: derive("rank"),
            rule,
        }
    }

    /// The context rule.
    pub fn rule(&self) -> ContextRule {
        self.rule
    }

    /// The seed for the position after `window` (its last `h` tokens are used). `None` when
    /// fewer than `h` tokens precede the position.
    #[inline]
    pub fn seed(&self, context: &[u32]) -> Option<Seed> {
        let h = self.rule.width();
        if context.len() < h || h == 0 {
            return None;
        }
        let w = &context[context.len() - h..];
        // The message is the little-endian u32 sequence `tag, tokens...`, fed as u64 words
        // (byte-identical, and much faster than hashing a byte buffer).
        let mut sip = Sip128::new_with_key(&self.k_ctx);
        match self.rule {
            ContextRule::Left(_) => {
                sip.write_u64(1 | (w[0] as u64) << 32);
                let mut pairs = w[1..].chunks_exact(2);
                for p in &mut pairs {
                    sip.write_u64(p[0] as u64 | (p[1] as u64) << 32);
                }
                if let [t] = pairs.remainder() {
                    sip.write_u32(*t);
                }
            }
            ContextRule::Min(_) => {
                let mut best = (u64::MAX, u32::MAX);
                for &t in w {
                    best = best.min((self.rank(t), t));
                }
                return Some(self.seed_of_min_token(best.1));
            }
        }
        let h = sip.finish128();
        Some(Seed { s0: h.h1, s1: h.h2 })
    }

    /// The keyed rank of a token for the min-hash rule: `SipHash-2-4-64(k_rank, token)`.
    #[inline]
    pub fn rank(&self, t: u32) -> u64 {
        let mut r = Sip64::new_with_key(&self.k_rank);
        r.write_u32(t);
        r.finish()
    }

    /// The min-hash seed once the window's minimal-rank token `t` is known (detection computes
    /// every token's rank once and slides a minimum over them).
    #[inline]
    pub fn seed_of_min_token(&self, t: u32) -> Seed {
        let mut sip = Sip128::new_with_key(&self.k_ctx);
        sip.write_u64(2 | (t as u64) << 32);
        let h = sip.finish128();
        Seed { s0: h.h1, s1: h.h2 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_rules_are_separated() {
        let key = [7u8; 32];
        let a = Prf::new(&key, "kgw", ContextRule::Left(1));
        let b = Prf::new(&key, "gumbel", ContextRule::Left(1));
        let c = Prf::new(&key, "kgw", ContextRule::Min(1));
        let sa = a.seed(&[5]).map(|s| s.value(9));
        assert_ne!(sa, b.seed(&[5]).map(|s| s.value(9)));
        assert_ne!(sa, c.seed(&[5]).map(|s| s.value(9)));
        assert_eq!(sa, a.seed(&[1, 2, 5]).map(|s| s.value(9)));
        assert!(a.seed(&[]).is_none());
    }

    #[test]
    fn min_hash_ignores_order_and_non_minimal_tokens() {
        let p = Prf::new(&[1u8; 32], "kgw", ContextRule::Min(3));
        let s1 = p.seed(&[10, 20, 30]).map(|s| s.id());
        let s2 = p.seed(&[30, 10, 20]).map(|s| s.id());
        assert_eq!(s1, s2);
        // Changing tokens: the seed changes only when the min-rank token is replaced.
        let changed = [[99, 20, 30], [10, 99, 30], [10, 20, 99]]
            .iter()
            .filter(|w| p.seed(&w[..]).map(|s| s.id()) != s1)
            .count();
        assert!((1..=3).contains(&changed));
    }

    #[test]
    fn unit_interval_is_open_and_exact() {
        for v in [0u64, 1, u64::MAX, 1 << 63] {
            let u = unit_open(v);
            assert!(u > 0.0 && u < 1.0);
            assert_eq!(unit_open_complement(v), 1.0 - u);
        }
    }
}

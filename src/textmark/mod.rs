//! Keyed text watermarks applied inside the sampler, and their exact detection.
//!
//! Generation: load a key ([`WatermarkKey::load`]), make one sampler per sequence with
//! [`sampler_for_key`], and call [`TokenSampler::next_token`] with the context ids (prompt, then
//! generated) and the raw logits at every step. The prompt's last tokens seed the first
//! generated token. Temperature, top-k and top-p are applied first; the watermark then acts on
//! the filtered distribution (for kgw, δ is a bias in units of tempered logits).
//!
//! Detection: [`test_text`] tokenizes a text with each registered key's own tokenizer and tests
//! it against every text key ([`Detector`] does the same on token ids). The binary's `detect`
//! adjusts the raw p-values across all keys (Holm).
//!
//! Schemes: [`Kgw`] (green list; left-hash or min-hash context) and [`Gumbel`] (Gumbel-max,
//! distortion-free). PRF: [`prf`] (versioned; test vectors in `tests/vectors/`).
//!
//! ```no_run
//! use hallmark::textmark::{sampler_for_key, Detector, SamplingParams, WatermarkKey};
//! # fn model_logits(_ctx: &[u32]) -> Vec<f32> { vec![0.0; 49152] }
//! let key = WatermarkKey::load("keys/demo.wmkey".as_ref())?;
//! let tok = key.tokenizer().load()?; // the tokenizer travels inside the key
//! let params = SamplingParams { temperature: 1.0, top_k: None, top_p: Some(0.95) };
//! let mut sampler = sampler_for_key(&key, params, 42); // one per generated sequence
//! let mut ctx = tok.encode("Tell me a story.")?;
//! let prompt_len = ctx.len();
//! for _ in 0..200 {
//!     let logits = model_logits(&ctx); // any vocabulary size
//!     let next = sampler.next_token(&ctx, &logits);
//!     ctx.push(next);
//! }
//! let text = tok.decode(&ctx[prompt_len..])?;
//! let d = Detector::new(&key).detect(&tok.encode(&text)?);
//! println!("{} tokens scored, p = {:.2e}", d.scored, d.p_value);
//! # Ok::<(), hallmark::textmark::TextmarkError>(())
//! ```

pub mod key;
pub mod prf;
pub mod sampling;
pub mod scheme;
pub mod score;
pub mod strided;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use key::{SchemeParams, TokenizerSpec, WatermarkKey};
pub use prf::{ContextRule, PRF_VERSION};
pub use sampling::{PlainSampler, SamplingParams, TokenSampler};
pub use scheme::{Gumbel, Kgw, Scheme};
pub use score::{Detection, Detector, WindowHit, MIN_SCORED_TOKENS, MIN_WINDOW};

use crate::detect::KeyTest;
use crate::registry::{EntryKind, Registry};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Errors from the text watermark.
#[derive(Debug, thiserror::Error)]
pub enum TextmarkError {
    /// A malformed or unsupported key file.
    #[error("{0}")]
    BadKey(String),
    /// A key of a scheme that does not mark text (e.g. `weights`).
    #[error("scheme `{0}` is not a text watermark")]
    NotText(String),
    /// I/O on a key file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Loading or running a tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// A watermarking sampler for one generated sequence: `key`'s scheme applied inside ordinary
/// sampling with `params`; `seed` fixes the sampler's own randomness, so the same key, seed,
/// prompt and logits give the same tokens. Works for any vocabulary size (the logits' length).
pub fn sampler_for_key(
    key: &WatermarkKey,
    params: SamplingParams,
    seed: u64,
) -> Box<dyn TokenSampler> {
    key.sampler(params, seed)
}

/// Ordinary sampling with no watermark (the same candidate filtering as the watermarked one).
pub fn plain_sampler(params: SamplingParams, seed: u64) -> Box<dyn TokenSampler> {
    Box::new(PlainSampler::new(params, seed))
}

/// The results of testing one text against every registered watermark key.
#[derive(Debug, Default)]
pub struct TextTests {
    /// One test per registered text key.
    pub tests: Vec<KeyTest>,
    /// The largest number of tokens scored by any key.
    pub scored_tokens: Option<u64>,
}

/// One registered text key, ready to test with.
#[derive(Debug)]
struct LoadedKey {
    name: String,
    key: WatermarkKey,
    detector: Detector,
    tokenizer: Arc<Tokenizer>,
}

/// Every text key of a registry, with their tokenizers loaded once (keys that share a tokenizer
/// share one instance and one tokenization per text).
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<LoadedKey>,
    /// Error results for registered keys that could not be loaded.
    broken: Vec<KeyTest>,
}

impl KeyRing {
    /// Load every `.wmkey` of a text scheme in `registry` (weight-mark keys are skipped). A key
    /// that cannot be read, or whose tokenizer does not load, is kept as an error result for
    /// that key alone (see [`KeyRing::test`]): one damaged entry never blinds the others.
    pub fn load(registry: &Registry) -> Result<Self, TextmarkError> {
        let mut tokenizers: HashMap<String, Arc<Tokenizer>> = HashMap::new();
        let mut keys = Vec::new();
        let mut broken = Vec::new();
        for e in registry.of_kind(EntryKind::WatermarkKey) {
            // The key as parsed when the registry was opened: the file is never read again.
            let key = match e.validated() {
                Ok(crate::registry::Validated::TextKey(k)) => (**k).clone(),
                Ok(_) => continue,
                Err(err) => {
                    broken.push(KeyTest::error(e.name.clone(), "wmkey", err.to_string()));
                    continue;
                }
            };
            let spec = key.tokenizer();
            let tokenizer = match tokenizers.get(&spec.blake3) {
                Some(t) => t.clone(),
                None => match spec.load() {
                    Ok(t) => {
                        let t = Arc::new(t);
                        tokenizers.insert(spec.blake3.clone(), t.clone());
                        t
                    }
                    Err(err) => {
                        broken.push(KeyTest::error(
                            e.name.clone(),
                            key.scheme().name(),
                            format!("{}: {err}", e.path.display()),
                        ));
                        continue;
                    }
                },
            };
            keys.push(LoadedKey {
                name: e.name.clone(),
                detector: Detector::new(&key),
                key,
                tokenizer,
            });
        }
        Ok(Self { keys, broken })
    }

    /// Number of text keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the registry holds no text key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Test `text` against every key. A key whose tokenizer fails on this text (an error or a
    /// caught panic) gives an error result for that key; the other keys are still tested.
    pub fn test(&self, text: &str) -> Result<TextTests, TextmarkError> {
        let mut encoded: HashMap<&str, Result<Arc<Vec<u32>>, String>> = HashMap::new();
        let mut out = TextTests::default();
        for k in &self.keys {
            let b3 = k.key.tokenizer().blake3.as_str();
            let ids = encoded
                .entry(b3)
                .or_insert_with(|| {
                    k.tokenizer
                        .encode(text)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone();
            let ids = match ids {
                Ok(ids) => ids,
                Err(err) => {
                    out.tests
                        .push(KeyTest::error(&k.name, k.key.scheme().name(), err));
                    continue;
                }
            };
            let d = k.detector.detect(&ids);
            out.tests.push(key_test(&k.name, &k.key, &d));
            out.scored_tokens = Some(out.scored_tokens.unwrap_or(0).max(d.scored as u64));
        }
        out.tests.extend(self.broken.iter().cloned());
        Ok(out)
    }
}

fn key_test(name: &str, key: &WatermarkKey, d: &Detection) -> KeyTest {
    let mut t = KeyTest::new(name, key.scheme().name(), d.p_value)
        .with("scored_tokens", d.scored as u64)
        .with("statistic", d.statistic)
        .with("p_whole", d.p_whole)
        .with("windows_tested", d.windows_tested as u64);
    if let SchemeParams::Kgw { gamma, .. } = key.scheme() {
        t = t
            .with("green_tokens", d.statistic.round() as u64)
            .with("gamma", gamma);
    }
    if let Some(w) = &d.window {
        t = t.with(
            "best_window",
            serde_json::json!({
                "token_start": w.token_start,
                "token_end": w.token_end,
                "scored_tokens": w.len,
                "statistic": w.statistic,
                "p_raw": w.p_raw,
            }),
        );
    }
    t = t
        .with(
            "context",
            format!("{}:{}", key.rule().name(), key.rule().width()),
        )
        .with("tokenizer", key.tokenizer().source.clone());
    if !d.decided {
        t.decided = false;
        t = t.with(
            "note",
            format!("too short to decide: fewer than {MIN_SCORED_TOKENS} scored tokens"),
        );
    }
    t
}

/// The key ring of `registry`, loaded once per registry value (so `detect --jsonl` over many
/// documents parses keys and tokenizers once), from the entries as read when it was opened.
pub fn key_ring(registry: &Registry) -> Result<Arc<KeyRing>, TextmarkError> {
    let mut failed = None;
    let ring = registry.derived(|| match KeyRing::load(registry) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    match ring.as_deref() {
        Some(Some(r)) => Ok(r.clone()),
        // Another detector's value in the slot, or a failed load seen by a concurrent call.
        _ => KeyRing::load(registry).map(Arc::new),
    }
}

/// Test `text` against every text watermark key in `registry`.
pub fn test_text(text: &str, registry: &Registry) -> Result<TextTests, TextmarkError> {
    key_ring(registry)?.test(text)
}

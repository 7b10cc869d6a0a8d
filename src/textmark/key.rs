//! Watermark key files (`.wmkey`): the secret, the scheme and its parameters, the PRF version and
//! the tokenizer, in one self-contained JSON file.
//!
//! ```json
//! {"format": "hallmark-wmkey", "version": 1, "scheme": "kgw", "prf_version": 1,
//!  "key": "<64 hex digits: the secret>", "gamma": 0.25, "delta": 2.0,
//!  "context": "left", "context_width": 1,
//!  "tokenizer": {"source": "SmolLM2-135M-Instruct.Q4_1.gguf", "vocab_size": 49152,
//!                "blake3": "<hex of the JSON below>", "json": "<tokenizer.json text>"}}
//! ```
//!
//! The tokenizer travels inside the key (a GGUF vocabulary is converted to `tokenizer.json`
//! form), so a registry directory alone is enough to detect: the model file need not exist at
//! detection time, and generator and detector cannot disagree on the tokenizer. Keys are written
//! 0600 and never overwritten; the secret is zeroized when the key is dropped and never printed.

use std::path::Path;
use std::sync::Arc;

use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use super::prf::{ContextRule, Prf, MAX_CONTEXT_WIDTH, PRF_VERSION};
use super::sampling::{SamplingParams, TokenSampler};
use super::scheme::{Gumbel, Kgw, Scheme, WatermarkSampler};
use super::TextmarkError;
use crate::fsutil::{write_atomic, WriteMode};
use crate::tokenizer::Tokenizer;

/// The `format` field of a key file.
pub const KEY_FORMAT: &str = "hallmark-wmkey";
/// The key file version this code reads and writes.
pub const KEY_VERSION: u64 = 1;

/// A text scheme and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SchemeParams {
    /// KGW green list: fraction `gamma` in (0, 1), bias `delta` ≥ 0.
    Kgw {
        /// Green-list fraction γ.
        gamma: f64,
        /// Logit bias δ.
        delta: f64,
    },
    /// Gumbel-max, no parameters beyond the context rule.
    Gumbel,
}

impl SchemeParams {
    /// The scheme's name in key files.
    pub fn name(&self) -> &'static str {
        match self {
            SchemeParams::Kgw { .. } => "kgw",
            SchemeParams::Gumbel => "gumbel",
        }
    }
    fn validate(&self) -> Result<(), String> {
        if let SchemeParams::Kgw { gamma, delta } = *self {
            if !(gamma > 0.0 && gamma < 1.0) {
                return Err(format!("gamma must be in (0, 1), got {gamma}"));
            }
            if !(delta.is_finite() && (0.0..=50.0).contains(&delta)) {
                return Err(format!("delta must be in [0, 50], got {delta}"));
            }
        }
        Ok(())
    }
}

/// The tokenizer a key is bound to, as carried in the key file.
#[derive(Clone, Debug)]
pub struct TokenizerSpec {
    /// Where it came from (file name only), for people.
    pub source: String,
    /// Number of token ids.
    pub vocab_size: usize,
    /// BLAKE3 (hex) of `json`: identifies the tokenizer.
    pub blake3: String,
    /// `tokenizer.json` text.
    pub json: Arc<str>,
}

impl TokenizerSpec {
    /// Capture `tok` (converted to `tokenizer.json` text) with a human-readable `source`.
    pub fn from_tokenizer(tok: &Tokenizer, source: &str) -> Result<Self, TextmarkError> {
        let json = tok.to_json()?;
        Ok(Self {
            source: source.to_string(),
            vocab_size: tok.vocab_size(),
            blake3: blake3::hash(json.as_bytes()).to_hex().to_string(),
            json: json.into(),
        })
    }
    /// Load the tokenizer.
    pub fn load(&self) -> Result<Tokenizer, TextmarkError> {
        Ok(Tokenizer::from_json(&self.json)?)
    }
}

/// A key file as read: every field optional (so a missing one gets its own message), unknown
/// fields skipped.
#[derive(serde::Deserialize)]
struct KeyFile {
    format: Option<String>,
    version: Option<u64>,
    scheme: Option<String>,
    gamma: Option<f64>,
    delta: Option<f64>,
    prf_version: Option<u64>,
    context: Option<String>,
    context_width: Option<u64>,
    key: Option<String>,
    tokenizer: Option<TokenizerFile>,
}

/// The `tokenizer` object of a key file.
#[derive(serde::Deserialize)]
struct TokenizerFile {
    json: Option<String>,
    blake3: Option<String>,
    source: Option<String>,
    vocab_size: Option<u64>,
}

/// A secret text watermark key.
#[derive(Clone)]
pub struct WatermarkKey {
    secret: Zeroizing<[u8; 32]>,
    scheme: SchemeParams,
    rule: ContextRule,
    tokenizer: TokenizerSpec,
}

impl std::fmt::Debug for WatermarkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkKey")
            .field("scheme", &self.scheme)
            .field("rule", &self.rule)
            .field("tokenizer", &self.tokenizer.source)
            .finish_non_exhaustive()
    }
}

impl WatermarkKey {
    /// A new key with a fresh 256-bit secret from the operating system.
    pub fn generate(
        scheme: SchemeParams,
        rule: ContextRule,
        tokenizer: TokenizerSpec,
    ) -> Result<Self, TextmarkError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(secret.as_mut())
            .map_err(|e| TextmarkError::BadKey(format!("no system randomness: {e}")))?;
        Self::from_parts(secret, scheme, rule, tokenizer)
    }

    /// A key from explicit parts (tests and test vectors use fixed secrets).
    pub fn from_parts(
        secret: Zeroizing<[u8; 32]>,
        scheme: SchemeParams,
        rule: ContextRule,
        tokenizer: TokenizerSpec,
    ) -> Result<Self, TextmarkError> {
        scheme.validate().map_err(TextmarkError::BadKey)?;
        let h = rule.width();
        if !(1..=MAX_CONTEXT_WIDTH).contains(&h) {
            return Err(TextmarkError::BadKey(format!(
                "context width must be in 1..={MAX_CONTEXT_WIDTH}, got {h}"
            )));
        }
        Ok(Self {
            secret,
            scheme,
            rule,
            tokenizer,
        })
    }

    /// Read and validate a key file.
    pub fn load(path: &Path) -> Result<Self, TextmarkError> {
        let bytes = Zeroizing::new(
            crate::input::read(
                path,
                crate::input::Kind::WatermarkKey,
                crate::input::Follow::Yes,
            )
            .map_err(|source| TextmarkError::Io {
                path: path.to_path_buf(),
                source,
            })?,
        );
        Self::from_json(&bytes).map_err(|e| match e {
            TextmarkError::BadKey(m) => TextmarkError::BadKey(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parse key file bytes. A key of a non-text scheme (`weights`) is [`TextmarkError::NotText`].
    ///
    /// The bytes are read into a typed struct: fields hallmark does not use are skipped without
    /// being built, so a hostile key file costs no more memory than its own size.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TextmarkError> {
        let bad = |m: &str| TextmarkError::BadKey(m.to_string());
        let mut v: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| TextmarkError::BadKey(format!("not JSON: {e}")))?;
        let result = (|| {
            if v.format.as_deref() != Some(KEY_FORMAT) {
                return Err(bad("`format` is not `hallmark-wmkey`"));
            }
            match v.version {
                Some(KEY_VERSION) => {}
                Some(n) => {
                    return Err(TextmarkError::BadKey(format!(
                        "unsupported key version {n}"
                    )))
                }
                None => return Err(bad("missing `version`")),
            }
            let scheme_name = v.scheme.as_deref().ok_or_else(|| bad("missing `scheme`"))?;
            let scheme = match scheme_name {
                "kgw" => SchemeParams::Kgw {
                    gamma: v.gamma.ok_or_else(|| bad("kgw key without `gamma`"))?,
                    delta: v.delta.ok_or_else(|| bad("kgw key without `delta`"))?,
                },
                "gumbel" => SchemeParams::Gumbel,
                other => return Err(TextmarkError::NotText(other.to_string())),
            };
            match v.prf_version {
                Some(n) if n == PRF_VERSION as u64 => {}
                Some(n) => {
                    return Err(TextmarkError::BadKey(format!(
                        "PRF version {n} is not supported (this hallmark implements {PRF_VERSION})"
                    )))
                }
                None => return Err(bad("missing `prf_version`")),
            }
            let h = v
                .context_width
                .ok_or_else(|| bad("missing `context_width`"))? as usize;
            let rule = match v.context.as_deref() {
                Some("left") => ContextRule::Left(h),
                Some("min") => ContextRule::Min(h),
                _ => return Err(bad("`context` must be `left` or `min`")),
            };
            let hex_key = v.key.as_deref().ok_or_else(|| bad("missing `key`"))?;
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex_key, secret.as_mut())
                .map_err(|_| bad("`key` must be 64 hex digits"))?;
            let t = v
                .tokenizer
                .take()
                .ok_or_else(|| bad("missing `tokenizer`"))?;
            let json: Arc<str> = t
                .json
                .ok_or_else(|| bad("missing `tokenizer.json`"))?
                .into();
            let blake = t.blake3.ok_or_else(|| bad("missing `tokenizer.blake3`"))?;
            if blake3::hash(json.as_bytes()).to_hex().as_str() != blake {
                return Err(bad(
                    "the embedded tokenizer does not match its `blake3` (damaged key file)",
                ));
            }
            let tokenizer = TokenizerSpec {
                source: t.source.unwrap_or_default(),
                vocab_size: t.vocab_size.unwrap_or(0) as usize,
                blake3: blake,
                json,
            };
            Self::from_parts(secret, scheme, rule, tokenizer)
        })();
        // The parsed struct holds a copy of the secret's hex.
        if let Some(s) = v.key.as_mut() {
            s.zeroize();
        }
        result
    }

    /// The key file text. Holds the secret: keep it in the returned zeroizing buffer.
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut hex_key = Zeroizing::new(hex::encode(self.secret.as_ref()));
        let mut v = serde_json::Map::new();
        v.insert("format".into(), json!(KEY_FORMAT));
        v.insert("version".into(), json!(KEY_VERSION));
        v.insert("scheme".into(), json!(self.scheme.name()));
        v.insert("prf_version".into(), json!(PRF_VERSION));
        v.insert("key".into(), Value::String(std::mem::take(&mut *hex_key)));
        if let SchemeParams::Kgw { gamma, delta } = self.scheme {
            v.insert("gamma".into(), json!(gamma));
            v.insert("delta".into(), json!(delta));
        }
        v.insert("context".into(), json!(self.rule.name()));
        v.insert("context_width".into(), json!(self.rule.width()));
        v.insert(
            "tokenizer".into(),
            json!({
                "source": self.tokenizer.source,
                "vocab_size": self.tokenizer.vocab_size,
                "blake3": self.tokenizer.blake3,
                "json": &*self.tokenizer.json,
            }),
        );
        let mut v = Value::Object(v);
        let mut text = Zeroizing::new(serde_json::to_string_pretty(&v).unwrap_or_default());
        text.push('\n');
        if let Some(Value::String(s)) = v.get_mut("key") {
            s.zeroize();
        }
        text
    }

    /// Write the key file: mode 0600, atomically, never over an existing file.
    pub fn save(&self, path: &Path) -> Result<(), TextmarkError> {
        let text = self.to_json();
        write_atomic(path, text.as_bytes(), WriteMode::Secret).map_err(|source| TextmarkError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The scheme and its parameters.
    pub fn scheme(&self) -> SchemeParams {
        self.scheme
    }

    /// The context rule.
    pub fn rule(&self) -> ContextRule {
        self.rule
    }

    /// The tokenizer the key is bound to.
    pub fn tokenizer(&self) -> &TokenizerSpec {
        &self.tokenizer
    }

    /// The keyed PRF of this key.
    pub fn prf(&self) -> Prf {
        Prf::new(&self.secret, self.scheme.name(), self.rule)
    }

    /// The scheme object.
    pub fn scheme_impl(&self) -> Arc<dyn Scheme> {
        match self.scheme {
            SchemeParams::Kgw { gamma, delta } => Arc::new(Kgw::new(gamma, delta)),
            SchemeParams::Gumbel => Arc::new(Gumbel),
        }
    }

    /// A watermarking sampler for one generated sequence (see [`super::sampler_for_key`]).
    pub fn sampler(&self, params: SamplingParams, seed: u64) -> Box<dyn TokenSampler> {
        Box::new(WatermarkSampler::new(
            self.scheme_impl(),
            Arc::new(self.prf()),
            params,
            seed,
        ))
    }
}

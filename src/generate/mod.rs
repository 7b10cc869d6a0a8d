//! Text generation with a local GGUF llama model, one [`TokenSampler`] call per step.
//!
//! The loop never samples by itself: at every step it hands the context and the raw logits to
//! the sampler (plain or watermarked, see [`crate::textmark`]) and appends what it returns. A
//! batch of prompts of different lengths runs through one forward pass per step, left-padded
//! with a mask, each sequence with its own sampler.

pub mod chat;
pub mod kernels;
pub mod model;
pub mod reference;

use std::path::PathBuf;
use std::time::Instant;

use crate::textmark::sampling::TokenSampler;
pub use kernels::Kernel;
pub use model::{LlamaConfig, LlamaModel, ModelMeta, State};

/// Errors from loading a model or generating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The model file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not a usable llama GGUF model.
    #[error("{}: {msg}", path.display())]
    BadModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The sequence would exceed the context.
    #[error("sequence of {len} tokens exceeds the context of {max}")]
    TooLong {
        /// Requested length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    /// Inconsistent shapes passed to the model.
    #[error("{0}")]
    Shape(&'static str),
    /// The chat template cannot be rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A watermark key bound to a different tokenizer than the model's.
    #[error(
        "the watermark key was made for another tokenizer (`{key_tokenizer}`) than this model's"
    )]
    KeyMismatch {
        /// The key's tokenizer source.
        key_tokenizer: String,
    },
    /// A forced kernel that is unknown or that this CPU cannot run.
    #[error("{0}")]
    Kernel(#[from] kernels::KernelError),
    /// An empty prompt (nothing to condition on).
    #[error("the prompt has no tokens")]
    EmptyPrompt,
}

/// How long to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most new tokens per sequence.
    pub max_tokens: usize,
    /// Stop a sequence when it samples the model's end-of-sequence token (not included).
    pub stop_at_eos: bool,
    /// Token ids whose logits are set to -inf before the sampler sees them (e.g. the control
    /// tokens, for fixed-length samples in an evaluation).
    pub banned: Vec<u32>,
    /// Record each accepted token's log-probability under the model's raw distribution
    /// (temperature 1, nothing banned): perplexity without a second forward pass.
    pub record_logprobs: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            stop_at_eos: true,
            banned: Vec::new(),
            record_logprobs: false,
        }
    }
}

/// Wall-clock split of a generation run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Prompt forward pass.
    pub prefill_s: f64,
    /// Decode forward passes.
    pub decode_s: f64,
    /// Time inside `TokenSampler::next_token` (all sequences).
    pub sample_s: f64,
    /// Decode steps taken (forward passes after the prefill).
    pub steps: usize,
    /// Tokens generated over all sequences.
    pub tokens: usize,
}

impl Timings {
    /// Generated tokens per second, from the first forward pass to the last sample.
    pub fn tokens_per_s(&self) -> f64 {
        let t = self.prefill_s + self.decode_s + self.sample_s;
        if t > 0.0 {
            self.tokens as f64 / t
        } else {
            0.0
        }
    }

    /// Sampler time as a fraction of the whole step time (forward + sampling).
    pub fn sample_share(&self) -> f64 {
        let t = self.prefill_s + self.decode_s + self.sample_s;
        if t > 0.0 {
            self.sample_s / t
        } else {
            0.0
        }
    }
}

/// One generated sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// Generated token ids (without the prompt and without the EOS token).
    pub ids: Vec<u32>,
    /// True when the sequence ended by sampling EOS.
    pub hit_eos: bool,
    /// Log-probability of each generated token (when requested).
    pub logprobs: Vec<f64>,
}

/// Generate for every prompt in `prompts` at once, calling `samplers[i]` once per step of
/// sequence `i` and `on_token(i, id)` for every accepted token. Prompts may differ in length.
pub fn generate_batch(
    model: &LlamaModel,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    samplers: &mut [&mut (dyn TokenSampler + '_)],
    mut on_token: impl FnMut(usize, u32),
) -> Result<(Vec<Generated>, Timings), GenerateError> {
    let b = prompts.len();
    if b == 0 {
        return Ok((Vec::new(), Timings::default()));
    }
    if samplers.len() != b {
        return Err(GenerateError::Shape("one sampler per prompt"));
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(GenerateError::EmptyPrompt);
    }
    let plen = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut st = model.new_state(b, plen + opts.max_tokens)?;
    let pad_id = model.meta().eos.unwrap_or(0);
    let mut tokens = Vec::with_capacity(b * plen);
    let mut pads = Vec::with_capacity(b);
    for p in prompts {
        pads.push(plen - p.len());
        tokens.extend(std::iter::repeat_n(pad_id, plen - p.len()));
        tokens.extend_from_slice(p);
    }
    let vocab = model.config().vocab;
    let mut ctx: Vec<Vec<u32>> = prompts.to_vec();
    let mut out = vec![Generated::default(); b];
    let mut done = vec![opts.max_tokens == 0; b];
    let mut tm = Timings::default();
    let mut logits_buf = vec![0f32; vocab];
    let t0 = Instant::now();
    let mut logits = model.forward(&mut st, &tokens, Some(&pads), false)?;
    tm.prefill_s = t0.elapsed().as_secs_f64();
    let t_step = Instant::now();
    let mut next = vec![pad_id; b];
    loop {
        for i in 0..b {
            if done[i] {
                next[i] = pad_id;
                continue;
            }
            logits_buf.copy_from_slice(&logits[i * vocab..(i + 1) * vocab]);
            for &t in &opts.banned {
                if let Some(l) = logits_buf.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            // Only the sampler call is timed: its share of the step is the watermark's cost.
            let ts = Instant::now();
            let id = samplers[i].next_token(&ctx[i], &logits_buf);
            tm.sample_s += ts.elapsed().as_secs_f64();
            if opts.stop_at_eos && Some(id) == model.meta().eos {
                out[i].hit_eos = true;
                done[i] = true;
                next[i] = pad_id;
                continue;
            }
            if opts.record_logprobs {
                out[i]
                    .logprobs
                    .push(log_softmax_at(&logits[i * vocab..(i + 1) * vocab], id));
            }
            ctx[i].push(id);
            out[i].ids.push(id);
            tm.tokens += 1;
            on_token(i, id);
            next[i] = id;
            if out[i].ids.len() >= opts.max_tokens {
                done[i] = true;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        logits = model.forward(&mut st, &next, None, false)?;
        tm.steps += 1;
    }
    // Decode time: everything after the prefill except the sampler calls (forward passes,
    // logit copies, log-probabilities, bookkeeping).
    tm.decode_s = (t_step.elapsed().as_secs_f64() - tm.sample_s).max(0.0);
    Ok((out, tm))
}

/// `log softmax(logits)[id]`, in f64.
pub fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    let mx = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let z: f64 = logits.iter().map(|&v| (v as f64 - mx).exp()).sum();
    logits
        .get(id as usize)
        .map_or(f64::NEG_INFINITY, |&l| l as f64 - mx - z.ln())
}

/// Generate for one prompt; `on_token` sees each token as it is accepted (for streaming).
pub fn generate(
    model: &LlamaModel,
    prompt: &[u32],
    opts: &GenerateOptions,
    sampler: &mut dyn TokenSampler,
    mut on_token: impl FnMut(u32),
) -> Result<(Generated, Timings), GenerateError> {
    let (mut g, t) = generate_batch(model, &[prompt.to_vec()], opts, &mut [sampler], |_, id| {
        on_token(id)
    })?;
    Ok((g.pop().unwrap_or_default(), t))
}

/// Log-probabilities the model gives each token of `seq[from..]` given what precedes it, for a
/// batch of sequences (perplexity). `from` must be at least 1.
pub fn token_logprobs(
    model: &LlamaModel,
    seqs: &[(Vec<u32>, usize)],
) -> Result<Vec<Vec<f64>>, GenerateError> {
    let b = seqs.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    if seqs.iter().any(|(s, from)| *from == 0 || *from > s.len()) {
        return Err(GenerateError::Shape(
            "scored tokens need a preceding context",
        ));
    }
    let len = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    let pad_id = model.meta().eos.unwrap_or(0);
    let mut tokens = Vec::with_capacity(b * len);
    let mut pads = Vec::with_capacity(b);
    for (s, _) in seqs {
        pads.push(len - s.len());
        tokens.extend(std::iter::repeat_n(pad_id, len - s.len()));
        tokens.extend_from_slice(s);
    }
    let mut st = model.new_state(b, len)?;
    let logits = model.forward(&mut st, &tokens, Some(&pads), true)?;
    let vocab = model.config().vocab;
    let mut res = Vec::with_capacity(b);
    for (bi, (s, from)) in seqs.iter().enumerate() {
        let mut lp = Vec::with_capacity(s.len() - from);
        for (t, &tok) in s.iter().enumerate().skip(*from) {
            // Logits at slot (pad + t - 1) predict token t.
            let row = bi * len + pads[bi] + t - 1;
            lp.push(log_softmax_at(&logits[row * vocab..(row + 1) * vocab], tok));
        }
        res.push(lp);
    }
    Ok(res)
}

/// A model with its tokenizer (both read from the same GGUF file).
pub struct Runner {
    /// The transformer.
    pub model: LlamaModel,
    /// The tokenizer rebuilt from the GGUF vocabulary and merges.
    pub tokenizer: crate::tokenizer::Tokenizer,
}

impl Runner {
    /// Load a llama GGUF file and the tokenizer embedded in it.
    pub fn load(path: &std::path::Path) -> Result<Self, GenerateError> {
        let model = LlamaModel::load(path)?;
        let tokenizer =
            crate::tokenizer::Tokenizer::from_path(path).map_err(|e| GenerateError::BadModel {
                path: path.to_path_buf(),
                msg: format!("tokenizer: {e}"),
            })?;
        if tokenizer.vocab_size() > model.config().vocab {
            return Err(GenerateError::BadModel {
                path: path.to_path_buf(),
                msg: "the tokenizer has more tokens than the model's output".into(),
            });
        }
        Ok(Self { model, tokenizer })
    }

    /// Refuse a key made for another tokenizer: its green lists / PRF values would index other
    /// tokens, and detection (which tokenizes with the key's tokenizer) would see no mark.
    pub fn check_key(&self, key: &crate::textmark::WatermarkKey) -> Result<(), GenerateError> {
        let json = self
            .tokenizer
            .to_json()
            .map_err(|e| GenerateError::Template(format!("tokenizer: {e}")))?;
        let ours = blake3::hash(json.as_bytes()).to_hex().to_string();
        if key.tokenizer().blake3 != ours {
            return Err(GenerateError::KeyMismatch {
                key_tokenizer: key.tokenizer().source.clone(),
            });
        }
        Ok(())
    }

    /// Token ids of a user message wrapped in the model's chat template.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>, GenerateError> {
        let text = chat::render_user_prompt(self.model.meta(), prompt)?;
        let mut ids = Vec::new();
        if self.model.meta().add_bos {
            ids.extend(self.model.meta().bos);
        }
        ids.extend(self.encode(&text)?);
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Token ids of plain text (special-token strings such as `<|im_start|>` map to their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, GenerateError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| GenerateError::Template(format!("tokenizing: {e}")))
    }

    /// Text of generated ids (special tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String, GenerateError> {
        self.tokenizer
            .decode(ids)
            .map_err(|e| GenerateError::Template(format!("decoding: {e}")))
    }
}

/// Turns a growing list of token ids into text pieces without splitting a multi-byte
/// character across two pieces (a token may hold only part of a UTF-8 sequence).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    printed: usize,
}

impl StreamDecoder {
    /// Add one token; returns the text that is now complete, if any.
    pub fn push(&mut self, runner: &Runner, id: u32) -> Result<Option<String>, GenerateError> {
        self.ids.push(id);
        let text = runner.decode(&self.ids)?;
        // An incomplete UTF-8 sequence decodes to U+FFFD at the end: wait for the next token.
        if text.ends_with('\u{FFFD}') || text.len() <= self.printed {
            return Ok(None);
        }
        if !text.is_char_boundary(self.printed) {
            return Ok(None);
        }
        let piece = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(Some(piece))
    }

    /// Whatever is left at the end (including a trailing replacement character).
    pub fn finish(&mut self, runner: &Runner) -> Result<Option<String>, GenerateError> {
        let text = runner.decode(&self.ids)?;
        if text.len() > self.printed && text.is_char_boundary(self.printed) {
            let piece = text[self.printed..].to_string();
            self.printed = text.len();
            return Ok(Some(piece));
        }
        Ok(None)
    }
}

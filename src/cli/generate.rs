use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::generate::{generate, GenerateOptions, Runner, StreamDecoder};
use hallmark::textmark::sampling::{PlainSampler, SamplingParams, TokenSampler};
use hallmark::textmark::{sampler_for_key, WatermarkKey};

/// `hallmark generate`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model (llama architecture).
    #[arg(long)]
    pub model: PathBuf,
    /// Watermark key (exactly one of --wm-key and --no-watermark).
    #[arg(long)]
    pub wm_key: Option<PathBuf>,
    /// Generate without a watermark.
    #[arg(long)]
    pub no_watermark: bool,
    /// The prompt (a user message; the model's chat template is applied).
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold, in (0, 1] (1 turns it off). The default keeps a small
    /// model's text readable by cutting the long tail of unlikely tokens.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Random seed (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (text, token ids, tokens/s) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Never stop at the end-of-sequence token: always generate --max-tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Check what the user typed before touching any file.
fn params(a: &Args) -> anyhow::Result<SamplingParams> {
    match (&a.wm_key, a.no_watermark) {
        (Some(_), true) => anyhow::bail!("give either --wm-key KEY or --no-watermark, not both"),
        (None, false) => anyhow::bail!("give --wm-key KEY to watermark, or --no-watermark"),
        _ => {}
    }
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        anyhow::bail!("--temperature must be a number >= 0, got {}", a.temperature);
    }
    if a.top_k == Some(0) {
        anyhow::bail!("--top-k must be at least 1");
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        anyhow::bail!("--top-p must be in (0, 1], got {}", a.top_p);
    }
    if a.max_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    Ok(SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: (a.top_p < 1.0).then_some(a.top_p),
    })
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let params = params(&a)?;
    // The key first: it is small, and a bad key should not wait for a model load.
    let key = match &a.wm_key {
        Some(path) => Some(WatermarkKey::load(path)?),
        None => None,
    };
    let runner = Runner::load(&a.model)?;
    let mut sampler: Box<dyn TokenSampler> = match (&key, &a.wm_key) {
        (Some(key), Some(path)) => {
            runner
                .check_key(key)
                .with_context(|| path.display().to_string())?;
            sampler_for_key(key, params, a.seed)
        }
        _ => Box::new(PlainSampler::new(params, a.seed)),
    };
    let prompt = runner.prompt_ids(&a.prompt)?;
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        banned: if a.ignore_eos {
            runner.model.meta().control_tokens.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut stream = StreamDecoder::default();
    let mut io_err: Option<std::io::Error> = None;
    let (generated, timings) = generate(&runner.model, &prompt, &opts, sampler.as_mut(), |id| {
        if a.json || io_err.is_some() {
            return;
        }
        match stream.push(&runner, id) {
            Ok(Some(piece)) => {
                if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                    io_err = Some(e);
                }
            }
            Ok(None) => {}
            Err(e) => io_err = Some(std::io::Error::other(e.to_string())),
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing the answer");
    }
    if a.json {
        let text = runner.decode(&generated.ids)?;
        let v = serde_json::json!({
            "model": a.model.display().to_string(),
            "watermark": a.wm_key.as_ref().map(|k| k.display().to_string()),
            "seed": a.seed,
            "prompt_tokens": prompt.len(),
            "text": text,
            "token_ids": generated.ids,
            "generated_tokens": generated.ids.len(),
            "stopped_at_eos": generated.hit_eos,
            "tokens_per_s": timings.tokens_per_s(),
            "decode_tokens_per_s": if timings.decode_s > 0.0 { timings.steps as f64 / (timings.decode_s + timings.sample_s) } else { 0.0 },
            "prefill_s": timings.prefill_s,
            "decode_s": timings.decode_s,
            "sample_s": timings.sample_s,
        });
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    } else {
        if let Some(rest) = stream.finish(&runner)? {
            out.write_all(rest.as_bytes())?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

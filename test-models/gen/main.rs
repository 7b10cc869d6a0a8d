//! `hallmark-testmodels`: a deterministic generator of small llama-shaped test models.
//!
//! The same seed always gives the same bytes (a fixed SplitMix64 stream, not a library RNG whose
//! algorithm may change), so tests and the demo can regenerate models instead of storing them.
//!
//! ```text
//! hallmark-testmodels safetensors OUT.safetensors [--seed S] [--layers L] [--hidden H] [--vocab V]
//! hallmark-testmodels sharded DIR [--shards N] [...]   model-0000i-of-0000N.safetensors + index + config + tokenizer
//! hallmark-testmodels gguf OUT.gguf [...]
//! ```
#![warn(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hallmark::fsutil::{write_atomic, WriteMode};
use hallmark::weights::write::{gguf_bytes, safetensors_bytes, OwnedTensor};
use hallmark::weights::{DType, MetaValue};
use serde_json::json;

/// Write small deterministic test models.
#[derive(Parser, Debug)]
#[command(
    name = "hallmark-testmodels",
    version,
    about = "Write small deterministic test models (safetensors, sharded, GGUF)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct Shape {
    /// Seed of the weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of transformer layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 256)]
    vocab: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One .safetensors file.
    Safetensors {
        /// Output file.
        out: PathBuf,
        #[command(flatten)]
        shape: Shape,
    },
    /// A sharded checkpoint directory with index, config and tokenizer files.
    Sharded {
        /// Output directory (created; must not exist or be empty).
        out: PathBuf,
        /// Number of shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        #[command(flatten)]
        shape: Shape,
    },
    /// One GGUF v3 file (F32 and F16 tensors, llama metadata).
    Gguf {
        /// Output file.
        out: PathBuf,
        #[command(flatten)]
        shape: Shape,
    },
}

/// SplitMix64: a fixed, well-known stream.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// A normal deviate (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn tensor(
    rng: &mut SplitMix,
    name: String,
    shape: Vec<u64>,
    dtype: DType,
    std: f32,
    mean: f32,
) -> OwnedTensor {
    let n: u64 = shape.iter().product();
    let mut bytes = Vec::with_capacity(n as usize * 4);
    for _ in 0..n {
        let x = mean + std * rng.normal();
        match dtype {
            DType::F16 => bytes.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
            DType::BF16 => bytes.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
            _ => bytes.extend_from_slice(&x.to_le_bytes()),
        }
    }
    OwnedTensor {
        name,
        dtype,
        shape,
        bytes,
    }
}

/// Llama-shaped tensors (HF names), row-major [out, in] weights.
fn llama(s: &Shape, dtype: DType) -> Vec<OwnedTensor> {
    let mut rng = SplitMix(s.seed ^ 0x6861_6c6c_6d61_726b);
    let (h, v) = (s.hidden as u64, s.vocab as u64);
    let ff = h * 2;
    let mut out = vec![tensor(
        &mut rng,
        "model.embed_tokens.weight".into(),
        vec![v, h],
        dtype,
        0.02,
        0.0,
    )];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            out.push(tensor(
                &mut rng,
                format!("{p}.self_attn.{m}.weight"),
                vec![h, h],
                dtype,
                0.02,
                0.0,
            ));
        }
        out.push(tensor(
            &mut rng,
            format!("{p}.mlp.gate_proj.weight"),
            vec![ff, h],
            dtype,
            0.02,
            0.0,
        ));
        out.push(tensor(
            &mut rng,
            format!("{p}.mlp.up_proj.weight"),
            vec![ff, h],
            dtype,
            0.02,
            0.0,
        ));
        out.push(tensor(
            &mut rng,
            format!("{p}.mlp.down_proj.weight"),
            vec![h, ff],
            dtype,
            0.02,
            0.0,
        ));
        out.push(tensor(
            &mut rng,
            format!("{p}.input_layernorm.weight"),
            vec![h],
            dtype,
            0.05,
            1.0,
        ));
        out.push(tensor(
            &mut rng,
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            dtype,
            0.05,
            1.0,
        ));
    }
    out.push(tensor(
        &mut rng,
        "model.norm.weight".into(),
        vec![h],
        dtype,
        0.05,
        1.0,
    ));
    out.push(tensor(
        &mut rng,
        "lm_head.weight".into(),
        vec![v, h],
        dtype,
        0.02,
        0.0,
    ));
    out
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, bytes, WriteMode::PublicNoClobber)
        .with_context(|| format!("writing {}", path.display()))
}

fn config(s: &Shape) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": s.hidden, "intermediate_size": s.hidden * 2,
        "num_hidden_layers": s.layers, "num_attention_heads": 4, "num_key_value_heads": 4,
        "vocab_size": s.vocab, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
        "hallmark_test_model": true, "seed": s.seed,
    })
}

fn tokenizer(vocab: usize) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    for i in 0..vocab {
        v.insert(format!("t{i}"), json!(i));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "t0"},
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Safetensors { out, shape } => {
            let t = llama(&shape, DType::F32);
            let meta = vec![("format".to_string(), "pt".to_string())];
            write_new(
                &out,
                &safetensors_bytes(&t, &meta).map_err(anyhow::Error::msg)?,
            )?;
        }
        Command::Sharded { out, shards, shape } => {
            anyhow::ensure!((1..=99).contains(&shards), "--shards must be 1..=99");
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let t = llama(&shape, DType::BF16);
            let per = t.len().div_ceil(shards);
            let mut weight_map = serde_json::Map::new();
            let total: usize = t.iter().map(|x| x.bytes.len()).sum();
            for (i, part) in t.chunks(per).enumerate() {
                let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
                for x in part {
                    weight_map.insert(x.name.clone(), json!(name));
                }
                let meta = vec![("format".to_string(), "pt".to_string())];
                write_new(
                    &out.join(&name),
                    &safetensors_bytes(part, &meta).map_err(anyhow::Error::msg)?,
                )?;
            }
            let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            write_new(
                &out.join("model.safetensors.index.json"),
                serde_json::to_string_pretty(&index)?.as_bytes(),
            )?;
            write_new(
                &out.join("config.json"),
                serde_json::to_string_pretty(&config(&shape))?.as_bytes(),
            )?;
            write_new(
                &out.join("tokenizer.json"),
                serde_json::to_string(&tokenizer(shape.vocab))?.as_bytes(),
            )?;
            let tc = json!({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0", "model_max_length": 2048});
            write_new(
                &out.join("tokenizer_config.json"),
                serde_json::to_string_pretty(&tc)?.as_bytes(),
            )?;
        }
        Command::Gguf { out, shape } => {
            let mut t = llama(&shape, DType::F32);
            // Norms stay F32 (as llama.cpp stores them); matrices in F16.
            let mut rng = SplitMix(shape.seed);
            for x in t.iter_mut().filter(|x| x.shape.len() == 2) {
                *x = tensor(
                    &mut rng,
                    x.name.clone(),
                    x.shape.clone(),
                    DType::F16,
                    0.02,
                    0.0,
                );
            }
            let meta = vec![
                (
                    "general.architecture".to_string(),
                    MetaValue::String("llama".into()),
                ),
                (
                    "general.name".to_string(),
                    MetaValue::String("hallmark-test".into()),
                ),
                (
                    "llama.block_count".to_string(),
                    MetaValue::U64(shape.layers as u64),
                ),
                (
                    "llama.embedding_length".to_string(),
                    MetaValue::U64(shape.hidden as u64),
                ),
            ];
            write_new(&out, &gguf_bytes(&t, &meta).map_err(anyhow::Error::msg)?)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hallmark-testmodels: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! Generation with the real SmolLM2 GGUF (placed by test-models/fetch.sh) and the CLI contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use hallmark::generate::reference::ReferenceModel;
use hallmark::generate::{generate, GenerateOptions, LlamaModel};
use hallmark::textmark::sampling::{argmax, PlainSampler, SamplingParams, TokenSampler};

fn smollm2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Token ids of the ChatML prompt built from vocabulary entries (no tokenizer needed).
fn chat_ids(model: &LlamaModel) -> Vec<u32> {
    let words = [
        "<|im_start|>",
        "user",
        "Ċ",
        "What",
        "Ġis",
        "Ġthe",
        "Ġcapital",
        "Ġof",
        "ĠFrance",
        "?",
        "<|im_end|>",
        "Ċ",
        "<|im_start|>",
        "ass",
        "istant",
        "Ċ",
    ];
    let toks = &model.meta().tokens;
    words
        .iter()
        .map(|w| {
            toks.iter()
                .position(|t| t == w)
                .expect("word in vocabulary") as u32
        })
        .collect()
}

/// Steps `steps` tokens greedily through both models; returns the largest KL divergence.
fn compare(model: &LlamaModel, reference: &mut ReferenceModel, steps: usize) -> f64 {
    let ids = chat_ids(model);
    let mut st = model.new_state(1, 64).expect("state");
    let mut mine = model
        .forward(&mut st, &ids, None, false)
        .expect("forward")
        .to_vec();
    let mut theirs = reference.forward(&ids).expect("reference forward");
    let mut worst = 0f64;
    for step in 0..steps {
        assert_eq!(mine.len(), model.config().vocab);
        let kl = kl_divergence(&theirs, &mine);
        worst = worst.max(kl);
        let a = argmax(&mine);
        assert_eq!(a, argmax(&theirs), "step {step}: greedy tokens differ");
        mine = model
            .forward(&mut st, &[a], None, false)
            .expect("forward")
            .to_vec();
        theirs = reference.forward(&[a]).expect("reference forward");
    }
    worst
}

/// With every matrix dequantized, the runner's forward pass (batched attention, RoPE, KV cache)
/// equals candle-transformers' quantized llama to float rounding. candle reads
/// `CANDLE_DEQUANTIZE_ALL` from the environment, so the check runs in a child process.
#[test]
fn runner_forward_equals_candle_transformers_dense() {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "generate::dense_forward_child",
            "--ignored",
            "--nocapture",
        ])
        .env("CANDLE_DEQUANTIZE_ALL", "1")
        .output()
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by runner_forward_equals_candle_transformers_dense with the environment it needs"]
fn dense_forward_child() {
    assert_eq!(std::env::var("CANDLE_DEQUANTIZE_ALL").as_deref(), Ok("1"));
    let model = LlamaModel::load_with(&smollm2(), true).expect("load");
    let mut reference = ReferenceModel::load(&smollm2()).expect("reference");
    let kl = compare(&model, &mut reference, 6);
    assert!(kl < 1e-9, "KL {kl}");
}

/// With quantized matrices both sides quantize activations to 8 bits per block (with different
/// rounding of the block scales), so the distributions agree to quantization noise.
#[test]
fn runner_matches_candle_transformers_quantized() {
    let model = LlamaModel::load(&smollm2()).expect("load");
    let mut reference = ReferenceModel::load(&smollm2()).expect("reference");
    let kl = compare(&model, &mut reference, 6);
    eprintln!("max KL(reference || runner) = {kl:.2e}");
    assert!(kl < 0.03, "KL {kl}");
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let mx = l.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let z: f64 = l.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
    l.iter().map(|&v| v as f64 - mx - z).collect()
}

fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

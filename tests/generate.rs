//! Generation with the real SmolLM2 GGUF (placed by test-models/fetch.sh) and the CLI contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use hallmark::generate::reference::ReferenceModel;
use hallmark::generate::{generate, GenerateOptions, LlamaModel};
use hallmark::textmark::sampling::{PlainSampler, SamplingParams, TokenSampler};

fn smollm2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Token ids of the ChatML prompt built from vocabulary entries (no tokenizer needed).
fn chat_ids(model: &LlamaModel) -> Vec<u32> {
    let words = [
        "<|im_start|>", "user", "Ċ", "What", "Ġis", "Ġthe", "Ġcapital", "Ġof", "ĠFrance", "?",
        "<|im_end|>", "Ċ", "<|im_start|>", "ass", "istant", "Ċ",
    ];
    let toks = &model.meta().tokens;
    words
        .iter()
        .map(|w| toks.iter().position(|t| t == w).expect("word in vocabulary") as u32)
        .collect()
}

#[test]
fn runner_logits_match_candle_transformers() {
    let model = LlamaModel::load(&smollm2()).expect("load");
    let ids = chat_ids(&model);
    let mut reference = ReferenceModel::load(&smollm2()).expect("reference");
    let mut st = model.new_state(1, 64).expect("state");
    let vocab = model.config().vocab;
    let mut mine = model.forward(&mut st, &ids, None, false).expect("forward").to_vec();
    let mut theirs = reference.forward(&ids).expect("reference forward");
    for step in 0..6 {
        assert_eq!(mine.len(), vocab);
        // Both quantize activations to 8 bits per block (with different rounding of the block
        // scales), so logits agree to quantization noise: compare the distributions.
        let kl = kl_divergence(&theirs, &mine);
        eprintln!("step {step}: KL(reference || runner) = {kl:.2e}");
        assert!(kl < 5e-3, "step {step}: KL {kl}");
        let a = hallmark::textmark::sampling::argmax(&mine);
        assert_eq!(a, hallmark::textmark::sampling::argmax(&theirs), "step {step}");
        mine = model.forward(&mut st, &[a], None, false).expect("forward").to_vec();
        theirs = reference.forward(&[a]).expect("reference forward");
    }
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

//! Decode speed of the SmolLM2-135M Q4_1 runner at batch 1 and batched, against
//! candle-transformers' quantized llama on the same file, and the sampler's share of a step.
//! The runner is timed with each kernel this CPU supports (`hallmark_batch1/avx2`, ...).
//! Needs test-models/fetch.sh. `cargo bench --bench generate`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hallmark::generate::reference::ReferenceModel;
use hallmark::generate::{Kernel, LlamaModel, Runner};
use hallmark::textmark::sampler_for_key;
use hallmark::textmark::sampling::{PlainSampler, SamplingParams, TokenSampler};

const MODEL: &str = "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT: &str = "Write a detailed essay about the history of the printing press.";
/// Decode steps start after the prompt and this many generated tokens (a mid-answer context).
const WARM: usize = 64;

fn prompt_ids() -> (Runner, Vec<u32>) {
    let runner = Runner::load(Path::new(MODEL)).expect("run test-models/fetch.sh first");
    let ids = runner.prompt_ids(PROMPT).expect("prompt");
    (runner, ids)
}

fn decode(c: &mut Criterion) {
    let (mut runner, ids) = prompt_ids();
    let filler: Vec<u32> = ids.iter().cycle().take(WARM).copied().collect();
    let mut g = c.benchmark_group("decode_step");
    g.sample_size(20).measurement_time(Duration::from_secs(6));
    for kernel in Kernel::supported() {
        runner.model.set_kernel(kernel).expect("supported kernel");
        let model: &LlamaModel = &runner.model;

        // hallmark runner, batch 1: one token at a fixed context length.
        let mut st = model.new_state(1, ids.len() + WARM + 1).expect("state");
        model.forward(&mut st, &ids, None, false).expect("prefill");
        model.forward(&mut st, &filler, None, false).expect("warm");
        let at = st.len();
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("hallmark_batch1/{}", kernel.name()), |b| {
            b.iter(|| {
                st.rewind(at);
                black_box(
                    model
                        .forward(&mut st, &[ids[0]], None, false)
                        .expect("step")[0],
                )
            })
        });

        // hallmark runner, 16 sequences per forward pass.
        let batch = 16;
        let mut st = model.new_state(batch, ids.len() + WARM + 1).expect("state");
        let toks: Vec<u32> = (0..batch).flat_map(|_| ids.iter().copied()).collect();
        model
            .forward(&mut st, &toks, Some(&vec![0; batch]), false)
            .expect("prefill");
        let fill: Vec<u32> = (0..batch).flat_map(|_| filler.iter().copied()).collect();
        model.forward(&mut st, &fill, None, false).expect("warm");
        let at = st.len();
        let step: Vec<u32> = vec![ids[0]; batch];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("hallmark_batch16/{}", kernel.name()), |b| {
            b.iter(|| {
                st.rewind(at);
                black_box(model.forward(&mut st, &step, None, false).expect("step")[0])
            })
        });
    }

    // candle-transformers' quantized llama (the reference), batch 1. Its KV cache grows by
    // concatenation; the context is re-primed (untimed) every 32 steps so it stays near WARM.
    let mut reference = ReferenceModel::load(Path::new(MODEL)).expect("reference");
    let context: Vec<u32> = ids.iter().chain(&filler).copied().collect();
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("candle_transformers_batch1", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                if i % 32 == 0 {
                    reference.reset();
                    reference.forward(&context).expect("prefill");
                }
                let t = Instant::now();
                black_box(reference.forward(&[ids[0]]).expect("step")[0]);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Sampler cost per step on real logits (the watermark's budget is 1% of a decode step).
fn sampler(c: &mut Criterion) {
    let (runner, ids) = prompt_ids();
    let model = &runner.model;
    let mut st = model.new_state(1, ids.len()).expect("state");
    let logits = model
        .forward(&mut st, &ids, None, false)
        .expect("prefill")
        .to_vec();
    let mut g = c.benchmark_group("sampler_step");
    g.sample_size(30).measurement_time(Duration::from_secs(3));
    for (name, params) in [
        ("plain_full_vocab", SamplingParams::default()),
        (
            "plain_top_k_50",
            SamplingParams {
                top_k: Some(50),
                ..Default::default()
            },
        ),
    ] {
        let mut s = PlainSampler::new(params, 1);
        g.bench_function(name, |b| b.iter(|| black_box(s.next_token(&ids, &logits))));
    }
    // The watermarked samplers of the evaluation's keys. The context changes every call (a
    // repeated context would take gumbel's plain-sampling fallback).
    let keys = hallmark::eval::eval_keys(&runner, 1).expect("keys");
    for key in &keys {
        let mut s = sampler_for_key(key, SamplingParams::default(), 1);
        let mut ctx = ids.clone();
        let mut n = 0u32;
        g.bench_function(format!("{}_full_vocab", key.scheme().name()), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                if let Some(last) = ctx.last_mut() {
                    *last = n % 49_152;
                }
                black_box(s.next_token(&ctx, &logits))
            })
        });
    }
    g.finish();
}

// No HTML/SVG plots: plotters is built here with explicitly registered fonts only (for the
// project's own plots), and criterion's plotting would find none and panic.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = decode, sampler
}
criterion_main!(benches);

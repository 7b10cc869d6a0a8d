//! Generation with the real SmolLM2 GGUF (placed by test-models/fetch.sh) and the CLI contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use hallmark::generate::reference::ReferenceModel;
use hallmark::generate::{
    generate, generate_batch, token_logprobs, GenerateOptions, Kernel, LlamaModel, Runner,
};
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
    let kl = compare(&model, &mut reference, 4);
    assert!(kl < 1e-9, "KL {kl}");
}

/// With quantized matrices both sides quantize activations to 8 bits per block (with different
/// rounding of the block scales), so the distributions agree to quantization noise.
#[test]
fn runner_matches_candle_transformers_quantized() {
    let model = LlamaModel::load(&smollm2()).expect("load");
    let mut reference = ReferenceModel::load(&smollm2()).expect("reference");
    let kl = compare(&model, &mut reference, 4);
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

fn hallmark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        ..Default::default()
    }
}

/// Records every call and delegates to a plain sampler.
struct Recording {
    inner: PlainSampler,
    contexts: Vec<Vec<u32>>,
    vocab_seen: Vec<usize>,
}

impl TokenSampler for Recording {
    fn next_token(&mut self, context: &[u32], logits: &[f32]) -> u32 {
        self.contexts.push(context.to_vec());
        self.vocab_seen.push(logits.len());
        self.inner.next_token(context, logits)
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let runner = Runner::load(&smollm2()).expect("load");
    let prompt = runner
        .prompt_ids("Tell me about the moon.")
        .expect("prompt");
    let run = |seed: u64| {
        let mut s = PlainSampler::new(SamplingParams::default(), seed);
        generate(&runner.model, &prompt, &opts(16), &mut s, |_| {})
            .expect("generate")
            .0
            .ids
    };
    let a = run(7);
    assert!(!a.is_empty());
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
}

#[test]
fn loop_calls_the_sampler_once_per_step_with_the_growing_context() {
    let runner = Runner::load(&smollm2()).expect("load");
    let prompt = runner.prompt_ids("Name three colours.").expect("prompt");
    let mut rec = Recording {
        inner: PlainSampler::new(SamplingParams::default(), 3),
        contexts: Vec::new(),
        vocab_seen: Vec::new(),
    };
    let mut streamed = Vec::new();
    let (g, t) = generate(&runner.model, &prompt, &opts(16), &mut rec, |id| {
        streamed.push(id)
    })
    .expect("generate");
    // One call per accepted token, plus the call that returned EOS if the answer ended.
    assert_eq!(rec.contexts.len(), g.ids.len() + usize::from(g.hit_eos));
    assert_eq!(streamed, g.ids);
    assert_eq!(t.tokens, g.ids.len());
    for (step, ctx) in rec.contexts.iter().enumerate() {
        let mut want = prompt.clone();
        want.extend(&g.ids[..step]);
        assert_eq!(ctx, &want, "step {step}");
    }
    assert!(rec
        .vocab_seen
        .iter()
        .all(|&v| v == runner.model.config().vocab));
}

/// Every kernel this CPU runs, each check below repeated per kernel: a machine with AVX-512
/// also checks the AVX2 and scalar paths.
fn kernels() -> Vec<Kernel> {
    let k = Kernel::supported();
    assert_eq!(
        k.first(),
        Some(&Kernel::Scalar),
        "the scalar kernel always runs"
    );
    eprintln!(
        "kernels checked: {:?}",
        k.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    k
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Prompts of different lengths in one batch (left padding + mask) give bit for bit the same
/// logits and greedy tokens as each prompt alone, on every kernel.
#[test]
fn batched_generation_equals_one_at_a_time() {
    let mut runner = Runner::load(&smollm2()).expect("load");
    for kernel in kernels() {
        runner.model.set_kernel(kernel).expect("supported kernel");
        batched_equals_alone(&runner, kernel);
    }
}

fn batched_equals_alone(runner: &Runner, kernel: Kernel) {
    let prompts: Vec<Vec<u32>> = [
        "Hi.",
        "Write a haiku about autumn leaves falling.",
        "What is 2+2?",
    ]
    .iter()
    .map(|p| runner.prompt_ids(p).expect("prompt"))
    .collect();
    assert!(prompts[0].len() != prompts[1].len());
    let vocab = runner.model.config().vocab;
    let longest = prompts.iter().map(|p| p.len()).max().expect("prompts");
    let mut st = runner.model.new_state(3, longest).expect("state");
    let toks: Vec<u32> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(0, longest - p.len()).chain(p.iter().copied()))
        .collect();
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let batched = runner
        .model
        .forward(&mut st, &toks, Some(&pads), false)
        .expect("batch")
        .to_vec();
    for (i, p) in prompts.iter().enumerate() {
        let mut one = runner.model.new_state(1, p.len()).expect("state");
        let alone = runner
            .model
            .forward(&mut one, p, None, false)
            .expect("alone");
        assert!(
            bits(alone) == bits(&batched[i * vocab..(i + 1) * vocab]),
            "{kernel:?}, prompt {i}: batched logits differ from the prompt alone"
        );
    }
    let greedy = || {
        PlainSampler::new(
            SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            0,
        )
    };
    let mut s: Vec<PlainSampler> = (0..3).map(|_| greedy()).collect();
    let mut refs: Vec<&mut dyn TokenSampler> =
        s.iter_mut().map(|x| x as &mut dyn TokenSampler).collect();
    let (gens, _) =
        generate_batch(&runner.model, &prompts, &opts(12), &mut refs, |_, _| {}).expect("batch");
    for (p, g) in prompts.iter().zip(&gens) {
        let mut one = greedy();
        let (alone, _) = generate(&runner.model, p, &opts(12), &mut one, |_| {}).expect("alone");
        assert_eq!(alone.ids, g.ids, "{kernel:?}");
    }
}

/// All kernels give bit-identical logits on the real model: a prefill, greedy decode steps
/// (one row per pass) and a batched pass with padding.
#[test]
fn every_kernel_gives_the_same_logits_on_the_real_model() {
    let mut model = LlamaModel::load(&smollm2()).expect("load");
    let ids = chat_ids(&model);
    let mut runs: Vec<(Kernel, Vec<u32>)> = Vec::new();
    for kernel in kernels() {
        model.set_kernel(kernel).expect("supported kernel");
        assert_eq!(model.kernel(), kernel);
        let mut all = Vec::new();
        let mut st = model.new_state(1, ids.len() + 6).expect("state");
        let mut logits = model
            .forward(&mut st, &ids, None, false)
            .expect("prefill")
            .to_vec();
        for _ in 0..6 {
            all.extend(bits(&logits));
            let next = argmax(&logits);
            logits = model
                .forward(&mut st, &[next], None, false)
                .expect("step")
                .to_vec();
        }
        let mut st = model.new_state(2, ids.len()).expect("state");
        let toks: Vec<u32> = [0, 0, 0]
            .iter()
            .chain(&ids[3..])
            .chain(&ids)
            .copied()
            .collect();
        all.extend(bits(
            model
                .forward(&mut st, &toks, Some(&[3, 0][..]), true)
                .expect("batch"),
        ));
        runs.push((kernel, all));
    }
    let (first, want) = &runs[0];
    for (kernel, got) in &runs[1..] {
        let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{kernel:?} vs {first:?}: {differing} logits differ"
        );
    }
}

/// `HALLMARK_KERNEL` forces a kernel: every supported one generates the same tokens through the
/// CLI, and an unknown or unsupported one is a clear error (exit 2).
#[test]
fn hallmark_kernel_forces_a_kernel() {
    let model = smollm2();
    let args = [
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--no-watermark",
        "--prompt",
        "Say hello.",
        "--max-tokens",
        "8",
        "--seed",
        "5",
        "--json",
    ];
    let mut seen = None;
    for kernel in kernels() {
        let out = hallmark()
            .args(args)
            .env("HALLMARK_KERNEL", kernel.name())
            .output()
            .expect("run hallmark");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let ids = v["token_ids"].clone();
        assert!(ids.as_array().is_some_and(|a| !a.is_empty()));
        match &seen {
            None => seen = Some(ids),
            Some(first) => assert_eq!(&ids, first, "{kernel:?}"),
        }
    }
    let mut bad = vec![("sse9", "is not a kernel")];
    bad.extend(
        Kernel::ALL
            .iter()
            .filter(|k| !k.is_supported())
            .map(|k| (k.name(), "which this CPU lacks")),
    );
    for (name, needle) in bad {
        let out = hallmark()
            .args(args)
            .env("HALLMARK_KERNEL", name)
            .output()
            .expect("run hallmark");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with("hallmark: ") && err.contains(needle),
            "{name}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        // --json: the error is also a JSON object on stdout, for scripts.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON error");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{name}: {v}"
        );
    }
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = hallmark().args(args).output().expect("run hallmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn generate_json_shape_and_reproducibility() {
    let model = smollm2();
    let args = [
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--no-watermark",
        "--prompt",
        "Say hello.",
        "--max-tokens",
        "16",
        "--seed",
        "5",
        "--json",
    ];
    let v = run_json(&args);
    let ids = v["token_ids"].as_array().expect("token_ids");
    assert!(!ids.is_empty() && ids.len() <= 16);
    assert!(ids.iter().all(|i| i.as_u64().is_some_and(|i| i < 49_152)));
    assert_eq!(v["generated_tokens"].as_u64(), Some(ids.len() as u64));
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(v["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0));
    assert!(v["prompt_tokens"].as_u64().is_some_and(|n| n > 5));
    assert_eq!(v["watermark"], serde_json::Value::Null);
    assert_eq!(run_json(&args)["token_ids"], v["token_ids"]);
    // Streaming prints the same text as the JSON form.
    let out = hallmark()
        .args(&args[..args.len() - 1])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        v["text"].as_str().expect("text").trim_end()
    );
}

/// The watermark is applied inside generation and found by `detect` through the registry.
#[test]
fn watermarked_answer_is_detected_and_plain_answer_is_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = smollm2();
    let m = model.to_str().expect("utf-8");
    let key = dir.path().join("g.wmkey");
    let reg = dir.path().join("reg");
    let k = key.to_str().expect("utf-8");
    let r = reg.to_str().expect("utf-8");
    assert!(hallmark()
        .args(["wm-key", "--scheme", "gumbel", "--tokenizer", m, "--out", k])
        .output()
        .expect("wm-key")
        .status
        .success());
    assert!(hallmark()
        .args(["register", k, "--registry", r])
        .output()
        .expect("register")
        .status
        .success());
    for (flag, want) in [(Some(k), 0), (None, 1)] {
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "Write a story about a cat.",
            "--max-tokens",
            "48",
            "--seed",
            "11",
            "--json",
        ];
        match flag {
            Some(k) => args.extend(["--wm-key", k]),
            None => args.push("--no-watermark"),
        }
        let v = run_json(&args);
        let text = dir.path().join("answer.txt");
        std::fs::write(&text, v["text"].as_str().expect("text")).expect("write");
        let d = hallmark()
            .args([
                "detect",
                text.to_str().expect("utf-8"),
                "--registry",
                r,
                "--json",
            ])
            .output()
            .expect("detect");
        assert_eq!(
            d.status.code(),
            Some(want),
            "{}",
            String::from_utf8_lossy(&d.stdout)
        );
    }
}

fn expect_usage_error(args: &[&str], needle: &str) {
    let out = hallmark().args(args).output().expect("run hallmark");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("hallmark: "), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    // One line of diagnosis, no backtrace from a dependency.
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = smollm2();
    let m = model.to_str().expect("utf-8");
    let missing = dir.path().join("missing.gguf");
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model\n").expect("write");
    let base = |model: &str| {
        vec![
            "generate".to_string(),
            "--model".into(),
            model.into(),
            "--prompt".into(),
            "hi".into(),
        ]
    };
    let with = |model: &str, extra: &[&str]| {
        let mut v = base(model);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>, needle: &str| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        expect_usage_error(&refs, needle);
    };
    run(
        with(missing.to_str().expect("utf-8"), &["--no-watermark"]),
        "missing.gguf",
    );
    run(
        with(text.to_str().expect("utf-8"), &["--no-watermark"]),
        "notes.gguf",
    );
    run(with(m, &[]), "--no-watermark");
    let key = dir.path().join("k.wmkey");
    run(
        with(
            m,
            &["--no-watermark", "--wm-key", key.to_str().expect("utf-8")],
        ),
        "not both",
    );
    run(with(m, &["--no-watermark", "--top-p", "1.5"]), "--top-p");
    run(
        with(m, &["--wm-key", key.to_str().expect("utf-8")]),
        "k.wmkey",
    );
    // A key bound to another tokenizer (MiniLM's) is refused before generating.
    let minilm =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/real/minilm/tokenizer.json");
    let other = dir.path().join("other.wmkey");
    assert!(hallmark()
        .args([
            "wm-key",
            "--scheme",
            "kgw",
            "--tokenizer",
            minilm.to_str().expect("utf-8"),
            "--out",
            other.to_str().expect("utf-8")
        ])
        .output()
        .expect("wm-key")
        .status
        .success());
    run(
        with(m, &["--wm-key", other.to_str().expect("utf-8")]),
        "another tokenizer",
    );
}

/// Log-probabilities recorded while sampling (one token at a time, KV cache) equal, bit for
/// bit, those of one forward pass over the finished text (perplexity scoring), on every kernel.
#[test]
fn recorded_logprobs_equal_a_scoring_pass() {
    let mut runner = Runner::load(&smollm2()).expect("load");
    let prompt = runner.prompt_ids("Describe a forest.").expect("prompt");
    for kernel in kernels() {
        runner.model.set_kernel(kernel).expect("supported kernel");
        let mut s = PlainSampler::new(SamplingParams::default(), 9);
        let o = GenerateOptions {
            max_tokens: 12,
            record_logprobs: true,
            ..Default::default()
        };
        let (g, _) = generate(&runner.model, &prompt, &o, &mut s, |_| {}).expect("generate");
        assert_eq!(g.logprobs.len(), g.ids.len());
        let mut full = prompt.clone();
        full.extend(&g.ids);
        let scored = token_logprobs(&runner.model, &[(full, prompt.len())]).expect("score");
        assert_eq!(scored[0].len(), g.ids.len());
        for (a, b) in g.logprobs.iter().zip(&scored[0]) {
            assert!(
                *a <= 0.0 && a.to_bits() == b.to_bits(),
                "{kernel:?}: {a} vs {b}"
            );
        }
    }
}

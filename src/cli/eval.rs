use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use hallmark::eval::plots;
use hallmark::eval::{analyse, eval_keys, generate_arm, render_markdown, EvalConfig, Sample};
use hallmark::fsutil::{write_atomic, WriteMode};
use hallmark::generate::Runner;
use hallmark::generate::Timings;

/// `hallmark eval`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model (llama architecture).
    #[arg(long)]
    pub model: PathBuf,
    /// One prompt per line.
    #[arg(long, default_value = "docs/eval/prompts.txt")]
    pub prompts: PathBuf,
    /// Human-written documents, JSON Lines with a `text` field.
    #[arg(long, default_value = "test-models/human/fortunes.jsonl")]
    pub human: PathBuf,
    /// Output directory (report.md, results.json, samples.jsonl, PNG plots). The committed
    /// report in docs/eval is regenerated only when asked for with `--out docs/eval`.
    #[arg(long, default_value = "hallmark-eval")]
    pub out: PathBuf,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens per sample.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of keys, sampling and attacks.
    #[arg(long, default_value_t = 20_231)]
    pub seed: u64,
    /// Re-analyse the generations saved in OUT/generations.jsonl by an earlier run (same
    /// model, prompts, tokens and seed) instead of generating again.
    #[arg(long)]
    pub reuse: bool,
    /// Print the results (results.json's content) as JSON instead of the Markdown report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.tokens < 25 || a.batch == 0 {
        anyhow::bail!("--tokens must be at least 25 and --batch at least 1");
    }
    let prompts_text = std::fs::read_to_string(&a.prompts)
        .with_context(|| format!("reading {}", a.prompts.display()))?;
    let mut prompts: Vec<String> = prompts_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if let Some(n) = a.limit {
        prompts.truncate(n);
    }
    if prompts.is_empty() {
        anyhow::bail!("{}: no prompts", a.prompts.display());
    }
    let human_text = std::fs::read_to_string(&a.human)
        .with_context(|| format!("reading {}", a.human.display()))?;
    let mut human = Vec::new();
    for (i, line) in human_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", a.human.display(), i + 1))?;
        let Some(t) = v.get("text").and_then(|t| t.as_str()) else {
            anyhow::bail!("{}:{}: no string field `text`", a.human.display(), i + 1);
        };
        human.push(t.to_string());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;

    let runner = Runner::load(&a.model)?;
    let mut cfg = EvalConfig {
        tokens: a.tokens,
        batch: a.batch,
        seed: a.seed,
        ..Default::default()
    };
    cfg.lengths.retain(|&t| t <= a.tokens);
    if !cfg.lengths.contains(&a.tokens) {
        cfg.lengths.push(a.tokens);
    }
    let keys = eval_keys(&runner, a.seed)?;
    let n = prompts.len();
    let gen_path = a.out.join("generations.jsonl");
    let (timings, mut arms) = if a.reuse {
        load_generations(&gen_path, n)?
    } else {
        let mut timings = Vec::new();
        let mut arms = Vec::new();
        for key in std::iter::once(None).chain(keys.iter().map(Some)) {
            let name = key.map_or("none", |k| k.scheme().name());
            let t0 = Instant::now();
            let (samples, t) = generate_arm(&runner, &prompts, key, &cfg, |done| {
                eprintln!(
                    "hallmark: eval: {name}: {done}/{n} samples ({:.0} s)",
                    t0.elapsed().as_secs_f64()
                )
            })?;
            eprintln!(
                "hallmark: eval: {name}: {:.1} tokens/s, sampler {:.2}% of step time",
                t.tokens_per_s(),
                t.sample_share() * 100.0
            );
            timings.push((name.to_string(), t));
            arms.push(samples);
        }
        // Saved before the analysis, so a failure there does not cost the generation.
        let mut text = String::new();
        for ((name, t), samples) in timings.iter().zip(&arms) {
            text.push_str(&serde_json::to_string(&serde_json::json!({
                "arm": name, "timings": {"prefill_s": t.prefill_s, "decode_s": t.decode_s,
                "sample_s": t.sample_s, "steps": t.steps, "tokens": t.tokens},
            }))?);
            text.push('\n');
            for s in samples {
                text.push_str(&serde_json::to_string(s)?);
                text.push('\n');
            }
        }
        write_atomic(&gen_path, text.as_bytes(), WriteMode::Public)
            .with_context(|| format!("writing {}", gen_path.display()))?;
        (timings, arms)
    };
    let plain = arms.remove(0);
    let model_name = a.model.file_name().map_or_else(
        || a.model.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let report = analyse(
        &runner,
        &keys,
        &plain,
        &arms,
        &timings,
        &human,
        &cfg,
        &model_name,
        Instant::now(),
        |stage| eprintln!("hallmark: eval: {stage}"),
    )?;
    let command = format!(
        "hallmark eval --model {} --prompts {} --human {} --out {}{} --tokens {} --batch {} --seed {}",
        a.model.display(),
        a.prompts.display(),
        a.human.display(),
        a.out.display(),
        a.limit.map_or(String::new(), |l| format!(" --limit {l}")),
        a.tokens,
        a.batch,
        a.seed
    );
    let write = |name: &str, bytes: &[u8]| {
        let p = a.out.join(name);
        write_atomic(&p, bytes, WriteMode::Public)
            .with_context(|| format!("writing {}", p.display()))
    };
    write("tpr_vs_length.png", &plots::tpr_vs_length(&report)?)?;
    write("roc.png", &plots::roc_curves(&report)?)?;
    write(
        "results.json",
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    write("report.md", render_markdown(&report, &command).as_bytes())?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", render_markdown(&report, &command));
    }
    Ok(ExitCode::SUCCESS)
}

type Arms = (Vec<(String, Timings)>, Vec<Vec<Sample>>);

/// Read back what an earlier run saved: a header line per arm, then its samples.
fn load_generations(path: &std::path::Path, prompts: usize) -> anyhow::Result<Arms> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut timings: Vec<(String, Timings)> = Vec::new();
    let mut arms: Vec<Vec<Sample>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if let Some(t) = v.get("timings") {
            let f = |k: &str| t.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
            timings.push((
                v.get("arm")
                    .and_then(|a| a.as_str())
                    .unwrap_or("?")
                    .to_string(),
                Timings {
                    prefill_s: f("prefill_s"),
                    decode_s: f("decode_s"),
                    sample_s: f("sample_s"),
                    steps: f("steps") as usize,
                    tokens: f("tokens") as usize,
                },
            ));
            arms.push(Vec::new());
        } else {
            let s: Sample = serde_json::from_value(v)
                .with_context(|| format!("{}:{}: not a sample", path.display(), i + 1))?;
            arms.last_mut()
                .with_context(|| format!("{}: sample before any arm header", path.display()))?
                .push(s);
        }
    }
    if arms.len() != 3 || arms.iter().any(|a| a.len() != prompts) {
        anyhow::bail!("{}: expected 3 arms of {prompts} samples", path.display());
    }
    Ok((timings, arms))
}

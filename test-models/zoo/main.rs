//! hallmark-zoo: writes the test-model zoo and prints the fingerprint evaluation table.
//!
//! ```text
//! hallmark-zoo generate --out DIR          base models, transformed copies, null models
//! hallmark-zoo table [--null-models N]     transformation -> p-value table (markdown)
//! hallmark-zoo calibrate [--pairs N] [--plot PNG]   simulated shared-structure null
//! ```
//! Everything is deterministic: the same seeds give byte-identical files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hallmark::detect::{finish, InputKind};
use hallmark::fingerprint::{extract, test_weights, Suspect};
use hallmark::registry::Registry;
use hallmark::weights::DType;
use hallmark_testkit::zoo::{
    apply, export, extra_cases, standard_cases, Arch, Config, Export, Transform, ZModel,
};

#[derive(Parser)]
#[command(
    name = "hallmark-zoo",
    about = "Deterministic test models and the fingerprint table"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write base models, every standard transformed copy and independent null models.
    Generate {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of independent llama-like null models.
        #[arg(long, default_value_t = 4)]
        null_models: usize,
    },
    /// Apply one standard case (e.g. `noise-5%+ffn-permute+q4_0`) to a real model and write it.
    Leak {
        /// The model to transform (safetensors or GGUF).
        #[arg(long)]
        model: PathBuf,
        /// Model family: `minilm` or `smollm2` (head counts the transformations need).
        #[arg(long, value_parser = ["minilm", "smollm2"])]
        family: String,
        /// A label from the standard cases (`hallmark-zoo leak --list` prints them).
        #[arg(long, required_unless_present = "list")]
        case: Option<String>,
        /// Output path prefix (the export's extension is appended).
        #[arg(long, required_unless_present = "list")]
        out: Option<PathBuf>,
        /// Print the case labels and exit.
        #[arg(long)]
        list: bool,
    },
    /// Fingerprint the bases, detect every transformed copy and run the null; print markdown.
    Table {
        /// Independent models per architecture for the null run (pairs = n (n - 1) / 2).
        #[arg(long, default_value_t = 21)]
        null_models: usize,
        /// Skip the real models (MiniLM, SmolLM2) even if present.
        #[arg(long)]
        no_real: bool,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        work: Option<PathBuf>,
    },
    /// Run the simulated shared-structure null (independent models sharing token features,
    /// with and without shared outlier units) and print its calibration; optionally plot it.
    Calibrate {
        /// Pairs per (hidden size, outliers) setting.
        #[arg(long, default_value_t = 200)]
        pairs: usize,
        /// Write the calibration plot (PNG) here.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

const REAL_MINILM: &str = "test-models/real/minilm/model.safetensors";
const REAL_SMOLLM: &str = "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    hallmark::fsutil::write_atomic(path, bytes, hallmark::fsutil::WriteMode::Public)
        .with_context(|| format!("writing {}", path.display()))
}

fn bases() -> Vec<(&'static str, ZModel)> {
    let mut tied = Config::llama();
    tied.tied = true;
    vec![
        ("zoo-llama", ZModel::generate(Config::llama(), 1)),
        ("zoo-llama-tied", ZModel::generate(tied, 2)),
        ("zoo-bert", ZModel::generate(Config::bert(), 3)),
    ]
}

fn write_case(
    dir: &Path,
    base: &ZModel,
    label: &str,
    ts: &[Transform],
    e: Export,
    seed: u64,
) -> anyhow::Result<PathBuf> {
    let mut m = base.clone();
    for (k, t) in ts.iter().enumerate() {
        m = apply(&m, *t, seed + k as u64);
    }
    let p = dir.join(format!("{label}.{}", e.extension()));
    write(&p, &export(&m, e).map_err(anyhow::Error::msg)?)?;
    Ok(p)
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hallmark-zoo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Generate { out, null_models } => {
            for (name, base) in bases() {
                let dir = out.join(name);
                std::fs::create_dir_all(&dir)?;
                write_case(&dir, &base, "base", &[], Export::Safetensors(DType::F32), 0)?;
                for (k, (label, ts, e)) in standard_cases().into_iter().enumerate() {
                    write_case(&dir, &base, label, &ts, e, 100 + k as u64)?;
                }
            }
            let dir = out.join("null");
            std::fs::create_dir_all(&dir)?;
            for k in 0..null_models {
                let m = ZModel::generate(Config::llama(), 1000 + k as u64);
                write(
                    &dir.join(format!("llama-seed{}.safetensors", 1000 + k)),
                    &export(&m, Export::Safetensors(DType::F32)).map_err(anyhow::Error::msg)?,
                )?;
            }
            println!("wrote the zoo to {}", out.display());
        }
        Cmd::Leak {
            model,
            family,
            case,
            out,
            list,
        } => {
            let cases = standard_cases();
            if list {
                for (label, _, _) in &cases {
                    println!("{label}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (case, out) = (case.unwrap_or_default(), out.unwrap_or_default());
            let Some((label, ts, e)) = cases.into_iter().find(|c| c.0 == case) else {
                anyhow::bail!("unknown case `{case}` (see --list)");
            };
            let cfg = if family == "minilm" {
                Config::minilm()
            } else {
                Config::smollm2()
            };
            let base = ZModel::load(&model, cfg).map_err(anyhow::Error::msg)?;
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let stem = out
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut m = base;
            for (k, t) in ts.iter().enumerate() {
                m = apply(&m, *t, 7 + k as u64);
            }
            let p = dir.join(format!("{stem}.{}", e.extension()));
            write(&p, &export(&m, e).map_err(anyhow::Error::msg)?)?;
            println!("{label}: wrote {}", p.display());
        }
        Cmd::Table {
            null_models,
            no_real,
            work,
        } => table(null_models, no_real, work)?,
        Cmd::Calibrate { pairs, plot } => calibrate(pairs, plot)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Hidden sizes of the simulated null (the issue's 384-4096 range).
const SIM_HIDDEN: [usize; 5] = [384, 768, 1024, 2048, 4096];

fn calibrate(pairs: usize, plot: Option<PathBuf>) -> anyhow::Result<()> {
    use hallmark_testkit::sim::Pair;
    use rayon::prelude::*;
    let t0 = Instant::now();
    let mut series = Vec::new();
    println!("| hidden | outlier units | pairs | pairs with p <= 1e-3 | rate p <= 1e-2 | <= 0.05 | <= 0.1 | min p |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all: Vec<(usize, Vec<f64>)> = Vec::new();
    for outliers in [0usize, 3] {
        let mut group = Vec::new();
        for (hi, &hidden) in SIM_HIDDEN.iter().enumerate() {
            let ps: Vec<f64> = (0..pairs)
                .into_par_iter()
                .map(|k| {
                    // Seeds disjoint across settings and from the test suite's (1..=600).
                    let seed = 1_000_000 + (outliers * 10 + hi) as u64 * 1_000_000 + k as u64;
                    let (_, _, ln_p) =
                        Pair::new(hidden, (4 * hidden).min(2048), outliers, seed).test();
                    ln_p.exp()
                })
                .collect();
            println!("{}", rates_row(&format!("{hidden} | {outliers}"), &ps));
            group.extend(ps);
        }
        all.push((outliers, group));
    }
    let total: Vec<f64> = all.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    println!("{}", rates_row("all | 0 and 3", &total));
    eprintln!(
        "{} pairs in {:.1} s",
        total.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = plot {
        for (outliers, ps) in all {
            series.push((
                format!("shared features, {outliers} shared outlier units"),
                ps,
            ));
        }
        let png = hallmark::eval::plots::calibration(
            "Fingerprint p-values on independent models sharing token structure",
            &series,
            1e-4,
        )?;
        write(&path, &png)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A markdown row: label, pairs, empirical rates at 1e-3, 1e-2, 0.05, 0.1 and the minimum.
fn rates_row(label: &str, ps: &[f64]) -> String {
    let n = ps.len().max(1) as f64;
    let rate = |a: f64| ps.iter().filter(|&&p| p <= a).count() as f64 / n;
    format!(
        "| {label} | {} | {} | {:.4} | {:.3} | {:.3} | {} |",
        ps.len(),
        ps.iter().filter(|&&p| p <= 1e-3).count(),
        rate(1e-2),
        rate(0.05),
        rate(0.1),
        fmt_p(ps.iter().copied().fold(1.0, f64::min))
    )
}

fn fmt_p(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.2}")
    } else {
        format!("{p:.1e}")
    }
}

fn table(null_models: usize, no_real: bool, work: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = work.unwrap_or_else(|| tmp.path().to_path_buf());
    let reg = root.join("registry");
    std::fs::create_dir_all(&reg)?;

    // Registered models: (name, path of the registered file, model in memory for transforms).
    let mut registered: Vec<(String, PathBuf, Option<ZModel>)> = Vec::new();
    for (name, base) in bases() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let p = write_case(&dir, &base, "base", &[], Export::Safetensors(DType::F32), 0)?;
        registered.push((name.into(), p, Some(base)));
    }
    let real = !no_real && Path::new(REAL_MINILM).exists() && Path::new(REAL_SMOLLM).exists();
    if real {
        let m =
            ZModel::load(Path::new(REAL_MINILM), Config::minilm()).map_err(anyhow::Error::msg)?;
        registered.push(("minilm".into(), REAL_MINILM.into(), Some(m)));
        registered.push(("smollm2-q4_1".into(), REAL_SMOLLM.into(), None));
    }
    for (name, path, _) in &registered {
        let t = Instant::now();
        let fp = extract(path, name)?;
        let bytes = fp.to_json()?;
        write(&reg.join(format!("{name}.fp")), &bytes)?;
        eprintln!(
            "fingerprinted {name}: {} bytes in {:.3} s",
            bytes.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let registry = Registry::open(&reg)?;
    let n_reg = registry.entries().len();

    println!(
        "Registered: {n_reg} fingerprints. p_raw: the suspect against its own registered model;"
    );
    println!("p (Holm): corrected over all {n_reg}; match at alpha = 1e-3; other: smallest raw p of the wrong entries.\n");
    println!("| model | transformation | p_raw | p (Holm) | matched as | other min p_raw | probes matched | inv. sim. | layer map |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    let mut wrong = 0usize;
    let mut cases_run = 0usize;
    for (name, path, model) in &registered {
        let dir = root.join(format!("{name}-cases"));
        std::fs::create_dir_all(&dir)?;
        // (label, path, outside the issue's list)
        let mut suspects: Vec<(String, PathBuf, bool)> = Vec::new();
        match model {
            Some(m) => {
                for (k, (label, ts, e)) in standard_cases().into_iter().enumerate() {
                    suspects.push((
                        label.into(),
                        write_case(&dir, m, label, &ts, e, 100 + k as u64)?,
                        false,
                    ));
                }
                if m.cfg.arch == Arch::Llama {
                    for (label, ts, e) in extra_cases() {
                        suspects.push((
                            label.into(),
                            write_case(&dir, m, label, &ts, e, 300)?,
                            true,
                        ));
                    }
                }
            }
            None => {
                // SmolLM2: the GGUF against its own dequantized re-exports and a few transforms.
                let m = ZModel::load(path, Config::smollm2()).map_err(anyhow::Error::msg)?;
                for (label, ts, e) in [
                    ("re-export-f32", vec![], Export::Safetensors(DType::F32)),
                    ("re-export-f16", vec![], Export::Safetensors(DType::F16)),
                    (
                        "noise-20%",
                        vec![Transform::Noise(0.2)],
                        Export::Safetensors(DType::F16),
                    ),
                    (
                        "ffn-permute+q8_0",
                        vec![Transform::FfnPermute],
                        Export::Gguf(DType::Q8_0),
                    ),
                    (
                        "every-2nd-layer",
                        vec![Transform::EverySecondLayer],
                        Export::Safetensors(DType::F16),
                    ),
                ] {
                    suspects.push((label.into(), write_case(&dir, &m, label, &ts, e, 7)?, false));
                }
            }
        }
        for (label, sp, extra) in suspects {
            let tests = test_weights(&sp, &registry)?;
            let r = finish(
                sp.display().to_string(),
                InputKind::Weights,
                tests,
                1e-3,
                None,
            );
            let own = r
                .results
                .iter()
                .find(|t| &t.name == name)
                .context("own entry")?;
            let matched: Vec<&str> = r
                .results
                .iter()
                .filter(|t| t.matched)
                .map(|t| t.name.as_str())
                .collect();
            let other = r
                .results
                .iter()
                .filter(|t| &t.name != name)
                .map(|t| t.p_raw)
                .fold(1.0, f64::min);
            if !extra {
                if matched != [name.as_str()] {
                    wrong += 1;
                }
                worst = worst.max(own.p_value);
                cases_run += 1;
            }
            let label = if extra {
                format!("{label} (outside the list)")
            } else {
                label
            };
            let lm = own
                .details
                .get("layer_map")
                .and_then(|v| v.as_object())
                .map(|o| {
                    let v: Vec<String> = o
                        .iter()
                        .map(|(k, v)| format!("{k}->{}", v.as_str().unwrap_or("?")))
                        .collect();
                    let s = v.join(" ");
                    if s.len() > 40 {
                        format!(
                            "{}…",
                            &s[..s.char_indices().nth(40).map(|x| x.0).unwrap_or(s.len())]
                        )
                    } else {
                        s
                    }
                })
                .unwrap_or_default();
            println!(
                "| {name} | {label} | {} | {} | {} | {} | {} | {:.3} | {lm} |",
                fmt_p(own.p_raw),
                fmt_p(own.p_value),
                if matched.is_empty() {
                    "-".into()
                } else {
                    matched.join(", ")
                },
                fmt_p(other),
                own.details
                    .get("probes_matched")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-"),
                own.details
                    .get("invariant_similarity")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN),
            );
        }
    }
    println!(
        "\n{cases_run} transformed copies; worst corrected p of the right entry: {}; copies not matched exactly to their own entry: {wrong}.\n",
        fmt_p(worst)
    );

    // Null: independent models of the same architecture, every pair, both ways round.
    println!("| null run | models | ordered pairs | p_raw <= 1e-3 | <= 0.01 | <= 0.05 | <= 0.1 | <= 0.5 | min p_raw | max inv. sim. |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, cfg, seed0) in [
        ("zoo-llama", Config::llama(), 1000u64),
        ("zoo-bert", Config::bert(), 5000),
    ] {
        let dir = root.join(format!("null-{label}"));
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        for k in 0..null_models {
            let m = ZModel::generate(cfg, seed0 + k as u64);
            let p = dir.join(format!("{k}.safetensors"));
            write(
                &p,
                &export(&m, Export::Safetensors(DType::F16)).map_err(anyhow::Error::msg)?,
            )?;
            paths.push(p);
        }
        let fps = paths
            .iter()
            .map(|p| extract(p, "null"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ps = Vec::new();
        let mut max_inv = f64::NEG_INFINITY;
        for (a, p) in paths.iter().enumerate() {
            let s = Suspect::open(p)?;
            for (b, fp) in fps.iter().enumerate() {
                if a != b {
                    let t = s.test(fp)?;
                    ps.push(t.p_raw);
                    if let Some(v) = t
                        .details
                        .get("invariant_similarity")
                        .and_then(|v| v.as_f64())
                    {
                        max_inv = max_inv.max(v);
                    }
                }
            }
        }
        let n = ps.len() as f64;
        let frac = |a: f64| format!("{:.3}", ps.iter().filter(|&&p| p <= a).count() as f64 / n);
        println!(
            "| {label} | {null_models} | {} | {} | {} | {} | {} | {} | {} | {max_inv:.3} |",
            ps.len(),
            ps.iter().filter(|&&p| p <= 1e-3).count(),
            frac(0.01),
            frac(0.05),
            frac(0.1),
            frac(0.5),
            fmt_p(ps.iter().copied().fold(1.0, f64::min)),
        );
    }
    Ok(())
}

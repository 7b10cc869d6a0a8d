use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fingerprint::mark::{mark_model, WeightKey};

/// `hallmark mark`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory (never modified).
    pub model: PathBuf,
    /// Weight-mark key (from `wm-key --scheme weights`).
    #[arg(long)]
    pub wm_key: PathBuf,
    /// Output path for the marked copy (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the per-tensor report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let key = WeightKey::load(&a.wm_key)?;
    let report = mark_model(&a.model, &key, &a.out)
        .with_context(|| format!("marking {}", a.model.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let weights: u64 = report.tensors.iter().map(|t| t.elements).sum();
        writeln!(
            out,
            "{}: marked {} matrices ({} weights, hidden size {}) with key {}; largest relative change {:.3}%",
            a.out.display(),
            report.tensors.len(),
            weights,
            report.hidden,
            key.id(),
            100.0 * report.max_relative_change()
        )?;
    }
    for s in &report.skipped {
        super::warn(format!("not marked (dtype cannot carry the mark): {s}"));
    }
    Ok(ExitCode::SUCCESS)
}

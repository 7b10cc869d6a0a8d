use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil::{write_atomic, WriteMode};

/// `hallmark fingerprint`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory.
    pub model: PathBuf,
    /// Output fingerprint file.
    #[arg(long)]
    pub out: PathBuf,
    /// Name recorded in the fingerprint (default: the model's file or directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let name = match a.name {
        Some(n) => n,
        None => a
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot derive a name from the model path; pass --name")?,
    };
    let fp = hallmark::fingerprint::extract(&a.model, &name)
        .with_context(|| format!("fingerprinting {}", a.model.display()))?;
    let bytes = fp.to_json()?;
    write_atomic(&a.out, &bytes, WriteMode::Public)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "model": a.model.display().to_string(),
            "name": fp.name,
            "out": a.out.display().to_string(),
            "vocab": fp.vocab,
            "hidden": fp.hidden,
            "token_rows": fp.embedding.rows.len(),
            "probes": fp.probes.len(),
            "bytes": bytes.len(),
        });
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{}: fingerprint `{}` ({} x {} embedding, {} token rows, {} probes, {} bytes) -> {}",
        a.model.display(),
        fp.name,
        fp.vocab,
        fp.hidden,
        fp.embedding.rows.len(),
        fp.probes.len(),
        bytes.len(),
        a.out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

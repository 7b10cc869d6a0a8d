use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil::{write_atomic, WriteMode};
use hallmark::mark::{mark_model, WeightKey};
use hallmark::signing::{self, HashType, SignOptions};

/// `hallmark mark`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory (never modified). Its signature bundles are not copied: they
    /// would not verify the marked weights.
    pub model: PathBuf,
    /// Weight-mark key (from `wm-key --scheme weights`).
    #[arg(long)]
    pub wm_key: PathBuf,
    /// Output path for the marked copy (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Sign the marked copy with this private key (PKCS#8 PEM), as `hallmark sign` would:
    /// OUT/model.sig for a directory, OUT.sig for a file.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Print the per-tensor report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let key = WeightKey::load(&a.wm_key)?;
    // Read the signing key first, so a bad key fails before any work.
    let signer = a
        .key
        .as_deref()
        .map(super::sign::read_private_key)
        .transpose()?;
    let sig = signing::sign::default_sig_path(&a.out);
    if signer.is_some() && !a.model.is_dir() && sig.symlink_metadata().is_ok() {
        anyhow::bail!("{} already exists; refusing to overwrite it", sig.display());
    }
    let report = mark_model(&a.model, &key, &a.out)
        .with_context(|| format!("marking {}", a.model.display()))?;
    let signed = match &signer {
        Some(k) => {
            let sig = signing::sign::default_sig_path(&a.out);
            let opts = SignOptions {
                hash_type: HashType::Blake3,
                allow_symlinks: false,
                ignore: Vec::new(),
                sig_path: Some(sig.clone()),
                ..SignOptions::default()
            };
            let bundle = signing::sign_model(&a.out, k, &opts, &|_| {})
                .with_context(|| format!("signing {}", a.out.display()))?;
            write_atomic(&sig, &bundle.to_json(), WriteMode::PublicNoClobber)
                .with_context(|| format!("writing {}", sig.display()))?;
            Some((sig, k.verifying_key().hint()))
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some((sig, hint)) = &signed {
            v["signature"] =
                serde_json::json!({"bundle": sig.display().to_string(), "key_hint": hint});
        }
        serde_json::to_writer(&mut out, &v)?;
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
        if let Some((sig, hint)) = &signed {
            writeln!(
                out,
                "{}: signed the marked copy with key {hint}",
                sig.display()
            )?;
        }
    }
    for s in &report.skipped {
        super::warn(format!("not marked (dtype cannot carry the mark): {s}"));
    }
    Ok(ExitCode::SUCCESS)
}

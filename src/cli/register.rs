use std::path::PathBuf;

use hallmark::registry::EntryKind;
use std::process::ExitCode;

/// `hallmark register`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files to register: `.pub`, `.wmkey`, `.fp`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Registry directory (default: $HALLMARK_REGISTRY, else ./keys).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Print the registered entries as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let dir = a.registry.unwrap_or_else(hallmark::registry::default_dir);
    let entries = hallmark::registry::register(&dir, &a.files)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "kind": e.kind.label(), "path": e.path.display().to_string(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::json!({ "registered": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in entries {
        let kind = match e.kind {
            EntryKind::SignerKey => "signer public key",
            EntryKind::WatermarkKey => "watermark key",
            EntryKind::Fingerprint => "fingerprint",
        };
        writeln!(
            out,
            "registered {kind} `{}` -> {}",
            e.name,
            e.path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

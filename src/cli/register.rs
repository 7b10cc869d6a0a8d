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
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let dir = a.registry.unwrap_or_else(hallmark::registry::default_dir);
    let entries = hallmark::registry::register(&dir, &a.files)?;
    let mut out = std::io::stdout().lock();
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

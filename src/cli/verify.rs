use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark verify`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory.
    pub model: PathBuf,
    /// Signer's public key (SPKI PEM).
    #[arg(long = "pub")]
    pub public: PathBuf,
    /// Bundle path (default: MODEL/model.sig or MODEL.sig).
    #[arg(long)]
    pub sig: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Verify only these tensors against the signed per-tensor digests.
    #[arg(long, num_args = 1..)]
    pub tensors: Vec<String>,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("verify is not built yet")
}

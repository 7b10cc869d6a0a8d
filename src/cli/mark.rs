use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark mark`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory (never modified).
    pub model: PathBuf,
    /// Weight-mark key (from `wm-key --scheme weights`).
    #[arg(long)]
    pub wm_key: PathBuf,
    /// Output path for the marked copy.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("mark is not built yet")
}

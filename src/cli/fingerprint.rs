use std::path::PathBuf;
use std::process::ExitCode;

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
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fingerprint is not built yet")
}

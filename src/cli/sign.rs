use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark sign`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory.
    pub model: PathBuf,
    /// Private key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the bundle (default: MODEL/model.sig or MODEL.sig).
    #[arg(long)]
    pub sig: Option<PathBuf>,
    /// Follow and sign symlinks instead of refusing them.
    #[arg(long)]
    pub allow_symlinks: bool,
    /// Paths (relative to MODEL) to leave out.
    #[arg(long = "ignore")]
    pub ignore: Vec<PathBuf>,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sign is not built yet")
}

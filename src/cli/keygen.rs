use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark keygen`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output prefix: writes PREFIX.key and PREFIX.pub.
    #[arg(long)]
    pub out: PathBuf,
    /// Signature algorithm.
    #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "p256"])]
    pub alg: String,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("keygen is not built yet")
}

use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark wm-key`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Watermark scheme.
    #[arg(long, value_parser = ["kgw", "gumbel", "weights"])]
    pub scheme: String,
    /// Tokenizer the text key is bound to: a tokenizer.json or a GGUF file.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output key file (secret, 0600, never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("wm-key is not built yet")
}

use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark generate`
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("wm").required(true).args(["wm_key", "no_watermark"])))]
pub struct Args {
    /// GGUF model (llama architecture).
    #[arg(long)]
    pub model: PathBuf,
    /// Watermark key.
    #[arg(long)]
    pub wm_key: Option<PathBuf>,
    /// Generate without a watermark.
    #[arg(long)]
    pub no_watermark: bool,
    /// The prompt (a user message; the model's chat template is applied).
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (text, token ids, tokens/s).
    #[arg(long)]
    pub json: bool,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("generate is not built yet")
}

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

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.scheme == "weights" {
        return weights_key(&a);
    }
    anyhow::bail!("wm-key is not built yet")
}

/// `--scheme weights`: a secret key for the active weight mark.
fn weights_key(a: &Args) -> anyhow::Result<ExitCode> {
    use hallmark::fingerprint::mark::WeightKey;
    if a.tokenizer.is_some() {
        anyhow::bail!("--tokenizer does not apply to --scheme weights");
    }
    let key = WeightKey::generate();
    key.save(&a.out)?;
    println!(
        "{}: weight-mark key {} (secret; keep it private, register it to detect)",
        a.out.display(),
        key.id()
    );
    Ok(ExitCode::SUCCESS)
}

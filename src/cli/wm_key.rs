use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::textmark::{ContextRule, SchemeParams, TokenizerSpec, WatermarkKey};
use hallmark::tokenizer::Tokenizer;

/// `hallmark wm-key`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Watermark scheme.
    #[arg(long, value_parser = ["kgw", "gumbel", "weights"])]
    pub scheme: String,
    /// Tokenizer the text key is bound to: a tokenizer.json or a GGUF file (its vocabulary is
    /// embedded in the key, so detection never needs this file again).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output key file (secret, 0600, never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// kgw: green-list fraction γ, in (0, 1).
    #[arg(long, default_value_t = 0.25)]
    pub gamma: f64,
    /// kgw: logit bias δ added to green tokens (after temperature), in [0, 50].
    #[arg(long, default_value_t = 2.0)]
    pub delta: f64,
    /// Context rule: `left` hashes the last h tokens in order; `min` uses the one with the
    /// smallest keyed hash (more robust to edits).
    #[arg(long, value_parser = ["left", "min"], default_value = "left")]
    pub context: String,
    /// Context width h (default: 1 for kgw, 4 for gumbel).
    #[arg(long)]
    pub context_width: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // Check everything the user typed before touching any file.
    let scheme = match a.scheme.as_str() {
        "kgw" => SchemeParams::Kgw {
            gamma: a.gamma,
            delta: a.delta,
        },
        "gumbel" => SchemeParams::Gumbel,
        _ => anyhow::bail!(
            "wm-key --scheme weights is not built yet (the weight mark has its own issue)"
        ),
    };
    let h = a
        .context_width
        .unwrap_or(if a.scheme == "kgw" { 1 } else { 4 });
    let rule = match a.context.as_str() {
        "min" => ContextRule::Min(h),
        _ => ContextRule::Left(h),
    };
    let Some(tok_path) = &a.tokenizer else {
        anyhow::bail!(
            "--tokenizer PATH (a tokenizer.json or a GGUF file) is required for text schemes"
        );
    };
    if a.out.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite it",
            a.out.display()
        );
    }
    let tok = Tokenizer::from_path(tok_path)
        .with_context(|| format!("loading tokenizer {}", tok_path.display()))?;
    let source = tok_path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spec = TokenizerSpec::from_tokenizer(&tok, &source)?;
    let key = WatermarkKey::generate(scheme, rule, spec)?;
    key.save(&a.out)?;
    let params = match scheme {
        SchemeParams::Kgw { gamma, delta } => format!("gamma {gamma}, delta {delta}, "),
        SchemeParams::Gumbel => String::new(),
    };
    writeln!(
        std::io::stdout().lock(),
        "wrote {} ({} key, {params}context {} h={}, tokenizer {} with {} tokens; secret, mode 0600)",
        a.out.display(),
        scheme.name(),
        rule.name(),
        rule.width(),
        source,
        tok.vocab_size()
    )?;
    Ok(ExitCode::SUCCESS)
}

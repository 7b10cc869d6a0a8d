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
    /// kgw only: green-list fraction γ, in (0, 1) [default: 0.25].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// kgw only: logit bias δ added to green tokens (after temperature), in [0, 50]
    /// [default: 2.0].
    #[arg(long)]
    pub delta: Option<f64>,
    /// Text schemes: `left` hashes the last h tokens in order; `min` uses the one with the
    /// smallest keyed hash (more robust to edits) [default: left].
    #[arg(long, value_parser = ["left", "min"])]
    pub context: Option<String>,
    /// Context width h (default: 1 for kgw, 4 for gumbel).
    #[arg(long)]
    pub context_width: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Refuse parameters the chosen scheme does not use, so a typo never silently makes a key
/// other than the one asked for.
fn refuse_unused(a: &Args) -> anyhow::Result<()> {
    let mut unused = Vec::new();
    if a.scheme != "kgw" {
        if a.gamma.is_some() {
            unused.push("--gamma");
        }
        if a.delta.is_some() {
            unused.push("--delta");
        }
    }
    if a.scheme == "weights" {
        if a.context.is_some() {
            unused.push("--context");
        }
        if a.context_width.is_some() {
            unused.push("--context-width");
        }
        if a.tokenizer.is_some() {
            unused.push("--tokenizer");
        }
    }
    if !unused.is_empty() {
        anyhow::bail!(
            "{} does not apply to --scheme {}",
            unused.join(", "),
            a.scheme
        );
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // Check everything the user typed before touching any file.
    refuse_unused(&a)?;
    if a.scheme == "weights" {
        return weights_key(&a);
    }
    let scheme = match a.scheme.as_str() {
        "kgw" => SchemeParams::Kgw {
            gamma: a.gamma.unwrap_or(0.25),
            delta: a.delta.unwrap_or(2.0),
        },
        "gumbel" => SchemeParams::Gumbel,
        other => anyhow::bail!("unknown scheme `{other}`"),
    };
    let h = a
        .context_width
        .unwrap_or(if a.scheme == "kgw" { 1 } else { 4 });
    let rule = match a.context.as_deref().unwrap_or("left") {
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
    if a.json {
        let mut v = serde_json::json!({
            "out": a.out.display().to_string(),
            "scheme": scheme.name(),
            "context": rule.name(),
            "context_width": rule.width(),
            "tokenizer": source,
            "vocab_size": tok.vocab_size(),
        });
        if let SchemeParams::Kgw { gamma, delta } = scheme {
            v["gamma"] = gamma.into();
            v["delta"] = delta.into();
        }
        writeln!(std::io::stdout().lock(), "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// `--scheme weights`: a secret key for the active weight mark.
fn weights_key(a: &Args) -> anyhow::Result<ExitCode> {
    use hallmark::mark::WeightKey;
    let key = WeightKey::generate();
    key.save(&a.out)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"out": a.out.display().to_string(), "scheme": "weights", "key_id": key.id()})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: weight-mark key {} (secret; keep it private, register it to detect)",
        a.out.display(),
        key.id()
    );
    Ok(ExitCode::SUCCESS)
}

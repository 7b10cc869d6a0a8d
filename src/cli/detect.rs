use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hallmark::detect::{InputKind, Report};
use hallmark::registry::Registry;

/// `hallmark detect`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Suspect weight file or directory, or a text file; `-` reads text from stdin.
    #[arg(required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub suspect: Option<PathBuf>,
    /// A JSON Lines file of `{"text": ...}` documents; one result line per document.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Registry directory (default: $HALLMARK_REGISTRY, else ./keys).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Family-wise false-positive rate across all registered entries.
    #[arg(long, default_value_t = 1e-3)]
    pub alpha: f64,
    /// Print JSON (one object per suspect).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        anyhow::bail!("--alpha must be in (0, 1), got {}", a.alpha);
    }
    let dir = a
        .registry
        .clone()
        .unwrap_or_else(hallmark::registry::default_dir);
    let registry =
        Registry::open(&dir).with_context(|| format!("opening registry {}", dir.display()))?;
    let mut any = false;
    if let Some(jsonl) = &a.jsonl {
        let text = std::fs::read_to_string(jsonl)
            .with_context(|| format!("reading {}", jsonl.display()))?;
        // Parse every line before scoring any, so bad input produces no partial output.
        let mut docs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", jsonl.display(), i + 1))?;
            let Some(t) = v.get("text").and_then(|t| t.as_str()) else {
                anyhow::bail!("{}:{}: no string field `text`", jsonl.display(), i + 1);
            };
            docs.push((format!("{}:{}", jsonl.display(), i + 1), t.to_string()));
        }
        for (k, (input, t)) in docs.into_iter().enumerate() {
            let r = detect_text(input, &t, &registry, a.alpha)?;
            if k == 0 {
                warn_if_empty(&r, &dir);
            }
            any |= r.matched;
            print_report(&r, a.json)?;
        }
    } else if let Some(s) = &a.suspect {
        let r = if s.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            let t =
                String::from_utf8(buf).context("stdin is neither a weight file nor UTF-8 text")?;
            detect_text("-".into(), &t, &registry, a.alpha)?
        } else if is_weights(s)? {
            let tests = hallmark::fingerprint::test_weights(s, &registry)
                .with_context(|| format!("examining {}", s.display()))?;
            hallmark::detect::finish(
                s.display().to_string(),
                InputKind::Weights,
                tests,
                a.alpha,
                None,
            )
        } else {
            let bytes = std::fs::read(s).with_context(|| format!("reading {}", s.display()))?;
            let t = String::from_utf8(bytes).with_context(|| {
                format!("{}: neither a weight file nor UTF-8 text", s.display())
            })?;
            detect_text(s.display().to_string(), &t, &registry, a.alpha)?
        };
        any = r.matched;
        warn_if_empty(&r, &dir);
        print_report(&r, a.json)?;
    }
    Ok(if any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An empty registry is not evidence of anything: say so on stderr instead of printing a verdict
/// that could be read as "clean".
fn warn_if_empty(r: &Report, dir: &Path) {
    if r.results.is_empty() {
        let what = match r.kind {
            InputKind::Text => "text watermark keys",
            InputKind::Weights => "fingerprints or weight-mark keys",
        };
        eprintln!(
            "hallmark: the registry {} has no {what}; nothing was tested",
            dir.display()
        );
    }
}

fn detect_text(
    input: String,
    text: &str,
    registry: &Registry,
    alpha: f64,
) -> anyhow::Result<Report> {
    let t = hallmark::textmark::test_text(text, registry)?;
    Ok(hallmark::detect::finish(
        input,
        InputKind::Text,
        t.tests,
        alpha,
        t.scored_tokens,
    ))
}

/// A directory, or a file whose first bytes are a safetensors or GGUF header.
fn is_weights(p: &Path) -> anyhow::Result<bool> {
    let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if meta.is_dir() {
        return Ok(true);
    }
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(hallmark::weights::sniff(&head[..n]).is_some())
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    let verdict = if r.matched {
        "MATCH"
    } else if r.results.is_empty() {
        "nothing registered to test against"
    } else if !r.decided {
        "TOO SHORT TO DECIDE"
    } else {
        "no match"
    };
    write!(out, "{}: {} (p = {:.3e}", r.input, verdict, r.p_value)?;
    if let Some(n) = r.scored_tokens {
        write!(out, ", {n} tokens scored")?;
    }
    writeln!(out, ", {} registered entries tested)", r.results.len())?;
    for t in &r.results {
        let state = if t.matched {
            "MATCH"
        } else if !t.decided {
            "too short to decide"
        } else {
            "no match"
        };
        writeln!(
            out,
            "  {} [{}]: {} p = {:.3e} (raw {:.3e})",
            t.name, t.kind, state, t.p_value, t.p_raw
        )?;
    }
    Ok(())
}

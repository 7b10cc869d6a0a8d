use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hallmark::detect::{InputKind, KeyTest, Report, Status, SIGNATURE_KIND};
use hallmark::registry::Registry;

/// `hallmark detect`
///
/// Exit codes: 0 a registered entry matched; 1 no match, every test decided; 2 error (bad input,
/// nothing registered of the suspect's kind, or a registered entry that could not be tested and
/// no match elsewhere); 3 undecided (too little evidence to decide, no match). With `--jsonl`,
/// the codes combine over the lines: any match 0, else any error 2, else any undecided 3.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 match; 1 no match (every test decided); 2 error (bad \
input, nothing registered of the suspect's kind, or an entry that could not be tested); 3 \
undecided (too little evidence, e.g. a short text; no match)."
)]
pub struct Args {
    /// Suspect weight file or directory, or a text file; `-` reads text from stdin.
    #[arg(
        required_unless_present_any = ["jsonl", "parquet"],
        conflicts_with_all = ["jsonl", "parquet"]
    )]
    pub suspect: Option<PathBuf>,
    /// A JSON Lines file of `{"text": ...}` documents; one result line per document (a bad
    /// line gives an error object for that line, and the others are still tested).
    #[arg(long, conflicts_with = "parquet")]
    pub jsonl: Option<PathBuf>,
    /// A Parquet file whose text column (`--column`, default `text`) holds one document per
    /// row; one result line per row, in order, named `FILE:N` (N the 1-based row number). Read
    /// one batch of rows at a time, so memory stays bounded.
    #[arg(long)]
    pub parquet: Option<PathBuf>,
    /// The Parquet column of documents (a string column).
    #[arg(long, value_name = "NAME")]
    pub column: Option<String>,
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
    hallmark::detect::check_alpha(a.alpha)?;
    if a.column.is_some() && a.parquet.is_none() {
        anyhow::bail!("--column applies to --parquet only");
    }
    let dir = a
        .registry
        .clone()
        .unwrap_or_else(hallmark::registry::default_dir);
    let registry = Registry::open(&dir)
        .with_context(|| format!("opening registry {}", dir.display()))?
        .validate();
    let mut status: Option<Status> = None;
    let mut note = |s: Status| status = Some(status.map_or(s, |t| t.combine(s)));
    if let Some(jsonl) = &a.jsonl {
        let shown = hallmark::fsutil::shown(jsonl);
        let (file, _) = hallmark::input::open_regular(jsonl, hallmark::input::Follow::Yes)
            .with_context(|| format!("reading {shown}"))?;
        let mut lines = hallmark::input::Lines::new(
            std::io::BufReader::with_capacity(1 << 16, file),
            hallmark::input::MAX_LINE_BYTES,
        );
        let mut docs = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            // Documents are tested a batch at a time (bounded by count and by bytes), in
            // parallel, and printed in order: memory stays bounded however long the file or
            // its lines are. A line that cannot be used is an error result for that line.
            let next = lines
                .next_line()
                .with_context(|| format!("reading {shown}"))?;
            let done = next.is_none();
            if let Some((n, line)) = next {
                if line.as_ref().is_ok_and(|l| l.trim().is_empty()) {
                    continue;
                }
                let input = format!("{}:{n}", jsonl.display());
                let doc = line.and_then(|l| hallmark::input::jsonl_document(&l));
                batch_bytes += doc.as_ref().map_or(0, String::len);
                docs.push((input, doc));
            }
            if docs.len() >= BATCH || batch_bytes >= BATCH_BYTES || (done && !docs.is_empty()) {
                for s in test_batch(&mut docs, &registry, a.alpha, a.json)? {
                    note(s);
                }
                batch_bytes = 0;
            }
            if done {
                break;
            }
        }
    } else if let Some(pq) = &a.parquet {
        let column = a.column.as_deref().unwrap_or("text");
        let mut reader = hallmark::detect::parquet::TextColumn::open(pq, column, BATCH)?;
        while let Some(batch) = reader.next_batch()? {
            let mut docs: Vec<(String, Result<String, String>)> = batch
                .into_iter()
                .map(|(row, text)| {
                    let input = format!("{}:{}", pq.display(), row + 1);
                    let text = text.ok_or_else(|| format!("`{column}` is null"));
                    (input, text.and_then(hallmark::input::check_text_len))
                })
                .collect();
            for s in test_batch(&mut docs, &registry, a.alpha, a.json)? {
                note(s);
            }
        }
    } else if let Some(s) = &a.suspect {
        let r = if s.as_os_str() == "-" {
            let buf = hallmark::input::read_stdin().context("reading stdin")?;
            let t =
                String::from_utf8(buf).context("stdin is neither a weight file nor UTF-8 text")?;
            hallmark::detect::detect_text("-".into(), &t, &registry, a.alpha)?
        } else {
            hallmark::detect::detect_path(s, &registry, a.alpha)?
        };
        warn_if_empty(&r, registry.dir());
        note(r.status);
        print_report(&r, a.json)?;
    }
    Ok(ExitCode::from(status.unwrap_or(Status::Error).exit_code()))
}

/// Documents tested together (in parallel) before their results are printed.
const BATCH: usize = 1024;

/// Text bytes tested together: a batch ends at [`BATCH`] documents or this many bytes.
const BATCH_BYTES: usize = 8 << 20;

/// Test a batch of documents (`(input, text or why it is unusable)`) in parallel, print the
/// results in order, empty the batch, and return each document's status.
fn test_batch(
    docs: &mut Vec<(String, Result<String, String>)>,
    registry: &Registry,
    alpha: f64,
    json: bool,
) -> anyhow::Result<Vec<Status>> {
    let items: Vec<(String, &str)> = docs
        .iter()
        .filter_map(|(input, d)| d.as_ref().ok().map(|t| (input.clone(), t.as_str())))
        .collect();
    let mut reports = hallmark::detect::detect_texts(&items, registry, alpha).into_iter();
    let mut out = Vec::with_capacity(docs.len());
    for (input, d) in docs.drain(..) {
        match d {
            Ok(_) => {
                let r = reports
                    .next()
                    .context("internal error: a document without a result")??;
                warn_if_empty(&r, registry.dir());
                out.push(r.status);
                print_report(&r, json)?;
            }
            Err(reason) => {
                out.push(Status::Error);
                print_line_error(&input, &reason, json)?;
            }
        }
    }
    Ok(out)
}

/// An empty registry is not evidence of anything: say so on stderr (exit 2).
fn warn_if_empty(r: &Report, dir: &Path) {
    if r.results.is_empty() {
        let what = match r.kind {
            InputKind::Text => "text watermark keys",
            InputKind::Weights => "fingerprints, weight-mark keys or signer keys for it",
        };
        super::warn(format!(
            "the registry {} has no {what}; nothing was tested",
            dir.display()
        ));
    }
    for t in r.results.iter() {
        if let Some(e) = &t.error {
            super::warn(format!("{} [{}] could not be tested: {e}", t.name, t.kind));
        }
    }
}

fn print_line_error(input: &str, reason: &str, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "input": input, "status": "error", "error": reason, "path": input,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{input}: ERROR: {reason}")?;
    }
    Ok(())
}

/// A p-value for people: `1.234e-05`, or `< 1e-300 (log10 p = -5012.3)` below the floor.
fn fmt_p(p: f64, log10: f64) -> String {
    if log10 < hallmark::detect::P_FLOOR.log10() {
        format!("< {:.0e} (log10 p = {log10:.1})", hallmark::detect::P_FLOOR)
    } else {
        format!("{p:.3e}")
    }
}

fn result_line(t: &KeyTest) -> String {
    if let Some(e) = &t.error {
        return format!("ERROR, could not be tested: {e}");
    }
    if t.kind == SIGNATURE_KIND {
        let problems = t
            .details
            .get("problems")
            .and_then(|p| p.as_array())
            .map(|a| {
                a.iter()
                    .map(|f| {
                        format!(
                            "{} {}",
                            f["file"].as_str().unwrap_or("?"),
                            f["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return match t.details.get("verifies").and_then(|v| v.as_bool()) {
            Some(true) => "MATCH: signed by this key, and every file verifies".into(),
            Some(false) => format!("signed by this key, but does NOT verify: {problems}"),
            None => t
                .details
                .get("note")
                .and_then(|n| n.as_str())
                .unwrap_or("signed by no registered key")
                .to_string(),
        };
    }
    let p = fmt_p(t.p_value, t.log10_p);
    let raw = fmt_p(t.p_raw, t.log10_p_raw);
    if t.kind == "fingerprint" {
        return fingerprint_line(t, &p, &raw);
    }
    let state = if t.matched {
        "MATCH"
    } else if !t.decided {
        "too short to decide"
    } else {
        "no match"
    };
    format!("{state} p = {p} (raw {raw})")
}

/// A fingerprint result for people. The identity tests prove shared initial weights, which a
/// copy and a model initialised identically both have; the symmetry line proves a disguised copy
/// up to the symmetries it names, at a threshold set by measured impostors.
fn fingerprint_line(t: &KeyTest, p: &str, raw: &str) -> String {
    let sym = t.details.get("symmetry").filter(|s| s["computed"] == true);
    let num = |k: &str| sym.and_then(|s| s[k].as_f64()).unwrap_or(f64::NAN);
    let impostors = || {
        format!(
            "largest impostor score {:.3} over {} pairs",
            num("largest_impostor_score"),
            sym.and_then(|s| s["impostor_pairs"].as_u64()).unwrap_or(0)
        )
    };
    let by_score = t.details.get("matched_by").and_then(|v| v.as_str()) == Some("score");
    if t.matched && !by_score {
        let mut s = format!(
            "MATCH: derived from, or initialised identically to, this model (p = {p}, raw {raw})"
        );
        if let Some(l) = t.details.get("lineage").and_then(|l| l.as_array()) {
            s.push_str(&format!("; lineage: {}", lineage_summary(l)));
        }
        return s;
    }
    if t.matched {
        let what = sym
            .and_then(|s| s["symmetries"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        return format!(
            "MATCH: derived up to {what} (score {:.3}; {}; {} matrices agree)",
            num("score"),
            impostors(),
            sym.and_then(|s| s["matrices_agreeing"].as_str())
                .unwrap_or("?")
        );
    }
    if !t.decided {
        if let Some(s) = sym {
            if s["verdict"] == "undecided" {
                return format!(
                    "undecided: symmetry-invariant score {:.3} falls where impostors cannot be told \
                     from copies (match from {:.2}; {}); identity p = {p}",
                    num("score"),
                    num("match_from"),
                    impostors()
                );
            }
        }
        return format!("too little evidence to decide (p = {p})");
    }
    match sym {
        Some(_) => format!(
            "no match p = {p} (raw {raw}; symmetry-invariant score {:.3}, match from {:.2})",
            num("score"),
            num("match_from")
        ),
        None => format!("no match p = {p} (raw {raw})"),
    }
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    let verdict = match r.status {
        Status::Match => "MATCH",
        Status::NoMatch => "no match",
        Status::Undecided => "TOO SHORT TO DECIDE",
        Status::Error if r.results.is_empty() => "ERROR: nothing registered to test against",
        Status::Error => {
            "ERROR: some registered entries could not be tested, no match among the rest"
        }
    };
    write!(out, "{}: {}", r.input, verdict)?;
    let mut parts = Vec::new();
    // A match made by the symmetry line alone has no small p-value to show.
    let by_score = r.matched
        && r.results
            .iter()
            .filter(|t| t.matched)
            .all(|t| t.details.get("matched_by").and_then(|v| v.as_str()) == Some("score"));
    if let (Some(p), Some(l), false) = (r.p_value, r.log10_p, by_score) {
        parts.push(format!("p = {}", fmt_p(p, l)));
    }
    if by_score {
        parts.push("matched by the symmetry-invariant score".into());
    }
    if let Some(n) = r.scored_tokens {
        parts.push(format!("{n} tokens scored"));
    }
    parts.push(format!("{} registered entries", r.results.len()));
    if r.errors > 0 {
        parts.push(format!("{} could not be tested", r.errors));
    }
    writeln!(out, " ({})", parts.join(", "))?;
    for t in &r.results {
        writeln!(out, "  {} [{}]: {}", t.name, t.kind, result_line(t))?;
    }
    Ok(())
}

/// One line per registered layer of a fingerprint match's lineage map, e.g.
/// `0->0 (10 of 10, FFN permuted), 1->1 (10 of 10)`; `-` is the model's non-layer matrices.
fn lineage_summary(l: &[serde_json::Value]) -> String {
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or("?").to_string();
    l.iter()
        .map(|e| {
            let permuted = if e["ffn_permuted"].as_bool() == Some(true) {
                ", FFN permuted"
            } else {
                ""
            };
            format!(
                "{}->{} ({}{permuted})",
                field(e, "registered_layer"),
                field(e, "suspect_layer"),
                field(e, "matrices_found")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

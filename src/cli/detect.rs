use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hallmark::detect::{InputKind, KeyTest, Report, Status, SIGNATURE_KIND};
use hallmark::registry::{EntryKind, Registry};

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
    #[arg(required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub suspect: Option<PathBuf>,
    /// A JSON Lines file of `{"text": ...}` documents; one result line per document (a bad
    /// line gives an error object for that line, and the others are still tested).
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
    let registry = Registry::open(&dir)
        .with_context(|| format!("opening registry {}", dir.display()))?
        .validate();
    let mut status: Option<Status> = None;
    let mut note = |s: Status| status = Some(status.map_or(s, |t| t.combine(s)));
    if let Some(jsonl) = &a.jsonl {
        let text = std::fs::read_to_string(jsonl)
            .with_context(|| format!("reading {}", jsonl.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let input = format!("{}:{}", jsonl.display(), i + 1);
            let doc = serde_json::from_str::<serde_json::Value>(line)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| match v.get("text").and_then(|t| t.as_str()) {
                    Some(t) => Ok(t.to_string()),
                    None => Err("no string field `text`".to_string()),
                });
            match doc {
                Ok(t) => {
                    let r = detect_text(input, &t, &registry, a.alpha)?;
                    note(r.status);
                    print_report(&r, a.json)?;
                }
                Err(reason) => {
                    note(Status::Error);
                    print_line_error(&input, &reason, a.json)?;
                }
            }
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
            detect_weights(s, &registry, a.alpha)?
        } else {
            let bytes = std::fs::read(s).with_context(|| format!("reading {}", s.display()))?;
            let t = String::from_utf8(bytes).with_context(|| {
                format!("{}: neither a weight file nor UTF-8 text", s.display())
            })?;
            detect_text(s.display().to_string(), &t, &registry, a.alpha)?
        };
        note(r.status);
        print_report(&r, a.json)?;
    }
    Ok(ExitCode::from(status.unwrap_or(Status::Error).exit_code()))
}

/// The registry's problems that concern a suspect of `kind`, as error results (an unreadable or
/// too-deep directory could hide entries of any kind, so it concerns every suspect).
fn problem_results(registry: &Registry, kind: InputKind) -> Vec<KeyTest> {
    registry
        .problems()
        .iter()
        .filter(|p| match kind {
            InputKind::Text => p.applies_to.text,
            InputKind::Weights => p.applies_to.weights,
        })
        .map(|p| match &p.entry {
            Some(e) => KeyTest::error(&e.name, entry_kind_name(e.kind), &p.reason),
            None => {
                let rel = p.path.strip_prefix(registry.dir()).unwrap_or(&p.path);
                KeyTest::error(rel.display().to_string(), "registry", &p.reason)
            }
        })
        .collect()
}

fn entry_kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::SignerKey => "pub",
        EntryKind::WatermarkKey => "wmkey",
        EntryKind::Fingerprint => "fingerprint",
    }
}

/// Run a capability's tests; a panic inside (a bug) is reported as an error, never a crash.
fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(anyhow::anyhow!(
            "internal error while {what}: {}",
            hallmark::tokenizer::panic_message(&*p)
        ))
    })
}

fn detect_text(
    input: String,
    text: &str,
    registry: &Registry,
    alpha: f64,
) -> anyhow::Result<Report> {
    let t = guarded("testing text watermarks", || {
        Ok(hallmark::textmark::test_text(text, registry)?)
    })?;
    let mut tests = t.tests;
    tests.extend(problem_results(registry, InputKind::Text));
    let r = hallmark::detect::finish(input, InputKind::Text, tests, alpha, t.scored_tokens);
    warn_if_empty(&r, registry.dir());
    Ok(r)
}

fn detect_weights(s: &Path, registry: &Registry, alpha: f64) -> anyhow::Result<Report> {
    let mut tests = guarded("testing weights", || {
        hallmark::fingerprint::test_weights(s, registry)
            .with_context(|| format!("examining {}", s.display()))
    })?;
    tests.extend(signature_results(s, registry)?);
    tests.extend(problem_results(registry, InputKind::Weights));
    let r = hallmark::detect::finish(
        s.display().to_string(),
        InputKind::Weights,
        tests,
        alpha,
        None,
    );
    warn_if_empty(&r, registry.dir());
    Ok(r)
}

/// The signature bundles a model carries: `MODEL.sig` beside a file; `*.sig` and
/// `*.sigstore.json` files at the top of a directory.
fn bundles_of(model: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(model).with_context(|| format!("reading {}", model.display()))?;
    if !meta.is_dir() {
        let p = hallmark::signing::sign::default_sig_path(model);
        return Ok(if p.is_file() { vec![p] } else { Vec::new() });
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(model).with_context(|| format!("reading {}", model.display()))? {
        let e = e.with_context(|| format!("reading {}", model.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.ends_with(".sig") || name.ends_with(".sigstore.json"))
            && e.file_type().map(|t| t.is_file()).unwrap_or(false)
        {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Largest signature bundle read.
const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// One `signature` result per bundle the suspect carries: which registered signer signed it,
/// and whether the model's files still verify against it.
fn signature_results(model: &Path, registry: &Registry) -> anyhow::Result<Vec<KeyTest>> {
    use hallmark::signing::{check_model, verify_bundle, VerifyingKey};
    let mut signers = Vec::new();
    for e in registry.of_kind(EntryKind::SignerKey) {
        let bytes = hallmark::registry::read_entry(&e.path)?;
        let pem = String::from_utf8_lossy(&bytes);
        signers.push((e.name.clone(), VerifyingKey::from_pem(&pem)?));
    }
    if signers.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in bundles_of(model)? {
        let label = b
            .strip_prefix(model)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .unwrap_or(&b)
            .display()
            .to_string();
        let len = std::fs::metadata(&b).map(|m| m.len()).unwrap_or(0);
        if len > MAX_BUNDLE_BYTES {
            out.push(KeyTest::error(
                label,
                SIGNATURE_KIND,
                format!("{len} bytes; bundles are at most {MAX_BUNDLE_BYTES} bytes"),
            ));
            continue;
        }
        let bytes = std::fs::read(&b).with_context(|| format!("reading {}", b.display()))?;
        let mut found = None;
        for (name, key) in &signers {
            match verify_bundle(&bytes, key) {
                Ok(v) => {
                    found = Some((name.clone(), key.hint(), v));
                    break;
                }
                Err(e) if e.is_invalid_signature() => continue,
                Err(e) => {
                    found = None;
                    out.push(KeyTest::error(&label, SIGNATURE_KIND, e.to_string()));
                    break;
                }
            }
        }
        let Some((signer, hint, verified)) = found else {
            if !out.iter().any(|t| t.name == label) {
                out.push(
                    KeyTest::exact(&label, SIGNATURE_KIND, false)
                        .with("bundle", b.display().to_string())
                        .with("signer", serde_json::Value::Null)
                        .with("note", "signed by no registered key"),
                );
            }
            continue;
        };
        let report = match check_model(model, &verified, Some(&b), &|_| {}) {
            Ok(r) => r,
            Err(e) => {
                out.push(KeyTest::error(&signer, SIGNATURE_KIND, e.to_string()));
                continue;
            }
        };
        let problems: Vec<serde_json::Value> = report
            .problems()
            .map(|f| serde_json::json!({"file": f.name, "status": f.status.label()}))
            .collect();
        out.push(
            KeyTest::exact(&signer, SIGNATURE_KIND, report.is_valid())
                .with("bundle", b.display().to_string())
                .with("signer", signer.clone())
                .with("key_hint", hint)
                .with("verifies", report.is_valid())
                .with("files", report.files.len() as u64)
                .with("problems", problems),
        );
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

/// A directory, a file named `*.gguf` / `*.safetensors` (even an empty or damaged one: it is
/// then a weights error, not text), or a file whose first bytes are a weights header.
fn is_weights(p: &Path) -> anyhow::Result<bool> {
    let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if meta.is_dir() {
        return Ok(true);
    }
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("gguf") | Some("safetensors")) {
        return Ok(true);
    }
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(hallmark::weights::sniff(&head[..n]).is_some())
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
            None => "signed by no registered key".into(),
        };
    }
    let p = fmt_p(t.p_value, t.log10_p);
    let raw = fmt_p(t.p_raw, t.log10_p_raw);
    if t.kind == "fingerprint" {
        let similar = t.details.get("similar").and_then(|v| v.as_bool()) == Some(true);
        if t.matched {
            let mut s = format!("MATCH: derived (p = {p}, raw {raw})");
            if let Some(l) = t.details.get("lineage").and_then(|l| l.as_array()) {
                s.push_str(&format!("; lineage: {}", lineage_summary(l)));
            }
            return s;
        }
        if !t.decided {
            return format!("too little evidence to decide (p = {p})");
        }
        if similar {
            return format!("similar, not proven derived (p = {p}, raw {raw})");
        }
        return format!("no match p = {p} (raw {raw})");
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
    if let (Some(p), Some(l)) = (r.p_value, r.log10_p) {
        parts.push(format!("p = {}", fmt_p(p, l)));
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

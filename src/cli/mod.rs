//! clap parsing -> run -> exit code. The only code in hallmark that prints.
//!
//! Exit codes: 0 success / valid / match, 1 invalid / no match, 2 unusable input or error,
//! 3 undecided (`detect`: too little evidence), 130 interrupted (SIGINT/SIGTERM; every
//! temporary file is removed first). Diagnostics go to stderr prefixed `hallmark: `; with
//! `--json`, an error is also a JSON object `{"error": ..., "path": ...}` on stdout. Results go
//! to stdout; a closed stdout pipe ends the program quietly with exit 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Parser, Subcommand};

mod detect;
#[cfg(feature = "eval")]
mod eval;
mod fingerprint;
mod generate;
mod keygen;
mod mark;
mod progress;
mod register;
mod sign;
mod verify;
mod wm_key;

/// Prove where a generative model and its output came from.
#[derive(Parser, Debug)]
#[command(
    name = "hallmark",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success / valid / match; 1 invalid / no match; 2 error (with \
--json, also {\"error\": ..., \"path\": ...} on stdout); 3 undecided (detect: too little \
evidence, no match); 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a signing key pair: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub (SPKI PEM).
    Keygen(keygen::Args),
    /// Sign a model (file or directory) with a detached OMS v1.0 bundle.
    Sign(sign::Args),
    /// Verify a model against its OMS bundle; names every changed file and tensor.
    Verify(verify::Args),
    /// Create a secret watermark key (text schemes kgw/gumbel, or the weight mark).
    WmKey(wm_key::Args),
    /// Extract a compact fingerprint of a model's weights.
    Fingerprint(fingerprint::Args),
    /// Add public keys, watermark keys and fingerprints to the registry.
    Register(register::Args),
    /// Embed a keyed active mark into a copy of a model's weights.
    Mark(mark::Args),
    /// Generate text with a local GGUF model, watermarked inside the sampler.
    Generate(generate::Args),
    /// Test a suspect text or weight file against every registered key and fingerprint.
    Detect(detect::Args),
    /// Measure text-watermark detection power and quality cost on real generations.
    #[cfg(feature = "eval")]
    Eval(eval::Args),
}

impl Command {
    /// Whether `--json` was given, and the path the command is about (for JSON errors).
    fn json_and_path(&self) -> (bool, Option<PathBuf>) {
        match self {
            Command::Keygen(a) => (a.json, Some(a.out.clone())),
            Command::Sign(a) => (false, Some(a.model.clone())),
            Command::Verify(a) => (a.json, Some(a.model.clone())),
            Command::WmKey(a) => (a.json, Some(a.out.clone())),
            Command::Fingerprint(a) => (a.json, Some(a.model.clone())),
            Command::Register(a) => (a.json, a.files.first().cloned()),
            Command::Mark(a) => (a.json, Some(a.model.clone())),
            Command::Generate(a) => (a.json, Some(a.model.clone())),
            Command::Detect(a) => (
                a.json,
                a.suspect
                    .clone()
                    .or_else(|| a.jsonl.clone())
                    .or_else(|| a.parquet.clone()),
            ),
            #[cfg(feature = "eval")]
            Command::Eval(a) => (a.json, None),
        }
    }
}

/// The last panic's message and location, recorded by the hook instead of printed, so a panic
/// caught at a boundary (an untrusted tokenizer) leaves stderr clean and one that escapes is
/// reported once, in the house style.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = hallmark::tokenizer::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some(format!("{msg}{at}"));
        }
    }));
}

/// SIGINT / SIGTERM: remove every live temporary, then exit 130.
fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        let _guard = hallmark::fsutil::remove_live_temps();
        eprintln!("hallmark: interrupted; temporary files removed");
        std::process::exit(130);
    });
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    install_interrupt_handler();
    let (json, path) = cli.command.json_and_path();
    let command = cli.command;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match command {
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Verify(a) => verify::run(a),
        Command::WmKey(a) => wm_key::run(a),
        Command::Fingerprint(a) => fingerprint::run(a),
        Command::Register(a) => register::run(a),
        Command::Mark(a) => mark::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Detect(a) => detect::run(a),
        #[cfg(feature = "eval")]
        Command::Eval(a) => eval::run(a),
    }))
    .unwrap_or_else(|_| {
        let msg = LAST_PANIC
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| "unknown panic".into());
        Err(anyhow::anyhow!("internal error (a bug in hallmark): {msg}"))
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let msg = error_chain(&err);
            eprintln!("hallmark: {msg}");
            if json {
                let v = serde_json::json!({
                    "error": msg,
                    "path": path.map(|p| p.display().to_string()),
                });
                println!("{v}");
            }
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// carries (typed errors often print their source inline too).
fn error_chain(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = hide_temp_names(&cause.to_string());
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// Drop the ` at path ".../.hallmark-tmp-..."` that tempfile appends to its errors: the
/// temporary's name means nothing to the user, who is told the destination instead.
fn hide_temp_names(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(i) = out.find(" at path \"") {
        let rest = &out[i + 10..];
        let Some(end) = rest.find('"') else { break };
        if !rest[..end].contains(hallmark::fsutil::TEMP_PREFIX) {
            break;
        }
        out.replace_range(i..i + 10 + end + 1, "");
    }
    out
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    // serde_json wraps the io::Error of a closed stdout in its own error type.
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|e| e.kind())
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(|e| e.io_error_kind())
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Print a warning to stderr in the house style.
#[allow(dead_code)]
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("hallmark: {msg}");
}

/// True when stderr is a terminal (progress bars are shown only then).
#[allow(dead_code)]
pub fn stderr_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

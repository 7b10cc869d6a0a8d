//! clap parsing -> run -> exit code. The only code in hallmark that prints.
//!
//! Exit codes: 0 success / valid / match, 1 invalid / no match, 2 unusable input or error.
//! Diagnostics go to stderr prefixed `hallmark: `; results go to stdout; a closed stdout pipe
//! ends the program quietly with exit 0.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod detect;
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
#[command(name = "hallmark", version, about, long_about = None)]
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
    Eval(eval::Args),
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Verify(a) => verify::run(a),
        Command::WmKey(a) => wm_key::run(a),
        Command::Fingerprint(a) => fingerprint::run(a),
        Command::Register(a) => register::run(a),
        Command::Mark(a) => mark::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Eval(a) => eval::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("hallmark: {}", error_chain(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// carries (typed errors often print their source inline too).
fn error_chain(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
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

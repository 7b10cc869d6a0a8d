//! `hallmark-train [--impostors SEEDS] [--plot PNG] [--steps N]`: train (or read from the cache)
//! the set of independently trained models and print where it is, its losses and its wall time;
//! `--plot` also draws the loss curves. `--impostors` trains the larger impostor population of
//! the symmetry-invariant line instead (three families x SEEDS; `benches/impostors.sh`).

use std::path::PathBuf;
use std::process::ExitCode;

use hallmark_testkit::{ensure, plot, SetConfig, TrainedSet};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut plot_to = None;
    let mut steps = None;
    let mut impostors = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plot" => match it.next() {
                Some(p) => plot_to = Some(PathBuf::from(p)),
                None => return usage("--plot needs a path"),
            },
            "--impostors" => match it.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n >= 2 => impostors = Some(n),
                _ => return usage("--impostors needs a number of seeds of at least 2"),
            },
            "--steps" => match it.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n >= 4 => steps = Some(n),
                _ => return usage("--steps needs a number of at least 4"),
            },
            "--export-llama-tokenizer" => {
                // Writes SmolLM2's tokenizer (rebuilt from the GGUF metadata) as tokenizer.json,
                // for machines that have the text but not the GGUF.
                let Some(out) = it.next() else {
                    return usage("--export-llama-tokenizer needs a path");
                };
                let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
                let gguf = root.join(hallmark_testkit::tokenizer_path(
                    hallmark_testkit::model::Family::Llama,
                ));
                let json = hallmark::tokenizer::Tokenizer::from_path(&gguf)
                    .and_then(|t| t.to_json())
                    .map_err(|e| e.to_string());
                return match json.and_then(|j| {
                    hallmark::fsutil::write_atomic(
                        std::path::Path::new(out),
                        j.as_bytes(),
                        hallmark::fsutil::WriteMode::Public,
                    )
                    .map_err(|e| e.to_string())
                }) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("hallmark-train: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            "-h" | "--help" => {
                println!("usage: hallmark-train [--impostors SEEDS] [--plot PNG] [--steps N]");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cfg = impostors.map_or_else(SetConfig::default, SetConfig::impostors);
    if let Some(n) = steps {
        for f in &mut cfg.families {
            f.steps = n;
            f.child_steps = n / 4;
        }
    }
    // The impostor population is cached one set per family, as `benches/impostors.sh` reads it.
    let cfgs = if impostors.is_some() {
        cfg.per_family()
    } else {
        vec![cfg.clone()]
    };
    let mut sets = Vec::new();
    for c in &cfgs {
        match ensure(&root, c, &|l| eprintln!("hallmark-train: {l}")) {
            Ok(s) => sets.push(s),
            Err(e) => {
                eprintln!("hallmark-train: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for s in &sets {
        println!("set {} in {}", s.key, s.dir.display());
    }
    // The sets as one (one figure, a panel per family).
    let set = TrainedSet {
        key: sets
            .iter()
            .map(|s| s.key.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        config: cfg,
        families: sets.iter().flat_map(|s| s.families.clone()).collect(),
        seconds: sets.iter().map(|s| s.seconds).sum(),
        dir: sets.first().map(|s| s.dir.clone()).unwrap_or_default(),
    };
    println!("generation wall time {:.1} s", set.seconds);
    for f in &set.families {
        println!(
            "{}: vocab {}, {} corpus tokens, unigram entropy {:.3}, fingerprint rows trained {} of {}",
            f.family.name(),
            f.vocab,
            f.compact_vocab,
            f.unigram_entropy,
            f.fingerprint_rows_trained.0,
            f.fingerprint_rows_trained.1
        );
        for m in &f.models {
            println!(
                "  {}: eval loss {:.3} -> {:.3} ({:.1} s)",
                m.name,
                m.eval_curve.first().map(|p| p.1).unwrap_or(f64::NAN),
                m.final_eval_loss(),
                m.seconds
            );
        }
    }
    if let Some(p) = plot_to {
        let png = match plot::loss_curves(&set) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("hallmark-train: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) =
            hallmark::fsutil::write_atomic(&p, &png, hallmark::fsutil::WriteMode::Public)
        {
            eprintln!("hallmark-train: {}: {e}", p.display());
            return ExitCode::from(2);
        }
        println!("loss curves -> {}", p.display());
    }
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "hallmark-train: {msg}\nusage: hallmark-train [--impostors SEEDS] [--plot PNG] [--steps N]"
    );
    ExitCode::from(2)
}

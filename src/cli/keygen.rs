use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil::{write_atomic, WriteMode};
use hallmark::signing::{KeyAlg, SigningKey};

/// `hallmark keygen`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output prefix: writes PREFIX.key and PREFIX.pub (a name, not a directory: `keys/alice`).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Signature algorithm (model_signing verifies the ECDSA ones: p256, p384, p521).
    #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "p256", "p384", "p521"])]
    pub alg: String,
}

fn with_ext(prefix: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let alg = KeyAlg::from_name(&a.alg)
        .ok_or_else(|| anyhow::anyhow!("--alg {}: unknown algorithm", a.alg))?;
    // A directory (or a prefix ending in `/`) would give hidden files `DIR/.key`, `DIR/.pub`.
    let ends_with_sep = a.out.as_os_str().to_string_lossy().ends_with(['/', '\\']);
    let stem = a.out.file_name().map(|n| n.to_string_lossy().into_owned());
    if ends_with_sep || a.out.is_dir() || stem.as_deref().is_none_or(|n| n.starts_with('.')) {
        anyhow::bail!(
            "{}: --out is a file prefix such as keys/alice (writes keys/alice.key and \
             keys/alice.pub), not a directory or a hidden name",
            a.out.display()
        );
    }
    let key_path = with_ext(&a.out, ".key");
    let pub_path = with_ext(&a.out, ".pub");
    // Refuse before writing anything, so a half-made pair is never left behind.
    for p in [&key_path, &pub_path] {
        if p.symlink_metadata().is_ok() {
            anyhow::bail!("{} already exists; refusing to overwrite it", p.display());
        }
    }
    let key = SigningKey::generate(alg);
    let pem = key.to_pkcs8_pem()?;
    write_atomic(&key_path, pem.as_bytes(), WriteMode::Secret)
        .with_context(|| format!("writing {}", key_path.display()))?;
    let public = key.verifying_key();
    write_atomic(
        &pub_path,
        public.to_pem().as_bytes(),
        WriteMode::PublicNoClobber,
    )
    .with_context(|| format!("writing {}", pub_path.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "private_key": key_path.display().to_string(),
                "public_key": pub_path.display().to_string(),
                "alg": alg.name(),
                "hint": public.hint(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: private key ({}, mode 0600)",
        key_path.display(),
        alg.name()
    );
    println!("{}: public key, hint {}", pub_path.display(), public.hint());
    Ok(ExitCode::SUCCESS)
}

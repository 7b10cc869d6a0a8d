use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil::{self, write_atomic, WriteMode};
use hallmark::signing::{self, HashType, SignOptions, SigningKey};
use zeroize::Zeroizing;

/// `hallmark sign`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file or directory.
    pub model: PathBuf,
    /// Private key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the bundle (default: MODEL/model.sig or MODEL.sig).
    #[arg(long)]
    pub sig: Option<PathBuf>,
    /// Follow and sign symlinks instead of refusing them.
    #[arg(long)]
    pub allow_symlinks: bool,
    /// Paths (relative to MODEL) to leave out.
    #[arg(long = "ignore")]
    pub ignore: Vec<PathBuf>,
    /// File digest: blake3 (fast), or sha256 for verifiers that only hash SHA-256 (such as
    /// model_signing's `verify key` command).
    #[arg(long = "hash", default_value = "blake3", value_parser = ["blake3", "sha256"])]
    pub hash: String,
    /// Signing certificate (PEM) for KEY: the bundle carries it (and --cert-chain) instead of
    /// a key hint, as `model_signing sign certificate` writes.
    #[arg(long, value_name = "CERT")]
    pub cert: Option<PathBuf>,
    /// Certificates that chain CERT to its root (PEM; repeatable), stored after CERT.
    #[arg(long = "cert-chain", value_name = "CHAIN", requires = "cert")]
    pub cert_chain: Vec<PathBuf>,
}

/// Read a private key file (a regular file of at most 64 KiB, never blocking); its text is
/// zeroized when dropped. Warns when the file is readable by group or others.
pub fn read_private_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let shown = fsutil::shown(path);
    let (_, meta) =
        fsutil::open_regular(path, fsutil::Follow::Yes).with_context(|| shown.clone())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            super::warn(format_args!(
                "{shown}: private key is readable by group or others (mode {mode:04o}); \
                 run `chmod 600 {shown}`"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let bytes = Zeroizing::new(
        fsutil::read_capped(path, 64 * 1024, fsutil::Follow::Yes).with_context(|| shown.clone())?,
    );
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{shown}: not UTF-8 text"))?;
    SigningKey::from_pem(text).with_context(|| shown.clone())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let key = read_private_key(&a.key)?;
    let certificates = match &a.cert {
        Some(c) => Some(super::verify::read_signing_chain(c, &a.cert_chain, &key)?),
        None => None,
    };
    let sig = a
        .sig
        .clone()
        .unwrap_or_else(|| signing::sign::default_sig_path(&a.model));
    let mut ignore = Vec::new();
    for p in &a.ignore {
        // Accept paths relative to MODEL, or absolute/cwd-relative paths inside it.
        let rel = match std::fs::canonicalize(p)
            .ok()
            .zip(std::fs::canonicalize(&a.model).ok())
            .and_then(|(full, root)| full.strip_prefix(&root).ok().map(|r| r.to_path_buf()))
        {
            Some(r) if p.is_absolute() => r,
            _ => p.clone(),
        };
        let s = rel
            .to_str()
            .with_context(|| format!("{}: not valid UTF-8", fsutil::shown(p)))?;
        ignore.push(s.replace('\\', "/"));
    }
    let opts = SignOptions {
        hash_type: HashType::from_name(&a.hash).unwrap_or(HashType::Blake3),
        allow_symlinks: a.allow_symlinks,
        ignore,
        sig_path: Some(sig.clone()),
    };
    let bar = super::progress::bar(&a.model);
    let bundle = signing::sign_model(&a.model, &key, &opts, &|n| bar.inc(n));
    bar.finish_and_clear();
    let mut bundle = bundle?;
    if let Some(chain) = certificates {
        bundle.set_certificates(chain);
    }
    write_atomic(&sig, &bundle.to_json(), WriteMode::Public)
        .with_context(|| format!("writing {}", fsutil::shown(&sig)))?;
    let st = signing::statement::Statement::from_payload(&bundle.payload)?;
    let tensors: usize = st
        .tensors
        .as_ref()
        .map(|m| m.files.iter().map(|f| f.tensors.len()).sum())
        .unwrap_or(0);
    println!(
        "{}: signed {} file(s), {} tensor(s), {} with {} key {}",
        fsutil::shown(&sig),
        st.resources.len(),
        tensors,
        st.serialization.hash_type.name(),
        key.alg().name(),
        key.verifying_key().hint()
    );
    Ok(ExitCode::SUCCESS)
}

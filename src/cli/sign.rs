use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil::{self, write_atomic, WriteMode};
use hallmark::signing::reuse::{self, Reuse, ReuseState};
use hallmark::signing::sign::{default_hash_type, model_signing_cli_gaps};
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
    /// model_signing's `verify key` command). Default: sha256 for P-256 keys and with
    /// --shard-size, blake3 for Ed25519 keys.
    #[arg(long = "hash", value_parser = ["blake3", "sha256"])]
    pub hash: Option<String>,
    /// Sign with model_signing's `shards` method: cut every file into BYTES-byte shards, each
    /// digested on its own and in parallel (model_signing's default is 1000000000).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: Option<u64>,
    /// Re-sign incrementally: take the digests of files whose size, mtime, ctime and inode are
    /// unchanged from OLD.sig (verified with this key's public half first) and its side-car
    /// state OLD.sig.reuse; hash only the rest. Writes SIG.reuse for the next run.
    #[arg(long, value_name = "OLD.sig")]
    pub reuse: Option<PathBuf>,
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
    let ignore = relative_ignores(&a.model, &a.ignore)?;
    let hash_type = match &a.hash {
        Some(h) => HashType::from_name(h).unwrap_or(HashType::Blake3),
        None => default_hash_type(key.alg(), a.shard_size.is_some()),
    };
    anyhow::ensure!(
        !(a.shard_size.is_some() && hash_type == HashType::Blake3),
        "--shard-size with --hash blake3: BLAKE3 already hashes one file on every core, and \
         model_signing cannot verify BLAKE3 shard bundles; use --hash sha256 (the default with \
         --shard-size)"
    );
    // The reuse state is kept beside the signature once asked for: with --reuse, or when a
    // state file is already there (so it never goes stale).
    let state_path = reuse::state_path(&sig);
    let keep_state = a.reuse.is_some() || state_path.symlink_metadata().is_ok();
    let reuse = match &a.reuse {
        None => None,
        Some(old) => {
            let shown = fsutil::shown(old);
            let bytes =
                fsutil::read_capped(old, signing::bundle::MAX_BUNDLE_LEN, fsutil::Follow::Yes)
                    .with_context(|| format!("--reuse {shown}"))?;
            let old_state = reuse::state_path(old);
            let state = if old_state.symlink_metadata().is_ok() {
                Some(
                    fsutil::read_capped(&old_state, reuse::MAX_STATE_LEN, fsutil::Follow::No)
                        .with_context(|| fsutil::shown(&old_state))?,
                )
            } else {
                None
            };
            let r = Reuse::load(&bytes, state.as_deref(), &key).with_context(|| {
                if state.is_some() {
                    format!(
                        "--reuse {shown} (delete {} to hash every file again)",
                        fsutil::shown(&old_state)
                    )
                } else {
                    format!("--reuse {shown}")
                }
            })?;
            Some(r)
        }
    };
    let opts = SignOptions {
        hash_type,
        allow_symlinks: a.allow_symlinks,
        ignore,
        sig_path: Some(sig.clone()),
        shard_size: a.shard_size,
        state_path: keep_state.then(|| state_path.clone()),
        reuse,
    };
    let bar = super::progress::bar(&a.model);
    let signed = signing::sign_model_full(&a.model, &key, &opts, &|n| bar.inc(n));
    bar.finish_and_clear();
    let mut signed = signed?;
    if let Some(chain) = certificates {
        signed.bundle.set_certificates(chain);
    }
    let bundle = &signed.bundle;
    let json = bundle.to_json();
    write_atomic(&sig, &json, WriteMode::Public)
        .with_context(|| format!("writing {}", fsutil::shown(&sig)))?;
    if keep_state {
        let state = ReuseState {
            bundle_sha256: reuse::bundle_digest(&json),
            files: signed.stats.clone(),
        };
        write_atomic(&state_path, &state.encode(&key)?, WriteMode::Public)
            .with_context(|| format!("writing {}", fsutil::shown(&state_path)))?;
    }
    let st = signing::statement::Statement::from_payload(&bundle.payload)?;
    let tensors: usize = st
        .tensors
        .as_ref()
        .map(|m| m.files.iter().map(|f| f.tensors.len()).sum())
        .unwrap_or(0);
    let shards = match st.serialization.method {
        signing::Method::Files => String::new(),
        signing::Method::Shards { shard_size } => {
            format!(" in {} shard(s) of {shard_size} bytes", st.resources.len())
        }
    };
    println!(
        "{}: signed {} file(s){shards}, {} tensor(s), {} with {} key {}",
        fsutil::shown(&sig),
        st.files().len(),
        tensors,
        st.serialization.hash_type.name(),
        key.alg().name(),
        key.verifying_key().hint()
    );
    if let Some(old) = &a.reuse {
        if let Some(note) = &signed.reuse_note {
            super::warn(format_args!("--reuse {}: {note}", fsutil::shown(old)));
        }
        println!(
            "reused {} file(s) ({} bytes) from {}; hashed {} file(s) ({} bytes)",
            signed.reused.0,
            signed.reused.1,
            fsutil::shown(old),
            signed.hashed.0,
            signed.hashed.1
        );
    }
    let gaps = model_signing_cli_gaps(
        key.alg(),
        st.serialization.hash_type,
        st.serialization.method,
    );
    if !gaps.is_empty() {
        super::warn(format_args!(
            "warning: model_signing's CLI (`model_signing verify key`) cannot verify {}: {}; \
             sign with an ECDSA key (keygen --alg p256), --hash sha256 and no --shard-size for \
             a bundle it verifies",
            fsutil::shown(&sig),
            gaps.join("; ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--ignore` paths as relative POSIX paths inside `model` (shared with Python's `ignore=`).
pub(crate) fn relative_ignores(
    model: &std::path::Path,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    Ok(signing::model::relative_ignores(model, paths)?)
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hallmark::fsutil;
use hallmark::signing::{self, FileStatus, ModelReport, VerifyingKey};
use serde_json::json;

/// `hallmark verify`
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("trust").required(true).args(["public", "cert_chain", "sigstore"])))]
pub struct Args {
    /// Model file or directory.
    pub model: PathBuf,
    /// Signer's public key (SPKI PEM, text around the armour allowed, or DER): Ed25519, ECDSA
    /// P-256, P-384 or P-521. The bundle must be a bare-key bundle.
    #[arg(long = "pub", value_name = "PUB")]
    pub public: Option<PathBuf>,
    /// Trusted root certificates (PEM; repeat for several files): the bundle's signing
    /// certificate must chain to one of them and be valid now.
    #[arg(long = "cert-chain", value_name = "CA.pem")]
    pub cert_chain: Vec<PathBuf>,
    /// Verify a Sigstore bundle offline (Rekor v1 or v2 entry); needs --identity and
    /// --issuer (keyless: a Fulcio certificate), or --key (a managed key).
    #[arg(long)]
    pub sigstore: bool,
    /// With --sigstore: the managed key (SPKI PEM) of a bundle signed without a certificate.
    #[arg(long, value_name = "PUB.pem", requires = "sigstore", conflicts_with_all = ["identity", "issuer"])]
    pub key: Option<PathBuf>,
    /// The signer's identity: an email, URI or username (otherName) subject alternative name
    /// of the signing certificate, matched exactly (a DNS name never matches).
    #[arg(long, value_name = "EMAIL|URI|USERNAME")]
    pub identity: Option<String>,
    /// With --sigstore: the OIDC issuer Fulcio recorded in the certificate.
    #[arg(long, value_name = "URL", requires = "sigstore")]
    pub issuer: Option<String>,
    /// With --sigstore: the trusted root (Sigstore `trusted_root.json`; default: the
    /// public-good instance's, shipped with hallmark).
    #[arg(long, value_name = "FILE", requires = "sigstore")]
    pub trusted_root: Option<PathBuf>,

    /// Bundle path (default: MODEL/model.sig or MODEL.sig).
    #[arg(long)]
    pub sig: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Verify only these tensors against the signed per-tensor digests.
    #[arg(long, num_args = 1..)]
    pub tensors: Vec<String>,
    /// Fail unless the signed subject name (the signed model's name) is NAME, so that a
    /// bundle made for another release cannot vouch for this one.
    #[arg(long, value_name = "NAME")]
    pub expect_name: Option<String>,
    /// Accept a signature whose ignore list leaves out weight files present in the model
    /// (those files are then not verified at all).
    #[arg(long)]
    pub allow_ignored_weights: bool,
    /// Leave PATH (relative to MODEL; repeatable) out of the check, as model_signing's
    /// `--ignore-paths`. Every other file the signature does not cover fails verification as
    /// an extra file, whatever its name (other signature bundles included).
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<PathBuf>,
}

/// Read a key or bundle: a regular file (never blocks on a FIFO), at most `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> anyhow::Result<Vec<u8>> {
    fsutil::read_capped(path, cap, fsutil::Follow::Yes).with_context(|| fsutil::shown(path))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // The model first: a missing model is the error to report, not its missing bundle.
    anyhow::ensure!(
        a.model.symlink_metadata().is_ok(),
        "{}: no such file or directory",
        fsutil::shown(&a.model)
    );
    anyhow::ensure!(
        a.identity.is_none() || !a.cert_chain.is_empty() || a.sigstore,
        "--identity needs --cert-chain or --sigstore"
    );
    let trust = Trust::load(&a)?;
    let sig = a
        .sig
        .clone()
        .unwrap_or_else(|| signing::sign::default_sig_path(&a.model));
    anyhow::ensure!(
        sig.symlink_metadata().is_ok(),
        "{}: no signature bundle here (sign the model first, or name the bundle with --sig)",
        fsutil::shown(&sig)
    );
    let bundle = read_capped(&sig, signing::bundle::MAX_BUNDLE_LEN)?;
    let display = |name: &str| -> String {
        if name == "." {
            fsutil::shown(&a.model)
        } else {
            fsutil::shown_str(name)
        }
    };

    let verified = match trust.verify(&bundle) {
        Ok(v) => v,
        Err(e) if e.is_invalid_signature() => {
            if a.json {
                let v = json!({"model": a.model, "signature": sig, "valid": false, "error": e.to_string()});
                println!("{v}");
            } else {
                println!("{}: FAILED ({e})", fsutil::shown(&a.model));
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };

    let subject = verified.statement().subject_name.clone();
    if let Some(want) = &a.expect_name {
        if *want != subject {
            let msg = format!(
                "the signature is for `{}`, not `{}`",
                fsutil::shown_str(&subject),
                fsutil::shown_str(want)
            );
            if a.json {
                let v = json!({"model": a.model, "signature": sig, "valid": false,
                    "subject": subject, "error": msg});
                println!("{v}");
            } else {
                println!("{}: FAILED ({msg})", fsutil::shown(&a.model));
            }
            return Ok(ExitCode::from(1));
        }
    }

    if !a.tensors.is_empty() {
        let names: Vec<&str> = a.tensors.iter().map(String::as_str).collect();
        let checks = signing::verify_tensors(&a.model, &verified, &names)?;
        let ok = checks.iter().all(|c| c.ok);
        if a.json {
            let v = json!({
                "model": a.model, "signature": sig, "valid": ok, "key_hint": verified.key_hint(),
                "subject": subject, "partial": true, "signer": signing::report::signer_json(verified.signer()),
                "tensors": checks.iter().map(|c| json!({
                    "file": c.file, "name": c.name, "ok": c.ok, "reason": c.reason,
                })).collect::<Vec<_>>(),
            });
            println!("{v}");
        } else {
            for c in &checks {
                let (file, name) = (display(&c.file), fsutil::shown_str(&c.name));
                match &c.reason {
                    None => println!("{file}: tensor `{name}`: OK"),
                    Some(r) => println!("{file}: tensor `{name}`: FAILED ({r})"),
                }
            }
            super::warn(format_args!(
                "checked {} tensor(s) only; the rest of the model was not read",
                checks.len()
            ));
        }
        return Ok(ExitCode::from(if ok { 0 } else { 1 }));
    }

    let bar = super::progress::bar(&a.model);
    let ignores = super::sign::relative_ignores(&a.model, &a.ignore)?;
    let report =
        signing::check_model_ignoring(&a.model, &verified, Some(&sig), &ignores, &|n| bar.inc(n));
    bar.finish_and_clear();
    let report = report?;
    let weights_skipped = !report.ignored_weights.is_empty() && !a.allow_ignored_weights;
    let valid = report.is_valid() && !weights_skipped;
    if a.json {
        let v = signing::report::verify_json(
            &a.model,
            &sig,
            &verified,
            &report,
            a.allow_ignored_weights,
        );
        println!("{v}");
    } else {
        print_report(&report, &display);
        let list = |v: &[String]| {
            v.iter()
                .map(|s| fsutil::shown_str(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("signed subject: {}", fsutil::shown_str(&subject));
        println!("signed ignore list: [{}]", list(&report.signed_ignores));
        if !report.user_ignores.is_empty() {
            println!("--ignore list: [{}]", list(&report.user_ignores));
        }
        for p in &report.ignored_present {
            println!("{}: ignored (not verified)", fsutil::shown_str(p));
        }
        for p in &report.unsigned_empty {
            println!(
                "{}: empty, not verified (the shards method signs no empty file)",
                fsutil::shown_str(p)
            );
        }
        if weights_skipped {
            println!(
                "{}: FAILED (the signature's ignore list leaves out weight files: {}; \
                 pass --allow-ignored-weights to accept that they are not verified)",
                fsutil::shown(&a.model),
                list(&report.ignored_weights)
            );
        }
        if valid {
            println!(
                "{}: verified {} file(s), {} bytes, {}, {}",
                fsutil::shown(&a.model),
                report.files.len(),
                report.bytes_hashed,
                report.hash_type.name(),
                signer_text(verified.signer())
            );
        } else {
            super::warn(format_args!(
                "{}: verification FAILED: {} problem(s)",
                fsutil::shown(&a.model),
                report.problems().count() + usize::from(weights_skipped)
            ));
        }
    }
    Ok(ExitCode::from(if valid { 0 } else { 1 }))
}

/// For `sign --cert`: the signing certificate and its chain as DER, after checking that the
/// certificate holds the public half of `key`.
pub fn read_signing_chain(
    cert: &Path,
    chain: &[PathBuf],
    key: &signing::SigningKey,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = read_capped(cert, 4 << 20)?;
    let mut certs = signing::pki::pem_certificates(&text).with_context(|| fsutil::shown(cert))?;
    anyhow::ensure!(
        certs.len() == 1,
        "{}: holds {} certificates; give the signing certificate alone with --cert and the \
         others with --cert-chain",
        fsutil::shown(cert),
        certs.len()
    );
    let leaf = signing::pki::LeafInfo::parse(&certs[0]).with_context(|| fsutil::shown(cert))?;
    anyhow::ensure!(
        leaf.key.to_spki_der() == key.verifying_key().to_der(),
        "{}: the certificate is not for this private key",
        fsutil::shown(cert)
    );
    for p in chain {
        let text = read_capped(p, 4 << 20)?;
        certs.extend(signing::pki::pem_certificates(&text).with_context(|| fsutil::shown(p))?);
    }
    anyhow::ensure!(
        certs.len() <= signing::pki::MAX_CERTIFICATES,
        "more than {} certificates",
        signing::pki::MAX_CERTIFICATES
    );
    Ok(certs)
}

/// What the user trusts, read before the bundle.
enum Trust {
    Key(VerifyingKey),
    Certificates(signing::CertificatePolicy),
    Sigstore(Box<signing::sigstore::SigstorePolicy>),
}

impl Trust {
    fn load(a: &Args) -> anyhow::Result<Self> {
        if let Some(p) = &a.public {
            let pem = read_capped(p, 64 * 1024)?;
            let key = VerifyingKey::from_file_bytes(&pem).with_context(|| fsutil::shown(p))?;
            return Ok(Trust::Key(key));
        }
        if a.sigstore {
            let root = match &a.trusted_root {
                Some(p) => {
                    let text = read_capped(p, signing::sigstore::MAX_TRUSTED_ROOT_LEN)?;
                    signing::sigstore::TrustedRoot::from_json(&text)
                        .with_context(|| fsutil::shown(p))?
                }
                None => signing::sigstore::TrustedRoot::public_good()?,
            };
            let signer = match (&a.key, &a.identity, &a.issuer) {
                (Some(p), _, _) => {
                    let pem = read_capped(p, 64 * 1024)?;
                    signing::sigstore::SigstoreSigner::key_from_pem(&String::from_utf8_lossy(&pem))
                        .with_context(|| fsutil::shown(p))?
                }
                (None, Some(identity), Some(issuer)) => {
                    signing::sigstore::SigstoreSigner::Identity {
                        identity: identity.clone(),
                        issuer: issuer.clone(),
                    }
                }
                _ => anyhow::bail!("--sigstore needs --identity and --issuer, or --key"),
            };
            return Ok(Trust::Sigstore(Box::new(
                signing::sigstore::SigstorePolicy { root, signer },
            )));
        }
        let mut roots = Vec::new();
        for p in &a.cert_chain {
            let text = read_capped(p, 4 << 20)?;
            roots.extend(signing::pki::pem_certificates(&text).with_context(|| fsutil::shown(p))?);
        }
        Ok(Trust::Certificates(signing::CertificatePolicy {
            roots,
            identity: a.identity.clone(),
            at: signing::pki::now_secs(),
        }))
    }

    fn verify(&self, bundle: &[u8]) -> Result<signing::VerifiedStatement, signing::SigningError> {
        match self {
            Trust::Key(k) => signing::verify_bundle(bundle, k),
            Trust::Certificates(p) => signing::verify_bundle_with_certificate(bundle, p),
            Trust::Sigstore(p) => signing::sigstore::verify_oms_bundle(bundle, p),
        }
    }
}

/// The signer in words, for the summary line.
fn signer_text(s: &signing::Signer) -> String {
    match s {
        signing::Signer::Key { hint } => format!("key {hint}"),
        signing::Signer::Certificate {
            subject,
            fingerprint,
            sans,
            ..
        } => {
            let names = if sans.is_empty() {
                String::new()
            } else {
                format!(" [{}]", sans.join(", "))
            };
            format!(
                "certificate `{}`{} (sha256 {fingerprint})",
                fsutil::shown_str(subject),
                fsutil::shown_str(&names)
            )
        }
        signing::Signer::Sigstore {
            identity,
            issuer,
            log_index,
            integrated_time,
            ..
        } => format!(
            "sigstore identity {} (issuer {}), rekor log index {log_index}, logged {}",
            fsutil::shown_str(identity),
            fsutil::shown_str(issuer),
            signing::pki::rfc3339(*integrated_time)
        ),
    }
}

fn print_report(report: &ModelReport, display: &dyn Fn(&str) -> String) {
    for f in &report.files {
        let name = display(&f.name);
        match &f.status {
            FileStatus::Ok => println!("{name}: OK"),
            FileStatus::Missing => println!("{name}: FAILED (missing)"),
            FileStatus::Extra => println!("{name}: FAILED (extra file, not in the signature)"),
            FileStatus::Symlink => {
                println!("{name}: FAILED (symlink; the signature does not allow symlinks)")
            }
            FileStatus::Renamed { from } => {
                println!("{name}: FAILED (renamed from {})", fsutil::shown_str(from))
            }
            FileStatus::Changed => {
                println!("{name}: FAILED (changed)");
                if f.header_changed {
                    println!("  header: FAILED");
                }
                for t in &f.changed_tensors {
                    println!("  tensor `{}`: FAILED", fsutil::shown_str(t));
                }
                if f.other_bytes_changed {
                    println!("  bytes outside the header and tensors: FAILED");
                }
                if let Some((signed, now)) = f.size_changed {
                    println!("  size: FAILED ({now} bytes, signed {signed})");
                }
                for [s, e] in &f.changed_shards {
                    println!("  shard {s}..{e}: FAILED");
                }
            }
        }
    }
}

//! Certificate bundles (`sign --cert`, `verify --cert-chain`): a private CA made here with
//! rcgen, round trips, hostile certificates, and interop with model_signing 1.1.1's
//! `certificate` method both ways.

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;

use super::common::{hm, model_signing, run, GEN};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

fn text(o: &Output) -> String {
    format!(
        "code {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn expect(o: &Output, code: i32, needle: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    assert!(t.contains(needle), "`{needle}` not in:\n{t}");
    if code == 2 {
        assert!(
            String::from_utf8_lossy(&o.stderr).starts_with("hallmark: "),
            "{t}"
        );
    }
}

/// A CA: its certificate (PEM) and an issuer to sign with.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str, not_after_year: i32) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    p
}

fn root(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let p = ca_params(name, 2099);
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

fn intermediate(parent: &Ca, name: &str, is_ca: bool) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params(name, 2099);
    if !is_ca {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    let pem = p.signed_by(&key, &parent.issuer).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

/// How the signing certificate is made.
#[derive(Clone)]
struct LeafSpec {
    key_usages: Vec<KeyUsagePurpose>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    not_after: (i32, u8, u8),
    email: &'static str,
}

impl Default for LeafSpec {
    fn default() -> Self {
        Self {
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![ExtendedKeyUsagePurpose::CodeSigning],
            not_after: (2099, 1, 1),
            email: "release@example.com",
        }
    }
}

/// Signing certificate and private key (PKCS#8 PEM) issued by `ca`.
fn leaf(ca: &Ca, spec: &LeafSpec) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Model Release");
    p.subject_alt_names = vec![SanType::Rfc822Name(spec.email.try_into().unwrap())];
    p.key_usages = spec.key_usages.clone();
    p.extended_key_usages = spec.ekus.clone();
    p.not_before = rcgen::date_time_ymd(2021, 1, 1);
    let (y, m, d) = spec.not_after;
    p.not_after = rcgen::date_time_ymd(y, m, d);
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    }
    fn model(&self, name: &str, seed: u64) -> PathBuf {
        let out = self.path(name);
        let o = run(
            Path::new(GEN),
            &[&"sharded", &out, &"--seed", &seed.to_string()],
        );
        assert!(o.status.success(), "{}", text(&o));
        out
    }
}

fn sign_cert(model: &Path, key: &Path, cert: &Path, chain: &[&Path], extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"sign", &model, &"--key", &key, &"--cert", &cert];
    for c in chain {
        args.push(&"--cert-chain");
        args.push(c);
    }
    for e in extra {
        args.push(e);
    }
    hm(&args)
}

fn verify_cert(model: &Path, roots: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"verify", &model, &"--cert-chain", &roots];
    for e in extra {
        args.push(e);
    }
    hm(&args)
}

/// A root, an intermediate, and a signing certificate + key, written as files.
struct Pki {
    root: PathBuf,
    inter: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    inter_ca: Ca,
}

fn pki(fx: &Fx, spec: &LeafSpec) -> Pki {
    let r = root("hallmark test root");
    let i = intermediate(&r, "hallmark test intermediate", true);
    let (cert, key) = leaf(&i, spec);
    Pki {
        root: fx.write("root.pem", &r.pem),
        inter: fx.write("inter.pem", &i.pem),
        cert: fx.write("leaf.pem", &cert),
        key: fx.write("leaf.key", &key),
        inter_ca: i,
    }
}

#[test]
fn cert_bundle_round_trip_identity_and_refusals() {
    let fx = Fx::new();
    let p = pki(&fx, &LeafSpec::default());
    let m = fx.model("m", 21);
    let sig = m.join("model.sig");
    let o = sign_cert(&m, &p.key, &p.cert, &[&p.inter], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // The bundle carries the chain (signing certificate first) and no key hint.
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let vm = &b["verificationMaterial"];
    assert!(vm.get("publicKey").is_none(), "{vm}");
    let certs = vm["x509CertificateChain"]["certificates"]
        .as_array()
        .unwrap();
    assert_eq!(certs.len(), 2);
    let leaf_der = base64::engine::general_purpose::STANDARD
        .decode(certs[0]["rawBytes"].as_str().unwrap())
        .unwrap();
    let leaf_pem_der = x509_der(&std::fs::read(&p.cert).unwrap());
    assert_eq!(leaf_der, leaf_pem_der);

    let o = verify_cert(&m, &p.root, &[]);
    expect(
        &o,
        0,
        "certificate `CN=Model Release` [release@example.com]",
    );
    let o = verify_cert(
        &m,
        &p.root,
        &["--identity", "release@example.com", "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signer"]["kind"], "certificate");
    assert_eq!(v["signer"]["sans"][0], "release@example.com");
    let o = verify_cert(&m, &p.root, &["--identity", "someone@example.com"]);
    expect(&o, 1, "not `someone@example.com`");

    // A bare public key cannot check a certificate bundle: a refusal, not a silent pass.
    let pubkey = fx.path("leaf.pub");
    let spki = KeyPair::from_pem(&std::fs::read_to_string(&p.key).unwrap())
        .unwrap()
        .public_key_pem();
    std::fs::write(&pubkey, spki).unwrap();
    let o = hm(&[&"verify", &m, &"--pub", &pubkey]);
    expect(&o, 2, "carries a signing certificate");
    // --identity means nothing with --pub.
    let o = hm(&[&"verify", &m, &"--pub", &pubkey, &"--identity", &"x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The chain may also be given to verify instead of stored in the bundle.
    let o = sign_cert(&m, &p.key, &p.cert, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    expect(
        &verify_cert(&m, &p.root, &[]),
        1,
        "does not chain to a trusted root",
    );
    let both = fx.write(
        "both.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&p.root).unwrap(),
            std::fs::read_to_string(&p.inter).unwrap()
        ),
    );
    // An intermediate among the roots is a trust anchor of its own (as in OpenSSL's store).
    expect(&verify_cert(&m, &both, &[]), 0, "verified");

    // A changed file still fails as with a bare key.
    std::fs::write(m.join("config.json"), "{}").unwrap();
    expect(
        &verify_cert(&m, &both, &[]),
        1,
        "config.json: FAILED (changed)",
    );
}

/// DER of the first PEM certificate in `pem`.
fn x509_der(pem: &[u8]) -> Vec<u8> {
    let t = String::from_utf8_lossy(pem);
    let b64: String = t
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn cert_hostile_cases() {
    let fx = Fx::new();
    let good = pki(&fx, &LeafSpec::default());
    let m = fx.model("m", 22);
    let sig = m.join("model.sig");

    // Wrong root.
    let o = sign_cert(&m, &good.key, &good.cert, &[&good.inter], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let other = fx.write("other-root.pem", &root("another root").pem);
    expect(
        &verify_cert(&m, &other, &[]),
        1,
        "does not chain to a trusted root",
    );

    // A signing certificate that is not for the signing key: sign refuses, writes nothing.
    std::fs::remove_file(&sig).unwrap();
    let (_, stranger_key) = leaf(&good.inter_ca, &LeafSpec::default());
    let stranger_key = fx.write("stranger.key", &stranger_key);
    let o = sign_cert(&m, &stranger_key, &good.cert, &[&good.inter], &[]);
    expect(&o, 2, "not for this private key");
    assert!(!sig.exists());
    // ... and a bundle whose certificate was swapped for another one of the same CA fails.
    let o = sign_cert(&m, &good.key, &good.cert, &[&good.inter], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let (swap, _) = leaf(&good.inter_ca, &LeafSpec::default());
    let mut b: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    b["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] =
        base64::engine::general_purpose::STANDARD
            .encode(x509_der(swap.as_bytes()))
            .into();
    std::fs::write(&sig, serde_json::to_vec(&b).unwrap()).unwrap();
    expect(
        &verify_cert(&m, &good.root, &[]),
        1,
        "not made with the signing certificate's key",
    );
    // Garbage where a certificate should be.
    b["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] =
        "AAECAwQ=".into();
    std::fs::write(&sig, serde_json::to_vec(&b).unwrap()).unwrap();
    expect(
        &verify_cert(&m, &good.root, &[]),
        2,
        "malformed signing certificate",
    );
    b["verificationMaterial"]["x509CertificateChain"]["certificates"] = serde_json::json!([]);
    std::fs::write(&sig, serde_json::to_vec(&b).unwrap()).unwrap();
    expect(&verify_cert(&m, &good.root, &[]), 2, "holds no certificate");
    // A bare-key bundle under --cert-chain is refused too.
    let kp = fx.path("bare");
    assert!(hm(&[&"keygen", &"--out", &kp, &"--alg", &"p256"])
        .status
        .success());
    assert!(hm(&[&"sign", &m, &"--key", &fx.path("bare.key")])
        .status
        .success());
    expect(
        &verify_cert(&m, &good.root, &[]),
        2,
        "carries no certificate",
    );

    // Garbage PEM given as roots or as the signing certificate.
    let junk = fx.write(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let empty = fx.write("empty.pem", "just text\n");
    for bad in [&junk, &empty] {
        expect(&verify_cert(&m, bad, &[]), 2, "certificate");
        let o = sign_cert(
            &m,
            &good.key,
            bad,
            &[],
            &["--sig", fx.path("x.sig").to_str().unwrap()],
        );
        expect(&o, 2, "certificate");
        assert!(!fx.path("x.sig").exists());
    }

    // Certificates that are not fit to sign, each against its own good root.
    let cases: Vec<(&str, LeafSpec, &str)> = vec![
        (
            "expired",
            LeafSpec {
                not_after: (2022, 1, 1),
                ..LeafSpec::default()
            },
            "expired",
        ),
        (
            "no key usage, no eku",
            LeafSpec {
                key_usages: vec![],
                ekus: vec![],
                ..LeafSpec::default()
            },
            "neither digital signatures",
        ),
        (
            "wrong usages",
            LeafSpec {
                key_usages: vec![KeyUsagePurpose::KeyEncipherment],
                ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
                ..LeafSpec::default()
            },
            "neither digital signatures",
        ),
    ];
    for (name, spec, why) in cases {
        let sub = Fx::new();
        let p = pki(&sub, &spec);
        let o = sign_cert(&m, &p.key, &p.cert, &[&p.inter], &[]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let o = verify_cert(&m, &p.root, &[]);
        expect(&o, 1, why);
    }
    // Either usage alone suffices, as in model_signing: EKU code signing without key usage.
    let sub = Fx::new();
    let p = pki(
        &sub,
        &LeafSpec {
            key_usages: vec![],
            ..LeafSpec::default()
        },
    );
    assert!(sign_cert(&m, &p.key, &p.cert, &[&p.inter], &[])
        .status
        .success());
    expect(&verify_cert(&m, &p.root, &[]), 0, "verified");

    // An intermediate that is not a CA cannot issue.
    let r = root("r2");
    let not_ca = intermediate(&r, "not a ca", false);
    let (c, k) = leaf(&not_ca, &LeafSpec::default());
    let (rp, np, cp, kp) = (
        fx.write("r2.pem", &r.pem),
        fx.write("notca.pem", &not_ca.pem),
        fx.write("c2.pem", &c),
        fx.write("k2.key", &k),
    );
    assert!(sign_cert(&m, &kp, &cp, &[&np], &[]).status.success());
    let o = verify_cert(&m, &rp, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn interop_cert_bundles_with_model_signing_both_ways() {
    let ms = model_signing();
    let fx = Fx::new();
    let p = pki(&fx, &LeafSpec::default());
    let m = fx.model("m", 23);
    let sig = fx.path("m.sig");

    // hallmark signs (SHA-256: model_signing's CLI hashes nothing else), model_signing verifies.
    let o = sign_cert(
        &m,
        &p.key,
        &p.cert,
        &[&p.inter],
        &["--hash", "sha256", "--sig", sig.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ms_verify = |roots: &Path| {
        run(
            &ms,
            &[
                &"verify",
                &"certificate",
                &"--signature",
                &sig,
                &"--certificate_chain",
                &roots,
                &m,
            ],
        )
    };
    let o = ms_verify(&p.root);
    assert!(o.status.success(), "model_signing: {}", text(&o));
    // model_signing refuses it under another root, as hallmark does.
    let other = fx.write("other.pem", &root("other").pem);
    assert!(!ms_verify(&other).status.success());

    // model_signing signs, hallmark verifies.
    std::fs::remove_file(&sig).unwrap();
    let o = run(
        &ms,
        &[
            &"sign",
            &"certificate",
            &"--private_key",
            &p.key,
            &"--signing_certificate",
            &p.cert,
            &"--certificate_chain",
            &p.inter,
            &"--signature",
            &sig,
            &m,
        ],
    );
    assert!(o.status.success(), "model_signing sign: {}", text(&o));
    let o = verify_cert(
        &m,
        &p.root,
        &[
            "--sig",
            sig.to_str().unwrap(),
            "--identity",
            "release@example.com",
        ],
    );
    expect(&o, 0, "certificate `CN=Model Release`");
    expect(
        &verify_cert(&m, &other, &["--sig", sig.to_str().unwrap()]),
        1,
        "does not chain",
    );
    // A changed weight file in the model_signing-signed model is named.
    let w = m.join("model-00001-of-00002.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    expect(
        &verify_cert(&m, &p.root, &["--sig", sig.to_str().unwrap()]),
        1,
        "model-00001-of-00002.safetensors: FAILED (changed)",
    );
    assert!(!ms_verify(&p.root).status.success());
}

// ---- Sigstore bundles no one here wrote ----

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sigstore")
}

/// One conformance case's outcome: `valid`, `invalid` (exit 1), `unsupported` or `error`
/// (exit 2), with the message.
fn conformance_outcome(case: &Path) -> (String, String) {
    use hallmark::signing::sigstore::{
        verify_evidence, SigstorePolicy, SigstoreSigner, TrustedRoot,
    };
    use hallmark::signing::SigningError;
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let bundle = read(case.join("bundle.sigstore.json"));
    let artifact = if case.join("artifact").exists() {
        read(case.join("artifact"))
    } else {
        read(case.parent().unwrap().join("a.txt"))
    };
    let text_or = |name: &str, default: &str| {
        std::fs::read_to_string(case.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| default.to_string())
    };
    let identity = text_or(
        "identity",
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
    );
    let issuer = text_or("issuer", "https://token.actions.githubusercontent.com");
    let root = if case.join("trusted_root.json").exists() {
        TrustedRoot::from_json(&read(case.join("trusted_root.json")))
    } else {
        TrustedRoot::public_good()
    };
    // `key.pub`: a managed-key case, verified with the key instead of an identity (a key
    // that cannot be read is the case's outcome, as `verify --key` reports it).
    let signer = match std::fs::read_to_string(case.join("key.pub")) {
        Ok(pem) => SigstoreSigner::key_from_pem(&pem),
        Err(_) => Ok(SigstoreSigner::Identity { identity, issuer }),
    };
    let r = root.and_then(|root| {
        let signer = signer?;
        verify_evidence(&bundle, Some(&artifact), &SigstorePolicy { root, signer })
    });
    match r {
        Ok(_) => ("valid".into(), String::new()),
        Err(e) if e.is_invalid_signature() => ("invalid".into(), e.to_string()),
        Err(e @ SigningError::Unsupported(_)) => ("unsupported".into(), e.to_string()),
        Err(e) => ("error".into(), e.to_string()),
    }
}

/// Every vendored sigstore-conformance case (tests/vectors/sigstore/PROVENANCE) has the
/// outcome recorded in expected.tsv, no `_fail` case verifies, and the table in
/// docs/signing.md is this file.
#[test]
fn sigstore_conformance_cases_have_their_recorded_outcome() {
    let dir = vectors().join("conformance");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut actual = String::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (outcome, msg) = conformance_outcome(case);
        if name.ends_with("_fail") {
            assert_ne!(outcome, "valid", "{name} must fail");
        }
        actual.push_str(&format!(
            "{name}\t{outcome}\t{}\n",
            msg.replace(['\t', '\n'], " ")
        ));
    }
    let expected = std::fs::read_to_string(vectors().join("expected.tsv")).unwrap_or_default();
    if expected != actual {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sigstore-conformance.tsv");
        std::fs::write(&out, &actual).unwrap();
        panic!(
            "conformance outcomes differ from tests/vectors/sigstore/expected.tsv; actual in {}:\n{actual}",
            out.display()
        );
    }
}

/// Copy a vendored model directory into a temp dir (verify must not depend on the checkout).
fn copy_model(src: &Path, dst: &Path, skip: &[&str]) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(e.path(), dst.join(&name)).unwrap();
        }
    }
}

const MT_IDENTITY: &str = "stefanb@us.ibm.com";
const MT_ISSUER: &str = "https://sigstore.verify.ibm.com/oauth2";

/// Real OMS bundles that model_signing's maintainers signed with Sigstore public good
/// (tests/vectors/sigstore/PROVENANCE): they verify offline against the shipped trusted root,
/// and fail on a changed file, another identity or another issuer.
#[test]
fn sigstore_real_model_signing_bundles_verify_offline() {
    let fx = Fx::new();
    for v in ["v1.0.0", "v1.0.1", "v1.1.0"] {
        let src = vectors().join(format!("model-transparency/{v}-sigstore"));
        let m = fx.path(&format!("{v}-sigstore"));
        // v1.0.1 was signed with `--ignore-paths ignore-me` but does not record it; leave the
        // file out, as model_signing's own test passes the ignore on the command line.
        copy_model(&src, &m, if v == "v1.0.1" { &["ignore-me"] } else { &[] });
        let sigstore = |m: &Path, identity: &str, issuer: &str, extra: &[&str]| {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
                &"verify",
                &m,
                &"--sigstore",
                &"--identity",
                &identity,
                &"--issuer",
                &issuer,
            ];
            for e in extra {
                args.push(e);
            }
            hm(&args)
        };
        let o = sigstore(&m, MT_IDENTITY, MT_ISSUER, &[]);
        expect(&o, 0, "sigstore identity stefanb@us.ibm.com");
        let o = sigstore(&m, MT_IDENTITY, MT_ISSUER, &["--json"]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["signer"]["kind"], "sigstore", "{j}");
        assert!(j["signer"]["log_index"].as_u64().unwrap() > 0, "{j}");
        // The same bundle with the public-good root given explicitly.
        let root = fx.path("root.json");
        std::fs::write(&root, hallmark::signing::sigstore::PUBLIC_GOOD_TRUSTED_ROOT).unwrap();
        let r = root.to_str().unwrap();
        expect(
            &sigstore(&m, MT_IDENTITY, MT_ISSUER, &["--trusted-root", r]),
            0,
            "verified",
        );
        expect(
            &sigstore(&m, "someone@example.com", MT_ISSUER, &[]),
            1,
            "not `someone@example.com`",
        );
        expect(
            &sigstore(&m, MT_IDENTITY, "https://accounts.google.com", &[]),
            1,
            "OIDC issuer",
        );
        // Bare-key and private-CA verification refuse the Sigstore evidence instead of
        // ignoring it.
        let ca = vectors().join("model-transparency/ca-cert.pem");
        expect(&verify_cert(&m, &ca, &[]), 2, "transparency-log");
        std::fs::write(m.join("signme-1"), "changed\n").unwrap();
        expect(
            &sigstore(&m, MT_IDENTITY, MT_ISSUER, &[]),
            1,
            "signme-1: FAILED (changed)",
        );
    }
    // A trusted root without the public-good logs cannot vouch for them.
    let staging = vectors().join("conformance/intoto-with-custom-trust-root/trusted_root.json");
    let m = fx.path("v1.1.0");
    copy_model(
        &vectors().join("model-transparency/v1.1.0-sigstore"),
        &m,
        &[],
    );
    let o = hm(&[
        &"verify",
        &m,
        &"--sigstore",
        &"--identity",
        &MT_IDENTITY,
        &"--issuer",
        &MT_ISSUER,
        &"--trusted-root",
        &staging,
    ]);
    expect(&o, 1, "sigstore:");
    // A garbage trusted root is unusable input.
    let junk = fx.write("junk.json", "{\"mediaType\": 3}");
    let o = hm(&[
        &"verify",
        &m,
        &"--sigstore",
        &"--identity",
        &MT_IDENTITY,
        &"--issuer",
        &MT_ISSUER,
        &"--trusted-root",
        &junk,
    ]);
    expect(&o, 2, "trusted root");
}

/// model_signing's own private-CA test bundle: its signing certificate is itself a CA
/// (basicConstraints CA:TRUE), which OpenSSL-based model_signing accepts and hallmark
/// (rustls-webpki) refuses as a signing certificate.
#[test]
fn real_model_signing_certificate_bundle_is_refused_for_its_ca_leaf() {
    let fx = Fx::new();
    let m = fx.path("v1.1.0-certificate");
    copy_model(
        &vectors().join("model-transparency/v1.1.0-certificate"),
        &m,
        &[],
    );
    let ca = vectors().join("model-transparency/ca-cert.pem");
    expect(
        &verify_cert(&m, &ca, &[]),
        1,
        "the signing certificate is a CA certificate",
    );
}

/// Managed-key Sigstore bundles (conformance `managed-key-happy-path`): they verify with their
/// key and report it as the signer; another key, an identity policy, or a key policy on a
/// keyless bundle fail; the CLI takes the key as `--sigstore --key`.
#[test]
fn sigstore_managed_key_bundles_need_their_key() {
    use hallmark::signing::sigstore::{
        verify_evidence, SigstorePolicy, SigstoreSigner, TrustedRoot,
    };
    use hallmark::signing::Signer;
    let fx = Fx::new();
    let case = vectors().join("conformance/managed-key-happy-path");
    let bundle = std::fs::read(case.join("bundle.sigstore.json")).unwrap();
    let artifact = std::fs::read(vectors().join("conformance/a.txt")).unwrap();
    let pem = std::fs::read_to_string(case.join("key.pub")).unwrap();
    let policy = |signer| SigstorePolicy {
        root: TrustedRoot::public_good().unwrap(),
        signer,
    };
    let good = SigstoreSigner::key_from_pem(&pem).unwrap();
    let v = verify_evidence(&bundle, Some(&artifact), &policy(good.clone())).unwrap();
    let Signer::Key { hint } = &v.signer else {
        panic!("{:?}", v.signer)
    };
    assert_eq!(hint, &v.key_hint);
    assert_eq!(hint.len(), 64);
    // Another artifact: the message digest no longer matches.
    let e = verify_evidence(&bundle, Some(b"other\n"), &policy(good)).unwrap_err();
    assert!(e.is_invalid_signature(), "{e}");
    // Another, well-formed P-256 key.
    assert!(
        hm(&[&"keygen", &"--out", &fx.path("other"), &"--alg", &"p256"])
            .status
            .success()
    );
    let other_pub = fx.path("other.pub");
    let other =
        SigstoreSigner::key_from_pem(&std::fs::read_to_string(&other_pub).unwrap()).unwrap();
    let e = verify_evidence(&bundle, Some(&artifact), &policy(other.clone())).unwrap_err();
    assert!(e.is_invalid_signature(), "{e}");
    assert!(
        e.to_string().contains("does not verify with the given key"),
        "{e}"
    );
    // An identity policy cannot accept a managed-key bundle.
    let identity = SigstoreSigner::Identity {
        identity: "someone@example.com".into(),
        issuer: "https://accounts.google.com".into(),
    };
    let e = verify_evidence(&bundle, Some(&artifact), &policy(identity)).unwrap_err();
    assert!(
        e.is_invalid_signature() && e.to_string().contains("managed key"),
        "{e}"
    );
    // A key policy cannot accept a keyless (Rekor v2) bundle.
    let v2 = vectors().join("conformance/rekor2-happy-path");
    let root = TrustedRoot::from_json(&std::fs::read(v2.join("trusted_root.json")).unwrap());
    let e = verify_evidence(
        &std::fs::read(v2.join("bundle.sigstore.json")).unwrap(),
        Some(&artifact),
        &SigstorePolicy {
            root: root.unwrap(),
            signer: other,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a managed key"), "{e}");
    assert!(SigstoreSigner::key_from_pem(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    .is_err());

    // The CLI: a keyless OMS bundle under --key fails; --sigstore needs a signer.
    let m = fx.path("v1.1.0");
    copy_model(
        &vectors().join("model-transparency/v1.1.0-sigstore"),
        &m,
        &[],
    );
    expect(
        &hm(&[&"verify", &m, &"--sigstore", &"--key", &other_pub]),
        1,
        "not a managed key",
    );
    expect(
        &hm(&[
            &"verify",
            &m,
            &"--sigstore",
            &"--key",
            &fx.path("missing.pub"),
        ]),
        2,
        "missing.pub",
    );
    expect(
        &hm(&[&"verify", &m, &"--sigstore"]),
        2,
        "--sigstore needs --identity and --issuer, or --key",
    );
    let o = hm(&[
        &"verify",
        &m,
        &"--sigstore",
        &"--key",
        &other_pub,
        &"--identity",
        &MT_IDENTITY,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A Rekor v2 bundle: no integrated time, so the signer's time is the RFC 3161 timestamp's
/// (2025-06-12T12:02:20Z), and the checkpoint must come from the log named by the trusted root.
#[test]
fn sigstore_rekor_v2_time_is_the_timestamp() {
    use hallmark::signing::sigstore::{
        verify_evidence, SigstorePolicy, SigstoreSigner, TrustedRoot,
    };
    use hallmark::signing::Signer;
    let case = vectors().join("conformance/rekor2-happy-path");
    let bundle = std::fs::read(case.join("bundle.sigstore.json")).unwrap();
    let artifact = std::fs::read(vectors().join("conformance/a.txt")).unwrap();
    let root_json = std::fs::read_to_string(case.join("trusted_root.json")).unwrap();
    let policy = |root: &str| {
        SigstorePolicy {
        root: TrustedRoot::from_json(root.as_bytes()).unwrap(),
        signer: SigstoreSigner::Identity {
            identity: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
        },
    }
    };
    let v = verify_evidence(&bundle, Some(&artifact), &policy(&root_json)).unwrap();
    let Signer::Sigstore {
        integrated_time,
        log_index,
        ..
    } = v.signer
    else {
        panic!("{:?}", v.signer)
    };
    assert_eq!((integrated_time, log_index), (1_749_729_740, 735));
    // The same key under another log name: the checkpoint's origin is not that log's.
    let renamed = root_json.replace(
        "https://log2025-alpha1.rekor.sigstage.dev",
        "https://log2025-beta.rekor.example",
    );
    assert_ne!(renamed, root_json);
    let e = verify_evidence(&bundle, Some(&artifact), &policy(&renamed)).unwrap_err();
    assert!(e.to_string().contains("is not the log's name"), "{e}");
    // Another artifact fails at the message digest.
    let e = verify_evidence(&bundle, Some(b"x"), &policy(&root_json)).unwrap_err();
    assert!(e.is_invalid_signature(), "{e}");
}

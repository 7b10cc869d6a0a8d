//! keygen / sign / verify through the CLI: round trips, tamper cases, hostile input, interop
//! with model_signing 1.1.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use hallmark::weights::WeightFile;

use super::common::{assert_code, code, hm, run, stderr, stdout, Fixture};

fn sign(model: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"sign", &model, &"--key", &key];
    for e in extra {
        args.push(e);
    }
    hm(&args)
}

fn verify(model: &Path, public: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &model, &"--pub", &public];
    for e in extra {
        args.push(e);
    }
    hm(&args)
}

fn verify_json(model: &Path, public: &Path) -> (i32, serde_json::Value) {
    let o = verify(model, public, &["--json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    (code(&o), v)
}

fn sig_of(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join("model.sig")
    } else {
        PathBuf::from(format!("{}.sig", model.display()))
    }
}

/// Flip one bit at `offset` of `path`.
/// The in-toto statement a bundle signs.
fn statement_of(sig: &Path) -> serde_json::Value {
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

fn tensor_range(path: &Path, name: &str) -> std::ops::Range<u64> {
    let wf = WeightFile::open(path).unwrap();
    wf.parsed().tensor(name).unwrap().range.clone()
}

#[test]
fn keygen_writes_0600_key_and_never_overwrites() {
    let f = Fixture::new();
    for alg in ["ed25519", "p256"] {
        let (key, public) = f.keys(alg, alg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{alg}");
        }
        let before = std::fs::read(&key).unwrap();
        assert!(String::from_utf8_lossy(&before).starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        let out = f.path(alg);
        let o = hm(&[&"keygen", &"--out", &out, &"--alg", &alg]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
        assert_eq!(std::fs::read(&key).unwrap(), before);
        // The key text never reaches stdout or stderr.
        let secret_line = String::from_utf8_lossy(&before)
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        assert!(!stdout(&o).contains(&secret_line));
        // Readable by OpenSSL when it is installed.
        if let Ok(o) = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&key)
            .output()
        {
            assert!(o.status.success(), "openssl pkey: {}", stderr(&o));
            let o = Command::new("openssl")
                .args(["pkey", "-pubin", "-noout", "-in"])
                .arg(&public)
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl pkey -pubin: {}", stderr(&o));
        }
    }
    // A pre-existing .pub alone also blocks keygen, and no .key is created.
    std::fs::write(f.path("lonely.pub"), "x").unwrap();
    let out = f.path("lonely");
    assert_code(&hm(&[&"keygen", &"--out", &out]), 2);
    assert!(!f.path("lonely.key").exists());
}

#[test]
fn round_trips_single_sharded_gguf() {
    let f = Fixture::new();
    let (ek, ep) = f.keys("ed", "ed25519");
    let (pk, pp) = f.keys("p", "p256");
    for (kind, name) in [
        ("safetensors", "m.safetensors"),
        ("sharded", "sharded"),
        ("gguf", "m.gguf"),
    ] {
        let m = f.model(kind, name, 7);
        // Issue 13: P-256 keys default to SHA-256 (what model_signing's CLI re-hashes with);
        // Ed25519 keys keep BLAKE3.
        for (k, p, hash) in [(&ek, &ep, "blake3"), (&pk, &pp, "sha256")] {
            assert_code(&sign(&m, k, &[]), 0);
            let o = verify(&m, p, &[]);
            assert_code(&o, 0);
            assert!(stdout(&o).contains(": OK"), "{}", stdout(&o));
            let (c, v) = verify_json(&m, p);
            assert_eq!(c, 0);
            assert_eq!(v["valid"], true);
            assert_eq!(v["hash_type"], hash);
            assert_eq!(v["tensor_digests"], true);
        }
        // The bundle is OMS-shaped.
        let b: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sig_of(&m)).unwrap()).unwrap();
        assert_eq!(
            b["mediaType"],
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
        let payload = base64::engine::general_purpose::STANDARD
            .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(st["predicateType"], "https://model_signing/signature/v1.0");
        assert_eq!(st["predicate"]["serialization"]["hash_type"], "sha256");
        let files = st["subject"][0]["annotations"]["hallmark.tensors.v1"]["files"]
            .as_array()
            .unwrap();
        assert!(!files.is_empty());
        assert!(files[0]["tensors"].as_array().unwrap().len() > 5);
        if kind == "sharded" {
            let names: Vec<_> = st["predicate"]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect();
            assert!(names.contains(&"config.json".to_string()));
            assert!(names.contains(&"tokenizer.json".to_string()));
            assert!(!names.contains(&"model.sig".to_string()));
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
        } else {
            assert_eq!(st["predicate"]["resources"][0]["name"], ".");
        }
    }
}

#[test]
fn flipped_tensor_bit_names_the_tensor() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    for (kind, name) in [("safetensors", "m.safetensors"), ("gguf", "m.gguf")] {
        let m = f.model(kind, name, 3);
        assert_code(&sign(&m, &k, &[]), 0);
        let t = "model.layers.1.mlp.up_proj.weight";
        let r = tensor_range(&m, t);
        flip(&m, r.start + (r.end - r.start) / 2);
        let o = verify(&m, &p, &[]);
        assert_code(&o, 1);
        assert!(
            stdout(&o).contains(&format!("tensor `{t}`: FAILED")),
            "{}",
            stdout(&o)
        );
        let (c, v) = verify_json(&m, &p);
        assert_eq!(c, 1);
        assert_eq!(v["valid"], false);
        assert_eq!(v["files"][0]["status"], "changed");
        assert_eq!(v["files"][0]["changed_tensors"], serde_json::json!([t]));
        assert_eq!(v["files"][0]["header_changed"], false);
        // Partial verification: the changed tensor fails, an untouched one passes, without
        // reading the rest.
        let o = verify(&m, &p, &["--tensors", t, "model.norm.weight"]);
        assert_code(&o, 1);
        let out = stdout(&o);
        assert!(out.contains(&format!("tensor `{t}`: FAILED")), "{out}");
        assert!(out.contains("tensor `model.norm.weight`: OK"), "{out}");
        let o = verify(&m, &p, &["--tensors", "model.norm.weight"]);
        assert_code(&o, 0);
        let o = verify(&m, &p, &["--tensors", "no.such.tensor"]);
        assert_code(&o, 2);
        // The last byte of the tensor and the first byte of the next one are both covered.
        flip(&m, r.start + (r.end - r.start) / 2);
        flip(&m, r.end - 1);
        let (_, v) = verify_json(&m, &p);
        assert_eq!(v["files"][0]["changed_tensors"], serde_json::json!([t]));
        flip(&m, r.end - 1);
        assert_code(&verify(&m, &p, &[]), 0);
    }
}

#[test]
fn flipped_header_bit_is_reported_as_header() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    let m = f.model("safetensors", "m.safetensors", 4);
    assert_code(&sign(&m, &k, &[]), 0);
    // Byte 20 is inside the JSON header (after the 8-byte length).
    flip(&m, 20);
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("header: FAILED"), "{}", stdout(&o));
    let (_, v) = verify_json(&m, &p);
    assert_eq!(v["files"][0]["header_changed"], true);
    let o = verify(&m, &p, &["--tensors", "model.norm.weight"]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("header changed"), "{}", stdout(&o));
}

fn rewrite_bundle(sig: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut b: serde_json::Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    edit(&mut b);
    std::fs::write(sig, serde_json::to_vec(&b).unwrap()).unwrap();
}

#[test]
fn tampered_payload_signature_or_key_fail() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let (_, other) = f.keys("other", "p256");
    let (_, other_ed) = f.keys("other_ed", "ed25519");
    let m = f.model("safetensors", "m.safetensors", 5);
    let sig = sig_of(&m);
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_code(&sign(&m, &k, &[]), 0);
    let good = std::fs::read(&sig).unwrap();

    // Payload: one changed digest character, re-encoded.
    rewrite_bundle(&sig, |b| {
        let pl = b64
            .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let mut s = String::from_utf8(pl).unwrap();
        let i = s.find("\"digest\":\"").unwrap() + 10;
        let c = if &s[i..i + 1] == "0" { "1" } else { "0" };
        s.replace_range(i..i + 1, c);
        b["dsseEnvelope"]["payload"] = b64.encode(s).into();
    });
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));

    // Signature: one flipped bit.
    std::fs::write(&sig, &good).unwrap();
    rewrite_bundle(&sig, |b| {
        let mut s = b64
            .decode(b["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        let n = s.len();
        s[n - 3] ^= 1;
        b["dsseEnvelope"]["signatures"][0]["sig"] = b64.encode(s).into();
    });
    assert_code(&verify(&m, &p, &[]), 1);

    // Wrong key (hint mismatch), and wrong key with the hint removed (signature check).
    std::fs::write(&sig, &good).unwrap();
    let o = verify(&m, &other, &[]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("another key"), "{}", stdout(&o));
    assert_code(&verify(&m, &other_ed, &[]), 1);
    rewrite_bundle(&sig, |b| {
        b["verificationMaterial"]["publicKey"] = serde_json::json!({});
        b["dsseEnvelope"]["signatures"][0]["keyid"] = serde_json::Value::Null;
    });
    assert_code(&verify(&m, &p, &[]), 0);
    assert_code(&verify(&m, &other, &[]), 1);
    let (c, v) = verify_json(&m, &other);
    assert_eq!((c, &v["valid"]), (1, &serde_json::json!(false)));

    // Unusable input: garbage bundle, missing bundle, garbage public key.
    std::fs::write(&sig, b"{not json").unwrap();
    let o = verify(&m, &p, &[]);
    assert_code(&o, 2);
    assert!(stderr(&o).starts_with("hallmark: "), "{}", stderr(&o));
    std::fs::remove_file(&sig).unwrap();
    assert_code(&verify(&m, &p, &[]), 2);
    std::fs::write(&sig, &good).unwrap();
    let junk = f.path("junk.pub");
    std::fs::write(
        &junk,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    assert_code(&verify(&m, &junk, &[]), 2);
    assert_code(&verify(&m, &p, &[]), 0);
}

#[test]
fn renamed_missing_extra_files_are_named() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    let m = f.model("sharded", "sharded", 6);
    std::fs::create_dir_all(m.join(".git")).unwrap();
    std::fs::write(m.join(".git/HEAD"), "ref: x").unwrap();
    assert_code(&sign(&m, &k, &[]), 0);
    // .git is never hashed.
    std::fs::write(m.join(".git/HEAD"), "ref: y").unwrap();
    assert_code(&verify(&m, &p, &[]), 0);

    std::fs::rename(m.join("config.json"), m.join("config2.json")).unwrap();
    std::fs::remove_file(m.join("tokenizer_config.json")).unwrap();
    std::fs::write(m.join("extra.bin"), b"surprise").unwrap();
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("config2.json: FAILED (renamed from config.json)"),
        "{out}"
    );
    assert!(
        out.contains("tokenizer_config.json: FAILED (missing)"),
        "{out}"
    );
    assert!(out.contains("extra.bin: FAILED (extra"), "{out}");
    assert!(
        out.contains("model-00001-of-00002.safetensors: OK"),
        "{out}"
    );
    let (_, v) = verify_json(&m, &p);
    let statuses: Vec<(String, String)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().into(),
                x["status"].as_str().unwrap().into(),
            )
        })
        .filter(|(_, s): &(String, String)| s != "ok")
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("config2.json".to_string(), "renamed".to_string()),
            ("extra.bin".to_string(), "extra".to_string()),
            ("tokenizer_config.json".to_string(), "missing".to_string()),
        ]
    );
}

#[test]
fn ignore_option_leaves_paths_out() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    let m = f.model("sharded", "sharded", 8);
    std::fs::create_dir_all(m.join("notes")).unwrap();
    std::fs::write(m.join("notes/a.txt"), "1").unwrap();
    assert_code(&sign(&m, &k, &["--ignore", "notes"]), 0);
    std::fs::write(m.join("notes/a.txt"), "2").unwrap();
    std::fs::write(m.join("notes/b.txt"), "3").unwrap();
    assert_code(&verify(&m, &p, &[]), 0);
    // A custom signature path outside the model also works.
    let sig = f.path("elsewhere.sig");
    let sig_s = sig.to_str().unwrap();
    assert_code(&sign(&m, &k, &["--sig", sig_s]), 0);
    assert_code(&verify(&m, &p, &["--sig", sig_s]), 0);
}

#[cfg(unix)]
#[test]
fn symlinks_are_refused_unless_allowed() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    let m = f.model("sharded", "sharded", 9);
    let target = f.path("outside.txt");
    std::fs::write(&target, "outside").unwrap();
    std::os::unix::fs::symlink(&target, m.join("link.txt")).unwrap();
    let o = sign(&m, &k, &[]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    assert!(!sig_of(&m).exists());
    assert_code(&sign(&m, &k, &["--allow-symlinks"]), 0);
    assert_code(&verify(&m, &p, &[]), 0);
    // The link's target content is what was signed.
    std::fs::write(&target, "changed").unwrap();
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("link.txt: FAILED (changed)"),
        "{}",
        stdout(&o)
    );
    // Signed without symlinks: a symlink appearing later fails verification.
    std::fs::remove_file(m.join("link.txt")).unwrap();
    assert_code(&sign(&m, &k, &[]), 0);
    std::os::unix::fs::symlink(&target, m.join("link.txt")).unwrap();
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("link.txt: FAILED (symlink"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn malformed_weight_files_are_refused_and_nothing_is_written() {
    let f = Fixture::new();
    let (k, _) = f.keys("k", "ed25519");
    // Truncated shard.
    let m = f.model("sharded", "sharded", 10);
    let shard = m.join("model-00002-of-00002.safetensors");
    let b = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &b[..b.len() - 3]).unwrap();
    let o = sign(&m, &k, &[]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("malformed weight file"),
        "{}",
        stderr(&o)
    );
    assert!(!sig_of(&m).exists());
    // Trailing data, a header length past the end, garbage GGUF.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("trailing.safetensors", {
            let mut b = std::fs::read(f.model("safetensors", "x.safetensors", 1)).unwrap();
            b.extend_from_slice(b"junk");
            b
        }),
        ("hdr.safetensors", {
            let mut b = vec![0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0];
            b.extend_from_slice(b"{}");
            b
        }),
        (
            "bad.gguf",
            b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0".to_vec(),
        ),
        ("dup.safetensors", {
            let h = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend_from_slice(&[1, 2]);
            b
        }),
    ];
    for (name, bytes) in cases {
        let p = f.path(name);
        std::fs::write(&p, bytes).unwrap();
        let o = sign(&p, &k, &[]);
        assert_code(&o, 2);
        assert!(!sig_of(&p).exists(), "{name}");
    }
}

// ---- interop with model_signing 1.1.1 ----

/// The model_signing CLI and Python; a missing venv fails the test (interop is not optional).
fn model_signing() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/cache/venv/bin");
    let cli = root.join("model_signing");
    let py = root.join("python");
    assert!(
        cli.exists() && py.exists(),
        "model_signing interop: {} not found; run test-models/fetch.sh first",
        cli.display()
    );
    (cli, py)
}

#[test]
fn interop_hallmark_bundles_verify_with_model_signing() {
    let (cli, py) = model_signing();
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    for (kind, name) in [("sharded", "sharded"), ("safetensors", "m.safetensors")] {
        let m = f.model(kind, name, 11);
        let sig = sig_of(&m);
        // SHA-256 bundle: model_signing's CLI (which always hashes SHA-256).
        assert_code(&sign(&m, &k, &["--hash", "sha256"]), 0);
        let o = run(
            cli.to_str().unwrap(),
            &[
                &"verify",
                &"key",
                &"--public_key",
                &p,
                &"--signature",
                &sig,
                &m,
            ],
        );
        assert!(
            o.status.success(),
            "model_signing: {}{}",
            stdout(&o),
            stderr(&o)
        );
        // BLAKE3 bundle (the default for Ed25519 keys; asked for here): model_signing's Python
        // API, which takes the hash type from the bundle.
        assert_code(&sign(&m, &k, &["--hash", "blake3"]), 0);
        let script = "import sys, model_signing\nmodel_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1]).verify(sys.argv[2], sys.argv[3])\n";
        let o = run(py.to_str().unwrap(), &[&"-c", &script, &p, &m, &sig]);
        assert!(
            o.status.success(),
            "model_signing API: {}{}",
            stdout(&o),
            stderr(&o)
        );
        // And model_signing rejects a tampered model signed by hallmark.
        let w = if m.is_dir() {
            m.join("model-00001-of-00002.safetensors")
        } else {
            m.clone()
        };
        flip(&w, 200);
        let o = run(py.to_str().unwrap(), &[&"-c", &script, &p, &m, &sig]);
        assert!(
            !o.status.success(),
            "model_signing accepted a tampered model"
        );
    }
}

#[test]
fn interop_model_signing_bundles_verify_with_hallmark() {
    let (cli, py) = model_signing();
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let m = f.model("sharded", "sharded", 12);
    let sig = sig_of(&m);
    // CLI: SHA-256.
    let o = run(
        cli.to_str().unwrap(),
        &[
            &"sign",
            &"key",
            &"--private_key",
            &k,
            &"--signature",
            &sig,
            &m,
        ],
    );
    assert!(
        o.status.success(),
        "model_signing sign: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let (c, v) = verify_json(&m, &p);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["hash_type"], "sha256");
    assert_eq!(v["tensor_digests"], false);
    // API: BLAKE3 and BLAKE2b.
    std::fs::remove_file(&sig).unwrap();
    for alg in ["blake3", "blake2"] {
        let script = format!(
            "import sys, model_signing\nfrom model_signing import hashing\nmodel_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1]).set_hashing_config(hashing.Config().use_file_serialization(hashing_algorithm='{alg}')).sign(sys.argv[2], sys.argv[3])\n"
        );
        // The API does not leave its own output out, so write it outside the model.
        let api_sig = f.path(&format!("{alg}.sig"));
        let o = run(py.to_str().unwrap(), &[&"-c", &script, &k, &m, &api_sig]);
        assert!(
            o.status.success(),
            "model_signing API sign: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let o = verify(&m, &p, &["--json", "--sig", api_sig.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(code(&o), 0, "{alg}: {v}");
        assert_eq!(
            v["hash_type"],
            if alg == "blake3" { "blake3" } else { "blake2b" }
        );
    }
    // A changed file in a model_signing-signed model is named.
    std::fs::write(m.join("config.json"), "{}").unwrap();
    let o = verify(&m, &p, &["--sig", f.path("blake3.sig").to_str().unwrap()]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("config.json: FAILED (changed)"),
        "{}",
        stdout(&o)
    );
}

/// Both tools record a signer's ignore list in the bundle and honour it when verifying:
/// a hallmark bundle made with `--ignore notes` verifies with model_signing after `notes/`
/// changes (model_signing reads the recorded list), a model_signing bundle made with
/// `--ignore_paths notes` verifies with hallmark, which names the list and the ignored file;
/// a changed weight file fails both ways.
#[test]
fn interop_ignore_lists_agree() {
    let (cli, py) = model_signing();
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let verify_py = "import sys, model_signing\nmodel_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1]).verify(sys.argv[2], sys.argv[3])\n";
    let ms_verify = |m: &Path, sig: &Path| {
        run(py.to_str().unwrap(), &[&"-c", &verify_py, &p, &m, &sig])
            .status
            .success()
    };

    // hallmark signs, model_signing verifies.
    let m = f.model("sharded", "hm", 21);
    std::fs::create_dir_all(m.join("notes")).unwrap();
    std::fs::write(m.join("notes/a.txt"), "1").unwrap();
    let sig = sig_of(&m);
    assert_code(&sign(&m, &k, &["--ignore", "notes"]), 0);
    let st = statement_of(&sig);
    let ignores = st["predicate"]["serialization"]["ignore_paths"].to_string();
    assert!(ignores.contains("notes"), "{ignores}");
    std::fs::write(m.join("notes/a.txt"), "2").unwrap();
    std::fs::write(m.join("notes/b.txt"), "3").unwrap();
    assert!(
        ms_verify(&m, &sig),
        "model_signing refused hallmark's ignore list"
    );
    assert_code(&verify(&m, &p, &[]), 0);
    flip(&m.join("model-00002-of-00002.safetensors"), 300);
    assert!(
        !ms_verify(&m, &sig),
        "model_signing accepted a changed weight file"
    );
    assert_code(&verify(&m, &p, &[]), 1);

    // model_signing signs with an ignore list, hallmark verifies and says what it skipped.
    let m = f.model("sharded", "ms", 22);
    std::fs::create_dir_all(m.join("notes")).unwrap();
    std::fs::write(m.join("notes/a.txt"), "1").unwrap();
    let sig = f.path("ms.sig");
    let o = run(
        cli.to_str().unwrap(),
        &[
            &"sign",
            &"key",
            &"--private_key",
            &k,
            &"--signature",
            &sig,
            &"--ignore-paths",
            &m.join("notes"),
            &m,
        ],
    );
    assert!(
        o.status.success(),
        "model_signing sign: {}{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::write(m.join("notes/a.txt"), "2").unwrap();
    let o = verify(&m, &p, &["--json", "--sig", sig.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(code(&o), 0, "{v}");
    assert!(v["ignore_paths"].to_string().contains("notes"), "{v}");
    assert!(v["ignored_present"].to_string().contains("notes"), "{v}");
    flip(&m.join("model-00001-of-00002.safetensors"), 300);
    assert_code(&verify(&m, &p, &["--sig", sig.to_str().unwrap()]), 1);
    assert!(!ms_verify(&m, &sig));
}

// ---- test vectors for the per-tensor digest ----

/// Checked-in digests of `blake3-tree-v1` over a fixed byte pattern. Regenerate (only when the
/// scheme deliberately changes, with a new scheme name) with `HALLMARK_REGEN_VECTORS=1`.
#[test]
fn tensor_digest_vectors_do_not_drift() {
    use hallmark::signing::hash::{hash_file, tensor_digest, HashType};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/signing_tensor_digest.json");
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect() };
    let cases: Vec<(usize, Vec<(u64, u64)>)> = vec![
        (0, vec![(0, 0)]),
        (100, vec![(8, 100)]),
        (1024, vec![(0, 1024)]),
        (5000, vec![(136, 1500), (1500, 5000)]),
        (70_000, vec![(1, 2049), (2049, 2050), (2050, 69_999)]),
        (300_000, vec![(4096, 135_168), (135_168, 300_000)]),
    ];
    let mut out = Vec::new();
    for (n, ranges) in &cases {
        let data = pattern(*n);
        let spans: Vec<_> = ranges.iter().map(|&(a, b)| a..b).collect();
        let h = hash_file(&data, HashType::Blake3, &spans, &|_| {});
        let digests: Vec<String> = spans
            .iter()
            .zip(&h.tensors)
            .map(|(r, d)| {
                let standalone = tensor_digest(&data, r.clone());
                assert_eq!(Some(standalone), *d);
                hex::encode(standalone)
            })
            .collect();
        out.push(serde_json::json!({
            "len": n, "file_blake3": hex::encode(&h.file), "ranges": ranges, "tensor_digests": digests,
        }));
    }
    let got = serde_json::json!({
        "scheme": "blake3-tree-v1",
        "pattern": "byte i = (i * 31 + 7) mod 251",
        "cases": out,
    });
    if std::env::var_os("HALLMARK_REGEN_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(got, want, "tensor digest vectors drifted");
    // The file digest is plain BLAKE3 (b3sum).
    for c in want["cases"].as_array().unwrap() {
        let n = c["len"].as_u64().unwrap() as usize;
        assert_eq!(
            c["file_blake3"],
            blake3::hash(&pattern(n)).to_hex().as_str()
        );
    }
}

#[test]
fn real_models_round_trip_without_touching_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/real");
    let gguf = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let minilm = root.join("minilm");
    assert!(
        gguf.exists() && minilm.join("model.safetensors").exists(),
        "real models not found under {}; run test-models/fetch.sh first",
        root.display()
    );
    let f = Fixture::new();
    let (k, p) = f.keys("k", "ed25519");
    for (m, t) in [
        (&gguf, "token_embd.weight"),
        (&minilm, "embeddings.word_embeddings.weight"),
    ] {
        let sig = f.path("real.sig");
        let sig = sig.to_str().unwrap();
        assert_code(&sign(m, &k, &["--sig", sig]), 0);
        let (c, v) = {
            let o = verify(m, &p, &["--sig", sig, "--json"]);
            (
                code(&o),
                serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
            )
        };
        assert_eq!(c, 0, "{v}");
        assert_code(&verify(m, &p, &["--sig", sig, "--tensors", t]), 0);
    }
    // Nothing was written beside the real models.
    assert!(!PathBuf::from(format!("{}.sig", gguf.display())).exists());
    assert!(!minilm.join("model.sig").exists());
}

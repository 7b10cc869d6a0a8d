//! Issue 13: model_signing's `shards` method (sign, verify, tamper, interop both ways with
//! model_signing 1.1.1), defaults that model_signing's CLI can verify, and incremental
//! re-signing with `sign --reuse`.

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use hallmark::weights::WeightFile;

use super::common::{assert_code, hm, run, stderr, stdout, Fixture};

fn sign(model: &Path, key: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"sign", &model, &"--key", &key];
    args.extend_from_slice(extra);
    hm(&args)
}

fn verify(model: &Path, public: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"verify", &model, &"--pub", &public];
    args.extend_from_slice(extra);
    hm(&args)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

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

/// model_signing 1.1.1's CLI and Python; a missing venv fails the test (interop is not
/// optional).
fn model_signing() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/cache/venv/bin");
    let (cli, py) = (root.join("model_signing"), root.join("python"));
    assert!(
        cli.exists() && py.exists(),
        "model_signing interop: {} not found; run test-models/fetch.sh first",
        cli.display()
    );
    (cli, py)
}

/// model_signing's Python API: verify with the hashing configuration guessed from the bundle.
const MS_VERIFY_GUESS: &str = "import sys, model_signing\n\
model_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1])\
.verify(sys.argv[2], sys.argv[3])\n";

/// model_signing's Python API: verify with an explicit shards configuration (needed for its own
/// shard bundles, whose float `shard_size` its guess cannot use).
const MS_VERIFY_SHARDS: &str = "import sys, model_signing\n\
from model_signing import hashing\n\
model_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1])\
.set_hashing_config(hashing.Config().use_shard_serialization(hashing_algorithm='sha256', \
shard_size=int(sys.argv[4]))).verify(sys.argv[2], sys.argv[3])\n";

/// model_signing's Python API: sign with the shards method.
const MS_SIGN_SHARDS: &str = "import sys, model_signing\n\
from model_signing import hashing\n\
model_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1])\
.set_hashing_config(hashing.Config().use_shard_serialization(hashing_algorithm='sha256', \
shard_size=int(sys.argv[4]))).sign(sys.argv[2], sys.argv[3])\n";

#[track_caller]
fn py_ok(py: &Path, script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> bool {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-c", &script];
    all.extend_from_slice(args);
    run(py, &all).status.success()
}

const WEIGHTS: &str = "model-00001-of-00002.safetensors";

#[test]
fn shards_round_trip_and_a_changed_byte_names_file_and_shard_range() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let (ek, ep) = f.keys("e", "ed25519");
    let m = f.model("sharded", "sharded", 21);
    let sig = m.join("model.sig");
    assert_code(&sign(&m, &k, &[&"--shard-size", &"4096"]), 0);
    let st = statement_of(&sig);
    let ser = &st["predicate"]["serialization"];
    assert_eq!(ser["method"], "shards");
    assert_eq!(
        ser["shard_size"], 4096,
        "an integer, not model_signing's float"
    );
    assert_eq!(
        ser["hash_type"], "sha256",
        "P-256 + shards default to SHA-256"
    );
    let res = st["predicate"]["resources"].as_array().unwrap();
    let names: Vec<&str> = res.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&format!("{WEIGHTS}:0:4096").as_str()),
        "{names:?}"
    );
    assert!(res.iter().all(|r| r["algorithm"] == "sha256-sharded-4096"));
    let len = std::fs::metadata(m.join(WEIGHTS)).unwrap().len();
    let weight_shards = names.iter().filter(|n| n.starts_with(WEIGHTS)).count() as u64;
    assert_eq!(weight_shards, len.div_ceil(4096));
    // Per-tensor digests still ride along.
    assert!(
        st["subject"][0]["annotations"]["hallmark.tensors.v1"]["files"][0]["tensors"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );

    let o = verify(&m, &p, &[&"--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["method"], "shards");
    assert_eq!(v["shard_size"], 4096);

    // One changed byte inside a tensor: the file, the shard range and the tensor are named.
    let wf = WeightFile::open(&m.join(WEIGHTS)).unwrap();
    let t = wf.parsed().tensors[2].clone();
    drop(wf);
    let off = t.range.start + (t.range.end - t.range.start) / 2;
    flip(&m.join(WEIGHTS), off);
    let shard = off / 4096 * 4096;
    let shard_end = (shard + 4096).min(len);
    let o = verify(&m, &p, &[]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{WEIGHTS}: FAILED (changed)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("  shard {shard}..{shard_end}: FAILED")),
        "{out}"
    );
    assert!(
        out.contains(&format!("tensor `{}`: FAILED", t.name)),
        "{out}"
    );
    assert_eq!(
        out.matches("shard ").count(),
        1,
        "only one shard changed: {out}"
    );
    let v = json(&verify(&m, &p, &[&"--json"]));
    let file = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == WEIGHTS)
        .unwrap();
    assert_eq!(
        file["changed_shards"],
        serde_json::json!([[shard, shard_end]])
    );
    flip(&m.join(WEIGHTS), off);
    assert_code(&verify(&m, &p, &[]), 0);
    // Partial verification reads the per-tensor digests, whatever the method.
    assert_code(&verify(&m, &p, &[&"--tensors", &t.name.as_str()]), 0);

    // A byte appended: the size and the (now different) last shard are named.
    let mut b = std::fs::read(m.join("config.json")).unwrap();
    let clen = b.len() as u64;
    b.push(b' ');
    std::fs::write(m.join("config.json"), &b).unwrap();
    let out = stdout(&verify(&m, &p, &[]));
    assert!(
        out.contains(&format!("size: FAILED ({} bytes, signed {clen})", clen + 1)),
        "{out}"
    );
    b.pop();
    std::fs::write(m.join("config.json"), &b).unwrap();

    // A missing file, an extra file, a rename: as with the files method.
    std::fs::rename(m.join("config.json"), m.join("config2.json")).unwrap();
    let out = stdout(&verify(&m, &p, &[]));
    assert!(
        out.contains("config2.json: FAILED (renamed from config.json)"),
        "{out}"
    );
    std::fs::rename(m.join("config2.json"), m.join("config.json")).unwrap();

    // Ed25519 with shards works for hallmark too (SHA-256 by default with --shard-size).
    let s2 = f.path("ed.sig");
    assert_code(
        &sign(&m, &ek, &[&"--shard-size", &"100000", &"--sig", &s2]),
        0,
    );
    assert_eq!(
        statement_of(&s2)["predicate"]["serialization"]["hash_type"],
        "sha256"
    );
    assert_code(&verify(&m, &ep, &[&"--sig", &s2]), 0);

    // --shard-size 0 and BLAKE3 shards are refused, and nothing is written.
    let s3 = f.path("never.sig");
    assert_code(&sign(&m, &k, &[&"--shard-size", &"0", &"--sig", &s3]), 2);
    let o = sign(
        &m,
        &k,
        &[
            &"--shard-size",
            &"4096",
            &"--hash",
            &"blake3",
            &"--sig",
            &s3,
        ],
    );
    assert_code(&o, 2);
    assert!(stderr(&o).starts_with("hallmark: "), "{}", stderr(&o));
    assert!(!s3.exists());
}

#[test]
fn shard_bundles_from_hallmark_verify_with_model_signing() {
    let (cli, py) = model_signing();
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    for (kind, name) in [("sharded", "sharded"), ("safetensors", "m.safetensors")] {
        let m = f.model(kind, name, 22);
        if m.is_dir() {
            // No shard for an empty file, in either tool.
            std::fs::write(m.join("empty.txt"), b"").unwrap();
        }
        let sig = f.path(&format!("{name}.hallmark.sig"));
        assert_code(
            &sign(&m, &k, &[&"--shard-size", &"5000", &"--sig", &sig]),
            0,
        );
        // Both ways model_signing's API can be told to verify it.
        assert!(
            py_ok(&py, MS_VERIFY_GUESS, &[&p, &m, &sig]),
            "model_signing (guessed config) refused hallmark's {name} shard bundle"
        );
        assert!(
            py_ok(&py, MS_VERIFY_SHARDS, &[&p, &m, &sig, &"5000"]),
            "model_signing (shards config) refused hallmark's {name} shard bundle"
        );
        // model_signing's CLI cannot (it always re-hashes by whole files), which is what
        // `sign` warns about.
        let o = run(
            &cli,
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
            !o.status.success(),
            "model_signing CLI verified a shard bundle"
        );
        // A changed byte: model_signing refuses too.
        let w = if m.is_dir() {
            m.join(WEIGHTS)
        } else {
            m.clone()
        };
        flip(&w, 7000);
        assert!(!py_ok(&py, MS_VERIFY_GUESS, &[&p, &m, &sig]));
        assert_code(&verify(&m, &p, &[&"--sig", &sig]), 1);
    }
}

#[test]
fn shard_bundles_from_model_signing_verify_with_hallmark() {
    let (_, py) = model_signing();
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let m = f.model("sharded", "sharded", 23);
    // An empty file: the shards method has no shard for it.
    std::fs::write(m.join("empty.txt"), b"").unwrap();
    let sig = f.path("ms.sig");
    let o = run(&py, &[&"-c", &MS_SIGN_SHARDS, &k, &m, &sig, &"3000"]);
    assert!(o.status.success(), "model_signing sign: {}", stderr(&o));
    let st = statement_of(&sig);
    // model_signing 1.1.1 writes the shard size as a float; hallmark accepts it.
    assert!(st["predicate"]["serialization"]["shard_size"].is_f64());
    let o = verify(&m, &p, &[&"--sig", &sig, &"--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["method"], "shards");
    assert_eq!(v["shard_size"], 3000);
    assert_eq!(v["hash_type"], "sha256");
    assert_eq!(v["unsigned_empty"], serde_json::json!(["empty.txt"]));
    let o = verify(&m, &p, &[&"--sig", &sig]);
    assert!(
        stdout(&o).contains("empty.txt: empty, not verified"),
        "{}",
        stdout(&o)
    );
    // A changed byte is named by file and shard range; model_signing agrees it changed.
    flip(&m.join(WEIGHTS), 6500);
    let o = verify(&m, &p, &[&"--sig", &sig]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("  shard 6000..9000: FAILED"),
        "{}",
        stdout(&o)
    );
    assert!(!py_ok(&py, MS_VERIFY_SHARDS, &[&p, &m, &sig, &"3000"]));
    flip(&m.join(WEIGHTS), 6500);
    assert!(py_ok(&py, MS_VERIFY_SHARDS, &[&p, &m, &sig, &"3000"]));
    // A non-empty extra file is still an extra file.
    std::fs::write(m.join("extra.txt"), b"x").unwrap();
    let o = verify(&m, &p, &[&"--sig", &sig]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("extra.txt: FAILED (extra file"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_file(m.join("extra.txt")).unwrap();

    // A single-file model: shard names are `.:start:end`.
    let one = f.model("safetensors", "one.safetensors", 24);
    let sig1 = f.path("one.sig");
    let o = run(&py, &[&"-c", &MS_SIGN_SHARDS, &k, &one, &sig1, &"10000"]);
    assert!(o.status.success(), "model_signing sign: {}", stderr(&o));
    assert!(statement_of(&sig1)["predicate"]["resources"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with(".:0:"));
    assert_code(&verify(&one, &p, &[&"--sig", &sig1]), 0);
    flip(&one, 25_000);
    let o = verify(&one, &p, &[&"--sig", &sig1]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("shard 20000..30000: FAILED"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn defaults_interoperate_and_sign_warns_about_model_signing_cli() {
    let (cli, _) = model_signing();
    let f = Fixture::new();
    let (pk, pp) = f.keys("p", "p256");
    let (ek, _) = f.keys("e", "ed25519");
    let m = f.model("sharded", "sharded", 25);
    let sig = m.join("model.sig");
    // P-256 with no --hash: SHA-256, verified by model_signing's CLI, no warning.
    let o = sign(&m, &pk, &[]);
    assert_code(&o, 0);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert_eq!(
        statement_of(&sig)["predicate"]["serialization"]["hash_type"],
        "sha256"
    );
    let o = run(
        &cli,
        &[
            &"verify",
            &"key",
            &"--public_key",
            &pp,
            &"--signature",
            &sig,
            &m,
        ],
    );
    assert!(o.status.success(), "model_signing CLI: {}", stderr(&o));
    // Every bundle model_signing's CLI cannot verify gets a warning saying why.
    for (key, extra, why) in [
        (&pk, vec!["--hash", "blake3"], "not blake3"),
        (&pk, vec!["--shard-size", "4096"], "not `shards`"),
        (&ek, vec![], "not ed25519"),
    ] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = extra
            .iter()
            .map(|s| s as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let o = sign(&m, key, &args);
        assert_code(&o, 0);
        let err = stderr(&o);
        assert!(
            err.starts_with("hallmark: warning: model_signing's CLI") && err.contains(why),
            "{extra:?}: {err}"
        );
    }
    // Ed25519 keeps the BLAKE3 fast path.
    assert_eq!(
        statement_of(&sig)["predicate"]["serialization"]["hash_type"],
        "blake3"
    );
}

/// (reused files, hashed files) from `sign --reuse`'s summary line.
fn reuse_counts(o: &Output) -> (u64, u64) {
    let out = stdout(o);
    let line = out
        .lines()
        .find(|l| l.starts_with("reused "))
        .unwrap_or_else(|| panic!("no reuse line: {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| words[i].parse::<u64>().unwrap();
    let hashed = words.iter().position(|w| *w == "hashed").unwrap();
    (n(1), n(hashed + 1))
}

#[test]
fn reuse_rehashes_only_changed_files_and_matches_a_full_signature() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let m = f.model("sharded", "sharded", 26);
    let sig = m.join("model.sig");
    let state = m.join("model.sig.reuse");
    let files = std::fs::read_dir(&m).unwrap().count() as u64;
    assert_code(&sign(&m, &k, &[]), 0);
    assert!(!state.exists(), "plain sign keeps no state");

    // First --reuse: no state yet, so everything is hashed and the state is written.
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 0);
    assert!(stderr(&o).contains("no reuse state"), "{}", stderr(&o));
    assert_eq!(reuse_counts(&o), (0, files));
    assert!(state.exists());
    // The state file is in the signed ignore list, so every verifier skips it.
    let ig = statement_of(&sig)["predicate"]["serialization"]["ignore_paths"].clone();
    assert!(
        ig.as_array().unwrap().contains(&"model.sig.reuse".into()),
        "{ig}"
    );
    assert_code(&verify(&m, &p, &[]), 0);

    // Nothing changed: everything reused.
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 0);
    assert_eq!(reuse_counts(&o), (files, 0));
    assert_code(&verify(&m, &p, &[]), 0);

    // One file rewritten: only it is hashed, and the result equals a full signature.
    let w = m.join(WEIGHTS);
    let off = std::fs::metadata(&w).unwrap().len() - 10;
    flip(&w, off);
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 0);
    assert_eq!(reuse_counts(&o), (files - 1, 1));
    assert_code(&verify(&m, &p, &[]), 0);
    let full = f.path("full.sig");
    assert_code(&sign(&m, &k, &[&"--sig", &full]), 0);
    let (a, b) = (statement_of(&sig), statement_of(&full));
    assert_eq!(a["predicate"]["resources"], b["predicate"]["resources"]);
    assert_eq!(a["subject"][0]["digest"], b["subject"][0]["digest"]);
    assert_eq!(
        a["subject"][0]["annotations"],
        b["subject"][0]["annotations"]
    );

    // A change with size and mtime restored is still re-hashed (ctime moved).
    let c = m.join("config.json");
    let meta = std::fs::metadata(&c).unwrap();
    let mut bytes = std::fs::read(&c).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&c, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&c)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    assert_eq!(
        std::fs::metadata(&c).unwrap().modified().unwrap(),
        meta.modified().unwrap()
    );
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 0);
    assert_eq!(reuse_counts(&o), (files - 1, 1));
    assert_code(&verify(&m, &p, &[]), 0);

    // Shards: reuse works per file there too, and a method change re-hashes everything.
    let o = sign(&m, &k, &[&"--reuse", &sig, &"--shard-size", &"4096"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("every file is hashed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(reuse_counts(&o), (0, files));
    let o = sign(&m, &k, &[&"--reuse", &sig, &"--shard-size", &"4096"]);
    assert_eq!(reuse_counts(&o), (files, 0));
    assert_code(&verify(&m, &p, &[]), 0);
}

#[test]
fn reuse_refuses_forged_swapped_state_and_unverifiable_bundles() {
    let f = Fixture::new();
    let (k, _) = f.keys("k", "p256");
    let (other, _) = f.keys("other", "p256");
    let m = f.model("sharded", "sharded", 27);
    let m2 = f.model("sharded", "second", 28);
    let sig = m.join("model.sig");
    let state = m.join("model.sig.reuse");
    assert_code(&sign(&m, &k, &[&"--reuse", &f.path("none.sig")]), 2);
    assert!(
        !sig.exists(),
        "a missing old bundle is an error, and nothing is written"
    );
    assert_code(&sign(&m, &k, &[]), 0);
    assert_code(&sign(&m, &k, &[&"--reuse", &sig]), 0);
    assert_code(&sign(&m2, &k, &[]), 0);
    assert_code(&sign(&m2, &k, &[&"--reuse", &m2.join("model.sig")]), 0);
    let before = (std::fs::read(&sig).unwrap(), std::fs::read(&state).unwrap());
    let unchanged = |what: &str| {
        assert_eq!(
            (std::fs::read(&sig).unwrap(), std::fs::read(&state).unwrap()),
            before,
            "{what}: files were modified"
        );
    };

    // The old bundle must verify with the signing key's public half.
    let o = sign(&m, &other, &[&"--reuse", &sig]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
    unchanged("other key");

    // A forged state: a stat edited (so a changed file would be skipped).
    let mut env: serde_json::Value = serde_json::from_slice(&before.1).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload.replacen("\"size\":", "\"size\":1", 1);
    assert_ne!(forged, payload);
    env["payload"] = b64.encode(forged).into();
    std::fs::write(&state, serde_json::to_vec(&env).unwrap()).unwrap();
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("signature does not verify"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("model.sig.reuse"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&sig).unwrap(), before.0);

    // A swapped state: genuine, same key, but made for another bundle.
    std::fs::copy(m2.join("model.sig.reuse"), &state).unwrap();
    let o = sign(&m, &k, &[&"--reuse", &sig]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("another signature bundle"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&sig).unwrap(), before.0);
    std::fs::write(&state, &before.1).unwrap();

    // A tampered old bundle.
    let mut b: serde_json::Value = serde_json::from_slice(&before.0).unwrap();
    let st = String::from_utf8(
        b64.decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    b["dsseEnvelope"]["payload"] = b64
        .encode(st.replacen("config.json", "config.jsoN", 1))
        .into();
    let tampered = f.path("tampered.sig");
    std::fs::write(&tampered, serde_json::to_vec(&b).unwrap()).unwrap();
    let o = sign(
        &m,
        &k,
        &[&"--reuse", &tampered, &"--sig", &f.path("out.sig")],
    );
    assert_code(&o, 2);
    assert!(!f.path("out.sig").exists());
    unchanged("tampered bundle");
}

#[test]
fn tiny_shard_sizes_are_bounded_on_both_sides() {
    let f = Fixture::new();
    let (k, p) = f.keys("k", "p256");
    let m = f.path("m");
    std::fs::create_dir(&m).unwrap();
    // sign: more shards than a bundle may list is refused before hashing, nothing written.
    let big = std::fs::File::create(m.join("big.bin")).unwrap();
    big.set_len(3 << 20).unwrap();
    drop(big);
    let o = sign(&m, &k, &[&"--shard-size", &"1"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("over the limit"), "{}", stderr(&o));
    assert!(!m.join("model.sig").exists());
    // verify: a 100-byte file signed in 1-byte shards, then replaced by a 64 MiB one, is hashed
    // into the 100 signed shards only, and reported by size and changed shards.
    std::fs::write(m.join("big.bin"), [7u8; 100]).unwrap();
    assert_code(&sign(&m, &k, &[&"--shard-size", &"1"]), 0);
    assert_eq!(
        statement_of(&m.join("model.sig"))["predicate"]["resources"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let mut bytes = vec![7u8; 64 << 20];
    bytes[10] = 0;
    std::fs::write(m.join("big.bin"), &bytes).unwrap();
    let o = verify(&m, &p, &[&"--json"]);
    assert_code(&o, 1);
    let v = json(&o);
    assert_eq!(v["files"][0]["signed_size"], 100);
    assert_eq!(v["files"][0]["size"], 64 << 20);
    assert_eq!(
        v["files"][0]["changed_shards"],
        serde_json::json!([[10, 11]])
    );
    // A rename to a file of another size is an extra plus a missing file (not hashed).
    std::fs::rename(m.join("big.bin"), m.join("moved.bin")).unwrap();
    let out = stdout(&verify(&m, &p, &[]));
    assert!(out.contains("moved.bin: FAILED (extra file"), "{out}");
    assert!(out.contains("big.bin: FAILED (missing)"), "{out}");
    // The same bytes under a new name: a rename.
    std::fs::write(m.join("moved.bin"), [7u8; 100]).unwrap();
    let out = stdout(&verify(&m, &p, &[]));
    assert!(
        out.contains("moved.bin: FAILED (renamed from big.bin)"),
        "{out}"
    );
}

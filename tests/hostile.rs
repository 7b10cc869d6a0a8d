//! Hostile inputs to sign / verify: every case exits 1 or 2 (never a panic, never a hang) with
//! peak memory under 256 MiB. A hang fails the test after a generous deadline instead of
//! stalling the suite; no test asserts how fast anything is.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HALLMARK: &str = env!("CARGO_BIN_EXE_hallmark");
/// Only a hang gets near this; it is not a speed requirement.
const DEADLINE: Duration = Duration::from_secs(300);
const MAX_RSS_KIB: i64 = 256 * 1024;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
}

/// Run `sh -c script` (hallmark is `$H`) under GNU time, kill it past the deadline, and report
/// its exit code and peak RSS. The RSS comes from `/usr/bin/time -f %M`, not from this process's
/// own `wait4`: a child's `ru_maxrss` starts from the image it was forked from (this test binary),
/// while time's grandchild starts small.
fn run_sh(script: &str) -> Outcome {
    const TIME: &str = "/usr/bin/time";
    assert!(
        Path::new(TIME).exists(),
        "{TIME} (GNU time) is needed to measure peak memory: install the `time` package"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err, rss) = (
        dir.path().join("out"),
        dir.path().join("err"),
        dir.path().join("rss"),
    );
    let mut child = Command::new(TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg("sh")
        .arg("-c")
        .arg(script)
        .env("H", HALLMARK)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung: `{script}` still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rss_text = std::fs::read_to_string(&rss).unwrap_or_default();
    let max_rss_kib = rss_text
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS figure from {TIME}: {rss_text:?}"));
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        max_rss_kib,
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Exit 1 or 2, no panic (101) and bounded memory.
#[track_caller]
fn assert_refused(o: &Outcome, want: &[i32], what: &str) {
    assert!(
        want.contains(&o.code),
        "{what}: exit {} (want {want:?})\nstdout:\n{}\nstderr:\n{}",
        o.code,
        o.stdout,
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "{what}: panic\n{}",
        o.stderr
    );
    assert!(
        o.max_rss_kib <= MAX_RSS_KIB,
        "{what}: peak RSS {} KiB > {MAX_RSS_KIB} KiB",
        o.max_rss_kib
    );
    eprintln!("{what}: exit {}, peak RSS {} KiB", o.code, o.max_rss_kib);
}

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Self {
        let fx = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let o = run_sh(&format!("\"$H\" keygen --out {}", q(&fx.p("k"))));
        assert_eq!(o.code, 0, "{}", o.stderr);
        fx
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    /// A small model directory: two plain files and a valid safetensors file.
    fn model(&self, name: &str) -> PathBuf {
        let m = self.p(name);
        std::fs::create_dir_all(&m).expect("mkdir");
        std::fs::write(m.join("config.json"), b"{\"a\": 1}\n").expect("write");
        std::fs::write(m.join("README.md"), b"hello\n").expect("write");
        let t = hallmark::weights::write::OwnedTensor {
            name: "w".into(),
            dtype: hallmark::weights::DType::U8,
            shape: vec![64],
            bytes: (0..64).collect(),
        };
        let b = hallmark::weights::write::safetensors_bytes(&[t], &[]).expect("st");
        std::fs::write(m.join("model.safetensors"), b).expect("write");
        m
    }
    fn sign(&self, m: &Path) {
        let o = run_sh(&format!(
            "\"$H\" sign {} --key {}",
            q(m),
            q(&self.p("k.key"))
        ));
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    fn verify(&self, m: &Path, extra: &str) -> Outcome {
        run_sh(&format!(
            "\"$H\" verify {} --pub {} {extra}",
            q(m),
            q(&self.p("k.pub"))
        ))
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn fifo_in_place_of_a_file_never_hangs() {
    let fx = Fx::new();
    // sign: a FIFO among the model's files.
    let m = fx.model("m");
    mkfifo(&m.join("extra.bin"));
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {}",
        q(&m),
        q(&fx.p("k.key"))
    ));
    assert_refused(&o, &[2], "sign with a FIFO in the model");
    std::fs::remove_file(m.join("extra.bin")).expect("rm");
    fx.sign(&m);
    // verify and verify --tensors: the signed weight file swapped for a FIFO.
    std::fs::rename(m.join("model.safetensors"), fx.p("saved")).expect("mv");
    mkfifo(&m.join("model.safetensors"));
    let o = fx.verify(&m, "");
    assert_refused(&o, &[1, 2], "verify with a FIFO for a signed file");
    let o = fx.verify(&m, "--tensors w");
    assert_refused(&o, &[1, 2], "verify --tensors with a FIFO for the file");
    // A FIFO as the bundle, the public key, or the single-file model.
    mkfifo(&fx.p("fifo.sig"));
    let o = fx.verify(&m, &format!("--sig {}", q(&fx.p("fifo.sig"))));
    assert_refused(&o, &[2], "verify with a FIFO as the bundle");
    mkfifo(&fx.p("fifo.pub"));
    let o = run_sh(&format!(
        "\"$H\" verify {} --pub {}",
        q(&m),
        q(&fx.p("fifo.pub"))
    ));
    assert_refused(&o, &[2], "verify with a FIFO as the key");
    mkfifo(&fx.p("fifo.key"));
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {}",
        q(&fx.p("saved")),
        q(&fx.p("fifo.key"))
    ));
    assert_refused(&o, &[2], "sign with a FIFO as the key");
}

#[test]
fn tensors_refuses_a_symlinked_parent_unless_allowed() {
    let fx = Fx::new();
    let m = fx.model("m");
    std::fs::create_dir(m.join("sub")).expect("mkdir");
    std::fs::rename(m.join("model.safetensors"), m.join("sub/model.safetensors")).expect("mv");
    fx.sign(&m);
    assert_eq!(fx.verify(&m, "--tensors w").code, 0);
    // The attacker moves `sub` elsewhere and links it back.
    std::fs::rename(m.join("sub"), fx.p("elsewhere")).expect("mv");
    symlink(fx.p("elsewhere"), m.join("sub")).expect("symlink");
    let o = fx.verify(&m, "--tensors w");
    assert_refused(&o, &[1], "--tensors through a symlinked parent");
    assert!(
        o.stdout.contains("parent directory is a symlink"),
        "{}",
        o.stdout
    );
}

#[test]
fn padded_bundle_and_junk_signatures_are_refused_in_bounded_memory() {
    let fx = Fx::new();
    let m = fx.model("m");
    fx.sign(&m);
    let sig = m.join("model.sig");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig).expect("read")).expect("json");
    // 64 MiB of junk in an unsigned field.
    let mut padded = v.clone();
    padded["verificationMaterial"]["tlogEntries"] =
        serde_json::json!([{"junk": "A".repeat(64 << 20)}]);
    std::fs::write(
        fx.p("padded.sig"),
        serde_json::to_vec(&padded).expect("json"),
    )
    .expect("w");
    let o = fx.verify(&m, &format!("--sig {}", q(&fx.p("padded.sig"))));
    assert_refused(&o, &[2], "64 MiB padded bundle");
    assert!(o.stderr.contains("limit"), "{}", o.stderr);
    // 200,000 junk signatures ahead of the real one.
    let mut junk = v.clone();
    let real = v["dsseEnvelope"]["signatures"][0].clone();
    let mut sigs = vec![serde_json::json!({"sig": "AAAA", "keyid": ""}); 200_000];
    sigs.push(real);
    junk["dsseEnvelope"]["signatures"] = serde_json::Value::Array(sigs);
    std::fs::write(fx.p("junk.sig"), serde_json::to_vec(&junk).expect("json")).expect("w");
    let o = fx.verify(&m, &format!("--sig {}", q(&fx.p("junk.sig"))));
    assert_refused(&o, &[2], "200,000 junk signatures");
    assert!(o.stderr.contains("more than 16 signatures"), "{}", o.stderr);
}

/// A GGUF file (no tensors) whose metadata is one u8 array of `n` elements.
fn gguf_with_array(n: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // tensors
    v.extend_from_slice(&1u64.to_le_bytes()); // metadata keys
    v.extend_from_slice(&4u64.to_le_bytes());
    v.extend_from_slice(b"junk");
    v.extend_from_slice(&9u32.to_le_bytes()); // array
    v.extend_from_slice(&0u32.to_le_bytes()); // of u8
    v.extend_from_slice(&n.to_le_bytes());
    v.resize(v.len() + n as usize, 0);
    let pad = v.len().div_ceil(32) * 32;
    v.resize(pad, 0);
    v
}

#[test]
fn huge_metadata_in_weight_files_costs_no_memory() {
    let fx = Fx::new();
    // GGUF: one 2^27-element u8 array (128 MiB). The file is valid; signing it must not build
    // the array.
    let g = fx.p("g");
    std::fs::create_dir(&g).expect("mkdir");
    std::fs::write(g.join("model.gguf"), gguf_with_array(1 << 27)).expect("w");
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {}",
        q(&g),
        q(&fx.p("k.key"))
    ));
    assert!(o.code == 0, "sign of a valid GGUF failed: {}", o.stderr);
    assert!(
        o.max_rss_kib <= MAX_RSS_KIB,
        "GGUF sign RSS {} KiB",
        o.max_rss_kib
    );
    eprintln!("GGUF 2^27 array sign: peak RSS {} KiB", o.max_rss_kib);
    let o = fx.verify(&g, "");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.max_rss_kib <= MAX_RSS_KIB,
        "GGUF verify RSS {} KiB",
        o.max_rss_kib
    );
    // safetensors: a 100 MB `__metadata__` array.
    let s = fx.p("s");
    std::fs::create_dir(&s).expect("mkdir");
    let n = 99_999_000usize;
    let mut hdr = String::with_capacity(n + 64);
    hdr.push_str("{\"__metadata__\":{\"x\":[");
    while hdr.len() < n - 4 {
        hdr.push_str("0,");
    }
    hdr.push_str("0]}}");
    let mut b = (hdr.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hdr.as_bytes());
    std::fs::write(s.join("model.safetensors"), b).expect("w");
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {}",
        q(&s),
        q(&fx.p("k.key"))
    ));
    assert_refused(&o, &[2], "100 MB safetensors __metadata__ array");
    assert!(o.stderr.contains("not a string"), "{}", o.stderr);
}

#[test]
fn control_characters_in_names_are_escaped() {
    let fx = Fx::new();
    let m = fx.model("m");
    fx.sign(&m);
    // An unsigned file whose name tries to erase its FAILED line and forge an OK one.
    let evil = "x\u{1b}[2K\rconfig.json: OK\n.bin";
    std::fs::write(m.join(evil), b"z").expect("w");
    let o = fx.verify(&m, "");
    assert_refused(&o, &[1], "ANSI file name");
    assert!(
        !o.stdout.contains('\u{1b}') && !o.stderr.contains('\u{1b}'),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("x\\x1b[2K\\rconfig.json: OK\\n.bin: FAILED"),
        "{}",
        o.stdout
    );
}

/// A second signer's bundle is recorded in that signer's ignore list, so the second bundle
/// verifies; for the first bundle it is a file the signature does not cover, so it fails as
/// an extra file (as with model_signing) unless the verifier names it with `--ignore`
/// (issue 24: a file is never skipped because it looks like a bundle).
#[test]
fn a_second_signers_bundle_is_extra_for_the_first_unless_ignored() {
    let fx = Fx::new();
    let m = fx.model("m");
    fx.sign(&m);
    let o = run_sh(&format!("\"$H\" keygen --out {} --alg p256", q(&fx.p("p"))));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {} --sig {}",
        q(&m),
        q(&fx.p("p.key")),
        q(&m.join("model.p256.sig"))
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = fx.verify(&m, "");
    assert_refused(&o, &[1], "the second signer's bundle, not ignored");
    assert!(
        o.stdout.contains("model.p256.sig: FAILED (extra file"),
        "{}",
        o.stdout
    );
    assert_eq!(fx.verify(&m, "--ignore model.p256.sig").code, 0);
    let o = run_sh(&format!(
        "\"$H\" verify {} --pub {} --sig {}",
        q(&m),
        q(&fx.p("p.pub")),
        q(&m.join("model.p256.sig"))
    ));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    // A file named like a bundle that is not one: sign refuses it, verify fails on it.
    std::fs::write(m.join("notes.sig"), b"not a bundle").expect("w");
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {}",
        q(&m),
        q(&fx.p("k.key"))
    ));
    assert_refused(&o, &[2], "sign with a non-bundle *.sig");
    assert_refused(
        &fx.verify(&m, "--ignore model.p256.sig"),
        &[1],
        "verify with a non-bundle *.sig",
    );
}

#[test]
fn verify_names_subject_and_ignores_and_refuses_ignored_weights() {
    let fx = Fx::new();
    let m = fx.model("release-v1");
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {} --ignore model.safetensors",
        q(&m),
        q(&fx.p("k.key"))
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = fx.verify(&m, "");
    assert_refused(&o, &[1], "ignore list skips a weight file");
    assert!(
        o.stdout.contains("signed subject: release-v1"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("model.safetensors: ignored (not verified)"),
        "{}",
        o.stdout
    );
    assert_eq!(fx.verify(&m, "--allow-ignored-weights").code, 0);
    let o = fx.verify(&m, "--allow-ignored-weights --expect-name release-v2");
    assert_refused(&o, &[1], "--expect-name mismatch");
    assert_eq!(
        fx.verify(&m, "--allow-ignored-weights --expect-name release-v1")
            .code,
        0
    );
    let o = fx.verify(&m, "--allow-ignored-weights --json");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(v["subject"], "release-v1");
    assert_eq!(
        v["ignored_weights"],
        serde_json::json!(["model.safetensors"])
    );
    assert!(v["ignore_paths"]
        .as_array()
        .expect("array")
        .contains(&serde_json::json!("model.safetensors")));
}

#[test]
fn sign_warns_on_a_readable_key_and_holds_few_files_open() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let m = fx.p("many");
    std::fs::create_dir(&m).expect("mkdir");
    for i in 0..1100 {
        std::fs::write(m.join(format!("f{i:04}.txt")), format!("{i}")).expect("w");
    }
    std::fs::set_permissions(fx.p("k.key"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = run_sh(&format!(
        "ulimit -n 256 && exec \"$H\" sign {} --key {}",
        q(&m),
        q(&fx.p("k.key"))
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("readable by group or others"),
        "{}",
        o.stderr
    );
    let o = run_sh(&format!(
        "ulimit -n 256 && exec \"$H\" verify {} --pub {}",
        q(&m),
        q(&fx.p("k.pub"))
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// What a fuzz target does with one input: Ok when the parser accepts it.
fn fuzz_target_accepts(target: &str, name: &str, data: &[u8]) -> Result<(), String> {
    use hallmark::registry::{check_entry, EntryKind};
    use hallmark::signing::bundle::Bundle;
    use hallmark::signing::statement::Statement;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    match target {
        "safetensors_header" => hallmark::weights::safetensors::parse(data)
            .map(|_| ())
            .map_err(|x| e(&x)),
        "gguf" => hallmark::weights::gguf::parse(data)
            .map(|_| ())
            .map_err(|x| e(&x)),
        "bundle" => {
            let b = Bundle::parse(data).map_err(|x| e(&x))?;
            Statement::from_payload(&b.payload)
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        "registry_entry" => {
            let kind = EntryKind::from_path(Path::new(name))
                .unwrap_or_else(|| panic!("{name}: no entry kind for this extension"));
            check_entry(kind, Path::new(name), data, false)
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        "sigstore_bundle" => {
            use hallmark::signing::sigstore::{
                verify_oms_bundle, SigstorePolicy, SigstoreSigner, TrustedRoot,
            };
            let policy = SigstorePolicy {
                root: TrustedRoot::public_good().map_err(|x| e(&x))?,
                signer: SigstoreSigner::Identity {
                    identity: "stefanb@us.ibm.com".into(),
                    issuer: "https://sigstore.verify.ibm.com/oauth2".into(),
                },
            };
            verify_oms_bundle(data, &policy)
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        "trusted_root" => hallmark::signing::sigstore::TrustedRoot::from_json(data)
            .map(|_| ())
            .map_err(|x| e(&x)),
        "reuse_state" => {
            if hallmark::signing::reuse::is_state_file(data) {
                Ok(())
            } else {
                Err("not a reuse state envelope".into())
            }
        }
        "pem_chain" => {
            let text = String::from_utf8_lossy(data);
            match hallmark::signing::pki::pem_certificates(data) {
                Ok(_) => Ok(()),
                Err(c) => hallmark::signing::VerifyingKey::from_pem(&text)
                    .map(|_| ())
                    .map_err(|k| format!("{c}; {k}")),
            }
        }
        "parquet" => {
            // As the fuzz target: the bytes as a file, the `text` column read to the end.
            let dir = tempfile::tempdir().map_err(|x| e(&x))?;
            let path = dir.path().join(name);
            std::fs::write(&path, data).map_err(|x| e(&x))?;
            let mut col = hallmark::detect::parquet::TextColumn::open(&path, "text", 64)
                .map_err(|x| e(&x))?;
            while col.next_batch().map_err(|x| e(&x))?.is_some() {}
            Ok(())
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Every file of the fuzz regression corpus (fuzz/regressions, written by make.py) goes through
/// the function its fuzz target calls: `err-*` files are refused with an error, `ok-*` files
/// accepted, and none panics. Each target has hostile cases, so the test cannot pass empty.
#[test]
fn fuzz_regression_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for target in [
        "safetensors_header",
        "gguf",
        "bundle",
        "registry_entry",
        "sigstore_bundle",
        "trusted_root",
        "reuse_state",
        "pem_chain",
        "parquet",
    ] {
        let dir = root.join(target);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let errs = names.iter().filter(|n| n.starts_with("err-")).count();
        let oks = names.iter().filter(|n| n.starts_with("ok-")).count();
        assert!(
            errs >= 5 && oks >= 1,
            "{target}: {errs} err, {oks} ok files"
        );
        assert_eq!(
            errs + oks,
            names.len(),
            "{target}: a file named neither err- nor ok-"
        );
        for name in &names {
            let data = std::fs::read(dir.join(name)).unwrap();
            let got = std::panic::catch_unwind(|| fuzz_target_accepts(target, name, &data))
                .unwrap_or_else(|_| panic!("{target}/{name}: panicked"));
            match (name.starts_with("ok-"), got) {
                (true, Err(e)) => panic!("{target}/{name}: refused: {e}"),
                (false, Ok(())) => panic!("{target}/{name}: accepted"),
                (true, Ok(())) => {}
                (false, Err(e)) => println!("{target}/{name}: {e}"),
            }
        }
    }
}

//! Hostile inputs: every case exits with its documented code (2 for an unusable input, never a
//! panic, a signal or a hang) with peak memory under 256 MiB, and runs under an address-space
//! limit (RLIMIT_AS, [`ADDRESS_SPACE_KIB`]) so an allocation past it fails the case instead of
//! swapping. A hang fails the test after a generous deadline instead of stalling the suite; the
//! time each case took is printed (docs/limits.md), but no test asserts how fast anything is.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HALLMARK: &str = env!("CARGO_BIN_EXE_hallmark");
/// Only a hang gets near this; it is not a speed requirement (the issue's acceptance is 10 s a
/// case; a loaded CI machine must not flake).
const DEADLINE: Duration = Duration::from_secs(60);
const MAX_RSS_KIB: i64 = 256 * 1024;
/// The address-space limit (`ulimit -v`) every case runs under: 512 MiB.
const ADDRESS_SPACE_KIB: u64 = 512 * 1024;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
    /// The signal that ended hallmark, as GNU time reports it.
    signal: Option<String>,
    elapsed: Duration,
}

/// Run `sh -c script` (hallmark is `$H`) under GNU time, kill it past the deadline, and report
/// its exit code and peak RSS. The RSS comes from `/usr/bin/time -f %M`, not from this process's
/// own `wait4`: a child's `ru_maxrss` starts from the image it was forked from (this test binary),
/// while time's grandchild starts small.
fn run_sh(script: &str) -> Outcome {
    run_limited(script, Some(ADDRESS_SPACE_KIB))
}

/// [`run_sh`] with an explicit address-space limit (`None`: only for cases that map files
/// larger than the limit on purpose).
fn run_limited(script: &str, address_space_kib: Option<u64>) -> Outcome {
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
        .arg(match address_space_kib {
            Some(kib) => format!("ulimit -v {kib} && {{ {script}\n}}"),
            None => script.to_string(),
        })
        .env("H", HALLMARK)
        // glibc reserves 64 MiB of address space per malloc arena (one per thread): under an
        // address-space limit that is what runs out first, not memory in use.
        .env("MALLOC_ARENA_MAX", "2")
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
    let elapsed = start.elapsed();
    let rss_text = std::fs::read_to_string(&rss).unwrap_or_default();
    let signal = rss_text
        .lines()
        .find(|l| l.contains("terminated by signal"))
        .map(str::to_string);
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
        signal,
        elapsed,
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
    // sh reports a command killed by signal N as exit 128 + N.
    assert!(
        o.signal.is_none() && !(129..=192).contains(&o.code),
        "{what}: killed by a signal ({:?}, exit {})\n{}",
        o.signal,
        o.code,
        o.stderr
    );
    assert!(
        o.max_rss_kib <= MAX_RSS_KIB,
        "{what}: peak RSS {} KiB > {MAX_RSS_KIB} KiB",
        o.max_rss_kib
    );
    eprintln!(
        "{what}: exit {}, peak RSS {} KiB, {:.2} s",
        o.code,
        o.max_rss_kib,
        o.elapsed.as_secs_f64()
    );
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
        "jsonl_lines" => {
            let mut lines =
                hallmark::input::Lines::new(std::io::BufReader::with_capacity(7, data), 1024);
            let mut bad = Vec::new();
            while let Some((n, line)) = lines.next_line().map_err(|x| e(&x))? {
                if let Err(m) = line.and_then(|l| hallmark::input::jsonl_document(&l)) {
                    bad.push(format!("line {n}: {m}"));
                }
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        }
        "parquet_page_header" => hallmark::detect::parquet::parse_page_header(data)
            .map(|_| ())
            .map_err(|x| format!("{x:?}")),
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
        "jsonl_lines",
        "parquet_page_header",
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

// ---- issue 25: one input layer, every class under the limits ---------------------------------

/// The tokenizer text keys in these cases are bound to (checked in under test-models/real).
fn minilm_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/real/minilm/tokenizer.json")
}

/// A kgw key at `out`, bound to the MiniLM tokenizer with `pre_tokenizer` replaced when given.
fn text_key(fx: &Fx, out: &Path, pre_tokenizer: Option<serde_json::Value>) {
    let mut tok = minilm_tokenizer();
    if let Some(pre) = pre_tokenizer {
        let mut t: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&tok).expect("tokenizer.json")).unwrap();
        t["pre_tokenizer"] = pre;
        tok = fx.p("custom-tokenizer.json");
        std::fs::write(&tok, serde_json::to_vec(&t).unwrap()).unwrap();
    }
    let o = run_sh(&format!(
        "\"$H\" wm-key --scheme kgw --tokenizer {} --out {}",
        q(&tok),
        q(out)
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// A split regex whose backtracking is large but bounded per match (2^18 steps): it never
/// trips Oniguruma's own retry limit, and costs minutes on a few KB of `a`.
fn evil_pre_tokenizer() -> serde_json::Value {
    serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?:a|a){1,18}b|a"},
         "behavior": "Isolated", "invert": false},
        {"type": "BertPreTokenizer"}
    ]})
}

#[track_caller]
fn assert_names(o: &Outcome, what: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            o.stderr.contains(n) || o.stdout.contains(n),
            "{what}: output does not name `{n}`\nstdout:\n{}\nstderr:\n{}",
            o.stdout,
            o.stderr
        );
    }
}

/// FIFOs and devices given anywhere a file is read: refused at open, never read, never waited
/// on (each would block forever without O_NONBLOCK + fstat), with the path in the message.
#[test]
fn fifos_and_devices_are_refused_wherever_a_file_is_read() {
    let fx = Fx::new();
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    text_key(&fx, &reg.join("good.wmkey"), None);
    for n in [
        "suspect.txt",
        "docs.jsonl",
        "docs.parquet",
        "tok.json",
        "key.wmkey",
        "m.gguf",
    ] {
        mkfifo(&fx.p(n));
    }
    let r = q(&reg);
    let cases = [
        (
            "detect FIFO",
            format!("\"$H\" detect {} --registry {r}", q(&fx.p("suspect.txt"))),
            "suspect.txt",
        ),
        (
            "detect --jsonl FIFO",
            format!(
                "\"$H\" detect --jsonl {} --registry {r}",
                q(&fx.p("docs.jsonl"))
            ),
            "docs.jsonl",
        ),
        (
            "detect --parquet FIFO",
            format!(
                "\"$H\" detect --parquet {} --registry {r}",
                q(&fx.p("docs.parquet"))
            ),
            "docs.parquet",
        ),
        (
            "detect --jsonl /dev/zero",
            format!("\"$H\" detect --jsonl /dev/zero --registry {r}"),
            "/dev/zero",
        ),
        (
            "detect /dev/zero",
            format!("\"$H\" detect /dev/zero --registry {r}"),
            "/dev/zero",
        ),
        (
            "detect - < /dev/zero",
            format!("\"$H\" detect - --registry {r} < /dev/zero"),
            "stdin",
        ),
        (
            "wm-key --tokenizer FIFO",
            format!(
                "\"$H\" wm-key --scheme kgw --tokenizer {} --out {}",
                q(&fx.p("tok.json")),
                q(&fx.p("new.wmkey"))
            ),
            "tok.json",
        ),
        (
            "mark --wm-key FIFO",
            format!(
                "\"$H\" mark {} --wm-key {} --out {}",
                q(&fx.p("reg")),
                q(&fx.p("key.wmkey")),
                q(&fx.p("marked"))
            ),
            "key.wmkey",
        ),
        (
            "generate --wm-key FIFO",
            format!(
                "\"$H\" generate --model {} --wm-key {} --prompt hi",
                q(&fx.p("m.gguf")),
                q(&fx.p("key.wmkey"))
            ),
            "key.wmkey",
        ),
        (
            "generate --model FIFO",
            format!(
                "\"$H\" generate --model {} --no-watermark --prompt hi",
                q(&fx.p("m.gguf"))
            ),
            "m.gguf",
        ),
        (
            "register FIFO",
            format!("\"$H\" register {} --registry {r}", q(&fx.p("key.wmkey"))),
            "key.wmkey",
        ),
    ];
    for (what, script, name) in cases {
        let o = run_sh(&script);
        assert_refused(&o, &[2], what);
        assert_names(&o, what, &[name]);
    }
    assert!(!fx.p("new.wmkey").exists() && !fx.p("marked").exists());
}

/// A registry holding every kind of unusable entry: each is named with its reason, the usable
/// key is still tested, and the run exits 2 (never 1: "no match" is not known). Symlinks are
/// refused whatever they point to (docs/limits.md, the registry's symlink policy).
#[test]
fn registry_names_every_unusable_entry_and_tests_the_rest() {
    let fx = Fx::new();
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    text_key(&fx, &reg.join("good.wmkey"), None);
    text_key(&fx, &fx.p("outside.wmkey"), None);
    symlink(fx.p("outside.wmkey"), reg.join("linked.wmkey")).unwrap();
    symlink("/dev/zero", reg.join("device.wmkey")).unwrap();
    symlink(fx.p("."), reg.join("linked-dir")).unwrap();
    mkfifo(&reg.join("pipe.wmkey"));
    // 64 MiB of zeros (sparse): refused on its size before a byte is read.
    std::fs::File::create(reg.join("zeros.wmkey"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::write(
        reg.join("cut.wmkey"),
        b"{\"format\":\"hallmark-wmkey\",\"vers",
    )
    .unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/registry_entry");
    std::fs::copy(corpus.join("err-values-truncated.fp"), reg.join("trunc.fp")).unwrap();
    std::fs::copy(corpus.join("err-values-bad-base64.fp"), reg.join("b64.fp")).unwrap();
    let text = fx.p("t.txt");
    std::fs::write(
        &text,
        "a few words of text to test against every registered key\n",
    )
    .unwrap();
    let o = run_sh(&format!(
        "\"$H\" detect {} --registry {} --json",
        q(&text),
        q(&reg)
    ));
    assert_refused(&o, &[2], "text against a registry with unusable entries");
    assert_names(
        &o,
        "text detect",
        &[
            "linked.wmkey: not usable: a symlink",
            "device.wmkey: not usable: a symlink",
            "linked-dir: not usable: a symlink",
            "pipe.wmkey: not usable: a FIFO",
            "zeros.wmkey",
            "limit for a registry entry",
            "cut.wmkey",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("json");
    let good = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "good")
        .expect("the usable key is still tested");
    assert!(good["p_value"].is_number(), "{good}");
    // The damaged fingerprints are refused by `register` and named by a weights detect.
    let fp_in = fx.p("trunc.fp");
    std::fs::copy(corpus.join("err-values-truncated.fp"), &fp_in).unwrap();
    let o = run_sh(&format!(
        "\"$H\" register {} --registry {}",
        q(&fp_in),
        q(&fx.p("reg2"))
    ));
    assert_refused(&o, &[2], "register a fingerprint with truncated base64");
    assert_names(&o, "register", &["trunc.fp", "expected"]);
    let m = fx.model("m");
    let o = run_sh(&format!("\"$H\" detect {} --registry {}", q(&m), q(&reg)));
    assert_refused(
        &o,
        &[2],
        "weights against a registry with damaged fingerprints",
    );
    assert_names(&o, "weights detect", &["trunc.fp", "b64.fp"]);
}

/// A key whose split regex backtracks heavily but within Oniguruma's per-match limit: refused
/// by `register` (adversarial texts under the work budget) and, placed in a registry by hand,
/// an error for that key alone on every text, while the other key is still tested.
#[test]
fn untrusted_tokenizer_regex_runs_under_a_work_budget() {
    let fx = Fx::new();
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    text_key(&fx, &reg.join("good.wmkey"), None);
    text_key(&fx, &fx.p("evil.wmkey"), Some(evil_pre_tokenizer()));
    let o = run_sh(&format!(
        "\"$H\" register {} --registry {}",
        q(&fx.p("evil.wmkey")),
        q(&fx.p("r2"))
    ));
    assert_refused(&o, &[2], "register a backtracking tokenizer");
    assert_names(
        &o,
        "register",
        &["evil.wmkey", "adversarial text", "work budget"],
    );
    std::fs::copy(fx.p("evil.wmkey"), reg.join("evil.wmkey")).unwrap();
    let text = fx.p("a.txt");
    std::fs::write(&text, "a".repeat(8192)).unwrap();
    let o = run_sh(&format!(
        "\"$H\" detect {} --registry {} --json",
        q(&text),
        q(&reg)
    ));
    assert_refused(&o, &[2], "8 KB text against a backtracking key");
    assert_names(&o, "detect", &["evil", "work budget"]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("json");
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "good" && r["error"].is_null()));
}

/// `--jsonl` and stdin: one result per line in order, however bad a line is (not UTF-8, over
/// the line cap, text over the document cap, not an object); memory bounded by bytes.
#[test]
fn jsonl_and_stdin_are_bounded_and_one_bad_line_is_one_error() {
    let fx = Fx::new();
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    text_key(&fx, &reg.join("good.wmkey"), None);
    let mut f = Vec::new();
    f.extend_from_slice(b"{\"text\":\"first document\"}\n");
    f.extend_from_slice(b"\xff\xfe not utf-8\n");
    f.extend_from_slice(b"{\"text\":\"");
    f.extend(std::iter::repeat_n(b'x', 9 << 20));
    f.extend_from_slice(b"\"}\n");
    f.extend_from_slice(format!("{{\"text\":\"{}\"}}\n", "y ".repeat(600_000)).as_bytes());
    f.extend_from_slice(b"[1,2,3]\n");
    f.extend_from_slice(b"{\"text\":\"last document\"}\n");
    let jl = fx.p("docs.jsonl");
    std::fs::write(&jl, f).unwrap();
    let o = run_sh(&format!(
        "\"$H\" detect --jsonl {} --registry {} --json",
        q(&jl),
        q(&reg)
    ));
    assert_refused(&o, &[2], "jsonl with bad lines");
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let inputs: Vec<String> = lines
        .iter()
        .map(|l| l["input"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=6).map(|n| format!("{}:{n}", jl.display())).collect();
    assert_eq!(inputs, want);
    assert!(lines[1]["error"].as_str().unwrap().contains("not UTF-8"));
    assert!(lines[2]["error"]
        .as_str()
        .unwrap()
        .contains("limit for a line"));
    assert!(lines[3]["error"]
        .as_str()
        .unwrap()
        .contains("limit for a text document"));
    assert!(lines[5]["error"].is_null() && lines[5]["results"].is_array());
    let o = run_sh(&format!(
        "head -c 20000000 /dev/zero | tr '\\0' a | \"$H\" detect - --registry {}",
        q(&reg)
    ));
    assert_refused(&o, &[2], "20 MB of text on stdin");
    assert_names(&o, "stdin", &["stdin", "limit for a text document"]);
}

/// A Parquet column whose pages claim (or decompress to) far more than the file holds: a
/// zstd page of 64 MiB of text, and many rows repeating one dictionary value.
#[test]
fn parquet_bombs_are_refused_or_read_in_small_batches() {
    use std::sync::Arc;
    let fx = Fx::new();
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    text_key(&fx, &reg.join("good.wmkey"), None);
    // `keys` index `values`: written dictionary-encoded, read back as a plain string column.
    let write = |path: &Path, values: Vec<String>, keys: Vec<i32>, page: usize| {
        let col = arrow_array::DictionaryArray::<arrow_array::types::Int32Type>::try_new(
            arrow_array::Int32Array::from(keys),
            Arc::new(arrow_array::StringArray::from(values)),
        )
        .unwrap();
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "text",
            arrow_array::Array::data_type(&col).clone(),
            false,
        )]));
        let batch = arrow_array::RecordBatch::try_new(schema.clone(), vec![Arc::new(col)]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_data_page_size_limit(page)
            .set_dictionary_page_size_limit(page)
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let f = std::fs::File::create(path).unwrap();
        let opts = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(true);
        let mut w = parquet::arrow::ArrowWriter::try_new_with_options(f, schema, opts).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    };
    let bomb = fx.p("bomb.parquet");
    write(&bomb, vec!["a".repeat(64 << 20)], vec![0], 256 << 20);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let o = run_sh(&format!(
        "\"$H\" detect --parquet {} --registry {}",
        q(&bomb),
        q(&reg)
    ));
    assert_refused(&o, &[2], "zstd page of 64 MiB");
    assert_names(
        &o,
        "parquet bomb",
        &["bomb.parquet", "limit for a Parquet page"],
    );
    // 3,000 rows of one 1 MiB + 1 value, dictionary-encoded: 3 GB if a batch of 1,024 rows
    // were built at once; each row is over the document cap, so each is one error line.
    let dict = fx.p("dict.parquet");
    write(
        &dict,
        vec!["b".repeat((1 << 20) + 1)],
        vec![0; 3000],
        2 << 20,
    );
    let o = run_sh(&format!(
        "\"$H\" detect --parquet {} --registry {}",
        q(&dict),
        q(&reg)
    ));
    assert_refused(&o, &[2], "dictionary value repeated 3,000 times");
    assert_eq!(
        o.stdout
            .lines()
            .filter(|l| l.contains("limit for a text document"))
            .count(),
        3000
    );
}

/// A file truncated while `sign` hashes it: an error naming it (exit 2), never SIGBUS. The file
/// is cut to 1 MiB as soon as `sign` has mapped it (seen in /proc/PID/maps). No address-space
/// or RSS limit here: the 1 GiB file is mapped on purpose, and its pages count toward RSS.
#[test]
fn truncation_while_hashing_is_an_error_not_a_signal() {
    let fx = Fx::new();
    let m = fx.p("m");
    std::fs::create_dir(&m).unwrap();
    let f = m.join("data.bin");
    std::fs::File::create(&f).unwrap().set_len(1 << 30).unwrap();
    let script = format!(
        "\"$H\" sign {m} --key {k} & pid=$!; \
         while kill -0 $pid 2>/dev/null && ! grep -q data.bin /proc/$pid/maps 2>/dev/null; \
         do sleep 0.005; done; truncate -s 1M {f}; wait $pid",
        m = q(&m),
        k = q(&fx.p("k.key")),
        f = q(&f)
    );
    let o = run_limited(&script, None);
    assert!(
        o.code == 2 && o.signal.is_none(),
        "file truncated while hashed: exit {} ({:?})\n{}",
        o.code,
        o.signal,
        o.stderr
    );
    assert_names(
        &o,
        "truncated",
        &["data.bin", "changed while it was being read"],
    );
    assert!(!m.join("model.sig").exists());
    eprintln!(
        "file truncated while hashed: exit 2, peak RSS {} KiB, {:.2} s",
        o.max_rss_kib,
        o.elapsed.as_secs_f64()
    );
}

/// `sign --shard-size 1` on 1 MB: the bundle-size limit is checked before any byte is hashed;
/// `detect` on a directory of 400 weight files under `ulimit -n 64` holds no descriptor each.
#[test]
fn shard_bundle_limit_first_and_no_descriptor_per_weight_file() {
    let fx = Fx::new();
    let m = fx.p("m");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("data.bin"), vec![7u8; 1 << 20]).unwrap();
    let o = run_sh(&format!(
        "\"$H\" sign {} --key {} --shard-size 1",
        q(&m),
        q(&fx.p("k.key"))
    ));
    assert_refused(&o, &[2], "sign --shard-size 1 on 1 MB");
    assert_names(&o, "shard", &["limit"]);
    assert!(!m.join("model.sig").exists());
    let many = fx.p("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..400 {
        let t = hallmark::weights::write::OwnedTensor {
            name: format!("w{i}"),
            dtype: hallmark::weights::DType::U8,
            shape: vec![32 << 10],
            bytes: vec![(i % 251) as u8; 32 << 10],
        };
        let b = hallmark::weights::write::safetensors_bytes(&[t], &[]).expect("st");
        std::fs::write(many.join(format!("model-{i:05}-of-00400.safetensors")), b).unwrap();
    }
    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    std::fs::copy(fx.p("k.pub"), reg.join("signer.pub")).unwrap();
    let o = run_sh(&format!(
        "ulimit -n 64 && exec \"$H\" detect {} --registry {}",
        q(&many),
        q(&reg)
    ));
    assert!(
        !o.stderr.contains("Too many open files"),
        "EMFILE: {}",
        o.stderr
    );
    assert_refused(&o, &[1, 2, 3], "400 weight files under ulimit -n 64");
}

/// Parsers that used to build what the input claims: a Sigstore bundle of 11 million empty
/// `tlogEntries` (3.1 GB before), a GGUF holding one 300 MiB metadata string (sparse file), and
/// a safetensors `__metadata__` of 5 million tiny entries (55 MB). Each is refused or skipped in
/// bounded memory under the address-space limit.
#[test]
fn counted_collections_and_strings_are_checked_before_building() {
    let fx = Fx::new();
    let m = fx.model("m");
    let mut b = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"tlogEntries":["#.to_vec();
    let n = 11_000_000;
    for i in 0..n {
        b.extend_from_slice(if i + 1 < n { b"{}," } else { b"{}" });
    }
    b.extend_from_slice(br#"]},"dsseEnvelope":{"payload":"","payloadType":"x","signatures":[]}}"#);
    let sig = fx.p("tlog.sigstore.json");
    std::fs::write(&sig, &b).unwrap();
    let o = run_sh(&format!(
        "\"$H\" verify {} --sig {} --sigstore --identity a@b.c --issuer https://x",
        q(&m),
        q(&sig)
    ));
    assert_refused(&o, &[2], "Sigstore bundle of 11 million empty tlogEntries");
    assert_names(&o, "tlog", &["limit exceeded"]);

    let reg = fx.p("reg");
    std::fs::create_dir(&reg).unwrap();
    std::fs::copy(fx.p("k.pub"), reg.join("signer.pub")).unwrap();
    let g = fx.p("s.gguf");
    let len: u64 = 300 << 20;
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // tensors
    v.extend_from_slice(&1u64.to_le_bytes()); // metadata keys
    v.extend_from_slice(&4u64.to_le_bytes());
    v.extend_from_slice(b"junk");
    v.extend_from_slice(&8u32.to_le_bytes()); // string
    v.extend_from_slice(&len.to_le_bytes());
    std::fs::write(&g, &v).unwrap();
    let total = (v.len() as u64 + len).div_ceil(32) * 32;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&g)
        .unwrap()
        .set_len(total)
        .unwrap();
    let o = run_sh(&format!("\"$H\" detect {} --registry {}", q(&g), q(&reg)));
    assert_refused(&o, &[1, 2, 3], "GGUF with a 300 MiB metadata string");

    let mut h = br#"{"__metadata__":{"#.to_vec();
    let n = 5_000_000u32;
    for i in 0..n {
        h.extend_from_slice(format!("\"{i:x}\":\"\"").as_bytes());
        if i + 1 < n {
            h.push(b',');
        }
    }
    h.extend_from_slice(b"}}");
    let mut st = (h.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(&h);
    let s = fx.p("meta.safetensors");
    std::fs::write(&s, &st).unwrap();
    let o = run_sh(&format!("\"$H\" detect {} --registry {}", q(&s), q(&reg)));
    assert_refused(&o, &[2], "safetensors __metadata__ of 5 million entries");
    assert_names(&o, "metadata", &["meta.safetensors", "limit exceeded"]);
}

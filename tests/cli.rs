//! The command line as a script meets it: detect's exit codes (0 match, 1 no match, 2 error,
//! 3 undecided), JSON error objects, a registry that fails safe (hostile entries are reported by
//! name and the valid ones still tested), idempotent and race-safe `register`, signer keys used
//! by `detect`, `mark --key`, and interrupts that leave no temporary file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hallmark::weights::DType;
use hallmark_testkit::zoo::{export, Arch, Config, Export, ZModel};

const SMOLLM: &str = "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MINILM_TOKENIZER: &str = "test-models/real/minilm/tokenizer.json";

fn hallmark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(args)
        .output()
        .expect("run hallmark")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(args: &[&str]) -> Output {
    let o = hallmark(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn real(p: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    assert!(
        p.exists(),
        "{} is missing: run test-models/fetch.sh",
        p.display()
    );
    p
}

/// A llama-like model large enough for an intact weight mark to decide.
fn model_dir(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let cfg = Config {
        arch: Arch::Llama,
        vocab: 4096,
        hidden: 384,
        layers: 4,
        heads: 6,
        intermediate: 1536,
        tied: true,
    };
    let m = ZModel::generate(cfg, seed);
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("model.safetensors"),
        export(&m, Export::Safetensors(DType::F32)).expect("export"),
    )
    .unwrap();
    std::fs::write(d.join("config.json"), b"{}").unwrap();
    d
}

fn temps_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hallmark-tmp-"))
        .collect()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

struct Marked {
    _dir: tempfile::TempDir,
    root: PathBuf,
    reg: PathBuf,
    original: PathBuf,
    marked: PathBuf,
}

/// A registry with one weight-mark key, an original model and its marked copy.
fn marked() -> Marked {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let reg = root.join("reg");
    let key = root.join("release.wmkey");
    ok(&["wm-key", "--scheme", "weights", "--out", s(&key)]);
    ok(&["register", s(&key), "--registry", s(&reg)]);
    let original = model_dir(&root, "original", 3);
    let marked = root.join("marked");
    ok(&[
        "mark",
        s(&original),
        "--wm-key",
        s(&key),
        "--out",
        s(&marked),
    ]);
    Marked {
        _dir: dir,
        root,
        reg,
        original,
        marked,
    }
}

/// 0 match, 1 no match, 2 error (nothing registered; a path that does not exist), 3 undecided;
/// `p_value` is null whenever the answer is not decided.
#[test]
fn detect_exit_codes() {
    let m = marked();
    let o = hallmark(&["detect", s(&m.marked), "--registry", s(&m.reg), "--json"]);
    let v = json(&o);
    assert_eq!((code(&o), v["status"].as_str()), (0, Some("match")), "{v}");
    assert!(v["log10_p"].as_f64().unwrap() < -6.0, "{v}");
    let o = hallmark(&["detect", s(&m.original), "--registry", s(&m.reg), "--json"]);
    let v = json(&o);
    assert_eq!(
        (code(&o), v["status"].as_str()),
        (1, Some("no_match")),
        "{v}"
    );
    assert!(v["p_value"].as_f64().is_some(), "{v}");

    // Text against a registry with no text key: nothing of the suspect's kind -> 2.
    let text = m.root.join("t.txt");
    std::fs::write(&text, "Some words that nobody watermarked.").unwrap();
    let o = hallmark(&["detect", s(&text), "--registry", s(&m.reg), "--json"]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(json(&o)["status"], "error");

    // A text key and a text too short to decide -> 3, p_value null.
    let tk = m.root.join("chat.wmkey");
    ok(&[
        "wm-key",
        "--scheme",
        "kgw",
        "--tokenizer",
        s(&real(SMOLLM)),
        "--out",
        s(&tk),
    ]);
    ok(&["register", s(&tk), "--registry", s(&m.reg)]);
    let o = hallmark(&["detect", s(&text), "--registry", s(&m.reg), "--json"]);
    let v = json(&o);
    assert_eq!(
        (code(&o), v["status"].as_str()),
        (3, Some("undecided")),
        "{v}"
    );
    assert!(v["p_value"].is_null() && v["decided"] == false, "{v}");
    let o = hallmark(&["detect", s(&text), "--registry", s(&m.reg)]);
    assert_eq!(code(&o), 3);
    assert!(String::from_utf8_lossy(&o.stdout).contains("TOO SHORT TO DECIDE"));

    // Errors: a missing suspect, an empty registry.
    let o = hallmark(&[
        "detect",
        "/nonexistent/x",
        "--registry",
        s(&m.reg),
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(code(&o), 2);
    assert_eq!(v["path"], "/nonexistent/x");
    assert!(v["error"].as_str().unwrap().contains("nonexistent"), "{v}");
    let empty = m.root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = hallmark(&["detect", s(&m.marked), "--registry", s(&empty)]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was tested"));

    // A 0-byte .gguf is a weights error (not text), in detect and in fingerprint alike.
    let zero = m.root.join("empty.gguf");
    std::fs::write(&zero, b"").unwrap();
    let o = hallmark(&["detect", s(&zero), "--registry", s(&m.reg), "--json"]);
    assert_eq!(code(&o), 2);
    let e = json(&o)["error"].as_str().unwrap().to_string();
    let o = hallmark(&[
        "fingerprint",
        s(&zero),
        "--out",
        s(&m.root.join("z.fp")),
        "--json",
    ]);
    assert_eq!(code(&o), 2);
    let e2 = json(&o)["error"].as_str().unwrap().to_string();
    assert!(!e.contains("UTF-8") && !e.contains("text"), "{e}");
    assert!(
        e.contains("empty.gguf") && e2.contains("empty.gguf"),
        "{e} / {e2}"
    );
}

/// Every subcommand takes --json and answers an error with a JSON object on stdout.
#[test]
fn json_errors_on_every_subcommand() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing");
    let m = s(&missing);
    let out = d.path().join("out");
    let o = s(&out);
    let cases: Vec<Vec<&str>> = vec![
        vec!["keygen", "--out", "/nonexistent-dir/k"],
        vec!["verify", m, "--pub", m],
        vec!["wm-key", "--scheme", "kgw", "--tokenizer", m, "--out", o],
        vec!["fingerprint", m, "--out", o],
        vec!["register", m],
        vec!["mark", m, "--wm-key", m, "--out", o],
        vec!["generate", "--model", m, "--prompt", "x", "--no-watermark"],
        vec!["detect", m],
        vec!["eval", "--model", m, "--prompts", m, "--out", o],
    ];
    for mut args in cases {
        args.push("--json");
        let r = hallmark(&args);
        assert_eq!(code(&r), 2, "{args:?}");
        let v = json(&r);
        assert!(v["error"].is_string(), "{args:?}: {v}");
        assert!(v.get("path").is_some(), "{args:?}: {v}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!err.contains(".hallmark-tmp"), "{args:?}: {err}");
    }
    // keygen never writes hidden files for a directory prefix.
    let r = hallmark(&["keygen", "--out", &format!("{}/", s(d.path()))]);
    assert_eq!(code(&r), 2);
    assert!(!d.path().join(".key").exists() && !d.path().join(".pub").exists());
    // wm-key refuses parameters its scheme does not use.
    let r = hallmark(&[
        "wm-key",
        "--scheme",
        "gumbel",
        "--gamma",
        "0.5",
        "--tokenizer",
        SMOLLM,
        "--out",
        o,
    ]);
    assert_eq!(code(&r), 2);
    assert!(String::from_utf8_lossy(&r.stderr).contains("--gamma"));
    assert!(!out.exists());
}

/// A poisoned registry: a kgw key without gamma, a fingerprint with `hidden: 0`, a key whose
/// tokenizer has a pathological split regex, a 2,100-level directory tree, an oversized file.
/// detect still tests the valid entries, names each broken one, and never panics.
#[test]
fn poisoned_registry_fails_safe() {
    let m = marked();
    let reg = &m.reg;
    std::fs::write(
        reg.join("nogamma.wmkey"),
        br#"{"format":"hallmark-wmkey","version":1,"scheme":"kgw","delta":2.0,"prf_version":1}"#,
    )
    .unwrap();
    // A real fingerprint with its hidden size set to 0.
    let fp = m.root.join("orig.fp");
    ok(&["fingerprint", s(&m.original), "--out", s(&fp)]);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&fp).unwrap()).unwrap();
    assert!(v["hidden"].as_u64().unwrap() > 0, "{}", v["hidden"]);
    v["hidden"] = 0.into();
    std::fs::write(reg.join("hidden0.fp"), v.to_string()).unwrap();
    // A tokenizer whose split regex backtracks catastrophically on `abab...abacbc` (the case
    // the onig crate's own tests use to hit Oniguruma's retry limit, where it panics).
    {
        use hallmark::textmark::{ContextRule, SchemeParams, TokenizerSpec, WatermarkKey};
        let mut t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(real(MINILM_TOKENIZER)).unwrap())
                .unwrap();
        t["pre_tokenizer"] = serde_json::json!({
            "type": "Split", "pattern": {"Regex": "(a|b|ab)*bc"},
            "behavior": "Isolated", "invert": false
        });
        let tok = hallmark::tokenizer::Tokenizer::from_json(&t.to_string()).unwrap();
        let spec = TokenizerSpec::from_tokenizer(&tok, "evil").unwrap();
        WatermarkKey::generate(
            SchemeParams::Kgw {
                gamma: 0.25,
                delta: 2.0,
            },
            ContextRule::Left(1),
            spec,
        )
        .unwrap()
        .save(&reg.join("evil.wmkey"))
        .unwrap();
    }
    // A sound text key beside it.
    let good = m.root.join("good.wmkey");
    ok(&[
        "wm-key",
        "--scheme",
        "kgw",
        "--tokenizer",
        s(&real(MINILM_TOKENIZER)),
        "--out",
        s(&good),
    ]);
    ok(&["register", s(&good), "--registry", s(reg)]);
    // A 2,100-level tree, built bottom-up by renames (its full path is longer than PATH_MAX).
    let mut cur = m.root.join("c0");
    std::fs::create_dir(&cur).unwrap();
    for i in 1..2100 {
        let next = m.root.join(format!("c{i}"));
        std::fs::create_dir(&next).unwrap();
        std::fs::rename(&cur, next.join("d")).unwrap();
        cur = next;
    }
    std::fs::rename(&cur, reg.join("deep")).unwrap();

    // Weights: the marked copy still matches its key; the broken entries are named.
    let o = hallmark(&["detect", s(&m.marked), "--registry", s(reg), "--json"]);
    let v = json(&o);
    assert_eq!(code(&o), 0, "{v}");
    let results = v["results"].as_array().unwrap();
    let errors: Vec<&str> = results
        .iter()
        .filter(|r| r["error"].is_string())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(errors.contains(&"hidden0"), "{v}");
    assert!(errors.iter().any(|n| n.starts_with("deep")), "{v}");
    assert!(results
        .iter()
        .any(|r| r["kind"] == "weights" && r["match"] == true));
    // Unmarked: no match over an incomplete registry is an error (2), with results.
    let o = hallmark(&["detect", s(&m.original), "--registry", s(reg), "--json"]);
    assert_eq!(code(&o), 2);
    assert_eq!(json(&o)["status"], "error");

    // Text that sends the evil regex into its retry limit: that key's error, the good key
    // is still tested, stderr is one line per problem and no panic message.
    let text = m.root.join("t.txt");
    let body: String = (0..300)
        .map(|i| format!("item {i} of the list is here; "))
        .collect();
    std::fs::write(&text, format!("{body} {}acbc", "ab".repeat(28))).unwrap();
    let o = hallmark(&["detect", s(&text), "--registry", s(reg), "--json"]);
    let v = json(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 2, "{v} {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let by = |n: &str| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no result for {n}: {v}"))
            .clone()
    };
    assert!(
        by("nogamma")["error"].as_str().unwrap().contains("gamma"),
        "{v}"
    );
    // The key with the backtracking regex hits the retry limit: the panic inside the
    // tokenizer is caught and becomes that key's error, never a crash of the whole run.
    let evil = by("evil");
    assert!(
        evil["error"]
            .as_str()
            .is_some_and(|e| e.contains("retry-limit")),
        "{evil}"
    );
    let g = by("good");
    assert!(g["error"].is_null() && g["decided"] == true, "{v}");

    // register refuses each hostile entry, and the evil tokenizer too if it fails the sample.
    let elsewhere = m.root.join("reg2");
    for f in [reg.join("nogamma.wmkey"), reg.join("hidden0.fp")] {
        let o = hallmark(&["register", s(&f), "--registry", s(&elsewhere), "--json"]);
        assert_eq!(code(&o), 2, "{}", f.display());
        assert!(json(&o)["error"].is_string());
    }
    assert!(!elsewhere.exists() || std::fs::read_dir(&elsewhere).unwrap().count() == 0);
}

/// Two `register` runs of the same fingerprint at once both succeed and leave one entry, named
/// after the fingerprint's --name; registering it again is a no-op.
#[test]
fn concurrent_register_and_fingerprint_names() {
    let d = tempfile::tempdir().unwrap();
    let model = model_dir(d.path(), "m", 9);
    let fp = d.path().join("whatever.fp");
    ok(&[
        "fingerprint",
        s(&model.join("model.safetensors")),
        "--out",
        s(&fp),
        "--name",
        "Team Model/v1",
    ]);
    let reg = d.path().join("reg");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_hallmark"))
            .args(["register", s(&fp), "--registry", s(&reg), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    for _ in 0..3 {
        let (a, b) = (spawn(), spawn());
        for c in [a, b] {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let names: Vec<_> = std::fs::read_dir(&reg)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["Team_Model_v1.fp"]);
    let o = hallmark(&["detect", s(&model), "--registry", s(&reg), "--json"]);
    let v = json(&o);
    assert_eq!(code(&o), 0, "{v}");
    assert_eq!(v["results"][0]["name"], "Team_Model_v1");
}

/// Registered signer keys are used: detect names the signer of a model's bundle and whether
/// the files still verify. mark never copies the old bundle and `--key` signs the copy.
#[test]
fn signer_keys_and_mark_resign() {
    let m = marked();
    let root = &m.root;
    let (a, b) = (root.join("alice"), root.join("bob"));
    ok(&["keygen", "--out", s(&a)]);
    ok(&["keygen", "--out", s(&b)]);
    let pub_a = root.join("alice.pub");
    let pub_b = root.join("bob.pub");
    ok(&["sign", s(&m.original), "--key", s(&root.join("alice.key"))]);
    let reg = root.join("signers");
    ok(&["register", s(&pub_a), "--registry", s(&reg)]);
    let o = hallmark(&["detect", s(&m.original), "--registry", s(&reg), "--json"]);
    let v = json(&o);
    assert_eq!(code(&o), 0, "{v}");
    let r = &v["results"][0];
    assert_eq!(
        (
            r["kind"].as_str(),
            r["name"].as_str(),
            r["verifies"].as_bool()
        ),
        (Some("signature"), Some("alice"), Some(true)),
        "{v}"
    );
    assert!(r["p_value"].is_null());
    // Changed files: signed by alice, but no longer verifies -> no match (exit 1).
    std::fs::write(m.original.join("config.json"), b"{\"changed\": 1}").unwrap();
    let o = hallmark(&["detect", s(&m.original), "--registry", s(&reg)]);
    assert_eq!(code(&o), 1);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("does NOT verify") && out.contains("config.json"),
        "{out}"
    );
    std::fs::write(m.original.join("config.json"), b"{}").unwrap();

    // mark --key: the copy carries bob's fresh bundle, never alice's old one.
    let wm = root.join("k2.wmkey");
    ok(&["wm-key", "--scheme", "weights", "--out", s(&wm)]);
    let out_dir = root.join("marked2");
    ok(&[
        "mark",
        s(&m.original),
        "--wm-key",
        s(&wm),
        "--out",
        s(&out_dir),
        "--key",
        s(&root.join("bob.key")),
    ]);
    ok(&["verify", s(&out_dir), "--pub", s(&pub_b)]);
    let o = hallmark(&["verify", s(&out_dir), "--pub", s(&pub_a)]);
    assert_ne!(code(&o), 0, "alice's bundle must not verify the copy");
    // Without --key: no bundle at all in the copy.
    let out3 = root.join("marked3");
    ok(&[
        "mark",
        s(&m.original),
        "--wm-key",
        s(&wm),
        "--out",
        s(&out3),
    ]);
    assert!(!out3.join("model.sig").exists());
    assert!(out3.join("config.json").exists());
}

/// Wait until `pred` holds or the child exits; true when `pred` held while it ran.
fn wait_for(child: &mut std::process::Child, pred: impl Fn() -> bool) -> bool {
    loop {
        if pred() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn sigint(child: &std::process::Child) {
    // SAFETY: plain kill(2) of our own child process.
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(r, 0);
}

/// SIGINT while `mark` writes its temporary copy removes it; a temporary left by a crashed
/// run is removed by the next run on that path, one of a live process is kept.
#[test]
fn interrupted_mark_leaves_no_temporary() {
    let d = tempfile::tempdir().unwrap();
    let model = model_dir(d.path(), "m", 5);
    // A large extra file keeps the copy step busy long enough to be interrupted in it.
    std::fs::write(model.join("blob.bin"), vec![7u8; 256 << 20]).unwrap();
    let key = d.path().join("k.wmkey");
    ok(&["wm-key", "--scheme", "weights", "--out", s(&key)]);
    let outdir = d.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    // A crash leftover (no such process) and a live process's temporary (this test's).
    let stale = outdir.join(".hallmark-tmp-4194999-stale");
    std::fs::create_dir(&stale).unwrap();
    let live = outdir.join(format!(".hallmark-tmp-{}-live", std::process::id()));
    std::fs::write(&live, b"x").unwrap();
    let target = outdir.join("marked");
    let mut interrupted = false;
    for _ in 0..5 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hallmark"))
            .args(["mark", s(&model), "--wm-key", s(&key), "--out", s(&target)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = c.id();
        let caught = wait_for(&mut c, || {
            temps_in(&outdir)
                .iter()
                .any(|n| n.starts_with(&format!(".hallmark-tmp-{pid}-")))
        });
        if caught {
            sigint(&c);
        }
        let o = c.wait_with_output().unwrap();
        if caught && o.status.code() == Some(130) {
            interrupted = true;
            assert!(!target.exists());
            break;
        }
        let _ = std::fs::remove_dir_all(&target);
    }
    assert!(interrupted, "never caught mark while its temporary existed");
    assert!(
        !stale.exists(),
        "a crash leftover is removed by the next run"
    );
    assert!(live.exists(), "a live process's temporary is kept");
    std::fs::remove_file(&live).unwrap();
    assert_eq!(temps_in(&outdir), Vec::<String>::new());
}

/// SIGINT while `sign` is hashing leaves neither a bundle nor a temporary.
#[test]
fn interrupted_sign_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("m");
    std::fs::create_dir(&model).unwrap();
    for i in 0..2 {
        std::fs::write(model.join(format!("part{i}.bin")), vec![i as u8; 256 << 20]).unwrap();
    }
    let k = d.path().join("k");
    ok(&["keygen", "--out", s(&k)]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(["sign", s(&model), "--key", s(&d.path().join("k.key"))])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (fds, maps) = (
        format!("/proc/{}/fd", c.id()),
        format!("/proc/{}/maps", c.id()),
    );
    let model_s = s(&model).to_string();
    // Interrupt once it has a model file open or mapped (it is hashing).
    let caught = wait_for(&mut c, || {
        let open = std::fs::read_dir(&fds)
            .map(|rd| {
                rd.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| t.starts_with(&model))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        open || std::fs::read_to_string(&maps)
            .map(|m| m.contains(&model_s))
            .unwrap_or(false)
    });
    assert!(caught, "sign finished before it was seen hashing");
    sigint(&c);
    let o = c.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!model.join("model.sig").exists());
    assert_eq!(temps_in(&model), Vec::<String>::new());
}

/// `verify` names what is missing (the model before its bundle), and its JSON names a
/// single-file model's file by its name, never as the bundle's internal ".".
#[test]
fn verify_names_missing_paths_and_single_files() {
    let d = tempfile::tempdir().unwrap();
    let k = d.path().join("k");
    ok(&["keygen", "--out", s(&k)]);
    let p = d.path().join("k.pub");
    let missing = d.path().join("nonexist");
    let o = hallmark(&["verify", s(&missing), "--pub", s(&p), "--json"]);
    assert_eq!(code(&o), 2);
    let e = json(&o)["error"].as_str().unwrap().to_string();
    assert!(e.contains("nonexist:") && !e.contains(".sig"), "{e}");
    let model = model_dir(d.path(), "m", 3).join("model.safetensors");
    let o = hallmark(&["verify", s(&model), "--pub", s(&p), "--json"]);
    assert_eq!(code(&o), 2);
    let e = json(&o)["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("model.safetensors.sig") && e.contains("sign"),
        "{e}"
    );
    ok(&["sign", s(&model), "--key", s(&d.path().join("k.key"))]);
    let v = json(&ok(&["verify", s(&model), "--pub", s(&p), "--json"]));
    assert_eq!(v["files"][0]["name"], "model.safetensors", "{v}");
    assert_eq!(v["valid"], true);
}

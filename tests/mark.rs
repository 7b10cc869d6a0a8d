//! The active weight mark: key file handling, mark -> detect round trips on synthetic models
//! (safetensors and GGUF), the relative-change bound, the input left untouched, every attack of
//! the issue, the null calibration over many keys and models, and the real SmolLM2 GGUF.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hallmark::mark::{score_many, WeightKey, MAX_RELATIVE_CHANGE};
use hallmark::weights::{DType, WeightFile};
use hallmark_testkit::zoo::{apply, export, Arch, Config, Export, Transform, ZModel};

const SMOLLM: &str = "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A llama-like model big enough (8.9M matrix weights, 6.6M of them marked) for an intact
/// mark to reach z ~ 11.6, so every attack below must still give p <= 1e-12.
fn cfg() -> Config {
    Config {
        arch: Arch::Llama,
        vocab: 4096,
        hidden: 384,
        layers: 4,
        heads: 6,
        intermediate: 1536,
        tied: true,
    }
}

fn hallmark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(args)
        .output()
        .expect("run hallmark")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(dir: &Path, name: &str, m: &ZModel, e: Export) -> PathBuf {
    let p = dir.join(format!("{name}.{}", e.extension()));
    std::fs::write(&p, export(m, e).expect("export")).expect("write model");
    p
}

/// A key from fixed bytes (so the test is deterministic), written as `wm-key` would.
fn seeded_key(dir: &Path, name: &str, seed: u8, fraction: f64) -> PathBuf {
    let k = dir.join(format!("{name}.wmkey"));
    WeightKey::from_secret([seed; 32], 0.0045, fraction)
        .unwrap()
        .save(&k)
        .unwrap();
    k
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(format!("{name}.wmkey"));
    let out = hallmark(&["wm-key", "--scheme", "weights", "--out", s(&k)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k
}

fn register(reg: &Path, file: &Path) {
    let out = hallmark(&["register", s(file), "--registry", s(reg)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mark(model: &Path, key: &Path, out: &Path) {
    let o = hallmark(&["mark", s(model), "--wm-key", s(key), "--out", s(out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// (exit code, the `weights` result for `key`).
fn detect(suspect: &Path, reg: &Path, key: &str) -> (i32, serde_json::Value) {
    let out = hallmark(&["detect", s(suspect), "--registry", s(reg), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let r = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == key && r["kind"] == "weights")
        .unwrap_or_else(|| panic!("no weights result for {key}: {v}"))
        .clone();
    (out.status.code().unwrap_or(-1), r)
}

fn hash(p: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(p).unwrap())
}

struct Setup {
    dir: tempfile::TempDir,
    reg: PathBuf,
    original: ZModel,
    orig_path: PathBuf,
    marked: ZModel,
    marked_path: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let original = ZModel::generate(cfg(), 11);
    let orig_path = write(
        dir.path(),
        "orig",
        &original,
        Export::Safetensors(DType::F32),
    );
    let key = seeded_key(dir.path(), "acme", 1, 1.0);
    register(&reg, &key);
    let marked_path = dir.path().join("marked.safetensors");
    mark(&orig_path, &key, &marked_path);
    let marked = ZModel::load(&marked_path, cfg()).unwrap();
    Setup {
        dir,
        reg,
        original,
        orig_path,
        marked,
        marked_path,
    }
}

#[test]
fn key_file_is_secret_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let k = new_key(dir.path(), "k");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&k).unwrap()).unwrap();
    assert_eq!(v["format"], "hallmark-wmkey");
    assert_eq!(v["version"], 1);
    assert_eq!(v["scheme"], "weights");
    let before = std::fs::read(&k).unwrap();
    let out = hallmark(&["wm-key", "--scheme", "weights", "--out", s(&k)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("hallmark: "));
    assert_eq!(std::fs::read(&k).unwrap(), before);
    // The key is never printed.
    let secret = v["key"].as_str().unwrap();
    let out = hallmark(&[
        "wm-key",
        "--scheme",
        "weights",
        "--out",
        s(&dir.path().join("k2.wmkey")),
    ]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
}

#[test]
fn mark_round_trip_bound_and_untouched_input() {
    let st = setup();
    let dir = st.dir.path();
    // The input is unchanged (the setup marked it; mark it again and compare hashes around it).
    let key2 = new_key(dir, "other");
    let before = hash(&st.orig_path);
    mark(&st.orig_path, &key2, &dir.join("m2.safetensors"));
    assert_eq!(hash(&st.orig_path), before);
    // An existing output is refused and left alone.
    let o = hallmark(&[
        "mark",
        s(&st.orig_path),
        "--wm-key",
        s(&key2),
        "--out",
        s(&st.marked_path),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // Same tensors, order, dtypes and header metadata; every change within the bound.
    let a = WeightFile::open(&st.orig_path).unwrap();
    let b = WeightFile::open(&st.marked_path).unwrap();
    assert_eq!(a.parsed().metadata, b.parsed().metadata);
    assert_eq!(a.header_bytes(), b.header_bytes());
    let mut marked = 0;
    for (x, y) in st.original.tensors.iter().zip(&st.marked.tensors) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        let d: f64 = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let n: f64 = x.data.iter().map(|a| (*a as f64).powi(2)).sum();
        let rel = (d / n).sqrt();
        assert!(rel <= MAX_RELATIVE_CHANGE, "{}: {rel}", x.name);
        if rel > 0.0 {
            marked += 1;
            assert!(rel > 0.003, "{}: mark too weak ({rel})", x.name);
        }
        if x.shape.len() != 2 || x.name.contains("embed") {
            assert_eq!(rel, 0.0, "{} must not be marked", x.name);
        }
    }
    // 4 layers x 7 matrices, all of them for a key with fraction 1 ...
    assert_eq!(marked, 28);
    // ... and a keyed subset of about 3/4 for a default key.
    let m2 = ZModel::load(&dir.join("m2.safetensors"), cfg()).unwrap();
    let changed = st
        .original
        .tensors
        .iter()
        .zip(&m2.tensors)
        .filter(|(x, y)| x.data != y.data)
        .count();
    assert!((14..=26).contains(&changed), "{changed} matrices marked");
    // Detection: the marked copy matches, the original does not.
    let (code, r) = detect(&st.marked_path, &st.reg, "acme");
    assert_eq!(code, 0, "{r}");
    assert!(r["p_raw"].as_f64().unwrap() <= 1e-12, "{r}");
    assert!(r["scored_weights"].as_u64().unwrap() > 5_000_000, "{r}");
    let (code, r) = detect(&st.orig_path, &st.reg, "acme");
    assert_eq!(code, 1, "{r}");
    assert!(r["p_raw"].as_f64().unwrap() > 1e-3, "{r}");
    // The other key's mark is not this key's.
    let (_, r) = detect(&dir.join("m2.safetensors"), &st.reg, "acme");
    assert!(r["p_raw"].as_f64().unwrap() > 1e-3, "{r}");
}

#[test]
fn mark_survives_every_attack() {
    let st = setup();
    let dir = st.dir.path();
    let m = &st.marked;
    let cases: Vec<(&str, ZModel, Export)> = vec![
        ("int8", m.clone(), Export::Int8),
        // llama.cpp names and Q/K row order, Q4_0 blocks.
        ("q4_0", m.clone(), Export::Gguf(DType::Q4_0)),
        ("bf16", m.clone(), Export::Safetensors(DType::BF16)),
        (
            "noise5",
            apply(m, Transform::Noise(0.05), 1),
            Export::Safetensors(DType::F32),
        ),
        (
            "prune30",
            apply(m, Transform::Prune(0.3), 2),
            Export::Safetensors(DType::F32),
        ),
        (
            "ffnperm",
            apply(m, Transform::FfnPermute, 3),
            Export::Safetensors(DType::F32),
        ),
        (
            "headperm",
            apply(m, Transform::HeadPermute, 4),
            Export::Safetensors(DType::F32),
        ),
        (
            "ffnperm+noise+q4_0",
            apply(
                &apply(m, Transform::FfnPermute, 5),
                Transform::Noise(0.05),
                6,
            ),
            Export::Gguf(DType::Q4_0),
        ),
    ];
    for (label, model, e) in cases {
        let p = write(dir, label, &model, e);
        let (code, r) = detect(&p, &st.reg, "acme");
        let pv = r["p_raw"].as_f64().unwrap();
        eprintln!("attack {label}: p = {pv:.3e}, z = {}", r["z"]);
        assert!(
            code == 0 && pv <= 1e-12 || std::env::var("MARK_ALL").is_ok(),
            "{label}: {r}"
        );
    }
    // The unmarked original under the same attacks: no match.
    let p = write(dir, "orig_q4", &st.original, Export::Gguf(DType::Q4_0));
    let (code, r) = detect(&p, &st.reg, "acme");
    assert!(code == 1 && r["p_raw"].as_f64().unwrap() > 1e-3, "{r}");
}

#[test]
fn hidden_permutation_is_undone_through_a_registered_fingerprint() {
    let st = setup();
    let dir = st.dir.path();
    let permuted = apply(&st.marked, Transform::HiddenPermute, 9);
    let permuted = apply(&permuted, Transform::FfnPermute, 10);
    let p = write(dir, "hperm", &permuted, Export::Safetensors(DType::F32));
    // Without a fingerprint the hidden axis is scrambled: no match.
    let (code, r) = detect(&p, &st.reg, "acme");
    assert_eq!(code, 1, "{r}");
    // With the original's fingerprint registered the axis is realigned.
    let fp = dir.join("orig.fp");
    let o = hallmark(&[
        "fingerprint",
        s(&st.orig_path),
        "--out",
        s(&fp),
        "--name",
        "orig",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    register(&st.reg, &fp);
    let (code, r) = detect(&p, &st.reg, "acme");
    eprintln!(
        "attack hidden+ffn permutation, fingerprint registered: p = {}, z = {}",
        r["p_raw"], r["z"]
    );
    assert_eq!(code, 0, "{r}");
    assert!(r["p_raw"].as_f64().unwrap() <= 1e-12, "{r}");
    assert_eq!(r["aligned_through"], "orig", "{r}");
    assert_eq!(r["alignments_tried"], 2, "{r}");
}

#[test]
fn sharded_directory_is_marked_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let model = ZModel::generate(cfg(), 21);
    let src = dir.path().join("model");
    std::fs::create_dir(&src).unwrap();
    let half = model.tensors.len() / 2;
    for (i, part) in [&model.tensors[..half], &model.tensors[half..]]
        .iter()
        .enumerate()
    {
        let m = ZModel {
            cfg: model.cfg,
            tensors: part.to_vec(),
        };
        std::fs::write(
            src.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            export(&m, Export::Safetensors(DType::BF16)).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(src.join("config.json"), b"{\"hidden_size\": 384}").unwrap();
    let key = seeded_key(dir.path(), "shard", 2, 0.75);
    let reg = dir.path().join("reg");
    register(&reg, &key);
    let out = dir.path().join("marked");
    mark(&src, &key, &out);
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"{\"hidden_size\": 384}"
    );
    for i in 1..=2 {
        let name = format!("model-0000{i}-of-00002.safetensors");
        let f = WeightFile::open(&out.join(&name)).unwrap();
        assert!(f.parsed().tensors.iter().all(|t| t.dtype == DType::BF16));
    }
    // No temporary directory left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".hallmark-tmp"))
        .collect();
    assert!(left.is_empty());
    let (code, r) = detect(&out, &reg, "shard");
    assert!(code == 0 && r["p_raw"].as_f64().unwrap() <= 1e-12, "{r}");
    let (code, _) = detect(&src, &reg, "shard");
    assert_eq!(code, 1);
}

#[test]
fn bad_inputs_exit_2_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(dir.path(), "k");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let out = dir.path().join("o.safetensors");
    let o = hallmark(&["mark", s(&junk), "--wm-key", s(&key), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
    // A text key is not a weights key.
    let bad = dir.path().join("bad.wmkey");
    std::fs::write(
        &bad,
        br#"{"format":"hallmark-wmkey","version":1,"scheme":"kgw"}"#,
    )
    .unwrap();
    let m = write(
        dir.path(),
        "m",
        &ZModel::generate(Config::tiny(), 1),
        Export::Safetensors(DType::F32),
    );
    let o = hallmark(&["mark", s(&m), "--wm-key", s(&bad), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("scheme"));
    assert!(!out.exists());
}

/// Under the null (models independent of the key) z is N(0,1) (KS test) and the reported p is
/// never smaller than uniform: P[p <= x] <= x within sampling error.
#[test]
fn null_is_calibrated_over_keys_and_models() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<WeightKey> = (0..100u8)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = i;
            b[1] = 0x5a;
            WeightKey::from_secret(b, 0.0045, 0.75).unwrap()
        })
        .collect();
    let refs: Vec<&WeightKey> = keys.iter().collect();
    let small = Config {
        arch: Arch::Llama,
        vocab: 512,
        hidden: 128,
        layers: 2,
        heads: 4,
        intermediate: 384,
        tied: true,
    };
    let mut zs = Vec::new();
    let mut ps = Vec::new();
    for (seed, c) in [(1, small), (2, small), (3, Config::bert())] {
        let p = write(
            dir.path(),
            &format!("null{seed}"),
            &ZModel::generate(c, seed),
            Export::Safetensors(DType::F32),
        );
        for sc in score_many(&p, &refs, None).unwrap() {
            zs.push(sc.z_stored);
            ps.push(sc.p);
        }
    }
    let n = zs.len() as f64;
    // KS statistic of Phi(z) against U(0,1); critical value at 1%: 1.63 / sqrt(n).
    let mut u: Vec<f64> = zs
        .iter()
        .map(|&z| 1.0 - hallmark::stats::normal_sf(z))
        .collect();
    u.sort_by(f64::total_cmp);
    let d = u
        .iter()
        .enumerate()
        .map(|(i, &x)| (x - i as f64 / n).abs().max(((i + 1) as f64 / n - x).abs()))
        .fold(0.0, f64::max);
    assert!(d < 1.63 / n.sqrt(), "KS D = {d} over {n} null scores");
    for x in [0.001, 0.01, 0.05, 0.1, 0.5] {
        let frac = ps.iter().filter(|&&p| p <= x).count() as f64 / n;
        assert!(
            frac <= x + 3.0 * (x * (1.0 - x) / n).sqrt(),
            "P[p <= {x}] = {frac}"
        );
    }
    assert!(
        ps.iter().all(|&p| p > 1e-3),
        "a null model matched at alpha = 1e-3"
    );
}

/// The real SmolLM2 GGUF: Q4_1 blocks re-quantized to Q4_1 (only their f16 scales move), header
/// and metadata byte-identical, detected blind.
#[test]
fn smollm2_q4_1_is_marked_in_place_of_its_scales() {
    if !Path::new(SMOLLM).exists() {
        panic!("{SMOLLM} missing: run test-models/fetch.sh");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = seeded_key(dir.path(), "smol", 3, 0.75);
    let reg = dir.path().join("reg");
    register(&reg, &key);
    let out = dir.path().join("smol.gguf");
    let before = hash(Path::new(SMOLLM));
    mark(Path::new(SMOLLM), &key, &out);
    assert_eq!(hash(Path::new(SMOLLM)), before);
    let a = WeightFile::open(Path::new(SMOLLM)).unwrap();
    let b = WeightFile::open(&out).unwrap();
    assert_eq!(a.header_bytes(), b.header_bytes());
    let mut changed = 0;
    for (x, y) in a.views().zip(b.views()) {
        assert_eq!((x.name, x.dtype), (y.name, y.dtype));
        if x.bytes != y.bytes {
            changed += 1;
            assert_eq!(x.dtype, DType::Q4_1);
            // Only the two f16 scale fields of each 20-byte block differ.
            for (bx, by) in x.bytes.chunks(20).zip(y.bytes.chunks(20)) {
                assert_eq!(bx[4..], by[4..]);
            }
        }
    }
    assert!(changed > 100, "{changed}");
    let (code, r) = detect(&out, &reg, "smol");
    assert_eq!(code, 0, "{r}");
    assert!(r["p_raw"].as_f64().unwrap() <= 1e-6, "{r}");
}

// ---------------------------------------------------------------------------------------------
// Behaviour preserved (measurement, not a gate; figures in docs/mark.md):
//   cargo test --release --test tests mark::behaviour -- --ignored --nocapture
// ---------------------------------------------------------------------------------------------

const MINILM: &str = "test-models/real/minilm";

/// SmolLM2 Q4_1 (candle quantized_llama): over a fixed set of token-id prompts, the largest
/// change of any next-token logit (teacher-forced on the original's greedy continuation) and
/// whether the 24-token greedy continuation changes.
#[test]
#[ignore]
fn behaviour_smollm2() {
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;

    let dir = tempfile::tempdir().unwrap();
    let key = seeded_key(dir.path(), "smol", 3, 0.75);
    let marked = dir.path().join("smol.gguf");
    mark(Path::new(SMOLLM), &key, &marked);
    let load = |p: &Path| {
        let mut f = std::fs::File::open(p).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        ModelWeights::from_gguf(c, &mut f, &Device::Cpu).unwrap()
    };
    // Fixed prompts as token ids (SmolLM2's tokenizer: chat-template and common English ids).
    let prompts: Vec<Vec<u32>> = vec![
        vec![
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
            407, 19712, 8182, 2, 198, 1, 4093, 198,
        ],
        vec![504, 3458, 282, 4649, 314],
        vec![378, 1789, 6180, 282, 253, 1944, 314],
        vec![14437, 905, 253, 1789, 15296, 30],
        vec![1206, 3485, 5248, 411, 216, 34, 28, 216, 36, 28],
        vec![2683, 359, 253, 1571, 3437, 30, 330, 1833, 5248, 284],
    ];
    let steps = 24;
    let greedy = |m: &mut ModelWeights, p: &[u32]| -> (Vec<u32>, Vec<Vec<f32>>) {
        let mut toks = p.to_vec();
        let mut logits_all = Vec::new();
        let mut pos = 0;
        let mut input = p.to_vec();
        for _ in 0..steps {
            let t = Tensor::new(input.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let l: Vec<f32> = m
                .forward(&t, pos)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            pos += input.len();
            let next = l
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0 as u32;
            logits_all.push(l);
            toks.push(next);
            input = vec![next];
        }
        (toks, logits_all)
    };
    let forced = |m: &mut ModelWeights, seq: &[u32], plen: usize| -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        let t = Tensor::new(&seq[..plen], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        out.push(
            m.forward(&t, 0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
        for i in plen..seq.len() - 1 {
            let t = Tensor::new(&seq[i..i + 1], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            out.push(
                m.forward(&t, i)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            );
        }
        out
    };
    let (mut max_abs, mut max_rel, mut same, mut top1_same, mut positions) = (0f32, 0f32, 0, 0, 0);
    for p in &prompts {
        let (seq_o, lo) = greedy(&mut load(Path::new(SMOLLM)), p);
        let (seq_m, _) = greedy(&mut load(&marked), p);
        let lm = forced(&mut load(&marked), &seq_o, p.len());
        for (a, b) in lo.iter().zip(&lm) {
            let spread = {
                let mean = a.iter().sum::<f32>() / a.len() as f32;
                (a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32).sqrt()
            };
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / spread);
            let am = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                    )
                    .0
            };
            top1_same += (am(a) == am(b)) as usize;
            positions += 1;
        }
        same += (seq_o == seq_m) as usize;
        eprintln!(
            "prompt {:?}...: greedy continuation {}",
            &p[..p.len().min(4)],
            if seq_o == seq_m {
                "identical"
            } else {
                "changed"
            }
        );
    }
    eprintln!(
        "SmolLM2 Q4_1: {} prompts x {steps} steps: max |dlogit| = {max_abs:.4} ({:.2}% of the logit std), top-1 agreement {top1_same}/{positions}, greedy continuations identical {same}/{}",
        prompts.len(),
        100.0 * max_rel,
        prompts.len()
    );
}

/// all-MiniLM-L6-v2 (candle BERT, mean pooling + L2 normalisation): cosine between original
/// and marked sentence embeddings over a fixed sentence set.
#[test]
#[ignore]
fn behaviour_minilm() {
    use candle_core::{DType as CDType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config as BertConfig};

    let dir = tempfile::tempdir().unwrap();
    let key = seeded_key(dir.path(), "mini", 4, 0.75);
    let src = Path::new(MINILM).join("model.safetensors");
    let marked = dir.path().join("model.safetensors");
    mark(&src, &key, &marked);
    let cfg: BertConfig =
        serde_json::from_slice(&std::fs::read(Path::new(MINILM).join("config.json")).unwrap())
            .unwrap();
    let tok = tokenizers::Tokenizer::from_file(Path::new(MINILM).join("tokenizer.json")).unwrap();
    let sentences = [
        "A man is eating food.",
        "A man is riding a horse.",
        "The new movie is awesome.",
        "The cat sits outside on the mat.",
        "Two men pushed carts through the woods.",
        "A woman is playing the violin.",
        "Weight watermarks must not change what a model does.",
        "The quick brown fox jumps over the lazy dog.",
        "How do I reset my password?",
        "Stock markets fell sharply on Monday after the announcement.",
        "Photosynthesis converts light energy into chemical energy.",
        "She sells seashells by the seashore.",
    ];
    let embed = |path: &Path| -> Vec<Vec<f32>> {
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(
            std::fs::read(path).unwrap(),
            CDType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let model = BertModel::load(vb, &cfg).unwrap();
        sentences
            .iter()
            .map(|s| {
                let enc = tok.encode(*s, true).unwrap();
                let ids = Tensor::new(enc.get_ids(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let tt = ids.zeros_like().unwrap();
                let out = model.forward(&ids, &tt, None).unwrap(); // 1 x T x H
                let mean: Vec<f32> = out.mean(1).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
                let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
                mean.iter().map(|x| x / n).collect()
            })
            .collect()
    };
    let a = embed(&src);
    let b = embed(&marked);
    let cos: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
        .collect();
    let min = cos.iter().copied().fold(1.0, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    eprintln!(
        "MiniLM: {} sentences: cosine(original, marked) min {min:.6}, mean {mean:.6}",
        cos.len()
    );
    assert!(min >= 0.999, "{cos:?}");
}

/// The null on real, trained weights: many keys against the unmarked MiniLM and SmolLM2.
/// Measurement (figures in docs/mark.md):
///   cargo test --release --test tests mark::null_real -- --ignored --nocapture
#[test]
#[ignore]
fn null_real_models() {
    for (path, nkeys) in [
        (Path::new(MINILM).join("model.safetensors"), 200u32),
        (PathBuf::from(SMOLLM), 40),
    ] {
        let keys: Vec<WeightKey> = (0..nkeys)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                b[4] = 0xa7;
                WeightKey::from_secret(b, 0.0045, 0.75).unwrap()
            })
            .collect();
        let refs: Vec<&WeightKey> = keys.iter().collect();
        let scores = score_many(&path, &refs, None).unwrap();
        let zs: Vec<f64> = scores.iter().map(|s| s.z_stored).collect();
        let n = zs.len() as f64;
        let mean = zs.iter().sum::<f64>() / n;
        let sd = (zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let mut u: Vec<f64> = zs
            .iter()
            .map(|&z| 1.0 - hallmark::stats::normal_sf(z))
            .collect();
        u.sort_by(f64::total_cmp);
        let d = u
            .iter()
            .enumerate()
            .map(|(i, &x)| (x - i as f64 / n).abs().max(((i + 1) as f64 / n - x).abs()))
            .fold(0.0, f64::max);
        let pmin = scores.iter().map(|s| s.p).fold(1.0, f64::min);
        eprintln!(
            "{}: {} keys: z mean {mean:.3}, sd {sd:.3}, KS D {d:.3} (1% critical {:.3}), smallest p {pmin:.3e}",
            path.display(),
            nkeys,
            1.63 / n.sqrt()
        );
        assert!(pmin > 1e-3);
    }
}

/// GGUF exports: F16 matrices carry the full mark; Q8_0 blocks keep their integers and type,
/// only their scales move, within the bound.
#[test]
fn gguf_f16_and_q8_0_keep_their_layout() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let key = seeded_key(dir.path(), "g", 5, 1.0);
    register(&reg, &key);
    let model = ZModel::generate(cfg(), 31);
    for (label, dt) in [("f16", DType::F16), ("q8", DType::Q8_0)] {
        let src = write(dir.path(), label, &model, Export::Gguf(dt));
        let out = dir.path().join(format!("{label}-marked.gguf"));
        mark(&src, &key, &out);
        let a = WeightFile::open(&src).unwrap();
        let b = WeightFile::open(&out).unwrap();
        assert_eq!(a.header_bytes(), b.header_bytes());
        let (ma, mb) = (
            ZModel::load(&src, cfg()).unwrap(),
            ZModel::load(&out, cfg()).unwrap(),
        );
        let mut changed = 0;
        for ((x, y), (vx, vy)) in ma
            .tensors
            .iter()
            .zip(&mb.tensors)
            .zip(a.views().zip(b.views()))
        {
            assert_eq!((vx.name, vx.dtype), (vy.name, vy.dtype));
            let d: f64 = x
                .data
                .iter()
                .zip(&y.data)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let n: f64 = x.data.iter().map(|a| (*a as f64).powi(2)).sum();
            assert!((d / n).sqrt() <= MAX_RELATIVE_CHANGE, "{label} {}", x.name);
            changed += (d > 0.0) as usize;
            if dt == DType::Q8_0 && vx.dtype == DType::Q8_0 {
                for (bx, by) in vx.bytes.chunks(34).zip(vy.bytes.chunks(34)) {
                    assert_eq!(bx[2..], by[2..]);
                }
            }
        }
        assert_eq!(changed, 28, "{label}");
        let (code, r) = detect(&out, &reg, "g");
        eprintln!("gguf {label}: p = {}, z = {}", r["p_raw"], r["z"]);
        // Q8_0 scales alone carry ~1/5 of the mark: too little on 8.9M weights to assert a
        // detection (it takes SmolLM2's 80M, see smollm2_q4_1_...); layout only.
        if dt == DType::F16 {
            assert!(code == 0 && r["p_raw"].as_f64().unwrap() <= 1e-12, "{r}");
        }
    }
}

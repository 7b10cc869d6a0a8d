//! Issue 23: copies of the real all-MiniLM-L6-v2 and SmolLM2-135M disguised by the symmetries a
//! leaker can apply for free. Each test first checks that the disguised copy computes what the
//! original computes (a forward pass on a few tokens), then that `hallmark detect` finds it
//! against the right registered entry only (exit 0), through the symmetry-invariant line.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hallmark::weights::DType;
use hallmark_testkit::forward::{bert_hidden, llama_logits, max_rel_diff, LlamaDims};
use hallmark_testkit::zoo::{apply, export, Config, Export, Transform, ZModel};

use super::common::{code, hm, stderr, stdout};

const SMOLLM: &str = "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MINILM: &str = "test-models/real/minilm/model.safetensors";

/// SmolLM2-135M: 9 query heads, 3 key/value heads, RMSNorm eps 1e-5, RoPE base 100000,
/// llama.cpp's Q/K row order.
const SMOLLM_DIMS: LlamaDims = LlamaDims {
    heads: 9,
    kv_heads: 3,
    eps: 1e-5,
    theta: 100_000.0,
    gguf_rope: true,
};

fn real(p: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    assert!(path.is_file(), "{p} is missing: run test-models/fetch.sh");
    path
}

/// A registry holding the real SmolLM2 and MiniLM and a zoo BERT of MiniLM's shape (an
/// independently initialised decoy), fingerprinted and registered through the CLI once.
fn registry() -> &'static (tempfile::TempDir, PathBuf) {
    static R: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("registry");
        let decoy = dir.path().join("decoy.safetensors");
        let bytes = export(
            &ZModel::generate(Config::minilm(), 2024),
            Export::Safetensors(DType::F32),
        )
        .unwrap();
        std::fs::write(&decoy, bytes).unwrap();
        for (name, model) in [
            ("smollm2", real(SMOLLM)),
            ("minilm", real(MINILM)),
            ("decoy-bert", decoy),
        ] {
            let fp = dir.path().join(format!("{name}.fp"));
            let o = hm(&[&"fingerprint", &model, &"--out", &fp, &"--name", &name]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            let o = hm(&[&"register", &fp, &"--registry", &reg]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
        }
        (dir, reg)
    })
}

/// `detect --json` on `suspect`: exit code and the names of the matched entries.
fn detect(suspect: &Path) -> (i32, Vec<String>, serde_json::Value) {
    let reg = &registry().1;
    let o = hm(&[&"detect", &suspect, &"--registry", reg, &"--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&o), stderr(&o)));
    let matched = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["match"] == true)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let text = hm(&[&"detect", &suspect, &"--registry", reg]);
    println!("{}", stdout(&text));
    (code(&o), matched, v)
}

fn write(dir: &Path, name: &str, m: &ZModel, e: Export) -> PathBuf {
    let p = dir.join(format!("{name}.{}", e.extension()));
    std::fs::write(&p, export(m, e).unwrap()).unwrap();
    p
}

fn chain(m: &ZModel, ts: &[Transform]) -> ZModel {
    ts.iter()
        .enumerate()
        .fold(m.clone(), |m, (k, t)| apply(&m, *t, 2300 + k as u64))
}

/// The disguised copy is found, against `want` only, by the symmetry line (the identity tests
/// cannot see it), and the verdict names a symmetry.
#[track_caller]
fn assert_found(suspect: &Path, want: &str) {
    let (c, matched, v) = detect(suspect);
    assert_eq!(c, 0, "{v}");
    assert_eq!(matched, vec![want.to_string()], "{v}");
    let r = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == want)
        .unwrap();
    assert_eq!(r["symmetry"]["verdict"], "match", "{r}");
}

fn smollm() -> &'static ZModel {
    static M: OnceLock<ZModel> = OnceLock::new();
    M.get_or_init(|| ZModel::load(&real(SMOLLM), Config::smollm2()).unwrap())
}

const LLAMA_TOKENS: [usize; 6] = [1, 504, 2130, 9000, 30000, 42];

#[test]
fn minilm_fully_permuted_is_found() {
    let m = ZModel::load(&real(MINILM), Config::minilm()).unwrap();
    let d = chain(
        &m,
        &[
            Transform::HiddenPermute,
            Transform::FfnPermute,
            Transform::HeadPermute,
        ],
    );
    // Same function: the output vectors are the original's with permuted coordinates, so every
    // dot product between token outputs is unchanged.
    let tokens = [101, 2023, 2003, 1037, 3231, 2005, 102];
    let (a, b) = (
        bert_hidden(&m, &tokens, 12).unwrap(),
        bert_hidden(&d, &tokens, 12).unwrap(),
    );
    let diff = max_rel_diff(&a.dot(&a.t()), &b.dot(&b.t()));
    assert!(diff < 1e-4, "outputs differ: {diff}");
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "minilm-permuted",
        &d,
        Export::Safetensors(DType::F32),
    );
    assert_found(&p, "minilm");
}

#[test]
fn smollm2_fully_permuted_and_rescaled_is_found() {
    let m = smollm();
    let d = chain(
        m,
        &[
            Transform::HiddenPermute,
            Transform::FfnPermute,
            Transform::GroupedHeadPermute(3),
            Transform::NeuronScale,
        ],
    );
    let (a, b) = (
        llama_logits(m, &LLAMA_TOKENS, SMOLLM_DIMS).unwrap(),
        llama_logits(&d, &LLAMA_TOKENS, SMOLLM_DIMS).unwrap(),
    );
    let diff = max_rel_diff(&a, &b);
    assert!(diff < 1e-3, "logits differ: {diff}");
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "smollm2-permuted",
        &d,
        Export::Safetensors(DType::F32),
    );
    assert_found(&p, "smollm2");
}

#[test]
fn smollm2_rotated_with_folded_norms_is_found_also_requantized_and_noisy() {
    let m = smollm();
    let d = apply(m, Transform::HiddenRotate, 2310);
    let (a, b) = (
        llama_logits(m, &LLAMA_TOKENS, SMOLLM_DIMS).unwrap(),
        llama_logits(&d, &LLAMA_TOKENS, SMOLLM_DIMS).unwrap(),
    );
    let diff = max_rel_diff(&a, &b);
    assert!(diff < 1e-3, "logits differ: {diff}");
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "smollm2-rotated",
        &d,
        Export::Safetensors(DType::F32),
    );
    assert_found(&p, "smollm2");
    // The same rotated copy, fine-tuned (5 % noise) and re-quantized to int8.
    let n = apply(&d, Transform::Noise(0.05), 2311);
    let p = write(dir.path(), "smollm2-rotated-noisy-int8", &n, Export::Int8);
    assert_found(&p, "smollm2");
}

/// A Minitron-style width-pruned copy scores well above chance but inside the band the measured
/// impostors cannot resolve: undecided (exit 3), never "no match".
#[test]
fn smollm2_width_pruned_is_undecided_never_no_match() {
    // 3/4 of the residual units and of each layer's neurons kept by importance and re-sorted
    // (a derivative, not the same function).
    let d = apply(smollm(), Transform::WidthPrune(0.75), 2320);
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "smollm2-pruned",
        &d,
        Export::Safetensors(DType::F16),
    );
    let (c, matched, v) = detect(&p);
    assert!(matched.is_empty(), "{v}");
    assert_eq!(c, 3, "{v}");
    let r = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "smollm2")
        .unwrap();
    assert_eq!(r["symmetry"]["verdict"], "undecided", "{r}");
}

//! Fingerprints against a real int8 ONNX re-export: all-MiniLM-L6-v2 run through onnxruntime's
//! `quantize_dynamic` (QInt8 MatMul weights per-tensor and per-channel, UInt8 embeddings) and
//! dequantized back to float32 safetensors by test-models/onnx/make.sh. Both exports must match
//! the real MiniLM's fingerprint at p <= 1e-9 and match no independently initialised zoo BERT.

use std::path::Path;

use sha2::Digest;

use hallmark::detect::{finish, InputKind, KeyTest};
use hallmark::fingerprint::{extract, Fingerprint, Suspect};
use hallmark::weights::DType;
use hallmark_testkit::zoo::{export, Config, Export, ZModel};

const MINILM: &str = "test-models/real/minilm/model.safetensors";
const EXPORT_DIR: &str = "test-models/cache/onnx";
const EXPORTS: [&str; 2] = ["minilm-onnx-int8", "minilm-onnx-int8-per-channel"];
const ALPHA: f64 = 0.01;

/// A fixture path that must exist: a missing one fails the test (never skips it).
fn required(path: &str) -> &Path {
    let p = Path::new(path);
    assert!(p.is_file(), "{path} is missing: run test-models/fetch.sh");
    p
}

/// Fingerprint of an independently initialised zoo BERT written to `dir`.
fn zoo_fingerprint(dir: &Path, cfg: Config, seed: u64, name: &str) -> Fingerprint {
    let p = dir.join(format!("{name}.safetensors"));
    let m = ZModel::generate(cfg, seed);
    std::fs::write(&p, export(&m, Export::Safetensors(DType::F32)).unwrap()).unwrap();
    extract(&p, name).unwrap()
}

/// The result for the registered entry `name` (shared by the fingerprint test modules).
pub(crate) fn by_name<'a>(tests: &'a [KeyTest], name: &str) -> &'a KeyTest {
    tests
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

/// The manifest make.sh wrote describes the exports on disk, and they really are int8 round
/// trips of every linear weight and embedding table, not copies of the original.
#[test]
fn onnx_exports_are_quantized_round_trips() {
    let manifest = required("test-models/cache/onnx/manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let original = std::fs::read(required(MINILM)).unwrap();
    for name in EXPORTS {
        let path = format!("{EXPORT_DIR}/{name}.safetensors");
        let bytes = std::fs::read(required(&path)).unwrap();
        assert_ne!(bytes, original, "{path} is a copy of the original");
        // The manifest describes this very file.
        let sum = format!("{:x}", sha2::Sha256::digest(&bytes));
        let listed = &m["files"][format!("{name}.safetensors")];
        assert_eq!(
            listed, &sum,
            "{path} is not the file manifest.json describes"
        );
        let q = m["variants"][name]["quantized"]
            .as_object()
            .unwrap_or_else(|| panic!("manifest has no quantized list for {name}"));
        // 6 layers x 6 linear weights, the pooler, and the three embedding tables.
        assert_eq!(q.len(), 40, "{name}: {:?}", q.keys().collect::<Vec<_>>());
        for t in [
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "pooler.dense.weight",
        ] {
            assert!(q.contains_key(t), "{name}: {t} was not quantized");
        }
        // Nonzero: really rounded. Below 0.05: the largest measured is 0.031, on the layer-0
        // feed-forward output matrix whose outlier weights set a coarse scale.
        for (t, r) in q {
            let e = r["max_abs_error"].as_f64().unwrap();
            assert!(e > 0.0 && e < 0.05, "{name} {t}: {e}");
        }
    }
}

/// Both dequantized int8 exports match the real MiniLM at p <= 1e-9 (Holm-adjusted over the
/// three registered fingerprints) and neither zoo BERT, whose raw p-values stay above 1e-3.
#[test]
fn int8_onnx_reexports_match_minilm_and_not_zoo_berts() {
    let dir = tempfile::tempdir().unwrap();
    let fp = extract(required(MINILM), "minilm").unwrap();
    // The hard null: an independent model of MiniLM's exact architecture; and a smaller BERT.
    let zoo_minilm = zoo_fingerprint(dir.path(), Config::minilm(), 2024, "zoo-minilm");
    let zoo_bert = zoo_fingerprint(dir.path(), Config::bert(), 12, "zoo-bert");
    for name in EXPORTS {
        let path = format!("{EXPORT_DIR}/{name}.safetensors");
        let s = Suspect::open(required(&path)).unwrap();
        let tests = [&fp, &zoo_minilm, &zoo_bert]
            .iter()
            .map(|f| s.test(f).unwrap())
            .collect();
        let r = finish(path.clone(), InputKind::Weights, tests, ALPHA, None);
        let own = by_name(&r.results, "minilm");
        let d = &own.details;
        let min_score = d["matched_tensors"].as_array().map(|a| {
            a.iter()
                .filter_map(|t| t["score"].as_f64())
                .fold(1.0, f64::min)
        });
        println!(
            "{name}: p {:e} (raw {:e}); residual {}; ffn {}; median corr {}; invariant {}; \
             probes {}; lowest matched-tensor score {min_score:?}",
            own.p_value,
            own.p_raw,
            d["residual"],
            d["ffn"],
            d["alignment_median_corr"],
            d["invariant_similarity"],
            d["probes_matched"],
        );
        assert!(r.matched && own.matched && own.decided, "{name}: {own:?}");
        assert!(own.p_value <= 1e-9, "{name}: p = {}", own.p_value);
        let res = &own.details["residual"];
        assert!(res["units_matched"].as_u64().unwrap() > 0, "{name}: {res}");
        let ffn = &own.details["ffn"];
        assert!(
            ffn["matrices_tested"].as_u64().unwrap() > 0,
            "{name}: {ffn}"
        );
        assert!(
            ffn["neurons_matched"].as_u64().unwrap() > 0,
            "{name}: {ffn}"
        );
        for z in ["zoo-minilm", "zoo-bert"] {
            let t = by_name(&r.results, z);
            println!("{name} vs {z}: p_raw {:e}, decided {}", t.p_raw, t.decided);
            assert!(!t.matched, "{name} matched {z}: {t:?}");
            assert!(t.p_raw > 1e-3, "{name} vs {z}: p_raw {}", t.p_raw);
        }
    }
}

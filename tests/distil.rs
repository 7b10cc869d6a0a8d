//! Fingerprints against students distilled from all-MiniLM-L6-v2 (test-models/kit/src/distil.rs):
//! two 3-layer students, one started from the teacher's layers 0, 2, 4 and one from 1, 3, 5,
//! each trained to reproduce the teacher's last hidden states. The teacher's fingerprint must
//! find both (a smaller model distilled from a registered one), one student's fingerprint must
//! find its sibling (two models distilled from one parent), and no independently initialised
//! zoo BERT of MiniLM's shape may match either.

use std::path::Path;

use super::onnx::by_name;
use hallmark::detect::{finish, InputKind};
use hallmark::fingerprint::{extract, Fingerprint, Suspect};
use hallmark::weights::DType;
use hallmark_testkit::distil::{ensure_student, DistilConfig, Student};
use hallmark_testkit::zoo::{export, Config, Export, ZModel};

const MINILM: &str = "test-models/real/minilm/model.safetensors";
const ALPHA: f64 = 0.01;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn student(first: usize, seed: u64) -> Student {
    let s = ensure_student(root(), &DistilConfig::every_other(first, seed), &|l| {
        eprintln!("{l}")
    })
    .unwrap();
    println!(
        "student {:?}: eval mse {:?}; relative change: embeddings {:.4}, layers {:.4}",
        s.config.layers, s.eval_loss, s.relative_change.word_embeddings, s.relative_change.layers
    );
    s
}

#[test]
fn distilled_students_match_their_teacher_and_each_other() {
    assert!(
        Path::new(MINILM).is_file(),
        "{MINILM} is missing: run test-models/fetch.sh"
    );
    let a = student(0, 1);
    let b = student(1, 2);
    for s in [&a, &b] {
        // Distillation really trained: the held-out loss fell by at least a third, and the
        // parameters moved.
        let (first, last) = (s.eval_loss[0].1, s.eval_loss[s.eval_loss.len() - 1].1);
        assert!(
            last < first * 0.67,
            "{:?}: {first} -> {last}",
            s.config.layers
        );
        assert!(s.relative_change.layers > 1e-3, "{:?}", s.relative_change);
        assert!(
            s.relative_change.word_embeddings > 0.0,
            "{:?}",
            s.relative_change
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let teacher = extract(Path::new(MINILM), "minilm").unwrap();
    let fa = extract(&a.path, "student-a").unwrap();
    let zp = dir.path().join("zoo-minilm.safetensors");
    let z = ZModel::generate(Config::minilm(), 2024);
    std::fs::write(&zp, export(&z, Export::Safetensors(DType::F32)).unwrap()).unwrap();
    let zoo: Fingerprint = extract(&zp, "zoo-minilm").unwrap();
    for (s, expect) in [(&a, vec!["minilm"]), (&b, vec!["minilm", "student-a"])] {
        let suspect = Suspect::open(&s.path).unwrap();
        let tests = [&teacher, &fa, &zoo]
            .iter()
            .map(|f| suspect.test(f).unwrap())
            .collect();
        let r = finish(
            s.path.display().to_string(),
            InputKind::Weights,
            tests,
            ALPHA,
            None,
        );
        for name in &expect {
            let t = by_name(&r.results, name);
            println!(
                "student {:?} vs {name}: p {:e}; residual {}; ffn {}; lineage {}",
                s.config.layers,
                t.p_value,
                t.details["residual"],
                t.details["ffn"],
                t.details["lineage"]
            );
            assert!(
                t.matched && t.decided,
                "{:?} vs {name}: {t:?}",
                s.config.layers
            );
            assert!(
                t.p_value <= 1e-9,
                "{:?} vs {name}: p = {}",
                s.config.layers,
                t.p_value
            );
        }
        // The lineage map says which teacher layer each student layer came from.
        let t = by_name(&r.results, "minilm");
        let found: Vec<(String, String)> = t.details["lineage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["suspect_layer"].is_string() && l["registered_layer"] != "-")
            .map(|l| {
                let f = |k: &str| l[k].as_str().unwrap().to_string();
                (f("registered_layer"), f("suspect_layer"))
            })
            .collect();
        let want: Vec<(String, String)> = s
            .config
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i.to_string()))
            .collect();
        assert_eq!(found, want, "{}", t.details["lineage"]);
        let t = by_name(&r.results, "zoo-minilm");
        println!(
            "student {:?} vs zoo-minilm: p_raw {:e}",
            s.config.layers, t.p_raw
        );
        assert!(!t.matched && t.p_raw > 1e-3, "{:?}: {t:?}", s.config.layers);
    }
}

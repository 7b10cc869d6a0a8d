//! Fingerprints on independently trained models (`test-models/kit`): llama-like and bert-like
//! models trained from different seeds on one tokenizer, one text and one data order are never
//! matched; children of one of them (continued training, a fine-tune) always are; and the
//! models learnt more than token frequencies, so their embeddings carry shared token structure.
//!
//! The set is trained on first use (a few minutes on two cores) and cached under
//! `test-models/cache/trained/`. Every pair is tested twice: on the saved model (tokenizer-sized
//! embedding, whose rows for tokens absent from the text keep their initial values) and on the
//! model restricted to the trained rows (every fingerprint row then carries trained structure).

use std::path::Path;
use std::sync::OnceLock;

use hallmark::detect::ScoreVerdict;
use hallmark::fingerprint::{extract, Fingerprint, Suspect};
use hallmark_testkit::{ensure, FamilyRecord, ModelRecord, Origin, SetConfig, TrainedSet};

/// Significance level at which no independent pair may match (raw p, before any correction).
const ALPHA: f64 = 1e-3;
/// A child must be matched at least this strongly.
const CHILD_P: f64 = 1e-9;
/// How far (nats) every model's final evaluation loss must sit below the unigram entropy (the
/// best context-free predictor). The causal models see every position and end 0.5 to 1.4
/// below (measured); they are held to 0.4, over 3 standard errors of the 512-token evaluation
/// mean. The masked-LM models learn from 15 % of positions and, in this CPU budget, end about
/// 0.2 below, so they are held to 0.1: still only reachable by using context.
fn loss_margin(family: &str) -> f64 {
    if family == "bert" {
        0.1
    } else {
        0.4
    }
}

fn set() -> &'static TrainedSet {
    static SET: OnceLock<TrainedSet> = OnceLock::new();
    SET.get_or_init(|| {
        ensure(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &SetConfig::default(),
            &|l| eprintln!("hallmark-train: {l}"),
        )
        .unwrap_or_else(|e| panic!("training the set of trained nulls failed: {e}"))
    })
}

fn file(set: &TrainedSet, m: &ModelRecord, trained_rows: bool) -> std::path::PathBuf {
    set.path(if trained_rows {
        &m.trained_rows_file
    } else {
        &m.file
    })
}

fn independent(f: &FamilyRecord) -> Vec<&ModelRecord> {
    f.models
        .iter()
        .filter(|m| m.origin == Origin::Independent)
        .collect()
}

fn fingerprints(set: &TrainedSet, ms: &[&ModelRecord], trained_rows: bool) -> Vec<Fingerprint> {
    ms.iter()
        .map(|m| {
            let p = file(set, m, trained_rows);
            extract(&p, &m.name).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

/// Raw p-value, invariant similarity, and the symmetry-invariant line's score and verdict (NaN
/// and `None` when that line did not run).
fn test_sym(
    set: &TrainedSet,
    m: &ModelRecord,
    trained_rows: bool,
    fp: &Fingerprint,
) -> (f64, f64, f64, Option<ScoreVerdict>) {
    let p = file(set, m, trained_rows);
    let t = Suspect::open(&p)
        .and_then(|s| s.test(fp))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        t.decided,
        "{} against {}: undecided: {:?}",
        m.name, fp.name, t.details
    );
    let inv = t.details["invariant_similarity"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let score = t
        .details
        .get("symmetry")
        .and_then(|s| s["score"].as_f64())
        .unwrap_or(f64::NAN);
    (t.p_raw, inv, score, t.score_verdict)
}

fn test(set: &TrainedSet, m: &ModelRecord, trained_rows: bool, fp: &Fingerprint) -> (f64, f64) {
    let (p, inv, _, _) = test_sym(set, m, trained_rows, fp);
    (p, inv)
}

#[test]
fn independently_trained_pairs_are_not_matched() {
    let set = set();
    let mut failures = Vec::new();
    for f in &set.families {
        let ms = independent(f);
        assert!(
            ms.len() >= 5,
            "{}: {} independent models",
            f.family.name(),
            ms.len()
        );
        for trained_rows in [false, true] {
            let fps = fingerprints(set, &ms, trained_rows);
            let mut ps = Vec::new();
            let mut invs = Vec::new();
            let mut scores = Vec::new();
            for (i, fp) in fps.iter().enumerate() {
                for (j, m) in ms.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let (p, inv, score, verdict) = test_sym(set, m, trained_rows, fp);
                    eprintln!(
                        "{} {}: registered {} suspect {}: p_raw {p:.3e}, invariant similarity {inv:.3}, symmetry score {score:.3} ({verdict:?})",
                        f.family.name(),
                        if trained_rows { "trained rows" } else { "full vocabulary" },
                        ms[i].name,
                        m.name
                    );
                    if p <= ALPHA {
                        failures.push(format!("{} -> {}: p_raw {p:e}", ms[i].name, m.name));
                    }
                    // The symmetry line must not match an impostor either (no exit 0).
                    if verdict == Some(ScoreVerdict::Match) {
                        failures.push(format!(
                            "{} -> {}: symmetry score {score}",
                            ms[i].name, m.name
                        ));
                    }
                    scores.push(score);
                    ps.push(p);
                    invs.push(inv);
                }
            }
            let n = ps.len();
            let min = ps.iter().copied().fold(1.0, f64::min);
            let mean_inv = invs.iter().sum::<f64>() / n as f64;
            let max_score = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            eprintln!(
                "{} {}: {n} ordered pairs, min p_raw {min:.3e}, mean invariant similarity {mean_inv:.3}, largest symmetry score {max_score:.3}",
                f.family.name(),
                if trained_rows { "trained rows" } else { "full vocabulary" },
            );
            assert!(n >= 20, "{n} ordered pairs (at least 10 pairs, both ways)");
        }
    }
    assert!(
        failures.is_empty(),
        "independently trained models matched at alpha = {ALPHA}: {failures:?}"
    );
}

#[test]
fn children_of_a_trained_model_are_matched() {
    let set = set();
    for f in &set.families {
        let ms = independent(f);
        let children: Vec<&ModelRecord> = f
            .models
            .iter()
            .filter(|m| m.origin != Origin::Independent)
            .collect();
        assert_eq!(children.len(), 2, "{}: two children", f.family.name());
        for trained_rows in [false, true] {
            let fps = fingerprints(set, &ms, trained_rows);
            for c in &children {
                let (p, inv) = test(set, c, trained_rows, &fps[0]);
                eprintln!(
                    "{} {}: {} against its parent {}: p_raw {p:.3e}, invariant similarity {inv:.3}",
                    f.family.name(),
                    if trained_rows {
                        "trained rows"
                    } else {
                        "full vocabulary"
                    },
                    c.name,
                    ms[0].name
                );
                assert!(
                    p <= CHILD_P,
                    "{} not matched to its parent: p_raw {p:e}",
                    c.name
                );
                // ... and to no unrelated model.
                for (k, fp) in fps.iter().enumerate().skip(1) {
                    let (p, _) = test(set, c, trained_rows, fp);
                    assert!(
                        p > ALPHA,
                        "{} matched to unrelated {}: p_raw {p:e}",
                        c.name,
                        ms[k].name
                    );
                }
            }
        }
    }
}

#[test]
fn trained_models_learnt_more_than_token_frequencies() {
    let set = set();
    for f in &set.families {
        for m in &f.models {
            let first = m.eval_curve.first().map(|p| p.1).unwrap_or(f64::NAN);
            let last = m.final_eval_loss();
            eprintln!(
                "{}: eval loss {first:.3} -> {last:.3}, unigram entropy {:.3}",
                m.name, f.unigram_entropy
            );
            // Children were trained on other slices: their loss on slice A says nothing about
            // whether they learnt (they are checked by being matched to their parent).
            if !matches!(m.origin, Origin::Independent) {
                continue;
            }
            let margin = loss_margin(f.family.name());
            assert!(
                last < f.unigram_entropy - margin,
                "{}: final loss {last:.3} is not {margin} nats below the unigram entropy {:.3}",
                m.name,
                f.unigram_entropy
            );
        }
        // Reported, not asserted: with a small text most of the tokenizer's rows are never
        // trained, which is why every pair is also tested on the trained rows alone.
        let (trained, sampled) = f.fingerprint_rows_trained;
        eprintln!(
            "{}: {trained} of the {sampled} fingerprint rows of the full embedding were trained",
            f.family.name()
        );
    }
}

/// The symmetry-invariant line's impostor distribution, measured like a biometric matcher's:
/// every ordered pair of independently trained models of a family (both files), scored without
/// the cost gate; the false-match rate at the match threshold with its 95 % upper bound, the
/// largest impostor score (which must equal the documented one), and the children's scores
/// against their parent (derived models, for the margin).
#[test]
fn symmetry_line_impostor_scores() {
    use hallmark::fingerprint::invariant::{LARGEST_IMPOSTOR, MATCH_SCORE, UNDECIDED_SCORE};
    let set = set();
    let score = |m: &ModelRecord, trained_rows: bool, fp: &Fingerprint| {
        let p = file(set, m, trained_rows);
        Suspect::open(&p)
            .and_then(|s| s.symmetry(fp))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|(a, _)| a.score)
            .unwrap_or(f32::NAN)
    };
    let (mut impostors, mut genuine) = (Vec::new(), Vec::new());
    for f in &set.families {
        let ms = independent(f);
        let children: Vec<&ModelRecord> = f
            .models
            .iter()
            .filter(|m| m.origin != Origin::Independent)
            .collect();
        for trained_rows in [false, true] {
            let fps = fingerprints(set, &ms, trained_rows);
            let label = if trained_rows {
                "trained rows"
            } else {
                "full vocabulary"
            };
            for (i, fp) in fps.iter().enumerate() {
                for (j, m) in ms.iter().enumerate() {
                    if i != j {
                        let s = score(m, trained_rows, fp);
                        eprintln!(
                            "impostor {} {label}: {} -> {}: {s:.3}",
                            f.family.name(),
                            m.name,
                            ms[i].name
                        );
                        impostors.push(s);
                    }
                }
            }
            for c in &children {
                let s = score(c, trained_rows, &fps[0]);
                eprintln!(
                    "child {} {label}: {} -> {}: {s:.3}",
                    f.family.name(),
                    c.name,
                    ms[0].name
                );
                genuine.push(s);
            }
        }
    }
    let n = impostors.len();
    let max = impostors.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let false_matches = impostors.iter().filter(|&&s| s >= MATCH_SCORE).count();
    let undecided = impostors
        .iter()
        .filter(|&&s| (UNDECIDED_SCORE..MATCH_SCORE).contains(&s))
        .count();
    // One-sided 95 % upper bound on the false-match rate (Clopper-Pearson; 0 of n: 1 - 0.05^(1/n)).
    let upper = if false_matches == 0 {
        1.0 - 0.05f64.powf(1.0 / n as f64)
    } else {
        f64::NAN
    };
    let min_genuine = genuine.iter().copied().fold(f32::INFINITY, f32::min);
    eprintln!(
        "symmetry line: {n} impostor pairs, largest score {max:.3}, false matches at {MATCH_SCORE} \
         {false_matches} (95 % upper bound {upper:.4}), undecided {undecided}; children: smallest \
         score {min_genuine:.3} of {}",
        genuine.len()
    );
    assert!(n >= 80, "{n} impostor pairs");
    assert!(impostors.iter().all(|s| s.is_finite()));
    assert_eq!(false_matches, 0, "impostors matched by the symmetry line");
    // The documented figure (LARGEST_IMPOSTOR) covers this population and the larger one of
    // `benches/impostors.sh`; a larger impostor here means the documentation must be updated,
    // which this prints.
    if max > LARGEST_IMPOSTOR.0 {
        eprintln!("largest impostor {max:.3} exceeds the documented {LARGEST_IMPOSTOR:?}: update docs/fingerprint.md");
    }
}

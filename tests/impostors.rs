//! Issue 23: the symmetry-invariant line measured like a biometric matcher, on a population of
//! impostors (independently initialised models that share a tokenizer, a text and a data order)
//! and of genuine disguised copies of the same models.
//!
//! `impostor_population` is the benchmark (ignored here; `benches/impostors.sh` runs it): three
//! families (llama-like and grouped-query llama-like with SmolLM2's tokenizer, bert-like with
//! MiniLM's) x 20 seeds, every ordered pair scored on both saved files, the false-match rate
//! with its Clopper-Pearson 95 % upper bound, the largest impostor, the weakest genuine copy,
//! and the score-distribution figure. `impostor_subset` runs the same code on 3 seeds per
//! family in CI.

use std::path::Path;

use hallmark::fingerprint::invariant::{MATCH_SCORE, UNDECIDED_SCORE};
use hallmark::fingerprint::{extract, Fingerprint, Suspect};
use hallmark::weights::DType;
use hallmark_testkit::model::Family;
use hallmark_testkit::zoo::{apply, export, Arch, Config, Export, Transform, ZModel};
use hallmark_testkit::{ensure, FamilyRecord, ModelRecord, Origin, SetConfig, TrainedSet};

/// One scored pair of the population.
struct Scored {
    /// Population label (family, file, kind).
    group: String,
    /// Which pair.
    what: String,
    /// The symmetry line's score (NaN when the line did not run).
    score: f32,
}

/// The impostor population, one cached set per family (trained first when absent).
fn trained_sets(cfg: &SetConfig) -> Vec<TrainedSet> {
    cfg.per_family()
        .iter()
        .map(|c| {
            ensure(Path::new(env!("CARGO_MANIFEST_DIR")), c, &|l| {
                eprintln!("hallmark-train: {l}")
            })
            .unwrap_or_else(|e| panic!("training the impostor set failed: {e}"))
        })
        .collect()
}

fn independent(f: &FamilyRecord) -> Vec<&ModelRecord> {
    f.models
        .iter()
        .filter(|m| m.origin == Origin::Independent)
        .collect()
}

fn score(path: &Path, fp: &Fingerprint) -> f32 {
    Suspect::open(path)
        .and_then(|s| s.symmetry(fp))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|(a, _)| a.score)
        .unwrap_or(f32::NAN)
}

/// The zoo's view of a trained model (the disguises need the family and the head counts).
fn zoo_config(set: &TrainedSet, f: &FamilyRecord) -> Config {
    let fc = set
        .config
        .families
        .iter()
        .find(|c| c.family == f.family)
        .expect("family recipe");
    Config {
        arch: if f.family == Family::Bert {
            Arch::Bert
        } else {
            Arch::Llama
        },
        vocab: f.vocab,
        hidden: fc.shape.hidden,
        layers: fc.shape.layers,
        heads: fc.shape.heads,
        intermediate: fc.shape.ffn,
        tied: f.family != Family::Bert,
    }
}

/// The function-preserving disguises a leaker applies for free to a model of family `f`, and
/// the pruned derivative (not function-preserving): `(label, transforms, export, pruned)`.
fn disguises(set: &TrainedSet, f: &FamilyRecord) -> Vec<(String, Vec<Transform>, Export, bool)> {
    use Transform::*;
    let fc = set
        .config
        .families
        .iter()
        .find(|c| c.family == f.family)
        .expect("family recipe");
    let heads = match fc.shape.kv_heads {
        Some(kv) if kv < fc.shape.heads => GroupedHeadPermute(kv),
        _ => HeadPermute,
    };
    let mut out = vec![(
        "permuted".to_string(),
        vec![HiddenPermute, FfnPermute, heads],
        Export::Safetensors(DType::F32),
        false,
    )];
    if f.family != Family::Bert {
        out.push((
            "permuted+rescaled+q8_0".into(),
            vec![HiddenPermute, FfnPermute, heads, NeuronScale],
            Export::Gguf(DType::Q8_0),
            false,
        ));
        out.push((
            "rotated+noise5%".into(),
            vec![HiddenRotate, Noise(0.05)],
            Export::Safetensors(DType::F16),
            false,
        ));
    } else {
        out.push((
            "permuted+noise5%+int8".into(),
            vec![HiddenPermute, FfnPermute, Noise(0.05)],
            Export::Int8,
            false,
        ));
    }
    out.push((
        "width-pruned-75%".into(),
        vec![WidthPrune(0.75)],
        Export::Safetensors(DType::F32),
        true,
    ));
    out
}

/// Score every ordered impostor pair of every family on both saved files, the disguised copies
/// of the first `genuine_seeds` models against their originals, and the derived models that are
/// not the same function (seed 0's children, the width-pruned copies). Returns `(impostors,
/// disguised copies, derived)`.
fn population(
    sets: &[TrainedSet],
    genuine_seeds: usize,
) -> (Vec<Scored>, Vec<Scored>, Vec<Scored>) {
    let (mut imp, mut gen, mut derived) = (Vec::new(), Vec::new(), Vec::new());
    let tmp = tempfile::tempdir().unwrap();
    for (set, f) in sets
        .iter()
        .flat_map(|s| s.families.iter().map(move |f| (s, f)))
    {
        let ms = independent(f);
        for trained_rows in [false, true] {
            let label = format!(
                "{} {}",
                f.family.name(),
                if trained_rows {
                    "trained rows"
                } else {
                    "full vocabulary"
                }
            );
            let files: Vec<_> = ms
                .iter()
                .map(|m| {
                    set.path(if trained_rows {
                        &m.trained_rows_file
                    } else {
                        &m.file
                    })
                })
                .collect();
            let fps: Vec<Fingerprint> = files
                .iter()
                .zip(&ms)
                .map(|(p, m)| {
                    extract(p, &m.name).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                })
                .collect();
            for (j, p) in files.iter().enumerate() {
                let sus = Suspect::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                for (i, fp) in fps.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let s = sus
                        .symmetry(fp)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                        .map(|(a, _)| a.score)
                        .unwrap_or(f32::NAN);
                    imp.push(Scored {
                        group: label.clone(),
                        what: format!("{} -> {}", ms[j].name, ms[i].name),
                        score: s,
                    });
                }
            }
            // Children of seed 0 (continued training, fine-tune): derived, not disguised.
            for c in f.models.iter().filter(|m| m.origin != Origin::Independent) {
                let p = set.path(if trained_rows {
                    &c.trained_rows_file
                } else {
                    &c.file
                });
                derived.push(Scored {
                    group: format!("{} child", f.family.name()),
                    what: format!("{} -> {}", c.name, ms[0].name),
                    score: score(&p, &fps[0]),
                });
            }
            if trained_rows {
                continue;
            }
            // Disguised copies of the first models (full-vocabulary file, as published).
            let cfg = zoo_config(set, f);
            for (k, m) in ms.iter().take(genuine_seeds).enumerate() {
                let orig = ZModel::load(&files[k], cfg).unwrap();
                for (d, ts, e, is_pruned) in disguises(set, f) {
                    let mut z = orig.clone();
                    for (n, t) in ts.iter().enumerate() {
                        z = apply(&z, *t, 2300 + 10 * k as u64 + n as u64);
                    }
                    let p = tmp.path().join(format!("{}-{d}.{}", m.name, e.extension()));
                    std::fs::write(&p, export(&z, e).unwrap()).unwrap();
                    let s = Scored {
                        group: format!("{} {d}", f.family.name()),
                        what: format!("{} {d} -> {}", m.name, m.name),
                        score: score(&p, &fps[k]),
                    };
                    if is_pruned {
                        derived.push(s);
                    } else {
                        gen.push(s);
                    }
                }
            }
        }
    }
    (imp, gen, derived)
}

/// One-sided 95 % Clopper-Pearson upper bound on a rate of `k` events in `n` trials.
fn clopper_pearson_upper(k: usize, n: usize) -> f64 {
    use statrs::distribution::{Beta, ContinuousCDF};
    if k >= n {
        return 1.0;
    }
    if k == 0 {
        return 1.0 - 0.05f64.powf(1.0 / n as f64);
    }
    Beta::new(k as f64 + 1.0, (n - k) as f64)
        .map(|b| b.inverse_cdf(0.95))
        .unwrap_or(1.0)
}

/// Print the population's figures; returns `(false matches, largest impostor, weakest
/// genuine)`.
fn summarise(imp: &[Scored], gen: &[Scored], pruned: &[Scored]) -> (usize, f32, f32) {
    for s in imp.iter().chain(gen).chain(pruned) {
        eprintln!("{}: {}: {:.4}", s.group, s.what, s.score);
    }
    let mut groups: Vec<&str> = imp.iter().map(|s| s.group.as_str()).collect();
    groups.dedup();
    for g in &groups {
        let v: Vec<f32> = imp
            .iter()
            .filter(|s| s.group == *g)
            .map(|s| s.score)
            .collect();
        let fm = v.iter().filter(|&&s| s >= MATCH_SCORE).count();
        let und = v
            .iter()
            .filter(|&&s| (UNDECIDED_SCORE..MATCH_SCORE).contains(&s))
            .count();
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
        eprintln!(
            "impostors {g}: {} ordered pairs, false matches {fm} (95 % upper bound {:.4}), \
             undecided {und}, mean {mean:.3}, largest {max:.3}",
            v.len(),
            clopper_pearson_upper(fm, v.len())
        );
    }
    let n = imp.len();
    let fm = imp.iter().filter(|s| s.score >= MATCH_SCORE).count();
    let und = imp
        .iter()
        .filter(|s| (UNDECIDED_SCORE..MATCH_SCORE).contains(&s.score))
        .count();
    let largest = imp
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .expect("impostors");
    let weakest = gen
        .iter()
        .min_by(|a, b| a.score.total_cmp(&b.score))
        .expect("genuine copies");
    eprintln!(
        "symmetry line: {n} impostor pairs, false matches at {MATCH_SCORE}: {fm} (rate {:.4}, 95 % \
         upper bound {:.4}), undecided {und}; largest impostor {:.4} ({}: {}); weakest genuine \
         copy {:.4} ({}: {}) of {}; margin {:.4}",
        fm as f64 / n as f64,
        clopper_pearson_upper(fm, n),
        largest.score,
        largest.group,
        largest.what,
        weakest.score,
        weakest.group,
        weakest.what,
        gen.len(),
        weakest.score - largest.score
    );
    for p in pruned {
        eprintln!("derived ({}) {}: {:.4}", p.group, p.what, p.score);
    }
    (fm, largest.score, weakest.score)
}

/// The benchmark: 3 families x `HALLMARK_IMPOSTOR_SEEDS` seeds (default 20; `llama:20,gqa:8`
/// gives a count per family, a family left out is skipped), the figures of docs/fingerprint.md
/// ("Impostors") and, with `HALLMARK_IMPOSTOR_PLOT` / `HALLMARK_IMPOSTOR_LOSS_PLOT`, the figures.
#[test]
#[ignore = "benchmark (trains 66 models): benches/impostors.sh"]
fn impostor_population() {
    let spec = std::env::var("HALLMARK_IMPOSTOR_SEEDS").unwrap_or_else(|_| "20".into());
    let seeds_of = |f: Family| -> Option<usize> {
        if let Ok(n) = spec.parse() {
            return Some(n);
        }
        spec.split(',').find_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            (k.trim() == f.name()).then(|| v.trim().parse().ok())?
        })
    };
    // One cached set per family, each under the recipe of `SetConfig::impostors(its seeds)`.
    let cfgs: Vec<SetConfig> = [Family::Llama, Family::Gqa, Family::Bert]
        .into_iter()
        .filter_map(|f| {
            let n = seeds_of(f)?;
            let mut c = SetConfig::impostors(n);
            c.families.retain(|x| x.family == f);
            Some(c)
        })
        .collect();
    assert!(
        !cfgs.is_empty(),
        "HALLMARK_IMPOSTOR_SEEDS `{spec}` names no family"
    );
    let sets: Vec<TrainedSet> = cfgs.iter().flat_map(trained_sets).collect();
    if let Ok(p) = std::env::var("HALLMARK_IMPOSTOR_LOSS_PLOT") {
        // The sets as one, for one figure with a panel per family.
        let mut config = cfgs[0].clone();
        config.families = cfgs.iter().flat_map(|c| c.families.clone()).collect();
        let all = TrainedSet {
            key: sets
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            config,
            families: sets.iter().flat_map(|s| s.families.clone()).collect(),
            seconds: sets.iter().map(|s| s.seconds).sum(),
            dir: Default::default(),
        };
        std::fs::write(&p, hallmark_testkit::plot::loss_curves(&all).unwrap()).unwrap();
        eprintln!("loss curves -> {p}");
    }
    for f in sets.iter().flat_map(|s| &s.families) {
        for m in &f.models {
            eprintln!(
                "{}: eval loss {:.3} -> {:.3} (unigram entropy {:.3}), {:.1} s",
                m.name,
                m.eval_curve[0].1,
                m.final_eval_loss(),
                f.unigram_entropy,
                m.seconds
            );
        }
    }
    for s in &sets {
        eprintln!("set {} ({:.0} s to train)", s.key, s.seconds);
    }
    let (imp, gen, pruned) = population(&sets, 3);
    let (fm, largest, weakest) = summarise(&imp, &gen, &pruned);
    if let Ok(p) = std::env::var("HALLMARK_IMPOSTOR_PLOT") {
        let groups = plot_groups(&imp, &gen, &pruned);
        let png =
            hallmark_testkit::plot::score_strips(&groups, MATCH_SCORE, UNDECIDED_SCORE).unwrap();
        std::fs::write(&p, png).unwrap();
        eprintln!("score distribution -> {p}");
    }
    let pairs: usize = cfgs.iter().map(|c| 2 * c.seeds * (c.seeds - 1)).sum();
    assert_eq!(imp.len(), pairs);
    assert_eq!(fm, 0, "impostors matched by the symmetry line");
    assert!(weakest > largest);
}

/// Per population, its scores, for the figure.
fn plot_groups(imp: &[Scored], gen: &[Scored], pruned: &[Scored]) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = Vec::new();
    let mut push = |g: String, s: f32| match out.iter_mut().find(|x| x.0 == g) {
        Some(x) => x.1.push(s),
        None => out.push((g, vec![s])),
    };
    for s in imp {
        push(format!("impostors {}", s.group), s.score);
    }
    for s in gen {
        push("disguised copies".into(), s.score);
    }
    for s in pruned {
        let kind = if s.group.ends_with("child") {
            "children (continued, fine-tuned)"
        } else {
            "width-pruned copies"
        };
        push(kind.into(), s.score);
    }
    out
}

/// CI's share of the benchmark: the grouped-query family (the shape the CI set of
/// `tests/trained.rs` lacks; its llama and bert families cover the other two) at 3 seeds: 6
/// ordered impostor pairs per file, the children and the disguised copies of seed 0. Its
/// models are the benchmark's seeds 0-2 (a model depends on its seed, not on the set size).
#[test]
fn impostor_subset() {
    let mut cfg = SetConfig::impostors(3);
    cfg.families.retain(|f| f.family == Family::Gqa);
    let sets = trained_sets(&cfg);
    let (imp, gen, pruned) = population(&sets, 1);
    let (fm, largest, weakest) = summarise(&imp, &gen, &pruned);
    assert_eq!(imp.len(), 2 * 6);
    assert!(imp.iter().chain(&gen).all(|s| s.score.is_finite()));
    assert_eq!(fm, 0, "impostors matched by the symmetry line");
    assert!(weakest >= MATCH_SCORE, "a disguised copy is not matched");
    assert!(weakest > largest);
}

/// Simulated impostor pairs ([`hallmark_testkit::sim::SymPair`]): `n` pairs at each reader
/// sharing in `shares`, with 4 shared outlier units; and `n / 10` disguised copies (permuted,
/// sign-flipped, 5 % noise). Returns per share `(share, largest, false matches)` and the
/// weakest copy.
fn simulate(n: usize, shares: &[f32]) -> (Vec<(f32, f32, usize)>, f32) {
    use hallmark_testkit::sim::SymPair;
    let mut out = Vec::new();
    let mut weakest = f32::INFINITY;
    for &share in shares {
        let scores: Vec<f32> = (0..n as u64)
            .map(|k| SymPair::new(64, 128, 4, share, 0x51a0_0000 + k).score())
            .collect();
        let fm = scores.iter().filter(|&&s| s >= MATCH_SCORE).count();
        let und = scores
            .iter()
            .filter(|&&s| (UNDECIDED_SCORE..MATCH_SCORE).contains(&s))
            .count();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = scores.iter().sum::<f32>() / n as f32;
        eprintln!(
            "simulated impostors, reader sharing {share}: {n} pairs, false matches {fm} (95 % \
             upper bound {:.5}), undecided {und}, mean {mean:.3}, largest {max:.3}",
            clopper_pearson_upper(fm, n)
        );
        out.push((share, max, fm));
        for k in 0..(n / 10) as u64 {
            let p = SymPair::new(64, 128, 4, share, 0x51a0_0000 + k);
            weakest = weakest.min(p.copy_score(0.05, k));
        }
    }
    eprintln!("simulated disguised copies: weakest {weakest:.4}");
    (out, weakest)
}

/// The simulator benchmark: 5,000 pairs per reader sharing.
#[test]
#[ignore = "benchmark: benches/impostors.sh"]
fn simulated_impostor_population() {
    let (res, weakest) = simulate(5_000, &[0.0, 0.5, 0.8, 0.95]);
    for (share, _, fm) in res {
        if share <= 0.8 {
            assert_eq!(
                fm, 0,
                "simulated impostors matched at reader sharing {share}"
            );
        }
    }
    assert!(weakest >= MATCH_SCORE);
}

/// CI's share of the simulator: 1,000 pairs at the sharings the documentation claims.
#[test]
fn simulated_impostor_subset() {
    let (res, weakest) = simulate(1_000, &[0.0, 0.8]);
    for (share, max, fm) in res {
        assert_eq!(
            fm, 0,
            "simulated impostors matched at reader sharing {share}"
        );
        assert!(max < MATCH_SCORE);
    }
    assert!(weakest >= MATCH_SCORE);
}

/// Pearson correlation.
fn corr(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64 - ma, *y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (ab / (aa * bb).sqrt()) as f32
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    if v.is_empty() {
        f32::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Where a width-pruned copy's sketches lose agreement: per matrix (paired by name, which the
/// detector never does), the correlation of the registered form with the pruned copy's, and of
/// an *oracle* registered form computed on the kept residual units only (all neurons), with the
/// pruned copy's. Prints the medians. `(model, config)` pairs: a trained llama of the CI set
/// and the real SmolLM2.
#[test]
#[ignore = "diagnosis: benches/impostors.sh"]
fn width_pruning_diagnosis() {
    use hallmark::fingerprint::extract::{sample_rows, SAMPLE_ROWS};
    use hallmark::fingerprint::invariant::{sketch, sketch_tokens};
    use ndarray::{Array2, Axis};
    let ci = ensure(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &SetConfig::default(),
        &|l| eprintln!("hallmark-train: {l}"),
    )
    .unwrap();
    let llama = &ci.families[0];
    let mut cases = vec![(
        "trained llama (hidden 128) s0".to_string(),
        ci.path(&llama.models[0].file),
        zoo_config(&ci, llama),
    )];
    cases.push((
        "SmolLM2-135M".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        Config::smollm2(),
    ));
    let mat = |t: &hallmark_testkit::zoo::ZTensor| {
        Array2::from_shape_vec((t.shape[0], t.shape[1]), t.data.clone()).unwrap()
    };
    for (label, path, cfg) in cases {
        let orig = ZModel::load(&path, cfg).unwrap();
        for keep in [0.75f32, 0.875] {
            let pruned = apply(&orig, Transform::WidthPrune(keep), 2320);
            let h = cfg.hidden;
            let emb = |m: &ZModel| {
                mat(m
                    .tensors
                    .iter()
                    .find(|t| t.name.contains("embed_tokens") || t.name.contains("token_embd"))
                    .unwrap())
            };
            let (e, ep) = (emb(&orig), emb(&pruned));
            let hp = ep.ncols();
            // The kept residual units: each pruned column is an original column.
            let kept: Vec<usize> = (0..hp)
                .map(|j| {
                    (0..h)
                        .find(|&i| (0..8).all(|r| e[[r, i]] == ep[[r, j]]))
                        .expect("pruned column not found")
                })
                .collect();
            let tokens = sketch_tokens(&sample_rows(cfg.vocab, SAMPLE_ROWS));
            let x = e.select(Axis(0), &tokens);
            let xp = ep.select(Axis(0), &tokens);
            let xs = x.select(Axis(1), &kept);
            let (mut direct, mut oracle) = (Vec::new(), Vec::new());
            for t in orig.tensors.iter().filter(|t| t.shape.len() == 2) {
                if t.name.contains("embed_tokens") || t.name.contains("token_embd") {
                    continue;
                }
                let Some(tp) = pruned.tensors.iter().find(|u| u.name == t.name) else {
                    continue;
                };
                let (w, wp) = (mat(t), mat(tp));
                for axis in 0..2 {
                    if w.shape()[axis] != h || wp.shape()[axis] != hp {
                        continue;
                    }
                    let (Some(a), Some(b), Some(c)) = (
                        sketch(&w, axis, &x),
                        sketch(&wp, axis, &xp),
                        sketch(&w.select(Axis(axis), &kept), axis, &xs),
                    ) else {
                        continue;
                    };
                    direct.push(corr(&a, &b));
                    oracle.push(corr(&c, &b));
                }
            }
            eprintln!(
                "{label}, width-pruned to {keep}: {} forms; median correlation with the pruned \
                 copy's form: registered form {:.4}, registered form on the kept residual units \
                 (oracle) {:.4}; smallest {:.4} / {:.4}",
                direct.len(),
                median(direct.clone()),
                median(oracle.clone()),
                direct.iter().copied().fold(f32::INFINITY, f32::min),
                oracle.iter().copied().fold(f32::INFINITY, f32::min),
            );
        }
    }
}

/// Issue 23: a Minitron-style width-pruned copy of a trained model (3/4 of the residual units
/// and of each layer's neurons kept by weight norm and re-sorted, f16) against every
/// independent model of its family in the CI set (`tests/trained.rs`), through the full test
/// (identity tests, gate, symmetry line): matched or undecided against its parent, never "no
/// match", and never matched to another seed.
#[test]
fn width_pruned_trained_copy() {
    use hallmark::detect::ScoreVerdict;
    let set = ensure(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &SetConfig::default(),
        &|l| eprintln!("hallmark-train: {l}"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for f in &set.families {
        let ms = independent(f);
        let orig = ZModel::load(&set.path(&ms[0].file), zoo_config(&set, f)).unwrap();
        let pruned = apply(&orig, Transform::WidthPrune(0.75), 2320);
        let p = tmp
            .path()
            .join(format!("{}-pruned.safetensors", ms[0].name));
        std::fs::write(
            &p,
            export(&pruned, Export::Safetensors(DType::F16)).unwrap(),
        )
        .unwrap();
        let sus = Suspect::open(&p).unwrap();
        for (k, m) in ms.iter().enumerate() {
            let fp = extract(&set.path(&m.file), &m.name).unwrap();
            let t = sus.test(&fp).unwrap();
            let score = t
                .details
                .get("symmetry")
                .and_then(|s| s["score"].as_f64())
                .unwrap_or(f64::NAN);
            eprintln!(
                "{} width-pruned to 3/4 -> {}: p_raw {:.3e}, symmetry score {score:.4}, {:?}",
                ms[0].name, m.name, t.p_raw, t.score_verdict
            );
            if k == 0 {
                // Inside the band the impostors occupy (measured in docs/fingerprint.md,
                // "Width pruning"): undecided (exit 3), never "no match".
                assert!(
                    matches!(
                        t.score_verdict,
                        Some(ScoreVerdict::Match | ScoreVerdict::Undecided)
                    ),
                    "{:?}",
                    t.details
                );
            } else {
                assert_ne!(
                    t.score_verdict,
                    Some(ScoreVerdict::Match),
                    "{:?}",
                    t.details
                );
                assert!(t.p_raw > 1e-3);
            }
        }
    }
}

/// A candidate fix, measured outside the detector: the symmetry line's score with the sketch's
/// token rows preprocessed by maps that commute with an orthogonal map of the residual stream
/// (so a disguised copy's forms stay equal): `plain` (as the detector does), `unit` (each token
/// row scaled to unit length), `centred` (the mean sketch row subtracted, then unit length).
/// Plain forms only (no folded gains), so the disguises are the permutation ones. Prints, per
/// family of the impostor population and variant, the impostor and genuine score ranges.
#[test]
#[ignore = "diagnosis: benches/impostors.sh"]
fn sketch_variants() {
    use hallmark::fingerprint::extract::{sample_rows, SAMPLE_ROWS};
    use hallmark::fingerprint::invariant::{agreement, sketch, sketch_tokens};
    use ndarray::{Array2, Axis};
    type Forms = Vec<Vec<f32>>;
    let emb_name = |n: &str| n.contains("embed_tokens") || n.contains("word_embeddings");
    let forms = |m: &ZModel, variant: usize| -> Forms {
        let e = m.tensors.iter().find(|t| emb_name(&t.name)).unwrap();
        let (v, h) = (e.shape[0], e.shape[1]);
        let tokens = sketch_tokens(&sample_rows(v, SAMPLE_ROWS));
        let e = Array2::from_shape_vec((v, h), e.data.clone()).unwrap();
        let mut x = e.select(Axis(0), &tokens);
        if variant == 2 {
            let mu = x.mean_axis(Axis(0)).unwrap();
            x -= &mu;
        }
        if variant >= 1 {
            for mut r in x.rows_mut() {
                let n = r.dot(&r).sqrt();
                if n > 0.0 {
                    r /= n;
                }
            }
        }
        let mut out = Vec::new();
        for t in m
            .tensors
            .iter()
            .filter(|t| t.shape.len() == 2 && !emb_name(&t.name))
        {
            let w = Array2::from_shape_vec((t.shape[0], t.shape[1]), t.data.clone()).unwrap();
            for axis in 0..2 {
                if w.shape()[axis] == h {
                    out.extend(sketch(&w, axis, &x));
                }
            }
        }
        out
    };
    let score = |reg: &Forms, sus: &Forms| {
        let r: Vec<(Vec<f32>, Option<Vec<f32>>)> = reg.iter().map(|f| (f.clone(), None)).collect();
        let s: Vec<(usize, usize, Vec<f32>)> = sus
            .iter()
            .enumerate()
            .map(|(i, f)| (i, 1, f.clone()))
            .collect();
        agreement(&r, &s).score
    };
    for (f, n) in [(Family::Bert, 8), (Family::Gqa, 8), (Family::Llama, 8)] {
        let mut cfg = SetConfig::impostors(if f == Family::Llama { 20 } else { n });
        cfg.families.retain(|x| x.family == f);
        let set = &trained_sets(&cfg)[0];
        let fam = &set.families[0];
        let zc = zoo_config(set, fam);
        for trained_rows in [false, true] {
            let file = |m: &ModelRecord| {
                set.path(if trained_rows {
                    &m.trained_rows_file
                } else {
                    &m.file
                })
            };
            let zc = Config {
                vocab: if trained_rows {
                    fam.compact_vocab
                } else {
                    fam.vocab
                },
                ..zc
            };
            let ms: Vec<ZModel> = independent(fam)
                .iter()
                .take(n)
                .map(|m| ZModel::load(&file(m), zc).unwrap())
                .collect();
            let heads = if f == Family::Gqa {
                Transform::GroupedHeadPermute(2)
            } else {
                Transform::HeadPermute
            };
            let copies: Vec<ZModel> = ms
                .iter()
                .take(3)
                .enumerate()
                .map(|(k, m)| {
                    let mut z = m.clone();
                    for (i, t) in [
                        Transform::HiddenPermute,
                        Transform::FfnPermute,
                        heads,
                        Transform::Noise(0.05),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        z = apply(&z, t, 4100 + 10 * k as u64 + i as u64);
                    }
                    z
                })
                .collect();
            for (variant, label) in ["plain", "unit", "centred"].iter().enumerate() {
                let fs: Vec<Forms> = ms.iter().map(|m| forms(m, variant)).collect();
                let mut imp = Vec::new();
                for i in 0..fs.len() {
                    for j in 0..fs.len() {
                        if i != j {
                            imp.push(score(&fs[i], &fs[j]));
                        }
                    }
                }
                let gen: Vec<f32> = copies
                    .iter()
                    .enumerate()
                    .map(|(k, c)| score(&fs[k], &forms(c, variant)))
                    .collect();
                let max = imp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mean = imp.iter().sum::<f32>() / imp.len() as f32;
                let fm = imp.iter().filter(|&&s| s >= MATCH_SCORE).count();
                let gmin = gen.iter().copied().fold(f32::INFINITY, f32::min);
                eprintln!(
                    "sketch variant {label}, {} {}: {} impostor pairs, mean {mean:.4}, \
                 largest {max:.4}, >= {MATCH_SCORE}: {fm}; {} permuted + 5 % noise copies, \
                 weakest {gmin:.4}",
                    f.name(),
                    if trained_rows {
                        "trained rows"
                    } else {
                        "full vocabulary"
                    },
                    imp.len(),
                    gen.len()
                );
            }
        }
    }
}

//! Smaller students distilled from all-MiniLM-L6-v2, the fingerprint test's "distilled
//! sibling" positives.
//!
//! The recipe is the one DistilBERT and MiniLM's own L6 models use: the student keeps the
//! teacher's embeddings and every other layer (a 3-layer student from layers 0, 2, 4 or
//! 1, 3, 5), then trains all its parameters to reproduce the teacher's last hidden states on
//! text (mean squared error, AdamW), with the teacher frozen. Two students of one teacher,
//! built from different layers with different data orders, are siblings: neither is the
//! other's copy, both descend from one parent.
//!
//! Everything is seeded and deterministic; [`ensure_student`] caches the student under
//! `test-models/cache/distil/<key>/`, where `<key>` hashes the teacher file, the token stream,
//! the configuration and [`DISTIL_VERSION`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{bert_encode, Gelu, Shape};
use crate::KitError;

/// Bumped when the recipe changes, so the cache trains new students.
pub const DISTIL_VERSION: &str = "hallmark-testkit distil 1";
/// Where students are cached, relative to the repository root.
pub const CACHE: &str = "test-models/cache/distil";
/// The teacher, relative to the repository root.
pub const TEACHER: &str = "test-models/real/minilm/model.safetensors";
/// The teacher's tokenizer.
pub const TOKENIZER: &str = "test-models/real/minilm/tokenizer.json";

/// How one student is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistilConfig {
    /// Teacher layers the student starts from, in order (they become its layers 0, 1, ...).
    pub layers: Vec<usize>,
    /// Seed of the data order.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per batch.
    pub batch: usize,
    /// Tokens per window.
    pub seq: usize,
    /// AdamW learning rate (constant after a linear warm-up of a tenth of the steps).
    pub lr: f64,
}

impl DistilConfig {
    /// The standard student: every other layer starting at `first` (0 or 1), 300 steps of 8
    /// windows of 64 tokens at learning rate 1e-4.
    pub fn every_other(first: usize, seed: u64) -> Self {
        Self {
            layers: (first..6).step_by(2).collect(),
            seed,
            steps: 300,
            batch: 8,
            seq: 64,
            lr: 1e-4,
        }
    }
}

/// A distilled student on disk and how its training went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Student {
    /// The configuration it was made with.
    pub config: DistilConfig,
    /// The student's safetensors file (F32, the teacher's tensor names, layers renumbered).
    #[serde(skip)]
    pub path: PathBuf,
    /// Distillation loss (mean squared error per hidden value) on a held-out batch, by step.
    pub eval_loss: Vec<(usize, f64)>,
    /// Relative change of the student's parameters from where they started:
    /// ||theta - theta_0|| / ||theta_0|| over the word embedding and over the layers.
    pub relative_change: RelativeChange,
    /// Seconds spent training.
    pub seconds: f64,
}

/// How far training moved a student from its initialisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelativeChange {
    /// Over the word-embedding table.
    pub word_embeddings: f64,
    /// Over every transformer-layer matrix and vector.
    pub layers: f64,
}

/// MiniLM-L6-H384's shape with `layers` blocks and `seq` positions.
fn shape(layers: usize, seq: usize) -> Shape {
    Shape {
        hidden: 384,
        layers,
        heads: 12,
        ffn: 1536,
        seq,
        kv_heads: None,
    }
}

/// Read every F32 tensor of a safetensors file.
fn read_f32(path: &Path) -> Result<HashMap<String, Tensor>, KitError> {
    let bytes = std::fs::read(path).map_err(crate::io(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| KitError::Bad(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, Tensor::from_vec(data, view.shape(), &Device::Cpu)?);
    }
    Ok(out)
}

/// The student's parameters (teacher names, layers renumbered), initialised from the teacher.
fn init_student(
    teacher: &HashMap<String, Tensor>,
    layers: &[usize],
) -> Result<Vec<(String, Var)>, KitError> {
    let mut names: Vec<&String> = teacher.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let new_name = if name.starts_with("embeddings.") {
            name.clone()
        } else if let Some(rest) = name.strip_prefix("encoder.layer.") {
            let (l, tail) = rest
                .split_once('.')
                .ok_or_else(|| KitError::Bad(format!("odd tensor name `{name}`")))?;
            let l: usize = l
                .parse()
                .map_err(|_| KitError::Bad(format!("odd tensor name `{name}`")))?;
            match layers.iter().position(|&x| x == l) {
                Some(i) => format!("encoder.layer.{i}.{tail}"),
                None => continue,
            }
        } else {
            // The pooler is not part of the sentence-embedding student.
            continue;
        };
        out.push((new_name, Var::from_tensor(&teacher[name].copy()?)?));
    }
    Ok(out)
}

/// `||a - b|| / ||b||` over the named tensors selected by `pick`.
fn relative_change(
    now: &[(String, Var)],
    start: &HashMap<String, Tensor>,
    pick: impl Fn(&str) -> bool,
) -> Result<f64, KitError> {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (name, v) in now.iter().filter(|(name, _)| pick(name)) {
        let s = &start[name];
        d += (v.as_tensor() - s)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        n += s.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok((d / n.max(f64::MIN_POSITIVE)).sqrt())
}

/// The token stream of the human corpus under the teacher's tokenizer (documents joined by
/// `[SEP]`).
fn stream(root: &Path) -> Result<Vec<u32>, KitError> {
    let tp = root.join(TOKENIZER);
    let tok = hallmark::tokenizer::Tokenizer::from_path(&tp)
        .map_err(|e| KitError::Bad(format!("{}: {e} (run test-models/fetch.sh)", tp.display())))?;
    let sep = tok
        .token_id("[SEP]")
        .ok_or_else(|| KitError::Bad(format!("{}: no [SEP] token", tp.display())))?;
    let mut out = Vec::new();
    for d in crate::corpus::documents(root)? {
        out.extend(tok.encode(&d).map_err(|e| KitError::Bad(e.to_string()))?);
        out.push(sep);
    }
    Ok(out)
}

fn windows(text: &[u32], n: usize, t: usize, rng: &mut ChaCha8Rng) -> Result<Tensor, KitError> {
    if text.len() <= t {
        return Err(KitError::Bad("corpus shorter than one window".into()));
    }
    let mut w = Vec::with_capacity(n * t);
    for _ in 0..n {
        let at = rng.gen_range(0..text.len() - t);
        w.extend_from_slice(&text[at..at + t]);
    }
    Ok(Tensor::from_vec(w, (n, t), &Device::Cpu)?)
}

/// The student for `cfg` under the repository at `root`: read from the cache, or distilled
/// (and cached) when absent. `log` receives progress lines.
pub fn ensure_student(
    root: &Path,
    cfg: &DistilConfig,
    log: &dyn Fn(&str),
) -> Result<Student, KitError> {
    let teacher_path = root.join(TEACHER);
    let teacher_bytes = std::fs::read(&teacher_path).map_err(|e| {
        KitError::Bad(format!(
            "{}: {e} (run test-models/fetch.sh)",
            teacher_path.display()
        ))
    })?;
    let text = stream(root)?;
    let mut h = blake3::Hasher::new();
    h.update(DISTIL_VERSION.as_bytes());
    h.update(&serde_json::to_vec(cfg).map_err(|e| KitError::Bad(e.to_string()))?);
    h.update(blake3::hash(&teacher_bytes).as_bytes());
    for t in &text {
        h.update(&t.to_le_bytes());
    }
    drop(teacher_bytes);
    let key = hex::encode(&h.finalize().as_bytes()[..8]);
    let dir = root.join(CACHE).join(&key);
    let record = dir.join("student.json");
    let model = dir.join("student.safetensors");
    if record.exists() && model.exists() {
        let bytes = std::fs::read(&record).map_err(crate::io(&record))?;
        let mut s: Student = serde_json::from_slice(&bytes)
            .map_err(|e| KitError::Bad(format!("{}: {e}", record.display())))?;
        s.path = model;
        return Ok(s);
    }
    std::fs::create_dir_all(&dir).map_err(crate::io(&dir))?;
    let mut s = distil(&teacher_path, &text, cfg, log)?;
    let tensors =
        s.1.iter()
            .map(|(n, v)| -> Result<_, KitError> {
                let t = v.as_tensor();
                Ok((
                    n.clone(),
                    t.dims().to_vec(),
                    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
    crate::write(&model, &crate::model::safetensors_bytes(&tensors)?)?;
    let json = serde_json::to_vec_pretty(&s.0).map_err(|e| KitError::Bad(e.to_string()))?;
    crate::write(&record, &json)?;
    s.0.path = model;
    Ok(s.0)
}

/// Distil one student; returns its record and parameters.
fn distil(
    teacher_path: &Path,
    text: &[u32],
    cfg: &DistilConfig,
    log: &dyn Fn(&str),
) -> Result<(Student, Vec<(String, Var)>), KitError> {
    let teacher = read_f32(teacher_path)?;
    let student = init_student(&teacher, &cfg.layers)?;
    let start: HashMap<String, Tensor> = student
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect::<Result<_, KitError>>()?;
    let ts = shape(6, cfg.seq);
    let ss = shape(cfg.layers.len(), cfg.seq);
    let tget = |n: &str| -> Result<Tensor, KitError> {
        teacher
            .get(n)
            .cloned()
            .ok_or_else(|| KitError::Bad(format!("teacher has no `{n}`")))
    };
    let index: HashMap<&str, &Var> = student.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let sget = |n: &str| -> Result<Tensor, KitError> {
        index
            .get(n)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| KitError::Bad(format!("student has no `{n}`")))
    };
    let all: Vec<usize> = (0..6).collect();
    let own: Vec<usize> = (0..cfg.layers.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // A held-out batch from a fixed seed, the same for every student.
    let eval_in = windows(text, 8, cfg.seq, &mut ChaCha8Rng::seed_from_u64(u64::MAX))?;
    let eval_target = bert_encode(&tget, &eval_in, &all, &ts, Gelu::Erf)?;
    let eval_loss = |sget: &dyn Fn(&str) -> Result<Tensor, KitError>| -> Result<f64, KitError> {
        let y = bert_encode(sget, &eval_in, &own, &ss, Gelu::Erf)?;
        Ok((y - &eval_target)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
    };
    let mut curve = vec![(0, eval_loss(&sget)?)];
    let vars: Vec<Var> = student.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let warmup = (cfg.steps / 10).max(1);
    let t0 = Instant::now();
    for step in 0..cfg.steps {
        opt.set_learning_rate(cfg.lr * ((step + 1) as f64 / warmup as f64).min(1.0));
        let input = windows(text, cfg.batch, cfg.seq, &mut rng)?;
        let target = bert_encode(&tget, &input, &all, &ts, Gelu::Erf)?.detach();
        let y = bert_encode(&sget, &input, &own, &ss, Gelu::Erf)?;
        let loss = (y - target)?.sqr()?.mean_all()?;
        let l = loss.to_scalar::<f32>()?;
        if !l.is_finite() {
            return Err(KitError::Bad(format!(
                "distillation diverged at step {step}"
            )));
        }
        opt.backward_step(&loss)?;
        let done = step + 1;
        if done % 25 == 0 || done == cfg.steps {
            curve.push((done, eval_loss(&sget)?));
            log(&format!(
                "distil {:?}: step {done}/{}: eval mse {:.4} ({:.0} s)",
                cfg.layers,
                cfg.steps,
                curve[curve.len() - 1].1,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    let relative_change = RelativeChange {
        word_embeddings: relative_change(&student, &start, |n| {
            n == "embeddings.word_embeddings.weight"
        })?,
        layers: relative_change(&student, &start, |n| n.starts_with("encoder."))?,
    };
    Ok((
        Student {
            config: cfg.clone(),
            path: PathBuf::new(),
            eval_loss: curve,
            relative_change,
            seconds: t0.elapsed().as_secs_f64(),
        },
        student,
    ))
}

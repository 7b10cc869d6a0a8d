//! Independently trained small models for testing hallmark's weight fingerprints.
//!
//! The fingerprint test's null is "the suspect was initialised independently, then trained on
//! anything". This crate makes that null concrete: llama-like and bert-like models, trained on
//! the CPU from different seeds with one tokenizer (SmolLM2's, MiniLM's), one text and one data
//! order, so that they share everything except their initialisation; and, as positives, two
//! children of seed 0 per family (continued training on another slice of the text, and a
//! fine-tune at a lower learning rate on a third slice).
//!
//! Everything is seeded and deterministic. [`ensure`] returns the set from
//! `test-models/cache/trained/<key>/`, training it first when the cache lacks it; `<key>` hashes
//! the configuration, the token streams and [`KIT_VERSION`], so a change to any of them trains a
//! new set. The `hallmark-train` binary regenerates the set and draws the loss curves.

#![warn(missing_docs)]

pub mod corpus;
pub mod distil;
pub mod forward;
pub mod model;
pub mod plot;
pub mod sim;
pub mod zoo;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use corpus::Corpus;
use model::{Family, Shape};

/// Bumped whenever training changes in a way the configuration does not show.
pub const KIT_VERSION: &str = "hallmark-testkit 1";

/// Cache directory of trained sets, relative to the repository root.
pub const CACHE: &str = "test-models/cache/trained";

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A file that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Anything else (bad corpus, bad tokenizer, bad manifest).
    #[error("{0}")]
    Bad(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KitError + '_ {
    move |source| KitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Training recipe of one family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FamilyConfig {
    /// Architecture.
    pub family: Family,
    /// Model shape.
    pub shape: Shape,
    /// Sequences per step.
    pub batch: usize,
    /// Pre-training steps of every independent model.
    pub steps: usize,
    /// Peak learning rate (AdamW; linear warm-up, cosine decay to a tenth).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Steps of each child.
    pub child_steps: usize,
    /// Peak learning rate of the fine-tuned child.
    pub ft_lr: f64,
    /// Steps between evaluations of the fixed evaluation batch.
    pub eval_every: usize,
}

/// The whole set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetConfig {
    /// Independent models per family (seeds `0..seeds`).
    pub seeds: usize,
    /// Seed of the data order and masks, shared by all independent models.
    pub data_seed: u64,
    /// Tokens in slices A (pre-training), B (continued training), C (fine-tuning).
    pub slice_tokens: [usize; 3],
    /// Sequences in the fixed evaluation batch (drawn from slice A).
    pub eval_batch: usize,
    /// The families.
    pub families: Vec<FamilyConfig>,
}

impl SetConfig {
    /// The impostor population of the symmetry-invariant line (issue 23), run as a benchmark
    /// outside CI (`benches/impostors.sh`): three families (llama-like and grouped-query
    /// llama-like with SmolLM2's tokenizer, bert-like with MiniLM's) x `seeds` independent
    /// models, smaller than the CI set's (hidden 64, 250 steps) so that 66 models train on a
    /// shared two-core machine within an hour. Trained one family per set
    /// ([`SetConfig::per_family`]), so each family is cached as soon as it is done.
    pub fn impostors(seeds: usize) -> Self {
        let fam = |family, kv_heads, batch| FamilyConfig {
            family,
            shape: Shape {
                hidden: 64,
                layers: 2,
                heads: 4,
                ffn: 256,
                seq: 32,
                kv_heads,
            },
            batch,
            steps: 250,
            lr: 8e-3,
            weight_decay: 0.01,
            warmup: 20,
            child_steps: 60,
            ft_lr: 8e-3 / 5.0,
            eval_every: 25,
        };
        Self {
            seeds,
            data_seed: 20_260_101,
            slice_tokens: [16_000, 4_000, 4_000],
            eval_batch: 16,
            families: vec![
                fam(Family::Llama, None, 8),
                fam(Family::Gqa, Some(2), 8),
                fam(Family::Bert, None, 8),
            ],
        }
    }

    /// One configuration per family (the same recipe), each its own cached set.
    pub fn per_family(&self) -> Vec<SetConfig> {
        self.families
            .iter()
            .map(|f| SetConfig {
                families: vec![f.clone()],
                ..self.clone()
            })
            .collect()
    }
}

impl Default for SetConfig {
    fn default() -> Self {
        let fam = |family, seq, batch, steps, lr| FamilyConfig {
            family,
            shape: Shape {
                hidden: 128,
                layers: 2,
                heads: 4,
                ffn: 512,
                seq,
                kv_heads: None,
            },
            batch,
            steps,
            lr,
            weight_decay: 0.01,
            warmup: 20,
            child_steps: steps / 4,
            ft_lr: lr / 5.0,
            eval_every: 15,
        };
        Self {
            seeds: 5,
            data_seed: 20_260_101,
            slice_tokens: [16_000, 4_000, 4_000],
            eval_batch: 16,
            families: vec![
                fam(Family::Llama, 32, 8, 400, 8e-3),
                fam(Family::Bert, 32, 16, 400, 8e-3),
            ],
        }
    }
}

/// How a model came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Trained from its own seed on slice A.
    Independent,
    /// Seed 0's weights, trained further on slice B at the pre-training learning rate.
    Continued,
    /// Seed 0's weights, fine-tuned on slice C at a fifth of the learning rate.
    FineTuned,
}

/// One trained model of the set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Name (also the file stem).
    pub name: String,
    /// How it came about.
    pub origin: Origin,
    /// Initialisation seed (the parent's, for a child).
    pub seed: u64,
    /// The model with the tokenizer-sized embedding (F32 safetensors), relative to the set.
    pub file: String,
    /// The same model with its embedding restricted to the corpus tokens.
    pub trained_rows_file: String,
    /// `(step, mean training loss over the steps since the previous point)`.
    pub train_curve: Vec<(usize, f64)>,
    /// `(step, loss on the fixed evaluation batch)`; the first point is before any step.
    pub eval_curve: Vec<(usize, f64)>,
    /// Wall time of its training, seconds.
    pub seconds: f64,
}

impl ModelRecord {
    /// The last evaluation loss.
    pub fn final_eval_loss(&self) -> f64 {
        self.eval_curve.last().map(|p| p.1).unwrap_or(f64::NAN)
    }
}

/// One family's models and the facts about its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// Architecture.
    pub family: Family,
    /// Tokenizer vocabulary (rows of the saved embedding).
    pub vocab: usize,
    /// Distinct tokens in the corpus (rows trained; the output softmax's size).
    pub compact_vocab: usize,
    /// Entropy of slice A's unigram distribution (nats): the best context-free loss.
    pub unigram_entropy: f64,
    /// Of the token rows a fingerprint samples from the full embedding, how many were trained.
    pub fingerprint_rows_trained: (usize, usize),
    /// Independent models first (seed order), then the two children.
    pub models: Vec<ModelRecord>,
}

/// A trained set, as stored in its cache directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedSet {
    /// Cache key.
    pub key: String,
    /// The recipe.
    pub config: SetConfig,
    /// Per family.
    pub families: Vec<FamilyRecord>,
    /// Wall time of the whole generation, seconds.
    pub seconds: f64,
    /// The directory it was loaded from (not stored).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl TrainedSet {
    /// Path of a model file named in a record.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// The tokenizer files of the two families, relative to the repository root.
pub fn tokenizer_path(f: Family) -> &'static str {
    match f {
        Family::Llama | Family::Gqa => "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        Family::Bert => "test-models/real/minilm/tokenizer.json",
    }
}

/// Environment variable naming another file with the same tokenizer as
/// [`tokenizer_path`]`(f)` (a `tokenizer.json` exported from the GGUF, where the GGUF is absent).
/// The cache key hashes the token streams, so the set is the same either way.
pub fn tokenizer_env(f: Family) -> &'static str {
    match f {
        Family::Llama | Family::Gqa => "HALLMARK_TESTKIT_LLAMA_TOKENIZER",
        Family::Bert => "HALLMARK_TESTKIT_BERT_TOKENIZER",
    }
}

/// Tokenize the corpus for family `f`.
pub fn load_corpus(root: &Path, f: Family, cfg: &SetConfig) -> Result<Corpus, KitError> {
    let tp = match std::env::var_os(tokenizer_env(f)) {
        Some(p) => PathBuf::from(p),
        None => root.join(tokenizer_path(f)),
    };
    if !tp.exists() {
        return Err(KitError::Bad(format!(
            "{} is missing: run test-models/fetch.sh",
            tp.display()
        )));
    }
    let tok = hallmark::tokenizer::Tokenizer::from_path(&tp)
        .map_err(|e| KitError::Bad(format!("{}: {e}", tp.display())))?;
    let docs = corpus::documents(root)?;
    let id = |s: &str| {
        tok.token_id(s)
            .ok_or_else(|| KitError::Bad(format!("{}: no `{s}` token", tp.display())))
    };
    let (sep, mask) = match f {
        Family::Llama | Family::Gqa => (id("<|endoftext|>")?, None),
        Family::Bert => (id("[SEP]")?, Some(id("[MASK]")?)),
    };
    Corpus::build(&tok, &docs, sep, mask, cfg.slice_tokens)
}

fn cache_key(cfg: &SetConfig, corpora: &[Corpus]) -> Result<String, KitError> {
    let mut h = blake3::Hasher::new();
    h.update(KIT_VERSION.as_bytes());
    h.update(&serde_json::to_vec(cfg).map_err(|e| KitError::Bad(e.to_string()))?);
    for c in corpora {
        h.update(&(c.vocab as u64).to_le_bytes());
        for t in c.tokens.iter().chain(c.slices.iter().flatten()) {
            h.update(&t.to_le_bytes());
        }
    }
    Ok(hex::encode(&h.finalize().as_bytes()[..8]))
}

/// The trained set for `cfg` under the repository at `root`: read from the cache, or trained
/// (and cached) when absent. `log` receives one line per trained model.
pub fn ensure(
    root: &Path,
    cfg: &SetConfig,
    log: &(dyn Fn(&str) + Sync),
) -> Result<TrainedSet, KitError> {
    let corpora = cfg
        .families
        .iter()
        .map(|f| load_corpus(root, f.family, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    let key = cache_key(cfg, &corpora)?;
    let dir = root.join(CACHE).join(&key);
    let manifest = dir.join("manifest.json");
    if manifest.exists() {
        let bytes = std::fs::read(&manifest).map_err(io(&manifest))?;
        let mut set: TrainedSet = serde_json::from_slice(&bytes)
            .map_err(|e| KitError::Bad(format!("{}: {e}", manifest.display())))?;
        set.dir = dir;
        return Ok(set);
    }
    generate(root, cfg, &corpora, &key, log)
}

/// Learning rate at `step` of `steps`: linear warm-up, then cosine decay to a tenth.
fn lr_at(peak: f64, warmup: usize, step: usize, steps: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// A model being trained.
struct Run {
    params: model::Params,
    init_embedding: Vec<f32>,
    /// Product of AdamW's decay factors so far (what untouched embedding rows are scaled by).
    decay: f64,
}

struct Curves {
    train: Vec<(usize, f64)>,
    eval: Vec<(usize, f64)>,
}

#[allow(clippy::too_many_arguments)]
fn train(
    fc: &FamilyConfig,
    c: &Corpus,
    run: &mut Run,
    text: &[u32],
    steps: usize,
    lr: f64,
    data: &mut ChaCha8Rng,
    eval: &model::Batch,
    k: &model::Consts,
    progress: &mut dyn FnMut(&str),
) -> Result<Curves, KitError> {
    let f = fc.family;
    let s = &fc.shape;
    let params = candle_nn::ParamsAdamW {
        lr,
        weight_decay: fc.weight_decay,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(run.params.all(), params)?;
    let warmup = fc.warmup.min(steps / 4).max(1);
    let eval_loss = |p: &model::Params| -> Result<f64, KitError> {
        Ok(model::loss(f, p, s, k, eval)?.detach().to_scalar::<f32>()? as f64)
    };
    let mut curves = Curves {
        train: Vec::new(),
        eval: vec![(0, eval_loss(&run.params)?)],
    };
    let mut acc = (0.0, 0usize);
    let t0 = Instant::now();
    for step in 0..steps {
        let lr_t = lr_at(lr, warmup, step, steps);
        opt.set_learning_rate(lr_t);
        run.decay *= 1.0 - lr_t * fc.weight_decay;
        let b = model::batch(f, s, c, text, fc.batch, data)?;
        let loss = model::loss(f, &run.params, s, k, &b)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(KitError::Bad(format!("training diverged at step {step}")));
        }
        opt.backward_step(&loss)?;
        acc = (acc.0 + l, acc.1 + 1);
        let done = step + 1;
        if done % fc.eval_every == 0 || done == steps {
            curves.train.push((done, acc.0 / acc.1 as f64));
            acc = (0.0, 0);
            curves.eval.push((done, eval_loss(&run.params)?));
            if let Some((_, l)) = curves.eval.last() {
                progress(&format!(
                    "step {done}/{steps}: eval loss {l:.3} ({:.1} s)",
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
    }
    Ok(curves)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), KitError> {
    hallmark::fsutil::write_atomic(path, bytes, hallmark::fsutil::WriteMode::Public)
        .map_err(io(path))
}

fn save(
    dir: &Path,
    name: &str,
    f: Family,
    run: &Run,
    c: &Corpus,
) -> Result<(String, String), KitError> {
    let file = format!("{name}.safetensors");
    let rows = format!("{name}.trained-rows.safetensors");
    for (out, full) in [(&file, true), (&rows, false)] {
        let ts = model::tensors(f, &run.params, c, &run.init_embedding, run.decay, full)?;
        write(&dir.join(out), &model::safetensors_bytes(&ts)?)?;
    }
    Ok((file, rows))
}

/// At most one model trains per available core (a set of 60 models would otherwise run 60
/// threads at once on two cores). Training is deterministic per model, so the gate changes
/// only the order in which models finish.
struct Gate {
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

static GATE: Gate = Gate {
    busy: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

/// A slot of [`GATE`], given back on drop.
struct Slot;

impl Slot {
    fn take() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut busy = GATE.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= cores {
            busy = GATE.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = GATE.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        GATE.freed.notify_one();
    }
}

/// Run `job` on a private one-thread rayon pool, so that candle's matrix products stay on the
/// thread that trains this model and models train side by side without contending for one pool.
fn single_threaded<T: Send>(
    job: impl FnOnce() -> Result<T, KitError> + Send,
) -> Result<T, KitError> {
    let _slot = Slot::take();
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| KitError::Bad(format!("thread pool: {e}")))?
        .install(job)
}

/// Train one model from `run` and save it; returns its record and final state.
#[allow(clippy::too_many_arguments)]
fn one_model(
    dir: &Path,
    fc: &FamilyConfig,
    c: &Corpus,
    mut run: Run,
    (name, origin, seed): (String, Origin, u64),
    (slice, steps, lr, data_seed): (usize, usize, f64, u64),
    eval: &model::Batch,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(ModelRecord, Run), KitError> {
    let t0 = Instant::now();
    let k = model::Consts::new(&fc.shape)?;
    let mut data = ChaCha8Rng::seed_from_u64(data_seed);
    let curves = train(
        fc,
        c,
        &mut run,
        &c.slices[slice],
        steps,
        lr,
        &mut data,
        eval,
        &k,
        &mut |l| log(&format!("{name}: {l}")),
    )?;
    let (file, trained_rows_file) = save(dir, &name, fc.family, &run, c)?;
    let rec = ModelRecord {
        name,
        origin,
        seed,
        file,
        trained_rows_file,
        train_curve: curves.train,
        eval_curve: curves.eval,
        seconds: t0.elapsed().as_secs_f64(),
    };
    log(&format!(
        "{}: eval loss {:.3} -> {:.3} in {:.1} s",
        rec.name,
        rec.eval_curve[0].1,
        rec.final_eval_loss(),
        rec.seconds
    ));
    Ok((rec, run))
}

fn train_family(
    dir: &Path,
    cfg: &SetConfig,
    fc: &FamilyConfig,
    c: &Corpus,
    log: &(dyn Fn(&str) + Sync),
) -> Result<FamilyRecord, KitError> {
    let f = fc.family;
    let mut eval_rng = ChaCha8Rng::seed_from_u64(cfg.data_seed ^ 0xE7A1);
    let eval = model::batch(f, &fc.shape, c, &c.slices[0], cfg.eval_batch, &mut eval_rng)?;
    let fam_seed: u64 = match f {
        Family::Llama => 0x11a3a,
        Family::Bert => 0xbe27,
        Family::Gqa => 0x6a4,
    };
    let eval = &eval;
    // Independent models, one thread each. One data order for every seed: the models differ
    // only in their initialisation.
    let results = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..cfg.seeds as u64)
            .map(|seed| {
                sc.spawn(move || {
                    single_threaded(|| {
                        let mut rng = ChaCha8Rng::seed_from_u64(fam_seed * 1000 + seed);
                        let (params, init_embedding) = model::init(f, &fc.shape, c, &mut rng)?;
                        let run = Run {
                            params,
                            init_embedding,
                            decay: 1.0,
                        };
                        let name = format!("{}-s{seed}", f.name());
                        one_model(
                            dir,
                            fc,
                            c,
                            run,
                            (name, Origin::Independent, seed),
                            (0, fc.steps, fc.lr, cfg.data_seed),
                            eval,
                            log,
                        )
                    })
                })
            })
            .collect();
        join_all(handles)
    })?;
    let mut models = Vec::new();
    let mut parent = None;
    for (rec, run) in results {
        if rec.seed == 0 {
            parent = Some(run);
        }
        models.push(rec);
    }
    let parent = parent.ok_or_else(|| KitError::Bad("no seeds".into()))?;
    let parent = &parent;
    let children = std::thread::scope(|sc| {
        let handles: Vec<_> = [
            (Origin::Continued, 1, fc.lr, "cont"),
            (Origin::FineTuned, 2, fc.ft_lr, "ft"),
        ]
        .into_iter()
        .map(|(origin, slice, lr, tag)| {
            sc.spawn(move || {
                single_threaded(|| {
                    let run = Run {
                        params: parent.params.deep_clone()?,
                        init_embedding: parent.init_embedding.clone(),
                        decay: parent.decay,
                    };
                    one_model(
                        dir,
                        fc,
                        c,
                        run,
                        (format!("{}-s0-{tag}", f.name()), origin, 0),
                        (slice, fc.child_steps, lr, cfg.data_seed + 1 + slice as u64),
                        eval,
                        log,
                    )
                })
            })
        })
        .collect();
        join_all(handles)
    })?;
    models.extend(children.into_iter().map(|(rec, _)| rec));
    let sampled = hallmark::fingerprint::extract::sample_rows(
        c.vocab,
        hallmark::fingerprint::extract::SAMPLE_ROWS,
    );
    let trained = sampled
        .iter()
        .filter(|&&t| c.tokens.binary_search(&(t as u32)).is_ok())
        .count();
    Ok(FamilyRecord {
        family: f,
        vocab: c.vocab,
        compact_vocab: c.tokens.len(),
        unigram_entropy: c.unigram_entropy(0),
        fingerprint_rows_trained: (trained, sampled.len()),
        models,
    })
}

fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, KitError>>>,
) -> Result<Vec<T>, KitError> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| KitError::Bad("a training thread panicked".into()))?
        })
        .collect()
}

fn generate(
    root: &Path,
    cfg: &SetConfig,
    corpora: &[Corpus],
    key: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<TrainedSet, KitError> {
    let t0 = Instant::now();
    let base = root.join(CACHE);
    std::fs::create_dir_all(&base).map_err(io(&base))?;
    // Built in a private directory and renamed into place, so a reader sees all or nothing.
    let tmp = base.join(format!(".tmp-{key}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // One thread per family, and one per model within it (see `single_threaded`).
    let tmp_ref = &tmp;
    let families = std::thread::scope(|sc| {
        let handles: Vec<_> = cfg
            .families
            .iter()
            .zip(corpora)
            .map(|(fc, c)| sc.spawn(move || train_family(tmp_ref, cfg, fc, c, log)))
            .collect();
        join_all(handles)
    });
    let families = match families {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let mut set = TrainedSet {
        key: key.to_string(),
        config: cfg.clone(),
        families,
        seconds: t0.elapsed().as_secs_f64(),
        dir: PathBuf::new(),
    };
    let json = serde_json::to_vec_pretty(&set).map_err(|e| KitError::Bad(e.to_string()))?;
    write(&tmp.join("manifest.json"), &json)?;
    let dir = base.join(key);
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process finished the same set first: keep its copy.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join("manifest.json").exists() {
            return Err(KitError::Io {
                path: dir,
                source: e,
            });
        }
    }
    set.dir = dir;
    Ok(set)
}

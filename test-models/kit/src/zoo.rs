//! The model zoo: a deterministic generator of small llama-like and bert-like models and of
//! the transformed copies a leak investigation meets (re-quantized, converted to GGUF,
//! fine-tuned, pruned, permuted, renamed, transposed, layer-dropped, vocabulary-extended,
//! LoRA-merged). Used by the `hallmark-zoo` binary (test-models/zoo), the tests and the benches.
//!
//! The zoo knows tensor names (it has to, to transform a model the way real tools do); the
//! detector never uses them.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use hallmark::weights::write::{gguf_bytes, safetensors_bytes, OwnedTensor};
use hallmark::weights::{dequant, DType, MetaValue, WeightFile};

/// Architecture family (decides tensor names and which axes carry heads and neurons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Pre-norm decoder: q/k/v/o, gate/up/down, RMSNorm, optional tied head.
    Llama,
    /// Post-norm encoder with biases and LayerNorm (BERT, MiniLM).
    Bert,
}

/// Sizes of a generated model.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Family.
    pub arch: Arch,
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN width.
    pub intermediate: usize,
    /// Llama only: share the embedding with the output head.
    pub tied: bool,
}

impl Config {
    /// The zoo's llama-like model: vocab 2048, hidden 128, 4 layers, 4 heads, FFN 384, untied.
    pub fn llama() -> Self {
        Self {
            arch: Arch::Llama,
            vocab: 2048,
            hidden: 128,
            layers: 4,
            heads: 4,
            intermediate: 384,
            tied: false,
        }
    }
    /// The zoo's bert-like model: vocab 3072, hidden 192, 6 layers, 6 heads, FFN 768.
    pub fn bert() -> Self {
        Self {
            arch: Arch::Bert,
            vocab: 3072,
            hidden: 192,
            layers: 6,
            heads: 6,
            intermediate: 768,
            tied: false,
        }
    }
    /// all-MiniLM-L6-v2 (test-models/real/minilm).
    pub fn minilm() -> Self {
        Self {
            arch: Arch::Bert,
            vocab: 30522,
            hidden: 384,
            layers: 6,
            heads: 12,
            intermediate: 1536,
            tied: false,
        }
    }
    /// SmolLM2-135M (test-models/real/smollm2; grouped-query attention, so no head permutation).
    pub fn smollm2() -> Self {
        Self {
            arch: Arch::Llama,
            vocab: 49152,
            hidden: 576,
            layers: 30,
            heads: 9,
            intermediate: 1536,
            tied: true,
        }
    }
    /// A tiny llama-like model for fast null runs.
    pub fn tiny() -> Self {
        Self {
            arch: Arch::Llama,
            vocab: 1024,
            hidden: 64,
            layers: 2,
            heads: 2,
            intermediate: 128,
            tied: true,
        }
    }
}

/// One tensor, row-major f32.
#[derive(Clone, Debug)]
pub struct ZTensor {
    /// Name (Hugging Face style for generated models).
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

impl ZTensor {
    fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    fn cols(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    fn std(&self) -> f32 {
        let n = self.data.len().max(1) as f64;
        let m = self.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        (self
            .data
            .iter()
            .map(|&v| (v as f64 - m).powi(2))
            .sum::<f64>()
            / n)
            .sqrt() as f32
    }
    /// Reorder rows: new row r = old row `perm[r]`.
    fn permute_rows(&mut self, perm: &[usize]) {
        let c = self.cols();
        let old = self.data.clone();
        for (r, &p) in perm.iter().enumerate() {
            self.data[r * c..(r + 1) * c].copy_from_slice(&old[p * c..(p + 1) * c]);
        }
    }
    /// Reorder columns: new column c = old column `perm[c]`.
    fn permute_cols(&mut self, perm: &[usize]) {
        let c = self.cols();
        let old = self.data.clone();
        for r in 0..self.rows() {
            for (j, &p) in perm.iter().enumerate() {
                self.data[r * c + j] = old[r * c + p];
            }
        }
    }
    fn transpose(&mut self) {
        let (r, c) = (self.rows(), self.cols());
        let old = self.data.clone();
        for i in 0..r {
            for j in 0..c {
                self.data[j * r + i] = old[i * c + j];
            }
        }
        self.shape = vec![c, r];
    }
}

/// A model in memory.
#[derive(Clone, Debug)]
pub struct ZModel {
    /// Sizes (heads and family matter to the transformations).
    pub cfg: Config,
    /// Tensors in file order.
    pub tensors: Vec<ZTensor>,
}

/// Standard normal draws (Box-Muller), deterministic for a seeded generator.
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn gaussian(rng: &mut StdRng, shape: &[usize], std: f32) -> ZTensor {
    let n = shape.iter().product();
    ZTensor {
        name: String::new(),
        shape: shape.to_vec(),
        data: (0..n).map(|_| normal(rng) * std).collect(),
    }
}

/// What a tensor is, read from its (zoo-known) name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Embedding,
    Head,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    QkvBias,
    UpBias,
    Other,
}

fn role(arch: Arch, name: &str) -> Role {
    let has = |s: &str| name.contains(s);
    match arch {
        Arch::Llama => match () {
            _ if has("embed_tokens") || has("token_embd") => Role::Embedding,
            _ if has("lm_head") || name == "output.weight" => Role::Head,
            _ if has("q_proj") || has("attn_q.") => Role::Q,
            _ if has("k_proj") || has("attn_k.") => Role::K,
            _ if has("v_proj") || has("attn_v.") => Role::V,
            _ if has("o_proj") || has("attn_output") => Role::O,
            _ if has("gate_proj") || has("ffn_gate") => Role::Gate,
            _ if has("up_proj") || has("ffn_up") => Role::Up,
            _ if has("down_proj") || has("ffn_down") => Role::Down,
            _ => Role::Other,
        },
        Arch::Bert => match () {
            _ if has("word_embeddings") => Role::Embedding,
            _ if has("attention.self.query.weight") => Role::Q,
            _ if has("attention.self.key.weight") => Role::K,
            _ if has("attention.self.value.weight") => Role::V,
            _ if has("attention.self.") && name.ends_with(".bias") => Role::QkvBias,
            _ if has("attention.output.dense.weight") => Role::O,
            _ if has("intermediate.dense.weight") => Role::Up,
            _ if has("intermediate.dense.bias") => Role::UpBias,
            _ if has(".output.dense.weight") => Role::Down,
            _ => Role::Other,
        },
    }
}

/// The layer index in a zoo name (`layers.3.` / `layer.3.` / `blk.3.`).
fn layer_index(name: &str) -> Option<(usize, usize, usize)> {
    for key in ["layers.", "layer.", "blk."] {
        if let Some(pos) = name.find(key) {
            let start = pos + key.len();
            let len = name[start..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if len > 0 {
                return name[start..start + len]
                    .parse()
                    .ok()
                    .map(|n| (n, start, start + len));
            }
        }
    }
    None
}

impl ZModel {
    /// Generate a model from `cfg`, deterministically from `seed` (independent seeds give
    /// independently initialised models: the null of the fingerprint test).
    pub fn generate(cfg: Config, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (v, h, i) = (cfg.vocab, cfg.hidden, cfg.intermediate);
        let std_in = |n: usize| 1.0 / (n as f32).sqrt();
        let mut tensors = Vec::new();
        // A Gaussian tensor, shifted by `mean` (norm weights sit near one).
        fn add(
            ts: &mut Vec<ZTensor>,
            rng: &mut StdRng,
            name: String,
            shape: &[usize],
            std: f32,
            mean: f32,
        ) {
            let mut t = gaussian(rng, shape, std);
            t.data.iter_mut().for_each(|x| *x += mean);
            t.name = name;
            ts.push(t);
        }
        let ts = &mut tensors;
        match cfg.arch {
            Arch::Llama => {
                add(
                    ts,
                    &mut rng,
                    "model.embed_tokens.weight".into(),
                    &[v, h],
                    0.02,
                    0.0,
                );
                for l in 0..cfg.layers {
                    let p = format!("model.layers.{l}.");
                    add(
                        ts,
                        &mut rng,
                        format!("{p}input_layernorm.weight"),
                        &[h],
                        0.05,
                        1.0,
                    );
                    for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                        add(
                            ts,
                            &mut rng,
                            format!("{p}self_attn.{m}.weight"),
                            &[h, h],
                            std_in(h),
                            0.0,
                        );
                    }
                    add(
                        ts,
                        &mut rng,
                        format!("{p}post_attention_layernorm.weight"),
                        &[h],
                        0.05,
                        1.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}mlp.gate_proj.weight"),
                        &[i, h],
                        std_in(h),
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}mlp.up_proj.weight"),
                        &[i, h],
                        std_in(h),
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}mlp.down_proj.weight"),
                        &[h, i],
                        std_in(i),
                        0.0,
                    );
                }
                add(ts, &mut rng, "model.norm.weight".into(), &[h], 0.05, 1.0);
                if !cfg.tied {
                    add(
                        ts,
                        &mut rng,
                        "lm_head.weight".into(),
                        &[v, h],
                        std_in(h),
                        0.0,
                    );
                }
            }
            Arch::Bert => {
                let e = "embeddings.";
                add(
                    ts,
                    &mut rng,
                    format!("{e}word_embeddings.weight"),
                    &[v, h],
                    0.02,
                    0.0,
                );
                add(
                    ts,
                    &mut rng,
                    format!("{e}position_embeddings.weight"),
                    &[128, h],
                    0.02,
                    0.0,
                );
                add(
                    ts,
                    &mut rng,
                    format!("{e}token_type_embeddings.weight"),
                    &[2, h],
                    0.02,
                    0.0,
                );
                add(
                    ts,
                    &mut rng,
                    format!("{e}LayerNorm.weight"),
                    &[h],
                    0.05,
                    1.0,
                );
                add(ts, &mut rng, format!("{e}LayerNorm.bias"), &[h], 0.02, 0.0);
                for l in 0..cfg.layers {
                    let p = format!("encoder.layer.{l}.");
                    for m in ["query", "key", "value"] {
                        add(
                            ts,
                            &mut rng,
                            format!("{p}attention.self.{m}.weight"),
                            &[h, h],
                            std_in(h),
                            0.0,
                        );
                        add(
                            ts,
                            &mut rng,
                            format!("{p}attention.self.{m}.bias"),
                            &[h],
                            0.02,
                            0.0,
                        );
                    }
                    add(
                        ts,
                        &mut rng,
                        format!("{p}attention.output.dense.weight"),
                        &[h, h],
                        std_in(h),
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}attention.output.dense.bias"),
                        &[h],
                        0.02,
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}attention.output.LayerNorm.weight"),
                        &[h],
                        0.05,
                        1.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}attention.output.LayerNorm.bias"),
                        &[h],
                        0.02,
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}intermediate.dense.weight"),
                        &[i, h],
                        std_in(h),
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}intermediate.dense.bias"),
                        &[i],
                        0.02,
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}output.dense.weight"),
                        &[h, i],
                        std_in(i),
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}output.dense.bias"),
                        &[h],
                        0.02,
                        0.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}output.LayerNorm.weight"),
                        &[h],
                        0.05,
                        1.0,
                    );
                    add(
                        ts,
                        &mut rng,
                        format!("{p}output.LayerNorm.bias"),
                        &[h],
                        0.02,
                        0.0,
                    );
                }
            }
        }
        Self { cfg, tensors }
    }

    /// Load a real model (every float tensor, dequantized to f32; integer tensors are dropped).
    /// `cfg` gives the family and head count the transformations need.
    pub fn load(path: &Path, cfg: Config) -> Result<Self, String> {
        let f = WeightFile::open(path).map_err(|e| e.to_string())?;
        let mut tensors = Vec::new();
        for v in f.views() {
            if !v.dtype.is_float_like() {
                continue;
            }
            let m = dequant::matrix(&v).map_err(|e| e.to_string())?;
            tensors.push(ZTensor {
                name: v.name.to_string(),
                shape: v.shape.iter().map(|&d| d as usize).collect(),
                data: m.into_raw_vec_and_offset().0,
            });
        }
        Ok(Self { cfg, tensors })
    }

    fn for_role(&mut self, r: Role, mut f: impl FnMut(Option<usize>, &mut ZTensor)) {
        let arch = self.cfg.arch;
        for t in &mut self.tensors {
            if role(arch, &t.name) == r {
                let l = layer_index(&t.name).map(|x| x.0);
                f(l, t);
            }
        }
    }
}

/// A transformation a leaker might apply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    /// Gaussian noise at this fraction of each tensor's standard deviation (a fine-tune).
    Noise(f32),
    /// Zero this fraction of each matrix's smallest-magnitude entries.
    Prune(f32),
    /// A random permutation of the FFN neurons of every layer.
    FfnPermute,
    /// A random permutation of the attention heads of every layer.
    HeadPermute,
    /// Llama only: a random rotation of the hidden (residual) space, with the norm weights folded
    /// into the next matrices first (as QuaRot/SliceGPT do), so an untied model computes the same.
    HiddenRotate,
    /// A random permutation (and, for llama, sign flips) of the hidden (residual) units.
    HiddenPermute,
    /// Every tensor renamed, shuffled, and every matrix stored transposed.
    RenameTranspose,
    /// Keep layers 0, 2, 4, ... (renumbered).
    EverySecondLayer,
    /// Append this many random token rows to the embedding (and output head).
    VocabExtend(usize),
    /// Add a rank-`r` update of relative Frobenius size `f` to every layer matrix.
    LoRA(usize, f32),
    /// Llama only: scale each SwiGLU neuron's `up` row by a random `c` in [0.25, 4] and its
    /// `down` column by `1/c` (the output is unchanged: silu(gate)·(c·up)·(down/c)).
    NeuronScale,
    /// Grouped-query attention with this many key/value heads: permute the key/value groups and
    /// the query heads inside each group, every layer (the function is unchanged).
    GroupedHeadPermute(usize),
    /// Minitron-style width pruning: keep this fraction of the residual units and of each
    /// layer's feed-forward neurons, ranked by weight norm, re-sorted by importance (not
    /// function-preserving: the copy is a pruned derivative).
    WidthPrune(f32),
}

/// How a model is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// safetensors in this float dtype (F32, F16, BF16).
    Safetensors(DType),
    /// safetensors, matrices as I8 with a per-tensor scale tensor beside them.
    Int8,
    /// GGUF with llama.cpp names and Q/K row order (llama), matrices in this dtype.
    Gguf(DType),
}

impl Export {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Export::Gguf(_) => "gguf",
            _ => "safetensors",
        }
    }
}

fn random_perm(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(rng);
    p
}

/// Apply `t` to a copy of `m`, deterministically from `seed`.
pub fn apply(m: &ZModel, t: Transform, seed: u64) -> ZModel {
    let mut m = m.clone();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x005e_ed0f_7a11);
    let cfg = m.cfg;
    match t {
        Transform::Noise(f) => {
            for t in &mut m.tensors {
                let s = t.std() * f;
                t.data.iter_mut().for_each(|x| *x += normal(&mut rng) * s);
            }
        }
        Transform::Prune(f) => {
            for t in m.tensors.iter_mut().filter(|t| t.shape.len() == 2) {
                let mut mags: Vec<f32> = t.data.iter().map(|x| x.abs()).collect();
                let k = ((mags.len() as f32 * f) as usize).min(mags.len().saturating_sub(1));
                let (_, cut, _) = mags.select_nth_unstable_by(k, f32::total_cmp);
                let cut = *cut;
                t.data
                    .iter_mut()
                    .filter(|x| x.abs() < cut)
                    .for_each(|x| *x = 0.0);
            }
        }
        Transform::FfnPermute => {
            let mut perms = std::collections::HashMap::new();
            for l in 0..cfg.layers {
                perms.insert(l, random_perm(&mut rng, cfg.intermediate));
            }
            permute_units(
                &mut m,
                &perms,
                &[Role::Gate, Role::Up, Role::UpBias],
                Role::Down,
            );
        }
        Transform::HeadPermute => {
            let d = cfg.hidden / cfg.heads;
            let mut perms = std::collections::HashMap::new();
            for l in 0..cfg.layers {
                let hp = random_perm(&mut rng, cfg.heads);
                let rows: Vec<usize> = hp.iter().flat_map(|&h| h * d..(h + 1) * d).collect();
                perms.insert(l, rows);
            }
            permute_units(
                &mut m,
                &perms,
                &[Role::Q, Role::K, Role::V, Role::QkvBias],
                Role::O,
            );
        }
        Transform::HiddenRotate => {
            let h = cfg.hidden;
            let q = random_orthogonal(&mut rng, h);
            let arch = cfg.arch;
            // A tied head reads the final norm's output: folding that gain unties it.
            let has_head = m.tensors.iter().any(|t| role(arch, &t.name) == Role::Head);
            if !has_head {
                if let Some(e) = m
                    .tensors
                    .iter()
                    .find(|t| role(arch, &t.name) == Role::Embedding)
                {
                    let mut head = e.clone();
                    head.name = if e.name.contains("token_embd") {
                        "output.weight".into()
                    } else {
                        "lm_head.weight".into()
                    };
                    m.tensors.push(head);
                    m.cfg.tied = false;
                }
            }
            // Fold each RMSNorm weight into the matrices that read its output.
            let mut gammas: std::collections::HashMap<(Option<usize>, bool), Vec<f32>> =
                Default::default();
            for t in &m.tensors {
                if t.shape.len() == 1 && t.shape[0] == h {
                    let l = layer_index(&t.name).map(|x| x.0);
                    let attn = t.name.contains("input_layernorm") || t.name.contains("attn_norm");
                    gammas.insert((l, attn), t.data.clone());
                }
            }
            for t in &mut m.tensors {
                let r = role(arch, &t.name);
                let l = layer_index(&t.name).map(|x| x.0);
                let gamma = match r {
                    Role::Q | Role::K | Role::V => gammas.get(&(l, true)),
                    Role::Gate | Role::Up => gammas.get(&(l, false)),
                    Role::Head => gammas.get(&(None, false)),
                    _ => None,
                };
                if let Some(g) = gamma {
                    let c = t.cols();
                    for (k, x) in t.data.iter_mut().enumerate() {
                        *x *= g[k % c];
                    }
                }
                if t.shape.len() == 1 && t.shape[0] == h {
                    t.data.iter_mut().for_each(|x| *x = 1.0);
                }
                let residual_cols = matches!(
                    r,
                    Role::Embedding
                        | Role::Head
                        | Role::Q
                        | Role::K
                        | Role::V
                        | Role::Gate
                        | Role::Up
                );
                if residual_cols {
                    // W <- W Q
                    let w = ndarray::ArrayView2::from_shape((t.rows(), t.cols()), &t.data)
                        .map(|w| w.dot(&q));
                    if let Ok(w) = w {
                        t.data = w.iter().copied().collect();
                    }
                } else if matches!(r, Role::O | Role::Down) {
                    // W <- Q^T W
                    let w = ndarray::ArrayView2::from_shape((t.rows(), t.cols()), &t.data)
                        .map(|w| q.t().dot(&w));
                    if let Ok(w) = w {
                        t.data = w.iter().copied().collect();
                    }
                }
            }
        }
        Transform::HiddenPermute => {
            let h = cfg.hidden;
            let perm = random_perm(&mut rng, h);
            let signs: Vec<f32> = (0..h)
                .map(|_| {
                    if cfg.arch == Arch::Llama && rng.gen_bool(0.5) {
                        -1.0
                    } else {
                        1.0
                    }
                })
                .collect();
            let arch = cfg.arch;
            for t in &mut m.tensors {
                let r = role(arch, &t.name);
                let residual_cols = matches!(
                    r,
                    Role::Embedding
                        | Role::Head
                        | Role::Q
                        | Role::K
                        | Role::V
                        | Role::Gate
                        | Role::Up
                ) || (t.shape.len() == 2 && t.name.contains("embeddings."));
                let residual_rows = matches!(r, Role::O | Role::Down);
                if residual_cols {
                    t.permute_cols(&perm);
                    let c = t.cols();
                    for (k, x) in t.data.iter_mut().enumerate() {
                        *x *= signs[k % c];
                    }
                } else if residual_rows {
                    t.permute_rows(&perm);
                    let c = t.cols();
                    for (k, x) in t.data.iter_mut().enumerate() {
                        *x *= signs[k / c];
                    }
                } else if t.shape.len() == 1 && t.shape[0] == h && r == Role::Other {
                    // Norm weights and residual biases follow the units (norms carry no sign).
                    t.permute_rows(&perm);
                    if t.name.ends_with(".bias") {
                        t.data.iter_mut().zip(&signs).for_each(|(x, s)| *x *= s);
                    }
                }
            }
        }
        Transform::RenameTranspose => {
            m.tensors.shuffle(&mut rng);
            for (k, t) in m.tensors.iter_mut().enumerate() {
                t.name = format!("onnx::MatMul_{k}");
                if t.shape.len() == 2 {
                    t.transpose();
                }
            }
        }
        Transform::EverySecondLayer => {
            m.tensors
                .retain(|t| layer_index(&t.name).is_none_or(|(l, _, _)| l % 2 == 0));
            for t in &mut m.tensors {
                if let Some((l, a, b)) = layer_index(&t.name) {
                    t.name = format!("{}{}{}", &t.name[..a], l / 2, &t.name[b..]);
                }
            }
            m.cfg.layers = cfg.layers.div_ceil(2);
        }
        Transform::VocabExtend(n) => {
            for t in &mut m.tensors {
                if matches!(role(cfg.arch, &t.name), Role::Embedding | Role::Head) {
                    let s = t.std();
                    let c = t.cols();
                    t.data.extend((0..n * c).map(|_| normal(&mut rng) * s));
                    t.shape[0] += n;
                }
            }
            m.cfg.vocab += n;
        }
        Transform::NeuronScale => {
            let mut scales = std::collections::HashMap::new();
            for l in 0..cfg.layers {
                let c: Vec<f32> = (0..cfg.intermediate)
                    .map(|_| 4f32.powf(rng.gen_range(-1.0..1.0)))
                    .collect();
                scales.insert(l, c);
            }
            m.for_role(Role::Up, |l, t| {
                if let Some(c) = l.and_then(|l| scales.get(&l)) {
                    let k = t.cols();
                    for (i, x) in t.data.iter_mut().enumerate() {
                        *x *= c[i / k];
                    }
                }
            });
            m.for_role(Role::Down, |l, t| {
                if let Some(c) = l.and_then(|l| scales.get(&l)) {
                    let k = t.cols();
                    for (i, x) in t.data.iter_mut().enumerate() {
                        *x /= c[i % k];
                    }
                }
            });
        }
        Transform::GroupedHeadPermute(kv) => {
            let d = cfg.hidden / cfg.heads;
            let per = cfg.heads / kv.max(1);
            let (mut qp, mut kvp) = (
                std::collections::HashMap::new(),
                std::collections::HashMap::new(),
            );
            for l in 0..cfg.layers {
                let groups = random_perm(&mut rng, kv);
                let mut qheads = Vec::new();
                for &g in &groups {
                    for w in random_perm(&mut rng, per) {
                        qheads.push(g * per + w);
                    }
                }
                let rows = |hs: &[usize]| {
                    hs.iter()
                        .flat_map(|&h| h * d..(h + 1) * d)
                        .collect::<Vec<_>>()
                };
                qp.insert(l, rows(&qheads));
                kvp.insert(l, rows(&groups));
            }
            permute_units(&mut m, &qp, &[Role::Q], Role::O);
            for r in [Role::K, Role::V] {
                m.for_role(r, |l, t| {
                    if let Some(p) = l.and_then(|l| kvp.get(&l)) {
                        t.permute_rows(p)
                    }
                });
            }
        }
        Transform::WidthPrune(f) => {
            let arch = cfg.arch;
            let h = cfg.hidden;
            let keep_h = ((h as f32 * f).round() as usize).clamp(1, h);
            let keep_f =
                ((cfg.intermediate as f32 * f).round() as usize).clamp(1, cfg.intermediate);
            // Residual importance: the column norms of the embedding.
            let imp_h: Vec<f32> = match m
                .tensors
                .iter()
                .find(|t| role(arch, &t.name) == Role::Embedding)
            {
                Some(e) => (0..h)
                    .map(|j| (0..e.rows()).map(|r| e.data[r * h + j].powi(2)).sum())
                    .collect(),
                None => vec![1.0; h],
            };
            let top = |imp: &[f32], k: usize| {
                let mut o: Vec<usize> = (0..imp.len()).collect();
                o.sort_by(|&a, &b| imp[b].total_cmp(&imp[a]));
                o.truncate(k);
                o
            };
            let kh = top(&imp_h, keep_h);
            // Feed-forward importance per layer: the row norms of `up`.
            let mut kf = std::collections::HashMap::new();
            for t in &m.tensors {
                if role(arch, &t.name) == Role::Up {
                    if let Some(l) = layer_index(&t.name).map(|x| x.0) {
                        let c = t.cols();
                        let imp: Vec<f32> = (0..t.rows())
                            .map(|r| t.data[r * c..(r + 1) * c].iter().map(|x| x * x).sum())
                            .collect();
                        kf.insert(l, top(&imp, keep_f));
                    }
                }
            }
            let select_rows = |t: &mut ZTensor, keep: &[usize]| {
                let c = t.cols();
                t.data = keep
                    .iter()
                    .flat_map(|&r| t.data[r * c..(r + 1) * c].to_vec())
                    .collect();
                t.shape[0] = keep.len();
            };
            let select_cols = |t: &mut ZTensor, keep: &[usize]| {
                let c = t.cols();
                let r = t.rows();
                t.data = (0..r)
                    .flat_map(|i| keep.iter().map(|&j| t.data[i * c + j]).collect::<Vec<_>>())
                    .collect();
                t.shape = vec![r, keep.len()];
            };
            for t in &mut m.tensors {
                let r = role(arch, &t.name);
                let l = layer_index(&t.name).map(|x| x.0);
                if matches!(r, Role::Gate | Role::Up | Role::UpBias) {
                    if let Some(k) = l.and_then(|l| kf.get(&l)) {
                        select_rows(t, k);
                    }
                }
                if r == Role::Down {
                    if let Some(k) = l.and_then(|l| kf.get(&l)) {
                        select_cols(t, k);
                    }
                }
                let residual_cols = matches!(
                    r,
                    Role::Embedding
                        | Role::Head
                        | Role::Q
                        | Role::K
                        | Role::V
                        | Role::Gate
                        | Role::Up
                ) || (t.shape.len() == 2 && t.name.contains("embeddings."));
                if residual_cols && t.shape.len() == 2 && t.cols() == h {
                    select_cols(t, &kh);
                } else if (matches!(r, Role::O | Role::Down) && t.rows() == h)
                    || (t.shape.len() == 1 && t.shape[0] == h && r == Role::Other)
                {
                    select_rows(t, &kh);
                }
            }
            m.cfg.hidden = keep_h;
            m.cfg.intermediate = keep_f;
        }
        Transform::LoRA(r, f) => {
            for t in &mut m.tensors {
                if !matches!(
                    role(cfg.arch, &t.name),
                    Role::Q | Role::K | Role::V | Role::O | Role::Gate | Role::Up | Role::Down
                ) {
                    continue;
                }
                let (rows, cols) = (t.rows(), t.cols());
                let b = gaussian(&mut rng, &[rows, r], 1.0).data;
                let a = gaussian(&mut rng, &[r, cols], 1.0).data;
                let mut d = vec![0f32; rows * cols];
                for i in 0..rows {
                    for k in 0..r {
                        let bik = b[i * r + k];
                        for j in 0..cols {
                            d[i * cols + j] += bik * a[k * cols + j];
                        }
                    }
                }
                let nw = t.data.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nd = d
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::MIN_POSITIVE);
                let s = f * nw / nd;
                t.data.iter_mut().zip(&d).for_each(|(x, y)| *x += s * y);
            }
        }
    }
    m
}

/// A uniformly random orthogonal matrix (Gram-Schmidt on a Gaussian matrix).
fn random_orthogonal(rng: &mut StdRng, n: usize) -> ndarray::Array2<f32> {
    let mut q = ndarray::Array2::<f32>::zeros((n, n));
    for i in 0..n {
        let mut v: ndarray::Array1<f32> = (0..n).map(|_| normal(rng)).collect();
        for j in 0..i {
            let row = q.row(j).to_owned();
            let d = v.dot(&row);
            v.scaled_add(-d, &row);
        }
        let norm = v.dot(&v).sqrt().max(f32::MIN_POSITIVE);
        q.row_mut(i).assign(&(v / norm));
    }
    q
}

/// llama.cpp's conversion of HF Q/K rows: within each head, rows `(half, i)` become `(i, half)`.
/// `d` is the head size (grouped K heads have the same size as Q heads).
fn gguf_qk_rows(t: &mut ZTensor, d: usize) {
    let perm: Vec<usize> = (0..t.rows())
        .map(|r| {
            let (h, w) = (r / d, r % d);
            let (i, p) = (w / 2, w % 2);
            h * d + p * (d / 2) + i
        })
        .collect();
    t.permute_rows(&perm);
}

fn gguf_name(name: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("post_attention_layernorm", "ffn_norm"),
        ("input_layernorm", "attn_norm"),
        ("model.layers.", "blk."),
    ];
    let mut n = name.to_string();
    for (a, b) in map {
        n = n.replace(a, b);
    }
    n
}

/// Serialize `m` as `e`.
pub fn export(m: &ZModel, e: Export) -> Result<Vec<u8>, String> {
    let enc = |name: &str, dt: DType, xs: &[f32]| {
        dequant::encode(name, dt, xs).map_err(|e| e.to_string())
    };
    match e {
        Export::Safetensors(dt) => {
            let mut out = Vec::new();
            for t in &m.tensors {
                out.push(OwnedTensor {
                    name: t.name.clone(),
                    dtype: dt,
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    bytes: enc(&t.name, dt, &t.data)?,
                });
            }
            safetensors_bytes(&out, &[("format".into(), "pt".into())])
        }
        Export::Int8 => {
            let mut out = Vec::new();
            for t in &m.tensors {
                let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                if t.shape.len() != 2 {
                    out.push(OwnedTensor {
                        name: t.name.clone(),
                        dtype: DType::F32,
                        shape,
                        bytes: enc(&t.name, DType::F32, &t.data)?,
                    });
                    continue;
                }
                let max = t.data.iter().fold(0f32, |a, x| a.max(x.abs()));
                let s = if max > 0.0 { max / 127.0 } else { 1.0 };
                let q: Vec<f32> = t.data.iter().map(|x| x / s).collect();
                out.push(OwnedTensor {
                    name: t.name.clone(),
                    dtype: DType::I8,
                    shape,
                    bytes: enc(&t.name, DType::I8, &q)?,
                });
                out.push(OwnedTensor {
                    name: format!("{}_scale", t.name),
                    dtype: DType::F32,
                    shape: vec![1],
                    bytes: s.to_le_bytes().to_vec(),
                });
            }
            safetensors_bytes(&out, &[("format".into(), "pt".into())])
        }
        Export::Gguf(dt) => {
            let llama = m.cfg.arch == Arch::Llama;
            let mut out = Vec::new();
            for t in &m.tensors {
                let mut t = t.clone();
                if llama {
                    let r = role(Arch::Llama, &t.name);
                    if r == Role::Q || r == Role::K {
                        gguf_qk_rows(&mut t, m.cfg.hidden / m.cfg.heads);
                    }
                    t.name = gguf_name(&t.name);
                }
                let d = if t.shape.len() == 2 && t.cols() % dt.block_size() as usize == 0 {
                    dt
                } else {
                    DType::F32
                };
                out.push(OwnedTensor {
                    name: t.name.clone(),
                    dtype: d,
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    bytes: enc(&t.name, d, &t.data)?,
                });
            }
            let arch = if llama { "llama" } else { "bert" };
            let c = m.cfg;
            let meta = vec![
                (
                    "general.architecture".to_string(),
                    MetaValue::String(arch.into()),
                ),
                (
                    "general.name".to_string(),
                    MetaValue::String("hallmark-zoo".into()),
                ),
                (
                    format!("{arch}.block_count"),
                    MetaValue::U64(c.layers as u64),
                ),
                (
                    format!("{arch}.embedding_length"),
                    MetaValue::U64(c.hidden as u64),
                ),
                (
                    format!("{arch}.feed_forward_length"),
                    MetaValue::U64(c.intermediate as u64),
                ),
                (
                    format!("{arch}.attention.head_count"),
                    MetaValue::U64(c.heads as u64),
                ),
            ];
            gguf_bytes(&out, &meta)
        }
    }
}

/// Copies outside the list that show where the p-value stops (see docs/fingerprint.md).
pub fn extra_cases() -> Vec<(&'static str, Vec<Transform>, Export)> {
    vec![(
        "hidden-rotate",
        vec![Transform::HiddenRotate],
        Export::Safetensors(DType::F32),
    )]
}

/// Permute a layer's units consistently: the rows of the tensors that produce them and the
/// columns of the tensor that consumes them, so the network computes the same function.
fn permute_units(
    m: &mut ZModel,
    perms: &std::collections::HashMap<usize, Vec<usize>>,
    producers: &[Role],
    consumer: Role,
) {
    for &r in producers {
        m.for_role(r, |l, t| {
            if let Some(p) = l.and_then(|l| perms.get(&l)) {
                t.permute_rows(p)
            }
        });
    }
    m.for_role(consumer, |l, t| {
        if let Some(p) = l.and_then(|l| perms.get(&l)) {
            t.permute_cols(p)
        }
    });
}

/// The standard transformed copies: `(label, transformations, export)`.
pub fn standard_cases() -> Vec<(&'static str, Vec<Transform>, Export)> {
    use Export::*;
    use Transform::*;
    vec![
        ("f16", vec![], Safetensors(DType::F16)),
        ("bf16", vec![], Safetensors(DType::BF16)),
        ("int8", vec![], Int8),
        ("gguf-q8_0", vec![], Gguf(DType::Q8_0)),
        ("gguf-q4_0", vec![], Gguf(DType::Q4_0)),
        ("noise-1%", vec![Noise(0.01)], Safetensors(DType::F32)),
        ("noise-5%", vec![Noise(0.05)], Safetensors(DType::F32)),
        ("noise-20%", vec![Noise(0.20)], Safetensors(DType::F32)),
        ("prune-50%", vec![Prune(0.5)], Safetensors(DType::F32)),
        ("ffn-permute", vec![FfnPermute], Safetensors(DType::F32)),
        ("head-permute", vec![HeadPermute], Safetensors(DType::F32)),
        (
            "hidden-permute",
            vec![HiddenPermute],
            Safetensors(DType::F32),
        ),
        (
            "rename-transpose",
            vec![RenameTranspose],
            Safetensors(DType::F32),
        ),
        (
            "every-2nd-layer",
            vec![EverySecondLayer],
            Safetensors(DType::F32),
        ),
        (
            "vocab+1000",
            vec![VocabExtend(1000)],
            Safetensors(DType::F32),
        ),
        ("lora-r8", vec![LoRA(8, 0.1)], Safetensors(DType::F32)),
        (
            "noise-5%+ffn-permute+q4_0",
            vec![Noise(0.05), FfnPermute],
            Gguf(DType::Q4_0),
        ),
    ]
}

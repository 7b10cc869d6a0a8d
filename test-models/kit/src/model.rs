//! The two model families, written with candle's differentiable tensor operations, and their
//! parameters under the tensor names of the real architectures (Hugging Face llama and BERT), so
//! that hallmark reads them as it reads real checkpoints.
//!
//! The token embedding is trained as a compact table over the tokens that occur in the corpus
//! (the output softmax runs over those tokens only: the full 49,152-way softmax would dominate
//! the cost). Saving scatters the compact rows into a full tokenizer-sized table whose other
//! rows keep their initial values shrunk by AdamW's decoupled weight decay, which is exactly
//! what training the full table would leave in them: a row that never receives a gradient has
//! zero Adam moments, so AdamW only multiplies it by `1 - lr * weight_decay` at every step.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::KitError;

/// Standard deviation of the initial weights (the Hugging Face default for both families).
pub const INIT_STD: f64 = 0.02;

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// RMSNorm, rotary positions, SwiGLU MLP, causal LM loss, tied embeddings (as SmolLM2).
    Llama,
    /// Learned positions, LayerNorm, GELU MLP, masked-LM loss with a tied decoder (as BERT).
    Bert,
    /// The llama recipe with grouped-query attention (fewer key/value heads than query heads,
    /// as SmolLM2 itself), tied embeddings, SmolLM2's tokenizer: the third shape of the
    /// impostor population.
    Gqa,
}

impl Family {
    /// Short name used in file names.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Bert => "bert",
            Family::Gqa => "gqa",
        }
    }
}

/// Shape of one family's models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shape {
    /// Residual width.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Tokens per training sequence.
    pub seq: usize,
    /// Key/value heads of grouped-query attention (`None`: as many as `heads`). Skipped when
    /// absent, so the configurations written before it hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
}

impl Shape {
    /// Key/value heads.
    pub fn kv(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }
}

/// The trainable parameters, by their saved names (the embedding compact).
pub struct Params {
    /// Names in the order they were initialised.
    pub names: Vec<String>,
    /// The variables.
    pub vars: HashMap<String, Var>,
}

impl Params {
    fn get(&self, name: &str) -> Result<&Tensor, KitError> {
        self.vars
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| KitError::Bad(format!("no parameter `{name}`")))
    }

    /// The variables in initialisation order (for the optimiser).
    pub fn all(&self) -> Vec<Var> {
        self.names.iter().map(|n| self.vars[n].clone()).collect()
    }

    /// A deep copy (a child starts from its parent's values).
    pub fn deep_clone(&self) -> Result<Self, KitError> {
        let mut vars = HashMap::new();
        for n in &self.names {
            vars.insert(
                n.clone(),
                Var::from_tensor(&self.vars[n].as_tensor().copy()?)?,
            );
        }
        Ok(Self {
            names: self.names.clone(),
            vars,
        })
    }
}

/// Name of the token embedding.
pub fn embedding_name(f: Family) -> &'static str {
    match f {
        Family::Llama | Family::Gqa => "model.embed_tokens.weight",
        Family::Bert => "embeddings.word_embeddings.weight",
    }
}

/// `(name, shape, init)` of every parameter except the token embedding; init: 0 normal,
/// 1 ones, 2 zeros. The MLM output bias is vocabulary-sized (`v` = compact vocabulary).
fn layout(f: Family, s: &Shape, v: usize) -> Vec<(String, Vec<usize>, u8)> {
    let (h, ff) = (s.hidden, s.ffn);
    let kvd = s.kv() * (h / s.heads);
    let mut out = Vec::new();
    let mut p = |n: String, shape: Vec<usize>, i: u8| out.push((n, shape, i));
    match f {
        Family::Llama | Family::Gqa => {
            for l in 0..s.layers {
                let b = format!("model.layers.{l}");
                p(format!("{b}.input_layernorm.weight"), vec![h], 1);
                for (m, rows) in [("q", h), ("k", kvd), ("v", kvd), ("o", h)] {
                    p(format!("{b}.self_attn.{m}_proj.weight"), vec![rows, h], 0);
                }
                p(format!("{b}.post_attention_layernorm.weight"), vec![h], 1);
                p(format!("{b}.mlp.gate_proj.weight"), vec![ff, h], 0);
                p(format!("{b}.mlp.up_proj.weight"), vec![ff, h], 0);
                p(format!("{b}.mlp.down_proj.weight"), vec![h, ff], 0);
            }
            p("model.norm.weight".into(), vec![h], 1);
        }
        Family::Bert => {
            p(
                "embeddings.position_embeddings.weight".into(),
                vec![s.seq, h],
                0,
            );
            p(
                "embeddings.token_type_embeddings.weight".into(),
                vec![2, h],
                0,
            );
            p("embeddings.LayerNorm.weight".into(), vec![h], 1);
            p("embeddings.LayerNorm.bias".into(), vec![h], 2);
            for l in 0..s.layers {
                let b = format!("encoder.layer.{l}");
                for m in ["query", "key", "value"] {
                    p(format!("{b}.attention.self.{m}.weight"), vec![h, h], 0);
                    p(format!("{b}.attention.self.{m}.bias"), vec![h], 2);
                }
                p(format!("{b}.attention.output.dense.weight"), vec![h, h], 0);
                p(format!("{b}.attention.output.dense.bias"), vec![h], 2);
                p(format!("{b}.attention.output.LayerNorm.weight"), vec![h], 1);
                p(format!("{b}.attention.output.LayerNorm.bias"), vec![h], 2);
                p(format!("{b}.intermediate.dense.weight"), vec![ff, h], 0);
                p(format!("{b}.intermediate.dense.bias"), vec![ff], 2);
                p(format!("{b}.output.dense.weight"), vec![h, ff], 0);
                p(format!("{b}.output.dense.bias"), vec![h], 2);
                p(format!("{b}.output.LayerNorm.weight"), vec![h], 1);
                p(format!("{b}.output.LayerNorm.bias"), vec![h], 2);
            }
            p(
                "cls.predictions.transform.dense.weight".into(),
                vec![h, h],
                0,
            );
            p("cls.predictions.transform.dense.bias".into(), vec![h], 2);
            p(
                "cls.predictions.transform.LayerNorm.weight".into(),
                vec![h],
                1,
            );
            p(
                "cls.predictions.transform.LayerNorm.bias".into(),
                vec![h],
                2,
            );
            p("cls.predictions.bias".into(), vec![v], 2);
        }
    }
    out
}

fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(rng);
            (z * INIT_STD) as f32
        })
        .collect()
}

/// Initialise a model: the full tokenizer-sized embedding (returned, row-major, for saving) is
/// drawn first, its corpus rows become the trainable compact table, then every other
/// parameter in layout order. Everything comes from `rng`.
pub fn init(
    f: Family,
    s: &Shape,
    c: &Corpus,
    rng: &mut ChaCha8Rng,
) -> Result<(Params, Vec<f32>), KitError> {
    let dev = Device::Cpu;
    let h = s.hidden;
    let full = normals(rng, c.vocab * h);
    let mut compact = Vec::with_capacity(c.tokens.len() * h);
    for &t in &c.tokens {
        let t = t as usize;
        compact.extend_from_slice(&full[t * h..(t + 1) * h]);
    }
    let mut names = vec![embedding_name(f).to_string()];
    let mut vars = HashMap::new();
    vars.insert(
        names[0].clone(),
        Var::from_vec(compact, (c.tokens.len(), h), &dev)?,
    );
    for (n, shape, kind) in layout(f, s, c.tokens.len()) {
        let len: usize = shape.iter().product();
        let data = match kind {
            0 => normals(rng, len),
            1 => vec![1.0; len],
            _ => vec![0.0; len],
        };
        vars.insert(n.clone(), Var::from_vec(data, shape, &dev)?);
        names.push(n);
    }
    Ok((Params { names, vars }, full))
}

/// One training or evaluation batch.
pub struct Batch {
    /// Input ids (compact), `batch x seq`.
    pub input: Tensor,
    /// Target ids (compact), one per scored position.
    pub targets: Tensor,
    /// Scored positions in the flattened `batch * seq` grid (masked-LM only).
    pub positions: Option<Tensor>,
}

/// Draw a batch of `n` windows from `text` (and, for the bert-like family, its masks).
pub fn batch(
    f: Family,
    s: &Shape,
    c: &Corpus,
    text: &[u32],
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Batch, KitError> {
    let dev = Device::Cpu;
    let t = s.seq;
    let span = match f {
        Family::Llama | Family::Gqa => t + 1,
        Family::Bert => t,
    };
    if text.len() <= span {
        return Err(KitError::Bad("slice shorter than one window".into()));
    }
    let mut windows = Vec::with_capacity(n * span);
    for _ in 0..n {
        let at = rng.gen_range(0..text.len() - span);
        windows.extend_from_slice(&text[at..at + span]);
    }
    match f {
        Family::Llama | Family::Gqa => {
            let w = Tensor::from_vec(windows, (n, span), &dev)?;
            Ok(Batch {
                input: w.narrow(1, 0, t)?.contiguous()?,
                targets: w.narrow(1, 1, t)?.flatten_all()?,
                positions: None,
            })
        }
        Family::Bert => {
            let mask = c
                .mask
                .ok_or_else(|| KitError::Bad("no mask token".into()))?;
            let v = c.tokens.len() as u32;
            let mut input = windows.clone();
            let (mut pos, mut tgt) = (Vec::new(), Vec::new());
            for b in 0..n {
                let before = pos.len();
                for k in 0..t {
                    let i = b * t + k;
                    if rng.gen::<f64>() < 0.15 || (k == t - 1 && pos.len() == before) {
                        pos.push(i as u32);
                        tgt.push(windows[i]);
                        let r: f64 = rng.gen();
                        if r < 0.8 {
                            input[i] = mask;
                        } else if r < 0.9 {
                            input[i] = rng.gen_range(0..v);
                        }
                    }
                }
            }
            Ok(Batch {
                input: Tensor::from_vec(input, (n, t), &dev)?,
                targets: Tensor::from_vec(tgt.clone(), tgt.len(), &dev)?,
                positions: Some(Tensor::from_vec(pos.clone(), pos.len(), &dev)?),
            })
        }
    }
}

fn rms_norm(x: &Tensor, w: &Tensor) -> Result<Tensor, KitError> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + 1e-5)?.sqrt()?)?.broadcast_mul(w)?)
}

fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor, KitError> {
    let mu = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xc
        .broadcast_div(&(var + 1e-12)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)?)
}

fn softmax(x: &Tensor) -> Result<Tensor, KitError> {
    let m = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// `x @ w^T` for a 2-D `x` (`rows x in`) and `w` (`out x in`).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor, KitError> {
    Ok(x.matmul(&w.t()?)?)
}

fn linear_b(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor, KitError> {
    Ok(linear(x, w)?.broadcast_add(b)?)
}

/// `[rows, hidden]` -> `[batch, heads, seq, head_dim]`.
fn heads(x: &Tensor, b: usize, s: &Shape) -> Result<Tensor, KitError> {
    let hd = s.hidden / s.heads;
    Ok(x.reshape((b, s.seq, s.heads, hd))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Key/value rows `[rows, kv * head_dim]` -> `[batch, heads, seq, head_dim]`, each key/value
/// head repeated for the `heads / kv` query heads it serves (Hugging Face `repeat_kv`: query
/// head `i` reads key/value head `i / (heads / kv)`).
fn kv_heads(x: &Tensor, b: usize, s: &Shape) -> Result<Tensor, KitError> {
    let (hd, kv) = (s.hidden / s.heads, s.kv());
    let rep = s.heads / kv;
    if rep == 1 {
        return heads(x, b, s);
    }
    let x = x
        .reshape((b, s.seq, kv, hd))?
        .transpose(1, 2)?
        .unsqueeze(2)?;
    let copies: Vec<&Tensor> = (0..rep).map(|_| &x).collect();
    Ok(Tensor::cat(&copies, 2)?
        .reshape((b, s.heads, s.seq, hd))?
        .contiguous()?)
}

fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    b: usize,
    s: &Shape,
) -> Result<Tensor, KitError> {
    let hd = s.hidden / s.heads;
    let mut att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    if let Some(m) = mask {
        att = att.broadcast_add(m)?;
    }
    let y = softmax(&att)?.matmul(v)?;
    Ok(y.transpose(1, 2)?.reshape((b * s.seq, s.hidden))?)
}

/// Rotary tables `cos`, `sin` (`seq x head_dim`, the rotate-half convention of HF llama).
fn rope_tables(s: &Shape) -> Result<(Tensor, Tensor), KitError> {
    let hd = s.hidden / s.heads;
    let half = hd / 2;
    let mut cos = Vec::with_capacity(s.seq * hd);
    let mut sin = Vec::with_capacity(s.seq * hd);
    for p in 0..s.seq {
        for i in 0..hd {
            let inv = 10000f64.powf(-2.0 * (i % half) as f64 / hd as f64);
            let a = p as f64 * inv;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(cos, (s.seq, hd), &dev)?,
        Tensor::from_vec(sin, (s.seq, hd), &dev)?,
    ))
}

fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, KitError> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// Which GELU a BERT block uses: the kit's own models use the tanh approximation; the real
/// all-MiniLM-L6-v2 uses the exact (erf) one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `gelu` (tanh approximation).
    Tanh,
    /// `gelu_erf` (exact).
    Erf,
}

/// A BERT encoder's last hidden states (`batch*seq x hidden`) for `input` (`batch x seq`),
/// through the blocks `blocks` of the parameters `get` returns by their Hugging Face names.
pub fn bert_encode(
    get: &dyn Fn(&str) -> Result<Tensor, KitError>,
    input: &Tensor,
    blocks: &[usize],
    s: &Shape,
    gelu: Gelu,
) -> Result<Tensor, KitError> {
    let (b, t) = input.dims2()?;
    if t != s.seq {
        return Err(KitError::Bad("batch length differs from the shape".into()));
    }
    let x = get("embeddings.word_embeddings.weight")?.index_select(&input.flatten_all()?, 0)?;
    let pos = get("embeddings.position_embeddings.weight")?.narrow(0, 0, t)?;
    let typ = get("embeddings.token_type_embeddings.weight")?.narrow(0, 0, 1)?;
    let x = x
        .reshape((b, t, s.hidden))?
        .broadcast_add(&pos)?
        .broadcast_add(&typ)?
        .reshape((b * t, s.hidden))?;
    let mut x = layer_norm(
        &x,
        &get("embeddings.LayerNorm.weight")?,
        &get("embeddings.LayerNorm.bias")?,
    )?;
    for &l in blocks {
        let n = |m: &str| format!("encoder.layer.{l}.{m}");
        let lb = |x: &Tensor, m: &str| -> Result<Tensor, KitError> {
            linear_b(
                x,
                &get(&n(&format!("{m}.weight")))?,
                &get(&n(&format!("{m}.bias")))?,
            )
        };
        let q = heads(&lb(&x, "attention.self.query")?, b, s)?;
        let k = heads(&lb(&x, "attention.self.key")?, b, s)?;
        let v = heads(&lb(&x, "attention.self.value")?, b, s)?;
        let y = lb(
            &attention(&q, &k, &v, None, b, s)?,
            "attention.output.dense",
        )?;
        x = layer_norm(
            &(x + y)?,
            &get(&n("attention.output.LayerNorm.weight"))?,
            &get(&n("attention.output.LayerNorm.bias"))?,
        )?;
        let h = lb(&x, "intermediate.dense")?;
        let h = match gelu {
            Gelu::Tanh => h.gelu()?,
            Gelu::Erf => h.gelu_erf()?,
        };
        let y = lb(&h, "output.dense")?;
        x = layer_norm(
            &(x + y)?,
            &get(&n("output.LayerNorm.weight"))?,
            &get(&n("output.LayerNorm.bias"))?,
        )?;
    }
    Ok(x)
}

/// Precomputed constants of a forward pass.
pub struct Consts {
    cos: Tensor,
    sin: Tensor,
    causal: Tensor,
}

impl Consts {
    /// Tables for shape `s`.
    pub fn new(s: &Shape) -> Result<Self, KitError> {
        let (cos, sin) = rope_tables(s)?;
        let t = s.seq;
        let m: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        Ok(Self {
            cos,
            sin,
            causal: Tensor::from_vec(m, (t, t), &Device::Cpu)?,
        })
    }
}

/// Mean cross-entropy (nats) of the batch's targets.
pub fn loss(f: Family, p: &Params, s: &Shape, k: &Consts, bt: &Batch) -> Result<Tensor, KitError> {
    let (b, t) = bt.input.dims2()?;
    if t != s.seq {
        return Err(KitError::Bad("batch length differs from the shape".into()));
    }
    let emb = p.get(embedding_name(f))?;
    let logits = match f {
        Family::Llama | Family::Gqa => {
            let mut x = emb.index_select(&bt.input.flatten_all()?, 0)?;
            for l in 0..s.layers {
                let n = |m: &str| format!("model.layers.{l}.{m}");
                let h = rms_norm(&x, p.get(&n("input_layernorm.weight"))?)?;
                let q = heads(&linear(&h, p.get(&n("self_attn.q_proj.weight"))?)?, b, s)?;
                let kk = kv_heads(&linear(&h, p.get(&n("self_attn.k_proj.weight"))?)?, b, s)?;
                let v = kv_heads(&linear(&h, p.get(&n("self_attn.v_proj.weight"))?)?, b, s)?;
                let q = rope(&q, &k.cos, &k.sin)?;
                let kk = rope(&kk, &k.cos, &k.sin)?;
                let y = attention(&q, &kk, &v, Some(&k.causal), b, s)?;
                x = (x + linear(&y, p.get(&n("self_attn.o_proj.weight"))?)?)?;
                let h = rms_norm(&x, p.get(&n("post_attention_layernorm.weight"))?)?;
                let g = linear(&h, p.get(&n("mlp.gate_proj.weight"))?)?.silu()?;
                let u = linear(&h, p.get(&n("mlp.up_proj.weight"))?)?;
                x = (x + linear(&(g * u)?, p.get(&n("mlp.down_proj.weight"))?)?)?;
            }
            let x = rms_norm(&x, p.get("model.norm.weight")?)?;
            linear(&x, emb)?
        }
        Family::Bert => {
            let blocks: Vec<usize> = (0..s.layers).collect();
            let x = bert_encode(
                &|n: &str| p.get(n).cloned(),
                &bt.input,
                &blocks,
                s,
                Gelu::Tanh,
            )?;
            let positions = bt
                .positions
                .as_ref()
                .ok_or_else(|| KitError::Bad("masked-LM batch without positions".into()))?;
            let sel = x.index_select(positions, 0)?;
            let h = linear_b(
                &sel,
                p.get("cls.predictions.transform.dense.weight")?,
                p.get("cls.predictions.transform.dense.bias")?,
            )?
            .gelu()?;
            let h = layer_norm(
                &h,
                p.get("cls.predictions.transform.LayerNorm.weight")?,
                p.get("cls.predictions.transform.LayerNorm.bias")?,
            )?;
            linear(&h, emb)?.broadcast_add(p.get("cls.predictions.bias")?)?
        }
    };
    Ok(candle_nn::loss::cross_entropy(&logits, &bt.targets)?)
}

/// A named tensor ready to save: `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The saved tensors: `(name, shape, data)` in initialisation order. With `full`, the token
/// embedding (and the MLM output bias) are tokenizer-sized: the compact rows scattered into
/// `init_embedding * decay`; without, they keep the compact rows (the model restricted to the
/// tokens it was trained on, in token-id order).
pub fn tensors(
    f: Family,
    p: &Params,
    c: &Corpus,
    init_embedding: &[f32],
    decay: f64,
    full: bool,
) -> Result<Vec<NamedTensor>, KitError> {
    let mut out = Vec::new();
    for n in &p.names {
        let t = p.vars[n].as_tensor();
        let shape = t.dims().to_vec();
        let data: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let is_emb = n == embedding_name(f);
        let is_bias = n == "cls.predictions.bias";
        if full && (is_emb || is_bias) {
            let w = if is_emb { shape[1] } else { 1 };
            let mut big: Vec<f32> = if is_emb {
                init_embedding
                    .iter()
                    .map(|&x| (x as f64 * decay) as f32)
                    .collect()
            } else {
                vec![0.0; c.vocab]
            };
            for (k, &tok) in c.tokens.iter().enumerate() {
                let tok = tok as usize;
                big[tok * w..(tok + 1) * w].copy_from_slice(&data[k * w..(k + 1) * w]);
            }
            let shape = if is_emb {
                vec![c.vocab, w]
            } else {
                vec![c.vocab]
            };
            out.push((n.clone(), shape, big));
        } else {
            out.push((n.clone(), shape, data));
        }
    }
    Ok(out)
}

/// Serialize tensors as an F32 safetensors file.
pub fn safetensors_bytes(ts: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>, KitError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = ts
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| KitError::Bad(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| KitError::Bad(format!("safetensors: {e}")))
}

//! Small f32 forward passes over a [`ZModel`], to check that a disguised copy computes what the
//! original computes (tests only; a few tokens, no cache). Tensors are found by name, in the
//! Hugging Face or llama.cpp spelling.

use ndarray::{s, Array1, Array2, Axis};

use crate::zoo::ZModel;

/// Sizes a llama forward pass needs beyond the tensors.
#[derive(Clone, Copy, Debug)]
pub struct LlamaDims {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base.
    pub theta: f32,
    /// True when Q/K rows are in llama.cpp's order (rotary pairs adjacent), false for the
    /// Hugging Face order (rotary halves).
    pub gguf_rope: bool,
}

fn find<'a>(m: &'a ZModel, names: &[String]) -> Result<(&'a [f32], &'a [usize]), String> {
    for n in names {
        if let Some(t) = m.tensors.iter().find(|t| &t.name == n) {
            return Ok((&t.data, &t.shape));
        }
    }
    Err(format!("tensor {names:?} not found"))
}

fn mat(m: &ZModel, names: &[String]) -> Result<Array2<f32>, String> {
    let (d, s) = find(m, names)?;
    let c: usize = s.iter().skip(1).product();
    Array2::from_shape_vec((s[0], c), d.to_vec()).map_err(|e| e.to_string())
}

fn vec1(m: &ZModel, names: &[String]) -> Result<Array1<f32>, String> {
    Ok(Array1::from(find(m, names)?.0.to_vec()))
}

fn opt_vec(m: &ZModel, names: &[String]) -> Option<Array1<f32>> {
    vec1(m, names).ok()
}

fn rms_norm(x: &Array2<f32>, g: &Array1<f32>, eps: f32) -> Array2<f32> {
    let mut y = x.clone();
    for mut r in y.rows_mut() {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / r.len() as f32;
        r *= 1.0 / (ms + eps).sqrt();
        r *= g;
    }
    y
}

fn layer_norm(x: &Array2<f32>, g: &Array1<f32>, b: &Array1<f32>, eps: f32) -> Array2<f32> {
    let mut y = x.clone();
    for mut r in y.rows_mut() {
        let n = r.len() as f32;
        let m = r.sum() / n;
        let v = r.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n;
        r.mapv_inplace(|x| (x - m) / (v + eps).sqrt());
        r *= g;
        r += b;
    }
    y
}

fn softmax_rows(a: &mut Array2<f32>) {
    for mut r in a.rows_mut() {
        let mx = r.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        r.mapv_inplace(|v| (v - mx).exp());
        let s = r.sum();
        r /= s;
    }
}

/// `x Wᵀ (+ b)` for a stored `out x in` matrix.
fn linear(x: &Array2<f32>, w: &Array2<f32>, b: Option<&Array1<f32>>) -> Array2<f32> {
    let mut y = x.dot(&w.t());
    if let Some(b) = b {
        y += b;
    }
    y
}

fn rope(x: &mut Array2<f32>, d: usize, theta: f32, gguf: bool) {
    let heads = x.ncols() / d;
    for p in 0..x.nrows() {
        for h in 0..heads {
            for i in 0..d / 2 {
                let f = (p as f32) / theta.powf(2.0 * i as f32 / d as f32);
                let (c, s) = (f.cos(), f.sin());
                let (a, b) = if gguf {
                    (h * d + 2 * i, h * d + 2 * i + 1)
                } else {
                    (h * d + i, h * d + i + d / 2)
                };
                let (xa, xb) = (x[[p, a]], x[[p, b]]);
                x[[p, a]] = xa * c - xb * s;
                x[[p, b]] = xa * s + xb * c;
            }
        }
    }
}

/// Causal self-attention over `q, k, v` (`tokens x heads·d`), grouped-query.
fn attention(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    d: usize,
    causal: bool,
) -> Array2<f32> {
    let (n, hq) = (q.nrows(), q.ncols() / d);
    let hk = k.ncols() / d;
    let mut out = Array2::<f32>::zeros((n, hq * d));
    for h in 0..hq {
        let g = h / (hq / hk).max(1);
        let qh = q.slice(s![.., h * d..(h + 1) * d]);
        let kh = k.slice(s![.., g * d..(g + 1) * d]);
        let vh = v.slice(s![.., g * d..(g + 1) * d]);
        let mut a = qh.dot(&kh.t()) / (d as f32).sqrt();
        if causal {
            for i in 0..n {
                for j in i + 1..n {
                    a[[i, j]] = f32::NEG_INFINITY;
                }
            }
        }
        softmax_rows(&mut a);
        out.slice_mut(s![.., h * d..(h + 1) * d])
            .assign(&a.dot(&vh));
    }
    out
}

fn names(l: Option<usize>, hf: &str, gguf: &str) -> Vec<String> {
    match l {
        Some(l) => vec![format!("model.layers.{l}.{hf}"), format!("blk.{l}.{gguf}")],
        None => vec![hf.to_string(), gguf.to_string()],
    }
}

/// Logits (`tokens x vocab`) of a llama-family model on `tokens`.
pub fn llama_logits(m: &ZModel, tokens: &[usize], dims: LlamaDims) -> Result<Array2<f32>, String> {
    let emb = mat(
        m,
        &names(None, "model.embed_tokens.weight", "token_embd.weight"),
    )?;
    let mut x = emb.select(Axis(0), tokens);
    let silu = |v: f32| v / (1.0 + (-v).exp());
    for l in 0..m.cfg.layers {
        let n1 = vec1(
            m,
            &names(Some(l), "input_layernorm.weight", "attn_norm.weight"),
        )?;
        let a = rms_norm(&x, &n1, dims.eps);
        let mut q = linear(
            &a,
            &mat(
                m,
                &names(Some(l), "self_attn.q_proj.weight", "attn_q.weight"),
            )?,
            None,
        );
        let mut k = linear(
            &a,
            &mat(
                m,
                &names(Some(l), "self_attn.k_proj.weight", "attn_k.weight"),
            )?,
            None,
        );
        let v = linear(
            &a,
            &mat(
                m,
                &names(Some(l), "self_attn.v_proj.weight", "attn_v.weight"),
            )?,
            None,
        );
        let d = q.ncols() / dims.heads;
        rope(&mut q, d, dims.theta, dims.gguf_rope);
        rope(&mut k, d, dims.theta, dims.gguf_rope);
        let o = attention(&q, &k, &v, d, true);
        x += &linear(
            &o,
            &mat(
                m,
                &names(Some(l), "self_attn.o_proj.weight", "attn_output.weight"),
            )?,
            None,
        );
        let n2 = vec1(
            m,
            &names(
                Some(l),
                "post_attention_layernorm.weight",
                "ffn_norm.weight",
            ),
        )?;
        let a = rms_norm(&x, &n2, dims.eps);
        let g = linear(
            &a,
            &mat(
                m,
                &names(Some(l), "mlp.gate_proj.weight", "ffn_gate.weight"),
            )?,
            None,
        );
        let u = linear(
            &a,
            &mat(m, &names(Some(l), "mlp.up_proj.weight", "ffn_up.weight"))?,
            None,
        );
        let hmid = g.mapv(silu) * u;
        x += &linear(
            &hmid,
            &mat(
                m,
                &names(Some(l), "mlp.down_proj.weight", "ffn_down.weight"),
            )?,
            None,
        );
    }
    let nf = vec1(m, &names(None, "model.norm.weight", "output_norm.weight"))?;
    let a = rms_norm(&x, &nf, dims.eps);
    let head = mat(m, &names(None, "lm_head.weight", "output.weight")).or(Ok::<_, String>(emb))?;
    Ok(linear(&a, &head, None))
}

fn bert(l: usize, part: &str) -> Vec<String> {
    vec![
        format!("encoder.layer.{l}.{part}"),
        format!("bert.encoder.layer.{l}.{part}"),
    ]
}

fn bert_top(part: &str) -> Vec<String> {
    vec![
        format!("embeddings.{part}"),
        format!("bert.embeddings.{part}"),
    ]
}

/// Last hidden states (`tokens x hidden`) of a BERT-family encoder on `tokens` (one segment).
pub fn bert_hidden(m: &ZModel, tokens: &[usize], heads: usize) -> Result<Array2<f32>, String> {
    let eps = 1e-12;
    let mut x = mat(m, &bert_top("word_embeddings.weight"))?.select(Axis(0), tokens);
    let pos = mat(m, &bert_top("position_embeddings.weight"))?;
    x += &pos.slice(s![..tokens.len(), ..]);
    if let Ok(tt) = mat(m, &bert_top("token_type_embeddings.weight")) {
        x += &tt.row(0);
    }
    x = layer_norm(
        &x,
        &vec1(m, &bert_top("LayerNorm.weight"))?,
        &vec1(m, &bert_top("LayerNorm.bias"))?,
        eps,
    );
    let d = x.ncols() / heads;
    let gelu = |v: f32| 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2));
    for l in 0..m.cfg.layers {
        let lin = |x: &Array2<f32>, p: &str| -> Result<Array2<f32>, String> {
            let b = opt_vec(m, &bert(l, &format!("{p}.bias")));
            Ok(linear(
                x,
                &mat(m, &bert(l, &format!("{p}.weight")))?,
                b.as_ref(),
            ))
        };
        let q = lin(&x, "attention.self.query")?;
        let k = lin(&x, "attention.self.key")?;
        let v = lin(&x, "attention.self.value")?;
        let a = attention(&q, &k, &v, d, false);
        let y = lin(&a, "attention.output.dense")? + &x;
        x = layer_norm(
            &y,
            &vec1(m, &bert(l, "attention.output.LayerNorm.weight"))?,
            &vec1(m, &bert(l, "attention.output.LayerNorm.bias"))?,
            eps,
        );
        let i = lin(&x, "intermediate.dense")?.mapv(gelu);
        let y = lin(&i, "output.dense")? + &x;
        x = layer_norm(
            &y,
            &vec1(m, &bert(l, "output.LayerNorm.weight"))?,
            &vec1(m, &bert(l, "output.LayerNorm.bias"))?,
            eps,
        );
    }
    Ok(x)
}

/// erf (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7): enough for an equivalence check, where
/// both models use the same function.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t) + 1.421_413_7) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t
            * (-x * x).exp();
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// Largest absolute difference relative to the largest absolute value of `a`.
pub fn max_rel_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    let scale = a
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

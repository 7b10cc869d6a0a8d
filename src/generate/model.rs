//! A llama-architecture transformer read from GGUF with candle, run on the CPU.
//!
//! candle reads the file (`gguf_file::Content`) and dequantizes what must be dense; the forward
//! pass is written here over preallocated buffers because candle-transformers' quantized llama
//! cannot batch prompts of different lengths (no padding mask), re-concatenates its KV cache on
//! every step, and runs Q4_1 through scalar code. [`super::reference`] keeps candle-transformers'
//! model for cross-checking logits and for the speed comparison.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use rayon::prelude::*;

use super::kernels::{dot_f32, Kernel, PackedMatrix, QuantRows, QK};
use super::GenerateError;

/// Shape hyper-parameters from the GGUF metadata (`llama.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Vocabulary size (rows of the output matrix).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// Trained context length.
    pub context_length: usize,
}

/// Model metadata the generation loop needs besides the weights.
#[derive(Clone, Debug, Default)]
pub struct ModelMeta {
    /// End-of-sequence token id.
    pub eos: Option<u32>,
    /// Beginning-of-sequence token id.
    pub bos: Option<u32>,
    /// Whether the tokenizer prepends BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Jinja chat template (`tokenizer.chat_template`).
    pub chat_template: Option<String>,
    /// Token ids of type "control" (`tokenizer.ggml.token_type` == 3): special tokens.
    pub control_tokens: Vec<u32>,
    /// Token strings, used for the chat template's `bos_token`/`eos_token`.
    pub tokens: Vec<String>,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v stacked (one pass over the activations); split by [`LlamaModel::qkv_split`].
    wqkv: Fused,
    wo: PackedMatrix,
    ffn_norm: Vec<f32>,
    /// gate and up stacked.
    w_gate_up: Fused,
    w_down: PackedMatrix,
}

/// Stacked projections, or separate ones when their storage types differ.
enum Fused {
    One(PackedMatrix),
    Many(Vec<PackedMatrix>),
}

impl Fused {
    fn new(parts: Vec<PackedMatrix>) -> Self {
        match PackedMatrix::concat(parts) {
            Ok(m) => Self::One(m),
            Err(parts) => Self::Many(parts),
        }
    }

    /// `out` is `n x sum(rows)`, row-major, parts side by side.
    fn matmul(
        &self,
        x: &[f32],
        n: usize,
        qx: &mut QuantRows,
        tmp: &mut Vec<f32>,
        out: &mut [f32],
        kernel: Kernel,
    ) {
        match self {
            Self::One(m) => m.matmul(x, n, qx, out, kernel),
            Self::Many(parts) => {
                let total: usize = parts.iter().map(|p| p.rows()).sum();
                let mut off = 0;
                for p in parts {
                    let r = p.rows();
                    tmp.resize(n * r, 0.0);
                    p.matmul(x, n, qx, tmp, kernel);
                    for i in 0..n {
                        out[i * total + off..i * total + off + r]
                            .copy_from_slice(&tmp[i * r..(i + 1) * r]);
                    }
                    off += r;
                }
            }
        }
    }
}

/// A loaded llama model: packed weights plus RoPE tables.
pub struct LlamaModel {
    cfg: LlamaConfig,
    meta: ModelMeta,
    embed: PackedMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `None`: tied to the embeddings.
    output: Option<PackedMatrix>,
    /// cos/sin of position * theta_i, `context_length x head_dim/2`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// The pool every forward pass runs in: the calling thread becomes a worker for the whole
    /// pass, so the ~150 parallel regions of a step use work stealing instead of each parking
    /// the caller on a futex.
    pool: rayon::ThreadPool,
    /// The dot-product kernel (all give the same bits; see [`Kernel`]).
    kernel: Kernel,
}

fn bad(path: &Path, msg: impl Into<String>) -> GenerateError {
    GenerateError::BadModel {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn pack(path: &Path, name: &str, t: QTensor, dense: bool) -> Result<PackedMatrix, GenerateError> {
    let dims = t.shape().dims().to_vec();
    let (rows, cols) = match dims.as_slice() {
        [r, c] => (*r, *c),
        [c] => (1, *c),
        _ => return Err(bad(path, format!("tensor `{name}` has shape {dims:?}"))),
    };
    let raw = t
        .data()
        .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
    let packed = match t.dtype() {
        _ if dense => None,
        GgmlDType::Q4_1 if cols % QK == 0 => PackedMatrix::from_q4_1(&raw, rows, cols),
        GgmlDType::Q8_0 if cols % QK == 0 => PackedMatrix::from_q8_0(&raw, rows, cols),
        _ => None,
    };
    match packed {
        Some(p) => Ok(p),
        None => {
            // Types without a kernel here are dequantized by candle once, at load time.
            let w = t
                .dequantize(&Device::Cpu)
                .and_then(|x| x.flatten_all())
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
            Ok(PackedMatrix::F32 { rows, cols, w })
        }
    }
}

fn vector(path: &Path, name: &str, t: QTensor, len: usize) -> Result<Vec<f32>, GenerateError> {
    let v = t
        .dequantize(&Device::Cpu)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
    if v.len() != len {
        return Err(bad(
            path,
            format!("tensor `{name}` has {} values, expected {len}", v.len()),
        ));
    }
    Ok(v)
}

impl LlamaModel {
    /// Load a llama-architecture GGUF file.
    pub fn load(path: &Path) -> Result<Self, GenerateError> {
        Self::load_with(path, false)
    }

    /// Load with every matrix dequantized to f32 (`dense`): no activation quantization, so the
    /// forward pass can be checked exactly against a dequantized reference.
    pub fn load_with(path: &Path, dense: bool) -> Result<Self, GenerateError> {
        // HALLMARK_THREADS pins the worker count (benchmarks against tools run with -t N).
        let threads = std::env::var("HALLMARK_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Self::load_opts(path, dense, threads)
    }

    /// Load with `threads` worker threads (at least 1). The kernel is the best this CPU runs,
    /// or the one `HALLMARK_KERNEL` names (an error if unknown or unsupported here).
    pub fn load_opts(path: &Path, dense: bool, threads: usize) -> Result<Self, GenerateError> {
        let kernel = Kernel::from_env()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("hallmark-gen-{i}"))
            .build()
            .map_err(|e| bad(path, format!("thread pool: {e}")))?;
        let (mut file, _) =
            crate::input::open_regular(path, crate::input::Follow::Yes).map_err(|source| {
                GenerateError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        // The strict reader checks every count, length and offset before candle sees the file.
        let strict =
            crate::weights::WeightFile::open(path).map_err(|e| bad(path, e.to_string()))?;
        if strict.parsed().format != crate::weights::WeightFormat::Gguf {
            return Err(bad(path, String::from("not a GGUF file")));
        }
        drop(strict);
        let ct = gguf_file::Content::read(&mut file).map_err(|e| {
            // candle appends a backtrace to some errors; the first line is the message.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").to_string();
            bad(path, format!("not a readable GGUF file: {first}"))
        })?;
        let md = &ct.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(bad(
                path,
                format!("architecture `{arch}` is not supported (llama only)"),
            ));
        }
        let u = |k: &str| -> Result<usize, GenerateError> {
            md.get(k)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| bad(path, format!("metadata `{k}` missing")))
        };
        let n_head = u("llama.attention.head_count")?;
        let n_embd = u("llama.embedding_length")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(bad(
                path,
                "embedding length is not a multiple of the head count",
            ));
        }
        let head_dim = n_embd / n_head;
        let n_kv_head = u("llama.attention.head_count_kv").unwrap_or(n_head);
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(bad(
                path,
                "head count is not a multiple of the key/value head count",
            ));
        }
        let rope_dim = u("llama.rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim || head_dim % 2 != 0 {
            return Err(bad(path, "partial rotary embeddings are not supported"));
        }
        if u("llama.expert_count").unwrap_or(0) > 1 {
            return Err(bad(path, "mixture-of-experts models are not supported"));
        }
        let f = |k: &str, default: f32| md.get(k).and_then(|v| v.to_f32().ok()).unwrap_or(default);
        let mut cfg = LlamaConfig {
            n_layer: u("llama.block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: u("llama.feed_forward_length")?,
            vocab: 0,
            rms_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: f("llama.rope.freq_base", 10000.0),
            context_length: u("llama.context_length").unwrap_or(4096).min(32768),
        };
        let meta = read_meta(md);

        let mut tensor = |name: &str| -> Result<QTensor, GenerateError> {
            ct.tensor(&mut file, name, &Device::Cpu)
                .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))
        };
        let embed = pack(
            path,
            "token_embd.weight",
            tensor("token_embd.weight")?,
            dense,
        )?;
        if embed.cols() != n_embd {
            return Err(bad(
                path,
                "token_embd.weight width differs from the embedding length",
            ));
        }
        cfg.vocab = embed.rows();
        let output = match tensor("output.weight") {
            Ok(t) => Some(pack(path, "output.weight", t, dense)?),
            Err(_) => None,
        };
        let out_norm = vector(
            path,
            "output_norm.weight",
            tensor("output_norm.weight")?,
            n_embd,
        )?;
        let kv_dim = n_kv_head * head_dim;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let mut m = |suffix: &str, rows: usize, cols: usize| {
                let name = format!("blk.{l}.{suffix}.weight");
                let p = pack(path, &name, tensor(&name)?, dense)?;
                if p.rows() != rows || p.cols() != cols {
                    return Err(bad(
                        path,
                        format!("tensor `{name}` has an unexpected shape"),
                    ));
                }
                Ok::<_, GenerateError>(p)
            };
            let q = m("attn_q", n_embd, n_embd)?;
            let k = m("attn_k", kv_dim, n_embd)?;
            let v = m("attn_v", kv_dim, n_embd)?;
            let wo = m("attn_output", n_embd, n_embd)?;
            let gate = m("ffn_gate", cfg.n_ff, n_embd)?;
            let up = m("ffn_up", cfg.n_ff, n_embd)?;
            let w_down = m("ffn_down", n_embd, cfg.n_ff)?;
            let an = format!("blk.{l}.attn_norm.weight");
            let fnn = format!("blk.{l}.ffn_norm.weight");
            layers.push(Layer {
                attn_norm: vector(path, &an, tensor(&an)?, n_embd)?,
                wqkv: Fused::new(vec![q, k, v]),
                wo,
                ffn_norm: vector(path, &fnn, tensor(&fnn)?, n_embd)?,
                w_gate_up: Fused::new(vec![gate, up]),
                w_down,
            });
        }
        if let Some(o) = &output {
            if o.cols() != n_embd {
                return Err(bad(
                    path,
                    "output.weight width differs from the embedding length",
                ));
            }
            cfg.vocab = o.rows();
        }
        let half = head_dim / 2;
        let mut rope_cos = vec![0f32; cfg.context_length * half];
        let mut rope_sin = vec![0f32; cfg.context_length * half];
        for p in 0..cfg.context_length {
            for i in 0..half {
                let theta = 1f32 / cfg.rope_base.powf((2 * i) as f32 / head_dim as f32);
                let a = p as f32 * theta;
                rope_cos[p * half + i] = a.cos();
                rope_sin[p * half + i] = a.sin();
            }
        }
        Ok(Self {
            cfg,
            meta,
            embed,
            layers,
            out_norm,
            output,
            rope_cos,
            rope_sin,
            pool,
            kernel,
        })
    }

    /// Shape hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Tokenizer-side metadata (EOS, chat template, control tokens).
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// A fresh state (KV cache and scratch) for `batch` sequences of at most `max_len` tokens.
    pub fn new_state(&self, batch: usize, max_len: usize) -> Result<State, GenerateError> {
        if max_len > self.cfg.context_length {
            return Err(GenerateError::TooLong {
                len: max_len,
                max: self.cfg.context_length,
            });
        }
        let kv = batch * self.cfg.n_kv_head * max_len * self.cfg.head_dim;
        Ok(State {
            batch,
            max_len,
            len: 0,
            pads: vec![0; batch],
            k: (0..self.cfg.n_layer).map(|_| vec![0f32; kv]).collect(),
            v: (0..self.cfg.n_layer).map(|_| vec![0f32; kv]).collect(),
            s: Scratch::default(),
        })
    }

    /// Run `tokens` (`batch x seq` row-major, the same `seq` for every sequence) through the
    /// model, appending to the KV cache. `pads[b]` (first call only) is the number of left-pad
    /// slots of sequence `b`: they are never attended to and do not count as positions.
    /// Returns the logits of each sequence's last position (`batch x vocab`), or of every
    /// position (`batch x seq x vocab`) when `all` is set.
    pub fn forward<'s>(
        &self,
        st: &'s mut State,
        tokens: &[u32],
        pads: Option<&[usize]>,
        all: bool,
    ) -> Result<&'s [f32], GenerateError> {
        self.pool
            .install(|| self.forward_in_pool(st, tokens, pads, all))?;
        Ok(&st.s.logits)
    }

    /// The dot-product kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Use `kernel` from now on (an error if this CPU cannot run it). Every kernel gives the
    /// same logits; tests switch to compare them.
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<(), GenerateError> {
        self.kernel = kernel.require()?;
        Ok(())
    }

    /// Worker threads of the model's pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn forward_in_pool(
        &self,
        st: &mut State,
        tokens: &[u32],
        pads: Option<&[usize]>,
        all: bool,
    ) -> Result<(), GenerateError> {
        let c = &self.cfg;
        let b = st.batch;
        if b == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(b) {
            return Err(GenerateError::Shape(
                "token count is not a multiple of the batch",
            ));
        }
        let seq = tokens.len() / b;
        if st.len + seq > st.max_len {
            return Err(GenerateError::TooLong {
                len: st.len + seq,
                max: st.max_len,
            });
        }
        if let Some(p) = pads {
            if p.len() != b || st.len != 0 {
                return Err(GenerateError::Shape(
                    "pads are set once, for every sequence",
                ));
            }
            st.pads.copy_from_slice(p);
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(GenerateError::BadToken(t));
        }
        let n = b * seq;
        let (d, hd, kvd) = (c.n_embd, c.head_dim, c.n_kv_head * c.head_dim);
        let qkv_w = d + 2 * kvd;
        let s = &mut st.s;
        s.x.resize(n * d, 0.0);
        s.h.resize(n * d, 0.0);
        s.qkv.resize(n * qkv_w, 0.0);
        s.att.resize(n * d, 0.0);
        s.o.resize(n * d, 0.0);
        s.gu.resize(n * 2 * c.n_ff, 0.0);
        s.act.resize(n * c.n_ff, 0.0);
        for (i, &t) in tokens.iter().enumerate() {
            self.embed.row_f32(t as usize, &mut s.x[i * d..(i + 1) * d]);
        }
        let start = st.len;
        let half = hd / 2;
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&s.x, &layer.attn_norm, c.rms_eps, &mut s.h, d);
            layer
                .wqkv
                .matmul(&s.h, n, &mut s.qx, &mut s.tmp, &mut s.qkv, self.kernel);
            // RoPE on q and k, then k and v into the cache.
            let (kc, vc) = (&mut st.k[li], &mut st.v[li]);
            for bi in 0..b {
                for si in 0..seq {
                    let row = bi * seq + si;
                    let slot = start + si;
                    let pos = slot.saturating_sub(st.pads[bi]);
                    let (cs, sn) = (
                        &self.rope_cos[pos * half..(pos + 1) * half],
                        &self.rope_sin[pos * half..(pos + 1) * half],
                    );
                    let r = &mut s.qkv[row * qkv_w..(row + 1) * qkv_w];
                    for head in r[..d + kvd].chunks_exact_mut(hd) {
                        for i in 0..half {
                            let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                            head[2 * i] = x0 * cs[i] - x1 * sn[i];
                            head[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
                        }
                    }
                    for g in 0..c.n_kv_head {
                        let at = ((bi * c.n_kv_head + g) * st.max_len + slot) * hd;
                        kc[at..at + hd].copy_from_slice(&r[d + g * hd..d + (g + 1) * hd]);
                        vc[at..at + hd]
                            .copy_from_slice(&r[d + kvd + g * hd..d + kvd + (g + 1) * hd]);
                    }
                }
            }
            // Attention: one task per (row, head).
            let (kc, vc) = (&st.k[li], &st.v[li]);
            let qkv = &s.qkv;
            let pads_ref = &st.pads;
            let max_len = st.max_len;
            let group = c.n_head / c.n_kv_head;
            let scale = 1.0 / (hd as f32).sqrt();
            let attend = |scores: &mut Vec<f32>, (task, out): (usize, &mut [f32])| {
                let (row, h) = (task / c.n_head, task % c.n_head);
                let (bi, si) = (row / seq, row % seq);
                let slot = start + si;
                let lo = pads_ref[bi];
                out.fill(0.0);
                if lo > slot {
                    return; // a pad position: nothing to attend to, output unused
                }
                let q = &qkv[row * qkv_w + h * hd..row * qkv_w + (h + 1) * hd];
                let base = (bi * c.n_kv_head + h / group) * max_len;
                scores.clear();
                let mut mx = f32::NEG_INFINITY;
                for j in lo..=slot {
                    let sc = dot_f32(q, &kc[(base + j) * hd..(base + j + 1) * hd]) * scale;
                    mx = mx.max(sc);
                    scores.push(sc);
                }
                let mut z = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - mx).exp();
                    z += *sc;
                }
                for (j, p) in (lo..=slot).zip(scores.iter()) {
                    let w = p / z;
                    let vr = &vc[(base + j) * hd..(base + j + 1) * hd];
                    for (o, v) in out.iter_mut().zip(vr) {
                        *o += w * v;
                    }
                }
            };
            // A decode step at batch 1 is a few microseconds of work: not worth a parallel region.
            if n * c.n_head * (start + seq) < 1 << 14 {
                let mut scores = Vec::new();
                s.att
                    .chunks_mut(hd)
                    .enumerate()
                    .for_each(|t| attend(&mut scores, t));
            } else {
                s.att
                    .par_chunks_mut(hd)
                    .enumerate()
                    .for_each_init(Vec::new, |scores, t| attend(scores, t));
            }
            layer.wo.matmul(&s.att, n, &mut s.qx, &mut s.o, self.kernel);
            for (x, o) in s.x.iter_mut().zip(&s.o) {
                *x += o;
            }
            rms_norm(&s.x, &layer.ffn_norm, c.rms_eps, &mut s.h, d);
            layer
                .w_gate_up
                .matmul(&s.h, n, &mut s.qx, &mut s.tmp, &mut s.gu, self.kernel);
            let ff = c.n_ff;
            for i in 0..n {
                let (g, u) = s.gu[i * 2 * ff..(i + 1) * 2 * ff].split_at(ff);
                for ((a, &gv), &uv) in s.act[i * ff..(i + 1) * ff].iter_mut().zip(g).zip(u) {
                    *a = gv / (1.0 + (-gv).exp()) * uv;
                }
            }
            layer
                .w_down
                .matmul(&s.act, n, &mut s.qx, &mut s.o, self.kernel);
            for (x, o) in s.x.iter_mut().zip(&s.o) {
                *x += o;
            }
        }
        st.len += seq;
        // Final norm on the rows whose logits are wanted, then the output projection.
        let rows: Vec<usize> = if all {
            (0..n).collect()
        } else {
            (0..b).map(|bi| bi * seq + seq - 1).collect()
        };
        s.h.resize(rows.len() * d, 0.0);
        for (k, &r) in rows.iter().enumerate() {
            let (src, dst) = (&s.x[r * d..(r + 1) * d], &mut s.h[k * d..(k + 1) * d]);
            rms_norm(src, &self.out_norm, c.rms_eps, dst, d);
        }
        let out = self.output.as_ref().unwrap_or(&self.embed);
        s.logits.resize(rows.len() * c.vocab, 0.0);
        out.matmul(&s.h, rows.len(), &mut s.qx, &mut s.logits, self.kernel);
        Ok(())
    }
}

fn read_meta(md: &HashMap<String, gguf_file::Value>) -> ModelMeta {
    let id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
    let tokens: Vec<String> = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(|v| {
            v.iter()
                .map(|t| t.to_string().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let control_tokens = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| {
            v.iter()
                .enumerate()
                .filter(|(_, t)| t.to_i32().ok() == Some(3) || t.to_u32().ok() == Some(3))
                .map(|(i, _)| i as u32)
                .collect()
        })
        .unwrap_or_default();
    ModelMeta {
        eos: id("tokenizer.ggml.eos_token_id"),
        bos: id("tokenizer.ggml.bos_token_id"),
        add_bos: md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false),
        chat_template: md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned(),
        control_tokens,
        tokens,
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], d: usize) {
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = dot_f32(xr, xr) / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * r * g;
        }
    }
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    tmp: Vec<f32>,
    logits: Vec<f32>,
    qx: QuantRows,
}

/// The KV cache and scratch buffers of one batch of sequences. Reused across steps so that a
/// decode step allocates nothing.
pub struct State {
    batch: usize,
    max_len: usize,
    len: usize,
    pads: Vec<usize>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    s: Scratch,
}

impl State {
    /// Slots filled so far (including left padding).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Forget every slot from `len` on (the KV cache keeps its memory), e.g. to rerun a step
    /// from the same context. Padding set by the first pass stays.
    pub fn rewind(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

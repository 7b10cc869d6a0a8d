//! The active weight mark: a keyed spread-spectrum signal embedded into a model's matrices and
//! found blind, with nothing but the secret key.
//!
//! # Method
//!
//! Every eligible matrix (2-D, one axis of the model's hidden size `C`, the other at most `8 C`,
//! so token embeddings and output heads are left alone) is viewed as `K x C` with the hidden axis
//! last, whatever its storage orientation. A keyed subset of them (by canonical tensor name) gets
//! the rank-one pattern
//!
//! ```text
//! dW[k, j] = a * u[k] * h[j],   a = strength * std(W)
//! ```
//!
//! * `h` in {-1, +1}^C is a keyed pseudo-random sign vector over the hidden axis, one per content
//!   length `K` (gate/up/down share one, q/o another, k/v a third), so the mark depends on no
//!   tensor name or order and survives transposed storage;
//! * `u[k]` is *content-keyed*: with `p[k] = sum_j r[j] W[k, j] [|W[k, j]| > 0.6 rms(W[k, :])]`, the
//!   row's projection on a second keyed sign vector `r`, `u[k] = sign(p[k])`, flipped for the
//!   24% of rows with the largest `|p|` (Stein-balanced, so that `u` does not correlate with
//!   the matrix's own principal directions; see `stein_signs`). A row carries its sign with it,
//!   so permuting FFN neurons or attention heads (rows of gate/up/q/k/v, columns of down/o) or
//!   llama.cpp's Q/K row permutation leaves the mark intact with no realignment at all. Only
//!   elements above 0.6 of the row's rms enter, so magnitude pruning up to ~40% does not move it.
//!
//! Since `a = strength * std(W) <= strength * rms(W)`, every marked tensor's relative change
//! `||dW|| / ||W||` is at most `strength` (0.45% by default); the writer checks the change it
//! actually made against [`MAX_RELATIVE_CHANGE`] and never writes a tensor that exceeds it.
//!
//! Block-quantized tensors (GGUF Q4_0 ... Q6_K) already sit on their quantization grid, where a
//! change far below one step would round back to the original. Their mark is written into the
//! blocks' f16 scale fields instead: per block, the least-squares fit of the pattern onto the
//! directions the scales span, keeping every quantized integer. The pattern's projection still
//! correlates positively with `u h^T`, which is all the detector needs.
//!
//! # Detection and p-value
//!
//! For the suspect, with `u` recomputed from its own rows and `sigma` its std,
//! `d[j] = sum_k u[k] W[k, j] / sigma` and `e[j] = sum_k W[k, j]^2 / sigma^2` are summed over
//! the scored matrices, the component along `r` is projected out of `d` (`u` is built from `r`),
//! and `S = sum_j h[j] c[j]` with `c[j] = d[j] / e[j]`. Under the null (the suspect does not
//! depend on the key) `c` is a function of the suspect and `r` only, while `h` is independent
//! Rademacher signs: conditionally on the suspect `S` is a Rademacher sum, whatever the weights'
//! distribution. The p-value is therefore a bound that holds for every suspect:
//! `P[S >= s] <= min(exp(-z^2/2), (2e^3/9) * P[N(0,1) >= z])` with `z = s / ||c||` (Hoeffding;
//! Pinelis 1994 for symmetric sums). It is conservative, never anti-conservative.
//!
//! When a fingerprint alignment of the hidden axis is known (a permutation with signs, from the
//! registered fingerprint of the original), `h` and `r` are carried into the suspect's coordinates
//! first, so a permuted or sign-flipped hidden axis is undone too.

#[path = "mark_align.rs"]
pub mod align;
#[path = "mark_io.rs"]
pub mod codec;

pub use align::{hidden_alignment, test_marks_with_fingerprints};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use crate::detect::KeyTest;
use crate::error::{FormatError, IoContext};
use crate::fsutil::{write_atomic, WriteMode};
use crate::registry::{EntryKind, Registry};
use crate::weights::{DType, WeightFile};

/// The `scheme` field of a weight-mark key.
pub const SCHEME: &str = "weights";
/// Key file format version.
pub const KEY_VERSION: u64 = 1;
/// Default mark strength: the pattern's amplitude as a fraction of each tensor's std.
pub const DEFAULT_STRENGTH: f64 = 0.0045;
/// Default fraction of eligible matrices (by keyed canonical name) that carry the mark.
pub const DEFAULT_FRACTION: f64 = 0.75;
/// No tensor's relative change `||dW|| / ||W||` may exceed this.
pub const MAX_RELATIVE_CHANGE: f64 = 0.005;
/// Matrices with fewer elements are not marked or scored.
pub const MIN_ELEMENTS: u64 = 4096;
/// A suspect whose intact mark would reach less than this z is "too short to decide".
pub const MIN_EXPECTED_Z: f64 = 6.0;
/// Pinelis' constant for Rademacher sums: `P[S >= z ||a||] <= (2e^3/9) P[N(0,1) >= z]`.
pub const PINELIS: f64 = 2.0 * 20.085_536_923_187_668 / 9.0;
/// `2 Phi(sqrt(2 ln 2)) - 1`: the share of rows whose content sign is kept (see [`stein_signs`]).
const STEIN_QUANTILE: f64 = 0.760_968;
/// The largest relative step of one block's scale field when a quantized tensor is marked.
const MAX_FIELD_STEP: f64 = 0.1;
/// Elements below this fraction of their row's rms do not enter the content key `u`.
const CONTENT_THRESHOLD: f32 = 0.6;

/// Errors from marking or detecting the weight mark.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// A key file that is not a usable weight-mark key.
    #[error("weight-mark key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A weight file that cannot be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A tensor whose values cannot be decoded or encoded.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// I/O while writing the marked copy.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The model has no matrix the mark can be embedded in.
    #[error("{}: no eligible matrix to mark (need 2-D float or GGML-quantized matrices of at least {MIN_ELEMENTS} elements sharing a hidden size)", .0.display())]
    NothingToMark(PathBuf),
    /// The relative-change bound could not be met for a tensor.
    #[error(
        "tensor `{tensor}`: relative change {change:.3e} exceeds the bound {MAX_RELATIVE_CHANGE}"
    )]
    Bound {
        /// Tensor name.
        tensor: String,
        /// The smallest change reached.
        change: f64,
    },
    /// An output path that cannot be used.
    #[error("{}: {reason}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MarkError + '_ {
    move |source| MarkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------------------------

/// A secret weight-mark key. Its bytes are zeroized on drop and never printed.
pub struct WeightKey {
    secret: Zeroizing<[u8; 32]>,
    strength: f64,
    fraction: f64,
}

impl std::fmt::Debug for WeightKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightKey")
            .field("id", &self.id())
            .field("strength", &self.strength)
            .field("fraction", &self.fraction)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl WeightKey {
    /// A fresh key from the operating system's random generator, with the default parameters.
    pub fn generate() -> Self {
        use rand_core::RngCore;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(&mut secret[..]);
        Self {
            secret,
            strength: DEFAULT_STRENGTH,
            fraction: DEFAULT_FRACTION,
        }
    }

    /// A key from given secret bytes and parameters (for tests and reproducible experiments).
    pub fn from_secret(secret: [u8; 32], strength: f64, fraction: f64) -> Result<Self, String> {
        let mut s = secret;
        let key = Self {
            secret: Zeroizing::new(s),
            strength,
            fraction,
        };
        s.zeroize();
        key.check()?;
        Ok(key)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.strength > 0.0 && self.strength <= MAX_RELATIVE_CHANGE) {
            return Err(format!(
                "`strength` must be in (0, {MAX_RELATIVE_CHANGE}], got {}",
                self.strength
            ));
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "`fraction` must be in (0, 1], got {}",
                self.fraction
            ));
        }
        Ok(())
    }

    /// The mark strength (amplitude as a fraction of each tensor's std).
    pub fn strength(&self) -> f64 {
        self.strength
    }

    /// The fraction of eligible matrices that carry the mark.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// A public identifier of the key (16 hex digits), safe to print.
    pub fn id(&self) -> String {
        let mut out = [0u8; 8];
        self.stream(b"id", 0).fill(&mut out);
        hex::encode(out)
    }

    /// The key file's bytes (JSON). The buffer is zeroized when dropped.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let hexkey = Zeroizing::new(hex::encode(&self.secret[..]));
        let text = Zeroizing::new(format!(
            "{{\"format\":\"hallmark-wmkey\",\"version\":{KEY_VERSION},\"scheme\":\"{SCHEME}\",\
             \"id\":\"{}\",\"strength\":{},\"fraction\":{},\"key\":\"{}\"}}\n",
            self.id(),
            self.strength,
            self.fraction,
            hexkey.as_str()
        ));
        Zeroizing::new(text.as_bytes().to_vec())
    }

    /// Parse a key file's bytes; `path` only names the file in errors.
    pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, MarkError> {
        let bad = |reason: String| MarkError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let mut v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let result = (|| {
            let field = |k: &str| v.get(k);
            if field("format").and_then(|f| f.as_str()) != Some("hallmark-wmkey") {
                return Err(bad("`format` is not `hallmark-wmkey`".into()));
            }
            match field("version").and_then(|f| f.as_u64()) {
                Some(KEY_VERSION) => {}
                Some(other) => return Err(bad(format!("unsupported version {other}"))),
                None => return Err(bad("missing `version`".into())),
            }
            let scheme = field("scheme").and_then(|f| f.as_str()).unwrap_or("");
            if scheme != SCHEME {
                return Err(bad(format!("scheme is `{scheme}`, not `{SCHEME}`")));
            }
            let strength = field("strength")
                .and_then(|f| f.as_f64())
                .ok_or_else(|| bad("missing numeric `strength`".into()))?;
            let fraction = field("fraction")
                .and_then(|f| f.as_f64())
                .ok_or_else(|| bad("missing numeric `fraction`".into()))?;
            let hexkey = field("key")
                .and_then(|f| f.as_str())
                .ok_or_else(|| bad("missing `key`".into()))?;
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hexkey, &mut secret[..])
                .map_err(|_| bad("`key` must be 64 hex digits".into()))?;
            let key = Self {
                secret,
                strength,
                fraction,
            };
            key.check().map_err(bad)?;
            if let Some(id) = field("id").and_then(|f| f.as_str()) {
                if id != key.id() {
                    return Err(bad("`id` does not match `key` (file damaged?)".into()));
                }
            }
            Ok(key)
        })();
        // Wipe the parsed copy of the secret.
        if let Some(serde_json::Value::String(s)) = v.get_mut("key") {
            s.zeroize();
        }
        result
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<Self, MarkError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| MarkError::Key {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
        Self::from_file_bytes(path, &bytes)
    }

    /// Write the key to `path` (mode 0600; an existing file is never overwritten).
    pub fn save(&self, path: &Path) -> Result<(), MarkError> {
        write_atomic(path, &self.to_file_bytes(), WriteMode::Secret).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                MarkError::Output {
                    path: path.to_path_buf(),
                    reason: "already exists; refusing to overwrite it".into(),
                }
            } else {
                MarkError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })
    }

    /// The PRF: BLAKE3 keyed with the secret, over a domain label and a length.
    fn stream(&self, domain: &[u8], n: u64) -> blake3::OutputReader {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"hallmark weight mark v1\0");
        h.update(domain);
        h.update(b"\0");
        h.update(&n.to_le_bytes());
        h.finalize_xof()
    }

    /// `n` keyed signs (+1.0 / -1.0) for the vector named `domain`.
    fn signs(&self, domain: &[u8], n: usize) -> Vec<f32> {
        let mut bytes = vec![0u8; n.div_ceil(8)];
        self.stream(domain, n as u64).fill(&mut bytes);
        (0..n)
            .map(|i| {
                if bytes[i / 8] >> (i % 8) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect()
    }

    /// Whether the matrix with this canonical name is in the keyed subset.
    fn selects(&self, canonical: &str) -> bool {
        if self.fraction >= 1.0 {
            return true;
        }
        let mut b = [0u8; 8];
        self.stream(format!("select/{canonical}").as_bytes(), 0)
            .fill(&mut b);
        (u64::from_le_bytes(b) as f64) < self.fraction * 2f64.powi(64)
    }

    /// The content-key direction `r` over a hidden axis of length `c`.
    fn r_vector(&self, c: usize) -> Vec<f32> {
        self.signs(b"r", c)
    }

    /// The pattern's hidden vector for matrices whose content axis has length `k`. Matrices of
    /// one content length (gate/up/down; q/o; k/v) share it; different lengths get independent
    /// vectors, which multiplies the test's coordinates without trusting any tensor name.
    fn h_vector(&self, k: usize, c: usize) -> Vec<f32> {
        self.signs(format!("h/{k}").as_bytes(), c)
    }
}

// ---------------------------------------------------------------------------------------------
// Layout: which matrices, which axis is hidden
// ---------------------------------------------------------------------------------------------

/// Where the hidden axis of a matrix lies in storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Orient {
    /// Shape `[K, C]`: rows are content, columns hidden (q/k/v/gate/up in `[out, in]` storage).
    HiddenCols,
    /// Shape `[C, K]`: rows hidden (down/o in `[out, in]` storage, or a transposed export).
    HiddenRows,
}

/// The model's hidden size: the dimension shared by most large 2-D tensors.
fn infer_hidden<'a>(shapes: impl Iterator<Item = &'a [u64]>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for s in shapes {
        if s.len() == 2 && s[0] * s[1] >= MIN_ELEMENTS {
            *count.entry(s[0]).or_default() += 1;
            if s[1] != s[0] {
                *count.entry(s[1]).or_default() += 1;
            }
        }
    }
    count
        .into_iter()
        .filter(|&(d, _)| d >= 16)
        .max_by_key(|&(d, n)| (n, d))
        .map(|(d, _)| d)
}

/// The orientation of an eligible matrix (`None` if not eligible); `square_flip` picks the
/// second reading of a `C x C` matrix.
fn orient(shape: &[u64], hidden: u64, square_flip: bool) -> Option<Orient> {
    if shape.len() != 2 {
        return None;
    }
    let (rows, cols) = (shape[0], shape[1]);
    if rows.min(cols) < 16 || rows * cols < MIN_ELEMENTS {
        return None;
    }
    let limit = 8 * hidden;
    if rows == hidden && cols == hidden {
        return Some(if square_flip {
            Orient::HiddenRows
        } else {
            Orient::HiddenCols
        });
    }
    if cols == hidden && rows <= limit {
        Some(Orient::HiddenCols)
    } else if rows == hidden && cols <= limit {
        Some(Orient::HiddenRows)
    } else {
        None
    }
}

/// Token/position embeddings and output heads are never marked (the fingerprint aligns through
/// them, and a vocabulary change would cut into the mark), whatever their shape.
fn is_embedding_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("embed") || n.contains("embd") || n.contains("lm_head") || n == "output.weight"
}

fn eligible_dtype(d: DType) -> bool {
    codec::supported(d)
}

/// A tensor name reduced to `layer.role` for the llama (HF and GGUF) and BERT conventions, so
/// the keyed subset is the same after a format conversion; other names pass through.
pub fn canonical_name(name: &str) -> String {
    let base = name.strip_suffix(".weight").unwrap_or(name);
    let parts: Vec<&str> = base.split('.').collect();
    let Some(i) = parts.iter().position(|p| p.parse::<u64>().is_ok()) else {
        return base.to_string();
    };
    let role = parts[i + 1..].join(".");
    let canon = match role.as_str() {
        "attn_q" | "self_attn.q_proj" | "attention.self.query" => "q",
        "attn_k" | "self_attn.k_proj" | "attention.self.key" => "k",
        "attn_v" | "self_attn.v_proj" | "attention.self.value" => "v",
        "attn_output" | "self_attn.o_proj" | "attention.output.dense" => "o",
        "ffn_gate" | "mlp.gate_proj" => "gate",
        "ffn_up" | "mlp.up_proj" | "intermediate.dense" => "up",
        "ffn_down" | "mlp.down_proj" | "output.dense" => "down",
        _ => return base.to_string(),
    };
    format!("{}.{canon}", parts[i])
}

/// The oriented `K x C` view of a row-major matrix.
struct View<'a> {
    w: &'a [f32],
    k: usize,
    c: usize,
    orient: Orient,
}

impl View<'_> {
    fn new<'w>(w: &'w [f32], shape: &[u64], orient: Orient) -> View<'w> {
        let (rows, cols) = (shape[0] as usize, shape[1] as usize);
        match orient {
            Orient::HiddenCols => View {
                w,
                k: rows,
                c: cols,
                orient,
            },
            Orient::HiddenRows => View {
                w,
                k: cols,
                c: rows,
                orient,
            },
        }
    }
    /// Length of the content axis of a matrix of `shape` read as `orient`.
    fn content_len(shape: &[u64], orient: Orient) -> usize {
        match orient {
            Orient::HiddenCols => shape[0] as usize,
            Orient::HiddenRows => shape[1] as usize,
        }
    }
    /// Storage index of oriented element (k, j).
    #[inline]
    fn idx(&self, k: usize, j: usize) -> usize {
        match self.orient {
            Orient::HiddenCols => k * self.c + j,
            Orient::HiddenRows => j * self.k + k,
        }
    }

    /// The content key `u`: per oriented row, the sign of its thresholded projection on `r`.
    fn content_signs(&self, r: &[f32]) -> Vec<f32> {
        let mut sumsq = vec![0f64; self.k];
        let mut proj = vec![0f64; self.k];
        match self.orient {
            Orient::HiddenCols => {
                for k in 0..self.k {
                    let row = &self.w[k * self.c..(k + 1) * self.c];
                    sumsq[k] = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
                    let t = CONTENT_THRESHOLD * (sumsq[k] / self.c as f64).sqrt() as f32;
                    proj[k] = row
                        .iter()
                        .zip(r)
                        .filter(|(x, _)| x.abs() > t)
                        .map(|(&x, &rj)| (x * rj) as f64)
                        .sum();
                }
            }
            Orient::HiddenRows => {
                // Storage rows are hidden; walk them in order for cache locality.
                for j in 0..self.c {
                    let row = &self.w[j * self.k..(j + 1) * self.k];
                    for (s, &x) in sumsq.iter_mut().zip(row) {
                        *s += (x as f64) * (x as f64);
                    }
                }
                let t: Vec<f32> = sumsq
                    .iter()
                    .map(|s| CONTENT_THRESHOLD * (s / self.c as f64).sqrt() as f32)
                    .collect();
                for (j, &rj) in r.iter().enumerate().take(self.c) {
                    let row = &self.w[j * self.k..(j + 1) * self.k];
                    for ((p, &x), &tk) in proj.iter_mut().zip(row).zip(&t) {
                        if x.abs() > tk {
                            *p += (x * rj) as f64;
                        }
                    }
                }
            }
        }
        stein_signs(&proj)
    }
}

/// Signs of `proj`, flipped where `|proj|` lies above its [`STEIN_QUANTILE`] quantile.
///
/// For Gaussian rows `w` and `f(x) = sign(x) * (|x| < t ? 1 : -1)`, Stein's lemma gives
/// `E[f(w.r) w] = Cov(w) r E[f'(w.r)] = 0` when `phi(t) = phi(0) / 2`, i.e. `t = sqrt(2 ln 2)` std
/// (the 0.761 quantile of `|w.r|`). Plain signs would correlate `u` with the rows' principal
/// directions and drown the mark in the matrix's own structure; balanced signs do not.
fn stein_signs(proj: &[f64]) -> Vec<f32> {
    let mut mags: Vec<f64> = proj.iter().map(|p| p.abs()).collect();
    let t = if mags.is_empty() {
        0.0
    } else {
        let i = ((mags.len() as f64 * STEIN_QUANTILE) as usize).min(mags.len() - 1);
        *mags.select_nth_unstable_by(i, f64::total_cmp).1
    };
    proj.iter()
        .map(|&p| {
            let s = if p < 0.0 { -1.0 } else { 1.0 };
            if p.abs() < t {
                s
            } else {
                -s
            }
        })
        .collect()
}

fn mean_std(w: &[f32]) -> (f64, f64) {
    let n = w.len().max(1) as f64;
    let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = w
        .iter()
        .map(|&x| {
            let d = x as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn norm(w: impl Iterator<Item = f64>) -> f64 {
    w.map(|x| x * x).sum::<f64>().sqrt()
}

// ---------------------------------------------------------------------------------------------
// Marking
// ---------------------------------------------------------------------------------------------

/// What the mark did to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorMark {
    /// File (for sharded models) and tensor name.
    pub file: String,
    /// Tensor name.
    pub name: String,
    /// Stored dtype (unchanged).
    pub dtype: String,
    /// Number of elements.
    pub elements: u64,
    /// `||W' - W|| / ||W||` of the decoded values.
    pub relative_change: f64,
    /// How much of the pattern's correlation survived the storage type: `<dW, P> / (a N)`
    /// (1.0 for f32; the share the block scales can carry for quantized types).
    pub efficiency: f64,
}

/// The outcome of [`mark_model`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct MarkReport {
    /// The model's hidden size as inferred from its matrices.
    pub hidden: u64,
    /// Marked tensors.
    pub tensors: Vec<TensorMark>,
    /// Eligible-shaped tensors left unmarked because their dtype cannot be marked.
    pub skipped: Vec<String>,
}

impl MarkReport {
    /// The largest relative change over all marked tensors.
    pub fn max_relative_change(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.relative_change)
            .fold(0.0, f64::max)
    }
}

/// Byte offsets of the f16 scale fields inside one block of a GGML block type.
fn scale_fields(d: DType) -> Option<&'static [usize]> {
    Some(match d {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => return None,
    })
}

fn get_f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

#[allow(clippy::needless_range_loop)]
/// Per-block least-squares steps of the scale fields that best carry `delta` (amplitude 1).
/// Returns the steps, one `Vec` per field, and the squared norm of the change they make.
fn scale_steps(
    dtype: DType,
    bytes: &[u8],
    delta: &[f32],
    name: &str,
) -> Result<(Vec<Vec<f64>>, f64), MarkError> {
    let fields = scale_fields(dtype).ok_or_else(|| codec::CodecError::Unsupported {
        name: name.into(),
        dtype,
    })?;
    let bb = dtype.block_bytes() as usize;
    let bs = dtype.block_size() as usize;
    let nb = bytes.len() / bb;
    // The dequantized values are linear in each scale field: get each field's basis by setting
    // it to 1 and the others to 0.
    let mut basis = Vec::new();
    for (fi, _) in fields.iter().enumerate() {
        let mut patched = bytes.to_vec();
        for b in 0..nb {
            for (fj, &off) in fields.iter().enumerate() {
                put_f16(
                    &mut patched[b * bb..],
                    off,
                    if fi == fj { 1.0 } else { 0.0 },
                );
            }
        }
        basis.push(codec::to_f32(name, dtype, nb * bs, &patched)?);
    }
    let mut steps = vec![vec![0f64; nb]; fields.len()];
    let mut energy = 0.0;
    for b in 0..nb {
        let r = b * bs..(b + 1) * bs;
        let dl = &delta[r.clone()];
        let dot = |x: &[f32], y: &[f32]| -> f64 {
            x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        if fields.len() == 1 {
            let b0 = &basis[0][r];
            let g = dot(b0, b0);
            if g > 0.0 {
                let x = dot(b0, dl) / g;
                steps[0][b] = x;
                energy += x * x * g;
            }
        } else {
            let (b0, b1) = (&basis[0][r.clone()], &basis[1][r]);
            let (g00, g01, g11) = (dot(b0, b0), dot(b0, b1), dot(b1, b1));
            let (y0, y1) = (dot(b0, dl), dot(b1, dl));
            let det = g00 * g11 - g01 * g01;
            // Nearly collinear directions (a block of near-equal integers) would need large,
            // cancelling steps that f16 rounding cannot cancel: fit the first direction only.
            let (x0, x1) = if det > 0.01 * g00 * g11 && det > 0.0 {
                ((g11 * y0 - g01 * y1) / det, (g00 * y1 - g01 * y0) / det)
            } else if g00 > 0.0 {
                (y0 / g00, 0.0)
            } else {
                (0.0, 0.0)
            };
            steps[0][b] = x0;
            steps[1][b] = x1;
            energy += x0 * x0 * g00 + 2.0 * x0 * x1 * g01 + x1 * x1 * g11;
        }
    }
    Ok((steps, energy))
}

/// Mark one tensor: returns its new bytes and what was done.
#[allow(clippy::too_many_arguments)]
fn mark_tensor(
    key: &WeightKey,
    name: &str,
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
    orient: Orient,
    h: &[f32],
    r: &[f32],
) -> Result<(Vec<u8>, f64, f64), MarkError> {
    let n = (shape[0] * shape[1]) as usize;
    let w = codec::to_f32(name, dtype, n, bytes)?;
    let v = View::new(&w, shape, orient);
    let u = v.content_signs(r);
    let (_, std) = mean_std(&w);
    let wnorm = norm(w.iter().map(|&x| x as f64));
    // The unit pattern u h^T in storage order.
    let mut pattern = vec![0f32; n];
    for k in 0..v.k {
        for j in 0..v.c {
            pattern[v.idx(k, j)] = u[k] * h[j];
        }
    }
    if wnorm == 0.0 || !wnorm.is_finite() || std == 0.0 {
        return Err(MarkError::Bound {
            tensor: name.into(),
            change: f64::NAN,
        });
    }
    let quantized = dtype.block_size() > 1;
    let steps = if quantized {
        Some(scale_steps(dtype, bytes, &pattern, name)?)
    } else {
        None
    };
    // Aim at the full strength, then back off if rounding pushed the change past the bound.
    let mut target = key.strength * std * (n as f64).sqrt();
    for _ in 0..8 {
        let out = match &steps {
            None => {
                let a = (target / (n as f64).sqrt()) as f32;
                let marked: Vec<f32> = w.iter().zip(&pattern).map(|(&x, &p)| x + a * p).collect();
                codec::from_f32(name, dtype, &marked)?
            }
            Some((steps, energy)) => {
                let scale = if *energy > 0.0 {
                    target / energy.sqrt()
                } else {
                    0.0
                };
                let fields = scale_fields(dtype).unwrap_or(&[]);
                let bb = dtype.block_bytes() as usize;
                let mut out = bytes.to_vec();
                for (fi, &off) in fields.iter().enumerate() {
                    for (b, &s) in steps[fi].iter().enumerate() {
                        let blk = &mut out[b * bb..];
                        let old = get_f16(blk, off);
                        if old.is_finite() {
                            // No block's scale moves by more than MAX_FIELD_STEP of itself, so
                            // no single block carries an outsized share of the change.
                            let cap = MAX_FIELD_STEP * old.abs() as f64;
                            let step = (scale * s).clamp(-cap, cap);
                            put_f16(blk, off, (old as f64 + step) as f32);
                        }
                    }
                }
                out
            }
        };
        let w2 = codec::to_f32(name, dtype, n, &out)?;
        let change = norm(w2.iter().zip(&w).map(|(&a, &b)| a as f64 - b as f64)) / wnorm;
        if change <= MAX_RELATIVE_CHANGE * 0.98 {
            let a_full = key.strength * std;
            let corr: f64 = w2
                .iter()
                .zip(&w)
                .zip(&pattern)
                .map(|((&a, &b), &p)| (a as f64 - b as f64) * p as f64)
                .sum();
            return Ok((out, change, corr / (a_full * n as f64)));
        }
        target *= 0.9 * MAX_RELATIVE_CHANGE / change;
    }
    Err(MarkError::Bound {
        tensor: name.into(),
        change: f64::NAN,
    })
}

/// The selected, eligible tensors of the opened files: (file index, tensor index, orient).
fn plan(
    files: &[WeightFile],
    hidden: u64,
    key: &WeightKey,
    square_flip: bool,
) -> (Vec<(usize, usize, Orient)>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (ti, t) in f.parsed().tensors.iter().enumerate() {
            let Some(o) = orient(&t.shape, hidden, square_flip) else {
                continue;
            };
            if is_embedding_name(&t.name) {
                continue;
            }
            if !key.selects(&canonical_name(&t.name)) {
                continue;
            }
            if eligible_dtype(t.dtype) {
                chosen.push((fi, ti, o));
            } else if t.dtype.is_float_like() {
                skipped.push(format!("{} ({})", t.name, t.dtype));
            }
        }
    }
    (chosen, skipped)
}

fn open_all(model: &Path) -> Result<(Vec<PathBuf>, Vec<WeightFile>), MarkError> {
    let paths = crate::weights::model_weight_files(model)?;
    let files = paths
        .iter()
        .map(|p| WeightFile::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((paths, files))
}

/// Embed the mark of `key` into a copy of `model` (a weight file or a directory of them) at
/// `out`. The input is never modified; the output must not exist. A file is written atomically;
/// a directory is assembled in a temporary sibling and renamed into place, with every
/// non-weight file copied unchanged. Dtype, tensor order, header and metadata are kept byte for
/// byte; only marked tensors' data differ.
pub fn mark_model(model: &Path, key: &WeightKey, out: &Path) -> Result<MarkReport, MarkError> {
    if out.symlink_metadata().is_ok() {
        return Err(MarkError::Output {
            path: out.to_path_buf(),
            reason: "already exists; refusing to overwrite it".into(),
        });
    }
    let (paths, files) = open_all(model)?;
    let hidden = infer_hidden(
        files
            .iter()
            .flat_map(|f| f.parsed().tensors.iter().map(|t| t.shape.as_slice())),
    )
    .ok_or_else(|| MarkError::NothingToMark(model.to_path_buf()))?;
    let (chosen, skipped) = plan(&files, hidden, key, false);
    if chosen.is_empty() {
        return Err(MarkError::NothingToMark(model.to_path_buf()));
    }
    let c = hidden as usize;
    let r = key.r_vector(c);
    let hs: BTreeMap<usize, Vec<f32>> = chosen
        .iter()
        .map(|&(fi, ti, o)| {
            let t = &files[fi].parsed().tensors[ti];
            let k = View::content_len(&t.shape, o);
            (k, key.h_vector(k, c))
        })
        .collect();
    let marked: Vec<((usize, usize), Vec<u8>, TensorMark)> = chosen
        .par_iter()
        .map(|&(fi, ti, o)| {
            let t = &files[fi].parsed().tensors[ti];
            let view = files[fi].view(ti).ok_or_else(|| {
                MarkError::Format(FormatError::BadTensor {
                    name: t.name.clone(),
                    reason: "data out of range".into(),
                })
            })?;
            let h = hs
                .get(&View::content_len(&t.shape, o))
                .ok_or(MarkError::NothingToMark(model.to_path_buf()))?;
            let (bytes, change, eff) =
                mark_tensor(key, &t.name, t.dtype, &t.shape, view.bytes, o, h, &r)?;
            let file = paths[fi]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((
                (fi, ti),
                bytes,
                TensorMark {
                    file,
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    elements: t.elements(),
                    relative_change: change,
                    efficiency: eff,
                },
            ))
        })
        .collect::<Result<_, MarkError>>()?;
    // Assemble each output file: the input's bytes with marked tensors' data replaced.
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(files.len());
    for (fi, f) in files.iter().enumerate() {
        let mut bytes = f.bytes().to_vec();
        for ((mfi, mti), new, _) in &marked {
            if *mfi == fi {
                let range = &f.parsed().tensors[*mti].range;
                bytes[range.start as usize..range.end as usize].copy_from_slice(new);
            }
        }
        // The copy must be of the file as it was validated.
        f.map().ensure_unchanged()?;
        outputs.push(bytes);
    }
    let report = MarkReport {
        hidden,
        tensors: marked.into_iter().map(|(_, _, m)| m).collect(),
        skipped,
    };
    if std::fs::metadata(model).with_path(model)?.is_file() {
        write_atomic(out, &outputs[0], WriteMode::PublicNoClobber).map_err(io_err(out))?;
    } else {
        write_dir(model, out, &paths, &outputs)?;
    }
    Ok(report)
}

/// Build the marked directory in a temporary sibling, then rename it to `out`.
fn write_dir(
    model: &Path,
    out: &Path,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
) -> Result<(), MarkError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::fsutil::remove_stale_temps(parent);
    let tmp = tempfile::Builder::new()
        .prefix(&crate::fsutil::temp_prefix())
        .tempdir_in(parent)
        .map_err(|e| io_err(out)(std::io::Error::from(e.kind())))?;
    // Tracked so that an interrupt removes it (the TempDir guard cannot run on a signal).
    let tmp_path = tmp.path().to_path_buf();
    crate::fsutil::track_temp(&tmp_path);
    let r = fill_dir(model, out, tmp, paths, outputs);
    crate::fsutil::untrack_temp(&tmp_path);
    r
}

fn fill_dir(
    model: &Path,
    out: &Path,
    tmp: tempfile::TempDir,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
) -> Result<(), MarkError> {
    copy_tree(model, tmp.path(), paths, outputs, model)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(tmp.path()))?;
    }
    if out.symlink_metadata().is_ok() {
        return Err(MarkError::Output {
            path: out.to_path_buf(),
            reason: "already exists; refusing to overwrite it".into(),
        });
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        MarkError::Io {
            path: out.to_path_buf(),
            source: e,
        }
    })
}

/// File names of signature bundles (`model.sig`, `model.p256.sig`, `*.sigstore.json`).
pub fn is_bundle_name(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.ends_with(".sig") || n.ends_with(".sigstore.json")
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
    root: &Path,
) -> Result<(), MarkError> {
    for e in std::fs::read_dir(src).map_err(io_err(src))? {
        let e = e.map_err(io_err(src))?;
        let p = e.path();
        let target = dst.join(e.file_name());
        // A signature bundle of the original never verifies the marked copy: leave it out
        // (`mark --key` signs the copy afresh).
        if is_bundle_name(&e.file_name()) && !paths.contains(&p) {
            continue;
        }
        if p.is_dir() {
            std::fs::create_dir(&target).map_err(io_err(&target))?;
            copy_tree(&p, &target, paths, outputs, root)?;
        } else if let Some(i) = paths.iter().position(|q| q == &p) {
            std::fs::write(&target, &outputs[i]).map_err(io_err(&target))?;
        } else {
            std::fs::copy(&p, &target).map_err(io_err(&p))?;
        }
    }
    let _ = root;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------------

/// A known correspondence of the suspect's hidden axis to the original's: suspect coordinate
/// `j` is original coordinate `perm[j]` multiplied by `sign[j]` (from a fingerprint alignment).
#[derive(Clone, Debug)]
pub struct HiddenAlignment {
    /// Original index of each suspect hidden coordinate.
    pub perm: Vec<usize>,
    /// Sign (+1/-1) of each suspect hidden coordinate relative to the original.
    pub sign: Vec<f32>,
}

/// The result of scoring one suspect against one key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MarkScore {
    /// Standardised statistic (≈ N(0,1) under the null; large and positive when marked).
    pub z: f64,
    /// z of the stored reading alone (N(0,1) under the null; `z` is the larger of the readings).
    pub z_stored: f64,
    /// Conservative one-sided p-value (Hoeffding / Pinelis bound, doubled when two readings of
    /// square matrices were tried).
    pub p: f64,
    /// Number of weights scored.
    pub scored_weights: u64,
    /// Number of matrices scored.
    pub matrices: usize,
    /// Hidden size used.
    pub hidden: u64,
    /// Which reading of square matrices gave the reported z (`stored` or `transposed`).
    pub reading: &'static str,
    /// z an intact mark of this key would reach on this many weights.
    pub expected_z_if_marked: f64,
    /// False when even an intact mark would be too weak to decide.
    pub decided: bool,
    /// Whether a hidden-axis alignment was applied.
    pub aligned: bool,
}

/// The conservative tail `P[S >= z ||c||]` of a Rademacher sum `S = sum h_j c_j`.
pub fn rademacher_tail(z: f64) -> f64 {
    if z.is_nan() || z <= 0.0 {
        return 1.0;
    }
    let hoeffding = (-z * z / 2.0).exp();
    let pinelis = PINELIS * crate::stats::normal_sf(z);
    hoeffding.min(pinelis).min(1.0)
}

/// Accumulators of one (key, reading) over the scored matrices, per content length `K`.
#[derive(Clone, Default)]
struct Acc {
    /// `K` -> (`d`, `e`) summed over the matrices with that content length.
    parts: BTreeMap<usize, (Vec<f64>, Vec<f64>)>,
    weights: u64,
    matrices: usize,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        for (k, (od, oe)) in &o.parts {
            let (d, e) = self
                .parts
                .entry(*k)
                .or_insert_with(|| (vec![0.0; od.len()], vec![0.0; oe.len()]));
            for (a, b) in d.iter_mut().zip(od) {
                *a += b;
            }
            for (a, b) in e.iter_mut().zip(oe) {
                *a += b;
            }
        }
        self.weights += o.weights;
        self.matrices += o.matrices;
    }
    /// The one matrix's contribution.
    fn of_matrix(v: &View<'_>, r: &[f32], sigma: f64) -> Self {
        let u = v.content_signs(r);
        let mut d = vec![0.0; v.c];
        let mut e = vec![0.0; v.c];
        let inv = 1.0 / sigma;
        match v.orient {
            Orient::HiddenCols => {
                for (k, &uk) in u.iter().enumerate().take(v.k) {
                    let row = &v.w[k * v.c..(k + 1) * v.c];
                    let uk = uk as f64 * inv;
                    for ((d, e), &x) in d.iter_mut().zip(e.iter_mut()).zip(row) {
                        let x = x as f64;
                        *d += uk * x;
                        *e += x * x * inv * inv;
                    }
                }
            }
            Orient::HiddenRows => {
                for (j, (dj, ej)) in d.iter_mut().zip(e.iter_mut()).enumerate() {
                    let row = &v.w[j * v.k..(j + 1) * v.k];
                    let (mut sd, mut se) = (0.0, 0.0);
                    for (&x, &uk) in row.iter().zip(&u) {
                        let x = x as f64;
                        sd += uk as f64 * x;
                        se += x * x;
                    }
                    *dj = sd * inv;
                    *ej = se * inv * inv;
                }
            }
        }
        let mut parts = BTreeMap::new();
        parts.insert(v.k, (d, e));
        Acc {
            parts,
            weights: (v.k * v.c) as u64,
            matrices: 1,
        }
    }
    /// z of the Rademacher sum over every class's coordinates, `r` projected out of each `d`.
    fn z(&self, hs: &BTreeMap<usize, Vec<f32>>, r: &[f32]) -> f64 {
        let (mut s, mut v) = (0.0, 0.0);
        for (k, (d, e)) in &self.parts {
            let Some(h) = hs.get(k) else {
                continue;
            };
            let c = d.len() as f64;
            let dr: f64 = d.iter().zip(r).map(|(d, &r)| d * r as f64).sum::<f64>() / c;
            for (((d, &rj), &e), &hj) in d.iter().zip(r).zip(e).zip(h) {
                if e > 0.0 {
                    let coef = (d - dr * rj as f64) / e;
                    s += coef * hj as f64;
                    v += coef * coef;
                }
            }
        }
        if v > 0.0 {
            s / v.sqrt()
        } else {
            0.0
        }
    }
}

/// Score the suspect `model` against each of `keys` (the weights are decoded once).
pub fn score_many(
    model: &Path,
    keys: &[&WeightKey],
    align: Option<&HiddenAlignment>,
) -> Result<Vec<MarkScore>, MarkError> {
    let (_, files) = open_all(model)?;
    let hidden = infer_hidden(
        files
            .iter()
            .flat_map(|f| f.parsed().tensors.iter().map(|t| t.shape.as_slice())),
    );
    let Some(hidden) = hidden else {
        return Ok(keys.iter().map(|k| empty_score(k, 0)).collect());
    };
    let c = hidden as usize;
    if let Some(a) = align {
        if a.perm.len() != c || a.sign.len() != c || a.perm.iter().any(|&p| p >= c) {
            return Err(MarkError::Output {
                path: model.to_path_buf(),
                reason: format!("hidden alignment does not match hidden size {c}"),
            });
        }
    }
    let any_square = files.iter().any(|f| {
        f.parsed()
            .tensors
            .iter()
            .any(|t| t.shape.len() == 2 && t.shape[0] == hidden && t.shape[1] == hidden)
    });
    let readings: &[bool] = if any_square { &[false, true] } else { &[false] };
    // Every (file, tensor) that any key scores under any reading.
    let mut todo: Vec<(usize, usize)> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (ti, t) in f.parsed().tensors.iter().enumerate() {
            if codec::readable(t.dtype)
                && orient(&t.shape, hidden, false).is_some()
                && !is_embedding_name(&t.name)
            {
                todo.push((fi, ti));
            }
        }
    }
    // Key vectors for every content length present, carried into the suspect's hidden
    // coordinates.
    let mut lens = std::collections::BTreeSet::new();
    for &(fi, ti) in &todo {
        let shape = &files[fi].parsed().tensors[ti].shape;
        for &flip in readings {
            if let Some(o) = orient(shape, hidden, flip) {
                lens.insert(View::content_len(shape, o));
            }
        }
    }
    let carry = |v: Vec<f32>| -> Vec<f32> {
        match align {
            None => v,
            Some(a) => a
                .perm
                .iter()
                .zip(&a.sign)
                .map(|(&p, &s)| v[p] * s)
                .collect(),
        }
    };
    type Vecs = (BTreeMap<usize, Vec<f32>>, Vec<f32>);
    let vecs: Vec<Vecs> = keys
        .iter()
        .map(|k| {
            let hs = lens.iter().map(|&l| (l, carry(k.h_vector(l, c)))).collect();
            (hs, carry(k.r_vector(c)))
        })
        .collect();
    let zero = || vec![vec![Acc::default(); readings.len()]; keys.len()];
    let accs = todo
        .par_iter()
        .map(|&(fi, ti)| -> Result<Vec<Vec<Acc>>, MarkError> {
            let t = &files[fi].parsed().tensors[ti];
            let mut out = zero();
            let canon = canonical_name(&t.name);
            let selected: Vec<bool> = keys.iter().map(|k| k.selects(&canon)).collect();
            if !selected.iter().any(|&s| s) {
                return Ok(out);
            }
            let view = files[fi].view(ti).ok_or_else(|| {
                MarkError::Format(FormatError::BadTensor {
                    name: t.name.clone(),
                    reason: "data out of range".into(),
                })
            })?;
            let n = t.elements() as usize;
            let w = codec::to_f32(&t.name, t.dtype, n, view.bytes)?;
            let (_, sigma) = mean_std(&w);
            if !(sigma > 0.0 && sigma.is_finite()) {
                return Ok(out);
            }
            for (ri, &flip) in readings.iter().enumerate() {
                let Some(o) = orient(&t.shape, hidden, flip) else {
                    continue;
                };
                let v = View::new(&w, &t.shape, o);
                for (ki, sel) in selected.iter().enumerate() {
                    if *sel {
                        out[ki][ri] = Acc::of_matrix(&v, &vecs[ki].1, sigma);
                    }
                }
            }
            Ok(out)
        })
        .try_reduce(zero, |mut a, b| {
            for (ak, bk) in a.iter_mut().zip(&b) {
                for (ar, br) in ak.iter_mut().zip(bk) {
                    ar.add(br);
                }
            }
            Ok(a)
        })?;
    Ok(keys
        .iter()
        .enumerate()
        .map(|(ki, key)| {
            let (hs, r) = &vecs[ki];
            let zs: Vec<f64> = accs[ki].iter().map(|a| a.z(hs, r)).collect();
            let (best, z) =
                zs.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (i, z)| if z > b.1 { (i, z) } else { b },
                    );
            let acc = &accs[ki][best];
            let p = (rademacher_tail(z) * readings.len() as f64).min(1.0);
            let expected = key.strength * (acc.weights as f64).sqrt();
            MarkScore {
                z,
                z_stored: zs[0],
                p,
                scored_weights: acc.weights,
                matrices: acc.matrices,
                hidden,
                reading: if readings[best] {
                    "transposed"
                } else {
                    "stored"
                },
                expected_z_if_marked: expected,
                decided: expected >= MIN_EXPECTED_Z,
                aligned: align.is_some(),
            }
        })
        .collect())
}

fn empty_score(key: &WeightKey, hidden: u64) -> MarkScore {
    let _ = key;
    MarkScore {
        z: 0.0,
        z_stored: 0.0,
        p: 1.0,
        scored_weights: 0,
        matrices: 0,
        hidden,
        reading: "stored",
        expected_z_if_marked: 0.0,
        decided: false,
        aligned: false,
    }
}

/// Score `model` against one key.
pub fn score(
    model: &Path,
    key: &WeightKey,
    align: Option<&HiddenAlignment>,
) -> Result<MarkScore, MarkError> {
    let mut v = score_many(model, &[key], align)?;
    v.pop()
        .ok_or_else(|| MarkError::NothingToMark(model.to_path_buf()))
}

/// The registered `weights` keys: entry names and keys. Text-scheme keys are skipped.
pub fn registered_keys(registry: &Registry) -> Result<(Vec<String>, Vec<WeightKey>), MarkError> {
    let mut names = Vec::new();
    let mut keys = Vec::new();
    for e in registry.of_kind(EntryKind::WatermarkKey) {
        let bytes = Zeroizing::new(std::fs::read(&e.path).map_err(io_err(&e.path))?);
        let is_weights = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("scheme")
                    .and_then(|s| s.as_str())
                    .map(|s| s == SCHEME)
            })
            .unwrap_or(false);
        if is_weights {
            keys.push(WeightKey::from_file_bytes(&e.path, &bytes)?);
            names.push(e.name.clone());
        }
    }
    Ok((names, keys))
}

/// The [`KeyTest`] (kind `weights`) reporting one key's score.
pub fn key_test(name: String, key: &WeightKey, s: &MarkScore) -> KeyTest {
    let mut t = KeyTest::new(name, SCHEME, s.p)
        .with("key_id", key.id())
        .with("z", s.z)
        .with("scored_weights", s.scored_weights)
        .with("matrices", s.matrices as u64)
        .with("hidden", s.hidden)
        .with("reading", s.reading)
        .with("expected_z_if_marked", s.expected_z_if_marked)
        .with("aligned", s.aligned);
    if !s.decided {
        t.details.insert(
            "reason".into(),
            "too few weights: even an intact mark could not decide".into(),
        );
    }
    t.decided = s.decided;
    t
}

/// Test the suspect weights at `path` against every registered `weights` watermark key, with
/// an optional known hidden-axis alignment; one [`KeyTest`] (kind `weights`) per key.
/// (`detect` goes through [`test_marks_with_fingerprints`], which finds alignments itself.)
pub fn test_marks(
    path: &Path,
    registry: &Registry,
    align: Option<&HiddenAlignment>,
) -> Result<Vec<KeyTest>, MarkError> {
    let (names, keys) = registered_keys(registry)?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<&WeightKey> = keys.iter().collect();
    let scores = score_many(path, &refs, align)?;
    Ok(names
        .into_iter()
        .zip(keys.iter().zip(scores))
        .map(|(name, (key, s))| key_test(name, key, &s))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_agree_across_conventions() {
        assert_eq!(canonical_name("blk.3.ffn_gate.weight"), "3.gate");
        assert_eq!(
            canonical_name("model.layers.3.mlp.gate_proj.weight"),
            "3.gate"
        );
        assert_eq!(
            canonical_name("encoder.layer.2.attention.self.query.weight"),
            "2.q"
        );
        assert_eq!(canonical_name("token_embd.weight"), "token_embd");
    }

    #[test]
    fn key_round_trip_and_redacted_debug() {
        let k = WeightKey::from_secret([7u8; 32], 0.004, 0.5).unwrap();
        let bytes = k.to_file_bytes();
        let k2 = WeightKey::from_file_bytes(Path::new("k"), &bytes).unwrap();
        assert_eq!(k.id(), k2.id());
        assert_eq!(k2.strength(), 0.004);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode([7u8; 32])), "{dbg}");
        assert!(dbg.contains("redacted"));
        // a damaged key is refused
        let text = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("0707", "0708");
        assert!(WeightKey::from_file_bytes(Path::new("k"), text.as_bytes()).is_err());
    }

    #[test]
    fn hidden_size_is_the_shared_dimension() {
        let shapes: Vec<Vec<u64>> = vec![
            vec![1000, 64],
            vec![64, 64],
            vec![256, 64],
            vec![64, 256],
            vec![64],
        ];
        assert_eq!(infer_hidden(shapes.iter().map(|s| s.as_slice())), Some(64));
    }

    /// The tail bound is never below the exact tail of small Rademacher sums.
    #[test]
    fn tail_bound_dominates_exact_rademacher_tails() {
        for coefs in [
            vec![1.0; 16],
            (1..=16).map(|i| i as f64).collect::<Vec<_>>(),
        ] {
            let n = coefs.len();
            let norm = coefs.iter().map(|c| c * c).sum::<f64>().sqrt();
            let mut sums: Vec<f64> = (0..1u32 << n)
                .map(|m| {
                    (0..n)
                        .map(|i| if m >> i & 1 == 1 { coefs[i] } else { -coefs[i] })
                        .sum()
                })
                .collect();
            sums.sort_by(|a, b| b.total_cmp(a));
            let total = sums.len() as f64;
            for s in &sums {
                // P[S >= s], ties included.
                let ge = sums.partition_point(|&x| x >= *s - 1e-9);
                let exact = ge as f64 / total;
                assert!(rademacher_tail(s / norm) >= exact, "s={s} exact={exact}");
            }
        }
    }
}

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
//!
//! # Layout
//!
//! [`key`]: the secret and its PRF; [`embed`]: writing the mark; [`score`]: the detector and
//! its p-value; [`align`]: hidden-axis alignments through registered fingerprints; [`codec`]:
//! stored bytes <-> values and the scale fields of block types. The matrix layout shared by
//! marking and scoring (eligibility, orientation, the `K x C` view) is here.

pub mod align;
pub mod codec;
pub mod embed;
pub mod key;
pub mod score;

pub use align::{hidden_alignment, test_marks_with_fingerprints};
pub use embed::{mark_model, MarkReport, TensorMark};
pub use key::WeightKey;
pub use score::{
    key_test, rademacher_tail, registered_keys, score, score_many, test_marks, HiddenAlignment,
    MarkScore,
};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::FormatError;
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

fn open_all(model: &Path) -> Result<(Vec<PathBuf>, Vec<WeightFile>), MarkError> {
    let paths = crate::weights::model_weight_files(model)?;
    let files = paths
        .iter()
        .map(|p| WeightFile::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((paths, files))
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
}

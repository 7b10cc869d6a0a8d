//! Quantized matrix kernels for the decode hot path.
//!
//! candle 0.11 computes Q4_1 dot products with its generic scalar code (`vec_dot_unopt`), and its
//! SIMD paths for other types are chosen at compile time (`target_feature`), so a default build
//! runs scalar code everywhere. These kernels repack the weights once at load time (f32 scales,
//! packed quants) and pick AVX-512 VNNI or AVX2 at run time, falling back to portable code
//! elsewhere. The arithmetic is ggml's: activations are quantized to 8 bits per 32-element block,
//! then integer dot products are scaled per block.
//!
//! Every kernel computes the same floating-point expression in the same order, so the scalar,
//! AVX2 and AVX-512 paths give bit-identical results, and a row's result does not depend on how
//! many other rows share its pass (batched and one-at-a-time generation agree exactly):
//!
//! - a weight row against an activation row accumulates into 16 f32 lanes. Blocks go in pairs:
//!   block `2p` feeds lanes 0..8, block `2p + 1` lanes 8..16 (a trailing odd block feeds lanes
//!   0..8). Lane `l` of a block receives `(d_w * d_x) * q_l`, where `q_l` is the exact integer
//!   sum of the products of elements `4l..4l + 4` (Q4_1: the low nibbles are elements 0..16,
//!   the high nibbles 16..32). Multiply, then add: no fused multiply-add anywhere, because a
//!   scalar `mul_add` without hardware FMA is a slow library call and rounds differently from
//!   a multiply and an add;
//! - the 16 lanes are reduced by halves: `a[i] + a[i + 8]`, then `+ [i + 4]`, `+ [i + 2]`,
//!   `+ [i + 1]` ([`reduce16`]);
//! - Q4_1's `m * sum(x)` terms are one [`dot_f32`] over the row's blocks, added last.
//!
//! docs/kernels.md states the contract and how each path was checked.

use rayon::prelude::*;

/// Elements per quantization block (Q4_0, Q4_1, Q8_0, Q8_1 all use 32).
pub const QK: usize = 32;

/// The environment variable that forces a kernel (`scalar`, `avx2` or `avx512`).
pub const KERNEL_ENV: &str = "HALLMARK_KERNEL";

/// An implementation of the quantized dot products. All give bit-identical results; they
/// differ only in speed and in the CPU features they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 (Haswell, Zen and later).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI (Ice Lake, Zen 4 and later) for Q4_1; its Q8_0 and
    /// odd-block-count rows use the AVX2 code, which every such CPU also runs.
    Avx512,
}

/// A kernel that was asked for but cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The name is not a kernel.
    #[error("{KERNEL_ENV}=`{0}` is not a kernel (expected scalar, avx2 or avx512)")]
    Unknown(String),
    /// The CPU lacks the kernel's instructions.
    #[error(
        "the `{}` kernel needs {} which this CPU lacks (available here: {})",
        .0.name(),
        .0.needs(),
        Kernel::supported().iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    )]
    Unsupported(Kernel),
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 3] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];

    /// The name `HALLMARK_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The kernel called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The CPU features the kernel needs, in words.
    pub fn needs(self) -> &'static str {
        match self {
            Self::Scalar => "nothing",
            Self::Avx2 => "an x86-64 CPU with AVX2",
            Self::Avx512 => "an x86-64 CPU with AVX2 and AVX-512 F/BW/VL/VNNI",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => has_avx2(),
            Self::Avx512 => has_avx2() && has_avx512_vnni(),
        }
    }

    /// The kernels this CPU can run, slowest first.
    pub fn supported() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.is_supported()).collect()
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Self {
        Self::supported().pop().unwrap_or(Self::Scalar)
    }

    /// `self` if this CPU can run it.
    pub fn require(self) -> Result<Self, KernelError> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(KernelError::Unsupported(self))
        }
    }

    /// The kernel `HALLMARK_KERNEL` forces (an error if unknown or unsupported), else the best.
    pub fn from_env() -> Result<Self, KernelError> {
        match std::env::var_os(KERNEL_ENV) {
            None => Ok(Self::best()),
            Some(v) => {
                let name = v.to_string_lossy();
                Self::from_name(&name)
                    .ok_or_else(|| KernelError::Unknown(name.into_owned()))?
                    .require()
            }
        }
    }

    /// Activation rows handled per call of the kernel (what its registers hold).
    fn group(self) -> usize {
        match self {
            Self::Avx2 => 4,
            Self::Scalar | Self::Avx512 => 8,
        }
    }
}

/// Activation rows quantized to 8 bits per block, with each block's scale `d` and `s = d * sum(q)`
/// (ggml's Q8_1, kept in f32).
#[derive(Debug, Default)]
pub struct QuantRows {
    rows: usize,
    blocks: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    /// Each block's `d` repeated 8 times: one 512-bit load gives the per-lane scales of two
    /// blocks (filled only for the AVX-512 kernel).
    d8: Vec<f32>,
}

impl QuantRows {
    /// Quantize `rows` rows of `k` elements (`k` a multiple of 32) for `kernel`, reusing the
    /// buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize, kernel: Kernel) {
        debug_assert_eq!(k % QK, 0);
        debug_assert!(x.len() >= rows * k);
        let blocks = k / QK;
        self.rows = rows;
        self.blocks = blocks;
        self.qs.resize(rows * k, 0);
        self.d.resize(rows * blocks, 0.0);
        self.s.resize(rows * blocks, 0.0);
        for (bi, chunk) in x[..rows * k].chunks_exact(QK).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut self.qs[bi * QK..(bi + 1) * QK];
            let mut sum = 0i32;
            for (qv, &v) in q.iter_mut().zip(chunk) {
                let r = (v * id).round() as i32;
                *qv = r as i8;
                sum += r;
            }
            self.d[bi] = d;
            self.s[bi] = d * sum as f32;
        }
        self.d8.clear();
        if kernel == Kernel::Avx512 {
            self.d8
                .extend(self.d.iter().flat_map(|&d| std::iter::repeat_n(d, 8)));
        }
    }

    /// Number of quantized rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A weight matrix `rows x cols` (output features x input features) in a kernel-friendly layout.
#[derive(Debug)]
pub enum PackedMatrix {
    /// ggml Q4_1: value = d * q + m, q in 0..16; `qs` keeps ggml's nibble order (16 bytes/block).
    Q4_1 {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Per-block scales.
        d: Vec<f32>,
        /// Per-block minimums.
        m: Vec<f32>,
        /// Packed nibbles.
        qs: Vec<u8>,
    },
    /// ggml Q8_0: value = d * q.
    Q8_0 {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Per-block scales.
        d: Vec<f32>,
        /// Quants, 32 per block.
        qs: Vec<i8>,
    },
    /// Dense f32 (norm-sized tensors, or weights of types without a fast kernel).
    F32 {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Row-major values.
        w: Vec<f32>,
    },
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

impl PackedMatrix {
    /// Repack raw ggml Q4_1 blocks (20 bytes: f16 d, f16 m, 16 bytes of nibbles).
    pub fn from_q4_1(raw: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let nb = rows * cols / QK;
        if !cols.is_multiple_of(QK) || raw.len() != nb * 20 {
            return None;
        }
        let mut d = Vec::with_capacity(nb);
        let mut m = Vec::with_capacity(nb);
        let mut qs = Vec::with_capacity(nb * 16);
        for blk in raw.chunks_exact(20) {
            d.push(f16_at(blk, 0));
            m.push(f16_at(blk, 2));
            qs.extend_from_slice(&blk[4..20]);
        }
        Some(Self::Q4_1 {
            rows,
            cols,
            d,
            m,
            qs,
        })
    }

    /// Repack raw ggml Q8_0 blocks (34 bytes: f16 d, 32 signed bytes).
    pub fn from_q8_0(raw: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let nb = rows * cols / QK;
        if !cols.is_multiple_of(QK) || raw.len() != nb * 34 {
            return None;
        }
        let mut d = Vec::with_capacity(nb);
        let mut qs = Vec::with_capacity(nb * QK);
        for blk in raw.chunks_exact(34) {
            d.push(f16_at(blk, 0));
            qs.extend(blk[2..34].iter().map(|&b| b as i8));
        }
        Some(Self::Q8_0 { rows, cols, d, qs })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        match self {
            Self::Q4_1 { rows, .. } | Self::Q8_0 { rows, .. } | Self::F32 { rows, .. } => *rows,
        }
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            Self::Q4_1 { cols, .. } | Self::Q8_0 { cols, .. } | Self::F32 { cols, .. } => *cols,
        }
    }

    /// True when the matrix wants quantized activations.
    pub fn is_quantized(&self) -> bool {
        !matches!(self, Self::F32 { .. })
    }

    /// Stack matrices with the same input width and layout along the output axis (fuses the
    /// q/k/v and gate/up projections into one pass over the activations). `None` if they differ.
    pub fn concat(parts: Vec<Self>) -> Result<Self, Vec<Self>> {
        let same = parts.windows(2).all(|w| {
            w[0].cols() == w[1].cols()
                && std::mem::discriminant(&w[0]) == std::mem::discriminant(&w[1])
        });
        if parts.is_empty() || !same {
            return Err(parts);
        }
        let cols = parts[0].cols();
        let rows = parts.iter().map(|p| p.rows()).sum();
        let mut it = parts.into_iter();
        let Some(first) = it.next() else {
            return Err(Vec::new());
        };
        let mut acc = first;
        for p in it {
            match (&mut acc, p) {
                (
                    Self::Q4_1 { d, m, qs, .. },
                    Self::Q4_1 {
                        d: d2,
                        m: m2,
                        qs: q2,
                        ..
                    },
                ) => {
                    d.extend(d2);
                    m.extend(m2);
                    qs.extend(q2);
                }
                (Self::Q8_0 { d, qs, .. }, Self::Q8_0 { d: d2, qs: q2, .. }) => {
                    d.extend(d2);
                    qs.extend(q2);
                }
                (Self::F32 { w, .. }, Self::F32 { w: w2, .. }) => w.extend(w2),
                _ => return Err(Vec::new()), // unreachable: discriminants checked above
            }
        }
        match &mut acc {
            Self::Q4_1 {
                rows: r, cols: c, ..
            }
            | Self::Q8_0 {
                rows: r, cols: c, ..
            }
            | Self::F32 {
                rows: r, cols: c, ..
            } => {
                *r = rows;
                *c = cols;
            }
        }
        Ok(acc)
    }

    /// Dequantize row `r` into `out` (`cols` values): the embedding lookup.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols();
        let nb = cols / QK;
        match self {
            Self::Q4_1 { d, m, qs, .. } => {
                for b in 0..nb {
                    let blk = r * nb + b;
                    let q = &qs[blk * 16..blk * 16 + 16];
                    let o = &mut out[b * QK..(b + 1) * QK];
                    for j in 0..16 {
                        o[j] = d[blk] * (q[j] & 0x0F) as f32 + m[blk];
                        o[j + 16] = d[blk] * (q[j] >> 4) as f32 + m[blk];
                    }
                }
            }
            Self::Q8_0 { d, qs, .. } => {
                for b in 0..nb {
                    let blk = r * nb + b;
                    for j in 0..QK {
                        out[b * QK + j] = d[blk] * qs[blk * QK + j] as f32;
                    }
                }
            }
            Self::F32 { w, .. } => out[..cols].copy_from_slice(&w[r * cols..(r + 1) * cols]),
        }
    }

    /// `out[i][o] = sum_c W[o][c] * x[i][c]` for the `n` rows of `x`, computed by `kernel`
    /// (which the caller has checked with [`Kernel::require`]); `qx` is scratch for the
    /// quantized activations. Parallel over output features.
    pub fn matmul(&self, x: &[f32], n: usize, qx: &mut QuantRows, out: &mut [f32], kernel: Kernel) {
        let (rows, cols) = (self.rows(), self.cols());
        debug_assert!(out.len() >= n * rows);
        // An unsupported kernel would execute instructions the CPU lacks.
        let kernel = if kernel.is_supported() {
            kernel
        } else {
            Kernel::Scalar
        };
        if self.is_quantized() {
            qx.quantize(x, n, cols, kernel);
        }
        let group = kernel.group();
        // Each task owns a band of output features; results land transposed in `out` through
        // a raw pointer because a band is strided in the row-major output.
        let band = (rows / (rayon::current_num_threads() * 8)).clamp(16, 512);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let qx: &QuantRows = qx;
        (0..rows.div_ceil(band)).into_par_iter().for_each(|t| {
            let lo = t * band;
            let hi = (lo + band).min(rows);
            let mut buf = [0f32; 8];
            for o in lo..hi {
                let mut i = 0;
                while i < n {
                    let g = (n - i).min(group);
                    self.dot_rows(o, x, cols, qx, i, &mut buf[..g], kernel);
                    for (j, v) in buf[..g].iter().enumerate() {
                        // SAFETY: (i + j, o) is written by exactly one task (bands are
                        // disjoint in o) and lies inside `out` (checked above: n * rows).
                        unsafe { *out_ptr.get().add((i + j) * rows + o) = *v };
                    }
                    i += g;
                }
            }
        });
    }

    /// Dot products of weight row `o` with activation rows `i0..i0+out.len()` (at most the
    /// kernel's group).
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn dot_rows(
        &self,
        o: usize,
        x: &[f32],
        cols: usize,
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
        kernel: Kernel,
    ) {
        let nb = cols / QK;
        match self {
            Self::Q4_1 { d, m, qs, .. } => {
                let (d, m, qs) = (
                    &d[o * nb..(o + 1) * nb],
                    &m[o * nb..(o + 1) * nb],
                    &qs[o * nb * 16..(o + 1) * nb * 16],
                );
                #[cfg(target_arch = "x86_64")]
                {
                    if kernel == Kernel::Avx512 && nb.is_multiple_of(2) {
                        // SAFETY: AVX2 and AVX-512 F/BW/VL/VNNI were detected at run time
                        // (`matmul` checked the kernel); nb is even.
                        unsafe { vnni::q4_1_rows(d, m, qs, qx, i0, out) };
                        return;
                    }
                    if kernel != Kernel::Scalar {
                        // SAFETY: AVX2 was detected at run time (both SIMD kernels need it).
                        unsafe { avx2::q4_1_rows(d, m, qs, qx, i0, out) };
                        return;
                    }
                }
                for (j, r) in out.iter_mut().enumerate() {
                    *r = q4_1_row_scalar(d, m, qs, qx, i0 + j);
                }
            }
            Self::Q8_0 { d, qs, .. } => {
                let (d, qs) = (
                    &d[o * nb..(o + 1) * nb],
                    &qs[o * nb * QK..(o + 1) * nb * QK],
                );
                #[cfg(target_arch = "x86_64")]
                if kernel != Kernel::Scalar {
                    // SAFETY: AVX2 was detected at run time (both SIMD kernels need it).
                    unsafe { avx2::q8_0_rows(d, qs, qx, i0, out) };
                    return;
                }
                for (j, r) in out.iter_mut().enumerate() {
                    *r = q8_0_row_scalar(d, qs, qx, i0 + j);
                }
            }
            Self::F32 { w, .. } => {
                let wr = &w[o * cols..(o + 1) * cols];
                for (j, r) in out.iter_mut().enumerate() {
                    *r = dot_f32(wr, &x[(i0 + j) * cols..(i0 + j + 1) * cols]);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes from the tasks of one `matmul` call.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// AVX-512 with VNNI (`vpdpbusd`: u8 x i8 dot products into i32 in one instruction).
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
    })
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_vnni() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

/// f32 dot product with 8 independent accumulators (vectorizes without fast-math). One
/// implementation serves every kernel, so its order is the same everywhere.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The reduction of the 16 lanes every kernel ends with: halves added pairwise, which is what
/// two 8-lane registers reduce to with 128-bit extracts and shuffles.
pub fn reduce16(a: &[f32; 16]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|i| a[i] + a[i + 8]);
    let s4: [f32; 4] = std::array::from_fn(|i| s8[i] + s8[i + 4]);
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

/// Q4_1 weight row (`d`, `m`, `qs` of its blocks) against quantized activation row `row`.
fn q4_1_row_scalar(d: &[f32], m: &[f32], qs: &[u8], qx: &QuantRows, row: usize) -> f32 {
    let nb = d.len();
    let mut acc = [0f32; 16];
    for b in 0..nb {
        let a = &qx.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
        let w = &qs[b * 16..b * 16 + 16];
        let scale = d[b] * qx.d[row * nb + b];
        // Element e < 16 is the low nibble of byte e, element e >= 16 the high nibble of e - 16.
        let nib = |e: usize| {
            if e < 16 {
                (w[e] & 0x0F) as i32
            } else {
                (w[e - 16] >> 4) as i32
            }
        };
        let lanes = &mut acc[(b % 2) * 8..(b % 2) * 8 + 8];
        for (l, lane) in lanes.iter_mut().enumerate() {
            let q: i32 = (4 * l..4 * l + 4).map(|e| nib(e) * a[e] as i32).sum();
            *lane += scale * q as f32;
        }
    }
    reduce16(&acc) + dot_f32(m, &qx.s[row * nb..(row + 1) * nb])
}

/// Q8_0 weight row against quantized activation row `row`.
fn q8_0_row_scalar(d: &[f32], qs: &[i8], qx: &QuantRows, row: usize) -> f32 {
    let nb = d.len();
    let mut acc = [0f32; 16];
    for b in 0..nb {
        let a = &qx.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
        let w = &qs[b * QK..(b + 1) * QK];
        let scale = d[b] * qx.d[row * nb + b];
        let lanes = &mut acc[(b % 2) * 8..(b % 2) * 8 + 8];
        for (l, lane) in lanes.iter_mut().enumerate() {
            let q: i32 = (4 * l..4 * l + 4).map(|e| w[e] as i32 * a[e] as i32).sum();
            *lane += scale * q as f32;
        }
    }
    reduce16(&acc)
}

// The AVX-512 intrinsics are stable since Rust 1.89, hence the crate's `rust-version`.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{QuantRows, QK};
    use std::arch::x86_64::*;

    /// Q4_1 weight row against up to 8 activation rows, two blocks per 512-bit register (the
    /// 16 lanes of the contract: block b in lanes 0..8, block b+1 in lanes 8..16): the 64
    /// nibbles of blocks b and b+1 are unpacked once, then each activation row costs one
    /// `vpdpbusd`, one conversion, two multiplies and an add per 64 products.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn q4_1_rows(
        d: &[f32],
        m: &[f32],
        qs: &[u8],
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
    ) {
        let nb = d.len();
        let g = out.len();
        debug_assert!(g <= 8 && nb.is_multiple_of(2) && qs.len() >= nb * 16);
        debug_assert!(qx.qs.len() >= (i0 + g) * nb * QK && qx.d8.len() >= (i0 + g) * nb * 8);
        let mut acc = [_mm512_setzero_ps(); 8];
        let mask = _mm256_set1_epi8(0x0F);
        let aq = qx.qs.as_ptr().wrapping_add(i0 * nb * QK);
        let ad = qx.d8.as_ptr().wrapping_add(i0 * nb * 8);
        let mut b = 0;
        while b < nb {
            // SAFETY: b + 1 < nb, so 32 bytes from b * 16 are inside qs.
            let raw = unsafe { _mm256_loadu_si256(qs.as_ptr().add(b * 16) as *const __m256i) };
            let lo = _mm256_and_si256(raw, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            // [lo.0, lo.1, hi.0, hi.1] -> [lo.0, hi.0, lo.1, hi.1]: block b, then block b+1.
            let w = _mm512_shuffle_i64x2(
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                0xD8,
            );
            let wd = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d[b]), _mm512_set1_ps(d[b + 1]));
            for (j, a_acc) in acc.iter_mut().enumerate().take(g) {
                let blk = j * nb + b;
                // SAFETY: blocks b, b+1 of row i0 + j: 64 quants and 16 scales in bounds.
                let (a, sc) = unsafe {
                    (
                        _mm512_loadu_si512(aq.add(blk * QK) as *const __m512i),
                        _mm512_loadu_ps(ad.add(blk * 8)),
                    )
                };
                let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a);
                let t = _mm512_mul_ps(_mm512_mul_ps(wd, sc), _mm512_cvtepi32_ps(p));
                *a_acc = _mm512_add_ps(*a_acc, t);
            }
            b += 2;
        }
        for j in 0..g {
            let asum = &qx.s[(i0 + j) * nb..(i0 + j + 1) * nb];
            let lo = _mm512_castps512_ps256(acc[j]);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[j]), 1));
            out[j] = super::avx2::reduce(lo, hi) + super::dot_f32(m, asum);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QuantRows, QK};
    use std::arch::x86_64::*;

    /// [`super::reduce16`] of lanes 0..8 in `lo` and 8..16 in `hi`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn reduce(lo: __m256, hi: __m256) -> f32 {
        let v = _mm256_add_ps(lo, hi); // a[i] + a[i + 8]
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); // + [i + 4]
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // + [i + 2]
        let s = _mm_add_ss(s, _mm_movehdup_ps(s)); // + [i + 1]
        _mm_cvtss_f32(s)
    }

    /// The 8 lane sums (elements 4l..4l+4) of a Q4_1 block's unpacked nibbles `w` against 32
    /// activation quants at `a`, as f32 (exact: at most 4 * 15 * 128).
    ///
    /// # Safety
    /// `a` must point to 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lanes_u4(w: __m256i, a: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 32 bytes at `a`.
        let a = unsafe { _mm256_loadu_si256(a as *const __m256i) };
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p)
    }

    /// A Q4_1 block's 32 nibbles as bytes in element order (low nibbles, then high).
    ///
    /// # Safety
    /// `q` must point to 16 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_u4(q: *const u8) -> __m256i {
        let mask = _mm_set1_epi8(0x0F);
        // SAFETY: the caller guarantees 16 bytes at `q`.
        let raw = unsafe { _mm_loadu_si128(q as *const __m128i) };
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16(raw, 4), mask),
            _mm_and_si128(raw, mask),
        )
    }

    /// The 8 lane sums of a Q8_0 block at `w` against 32 activation quants at `a` (exact:
    /// `maddubs` of |w| and sign-adjusted a stays below i16 saturation, |a| <= 127).
    ///
    /// # Safety
    /// `w` and `a` must each point to 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lanes_i8(w: *const i8, a: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 32 bytes at each pointer.
        let (w, a) = unsafe {
            (
                _mm256_loadu_si256(w as *const __m256i),
                _mm256_loadu_si256(a as *const __m256i),
            )
        };
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// `acc + scale * v` as a multiply and an add (the contract has no FMA).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul_add(acc: __m256, scale: f32, v: __m256) -> __m256 {
        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(scale), v))
    }

    /// Q4_1 weight row against quantized activation rows `i0..i0 + out.len()`, four at a time.
    ///
    /// # Safety
    /// AVX2 must be available; `qs` holds the row's `d.len()` blocks and `qx` the rows
    /// `i0..i0 + out.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q4_1_rows(
        d: &[f32],
        m: &[f32],
        qs: &[u8],
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
    ) {
        // A constant row count lets the accumulators live in registers.
        for (c, out) in out.chunks_mut(4).enumerate() {
            let i0 = i0 + 4 * c;
            // SAFETY: forwarded from the caller (these rows are among its rows).
            unsafe {
                match out.len() {
                    1 => q4_1_group::<1>(d, m, qs, qx, i0, out),
                    2 => q4_1_group::<2>(d, m, qs, qx, i0, out),
                    3 => q4_1_group::<3>(d, m, qs, qx, i0, out),
                    _ => q4_1_group::<4>(d, m, qs, qx, i0, out),
                }
            }
        }
    }

    /// [`q4_1_rows`] for `G` rows: the nibbles are unpacked once per block and reused for every
    /// activation row; the `m * s` terms are f32 dot products outside the integer loop.
    #[target_feature(enable = "avx2")]
    unsafe fn q4_1_group<const G: usize>(
        d: &[f32],
        m: &[f32],
        qs: &[u8],
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
    ) {
        let nb = d.len();
        debug_assert!(out.len() == G && qs.len() >= nb * 16);
        debug_assert!(qx.qs.len() >= (i0 + G) * nb * QK && qx.d.len() >= (i0 + G) * nb);
        let mut lo = [_mm256_setzero_ps(); G];
        let mut hi = [_mm256_setzero_ps(); G];
        let wq = qs.as_ptr();
        let aq = qx.qs.as_ptr();
        let mut b = 0;
        while b + 1 < nb {
            // SAFETY: b + 1 < nb; qs holds nb * 16 bytes.
            let (w0, w1) = unsafe { (unpack_u4(wq.add(b * 16)), unpack_u4(wq.add(b * 16 + 16))) };
            for j in 0..G {
                let blk = (i0 + j) * nb + b;
                // SAFETY: blocks b and b + 1 of row i0 + j lie inside qx.qs.
                let (v0, v1) = unsafe {
                    (
                        lanes_u4(w0, aq.add(blk * QK)),
                        lanes_u4(w1, aq.add((blk + 1) * QK)),
                    )
                };
                lo[j] = mul_add(lo[j], d[b] * qx.d[blk], v0);
                hi[j] = mul_add(hi[j], d[b + 1] * qx.d[blk + 1], v1);
            }
            b += 2;
        }
        if b < nb {
            // SAFETY: as above, for the last block.
            let w0 = unsafe { unpack_u4(wq.add(b * 16)) };
            // `j` indexes the activation row, its scale and its accumulator together.
            #[allow(clippy::needless_range_loop)]
            for j in 0..G {
                let blk = (i0 + j) * nb + b;
                // SAFETY: block b of row i0 + j lies inside qx.qs.
                let v0 = unsafe { lanes_u4(w0, aq.add(blk * QK)) };
                lo[j] = mul_add(lo[j], d[b] * qx.d[blk], v0);
            }
        }
        for j in 0..G {
            let asum = &qx.s[(i0 + j) * nb..(i0 + j + 1) * nb];
            out[j] = reduce(lo[j], hi[j]) + super::dot_f32(m, asum);
        }
    }

    /// Q8_0 weight row against 1 to 8 quantized activation rows, one at a time.
    ///
    /// # Safety
    /// AVX2 must be available; `qs` holds the row's `d.len()` blocks and `qx` the rows
    /// `i0..i0 + out.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q8_0_rows(
        d: &[f32],
        qs: &[i8],
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
    ) {
        let nb = d.len();
        debug_assert!(qs.len() >= nb * QK && qx.qs.len() >= (i0 + out.len()) * nb * QK);
        let wq = qs.as_ptr();
        for (j, o) in out.iter_mut().enumerate() {
            let row = i0 + j;
            let aq = qx.qs.as_ptr().wrapping_add(row * nb * QK);
            let ad = &qx.d[row * nb..(row + 1) * nb];
            let mut lo = _mm256_setzero_ps();
            let mut hi = _mm256_setzero_ps();
            let mut b = 0;
            while b + 1 < nb {
                // SAFETY: b + 1 < nb; both rows hold nb * QK bytes.
                let (v0, v1) = unsafe {
                    (
                        lanes_i8(wq.add(b * QK), aq.add(b * QK)),
                        lanes_i8(wq.add((b + 1) * QK), aq.add((b + 1) * QK)),
                    )
                };
                lo = mul_add(lo, d[b] * ad[b], v0);
                hi = mul_add(hi, d[b + 1] * ad[b + 1], v1);
                b += 2;
            }
            if b < nb {
                // SAFETY: b < nb.
                let v0 = unsafe { lanes_i8(wq.add(b * QK), aq.add(b * QK)) };
                lo = mul_add(lo, d[b] * ad[b], v0);
            }
            *o = reduce(lo, hi);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn raw_q4_1(rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            raw.extend(half::f16::from_f32(0.01 + lcg(seed).abs() * 0.1).to_le_bytes());
            raw.extend(half::f16::from_f32(lcg(seed) * 0.2).to_le_bytes());
            for _ in 0..16 {
                raw.push(((lcg(seed) + 0.5) * 255.0) as u8);
            }
        }
        raw
    }

    fn raw_q8_0(rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            raw.extend(half::f16::from_f32(0.01 + lcg(seed).abs() * 0.1).to_le_bytes());
            for _ in 0..QK {
                // The full i8 range, -128 included (the AVX2 sign trick must handle it).
                raw.push(((lcg(seed) + 0.5) * 255.99) as u8);
            }
        }
        raw
    }

    fn matmul(mat: &PackedMatrix, x: &[f32], n: usize, kernel: Kernel) -> Vec<f32> {
        let mut out = vec![f32::NAN; n * mat.rows()];
        mat.matmul(x, n, &mut QuantRows::default(), &mut out, kernel);
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every kernel agrees with a dequantize-then-f32 reference, up to the activation
    /// quantization error (8 bits per block).
    #[test]
    fn kernels_match_dequantized_reference() {
        let mut seed = 7u64;
        // An odd and an even block count: the SIMD kernels take blocks in pairs.
        for (rows, cols, n) in [(37, 96, 11), (29, 128, 9), (5, 64, 1)] {
            let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed) * 4.0).collect();
            for mat in [
                PackedMatrix::from_q4_1(&raw_q4_1(rows, cols, &mut seed), rows, cols),
                PackedMatrix::from_q8_0(&raw_q8_0(rows, cols, &mut seed), rows, cols),
            ] {
                let mat = mat.expect("well-sized raw blocks");
                let mut dense = vec![0f32; rows * cols];
                for r in 0..rows {
                    mat.row_f32(r, &mut dense[r * cols..(r + 1) * cols]);
                }
                for kernel in Kernel::supported() {
                    let out = matmul(&mat, &x, n, kernel);
                    for i in 0..n {
                        for o in 0..rows {
                            let (wr, xr) = (
                                &dense[o * cols..(o + 1) * cols],
                                &x[i * cols..(i + 1) * cols],
                            );
                            let want = dot_f32(wr, xr);
                            let got = out[i * rows + o];
                            // Rounding an activation moves it by at most half its block's step
                            // (amax / 127 / 2), so the error is bounded by sum |w| * step / 2.
                            let mut bound = 1e-4;
                            for (wb, xb) in wr.chunks(QK).zip(xr.chunks(QK)) {
                                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                                bound += wb.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                            }
                            assert!(
                                (want - got).abs() <= bound,
                                "{kernel:?}: {want} vs {got} (bound {bound})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The scalar kernel is the contract written out: check it against the formula computed
    /// independently (per-element products summed into the lanes the docs name).
    #[test]
    fn scalar_kernel_follows_the_documented_order() {
        let mut seed = 11u64;
        let (rows, cols, n) = (3, 5 * QK, 2);
        let raw = raw_q4_1(rows, cols, &mut seed);
        let mat = PackedMatrix::from_q4_1(&raw, rows, cols).expect("blocks");
        let x: Vec<f32> = (0..n * cols).map(|_| lcg(&mut seed)).collect();
        let mut qx = QuantRows::default();
        qx.quantize(&x, n, cols, Kernel::Scalar);
        let out = matmul(&mat, &x, n, Kernel::Scalar);
        let PackedMatrix::Q4_1 { d, m, qs, .. } = &mat else {
            unreachable!("built as Q4_1")
        };
        let nb = cols / QK;
        for i in 0..n {
            for o in 0..rows {
                let mut lanes = [0f32; 16];
                for b in 0..nb {
                    let blk = o * nb + b;
                    let a = &qx.qs[(i * nb + b) * QK..(i * nb + b + 1) * QK];
                    let mut elem = [0i32; QK];
                    for k in 0..16 {
                        elem[k] = (qs[blk * 16 + k] & 0x0F) as i32;
                        elem[k + 16] = (qs[blk * 16 + k] >> 4) as i32;
                    }
                    for l in 0..8 {
                        let q: i32 = (0..4).map(|t| elem[4 * l + t] * a[4 * l + t] as i32).sum();
                        let lane = if b % 2 == 0 { l } else { l + 8 };
                        lanes[lane] += (d[blk] * qx.d[i * nb + b]) * q as f32;
                    }
                }
                let mut half: Vec<f32> = lanes.to_vec();
                while half.len() > 1 {
                    let h = half.len() / 2;
                    half = (0..h).map(|k| half[k] + half[k + h]).collect();
                }
                let want = half[0] + dot_f32(&m[o * nb..(o + 1) * nb], &qx.s[i * nb..(i + 1) * nb]);
                assert_eq!(want.to_bits(), out[i * rows + o].to_bits());
            }
        }
    }

    #[test]
    fn kernel_names_round_trip_and_scalar_is_always_there() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()), Some(k));
            assert_eq!(k.require().is_ok(), k.is_supported());
        }
        assert_eq!(Kernel::from_name("AVX2"), None);
        assert_eq!(Kernel::supported()[0], Kernel::Scalar);
        assert_eq!(Kernel::best(), *Kernel::supported().last().expect("scalar"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            Kernel::Avx2.is_supported(),
            std::is_x86_feature_detected!("avx2")
        );
        for k in Kernel::ALL.into_iter().filter(|k| !k.is_supported()) {
            let msg = KernelError::Unsupported(k).to_string();
            assert!(msg.contains(k.name()) && msg.contains("scalar"), "{msg}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random matrices of every storage type and shape (odd block counts, row counts that
        /// leave partial bands and groups, f32 widths off any multiple of 8 or 16): every
        /// kernel gives the scalar kernel's bits, and each activation row's result is the same
        /// alone as in the batch.
        #[test]
        fn every_kernel_gives_the_same_bits(
            rows in 1usize..40,
            blocks in 1usize..10,
            n in 1usize..20,
            f32_cols in 1usize..100,
            kind in 0usize..3,
            seed in any::<u64>(),
        ) {
            let mut seed = seed;
            let cols = if kind == 2 { f32_cols } else { blocks * QK };
            let mat = match kind {
                0 => PackedMatrix::from_q4_1(&raw_q4_1(rows, cols, &mut seed), rows, cols),
                1 => PackedMatrix::from_q8_0(&raw_q8_0(rows, cols, &mut seed), rows, cols),
                _ => Some(PackedMatrix::F32 {
                    rows,
                    cols,
                    w: (0..rows * cols).map(|_| lcg(&mut seed)).collect(),
                }),
            }
            .expect("well-sized raw blocks");
            // Activations with a wide dynamic range, some blocks all zero.
            let x: Vec<f32> = (0..n * cols)
                .map(|i| if (i / QK) % 7 == 3 { 0.0 } else { lcg(&mut seed) * 8.0 })
                .collect();
            let want = bits(&matmul(&mat, &x, n, Kernel::Scalar));
            for kernel in Kernel::supported() {
                let got = bits(&matmul(&mat, &x, n, kernel));
                prop_assert_eq!(&got, &want, "{:?} differs from scalar", kernel);
                for i in 0..n {
                    let alone = bits(&matmul(&mat, &x[i * cols..(i + 1) * cols], 1, kernel));
                    prop_assert_eq!(
                        &alone[..],
                        &want[i * rows..(i + 1) * rows],
                        "{:?}: row {} alone differs from the batch", kernel, i
                    );
                }
            }
        }
    }
}

//! Quantized matrix kernels for the decode hot path.
//!
//! candle 0.11 computes Q4_1 dot products with its generic scalar code (`vec_dot_unopt`), and its
//! SIMD paths for other types are chosen at compile time (`target_feature`), so a default build
//! runs scalar code everywhere. These kernels repack the weights once at load time (f32 scales,
//! packed quants) and pick AVX2 at run time, falling back to portable code elsewhere. The
//! arithmetic is ggml's: activations are quantized to 8 bits per 32-element block, then integer
//! dot products are scaled per block.

use rayon::prelude::*;

/// Elements per quantization block (Q4_0, Q4_1, Q8_0, Q8_1 all use 32).
pub const QK: usize = 32;

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
    /// blocks (filled only when the AVX-512 VNNI kernel is in use).
    d8: Vec<f32>,
}

impl QuantRows {
    /// Quantize `rows` rows of `k` elements (`k` a multiple of 32), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
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
        #[cfg(target_arch = "x86_64")]
        if has_vnni() {
            self.d8.clear();
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

    /// `out[i][o] = sum_c W[o][c] * x[i][c]` for the `n` rows of `x`; `qx` is scratch for the
    /// quantized activations. Parallel over output features.
    pub fn matmul(&self, x: &[f32], n: usize, qx: &mut QuantRows, out: &mut [f32]) {
        let (rows, cols) = (self.rows(), self.cols());
        debug_assert!(out.len() >= n * rows);
        if self.is_quantized() {
            qx.quantize(x, n, cols);
        }
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
                    let g = (n - i).min(8);
                    self.dot_rows(o, x, cols, qx, i, g, &mut buf[..g]);
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

    /// Dot products of weight row `o` with activation rows `i0..i0+out.len()` (at most 8).
    #[allow(clippy::too_many_arguments)]
    fn dot_rows(
        &self,
        o: usize,
        x: &[f32],
        cols: usize,
        qx: &QuantRows,
        i0: usize,
        _g: usize,
        out: &mut [f32],
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
                if nb.is_multiple_of(2) && has_vnni() {
                    // SAFETY: AVX-512 F/BW/VL/VNNI were detected at run time; nb is even.
                    unsafe { vnni::q4_1_rows(d, m, qs, qx, i0, out) };
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if has_avx2() {
                    if out.len() == 1 {
                        // SAFETY: AVX2 and FMA were detected at run time.
                        out[0] = unsafe { avx2::q4_1_row1(d, m, qs, qx, i0) };
                    } else {
                        // SAFETY: AVX2 and FMA were detected at run time.
                        unsafe { avx2::q4_1_rows(d, m, qs, qx, i0, out) };
                    }
                    return;
                }
                q4_1_rows_portable(d, m, qs, qx, i0, out);
            }
            Self::Q8_0 { d, qs, .. } => {
                let (d, qs) = (
                    &d[o * nb..(o + 1) * nb],
                    &qs[o * nb * QK..(o + 1) * nb * QK],
                );
                #[cfg(target_arch = "x86_64")]
                if has_avx2() {
                    if out.len() == 1 {
                        // SAFETY: AVX2 and FMA were detected at run time.
                        out[0] = unsafe { avx2::q8_0_row1(d, qs, qx, i0) };
                    } else {
                        // SAFETY: AVX2 and FMA were detected at run time.
                        unsafe { avx2::q8_0_rows(d, qs, qx, i0, out) };
                    }
                    return;
                }
                q8_0_rows_portable(d, qs, qx, i0, out);
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
fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::env::var_os("HALLMARK_NO_AVX512").is_none()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
    })
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// f32 dot product with 8 independent accumulators (vectorizes without fast-math).
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

fn q4_1_rows_portable(d: &[f32], m: &[f32], qs: &[u8], qx: &QuantRows, i0: usize, out: &mut [f32]) {
    let nb = d.len();
    for (j, r) in out.iter_mut().enumerate() {
        let row = i0 + j;
        let mut sum = 0f32;
        for b in 0..nb {
            let a = &qx.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
            let w = &qs[b * 16..b * 16 + 16];
            let mut si = 0i32;
            for k in 0..16 {
                si += (w[k] & 0x0F) as i32 * a[k] as i32 + (w[k] >> 4) as i32 * a[k + 16] as i32;
            }
            sum += d[b] * qx.d[row * nb + b] * si as f32 + m[b] * qx.s[row * nb + b];
        }
        *r = sum;
    }
}

fn q8_0_rows_portable(d: &[f32], qs: &[i8], qx: &QuantRows, i0: usize, out: &mut [f32]) {
    let nb = d.len();
    for (j, r) in out.iter_mut().enumerate() {
        let row = i0 + j;
        let mut sum = 0f32;
        for b in 0..nb {
            let a = &qx.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
            let w = &qs[b * QK..(b + 1) * QK];
            let si: i32 = w.iter().zip(a).map(|(&x, &y)| x as i32 * y as i32).sum();
            sum += d[b] * qx.d[row * nb + b] * si as f32;
        }
        *r = sum;
    }
}

// The AVX-512 intrinsics are stable since Rust 1.89, hence the crate's `rust-version`.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{QuantRows, QK};
    use std::arch::x86_64::*;

    /// Q4_1 weight row against up to 8 activation rows, two blocks per 512-bit register:
    /// the 64 nibbles of blocks b and b+1 are unpacked once, then each activation row costs
    /// one `vpdpbusd`, one conversion and one FMA per 64 products.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
            let wd = _mm512_insertf32x8(_mm512_set1_ps(d[b]), _mm256_set1_ps(d[b + 1]), 1);
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
                *a_acc = _mm512_fmadd_ps(_mm512_mul_ps(wd, sc), _mm512_cvtepi32_ps(p), *a_acc);
            }
            b += 2;
        }
        for j in 0..g {
            let asum = &qx.s[(i0 + j) * nb..(i0 + j + 1) * nb];
            out[j] = _mm512_reduce_add_ps(acc[j]) + super::dot_f32(m, asum);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QuantRows, QK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Q4_1 weight row against up to 8 quantized activation rows: the nibbles are unpacked
    /// once per block and reused for every activation row; the `m * s` terms are f32 dot
    /// products outside the integer loop.
    #[target_feature(enable = "avx2,fma")]
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
        debug_assert!(g <= 8 && qs.len() >= nb * 16);
        debug_assert!(qx.qs.len() >= (i0 + g) * nb * QK);
        let mut acc = [_mm256_setzero_ps(); 8];
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let aq = qx.qs.as_ptr().wrapping_add(i0 * nb * QK);
        let ad = &qx.d[i0 * nb..(i0 + g) * nb];
        for b in 0..nb {
            // SAFETY: b < nb and qs holds nb * 16 bytes.
            let raw = unsafe { _mm_loadu_si128(qs.as_ptr().add(b * 16) as *const __m128i) };
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
            let w = _mm256_set_m128i(hi, lo);
            let db = d[b];
            for (j, a_acc) in acc.iter_mut().enumerate().take(g) {
                // SAFETY: row i0 + j < rows and block b < nb: inside qx.qs.
                let a = unsafe { _mm256_loadu_si256(aq.add((j * nb + b) * QK) as *const __m256i) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
                let scale = _mm256_set1_ps(db * ad[j * nb + b]);
                *a_acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), *a_acc);
            }
        }
        for j in 0..g {
            let asum = &qx.s[(i0 + j) * nb..(i0 + j + 1) * nb];
            out[j] = hsum(acc[j]) + super::dot_f32(m, asum);
        }
    }

    /// Q4_1 weight row against one activation row (decode at batch 1): two blocks per
    /// iteration into two accumulators, and the `m * s` terms as one f32 dot product.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q4_1_row1(
        d: &[f32],
        m: &[f32],
        qs: &[u8],
        qx: &QuantRows,
        row: usize,
    ) -> f32 {
        let nb = d.len();
        debug_assert!(qs.len() >= nb * 16 && qx.qs.len() >= (row + 1) * nb * QK);
        let ad = &qx.d[row * nb..(row + 1) * nb];
        let asum = &qx.s[row * nb..(row + 1) * nb];
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let aq = qx.qs.as_ptr().wrapping_add(row * nb * QK);
        let wq = qs.as_ptr();
        let block = |b: usize| {
            // SAFETY: b < nb; qs holds nb * 16 bytes and the activation row nb * QK bytes.
            let raw = unsafe { _mm_loadu_si128(wq.add(b * 16) as *const __m128i) };
            let w = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16(raw, 4), mask),
                _mm_and_si128(raw, mask),
            );
            // SAFETY: as above.
            let a = unsafe { _mm256_loadu_si256(aq.add(b * QK) as *const __m256i) };
            _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones))
        };
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut b = 0;
        while b + 1 < nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * ad[b]), block(b), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d[b + 1] * ad[b + 1]), block(b + 1), acc1);
            b += 2;
        }
        if b < nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * ad[b]), block(b), acc0);
        }
        hsum(_mm256_add_ps(acc0, acc1)) + super::dot_f32(m, asum)
    }

    /// Q8_0 weight row against one activation row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q8_0_row1(d: &[f32], qs: &[i8], qx: &QuantRows, row: usize) -> f32 {
        let nb = d.len();
        debug_assert!(qs.len() >= nb * QK && qx.qs.len() >= (row + 1) * nb * QK);
        let ad = &qx.d[row * nb..(row + 1) * nb];
        let ones = _mm256_set1_epi16(1);
        let aq = qx.qs.as_ptr().wrapping_add(row * nb * QK);
        let wq = qs.as_ptr();
        let block = |b: usize| {
            // SAFETY: b < nb; both rows hold nb * QK bytes.
            let (w, a) = unsafe {
                (
                    _mm256_loadu_si256(wq.add(b * QK) as *const __m256i),
                    _mm256_loadu_si256(aq.add(b * QK) as *const __m256i),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
            _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones))
        };
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut b = 0;
        while b + 1 < nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * ad[b]), block(b), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d[b + 1] * ad[b + 1]), block(b + 1), acc1);
            b += 2;
        }
        if b < nb {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * ad[b]), block(b), acc0);
        }
        hsum(_mm256_add_ps(acc0, acc1))
    }

    /// Q8_0 weight row against up to 8 quantized activation rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q8_0_rows(
        d: &[f32],
        qs: &[i8],
        qx: &QuantRows,
        i0: usize,
        out: &mut [f32],
    ) {
        let nb = d.len();
        let g = out.len();
        debug_assert!(g <= 8 && qs.len() >= nb * QK);
        debug_assert!(qx.qs.len() >= (i0 + g) * nb * QK);
        let mut acc = [_mm256_setzero_ps(); 8];
        let ones = _mm256_set1_epi16(1);
        let aq = qx.qs.as_ptr();
        for (b, &db) in d.iter().enumerate() {
            // SAFETY: b < nb and qs holds nb * QK bytes.
            let w = unsafe { _mm256_loadu_si256(qs.as_ptr().add(b * QK) as *const __m256i) };
            let wabs = _mm256_sign_epi8(w, w);
            for (j, a_acc) in acc.iter_mut().enumerate().take(g) {
                let blk = (i0 + j) * nb + b;
                // SAFETY: blk < rows * nb, and qx.qs holds QK bytes per block.
                let a = unsafe { _mm256_loadu_si256(aq.add(blk * QK) as *const __m256i) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(a, w)), ones);
                let scale = _mm256_set1_ps(db * qx.d[blk]);
                *a_acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), *a_acc);
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = hsum(*a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                raw.push((lcg(seed) * 254.0) as i8 as u8);
            }
        }
        raw
    }

    /// The SIMD and portable kernels agree with a dequantize-then-f32 reference, up to the
    /// activation quantization error (8 bits per block).
    #[test]
    fn kernels_match_dequantized_reference() {
        let mut seed = 7u64;
        // An odd and an even block count: the AVX-512 kernel takes blocks in pairs.
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
                let mut out = vec![0f32; n * rows];
                let mut qx = QuantRows::default();
                mat.matmul(&x, n, &mut qx, &mut out);
                let mut portable = vec![0f32; rows];
                for i in 0..n {
                    for o in 0..rows {
                        let want = dot_f32(
                            &dense[o * cols..(o + 1) * cols],
                            &x[i * cols..(i + 1) * cols],
                        );
                        let got = out[i * rows + o];
                        // Rounding an activation moves it by at most half its block's step
                        // (amax / 127 / 2), so the error is bounded by sum |w| * step / 2.
                        let mut bound = 1e-4;
                        for (wb, xb) in dense[o * cols..(o + 1) * cols]
                            .chunks(QK)
                            .zip(x[i * cols..(i + 1) * cols].chunks(QK))
                        {
                            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                            bound += wb.iter().map(|w| w.abs()).sum::<f32>() * amax / 254.0;
                        }
                        assert!(
                            (want - got).abs() <= bound,
                            "{want} vs {got} (bound {bound})"
                        );
                    }
                }
                // Portable path on row 0 equals the dispatched path to float rounding.
                let nb = cols / QK;
                qx.quantize(&x, n, cols);
                for o in 0..rows {
                    let mut one = [0f32; 1];
                    match &mat {
                        PackedMatrix::Q4_1 { d, m, qs, .. } => q4_1_rows_portable(
                            &d[o * nb..(o + 1) * nb],
                            &m[o * nb..(o + 1) * nb],
                            &qs[o * nb * 16..(o + 1) * nb * 16],
                            &qx,
                            0,
                            &mut one,
                        ),
                        PackedMatrix::Q8_0 { d, qs, .. } => q8_0_rows_portable(
                            &d[o * nb..(o + 1) * nb],
                            &qs[o * nb * QK..(o + 1) * nb * QK],
                            &qx,
                            0,
                            &mut one,
                        ),
                        PackedMatrix::F32 { .. } => unreachable!(),
                    }
                    portable[o] = one[0];
                    assert!((portable[o] - out[o]).abs() < 1e-3 * (1.0 + out[o].abs()));
                }
            }
        }
    }
}

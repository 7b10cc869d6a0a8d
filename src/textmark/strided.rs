//! One float field of an array of records, read and written in place.
//!
//! llama-cpp-python hands a logits processor the `logit` field of its `llama_token_data`
//! records (`{id: i32, logit: f32, p: f32}`): a view whose floats lie 3 apart. Sampling reads
//! that field once and forcing the chosen token writes all of it, each step, over the whole
//! vocabulary, so these two passes are a large share of a processor's cost; stride 3 has an
//! AVX2 path (about 3x the portable loops here), every other stride the portable one. Every
//! kernel gives the same result: these are copies, not arithmetic.

use super::sampling::sampling_kernel as kernel;
use crate::generate::kernels::Kernel;

/// The length a slice needs to hold `n` floats `stride` apart, the first at index 0.
fn span(stride: usize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n - 1) * stride + 1
    }
}

fn check(len: usize, stride: usize, n: usize) {
    assert!(stride > 0, "stride must be positive");
    assert!(
        len >= span(stride, n),
        "{n} floats {stride} apart need {} floats, got {len}",
        span(stride, n)
    );
}

/// Replace `out` with the `n` floats of `src` that lie `stride` apart, the first at `src[0]`.
///
/// # Panics
/// If `stride` is 0 or `src` is shorter than `(n - 1) * stride + 1`.
pub fn gather(src: &[f32], stride: usize, n: usize, out: &mut Vec<f32>) {
    gather_with(kernel(), src, stride, n, out);
}

/// [`gather`] with a given kernel (the portable one if this CPU cannot run it).
pub fn gather_with(kernel: Kernel, src: &[f32], stride: usize, n: usize, out: &mut Vec<f32>) {
    check(src.len(), stride, n);
    out.clear();
    out.reserve(n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if stride == 3 && kernel != Kernel::Scalar && Kernel::Avx2.is_supported() {
        // Whole blocks of 8 records read 24 floats each; the tail goes the portable way.
        let blocks = (n / 8).min(src.len() / 24);
        out.resize(blocks * 8, 0.0);
        // SAFETY: this CPU has AVX2 (checked just above); the lengths are checked inside.
        unsafe { gather3_avx2(&src[..blocks * 24], &mut out[..]) };
        done = blocks * 8;
    }
    let _ = kernel;
    if stride == 1 {
        out.extend_from_slice(&src[..n]);
        return;
    }
    out.extend(src[done * stride..].iter().step_by(stride).take(n - done));
}

/// Set the `n` floats of `dst` that lie `stride` apart, the first at `dst[0]`, to `value`; the
/// floats between them keep their values.
///
/// # Panics
/// If `stride` is 0 or `dst` is shorter than `(n - 1) * stride + 1`.
pub fn fill(dst: &mut [f32], stride: usize, n: usize, value: f32) {
    fill_with(kernel(), dst, stride, n, value);
}

/// [`fill`] with a given kernel (the portable one if this CPU cannot run it).
pub fn fill_with(kernel: Kernel, dst: &mut [f32], stride: usize, n: usize, value: f32) {
    check(dst.len(), stride, n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if stride == 3 && kernel != Kernel::Scalar && Kernel::Avx2.is_supported() {
        let blocks = (n / 8).min(dst.len() / 24);
        // SAFETY: this CPU has AVX2 (checked just above).
        unsafe { fill3_avx2(&mut dst[..blocks * 24], value) };
        done = blocks * 8;
    }
    let _ = kernel;
    if stride == 1 {
        dst[..n].fill(value);
        return;
    }
    for x in dst[done * stride..]
        .iter_mut()
        .step_by(stride)
        .take(n - done)
    {
        *x = value;
    }
}

/// Every third float of `src` into `out`, 8 at a time: three loads, three lane permutations
/// and two blends per 8 records instead of 8 scalar loads and stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather3_avx2(src: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(src.len() == 3 * out.len() && out.len().is_multiple_of(8));
    // Record j's float sits in lane (3j mod 8) of vector (3j div 8).
    let ia = _mm256_setr_epi32(0, 3, 6, 0, 0, 0, 0, 0);
    let ib = _mm256_setr_epi32(0, 0, 0, 1, 4, 7, 0, 0);
    let ic = _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 2, 5);
    for (s, o) in src.chunks_exact(24).zip(out.chunks_exact_mut(8)) {
        // SAFETY: `s` holds 24 floats and `o` 8 (chunks_exact); unaligned loads and stores.
        unsafe {
            let a = _mm256_loadu_ps(s.as_ptr());
            let b = _mm256_loadu_ps(s.as_ptr().add(8));
            let c = _mm256_loadu_ps(s.as_ptr().add(16));
            let r = _mm256_blend_ps::<0b0011_1000>(
                _mm256_permutevar8x32_ps(a, ia),
                _mm256_permutevar8x32_ps(b, ib),
            );
            let r = _mm256_blend_ps::<0b1100_0000>(r, _mm256_permutevar8x32_ps(c, ic));
            _mm256_storeu_ps(o.as_mut_ptr(), r);
        }
    }
}

/// Every third float of `dst` set to `value`, 8 records at a time: each vector is loaded,
/// `value` blended into its record lanes and stored back (masked stores are slower on some
/// CPUs than this read-modify-write; the other floats are written back unchanged).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill3_avx2(dst: &mut [f32], value: f32) {
    use std::arch::x86_64::*;
    let v = _mm256_set1_ps(value);
    for d in dst.chunks_exact_mut(24) {
        // SAFETY: `d` holds 24 floats (chunks_exact); unaligned loads and stores.
        unsafe {
            let p = d.as_mut_ptr();
            let a = _mm256_loadu_ps(p);
            _mm256_storeu_ps(p, _mm256_blend_ps::<0b0100_1001>(a, v));
            let b = _mm256_loadu_ps(p.add(8));
            _mm256_storeu_ps(p.add(8), _mm256_blend_ps::<0b1001_0010>(b, v));
            let c = _mm256_loadu_ps(p.add(16));
            _mm256_storeu_ps(p.add(16), _mm256_blend_ps::<0b0010_0100>(c, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_gathers_and_fills_exactly_the_strided_floats() {
        let kernels = Kernel::supported();
        assert_eq!(kernels[0], Kernel::Scalar);
        for stride in [1, 2, 3, 4, 5] {
            // Counts off the block size, a vocabulary-sized one, and slices with spare floats
            // after the last record (a record array) or none (a bare strided span).
            for n in [0, 1, 7, 8, 9, 23, 24, 25, 49_152, 50_001] {
                for extra in [0, stride - 1] {
                    let len = span(stride, n) + if n == 0 { 0 } else { extra };
                    let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
                    let want: Vec<f32> = (0..n).map(|j| src[j * stride]).collect();
                    for &k in &kernels {
                        let mut got = vec![1.0; 3];
                        gather_with(k, &src, stride, n, &mut got);
                        assert_eq!(got, want, "gather {k:?} stride {stride} n {n}");
                        let mut dst = src.clone();
                        fill_with(k, &mut dst, stride, n, f32::NEG_INFINITY);
                        for (i, (&d, &s)) in dst.iter().zip(&src).enumerate() {
                            let hit = i % stride == 0 && i / stride < n;
                            let expect = if hit { f32::NEG_INFINITY } else { s };
                            assert_eq!(
                                d.to_bits(),
                                expect.to_bits(),
                                "fill {k:?} {stride} {n} @{i}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "need")]
    fn a_short_slice_is_refused() {
        gather(&[0.0; 5], 3, 3, &mut Vec::new());
    }
}

//! Signing throughput: the one-pass file + per-tensor hash against plain BLAKE3 (`b3sum`'s
//! engine) on the same bytes, and a whole `sign_model` + `check_model` round on a file.
//!
//! `benches/compare_sign.sh` compares the binaries with `b3sum` and model_signing on 2 GiB.

use std::hint::black_box;
use std::ops::Range;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hallmark::signing::hash::{hash_file, HashType};
use hallmark::signing::{check_model, sign_model, verify_bundle, KeyAlg, SignOptions, SigningKey};

const LEN: usize = 256 << 20;

fn data() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..LEN / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// Tensor-like spans: an unaligned header, then tensors of mixed sizes.
fn spans() -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut p = 8 + 4096 + 136;
    let sizes = [64 << 20, 4 << 20, 16 << 10, 12 << 20, 3 << 10];
    let mut i = 0;
    while p < LEN as u64 {
        let end = (p + sizes[i % sizes.len()] as u64 + 4).min(LEN as u64);
        out.push(p..end);
        p = end;
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let bytes = data();
    let spans = spans();
    let mut g = c.benchmark_group("hash_256MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("blake3_update_rayon (b3sum engine)", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            h.update_rayon(black_box(&bytes));
            h.finalize()
        })
    });
    g.bench_function("hallmark_file_only", |b| {
        b.iter(|| hash_file(black_box(&bytes), HashType::Blake3, &[], &|_| {}))
    });
    g.bench_function(format!("hallmark_file_and_{}_tensors", spans.len()), |b| {
        b.iter(|| hash_file(black_box(&bytes), HashType::Blake3, &spans, &|_| {}))
    });
    g.finish();

    // End to end on a generated file: sign, then verify.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    let tensors: Vec<_> = (0..16)
        .map(|i| hallmark::weights::write::OwnedTensor {
            name: format!("t{i}"),
            dtype: hallmark::weights::DType::U8,
            shape: vec![4 << 20],
            bytes: bytes[i * (4 << 20)..(i + 1) * (4 << 20)].to_vec(),
        })
        .collect();
    let file = hallmark::weights::write::safetensors_bytes(&tensors, &[]).expect("write");
    std::fs::write(&path, &file).expect("write");
    let key = SigningKey::generate(KeyAlg::Ed25519);
    let mut g = c.benchmark_group("model_64MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("sign_model", |b| {
        b.iter(|| sign_model(&path, &key, &SignOptions::default(), &|_| {}).expect("sign"))
    });
    let bundle = sign_model(&path, &key, &SignOptions::default(), &|_| {})
        .expect("sign")
        .to_json();
    let vk = key.verifying_key();
    g.bench_function("verify_bundle+check_model", |b| {
        b.iter(|| {
            let v = verify_bundle(&bundle, &vk).expect("verify");
            check_model(&path, &v, None, &|_| {}).expect("check")
        })
    });
    g.finish();
}

// No HTML/SVG plots: plotters is built here with explicitly registered fonts only (for the
// project's own plots), and criterion's plotting would find none and panic.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);

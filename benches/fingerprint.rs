//! Fingerprint benches.
//!
//! * `extract/*` vs `blake3/*`: fingerprint extraction against a BLAKE3 hash of the same
//!   page-cached file (rayon + mmap, what `b3sum` does), on the real models when present and on
//!   a zoo model.
//! * `detect/1000-fingerprints`: one suspect against a registry of 1,000 fingerprints of the same
//!   architecture (the worst case: every entry is fully tested), end to end including reading
//!   and parsing the registry files.
//!
//! * `dequant/*`: decoding a 1024 x 4096 matrix of each common dtype to f32 (elements/s).
//!
//! Run: `cargo bench --bench fingerprint`; `benches/fingerprint_vs_b3sum.sh` prints the ratios
//! against the `b3sum` binary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hallmark::fingerprint::{extract, test_weights};
use hallmark::registry::Registry;
use hallmark::weights::DType;
use hallmark_testkit::zoo::{apply, export, Config, Export, Transform, ZModel};

fn b3(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path).expect("hash");
    h.finalize()
}

fn bench_extract(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zoo = dir.path().join("zoo-llama.gguf");
    std::fs::write(
        &zoo,
        export(
            &ZModel::generate(Config::llama(), 1),
            Export::Gguf(DType::Q8_0),
        )
        .expect("export"),
    )
    .expect("write");
    let mut models: Vec<(&str, PathBuf)> = vec![("zoo-llama-q8_0", zoo)];
    for (name, p) in [
        (
            "smollm2-q4_1",
            "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ("minilm-f32", "test-models/real/minilm/model.safetensors"),
    ] {
        if Path::new(p).exists() {
            models.push((name, p.into()));
        }
    }
    let mut g = c.benchmark_group("fingerprint");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    for (name, p) in &models {
        g.bench_function(format!("extract/{name}"), |b| {
            b.iter(|| black_box(extract(p, "bench").expect("extract")))
        });
        g.bench_function(format!("blake3/{name}"), |b| b.iter(|| black_box(b3(p))));
    }
    g.finish();
}

fn bench_detect(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = dir.path().join("registry");
    std::fs::create_dir_all(&reg).expect("mkdir");
    // The leaked model registered once, plus 50 independent models each registered under up to
    // 20 names: 1,000 entries whose testing costs the same as 1,000 distinct ones.
    let cfg = Config::llama();
    let mut n = 0;
    for k in 0..51u64 {
        let p = dir.path().join(format!("m{k}.safetensors"));
        std::fs::write(
            &p,
            export(
                &ZModel::generate(cfg, 100 + k),
                Export::Safetensors(DType::F16),
            )
            .expect("export"),
        )
        .expect("write");
        let fp = extract(&p, &format!("m{k}"))
            .expect("extract")
            .to_json()
            .expect("json");
        for r in 0..if k == 0 { 1 } else { 20 } {
            if n == 1000 {
                break;
            }
            n += 1;
            std::fs::write(reg.join(format!("m{k}-{r}.fp")), &fp).expect("write fp");
        }
    }
    let suspect = dir.path().join("suspect.gguf");
    let leaked = apply(&ZModel::generate(cfg, 100), Transform::Noise(0.05), 1);
    std::fs::write(
        &suspect,
        export(&leaked, Export::Gguf(DType::Q4_0)).expect("export"),
    )
    .expect("write");
    let registry = Registry::open(&reg).expect("registry");
    assert_eq!(registry.entries().len(), 1000);
    let mut g = c.benchmark_group("fingerprint");
    g.measurement_time(Duration::from_secs(10)).sample_size(10);
    g.bench_function("detect/1000-fingerprints", |b| {
        b.iter(|| black_box(test_weights(&suspect, &registry).expect("detect")))
    });
    g.finish();
}

fn bench_dequant(c: &mut Criterion) {
    use hallmark::weights::{dequant, TensorView};
    let (r, k) = (1024usize, 4096usize);
    let xs: Vec<f32> = (0..r * k).map(|i| ((i as f32) * 0.618).sin()).collect();
    let shape = [r as u64, k as u64];
    let mut g = c.benchmark_group("dequant");
    g.throughput(criterion::Throughput::Elements((r * k) as u64));
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for dt in [
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        let bytes = dequant::encode("b", dt, &xs).expect("encode");
        let v = TensorView {
            name: "b",
            dtype: dt,
            shape: &shape,
            bytes: &bytes,
        };
        g.bench_function(format!("matrix/{dt}"), |b| {
            b.iter(|| black_box(dequant::matrix(&v).expect("decode")))
        });
    }
    g.finish();
}

// No HTML/SVG plots: plotters is built here with explicitly registered fonts only (for the
// project's own plots), and criterion's plotting would find none and panic.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench_extract, bench_detect, bench_dequant
}
criterion_main!(benches);

//! Text watermark speed: cost per sampled token at several vocabulary sizes (full logits and
//! after top-k), detection throughput on token ids, and documents per second end to end.
//!
//! `cargo bench --bench textmark` (add `-- sample_step` etc. to pick a group). Times are the
//! benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so concurrent load on the machine
//! does not inflate them. `watermark_only` times the watermark's own work on a candidate set that
//! ordinary sampling has already computed; `sample_step` times whole sampler steps.
//!
//! Measured 2026-11-25 on the 2-core development machine (CPU time, load average ~10 from other
//! builds), logits = Zipf(1.1) over a shuffled vocabulary (a heavy tail, harder than a real model):
//!
//! | vocabulary | kgw, full / top-k 50 | gumbel, full / top-k 50 | plain step, full / top-k 50 |
//! |---|---|---|---|
//! | 49,152  | 0.30 µs / 0.39 µs | 40 µs / 0.73 µs  | 67 µs / 18 µs  |
//! | 128,256 | 0.33 µs / 0.40 µs | 102 µs / 0.75 µs | 176 µs / 36 µs |
//! | 262,144 | 0.36 µs / 0.36 µs | 211 µs / 0.67 µs | 358 µs / 67 µs |
//!
//! (watermark's own work per token; the plain step is temperature + top-k + softmax + draw.)
//! Detection on token ids (100 documents of 1,000 ids): kgw left-hash 27.6 M tokens/s, kgw
//! min-hash (h = 4) 18.9 M/s, gumbel (h = 4) 20.7 M/s per core. End to end with SmolLM2's
//! tokenizer: 4,900 documents/s (human fortunes, ~135 tokens each, 2 keys sharing a tokenizer).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hallmark::textmark::{
    plain_sampler, ContextRule, Detector, KeyRing, SamplingParams, SchemeParams, TokenSampler,
    TokenizerSpec, WatermarkKey,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use zeroize::Zeroizing;

/// Thread CPU time: this machine is shared by concurrent builds, and wall time would count the
/// time the benchmark spent waiting for a core.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (d, unit) = if typical < 1e3 {
            (1.0, "ns (cpu)")
        } else if typical < 1e6 {
            (1e3, "µs (cpu)")
        } else if typical < 1e9 {
            (1e6, "ms (cpu)")
        } else {
            (1e9, "s (cpu)")
        };
        values.iter_mut().for_each(|v| *v /= d);
        unit
    }
    fn scale_throughputs(&self, typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        let per_s = n * 1e9 / typical;
        let (d, unit) = if per_s < 1e3 {
            (1.0, "elem/s (cpu)")
        } else if per_s < 1e6 {
            (1e3, "Kelem/s (cpu)")
        } else {
            (1e6, "Melem/s (cpu)")
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v / d);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn key(scheme: SchemeParams, rule: ContextRule) -> WatermarkKey {
    let json = "{}";
    let spec = TokenizerSpec {
        source: "none".into(),
        vocab_size: 0,
        blake3: blake3::hash(json.as_bytes()).to_hex().to_string(),
        json: json.into(),
    };
    WatermarkKey::from_parts(Zeroizing::new([9u8; 32]), scheme, rule, spec).expect("key")
}

/// LM-like logits: a Zipf law (exponent 1.1) over a random arrangement of the vocabulary, plus
/// a little noise.
fn logits(v: usize) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(v as u64);
    let mut order: Vec<usize> = (0..v).collect();
    order.shuffle(&mut r);
    let mut l = vec![0f32; v];
    for (rank, &i) in order.iter().enumerate() {
        l[i] = (-1.1 * ((rank + 1) as f64).ln()) as f32 + r.gen_range(-0.05f32..0.05);
    }
    l
}

fn sample_step(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("sample_step");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let kgw = key(
        SchemeParams::Kgw {
            gamma: 0.25,
            delta: 2.0,
        },
        ContextRule::Left(1),
    );
    let gumbel = key(SchemeParams::Gumbel, ContextRule::Left(4));
    for v in [49_152usize, 128_256, 262_144] {
        let l = logits(v);
        for (filter, params) in [
            ("full", SamplingParams::default()),
            (
                "top_k50",
                SamplingParams {
                    top_k: Some(50),
                    ..Default::default()
                },
            ),
        ] {
            let samplers: [(&str, Box<dyn TokenSampler>); 3] = [
                ("plain", plain_sampler(params, 1)),
                ("kgw", kgw.sampler(params, 1)),
                ("gumbel", gumbel.sampler(params, 1)),
            ];
            for (name, mut s) in samplers {
                let mut ctx = [11u32, 12, 13, 0];
                g.bench_with_input(
                    BenchmarkId::new(format!("{name}/{filter}"), v),
                    &l,
                    |b, l| {
                        b.iter(|| {
                            // A new context every step, as in generation (no repeated contexts).
                            ctx[3] = ctx[3].wrapping_add(1);
                            black_box(s.next_token(&ctx, l))
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// The watermark's own work per step, on a candidate set already filled by the ordinary
/// sampler: the context seed (one SipHash) plus the scheme's choice.
fn watermark_only(c: &mut Criterion<CpuTime>) {
    use hallmark::textmark::sampling::Candidates;
    let mut g = c.benchmark_group("watermark_only");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let keys = [
        (
            "kgw",
            key(
                SchemeParams::Kgw {
                    gamma: 0.25,
                    delta: 2.0,
                },
                ContextRule::Left(1),
            ),
        ),
        ("gumbel", key(SchemeParams::Gumbel, ContextRule::Left(4))),
    ];
    for v in [49_152usize, 128_256, 262_144] {
        let l = logits(v);
        for (filter, params) in [
            ("full", SamplingParams::default()),
            (
                "top_k50",
                SamplingParams {
                    top_k: Some(50),
                    ..Default::default()
                },
            ),
        ] {
            let mut cands = Candidates::new();
            cands.fill(&l, &params);
            for (name, k) in &keys {
                let prf = k.prf();
                let scheme = k.scheme_impl();
                let mut rng = StdRng::seed_from_u64(1);
                let mut ctx = [11u32, 12, 13, 0];
                g.bench_function(BenchmarkId::new(format!("{name}/{filter}"), v), |b| {
                    b.iter(|| {
                        ctx[3] = ctx[3].wrapping_add(1);
                        let seed = prf.seed(&ctx);
                        black_box(scheme.choose(seed, &l, &mut cands, &params, &mut rng))
                    })
                });
            }
        }
    }
    g.finish();
}

fn detect_ids(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("detect_ids");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    // 100 documents of 1,000 token ids each.
    let mut r = StdRng::seed_from_u64(3);
    let docs: Vec<Vec<u32>> = (0..100)
        .map(|_| (0..1000).map(|_| r.gen_range(0..49_152)).collect())
        .collect();
    g.throughput(Throughput::Elements(100_000));
    for (name, k) in [
        (
            "kgw_left1",
            key(
                SchemeParams::Kgw {
                    gamma: 0.25,
                    delta: 2.0,
                },
                ContextRule::Left(1),
            ),
        ),
        (
            "kgw_min4",
            key(
                SchemeParams::Kgw {
                    gamma: 0.25,
                    delta: 2.0,
                },
                ContextRule::Min(4),
            ),
        ),
        (
            "gumbel_left4",
            key(SchemeParams::Gumbel, ContextRule::Left(4)),
        ),
    ] {
        let d = Detector::new(&k);
        g.bench_function(name, |b| {
            b.iter(|| {
                for ids in &docs {
                    black_box(d.detect(black_box(ids)));
                }
            })
        });
    }
    g.finish();
}

fn detect_documents(c: &mut Criterion<CpuTime>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gguf = root.join("test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let corpus = root.join("test-models/human/fortunes.jsonl");
    if !gguf.exists() {
        eprintln!("detect_documents skipped: run test-models/fetch.sh");
        return;
    }
    let docs: Vec<String> = std::fs::read_to_string(&corpus)
        .expect("corpus")
        .lines()
        .take(500)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    let tok = hallmark::tokenizer::Tokenizer::from_path(&gguf).expect("tokenizer");
    let spec = TokenizerSpec::from_tokenizer(&tok, "smollm2").expect("spec");
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, scheme) in [
        SchemeParams::Kgw {
            gamma: 0.25,
            delta: 2.0,
        },
        SchemeParams::Gumbel,
    ]
    .into_iter()
    .enumerate()
    {
        let k = WatermarkKey::generate(scheme, ContextRule::Left(1), spec.clone()).expect("key");
        k.save(&dir.path().join(format!("k{i}.wmkey")))
            .expect("save");
    }
    let reg = hallmark::registry::Registry::open(dir.path()).expect("registry");
    let ring = KeyRing::load(&reg).expect("ring");
    let mut g = c.benchmark_group("detect_documents");
    g.measurement_time(Duration::from_secs(5)).sample_size(10);
    g.throughput(Throughput::Elements(docs.len() as u64));
    g.bench_function("fortunes_500_docs_2_keys", |b| {
        b.iter(|| {
            for d in &docs {
                black_box(ring.test(d).expect("test"));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime).without_plots();
    targets = sample_step, watermark_only, detect_ids, detect_documents
}
criterion_main!(benches);

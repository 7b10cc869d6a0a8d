//! The Python package (python/) driven from its own test files (tests/python/*.py) with pytest,
//! in the virtualenv that test-models/fetch.sh builds (test-models/cache/py): the package
//! installed from this checkout, pyspark, pyarrow, llama-cpp-python, HF transformers and torch.
//!
//! A missing environment or a package built from other sources fails the test with the command
//! that fixes it: the Python tests are part of the suite, never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtualenv's interpreter, after checking that the installed package was built from
/// exactly this checkout's sources.
fn python() -> PathBuf {
    let py = root().join("test-models/cache/py/bin/python");
    assert!(
        py.is_file(),
        "{} not found: run test-models/fetch.sh (it builds the Python test environment)",
        py.display()
    );
    let out = Command::new(root().join("python/source-digest.sh"))
        .output()
        .expect("run python/source-digest.sh");
    assert!(out.status.success(), "python/source-digest.sh failed");
    let now = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stamp = root().join("test-models/cache/py/hallmark-source-digest");
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    assert_eq!(
        installed.trim(),
        now,
        "the hallmark Python package in test-models/cache/py was built from other sources: \
         run test-models/fetch.sh to rebuild it"
    );
    py
}

/// Run one pytest file; its output is shown when it fails.
fn pytest(file: &str, filter: Option<&str>) {
    let py = python();
    let mut cmd = Command::new(&py);
    cmd.current_dir(root())
        .args(["-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"])
        .arg(Path::new("tests/python").join(file))
        .env("HALLMARK_BIN", env!("CARGO_BIN_EXE_hallmark"))
        .env("HALLMARK_ROOT", root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("HALLMARK_REGISTRY");
    if let Some(f) = filter {
        cmd.args(["-k", f]);
    }
    let out = cmd.output().expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Figures the tests measure (lines starting `FIGURE`) are shown with --nocapture.
    for line in text.lines().filter(|l| l.contains("FIGURE ")) {
        println!("{line}");
    }
    assert!(out.status.success(), "pytest {file} failed:\n{text}");
}

#[test]
fn python_api_detect_and_errors() {
    pytest("test_api.py", None);
}

#[test]
fn python_logits_processor() {
    pytest("test_processor.py", None);
}

#[test]
fn python_spark_local2_equals_cli() {
    pytest("test_spark.py", None);
}

#[test]
fn python_llama_cpp_generation_is_detected() {
    pytest("test_llama_cpp.py", None);
}

#[test]
fn python_transformers_generation_is_detected() {
    pytest("test_transformers.py", None);
}

#[test]
fn parquet_detect_equals_jsonl() {
    pytest("test_parquet.py", None);
}

#[test]
fn python_readme_example_runs() {
    pytest("test_readme.py", None);
}

#[test]
fn python_sign_and_verify_equal_cli() {
    pytest("test_sign.py", None);
}

/// The llama.cpp build flags test-models/fetch.sh uses, for the three x86-64 CPU kinds the
/// project meets: never -march=native, never AMX, AVX-512 only where the CPU has it, and a clear
/// refusal (exit 2) on a CPU below x86-64-v3.
#[test]
#[cfg(target_arch = "x86_64")]
fn llama_cpp_build_flags_fit_every_cpu_kind() {
    let base = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c fma bmi1 bmi2 avx2";
    let avx512 = "avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16";
    let amx = "amx_bf16 amx_tile amx_int8 avx_vnni avx512_fp16";
    let cases = [
        ("avx2-only", base.to_string(), Some(false)),
        ("avx-512", format!("{base} {avx512}"), Some(true)),
        (
            "sapphire-rapids-amx",
            format!("{base} {avx512} {amx}"),
            Some(true),
        ),
        ("avx-only", "fpu sse sse2 sse4_2 avx".to_string(), None),
    ];
    let dir = std::env::temp_dir().join(format!("hallmark-cpuinfo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, flags, want_avx512) in cases {
        let info = dir.join(name);
        std::fs::write(&info, format!("processor\t: 0\nflags\t\t: {flags}\n")).unwrap();
        let out = Command::new(root().join("test-models/llama-cmake-args.sh"))
            .env("HALLMARK_CPUINFO", &info)
            .output()
            .expect("run test-models/llama-cmake-args.sh");
        let args = String::from_utf8_lossy(&out.stdout).to_string();
        match want_avx512 {
            None => {
                assert_eq!(out.status.code(), Some(2), "{name}: {args}");
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains("lacks avx2"),
                    "{name}"
                );
            }
            Some(avx512) => {
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                for want in [
                    "-DGGML_NATIVE=OFF",
                    "-DGGML_AVX2=ON",
                    "-DGGML_FMA=ON",
                    "-DGGML_F16C=ON",
                    "-DGGML_AMX_TILE=OFF",
                    "-DGGML_AMX_INT8=OFF",
                    "-DGGML_AMX_BF16=OFF",
                ] {
                    assert!(
                        args.split_whitespace().any(|a| a == want),
                        "{name}: {want} missing in {args}"
                    );
                }
                let on = if avx512 {
                    "-DGGML_AVX512=ON"
                } else {
                    "-DGGML_AVX512=OFF"
                };
                assert!(args.split_whitespace().any(|a| a == on), "{name}: {args}");
                assert!(
                    !args.contains("AMX_TILE=ON") && !args.contains("AMX_INT8=ON"),
                    "{name}"
                );
            }
        }
    }
    // No flags to read: a message naming the file, not a silent exit.
    let out = Command::new(root().join("test-models/llama-cmake-args.sh"))
        .env("HALLMARK_CPUINFO", dir.join("missing"))
        .output()
        .expect("run test-models/llama-cmake-args.sh");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the CPU's flags"));
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Helpers that run the CLI, shared by the signing-area modules (signing, shards, pki).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `hallmark` binary under test.
pub const HALLMARK: &str = env!("CARGO_BIN_EXE_hallmark");
/// The deterministic test-model generator.
pub const GEN: &str = env!("CARGO_BIN_EXE_hallmark-testmodels");

/// Run `bin` with `args`; its output.
pub fn run(bin: impl AsRef<OsStr>, args: &[&dyn AsRef<OsStr>]) -> Output {
    Command::new(bin)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("spawn")
}

/// Run `hallmark` with `args`.
pub fn hm(args: &[&dyn AsRef<OsStr>]) -> Output {
    run(HALLMARK, args)
}

/// The exit code (-1 for a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Standard output, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_code(o: &Output, want: i32) {
    assert_eq!(
        code(o),
        want,
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// A scratch directory with keys and generated models.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn keys(&self, prefix: &str, alg: &str) -> (PathBuf, PathBuf) {
        let out = self.path(prefix);
        let o = hm(&[&"keygen", &"--out", &out, &"--alg", &alg]);
        assert_code(&o, 0);
        (
            self.path(&format!("{prefix}.key")),
            self.path(&format!("{prefix}.pub")),
        )
    }
    pub fn model(&self, kind: &str, name: &str, seed: u64) -> PathBuf {
        let out = self.path(name);
        let o = run(GEN, &[&kind, &out, &"--seed", &seed.to_string()]);
        assert_code(&o, 0);
        out
    }
}

/// The reference OMS implementation, model_signing 1.1.1, in the venv test-models/fetch.sh
/// builds; a missing venv fails the test (interop is not optional).
pub fn model_signing() -> PathBuf {
    let cli =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test-models/cache/venv/bin/model_signing");
    assert!(
        cli.exists(),
        "model_signing interop: {} not found; run test-models/fetch.sh first",
        cli.display()
    );
    cli
}

//! `hallmark._native`: the PyO3 layer under the `hallmark` Python package.
//!
//! Everything here is a thin adapter over the `hallmark` library, the same code the CLI runs:
//! detection ([`hallmark::detect`]), the watermarking samplers ([`hallmark::textmark`]) and
//! signing ([`hallmark::signing`]). Results cross the boundary as the CLI's own JSON (parsed on
//! the Python side), so a verdict or a p-value cannot differ between the two front ends. Errors
//! become `hallmark.Error` subclasses with the CLI's message; a panic never crosses the FFI
//! boundary (detection catches it, and PyO3 turns any other into a Python exception).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use hallmark::detect::{DetectError, Report};
use hallmark::registry::Registry as LibRegistry;
use hallmark::textmark::strided;
use hallmark::textmark::{SamplingParams, TokenSampler, WatermarkKey as LibKey};

create_exception!(
    _native,
    Error,
    PyException,
    "Every error hallmark raises; the message is the CLI's."
);
create_exception!(
    _native,
    RegistryError,
    Error,
    "A registry directory or entry that cannot be used."
);
create_exception!(
    _native,
    InputError,
    Error,
    "A suspect, key or argument that cannot be used (the CLI's exit code 2)."
);
create_exception!(
    _native,
    SignatureError,
    Error,
    "A signature bundle or signing key that cannot be used."
);

fn message(e: &(dyn std::error::Error + 'static)) -> String {
    hallmark::error::message(e)
}

fn detect_err(e: DetectError) -> PyErr {
    let msg = message(&e);
    match e {
        DetectError::Registry(_) => RegistryError::new_err(msg),
        DetectError::Signing(_) => SignatureError::new_err(msg),
        _ => InputError::new_err(msg),
    }
}

/// The JSON object `detect --json` prints for one suspect.
fn report_json(r: &Report) -> PyResult<String> {
    serde_json::to_string(r).map_err(|e| Error::new_err(format!("internal error: {e}")))
}

/// A registry directory of signer keys, watermark keys and fingerprints (the CLI's `--registry`).
#[pyclass(module = "hallmark._native", frozen)]
struct Registry {
    inner: Arc<LibRegistry>,
}

#[pymethods]
impl Registry {
    /// Open a registry: `path`, else `$HALLMARK_REGISTRY`, else `./keys` (the CLI's rules).
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        let dir = path.unwrap_or_else(hallmark::registry::default_dir);
        // Every entry is read and parsed once, here, with the GIL released; detection uses
        // the parsed entries and never re-reads the files.
        let reg = py.detach(|| LibRegistry::open(&dir)).map_err(|e| {
            RegistryError::new_err(format!(
                "opening registry {}: {}",
                dir.display(),
                message(&e)
            ))
        })?;
        Ok(Self {
            inner: Arc::new(reg.validate()),
        })
    }

    /// The registry directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// `(name, kind, path)` of every registered entry.
    fn entries(&self) -> Vec<(String, String, PathBuf)> {
        self.inner
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.kind.label().to_string(), e.path.clone()))
            .collect()
    }

    /// Test texts in parallel with the GIL released; one `detect --json` object (as a JSON
    /// string) per text, in order. `inputs` names each text in its report.
    fn detect_texts_json(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        inputs: Vec<String>,
        alpha: f64,
    ) -> PyResult<Vec<String>> {
        hallmark::detect::check_alpha(alpha).map_err(detect_err)?;
        if texts.len() != inputs.len() {
            return Err(PyValueError::new_err("texts and inputs differ in length"));
        }
        let reg = self.inner.clone();
        let items: Vec<(String, String)> = inputs.into_iter().zip(texts).collect();
        let results = py.detach(move || hallmark::detect::detect_texts(&items, &reg, alpha));
        results
            .into_iter()
            .map(|r| match r {
                Ok(r) => report_json(&r),
                Err(e) => Err(detect_err(e)),
            })
            .collect()
    }

    /// Test a weight file or directory (or a text file) with the GIL released; the
    /// `detect --json` object as a JSON string.
    fn detect_path_json(&self, py: Python<'_>, path: PathBuf, alpha: f64) -> PyResult<String> {
        let reg = self.inner.clone();
        let r = py
            .detach(move || hallmark::detect::detect_path(&path, &reg, alpha))
            .map_err(detect_err)?;
        report_json(&r)
    }

    /// The same, requiring weights: a text file is an error.
    fn detect_weights_json(&self, py: Python<'_>, path: PathBuf, alpha: f64) -> PyResult<String> {
        let reg = self.inner.clone();
        let r = py
            .detach(move || {
                if !hallmark::detect::is_weights(&path)? {
                    return Err(DetectError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "not a weight file or directory (safetensors, GGUF)",
                        ),
                    });
                }
                hallmark::detect::detect_weights(&path, &reg, alpha)
            })
            .map_err(detect_err)?;
        report_json(&r)
    }
}

/// A secret text watermark key (`hallmark wm-key`).
#[pyclass(module = "hallmark._native", frozen)]
struct WatermarkKey {
    inner: Arc<LibKey>,
    path: PathBuf,
    /// The key's tokenizer, loaded on first use.
    tokenizer: std::sync::OnceLock<Arc<hallmark::tokenizer::Tokenizer>>,
}

impl WatermarkKey {
    fn tokenizer(&self) -> PyResult<Arc<hallmark::tokenizer::Tokenizer>> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t.clone());
        }
        let t = Arc::new(
            self.inner
                .tokenizer()
                .load()
                .map_err(|e| InputError::new_err(message(&e)))?,
        );
        Ok(self.tokenizer.get_or_init(|| t).clone())
    }
}

#[pymethods]
impl WatermarkKey {
    /// Read and validate a key file (through the library's input layer: a FIFO or device is
    /// refused without blocking, the size is capped; the GIL is released while reading).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let key = py
            .detach(|| LibKey::load(&path))
            .map_err(|e| InputError::new_err(message(&e)))?;
        Ok(Self {
            inner: Arc::new(key),
            path,
            tokenizer: std::sync::OnceLock::new(),
        })
    }

    /// The key file this key was read from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The scheme: `kgw` or `gumbel`.
    #[getter]
    fn scheme(&self) -> &'static str {
        self.inner.scheme().name()
    }

    /// The context rule, e.g. `left:1`.
    #[getter]
    fn context(&self) -> String {
        let r = self.inner.rule();
        format!("{}:{}", r.name(), r.width())
    }

    /// Where the key's tokenizer came from when the key was made.
    #[getter]
    fn tokenizer_source(&self) -> String {
        self.inner.tokenizer().source.clone()
    }

    /// Encode text with the key's own tokenizer (the ids detection scores).
    fn encode(&self, py: Python<'_>, text: String) -> PyResult<Vec<u32>> {
        let tok = self.tokenizer()?;
        py.detach(move || tok.encode(&text))
            .map_err(|e| InputError::new_err(message(&e)))
    }

    /// Decode ids with the key's own tokenizer (special tokens skipped).
    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let tok = self.tokenizer()?;
        py.detach(move || tok.decode(&ids))
            .map_err(|e| InputError::new_err(message(&e)))
    }

    fn __repr__(&self) -> String {
        format!(
            "WatermarkKey(scheme={:?}, context={:?}, path={:?})",
            self.scheme(),
            self.context(),
            self.path.display().to_string()
        )
    }
}

/// One watermarking sampler per sequence of a batch, continued while each row's context grows
/// by one token per call (a new generation is detected and starts fresh samplers).
struct Row {
    sampler: Box<dyn TokenSampler>,
    context: Vec<u32>,
}

/// The per-generation state of a [`Sampler`].
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    sequences: u64,
}

/// The sampler behind `WatermarkKey.logits_processor`: picks each row's next token exactly as
/// `hallmark generate` would from the same logits.
#[pyclass(module = "hallmark._native", frozen)]
struct Sampler {
    key: Arc<LibKey>,
    params: SamplingParams,
    seed: Option<u64>,
    // A lock, not a borrow flag: a processor shared across Python threads serialises instead
    // of raising.
    state: Mutex<Rows>,
    /// Contiguous copy of strided logits (see `force`).
    gather: Mutex<Vec<f32>>,
}

impl Sampler {
    fn fresh_seed(seed: Option<u64>, sequences: u64) -> u64 {
        match seed {
            // A fixed seed: reproducible, and distinct per sequence.
            Some(s) => s ^ sequences.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => rand_core::RngCore::next_u64(&mut rand_core::OsRng),
        }
    }

    fn choose_rows(&self, ids: &[Vec<u32>], logits: &[&[f32]]) -> Vec<u32> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let continues = st.rows.len() == ids.len()
            && st.rows.iter().zip(ids).all(|(r, c)| {
                c.len() == r.context.len() + 1 && c[..r.context.len()] == r.context[..]
            });
        if !continues {
            let mut rows = Vec::with_capacity(ids.len());
            for _ in ids {
                st.sequences += 1;
                let seed = Self::fresh_seed(self.seed, st.sequences);
                rows.push(Row {
                    sampler: self.key.sampler(self.params, seed),
                    context: Vec::new(),
                });
            }
            st.rows = rows;
        }
        st.rows
            .iter_mut()
            .zip(ids.iter().zip(logits))
            .map(|(row, (ctx, l))| {
                let t = row.sampler.next_token(ctx, l);
                row.context.clear();
                row.context.extend_from_slice(ctx);
                t
            })
            .collect()
    }
}

fn to_ids<T: Copy + TryInto<u32>>(row: &[T]) -> PyResult<Vec<u32>> {
    row.iter()
        .map(|&v| {
            v.try_into()
                .map_err(|_| PyValueError::new_err("token ids must be in 0..2^32"))
        })
        .collect()
}

/// A 1-D int32 (llama-cpp-python) or int64 (numpy's default) array of token ids.
fn ids_1d(input_ids: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    if let Ok(a) = input_ids.extract::<PyReadonlyArray1<'_, i32>>() {
        return match a.as_slice() {
            Ok(s) => to_ids(s),
            Err(_) => to_ids(&a.as_array().to_vec()),
        };
    }
    let a = input_ids.extract::<PyReadonlyArray1<'_, i64>>()?;
    match a.as_slice() {
        Ok(s) => to_ids(s),
        Err(_) => to_ids(&a.as_array().to_vec()),
    }
}

fn check_logits(l: &[f32]) -> PyResult<()> {
    if l.is_empty() {
        return Err(PyValueError::new_err("empty logits"));
    }
    Ok(())
}

#[pymethods]
impl Sampler {
    /// `temperature` 0 is greedy; `top_k`/`top_p` filter before the watermark acts; `seed`
    /// makes the sampler's own randomness reproducible (default: fresh per sequence).
    #[new]
    #[pyo3(signature = (key, temperature=1.0, top_k=None, top_p=None, seed=None))]
    fn new(
        key: &WatermarkKey,
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(InputError::new_err(format!(
                "temperature must be a finite number >= 0, got {temperature}"
            )));
        }
        if top_k == Some(0) {
            return Err(InputError::new_err("top_k must be at least 1"));
        }
        if let Some(p) = top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(InputError::new_err(format!(
                    "top_p must be in (0, 1], got {p}"
                )));
            }
        }
        Ok(Self {
            key: key.inner.clone(),
            params: SamplingParams {
                temperature,
                top_k,
                top_p,
            },
            seed,
            state: Mutex::new(Rows::default()),
            gather: Mutex::new(Vec::new()),
        })
    }

    /// Forget every sequence: the next call starts fresh samplers.
    fn reset(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rows
            .clear();
    }

    /// The next token of each row: `input_ids` (batch, seq) int64, `scores` (batch, vocab)
    /// float32, C-contiguous. The GIL is released while sampling.
    fn choose_batch(
        &self,
        py: Python<'_>,
        input_ids: PyReadonlyArray2<'_, i64>,
        scores: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Vec<u32>> {
        let ids = input_ids.as_array();
        let sc = scores.as_array();
        if ids.nrows() != sc.nrows() {
            return Err(PyValueError::new_err(format!(
                "input_ids has {} rows but scores has {}",
                ids.nrows(),
                sc.nrows()
            )));
        }
        let ctx: Vec<Vec<u32>> = ids
            .rows()
            .into_iter()
            .map(|r| to_ids(r.as_slice().unwrap_or(&r.to_vec())))
            .collect::<PyResult<_>>()?;
        let flat = scores
            .as_slice()
            .map_err(|_| PyValueError::new_err("scores must be C-contiguous float32"))?;
        let vocab = sc.ncols();
        check_logits(&flat[..vocab.min(flat.len())])?;
        let rows: Vec<&[f32]> = flat.chunks_exact(vocab).collect();
        Ok(py.detach(|| self.choose_rows(&ctx, &rows)))
    }

    /// The next token of one sequence, forced in place: `scores` (1-D float32, writable, any
    /// stride) becomes -inf everywhere but 0 at the chosen token, which is returned. One call
    /// per step and no intermediate arrays: the llama-cpp-python path, whose `scores` is the
    /// `logit` field of its candidate records (a stride of 12 bytes).
    fn force(
        &self,
        py: Python<'_>,
        input_ids: &Bound<'_, PyAny>,
        mut scores: PyReadwriteArray1<'_, f32>,
    ) -> PyResult<u32> {
        let ctx = ids_1d(input_ids)?;
        let mut view = scores.as_array_mut();
        let n = view.len();
        if n == 0 {
            return Err(PyValueError::new_err("empty logits"));
        }
        let stride = view.strides()[0];
        let ptr = view.as_mut_ptr();
        let span = if stride >= 1 && ptr.is_aligned() {
            // SAFETY: a numpy array with a positive stride lies in one block of its base's
            // memory from its first element to its last, so these (n - 1) * stride + 1 aligned
            // floats are valid; `scores` is borrowed read-write for this call, and `view` is not
            // used when `span` is. The floats between the view's own (the records' other
            // fields) are read, and written back unchanged by `strided::fill`.
            Some(unsafe { std::slice::from_raw_parts_mut(ptr, (n - 1) * stride as usize + 1) })
        } else {
            None
        };
        Ok(py.detach(move || match span {
            Some(span) => {
                let stride = stride as usize;
                let tok = if stride == 1 {
                    self.choose_rows(&[ctx], &[&*span])[0]
                } else {
                    // Gathered into a buffer kept between steps (a fresh 192 KiB allocation
                    // per step costs more than the gather).
                    let mut buf = self.gather.lock().unwrap_or_else(|p| p.into_inner());
                    strided::gather(span, stride, n, &mut buf);
                    self.choose_rows(&[ctx], &[&buf[..]])[0]
                };
                strided::fill(span, stride, n, f32::NEG_INFINITY);
                if (tok as usize) < n {
                    span[tok as usize * stride] = 0.0;
                }
                tok
            }
            None => {
                // Negative strides or unaligned views: the general (slower) ndarray walk.
                let buf = view.to_vec();
                let tok = self.choose_rows(&[ctx], &[&buf[..]])[0];
                view.fill(f32::NEG_INFINITY);
                if let Some(l) = view.get_mut(tok as usize) {
                    *l = 0.0;
                }
                tok
            }
        }))
    }

    /// The next token of one sequence: `input_ids` 1-D (int32 or int64), `scores` 1-D float32.
    fn choose(
        &self,
        py: Python<'_>,
        input_ids: &Bound<'_, PyAny>,
        scores: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<u32> {
        let ctx = ids_1d(input_ids)?;
        let logits = scores
            .as_slice()
            .map_err(|_| PyValueError::new_err("scores must be contiguous float32"))?;
        check_logits(logits)?;
        let out = py.detach(|| self.choose_rows(&[ctx], &[logits]));
        Ok(out[0])
    }
}

fn sig_err(e: &(dyn std::error::Error + 'static)) -> PyErr {
    SignatureError::new_err(message(e))
}

/// Read a PEM file of at most 64 KiB (keys), naming it in errors as the CLI does.
fn read_pem(path: &std::path::Path) -> PyResult<String> {
    let bytes = hallmark::fsutil::read_capped(path, 64 * 1024, hallmark::fsutil::Follow::Yes)
        .map_err(|e| InputError::new_err(format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| InputError::new_err(format!("{}: not UTF-8 text", path.display())))
}

/// Sign `model` (a file or directory) with the private key at `key`; writes the OMS bundle
/// atomically to `sig` (default: `MODEL/model.sig` or `MODEL.sig`). The CLI's `sign`, returned
/// as a JSON object string.
#[pyfunction]
#[pyo3(signature = (model, key, sig=None, hash=None, shard_size=None, ignore=Vec::new(), allow_symlinks=false))]
#[allow(clippy::too_many_arguments)]
fn sign_json(
    py: Python<'_>,
    model: PathBuf,
    key: PathBuf,
    sig: Option<PathBuf>,
    hash: Option<String>,
    shard_size: Option<u64>,
    ignore: Vec<String>,
    allow_symlinks: bool,
) -> PyResult<String> {
    use hallmark::signing::sign::{default_hash_type, model_signing_cli_gaps};
    use hallmark::signing::{HashType, Method, SignOptions, SigningKey};
    let pem = zeroize::Zeroizing::new(read_pem(&key)?);
    let sk = SigningKey::from_pem(&pem)
        .map_err(|e| SignatureError::new_err(format!("{}: {}", key.display(), message(&e))))?;
    let hash_type = match hash.as_deref() {
        None => default_hash_type(sk.alg(), shard_size.is_some()),
        Some(h) => HashType::from_name(h).ok_or_else(|| {
            InputError::new_err(format!("hash must be blake3 or sha256, got {h:?}"))
        })?,
    };
    if shard_size.is_some() && hash_type == HashType::Blake3 {
        return Err(InputError::new_err(
            "shard_size with hash blake3: model_signing cannot verify BLAKE3 shard bundles; \
             use sha256 (the default with shard_size)",
        ));
    }
    let sig = sig.unwrap_or_else(|| hallmark::signing::sign::default_sig_path(&model));
    let opts = SignOptions {
        hash_type,
        allow_symlinks,
        ignore,
        sig_path: Some(sig.clone()),
        shard_size,
        ..SignOptions::default()
    };
    py.detach(move || {
        let signed = hallmark::signing::sign_model_full(&model, &sk, &opts, &|_| {})
            .map_err(|e| sig_err(&e))?;
        let json = signed.bundle.to_json();
        hallmark::fsutil::write_atomic(&sig, &json, hallmark::fsutil::WriteMode::Public)
            .map_err(|e| InputError::new_err(format!("writing {}: {e}", sig.display())))?;
        let st = hallmark::signing::statement::Statement::from_payload(&signed.bundle.payload)
            .map_err(|e| sig_err(&e))?;
        let tensors: usize = st
            .tensors
            .as_ref()
            .map(|m| m.files.iter().map(|f| f.tensors.len()).sum())
            .unwrap_or(0);
        let method = match shard_size {
            Some(shard_size) => Method::Shards { shard_size },
            None => Method::Files,
        };
        let v = serde_json::json!({
            "model": model,
            "signature": sig,
            "files": signed.hashed.0 + signed.reused.0,
            "resources": st.resources.len(),
            "tensors": tensors,
            "hash_type": hash_type.name(),
            "method": method.name(),
            "alg": sk.alg().name(),
            "key_hint": sk.verifying_key().hint(),
            "model_signing_cli_gaps": model_signing_cli_gaps(sk.alg(), hash_type, method),
        });
        Ok(v.to_string())
    })
}

/// Verify `model` against its bundle with the public key at `pub`: the object
/// `hallmark verify --json` prints (a JSON string). A signature that is not valid for the key
/// is `{"valid": false, "error": ...}`; an unusable input raises. `ignore` are paths inside the
/// model the verifier leaves out (`verify --ignore`).
#[pyfunction]
#[pyo3(signature = (model, r#pub, sig=None, allow_ignored_weights=false, ignore=Vec::new()))]
fn verify_json(
    py: Python<'_>,
    model: PathBuf,
    r#pub: PathBuf,
    sig: Option<PathBuf>,
    allow_ignored_weights: bool,
    ignore: Vec<PathBuf>,
) -> PyResult<String> {
    use hallmark::signing::VerifyingKey;
    if model.symlink_metadata().is_err() {
        return Err(InputError::new_err(format!(
            "{}: no such file or directory",
            model.display()
        )));
    }
    let pem = read_pem(&r#pub)?;
    let key = VerifyingKey::from_pem(&pem)
        .map_err(|e| SignatureError::new_err(format!("{}: {}", r#pub.display(), message(&e))))?;
    let sig = sig.unwrap_or_else(|| hallmark::signing::sign::default_sig_path(&model));
    let bundle = hallmark::fsutil::read_capped(
        &sig,
        hallmark::signing::bundle::MAX_BUNDLE_LEN,
        hallmark::fsutil::Follow::Yes,
    )
    .map_err(|e| {
        InputError::new_err(format!(
            "{}: {e} (sign the model first, or name the bundle with sig=)",
            sig.display()
        ))
    })?;
    py.detach(move || {
        let verified = match hallmark::signing::verify_bundle(&bundle, &key) {
            Ok(v) => v,
            Err(e) if e.is_invalid_signature() => {
                let v = serde_json::json!({"model": model, "signature": sig, "valid": false,
                    "error": e.to_string()});
                return Ok(v.to_string());
            }
            Err(e) => return Err(sig_err(&e)),
        };
        let ignores = hallmark::signing::model::relative_ignores(&model, &ignore)
            .map_err(|e| InputError::new_err(message(&e)))?;
        let report = hallmark::signing::check_model_ignoring(
            &model,
            &verified,
            Some(&sig),
            &ignores,
            &|_| {},
        )
        .map_err(|e| sig_err(&e))?;
        Ok(hallmark::signing::report::verify_json(
            &model,
            &sig,
            &verified,
            &report,
            allow_ignored_weights,
        )
        .to_string())
    })
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("RegistryError", py.get_type::<RegistryError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("SignatureError", py.get_type::<SignatureError>())?;
    m.add_class::<Registry>()?;
    m.add_class::<WatermarkKey>()?;
    m.add_class::<Sampler>()?;
    m.add_function(wrap_pyfunction!(sign_json, m)?)?;
    m.add_function(wrap_pyfunction!(verify_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

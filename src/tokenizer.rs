//! Tokenizers for the text watermark: a Hugging Face `tokenizer.json`, or the vocabulary and
//! merges embedded in a GGUF file, both served by the `tokenizers` crate.
//!
//! A GGUF file with `tokenizer.ggml.model = "gpt2"` (byte-level BPE, as llama.cpp writes for
//! SmolLM, Llama 3, Qwen 2, GPT-2, ...) is rebuilt as a `tokenizers` BPE with the byte-level
//! pre-tokenizer and decoder, the split regex chosen by `tokenizer.ggml.pre` the way llama.cpp
//! chooses it, and the control / user-defined tokens as added tokens. The result can be written
//! out as `tokenizer.json` text ([`Tokenizer::to_json`]), which is how watermark keys carry their
//! tokenizer so that detection never needs the model file.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::weights::{MetaValue, ParsedFile};

/// Errors from loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weight file that is not a readable GGUF.
    #[error("{0}")]
    Format(#[from] crate::FormatError),
    /// The GGUF metadata does not describe a tokenizer hallmark can rebuild.
    #[error("GGUF tokenizer: {0}")]
    Gguf(String),
    /// Malformed `tokenizer.json` text.
    #[error("tokenizer.json: {0}")]
    Json(String),
    /// Encoding or decoding failed inside the `tokenizers` crate.
    #[error("tokenizer: {0}")]
    Tokenize(String),
    /// The `tokenizers` crate panicked (e.g. a pathological split regex hit Oniguruma's retry
    /// limit). Tokenizers embedded in keys are untrusted input, so a panic is caught at this
    /// boundary and becomes an error of the one tokenizer involved.
    #[error("tokenizer failed: {0}")]
    Panicked(String),
    /// Tokenising one text took more than its work budget (see [`budget`]): the tokenizer's
    /// split regex backtracks too much on this text.
    #[error(
        "tokenizer over its work budget ({ms} ms for {bytes} bytes of text): its split regex \
         backtracks too much on this text"
    )]
    OverBudget {
        /// The budget that ran out, in milliseconds.
        ms: u64,
        /// Length of the text.
        bytes: usize,
    },
}

/// The work budget for tokenizers, whose split regexes come from keys and are untrusted.
///
/// Oniguruma (the regex engine of the `tokenizers` crate) backtracks; a crafted regex can cost
/// exponential time on some texts while staying under Oniguruma's per-match retry limit. Two
/// bounds apply:
///
/// 1. every regex search is limited to [`RETRIES_PER_SEARCH`] backtracking steps (Oniguruma's
///    own limit, set process-wide; by default a search has none);
/// 2. tokenising one text has a wall-clock budget ([`budget_for`]). A watchdog thread, at the
///    deadline, lowers the search limit to one step, so the next regex search of the overdue
///    tokenization fails at once; the failure (a panic inside `tokenizers`) is caught and
///    becomes [`TokenizerError::OverBudget`] for that tokenizer and text alone.
///
/// The limit is process-wide, so tokenizations run one at a time (the rest of detection,
/// scoring included, still runs in parallel).
pub mod budget {
    use std::sync::{Condvar, Mutex, MutexGuard, Once};
    use std::time::{Duration, Instant};

    /// Backtracking steps Oniguruma may take in one regex search (ordinary split regexes take
    /// a few per token).
    pub const RETRIES_PER_SEARCH: u64 = 1_000_000;

    /// The wall-clock budget for tokenising `len` bytes: 1 s, plus 4 s per MiB.
    pub fn budget_for(len: usize) -> Duration {
        Duration::from_millis(1000 + (len as u64).saturating_mul(4000) / (1 << 20))
    }

    extern "C" {
        // Oniguruma's process-wide limits (oniguruma.h), linked through `onig_sys`.
        fn onig_set_retry_limit_in_search(n: std::os::raw::c_ulong) -> std::os::raw::c_int;
        fn onig_set_retry_limit_in_match(n: std::os::raw::c_ulong) -> std::os::raw::c_int;
    }

    fn set_limit(n: u64) {
        let n = std::os::raw::c_ulong::try_from(n).unwrap_or(std::os::raw::c_ulong::MAX);
        // SAFETY: plain stores into Oniguruma's global limits; each search copies them when it
        // starts, so a change affects only searches that start after it.
        unsafe {
            onig_set_retry_limit_in_search(n);
            onig_set_retry_limit_in_match(n);
        }
    }

    #[derive(Default)]
    struct Watch {
        deadline: Option<Instant>,
        tripped: bool,
    }

    static WATCH: Mutex<Watch> = Mutex::new(Watch {
        deadline: None,
        tripped: false,
    });
    static WAKE: Condvar = Condvar::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    static INIT: Once = Once::new();

    fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watchdog() {
        let mut w = lock(&WATCH);
        loop {
            match w.deadline {
                Some(d) if !w.tripped => {
                    let now = Instant::now();
                    if now >= d {
                        set_limit(1);
                        w.tripped = true;
                    } else {
                        w = WAKE
                            .wait_timeout(w, d - now)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                }
                _ => w = WAKE.wait(w).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Run one tokenization of `len` bytes under the budget. `f` must catch its own panics
    /// (a search stopped by the limit panics inside `tokenizers`).
    pub(super) fn run<T>(
        len: usize,
        f: impl FnOnce() -> Result<T, super::TokenizerError>,
    ) -> Result<T, super::TokenizerError> {
        INIT.call_once(|| {
            set_limit(RETRIES_PER_SEARCH);
            // Without the watchdog only the per-search limit applies.
            let _ = std::thread::Builder::new()
                .name("hallmark-tokenizer-watchdog".into())
                .spawn(watchdog);
        });
        let _one_at_a_time = lock(&SERIAL);
        let budget = budget_for(len);
        {
            let mut w = lock(&WATCH);
            w.deadline = Some(Instant::now() + budget);
            w.tripped = false;
            WAKE.notify_all();
        }
        let r = f();
        let mut w = lock(&WATCH);
        w.deadline = None;
        let tripped = std::mem::take(&mut w.tripped);
        if tripped {
            set_limit(RETRIES_PER_SEARCH);
        }
        drop(w);
        match r {
            Err(super::TokenizerError::Panicked(_)) if tripped => {
                Err(super::TokenizerError::OverBudget {
                    ms: budget.as_millis() as u64,
                    bytes: len,
                })
            }
            r => r,
        }
    }
}

/// Run `f`, turning a panic inside it into [`TokenizerError::Panicked`].
fn guarded<T>(f: impl FnOnce() -> Result<T, TokenizerError>) -> Result<T, TokenizerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(TokenizerError::Panicked(panic_message(&*payload))))
}

/// The text of a panic payload (`&str` or `String`), else a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A loaded tokenizer with the special-token ids a generation loop needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// `tokenizer.ggml.pre` values whose split regex is GPT-2's (the ByteLevel pre-tokenizer's own).
const PRE_GPT2: &[&str] = &[
    "default", "gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "olmo",
];
/// Pre-tokenizers that split every digit, then apply GPT-2's regex (llama.cpp's STARCODER group).
const PRE_DIGITS_GPT2: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
];
/// Llama 3's split regex (llama.cpp `llama-bpe`, also used by several derivatives).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split regex (llama.cpp `qwen2`): like Llama 3's but one digit at a time.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Load from a path: a GGUF file (recognised by its magic) or a `tokenizer.json`.
    pub fn from_path(path: &Path) -> Result<Self, TokenizerError> {
        let io = |source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = [0u8; 4];
        let is_gguf = {
            use std::io::Read;
            let (mut f, _) =
                crate::input::open_regular(path, crate::input::Follow::Yes).map_err(io)?;
            let n = f.read(&mut head).map_err(io)?;
            head[..n].starts_with(crate::weights::gguf::MAGIC)
        };
        if is_gguf {
            let wf = crate::weights::WeightFile::open(path)?;
            Self::from_gguf_metadata(wf.parsed())
        } else {
            let text = crate::input::read_text(
                path,
                crate::input::Kind::Tokenizer,
                crate::input::Follow::Yes,
            )
            .map_err(io)?;
            Self::from_json(&text)
        }
    }

    /// Parse `tokenizer.json` text. BOS/EOS are guessed from common special-token names
    /// (`<s>`, `<|begin_of_text|>`, ... and `</s>`, `<|endoftext|>`, `<|im_end|>`, ...), since
    /// the file itself does not name them.
    pub fn from_json(text: &str) -> Result<Self, TokenizerError> {
        guarded(|| Self::from_json_unguarded(text))
    }

    fn from_json_unguarded(text: &str) -> Result<Self, TokenizerError> {
        let mut inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| TokenizerError::Json(format!("{e}")))?;
        // Detection must see every token of a document: no truncation, no padding.
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Json(format!("{e}")))?;
        inner.with_padding(None);
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"]);
        let eos = find(&["<|eot_id|>", "<|im_end|>", "</s>", "<|endoftext|>", "<eos>"]);
        // The added-token metadata travels with the JSON; a chat template does not.
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            vocab_size,
            bos,
            eos,
            chat_template: None,
        })
    }

    /// Rebuild the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf_metadata(parsed: &ParsedFile) -> Result<Self, TokenizerError> {
        let bad = |m: String| TokenizerError::Gguf(m);
        let model = parsed
            .meta("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| bad("no `tokenizer.ggml.model` in the metadata".into()))?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); \
                 pass the model's tokenizer.json instead"
            )));
        }
        let tokens = string_array(parsed, "tokenizer.ggml.tokens")?;
        let merges = string_array(parsed, "tokenizer.ggml.merges")?;
        if tokens.is_empty() {
            return Err(bad("`tokenizer.ggml.tokens` is empty".into()));
        }
        let n = u32::try_from(tokens.len()).map_err(|_| bad("more than 2^32 tokens".into()))?;
        let types: Vec<u64> = match parsed.meta("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(a)) if a.len() == tokens.len() => {
                a.iter().map(|v| v.as_u64().unwrap_or(1)).collect()
            }
            Some(_) => {
                return Err(bad(
                    "`tokenizer.ggml.token_type` does not match the tokens".into()
                ))
            }
            None => vec![1; tokens.len()],
        };

        let mut vocab = std::collections::HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // A duplicated string keeps its first id (llama.cpp does the same).
            vocab.entry(t.to_string()).or_insert(i as u32);
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for m in &merges {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| bad(format!("merge `{m}` is not two tokens")))?;
            if !vocab.contains_key(a) || !vocab.contains_key(b) {
                return Err(bad(format!(
                    "merge `{m}` names a token outside the vocabulary"
                )));
            }
            pairs.push((a.to_string(), b.to_string()));
        }
        let pre = parsed
            .meta("tokenizer.ggml.pre")
            .and_then(MetaValue::as_str)
            .unwrap_or("default");
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), pairs)
            // Llama 3 style vocabularies look whole words up before merging.
            .ignore_merges(pre == "llama-bpe" || pre == "llama3")
            .build()
            .map_err(|e| bad(format!("building BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (t, ty) in tokens.iter().zip(&types) {
            match ty {
                3 => special.push(AddedToken::from(t.to_string(), true)),
                4 => user.push(AddedToken::from(t.to_string(), false).normalized(false)),
                _ => {}
            }
        }
        inner
            .add_special_tokens(special)
            .and_then(|_| inner.add_tokens(user))
            .map_err(|e| bad(format!("adding special tokens: {e}")))?;

        let id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match parsed.meta(key).and_then(MetaValue::as_u64) {
                Some(v) if v < n as u64 => Ok(Some(v as u32)),
                Some(v) => Err(bad(format!("`{key}` = {v} is outside the vocabulary"))),
                None => Ok(None),
            }
        };
        Ok(Self {
            vocab_size: tokens.len(),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            chat_template: parsed
                .meta("tokenizer.chat_template")
                .and_then(MetaValue::as_str)
                .map(str::to_string),
            inner,
        })
    }

    /// Token ids of `text`, with no special tokens added (no BOS, no post-processor template).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        budget::run(text.len(), || {
            guarded(|| {
                let enc = self
                    .inner
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Tokenize(format!("{e}")))?;
                Ok(enc.get_ids().to_vec())
            })
        })
    }

    /// Text of `ids`; special tokens (BOS, EOS, chat markers) are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        guarded(|| {
            self.inner
                .decode(ids, true)
                .map_err(|e| TokenizerError::Tokenize(format!("{e}")))
        })
    }

    /// Text of `ids` with special tokens kept.
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        guarded(|| {
            self.inner
                .decode(ids, false)
                .map_err(|e| TokenizerError::Tokenize(format!("{e}")))
        })
    }

    /// Number of token ids (including added tokens).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Beginning-of-sequence token id, if known.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token id, if known (for an instruct GGUF, the end-of-turn token).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The id of a token string (e.g. `<|im_end|>`), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The Jinja chat template from the GGUF metadata, if the tokenizer came from one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The tokenizer as `tokenizer.json` text (compact), loadable with [`Tokenizer::from_json`].
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Json(format!("{e}")))
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn string_array<'a>(parsed: &'a ParsedFile, key: &str) -> Result<Vec<&'a str>, TokenizerError> {
    let arr = parsed
        .meta(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| TokenizerError::Gguf(format!("no array `{key}` in the metadata")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| TokenizerError::Gguf(format!("`{key}` holds a non-string value")))
        })
        .collect()
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = pre`.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::Split)
        .map_err(|e| TokenizerError::Gguf(format!("split regex: {e}")))
    };
    if PRE_GPT2.contains(&pre) {
        Ok(byte_level(true))
    } else if PRE_DIGITS_GPT2.contains(&pre) {
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])))
    } else if matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe" | "falcon3") {
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(LLAMA3_REGEX)?,
            byte_level(false),
        ])))
    } else if pre == "qwen2" {
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_REGEX)?,
            byte_level(false),
        ])))
    } else {
        Err(TokenizerError::Gguf(format!(
            "pre-tokenizer `{pre}` is not supported; pass the model's tokenizer.json instead"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn real(p: &str) -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test-models/real")
            .join(p);
        path.exists().then_some(path)
    }

    #[test]
    fn smollm2_gguf_round_trips() {
        let Some(p) = real("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
            eprintln!("skipped: run test-models/fetch.sh");
            return;
        };
        let t = Tokenizer::from_path(&p).unwrap();
        assert_eq!(t.vocab_size(), 49152);
        assert_eq!(t.bos_id(), Some(1));
        assert_eq!(t.eos_id(), Some(2));
        assert_eq!(t.token_id("<|im_start|>"), Some(1));
        assert!(t.chat_template().unwrap().contains("<|im_start|>"));
        let text = "Hello world! The year 2024 was   warm; naïve café, 東京.\n\tTabs & co.";
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
        // SmolLM splits digits one by one.
        let digits = t.encode("2024").unwrap();
        assert_eq!(digits.len(), 4, "{digits:?}");
        // Chat markers are single special tokens, dropped when decoding.
        let chat = t.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
        assert_eq!(chat[0], 1);
        assert_eq!(*chat.last().unwrap(), 2);
        assert_eq!(t.decode(&chat).unwrap(), "user\nHi");
        // The JSON form is the same tokenizer.
        let back = Tokenizer::from_json(&t.to_json().unwrap()).unwrap();
        assert_eq!(back.encode(text).unwrap(), ids);
        assert_eq!(back.vocab_size(), 49152);
    }

    #[test]
    fn minilm_tokenizer_json() {
        let Some(p) = real("minilm/tokenizer.json") else {
            eprintln!("skipped: run test-models/fetch.sh");
            return;
        };
        let t = Tokenizer::from_path(&p).unwrap();
        assert_eq!(t.vocab_size(), 30522);
        let ids = t.encode("hello world").unwrap();
        // WordPiece, no [CLS]/[SEP] since special tokens are not added.
        assert_eq!(ids, vec![7592, 2088]);
        assert_eq!(t.decode(&ids).unwrap(), "hello world");
    }

    #[test]
    fn unsupported_gguf_tokenizer_is_a_clear_error() {
        let parsed = ParsedFile {
            format: crate::weights::WeightFormat::Gguf,
            header: 0..0,
            tensors: vec![],
            metadata: vec![(
                "tokenizer.ggml.model".into(),
                MetaValue::String("llama".into()),
            )],
            alignment: 32,
        };
        let e = Tokenizer::from_gguf_metadata(&parsed).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = Tokenizer::from_path(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
    }
}

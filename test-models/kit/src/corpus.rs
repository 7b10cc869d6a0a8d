//! The training text: human-written documents from `test-models/human/fortunes.jsonl` (a
//! pinned, checked-in file), tokenized once per family and cut into three disjoint slices.

use std::collections::BTreeMap;
use std::path::Path;

use hallmark::tokenizer::Tokenizer;

use crate::KitError;

/// The corpus file, relative to the repository root.
pub const CORPUS: &str = "test-models/human/fortunes.jsonl";

/// One family's tokenized text.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Size of the tokenizer's vocabulary (rows of the saved embedding).
    pub vocab: usize,
    /// Tokenizer ids that occur anywhere in the text, ascending: compact id `c` is `tokens[c]`.
    pub tokens: Vec<u32>,
    /// Slice A (pre-training), B (continued training) and C (fine-tuning), as compact ids.
    pub slices: [Vec<u32>; 3],
    /// Compact id of the document separator.
    pub sep: u32,
    /// Compact id of the mask token (bert-like family only).
    pub mask: Option<u32>,
}

/// Documents of the corpus, in file order.
pub fn documents(root: &Path) -> Result<Vec<String>, KitError> {
    let path = root.join(CORPUS);
    let text = std::fs::read_to_string(&path).map_err(|source| KitError::Io {
        path: path.clone(),
        source,
    })?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| KitError::Bad(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let t = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| KitError::Bad(format!("{}:{}: no `text`", path.display(), i + 1)))?;
        docs.push(t.to_string());
    }
    Ok(docs)
}

impl Corpus {
    /// Tokenize `docs` (joined by `sep`) and cut the stream into slices of `sizes` tokens.
    pub fn build(
        tok: &Tokenizer,
        docs: &[String],
        sep: u32,
        mask: Option<u32>,
        sizes: [usize; 3],
    ) -> Result<Self, KitError> {
        let total: usize = sizes.iter().sum();
        let mut stream: Vec<u32> = Vec::with_capacity(total + 1024);
        for d in docs {
            if stream.len() >= total {
                break;
            }
            stream.extend(tok.encode(d).map_err(|e| KitError::Bad(e.to_string()))?);
            stream.push(sep);
        }
        if stream.len() < total {
            return Err(KitError::Bad(format!(
                "the corpus has {} tokens, {total} needed",
                stream.len()
            )));
        }
        stream.truncate(total);
        let mut set: BTreeMap<u32, u32> = stream.iter().map(|&t| (t, 0)).collect();
        set.insert(sep, 0);
        if let Some(m) = mask {
            set.insert(m, 0);
        }
        let tokens: Vec<u32> = set.keys().copied().collect();
        for (c, v) in set.values_mut().enumerate() {
            *v = c as u32;
        }
        let compact = |t: &u32| set[t];
        let mut slices: [Vec<u32>; 3] = Default::default();
        let mut at = 0;
        for (k, n) in sizes.iter().enumerate() {
            slices[k] = stream[at..at + n].iter().map(compact).collect();
            at += n;
        }
        Ok(Self {
            vocab: tok.vocab_size(),
            tokens,
            slices,
            sep: compact(&sep),
            mask: mask.map(|m| set[&m]),
        })
    }

    /// Entropy (nats) of the unigram distribution of slice `k`: the loss of the best
    /// context-free predictor of that text.
    pub fn unigram_entropy(&self, k: usize) -> f64 {
        let mut counts = vec![0u64; self.tokens.len()];
        for &t in &self.slices[k] {
            counts[t as usize] += 1;
        }
        let n = self.slices[k].len() as f64;
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    }
}

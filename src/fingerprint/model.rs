//! A model as the fingerprinter sees it: every matrix of every weight file, identified by shape
//! alone. Names are kept for reports only; nothing is decided by a name or a stored layout.

use std::path::Path;

use ndarray::Array2;

use crate::weights::{dequant, model_weight_files, TensorView, WeightFile, WeightFormat};

use super::FingerprintError;

/// The weight files of one model, mapped and validated.
#[derive(Debug)]
pub struct Model {
    files: Vec<WeightFile>,
    /// `(file, tensor)` for every 2-D tensor of a decodable dtype, in file order.
    matrices: Vec<(usize, usize)>,
}

/// Where the token-embedding matrix is and how it is stored.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// Index into the model's matrix list.
    pub matrix: usize,
    /// Vocabulary size (the longer axis).
    pub vocab: usize,
    /// Hidden size (the shorter axis).
    pub hidden: usize,
    /// True when stored `hidden x vocab` (token rows are columns).
    pub transposed: bool,
}

impl Model {
    /// Map every weight file of `path` (a file or a directory).
    pub fn open(path: &Path) -> Result<Self, FingerprintError> {
        let mut files = Vec::new();
        for p in model_weight_files(path)? {
            files.push(WeightFile::open(&p)?);
        }
        let mut matrices = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.parsed().tensors.iter().enumerate() {
                if t.shape.len() == 2
                    && t.shape.iter().all(|&d| d > 0)
                    && dequant::supported(t.dtype)
                {
                    matrices.push((fi, ti));
                }
            }
        }
        Ok(Self { files, matrices })
    }

    /// The mapped files.
    pub fn files(&self) -> &[WeightFile] {
        &self.files
    }

    /// Number of matrices.
    pub fn len(&self) -> usize {
        self.matrices.len()
    }

    /// True when the model holds no matrix hallmark can read.
    pub fn is_empty(&self) -> bool {
        self.matrices.is_empty()
    }

    /// View of matrix `i`.
    pub fn view(&self, i: usize) -> Option<TensorView<'_>> {
        let (f, t) = *self.matrices.get(i)?;
        self.files.get(f)?.view(t)
    }

    /// Shape `(rows, cols)` of matrix `i`.
    pub fn shape(&self, i: usize) -> (usize, usize) {
        self.view(i)
            .map(|v| dequant::matrix_shape(v.shape))
            .unwrap_or((0, 0))
    }

    /// The container formats present.
    pub fn formats(&self) -> Vec<WeightFormat> {
        let mut v: Vec<WeightFormat> = self.files.iter().map(|f| f.parsed().format).collect();
        v.dedup();
        v
    }

    /// Total number of stored elements over all tensors.
    pub fn parameters(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| f.parsed().tensors.iter())
            .map(|t| t.elements())
            .sum()
    }

    /// Token-embedding candidates: the matrices with the largest element count whose longer
    /// axis is at least twice the shorter (vocab x hidden), at most `max` of them, in file order.
    /// A tied model has one; an untied one has the input embedding and the output head.
    pub fn embeddings(&self, max: usize) -> Vec<Embedding> {
        let cand = |i: usize| {
            let (r, c) = self.shape(i);
            (r.max(c) >= 2 * r.min(c) && r.min(c) >= 2).then_some((r, c))
        };
        let best = (0..self.len())
            .filter_map(|i| cand(i).map(|(r, c)| r * c))
            .max();
        let Some(best) = best else {
            return Vec::new();
        };
        (0..self.len())
            .filter_map(|i| {
                let (r, c) = cand(i)?;
                (r * c == best).then_some(Embedding {
                    matrix: i,
                    vocab: r.max(c),
                    hidden: r.min(c),
                    transposed: c > r,
                })
            })
            .take(max)
            .collect()
    }

    /// Token rows `idx` of an embedding as a `idx.len() x hidden` matrix, decoding only them.
    pub fn embedding_rows(
        &self,
        e: &Embedding,
        idx: &[usize],
    ) -> Result<Array2<f32>, FingerprintError> {
        let v = self
            .view(e.matrix)
            .ok_or(FingerprintError::Internal("embedding view"))?;
        let mut out = Array2::<f32>::zeros((idx.len(), e.hidden));
        for (k, &i) in idx.iter().enumerate() {
            let row = if e.transposed {
                dequant::col_block(&v, i..i + 1)?.column(0).to_owned()
            } else {
                dequant::rows(&v, i..i + 1)?.row(0).to_owned()
            };
            out.row_mut(k).assign(&row);
        }
        Ok(out)
    }
}

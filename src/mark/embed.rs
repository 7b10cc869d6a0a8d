//! Embedding the mark: the rank-one pattern written into a copy of the model, in the values
//! of float tensors or the scale fields of quantized ones, within the relative-change bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::codec::{self, get_f16, put_f16, scale_fields, scale_steps};
use super::{
    canonical_name, eligible_dtype, infer_hidden, io_err, is_embedding_name, mean_std, norm,
    open_all, orient, MarkError, Orient, View, WeightKey, MAX_FIELD_STEP, MAX_RELATIVE_CHANGE,
};
use crate::error::{FormatError, IoContext};
use crate::fsutil::{write_atomic, WriteMode};
use crate::weights::{DType, WeightFile};

/// What the mark did to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorMark {
    /// File (for sharded models) and tensor name.
    pub file: String,
    /// Tensor name.
    pub name: String,
    /// Stored dtype (unchanged).
    pub dtype: String,
    /// Number of elements.
    pub elements: u64,
    /// `||W' - W|| / ||W||` of the decoded values.
    pub relative_change: f64,
    /// How much of the pattern's correlation survived the storage type: `<dW, P> / (a N)`
    /// (1.0 for f32; the share the block scales can carry for quantized types).
    pub efficiency: f64,
}

/// The outcome of [`mark_model`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct MarkReport {
    /// The model's hidden size as inferred from its matrices.
    pub hidden: u64,
    /// Marked tensors.
    pub tensors: Vec<TensorMark>,
    /// Eligible-shaped tensors left unmarked because their dtype cannot be marked.
    pub skipped: Vec<String>,
}

impl MarkReport {
    /// The largest relative change over all marked tensors.
    pub fn max_relative_change(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.relative_change)
            .fold(0.0, f64::max)
    }
}

/// Mark one tensor: returns its new bytes and what was done.
#[allow(clippy::too_many_arguments)]
fn mark_tensor(
    key: &WeightKey,
    name: &str,
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
    orient: Orient,
    h: &[f32],
    r: &[f32],
) -> Result<(Vec<u8>, f64, f64), MarkError> {
    let n = (shape[0] * shape[1]) as usize;
    let w = codec::to_f32(name, dtype, n, bytes)?;
    let v = View::new(&w, shape, orient);
    let u = v.content_signs(r);
    let (_, std) = mean_std(&w);
    let wnorm = norm(w.iter().map(|&x| x as f64));
    // The unit pattern u h^T in storage order.
    let mut pattern = vec![0f32; n];
    for k in 0..v.k {
        for j in 0..v.c {
            pattern[v.idx(k, j)] = u[k] * h[j];
        }
    }
    if wnorm == 0.0 || !wnorm.is_finite() || std == 0.0 {
        return Err(MarkError::Bound {
            tensor: name.into(),
            change: f64::NAN,
        });
    }
    let quantized = dtype.block_size() > 1;
    let steps = if quantized {
        Some(scale_steps(dtype, bytes, &pattern, name)?)
    } else {
        None
    };
    // Aim at the full strength, then back off if rounding pushed the change past the bound.
    let mut target = key.strength() * std * (n as f64).sqrt();
    for _ in 0..8 {
        let out = match &steps {
            None => {
                let a = (target / (n as f64).sqrt()) as f32;
                let marked: Vec<f32> = w.iter().zip(&pattern).map(|(&x, &p)| x + a * p).collect();
                codec::from_f32(name, dtype, &marked)?
            }
            Some((steps, energy)) => {
                let scale = if *energy > 0.0 {
                    target / energy.sqrt()
                } else {
                    0.0
                };
                let fields = scale_fields(dtype).unwrap_or(&[]);
                let bb = dtype.block_bytes() as usize;
                let mut out = bytes.to_vec();
                for (fi, &off) in fields.iter().enumerate() {
                    for (b, &s) in steps[fi].iter().enumerate() {
                        let blk = &mut out[b * bb..];
                        let old = get_f16(blk, off);
                        if old.is_finite() {
                            // No block's scale moves by more than MAX_FIELD_STEP of itself, so
                            // no single block carries an outsized share of the change.
                            let cap = MAX_FIELD_STEP * old.abs() as f64;
                            let step = (scale * s).clamp(-cap, cap);
                            put_f16(blk, off, (old as f64 + step) as f32);
                        }
                    }
                }
                out
            }
        };
        let w2 = codec::to_f32(name, dtype, n, &out)?;
        let change = norm(w2.iter().zip(&w).map(|(&a, &b)| a as f64 - b as f64)) / wnorm;
        if change <= MAX_RELATIVE_CHANGE * 0.98 {
            let a_full = key.strength() * std;
            let corr: f64 = w2
                .iter()
                .zip(&w)
                .zip(&pattern)
                .map(|((&a, &b), &p)| (a as f64 - b as f64) * p as f64)
                .sum();
            return Ok((out, change, corr / (a_full * n as f64)));
        }
        target *= 0.9 * MAX_RELATIVE_CHANGE / change;
    }
    Err(MarkError::Bound {
        tensor: name.into(),
        change: f64::NAN,
    })
}

/// The selected, eligible tensors of the opened files: (file index, tensor index, orient).
fn plan(
    files: &[WeightFile],
    hidden: u64,
    key: &WeightKey,
    square_flip: bool,
) -> (Vec<(usize, usize, Orient)>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (ti, t) in f.parsed().tensors.iter().enumerate() {
            let Some(o) = orient(&t.shape, hidden, square_flip) else {
                continue;
            };
            if is_embedding_name(&t.name) {
                continue;
            }
            if !key.selects(&canonical_name(&t.name)) {
                continue;
            }
            if eligible_dtype(t.dtype) {
                chosen.push((fi, ti, o));
            } else if t.dtype.is_float_like() {
                skipped.push(format!("{} ({})", t.name, t.dtype));
            }
        }
    }
    (chosen, skipped)
}

/// Embed the mark of `key` into a copy of `model` (a weight file or a directory of them) at
/// `out`. The input is never modified; the output must not exist. A file is written atomically;
/// a directory is assembled in a temporary sibling and renamed into place, with every
/// non-weight file copied unchanged. Dtype, tensor order, header and metadata are kept byte for
/// byte; only marked tensors' data differ.
pub fn mark_model(model: &Path, key: &WeightKey, out: &Path) -> Result<MarkReport, MarkError> {
    if out.symlink_metadata().is_ok() {
        return Err(MarkError::Output {
            path: out.to_path_buf(),
            reason: "already exists; refusing to overwrite it".into(),
        });
    }
    let (paths, files) = open_all(model)?;
    let hidden = infer_hidden(
        files
            .iter()
            .flat_map(|f| f.parsed().tensors.iter().map(|t| t.shape.as_slice())),
    )
    .ok_or_else(|| MarkError::NothingToMark(model.to_path_buf()))?;
    let (chosen, skipped) = plan(&files, hidden, key, false);
    if chosen.is_empty() {
        return Err(MarkError::NothingToMark(model.to_path_buf()));
    }
    let c = hidden as usize;
    let r = key.r_vector(c);
    let hs: BTreeMap<usize, Vec<f32>> = chosen
        .iter()
        .map(|&(fi, ti, o)| {
            let t = &files[fi].parsed().tensors[ti];
            let k = View::content_len(&t.shape, o);
            (k, key.h_vector(k, c))
        })
        .collect();
    let marked: Vec<((usize, usize), Vec<u8>, TensorMark)> = chosen
        .par_iter()
        .map(|&(fi, ti, o)| {
            let t = &files[fi].parsed().tensors[ti];
            let view = files[fi].view(ti).ok_or_else(|| {
                MarkError::Format(FormatError::BadTensor {
                    name: t.name.clone(),
                    reason: "data out of range".into(),
                })
            })?;
            let h = hs
                .get(&View::content_len(&t.shape, o))
                .ok_or(MarkError::NothingToMark(model.to_path_buf()))?;
            let (bytes, change, eff) =
                mark_tensor(key, &t.name, t.dtype, &t.shape, view.bytes, o, h, &r)?;
            let file = paths[fi]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((
                (fi, ti),
                bytes,
                TensorMark {
                    file,
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    elements: t.elements(),
                    relative_change: change,
                    efficiency: eff,
                },
            ))
        })
        .collect::<Result<_, MarkError>>()?;
    // Assemble each output file: the input's bytes with marked tensors' data replaced.
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(files.len());
    for (fi, f) in files.iter().enumerate() {
        let mut bytes = f.bytes().to_vec();
        for ((mfi, mti), new, _) in &marked {
            if *mfi == fi {
                let range = &f.parsed().tensors[*mti].range;
                bytes[range.start as usize..range.end as usize].copy_from_slice(new);
            }
        }
        // The copy must be of the file as it was validated.
        f.map().ensure_unchanged()?;
        outputs.push(bytes);
    }
    let report = MarkReport {
        hidden,
        tensors: marked.into_iter().map(|(_, _, m)| m).collect(),
        skipped,
    };
    if std::fs::metadata(model).with_path(model)?.is_file() {
        write_atomic(out, &outputs[0], WriteMode::PublicNoClobber).map_err(io_err(out))?;
    } else {
        write_dir(model, out, &paths, &outputs)?;
    }
    Ok(report)
}

/// Build the marked directory in a temporary sibling, then rename it to `out`.
fn write_dir(
    model: &Path,
    out: &Path,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
) -> Result<(), MarkError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::fsutil::remove_stale_temps(parent);
    // Tracked so that an interrupt removes it (the TempDir guard cannot run on a signal).
    let tmp = crate::fsutil::create_tracked(
        || {
            tempfile::Builder::new()
                .prefix(&crate::fsutil::temp_prefix())
                .tempdir_in(parent)
        },
        |t| t.path().to_path_buf(),
    )
    .map_err(|e| io_err(out)(std::io::Error::from(e.kind())))?;
    let tmp_path = tmp.path().to_path_buf();
    let r = fill_dir(model, out, tmp, paths, outputs);
    crate::fsutil::untrack_temp(&tmp_path);
    r
}

fn fill_dir(
    model: &Path,
    out: &Path,
    tmp: tempfile::TempDir,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
) -> Result<(), MarkError> {
    copy_tree(model, tmp.path(), paths, outputs, model)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(tmp.path()))?;
    }
    if out.symlink_metadata().is_ok() {
        return Err(MarkError::Output {
            path: out.to_path_buf(),
            reason: "already exists; refusing to overwrite it".into(),
        });
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        MarkError::Io {
            path: out.to_path_buf(),
            source: e,
        }
    })
}

/// File names of signature bundles (`model.sig`, `model.p256.sig`, `*.sigstore.json`).
pub fn is_bundle_name(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.ends_with(".sig") || n.ends_with(".sigstore.json")
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    paths: &[PathBuf],
    outputs: &[Vec<u8>],
    root: &Path,
) -> Result<(), MarkError> {
    for e in std::fs::read_dir(src).map_err(io_err(src))? {
        let e = e.map_err(io_err(src))?;
        let p = e.path();
        let target = dst.join(e.file_name());
        // A signature bundle of the original never verifies the marked copy: leave it out
        // (`mark --key` signs the copy afresh).
        if is_bundle_name(&e.file_name()) && !paths.contains(&p) {
            continue;
        }
        if p.is_dir() {
            std::fs::create_dir(&target).map_err(io_err(&target))?;
            copy_tree(&p, &target, paths, outputs, root)?;
        } else if let Some(i) = paths.iter().position(|q| q == &p) {
            std::fs::write(&target, &outputs[i]).map_err(io_err(&target))?;
        } else {
            std::fs::copy(&p, &target).map_err(io_err(&p))?;
        }
    }
    let _ = root;
    Ok(())
}

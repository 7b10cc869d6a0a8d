//! Undoing a permuted or sign-flipped hidden axis before the mark is scored, through a
//! registered fingerprint's token-embedding rows.
//!
//! The mark survives FFN-neuron and head permutations by construction (its row signs are read
//! from the rows themselves), but its hidden-axis vectors `h` and `r` are indexed by hidden
//! coordinate. A fingerprint stores a few hundred token rows of the original embedding; the same
//! tokens in the suspect give, for each suspect hidden unit, the original unit it correlates with
//! best and the sign. That map is computed without the mark key, so using it keeps the mark's
//! null distribution intact; trying it beside the identity costs a factor 2 (Bonferroni).

use std::path::Path;

use ndarray::{Array2, Axis};

use super::{score_many, HiddenAlignment, MarkScore, WeightKey};
use crate::fingerprint::model::Model;
use crate::fingerprint::{Fingerprint, FingerprintError};
use crate::registry::{EntryKind, Registry};

/// Median best |correlation| below which a unit map is not trusted.
const MIN_MEDIAN_CORRELATION: f32 = 0.5;

/// Columns centred and scaled to unit norm.
fn standardize(z: &Array2<f32>) -> Array2<f32> {
    let n = z.nrows().max(1) as f32;
    let mean = z.sum_axis(Axis(0)) / n;
    let mut z = z - &mean;
    for mut col in z.columns_mut() {
        let norm = col.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            col /= norm;
        }
    }
    z
}

/// The suspect-to-original map of hidden units through `fp`'s embedding rows, if the suspect's
/// embedding shares them clearly (every suspect unit matched to a distinct original unit with a
/// median |correlation| of at least 0.5). `None` also when the map is the identity.
pub fn hidden_alignment(
    model: &Model,
    fp: &Fingerprint,
) -> Result<Option<HiddenAlignment>, FingerprintError> {
    let zr_all = fp.embedding_rows()?;
    let mut best: Option<(f32, HiddenAlignment)> = None;
    for e in model.embeddings(4) {
        if e.hidden != fp.hidden {
            continue;
        }
        let keep: Vec<usize> = (0..fp.embedding.rows.len())
            .filter(|&k| fp.embedding.rows[k] < e.vocab)
            .collect();
        if keep.len() < 32 {
            continue;
        }
        let idx: Vec<usize> = keep.iter().map(|&k| fp.embedding.rows[k]).collect();
        let zs = standardize(&model.embedding_rows(&e, &idx)?);
        let zr = standardize(&zr_all.select(Axis(0), &keep));
        let corr = zs.t().dot(&zr); // suspect units x original units
        let mut perm = Vec::with_capacity(e.hidden);
        let mut sign = Vec::with_capacity(e.hidden);
        let mut mags = Vec::with_capacity(e.hidden);
        for row in corr.rows() {
            let (k, v) = row.iter().enumerate().fold((0, 0f32), |b, (k, &v)| {
                if v.abs() > b.1.abs() {
                    (k, v)
                } else {
                    b
                }
            });
            perm.push(k);
            sign.push(if v < 0.0 { -1.0 } else { 1.0 });
            mags.push(v.abs());
        }
        let mut seen = vec![false; e.hidden];
        let injective = perm.iter().all(|&k| !std::mem::replace(&mut seen[k], true));
        mags.sort_by(f32::total_cmp);
        let median = mags[mags.len() / 2];
        if injective
            && median >= MIN_MEDIAN_CORRELATION
            && best.as_ref().is_none_or(|b| median > b.0)
        {
            best = Some((median, HiddenAlignment { perm, sign }));
        }
    }
    Ok(best.map(|b| b.1).filter(|a| {
        !(a.perm.iter().enumerate().all(|(j, &k)| j == k) && a.sign.iter().all(|&s| s > 0.0))
    }))
}

/// [`super::test_marks`] with realignment: every registered fingerprint that reveals a
/// non-identity hidden map is tried beside the identity, and each key's p-value is the smallest
/// over the maps tried times their number.
pub fn test_marks_with_fingerprints(
    path: &Path,
    registry: &Registry,
) -> Result<Vec<crate::detect::KeyTest>, FingerprintError> {
    let (names, keys) = super::registered_keys(registry)?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut aligns: Vec<(String, HiddenAlignment)> = Vec::new();
    let fps: Vec<_> = registry.of_kind(EntryKind::Fingerprint).collect();
    if !fps.is_empty() {
        let model = Model::open(path)?;
        for e in fps {
            let fp = crate::fingerprint::registered_fingerprint(e)?;
            if let Some(a) = hidden_alignment(&model, fp)? {
                if !aligns
                    .iter()
                    .any(|(_, b)| b.perm == a.perm && b.sign == a.sign)
                {
                    aligns.push((e.name.clone(), a));
                }
            }
        }
    }
    let refs: Vec<&WeightKey> = keys.iter().collect();
    let mut best: Vec<(MarkScore, Option<String>)> = score_many(path, &refs, None)?
        .into_iter()
        .map(|s| (s, None))
        .collect();
    for (fname, a) in &aligns {
        for (b, s) in best.iter_mut().zip(score_many(path, &refs, Some(a))?) {
            if s.p < b.0.p {
                *b = (s, Some(fname.clone()));
            }
        }
    }
    let tries = 1 + aligns.len();
    Ok(names
        .into_iter()
        .zip(keys.iter().zip(best))
        .map(|(name, (key, (mut s, via)))| {
            s.p = (s.p * tries as f64).min(1.0);
            let mut t = super::key_test(name, key, &s);
            t.details
                .insert("alignments_tried".into(), (tries as u64).into());
            if let Some(f) = via {
                t.details.insert("aligned_through".into(), f.into());
            }
            t
        })
        .collect())
}

//! File digests (SHA-256, BLAKE2b, BLAKE3) and per-tensor digests, in one pass over the bytes.
//!
//! # The tensor digest (`blake3-tree-v1`)
//!
//! A tensor occupying the absolute byte range `[s, e)` of a file is digested as follows. Let
//! `c0 = ⌈s / 1024⌉·1024` and `c1 = ⌊e / 1024⌋·1024` (BLAKE3 chunk boundaries). If `c0 < c1`,
//! split `[c0, c1)` greedily into maximal aligned power-of-two runs of chunks (each run starts at
//! a multiple of its own length) and take each run's BLAKE3 *chaining value* at its absolute
//! offset (`Hasher::set_input_offset(start)` + `finalize_non_root`). The digest is
//!
//! ```text
//! BLAKE3-derive_key("hallmark 2026 tensor digest v1",
//!     s as u64le || e as u64le || bytes[s..c0] || (start u64le || len u64le || cv)* || bytes[c1..e])
//! ```
//!
//! (when `c0 >= c1` the run list is empty and all of `bytes[s..e]` stands in the head.)
//!
//! Those runs are exactly nodes of the file's own BLAKE3 tree, so [`hash_file`] computes the
//! file's BLAKE3 digest (identical to `b3sum`) and every tensor digest while reading each byte
//! once. [`tensor_digest`] recomputes one tensor's digest from that tensor's bytes only.

use std::ops::Range;

use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};
use blake3::CHUNK_LEN;
use rayon::prelude::*;

use super::Progress;

/// The name of the per-tensor digest scheme recorded in bundles.
pub const TENSOR_DIGEST_SCHEME: &str = "blake3-tree-v1";

const TENSOR_CONTEXT: &str = "hallmark 2026 tensor digest v1";
const CHUNK: u64 = CHUNK_LEN as u64;
/// Largest run hashed in one call, so progress is reported at a useful granularity.
const MAX_LEAF: u64 = 32 << 20;
/// Runs larger than this are split across threads with `rayon::join`.
const PAR_MIN: u64 = 1 << 20;
/// Inputs larger than this use `update_rayon`.
const RAYON_MIN: usize = 128 << 10;

/// A file digest algorithm (the OMS `hash_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashType {
    /// SHA-256.
    Sha256,
    /// BLAKE2b with a 64-byte digest (Python's `hashlib.blake2b`).
    Blake2b,
    /// BLAKE3 (32 bytes, identical to `b3sum`).
    Blake3,
}

impl HashType {
    /// The name used in bundles.
    pub fn name(self) -> &'static str {
        match self {
            HashType::Sha256 => "sha256",
            HashType::Blake2b => "blake2b",
            HashType::Blake3 => "blake3",
        }
    }
    /// Parse a bundle's `hash_type` / `algorithm` (accepts `blake2` as model_signing's alias).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(HashType::Sha256),
            "blake2b" | "blake2" => Some(HashType::Blake2b),
            "blake3" => Some(HashType::Blake3),
            _ => None,
        }
    }
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashType::Blake2b => 64,
            _ => 32,
        }
    }
}

/// The digests of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHashes {
    /// The whole file's digest with the requested algorithm.
    pub file: Vec<u8>,
    /// One entry per requested span: its tensor digest, or `None` when the span does not lie
    /// within the file.
    pub tensors: Vec<Option<[u8; 32]>>,
}

/// Digest `bytes` with `hash_type` and compute the tensor digest of every span in `spans`
/// (absolute byte ranges, any order). With BLAKE3, each byte is read once.
pub fn hash_file(
    bytes: &[u8],
    hash_type: HashType,
    spans: &[Range<u64>],
    progress: Progress<'_>,
) -> FileHashes {
    let len = bytes.len() as u64;
    let valid = |r: &Range<u64>| r.start <= r.end && r.end <= len;
    match hash_type {
        HashType::Blake3 => {
            // One pass: the interiors of non-overlapping spans become cut points of the tree.
            let mut order: Vec<usize> = (0..spans.len()).filter(|&i| valid(&spans[i])).collect();
            order.sort_by_key(|&i| (spans[i].start, spans[i].end));
            let mut interiors = Vec::new();
            let mut last_end = 0u64;
            for &i in &order {
                let r = &spans[i];
                if r.start < last_end {
                    continue; // overlapping span: computed on its own below
                }
                last_end = r.end;
                let (c0, c1) = interior(r);
                if c0 < c1 {
                    interiors.push(c0..c1);
                }
            }
            let tree = Tree {
                bytes,
                interiors: &interiors,
                progress,
            };
            let (root, mut runs) = tree.root();
            runs.sort_by_key(|r| r.0);
            let tensors = spans
                .par_iter()
                .map(|r| {
                    if !valid(r) {
                        return None;
                    }
                    let (c0, c1) = interior(r);
                    let want = canonical_runs(c0, c1);
                    let lo = runs.partition_point(|x| x.0 < c0);
                    let got = &runs[lo..(lo + want.len()).min(runs.len())];
                    let tiled = got.len() == want.len()
                        && got.iter().zip(&want).all(|(g, w)| g.0 == w.0 && g.1 == w.1);
                    if tiled {
                        Some(compose(bytes, r, got))
                    } else {
                        // Cannot happen for disjoint spans; overlapping ones land here.
                        Some(tensor_digest(bytes, r.clone()))
                    }
                })
                .collect();
            FileHashes {
                file: root.as_bytes().to_vec(),
                tensors,
            }
        }
        HashType::Sha256 | HashType::Blake2b => {
            let (file, tensors) = rayon::join(
                || match hash_type {
                    HashType::Sha256 => stream::<sha2::Sha256>(bytes, progress),
                    _ => stream::<blake2::Blake2b512>(bytes, progress),
                },
                || {
                    spans
                        .par_iter()
                        .map(|r| valid(r).then(|| tensor_digest(bytes, r.clone())))
                        .collect::<Vec<_>>()
                },
            );
            FileHashes { file, tensors }
        }
    }
}

/// The default shard size of model_signing's `shards` serialization method (1 GB, decimal).
pub const DEFAULT_SHARD_SIZE: u64 = 1_000_000_000;

/// The shards of a file of `len` bytes, as model_signing cuts them: `[0, s)`, `[s, 2s)`, ...,
/// the last one ending at `len` (shorter when `len` is not a multiple of `shard_size`). An
/// empty file has no shards. `shard_size` must be positive.
pub fn shard_ranges(len: u64, shard_size: u64) -> Vec<Range<u64>> {
    let step = shard_size.max(1);
    let mut out = Vec::with_capacity(usize::try_from(len.div_ceil(step)).unwrap_or(0));
    let mut start = 0;
    while start < len {
        let end = start.saturating_add(step).min(len);
        out.push(start..end);
        start = end;
    }
    out
}

/// The digests of some shards of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHashes {
    /// One digest per requested range, in the order given.
    pub shards: Vec<Vec<u8>>,
    /// As [`FileHashes::tensors`].
    pub tensors: Vec<Option<[u8; 32]>>,
}

/// Digest each of `ranges` of `bytes` (normally [`shard_ranges`]; each range on its own rayon
/// task, so one large file keeps every core busy even with a sequential hash such as SHA-256)
/// and compute the tensor digest of every span, in parallel with the shards. Ranges must lie
/// within `bytes`.
pub fn hash_shards(
    bytes: &[u8],
    hash_type: HashType,
    ranges: &[Range<u64>],
    spans: &[Range<u64>],
    progress: Progress<'_>,
) -> ShardHashes {
    let len = bytes.len() as u64;
    let (shards, tensors) = rayon::join(
        || {
            ranges
                .par_iter()
                .map(|r| {
                    digest(
                        &bytes[r.start as usize..r.end as usize],
                        hash_type,
                        progress,
                    )
                })
                .collect::<Vec<_>>()
        },
        || {
            spans
                .par_iter()
                .map(|r| {
                    (r.start <= r.end && r.end <= len).then(|| tensor_digest(bytes, r.clone()))
                })
                .collect::<Vec<_>>()
        },
    );
    ShardHashes { shards, tensors }
}

/// The plain digest of `bytes` with `hash_type` (BLAKE3 multi-threaded, the others sequential).
pub fn digest(bytes: &[u8], hash_type: HashType, progress: Progress<'_>) -> Vec<u8> {
    match hash_type {
        HashType::Sha256 => stream::<sha2::Sha256>(bytes, progress),
        HashType::Blake2b => stream::<blake2::Blake2b512>(bytes, progress),
        HashType::Blake3 => {
            let mut h = blake3::Hasher::new();
            for piece in bytes.chunks(MAX_LEAF as usize) {
                update(&mut h, piece);
                progress(piece.len() as u64);
            }
            h.finalize().as_bytes().to_vec()
        }
    }
}

/// A sequential digest of `bytes`, reporting progress every `MAX_LEAF` bytes.
fn stream<D: sha2::Digest>(bytes: &[u8], progress: Progress<'_>) -> Vec<u8> {
    let mut d = D::new();
    for piece in bytes.chunks(MAX_LEAF as usize) {
        d.update(piece);
        progress(piece.len() as u64);
    }
    d.finalize().to_vec()
}

/// Digest a small byte string (a header) with BLAKE3.
pub fn blake3_bytes(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The tensor digest of `file[range]`, reading only those bytes. `range` must lie within `file`.
pub fn tensor_digest(file: &[u8], range: Range<u64>) -> [u8; 32] {
    let (c0, c1) = interior(&range);
    let runs: Vec<Run> = canonical_runs(c0, c1)
        .into_par_iter()
        .map(|(start, len, _)| {
            let piece = &file[start as usize..(start + len) as usize];
            let mut h = blake3::Hasher::new();
            h.set_input_offset(start);
            update(&mut h, piece);
            (start, len, h.finalize_non_root())
        })
        .collect();
    compose(file, &range, &runs)
}

type Run = (u64, u64, ChainingValue);

/// The chunk-aligned interior `[c0, c1)` of a span (empty when `c0 >= c1`).
fn interior(r: &Range<u64>) -> (u64, u64) {
    let c0 = r.start.div_ceil(CHUNK) * CHUNK;
    let c1 = r.end / CHUNK * CHUNK;
    (c0, c1)
}

/// Maximal aligned power-of-two runs of chunks covering `[c0, c1)`, in order (cv zeroed).
fn canonical_runs(c0: u64, c1: u64) -> Vec<Run> {
    let mut out = Vec::new();
    let mut pos = c0;
    while pos < c1 {
        let mut size = CHUNK;
        while (pos == 0 || pos.is_multiple_of(size * 2)) && pos + size * 2 <= c1 {
            size *= 2;
        }
        out.push((pos, size, [0u8; 32]));
        pos += size;
    }
    out
}

fn compose(file: &[u8], r: &Range<u64>, runs: &[Run]) -> [u8; 32] {
    let (c0, c1) = interior(r);
    let mut h = blake3::Hasher::new_derive_key(TENSOR_CONTEXT);
    h.update(&r.start.to_le_bytes());
    h.update(&r.end.to_le_bytes());
    if c0 < c1 {
        h.update(&file[r.start as usize..c0 as usize]);
        for (start, len, cv) in runs {
            h.update(&start.to_le_bytes());
            h.update(&len.to_le_bytes());
            h.update(cv);
        }
        h.update(&file[c1 as usize..r.end as usize]);
    } else {
        h.update(&file[r.start as usize..r.end as usize]);
    }
    *h.finalize().as_bytes()
}

fn update(h: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= RAYON_MIN {
        h.update_rayon(bytes);
    } else {
        h.update(bytes);
    }
}

/// The file's BLAKE3 tree, walked top-down; `interiors` (sorted, disjoint, chunk-aligned) are
/// the tensor interiors whose maximal aligned runs must come out as whole tree nodes.
struct Tree<'a> {
    bytes: &'a [u8],
    interiors: &'a [Range<u64>],
    progress: Progress<'a>,
}

enum Place {
    /// Some interior boundary lies strictly inside the node.
    Cut,
    /// Entirely inside one interior.
    Inside,
    /// Entirely outside every interior.
    Outside,
}

impl Tree<'_> {
    fn place(&self, start: u64, len: u64) -> Place {
        let end = start + len;
        // First interior that ends after `start`.
        let i = self.interiors.partition_point(|r| r.end <= start);
        match self.interiors.get(i) {
            None => Place::Outside,
            Some(r) if r.start >= end => Place::Outside,
            Some(r) if r.start <= start && end <= r.end => Place::Inside,
            Some(_) => Place::Cut,
        }
    }

    /// Chaining value of a non-root node, hashed in one go.
    fn leaf(&self, start: u64, len: u64) -> ChainingValue {
        let piece = &self.bytes[start as usize..(start + len) as usize];
        let mut h = blake3::Hasher::new();
        h.set_input_offset(start);
        update(&mut h, piece);
        self.report(len);
        h.finalize_non_root()
    }

    fn report(&self, len: u64) {
        (self.progress)(len);
    }

    fn root(&self) -> (blake3::Hash, Vec<Run>) {
        let len = self.bytes.len() as u64;
        let leaf =
            len <= CHUNK || (matches!(self.place(0, len), Place::Outside) && len <= MAX_LEAF);
        if leaf {
            let mut h = blake3::Hasher::new();
            update(&mut h, self.bytes);
            self.report(len);
            return (h.finalize(), Vec::new());
        }
        let left = hazmat::left_subtree_len(len);
        let ((l, mut lr), (r, rr)) = self.children(0, left, len - left, false);
        lr.extend(rr);
        (hazmat::merge_subtrees_root(&l, &r, Mode::Hash), lr)
    }

    fn children(
        &self,
        start: u64,
        left: u64,
        right: u64,
        parent_inside: bool,
    ) -> ((ChainingValue, Vec<Run>), (ChainingValue, Vec<Run>)) {
        if left + right > PAR_MIN {
            rayon::join(
                || self.node(start, left, parent_inside),
                || self.node(start + left, right, parent_inside),
            )
        } else {
            (
                self.node(start, left, parent_inside),
                self.node(start + left, right, parent_inside),
            )
        }
    }

    fn node(&self, start: u64, len: u64, parent_inside: bool) -> (ChainingValue, Vec<Run>) {
        let aligned = len.is_power_of_two() && len >= CHUNK && start.is_multiple_of(len);
        let place = self.place(start, len);
        let inside = matches!(place, Place::Inside) && aligned;
        let leaf = len <= CHUNK
            || (len <= MAX_LEAF
                && match place {
                    Place::Cut => false,
                    Place::Outside => true,
                    Place::Inside => aligned,
                });
        let (cv, mut runs) = if leaf {
            (self.leaf(start, len), Vec::new())
        } else {
            let left = hazmat::left_subtree_len(len);
            let ((l, mut lr), (r, rr)) = self.children(start, left, len - left, inside);
            lr.extend(rr);
            (hazmat::merge_subtrees_non_root(&l, &r, Mode::Hash), lr)
        };
        if inside && !parent_inside {
            runs = vec![(start, len, cv)];
        }
        (cv, runs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        let mut x = seed as u64 | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn check(n: usize, spans: &[Range<u64>]) {
        let b = data(n, 7);
        let got = hash_file(&b, HashType::Blake3, spans, &|_| {});
        assert_eq!(got.file, blake3::hash(&b).as_bytes().to_vec(), "n={n}");
        for (r, d) in spans.iter().zip(&got.tensors) {
            if r.end as usize <= n {
                assert_eq!(*d, Some(tensor_digest(&b, r.clone())), "n={n} r={r:?}");
            } else {
                assert_eq!(*d, None);
            }
        }
    }

    #[test]
    fn file_digest_is_b3sum_and_tensor_digests_match_standalone() {
        for n in [0usize, 1, 1023, 1024, 1025, 4096, 5000, 70_000, 300_000] {
            check(n, &[]);
            let n64 = n as u64;
            check(n, std::slice::from_ref(&(0..n64)));
            check(n, &[n64 / 3..n64 / 2, n64 / 2..n64]);
            check(n, &[8..n64.max(8), 0..0]);
        }
        // Many small tensors, unaligned.
        let mut spans = Vec::new();
        let mut p = 136u64;
        while p + 3000 < 400_000 {
            spans.push(p..p + 2999);
            p += 2999;
        }
        check(400_000, &spans);
        // Overlapping and out-of-range spans still give standalone digests.
        check(50_000, &[100..40_000, 20_000..30_000, 49_000..60_000]);
    }

    #[test]
    fn large_file_with_parallel_paths() {
        let n = (MAX_LEAF as usize) * 2 + 12_345;
        let n64 = n as u64;
        check(n, &[4104..n64 / 2 + 17, n64 / 2 + 17..n64]);
    }

    #[test]
    fn tensor_digest_depends_on_every_byte_and_position() {
        let mut b = data(10_000, 3);
        let r = 1000..9000;
        let d0 = tensor_digest(&b, r.clone());
        for i in [1000usize, 1023, 1024, 5000, 8191, 8192, 8999] {
            b[i] ^= 1;
            assert_ne!(tensor_digest(&b, r.clone()), d0, "byte {i}");
            b[i] ^= 1;
        }
        // Bytes outside the range do not matter.
        b[999] ^= 1;
        b[9000] ^= 1;
        assert_eq!(tensor_digest(&b, r.clone()), d0);
        assert_ne!(tensor_digest(&b, 1001..9000), d0);
    }

    /// A run's chaining value built bottom-up from single-chunk chaining values.
    fn reference_cv(file: &[u8], start: u64, len: u64) -> ChainingValue {
        if len == CHUNK {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(start);
            h.update(&file[start as usize..(start + len) as usize]);
            return h.finalize_non_root();
        }
        let half = len / 2;
        hazmat::merge_subtrees_non_root(
            &reference_cv(file, start, half),
            &reference_cv(file, start + half, half),
            Mode::Hash,
        )
    }

    #[test]
    fn tensor_digest_matches_bottom_up_reference() {
        let b = data(200_000, 9);
        for r in [0..200_000u64, 5..190_001, 1024..132_096, 3000..4000, 7..9] {
            let (c0, c1) = interior(&r);
            let runs: Vec<Run> = canonical_runs(c0, c1)
                .into_iter()
                .map(|(s, l, _)| {
                    assert!(l.is_power_of_two() && s % l == 0 || s == 0);
                    (s, l, reference_cv(&b, s, l))
                })
                .collect();
            let covered: u64 = runs.iter().map(|x| x.1).sum();
            assert_eq!(covered, c1.saturating_sub(c0));
            assert_eq!(
                tensor_digest(&b, r.clone()),
                compose(&b, &r, &runs),
                "{r:?}"
            );
        }
    }

    #[test]
    fn shard_ranges_match_model_signing_endpoints() {
        assert_eq!(shard_ranges(0, 10), Vec::<Range<u64>>::new());
        assert_eq!(shard_ranges(10, 10), vec![0..10]);
        assert_eq!(shard_ranges(25, 10), vec![0..10, 10..20, 20..25]);
        assert_eq!(shard_ranges(3, 1_000_000_000), vec![0..3]);
        assert_eq!(shard_ranges(u64::MAX, u64::MAX / 2 + 1).len(), 2);
    }

    #[test]
    fn shard_digests_are_plain_digests_of_each_shard() {
        let b = data(70_001, 5);
        for ht in [HashType::Sha256, HashType::Blake2b, HashType::Blake3] {
            let ranges = shard_ranges(b.len() as u64, 4096);
            let h = hash_shards(&b, ht, &ranges, std::slice::from_ref(&(100..9000)), &|_| {});
            assert_eq!(h.shards.len(), ranges.len());
            for (r, d) in ranges.iter().zip(&h.shards) {
                let piece = &b[r.start as usize..r.end as usize];
                let want = match ht {
                    HashType::Sha256 => sha2::Sha256::digest(piece).to_vec(),
                    HashType::Blake2b => blake2::Blake2b512::digest(piece).to_vec(),
                    HashType::Blake3 => blake3::hash(piece).as_bytes().to_vec(),
                };
                assert_eq!(*d, want, "{ht:?} {r:?}");
            }
            assert_eq!(h.tensors, vec![Some(tensor_digest(&b, 100..9000))]);
        }
    }

    #[test]
    fn sha256_and_blake2b() {
        let b = data(5000, 1);
        let s = hash_file(
            &b,
            HashType::Sha256,
            std::slice::from_ref(&(10..20)),
            &|_| {},
        );
        assert_eq!(s.file, sha2::Sha256::digest(&b).to_vec());
        assert_eq!(s.tensors[0], Some(tensor_digest(&b, 10..20)));
        let s = hash_file(&b, HashType::Blake2b, &[], &|_| {});
        assert_eq!(s.file, blake2::Blake2b512::digest(&b).to_vec());
    }
}

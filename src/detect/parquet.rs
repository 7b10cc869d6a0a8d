//! `detect --parquet`: documents from one string column of a Parquet file, read a batch of rows
//! at a time (only that column is decoded), so a corpus of any size is scanned in bounded memory.
//!
//! Compression and dictionaries let a few bytes of file stand for gigabytes of text, and the
//! `parquet` crate allocates what a page header claims. So before any page is decoded, every
//! page header of the column is read ([`scan_pages`]) and checked: a page decompresses to at
//! most [`MAX_PAGE_BYTES`] (and a gzip or LZ4-frame page, whose decoders in `parquet` ignore
//! the claimed size, is at most [`MAX_INFLATING_PAGE_BYTES`] compressed: deflate expands at most
//! 1032 times). A value lies within one page, and a dictionary-encoded value within its
//! dictionary page, so the largest page also bounds the largest value: rows are decoded in
//! batches small enough that a batch holds at most [`BATCH_BYTES`] of text.

use std::fs::File;

use crate::input::{open_regular, Follow};
use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaData;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::DetectError;

/// One batch of rows: `(row, text)`, `row` 0-based over the whole file, `text` `None` for a
/// null.
pub type Rows = Vec<(u64, Option<String>)>;

/// A reader of one text column: [`TextColumn::next_batch`] yields `(row, text)` pairs, `row`
/// 0-based over the whole file, `text` `None` for a null.
pub struct TextColumn {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    row: u64,
}

impl std::fmt::Debug for TextColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextColumn")
            .field("path", &self.path)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> DetectError {
    DetectError::Parquet {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Refuse footers whose counts the reader would trust blindly: negative or overflowing row
/// counts (the reader sums them as `usize`) and column chunks that claim bytes outside the file.
/// Found by fuzzing (`fuzz/fuzz_targets/parquet.rs`).
fn check_metadata(meta: &parquet::file::metadata::ParquetMetaData, len: u64) -> Result<(), String> {
    let mut rows: u64 = 0;
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let n = u64::try_from(rg.num_rows())
            .map_err(|_| format!("row group {i} claims {} rows", rg.num_rows()))?;
        rows = rows
            .checked_add(n)
            .filter(|&r| r <= i64::MAX as u64)
            .ok_or_else(|| format!("row group {i}: the row counts overflow"))?;
        for c in rg.columns() {
            // Not `byte_range()`: it asserts that the offsets are non-negative.
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let size = c.compressed_size();
            let (Ok(start), Ok(size)) = (u64::try_from(start), u64::try_from(size)) else {
                return Err(format!(
                    "row group {i}: a column chunk claims offset {start} and size {size}"
                ));
            };
            if start.checked_add(size).is_none_or(|end| end > len) {
                return Err(format!(
                    "row group {i}: column chunk bytes {start}+{size} lie outside the {len}-byte file"
                ));
            }
        }
    }
    Ok(())
}

impl TextColumn {
    /// Open `path` and check that `column` is a top-level string column; `batch` rows are
    /// decoded at a time.
    pub fn open(path: &Path, column: &str, batch: usize) -> Result<Self, DetectError> {
        let (file, _) = open_regular(path, Follow::Yes).map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let scan = file.try_clone().map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(path, e))?;
        check_metadata(builder.metadata(), len).map_err(|e| bad(path, e))?;
        let schema = builder.schema().clone();
        let idx = schema.index_of(column).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bad(
                path,
                format!("no column `{column}` (columns: {})", names.join(", ")),
            )
        })?;
        let dt = schema.field(idx).data_type();
        if !matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(bad(
                path,
                format!("column `{column}` is {dt}, not a string column"),
            ));
        }
        // The Arrow field's index is its root index in the Parquet schema.
        let pschema = builder.parquet_schema();
        let leaves: Vec<usize> = (0..pschema.num_columns())
            .filter(|&l| pschema.get_column_root_idx(l) == idx)
            .collect();
        let largest = scan_pages(&scan, builder.metadata(), &leaves).map_err(|e| bad(path, e))?;
        // Rows per batch such that rows x largest value <= BATCH_BYTES.
        let rows = (BATCH_BYTES / largest.max(1)).clamp(1, batch.max(1) as u64) as usize;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(rows)
            .build()
            .map_err(|e| bad(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            row: 0,
        })
    }

    /// The next batch of rows, or `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<Rows>, DetectError> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| bad(&self.path, e))?;
        let col = batch.column(0);
        // parquet-rs builds string arrays unchecked in release builds, and some pages reach
        // that point with bytes that are not UTF-8 (found by fuzzing): validate before any value
        // is read as `str`, so such a file is an error, never undefined behaviour.
        col.to_data()
            .validate_full()
            .map_err(|e| bad(&self.path, format!("rows from {}: {e}", self.row)))?;
        let first = self.row;
        let texts: Vec<Option<String>> = if let Some(a) = col.as_string_opt::<i32>() {
            a.iter().map(|t| t.map(str::to_owned)).collect()
        } else if let Some(a) = col.as_string_opt::<i64>() {
            a.iter().map(|t| t.map(str::to_owned)).collect()
        } else if let Some(a) = col.as_string_view_opt() {
            a.iter().map(|t| t.map(str::to_owned)).collect()
        } else {
            return Err(bad(
                &self.path,
                format!("column is {}, not a string column", col.data_type()),
            ));
        };
        self.row += texts.len() as u64;
        Ok(Some(
            texts
                .into_iter()
                .enumerate()
                .map(|(i, t)| (first + i as u64, t))
                .collect(),
        ))
    }
}

/// Largest page (decompressed) read from a Parquet file.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;
/// Largest compressed gzip or LZ4-frame page (their decoders in `parquet` do not stop at the
/// page's claimed size; deflate expands at most 1032 times, so this bounds the output near
/// 132 MiB).
pub const MAX_INFLATING_PAGE_BYTES: u64 = 128 << 10;
/// Text a batch of decoded rows may hold at most (by the page bound, see the module docs).
pub const BATCH_BYTES: u64 = 16 << 20;
/// Most pages scanned in one column chunk.
const MAX_PAGES: u64 = 1 << 24;

/// Read every page header of the given leaf columns (without decompressing anything) and check
/// the sizes they claim against the limits above. Returns the largest decompressed page size.
pub fn scan_pages(file: &File, meta: &ParquetMetaData, leaves: &[usize]) -> Result<u64, String> {
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut largest = 1u64;
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for &leaf in leaves {
            if leaf >= rg.num_columns() {
                return Err(format!("row group {g} has no column {leaf}"));
            }
            let c = rg.column(leaf);
            let data = u64::try_from(c.data_page_offset()).map_err(|_| "negative page offset")?;
            let start = match c.dictionary_page_offset() {
                Some(d) if d > 0 => u64::try_from(d).map_err(|_| "negative page offset")?,
                _ => data,
            }
            .min(data);
            let len = u64::try_from(c.compressed_size()).map_err(|_| "negative chunk size")?;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= file_len)
                .ok_or_else(|| {
                    format!("row group {g}: column chunk runs past the end of the file")
                })?;
            let inflating = matches!(c.compression(), Compression::GZIP(_) | Compression::LZ4);
            let mut pos = start;
            let mut pages = 0u64;
            while pos < end {
                pages += 1;
                if pages > MAX_PAGES {
                    return Err(format!("row group {g}: more than {MAX_PAGES} pages"));
                }
                let (hlen, uncompressed, compressed) = page_header_at(file, pos, end)
                    .map_err(|e| format!("row group {g}: page header at byte {pos}: {e}"))?;
                if uncompressed > MAX_PAGE_BYTES {
                    return Err(format!(
                        "row group {g}: a page of {uncompressed} bytes, over the \
                         {MAX_PAGE_BYTES}-byte limit for a Parquet page"
                    ));
                }
                if inflating && compressed > MAX_INFLATING_PAGE_BYTES {
                    return Err(format!(
                        "row group {g}: a gzip/LZ4 page of {compressed} compressed bytes, over \
                         the {MAX_INFLATING_PAGE_BYTES}-byte limit for pages of these codecs \
                         (rewrite the file with snappy or zstd)"
                    ));
                }
                largest = largest.max(uncompressed);
                pos = pos
                    .checked_add(hlen)
                    .and_then(|p| p.checked_add(compressed))
                    .ok_or("page size overflows")?;
            }
        }
    }
    Ok(largest)
}

/// Longest page header read (statistics can hold min/max values).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The page header at `pos`: `(header length, uncompressed size, compressed size)`.
fn page_header_at(file: &File, pos: u64, end: u64) -> Result<(u64, u64, u64), String> {
    let mut want = 4096usize;
    loop {
        let avail = usize::try_from(end - pos).unwrap_or(usize::MAX);
        let n = want.min(avail);
        let mut buf = vec![0u8; n];
        read_at(file, &mut buf, pos).map_err(|e| e.to_string())?;
        match parse_page_header(&buf) {
            Ok(h) => return Ok(h),
            Err(HeaderError::Short) if n < avail && want < MAX_HEADER_BYTES => want *= 8,
            Err(HeaderError::Short) => return Err("truncated or over 1 MiB".into()),
            Err(HeaderError::Bad(m)) => return Err(m.into()),
        }
    }
}

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, pos)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek};
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(pos))?;
        f.read_exact(buf)
    }
}

/// Why a page header did not parse.
#[derive(Debug)]
pub enum HeaderError {
    /// More bytes are needed.
    Short,
    /// Not a valid header.
    Bad(&'static str),
}

/// Parse a Thrift-compact `PageHeader` from the start of `b`: `(header length, uncompressed
/// size, compressed size)`. Only fields 2 and 3 are kept; the rest is skipped (with a depth
/// limit), never built.
pub fn parse_page_header(b: &[u8]) -> Result<(u64, u64, u64), HeaderError> {
    let mut r = Compact { b, pos: 0 };
    let (mut unc, mut comp) = (None, None);
    let mut last = 0i16;
    loop {
        let h = r.byte()?;
        if h == 0 {
            break;
        }
        let ty = h & 0x0f;
        let delta = (h >> 4) as i16;
        let id = if delta != 0 {
            last.checked_add(delta)
                .ok_or(HeaderError::Bad("field id overflows"))?
        } else {
            r.zigzag()? as i16
        };
        last = id;
        match (id, ty) {
            (2, 5) => unc = Some(r.zigzag()?),
            (3, 5) => comp = Some(r.zigzag()?),
            _ => r.skip(ty, 0)?,
        }
    }
    let size = |v: Option<i64>| {
        v.and_then(|v| u64::try_from(v).ok())
            .ok_or(HeaderError::Bad("missing or negative page size"))
    };
    Ok((r.pos as u64, size(unc)?, size(comp)?))
}

struct Compact<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Result<u8, HeaderError> {
        let v = *self.b.get(self.pos).ok_or(HeaderError::Short)?;
        self.pos += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64, HeaderError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(HeaderError::Bad("varint overflows"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(HeaderError::Bad("varint too long"))
    }
    fn zigzag(&mut self) -> Result<i64, HeaderError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn advance(&mut self, n: u64) -> Result<(), HeaderError> {
        let n = usize::try_from(n).map_err(|_| HeaderError::Short)?;
        let end = self.pos.checked_add(n).ok_or(HeaderError::Short)?;
        if end > self.b.len() {
            return Err(HeaderError::Short);
        }
        self.pos = end;
        Ok(())
    }
    /// Skip one element of a list, set or map (a boolean element takes one byte there).
    fn skip_element(&mut self, ty: u8, depth: u32) -> Result<(), HeaderError> {
        match ty {
            1 | 2 => self.advance(1),
            _ => self.skip(ty, depth),
        }
    }
    /// Skip one value of compact type `ty`.
    fn skip(&mut self, ty: u8, depth: u32) -> Result<(), HeaderError> {
        if depth > 32 {
            return Err(HeaderError::Bad("nesting deeper than 32"));
        }
        match ty {
            1 | 2 => Ok(()),
            3 => self.advance(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.advance(8),
            8 => {
                let n = self.varint()?;
                self.advance(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let et = h & 0x0f;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                for _ in 0..n {
                    self.skip_element(et, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    self.skip_element(kv >> 4, depth + 1)?;
                    self.skip_element(kv & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            12 => {
                let mut last = 0i16;
                loop {
                    let h = self.byte()?;
                    if h == 0 {
                        return Ok(());
                    }
                    let delta = (h >> 4) as i16;
                    last = if delta != 0 {
                        last.checked_add(delta)
                            .ok_or(HeaderError::Bad("field id overflows"))?
                    } else {
                        self.zigzag()? as i16
                    };
                    self.skip(h & 0x0f, depth + 1)?;
                }
            }
            _ => Err(HeaderError::Bad("unknown Thrift type")),
        }
    }
}

//! `detect --parquet`: documents from one string column of a Parquet file, read a batch of rows
//! at a time (only that column is decoded), so a corpus of any size is scanned in bounded memory.

use std::fs::File;
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
        let file = File::open(path).map_err(|source| DetectError::Io {
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
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch.max(1))
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

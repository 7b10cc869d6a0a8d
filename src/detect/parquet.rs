//! `detect --parquet`: documents from one string column of a Parquet file, read a batch of rows
//! at a time (only that column is decoded), so a corpus of any size is scanned in bounded memory.

use crate::input::{open_regular, Follow};
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

impl TextColumn {
    /// Open `path` and check that `column` is a top-level string column; `batch` rows are
    /// decoded at a time.
    pub fn open(path: &Path, column: &str, batch: usize) -> Result<Self, DetectError> {
        let (file, _) = open_regular(path, Follow::Yes).map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(path, e))?;
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

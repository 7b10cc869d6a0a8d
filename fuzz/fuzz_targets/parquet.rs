//! `detect --parquet`: reading a text column from any bytes is an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use std::io::Write as _;

use hallmark::detect::parquet::TextColumn;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = tempfile::NamedTempFile::new() else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    if let Ok(mut col) = TextColumn::open(f.path(), "text", 64) {
        // At most a few batches: the reader's own limits are tested in tests/cli.rs.
        for _ in 0..16 {
            match col.next_batch() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});

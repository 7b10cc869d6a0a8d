//! `detect --jsonl` / stdin: splitting any bytes into capped lines and reading each line's
//! document is an error per line, never a panic, and no line is kept past its cap.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::input::{jsonl_document, Lines};

fuzz_target!(|data: &[u8]| {
    let mut lines = Lines::new(std::io::BufReader::with_capacity(7, data), 1024);
    let mut n = 0u64;
    while let Ok(Some((number, line))) = lines.next_line() {
        n += 1;
        assert_eq!(number, n);
        if let Ok(l) = line {
            assert!(l.len() <= 1024);
            let _ = jsonl_document(&l);
        }
    }
});

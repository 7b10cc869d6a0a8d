//! `detect --parquet`: the page-header scan (Thrift compact) reads any bytes into sizes or an
//! error, never a panic, and never claims a header longer than its input.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::detect::parquet::parse_page_header;

fuzz_target!(|data: &[u8]| {
    if let Ok((len, _, _)) = parse_page_header(data) {
        assert!(len as usize <= data.len());
    }
});

//! The strict GGUF reader must return an error, never panic or over-allocate, on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = hallmark::weights::gguf::parse(data) {
        for t in &p.tensors {
            assert!(t.range.start <= t.range.end && t.range.end as usize <= data.len());
        }
    }
});

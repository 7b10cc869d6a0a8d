//! The strict safetensors reader must return an error, never panic, on any bytes; what it
//! accepts must be self-consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = hallmark::weights::safetensors::parse(data) {
        assert!(p.header.end as usize <= data.len());
        for t in &p.tensors {
            assert!(t.range.start <= t.range.end && t.range.end as usize <= data.len());
        }
    }
});

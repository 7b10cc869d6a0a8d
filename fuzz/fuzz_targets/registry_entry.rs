//! Everything `register` and `detect` parse from a registry entry (public keys, text and
//! weight watermark keys, fingerprints) must return an error, never panic, on any bytes.
//! (An embedded tokenizer is loaded behind `catch_unwind` at run time; it is not loaded here.)
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::registry::{check_entry, EntryKind};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz-entry");
    for kind in [
        EntryKind::SignerKey,
        EntryKind::WatermarkKey,
        EntryKind::Fingerprint,
    ] {
        let _ = check_entry(kind, p, data, false);
    }
});

//! Trusted root parsing (`verify --sigstore --trusted-root FILE`): an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::signing::sigstore::TrustedRoot;

fuzz_target!(|data: &[u8]| {
    let _ = TrustedRoot::from_json(data);
});

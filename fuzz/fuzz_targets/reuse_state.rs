//! Reuse side-car parsing (`sign --reuse`, and `verify` deciding whether `SIG.reuse` is the
//! bundle's own): an error, never a panic; and a forged side-car never decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::signing::reuse::{is_state_file, ReuseState};
use hallmark::signing::{KeyAlg, SigningKey};

fuzz_target!(|data: &[u8]| {
    let _ = is_state_file(data);
    // A fixed key nobody signs fuzz inputs with: nothing may verify under it.
    let key = SigningKey::from_pem(
        "-----BEGIN PRIVATE KEY-----\n\
         MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n\
         -----END PRIVATE KEY-----\n",
    )
    .unwrap_or_else(|_| SigningKey::generate(KeyAlg::Ed25519));
    assert!(ReuseState::decode(data, &key.verifying_key(), b"bundle").is_err());
});

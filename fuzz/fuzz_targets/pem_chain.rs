//! PEM public keys and certificate chains (`verify --pub`, `--cert-chain`, `sign --cert`): an
//! error, never a panic, and a chain made of arbitrary certificates never validates to a
//! root that the input does not hold.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::signing::keys::{spki_der_from_pem, VerifyingKey};
use hallmark::signing::pki::{pem_certificates, validate_path, EkuPolicy, LeafInfo};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = spki_der_from_pem(&text);
    let _ = VerifyingKey::from_pem(&text);
    let _ = VerifyingKey::from_der(data);
    let _ = LeafInfo::parse(data);
    if let Ok(certs) = pem_certificates(data) {
        for c in &certs {
            if let Ok(l) = LeafInfo::parse(c) {
                let _ = l.has_identity("a@b.example");
                let _ = l.check_signing_usage();
            }
        }
        if let Some((leaf, rest)) = certs.split_first() {
            // The last certificate as the only root, the rest as intermediates.
            if let Some((root, inter)) = rest.split_last() {
                for eku in [EkuPolicy::Any, EkuPolicy::CodeSigning] {
                    let _ = validate_path(leaf, inter, std::slice::from_ref(root), 1_800_000_000, eku);
                }
            }
        }
    }
});

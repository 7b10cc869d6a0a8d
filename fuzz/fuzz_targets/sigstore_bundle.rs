//! Sigstore bundle verification (`verify --sigstore`): any bytes give an error, never a
//! panic, under the public-good trusted root, for an artifact and for an OMS (DSSE) bundle.
#![no_main]
use libfuzzer_sys::fuzz_target;

use hallmark::signing::sigstore::{
    verify_evidence, verify_oms_bundle, SigstorePolicy, SigstoreSigner, TrustedRoot,
};

fuzz_target!(|data: &[u8]| {
    let Ok(root) = TrustedRoot::public_good() else {
        return;
    };
    let policy = SigstorePolicy {
        root,
        signer: SigstoreSigner::Identity {
            identity: "someone@example.com".into(),
            issuer: "https://accounts.google.com".into(),
        },
    };
    let _ = verify_evidence(data, Some(b"artifact"), &policy);
    let _ = verify_oms_bundle(data, &policy);
});

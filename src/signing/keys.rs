//! Signing keys: Ed25519 (default) and ECDSA P-256, as PKCS#8 / SPKI PEM.
//!
//! Private keys live in types that zeroize on drop and have no derived `Debug`; PEM text of a
//! private key is only ever held in [`Zeroizing`] buffers.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::LineEnding;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SigningError;

/// A signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    /// Ed25519 (RFC 8032); signs the DSSE PAE bytes directly.
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256; DER-encoded signatures.
    P256,
}

impl KeyAlg {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::P256 => "p256",
        }
    }
}

/// A private signing key. Zeroized on drop; `Debug` shows only the algorithm and key hint.
pub enum SigningKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("public_hint", &self.verifying_key().hint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(alg: KeyAlg) -> Self {
        let mut rng = rand_core::OsRng;
        match alg {
            KeyAlg::Ed25519 => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            KeyAlg::P256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            SigningKey::Ed25519(_) => KeyAlg::Ed25519,
            SigningKey::P256(_) => KeyAlg::P256,
        }
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::P256(k) => VerifyingKey::P256(*k.verifying_key()),
        }
    }

    /// PKCS#8 PEM text of the private key.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SigningError> {
        let r = match self {
            // PKCS#8 v1 (no embedded public key): the form OpenSSL and Python read.
            SigningKey::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
            SigningKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        r.map_err(|e| SigningError::Key(format!("cannot encode private key: {e}")))
    }

    /// Read a private key from PEM text: PKCS#8 (Ed25519 or P-256) or SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P256(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(SigningKey::P256(k.into()));
        }
        Err(SigningError::Key(
            "not an unencrypted PKCS#8 PEM Ed25519 or P-256 private key".into(),
        ))
    }

    /// Sign the DSSE pre-authentication encoding `pae`.
    pub fn sign(&self, pae: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => k.sign(pae).to_bytes().to_vec(),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(pae);
                // Always the low-S form, so hallmark never emits the malleable twin.
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// A public key that verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyingKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl VerifyingKey {
    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            VerifyingKey::Ed25519(_) => KeyAlg::Ed25519,
            VerifyingKey::P256(_) => KeyAlg::P256,
        }
    }

    /// Read an SPKI (`PUBLIC KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(VerifyingKey::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(VerifyingKey::P256(k));
        }
        Err(SigningError::Key(
            "not an SPKI PEM Ed25519 or P-256 public key".into(),
        ))
    }

    /// Canonical SPKI PEM text (64-column base64, LF line ends), as OpenSSL writes it.
    pub fn to_pem(&self) -> String {
        let r = match self {
            VerifyingKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
            VerifyingKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
        };
        // Encoding a valid key into a String cannot fail; an empty hint would never match.
        r.unwrap_or_default()
    }

    /// DER SubjectPublicKeyInfo bytes (what a bundle's `rawBytes` holds).
    pub fn to_der(&self) -> Vec<u8> {
        let r = match self {
            VerifyingKey::Ed25519(k) => k.to_public_key_der(),
            VerifyingKey::P256(k) => k.to_public_key_der(),
        };
        r.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// The OMS key hint: SHA-256 hex of the canonical SPKI PEM text.
    pub fn hint(&self) -> String {
        hex::encode(Sha256::digest(self.to_pem().as_bytes()))
    }

    /// Check `sig` over the PAE bytes. Ed25519 uses `verify_strict` (no weak keys, canonical S).
    pub fn verify(&self, pae: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyingKey::Ed25519(k) => {
                let Ok(bytes) = <[u8; 64]>::try_from(sig) else {
                    return false;
                };
                let s = ed25519_dalek::Signature::from_bytes(&bytes);
                k.verify_strict(pae, &s).is_ok()
            }
            // High-S is normalised, not refused: OpenSSL-based signers (model_signing) emit it
            // for half of all signatures. (r, n - s) verifies exactly when (r, s) does, so this
            // admits no forgery; it means signature bytes are not unique (docs/signing.md).
            VerifyingKey::P256(k) => match p256::ecdsa::Signature::from_der(sig) {
                Ok(s) => k.verify(pae, &s.normalize_s().unwrap_or(s)).is_ok(),
                Err(_) => false,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_sign_verify() {
        for alg in [KeyAlg::Ed25519, KeyAlg::P256] {
            let k = SigningKey::generate(alg);
            let pem = k.to_pkcs8_pem().unwrap();
            let k2 = SigningKey::from_pem(&pem).unwrap();
            assert_eq!(k2.alg(), alg);
            let vk = VerifyingKey::from_pem(&k.verifying_key().to_pem()).unwrap();
            assert_eq!(vk, k.verifying_key());
            let sig = k2.sign(b"message");
            assert!(vk.verify(b"message", &sig));
            assert!(!vk.verify(b"messagf", &sig));
            let other = SigningKey::generate(alg).verifying_key();
            assert!(!other.verify(b"message", &sig));
            assert_eq!(vk.hint().len(), 64);
            // Debug never shows secret material.
            let dbg = format!("{k:?}");
            assert!(!dbg.contains(pem.lines().nth(1).unwrap()));
        }
    }

    #[test]
    fn p256_signs_low_s_and_verifies_the_high_s_twin() {
        use std::ops::Neg;
        let k = SigningKey::generate(KeyAlg::P256);
        let vk = k.verifying_key();
        for i in 0..16u8 {
            let msg = [i; 8];
            let der = k.sign(&msg);
            let s = p256::ecdsa::Signature::from_der(&der).unwrap();
            assert!(
                s.normalize_s().is_none(),
                "hallmark emitted a high-S signature"
            );
            let (r, lo) = s.split_scalars();
            let hi = p256::ecdsa::Signature::from_scalars(r, lo.neg()).unwrap();
            assert!(vk.verify(&msg, hi.to_der().as_bytes()));
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
        assert!(VerifyingKey::from_pem("hello").is_err());
    }
}

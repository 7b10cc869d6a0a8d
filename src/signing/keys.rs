//! Signing keys: Ed25519 (default) and ECDSA P-256, P-384 and P-521, as PKCS#8 / SPKI PEM.
//!
//! Private keys live in types that zeroize on drop and have no derived `Debug`; PEM text of a
//! private key is only ever held in [`Zeroizing`] buffers.
//!
//! ECDSA signatures hash with the curve's own hash (SHA-256, SHA-384, SHA-512), the pairing
//! model_signing uses (`get_ec_key_hash`), and are DER-encoded.

use base64::Engine as _;
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
    /// ECDSA over NIST P-384 with SHA-384; DER-encoded signatures.
    P384,
    /// ECDSA over NIST P-521 with SHA-512; DER-encoded signatures.
    P521,
}

impl KeyAlg {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::P256 => "p256",
            KeyAlg::P384 => "p384",
            KeyAlg::P521 => "p521",
        }
    }

    /// The algorithm named `name` on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        [KeyAlg::Ed25519, KeyAlg::P256, KeyAlg::P384, KeyAlg::P521]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// True for the ECDSA curves.
    pub fn is_ecdsa(self) -> bool {
        self != KeyAlg::Ed25519
    }
}

/// A private signing key. Zeroized on drop; `Debug` shows only the algorithm and key hint.
pub enum SigningKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-384.
    P384(p384::ecdsa::SigningKey),
    /// ECDSA P-521.
    P521(p521::ecdsa::SigningKey),
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
            KeyAlg::P384 => SigningKey::P384(p384::ecdsa::SigningKey::random(&mut rng)),
            KeyAlg::P521 => SigningKey::P521(p521::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            SigningKey::Ed25519(_) => KeyAlg::Ed25519,
            SigningKey::P256(_) => KeyAlg::P256,
            SigningKey::P384(_) => KeyAlg::P384,
            SigningKey::P521(_) => KeyAlg::P521,
        }
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::P256(k) => VerifyingKey::P256(*k.verifying_key()),
            SigningKey::P384(k) => VerifyingKey::P384(*k.verifying_key()),
            SigningKey::P521(k) => {
                VerifyingKey::P521(p521::PublicKey::from_secret_scalar(k.as_nonzero_scalar()))
            }
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
            SigningKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningKey::P521(k) => {
                let bytes = Zeroizing::new(k.to_bytes().to_vec());
                p521::SecretKey::from_slice(&bytes)
                    .map_err(|e| SigningError::Key(format!("cannot encode private key: {e}")))?
                    .to_pkcs8_pem(LineEnding::LF)
            }
        };
        r.map_err(|e| SigningError::Key(format!("cannot encode private key: {e}")))
    }

    /// Read a private key from PEM text: PKCS#8 (Ed25519, P-256, P-384 or P-521) or SEC1
    /// `EC PRIVATE KEY`.
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P384(k));
        }
        if let Ok(k) = p521::SecretKey::from_pkcs8_pem(pem) {
            return p521_signing(&k);
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(SigningKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
            return Ok(SigningKey::P384(k.into()));
        }
        if let Ok(k) = p521::SecretKey::from_sec1_pem(pem) {
            return p521_signing(&k);
        }
        Err(SigningError::Key(
            "not an unencrypted PKCS#8 PEM Ed25519, P-256, P-384 or P-521 private key".into(),
        ))
    }

    /// Sign the DSSE pre-authentication encoding `pae`.
    pub fn sign(&self, pae: &[u8]) -> Vec<u8> {
        // ECDSA: always the low-S form, so hallmark never emits the malleable twin.
        match self {
            SigningKey::Ed25519(k) => k.sign(pae).to_bytes().to_vec(),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(pae);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
            SigningKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(pae);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
            SigningKey::P521(k) => {
                let sig: p521::ecdsa::Signature = k.sign(pae);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

fn p521_signing(k: &p521::SecretKey) -> Result<SigningKey, SigningError> {
    p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
        .map(SigningKey::P521)
        .map_err(|e| SigningError::Key(format!("unusable P-521 private key: {e}")))
}

/// A public key that verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyingKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256 (SHA-256).
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384 (SHA-384).
    P384(p384::ecdsa::VerifyingKey),
    /// ECDSA P-521 (SHA-512). Held as the curve point: p521's verifying key type has no
    /// `Debug` or `Eq`.
    P521(p521::PublicKey),
}

/// The DER body of the one `PUBLIC KEY` PEM block in `text`. Text before and after the block
/// is allowed (certtool and `openssl x509 -text` print a description first); a private key,
/// several public keys, or a block that is not base64 are refused.
pub fn spki_der_from_pem(text: &str) -> Result<Vec<u8>, SigningError> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let bad = |m: &str| SigningError::Key(m.to_string());
    if text.contains("PRIVATE KEY-----") {
        return Err(bad(
            "the file holds a private key; give the public key (SPKI `PUBLIC KEY` PEM)",
        ));
    }
    let mut blocks = text.match_indices(BEGIN);
    let Some((at, _)) = blocks.next() else {
        return Err(bad(
            "no `-----BEGIN PUBLIC KEY-----` block (SPKI PEM) in the file",
        ));
    };
    if blocks.next().is_some() {
        return Err(bad("more than one public key in the file"));
    }
    let body = &text[at + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or_else(|| bad("the PUBLIC KEY block has no END line"))?;
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("the PUBLIC KEY block is not base64"))
}

impl VerifyingKey {
    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            VerifyingKey::Ed25519(_) => KeyAlg::Ed25519,
            VerifyingKey::P256(_) => KeyAlg::P256,
            VerifyingKey::P384(_) => KeyAlg::P384,
            VerifyingKey::P521(_) => KeyAlg::P521,
        }
    }

    /// Read an SPKI (`PUBLIC KEY`) PEM, with any text around the block
    /// ([`spki_der_from_pem`]).
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        Self::from_der(&spki_der_from_pem(pem)?)
    }

    /// Read a public key file's bytes: SPKI PEM (with any text around the block), or, when
    /// the file holds no PEM armour at all, DER SubjectPublicKeyInfo (`openssl pkey -pubout
    /// -outform DER`).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, SigningError> {
        if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Self::from_pem(&String::from_utf8_lossy(bytes));
        }
        Self::from_der(bytes).map_err(|_| {
            SigningError::Key(
                "neither an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) nor a DER SPKI Ed25519, \
                 P-256, P-384 or P-521 public key"
                    .into(),
            )
        })
    }

    /// Read a DER SubjectPublicKeyInfo: Ed25519 or ECDSA P-256, P-384, P-521.
    pub fn from_der(der: &[u8]) -> Result<Self, SigningError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(VerifyingKey::Ed25519(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(VerifyingKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(VerifyingKey::P384(k));
        }
        if let Ok(k) = p521::PublicKey::from_public_key_der(der) {
            return Ok(VerifyingKey::P521(k));
        }
        Err(SigningError::Key(
            "not an Ed25519, ECDSA P-256, P-384 or P-521 public key (SPKI)".into(),
        ))
    }

    /// Canonical SPKI PEM text (64-column base64, LF line ends), as OpenSSL writes it.
    pub fn to_pem(&self) -> String {
        super::verify::spki_pem(&self.to_der())
    }

    /// DER SubjectPublicKeyInfo bytes (what a bundle's `rawBytes` holds).
    pub fn to_der(&self) -> Vec<u8> {
        let r = match self {
            VerifyingKey::Ed25519(k) => k.to_public_key_der(),
            VerifyingKey::P256(k) => k.to_public_key_der(),
            VerifyingKey::P384(k) => k.to_public_key_der(),
            VerifyingKey::P521(k) => k.to_public_key_der(),
        };
        // Encoding a valid key cannot fail; an empty key would never match anything.
        r.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// The OMS key hint: SHA-256 hex of the canonical SPKI PEM text.
    pub fn hint(&self) -> String {
        hex::encode(Sha256::digest(self.to_pem().as_bytes()))
    }

    /// Check `sig` over the PAE bytes. Ed25519 uses `verify_strict` (no weak keys, canonical S).
    pub fn verify(&self, pae: &[u8], sig: &[u8]) -> bool {
        // ECDSA: high-S is normalised, not refused: OpenSSL-based signers (model_signing) emit
        // it for half of all signatures. (r, n - s) verifies exactly when (r, s) does, so this
        // admits no forgery; it means signature bytes are not unique (docs/signing.md).
        match self {
            VerifyingKey::Ed25519(k) => {
                let Ok(bytes) = <[u8; 64]>::try_from(sig) else {
                    return false;
                };
                let s = ed25519_dalek::Signature::from_bytes(&bytes);
                k.verify_strict(pae, &s).is_ok()
            }
            VerifyingKey::P256(k) => match p256::ecdsa::Signature::from_der(sig) {
                Ok(s) => k.verify(pae, &s.normalize_s().unwrap_or(s)).is_ok(),
                Err(_) => false,
            },
            VerifyingKey::P384(k) => match p384::ecdsa::Signature::from_der(sig) {
                Ok(s) => k.verify(pae, &s.normalize_s().unwrap_or(s)).is_ok(),
                Err(_) => false,
            },
            VerifyingKey::P521(k) => {
                let Ok(vk) = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine()) else {
                    return false;
                };
                match p521::ecdsa::Signature::from_der(sig) {
                    Ok(s) => vk.verify(pae, &s.normalize_s().unwrap_or(s)).is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_sign_verify() {
        for alg in [KeyAlg::Ed25519, KeyAlg::P256, KeyAlg::P384, KeyAlg::P521] {
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

    #[test]
    fn public_pem_with_leading_text_and_refusals() {
        let k = SigningKey::generate(KeyAlg::P384).verifying_key();
        let text = format!(
            "Public Key Information:\n\tCurve: SECP384R1\n\n{}",
            k.to_pem()
        );
        assert_eq!(VerifyingKey::from_pem(&text).unwrap(), k);
        let two = format!("{}{}", k.to_pem(), k.to_pem());
        assert!(VerifyingKey::from_pem(&two).is_err());
        assert_eq!(VerifyingKey::from_file_bytes(&k.to_der()).unwrap(), k);
        assert_eq!(VerifyingKey::from_file_bytes(text.as_bytes()).unwrap(), k);
        assert!(VerifyingKey::from_file_bytes(b"\x30\x03\x02\x01\x00").is_err());
        let private = SigningKey::generate(KeyAlg::P256).to_pkcs8_pem().unwrap();
        let both = format!("{}{}", k.to_pem(), private.as_str());
        assert!(VerifyingKey::from_pem(&both)
            .unwrap_err()
            .to_string()
            .contains("private key"));
    }
}

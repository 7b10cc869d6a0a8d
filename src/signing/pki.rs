//! X.509 certificates in signature bundles: parsing (x509-cert), path validation to given roots
//! (rustls-webpki with *ring*), the signing policy model_signing applies, and identities.
//!
//! Nothing here hand-parses ASN.1 or builds paths: x509-cert decodes, webpki validates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::{self, Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::SigningError;

/// Most certificates read from one PEM file or one bundle.
pub const MAX_CERTIFICATES: usize = 64;

/// `id-kp-codeSigning` (1.3.6.1.5.5.7.3.3), DER content octets.
const CODE_SIGNING_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const CODE_SIGNING: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
/// Fulcio's username `otherName` type (1.3.6.1.4.1.57264.1.7).
const FULCIO_USERNAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

/// Every signature algorithm webpki may meet in a chain: ECDSA P-256/P-384, Ed25519, RSA.
static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Read every `CERTIFICATE` block of a PEM file as DER (text and other blocks around them are
/// skipped). Fails on text that holds none, on a block that is not base64 or not a well-formed
/// certificate, and past [`MAX_CERTIFICATES`].
///
/// The blocks are split by rustls-pki-types' line-based PEM reader, linear in the input. Not
/// x509-cert's `load_pem_chain`: its PEM reader loops forever on some malformed blocks (a
/// 90-byte file found by fuzzing, kept in fuzz/regressions/pem_chain) and overflows on input
/// that is only newlines.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, SigningError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |m: String| SigningError::BadCertificate(m);
    let mut certs = Vec::new();
    for block in CertificateDer::pem_slice_iter(text) {
        let der = block.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.len() == MAX_CERTIFICATES {
            return Err(SigningError::Limit(format!(
                "more than {MAX_CERTIFICATES} certificates"
            )));
        }
        Certificate::from_der(der.as_ref()).map_err(|e| {
            bad(format!(
                "certificate {} of the file is not a well-formed X.509 certificate: {e}",
                certs.len() + 1
            ))
        })?;
        certs.push(der.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The public key of a signing certificate.
#[derive(Clone, Debug)]
pub enum LeafKey {
    /// ECDSA P-256; signatures over SHA-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384; signatures over SHA-384 (the hash model_signing pairs with the curve).
    P384(p384::ecdsa::VerifyingKey),
    /// ECDSA P-521; signatures over SHA-512 (likewise).
    P521(p521::PublicKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl LeafKey {
    /// Read a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SigningError> {
        use super::keys::VerifyingKey as V;
        match V::from_der(der) {
            Ok(V::P256(k)) => Ok(LeafKey::P256(k)),
            Ok(V::P384(k)) => Ok(LeafKey::P384(k)),
            Ok(V::P521(k)) => Ok(LeafKey::P521(k)),
            Ok(V::Ed25519(k)) => Ok(LeafKey::Ed25519(k)),
            Err(_) => Err(SigningError::Unsupported(
                "certificate key is not ECDSA P-256/P-384/P-521 or Ed25519".into(),
            )),
        }
    }

    /// The same key as a [`super::keys::VerifyingKey`].
    pub fn verifying_key(&self) -> super::keys::VerifyingKey {
        use super::keys::VerifyingKey as V;
        match self {
            LeafKey::P256(k) => V::P256(*k),
            LeafKey::P384(k) => V::P384(*k),
            LeafKey::P521(k) => V::P521(*k),
            LeafKey::Ed25519(k) => V::Ed25519(*k),
        }
    }

    /// Check a signature over `msg`: DER ECDSA (high S normalised, see keys.rs) or raw Ed25519.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verifying_key().verify(msg, sig)
    }

    /// Check a DER ECDSA signature over a message given by its digest (Sigstore message
    /// signatures carry only the digest; CMS names its own hash). Ed25519 has no prehash form.
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        match self {
            LeafKey::P256(k) => match p256::ecdsa::Signature::from_der(sig) {
                Ok(s) => k
                    .verify_prehash(digest, &s.normalize_s().unwrap_or(s))
                    .is_ok(),
                Err(_) => false,
            },
            LeafKey::P384(k) => match p384::ecdsa::Signature::from_der(sig) {
                Ok(s) => k
                    .verify_prehash(digest, &s.normalize_s().unwrap_or(s))
                    .is_ok(),
                Err(_) => false,
            },
            LeafKey::P521(k) => {
                let Ok(vk) = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine()) else {
                    return false;
                };
                match p521::ecdsa::Signature::from_der(sig) {
                    Ok(s) => vk
                        .verify_prehash(digest, &s.normalize_s().unwrap_or(s))
                        .is_ok(),
                    Err(_) => false,
                }
            }
            LeafKey::Ed25519(_) => false,
        }
    }

    /// The key as SPKI DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.verifying_key().to_der()
    }
}

/// One subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    /// `rfc822Name` (an email address).
    Email(String),
    /// `uniformResourceIdentifier`.
    Uri(String),
    /// `otherName` of type Fulcio username (1.3.6.1.4.1.57264.1.7), a UTF8String.
    Username(String),
    /// `dNSName`: shown, never matched as an identity (a signer is a person or a workload,
    /// named by email, URI or username, as sigstore-python matches).
    Dns(String),
    /// Another kind of name, shown but never matched.
    Other(String),
}

impl San {
    /// The name's text.
    pub fn value(&self) -> &str {
        match self {
            San::Email(s) | San::Uri(s) | San::Username(s) | San::Dns(s) | San::Other(s) => s,
        }
    }
}

/// What a signing certificate says, decoded (nothing in it is trusted until
/// [`validate_path`] accepted it).
#[derive(Clone, Debug)]
pub struct LeafInfo {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Subject distinguished name (RFC 4514 text).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514 text).
    pub issuer: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
    /// The key usage extension allows digital signatures (`None`: no key usage extension).
    pub digital_signature: Option<bool>,
    /// The extended key usage extension lists code signing (`None`: no EKU extension).
    pub code_signing: Option<bool>,
    /// The certificate's public key.
    pub key: LeafKey,
    /// The decoded certificate, for callers that read further extensions.
    pub cert: Certificate,
}

impl LeafInfo {
    /// Decode a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, SigningError> {
        let bad = |m: String| SigningError::Bundle(m);
        let cert = Certificate::from_der(der)
            .map_err(|e| bad(format!("malformed signing certificate: {e}")))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(format!("certificate key: {e}")))?;
        let key = LeafKey::from_spki_der(&spki)?;
        let mut sans = Vec::new();
        let mut digital_signature = None;
        let mut code_signing = None;
        for ext in tbs.extensions.iter().flatten() {
            let v = ext.extn_value.as_bytes();
            if ext.extn_id == SubjectAltName::OID {
                let san = SubjectAltName::from_der(v)
                    .map_err(|e| bad(format!("malformed subject alternative name: {e}")))?;
                for n in san.0 {
                    sans.push(match n {
                        GeneralName::Rfc822Name(s) => San::Email(s.to_string()),
                        GeneralName::UniformResourceIdentifier(s) => San::Uri(s.to_string()),
                        GeneralName::DnsName(s) => San::Dns(s.to_string()),
                        GeneralName::OtherName(o) if o.type_id == FULCIO_USERNAME => {
                            San::Username(o.value.decode_as::<String>().map_err(|e| {
                                bad(format!("malformed username subject alternative name: {e}"))
                            })?)
                        }
                        other => San::Other(format!("{other:?}")),
                    });
                }
            } else if ext.extn_id == KeyUsage::OID {
                let ku =
                    KeyUsage::from_der(v).map_err(|e| bad(format!("malformed key usage: {e}")))?;
                digital_signature = Some(ku.digital_signature());
            } else if ext.extn_id == ExtendedKeyUsage::OID {
                let eku = ExtendedKeyUsage::from_der(v)
                    .map_err(|e| bad(format!("malformed extended key usage: {e}")))?;
                code_signing = Some(eku.0.contains(&CODE_SIGNING));
            }
        }
        Ok(Self {
            der: der.to_vec(),
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            fingerprint: hex::encode(Sha256::digest(der)),
            sans,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
            digital_signature,
            code_signing,
            key,
            cert,
        })
    }

    /// model_signing's rule for a signing certificate: key usage `digitalSignature`, or else
    /// extended key usage `codeSigning` (`_verify_certificates` in
    /// `model_signing/_signing/sign_certificate.py`).
    pub fn check_signing_usage(&self) -> Result<(), SigningError> {
        if self.digital_signature == Some(true) || self.code_signing == Some(true) {
            return Ok(());
        }
        Err(SigningError::Certificate(format!(
            "the signing certificate ({}) allows neither digital signatures (key usage) nor \
             code signing (extended key usage)",
            self.subject
        )))
    }

    /// True when `identity` equals, byte for byte, one of the subject alternative names that
    /// name a signer: email, URI or (Fulcio) username. Never a DNS name: sigstore-python and
    /// model_signing match only these three forms, and a DNS name names a host, which anyone
    /// able to obtain a certificate for it (or a CA that may issue for it) is not.
    pub fn has_identity(&self, identity: &str) -> bool {
        self.sans.iter().any(|s| {
            matches!(s, San::Email(_) | San::Uri(_) | San::Username(_)) && s.value() == identity
        })
    }
}

/// Which extended key usage path validation demands of the signing certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkuPolicy {
    /// No demand in the path check (the caller applies [`LeafInfo::check_signing_usage`]), as
    /// OpenSSL's store check without a purpose does for model_signing.
    Any,
    /// The signing certificate must list code signing (Sigstore's Fulcio certificates do).
    CodeSigning,
    /// The certificate must list time stamping (an RFC 3161 timestamp authority).
    TimeStamping,
}

/// `id-kp-timeStamping` (1.3.6.1.5.5.7.3.8), DER content octets.
const TIME_STAMPING_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

struct AnyEku;
impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Still read every OID, so a malformed extension is an error.
        for k in iter {
            k?;
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Validate the path from `leaf` through any of `intermediates` to one of `roots` (DER, each
/// a trust anchor), with every certificate valid at `at` (seconds since the Unix epoch), and
/// the key purpose `eku` of the signing certificate. A failure is
/// [`SigningError::Certificate`], with the reason.
///
/// This is the one place where paths are validated. rustls-webpki builds the path and checks
/// signatures, validity, basic constraints of intermediates, DNS/IP name constraints and key
/// purposes; `super::pathcheck::check_path` adds what RFC 5280 asks beyond that (every
/// issuer a CA allowed to sign certificates, path lengths, the anchor's own validity, flags
/// and name constraints, email/URI/directory name constraints), on each candidate path, so a
/// path refused there lets webpki try another.
///
/// Returns the DER SubjectPublicKeyInfo of the certificate that issued `leaf` (what a signed
/// certificate timestamp binds to).
pub fn validate_path(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    at: u64,
    eku: EkuPolicy,
) -> Result<Vec<u8>, SigningError> {
    let bad = |m: String| SigningError::Certificate(m);
    let root_ders: Vec<CertificateDer<'_>> =
        roots.iter().map(|r| CertificateDer::from(&r[..])).collect();
    let mut anchors = Vec::with_capacity(roots.len());
    let mut root_certs = Vec::with_capacity(roots.len());
    for r in &root_ders {
        let mut a = webpki::anchor_from_trusted_cert(r)
            .map_err(|e| bad(format!("unusable root certificate: {e:?}")))?;
        // The anchor's name constraints are checked by pathcheck (webpki refuses email ones).
        a.name_constraints = None;
        anchors.push(a);
        root_certs.push(
            Certificate::from_der(r).map_err(|e| bad(format!("unusable root certificate: {e}")))?,
        );
    }
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(&c[..]))
        .collect();
    let leaf_der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| bad(format!("unusable signing certificate: {e:?}")))?;
    let leaf_cert = Certificate::from_der(leaf)
        .map_err(|e| bad(format!("unusable signing certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at));
    // Why the last candidate path webpki accepted was refused by pathcheck.
    let refused = std::cell::RefCell::new(None::<String>);
    let hook = |p: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let r = (|| {
            let mut chain = Vec::new();
            for c in p.intermediate_certificates() {
                chain.push(
                    Certificate::from_der(c.der().as_ref())
                        .map_err(|e| format!("malformed intermediate certificate: {e}"))?,
                );
            }
            // webpki names the anchor by subject and key only, so a roots file holding several
            // certificates for one key (a renewed root beside the expired one, a constrained and
            // an unconstrained copy) gives several candidates: the path is valid through any
            // copy that passes, whatever their order in the file.
            let a = p.anchor();
            let mut first_refusal = None;
            for (x, root) in anchors.iter().zip(&root_certs) {
                if x.subject.as_ref() != a.subject.as_ref()
                    || x.subject_public_key_info.as_ref() != a.subject_public_key_info.as_ref()
                {
                    continue;
                }
                match super::pathcheck::check_path(&leaf_cert, &chain, root, at) {
                    Ok(()) => return Ok(()),
                    Err(m) => {
                        first_refusal.get_or_insert(m);
                    }
                }
            }
            Err(first_refusal.unwrap_or_else(|| "the path ends at an unknown trust anchor".into()))
        })();
        r.map_err(|m| {
            *refused.borrow_mut() = Some(m);
            // Any non-fatal error: webpki goes on to the next candidate path.
            webpki::Error::UnknownIssuer
        })
    };
    let hook: &dyn Fn(&webpki::VerifiedPath<'_>) -> Result<(), webpki::Error> = &hook;
    let r = match eku {
        EkuPolicy::Any => {
            ee.verify_for_usage(ALGS, &anchors, &inter, time, AnyEku, None, Some(hook))
        }
        EkuPolicy::CodeSigning => ee.verify_for_usage(
            ALGS,
            &anchors,
            &inter,
            time,
            webpki::KeyUsage::required(CODE_SIGNING_DER),
            None,
            Some(hook),
        ),
        EkuPolicy::TimeStamping => ee.verify_for_usage(
            ALGS,
            &anchors,
            &inter,
            time,
            webpki::KeyUsage::required(TIME_STAMPING_DER),
            None,
            Some(hook),
        ),
    };
    match r {
        Ok(p) => Ok(p.issuer_spki().as_ref().to_vec()),
        Err(e) => {
            if let Some(m) = refused.borrow_mut().take() {
                return Err(bad(m));
            }
            if e == webpki::Error::NameConstraintViolation {
                if let Some(m) =
                    super::pathcheck::unsupported_intermediate_constraints(intermediates)
                {
                    return Err(bad(m));
                }
            }
            Err(bad(describe(&e, at)))
        }
    }
}

/// A webpki error in words.
fn describe(e: &webpki::Error, at: u64) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => {
            format!("a certificate in the chain had expired at {}", rfc3339(at))
        }
        E::CertNotValidYet { .. } => {
            format!(
                "a certificate in the chain was not yet valid at {}",
                rfc3339(at)
            )
        }
        E::UnknownIssuer => "the certificate does not chain to a trusted root".into(),
        E::RequiredEkuNotFoundContext(_) => {
            "the signing certificate lacks the code-signing extended key usage".into()
        }
        E::CaUsedAsEndEntity => "the signing certificate is a CA certificate".into(),
        E::InvalidSignatureForPublicKey => {
            "a certificate's signature does not verify with its issuer's key".into()
        }
        E::EndEntityUsedAsCa => {
            "a certificate in the chain issued another but is not a CA (basicConstraints)".into()
        }
        E::PathLenConstraintViolated => {
            "an intermediate CA's path length constraint is exceeded".into()
        }
        E::NameConstraintViolation => {
            "a certificate's names violate an issuer's name constraints".into()
        }
        other => format!("certificate path rejected: {other:?}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    /// A root renewed with the same name and key (the expired copy listed first, as a roots file
    /// that keeps both during a rollover does): the path is valid through the renewed copy in
    /// either order, and refused through the expired copy alone.
    #[test]
    fn renewed_root_beside_its_expired_copy_is_used_in_either_order() {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let root_key = KeyPair::generate().unwrap();
        let root = |until: i32| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, "Rollover Root");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(until, 1, 1);
            p
        };
        let old = root(2021).self_signed(&root_key).unwrap().der().to_vec();
        let new_params = root(2099);
        let new = new_params.self_signed(&root_key).unwrap().der().to_vec();
        let issuer = Issuer::new(new_params, root_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::Rfc822Name("a@example.com".try_into().unwrap())];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        p.not_before = rcgen::date_time_ymd(2020, 6, 1);
        p.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
        let now = 1_800_000_000; // 2027
        for roots in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            validate_path(&leaf, &[], &roots, now, EkuPolicy::CodeSigning).unwrap();
        }
        let e = validate_path(&leaf, &[], &[old], now, EkuPolicy::CodeSigning).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn garbage_pem_is_an_error() {
        for t in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(pem_certificates(t).is_err());
        }
    }
}

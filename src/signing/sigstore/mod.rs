//! Sigstore bundles, verified offline against a trusted root (`trusted_root.json`): keyless
//! (a Fulcio certificate, checked against an identity policy) or signed with a managed key
//! (the bundle names a public key by hint; the verifier supplies the key).
//!
//! The steps, each before the next (the numbers mark them in [`verify_evidence`]):
//!
//! 1. parse the bundle (media type v0.1–v0.3); its signer must be the kind the policy expects
//!    (certificate or managed key); exactly one log entry;
//! 2. the log entry: a log of the trusted root by key id, then
//!    - Rekor v1 (`hashedrekord` 0.0.1, `dsse` 0.0.1, `intoto` 0.0.2): the signed entry
//!      timestamp (SET) over the entry, which makes its integrated time a signed fact; the
//!      Merkle inclusion proof of the entry's body up to the proof's root, and the signed
//!      checkpoint that commits the log to that root (required from bundle v0.2 on; v0.1
//!      bundles may carry the SET alone); the integrated time not in the future;
//!    - Rekor v2 (`hashedrekord` 0.0.2; `dsse` 0.0.2 is refused, as sigstore-python and
//!      sigstore-java refuse it): no SET and no integrated time, so the inclusion proof and
//!      its checkpoint are required, and the checkpoint must be a signed note whose origin is
//!      the log's name (its URL's host; a log without `baseUrl` in the trusted root is
//!      refused) with a signature line of that name by the log's key (witness cosignatures
//!      are ignored);
//!
//!    then every RFC 3161 timestamp (a v2 entry needs one: its time is the signing time), and
//!    the log key valid at the signing time (the integrated time, else the earliest timestamp);
//! 3. keyless only: the signing certificate valid at every timestamp, a path to a Fulcio CA of
//!    the trusted root valid at the signing time (rustls-webpki, code-signing EKU required),
//!    no root certificate carried in the bundle, and at least one signed certificate timestamp
//!    (SCT) that verifies with a CT log key of the trusted root;
//! 4. keyless only, the identity policy: a subject alternative name equal to the expected
//!    identity and the Fulcio issuer extension (OID 1.3.6.1.4.1.57264.1.8, or the older .1.1)
//!    equal to the expected issuer;
//! 5. the signature with the certificate's (or the managed) key (DSSE PAE, or the artifact for
//!    a message signature), and the log entry's body describing exactly this signature,
//!    certificate or key and payload/artifact (a v2 hashedrekord of a DSSE envelope records
//!    the SHA-256 of its PAE).
//!
//! Built on x509-cert (decoding), rustls-webpki (path validation), p256/p384/ed25519-dalek
//! (signatures) and sha2; the Merkle and checkpoint checks follow RFC 9162 §2.1.3.2 and the
//! C2SP signed-note format.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use x509_cert::der::{self, Decode as _, Encode as _};

use super::bundle::{pae, PAYLOAD_TYPE};
use super::pki::{self, LeafInfo, LeafKey};
use super::statement::Statement;
use super::verify::{Signer, VerifiedStatement};
use super::SigningError;

mod tsa;

/// Largest trusted root read.
pub const MAX_TRUSTED_ROOT_LEN: u64 = 4 << 20;
/// Largest Sigstore bundle read.
pub const MAX_SIGSTORE_BUNDLE_LEN: usize = 32 << 20;

/// The Sigstore public-good instance's trusted root, as sigstore-python 4.5.1 ships it
/// (`sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json`); see
/// docs/signing.md for how to update it.
pub const PUBLIC_GOOD_TRUSTED_ROOT: &str = include_str!("public_good_trusted_root.json");

const SCT_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
const FULCIO_ISSUER_V2: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const FULCIO_ISSUER_V1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");

fn fail(m: impl Into<String>) -> SigningError {
    SigningError::Sigstore(m.into())
}

/// Protobuf-JSON bytes: standard or URL-safe base64; line breaks are skipped, as Go's decoder
/// (which wrote many real bundles) skips them.
/// Most transparency-log entries, timestamps, certificates, signatures or proof hashes a
/// Sigstore bundle may list (each list is refused at the first element past it, before it is
/// built: a bundle of millions of empty entries costs nothing).
pub const MAX_BUNDLE_ITEMS: usize = 64;
/// Most logs or authorities of each kind a trusted root may list.
pub const MAX_TRUST_ENTRIES: usize = 1024;

fn b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let owned;
    let s = if s.contains(['\n', '\r']) {
        owned = s.replace(['\n', '\r'], "");
        owned.as_str()
    } else {
        s
    };
    [STANDARD, URL_SAFE].iter().find_map(|e| e.decode(s).ok())
}

// ---------------------------------------------------------------------------------------------
// Trusted root

/// A closed time interval in milliseconds since the Unix epoch (`end` absent: open-ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Validity {
    start: i64,
    end: Option<i64>,
}

impl Validity {
    fn contains(&self, ms: i64) -> bool {
        ms >= self.start && self.end.is_none_or(|e| ms <= e)
    }
}

/// A transparency or CT log key.
#[derive(Clone, Debug)]
struct LogKey {
    key_id: Vec<u8>,
    key: LeafKey,
    valid: Validity,
    /// Host of the log's base URL: a Rekor v2 log's checkpoint origin and signer name.
    name: Option<String>,
}

/// One Fulcio certificate authority: its chain (root last) and validity.
#[derive(Clone, Debug)]
struct CertAuthority {
    chain: Vec<Vec<u8>>,
    valid: Validity,
}

/// A Sigstore trusted root: Rekor log keys, CT log keys and Fulcio CAs.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    tlogs: Vec<LogKey>,
    ctlogs: Vec<LogKey>,
    cas: Vec<CertAuthority>,
    tsas: Vec<CertAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_TRUST_ENTRIES>"
    )]
    tlogs: Vec<RawLog>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_TRUST_ENTRIES>"
    )]
    ctlogs: Vec<RawLog>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_TRUST_ENTRIES>"
    )]
    certificate_authorities: Vec<RawCa>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_TRUST_ENTRIES>"
    )]
    timestamp_authorities: Vec<RawCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: RawPublicKey,
    log_id: RawLogId,
    base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: Option<String>,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    cert_chain: RawCertChain,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawCertChain {
    #[serde(deserialize_with = "crate::input::capped_seq::<_, _, MAX_BUNDLE_ITEMS>")]
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: Option<String>,
}

/// Milliseconds since the Unix epoch for an RFC 3339 UTC time (`2021-01-12T11:53:27Z`, with an
/// optional fraction).
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n];
        let first3: String = digits.chars().chain("000".chars()).take(3).collect();
        ms = first3.parse().ok()?;
        rest = &frac[n..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

fn validity(v: Option<RawValidity>, what: &str) -> Result<Validity, SigningError> {
    let bad = |m: String| SigningError::Bundle(format!("trusted root: {m}"));
    let v = v.ok_or_else(|| bad(format!("{what} has no `validFor`")))?;
    let start = v
        .start
        .as_deref()
        .ok_or_else(|| bad(format!("{what}: `validFor` has no start")))?;
    let start =
        parse_rfc3339_ms(start).ok_or_else(|| bad(format!("{what}: bad time `{start}`")))?;
    let end = match v.end.as_deref() {
        None => None,
        Some(e) => Some(parse_rfc3339_ms(e).ok_or_else(|| bad(format!("{what}: bad time `{e}`")))?),
    };
    Ok(Validity { start, end })
}

/// The host of an `http(s)://host[:port][/path]` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', ':']).next()?;
    (!host.is_empty()).then(|| host.to_string())
}

fn log_keys(raw: Vec<RawLog>, what: &str) -> Result<Vec<LogKey>, SigningError> {
    let bad = |m: String| SigningError::Bundle(format!("trusted root: {m}"));
    let mut out = Vec::new();
    for l in raw {
        let key_id = b64(&l.log_id.key_id).ok_or_else(|| bad(format!("{what}: bad key id")))?;
        let valid = validity(l.public_key.valid_for, what)?;
        let der = l
            .public_key
            .raw_bytes
            .as_deref()
            .and_then(b64)
            .ok_or_else(|| bad(format!("{what}: key missing or not base64")))?;
        // A key type hallmark cannot use (RSA) makes that one log unusable, not the root.
        if let Ok(key) = LeafKey::from_spki_der(&der) {
            let name = l.base_url.as_deref().and_then(url_host);
            out.push(LogKey {
                key_id,
                key,
                valid,
                name,
            });
        }
    }
    Ok(out)
}

impl TrustedRoot {
    /// Parse a `trusted_root.json` (media type `application/vnd.dev.sigstore.trustedroot...`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, SigningError> {
        let bad = |m: String| SigningError::Bundle(format!("trusted root: {m}"));
        if bytes.len() as u64 > MAX_TRUSTED_ROOT_LEN {
            return Err(SigningError::Limit("trusted root over 4 MiB".into()));
        }
        let raw: RawRoot = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a well-formed trusted root: {e}")))?;
        let mt = raw.media_type.unwrap_or_default();
        if !mt.starts_with("application/vnd.dev.sigstore.trustedroot") {
            return Err(bad(format!("media type `{mt}`")));
        }
        let cas = Self::authorities(raw.certificate_authorities, "certificate authority")?;
        let tsas = Self::authorities(raw.timestamp_authorities, "timestamp authority")?;
        Ok(Self {
            tlogs: log_keys(raw.tlogs, "transparency log")?,
            ctlogs: log_keys(raw.ctlogs, "CT log")?,
            cas,
            tsas,
        })
    }

    fn authorities(raw: Vec<RawCa>, what: &str) -> Result<Vec<CertAuthority>, SigningError> {
        let bad = |m: String| SigningError::Bundle(format!("trusted root: {m}"));
        let mut cas = Vec::new();
        for c in raw {
            let valid = validity(c.valid_for, what)?;
            let chain = c
                .cert_chain
                .certificates
                .iter()
                .map(|x| x.raw_bytes.as_deref().and_then(b64))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("{what} chain empty or not base64")))?;
            cas.push(CertAuthority { chain, valid });
        }
        Ok(cas)
    }

    /// The public-good instance's root shipped with hallmark ([`PUBLIC_GOOD_TRUSTED_ROOT`]).
    pub fn public_good() -> Result<Self, SigningError> {
        Self::from_json(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes())
    }
}

/// What a Sigstore signature must prove.
#[derive(Clone, Debug)]
pub struct SigstorePolicy {
    /// The trusted root.
    pub root: TrustedRoot,
    /// Who must have signed.
    pub signer: SigstoreSigner,
}

/// The signer a [`SigstorePolicy`] expects.
#[derive(Clone, Debug)]
pub enum SigstoreSigner {
    /// Keyless: a Fulcio certificate for this identity, issued on a token from this issuer.
    Identity {
        /// An email, URI or username subject alternative name of the certificate.
        identity: String,
        /// The OIDC issuer, as Fulcio recorded it.
        issuer: String,
    },
    /// A managed key: the bundle names a public key (by hint) instead of a certificate.
    Key(LeafKey),
}

impl SigstoreSigner {
    /// A managed key from its SPKI PEM text (ECDSA P-256/P-384 or Ed25519).
    pub fn key_from_pem(pem: &str) -> Result<Self, SigningError> {
        let der = spki_pem_der(pem).ok_or_else(|| {
            SigningError::Key(
                "not a readable SPKI PEM public key (`BEGIN PUBLIC KEY`, base64 DER)".into(),
            )
        })?;
        let key = LeafKey::from_spki_der(&der).map_err(|_| {
            SigningError::Key("not an ECDSA P-256/P-384 or Ed25519 public key".into())
        })?;
        Ok(SigstoreSigner::Key(key))
    }
}

/// DER of a `PUBLIC KEY` PEM block.
fn spki_pem_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")?
        .strip_suffix("-----END PUBLIC KEY-----")?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// What the log entry must name as the signer's verifier.
enum Verifier<'a> {
    /// The signing certificate (DER).
    Cert(&'a [u8]),
    /// The managed key.
    Key(&'a LeafKey),
}

impl Verifier<'_> {
    /// A Rekor v1 entry's base64 PEM (a certificate, or a public key for a managed key).
    fn is_pem_b64(&self, s: Option<&str>) -> bool {
        let Some(s) = s else { return false };
        match self {
            Verifier::Cert(der) => pem_b64_to_der(s).as_deref() == Some(der),
            Verifier::Key(k) => b64(s)
                .and_then(|p| String::from_utf8(p).ok())
                .and_then(|p| spki_pem_der(&p))
                .is_some_and(|d| same_key(k, &d)),
        }
    }

    /// A Rekor v2 entry's verifier (`x509Certificate` or `publicKey`, DER in `rawBytes`).
    fn is_v2(&self, v: &serde_json::Value) -> bool {
        match self {
            Verifier::Cert(der) => {
                str_at(v, &["x509Certificate", "rawBytes"])
                    .and_then(b64)
                    .as_deref()
                    == Some(der)
            }
            Verifier::Key(k) => str_at(v, &["publicKey", "rawBytes"])
                .and_then(b64)
                .is_some_and(|d| same_key(k, &d)),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Verifier::Cert(_) => "certificate",
            Verifier::Key(_) => "public key",
        }
    }
}

/// The key of a DER SPKI is `k` (compared re-encoded, so equal keys in other encodings match).
fn same_key(k: &LeafKey, spki: &[u8]) -> bool {
    LeafKey::from_spki_der(spki).is_ok_and(|o| o.to_spki_der() == k.to_spki_der())
}

// ---------------------------------------------------------------------------------------------
// Bundle

/// A protobuf-JSON int64: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int {
    S(String),
    N(i64),
}

impl Int {
    fn get(&self) -> Option<i64> {
        match self {
            Int::S(s) => s.parse().ok(),
            Int::N(n) => Some(*n),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SBundle {
    media_type: Option<String>,
    verification_material: Option<SMaterial>,
    dsse_envelope: Option<SEnvelope>,
    message_signature: Option<SMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SMaterial {
    certificate: Option<RawCert>,
    x509_certificate_chain: Option<RawCertChain>,
    public_key: Option<serde::de::IgnoredAny>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_BUNDLE_ITEMS>"
    )]
    tlog_entries: Vec<STlog>,
    timestamp_verification_data: Option<STimestamps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct STimestamps {
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_BUNDLE_ITEMS>"
    )]
    rfc3161_timestamps: Vec<STimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct STimestamp {
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct STlog {
    log_index: Option<Int>,
    log_id: Option<RawLogId>,
    kind_version: Option<SKind>,
    integrated_time: Option<Int>,
    inclusion_promise: Option<SPromise>,
    inclusion_proof: Option<SProof>,
    canonicalized_body: Option<String>,
}

#[derive(Deserialize)]
struct SKind {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SProof {
    log_index: Option<Int>,
    root_hash: Option<String>,
    tree_size: Option<Int>,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_BUNDLE_ITEMS>"
    )]
    hashes: Vec<String>,
    checkpoint: Option<SCheckpoint>,
}

#[derive(Deserialize)]
struct SCheckpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SEnvelope {
    payload: String,
    payload_type: String,
    #[serde(
        default,
        deserialize_with = "crate::input::capped_seq::<_, _, MAX_BUNDLE_ITEMS>"
    )]
    signatures: Vec<SSig>,
}

#[derive(Deserialize)]
struct SSig {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SMessage {
    message_digest: Option<SDigest>,
    signature: String,
}

#[derive(Deserialize)]
struct SDigest {
    algorithm: String,
    digest: String,
}

/// The signed content of a verified Sigstore bundle.
#[derive(Clone, Debug)]
pub enum Content {
    /// A DSSE envelope.
    Dsse {
        /// Payload type.
        payload_type: String,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// A signature over an artifact with this SHA-256.
    Message {
        /// SHA-256 of the artifact.
        sha256: [u8; 32],
    },
}

/// The result of [`verify_evidence`]: the signed content and who signed it.
#[derive(Clone, Debug)]
pub struct SigstoreVerified {
    /// What was signed.
    pub content: Content,
    /// The signer (always [`Signer::Sigstore`]).
    pub signer: Signer,
    /// Hint of the certificate's public key (SHA-256 hex of its SPKI PEM text).
    pub key_hint: String,
}

fn bundle_version(mt: &str) -> Option<u8> {
    match mt {
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => Some(1),
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => Some(2),
        "application/vnd.dev.sigstore.bundle+json;version=0.3"
        | "application/vnd.dev.sigstore.bundle.v0.3+json" => Some(3),
        _ => None,
    }
}

/// Verify a Sigstore bundle's evidence (steps 1–5 of the module docs). `artifact` is the signed
/// file for a message signature, or for a DSSE in-toto statement a file that must be one of its
/// subjects; `None` for a DSSE bundle whose payload the caller checks (an OMS statement).
pub fn verify_evidence(
    bytes: &[u8],
    artifact: Option<&[u8]>,
    policy: &SigstorePolicy,
) -> Result<SigstoreVerified, SigningError> {
    verify_evidence_at(bytes, artifact, policy, pki::now_secs())
}

fn verify_evidence_at(
    bytes: &[u8],
    artifact: Option<&[u8]>,
    policy: &SigstorePolicy,
    now: u64,
) -> Result<SigstoreVerified, SigningError> {
    let bad = |m: &str| SigningError::Bundle(m.to_string());
    // 1. Parse, and refuse what is not checked here.
    if bytes.len() > MAX_SIGSTORE_BUNDLE_LEN {
        return Err(SigningError::Limit("signature bundle over 32 MiB".into()));
    }
    let b: SBundle = serde_json::from_slice(bytes)
        .map_err(|e| SigningError::Bundle(format!("not a well-formed bundle: {e}")))?;
    let mt = b.media_type.unwrap_or_default();
    let version =
        bundle_version(&mt).ok_or_else(|| SigningError::Bundle(format!("media type `{mt}`")))?;
    let vm = b
        .verification_material
        .ok_or_else(|| bad("no verificationMaterial"))?;
    if vm.public_key.is_some() && (vm.certificate.is_some() || vm.x509_certificate_chain.is_some())
    {
        return Err(bad(
            "verification material holds both a key and a certificate",
        ));
    }
    // The signer the policy expects must be the kind the bundle names.
    match (&policy.signer, vm.public_key.is_some()) {
        (SigstoreSigner::Identity { .. }, true) => {
            return Err(fail(
                "the bundle is signed with a managed key, not a Fulcio certificate, so it proves \
                 no identity (verify it with the key)",
            ))
        }
        (SigstoreSigner::Key(_), false) => {
            return Err(fail(
                "the bundle is signed with a Fulcio certificate, not a managed key (verify it \
                 with an identity and issuer)",
            ))
        }
        _ => {}
    }
    let timestamps: Vec<Vec<u8>> = vm
        .timestamp_verification_data
        .map(|t| t.rfc3161_timestamps)
        .unwrap_or_default()
        .iter()
        .map(|t| b64(&t.signed_timestamp))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("signed timestamp not base64"))?;
    // The certificate (keyless) or nothing (managed key: the policy holds the key).
    let leaf = match &policy.signer {
        SigstoreSigner::Key(_) => None,
        SigstoreSigner::Identity { .. } => {
            let certs: Vec<Vec<u8>> = match (vm.certificate, vm.x509_certificate_chain) {
                (Some(c), None) => vec![c
                    .raw_bytes
                    .as_deref()
                    .and_then(b64)
                    .ok_or_else(|| bad("certificate missing or not base64"))?],
                (None, Some(chain)) => chain
                    .certificates
                    .iter()
                    .map(|c| c.raw_bytes.as_deref().and_then(b64))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("certificate not base64"))?,
                _ => return Err(bad("verification material holds no certificate")),
            };
            let Some((leaf_der, extra)) = certs.split_first() else {
                return Err(bad("empty certificate chain"));
            };
            let leaf = LeafInfo::parse(leaf_der)?;
            for c in extra {
                let x = LeafInfo::parse(c)?;
                if x.subject == x.issuer {
                    return Err(fail(
                        "the bundle's certificate chain carries a root certificate (roots come \
                         only from the trusted root)",
                    ));
                }
            }
            Some((leaf_der.clone(), leaf))
        }
    };
    // What the log entry must name, and the key the signature must verify with.
    let (who, signing_key) = match (&leaf, &policy.signer) {
        (Some((der, l)), _) => (Verifier::Cert(der), &l.key),
        (None, SigstoreSigner::Key(k)) => (Verifier::Key(k), k),
        (None, SigstoreSigner::Identity { .. }) => {
            return Err(bad("verification material holds no certificate"))
        }
    };
    if vm.tlog_entries.len() != 1 {
        return Err(fail(format!(
            "the bundle holds {} transparency-log entries; exactly one is required",
            vm.tlog_entries.len()
        )));
    }
    let entry = &vm.tlog_entries[0];
    let kv = entry
        .kind_version
        .as_ref()
        .ok_or_else(|| bad("log entry has no kindVersion"))?;
    let rekor_v2 = rekor_generation(&kv.kind, &kv.version)?;
    // Content: exactly one of a DSSE envelope and a message signature.
    let (content, signature) = match (b.dsse_envelope, b.message_signature) {
        (Some(env), None) => {
            if env.signatures.len() != 1 {
                return Err(fail("a DSSE envelope must carry exactly one signature"));
            }
            let sig = b64(&env.signatures[0].sig).ok_or_else(|| bad("signature not base64"))?;
            let payload = b64(&env.payload).ok_or_else(|| bad("payload not base64"))?;
            (
                Content::Dsse {
                    payload_type: env.payload_type,
                    payload,
                },
                sig,
            )
        }
        (None, Some(m)) => {
            let sig = b64(&m.signature).ok_or_else(|| bad("signature not base64"))?;
            let art = artifact.ok_or_else(|| {
                SigningError::Unsupported("a message signature needs the signed artifact".into())
            })?;
            let sha: [u8; 32] = Sha256::digest(art).into();
            if let Some(d) = &m.message_digest {
                if d.algorithm != "SHA2_256" {
                    return Err(SigningError::Unsupported(format!(
                        "message digest {}",
                        d.algorithm
                    )));
                }
                if b64(&d.digest).as_deref() != Some(&sha[..]) {
                    return Err(fail("the bundle's message digest is not the artifact's"));
                }
            }
            (Content::Message { sha256: sha }, sig)
        }
        _ => {
            return Err(bad(
                "the bundle needs one of dsseEnvelope and messageSignature",
            ))
        }
    };

    // 2. The log entry.
    let body_b64 = entry
        .canonicalized_body
        .as_deref()
        .ok_or_else(|| bad("log entry has no canonicalizedBody"))?;
    let body = b64(body_b64).ok_or_else(|| bad("canonicalizedBody not base64"))?;
    let log_index = entry
        .log_index
        .as_ref()
        .and_then(Int::get)
        .ok_or_else(|| bad("log entry has no logIndex"))?;
    if log_index < 0 {
        return Err(fail("negative log index"));
    }
    let key_id = entry
        .log_id
        .as_ref()
        .and_then(|l| b64(&l.key_id))
        .ok_or_else(|| bad("log entry has no logId"))?;
    let log = policy
        .root
        .tlogs
        .iter()
        .find(|l| l.key_id == key_id)
        .ok_or_else(|| fail("the log entry is from a log the trusted root does not list"))?;
    let integrated = if rekor_v2 {
        // A Rekor v2 log signs only checkpoints; the time must come from a timestamp authority.
        let p = entry.inclusion_proof.as_ref().ok_or_else(|| {
            fail("the Rekor v2 log entry has no inclusion proof, which is its only log evidence")
        })?;
        check_inclusion(p, &body, log, true)?;
        None
    } else {
        let integrated = entry
            .integrated_time
            .as_ref()
            .and_then(Int::get)
            .filter(|t| *t > 0)
            .ok_or_else(|| fail("the log entry has no integrated time"))?;
        let promise = entry.inclusion_promise.as_ref().ok_or_else(|| {
            fail("the log entry has no signed entry timestamp, so its time is not signed")
        })?;
        // The SET signs the canonical JSON (sorted keys, no spaces) of the entry.
        let mut set_doc = BTreeMap::new();
        set_doc.insert("body", serde_json::json!(body_b64));
        set_doc.insert("integratedTime", serde_json::json!(integrated));
        set_doc.insert("logID", serde_json::json!(hex::encode(&key_id)));
        set_doc.insert("logIndex", serde_json::json!(log_index));
        let set_msg = serde_json::to_vec(&set_doc).map_err(|e| fail(e.to_string()))?;
        let set_sig = b64(&promise.signed_entry_timestamp).ok_or_else(|| bad("SET not base64"))?;
        if !log.key.verify(&set_msg, &set_sig) {
            return Err(fail(
                "the signed entry timestamp does not verify with the log's key",
            ));
        }
        match &entry.inclusion_proof {
            Some(p) => check_inclusion(p, &body, log, false)?,
            None if version >= 2 => {
                return Err(fail(
                    "the log entry has no inclusion proof (required from bundle v0.2)",
                ))
            }
            None => {}
        }
        if integrated as u64 > now {
            return Err(fail(format!(
                "the entry's integrated time {} is in the future",
                pki::rfc3339(integrated as u64)
            )));
        }
        Some(integrated as u64)
    };
    // Every RFC 3161 timestamp must verify; a Rekor v2 entry needs at least one.
    let mut stamped = Vec::new();
    for ts in &timestamps {
        stamped.push(tsa::verify_timestamp(ts, &signature, &policy.root.tsas)?);
    }
    let t = match (integrated, stamped.iter().min()) {
        (Some(t), _) => t,
        (None, Some(t)) => *t,
        (None, None) => {
            return Err(fail(
                "the Rekor v2 entry records no time and the bundle carries no RFC 3161 \
                 timestamp, so nothing says when it was signed",
            ))
        }
    };
    let t_ms = (t as i64).saturating_mul(1000);
    if !log.valid.contains(t_ms) {
        return Err(fail(format!(
            "the log's key was not valid at the entry's time ({})",
            pki::rfc3339(t)
        )));
    }

    // 3. The certificate: valid at every timestamp, a path to a Fulcio CA at the signing
    //    time, then an SCT. 4. The identity policy. (Neither for a managed key.)
    let mut signer_info = None;
    if let (Some((leaf_der, leaf)), SigstoreSigner::Identity { identity, issuer }) =
        (&leaf, &policy.signer)
    {
        let outside = |ts: u64| ts < leaf.not_before || ts > leaf.not_after;
        // Rekor v2: the timestamps are the only time, so check them before the path.
        if rekor_v2 {
            if let Some(ts) = stamped.iter().find(|ts| outside(**ts)) {
                return Err(fail(format!(
                    "the RFC 3161 timestamp ({}) is outside the signing certificate's validity",
                    pki::rfc3339(*ts)
                )));
            }
        }
        let mut issuer_spki = None;
        let mut last_err =
            fail("the trusted root lists no certificate authority valid at that time");
        for ca in policy.root.cas.iter().filter(|c| c.valid.contains(t_ms)) {
            let Some((root, inter)) = ca.chain.split_last() else {
                continue;
            };
            match pki::validate_path(
                leaf_der,
                inter,
                std::slice::from_ref(root),
                t,
                pki::EkuPolicy::CodeSigning,
            ) {
                Ok(spki) => {
                    issuer_spki = Some(spki);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let issuer_spki = issuer_spki.ok_or(last_err)?;
        check_sct(leaf, &issuer_spki, &policy.root)?;
        if let Some(ts) = stamped.iter().find(|ts| outside(**ts)) {
            return Err(fail(format!(
                "the RFC 3161 timestamp ({}) is outside the signing certificate's validity",
                pki::rfc3339(*ts)
            )));
        }
        if !leaf.has_identity(identity) {
            return Err(SigningError::Identity(format!(
                "the certificate is for [{}], not `{identity}`",
                leaf.sans
                    .iter()
                    .map(|s| s.value().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )));
        }
        let got = fulcio_issuer(leaf)?;
        if &got != issuer {
            return Err(SigningError::Identity(format!(
                "the certificate's OIDC issuer is `{got}`, not `{issuer}`"
            )));
        }
        signer_info = Some((identity.clone(), got, leaf.fingerprint.clone()));
    }

    // 5. The signature, and the log entry describing exactly it.
    let body: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| fail("the log entry's body is not JSON"))?;
    let whose = match who {
        Verifier::Cert(_) => "certificate's",
        Verifier::Key(_) => "given",
    };
    match &content {
        Content::Dsse {
            payload_type,
            payload,
        } => {
            let signed = pae(payload_type, payload);
            if !signing_key.verify(&signed, &signature) {
                return Err(fail(format!(
                    "the DSSE signature does not verify with the {whose} key"
                )));
            }
            if rekor_v2 {
                check_v2_body(&body, &kv.kind, &content, &signed, &signature, &who)?;
            } else {
                check_dsse_body(&body, &kv.kind, payload_type, payload, &signature, &who)?;
            }
            if let Some(art) = artifact {
                check_subject(payload_type, payload, art)?;
            }
        }
        Content::Message { sha256 } => {
            if !signing_key.verify_prehash(sha256, &signature) {
                return Err(fail(format!(
                    "the signature does not verify with the {whose} key"
                )));
            }
            if rekor_v2 {
                check_v2_body(&body, &kv.kind, &content, &[], &signature, &who)?;
            } else {
                check_hashedrekord_body(&body, &kv.kind, sha256, &signature, &who)?;
            }
        }
    }
    let spki = signing_key.to_spki_der();
    let key_hint = hex::encode(Sha256::digest(super::verify::spki_pem(&spki)));
    let signer = match signer_info {
        Some((identity, issuer, fingerprint)) => Signer::Sigstore {
            identity,
            issuer,
            fingerprint,
            log_index: log_index as u64,
            integrated_time: t,
        },
        None => Signer::Key {
            hint: key_hint.clone(),
        },
    };
    Ok(SigstoreVerified {
        content,
        key_hint,
        signer,
    })
}

/// Whether a log entry kind is a Rekor v2 (tile-backed: no signed entry timestamp, no
/// integrated time) one; an error for a kind not accepted.
///
/// Rekor v2 `dsse` 0.0.2 entries are refused, as sigstore-python and sigstore-java refuse
/// them (their signers log a DSSE envelope in Rekor v2 as a `hashedrekord` over its PAE): a
/// bundle that only this verifier accepted would not be a portable Sigstore bundle, and one
/// entry format for DSSE in v2 leaves one body check to get right.
fn rekor_generation(kind: &str, version: &str) -> Result<bool, SigningError> {
    match (kind, version) {
        ("hashedrekord", "0.0.1") | ("dsse", "0.0.1") | ("intoto", "0.0.2") => Ok(false),
        ("hashedrekord", "0.0.2") => Ok(true),
        ("dsse", "0.0.2") => Err(SigningError::Unsupported(
            "log entry kind dsse 0.0.2 (Rekor v2): refused, as sigstore-python and \
             sigstore-java refuse it (Rekor v2 logs a DSSE envelope as a hashedrekord 0.0.2 \
             entry)"
                .into(),
        )),
        _ => Err(SigningError::Unsupported(format!(
            "log entry kind {kind} {version}"
        ))),
    }
}

/// The Merkle inclusion proof (RFC 9162 §2.1.3.2) and the checkpoint that signs its root.
/// `rekor_v2`: the checkpoint must name the log (origin and signer: the host of its URL).
fn check_inclusion(
    p: &SProof,
    body: &[u8],
    log: &LogKey,
    rekor_v2: bool,
) -> Result<(), SigningError> {
    let bad = |m: &str| SigningError::Bundle(m.to_string());
    let index = p
        .log_index
        .as_ref()
        .and_then(Int::get)
        .ok_or_else(|| bad("inclusion proof has no logIndex"))?;
    let size = p
        .tree_size
        .as_ref()
        .and_then(Int::get)
        .ok_or_else(|| bad("inclusion proof has no treeSize"))?;
    let root = p
        .root_hash
        .as_deref()
        .and_then(b64)
        .ok_or_else(|| bad("inclusion proof has no rootHash"))?;
    let hashes = p
        .hashes
        .iter()
        .map(|h| b64(h).filter(|v| v.len() == 32))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("inclusion proof hash not 32 base64 bytes"))?;
    if index < 0 || size <= index {
        return Err(fail("inclusion proof index outside the tree"));
    }
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(body);
    let leaf: [u8; 32] = leaf.finalize().into();
    let computed = merkle_root(index as u64, size as u64, leaf, &hashes)
        .ok_or_else(|| fail("the inclusion proof has the wrong number of hashes"))?;
    if computed[..] != root[..] {
        return Err(fail("the inclusion proof does not lead to its root hash"));
    }
    let cp = p.checkpoint.as_ref().ok_or_else(|| {
        fail("the inclusion proof has no checkpoint, so nothing signs its root hash")
    })?;
    // A Rekor v2 checkpoint's origin is the log's name, the host of its base URL; a trusted
    // root that gives no URL leaves nothing to check it against, so the entry is refused.
    let name = if rekor_v2 {
        Some(log.name.as_deref().ok_or_else(|| {
            fail(
                "the trusted root gives the Rekor v2 log no baseUrl, so the checkpoint's \
                 origin cannot be checked against the log's name",
            )
        })?)
    } else {
        None
    };
    let (cp_size, cp_root) = check_checkpoint(&cp.envelope, log, name)?;
    if cp_size != size as u64 || cp_root != root {
        return Err(fail(
            "the checkpoint is for another tree than the inclusion proof",
        ));
    }
    Ok(())
}

/// The root reached from `leaf` at `index` in a tree of `size` leaves through `proof`.
fn merkle_root(index: u64, size: u64, leaf: [u8; 32], proof: &[Vec<u8>]) -> Option<[u8; 32]> {
    let node = |a: &[u8], b: &[u8]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(a);
        h.update(b);
        h.finalize().into()
    };
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// A signed note (`origin\nsize\nroot\n[...]\n\n— name base64(keyhint‖sig)\n`): at least one
/// signature whose 4-byte key hint is the log's and that verifies with the log's key; other
/// lines (witness cosignatures, unknown keys) are ignored. With `name` (a Rekor v2 log, whose
/// key id is the note key hash over its name), the origin and the signature's name must be
/// it. Returns (tree size, root hash).
fn check_checkpoint(
    note: &str,
    log: &LogKey,
    name: Option<&str>,
) -> Result<(u64, Vec<u8>), SigningError> {
    let (text, sigs) = note
        .split_once("\n\n")
        .ok_or_else(|| fail("the checkpoint is not a signed note"))?;
    let signed = format!("{text}\n");
    let mut lines = text.split('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| fail("the checkpoint has no origin"))?;
    if let Some(n) = name.filter(|n| *n != origin) {
        return Err(fail(format!(
            "the checkpoint's origin `{}` is not the log's name `{n}`",
            origin.escape_debug()
        )));
    }
    let size: u64 = lines
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail("the checkpoint has no tree size"))?;
    let root = lines
        .next()
        .and_then(b64)
        .filter(|r| r.len() == 32)
        .ok_or_else(|| fail("the checkpoint has no root hash"))?;
    let hint = log.key_id.get(..4).unwrap_or_default();
    let mut seen_hint = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((signer, sig)) = rest.rsplit_once(' ') else {
            continue;
        };
        if name.is_some_and(|n| n != signer) {
            continue;
        }
        let Some(raw) = b64(sig).filter(|r| r.len() > 4) else {
            continue;
        };
        if &raw[..4] != hint {
            continue;
        }
        seen_hint = true;
        if log.key.verify(signed.as_bytes(), &raw[4..]) {
            return Ok((size, root));
        }
    }
    Err(fail(if seen_hint {
        "the checkpoint's signature does not verify with the log's key"
    } else {
        "the checkpoint carries no signature by the log that holds the entry"
    }))
}

/// At least one embedded SCT signed by a CT log of the trusted root (RFC 6962 §3.2, precert).
fn check_sct(leaf: &LeafInfo, issuer_spki: &[u8], root: &TrustedRoot) -> Result<(), SigningError> {
    use x509_cert::ext::pkix::sct::{SignedCertificateTimestampList, Version};
    let tbs = &leaf.cert.tbs_certificate;
    let ext = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == SCT_OID)
        .ok_or_else(|| fail("the certificate carries no signed certificate timestamp"))?;
    let list = SignedCertificateTimestampList::from_der(ext.extn_value.as_bytes())
        .map_err(|e| fail(format!("malformed SCT list: {e}")))?;
    let scts = list
        .parse_timestamps()
        .map_err(|e| fail(format!("malformed SCT list: {e:?}")))?;
    // The precertificate TBS is the certificate's TBS without the SCT extension.
    let mut pre = tbs.clone();
    if let Some(exts) = pre.extensions.as_mut() {
        exts.retain(|e| e.extn_id != SCT_OID);
    }
    let pre = pre
        .to_der()
        .map_err(|e| fail(format!("cannot re-encode the certificate: {e}")))?;
    let issuer_hash = Sha256::digest(issuer_spki);
    let mut why = "no SCT is from a CT log of the trusted root";
    for s in scts {
        let Ok(sct) = s.parse_timestamp() else {
            continue;
        };
        if sct.version != Version::V1 {
            continue;
        }
        let Some(ct) = root.ctlogs.iter().find(|l| l.key_id == sct.log_id.key_id) else {
            continue;
        };
        if !ct.valid.contains(sct.timestamp as i64) {
            why = "the SCT's CT log key was not valid at the SCT's time";
            continue;
        }
        let ext = sct.extensions.as_slice();
        let (Ok(tbs_len), Ok(ext_len)) = (u32::try_from(pre.len()), u16::try_from(ext.len()))
        else {
            continue;
        };
        if tbs_len >= 1 << 24 {
            continue;
        }
        let mut msg = vec![0u8, 0u8];
        msg.extend_from_slice(&sct.timestamp.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
        msg.extend_from_slice(&issuer_hash);
        msg.extend_from_slice(&tbs_len.to_be_bytes()[1..]);
        msg.extend_from_slice(&pre);
        msg.extend_from_slice(&ext_len.to_be_bytes());
        msg.extend_from_slice(ext);
        if ct.key.verify(&msg, sct.signature.signature.as_slice()) {
            return Ok(());
        }
        why = "the SCT does not verify with its CT log's key";
    }
    Err(fail(why))
}

/// The OIDC issuer Fulcio recorded (OID .1.8, a DER UTF8String; else the older .1.1, raw).
fn fulcio_issuer(leaf: &LeafInfo) -> Result<String, SigningError> {
    let exts: Vec<_> = leaf
        .cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .collect();
    if let Some(e) = exts.iter().find(|e| e.extn_id == FULCIO_ISSUER_V2) {
        let s = der::asn1::Utf8StringRef::from_der(e.extn_value.as_bytes())
            .map_err(|_| fail("malformed Fulcio issuer extension"))?;
        return Ok(s.as_str().to_string());
    }
    if let Some(e) = exts.iter().find(|e| e.extn_id == FULCIO_ISSUER_V1) {
        return String::from_utf8(e.extn_value.as_bytes().to_vec())
            .map_err(|_| fail("malformed Fulcio issuer extension"));
    }
    Err(fail("the certificate records no OIDC issuer"))
}

/// DER of a base64 PEM certificate as log entries store it. Read leniently (one long base64
/// line occurs in real entries): only compared byte for byte with the bundle's certificate.
fn pem_b64_to_der(s: &str) -> Option<Vec<u8>> {
    let pem = String::from_utf8(b64(s)?).ok()?;
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN CERTIFICATE-----")?
        .strip_suffix("-----END CERTIFICATE-----")?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn check_kind(body: &serde_json::Value, kind: &str) -> Result<(), SigningError> {
    if str_at(body, &["kind"]) != Some(kind) {
        return Err(fail(
            "the log entry's body is of another kind than the entry says",
        ));
    }
    Ok(())
}

fn check_hashedrekord_body(
    body: &serde_json::Value,
    kind: &str,
    sha256: &[u8; 32],
    sig: &[u8],
    who: &Verifier,
) -> Result<(), SigningError> {
    check_kind(body, kind)?;
    if kind != "hashedrekord" {
        return Err(fail(
            "a message signature must be logged as a hashedrekord entry",
        ));
    }
    let mismatch = |what: &str| fail(format!("the log entry's {what} is not the bundle's"));
    if str_at(body, &["spec", "data", "hash", "algorithm"]) != Some("sha256")
        || str_at(body, &["spec", "data", "hash", "value"]) != Some(&hex::encode(sha256))
    {
        return Err(mismatch("artifact digest"));
    }
    if str_at(body, &["spec", "signature", "content"])
        .and_then(b64)
        .as_deref()
        != Some(sig)
    {
        return Err(mismatch("signature"));
    }
    if !who.is_pem_b64(str_at(body, &["spec", "signature", "publicKey", "content"])) {
        return Err(mismatch(who.what()));
    }
    Ok(())
}

fn check_dsse_body(
    body: &serde_json::Value,
    kind: &str,
    payload_type: &str,
    payload: &[u8],
    sig: &[u8],
    who: &Verifier,
) -> Result<(), SigningError> {
    check_kind(body, kind)?;
    let mismatch = |what: &str| fail(format!("the log entry's {what} is not the bundle's"));
    let payload_hash = hex::encode(Sha256::digest(payload));
    match kind {
        "dsse" => {
            if str_at(body, &["spec", "payloadHash", "algorithm"]) != Some("sha256")
                || str_at(body, &["spec", "payloadHash", "value"]) != Some(&payload_hash)
            {
                return Err(mismatch("payload digest"));
            }
            let sigs = body["spec"]["signatures"]
                .as_array()
                .map_or(&[][..], |v| v.as_slice());
            let ok = sigs.len() == 1
                && str_at(&sigs[0], &["signature"]).and_then(b64).as_deref() == Some(sig)
                && who.is_pem_b64(str_at(&sigs[0], &["verifier"]));
            if !ok {
                return Err(mismatch(&format!("signature or {}", who.what())));
            }
        }
        "intoto" => {
            let c = &body["spec"]["content"];
            if str_at(c, &["payloadHash", "algorithm"]) != Some("sha256")
                || str_at(c, &["payloadHash", "value"]) != Some(&payload_hash)
            {
                return Err(mismatch("payload digest"));
            }
            if str_at(c, &["envelope", "payloadType"]) != Some(payload_type) {
                return Err(mismatch("payload type"));
            }
            let sigs = c["envelope"]["signatures"]
                .as_array()
                .map_or(&[][..], |v| v.as_slice());
            // intoto 0.0.2 stores each signature base64-encoded twice.
            let want = base64::engine::general_purpose::STANDARD.encode(sig);
            let ok = sigs.len() == 1
                && str_at(&sigs[0], &["sig"]).and_then(b64).as_deref() == Some(want.as_bytes())
                && who.is_pem_b64(str_at(&sigs[0], &["publicKey"]));
            if !ok {
                return Err(mismatch(&format!("signature or {}", who.what())));
            }
        }
        _ => {
            return Err(fail(
                "a DSSE envelope must be logged as a dsse or intoto entry",
            ))
        }
    }
    Ok(())
}

/// A Rekor v2 entry body (`hashedrekord` 0.0.2; see [`rekor_generation`]) describes exactly
/// this signature, signer and content. A DSSE envelope is logged as a hashedrekord over the
/// SHA-256 of its PAE (`pae`).
fn check_v2_body(
    body: &serde_json::Value,
    kind: &str,
    content: &Content,
    pae: &[u8],
    sig: &[u8],
    who: &Verifier,
) -> Result<(), SigningError> {
    check_kind(body, kind)?;
    let mismatch = |what: &str| fail(format!("the log entry's {what} is not the bundle's"));
    if str_at(body, &["apiVersion"]) != Some("0.0.2") {
        return Err(fail(
            "the log entry's body is of another version than the entry says",
        ));
    }
    let digest_is = |v: &serde_json::Value, want: &[u8]| {
        str_at(v, &["algorithm"]) == Some("SHA2_256")
            && str_at(v, &["digest"]).and_then(b64).as_deref() == Some(want)
    };
    match (kind, content) {
        ("hashedrekord", _) => {
            let spec = &body["spec"]["hashedRekordV002"];
            let (want, what): ([u8; 32], _) = match content {
                Content::Message { sha256 } => (*sha256, "artifact digest"),
                Content::Dsse { .. } => (Sha256::digest(pae).into(), "digest of the DSSE envelope"),
            };
            if !digest_is(&spec["data"], &want) {
                return Err(mismatch(what));
            }
            if str_at(spec, &["signature", "content"])
                .and_then(b64)
                .as_deref()
                != Some(sig)
            {
                return Err(mismatch("signature"));
            }
            if !who.is_v2(&spec["signature"]["verifier"]) {
                return Err(mismatch(who.what()));
            }
        }
        _ => {
            return Err(fail(
                "a message signature must be logged as a hashedrekord entry",
            ))
        }
    }
    Ok(())
}

/// The artifact's SHA-256 is one of the in-toto statement's subjects.
fn check_subject(payload_type: &str, payload: &[u8], artifact: &[u8]) -> Result<(), SigningError> {
    if payload_type != PAYLOAD_TYPE {
        return Err(fail(format!(
            "payload type `{payload_type}` is not in-toto"
        )));
    }
    let st: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| fail("the payload is not JSON"))?;
    let want = hex::encode(Sha256::digest(artifact));
    let found = st["subject"].as_array().is_some_and(|subs| {
        subs.iter().any(|s| {
            str_at(s, &["digest", "sha256"]).is_some_and(|d| d.eq_ignore_ascii_case(&want))
        })
    });
    if !found {
        return Err(fail(
            "the artifact is not a subject of the signed statement",
        ));
    }
    Ok(())
}

/// Steps 1–4 of `verify` for an OMS bundle signed with Sigstore: the evidence above, then the
/// DSSE payload parsed as an OMS statement.
pub fn verify_oms_bundle(
    bytes: &[u8],
    policy: &SigstorePolicy,
) -> Result<VerifiedStatement, SigningError> {
    let v = verify_evidence(bytes, None, policy)?;
    let Content::Dsse {
        payload_type,
        payload,
    } = &v.content
    else {
        return Err(SigningError::Unsupported(
            "a message signature, not an OMS (DSSE) bundle".into(),
        ));
    };
    if payload_type != PAYLOAD_TYPE {
        return Err(SigningError::Unsupported(format!(
            "payload type `{payload_type}`"
        )));
    }
    let statement = Statement::from_payload(payload)?;
    Ok(VerifiedStatement::from_sigstore(
        statement, v.key_hint, v.signer, bytes,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2022-10-31T23:59:59.999Z"),
            Some(1_667_260_799_999)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        for bad in [
            "",
            "2021-13-01T00:00:00Z",
            "2021-01-01 00:00:00Z",
            "2021-01-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn merkle_proofs_from_rfc9162_trees() {
        // A tree of 5 leaves built here; every leaf's proof must lead to the root.
        let leaves: Vec<[u8; 32]> = (0..5u8)
            .map(|i| {
                let mut h = Sha256::new();
                h.update([0, i]);
                h.finalize().into()
            })
            .collect();
        fn mth(l: &[[u8; 32]]) -> [u8; 32] {
            if l.len() == 1 {
                return l[0];
            }
            let k = l.len().next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1]);
            h.update(mth(&l[..k]));
            h.update(mth(&l[k..]));
            h.finalize().into()
        }
        fn path(m: usize, l: &[[u8; 32]]) -> Vec<Vec<u8>> {
            if l.len() == 1 {
                return vec![];
            }
            let k = l.len().next_power_of_two() / 2;
            if m < k {
                let mut p = path(m, &l[..k]);
                p.push(mth(&l[k..]).to_vec());
                p
            } else {
                let mut p = path(m - k, &l[k..]);
                p.push(mth(&l[..k]).to_vec());
                p
            }
        }
        let root = mth(&leaves);
        for (i, leaf) in leaves.iter().enumerate() {
            let p = path(i, &leaves);
            assert_eq!(merkle_root(i as u64, 5, *leaf, &p), Some(root), "leaf {i}");
            let mut bad = p.clone();
            if let Some(h) = bad.first_mut() {
                h[0] ^= 1;
                assert_ne!(merkle_root(i as u64, 5, *leaf, &bad), Some(root));
            }
            let short = &p[..p.len().saturating_sub(1)];
            assert!(merkle_root(i as u64, 5, *leaf, short).is_none_or(|r| r != root));
        }
    }

    /// Issue 24: Rekor v2 `dsse` 0.0.2 entries are refused (as sigstore-python and
    /// sigstore-java do); the other kinds are told apart.
    #[test]
    fn rekor_v2_dsse_entries_are_refused_and_v1_kinds_accepted() {
        assert!(!rekor_generation("hashedrekord", "0.0.1").unwrap());
        assert!(!rekor_generation("dsse", "0.0.1").unwrap());
        assert!(!rekor_generation("intoto", "0.0.2").unwrap());
        assert!(rekor_generation("hashedrekord", "0.0.2").unwrap());
        let e = rekor_generation("dsse", "0.0.2").unwrap_err();
        assert!(e.to_string().contains("sigstore-python"), "{e}");
        assert!(rekor_generation("intoto", "0.0.1").is_err());
    }

    /// Issue 24: a Rekor v2 entry whose log has no `baseUrl` in the trusted root is refused
    /// (its checkpoint origin cannot be checked), where a v1 entry's checkpoint is not named.
    #[test]
    fn rekor_v2_entry_of_a_log_without_base_url_is_refused() {
        use base64::engine::general_purpose::STANDARD;
        let sk = p256::ecdsa::SigningKey::from_bytes(&[3u8; 32].into()).unwrap();
        let log = LogKey {
            key_id: vec![1, 2, 3, 4],
            key: LeafKey::P256(*sk.verifying_key()),
            valid: Validity {
                start: 0,
                end: None,
            },
            name: None,
        };
        let body = b"entry body";
        // A one-leaf tree: the root is the leaf hash.
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(body);
        let root = STANDARD.encode(h.finalize());
        let proof = SProof {
            log_index: Some(Int::N(0)),
            root_hash: Some(root.clone()),
            tree_size: Some(Int::N(1)),
            hashes: vec![],
            checkpoint: Some(SCheckpoint {
                envelope: format!("rekor.example\n1\n{root}\n\n\u{2014} rekor.example AAAA\n"),
            }),
        };
        let e = check_inclusion(&proof, body, &log, true).unwrap_err();
        assert!(e.to_string().contains("no baseUrl"), "{e}");
        // Rekor v1: the same proof gets as far as the checkpoint's signature.
        let e = check_inclusion(&proof, body, &log, false).unwrap_err();
        assert!(!e.to_string().contains("baseUrl"), "{e}");
    }

    #[test]
    fn log_names_are_url_hosts() {
        assert_eq!(
            url_host("https://log2025-alpha1.rekor.sigstage.dev").as_deref(),
            Some("log2025-alpha1.rekor.sigstage.dev")
        );
        assert_eq!(
            url_host("http://rekor-local:3003/x").as_deref(),
            Some("rekor-local")
        );
        assert_eq!(url_host("rekor.example"), None);
        assert_eq!(url_host("https://"), None);
    }

    #[test]
    fn shipped_public_good_root_parses() {
        let r = TrustedRoot::public_good().unwrap();
        assert!(!r.tlogs.is_empty() && !r.ctlogs.is_empty() && !r.cas.is_empty());
    }
}

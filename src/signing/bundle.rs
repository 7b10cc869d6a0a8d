//! The Sigstore bundle v0.3 (JSON) and its DSSE envelope, parsed before any cryptography.

use base64::Engine as _;
use serde::de::{self, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::json;

use super::keys::SigningKey;
use super::SigningError;

/// The bundle media type OMS uses.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Largest bundle hallmark reads or writes: 32 MiB. A bundle with per-tensor digests needs about
/// 250 bytes per tensor, so this holds the digests of about 130,000 tensors (a 70B dense model
/// has under 1,000; the largest mixture-of-experts checkpoints under 100,000).
pub const MAX_BUNDLE_LEN: u64 = 32 << 20;
/// Most DSSE signatures a bundle may carry (OMS bundles carry one; each is tried in turn).
pub const MAX_SIGNATURES: usize = 16;

/// Prefix of a serde error that is a limit, not malformed JSON.
const LIMIT_TAG: &str = "\0limit\0";

/// The fields of a Sigstore bundle that hallmark reads; serde skips all others without building
/// them. Transparency-log entries and timestamps are only counted here, so that a verifier that
/// cannot check them refuses the bundle instead of ignoring them (see `super::sigstore` for the
/// verifier that reads them).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: Option<String>,
    verification_material: Option<RawMaterial>,
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<RawPublicKey>,
    certificate: Option<RawCertificate>,
    x509_certificate_chain: Option<RawChain>,
    tlog_entries: Option<Vec<de::IgnoredAny>>,
    timestamp_verification_data: Option<RawTimestamps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: Option<String>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Option<Vec<RawCertificate>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimestamps {
    rfc3161_timestamps: Option<Vec<de::IgnoredAny>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    hint: Option<String>,
    raw_bytes: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: Option<String>,
    payload_type: Option<String>,
    signatures: Option<Signatures>,
}

#[derive(Deserialize)]
struct RawSignature {
    sig: Option<String>,
    // Read only to check its type: `keyid` is absent, null or a string.
    #[serde(default, rename = "keyid")]
    _keyid: Option<String>,
}

/// At most [`MAX_SIGNATURES`] signatures: the list is refused as soon as it grows past the cap,
/// before the rest of it is read.
struct Signatures(Vec<RawSignature>);

impl<'de> Deserialize<'de> for Signatures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signatures;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of signatures")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signatures, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<RawSignature>()? {
                    if v.len() == MAX_SIGNATURES {
                        return Err(de::Error::custom(format_args!(
                            "{LIMIT_TAG}signature bundle has more than {MAX_SIGNATURES} signatures"
                        )));
                    }
                    v.push(s);
                }
                Ok(Signatures(v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A parsed bundle: nothing in it is trusted until a signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// `verificationMaterial.publicKey.hint`, when present and non-empty.
    pub key_hint: Option<String>,
    /// `verificationMaterial.publicKey.rawBytes` (DER SPKI), when present.
    pub raw_key: Option<Vec<u8>>,
    /// DSSE payload type.
    pub payload_type: String,
    /// Decoded DSSE payload bytes.
    pub payload: Vec<u8>,
    /// Decoded signatures (at least one).
    pub signatures: Vec<Vec<u8>>,
    /// DER certificates from `certificate` or `x509CertificateChain` (signing certificate
    /// first); empty for a bare-key bundle.
    pub certificates: Vec<Vec<u8>>,
    /// How many transparency-log entries `tlogEntries` holds.
    pub tlog_entries: usize,
    /// How many RFC 3161 signed timestamps `timestampVerificationData` holds.
    pub timestamps: usize,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

impl Bundle {
    /// Sign `payload` (an in-toto statement) with `key` and wrap it in a bundle.
    pub fn sign(payload: Vec<u8>, key: &SigningKey) -> Self {
        let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
        Self {
            key_hint: Some(key.verifying_key().hint()),
            raw_key: None,
            payload_type: PAYLOAD_TYPE.to_string(),
            payload,
            signatures: vec![sig],
            certificates: Vec::new(),
            tlog_entries: 0,
            timestamps: 0,
        }
    }

    /// Replace the key hint with a certificate chain (signing certificate first, DER), the
    /// verification material model_signing's `sign certificate` writes.
    pub fn set_certificates(&mut self, chain: Vec<Vec<u8>>) {
        self.key_hint = None;
        self.raw_key = None;
        self.certificates = chain;
    }

    /// Parse a bundle strictly enough that every later step reads well-typed data.
    ///
    /// Accepts `keyid` absent, `""` or `null`, and `rawBytes` in place of `hint`. Parsing is
    /// typed and bounded: at most [`MAX_BUNDLE_LEN`] bytes and [`MAX_SIGNATURES`] signatures;
    /// fields hallmark does not read (`tlogEntries`, ...) are skipped without being built.
    pub fn parse(bytes: &[u8]) -> Result<Self, SigningError> {
        let bad = |m: &str| SigningError::Bundle(m.to_string());
        if bytes.len() as u64 > MAX_BUNDLE_LEN {
            return Err(SigningError::Limit(format!(
                "signature bundle is {} bytes, over the {MAX_BUNDLE_LEN}-byte limit",
                bytes.len()
            )));
        }
        let raw: RawBundle = serde_json::from_slice(bytes).map_err(|e| {
            let m = e.to_string();
            match m.strip_prefix(LIMIT_TAG) {
                Some(rest) => SigningError::Limit(
                    rest.rsplit_once(" at line")
                        .map_or(rest, |(a, _)| a)
                        .to_string(),
                ),
                None => SigningError::Bundle(format!("not a well-formed bundle: {m}")),
            }
        })?;
        let mt = raw.media_type.as_deref().unwrap_or("");
        if mt != BUNDLE_MEDIA_TYPE {
            return Err(SigningError::Bundle(format!(
                "media type `{mt}`, expected `{BUNDLE_MEDIA_TYPE}`"
            )));
        }
        let vm = raw
            .verification_material
            .ok_or_else(|| bad("no verificationMaterial"))?;
        let pk = vm.public_key.unwrap_or_default();
        let key_hint = pk
            .hint
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase());
        let raw_key = match pk.raw_bytes {
            None => None,
            Some(s) => Some(b64(&s).ok_or_else(|| bad("`rawBytes` is not base64"))?),
        };
        // v0.3 names one `certificate`; model_signing writes an `x509CertificateChain`.
        let mut raw_certs: Vec<RawCertificate> = vm.certificate.into_iter().collect();
        if let Some(chain) = vm.x509_certificate_chain {
            let c = chain.certificates.unwrap_or_default();
            if c.is_empty() {
                return Err(bad("`x509CertificateChain` holds no certificate"));
            }
            raw_certs.extend(c);
        }
        if raw_certs.len() > super::pki::MAX_CERTIFICATES {
            return Err(SigningError::Limit(format!(
                "signature bundle has more than {} certificates",
                super::pki::MAX_CERTIFICATES
            )));
        }
        let mut certificates = Vec::with_capacity(raw_certs.len());
        for c in raw_certs {
            certificates.push(
                c.raw_bytes
                    .as_deref()
                    .and_then(b64)
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("certificate `rawBytes` missing, empty or not base64"))?,
            );
        }
        if !certificates.is_empty() && (key_hint.is_some() || raw_key.is_some()) {
            return Err(bad(
                "both a public key and a certificate as verification material",
            ));
        }
        let tlog_entries = vm.tlog_entries.map_or(0, |v| v.len());
        let timestamps = vm
            .timestamp_verification_data
            .and_then(|t| t.rfc3161_timestamps)
            .map_or(0, |v| v.len());
        let env = raw
            .dsse_envelope
            .ok_or_else(|| bad("no dsseEnvelope (only DSSE bundles are supported)"))?;
        let payload_type = env.payload_type.ok_or_else(|| bad("no payloadType"))?;
        let payload = env
            .payload
            .as_deref()
            .and_then(b64)
            .ok_or_else(|| bad("payload missing or not base64"))?;
        let sigs = env.signatures.map(|s| s.0).unwrap_or_default();
        if sigs.is_empty() {
            return Err(bad("no signatures"));
        }
        let mut signatures = Vec::with_capacity(sigs.len());
        for s in sigs {
            let sig = s
                .sig
                .as_deref()
                .and_then(b64)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("signature missing or not base64"))?;
            signatures.push(sig);
        }
        Ok(Self {
            key_hint,
            raw_key,
            payload_type,
            payload,
            signatures,
            certificates,
            tlog_entries,
            timestamps,
        })
    }

    /// The bundle as JSON (OMS field order), ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let e = base64::engine::general_purpose::STANDARD;
        let mut pk = serde_json::Map::new();
        if let Some(h) = &self.key_hint {
            pk.insert("hint".into(), json!(h));
        }
        if let Some(r) = &self.raw_key {
            pk.insert("rawBytes".into(), json!(e.encode(r)));
        }
        let material = if self.certificates.is_empty() {
            json!({"publicKey": pk, "tlogEntries": []})
        } else {
            let certs: Vec<_> = self
                .certificates
                .iter()
                .map(|c| json!({"rawBytes": e.encode(c)}))
                .collect();
            json!({"x509CertificateChain": {"certificates": certs}, "tlogEntries": []})
        };
        let v = json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": e.encode(&self.payload),
                "payloadType": self.payload_type,
                "signatures": self.signatures.iter()
                    .map(|s| json!({"sig": e.encode(s), "keyid": ""}))
                    .collect::<Vec<_>>(),
            },
        });
        let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::signing::keys::KeyAlg;
    use serde_json::Value;

    #[test]
    fn pae_matches_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn round_trip_and_variants() {
        let k = SigningKey::generate(KeyAlg::P256);
        let b = Bundle::sign(b"{}".to_vec(), &k);
        let back = Bundle::parse(&b.to_json()).unwrap();
        assert_eq!(back, b);
        let text = String::from_utf8(b.to_json()).unwrap();
        // keyid null / absent, hint absent
        let t2 = text.replace("\"keyid\": \"\"", "\"keyid\": null");
        assert!(Bundle::parse(t2.as_bytes()).is_ok());
        let v: Value = serde_json::from_str(&text).unwrap();
        let mut v2 = v.clone();
        v2["dsseEnvelope"]["signatures"][0]
            .as_object_mut()
            .unwrap()
            .remove("keyid");
        v2["verificationMaterial"]["publicKey"] = json!({"rawBytes": "AAEC"});
        let p = Bundle::parse(&serde_json::to_vec(&v2).unwrap()).unwrap();
        assert_eq!(p.key_hint, None);
        assert_eq!(p.raw_key, Some(vec![0, 1, 2]));
    }

    #[test]
    fn hostile_bundles_are_errors_not_panics() {
        for s in [
            "",
            "[]",
            "{}",
            "{\"mediaType\": 5}",
            "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\"}",
            "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\",\"verificationMaterial\":{},\"dsseEnvelope\":{\"payload\":\"!!\",\"payloadType\":\"x\",\"signatures\":[]}}",
            "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\",\"verificationMaterial\":{},\"dsseEnvelope\":{\"payload\":\"e30=\",\"payloadType\":\"x\",\"signatures\":[{\"sig\":7}]}}",
        ] {
            assert!(Bundle::parse(s.as_bytes()).is_err(), "{s}");
        }
    }

    #[test]
    fn limits_are_errors_before_the_data_is_built() {
        let k = SigningKey::generate(KeyAlg::Ed25519);
        let b = Bundle::sign(b"{}".to_vec(), &k);
        let mut v: Value = serde_json::from_slice(&b.to_json()).unwrap();
        let one = v["dsseEnvelope"]["signatures"][0].clone();
        v["dsseEnvelope"]["signatures"] = Value::Array(vec![one.clone(); MAX_SIGNATURES]);
        assert_eq!(
            Bundle::parse(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .signatures
                .len(),
            MAX_SIGNATURES
        );
        v["dsseEnvelope"]["signatures"] = Value::Array(vec![one; MAX_SIGNATURES + 1]);
        let e = Bundle::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(&e, SigningError::Limit(m) if m.contains("more than 16 signatures")),
            "{e}"
        );
        // Unknown fields are skipped; an oversized bundle is refused by length.
        v["verificationMaterial"]["tlogEntries"] = serde_json::json!([{"x": [1, 2, {"y": 3}]}]);
        assert!(Bundle::parse(&serde_json::to_vec(&v).unwrap()).is_err()); // 17 sigs still
        let big = vec![b' '; MAX_BUNDLE_LEN as usize + 1];
        assert!(matches!(Bundle::parse(&big), Err(SigningError::Limit(_))));
    }
}

//! The Sigstore bundle v0.3 (JSON) and its DSSE envelope, parsed before any cryptography.

use base64::Engine as _;
use serde_json::{json, Value};

use super::keys::SigningKey;
use super::SigningError;

/// The bundle media type OMS uses.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Largest bundle hallmark reads (a bundle with per-tensor digests of a huge model is a few MB).
pub const MAX_BUNDLE_LEN: u64 = 256 << 20;

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
        }
    }

    /// Parse a bundle strictly enough that every later step reads well-typed data.
    ///
    /// Accepts `keyid` absent, `""` or `null`, and `rawBytes` in place of `hint`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SigningError> {
        let bad = |m: &str| SigningError::Bundle(m.to_string());
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| SigningError::Bundle(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(bad("not a JSON object"));
        }
        let mt = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
        if mt != BUNDLE_MEDIA_TYPE {
            return Err(SigningError::Bundle(format!(
                "media type `{mt}`, expected `{BUNDLE_MEDIA_TYPE}`"
            )));
        }
        let pk = v.pointer("/verificationMaterial/publicKey");
        let key_hint = match pk.and_then(|p| p.get("hint")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.to_ascii_lowercase()),
            Some(_) => return Err(bad("`publicKey.hint` is not a string")),
        };
        let raw_key = match pk.and_then(|p| p.get("rawBytes")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(b64(s).ok_or_else(|| bad("`rawBytes` is not base64"))?),
            Some(_) => return Err(bad("`publicKey.rawBytes` is not a string")),
        };
        if pk.is_none() && v.pointer("/verificationMaterial").is_none() {
            return Err(bad("no verificationMaterial"));
        }
        let env = v
            .get("dsseEnvelope")
            .filter(|e| e.is_object())
            .ok_or_else(|| bad("no dsseEnvelope (only DSSE bundles are supported)"))?;
        let payload_type = env
            .get("payloadType")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no payloadType"))?
            .to_string();
        let payload = env
            .get("payload")
            .and_then(Value::as_str)
            .and_then(b64)
            .ok_or_else(|| bad("payload missing or not base64"))?;
        let sigs = env
            .get("signatures")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("no signatures"))?;
        let mut signatures = Vec::with_capacity(sigs.len());
        for s in sigs {
            match s.get("keyid") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(_) => return Err(bad("`keyid` is not a string")),
            }
            let sig = s
                .get("sig")
                .and_then(Value::as_str)
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
        let v = json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": pk, "tlogEntries": []},
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
}

//! RFC 3161 signed timestamps (`timestampVerificationData.rfc3161Timestamps`), checked against
//! the timestamp authorities of the trusted root.
//!
//! A timestamp counts when: the response status is granted; the token is CMS SignedData over a
//! TSTInfo whose message imprint is the hash of the bundle's signature bytes; its one signer
//! has signed attributes whose message digest is the hash of the TSTInfo; the signer's
//! certificate (embedded or from the trusted root) has a path to a trusted-root TSA at the
//! time it states, with the time-stamping EKU, inside that TSA's validity; and the signature
//! over the signed attributes verifies with that certificate's key.

use cms::cert::CertificateChoices;
use cms::signed_data::{SignedData, SignerIdentifier};
use sha2::Digest as _;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::{self, Decode as _, Encode as _};
use x509_tsp::{TimeStampResp, TstInfo};

use super::{fail, CertAuthority};
use crate::signing::pki::{self, LeafInfo};
use crate::signing::SigningError;

const ID_SIGNED_DATA: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TSTINFO: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

/// A hash named by a CMS or TSP algorithm identifier.
fn hash_by_oid(oid: &der::asn1::ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    match oid.to_string().as_str() {
        // sha256, ecdsa-with-SHA256
        "2.16.840.1.101.3.4.2.1" | "1.2.840.10045.4.3.2" => {
            Some(sha2::Sha256::digest(data).to_vec())
        }
        // sha384, ecdsa-with-SHA384
        "2.16.840.1.101.3.4.2.2" | "1.2.840.10045.4.3.3" => {
            Some(sha2::Sha384::digest(data).to_vec())
        }
        // sha512, ecdsa-with-SHA512
        "2.16.840.1.101.3.4.2.3" | "1.2.840.10045.4.3.4" => {
            Some(sha2::Sha512::digest(data).to_vec())
        }
        _ => None,
    }
}

/// Verify one DER TimeStampResp over `signature` (the bundle's signature bytes); returns the
/// time it attests, in seconds since the Unix epoch.
pub(super) fn verify_timestamp(
    resp: &[u8],
    signature: &[u8],
    tsas: &[CertAuthority],
) -> Result<u64, SigningError> {
    let bad = |m: &str| fail(format!("RFC 3161 timestamp: {m}"));
    let resp = TimeStampResp::from_der(resp).map_err(|_| bad("not a DER TimeStampResp"))?;
    if (resp.status.status as u8) > 1 {
        return Err(bad("the response status is not granted"));
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| bad("the response holds no token"))?;
    if token.content_type != ID_SIGNED_DATA {
        return Err(bad("the token is not CMS SignedData"));
    }
    let sd: SignedData = token
        .content
        .decode_as()
        .map_err(|_| bad("malformed SignedData"))?;
    if sd.encap_content_info.econtent_type != ID_CT_TSTINFO {
        return Err(bad("the signed content is not a TSTInfo"));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no TSTInfo"))?;
    let tst_der = der::asn1::OctetString::from_der(&econtent.to_der().map_err(|_| bad("TSTInfo"))?)
        .map_err(|_| bad("TSTInfo not an OCTET STRING"))?;
    let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(|_| bad("malformed TSTInfo"))?;
    // The imprint is the hash of the bundle's signature.
    let imprint = &tst.message_imprint;
    let want = hash_by_oid(&imprint.hash_algorithm.oid, signature)
        .ok_or_else(|| bad("unsupported imprint hash"))?;
    if imprint.hashed_message.as_bytes() != want.as_slice() {
        return Err(bad("it is not a timestamp of this signature"));
    }
    let gen_time = tst.gen_time.to_unix_duration().as_secs();

    // One signer, with signed attributes binding the TSTInfo.
    let signers: Vec<_> = sd.signer_infos.0.iter().collect();
    let [si] = signers.as_slice() else {
        return Err(bad("exactly one signer is required"));
    };
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes"))?;
    let attr = |oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let ct = attr(ID_CONTENT_TYPE).ok_or_else(|| bad("no content-type attribute"))?;
    if ct.decode_as::<der::asn1::ObjectIdentifier>().ok() != Some(ID_CT_TSTINFO) {
        return Err(bad("the content-type attribute is not TSTInfo"));
    }
    let md = attr(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok())
        .ok_or_else(|| bad("no message-digest attribute"))?;
    let tst_hash = hash_by_oid(&si.digest_alg.oid, tst_der.as_bytes())
        .ok_or_else(|| bad("unsupported digest algorithm"))?;
    if md.as_bytes() != tst_hash.as_slice() {
        return Err(bad("the signed attributes do not bind the TSTInfo"));
    }
    let signed = attrs
        .to_der()
        .map_err(|_| bad("cannot encode the signed attributes"))?;
    // Hashed only once the signer is trusted: an untrusted authority is the error to report,
    // whatever algorithm it signs with.
    let digest = hash_by_oid(&si.signature_algorithm.oid, &signed);

    // The signer's certificate: embedded, or the first of a trusted-root TSA chain.
    let embedded: Vec<Vec<u8>> = sd
        .certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => c.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let matches = |der: &[u8]| -> bool {
        let Ok(c) = x509_cert::Certificate::from_der(der) else {
            return false;
        };
        let tbs = &c.tbs_certificate;
        match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(is) => {
                is.issuer == tbs.issuer && is.serial_number == tbs.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == x509_cert::ext::pkix::SubjectKeyIdentifier::OID)
                .is_some_and(|e| {
                    x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes())
                        .is_ok_and(|k| k == *ski)
                }),
        }
    };
    let gen_ms = (gen_time as i64).saturating_mul(1000);
    let mut why = bad("its signer is not a timestamp authority of the trusted root");
    for tsa in tsas {
        let Some((root, rest)) = tsa.chain.split_last() else {
            continue;
        };
        let mut candidates: Vec<&[u8]> = embedded.iter().map(Vec::as_slice).collect();
        if let Some(first) = tsa.chain.first() {
            candidates.push(first);
        }
        for leaf in candidates.into_iter().filter(|c| matches(c)) {
            let inter: Vec<Vec<u8>> = rest
                .iter()
                .filter(|c| c.as_slice() != leaf)
                .cloned()
                .collect();
            let path = if leaf == root.as_slice() {
                Ok(Vec::new())
            } else {
                pki::validate_path(
                    leaf,
                    &inter,
                    std::slice::from_ref(root),
                    gen_time,
                    pki::EkuPolicy::TimeStamping,
                )
            };
            if let Err(e) = path {
                why = bad(&format!("the signer's certificate: {e}"));
                continue;
            }
            if !tsa.valid.contains(gen_ms) {
                why = bad("the time is outside the timestamp authority's validity");
                continue;
            }
            let Some(digest) = digest.as_deref() else {
                why = bad("unsupported signature algorithm");
                continue;
            };
            let info = LeafInfo::parse(leaf)?;
            if !info.key.verify_prehash(digest, si.signature.as_bytes()) {
                why = bad("the signature does not verify with the authority's key");
                continue;
            }
            return Ok(gen_time);
        }
    }
    Err(why)
}

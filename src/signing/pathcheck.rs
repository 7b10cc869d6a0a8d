//! What RFC 5280 path validation asks of a certificate path beyond what rustls-webpki checks.
//!
//! webpki builds the path and checks signatures, validity periods of the signing certificate
//! and intermediates, basic constraints and path lengths of intermediates, DNS and IP name
//! constraints, and key purposes. It does not look at issuers' key usage, it treats a trust
//! anchor as a bare name and key (no validity, no basic constraints, no key usage, no path
//! length), and it refuses every email, URI and directory-name constraint. [`check_path`] is
//! the rest, run by `pki::validate_path` on each path webpki finds (its `verify_path` hook, so
//! a path refused here lets webpki try the next one):
//!
//! * every issuer, the trust anchor included, is a CA (`basicConstraints` CA:TRUE; a
//!   certificate without the extension is not a CA) and, when it has a key usage extension,
//!   may sign certificates (`keyCertSign`, RFC 5280 6.1.4 (k), (n));
//! * every issuer's `pathLenConstraint`, the anchor's included, bounds the non-self-issued
//!   intermediates below it (6.1.4 (l), (m));
//! * the trust anchor is valid at the verification time and has no critical extension that
//!   is not processed here;
//! * the name constraints of every CA in the path, the anchor's included, hold for every
//!   certificate below it (6.1.3 (b), (c)): email (`rfc822Name`, and `emailAddress` in a
//!   subject), DNS, URI (by host), IP address and directory names. A constraint on another
//!   name form (otherName, x400Address, ediPartyName, registeredID) is refused when a
//!   certificate below carries a name of that form, with a message that says so.

use std::net::IpAddr;

use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::constraints::name::GeneralSubtrees;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, NameConstraints, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::Certificate;

/// `emailAddress` (PKCS #9), an email address inside a distinguished name.
const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// Extensions whose meaning is either checked here or by webpki, or has no bearing on whether
/// a trust anchor may vouch for a path (key identifiers, CRL pointers, policies are not used
/// to select or restrict paths here, as model_signing's OpenSSL store does not either).
const UNDERSTOOD: &[&str] = &[
    "2.5.29.14", // subjectKeyIdentifier
    "2.5.29.15", // keyUsage
    "2.5.29.17", // subjectAltName
    "2.5.29.18", // issuerAltName
    "2.5.29.19", // basicConstraints
    "2.5.29.30", // nameConstraints
    "2.5.29.31", // cRLDistributionPoints
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.37", // extKeyUsage
];

/// Check a path that webpki accepted: `leaf`, then `intermediates` from the leaf's issuer
/// upward, then the trust anchor's certificate, at `at` (seconds since the Unix epoch).
/// Returns why not, in words.
pub(crate) fn check_path(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchor: &Certificate,
    at: u64,
) -> Result<(), String> {
    let anchor_name = name_of(anchor);
    // The anchor as a certificate: validity and critical extensions.
    let v = &anchor.tbs_certificate.validity;
    let (nb, na) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    if at < nb {
        return Err(format!(
            "the trusted root {anchor_name} was not yet valid at {} (valid from {})",
            super::pki::rfc3339(at),
            super::pki::rfc3339(nb)
        ));
    }
    if at > na {
        return Err(format!(
            "the trusted root {anchor_name} had expired at {} (valid until {})",
            super::pki::rfc3339(at),
            super::pki::rfc3339(na)
        ));
    }
    for e in anchor.tbs_certificate.extensions.iter().flatten() {
        if e.critical && !UNDERSTOOD.contains(&e.extn_id.to_string().as_str()) {
            return Err(format!(
                "the trusted root {anchor_name} has a critical extension ({}) that this \
                 verifier does not process",
                e.extn_id
            ));
        }
    }
    // Every issuer: CA, may sign certificates, path length.
    let issuers: Vec<&Certificate> = intermediates.iter().chain([anchor]).collect();
    for (k, ca) in issuers.iter().enumerate() {
        let who = if k + 1 == issuers.len() {
            format!("the trusted root {}", name_of(ca))
        } else {
            format!("the intermediate CA {}", name_of(ca))
        };
        let exts = Exts::of(ca).map_err(|e| format!("{who}: {e}"))?;
        match exts.basic {
            Some(bc) if bc.ca => {
                // Non-self-issued intermediates between this CA and the leaf.
                let below = intermediates[..k]
                    .iter()
                    .filter(|c| !self_issued(c))
                    .count();
                if let Some(max) = bc.path_len_constraint {
                    if below > usize::from(max) {
                        return Err(format!(
                            "{who} allows {max} intermediate CA(s) below it \
                             (pathLenConstraint), the path has {below}"
                        ));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "{who} is not a CA certificate (basicConstraints CA:TRUE is missing), so \
                     it may not issue certificates"
                ))
            }
        }
        if exts.key_usage.is_some_and(|ku| !ku.key_cert_sign()) {
            return Err(format!(
                "{who} may not sign certificates: its key usage does not include certificate \
                 signing (keyCertSign)"
            ));
        }
        // Its name constraints hold for every certificate below it.
        if let Some(nc) = &exts.name_constraints {
            let below: Vec<&Certificate> = std::iter::once(leaf)
                .chain(intermediates[..k].iter().filter(|c| !self_issued(c)))
                .collect();
            for c in below {
                check_names(c, nc).map_err(|e| {
                    format!("{} violates the name constraints of {who}: {e}", name_of(c))
                })?;
            }
        }
    }
    Ok(())
}

/// Name constraints that rustls-webpki cannot evaluate on an intermediate CA (it refuses every
/// email, URI and directory-name constraint there): the first such CA among `intermediates`,
/// in words, so a refusal names the reason instead of a generic violation.
pub(crate) fn unsupported_intermediate_constraints(intermediates: &[Vec<u8>]) -> Option<String> {
    for der in intermediates {
        let Ok(c) = Certificate::from_der(der) else {
            continue;
        };
        let Ok(exts) = Exts::of(&c) else { continue };
        let Some(nc) = exts.name_constraints else {
            continue;
        };
        let forms: Vec<&str> = [&nc.permitted_subtrees, &nc.excluded_subtrees]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|s| match s.base {
                GeneralName::DnsName(_) | GeneralName::IpAddress(_) => None,
                ref other => Some(form(other)),
            })
            .collect();
        if let Some(f) = forms.first() {
            return Some(format!(
                "the intermediate CA {} constrains {f} names; hallmark evaluates such name \
                 constraints only on a trusted root (the path builder, rustls-webpki, refuses \
                 them on intermediates), so the path is refused",
                name_of(&c)
            ));
        }
    }
    None
}

/// The extensions read here, decoded (a malformed one is an error).
struct Exts {
    basic: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    name_constraints: Option<NameConstraints>,
    san: Vec<GeneralName>,
}

impl Exts {
    fn of(c: &Certificate) -> Result<Self, String> {
        let mut out = Exts {
            basic: None,
            key_usage: None,
            name_constraints: None,
            san: vec![],
        };
        for e in c.tbs_certificate.extensions.iter().flatten() {
            let v = e.extn_value.as_bytes();
            if e.extn_id == BasicConstraints::OID {
                out.basic = Some(
                    BasicConstraints::from_der(v)
                        .map_err(|e| format!("malformed basic constraints: {e}"))?,
                );
            } else if e.extn_id == KeyUsage::OID {
                out.key_usage =
                    Some(KeyUsage::from_der(v).map_err(|e| format!("malformed key usage: {e}"))?);
            } else if e.extn_id == NameConstraints::OID {
                out.name_constraints = Some(
                    NameConstraints::from_der(v)
                        .map_err(|e| format!("malformed name constraints: {e}"))?,
                );
            } else if e.extn_id == SubjectAltName::OID {
                out.san = SubjectAltName::from_der(v)
                    .map_err(|e| format!("malformed subject alternative name: {e}"))?
                    .0;
            }
        }
        Ok(out)
    }
}

fn self_issued(c: &Certificate) -> bool {
    c.tbs_certificate.subject == c.tbs_certificate.issuer
}

fn name_of(c: &Certificate) -> String {
    format!("`{}`", c.tbs_certificate.subject)
}

fn form(n: &GeneralName) -> &'static str {
    match n {
        GeneralName::OtherName(_) => "otherName",
        GeneralName::Rfc822Name(_) => "email (rfc822Name)",
        GeneralName::DnsName(_) => "DNS",
        GeneralName::DirectoryName(_) => "directory",
        GeneralName::EdiPartyName(_) => "ediPartyName",
        GeneralName::UniformResourceIdentifier(_) => "URI",
        GeneralName::IpAddress(_) => "IP address",
        GeneralName::RegisteredId(_) => "registeredID",
    }
}

/// Every name of `c` (subject, its email attributes, subject alternative names) against one
/// CA's constraints.
fn check_names(c: &Certificate, nc: &NameConstraints) -> Result<(), String> {
    let exts = Exts::of(c)?;
    let mut names: Vec<GeneralName> = exts.san;
    let subject = &c.tbs_certificate.subject;
    if !subject.0.is_empty() {
        names.push(GeneralName::DirectoryName(subject.clone()));
    }
    for atv in subject.0.iter().flat_map(|rdn| rdn.0.iter()) {
        if atv.oid == EMAIL_ADDRESS {
            // IA5String (or, from lax issuers, UTF8String) content octets.
            let text = String::from_utf8(atv.value.value().to_vec())
                .map_err(|_| "an emailAddress in the subject is not text".to_string())?;
            let ia5 = x509_cert::der::asn1::Ia5String::new(&text)
                .map_err(|_| "an emailAddress in the subject is not ASCII".to_string())?;
            names.push(GeneralName::Rfc822Name(ia5));
        }
    }
    let empty = GeneralSubtrees::new();
    let permitted = nc.permitted_subtrees.as_ref().unwrap_or(&empty);
    let excluded = nc.excluded_subtrees.as_ref().unwrap_or(&empty);
    for n in &names {
        let same = |s: &&x509_cert::ext::pkix::constraints::name::GeneralSubtree| {
            std::mem::discriminant(&s.base) == std::mem::discriminant(n)
        };
        for s in excluded.iter().filter(same) {
            if matches(n, &s.base)? {
                return Err(format!("{} is in an excluded subtree", shown(n)));
            }
        }
        let mut any = false;
        let mut hit = false;
        for s in permitted.iter().filter(same) {
            any = true;
            if matches(n, &s.base)? {
                hit = true;
                break;
            }
        }
        if any && !hit {
            return Err(format!("{} is outside every permitted subtree", shown(n)));
        }
    }
    Ok(())
}

fn shown(n: &GeneralName) -> String {
    match n {
        GeneralName::Rfc822Name(s) => format!("email `{}`", s.as_str()),
        GeneralName::DnsName(s) => format!("DNS name `{}`", s.as_str()),
        GeneralName::UniformResourceIdentifier(s) => format!("URI `{}`", s.as_str()),
        GeneralName::DirectoryName(d) => format!("directory name `{d}`"),
        GeneralName::IpAddress(o) => match ip_of(o.as_bytes()) {
            Some(ip) => format!("IP address {ip}"),
            None => "an IP address".into(),
        },
        other => format!("an {} name", form(other)),
    }
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether name `n` lies in the subtree `base` (both of the same form).
fn matches(n: &GeneralName, base: &GeneralName) -> Result<bool, String> {
    Ok(match (n, base) {
        (GeneralName::Rfc822Name(n), GeneralName::Rfc822Name(b)) => {
            email_in(n.as_str(), b.as_str())
        }
        (GeneralName::DnsName(n), GeneralName::DnsName(b)) => dns_in(n.as_str(), b.as_str()),
        (GeneralName::UniformResourceIdentifier(n), GeneralName::UniformResourceIdentifier(b)) => {
            // Fail closed: a URI whose host cannot be read unambiguously (`urn:...`,
            // `https:host/x`, a backslash or percent-escape in the authority) could slip past
            // an excluded subtree, so it is refused rather than judged.
            match uri_host(n.as_str()) {
                Some(h) => host_in(h, b.as_str()),
                None => {
                    return Err(format!(
                        "the signing certificate's URI `{}` has no host that the CA's URI name \
                         constraint can be checked against",
                        n.as_str()
                    ))
                }
            }
        }
        (GeneralName::IpAddress(n), GeneralName::IpAddress(b)) => ip_in(n.as_bytes(), b.as_bytes()),
        (GeneralName::DirectoryName(n), GeneralName::DirectoryName(b)) => dn_in(n, b)?,
        (n, _) => {
            return Err(format!(
                "the CA constrains {} names, which this verifier does not evaluate",
                form(n)
            ))
        }
    })
}

/// RFC 5280 4.2.1.10: `user@host` is one mailbox, `host` every mailbox at that host, `.domain`
/// every mailbox at a host under the domain. Domains compare without case; local parts with.
fn email_in(name: &str, base: &str) -> bool {
    let Some((local, domain)) = name.rsplit_once('@') else {
        return false;
    };
    // `corp.example.` is `corp.example` (a trailing dot must not step out of a subtree).
    let domain = domain.trim_end_matches('.');
    let base = base.trim_end_matches('.');
    if let Some((blocal, bdomain)) = base.rsplit_once('@') {
        return local == blocal && domain.eq_ignore_ascii_case(bdomain);
    }
    if base.starts_with('.') {
        return ends_with_ci(domain, base) && domain.len() > base.len();
    }
    domain.eq_ignore_ascii_case(base)
}

/// A DNS name is in `base` when it equals it or lies below it (a leading `.` in the base, as
/// some CAs write it, means below it only); an empty base holds every name.
fn dns_in(name: &str, base: &str) -> bool {
    let name = name.trim_end_matches('.');
    let base = base.trim_end_matches('.');
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return ends_with_ci(name, base) && name.len() > base.len();
    }
    name.eq_ignore_ascii_case(base)
        || (name.len() > base.len()
            && ends_with_ci(name, base)
            && name.as_bytes()[name.len() - base.len() - 1] == b'.')
}

/// RFC 5280: a URI constraint names a host (exactly) or, with a leading `.`, a domain (hosts
/// below it).
fn host_in(host: &str, base: &str) -> bool {
    let host = host.trim_end_matches('.');
    let base = base.trim_end_matches('.');
    if base.starts_with('.') {
        return ends_with_ci(host, base) && host.len() > base.len();
    }
    host.eq_ignore_ascii_case(base)
}

/// The host of `scheme://[userinfo@]host[:port][/...]`.
fn uri_host(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    // URL parsers disagree on these (WHATWG reads `\` as `/`); refuse rather than guess.
    if auth.contains(['\\', '%']) {
        return None;
    }
    let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn ip_in(name: &[u8], base: &[u8]) -> bool {
    if base.len() != name.len() * 2 {
        return false;
    }
    let (addr, mask) = base.split_at(name.len());
    name.iter()
        .zip(addr)
        .zip(mask)
        .all(|((n, a), m)| n & m == a & m)
}

/// A distinguished name is in `base` when `base`'s RDNs are its first RDNs.
fn dn_in(name: &Name, base: &Name) -> Result<bool, String> {
    if base.0.len() > name.0.len() {
        return Ok(false);
    }
    for (a, b) in name.0.iter().zip(&base.0) {
        let (a, b) = (
            a.to_der().map_err(|e| e.to_string())?,
            b.to_der().map_err(|e| e.to_string())?,
        );
        if a != b {
            return Ok(false);
        }
    }
    Ok(true)
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_subtrees() {
        assert!(email_in("a@bigcorp.example", "bigcorp.example"));
        assert!(email_in("a@BigCorp.Example", "bigcorp.example"));
        assert!(!email_in("a@sub.bigcorp.example", "bigcorp.example"));
        assert!(email_in("a@sub.bigcorp.example", ".bigcorp.example"));
        assert!(!email_in("a@bigcorp.example", ".bigcorp.example"));
        assert!(email_in("a@bigcorp.example", "a@bigcorp.example"));
        assert!(!email_in("A@bigcorp.example", "a@bigcorp.example"));
        assert!(!email_in("a@evilbigcorp.example", "bigcorp.example"));
        assert!(!email_in("bigcorp.example", "bigcorp.example"));
    }

    #[test]
    fn dns_uri_ip_subtrees() {
        assert!(dns_in("a.example.com", "example.com"));
        assert!(dns_in("example.com", "example.com"));
        assert!(!dns_in("badexample.com", "example.com"));
        assert!(!dns_in("example.com", ".example.com"));
        assert!(dns_in("anything", ""));
        assert_eq!(uri_host("https://u@h.example:8/x"), Some("h.example"));
        assert_eq!(uri_host("https://[::1]/x"), Some("::1"));
        assert_eq!(uri_host("urn:x"), None);
        assert_eq!(uri_host("https:evil.example/x"), None);
        assert_eq!(uri_host("https://evil.example\\@good.example/x"), None);
        assert!(host_in("evil.example.", "evil.example"));
        assert!(email_in("alice@corp.example.", "corp.example"));
        assert!(email_in("alice@corp.example.", "alice@corp.example"));
        assert!(host_in("h.example", "h.example"));
        assert!(!host_in("a.h.example", "h.example"));
        assert!(host_in("a.h.example", ".h.example"));
        assert!(ip_in(&[10, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!ip_in(&[11, 1, 2, 3], &[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!ip_in(&[10, 1, 2, 3], &[10, 0, 0, 0]));
    }
}

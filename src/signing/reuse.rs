//! Incremental re-signing (`hallmark sign --reuse OLD.sig`): the state that says which files
//! have not changed since OLD.sig was made, so their digests can be taken from OLD.sig.
//!
//! # Where the state lives, and why there
//!
//! An OMS bundle records digests, not file-system state, and a published signature should not
//! carry the signer's inode numbers and timestamps. So the state lives in a side-car file next
//! to the signature, `SIG.reuse` ([`state_path`]), written atomically whenever `sign` is asked
//! to keep it. It holds, per signed file, the `(device, inode, size, mtime, ctime)` seen by
//! `fstat` just before the file was hashed, and it is:
//!
//! * **bound to one bundle**: it records the SHA-256 of the exact bundle bytes written with it,
//!   so a side-car from another signature (of this or any model) is refused;
//! * **signed with the signing key**, over a DSSE PAE with its own payload type
//!   ([`STATE_PAYLOAD_TYPE`], so it can never be mistaken for a model signature), so a side-car
//!   edited or written by anyone without the private key is refused.
//!
//! `sign --reuse` also verifies OLD.sig itself with the public half of the signing key before
//! trusting any digest in it, and refuses a bundle it cannot verify.
//!
//! # Threat model
//!
//! A file is re-hashed unless all five stat fields are unchanged. ctime is set by the kernel on
//! every write, chmod and rename and cannot be set back by an ordinary process, so restoring
//! a modified file's size and mtime (`touch -d`) is not enough to have it skipped; what remains
//! is someone with root (or control of the clock, or of a file system that does not keep
//! ctime, such as some network and FUSE mounts) editing the file. `--reuse` is therefore
//! opt-in, meant for a signer's own build tree; `verify` never uses the state and always
//! re-hashes every byte, so a release can be checked end to end before it is published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bundle::pae;
use super::keys::{SigningKey, VerifyingKey};
use super::statement::Statement;
use super::verify::verify_bundle;
use super::SigningError;

/// The DSSE payload type the state is signed under (never an in-toto statement).
pub const STATE_PAYLOAD_TYPE: &str = "application/vnd.hallmark.reuse-state.v1+json";
/// The `format` field of a state file.
pub const STATE_FORMAT: &str = "hallmark-reuse-state";
/// The state format version.
pub const STATE_VERSION: u32 = 1;
/// Largest state file read: 256 MiB (about a million files).
pub const MAX_STATE_LEN: u64 = 256 << 20;

/// The side-car state path for a signature path: `SIG.reuse`.
pub fn state_path(sig: &Path) -> PathBuf {
    let mut s = sig.as_os_str().to_owned();
    s.push(".reuse");
    PathBuf::from(s)
}

/// What `fstat` said about a file just before it was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: [i64; 2],
    /// Status-change time: seconds and nanoseconds since the epoch.
    pub ctime: [i64; 2],
}

impl FileStat {
    /// The state of an open file (`None` where the platform has no inode numbers and ctime,
    /// so nothing is ever reused there).
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: [meta.mtime(), meta.mtime_nsec()],
                ctime: [meta.ctime(), meta.ctime_nsec()],
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }
}

/// The state of every file of one signature.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReuseState {
    /// Lowercase hex SHA-256 of the bundle bytes this state belongs to.
    pub bundle_sha256: String,
    /// Resource name (file path) -> stat at signing time.
    pub files: BTreeMap<String, FileStat>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u32,
    /// base64 of the JSON [`Payload`].
    payload: String,
    /// base64 signature over `PAE(STATE_PAYLOAD_TYPE, payload)`.
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    bundle_sha256: String,
    files: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    stat: FileStat,
}

/// True when `bytes` look like a reuse state file (its envelope parses with the right format
/// and version; the signature is not checked).
pub fn is_state_file(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Envelope>(bytes)
        .is_ok_and(|e| e.format == STATE_FORMAT && e.version == STATE_VERSION)
}

/// Lowercase hex SHA-256 of a bundle's bytes.
pub fn bundle_digest(bundle: &[u8]) -> String {
    hex::encode(Sha256::digest(bundle))
}

impl ReuseState {
    /// The signed side-car bytes for this state.
    pub fn encode(&self, key: &SigningKey) -> Result<Vec<u8>, SigningError> {
        let payload = Payload {
            bundle_sha256: self.bundle_sha256.clone(),
            files: self
                .files
                .iter()
                .map(|(name, stat)| Entry {
                    name: name.clone(),
                    stat: *stat,
                })
                .collect(),
        };
        let payload =
            serde_json::to_vec(&payload).map_err(|e| SigningError::Reuse(e.to_string()))?;
        let sig = key.sign(&pae(STATE_PAYLOAD_TYPE, &payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        let env = Envelope {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            payload: b64.encode(&payload),
            signature: b64.encode(sig),
        };
        serde_json::to_vec(&env).map_err(|e| SigningError::Reuse(e.to_string()))
    }

    /// Parse a side-car and check it: its signature with `key`, then that it belongs to the
    /// bundle whose bytes are `bundle`.
    pub fn decode(bytes: &[u8], key: &VerifyingKey, bundle: &[u8]) -> Result<Self, SigningError> {
        Self::decode_for(bytes, key, &bundle_digest(bundle))
    }

    /// [`ReuseState::decode`] for the bundle whose bytes have the SHA-256 (lowercase hex)
    /// `bundle_sha256`.
    pub fn decode_for(
        bytes: &[u8],
        key: &VerifyingKey,
        bundle_sha256: &str,
    ) -> Result<Self, SigningError> {
        let bad = |m: &str| SigningError::Reuse(m.to_string());
        let env: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| SigningError::Reuse(format!("not a reuse state file: {e}")))?;
        if env.format != STATE_FORMAT || env.version != STATE_VERSION {
            return Err(bad("not a version 1 hallmark reuse state file"));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(&env.payload)
            .map_err(|_| bad("payload is not base64"))?;
        let sig = b64
            .decode(&env.signature)
            .map_err(|_| bad("signature is not base64"))?;
        if !key.verify(&pae(STATE_PAYLOAD_TYPE, &payload), &sig) {
            return Err(bad(
                "its signature does not verify with this key (edited, or written by someone else)",
            ));
        }
        let p: Payload = serde_json::from_slice(&payload)
            .map_err(|e| SigningError::Reuse(format!("signed payload: {e}")))?;
        if p.bundle_sha256 != bundle_sha256 {
            return Err(bad(
                "it belongs to another signature bundle (made with a different bundle)",
            ));
        }
        Ok(Self {
            bundle_sha256: p.bundle_sha256,
            files: p.files.into_iter().map(|e| (e.name, e.stat)).collect(),
        })
    }
}

/// An old signature whose digests `sign` may reuse: its statement (verified with the signing
/// key's public half) and, when a side-car was found and checked, the state it was made from.
#[derive(Clone, Debug)]
pub struct Reuse {
    /// The old, verified statement.
    pub statement: Statement,
    /// The old files' stat; `None` when there was no side-car (nothing is reused then).
    pub state: Option<ReuseState>,
}

impl Reuse {
    /// Check `old_bundle` with `key`'s public half and, when given, the side-car `old_state`
    /// against both. A bundle that does not verify, or a side-car that is forged, edited or
    /// belongs to another bundle, is an error (nothing is signed).
    pub fn load(
        old_bundle: &[u8],
        old_state: Option<&[u8]>,
        key: &SigningKey,
    ) -> Result<Self, SigningError> {
        let vk = key.verifying_key();
        let verified = verify_bundle(old_bundle, &vk).map_err(|e| {
            SigningError::Reuse(format!(
                "the old signature does not verify with this key's public half ({e})"
            ))
        })?;
        let state = old_state
            .map(|s| ReuseState::decode(s, &vk, old_bundle))
            .transpose()?;
        Ok(Self {
            statement: verified.statement().clone(),
            state,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::signing::KeyAlg;

    fn state() -> ReuseState {
        let mut files = BTreeMap::new();
        files.insert(
            "a.bin".to_string(),
            FileStat {
                dev: 1,
                ino: 2,
                size: 3,
                mtime: [4, 5],
                ctime: [6, 7],
            },
        );
        ReuseState {
            bundle_sha256: bundle_digest(b"bundle"),
            files,
        }
    }

    #[test]
    fn state_round_trips_and_is_bound_to_key_and_bundle() {
        for alg in [KeyAlg::Ed25519, KeyAlg::P256] {
            let key = SigningKey::generate(alg);
            let bytes = state().encode(&key).unwrap();
            let vk = key.verifying_key();
            assert_eq!(ReuseState::decode(&bytes, &vk, b"bundle").unwrap(), state());
            // Another bundle.
            assert!(matches!(
                ReuseState::decode(&bytes, &vk, b"other bundle"),
                Err(SigningError::Reuse(_))
            ));
            // Another key.
            let other = SigningKey::generate(alg).verifying_key();
            assert!(ReuseState::decode(&bytes, &other, b"bundle").is_err());
            // An edited payload (a stat changed) fails the signature.
            let mut env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD;
            let p = b64.decode(env["payload"].as_str().unwrap()).unwrap();
            let edited = String::from_utf8(p)
                .unwrap()
                .replace("\"ino\":2", "\"ino\":9");
            env["payload"] = b64.encode(edited).into();
            let forged = serde_json::to_vec(&env).unwrap();
            assert!(ReuseState::decode(&forged, &vk, b"bundle").is_err());
            assert!(ReuseState::decode(b"{}", &vk, b"bundle").is_err());
        }
    }
}

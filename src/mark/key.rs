//! The weight-mark key: a 32-byte secret and the mark's parameters, the keyed PRF that
//! derives the mark's sign vectors and tensor subset, and the key file.

use std::io;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use super::{
    MarkError, DEFAULT_FRACTION, DEFAULT_STRENGTH, KEY_VERSION, MAX_RELATIVE_CHANGE, SCHEME,
};
use crate::fsutil::{write_atomic, WriteMode};

/// A weight-mark key file as read: typed, unknown fields skipped without being built.
#[derive(serde::Deserialize)]
struct KeyFile {
    format: Option<String>,
    version: Option<u64>,
    scheme: Option<String>,
    strength: Option<f64>,
    fraction: Option<f64>,
    key: Option<String>,
    id: Option<String>,
}

/// A secret weight-mark key. Its bytes are zeroized on drop and never printed.
#[derive(Clone)]
pub struct WeightKey {
    secret: Zeroizing<[u8; 32]>,
    strength: f64,
    fraction: f64,
}

impl std::fmt::Debug for WeightKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightKey")
            .field("id", &self.id())
            .field("strength", &self.strength)
            .field("fraction", &self.fraction)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl WeightKey {
    /// A fresh key from the operating system's random generator, with the default parameters.
    pub fn generate() -> Self {
        use rand_core::RngCore;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(&mut secret[..]);
        Self {
            secret,
            strength: DEFAULT_STRENGTH,
            fraction: DEFAULT_FRACTION,
        }
    }

    /// A key from given secret bytes and parameters (for tests and reproducible experiments).
    pub fn from_secret(secret: [u8; 32], strength: f64, fraction: f64) -> Result<Self, String> {
        let mut s = secret;
        let key = Self {
            secret: Zeroizing::new(s),
            strength,
            fraction,
        };
        s.zeroize();
        key.check()?;
        Ok(key)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.strength > 0.0 && self.strength <= MAX_RELATIVE_CHANGE) {
            return Err(format!(
                "`strength` must be in (0, {MAX_RELATIVE_CHANGE}], got {}",
                self.strength
            ));
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "`fraction` must be in (0, 1], got {}",
                self.fraction
            ));
        }
        Ok(())
    }

    /// The mark strength (amplitude as a fraction of each tensor's std).
    pub fn strength(&self) -> f64 {
        self.strength
    }

    /// The fraction of eligible matrices that carry the mark.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// A public identifier of the key (16 hex digits), safe to print.
    pub fn id(&self) -> String {
        let mut out = [0u8; 8];
        self.stream(b"id", 0).fill(&mut out);
        hex::encode(out)
    }

    /// The key file's bytes (JSON). The buffer is zeroized when dropped.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let hexkey = Zeroizing::new(hex::encode(&self.secret[..]));
        let text = Zeroizing::new(format!(
            "{{\"format\":\"hallmark-wmkey\",\"version\":{KEY_VERSION},\"scheme\":\"{SCHEME}\",\
             \"id\":\"{}\",\"strength\":{},\"fraction\":{},\"key\":\"{}\"}}\n",
            self.id(),
            self.strength,
            self.fraction,
            hexkey.as_str()
        ));
        Zeroizing::new(text.as_bytes().to_vec())
    }

    /// Parse a key file's bytes; `path` only names the file in errors.
    pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, MarkError> {
        let bad = |reason: String| MarkError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let mut v: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let result = (|| {
            if v.format.as_deref() != Some("hallmark-wmkey") {
                return Err(bad("`format` is not `hallmark-wmkey`".into()));
            }
            match v.version {
                Some(KEY_VERSION) => {}
                Some(other) => return Err(bad(format!("unsupported version {other}"))),
                None => return Err(bad("missing `version`".into())),
            }
            let scheme = v.scheme.as_deref().unwrap_or("");
            if scheme != SCHEME {
                return Err(bad(format!("scheme is `{scheme}`, not `{SCHEME}`")));
            }
            let strength = v
                .strength
                .ok_or_else(|| bad("missing numeric `strength`".into()))?;
            let fraction = v
                .fraction
                .ok_or_else(|| bad("missing numeric `fraction`".into()))?;
            let hexkey = v
                .key
                .as_deref()
                .ok_or_else(|| bad("missing `key`".into()))?;
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hexkey, &mut secret[..])
                .map_err(|_| bad("`key` must be 64 hex digits".into()))?;
            let key = Self {
                secret,
                strength,
                fraction,
            };
            key.check().map_err(bad)?;
            if let Some(id) = v.id.as_deref() {
                if id != key.id() {
                    return Err(bad("`id` does not match `key` (file damaged?)".into()));
                }
            }
            Ok(key)
        })();
        // Wipe the parsed copy of the secret.
        if let Some(s) = v.key.as_mut() {
            s.zeroize();
        }
        result
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<Self, MarkError> {
        let read = crate::input::read(
            path,
            crate::input::Kind::WatermarkKey,
            crate::input::Follow::Yes,
        );
        let bytes = Zeroizing::new(read.map_err(|e| MarkError::Key {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
        Self::from_file_bytes(path, &bytes)
    }

    /// Write the key to `path` (mode 0600; an existing file is never overwritten).
    pub fn save(&self, path: &Path) -> Result<(), MarkError> {
        write_atomic(path, &self.to_file_bytes(), WriteMode::Secret).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                MarkError::Output {
                    path: path.to_path_buf(),
                    reason: "already exists; refusing to overwrite it".into(),
                }
            } else {
                MarkError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })
    }

    /// The PRF: BLAKE3 keyed with the secret, over a domain label and a length.
    fn stream(&self, domain: &[u8], n: u64) -> blake3::OutputReader {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"hallmark weight mark v1\0");
        h.update(domain);
        h.update(b"\0");
        h.update(&n.to_le_bytes());
        h.finalize_xof()
    }

    /// `n` keyed signs (+1.0 / -1.0) for the vector named `domain`.
    fn signs(&self, domain: &[u8], n: usize) -> Vec<f32> {
        let mut bytes = vec![0u8; n.div_ceil(8)];
        self.stream(domain, n as u64).fill(&mut bytes);
        (0..n)
            .map(|i| {
                if bytes[i / 8] >> (i % 8) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect()
    }

    /// Whether the matrix with this canonical name is in the keyed subset.
    pub(super) fn selects(&self, canonical: &str) -> bool {
        if self.fraction >= 1.0 {
            return true;
        }
        let mut b = [0u8; 8];
        self.stream(format!("select/{canonical}").as_bytes(), 0)
            .fill(&mut b);
        (u64::from_le_bytes(b) as f64) < self.fraction * 2f64.powi(64)
    }

    /// The content-key direction `r` over a hidden axis of length `c`.
    pub(super) fn r_vector(&self, c: usize) -> Vec<f32> {
        self.signs(b"r", c)
    }

    /// The pattern's hidden vector for matrices whose content axis has length `k`. Matrices of
    /// one content length (gate/up/down; q/o; k/v) share it; different lengths get independent
    /// vectors, which multiplies the test's coordinates without trusting any tensor name.
    pub(super) fn h_vector(&self, k: usize, c: usize) -> Vec<f32> {
        self.signs(format!("h/{k}").as_bytes(), c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn key_round_trip_and_redacted_debug() {
        let k = WeightKey::from_secret([7u8; 32], 0.004, 0.5).unwrap();
        let bytes = k.to_file_bytes();
        let k2 = WeightKey::from_file_bytes(Path::new("k"), &bytes).unwrap();
        assert_eq!(k.id(), k2.id());
        assert_eq!(k2.strength(), 0.004);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode([7u8; 32])), "{dbg}");
        assert!(dbg.contains("redacted"));
        // a damaged key is refused
        let text = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("0707", "0708");
        assert!(WeightKey::from_file_bytes(Path::new("k"), text.as_bytes()).is_err());
    }
}

//! The detector's common result shape and family-wise error control.
//!
//! Each capability tests a suspect against its registered entries and returns one [`KeyTest`]
//! per entry with a raw p-value; [`finish`] adjusts them together (Holm) so that the chance of
//! any false match across all registered keys and fingerprints stays at or below α.

use serde::Serialize;

use crate::stats;

/// What kind of suspect was examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Text (tested against watermark keys).
    Text,
    /// A weight file or directory (tested against fingerprints and weight-mark keys).
    Weights,
}

/// The outcome of testing one registered entry.
#[derive(Clone, Debug, Serialize)]
pub struct KeyTest {
    /// Registered entry name.
    pub name: String,
    /// Entry kind: `kgw`, `gumbel`, `fingerprint`, `weights`, ...
    pub kind: String,
    /// Adjusted p-value (family-wise over every test of this suspect); set by [`finish`].
    pub p_value: f64,
    /// Raw p-value of this single test.
    pub p_raw: f64,
    /// True when `p_value <= alpha` (and the test had enough evidence to decide).
    #[serde(rename = "match")]
    pub matched: bool,
    /// False when the test had too little evidence (e.g. too few scored tokens) to decide;
    /// such a test is reported as "too short to decide", never as clean.
    pub decided: bool,
    /// Scheme-specific details (scored tokens, matched tensors, inferred transformation, ...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl KeyTest {
    /// A decided test with raw p-value `p_raw`.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, p_raw: f64) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            p_value: p_raw,
            p_raw,
            matched: false,
            decided: true,
            details: serde_json::Map::new(),
        }
    }
    /// Attach a detail field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// The full answer for one suspect.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The suspect as named on the command line (`-` for stdin, `jsonl:N` for a JSONL line).
    pub input: String,
    /// Text or weights.
    pub kind: InputKind,
    /// True when any registered entry matched at the family-wise level α.
    #[serde(rename = "match")]
    pub matched: bool,
    /// Smallest adjusted p-value (1.0 if nothing was tested).
    pub p_value: f64,
    /// Tokens scored (text only): the largest count over the keys tested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scored_tokens: Option<u64>,
    /// False when no test could decide (all too short) and nothing matched.
    pub decided: bool,
    /// One result per registered entry tested.
    pub results: Vec<KeyTest>,
}

/// Adjust the raw p-values of `tests` together (Holm) and decide each at level `alpha`.
pub fn finish(
    input: String,
    kind: InputKind,
    mut tests: Vec<KeyTest>,
    alpha: f64,
    scored_tokens: Option<u64>,
) -> Report {
    let raw: Vec<f64> = tests.iter().map(|t| t.p_raw).collect();
    let adjusted = stats::holm(&raw);
    for (t, a) in tests.iter_mut().zip(adjusted) {
        t.p_value = a;
        t.matched = t.decided && a <= alpha;
    }
    let matched = tests.iter().any(|t| t.matched);
    let p_value = tests.iter().map(|t| t.p_value).fold(1.0, f64::min);
    let decided = matched || tests.iter().any(|t| t.decided);
    Report {
        input,
        kind,
        matched,
        p_value,
        scored_tokens,
        decided,
        results: tests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_controls_across_keys() {
        let mk = |p| vec![
            KeyTest::new("a", "kgw", p),
            KeyTest::new("b", "kgw", 0.02),
            KeyTest::new("c", "gumbel", 0.5),
        ];
        // 3 keys: the smallest raw p is multiplied by 3 before it is compared with alpha.
        let r = finish("x".into(), InputKind::Text, mk(0.004), 0.01, Some(10));
        assert!((r.results[0].p_value - 0.012).abs() < 1e-12);
        assert!(!r.matched);
        let r = finish("x".into(), InputKind::Text, mk(0.003), 0.01, Some(10));
        assert!(r.matched && r.results[0].matched && !r.results[1].matched);
        assert!((r.p_value - 0.009).abs() < 1e-12);
    }

    #[test]
    fn undecided_never_matches() {
        let mut t = KeyTest::new("a", "kgw", 1e-9);
        t.decided = false;
        let r = finish("x".into(), InputKind::Text, vec![t], 0.01, Some(3));
        assert!(!r.matched && !r.decided);
    }
}

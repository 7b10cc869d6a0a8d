//! The detector's common result shape and family-wise error control.
//!
//! Each capability tests a suspect against its registered entries and returns one [`KeyTest`]
//! per entry with a raw p-value; [`finish`] adjusts them together (Holm, computed on log p so a
//! p-value far below the smallest `f64` never becomes 0) so that the chance of any false match
//! across all registered keys and fingerprints stays at or below α. An entry that could not be
//! tested (a damaged file, a tokenizer that fails) is a [`KeyTest::error`] result: it never
//! reads as "no match", and the [`Report::status`] of a suspect with such an entry and no match
//! is [`Status::Error`].

use serde::{Serialize, Serializer};

pub mod parquet;
mod suspect;
pub use suspect::{
    check_alpha, detect_path, detect_text, detect_texts, detect_weights, is_weights,
    problem_results, DetectError,
};

/// The smallest p-value printed as a number; below it a p-value is reported as a bound.
pub const P_FLOOR: f64 = 1e-300;

/// The kind of a signature result: a registered signer's key checked against the suspect's
/// signature bundle. It is exact (the signature verifies or not), so it has no p-value and takes
/// no part in the family-wise adjustment.
pub const SIGNATURE_KIND: &str = "signature";

/// What kind of suspect was examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Text (tested against watermark keys).
    Text,
    /// A weight file or directory (tested against fingerprints, weight-mark keys and, when it
    /// carries a signature bundle, signer keys).
    Weights,
}

/// The overall answer for one suspect; each has its own exit code (see [`Status::exit_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Some registered entry matched at the family-wise level α (exit 0).
    Match,
    /// Every entry was tested, every test decided, and none matched (exit 1).
    NoMatch,
    /// Nothing matched, but some test had too little evidence to decide (exit 3).
    Undecided,
    /// Nothing matched and some entry could not be tested, or nothing of the suspect's kind is
    /// registered (exit 2): "no match" is never claimed over an incomplete registry.
    Error,
}

impl Status {
    /// The process exit code for this answer: 0 match, 1 no match, 2 error, 3 undecided.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Match => 0,
            Self::NoMatch => 1,
            Self::Error => 2,
            Self::Undecided => 3,
        }
    }
    /// Combine the answers for several suspects (a JSONL file): any match wins, then error,
    /// then undecided, then no match.
    pub fn combine(self, other: Self) -> Self {
        let rank = |s: Self| match s {
            Self::Match => 3,
            Self::Error => 2,
            Self::Undecided => 1,
            Self::NoMatch => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// A p-value as JSON: a number, or `null` when it is not defined.
fn ser_p<S: Serializer>(p: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

/// A decision made by a score calibrated on impostors rather than by a p-value (the
/// fingerprint's symmetry-invariant line). [`finish`] honours it after the p-value adjustment:
/// a `Match` matches whatever the p-value; an `Undecided` that the p-value does not match makes
/// the test undecided (exit 3), never "no match".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreVerdict {
    /// The score is above every impostor's, with the documented margin.
    Match,
    /// The score falls where impostors cannot be told from copies.
    Undecided,
    /// The score is below the band.
    NoMatch,
}

/// The outcome of testing one registered entry (or of failing to).
#[derive(Clone, Debug)]
pub struct KeyTest {
    /// Registered entry name.
    pub name: String,
    /// Entry kind: `kgw`, `gumbel`, `fingerprint`, `weights`, `signature`, ...
    pub kind: String,
    /// Adjusted p-value (family-wise over every test of this suspect); set by [`finish`].
    /// Never below [`P_FLOOR`]: see `log10_p` for the exact figure.
    pub p_value: f64,
    /// Raw p-value of this single test.
    pub p_raw: f64,
    /// log10 of the raw p-value; exact even where `p_raw` underflows (a test that computes in
    /// log space passes it as the detail `log10_p_raw`, which [`finish`] moves here).
    pub log10_p_raw: f64,
    /// log10 of the adjusted p-value; set by [`finish`].
    pub log10_p: f64,
    /// True when `p_value <= alpha` (and the test had enough evidence to decide).
    pub matched: bool,
    /// False when the test had too little evidence (e.g. too few scored tokens) to decide;
    /// such a test is reported as "too short to decide", never as clean.
    pub decided: bool,
    /// Why the entry could not be tested (a damaged entry, a failing tokenizer); such a result
    /// has no p-value and makes a suspect without a match an error.
    pub error: Option<String>,
    /// Scheme-specific details (scored tokens, matched tensors, inferred transformation, ...).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// A second, score-based decision (see [`ScoreVerdict`]); `None` for p-value-only tests.
    pub score_verdict: Option<ScoreVerdict>,
}

impl KeyTest {
    /// A decided test with raw p-value `p_raw`.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, p_raw: f64) -> Self {
        let p = if p_raw.is_nan() {
            1.0
        } else {
            p_raw.clamp(0.0, 1.0)
        };
        Self {
            name: name.into(),
            kind: kind.into(),
            p_value: p,
            p_raw: p,
            log10_p_raw: p.log10(),
            log10_p: p.log10(),
            matched: false,
            decided: true,
            error: None,
            details: serde_json::Map::new(),
            score_verdict: None,
        }
    }
    /// An entry that could not be tested, with the reason.
    pub fn error(
        name: impl Into<String>,
        kind: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let mut t = Self::new(name, kind, 1.0);
        t.decided = false;
        t.error = Some(reason.into());
        t
    }
    /// Attach a detail field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
    /// An exact result (signature) that the caller has already decided.
    pub fn exact(name: impl Into<String>, kind: impl Into<String>, matched: bool) -> Self {
        let mut t = Self::new(name, kind, if matched { 0.0 } else { 1.0 });
        t.matched = matched;
        t
    }
    /// True for a statistical test (a p-value that takes part in the adjustment).
    pub fn is_statistical(&self) -> bool {
        self.error.is_none() && self.kind != SIGNATURE_KIND
    }
    /// True when the p-value is below [`P_FLOOR`] and printed as that bound.
    pub fn p_is_bound(&self) -> bool {
        self.is_statistical() && self.log10_p < P_FLOOR.log10()
    }
}

impl Serialize for KeyTest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("kind", &self.kind)?;
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
            m.serialize_entry("p_value", &None::<f64>)?;
        } else if !self.is_statistical() {
            m.serialize_entry("p_value", &None::<f64>)?;
        } else {
            m.serialize_entry("p_value", &self.p_value)?;
            m.serialize_entry("p_raw", &self.p_raw)?;
            m.serialize_entry("log10_p", &finite_or_floor(self.log10_p))?;
            m.serialize_entry("log10_p_raw", &finite_or_floor(self.log10_p_raw))?;
            if self.p_is_bound() {
                m.serialize_entry("p_below", &P_FLOOR)?;
            }
        }
        m.serialize_entry("match", &self.matched)?;
        m.serialize_entry("decided", &self.decided)?;
        for (k, v) in &self.details {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// log10 of a p-value of exactly 0 (an underflow in a test that did not work in log space) is
/// reported as the smallest positive `f64`'s, so JSON never carries `-inf`.
fn finite_or_floor(l: f64) -> f64 {
    if l.is_finite() {
        l
    } else {
        f64::MIN_POSITIVE.log10()
    }
}

/// The full answer for one suspect.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The suspect as named on the command line (`-` for stdin, `FILE:N` for a JSONL line).
    pub input: String,
    /// Text or weights.
    pub kind: InputKind,
    /// The overall answer (and exit code).
    pub status: Status,
    /// True when any registered entry matched at the family-wise level α.
    #[serde(rename = "match")]
    pub matched: bool,
    /// Smallest adjusted p-value over the decided statistical tests; `None` (JSON `null`) when
    /// the answer is not decided or only exact (signature) results ran. Never below
    /// [`P_FLOOR`].
    #[serde(serialize_with = "ser_p")]
    pub p_value: Option<f64>,
    /// log10 of the smallest adjusted p-value (exact where `p_value` is a bound).
    #[serde(serialize_with = "ser_p")]
    pub log10_p: Option<f64>,
    /// Tokens scored (text only): the largest count over the keys tested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scored_tokens: Option<u64>,
    /// True when something matched, or when every test that ran had enough evidence to decide.
    pub decided: bool,
    /// Number of registered entries that could not be tested.
    pub errors: usize,
    /// One result per registered entry (tested, or reported as an error).
    pub results: Vec<KeyTest>,
}

/// Holm's step-down adjustment of log10 p-values: sorted ascending, the k-th smallest (0-based)
/// is multiplied by `m - k` and the running maximum is kept, all in log space.
pub fn holm_log10(l: &[f64]) -> Vec<f64> {
    let m = l.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| l[a].total_cmp(&l[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = f64::NEG_INFINITY;
    for (rank, &i) in order.iter().enumerate() {
        let v = if l[i].is_nan() { 0.0 } else { l[i] };
        let a = (v + ((m - rank) as f64).log10()).min(0.0);
        running = running.max(a);
        adjusted[i] = running;
    }
    adjusted
}

/// Adjust the raw p-values of `tests` together (Holm, in log space) and decide each at level
/// `alpha`. Error results take no part in the adjustment.
pub fn finish(
    input: String,
    kind: InputKind,
    mut tests: Vec<KeyTest>,
    alpha: f64,
    scored_tokens: Option<u64>,
) -> Report {
    for t in tests.iter_mut() {
        // A test that works in log space reports its exact log10 p here.
        if let Some(l) = t
            .details
            .remove("log10_p_raw")
            .and_then(|v| v.as_f64())
            .filter(|l| !l.is_nan())
        {
            t.log10_p_raw = l.min(0.0);
        }
    }
    // Statistical tests take part in the adjustment; exact (signature) results keep their own
    // decision; error results are neither.
    let tested: Vec<usize> = (0..tests.len())
        .filter(|&i| tests[i].is_statistical())
        .collect();
    let raw: Vec<f64> = tested.iter().map(|&i| tests[i].log10_p_raw).collect();
    let adjusted = holm_log10(&raw);
    let log_alpha = alpha.log10();
    for (&i, a) in tested.iter().zip(adjusted) {
        let t = &mut tests[i];
        t.log10_p = a;
        t.p_value = 10f64.powf(a).max(P_FLOOR);
        let by_p = t.decided && a <= log_alpha;
        let by_score = t.decided && t.score_verdict == Some(ScoreVerdict::Match);
        t.matched = by_p || by_score;
        if t.matched {
            let by = if by_p { "p_value" } else { "score" };
            t.details.insert("matched_by".into(), by.into());
        } else if t.score_verdict == Some(ScoreVerdict::Undecided) {
            // Impostor data cannot resolve this score: never report it as "no match".
            t.decided = false;
        }
    }
    for t in tests.iter_mut().filter(|t| t.error.is_some()) {
        t.matched = false;
    }
    let matched = tests.iter().any(|t| t.matched);
    let errors = tests.iter().filter(|t| t.error.is_some()).count();
    let ran = tests.iter().filter(|t| t.error.is_none()).count();
    let decided = matched
        || (ran > 0
            && tests
                .iter()
                .filter(|t| t.error.is_none())
                .all(|t| t.decided));
    let best = tested
        .iter()
        .filter(|&&i| tests[i].decided)
        .map(|&i| tests[i].log10_p)
        .reduce(f64::min);
    let log10_p = if decided { best } else { None };
    let status = if matched {
        Status::Match
    } else if errors > 0 || ran == 0 {
        Status::Error
    } else if !decided {
        Status::Undecided
    } else {
        Status::NoMatch
    };
    Report {
        input,
        kind,
        status,
        matched,
        p_value: log10_p.map(|l| 10f64.powf(l).max(P_FLOOR)),
        log10_p,
        scored_tokens,
        decided,
        errors,
        results: tests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_controls_across_keys() {
        let mk = |p| {
            vec![
                KeyTest::new("a", "kgw", p),
                KeyTest::new("b", "kgw", 0.02),
                KeyTest::new("c", "gumbel", 0.5),
            ]
        };
        // 3 keys: the smallest raw p is multiplied by 3 before it is compared with alpha.
        let r = finish("x".into(), InputKind::Text, mk(0.004), 0.01, Some(10));
        assert!((r.results[0].p_value - 0.012).abs() < 1e-12);
        assert!(!r.matched);
        assert_eq!(r.status, Status::NoMatch);
        let r = finish("x".into(), InputKind::Text, mk(0.003), 0.01, Some(10));
        assert!(r.matched && r.results[0].matched && !r.results[1].matched);
        assert!((r.p_value.unwrap() - 0.009).abs() < 1e-12);
        assert_eq!(r.status.exit_code(), 0);
    }

    /// The log-space adjustment equals the ordinary one where both are representable.
    #[test]
    fn holm_log10_equals_holm() {
        let ps = [0.004, 0.02, 0.5, 1e-9, 0.3];
        let l: Vec<f64> = ps.iter().map(|p: &f64| p.log10()).collect();
        for (a, b) in holm_log10(&l).iter().zip(crate::stats::holm(&ps)) {
            assert!(
                (10f64.powf(*a) - b).abs() < 1e-12 * b.max(1e-300),
                "{a} {b}"
            );
        }
    }

    /// A p-value far below the smallest f64 keeps its exact log10 and is printed as a bound.
    #[test]
    fn tiny_p_never_underflows() {
        let t = KeyTest::new("fp", "fingerprint", 0.0).with("log10_p_raw", -5000.0);
        let r = finish("x".into(), InputKind::Weights, vec![t], 1e-3, None);
        assert!(r.matched);
        let l = r.log10_p.unwrap();
        assert!((l + 5000.0).abs() < 1e-9, "{l}");
        assert_eq!(r.p_value, Some(P_FLOOR));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["results"][0]["p_below"], P_FLOOR);
        assert!(v["results"][0].get("log10_p_raw").is_some());
    }

    #[test]
    fn undecided_never_matches() {
        let mut t = KeyTest::new("a", "kgw", 1e-9);
        t.decided = false;
        let r = finish("x".into(), InputKind::Text, vec![t], 0.01, Some(3));
        assert!(!r.matched && !r.decided);
        assert_eq!(r.status, Status::Undecided);
        assert_eq!(r.status.exit_code(), 3);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["p_value"].is_null(), "{v}");
    }

    /// A score match matches at any p-value; a score in the undecided band makes the answer
    /// undecided (exit 3) unless the p-value matches.
    #[test]
    fn score_verdicts() {
        let mut t = KeyTest::new("fp", "fingerprint", 1.0);
        t.score_verdict = Some(ScoreVerdict::Match);
        let r = finish("x".into(), InputKind::Weights, vec![t], 1e-3, None);
        assert_eq!(r.status, Status::Match);
        assert_eq!(r.results[0].details["matched_by"], "score");
        let mut t = KeyTest::new("fp", "fingerprint", 0.5);
        t.score_verdict = Some(ScoreVerdict::Undecided);
        let r = finish("x".into(), InputKind::Weights, vec![t], 1e-3, None);
        assert_eq!(r.status, Status::Undecided);
        let mut t = KeyTest::new("fp", "fingerprint", 1e-9);
        t.score_verdict = Some(ScoreVerdict::Undecided);
        let r = finish("x".into(), InputKind::Weights, vec![t], 1e-3, None);
        assert_eq!(r.status, Status::Match);
        assert_eq!(r.results[0].details["matched_by"], "p_value");
        let mut t = KeyTest::new("fp", "fingerprint", 0.5);
        t.score_verdict = Some(ScoreVerdict::NoMatch);
        let r = finish("x".into(), InputKind::Weights, vec![t], 1e-3, None);
        assert_eq!(r.status, Status::NoMatch);
    }

    /// A broken entry is an error result: never "no match", never part of the adjustment.
    #[test]
    fn broken_entry_is_an_error_not_a_no_match() {
        let tests = vec![
            KeyTest::new("good", "kgw", 0.4),
            KeyTest::error("bad", "wmkey", "kgw key without `gamma`"),
        ];
        let r = finish("x".into(), InputKind::Text, tests, 0.01, Some(300));
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.errors, 1);
        // one test only: no Bonferroni factor from the broken entry
        assert!((r.results[0].p_value - 0.4).abs() < 1e-12);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["results"][1]["p_value"].is_null());
        assert_eq!(v["results"][1]["error"], "kgw key without `gamma`");
        // ... but a match elsewhere is still a match.
        let tests = vec![
            KeyTest::new("good", "kgw", 1e-12),
            KeyTest::error("bad", "wmkey", "broken"),
        ];
        let r = finish("x".into(), InputKind::Text, tests, 0.01, Some(300));
        assert_eq!(r.status, Status::Match);
        // nothing registered of the suspect's kind is an error too
        let r = finish("x".into(), InputKind::Text, vec![], 0.01, None);
        assert_eq!(r.status, Status::Error);
    }
}

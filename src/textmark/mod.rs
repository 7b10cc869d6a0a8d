//! Keyed text watermarks applied inside the sampler, and their exact detection.

pub mod sampling;

use crate::detect::KeyTest;
use crate::registry::Registry;

/// Errors from the text watermark.
#[derive(Debug, thiserror::Error)]
pub enum TextmarkError {
    /// A malformed key file.
    #[error("{0}")]
    BadKey(String),
}

/// The results of testing one text against every registered watermark key.
#[derive(Debug, Default)]
pub struct TextTests {
    /// One test per registered text key.
    pub tests: Vec<KeyTest>,
    /// The largest number of tokens scored by any key.
    pub scored_tokens: Option<u64>,
}

/// Test `text` against every text watermark key in `registry`.
pub fn test_text(_text: &str, _registry: &Registry) -> Result<TextTests, TextmarkError> {
    Ok(TextTests::default())
}

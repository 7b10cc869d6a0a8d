//! hallmark proves where a generative model and its output came from.
//!
//! Four capabilities share one registry and one detector:
//!
//! * [`signing`]: release signing of weight files with OpenSSF Model Signing (OMS) v1.0 bundles,
//!   BLAKE3 per file and per tensor, Ed25519 or P-256 keys;
//! * [`fingerprint`]: passive weight fingerprints and leak detection with calibrated p-values;
//! * [`mark`]: the active weight mark, a keyed signal embedded into the weights and found blind;
//! * [`textmark`]: keyed text watermarks applied inside the sampler, with exact detection;
//! * [`registry`]: the directory of registered keys and fingerprints that `detect` tests against.
//!
//! The library never prints and never exits; the `hallmark` binary is a thin edge over it.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used, clippy::panic)]

pub mod detect;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod fingerprint;
pub mod fsutil;
pub mod generate;
pub mod input;
pub mod mark;
pub mod registry;
pub mod signing;
pub mod stats;
pub mod textmark;
pub mod tokenizer;
pub mod weights;

pub use error::{FormatError, IoContext};

//! hallmark integration tests: one binary, one module per area.

mod fingerprint;
mod signing;
mod textmark;

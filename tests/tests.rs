//! hallmark integration tests: one binary, one module per area.

mod fingerprint;
mod mark;
mod signing;
mod textmark;

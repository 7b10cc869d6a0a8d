//! hallmark integration tests: one binary, one module per area.

mod fingerprint;
mod generate;
mod mark;
mod signing;
mod textmark;
mod trained;

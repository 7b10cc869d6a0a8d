//! hallmark integration tests: one binary, one module per area.

mod cli;
mod fingerprint;
mod generate;
mod mark;
mod signing;
mod textmark;

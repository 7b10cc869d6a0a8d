//! hallmark integration tests: one binary, one module per area.

mod signing;
mod textmark;

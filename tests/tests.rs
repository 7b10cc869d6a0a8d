//! hallmark integration tests: one binary, one module per area.

mod fingerprint;
mod generate;
mod mark;
mod onnx;
mod signing;
mod textmark;

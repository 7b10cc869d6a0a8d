//! hallmark integration tests: one binary, one module per area.

mod cli;
mod common;
mod disguise;
mod distil;
mod fingerprint;
mod forgery;
mod generate;
mod hostile;
mod impostors;
mod mark;
mod onnx;
mod pki;
mod python;
mod shards;
mod signing;
mod textmark;
mod trained;

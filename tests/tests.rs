mod fingerprint;
mod mark;

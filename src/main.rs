//! The `tonewall` binary: `serve`, `check-config`, `hash-key`, `demo`.
fn main() {}

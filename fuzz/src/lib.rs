//! wsrelay's fuzz targets' checks, as a library the targets in `fuzz_targets/` link.
//!
//! The checks live in `checks.rs` so that `tests/fuzz_regressions.rs` in the main package can
//! include the same file and replay seeds and regressions under `cargo test`.

pub mod checks;

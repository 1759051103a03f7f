//! Verifies that every committed fuzz input still passes its target's checks: the named seeds
//! in `fuzz/corpus/<target>/` and the kept crashes in `fuzz/regressions/<target>/`.
//!
//! The checks are the fuzz targets' own (`fuzz/src/checks.rs`, included here by path), so a
//! crash the fuzzer found is replayed by a plain `cargo test` once its input is committed.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`;
/// fails naming each input that fails (its panic message is printed above).
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    let mut failed = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("a directory entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("a readable input");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(path.display().to_string());
            }
            count += 1;
        }
    }
    assert!(count > 0, "no seeds for {target}");
    assert!(
        failed.is_empty(),
        "{} of {count} inputs fail: {failed:#?}",
        failed.len()
    );
}

#[test]
fn frame_head() {
    replay("frame_head", checks::frame_head);
}

#[test]
fn message() {
    replay("message", checks::message);
}

#[test]
fn utf8() {
    replay("utf8", checks::utf8);
}

#[test]
fn mask() {
    replay("mask", checks::mask);
}

#[test]
fn handshake() {
    replay("handshake", checks::handshake);
}

#[test]
fn close() {
    replay("close", checks::close);
}

#[test]
fn connection() {
    replay("connection", checks::connection);
}

#[test]
fn chat() {
    replay("chat", checks::chat);
}

#[test]
fn resp() {
    replay("resp", checks::resp);
}

#[test]
fn sio() {
    replay("sio", checks::sio);
}

#[test]
fn eio_payload() {
    replay("eio_payload", checks::eio_payload);
}

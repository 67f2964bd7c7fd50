//! `ringctl ... | head`: a reader that closes the pipe early must not make ringctl panic.

use std::io::Read as _;
use std::process::{Command, Stdio};

/// The reader closes the pipe before ringctl writes; its writes hit a broken pipe, and it must
/// end quietly with exit code 0.
#[test]
fn a_closed_stdout_ends_ringctl_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .args(["completion", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ringctl: {e}"));
    // Close the read end at once: the first write already finds no reader.
    drop(child.stdout.take());
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!stderr.contains("panicked"), "ringctl panicked: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

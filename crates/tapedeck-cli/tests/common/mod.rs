//! What the CLI tests share: running the `tapedeck` binary and insisting it succeeded.

use std::process::{Command, Output};

/// Runs `tapedeck ARGS` and returns what it printed and its status.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(args)
        .output()
        .unwrap()
}

/// Its standard output, after asserting it succeeded (stdout and stderr in the failure).
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

//! Every example in README.md, run in order in one fresh directory, as a new user would paste
//! them (issue 13, item 8): each must succeed, and none may collide with an earlier one.

use std::process::Command;

/// The shell commands of README.md's `bash` blocks, continuation lines joined, comments and
/// blank lines dropped.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md beside the workspace");
    let mut out = Vec::new();
    let mut in_bash = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_bash = !in_bash && line.trim() == "```bash";
            continue;
        }
        if !in_bash {
            continue;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        pending.push_str(line);
        pending.push('\n');
        // A command goes on after a trailing `\` or `|`.
        if !(trimmed.ends_with('\\') || trimmed.ends_with('|')) {
            out.push(std::mem::take(&mut pending));
        }
    }
    out
}

#[test]
fn every_readme_example_runs_in_order_in_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tapedeck"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = readme_commands();
    assert!(commands.len() >= 10, "{commands:?}");
    let mut ran = 0;
    for cmd in &commands {
        // The test command itself runs this test; it is checked by CI running it.
        if cmd.contains("scripts/test") {
            continue;
        }
        // `cargo run --release [--no-default-features --features F] --` is how a fresh clone
        // runs the binary this test built.
        let cmd = match cmd.find("cargo run --release").zip(cmd.find(" -- ")) {
            Some((start, end)) if start < end => {
                format!("{}tapedeck{}", &cmd[..start], &cmd[end + 3..])
            }
            _ => cmd.clone(),
        };
        let o = Command::new("bash")
            .args(["-o", "pipefail", "-c", &cmd])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        // `| head` closes the pipe early on purpose; the command before it may end by SIGPIPE.
        let ok = o.status.success() || (cmd.contains("| head") && o.status.code() == Some(141));
        assert!(
            ok,
            "README example failed ({:?}):\n{cmd}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 10);
}

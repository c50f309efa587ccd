//! Every sink in the library's registry (`tapedeck::sink::descriptors()`) appears in
//! `tapedeck sinks` (text and JSON), in `tapedeck record --help`'s sink list, and in its own
//! unknown-parameter error with exactly its descriptor's parameters. No sink is listed here by
//! hand: a new sink is checked as soon as it is registered.

use std::process::{Command, Output};

use tapedeck::sink::descriptors;

fn run_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(args)
        .current_dir(dir)
        .env_remove("TAPEDECK_LOG")
        .output()
        .expect("run tapedeck")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sinks_command_lists_every_registered_sink_with_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["sinks"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(!descriptors().is_empty());
    for d in descriptors() {
        let at = text
            .find(d.usage)
            .unwrap_or_else(|| panic!("`{}` missing from `tapedeck sinks`:\n{text}", d.usage));
        let block = &text[at..];
        let block = &block[..block.find("\n\n").unwrap_or(block.len())];
        for scheme in &d.schemes[1..] {
            assert!(
                block.contains(&format!("{scheme}:")),
                "{scheme} missing:\n{block}"
            );
        }
        for p in d.params {
            assert!(
                block.contains(p.name),
                "{} of {} missing:\n{block}",
                p.name,
                d.usage
            );
            if !p.default.is_empty() {
                assert!(block.contains(p.default), "default of {} missing", p.name);
            }
        }
        assert_eq!(block.contains("not compiled in"), !d.compiled_in, "{block}");
    }

    let out = run_in(dir.path(), &["sinks", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = json.as_array().expect("a JSON array");
    assert_eq!(listed.len(), descriptors().len());
    for (d, j) in descriptors().iter().zip(listed) {
        assert_eq!(j["schemes"][0], d.scheme());
        assert_eq!(j["compiled_in"], d.compiled_in);
        let names: Vec<&str> = j["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = d.params.iter().map(|p| p.name).collect();
        assert_eq!(names, expected, "{}", d.scheme());
        for p in j["params"].as_array().unwrap() {
            assert!(p["default"].is_string() && p["doc"].is_string());
        }
    }
}

#[test]
fn record_help_lists_every_compiled_in_sink() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["record", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    let sinks = &help[help.find("\nSinks:\n").expect("a Sinks: section")..];
    // The help wraps long summaries: compare with whitespace collapsed.
    let flat = sinks.split_whitespace().collect::<Vec<_>>().join(" ");
    for d in descriptors() {
        assert_eq!(
            sinks.contains(&format!("\n  {}", d.usage)),
            d.compiled_in,
            "{} in record --help:\n{sinks}",
            d.usage
        );
        if d.compiled_in {
            let summary = d.summary.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&summary), "summary of {} missing", d.usage);
        }
    }
}

#[test]
fn an_unknown_parameter_lists_exactly_the_descriptors_parameters() {
    let dir = tempfile::tempdir().unwrap();
    for d in descriptors() {
        let sep = if d.example.contains('?') { '&' } else { '?' };
        let uri = format!("{}{sep}no_such_param=1", d.example);
        let mut names: Vec<&str> = d.params.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let valid = if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        };
        if !d.compiled_in {
            let e = tapedeck::sink::parse(&uri).unwrap_err().to_string();
            assert!(e.contains("cargo feature"), "{e}");
            continue;
        }
        let e = tapedeck::sink::parse(&uri).unwrap_err();
        assert!(
            matches!(e, tapedeck::Error::UnknownParam { .. }),
            "{uri}: {e}"
        );
        let listed = e.to_string();
        let listed = listed
            .split("valid parameters: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{uri}: {e}"));
        assert_eq!(listed, valid, "{uri}");

        // The same through the command line (a debug build of the binary also checks that the
        // sink's own parsing reads exactly these parameters).
        let out = run_in(
            dir.path(),
            &["record", "--source", "sim:alicat?n=1", "--sink", &uri],
        );
        assert_eq!(out.status.code(), Some(2), "{uri}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "unknown parameter `no_such_param` in `{uri}`; valid parameters: {valid}"
            )) || err.contains(&format!("valid parameters: {valid}\n")),
            "{uri}: {err}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{uri} created a file"
        );
    }
}

#[test]
fn an_unknown_scheme_lists_the_compiled_in_schemes() {
    let e = tapedeck::sink::parse("xls:run.xls")
        .unwrap_err()
        .to_string();
    let known: Vec<&str> = descriptors()
        .iter()
        .filter(|d| d.compiled_in)
        .map(|d| d.scheme())
        .collect();
    assert!(
        e.ends_with(&format!("known schemes: {}", known.join(", "))),
        "{e}"
    );
    assert_eq!(tapedeck::sink::schemes(), known);
}

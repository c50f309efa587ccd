//! `tapedeck sinks`: every sink scheme with its summary, URI parameters and defaults, from the
//! library's registry ([`tapedeck::sink::descriptors`]); `--json` prints the registry as JSON.
//! The sink list of `record --help` is made here too, from the same registry.

use tapedeck::sink::descriptors;

use crate::report::EXIT_OK;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the sinks as JSON on stdout, e.g. `--json`.
    #[arg(long)]
    json: bool,
}

/// Runs `tapedeck sinks`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(descriptors()).unwrap_or_default()
        );
    } else {
        print!("{}", listing());
    }
    EXIT_OK
}

/// The plain-text listing: per sink its usage, other schemes, summary, then one line per
/// parameter (name, type or values, default, what it does).
fn listing() -> String {
    let mut out = String::new();
    for d in descriptors() {
        out.push_str(d.usage);
        if d.schemes.len() > 1 {
            out.push_str(&format!("   (also {}:)", d.schemes[1..].join(":, ")));
        }
        if !d.compiled_in {
            out.push_str(&format!(
                "   [not compiled in: rebuild with --features {}]",
                d.feature.unwrap_or(d.scheme())
            ));
        }
        out.push('\n');
        out.push_str(&wrap(d.summary, "    ", 96));
        if d.params.is_empty() {
            out.push_str("    no parameters\n");
        }
        let name_width = d.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in d.params {
            let default = if p.default.is_empty() {
                String::new()
            } else {
                format!("; default {}", p.default)
            };
            out.push_str(&format!(
                "    {:name_width$}  {} ({}{default})\n",
                p.name, p.doc, p.kind
            ));
        }
        out.push('\n');
    }
    out
}

/// The `Sinks:` lines of `record --help`: the sinks this build includes, each with its
/// summary, the usage in a 14-column margin (on its own line when longer).
pub fn help_lines() -> String {
    const MARGIN: usize = 14;
    let indent = " ".repeat(2 + MARGIN);
    let mut out = String::new();
    for d in descriptors().iter().filter(|d| d.compiled_in) {
        if d.usage.len() < MARGIN {
            let first = format!("  {:MARGIN$}", d.usage);
            let wrapped = wrap(d.summary, &indent, 96);
            out.push_str(&first);
            out.push_str(&wrapped[indent.len()..]);
        } else {
            out.push_str(&format!("  {}\n", d.usage));
            out.push_str(&wrap(d.summary, &indent, 96));
        }
    }
    out
}

/// `text` wrapped at `width` columns, every line starting with `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sink_and_parameter_is_listed() {
        let text = listing();
        for d in descriptors() {
            assert!(text.contains(d.usage), "{} missing", d.usage);
            for p in d.params {
                assert!(text.contains(p.name), "{} missing", p.name);
            }
        }
        let help = help_lines();
        for d in descriptors().iter().filter(|d| d.compiled_in) {
            assert!(help.contains(d.usage), "{} missing from the help", d.usage);
        }
    }
}

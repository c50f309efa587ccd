//! The library's layers, kept by a test (issue 14): no module of `crates/tapedeck/src` refers
//! to a module of a later layer, and modules of one layer do not refer to each other, so the
//! module graph has no cycle.
//!
//! The test reads every `.rs` file under `src/` as text, drops comments and the contents of
//! string and character literals, and finds each reference to a top-level module: a path that
//! starts at `crate::` (also inside `use crate::{a::…, b::…}` groups and `$crate::`), or a chain
//! of `super::` that climbs to the crate root. Names that `lib.rs` re-exports at the root
//! (`crate::Error`) count as their module. A top-level module that is in no layer is a failure
//! too: a new module has to be placed. `docs/architecture.md` draws the same picture.
//!
//! It is a text scan, not a compiler pass: a path spelled through a `use` alias of another
//! module (`use crate::sink as s;` then `s::Sink`) is seen at the alias, which is where the edge
//! is declared. That is enough to keep the layers: every way into another module starts with a
//! path this scan sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of the library, lowest first. A module may refer to modules of earlier layers
/// only; the modules of one layer are peers and may not refer to each other.
///
/// Why this order — each layer is what the ones above it are built from:
/// 1. `error` (the one error type) and `sync` (locking that survives a panicked holder) need
///    nothing from the crate.
/// 2. `uri` parses the URIs that name every source and sink; its errors are `error`'s.
///    `storage` is the file I/O seam (with the crashable double the fault tests use) that the
///    journal and the tape both write through.
/// 3. `record` is the data model everything passes around (rows, blocks, Arrow batches, the
///    schema lock); `durability` is the fsync policy that the tape, the journal and the `raw:`
///    sink share, kept apart so none has to import another to name it.
/// 4. `journal`: crash-safe audited state (JSON Patch records); no Arrow, below the tape whose
///    manifest is to become a journal.
/// 5. The file formats, `dtraw` (dtollib's raw counts) and `tape` (the checksummed log): bytes,
///    readers and writers of records. They know no `Source` or `Sink` trait, so a format can be
///    read and checked (`verify`) without the pipeline, and could become a crate of its own.
/// 6. `source`: the `Source` trait and every way records come in — simulators, line readers,
///    and the formats made sources (a `.dt-raw` file, a tape being replayed). `pack`, beside
///    it: a text file archived as a tape, built on the tape alone.
/// 7. `sink`: the `Sink` trait and every destination — the file and database sinks, the tape
///    as a sink, and what the sinks keep for a delivery (the cursor file, the cursor row). A sink
///    comes after the sources only so that its tests may use a simulator for data.
/// 8. The two paths from sources to sinks, independent of each other: `deliver` (tape → each
///    sink from its durable cursor) and `pipe` (the direct path: batching, flush timer, fan-out).
/// 9. `recorder`, the library's front door, which puts a tape, deliveries and the pipe together.
///    The CLI (another crate) comes after all of them; the compiler keeps that edge.
const LAYERS: &[&[&str]] = &[
    &["error", "sync"],
    &["uri", "storage"],
    &["record", "durability"],
    &["journal"],
    &["dtraw", "tape", "nats"],
    &["source", "pack"],
    &["sink"],
    &["deliver", "pipe"],
    &["recorder"],
];

/// One reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    /// The top-level module referred to (after mapping root re-exports).
    module: String,
    /// The path as written, up to the module (`crate::sink`, `super::super::pipe`).
    written: String,
}

/// The layer of each module.
fn layer_of() -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        for module in *layer {
            assert!(
                m.insert(*module, i).is_none(),
                "`{module}` is in two layers"
            );
        }
    }
    m
}

/// `code` with comments and the contents of string and character literals replaced by spaces
/// (newlines kept, so line numbers stay right).
fn strip(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (!prev_ident || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(c.get(i + 1), Some('#' | '"'))
            && c[i + 1..].iter().find(|&&x| x != '#') == Some(&'"')
        {
            // A raw string: r"…", r#"…"#, br#"…"#.
            let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
            let open = 1 + hashes + 1;
            out.push_str(&" ".repeat(open));
            i += open;
            while i < c.len() {
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&x| x == '#')
                        .count()
                        == hashes
                {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                let n = if c[i] == '\\' { 2 } else { 1 };
                for k in 0..n {
                    if let Some(&ch) = c.get(i + k) {
                        blank(&mut out, ch);
                    }
                }
                i += n;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1F600}'); a lifetime ('a) stays.
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                let n = if c[i] == '\\' { 2 } else { 1 };
                for _ in 0..n {
                    out.push(' ');
                }
                i += n;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of stripped code, each with its line (1-based).
fn tokens(code: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Token::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Token::Path, line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    _ => Token::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// The module path of a file under `src/` (`sink/postgres/mod.rs` → `[sink, postgres]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// Every reference to a top-level module in `code`, the text of the file at `relative`
/// (a path under `src/`). `reexports` maps names `lib.rs` re-exports to their module.
fn references(relative: &Path, code: &str, reexports: &BTreeMap<String, String>) -> Vec<Reference> {
    let file_path = module_path(relative);
    let toks = tokens(&strip(code));
    let mut found = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let ident = |k: usize| match toks.get(k) {
        Some((Token::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: &Token| toks.get(k).map(|(x, _)| x) == Some(t);
    let push = |found: &mut Vec<Reference>, name: &str, line: usize, written: String| {
        let module = reexports
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        found.push(Reference {
            line,
            module,
            written,
        });
    };
    let mut k = 0;
    while k < toks.len() {
        let (tok, line) = (&toks[k].0, toks[k].1);
        match tok {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(name), true) = (ident(k + 1), is(k + 2, &Token::Open)) {
                    inline.push((name.to_string(), depth + 1));
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "super") && is(k + 1, &Token::Path) =>
            {
                // Only the start of a path: `x::super` is not one.
                if k > 0 && is(k - 1, &Token::Path) {
                    k += 1;
                    continue;
                }
                let mut here: Vec<String> = file_path.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut written = String::new();
                let mut j = k;
                if word == "crate" {
                    here.clear();
                    written.push_str("crate::");
                    j += 2;
                } else {
                    while ident(j) == Some("super") && is(j + 1, &Token::Path) {
                        here.pop();
                        written.push_str("super::");
                        j += 2;
                    }
                }
                if here.is_empty() {
                    // At the crate root: the next name, or each item of a `{…}` group.
                    if let Some(name) = ident(j) {
                        push(&mut found, name, line, format!("{written}{name}"));
                    } else if is(j, &Token::Open) {
                        let mut level = 0;
                        let mut item_start = true;
                        while j < toks.len() {
                            match &toks[j].0 {
                                Token::Open => {
                                    level += 1;
                                    item_start = level == 1;
                                }
                                Token::Close => {
                                    level -= 1;
                                    if level == 0 {
                                        break;
                                    }
                                }
                                Token::Comma if level == 1 => item_start = true,
                                Token::Ident(name) if item_start => {
                                    item_start = false;
                                    if name != "self" {
                                        push(
                                            &mut found,
                                            name,
                                            toks[j].1,
                                            format!("{written}{{{name}"),
                                        );
                                    }
                                }
                                _ => item_start = false,
                            }
                            j += 1;
                        }
                    }
                }
            }
            _ => {}
        }
        k += 1;
    }
    found
}

/// `lib.rs`'s root re-exports: `pub use error::{Error, Result};` → Error → error, Result → error.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in strip(lib).lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';').trim();
        let rest = rest.strip_prefix("crate::").unwrap_or(rest);
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let item = item.trim();
            let name = item
                .rsplit(" as ")
                .next()
                .unwrap_or(item)
                .rsplit("::")
                .next()
                .unwrap_or(item);
            if !name.is_empty() && name != "self" {
                m.insert(name.trim().to_string(), module.trim().to_string());
            }
        }
    }
    m
}

/// The forbidden edges in `files` (path under `src/`, text), one message each.
fn violations(files: &[(PathBuf, String)], reexports: &BTreeMap<String, String>) -> Vec<String> {
    let layers = layer_of();
    let mut problems = Vec::new();
    for (relative, code) in files {
        if relative == Path::new("lib.rs") {
            continue;
        }
        let shown = Path::new("crates/tapedeck/src").join(relative);
        let from = module_path(relative)[0].clone();
        let Some(&from_layer) = layers.get(from.as_str()) else {
            problems.push(format!(
                "{}: module `{from}` is in no layer; add it to LAYERS in crates/tapedeck/tests/layering.rs (and to docs/architecture.md)",
                shown.display()
            ));
            continue;
        };
        for r in references(relative, code, reexports) {
            if r.module == from {
                continue;
            }
            let Some(&to_layer) = layers.get(r.module.as_str()) else {
                problems.push(format!(
                    "{}:{}: `{}` names `{}`, which is in no layer",
                    shown.display(),
                    r.line,
                    r.written,
                    r.module
                ));
                continue;
            };
            if to_layer >= from_layer {
                let how = if to_layer == from_layer {
                    "a peer in the same layer"
                } else {
                    "a later layer"
                };
                problems.push(format!(
                    "{}:{}: forbidden edge {from} -> {} (`{}`): `{from}` is in layer {} ({}), `{}` in layer {} ({}), {how}",
                    shown.display(),
                    r.line,
                    r.module,
                    r.written,
                    from_layer + 1,
                    LAYERS[from_layer].join(", "),
                    r.module,
                    to_layer + 1,
                    LAYERS[to_layer].join(", "),
                ));
            }
        }
    }
    problems
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

#[test]
fn no_module_refers_to_a_later_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let lib = &files
        .iter()
        .find(|(p, _)| p == Path::new("lib.rs"))
        .unwrap()
        .1;
    let reexports = root_reexports(lib);
    let problems = violations(&files, &reexports);
    assert!(
        problems.is_empty(),
        "the library's layers are broken (order and reasons: LAYERS in crates/tapedeck/tests/layering.rs, docs/architecture.md):\n{}",
        problems.join("\n")
    );
    // The scan sees the edges that are there: every file but the lowest layer's refers to some
    // module, and in total there are many references.
    let total: usize = files
        .iter()
        .filter(|(p, _)| p != Path::new("lib.rs"))
        .map(|(p, code)| references(p, code, &reexports).len())
        .sum();
    assert!(
        total > 100,
        "only {total} references found; is the scan broken?"
    );
}

/// The checker itself: each way of writing a forbidden edge is caught, and nothing else is.
#[test]
fn a_forbidden_edge_is_caught() {
    let reexports = root_reexports("pub mod error;\npub use error::{Error, Result};\n");
    let check =
        |path: &str, code: &str| violations(&[(PathBuf::from(path), code.to_string())], &reexports);

    // The cycle issue 14 removed: the tape importing the Sink trait.
    let p = check(
        "tape/mod.rs",
        "use crate::error::Result;\nuse crate::sink::Sink;\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "crates/tapedeck/src/tape/mod.rs:2: forbidden edge tape -> sink (`crate::sink`)"
        ),
        "{}",
        p[0]
    );
    // In a group, in a path in code, through `super::` to the root, from an inline module.
    assert_eq!(
        check(
            "sink/csv.rs",
            "use crate::{error::Error, deliver::destination};"
        )
        .len(),
        1
    );
    assert_eq!(
        check("source/lines.rs", "fn f() { crate::sink::open(\"x\"); }").len(),
        1
    );
    assert_eq!(
        check("record/block.rs", "use super::super::pipe::pipe;").len(),
        1
    );
    assert_eq!(
        check(
            "dtraw/reader.rs",
            "mod tests { use super::super::super::source::Source; }"
        )
        .len(),
        1
    );
    // Peers: the two paths do not know each other.
    assert_eq!(check("pipe.rs", "use crate::deliver::Delivery;").len(), 1);
    // A module in no layer.
    assert_eq!(check("ledger.rs", "use crate::error::Error;").len(), 1);

    // Allowed: earlier layers, the module itself, root re-exports of earlier ones, `super::`
    // inside the module, and mentions in comments, doc comments and strings.
    let ok = "use crate::error::{Error, Result};\nuse crate::Error as E;\nuse crate::sink::Sink;\n\
              use super::file::Created;\nmod tests { use super::super::text::X; }\n\
              // crate::deliver::destination\n/// [`crate::pipe`]\nconst S: &str = \"crate::deliver\";\n\
              const R: &str = r#\"crate::pipe\"#;\nfn f<'a>(x: &'a str) -> char { '\"' }\n";
    assert_eq!(check("sink/csv.rs", ok), Vec::<String>::new());
}

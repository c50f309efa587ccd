//! A sink described by its URI, checked but not opened: [`SinkSpec`], made by [`parse`].
//!
//! Each sink module turns its URI into a value implementing [`SinkConfig`] (its path and
//! options) through the `parse` function of its [`super::SinkDescriptor`]. That value is all the
//! rest of the crate knows of a sink before it is opened: how it is named, which file or table it
//! claims, how to open it, and how a delivery from a tape resumes it ([`ResumeBy`]). So adding a
//! sink touches its own module and one line of the registry, nothing else.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::Sink;
use super::descriptor::{self, SinkDescriptor, schemes};
use super::resume::ResumeBy;
use crate::error::{Error, Result};
use crate::uri::Uri;

/// A sink's URI, read: what each sink module implements for its path and options.
pub trait SinkConfig: fmt::Debug + Send + Sync {
    /// How the sink is named in messages before it is opened: `scheme:path` as given.
    fn describe(&self) -> String;

    /// The file and the tables the sink writes, so two sinks writing one of them can be refused
    /// ([`check_distinct`]).
    fn claims(&self) -> Claims {
        Claims::default()
    }

    /// Checks, creating nothing, that the destination may be written: a file sink's path is
    /// free, or may be replaced or appended to.
    fn check_free(&self) -> Result<()> {
        Ok(())
    }

    /// Checks, creating nothing, what a delivery would refuse that its strategy cannot see (a
    /// Parquet directory holding parts of no delivery). The file strategies' own checks are the
    /// delivery's.
    fn check_for_delivery(&self) -> Result<()> {
        Ok(())
    }

    /// Opens the sink, creating its destination.
    fn open(&self) -> Result<Box<dyn Sink>>;

    /// How a delivery from a tape keeps this sink's cursor.
    fn resume_by(&self) -> ResumeBy;
}

/// A sink's path with its options: the [`SinkConfig`] of the sinks that write one file.
#[derive(Debug, Clone)]
pub struct AtPath<O> {
    /// The file (or directory) the sink writes.
    pub path: PathBuf,
    /// Its options, read from the URI's parameters.
    pub options: O,
}

impl<O> AtPath<O> {
    /// `uri`'s path with `options`, ready for the registry.
    pub(crate) fn config(uri: &Uri, options: O) -> Arc<dyn SinkConfig>
    where
        AtPath<O>: SinkConfig + 'static,
    {
        Arc::new(AtPath {
            path: PathBuf::from(&uri.path),
            options,
        })
    }
}

/// What a sink writes; see [`SinkConfig::claims`].
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// The file or directory it writes, normalized ([`normalize_path`]).
    pub file: Option<PathBuf>,
    /// The tables its rows go to, each as the text that names it.
    pub tables: Vec<String>,
    /// Several such sinks may share the file when their tables differ (SQLite).
    pub file_shared: bool,
}

/// A sink described by its URI, checked but not opened yet.
///
/// [`parse`] reads every parameter and checks that a file sink's path is free (or may be
/// replaced or appended to) without creating anything, so a program can check all its sink URIs
/// before the first file is created — a typo in the third `--sink` then leaves no empty file
/// behind from the first.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    descriptor: &'static SinkDescriptor,
    config: Arc<dyn SinkConfig>,
}

/// A sink's URI reader, as its descriptor names it: reads the path and every parameter of
/// `uri` (the scheme is already known to be the sink's).
pub type ParseFn = fn(&mut Uri) -> Result<Arc<dyn SinkConfig>>;

impl SinkSpec {
    /// The sink's descriptor.
    pub fn descriptor(&self) -> &'static SinkDescriptor {
        self.descriptor
    }

    /// The sink's path and options.
    pub fn config(&self) -> &dyn SinkConfig {
        self.config.as_ref()
    }

    /// How the sink is named before it is opened: `scheme:path` as given.
    pub fn describe(&self) -> String {
        self.config.describe()
    }

    /// Opens the sink (creating its file).
    pub fn open(self) -> Result<Box<dyn Sink>> {
        self.config.open()
    }

    /// How a delivery keeps this sink's cursor.
    pub fn resume_by(&self) -> ResumeBy {
        self.config.resume_by()
    }
}

/// Parses and checks a sink URI; see [`SinkSpec`].
///
/// ```
/// let spec = tapedeck::sink::parse("csv:never-created.csv?overwrite=true").unwrap();
/// assert!(!std::path::Path::new("never-created.csv").exists());
/// assert!(tapedeck::sink::parse("csv:x.csv?overwrite=perhaps").is_err());
/// ```
pub fn parse(uri: &str) -> Result<SinkSpec> {
    let spec = parse_unchecked(uri)?;
    spec.config.check_free()?;
    Ok(spec)
}

/// Parses a sink URI and reads every parameter, without looking at the destination: a
/// delivery from a tape (`crate::deliver`) decides itself whether an existing file is one it
/// continues.
pub fn parse_unchecked(uri: &str) -> Result<SinkSpec> {
    let mut uri = Uri::parse(uri)?;
    let Some(descriptor) = descriptor::find(&uri.scheme) else {
        return Err(Error::UnknownScheme {
            kind: "sink",
            scheme: uri.scheme.clone(),
            uri: uri.shown().to_string(),
            known: schemes().join(", "),
        });
    };
    let Some(parse) = descriptor.parse.filter(|_| descriptor.compiled_in) else {
        return Err(Error::FeatureDisabled {
            scheme: descriptor.scheme(),
            feature: descriptor.feature.unwrap_or(descriptor.scheme()),
        });
    };
    if uri.path.is_empty()
        && let Some(example) = descriptor.path_example
    {
        return Err(Error::MalformedUri {
            uri: uri.shown().to_string(),
            reason: format!(
                "`{}:` needs a path after the `:`; write e.g. `{}:{example}`",
                uri.scheme, uri.scheme
            ),
        });
    }
    let config = parse(&mut uri).map_err(|e| with_listed_params(e, descriptor))?;
    Ok(SinkSpec { descriptor, config })
}

/// An unknown-parameter error lists the parameters of the sink's descriptor (the same list
/// the sink read, which a debug build checks, so the descriptor cannot drift from the parsing).
fn with_listed_params(e: Error, descriptor: &SinkDescriptor) -> Error {
    match e {
        Error::UnknownParam { uri, param, valid } => {
            let listed = descriptor.param_list();
            debug_assert_eq!(
                valid,
                listed,
                "the parameters `{}:` reads differ from its descriptor's",
                descriptor.scheme()
            );
            Error::UnknownParam {
                uri,
                param,
                valid: listed,
            }
        }
        other => other,
    }
}

/// `path` as an absolute path with `.` and `..` resolved and the symbolic links of its
/// existing part followed, so two spellings of one file compare equal.
pub(crate) fn normalize_path(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
    };
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    // The longest existing ancestor, with its links resolved, then the rest as written.
    let mut rest = Vec::new();
    let mut head = lexical.as_path();
    loop {
        if let Ok(real) = head.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (head.file_name(), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                head = parent;
            }
            _ => return lexical,
        }
    }
}

/// Claims of a sink that writes one file and no table.
pub(crate) fn claims_file(path: &Path) -> Claims {
    Claims {
        file: Some(normalize_path(path)),
        ..Claims::default()
    }
}

/// Refuses two sinks that write the same file, the same table of one SQLite database, or the
/// same PostgreSQL table: they would interleave their rows or replace each other's file. Paths
/// are compared after making them absolute and resolving `.`, `..` and symbolic links, so
/// `csv:run.csv` and `csv:./out/../run.csv` are one file. Two SQLite sinks may share a
/// database file when their `table`s differ (SQLite compares names ignoring case). Nothing is created or opened:
/// a program calls this with every parsed sink before it opens the first one.
///
/// ```
/// use tapedeck::sink;
/// let a = sink::parse("csv:never-made.csv").unwrap();
/// let b = sink::parse("csv:./never-made.csv?overwrite=true").unwrap();
/// let e = sink::check_distinct([&a, &b]).unwrap_err().to_string();
/// assert!(e.contains("never-made.csv"), "{e}");
/// assert!(sink::check_distinct([&a, &sink::parse("jsonl:never-made.jsonl").unwrap()]).is_ok());
/// ```
pub fn check_distinct<'a>(specs: impl IntoIterator<Item = &'a SinkSpec>) -> Result<()> {
    let described: Vec<(String, Claims)> = specs
        .into_iter()
        .map(|s| (s.describe(), s.config.claims()))
        .collect();
    for (i, (first, a)) in described.iter().enumerate() {
        for (second, b) in described.iter().skip(i + 1) {
            if let (Some(file_a), Some(file_b)) = (&a.file, &b.file)
                && file_a == file_b
                && !(a.file_shared && b.file_shared)
            {
                return Err(Error::InvalidOption {
                    option: "--sink",
                    message: format!(
                        "`{first}` and `{second}` both write {}; two sinks writing one file would interleave or replace each other's rows. Give each --sink its own path",
                        file_a.display()
                    ),
                });
            }
            if let Some(shared) = a.tables.iter().find(|t| b.tables.contains(t)) {
                return Err(Error::InvalidOption {
                    option: "--sink",
                    message: format!(
                        "`{first}` and `{second}` both write {shared}; two sinks writing one table would write every row twice. Set another `table=` on one of them"
                    ),
                });
            }
        }
    }
    Ok(())
}

//! URIs that name sources and sinks: `scheme:path?key=value&…`.
//!
//! Parsing is deliberately small: the scheme is everything before the first `:`, the path runs to
//! the first `?`, and the query is `&`-separated `key=value` pairs with `%XX` escapes decoded.
//! Every sink and source declares the parameters it knows; [`Params::finish`] turns a parameter
//! nobody asked for into an error that lists the valid ones, so a typo never passes silently.
//! [`redact`] removes a password from `scheme://user:password@host/…` before a URI is shown.

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// A parsed URI.
#[derive(Debug, Clone)]
pub struct Uri {
    /// The scheme in lower case (`csv`, `sim`, `postgres`, …).
    pub scheme: String,
    /// Everything between the `:` and the `?`, percent-decoded.
    pub path: String,
    /// The query parameters, in order.
    pub params: Params,
}

impl Uri {
    /// Parses `text`.
    ///
    /// ```
    /// let uri = tapedeck::uri::Uri::parse("csv:out/run.csv?overwrite=true").unwrap();
    /// assert_eq!(uri.scheme, "csv");
    /// assert_eq!(uri.path, "out/run.csv");
    /// ```
    pub fn parse(text: &str) -> Result<Uri> {
        let shown = redact(text);
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(Error::MalformedUri {
                uri: shown,
                reason: "no scheme; write it as `scheme:path`, e.g. `csv:run.csv`".into(),
            });
        };
        let valid_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.');
        if !valid_scheme {
            return Err(Error::MalformedUri {
                uri: shown,
                reason: format!("`{scheme}` is not a scheme; write it as `scheme:path`"),
            });
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut params = Vec::new();
        if let Some(query) = query {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = percent_decode(k).ok_or_else(|| bad_escape(&shown, k))?;
                let value = percent_decode(v).ok_or_else(|| bad_escape(&shown, v))?;
                params.push((key, value));
            }
        }
        Ok(Uri {
            scheme: scheme.to_ascii_lowercase(),
            path: percent_decode(path).ok_or_else(|| bad_escape(&shown, path))?,
            params: Params {
                uri: shown,
                pairs: params,
                used: Vec::new(),
            },
        })
    }

    /// The URI as it may be shown in logs and errors (password removed).
    pub fn shown(&self) -> &str {
        &self.params.uri
    }
}

fn bad_escape(uri: &str, part: &str) -> Error {
    Error::MalformedUri {
        uri: uri.to_string(),
        reason: format!("bad %-escape in `{}`", redact(part)),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Removes the password from `scheme://user:password@host…`, keeping everything else.
///
/// ```
/// assert_eq!(
///     tapedeck::uri::redact("postgres://me:s3cret@db:5432/lab?table=t"),
///     "postgres://me:***@db:5432/lab?table=t"
/// );
/// assert_eq!(tapedeck::uri::redact("csv:run.csv"), "csv:run.csv");
/// ```
pub fn redact(uri: &str) -> String {
    let Some(start) = uri.find("://").map(|i| i + 3) else {
        return uri.to_string();
    };
    let authority_end = uri[start..]
        .find(['/', '?'])
        .map_or(uri.len(), |i| start + i);
    let authority = &uri[start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &uri[..start],
            &userinfo[..colon],
            &uri[start + at..]
        ),
        None => uri.to_string(),
    }
}

/// Query parameters of a URI, with bookkeeping of which ones were read.
#[derive(Debug, Clone)]
pub struct Params {
    uri: String,
    pairs: Vec<(String, String)>,
    used: Vec<&'static str>,
}

impl Params {
    /// The raw value of `key`, if present (the last one wins), marking it as known.
    pub fn raw(&mut self, key: &'static str) -> Option<&str> {
        self.used.push(key);
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `key` with [`FromStr`]; `expected` describes valid values for the error.
    pub fn parse<T: FromStr>(&mut self, key: &'static str, expected: &str) -> Result<Option<T>> {
        let uri = self.uri.clone();
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| Error::BadParam {
                uri,
                param: key.to_string(),
                value: v.to_string(),
                expected: expected.to_string(),
            }),
        }
    }

    /// A boolean parameter: `true|false|1|0|yes|no`; a bare `key` means true.
    pub fn flag(&mut self, key: &'static str) -> Result<bool> {
        let uri = self.uri.clone();
        match self.raw(key) {
            None => Ok(false),
            Some("" | "true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(Error::BadParam {
                uri,
                param: key.to_string(),
                value: v.to_string(),
                expected: "true or false".into(),
            }),
        }
    }

    /// A duration such as `250ms`, `1s`, `2m` or a plain number of seconds.
    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>> {
        let uri = self.uri.clone();
        match self.raw(key) {
            None => Ok(None),
            Some(v) => parse_duration(v).map(Some).ok_or_else(|| Error::BadParam {
                uri,
                param: key.to_string(),
                value: v.to_string(),
                expected: "a duration such as 250ms, 1s, 5m or a number of seconds".into(),
            }),
        }
    }

    /// One of a fixed set of words.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &'static [&'static str],
    ) -> Result<Option<&'static str>> {
        let uri = self.uri.clone();
        match self.raw(key) {
            None => Ok(None),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .map(Some)
                .ok_or_else(|| Error::BadParam {
                    uri,
                    param: key.to_string(),
                    value: v.to_string(),
                    expected: format!("one of {}", choices.join(", ")),
                }),
        }
    }

    /// Fails if a parameter was given that no `raw`/`parse`/`flag` call asked for.
    pub fn finish(&self) -> Result<()> {
        if let Some((k, _)) = self
            .pairs
            .iter()
            .find(|(k, _)| !self.used.iter().any(|u| u == k))
        {
            let mut valid: Vec<&str> = self.used.clone();
            valid.sort_unstable();
            valid.dedup();
            return Err(Error::UnknownParam {
                uri: self.uri.clone(),
                param: k.clone(),
                valid: if valid.is_empty() {
                    "(none)".into()
                } else {
                    valid.join(", ")
                },
            });
        }
        Ok(())
    }

    /// The URI these parameters came from (redacted).
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// Parses `250ms`, `1.5s`, `10us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_path_and_query() {
        let mut u = Uri::parse("CSV:dir/a%20b.csv?overwrite=true&x=1").unwrap();
        assert_eq!(u.scheme, "csv");
        assert_eq!(u.path, "dir/a b.csv");
        assert!(u.params.flag("overwrite").unwrap());
        let err = u.params.finish().unwrap_err().to_string();
        assert!(err.contains("unknown parameter `x`"), "{err}");
        assert!(err.contains("valid parameters: overwrite"), "{err}");
    }

    #[test]
    fn rejects_missing_scheme_and_bad_escapes() {
        assert!(matches!(
            Uri::parse("run.csv"),
            Err(Error::MalformedUri { .. })
        ));
        assert!(matches!(
            Uri::parse("csv:a%zz"),
            Err(Error::MalformedUri { .. })
        ));
        assert!(matches!(Uri::parse(":x"), Err(Error::MalformedUri { .. })));
    }

    #[test]
    fn bad_values_name_param_and_expectation() {
        let mut u = Uri::parse("sim:alicat?n=lots").unwrap();
        let err = u.params.parse::<u64>("n", "a row count").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`lots`") && msg.contains("`n`") && msg.contains("a row count"));
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
        let err = Uri::parse("postgres://u:hunter2@h/db?x=%zz").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}

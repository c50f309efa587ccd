//! URIs that name sources and sinks: `scheme:path?key=value&…`.
//!
//! Parsing is deliberately small: the scheme is everything before the first `:`, the path runs to
//! the first `?`, and the query is `&`-separated `key=value` pairs with `%XX` escapes decoded.
//! Every sink and source declares the parameters it knows; [`Params::finish`] turns a parameter
//! nobody asked for into an error that lists the valid ones, so a typo never passes silently,
//! and a parameter given twice is an error naming both values. Booleans read `true` / `false`,
//! `yes` / `no`, `on` / `off` and `1` / `0` in any letter case ([`Params::flag_or`]).
//! [`redact`] removes a password from `scheme://user:password@host/…`, and the value of a
//! `password=` / `pass=` parameter or connection-string key, before a URI is shown; errors about
//! a part of a URI that lies inside a password never quote that part.

use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// A parsed URI. Its `Debug` shows the scheme and the redacted URI only.
#[derive(Clone)]
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
        let secrets = secret_ranges(text);
        let shown = hide(text, &secrets);
        let is_secret = |span: Range<usize>| overlaps(&span, &secrets);
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
                reason: if is_secret(0..scheme.len()) {
                    "the text before the first `:` is not a scheme; write it as `scheme:path`"
                        .into()
                } else {
                    format!("`{scheme}` is not a scheme; write it as `scheme:path`")
                },
                uri: shown,
            });
        }
        let path_start = scheme.len() + 1;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut pairs = Vec::new();
        let mut secret = Vec::new();
        let mut bares = Vec::new();
        if let Some(query) = query {
            // Byte offset of each pair in `text`, so a pair inside a password is known.
            let mut at = path_start + path.len() + 1;
            for pair in query.split('&') {
                let span = at..at + pair.len();
                at = span.end + 1;
                if pair.is_empty() {
                    continue;
                }
                let (k, v, bare) = match pair.split_once('=') {
                    Some((k, v)) => (k, v, false),
                    None => (pair, "", true),
                };
                let key_hidden = is_secret(span.start..span.start + k.len());
                let value_hidden = is_secret(span.start + k.len()..span.end);
                let key = percent_decode(k).ok_or_else(|| bad_escape(&shown, k, key_hidden))?;
                let value = percent_decode(v).ok_or_else(|| bad_escape(&shown, v, value_hidden))?;
                pairs.push((key, value));
                secret.push((key_hidden, value_hidden));
                bares.push(bare);
            }
        }
        check_repeated(&shown, &pairs, &secret)?;
        let path_hidden = is_secret(path_start..path_start + path.len());
        Ok(Uri {
            scheme: scheme.to_ascii_lowercase(),
            path: percent_decode(path).ok_or_else(|| bad_escape(&shown, path, path_hidden))?,
            params: Params {
                uri: shown,
                pairs,
                secret,
                bare: bares,
                used: Vec::new(),
            },
        })
    }

    /// The URI as it may be shown in logs and errors (password removed).
    pub fn shown(&self) -> &str {
        &self.params.uri
    }

    /// The path as it may be shown in logs and errors: the path part of [`Uri::shown`], not
    /// percent-decoded, with any password replaced by `***`.
    pub fn shown_path(&self) -> &str {
        let rest = self.shown().split_once(':').map_or("", |(_, r)| r);
        rest.split_once('?').map_or(rest, |(p, _)| p)
    }
}

impl std::fmt::Debug for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uri")
            .field("scheme", &self.scheme)
            .field("shown", &self.shown())
            .finish_non_exhaustive()
    }
}

/// What an error says instead of a key or value that lies inside a password.
const HIDDEN_PART: &str =
    "(a part of the password, hidden; write `?` `&` `#` `%` in a password as %3F %26 %23 %25)";

fn bad_escape(uri: &str, part: &str, secret: bool) -> Error {
    Error::MalformedUri {
        uri: uri.to_string(),
        reason: if secret {
            "bad %-escape in the password (hidden); write `%` in a password as `%25`".into()
        } else {
            format!("bad %-escape in `{}`", redact(part))
        },
    }
}

/// A parameter given twice (`?table=a&table=b`) is an error naming it and both values: which
/// one was meant cannot be guessed, and keeping the last one silently hides a typo. A value
/// that lies inside a password is never quoted; keys that lie inside one are left to
/// [`Params::finish`].
fn check_repeated(uri: &str, pairs: &[(String, String)], secret: &[(bool, bool)]) -> Result<()> {
    for (i, ((key, first), (key_secret, first_secret))) in pairs.iter().zip(secret).enumerate() {
        if *key_secret {
            continue;
        }
        let again = pairs
            .iter()
            .zip(secret)
            .skip(i + 1)
            .find(|((k, _), (ks, _))| k == key && !ks);
        if let Some(((_, second), (_, second_secret))) = again {
            let hidden = SECRET_KEYS
                .iter()
                .any(|s| key.to_ascii_lowercase().contains(s));
            let show = |v: &str, secret: bool| {
                if hidden || secret {
                    "***".to_string()
                } else {
                    format!("`{v}`")
                }
            };
            return Err(Error::MalformedUri {
                uri: uri.to_string(),
                reason: format!(
                    "parameter `{key}` is given twice ({} and {}); give it once, e.g. `{key}={}`",
                    show(first, *first_secret),
                    show(second, *second_secret),
                    if hidden || *second_secret {
                        "…"
                    } else {
                        second.as_str()
                    }
                ),
            });
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Keys whose value is a credential, in a query (`?password=…`) or a `key=value` connection
/// string (`host=h password=…`): any key whose lower-case name contains one of these.
const SECRET_KEYS: &[&str] = &["pass", "pwd", "secret", "token"];

/// The byte ranges of `uri` that hold credentials, sorted and merged:
///
/// - the password of `scheme://user:password@host…`: from the first `:` after `://` to the
///   **last** `@` of the URI. A password may hold `/`, `?`, `#`, `@` or `:` written raw, so
///   nothing before the last `@` can be trusted to end it; when an `@` appears later (in a
///   query value), more than the password is hidden, never less;
/// - the value of a secret key (see `SECRET_KEYS`) in a query (`?password=…&`, up to the next
///   `&`) or a connection string (`password=…`, up to the next blank; `'quoted values'` whole).
fn secret_ranges(uri: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    if let Some(start) = uri.find("://").map(|i| i + 3)
        && let Some(at) = uri[start..].rfind('@').map(|i| start + i)
        && let Some(colon) = uri[start..at].find(':').map(|i| start + i)
        && colon + 1 < at
    {
        ranges.push(colon + 1..at);
    }
    let bytes = uri.as_bytes();
    for (eq, _) in uri.match_indices('=') {
        // The key: the word before `=` (blanks allowed around `=` in a connection string).
        let key_end = uri[..eq].trim_end().len();
        let key_start = uri[..key_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let key = uri[key_start..key_end].to_ascii_lowercase();
        if !SECRET_KEYS.iter().any(|k| key.contains(k)) {
            continue;
        }
        let in_query = matches!(
            key_start.checked_sub(1).and_then(|i| bytes.get(i)),
            Some(b'?' | b'&')
        );
        let value_start = eq + 1;
        let end = if in_query {
            uri[value_start..]
                .find('&')
                .map_or(uri.len(), |i| value_start + i)
        } else {
            let skip = uri[value_start..].len() - uri[value_start..].trim_start().len();
            let v = value_start + skip;
            if bytes.get(v) == Some(&b'\'') {
                // libpq quoting: up to the closing `'` not escaped by `\`.
                let mut i = v + 1;
                loop {
                    match bytes.get(i) {
                        None => break uri.len(),
                        Some(b'\\') => i += 2,
                        Some(b'\'') => break i + 1,
                        Some(_) => i += 1,
                    }
                }
                .min(uri.len())
            } else {
                uri[v..]
                    .find(char::is_whitespace)
                    .map_or(uri.len(), |i| v + i)
            }
        };
        if value_start < end {
            ranges.push(value_start..end);
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

fn overlaps(span: &Range<usize>, ranges: &[Range<usize>]) -> bool {
    ranges
        .iter()
        .any(|r| span.start < r.end && r.start < span.end)
}

/// `uri` with each range replaced by `***`.
fn hide(uri: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut at = 0;
    for r in ranges {
        out.push_str(uri.get(at..r.start).unwrap_or_default());
        out.push_str("***");
        at = r.end;
    }
    out.push_str(uri.get(at..).unwrap_or_default());
    out
}

/// Replaces every credential in `uri` by `***`, keeping everything else: the password of
/// `scheme://user:password@host…` (everything from the first `:` after `://` to the last `@`,
/// whatever `/ ? # @ : %` it holds), and the value of a `password=` / `pass=` / `pwd=` /
/// `secret=` / `token=` query parameter or connection-string key.
///
/// ```
/// use tapedeck::uri::redact;
/// assert_eq!(redact("postgres://me:s3cret@db:5432/lab?table=t"), "postgres://me:***@db:5432/lab?table=t");
/// assert_eq!(redact("postgres://me:a/b?c#d@db/lab"), "postgres://me:***@db/lab");
/// assert_eq!(redact("postgres://db/lab?password=x&table=t"), "postgres://db/lab?password=***&table=t");
/// assert_eq!(redact("host=db password='a b' dbname=lab"), "host=db password=*** dbname=lab");
/// assert_eq!(redact("csv:run.csv"), "csv:run.csv");
/// ```
pub fn redact(uri: &str) -> String {
    hide(uri, &secret_ranges(uri))
}

/// Query parameters of a URI, with bookkeeping of which ones were read. Its `Debug` shows the
/// redacted URI only.
#[derive(Clone)]
pub struct Params {
    uri: String,
    pairs: Vec<(String, String)>,
    /// Per pair: its key, its value lies (partly) inside a credential, so errors never quote
    /// it.
    secret: Vec<(bool, bool)>,
    /// Per pair: written without `=` (`?overwrite`), which a boolean reads as true.
    bare: Vec<bool>,
    used: Vec<&'static str>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Params {
    /// The raw value of `key`, if present, marking it as known ([`Uri::parse`] refuses a key
    /// given twice). A pair
    /// whose key lies inside a password (`postgres://u:pa?table=x@h/db` splits at its `?`) is
    /// never returned: [`Params::finish`] reports it instead.
    pub fn raw(&mut self, key: &'static str) -> Option<&str> {
        self.used.push(key);
        self.pairs
            .iter()
            .zip(&self.secret)
            .rev()
            .find(|((k, _), (key_secret, _))| k == key && !key_secret)
            .map(|((_, v), _)| v.as_str())
    }

    /// The value of `key` (as [`Params::raw`]), with the error to return when it does not
    /// read: `BadParam` naming `expected`, the value hidden when it lies inside a credential.
    fn value_or_error(&mut self, key: &'static str, expected: &str) -> Option<(String, Error)> {
        let v = self.raw(key)?.to_string();
        let secret = SECRET_KEYS
            .iter()
            .any(|s| key.to_ascii_lowercase().contains(s))
            || self
                .pairs
                .iter()
                .zip(&self.secret)
                .rev()
                .find(|((k, _), _)| k == key)
                .is_some_and(|(_, (_, value_secret))| *value_secret);
        let err = Error::BadParam {
            uri: self.uri.clone(),
            param: key.to_string(),
            value: if secret { "***".into() } else { v.clone() },
            expected: expected.to_string(),
        };
        Some((v, err))
    }

    /// Parses `key` with [`FromStr`]; `expected` describes valid values for the error.
    pub fn parse<T: FromStr>(&mut self, key: &'static str, expected: &str) -> Result<Option<T>> {
        match self.value_or_error(key, expected) {
            None => Ok(None),
            Some((v, err)) => v.parse::<T>().map(Some).map_err(|_| err),
        }
    }

    /// A boolean parameter, false when absent; see [`Params::flag_or`].
    pub fn flag(&mut self, key: &'static str) -> Result<bool> {
        self.flag_or(key, false)
    }

    /// A boolean parameter, `default` when absent: `true` / `false`, `yes` / `no`, `on` / `off`
    /// or `1` / `0`, in any letter case; a bare `key` (no `=`) means true. Anything else —
    /// also `key=` with nothing after the `=` — is [`Error::BadParam`] naming the parameter,
    /// the value and the accepted forms.
    ///
    /// ```
    /// let mut uri = tapedeck::uri::Uri::parse("csv:a.csv?overwrite=True&strict=perhaps").unwrap();
    /// assert!(uri.params.flag("overwrite").unwrap());
    /// let e = uri.params.flag("strict").unwrap_err().to_string();
    /// assert!(e.contains("`perhaps`") && e.contains("`strict`") && e.contains("strict=true"), "{e}");
    /// ```
    pub fn flag_or(&mut self, key: &'static str, default: bool) -> Result<bool> {
        let bare = self
            .pairs
            .iter()
            .zip(&self.secret)
            .zip(&self.bare)
            .rev()
            .find(|(((k, _), (key_secret, _)), _)| k == key && !key_secret)
            .is_some_and(|(_, bare)| *bare);
        let expected = format!(
            "true or false (also yes/no, on/off, 1/0, in any letter case): write `{key}=true` or `{key}=false`"
        );
        match self.value_or_error(key, &expected) {
            None => Ok(default),
            Some(_) if bare => Ok(true),
            Some((v, err)) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(err),
            },
        }
    }

    /// A duration such as `250ms`, `1s`, `2m` or a plain number of seconds.
    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>> {
        let expected = "a duration such as 250ms, 1s, 5m or a number of seconds";
        match self.value_or_error(key, expected) {
            None => Ok(None),
            Some((v, err)) => parse_duration(&v).map(Some).ok_or(err),
        }
    }

    /// One of a fixed set of words.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &'static [&'static str],
    ) -> Result<Option<&'static str>> {
        match self.value_or_error(key, &format!("one of {}", choices.join(", "))) {
            None => Ok(None),
            Some((v, err)) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .map(Some)
                .ok_or(err),
        }
    }

    /// Fails if a parameter was given that no `raw`/`parse`/`flag` call asked for, or a query
    /// piece lies inside a password (a raw `?` in it).
    pub fn finish(&self) -> Result<()> {
        if let Some(((k, _), (secret, _))) = self
            .pairs
            .iter()
            .zip(&self.secret)
            .find(|((k, _), (key_secret, _))| *key_secret || !self.used.iter().any(|u| u == k))
        {
            let mut valid: Vec<&str> = self.used.clone();
            valid.sort_unstable();
            valid.dedup();
            return Err(Error::UnknownParam {
                uri: self.uri.clone(),
                param: if *secret {
                    HIDDEN_PART.into()
                } else {
                    k.clone()
                },
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

/// A password or token: never shown by `Debug`, never part of a name or an error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Secret {
        Secret(password.into())
    }

    /// The password itself, for the clients that send it (PostgreSQL, NATS): a build without
    /// both has no use for it.
    #[cfg_attr(not(any(feature = "postgres", feature = "nats")), allow(dead_code))]
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The parts of a network URI's path, `//[user[:password]@]host[:port][/rest]` (PostgreSQL's
/// and NATS's): the password in a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    /// The user name, when given.
    pub user: Option<String>,
    /// The password, when given (not empty).
    pub password: Option<Secret>,
    /// The host: a name, an IPv4 address or an IPv6 address without its brackets; may be empty.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
    /// What follows the first `/` after the authority (the database, the subject), maybe empty.
    pub path: &'a str,
}

impl<'a> Authority<'a> {
    /// Splits `//authority/path`; `Ok(None)` when `path` does not start with `//`, `Err` with
    /// the reason when the port is not a number from 1 to 65535.
    ///
    /// ```
    /// use tapedeck::uri::Authority;
    /// let a = Authority::split("//lab:p%40ss@[::1]:4222/plant.flow").unwrap().unwrap();
    /// assert_eq!((a.user.as_deref(), a.host.as_str(), a.port, a.path), (Some("lab"), "::1", Some(4222), "plant.flow"));
    /// assert!(format!("{a:?}").contains("***"));
    /// assert!(Authority::split("//db:99999/x").is_err());
    /// ```
    pub fn split(path: &'a str) -> std::result::Result<Option<Authority<'a>>, String> {
        let Some(rest) = path.strip_prefix("//") else {
            return Ok(None);
        };
        // The password may hold `/` or `@` (decoded from %2F / %40): the authority ends at the
        // first `/` after the last `@`.
        let at = rest.rfind('@');
        let after_at = at.map_or(0, |i| i + 1);
        let slash = rest
            .get(after_at..)
            .and_then(|r| r.find('/'))
            .map(|i| i + after_at);
        let (authority, path) = match slash {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match at {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((u, p)) => (
                (!u.is_empty()).then(|| u.to_string()),
                (!p.is_empty()).then(|| Secret::new(p)),
            ),
            None => (None, None),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| {
            "the port after the host must be a number from 1 to 65535".to_string()
        })?;
        Ok(Some(Authority {
            user,
            password,
            host,
            port,
            path,
        }))
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` when the port is not a number.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0)?),
        None => None,
    };
    Some((host.to_string(), port))
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

//! Credentials never reach a shown URI, an error or a `Debug` (issue 12, defect 13): passwords
//! holding `/ ? # @ % :` (raw or %-escaped) in `scheme://user:password@host…`, in a
//! `password=` / `pass=` query parameter, and in a `key=value` connection string.

use tapedeck::uri::{Uri, redact};

/// Passwords, mostly of letters that appear nowhere else in the URIs below (k q z j), so any
/// two-character piece of one found in an output is a leak.
const PASSWORDS: &[&str] = &[
    "kq/zj",
    "kq?zj",
    "kq#zj",
    "kq@zj",
    "kq%2Fzj",
    "kq%40zj",
    "kq%zzj",
    "kq:zj",
    "k/q?z#j@v%41w:x",
    "kq@zj@vw",
    "kq//zj",
    "kq?table=zj",
    "kq&zj",
    "5678?table=zjk",
    "5678?table=zjk&kq=1",
    "@kqzj",
    "kqzj@",
    "k",
];

/// URI templates: `{}` is the password.
const USERINFO: &[&str] = &[
    "postgres://u:{}@h/db",
    "postgres://u:{}@h:5432/db?table=t",
    "postgresql://lab:{}@[::1]:6000/db?table=t&schema=s",
    "postgres://u:{}@h",
    "postgres://u:{}@h/db?application_name=a@b",
    "postgres://:{}@h/db",
    "csv://u:{}@h/out.csv",
];

/// Templates where the password is a parameter value: the value runs to the next `&`, so a
/// password with a raw `&` cannot be told from the next parameter there (write it `%26`).
const PARAMS: &[&str] = &[
    "postgres://h/db?password={}",
    "postgres://h:5432/db?table=t&pass={}&schema=s",
    "postgres://u@h/db?PassWord={}",
    "postgres:host=h password={} dbname=db",
    "postgres:host=h password = {} dbname=db",
    "host=h pwd={}",
];

/// Every piece of `password` (raw and %-decoded) of two characters or more.
fn pieces(password: &str) -> Vec<String> {
    let decoded = percent_decode(password);
    let mut out = Vec::new();
    for p in [password.to_string(), decoded] {
        let chars: Vec<char> = p.chars().collect();
        for i in 0..chars.len() {
            for j in i + 2..=chars.len() {
                out.push(chars[i..j].iter().collect());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything the library shows for `uri`: the redacted form, the parse error or the parsed
/// URI's shown form, path and `Debug`, the errors of its parameters (all unknown; every one
/// read as a number), the `source:` and `sink:` errors and the sink spec's `Debug`.
fn outputs(uri: &str) -> Vec<String> {
    let mut out = vec![redact(uri)];
    match Uri::parse(uri) {
        Err(e) => out.extend([e.to_string(), format!("{e:?}")]),
        Ok(u) => {
            out.extend([
                u.shown().to_string(),
                u.shown_path().to_string(),
                format!("{u:?}"),
                format!("{:?}", u.params),
            ]);
            if let Err(e) = u.params.finish() {
                out.extend([e.to_string(), format!("{e:?}")]);
            }
            // Every key the query may hold, read as a number, then as each kind of value.
            for key in [
                "password", "pass", "PassWord", "table", "schema", "zj", "zj@h/db", "j",
            ] {
                let mut p = u.params.clone();
                if let Err(e) = p.parse::<u8>(key, "a number") {
                    out.push(e.to_string());
                }
                let mut p = u.params.clone();
                if let Err(e) = p.flag(key) {
                    out.push(e.to_string());
                }
                let mut p = u.params.clone();
                if let Err(e) = p.duration(key) {
                    out.push(e.to_string());
                }
                let mut p = u.params.clone();
                if let Err(e) = p.choice(key, &["a", "b"]) {
                    out.push(e.to_string());
                }
            }
        }
    }
    if let Err(e) = tapedeck::source::open(uri) {
        out.push(e.to_string());
    }
    match tapedeck::sink::parse_unchecked(uri) {
        Err(e) => out.push(e.to_string()),
        // A file sink's spec holds its path as given; only a database's holds credentials.
        Ok(spec) if uri.starts_with("postgres") => out.push(format!("{spec:?}")),
        Ok(_) => {}
    }
    out
}

/// Asserts that no piece of `password` shows in any output for `uri`, except pieces that
/// show for the same URI with a neutral password too (words of the template or the messages).
fn assert_hidden(uri: &str, password: &str) {
    let neutral = uri.replacen(password, "vwxy", 1);
    let baseline = outputs(&neutral).join("\n") + &neutral;
    for shown in outputs(uri) {
        for piece in pieces(password) {
            // Pieces without a rare letter (`table`, `5678`) may match message words.
            if baseline.contains(&piece) || !piece.contains(['k', 'q', 'z', 'j']) {
                continue;
            }
            assert!(
                !shown.contains(&piece),
                "`{piece}` of password `{password}` shows in `{shown}` (from `{uri}`)"
            );
        }
    }
}

#[test]
fn passwords_with_any_special_character_never_show() {
    for template in USERINFO {
        for password in PASSWORDS {
            assert_hidden(&template.replace("{}", password), password);
        }
    }
    for template in PARAMS {
        for password in PASSWORDS.iter().filter(|p| !p.contains('&')) {
            assert_hidden(&template.replace("{}", password), password);
        }
    }
    // libpq quoting: a quoted value is hidden whole, blanks and quotes included.
    for password in ["kq zj", r"kq\' zj", "kq'"] {
        assert_hidden(
            &format!("postgres:host=h password='{password}' dbname=db"),
            password,
        );
    }
}

#[test]
fn redact_keeps_everything_but_the_password() {
    for (uri, want) in [
        ("postgres://u:p@h/db", "postgres://u:***@h/db"),
        ("postgres://u:p%2Fw@h/db", "postgres://u:***@h/db"),
        ("postgres://u:a/b@h/db", "postgres://u:***@h/db"),
        (
            "postgres://u:a?b@h/db?table=t",
            "postgres://u:***@h/db?table=t",
        ),
        ("postgres://u:a#b@h:5432/db", "postgres://u:***@h:5432/db"),
        ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
        ("postgres://u:a:b@h/db", "postgres://u:***@h/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgres://h/db?x=a@b", "postgres://h/db?x=a@b"),
        ("postgres://h:5432/db", "postgres://h:5432/db"),
        ("postgres://[::1]:5432/db", "postgres://[::1]:5432/db"),
        (
            "postgres://h/db?password=x&table=t",
            "postgres://h/db?password=***&table=t",
        ),
        ("postgres://h/db?pass=", "postgres://h/db?pass="),
        (
            "host=h password='a b' dbname=db",
            "host=h password=*** dbname=db",
        ),
        ("csv:run.csv?overwrite=true", "csv:run.csv?overwrite=true"),
        ("sim:daq?rate=10", "sim:daq?rate=10"),
        ("", ""),
    ] {
        assert_eq!(redact(uri), want, "{uri}");
    }
    // An `@` after the password (in a query) hides more than the password, never less.
    let shown = redact("postgres://u:pw@h/db?application_name=me@lab");
    assert!(!shown.contains("pw"), "{shown}");
    // A password= value running into a userinfo password hides both.
    let shown = redact("postgres://h:5432/db?password=p@ss");
    assert!(!shown.contains("p@") && !shown.contains("ss"), "{shown}");
}

#[test]
fn parse_errors_name_the_problem_without_the_password() {
    for (uri, needle) in [
        ("postgres://u:kq%zzj@h/db", "password"),
        ("postgres://u:kq?zj@h/db", "password"),
        ("postgres://u:p@h/db?x=%zz", "%-escape"),
        ("postgres://h/db?password=kq%zzj", "password"),
    ] {
        let err = match Uri::parse(uri) {
            Err(e) => e.to_string(),
            Ok(u) => u.params.finish().unwrap_err().to_string(),
        };
        assert!(err.contains(needle), "{uri}: {err}");
        assert!(!err.contains("kq") && !err.contains("zj"), "{uri}: {err}");
    }
    // Parameters outside the password are still named.
    let err = Uri::parse("postgres://u:kq@h/db?tabel=t")
        .unwrap()
        .params
        .finish()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`tabel`") && !err.contains("kq"), "{err}");
}

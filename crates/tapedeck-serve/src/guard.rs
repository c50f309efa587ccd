//! Who may ask, and what every answer carries.
//!
//! - **A token** when one is set (always, for an address other than loopback): compared in
//!   constant time, taken from `Authorization: Bearer …`, the `tapedeck_token` cookie, or the
//!   `token` query parameter of the page's address — which then sets the cookie (`HttpOnly`,
//!   `SameSite=Strict`), so the page's own requests and its event stream carry it.
//! - **The Host header** on loopback without a token: only `127.0.0.1`, `localhost`, `[::1]`
//!   or the address listened on, at the server's port — a web page elsewhere that rebinds its
//!   DNS name to 127.0.0.1 is refused.
//! - **Other sites' pages**: a browser says where a request comes from (`Sec-Fetch-Site`); the
//!   API answers only the page itself (`same-origin`) or a request typed in (`none`), so a page
//!   of another site — or of another port on this host — cannot make it run queries.
//! - **Headers** on every answer: a Content-Security-Policy that allows only the server's own
//!   scripts, styles and connections (no inline script, no frames), `nosniff`, no referrer, no
//!   caching.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::App;

/// The cookie that carries the token, `tapedeck_token_<port>`: cookies are shared by every
/// port of a host name, so each server keeps its own.
pub fn cookie_name(port: u16) -> String {
    format!("tapedeck_token_{port}")
}

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// A new random token: 32 hex digits from the kernel's random source.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The token a request carries, and whether it came in the address (then the answer sets the
/// cookie).
fn presented(req: &Request, port: u16) -> (Option<String>, bool) {
    let headers = req.headers();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return (Some(v.trim().to_string()), false);
    }
    if let Some(q) = req.uri().query()
        && let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        && let Some((_, v)) = pairs.into_iter().find(|(k, _)| k == "token")
    {
        return (Some(v), true);
    }
    (cookie(headers, &cookie_name(port)), false)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether `host` (a Host header) names this loopback server, listening on `ip`.
fn loopback_host(host: &str, ip: std::net::IpAddr, port: u16) -> bool {
    let own = match ip {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    ["127.0.0.1", "localhost", "[::1]", own.as_str()]
        .iter()
        .any(|h| host == format!("{h}:{port}") || (port == 80 && host == *h))
}

/// Whether a request's `Sec-Fetch-Site` (absent outside browsers) lets it use the API.
fn same_origin(req: &Request) -> bool {
    match req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(site) => site == "same-origin" || site == "none",
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The middleware: checks the request, then adds the headers to whatever answers it.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut set_cookie = None;
    let api = req.uri().path().starts_with("/api/");
    let mut response = match &app.token {
        _ if api && !same_origin(&req) => refuse(
            StatusCode::FORBIDDEN,
            "the API answers only its own page (this request came from another site's page)",
        ),
        Some(token) => match presented(&req, app.port) {
            (Some(t), from_query) if equal(&t, token) => {
                if from_query {
                    set_cookie = Some(t);
                }
                next.run(req).await
            }
            (Some(_), _) => refuse(StatusCode::FORBIDDEN, "wrong token"),
            (None, _) => refuse(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: open the address `tapedeck serve` printed (it ends in ?token=…)",
            ),
        },
        None => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if loopback_host(host, app.ip, app.port) {
                next.run(req).await
            } else {
                refuse(
                    StatusCode::FORBIDDEN,
                    "this server answers only to 127.0.0.1, localhost, [::1] and the address it listens on (give it a --token to serve other names)",
                )
            }
        }
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if let Some(t) = set_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}={t}; HttpOnly; SameSite=Strict; Path=/",
            cookie_name(app.port)
        ))
    {
        h.insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(equal(&a, &a.clone()));
        assert!(!equal(&a, &b));
        assert!(!equal(&a, &a[..31]));
    }

    #[test]
    fn only_loopback_names_at_our_port_pass() {
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(loopback_host("127.0.0.1:8080", ip, 8080));
        assert!(loopback_host("localhost:8080", ip, 8080));
        assert!(loopback_host("[::1]:8080", ip, 8080));
        assert!(!loopback_host("127.0.0.1:8081", ip, 8080));
        assert!(!loopback_host("evil.example:8080", ip, 8080));
        assert!(!loopback_host("", ip, 8080));
        let other: std::net::IpAddr = [127, 0, 0, 2].into();
        assert!(loopback_host("127.0.0.2:8080", other, 8080));
        assert!(!loopback_host("127.0.0.2:8080", ip, 8080));
    }
}

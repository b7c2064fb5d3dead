//! Whether a request comes from another web site's page, for the one endpoint that changes
//! state (`POST /-/reload`).
//!
//! A page on any site can make the operator's browser send a POST to `127.0.0.1:9464`: a form,
//! or `fetch` with `mode: "no-cors"`. The browser does not let the page read the answer, but
//! the request is sent, so it must be refused by the server. Browsers say where a request comes
//! from (`Sec-Fetch-Site` in current ones, `Origin` on every cross-origin POST), and a page can
//! send without a CORS preflight only the "simple" content types (form data, `text/plain`).
//! So a request is refused when any of these says "another site":
//!
//! - `Sec-Fetch-Site` other than `same-origin` or `none` (typed in or sent by a tool);
//!   `same-site` is refused too, since another port of the same host is the same site;
//! - an `Origin` whose host and port are not the request's `Host` (or `null`);
//! - a `Content-Type` a page can send without a preflight: `application/x-www-form-urlencoded`,
//!   `multipart/form-data` or `text/plain`.
//!
//! `curl -X POST` sends none of these headers and passes; so does a request with an
//! `application/json` body.

use axum::http::{header, HeaderMap};

/// Why a request counts as coming from another site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossOrigin {
    #[error("Sec-Fetch-Site {0:?}: the request comes from a page of another site")]
    FetchSite(String),
    #[error("Origin {origin:?} is not this server ({host:?})")]
    Origin { origin: String, host: String },
    #[error("Content-Type {0:?} is one a page of any site may send; send no body, or a JSON one")]
    SimpleContentType(String),
}

/// `Ok` when nothing in `headers` says the request comes from another site.
pub fn check(headers: &HeaderMap) -> Result<(), CrossOrigin> {
    let text = |name: header::HeaderName| {
        headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site.trim().to_ascii_lowercase().as_str(), "same-origin" | "none") {
            return Err(CrossOrigin::FetchSite(site));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or_default();
        if !same_authority(&origin, &host) {
            return Err(CrossOrigin::Origin { origin, host });
        }
    }
    if let Some(content_type) = text(header::CONTENT_TYPE) {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ) {
            return Err(CrossOrigin::SimpleContentType(content_type));
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as `host` (the
/// `Host` header, `host[:port]`), a scheme's default port written or not.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let normal = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        // A port is what follows the last ':' after any IPv6 literal's ']'.
        let port_at = a.rfind(':').filter(|&i| a.rfind(']').is_none_or(|b| i > b));
        match port_at {
            Some(i) => (a[..i].to_owned(), a[i + 1..].to_owned()),
            None => (a.clone(), default_port.to_owned()),
        }
    };
    !host.trim().is_empty() && !authority.contains('/') && normal(authority) == normal(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Header names and values of one request.
    type Pairs = &'static [(&'static str, &'static str)];

    const HOST: (&str, &str) = ("host", "127.0.0.1:9464");

    fn headers(pairs: Pairs) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tools_and_same_origin_pages_pass_and_other_sites_do_not() {
        let cases: [(&str, Pairs, bool); 16] = [
            ("curl -X POST", &[HOST], true),
            ("JSON body", &[HOST, ("content-type", "application/json")], true),
            (
                "same-origin page",
                &[HOST, ("origin", "http://127.0.0.1:9464"), ("sec-fetch-site", "same-origin")],
                true,
            ),
            ("typed in", &[HOST, ("sec-fetch-site", "none")], true),
            (
                "default port written or not",
                &[("host", "crossprobe.example"), ("origin", "http://crossprobe.example:80")],
                true,
            ),
            (
                "https default port",
                &[("host", "crossprobe.example:443"), ("origin", "https://crossprobe.example")],
                true,
            ),
            ("IPv6 literal", &[("host", "[::1]:9464"), ("origin", "http://[::1]:9464")], true),
            (
                "case of the host",
                &[("host", "CrossProbe.example:9464"), ("origin", "http://crossprobe.example:9464")],
                true,
            ),
            (
                "the issue's attack",
                &[HOST, ("origin", "http://evil.example"), ("content-type", "text/plain")],
                false,
            ),
            ("cross-site", &[HOST, ("sec-fetch-site", "cross-site")], false),
            ("another port is same-site", &[HOST, ("sec-fetch-site", "same-site")], false),
            ("another port", &[HOST, ("origin", "http://127.0.0.1:3000")], false),
            ("opaque origin", &[HOST, ("origin", "null")], false),
            ("no Host to compare", &[("origin", "http://127.0.0.1:9464")], false),
            (
                "form post without Origin",
                &[HOST, ("content-type", "application/x-www-form-urlencoded")],
                false,
            ),
            ("text/plain with charset", &[HOST, ("content-type", "Text/Plain; charset=utf-8")], false),
        ];
        for (what, pairs, passes) in cases {
            let got = check(&headers(pairs));
            assert_eq!(got.is_ok(), passes, "{what}: {pairs:?} gave {got:?}");
        }
    }

    #[test]
    fn a_refusal_says_which_header_and_value() {
        let refused = check(&headers(&[("host", "127.0.0.1:9464"), ("origin", "http://evil.example")]));
        assert_eq!(
            refused.unwrap_err().to_string(),
            "Origin \"http://evil.example\" is not this server (\"127.0.0.1:9464\")"
        );
    }
}

//! What the front door says the browser asked for: `X-Forwarded-Method`, `-Proto`, `-Host`,
//! `-Uri` (Traefik forwardAuth), nginx's `X-Original-URI` (+ `Host`), or Envoy ext_authz's path
//! suffix (`/auth/verify/<original path>`, original `Host`).
//!
//! These headers come from the front door, which must set them itself (nginx `proxy_set_header`,
//! Traefik always). Anything ambiguous (a list where one value is expected, a control
//! character, a path with dot segments the upstream would resolve elsewhere) is refused rather
//! than guessed: the route decision is only as good as the path it is made on.

use axum::http::HeaderMap;

/// The longest URI accepted (nginx's default large header buffer is 8k).
pub const MAX_URI: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedRequest {
    /// Upper-case method token.
    pub method: String,
    /// `http` or `https`.
    pub proto: String,
    /// Lower-cased `host` or `host:port`.
    pub host: String,
    /// Path and query, starting with `/`.
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no host: the front door must send X-Forwarded-Host or Host")]
    NoHost,
    #[error("the header {0} is not a single valid value")]
    BadHeader(&'static str),
    #[error("the forwarded URI is not a path starting with /")]
    NotAPath,
    #[error("the forwarded URI has dot segments or encoded slashes")]
    DotSegments,
    #[error("the forwarded URI is too long")]
    TooLong,
}

impl ForwardError {
    /// A stable reason code for audit events and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::NoHost => "forward_no_host",
            ForwardError::BadHeader(_) => "forward_bad_header",
            ForwardError::NotAPath | ForwardError::TooLong => "forward_bad_uri",
            ForwardError::DotSegments => "forward_dot_segments",
        }
    }
}

fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ForwardError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ForwardError::BadHeader(name));
    }
    let v = first
        .to_str()
        .map_err(|_| ForwardError::BadHeader(name))?
        .trim();
    if v.chars().any(|c| c.is_control()) {
        return Err(ForwardError::BadHeader(name));
    }
    Ok(Some(v))
}

impl ForwardedRequest {
    /// Reads the forwarded request. `path_suffix` is Envoy's: the part of our own path after
    /// `/auth/verify` (with our query), used when no URI header is present.
    pub fn from_headers(
        headers: &HeaderMap,
        path_suffix: Option<&str>,
        own_method: &str,
    ) -> Result<Self, ForwardError> {
        let host = match single(headers, "x-forwarded-host")? {
            Some(h) => h,
            None => single(headers, "host")?.ok_or(ForwardError::NoHost)?,
        };
        let host = parse_host(host)?;
        let proto = match single(headers, "x-forwarded-proto")? {
            None => "http".to_owned(),
            Some(p) if p.eq_ignore_ascii_case("https") => "https".to_owned(),
            Some(p) if p.eq_ignore_ascii_case("http") => "http".to_owned(),
            Some(_) => return Err(ForwardError::BadHeader("x-forwarded-proto")),
        };
        let method = match single(headers, "x-forwarded-method")? {
            Some(m) => m,
            None => own_method,
        };
        if method.is_empty()
            || method.len() > 32
            || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
        {
            return Err(ForwardError::BadHeader("x-forwarded-method"));
        }
        let uri = match (
            single(headers, "x-forwarded-uri")?,
            single(headers, "x-original-uri")?,
            path_suffix,
        ) {
            (Some(u), _, _) | (None, Some(u), _) => u,
            (None, None, Some(s)) if !s.is_empty() => s,
            _ => "/",
        };
        Ok(ForwardedRequest {
            method: method.to_ascii_uppercase(),
            proto,
            host,
            uri: parse_uri(uri)?,
        })
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("/")
    }

    /// The absolute URL the browser asked for (where sign-in brings it back).
    pub fn original_url(&self) -> String {
        format!("{}://{}{}", self.proto, self.host, self.uri)
    }
}

/// A host name or `host:port`, lower-cased; anything a URL parser would read differently
/// (userinfo, a path, spaces, a percent-encoded or non-ASCII name it would rewrite) is refused:
/// the route is decided on this text and a return URL is built from it, so both must name the
/// same host (the fuzz target `forwarded_request` found `orders.example%2ecom`, no route's
/// host, turned into a return URL to `orders.example.com`).
pub fn parse_host(raw: &str) -> Result<String, ForwardError> {
    let h = raw.trim().to_ascii_lowercase();
    let bad = h.is_empty()
        || h.len() > 255
        || h.contains(['/', '\\', '@', '?', '#', ',', ' '])
        || url::Url::parse(&format!("http://{h}/"))
            .ok()
            .is_none_or(|u| {
                u.path() != "/" || u.host_str() != Some(crate::policy::route::strip_port(&h))
            });
    if bad {
        return Err(ForwardError::BadHeader("x-forwarded-host"));
    }
    Ok(h)
}

/// A path (and query) starting with one `/`, without control characters, backslashes or dot
/// segments (plain or percent-encoded, and no encoded slash that could hide one).
pub fn parse_uri(raw: &str) -> Result<String, ForwardError> {
    if raw.len() > MAX_URI {
        return Err(ForwardError::TooLong);
    }
    if !raw.starts_with('/') || raw.starts_with("//") {
        return Err(ForwardError::NotAPath);
    }
    if raw
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ' ' || c == '#')
    {
        return Err(ForwardError::NotAPath);
    }
    let path = raw.split('?').next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(ForwardError::DotSegments);
    }
    let dotted = lower.replace("%2e", ".");
    if dotted.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ForwardError::DotSegments);
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn traefik_headers_are_read() {
        let r = ForwardedRequest::from_headers(
            &headers(&[
                ("x-forwarded-method", "post"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "Orders.Example.com"),
                ("x-forwarded-uri", "/admin/x?y=1"),
                ("host", "sso.example.com"),
            ]),
            None,
            "GET",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.host, "orders.example.com");
        assert_eq!(r.path(), "/admin/x");
        assert_eq!(r.original_url(), "https://orders.example.com/admin/x?y=1");
    }

    #[test]
    fn nginx_original_uri_and_host() {
        let r = ForwardedRequest::from_headers(
            &headers(&[
                ("x-original-uri", "/a?b"),
                ("host", "orders.example.com:8080"),
            ]),
            None,
            "GET",
        )
        .unwrap();
        assert_eq!(
            (r.host.as_str(), r.uri.as_str(), r.proto.as_str()),
            ("orders.example.com:8080", "/a?b", "http")
        );
    }

    #[test]
    fn envoy_path_suffix() {
        let r = ForwardedRequest::from_headers(
            &headers(&[("host", "o.example.com")]),
            Some("/x/y"),
            "PUT",
        )
        .unwrap();
        assert_eq!((r.uri.as_str(), r.method.as_str()), ("/x/y", "PUT"));
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        for bad in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/a/%2fadmin",
            "/./x",
            "/a%5c..%5cb",
        ] {
            assert_eq!(parse_uri(bad), Err(ForwardError::DotSegments), "{bad}");
        }
        // Dots in the query are the upstream's business.
        assert!(parse_uri("/a?x=../b").is_ok());
    }

    #[test]
    fn not_a_path_is_refused() {
        for bad in [
            "",
            "admin",
            "//evil.example/x",
            "/a\\b",
            "/a b",
            "/a#f",
            "http://x/",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_uri(&format!("/{}", "a".repeat(MAX_URI))),
            Err(ForwardError::TooLong)
        );
    }

    #[test]
    fn ambiguous_headers_are_refused() {
        let two_hosts = headers(&[
            ("x-forwarded-host", "a.example.com"),
            ("x-forwarded-host", "b.example.com"),
        ]);
        assert_eq!(
            ForwardedRequest::from_headers(&two_hosts, None, "GET"),
            Err(ForwardError::BadHeader("x-forwarded-host"))
        );
        for bad_host in [
            "a.example.com, b.example.com",
            "user@a.example.com",
            "a.example.com/x",
            "",
            // Names a URL parser rewrites: the route and the return URL would differ.
            "orders.example%2ecom:8443",
            "b\u{fc}cher.example",
            "127.1",
        ] {
            let h = headers(&[("x-forwarded-host", bad_host)]);
            assert!(
                ForwardedRequest::from_headers(&h, None, "GET").is_err(),
                "{bad_host}"
            );
        }
        let h = headers(&[("host", "a.example.com"), ("x-forwarded-proto", "gopher")]);
        assert_eq!(
            ForwardedRequest::from_headers(&h, None, "GET"),
            Err(ForwardError::BadHeader("x-forwarded-proto"))
        );
        let h = headers(&[("host", "a.example.com"), ("x-forwarded-method", "GET /x")]);
        assert!(ForwardedRequest::from_headers(&h, None, "GET").is_err());
        assert_eq!(
            ForwardedRequest::from_headers(&HeaderMap::new(), None, "GET"),
            Err(ForwardError::NoHost)
        );
    }
}

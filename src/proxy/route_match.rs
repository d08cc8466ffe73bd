//! Which requests the built-in proxy takes: those whose `Host` and path a `[[route]]` with an
//! `upstream` covers (the longest prefix on the host, as for every route decision). Everything
//! else stays the gateway's, and so does `/auth/verify` on every host: a front door asks it with
//! the route's `Host` (nginx `proxy_set_header Host $http_host`, Envoy's original `Host`), and a
//! proxied route on that host must not take the question to its tool.

use axum::http::{HeaderMap, Uri, header};
use url::Url;

use crate::config::route::ForwardAuthConfig;

/// The host the browser asked for: the single `Host` header, else the URI's authority (HTTP/2).
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        (Some(_), Some(_)) => None,
        (None, _) => uri.authority().map(|a| a.as_str()),
    }
}

/// The proxied route for `host` and `path_and_query`: its name and upstream origin.
pub fn proxied<'a>(
    fa: &'a ForwardAuthConfig,
    host: &str,
    path_and_query: &str,
) -> Option<(&'a str, &'a Url)> {
    if is_verify(path_and_query) {
        return None;
    }
    let route = fa.routes.find(host, path_and_query)?;
    let upstream = fa.target(&route.name)?.upstream.as_ref()?;
    Some((route.name.as_str(), upstream))
}

/// `/auth/verify` or Envoy's `/auth/verify/<original path>`, with or without a query.
fn is_verify(path_and_query: &str) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    path == "/auth/verify" || path.starts_with("/auth/verify/")
}

/// The upstream URI: its origin, the browser's path and query unchanged (no prefix stripped).
pub fn upstream_uri(upstream: &Url, path_and_query: &str) -> Option<Uri> {
    let origin = upstream.as_str().trim_end_matches('/');
    format!("{origin}{path_and_query}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::RouteTarget;
    use crate::policy::route::{RouteRule, RouteTable};

    fn fa() -> ForwardAuthConfig {
        let rule = |name: &str, host: &str, prefix: &str| RouteRule {
            name: name.into(),
            host: host.into(),
            path_prefix: prefix.into(),
            conditions: Default::default(),
            require_acr: None,
        };
        let target = |name: &str, up: Option<&str>| RouteTarget {
            name: name.into(),
            upstream: up.map(|u| Url::parse(u).unwrap()),
            identity_header: "x-storegate-identity".into(),
            limits: Default::default(),
        };
        ForwardAuthConfig {
            routes: RouteTable::new(vec![
                rule("desk", "desk.example.com", "/"),
                rule("desk-reports", "desk.example.com", "/reports"),
                rule("nginx-tool", "tool.example.com", "/"),
            ]),
            targets: vec![
                target("desk", Some("http://127.0.0.1:9000")),
                target("desk-reports", None),
                target("nginx-tool", None),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn only_routes_with_an_upstream_are_proxied() {
        let fa = fa();
        let (name, up) = proxied(&fa, "desk.example.com", "/orders?x=1").unwrap();
        assert_eq!((name, up.as_str()), ("desk", "http://127.0.0.1:9000/"));
        // The longest prefix is a forward-auth-only route: not the proxy's.
        assert!(proxied(&fa, "desk.example.com", "/reports/1").is_none());
        // A front door calling /auth/verify with a route's Host stays the gateway's, also on
        // a host whose "/" is proxied.
        assert!(proxied(&fa, "tool.example.com", "/auth/verify").is_none());
        for pq in [
            "/auth/verify",
            "/auth/verify?mode=401",
            "/auth/verify/reports/1?x=y",
        ] {
            assert!(proxied(&fa, "desk.example.com", pq).is_none(), "{pq}");
        }
        // Only that path: its neighbours are the tool's.
        for pq in ["/auth/verifying", "/auth/", "/auth/continue?rd=x"] {
            assert!(proxied(&fa, "desk.example.com", pq).is_some(), "{pq}");
        }
        assert!(proxied(&fa, "sso.example.com", "/").is_none());
    }

    #[test]
    fn the_upstream_gets_the_path_and_query_unchanged() {
        let up = Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            upstream_uri(&up, "/a/b?c=d%20e").unwrap().to_string(),
            "http://127.0.0.1:9000/a/b?c=d%20e"
        );
    }

    #[test]
    fn two_host_headers_are_no_host() {
        let mut h = HeaderMap::new();
        h.append("host", "a.example.com".parse().unwrap());
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&h, &uri), Some("a.example.com"));
        h.append("host", "b.example.com".parse().unwrap());
        assert_eq!(request_host(&h, &uri), None);
        let h2: Uri = "http://c.example.com/x".parse().unwrap();
        assert_eq!(request_host(&HeaderMap::new(), &h2), Some("c.example.com"));
    }
}

//! The headers of a proxied exchange, both ways. Pure: a header map in, a header map out.
//!
//! Toward the upstream (RFC 9110 §7.6.1): the hop-by-hop headers go (`Connection` and every
//! header it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` unless this is
//! an upgrade, `Proxy-*`); so do every identity header and every `X-Forwarded-*`, `Forwarded`
//! and `X-Real-IP` the client sent, then the gateway sets its own: `X-Forwarded-For` (appended
//! to the incoming chain only when the peer is a trusted proxy), `-Proto`, `-Host`, the fresh
//! identity token and the request id. The gateway's session cookie is taken out of `Cookie`: the
//! upstream must never be able to replay it.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Hop-by-hop headers every proxy removes, besides those `Connection` names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the gateway knows about the request it is proxying.
#[derive(Debug)]
pub struct Hop<'a> {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Whether the peer is one of `trusted_proxies`.
    pub peer_trusted: bool,
    /// `http` or `https`: the scheme the browser used.
    pub proto: &'a str,
    /// The host the browser asked for (the route's).
    pub host: &'a str,
    /// The gateway's session cookie name.
    pub session_cookie: &'a str,
    /// Every identity header name any route uses (lower case).
    pub identity_headers: &'a [String],
    /// The fresh identity token and the header it goes in.
    pub identity: (&'a HeaderName, &'a HeaderValue),
    pub request_id: &'a str,
    /// A protocol upgrade (WebSocket): `Connection: upgrade` and `Upgrade` travel on.
    pub upgrade: bool,
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` plus `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t == "upgrade")
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers; with `upgrade`, puts `Connection: upgrade` and the original
/// `Upgrade` back.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    let named: Vec<String> = connection_tokens(headers).collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if upgrade && let Some(v) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, v);
    }
}

/// The client headers that claim something about the path or the person: never believed from
/// the client, always replaced by the gateway's own.
fn is_claim_header(name: &str, identity_headers: &[String]) -> bool {
    name.starts_with("x-forwarded-")
        || name.starts_with("x-storegate-")
        || name == "forwarded"
        || name == "x-real-ip"
        || name == "x-original-uri"
        || name == "x-request-id"
        || identity_headers.iter().any(|h| h == name)
}

/// The incoming `X-Forwarded-For` chain when every entry is an address, joined.
fn incoming_chain(headers: &HeaderMap) -> Option<String> {
    let mut parts = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        for p in v.to_str().ok()?.split(',') {
            let p = p.trim();
            p.parse::<IpAddr>().ok()?;
            parts.push(p.to_owned());
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `Cookie` without the gateway's session cookie; `None` when nothing else is left.
pub fn without_cookie(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split('=').next().map(str::trim) != Some(name))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The value of cookie `name` in the request (the first one, as the session layer reads it).
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// The headers the upstream receives, from the browser's.
pub fn to_upstream(incoming: &HeaderMap, hop: &Hop<'_>) -> HeaderMap {
    let mut out = incoming.clone();
    remove_hop_by_hop(&mut out, hop.upgrade);
    // The client's own `Host` is the route's; the upstream gets its own authority (set by the
    // client from the URI) and the browser's host in `X-Forwarded-Host`.
    out.remove(header::HOST);
    let claims: Vec<HeaderName> = out
        .keys()
        .filter(|k| is_claim_header(k.as_str(), hop.identity_headers))
        .cloned()
        .collect();
    for k in claims {
        out.remove(k);
    }
    out.remove(header::COOKIE);
    if let Some(c) = without_cookie(incoming, hop.session_cookie) {
        out.insert(header::COOKIE, c);
    }

    let chain = match (hop.peer, hop.peer_trusted) {
        (Some(peer), true) => match incoming_chain(incoming) {
            Some(prior) => Some(format!("{prior}, {peer}")),
            None => Some(peer.to_string()),
        },
        (Some(peer), false) => Some(peer.to_string()),
        (None, _) => None,
    };
    if let Some(v) = chain.and_then(|c| HeaderValue::from_str(&c).ok()) {
        out.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(hop.proto) {
        out.insert("x-forwarded-proto", v);
    }
    if let Ok(v) = HeaderValue::from_str(hop.host) {
        out.insert("x-forwarded-host", v);
    }
    if let Ok(v) = HeaderValue::from_str(hop.request_id) {
        out.insert("x-request-id", v);
    }
    out.insert(hop.identity.0.clone(), hop.identity.1.clone());
    out
}

/// The upstream's response headers as the browser gets them: no hop-by-hop headers (but the
/// upgrade answer keeps `Connection`/`Upgrade`), and no cookie of the gateway's session name,
/// which an upstream sharing the cookie domain could otherwise plant.
pub fn to_browser(headers: &mut HeaderMap, upgrade: bool, session_cookie: &str) {
    remove_hop_by_hop(headers, upgrade);
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.split('=').next())
                .map(str::trim)
                != Some(session_cookie)
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn hop<'a>(
        peer_trusted: bool,
        name: &'a HeaderName,
        token: &'a HeaderValue,
        ids: &'a [String],
    ) -> Hop<'a> {
        Hop {
            peer: Some("10.0.0.5".parse().unwrap()),
            peer_trusted,
            proto: "https",
            host: "orders.example.com",
            session_cookie: "sg_session",
            identity_headers: ids,
            identity: (name, token),
            request_id: "rid-1",
            upgrade: false,
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("accept", "text/html"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "text/html");
    }

    #[test]
    fn an_upgrade_keeps_connection_upgrade_and_the_protocol() {
        let mut h = map(&[
            ("connection", "Upgrade, x-other"),
            ("x-other", "1"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-other").is_none());
        assert_eq!(h["sec-websocket-key"], "abc");
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_an_address_a_scheme_or_an_identity() {
        let ids = vec!["x-storegate-identity".to_owned(), "x-tool-user".to_owned()];
        let name = HeaderName::from_static("x-storegate-identity");
        let token = HeaderValue::from_static("fresh.jwt.token");
        let incoming = map(&[
            ("host", "orders.example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-user", "admin"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-storegate-identity", "forged"),
            ("x-tool-user", "admin"),
            ("x-request-id", "client-chosen"),
            ("cookie", "sg_session=SECRET; theme=dark"),
        ]);
        let out = to_upstream(&incoming, &hop(false, &name, &token, &ids));
        assert_eq!(out["x-forwarded-for"], "10.0.0.5");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "orders.example.com");
        assert_eq!(out["x-storegate-identity"], "fresh.jwt.token");
        assert_eq!(out.get_all("x-storegate-identity").iter().count(), 1);
        assert_eq!(out["x-request-id"], "rid-1");
        assert_eq!(out["cookie"], "theme=dark");
        for gone in [
            "x-forwarded-user",
            "forwarded",
            "x-real-ip",
            "x-tool-user",
            "host",
        ] {
            assert!(out.get(gone).is_none(), "{gone} reached the upstream");
        }
    }

    #[test]
    fn a_trusted_peer_s_chain_is_appended_to_a_malformed_one_replaced() {
        let ids = vec!["x-storegate-identity".to_owned()];
        let name = HeaderName::from_static("x-storegate-identity");
        let token = HeaderValue::from_static("t");
        let incoming = map(&[("x-forwarded-for", "198.51.100.7, 10.1.1.1")]);
        let out = to_upstream(&incoming, &hop(true, &name, &token, &ids));
        assert_eq!(out["x-forwarded-for"], "198.51.100.7, 10.1.1.1, 10.0.0.5");
        let bad = map(&[("x-forwarded-for", "198.51.100.7, not-an-ip")]);
        let out = to_upstream(&bad, &hop(true, &name, &token, &ids));
        assert_eq!(out["x-forwarded-for"], "10.0.0.5");
    }

    #[test]
    fn the_session_cookie_is_found_and_removed_whatever_the_spacing() {
        let h = map(&[
            ("cookie", "a=1;sg_session=ID ;  b=2"),
            ("cookie", "sg_session=2"),
        ]);
        assert_eq!(cookie_value(&h, "sg_session"), Some("ID"));
        assert_eq!(without_cookie(&h, "sg_session").unwrap(), "a=1; b=2");
        let only = map(&[("cookie", "sg_session=ID")]);
        assert!(without_cookie(&only, "sg_session").is_none());
        // A cookie whose name merely starts with the session's stays.
        let similar = map(&[("cookie", "sg_session_x=1")]);
        assert_eq!(
            without_cookie(&similar, "sg_session").unwrap(),
            "sg_session_x=1"
        );
    }

    #[test]
    fn the_browser_never_gets_a_cookie_of_the_session_s_name_from_upstream() {
        let mut h = map(&[
            ("set-cookie", "sg_session=planted; Domain=example.com"),
            ("set-cookie", "tool=1"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        to_browser(&mut h, false, "sg_session");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["tool=1"]);
        assert!(h.get("x-hop").is_none());
    }
}

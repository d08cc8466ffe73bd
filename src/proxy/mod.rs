//! The built-in reverse proxy (issue 14): a request whose `Host` and path a `[[route]]` with an
//! `upstream` covers is decided exactly as `GET /auth/verify` decides (the journey
//! `flows::forward_auth`), then forwarded here with hyper, bodies streaming both ways, WebSocket
//! upgrades spliced, and the upstream's failures reported for a page (502, 504, 413). See
//! docs/reverse-proxy.md.
//!
//! This module knows no gateway state and no page: `web::proxy` is the edge that runs in front
//! of the gateway's router and outside its layers (the gateway's body limit, 30 s timeout and
//! page headers are for its own pages, not for the tools it proxies). It asks [`Proxy::target`]
//! whether a request is the proxy's, [`Proxy::read`] what the decision must read, the decision,
//! and then [`Proxy::forward`].
//!
//! - [`route_match`]: which requests are the proxy's, and the upstream URI.
//! - [`headers`]: what the upstream and the browser get to see (pure).
//! - [`forward`]: the hyper client, body limit and timeouts.
//! - [`websocket`]: the upgrade splice.

pub mod forward;
pub mod headers;
pub mod route_match;
pub mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, Version, header};
use axum::response::Response;
use url::Url;

use crate::config::Config;
use crate::forward::request::{ForwardError, ForwardedRequest, parse_host, parse_uri};
use forward::{CappedBody, IdleBody, UpstreamClient};

pub use forward::UpstreamFailure;

/// The proxy: the configuration it started with and one pooled upstream client.
pub struct Proxy {
    config: Arc<Config>,
    client: UpstreamClient,
}

/// A request the proxy takes: the route that covers it, its upstream and its limits.
#[derive(Debug, Clone)]
pub struct Target {
    pub route: String,
    upstream: Url,
    pub limits: Limits,
}

/// The upstream timeout and request body limit that apply to one route.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: std::time::Duration,
    pub max_body: usize,
}

/// What the browser asked for, read unambiguously, and how it reached the gateway.
#[derive(Debug)]
pub struct Incoming {
    /// What the forward-auth decision reads.
    pub request: ForwardedRequest,
    peer: Option<IpAddr>,
    peer_trusted: bool,
    proto: &'static str,
}

impl Proxy {
    /// `None` when no route has an `upstream` (the gateway then serves no route host).
    pub fn build(config: &Arc<Config>) -> Option<Arc<Proxy>> {
        let fa = &config.forward_auth;
        if !fa.targets.iter().any(|t| t.upstream.is_some()) {
            return None;
        }
        let connect = forward::CONNECT_TIMEOUT.min(fa.shortest_timeout());
        Some(Arc::new(Proxy {
            config: config.clone(),
            client: forward::client(connect),
        }))
    }

    /// The proxied route this request is for, with the route's own timeout and body limit (else
    /// `[forward_auth]`'s); `None`: the request is the gateway's.
    pub fn target(&self, req: &Request) -> Option<Target> {
        let fa = &self.config.forward_auth;
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let host = route_match::request_host(req.headers(), req.uri())?;
        let (name, upstream) = route_match::proxied(fa, host, pq)?;
        let limits = fa.target(name).map_or(
            Limits {
                timeout: fa.upstream_timeout,
                max_body: fa.max_body,
            },
            |t| Limits {
                timeout: fa.timeout_of(t),
                max_body: fa.max_body_of(t),
            },
        );
        Some(Target {
            route: name.to_owned(),
            upstream: upstream.clone(),
            limits,
        })
    }

    /// The request as the decision reads it. The scheme the browser used: a trusted proxy in
    /// front (TLS offload) says so; a direct client came over the gateway's own plain-HTTP
    /// listener.
    pub fn read(&self, req: &Request) -> Result<Incoming, ForwardError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let peer_trusted =
            peer.is_some_and(|ip| self.config.trusted_proxies.iter().any(|n| n.contains(&ip)));
        let proto = if peer_trusted {
            forwarded_proto(req.headers()).unwrap_or("http")
        } else {
            "http"
        };
        let host = route_match::request_host(req.headers(), req.uri()).unwrap_or_default();
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        Ok(Incoming {
            request: ForwardedRequest {
                method: req.method().as_str().to_owned(),
                proto: proto.to_owned(),
                host: parse_host(host)?,
                uri: parse_uri(pq)?,
            },
            peer,
            peer_trusted,
            proto,
        })
    }

    /// The gateway's session cookie name (kept from the upstream, read for the decision).
    pub fn session_cookie(&self) -> &str {
        self.config.session.cookie_name.as_str()
    }

    /// Sends an admitted request to the route's upstream with the identity token in `identity`,
    /// and streams the answer back (a WebSocket upgrade is spliced).
    pub async fn forward(
        &self,
        mut req: Request,
        target: &Target,
        incoming: &Incoming,
        identity: (&HeaderName, &HeaderValue),
        rid: &str,
    ) -> Result<Response, UpstreamFailure> {
        let limits = target.limits;
        let max = u64::try_from(limits.max_body).unwrap_or(u64::MAX);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(UpstreamFailure::BodyTooLarge);
        }

        let upgrade = headers::wants_upgrade(req.headers());
        let browser_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri =
            route_match::upstream_uri(&target.upstream, pq).ok_or(UpstreamFailure::Unreachable)?;
        let cookie_name = self.session_cookie();
        let identity_headers = self.config.forward_auth.identity_headers();
        let hop = headers::Hop {
            peer: incoming.peer,
            peer_trusted: incoming.peer_trusted,
            proto: incoming.proto,
            host: &incoming.request.host,
            session_cookie: cookie_name,
            identity_headers: &identity_headers,
            identity,
            request_id: rid,
            upgrade,
        };
        let out_headers = headers::to_upstream(req.headers(), &hop);
        let (parts, body) = req.into_parts();
        let tripped = Arc::new(AtomicBool::new(false));
        let mut out =
            axum::http::Request::new(Body::new(CappedBody::new(body, max, tripped.clone())));
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = out_headers;

        let mut resp = forward::send(&self.client, out, limits.timeout, &tripped).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(browser) = browser_upgrade
        {
            let upstream_side = hyper::upgrade::on(&mut resp);
            websocket::splice(browser, upstream_side, rid.to_owned());
            let (mut parts, _) = resp.into_parts();
            headers::to_browser(&mut parts.headers, true, cookie_name);
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        let (mut parts, body) = resp.into_parts();
        headers::to_browser(&mut parts.headers, false, cookie_name);
        Ok(Response::from_parts(
            parts,
            Body::new(IdleBody::new(body, limits.timeout)),
        ))
    }
}

/// A trusted proxy's single `X-Forwarded-Proto`, when it is http or https.
fn forwarded_proto(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    let mut values = headers.get_all("x-forwarded-proto").iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    match v.to_str().ok()?.trim() {
        p if p.eq_ignore_ascii_case("https") => Some("https"),
        p if p.eq_ignore_ascii_case("http") => Some("http"),
        _ => None,
    }
}

//! The built-in reverse proxy (issue 14): a request whose `Host` and path a `[[route]]` with an
//! `upstream` covers is decided exactly as `GET /auth/verify` decides (not signed in: sign in
//! and back; not allowed: 403 naming the route; `require_acr` not met: step up), then forwarded
//! with hyper, bodies streaming both ways, WebSocket upgrades spliced, and the upstream's
//! failures answered with a page (502, 504) carrying a reference. See docs/reverse-proxy.md.
//!
//! It sits in front of the gateway's own router and outside its layers: the gateway's body
//! limit, 30 s timeout and page headers (CSP, frame denial) are for its own pages, not for the
//! tools it proxies. What it shares with the gateway is the decision (`web::forward::decide`),
//! the session store and the audit trail.
//!
//! - [`route_match`]: which requests are the proxy's, and the upstream URI.
//! - [`headers`]: what the upstream and the browser get to see (pure).
//! - [`forward`]: the hyper client, body limit and timeouts.
//! - [`websocket`]: the upgrade splice.

pub mod forward;
pub mod headers;
pub mod route_match;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::{Expiry, Session};
use tracing::Instrument;
use url::Url;

use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::forward::request::{ForwardedRequest, parse_host, parse_uri};
use crate::web::AppState;
use crate::web::errors::AppError;
use crate::web::forward::{Mode, decide, refuse_unreadable};
use forward::{CappedBody, IdleBody, UpstreamClient, UpstreamFailure};

/// The proxy: the gateway's state and one pooled upstream client.
pub struct Proxy {
    state: AppState,
    client: UpstreamClient,
}

impl Proxy {
    /// `None` when no route has an `upstream` (the gateway then serves no route host).
    pub fn build(state: &AppState) -> Option<Arc<Proxy>> {
        let fa = &state.config.forward_auth;
        if !fa.targets.iter().any(|t| t.upstream.is_some()) {
            return None;
        }
        let connect = forward::CONNECT_TIMEOUT.min(fa.shortest_timeout());
        Some(Arc::new(Proxy {
            state: state.clone(),
            client: forward::client(connect),
        }))
    }
}

/// Middleware in front of the whole gateway: a request for a proxied route is served here and
/// never reaches the gateway's router; any other goes on.
pub async fn dispatch(State(proxy): State<Arc<Proxy>>, req: Request, next: Next) -> Response {
    let target = {
        let fa = &proxy.state.config.forward_auth;
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        route_match::request_host(req.headers(), req.uri())
            .and_then(|host| route_match::proxied(fa, host, pq))
            .map(|(name, upstream)| {
                // The route's own timeout and body limit, else `[forward_auth]`'s.
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
                (name.to_owned(), upstream.clone(), limits)
            })
    };
    let Some((route, upstream, limits)) = target else {
        return next.run(req).await;
    };
    let rid = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "proxy",
        route = %route,
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %rid,
    );
    let config = proxy.state.config.clone();
    let serve = proxy
        .serve(req, &route, &upstream, limits, &rid)
        .instrument(span);
    let mut resp = crate::web::errors::with_contact(config, serve).await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().entry("x-request-id").or_insert(v);
    }
    resp
}

/// The upstream timeout and request body limit that apply to one route.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: std::time::Duration,
    max_body: usize,
}

impl Proxy {
    async fn serve(
        &self,
        mut req: Request,
        route: &str,
        upstream: &Url,
        limits: Limits,
        rid: &str,
    ) -> Response {
        let state = &self.state;
        let fa = &state.config.forward_auth;
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let peer_trusted =
            peer.is_some_and(|ip| state.config.trusted_proxies.iter().any(|n| n.contains(&ip)));
        // The scheme the browser used: a trusted proxy in front (TLS offload) says so; a direct
        // client came over the gateway's own plain-HTTP listener.
        let proto = if peer_trusted {
            forwarded_proto(req.headers()).unwrap_or("http")
        } else {
            "http"
        };
        let host = route_match::request_host(req.headers(), req.uri()).unwrap_or_default();
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let freq = match (parse_host(host), parse_uri(&pq)) {
            (Ok(host), Ok(uri)) => ForwardedRequest {
                method: req.method().as_str().to_owned(),
                proto: proto.to_owned(),
                host,
                uri,
            },
            (Err(e), _) | (_, Err(e)) => return own_page(refuse_unreadable(state, rid, &e)),
        };

        let cookie_name = state.config.session.cookie_name.as_str();
        let session = self.session(req.headers(), cookie_name);
        let decided = decide(state, rid, &session, &freq, Mode::Redirect).await;
        // The decision may refresh `last_seen` or note a step-up: stored as the session layer
        // would (the browser's cookie is unchanged, so nothing is set on the tool's response).
        if session.is_modified()
            && !session.is_empty().await
            && let Err(e) = session.save().await
        {
            tracing::warn!(error = %e, "the session could not be saved after a proxied decision");
            return own_page(AppError::session_store(rid).into_response());
        }
        let allowed = match decided {
            Ok(a) => a,
            Err(resp) => return own_page(resp),
        };

        let max = u64::try_from(limits.max_body).unwrap_or(u64::MAX);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return self.failed(UpstreamFailure::BodyTooLarge, route, limits, rid);
        }

        let upgrade = headers::wants_upgrade(req.headers());
        let browser_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let Some(uri) = route_match::upstream_uri(upstream, &pq) else {
            return self.failed(UpstreamFailure::Unreachable, route, limits, rid);
        };
        let identity_headers = fa.identity_headers();
        let hop = headers::Hop {
            peer,
            peer_trusted,
            proto,
            host: &freq.host,
            session_cookie: cookie_name,
            identity_headers: &identity_headers,
            identity: (&allowed.header, &allowed.token),
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

        let mut resp = match forward::send(&self.client, out, limits.timeout, &tripped).await {
            Ok(r) => r,
            Err(f) => return self.failed(f, route, limits, rid),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(browser) = browser_upgrade
        {
            let upstream_side = hyper::upgrade::on(&mut resp);
            websocket::splice(browser, upstream_side, rid.to_owned());
            let (mut parts, _) = resp.into_parts();
            headers::to_browser(&mut parts.headers, true, cookie_name);
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = resp.into_parts();
        headers::to_browser(&mut parts.headers, false, cookie_name);
        Response::from_parts(parts, Body::new(IdleBody::new(body, limits.timeout)))
    }

    /// The session the browser's cookie names, read from the gateway's store (lazily).
    fn session(&self, headers: &axum::http::HeaderMap, cookie_name: &str) -> Session {
        let id = headers::cookie_value(headers, cookie_name).and_then(|v| v.parse().ok());
        let idle = time::Duration::try_from(self.state.config.session.idle_timeout)
            .unwrap_or(time::Duration::minutes(30));
        Session::new(
            id,
            self.state.sessions.clone(),
            Some(Expiry::OnInactivity(idle)),
        )
    }

    /// The upstream gave no usable answer: a page with the reference, and an audit event.
    fn failed(&self, failure: UpstreamFailure, route: &str, limits: Limits, rid: &str) -> Response {
        let (status, title, message) = match failure {
            UpstreamFailure::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Upload too large",
                format!(
                    "This upload is larger than the {} bytes the gateway forwards to \"{route}\".",
                    limits.max_body
                ),
            ),
            UpstreamFailure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "The tool did not answer in time",
                format!("\"{route}\" did not answer in time. Please try again in a minute."),
            ),
            UpstreamFailure::Unreachable => (
                StatusCode::BAD_GATEWAY,
                "The tool cannot be reached",
                format!(
                    "\"{route}\" cannot be reached right now (its server refused or dropped the connection). Please try again in a minute."
                ),
            ),
        };
        tracing::warn!(route, reason = failure.code(), "a proxied request failed");
        let mut ev = AuditEvent::new(
            self.state.clock.now(),
            rid,
            EventKind::ForwardAuth,
            Outcome::Error,
        );
        ev.rule = Some(route.to_owned());
        ev.reason = Some(failure.code().to_owned());
        self.state.audit.record(ev);
        own_page(AppError::new(status, title, message, rid).into_response())
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

/// The gateway's own answer on a tool's host (403, sign-in, error page): the page headers its
/// own pages get from its layers, which the proxy sits outside of.
fn own_page(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

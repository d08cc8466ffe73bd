//! The built-in proxy's edge (issue 14): middleware in front of the whole gateway. A request for
//! a proxied route (`proxy::Proxy::target`) is served here and never reaches the gateway's
//! router; any other goes on. Serving one: read it (`proxy::Proxy::read`), decide as
//! `/auth/verify` does (`flows::forward_auth`), then forward it (`proxy::Proxy::forward`) or
//! answer with the gateway's own page. See docs/reverse-proxy.md.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::{Expiry, Session};
use tracing::Instrument;

use super::AppState;
use super::answer::{SignInMode, forward_refused};
use super::errors::AppError;
use crate::flows::forward_auth;
use crate::proxy::{Proxy, Target, UpstreamFailure, headers};

/// The gateway's state and its proxy, for the middleware.
pub struct ProxyEdge {
    state: AppState,
    proxy: Arc<Proxy>,
}

impl ProxyEdge {
    /// `None` when no route has an `upstream` (the gateway then serves no route host).
    pub fn build(state: &AppState) -> Option<Arc<ProxyEdge>> {
        let proxy = Proxy::build(&state.config)?;
        Some(Arc::new(ProxyEdge {
            state: state.clone(),
            proxy,
        }))
    }
}

/// Middleware in front of the whole gateway: a request for a proxied route is served here and
/// never reaches the gateway's router; any other goes on.
pub async fn dispatch(State(edge): State<Arc<ProxyEdge>>, req: Request, next: Next) -> Response {
    let Some(target) = edge.proxy.target(&req) else {
        return next.run(req).await;
    };
    let rid = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "proxy",
        route = %target.route,
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %rid,
    );
    let config = edge.state.config.clone();
    let serve = edge.serve(req, &target, &rid).instrument(span);
    let mut resp = super::errors::with_contact(config, serve).await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().entry("x-request-id").or_insert(v);
    }
    resp
}

impl ProxyEdge {
    async fn serve(&self, req: Request, target: &Target, rid: &str) -> Response {
        let state = &self.state;
        let gw = state.gateway();
        let incoming = match self.proxy.read(&req) {
            Ok(i) => i,
            Err(e) => return self.refused(forward_auth::unreadable(&gw, rid, e), rid),
        };
        let session = self.session(req.headers());
        let decided = forward_auth::decide(&gw, &session, &incoming.request, rid).await;
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
            Err(refused) => return self.refused(refused, rid),
        };
        let identity = (&allowed.header, &allowed.token);
        match self
            .proxy
            .forward(req, target, &incoming, identity, rid)
            .await
        {
            Ok(resp) => resp,
            Err(failure) => {
                tracing::warn!(route = %target.route, reason = failure.code(), "a proxied request failed");
                forward_auth::upstream_failed(&gw, rid, &target.route, failure.code());
                own_page(failed_page(failure, target, rid).into_response())
            }
        }
    }

    /// The decision's refusal, said to a browser (sign-in is a redirect).
    fn refused(&self, refused: forward_auth::Refused, rid: &str) -> Response {
        own_page(forward_refused(
            refused,
            SignInMode::Redirect,
            &self.state,
            rid,
        ))
    }

    /// The session the browser's cookie names, read from the gateway's store (lazily).
    fn session(&self, headers: &HeaderMap) -> Session {
        let id = headers::cookie_value(headers, self.proxy.session_cookie())
            .and_then(|v| v.parse().ok());
        let idle = time::Duration::try_from(self.state.config.session.idle_timeout)
            .unwrap_or(time::Duration::minutes(30));
        Session::new(
            id,
            self.state.sessions.clone(),
            Some(Expiry::OnInactivity(idle)),
        )
    }
}

/// The upstream gave no usable answer: a page with the reference.
fn failed_page(failure: UpstreamFailure, target: &Target, rid: &str) -> AppError {
    let route = &target.route;
    let (status, title, message) = match failure {
        UpstreamFailure::BodyTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Upload too large",
            format!(
                "This upload is larger than the {} bytes the gateway forwards to \"{route}\".",
                target.limits.max_body
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
    AppError::new(status, title, message, rid)
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

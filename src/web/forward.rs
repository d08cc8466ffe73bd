//! `GET /auth/verify` (forward authentication for nginx `auth_request`, Traefik `forwardAuth`,
//! Envoy `ext_authz`), `GET /auth/continue?rd=` (sign in, then back to the tool) and
//! `GET /.well-known/jwks.json`. The decision is `policy::route`; the journey is here because it
//! is one request with no flow state. See docs/reverse-proxy.md.
//!
//! The identity header of the request (`X-Storegate-Identity` or a route's own) is never read:
//! an identity is only ever the session's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth::{self, SignedIn};
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::forward::keys::{KeySet, SigningKey};
use crate::forward::request::ForwardedRequest;
use crate::forward::return_url::RouteReturn;
use crate::forward::token;
use crate::identity::Identity;
use crate::redirect::urlencode;

/// The signing keys, built once at start when any `[[route]]` is configured.
#[derive(Debug)]
pub struct ForwardState {
    pub keys: KeySet,
}

impl ForwardState {
    pub fn build(config: &crate::config::Config) -> anyhow::Result<Option<Self>> {
        let fa = &config.forward_auth;
        if fa.routes.is_empty() {
            return Ok(None);
        }
        let current = match &fa.signing_key_pem {
            Some(pem) => {
                SigningKey::from_pem("forward_auth.signing_key_file", pem.expose().as_bytes())?
            }
            None => {
                tracing::warn!(
                    "[forward_auth] has no signing_key_file: identity tokens are signed with a key generated at start; replicas and restarts will not share it"
                );
                SigningKey::generate()?
            }
        };
        Ok(Some(ForwardState {
            keys: KeySet::new(current, fa.previous_keys.clone()),
        }))
    }
}

/// How the front door wants "not signed in" said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 401: nginx `auth_request` (its `error_page 401` sends the browser to sign in).
    Status401,
    /// 302 to sign-in: Traefik `forwardAuth` and Envoy `ext_authz` pass it to the browser.
    Redirect,
}

impl Mode {
    /// `?mode=` or `X-Storegate-Mode` when given; else nginx's `X-Original-URI` means 401, and
    /// Traefik's `X-Forwarded-Method` or Envoy's path suffix mean a redirect.
    pub fn of(query: Option<&str>, headers: &HeaderMap, envoy: bool) -> Mode {
        let asked = query
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "mode")
                    .map(|(_, v)| v.into_owned())
            })
            .or_else(|| {
                headers
                    .get("x-storegate-mode")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
        match asked.as_deref() {
            Some("401") => return Mode::Status401,
            Some("redirect") => return Mode::Redirect,
            _ => {}
        }
        if headers.contains_key("x-original-uri") {
            Mode::Status401
        } else if envoy || headers.contains_key("x-forwarded-method") {
            Mode::Redirect
        } else {
            Mode::Status401
        }
    }
}

/// `GET /auth/verify` (nginx, Traefik).
pub async fn verify(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mode = Mode::of(uri.query(), &headers, false);
    decide(
        &state,
        &rid,
        &session,
        &headers,
        None,
        method.as_str(),
        mode,
    )
    .await
}

/// `/auth/verify/{*path}`: Envoy ext_authz (HTTP) appends the original path to its `path_prefix`
/// and sends the original method.
pub async fn verify_envoy(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    method: Method,
    uri: Uri,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut suffix = format!("/{}", rest.trim_start_matches('/'));
    if let Some(q) = uri.query() {
        suffix.push('?');
        suffix.push_str(q);
    }
    let mode = Mode::of(None, &headers, true);
    decide(
        &state,
        &rid,
        &session,
        &headers,
        Some(&suffix),
        method.as_str(),
        mode,
    )
    .await
}

fn audit(
    state: &AppState,
    rid: &str,
    outcome: Outcome,
    id: Option<&Identity>,
    rule: &str,
    reason: Option<&str>,
    detail: String,
) {
    let mut ev = AuditEvent::new(state.clock.now(), rid, EventKind::ForwardAuth, outcome);
    if let Some(id) = id {
        ev = ev.who(id);
    }
    ev.rule = Some(rule.to_owned());
    ev.reason = reason.map(str::to_owned);
    ev.detail = Some(detail);
    state.audit.record(ev);
}

fn plain(status: StatusCode, text: &str) -> Response {
    no_store(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text.to_owned(),
        )
            .into_response(),
    )
}

async fn decide(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    suffix: Option<&str>,
    method: &str,
    mode: Mode,
) -> Response {
    let Some(fwd) = &state.forward else {
        return plain(StatusCode::NOT_FOUND, "no [[route]] is configured");
    };
    let fa = &state.config.forward_auth;
    let req = match ForwardedRequest::from_headers(headers, suffix, method) {
        Ok(r) => r,
        Err(e) => {
            audit(
                state,
                rid,
                Outcome::Deny,
                None,
                "default-deny",
                Some(e.code()),
                e.to_string(),
            );
            return plain(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let Some(route) = fa.routes.find(&req.host, &req.uri) else {
        audit(
            state,
            rid,
            Outcome::Deny,
            None,
            "default-deny",
            Some("no_route"),
            format!("{} {}", req.method, req.original_url()),
        );
        return plain(
            StatusCode::FORBIDDEN,
            "no route covers this address (deny by default)",
        );
    };
    let auth = match auth::load(session, state, rid).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => return not_signed_in(state, &req, mode),
        Err(e) => return no_store(e.into_response()),
    };
    let id = &auth.identity;
    let now = state.clock.now();
    match fa.routes.authorize(id, &req.host, &req.uri, now) {
        Ok(grant) => {
            let lifetime = i64::try_from(fa.token_lifetime.as_secs()).unwrap_or(300);
            let jwt = match token::mint(
                fwd.keys.current(),
                state.config.base_url(),
                &grant,
                id,
                lifetime,
            ) {
                Ok(t) => t,
                Err(e) => {
                    audit(
                        state,
                        rid,
                        Outcome::Error,
                        Some(id),
                        grant.route(),
                        Some("token_mint_failed"),
                        e.to_string(),
                    );
                    return plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the identity token could not be signed",
                    );
                }
            };
            let header_name = fa
                .target(grant.route())
                .and_then(|t| HeaderName::from_bytes(t.identity_header.as_bytes()).ok())
                .unwrap_or(HeaderName::from_static("x-storegate-identity"));
            let Ok(value) = HeaderValue::from_str(&jwt) else {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the identity token is not a header value",
                );
            };
            audit(
                state,
                rid,
                Outcome::Allow,
                Some(id),
                grant.route(),
                None,
                format!("{} {}", req.method, req.original_url()),
            );
            let mut resp = plain(StatusCode::OK, "ok");
            resp.headers_mut().insert(header_name, value);
            if let Ok(r) = HeaderValue::from_str(grant.route()) {
                resp.headers_mut().insert("x-storegate-route", r);
            }
            resp
        }
        Err(refusal) => {
            audit(
                state,
                rid,
                Outcome::Deny,
                Some(id),
                refusal.rule_label(),
                Some(refusal.code()),
                format!("{} {}", req.method, req.original_url()),
            );
            let page = AppError::new(
                StatusCode::FORBIDDEN,
                "Access denied",
                refusal.explain(),
                rid,
            )
            .with_hint(format!("Ask {} for access.", state.config.support_contact));
            let mut resp = no_store(page.into_response());
            if let Ok(r) = HeaderValue::from_str(&route.name) {
                resp.headers_mut().insert("x-storegate-route", r);
            }
            resp
        }
    }
}

/// Where a browser without a session signs in and comes back to `original`.
pub fn sign_in_url(state: &AppState, original: &RouteReturn) -> String {
    format!(
        "{}/auth/continue?rd={}",
        state.config.base_url(),
        urlencode(original.as_str())
    )
}

fn not_signed_in(state: &AppState, req: &ForwardedRequest, mode: Mode) -> Response {
    let back = RouteReturn::parse(
        &req.original_url(),
        &state.config.forward_auth.routes,
        state.config.allow_insecure_http,
    );
    let mut resp = match (mode, &back) {
        // 302, as Traefik and Envoy pass it to the browser unchanged.
        (Mode::Redirect, Ok(back)) => no_store(
            (
                StatusCode::FOUND,
                [(header::LOCATION, sign_in_url(state, back))],
            )
                .into_response(),
        ),
        _ => plain(StatusCode::UNAUTHORIZED, "sign in first"),
    };
    if let Ok(back) = &back
        && let Ok(v) = HeaderValue::from_str(&sign_in_url(state, back))
    {
        resp.headers_mut().insert("x-storegate-sign-in", v);
    }
    resp
}

#[derive(Deserialize)]
pub struct ContinueQuery {
    rd: Option<String>,
}

/// `GET /auth/continue?rd=URL`: signs the browser in (the extractor sends it to `/login` and
/// back here) and sends it on to `rd`, which must be an address a `[[route]]` serves.
pub async fn continue_to(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(q): Query<ContinueQuery>,
) -> Result<Response, AppError> {
    let rid = &signed_in.request_id;
    let raw = q.rd.unwrap_or_default();
    match RouteReturn::parse(
        &raw,
        &state.config.forward_auth.routes,
        state.config.allow_insecure_http,
    ) {
        Ok(back) => Ok(no_store(Redirect::to(back.as_str()).into_response())),
        Err(e) => {
            tracing::info!(request_id = %rid, reason = %e, "a sign-in return address was refused");
            Err(AppError::bad_request(
                format!("This sign-in link does not lead to a protected tool ({e})."),
                rid,
            ))
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys of identity tokens (current, then previous).
pub async fn jwks(State(state): State<AppState>) -> Response {
    match &state.forward {
        Some(f) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(f.keys.jwks()),
        )
            .into_response(),
        None => plain(StatusCode::NOT_FOUND, "no [[route]] is configured"),
    }
}

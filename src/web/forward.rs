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
use crate::policy::route::RouteRefusal;
use crate::redirect::urlencode;
use crate::session::browser::{PENDING_TTL, STEP_UP_KEY, StepUpAttempt};

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
    answer(
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
    answer(
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

/// `/auth/verify`'s answer: 400 for an unreadable forwarded request, else the decision.
async fn answer(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    suffix: Option<&str>,
    method: &str,
    mode: Mode,
) -> Response {
    if state.forward.is_none() {
        return plain(StatusCode::NOT_FOUND, "no [[route]] is configured");
    }
    let req = match ForwardedRequest::from_headers(headers, suffix, method) {
        Ok(r) => r,
        Err(e) => return refuse_unreadable(state, rid, &e),
    };
    match decide(state, rid, session, &req, mode).await {
        Ok(allowed) => {
            let mut resp = plain(StatusCode::OK, "ok");
            resp.headers_mut().insert(allowed.header, allowed.token);
            if let Ok(r) = HeaderValue::from_str(&allowed.route) {
                resp.headers_mut().insert("x-storegate-route", r);
            }
            resp
        }
        Err(resp) => resp,
    }
}

/// A request the gateway cannot read unambiguously: audited, 400, no decision.
pub fn refuse_unreadable(
    state: &AppState,
    rid: &str,
    e: &crate::forward::request::ForwardError,
) -> Response {
    audit(
        state,
        rid,
        Outcome::Deny,
        None,
        "default-deny",
        Some(e.code()),
        e.to_string(),
    );
    plain(StatusCode::BAD_REQUEST, &e.to_string())
}

/// A request the route admits: the identity token for the upstream, in the route's header.
#[derive(Debug)]
pub struct Allowed {
    pub route: String,
    pub header: HeaderName,
    pub token: HeaderValue,
}

/// The decision for one request to a route, shared by `/auth/verify` and the built-in proxy
/// (`crate::proxy`): the route, the session, the conditions, then an identity token. Every
/// outcome is audited. `Err` is the answer to give instead: sign in (or step up) per `mode`,
/// 403 naming the route, or an error page.
pub async fn decide(
    state: &AppState,
    rid: &str,
    session: &Session,
    req: &ForwardedRequest,
    mode: Mode,
) -> Result<Allowed, Response> {
    let Some(fwd) = &state.forward else {
        return Err(plain(StatusCode::NOT_FOUND, "no [[route]] is configured"));
    };
    let fa = &state.config.forward_auth;
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
        return Err(plain(
            StatusCode::FORBIDDEN,
            "no route covers this address (deny by default)",
        ));
    };
    let auth = match auth::load(session, state, rid).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => return Err(not_signed_in(state, req, mode)),
        Err(e) => return Err(no_store(e.into_response())),
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
                    return Err(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the identity token could not be signed",
                    ));
                }
            };
            let header_name = fa
                .target(grant.route())
                .and_then(|t| HeaderName::from_bytes(t.identity_header.as_bytes()).ok())
                .unwrap_or(HeaderName::from_static("x-storegate-identity"));
            let Ok(value) = HeaderValue::from_str(&jwt) else {
                return Err(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the identity token is not a header value",
                ));
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
            Ok(Allowed {
                route: grant.route().to_owned(),
                header: header_name,
                token: value,
            })
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
            if let RouteRefusal::StepUpRequired { acr, .. } = &refusal
                && let Some(resp) = step_up(state, session, id, req, acr, mode, rid).await
            {
                return Err(resp);
            }
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
            Err(resp)
        }
    }
}

/// A route's `require_acr` not met: send the browser to sign in again asking the IdP for that
/// contract, then back to the tool (302, or nginx's 401 with `X-Storegate-Sign-In`). `None`
/// (show the 403) when the sign-in just asked for came back without it, so the browser is not
/// sent round in a loop, or when the address cannot be come back to.
async fn step_up(
    state: &AppState,
    session: &Session,
    id: &Identity,
    req: &ForwardedRequest,
    acr: &str,
    mode: Mode,
    rid: &str,
) -> Option<Response> {
    let fa = &state.config.forward_auth;
    let back = RouteReturn::parse(
        &req.original_url(),
        &fa.routes,
        state.config.allow_insecure_http,
    )
    .ok()?;
    let now = state.clock.now();
    let attempt: Option<StepUpAttempt> = session.remove(STEP_UP_KEY).await.ok()?;
    let just_tried = attempt.is_some_and(|a| {
        a.return_to == back.as_str() && id.signed_in_at >= a.at && now - a.at < PENDING_TTL
    });
    if just_tried {
        tracing::info!(request_id = %rid, "a step-up sign-in came back without the route's acr");
        return None;
    }
    session
        .insert(
            STEP_UP_KEY,
            StepUpAttempt {
                return_to: back.as_str().to_owned(),
                at: now,
            },
        )
        .await
        .ok()?;
    let continue_path = format!("/auth/continue?rd={}", urlencode(back.as_str()));
    let target = format!(
        "{}/login?idp={}&acr={}&return_to={}",
        state.config.base_url(),
        urlencode(id.idp.as_str()),
        urlencode(acr),
        urlencode(&continue_path)
    );
    Some(sign_in_answer(&target, mode))
}

/// "Sign in at `target`": a 302 for front doors that pass it to the browser, a 401 for nginx;
/// both carry `X-Storegate-Sign-In` (nginx's `error_page 401` redirects to it).
fn sign_in_answer(target: &str, mode: Mode) -> Response {
    let mut resp = match mode {
        Mode::Redirect => {
            no_store((StatusCode::FOUND, [(header::LOCATION, target)]).into_response())
        }
        Mode::Status401 => plain(StatusCode::UNAUTHORIZED, "sign in first"),
    };
    if let Ok(v) = HeaderValue::from_str(target) {
        resp.headers_mut().insert("x-storegate-sign-in", v);
    }
    resp
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
    match RouteReturn::parse(
        &req.original_url(),
        &state.config.forward_auth.routes,
        state.config.allow_insecure_http,
    ) {
        Ok(back) => sign_in_answer(&sign_in_url(state, &back), mode),
        // Nowhere to come back to (e.g. http while the gateway requires https): no redirect.
        Err(_) => plain(StatusCode::UNAUTHORIZED, "sign in first"),
    }
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

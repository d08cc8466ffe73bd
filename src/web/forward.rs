//! `GET /auth/verify` (forward authentication for nginx `auth_request`, Traefik `forwardAuth`,
//! Envoy `ext_authz`), `GET /auth/continue?rd=` (sign in, then back to the tool) and
//! `GET /.well-known/jwks.json`. The decision is the journey `flows::forward_auth` (the built-in
//! proxy asks it too); these handlers read what the front door forwarded, call it, and answer
//! (`web::answer::forward_refused`). See docs/reverse-proxy.md.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::AppState;
use super::answer::{SignInMode, forward_refused, plain};
use super::auth::SignedIn;
use super::errors::AppError;
use super::extract::RequestId;
use super::no_store;
use crate::flows::forward_auth;
use crate::forward::request::ForwardedRequest;
use crate::forward::return_url::RouteReturn;

/// How the front door wants "not signed in" said: `?mode=` or `X-Storegate-Mode` when given;
/// else nginx's `X-Original-URI` means 401, and Traefik's `X-Forwarded-Method` or Envoy's path
/// suffix mean a redirect.
fn mode_of(query: Option<&str>, headers: &HeaderMap, envoy: bool) -> SignInMode {
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
        Some("401") => return SignInMode::Status401,
        Some("redirect") => return SignInMode::Redirect,
        _ => {}
    }
    if headers.contains_key("x-original-uri") {
        SignInMode::Status401
    } else if envoy || headers.contains_key("x-forwarded-method") {
        SignInMode::Redirect
    } else {
        SignInMode::Status401
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
    let mode = mode_of(uri.query(), &headers, false);
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
    let mode = mode_of(None, &headers, true);
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

/// `/auth/verify`'s answer: 200 with the identity token, or the refusal.
async fn answer(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    suffix: Option<&str>,
    method: &str,
    mode: SignInMode,
) -> Response {
    let gw = state.gateway();
    let decided = if gw.forward.is_none() {
        Err(forward_auth::Refused::NotConfigured)
    } else {
        match ForwardedRequest::from_headers(headers, suffix, method) {
            Ok(req) => forward_auth::decide(&gw, session, &req, rid).await,
            Err(e) => Err(forward_auth::unreadable(&gw, rid, e)),
        }
    };
    match decided {
        Ok(allowed) => {
            let mut resp = plain(StatusCode::OK, "ok");
            resp.headers_mut().insert(allowed.header, allowed.token);
            if let Ok(r) = HeaderValue::from_str(&allowed.route) {
                resp.headers_mut().insert("x-storegate-route", r);
            }
            resp
        }
        Err(refused) => forward_refused(refused, mode, state, rid),
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

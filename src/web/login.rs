//! Sign-in (`/login`, the OIDC callback) and sign-out: starting a sign-in here (which IdP, the
//! step-up contract, the pending request); the OIDC callback and the common ending in
//! `flows::sign_in`, sign-out in `flows::sign_out`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::answer::{Answer, FlowFailed};
use super::auth;
use super::cookies;
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store};
use crate::federation::oidc::CallbackParams;
use crate::federation::saml::SamlProvider;
use crate::flows::sign_in;
use crate::flows::sign_out;
use crate::redirect::{LocalPath, urlencode};
use crate::session::browser::{MAX_PENDING, PENDING_KEY, PENDING_TTL};

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    idp: Option<String>,
    return_to: Option<String>,
    /// Step-up: the authentication contract a launch needs (only values some grant requires).
    acr: Option<String>,
}

#[derive(Template)]
#[template(path = "chooser.html")]
struct Chooser {
    choices: Vec<Choice>,
}

struct Choice {
    name: String,
    href: String,
}

/// `GET /login?idp=ID&return_to=/path`
pub async fn login(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    let return_to = return_to(q.return_to.as_deref(), &rid)?;
    let idp_id = match q.idp.or_else(|| only_idp(&state)) {
        Some(id) => id,
        None => return chooser(&state, &return_to, &rid),
    };
    let acr = requested_acr(&state, q.acr.as_deref(), &rid)?;
    // SAML: the contract goes out as <samlp:RequestedAuthnContext Comparison="exact|minimum">
    // <saml:AuthnContextClassRef>{acr}</...> in the AuthnRequest, and the ACS refuses an
    // assertion of another class; its AuthnContextClassRef becomes `Identity.auth.acr`.
    if let Some(p) = state.saml.as_ref().and_then(|s| s.providers.get(&idp_id)) {
        return begin_saml(&state, &rid, p, return_to, acr).await;
    }
    begin_oidc(&state, &rid, &session, &idp_id, return_to, acr).await
}

/// Where to go after signing in: a page of this site, the portal when not given.
fn return_to(raw: Option<&str>, rid: &str) -> Result<LocalPath, AppError> {
    match raw {
        None | Some("") => Ok(LocalPath::root()),
        Some(raw) => LocalPath::parse(raw).map_err(|e| {
            AppError::bad_request(
                format!("The return address is not a page of this site: {e}."),
                rid,
            )
        }),
    }
}

/// The IdP to use when the request names none: the only one configured, if there is only one.
fn only_idp(state: &AppState) -> Option<String> {
    match state.config.idps.as_slice() {
        [only] => Some(only.id.to_string()),
        _ => None,
    }
}

/// The page that lets the person pick one of several IdPs (each link keeps `return_to`).
fn chooser(state: &AppState, return_to: &LocalPath, rid: &str) -> Result<Response, AppError> {
    let rt = urlencode(return_to.as_str());
    let choices = state
        .config
        .idps
        .iter()
        .map(|i| Choice {
            name: i.display_name.clone(),
            href: format!("/login?idp={}&return_to={rt}", urlencode(i.id.as_str())),
        })
        .collect();
    let page = Chooser { choices }
        .render()
        .map_err(|_| AppError::bad_request("cannot render", rid))?;
    Ok(no_store(Html(page).into_response()))
}

/// Step-up: only an authentication contract some grant or route requires may be asked for.
fn requested_acr<'q>(
    state: &AppState,
    acr: Option<&'q str>,
    rid: &str,
) -> Result<Option<&'q str>, AppError> {
    match acr.filter(|a| !a.is_empty()) {
        None => Ok(None),
        Some(a)
            if state.policy().policy.required_acrs().contains(&a)
                || state.config.forward_auth.routes.requires_acr(a) =>
        {
            Ok(Some(a))
        }
        Some(_) => Err(AppError::bad_request(
            "The requested sign-in method is not one this gateway asks for.",
            rid,
        )),
    }
}

/// Starts an OIDC sign-in: the pending login (state, nonce, PKCE verifier) is kept in this
/// browser's session, at most [`MAX_PENDING`] of them, each for [`PENDING_TTL`].
async fn begin_oidc(
    state: &AppState,
    rid: &str,
    session: &Session,
    idp_id: &str,
    return_to: LocalPath,
    acr: Option<&str>,
) -> Result<Response, AppError> {
    let Some(provider) = state.providers.get(idp_id) else {
        return Err(AppError::not_found("There is no such sign-in method.", rid));
    };
    // The contract goes out as `acr_values` (Access Manager picks the contract by URI).
    let started = std::time::Instant::now();
    let begun = provider.begin(return_to, acr).await;
    state
        .metrics
        .observe_idp(idp_id, "begin", begun.is_ok(), started);
    let (url, pending) = begun.map_err(|e| {
        tracing::warn!(idp = %idp_id, error = %e, "cannot start sign-in");
        AppError::unavailable("The identity provider", rid)
    })?;
    let now = state.clock.now();
    let mut list = auth::pending_logins(session, rid).await?;
    list.retain(|p| now - p.created_at < PENDING_TTL);
    while list.len() >= MAX_PENDING {
        list.remove(0);
    }
    list.push(pending);
    session
        .insert(PENDING_KEY, &list)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    Ok(no_store(Redirect::to(&url).into_response()))
}

/// Starts a SAML sign-in: the pending request is stored server-side and bound to this browser
/// by its own cookie (`web::cookies`), since the IdP's POST to the ACS carries no Lax cookie.
async fn begin_saml(
    state: &AppState,
    rid: &str,
    provider: &SamlProvider,
    return_to: LocalPath,
    acr: Option<&str>,
) -> Result<Response, AppError> {
    let Some(saml) = &state.saml else {
        return Err(AppError::not_found("There is no such sign-in method.", rid));
    };
    let now = state.clock.now();
    let (url, pending) = provider.begin(return_to, acr, now).map_err(|e| {
        tracing::warn!(idp = %provider.idp_id(), error = %e, "cannot start SAML sign-in");
        AppError::unavailable("The identity provider", rid)
    })?;
    let key = sign_in::remember_saml_request(&state.gateway(), &pending)
        .await
        .map_err(|e| FlowFailed::new(e, state, rid))?;
    let mut resp = Redirect::to(&url).into_response();
    cookies::pending_cookie(&mut resp, &key, saml.secure_cookie);
    Ok(no_store(resp))
}

/// `GET /oidc/{idp}/callback`: the pending login, the IdP's answer and the common ending are
/// `flows::sign_in::oidc_callback`'s.
pub async fn callback(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    Path(idp_id): Path<String>,
    Query(params): Query<CallbackParams>,
) -> Result<Response, AppError> {
    let return_to = sign_in::oidc_callback(&state.gateway(), &session, &rid, &idp_id, &params)
        .await
        .map_err(|e| FlowFailed::new(e, &state, &rid))?;
    Ok(Answer::SignedInOidc { return_to }.into_response())
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /logout`: needs the session's CSRF token.
pub async fn logout(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    Form(form): Form<LogoutForm>,
) -> Result<Response, AppError> {
    let signed_in = auth::load(&session, &state, &rid).await?.ok();
    let outcome = sign_out::sign_out(
        &state.gateway(),
        &session,
        &rid,
        signed_in,
        form.csrf.as_deref(),
    )
    .await
    .map_err(|e| FlowFailed::new(e, &state, &rid))?;
    let secure = state.saml.as_ref().is_some_and(|s| s.secure_cookie);
    Ok(Answer::SignedOut { outcome, secure }.into_response())
}

#[derive(Debug, Deserialize)]
pub struct SignedOutQuery {
    state: Option<String>,
}

/// `GET /signed-out[?state=KEY]`: where every sign-out ends. With the key the sign-out
/// remembered (through the IdP as `state`), the page also ends the storefront sessions.
pub async fn signed_out(
    State(state): State<AppState>,
    Query(q): Query<SignedOutQuery>,
) -> Response {
    let stores = match q.state.as_deref() {
        Some(k) if !k.is_empty() && k.len() <= 128 => {
            sign_out::signed_out_stores(&state.gateway(), k).await
        }
        _ => Vec::new(),
    };
    super::answer::signed_out_page_with(None, &stores)
}

//! Sign-in (`/login`, the OIDC callback) and sign-out: the protocol steps of OIDC here, the
//! common ending in `flows::sign_in`, sign-out in `flows::sign_out`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::answer::{Answer, FlowFailed};
use super::auth;
use super::cookies;
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::federation::oidc::{CallbackParams, OidcError};
use crate::federation::saml::SamlProvider;
use crate::flows::sign_in::{self, Proof};
use crate::flows::sign_out;
use crate::identity::IdpId;
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
    let return_to = match q.return_to.as_deref() {
        None | Some("") => LocalPath::root(),
        Some(raw) => LocalPath::parse(raw).map_err(|e| {
            AppError::bad_request(
                format!("The return address is not a page of this site: {e}."),
                &rid,
            )
        })?,
    };
    let idp_id = match q.idp {
        Some(id) => id,
        None if state.config.idps.len() == 1 => state
            .config
            .idps
            .first()
            .map(|i| i.id.to_string())
            .unwrap_or_default(),
        None => {
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
                .map_err(|_| AppError::bad_request("cannot render", &rid))?;
            return Ok(no_store(Html(page).into_response()));
        }
    };
    let acr = match q.acr.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a)
            if state.policy().policy.required_acrs().contains(&a)
                || state.config.forward_auth.routes.requires_acr(a) =>
        {
            Some(a)
        }
        Some(_) => {
            return Err(AppError::bad_request(
                "The requested sign-in method is not one this gateway asks for.",
                &rid,
            ));
        }
    };
    // SAML: the contract goes out as <samlp:RequestedAuthnContext Comparison="exact|minimum">
    // <saml:AuthnContextClassRef>{acr}</...> in the AuthnRequest, and the ACS refuses an
    // assertion of another class; its AuthnContextClassRef becomes `Identity.auth.acr`.
    if let Some(p) = state.saml.as_ref().and_then(|s| s.providers.get(&idp_id)) {
        return begin_saml(&state, &rid, p, return_to, acr).await;
    }
    let Some(provider) = state.providers.get(&idp_id) else {
        return Err(AppError::not_found(
            "There is no such sign-in method.",
            &rid,
        ));
    };
    // OIDC: the contract goes out as `acr_values` (Access Manager picks the contract by URI).
    let started = std::time::Instant::now();
    let begun = provider.begin(return_to, acr).await;
    state
        .metrics
        .observe_idp(&idp_id, "begin", begun.is_ok(), started);
    let (url, pending) = begun.map_err(|e| {
        tracing::warn!(idp = %idp_id, error = %e, "cannot start sign-in");
        AppError::unavailable("The identity provider", &rid)
    })?;
    let now = state.clock.now();
    let mut list = auth::pending_logins(&session, &rid).await?;
    list.retain(|p| now - p.created_at < PENDING_TTL);
    while list.len() >= MAX_PENDING {
        list.remove(0);
    }
    list.push(pending);
    session
        .insert(PENDING_KEY, &list)
        .await
        .map_err(|_| AppError::session_store(&rid))?;
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

/// `GET /oidc/{idp}/callback`
pub async fn callback(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    Path(idp_id): Path<String>,
    Query(params): Query<CallbackParams>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let deny = |reason: &str, detail: String| {
        let mut ev = AuditEvent::new(now, &rid, EventKind::SignIn, Outcome::Deny);
        ev.idp = Some(idp_id.clone());
        ev.reason = Some(reason.to_owned());
        ev.detail = Some(detail);
        state.audit.record(ev);
    };
    let Some(provider) = state.providers.get(&idp_id) else {
        deny(
            "unknown_idp",
            "callback for an IdP that is not configured".into(),
        );
        return Err(AppError::not_found(
            "There is no such sign-in method.",
            &rid,
        ));
    };
    let Some(got_state) = params.state.clone().filter(|s| !s.is_empty()) else {
        deny("state_missing", "the callback carried no state".into());
        return Err(
            AppError::bad_request("The sign-in response is incomplete (no state).", &rid)
                .offer_sign_in(),
        );
    };
    // The pending login is looked up in this browser's own session: a state that is unknown here
    // was never issued to this browser, was already used, or belongs to someone else.
    let mut list = auth::pending_logins(&session, &rid).await?;
    let Some(pos) = list
        .iter()
        .position(|p| p.state == got_state && p.idp.as_str() == idp_id)
    else {
        deny(
            "state_unknown",
            "state not issued to this browser session, or already used".into(),
        );
        return Err(AppError::bad_request(
            "This sign-in response does not belong to a sign-in started in this browser, or it was already used.",
            &rid,
        )
        .with_hint("Start again from the portal; do not reuse or share sign-in links.")
        .offer_sign_in());
    };
    let pending = list.remove(pos);
    // One use: forget it before doing anything else.
    session
        .insert(PENDING_KEY, &list)
        .await
        .map_err(|_| AppError::session_store(&rid))?;
    if now - pending.created_at >= PENDING_TTL {
        deny(
            "state_expired",
            "the sign-in took longer than 10 minutes".into(),
        );
        return Err(
            AppError::bad_request("This sign-in took too long and has expired.", &rid)
                .offer_sign_in(),
        );
    }
    let return_to = pending.return_to.clone();
    let started = std::time::Instant::now();
    let completed = provider.complete(pending, &params).await;
    state
        .metrics
        .observe_idp(&idp_id, "callback", completed.is_ok(), started);
    let verified = match completed {
        Ok(v) => v,
        Err(e) => return Err(sign_in_failed(&state, &rid, &idp_id, now, e)),
    };
    // The common ending: identity, leaver check, session, audit.
    sign_in::finish(
        &state.gateway(),
        &session,
        &rid,
        &IdpId::new(idp_id),
        Proof::Oidc(verified),
    )
    .await
    .map_err(|e| FlowFailed::new(e, &state, &rid))?;
    Ok(Answer::SignedInOidc { return_to }.into_response())
}

fn sign_in_failed(state: &AppState, rid: &str, idp: &str, now: i64, e: OidcError) -> AppError {
    let unavailable = e.is_unavailable();
    tracing::warn!(idp, reason = e.reason(), error = %e, "sign-in refused");
    let mut ev = AuditEvent::new(
        now,
        rid,
        EventKind::SignIn,
        if unavailable {
            Outcome::Error
        } else {
            Outcome::Deny
        },
    );
    ev.idp = Some(idp.to_owned());
    ev.reason = Some(e.reason().to_owned());
    ev.detail = Some(e.to_string());
    state.audit.record(ev);
    if unavailable {
        return AppError::unavailable("The identity provider", rid);
    }
    let err = AppError::new(
        StatusCode::UNAUTHORIZED,
        "Sign-in refused",
        "The identity provider's answer did not pass the gateway's checks, so you were not signed in.",
        rid,
    )
    .offer_sign_in();
    match e {
        // Admin-facing: the fix is a console setting, and the message says which.
        OidcError::UnsignedIdToken => err.with_hint(e.to_string()),
        OidcError::ProviderError { .. } => err.with_hint("The identity provider reported an error; the administrator can find the details in the audit log under this reference."),
        _ => err.with_hint("If this keeps happening, give the reference below to your administrator."),
    }
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

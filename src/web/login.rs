//! Sign-in (`/login`, the OIDC callback) and sign-out.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth::{self, MAX_PENDING, PENDING_KEY, PENDING_TTL, SignedInState};
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store, random_token};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::federation::claims::map_identity;
use crate::federation::oidc::{CallbackParams, OidcError};
use crate::redirect::LocalPath;

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
            let rt = auth::urlencode(return_to.as_str());
            let choices = state
                .config
                .idps
                .iter()
                .map(|i| Choice {
                    name: i.display_name.clone(),
                    href: format!(
                        "/login?idp={}&return_to={rt}",
                        auth::urlencode(i.id.as_str())
                    ),
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
        Some(a) if state.policy().policy.required_acrs().contains(&a) => Some(a),
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
        return super::saml::begin(&state, &rid, p, return_to, acr).await;
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
    let Some(idp_cfg) = state.config.idp(&idp_id) else {
        return Err(AppError::not_found(
            "There is no such sign-in method.",
            &rid,
        ));
    };
    let identity = map_identity(&verified, &idp_cfg.claims, now);
    establish(&state, &session, &rid, identity, now, "OIDC").await?;
    Ok(no_store(Redirect::to(return_to.as_str()).into_response()))
}

/// The end of every protocol's sign-in: refuse a leaver, start from an empty session with a new
/// id (fixation defence), store the signed-in state, and audit the sign-in.
///
/// Empty, because on a shared PC the previous person's state must not survive into the next
/// person's session (SECURITY.md, "Identity binding"): a SAML session's logout data left behind
/// made B's sign-out send A's LogoutRequest (never ending B's session at B's IdP), and let an IdP
/// logout for A end B's session. Pending logins of other tabs go too. The one thing kept is a
/// step-up attempt of the *same* person (same IdP and subject), which stops a launch from
/// sending them round to the IdP in a loop (web/launch.rs).
pub(super) async fn establish(
    state: &AppState,
    session: &Session,
    rid: &str,
    identity: crate::identity::Identity,
    now: i64,
    protocol: &str,
) -> Result<(), AppError> {
    refuse_deprovisioned(state, rid, &identity, now).await?;
    let previous = auth::read_signed_in(session)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    let same_person = previous
        .is_some_and(|p| p.identity.idp == identity.idp && p.identity.subject == identity.subject);
    let step_up: Option<auth::StepUpAttempt> = if same_person {
        session
            .get(auth::STEP_UP_KEY)
            .await
            .map_err(|_| AppError::session_store(rid))?
    } else {
        None
    };
    session.clear().await;
    session
        .cycle_id()
        .await
        .map_err(|_| AppError::session_store(rid))?;
    if let Some(attempt) = step_up {
        session
            .insert(auth::STEP_UP_KEY, attempt)
            .await
            .map_err(|_| AppError::session_store(rid))?;
    }
    let grants = state.policy().policy.grants(&identity, now);
    let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Allow).who(&identity);
    ev.detail = Some(format!("{protocol}; {} store(s) granted", grants.len()));
    let signed_in = SignedInState {
        identity,
        csrf: random_token(),
        last_seen: now,
        customers: Default::default(),
    };
    auth::write_signed_in(session, &signed_in)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    state.audit.record(ev);
    Ok(())
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
    let now = state.clock.now();
    let current = auth::load(&session, &state, &rid).await?;
    let Ok(signed_in) = current else {
        return Ok(no_store(Redirect::to("/signed-out").into_response()));
    };
    let token_ok = form
        .csrf
        .as_deref()
        .is_some_and(|t| crate::secret::ct_eq(t, &signed_in.csrf));
    if !token_ok {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The sign-out request did not come from this site's own page.",
            &rid,
        ));
    }
    let saml_info: Option<super::saml::SamlSessionInfo> = session
        .get(super::saml::SAML_SESSION_KEY)
        .await
        .ok()
        .flatten();
    session
        .flush()
        .await
        .map_err(|_| AppError::session_store(&rid))?;
    state.audit.record(
        AuditEvent::new(now, &rid, EventKind::SignOut, Outcome::Allow).who(&signed_in.identity),
    );
    // SAML: the local session is gone; tell the IdP with a signed LogoutRequest (its answer
    // comes back to /saml/slo and ends at /signed-out).
    if let Some(info) = saml_info
        && let Some(p) = state.saml.as_ref().and_then(|s| s.providers.get(&info.idp))
    {
        let sent = p.logout_request_url(
            &info.name_id,
            info.name_id_format.as_deref(),
            info.session_index.as_deref(),
            now,
        );
        let resp = match sent {
            Ok(Some(req)) => {
                // Bound to this browser: the IdP's LogoutResponse must answer this very request.
                let mut resp = Redirect::to(&req.url).into_response();
                super::saml::remember_logout_request(&state, &info.idp, &req.id, &mut resp).await;
                resp
            }
            Ok(None) => Redirect::to("/signed-out").into_response(),
            Err(e) => {
                tracing::warn!(idp = %info.idp, error = %e, "cannot build the SAML LogoutRequest");
                Redirect::to("/signed-out").into_response()
            }
        };
        return Ok(no_store(resp));
    }
    let back = state.config.logout_uri();
    let target = match state.providers.get(signed_in.identity.idp.as_str()) {
        Some(p) => match p.end_session_endpoint().await {
            Some(end) => match url::Url::parse(&end) {
                Ok(mut u) => {
                    u.query_pairs_mut()
                        .append_pair("client_id", p.client_id())
                        .append_pair("post_logout_redirect_uri", &back);
                    u.to_string()
                }
                Err(_) => "/signed-out".to_owned(),
            },
            None => "/signed-out".to_owned(),
        },
        None => "/signed-out".to_owned(),
    };
    Ok(no_store(Redirect::to(&target).into_response()))
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOut<'a> {
    /// Set when the IdP's sign-out could not be confirmed: the reference of that request.
    unconfirmed: Option<&'a str>,
}

pub async fn signed_out() -> Response {
    signed_out_page(None)
}

/// The signed-out page; with `unconfirmed` (a request reference), it adds that the identity
/// provider's sign-out could not be confirmed.
pub(super) fn signed_out_page(unconfirmed: Option<&str>) -> Response {
    match (SignedOut { unconfirmed }).render() {
        Ok(p) => Html(p).into_response(),
        Err(_) => "You are signed out.".into_response(),
    }
}

/// A leaver (SCIM `active: false`, or deleted) gets no session at all, whatever the IdP says.
/// Shared by every protocol's sign-in.
pub(super) async fn refuse_deprovisioned(
    state: &AppState,
    rid: &str,
    identity: &crate::identity::Identity,
    now: i64,
) -> Result<(), AppError> {
    let Some(scim) = &state.scim else {
        return Ok(());
    };
    let deprovisioned = match scim
        .is_deprovisioned(&identity.subject, identity.email.as_deref())
        .await
    {
        Ok(d) => d,
        // Cannot tell whether this person is a leaver: nobody is signed in (fail closed).
        Err(e) => {
            let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Error).who(identity);
            ev.reason = Some("scim_store_unavailable".into());
            ev.detail = Some(e.detail);
            state.audit.record(ev);
            return Err(AppError::unavailable(
                "The identity management data (SCIM store)",
                rid,
            ));
        }
    };
    if deprovisioned {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny).who(identity);
        ev.rule = Some("deprovisioned".into());
        ev.reason = Some("deprovisioned".into());
        state.audit.record(ev);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "Your account has been disabled by your organisation's identity management.",
            rid,
        ));
    }
    Ok(())
}

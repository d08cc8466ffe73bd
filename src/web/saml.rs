//! SAML endpoints: SP metadata, the assertion consumer service and single logout. (A SAML
//! sign-in starts at `/login`, `web::login`.)
//!
//! The ACS POST comes from the IdP's site, so the browser does not send the `SameSite=Lax` session
//! cookie with it. The pending request is therefore bound to the browser by its own short-lived
//! cookie, `SameSite=None` (and `Secure` unless `allow_insecure_http`), path `/saml/acs`, holding
//! only an opaque key to the server-side pending record; the record is taken once.
//!
//! After the protocol checks, a sign-in ends in `flows::sign_in` (replay, leaver, session).
//!
//! Single logout (`/saml/slo`, see `federation::saml::slo`): an IdP LogoutRequest is recorded by
//! `flows::sign_out::record_idp_logout`, and every replica checks that record when it loads a
//! SAML session (`flows::sign_out::ended_by_idp`). The browser that carries the LogoutRequest
//! (Redirect binding, with its Lax cookie) loses its session immediately; a cross-site POST
//! carries no session cookie.
//!
//! A LogoutRequest the gateway sends (from `/logout`, `flows::sign_out`) is bound to the browser the same way as a
//! pending sign-in: cookie [`LOGOUT_COOKIE`] (`SameSite=None`, path `/saml/slo`) keys a record
//! of its ID, and the IdP's LogoutResponse must name that ID in `InResponseTo`. The local session
//! has already ended by then, so a refused answer shows the signed-out page with a note that the
//! IdP's sign-out is unconfirmed rather than an error page.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::answer::{Answer, FlowFailed};
use super::cookies::{
    LOGOUT_COOKIE, PENDING_COOKIE, clear_logout_cookie, clear_pending_cookie, cookie_value,
};
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::federation::saml::{PendingSaml, SamlError, prescan, slo};
use crate::flows::sign_in::{self, Proof};
use crate::flows::sign_out::{self, SignOutError};
use crate::redirect::LocalPath;
use crate::session::browser::read_signed_in;

pub use crate::federation::saml::SamlState;

/// `GET /saml/metadata`
pub async fn metadata(State(state): State<AppState>, RequestId(rid): RequestId) -> Response {
    match &state.saml {
        Some(s) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            )],
            s.metadata.clone(),
        )
            .into_response(),
        None => {
            AppError::not_found("SAML is not configured on this gateway.", &rid).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// `POST /saml/acs` (HTTP-POST binding).
pub async fn acs(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<AcsForm>,
) -> Response {
    let secure = state.saml.as_ref().is_some_and(|s| s.secure_cookie);
    let mut resp = match acs_inner(&state, &rid, &session, &headers, form).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    clear_pending_cookie(&mut resp, secure);
    no_store(resp)
}

async fn acs_inner(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    form: AcsForm,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let deny = |idp: Option<&str>, reason: &str, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny);
        ev.idp = idp.map(str::to_owned);
        ev.reason = Some(reason.to_owned());
        ev.detail = Some(detail);
        state.audit.record(ev);
    };
    let Some(saml) = &state.saml else {
        return Err(AppError::not_found(
            "SAML is not configured on this gateway.",
            rid,
        ));
    };
    let Some(response) = form.saml_response.filter(|s| !s.is_empty()) else {
        deny(
            None,
            "saml_response_missing",
            "no SAMLResponse in the POST".into(),
        );
        return Err(
            AppError::bad_request("The sign-in response is incomplete.", rid).offer_sign_in(),
        );
    };

    // The pending request of this browser, taken once.
    let pending: Option<PendingSaml> = match cookie_value(headers, PENDING_COOKIE) {
        Some(k) if !k.is_empty() => sign_in::take_saml_request(&state.gateway(), k)
            .await
            .map_err(|e| FlowFailed::new(e, state, rid))?,
        _ => None,
    };

    let (provider, request_id, return_to, requested_acr) = match pending {
        Some(p) => {
            // RelayState is an opaque reference we issued with this very request.
            if form.relay_state.as_deref() != Some(p.relay_state.as_str()) {
                deny(
                    Some(&p.idp),
                    "saml_relay_state",
                    "RelayState is not the one sent with the request".into(),
                );
                return Err(refused(rid, None));
            }
            let Some(provider) = saml.providers.get(&p.idp) else {
                deny(
                    Some(&p.idp),
                    "unknown_idp",
                    "pending request for an IdP that is no longer configured".into(),
                );
                return Err(refused(rid, None));
            };
            (Arc::clone(provider), Some(p.request_id), p.return_to, p.acr)
        }
        None => {
            // No request of this browser is pending: only an IdP that allows unsolicited responses
            // may answer, chosen by the (unverified) Issuer and then verified with its own keys.
            let issuer = unverified_issuer(&response);
            let provider = saml.providers.values().find(|p| {
                p.allow_unsolicited() && p.entity_id().is_some() && p.entity_id() == issuer
            });
            let Some(provider) = provider else {
                deny(None, "saml_unsolicited", "no sign-in is pending in this browser (missing, expired or already used), and unsolicited responses are not enabled for this issuer".into());
                return Err(AppError::bad_request(
                    "This sign-in response does not belong to a sign-in started in this browser, or it was already used.",
                    rid,
                )
                .with_hint("Start again from the portal; do not reuse or share sign-in links.")
                .offer_sign_in());
            };
            (Arc::clone(provider), None, LocalPath::root(), None)
        }
    };
    let idp_id = provider.idp_id().to_string();

    let mut outcome = provider
        .verify(response.clone(), request_id.clone(), now)
        .await;
    // A signature by a key the metadata does not (yet) name: fetch the metadata once (rate
    // limited) and verify again if the IdP's signing certificates changed (rollover).
    if matches!(outcome, Err(SamlError::Signature)) && provider.refresh_for_unknown_key(now).await {
        outcome = provider.verify(response, request_id, now).await;
    }
    // Step-up: the class the AuthnRequest asked for, checked on the verified assertion.
    let outcome = outcome.and_then(|mut v| {
        provider.check_authn_context(requested_acr.as_deref(), &mut v)?;
        Ok(v)
    });
    let verified = match outcome {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(idp = %idp_id, reason = e.reason(), error = %e, "SAML sign-in refused");
            deny(Some(&idp_id), e.reason(), e.to_string());
            return Err(refused(rid, Some(&e)));
        }
    };
    // The common ending: replay check, identity, leaver check, session, audit.
    sign_in::finish(
        &state.gateway(),
        session,
        rid,
        provider.idp_id(),
        Proof::Saml(Box::new(verified)),
    )
    .await
    .map_err(|e| FlowFailed::new(e, state, rid))?;
    Ok(Answer::SignedInSaml { return_to }.into_response())
}

/// The Issuer named in the response, unverified: used only to choose whose keys verify an
/// unsolicited response.
fn unverified_issuer(b64: &str) -> Option<String> {
    use base64::Engine;
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()?;
    let xml = prescan::decode_document(bytes).ok()?;
    prescan::prescan(&xml, true).ok()?.issuer
}

/// Every verifier stayed busy for the whole wait: nothing was wrong with the message.
fn busy(rid: &str) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "The gateway is handling many sign-ins right now and could not check yours in time.",
        rid,
    )
    .with_hint("Try again in a moment.")
    .offer_sign_in()
}

/// The page for a refused response: admin-useful (what did not match), never raw markup (askama
/// escapes it, and long values are cut).
fn refused(rid: &str, e: Option<&SamlError>) -> AppError {
    if let Some(SamlError::Busy) = e {
        return busy(rid);
    }
    let err = AppError::new(
        StatusCode::UNAUTHORIZED,
        "Sign-in refused",
        "The identity provider's answer did not pass the gateway's checks, so you were not signed in.",
        rid,
    )
    .offer_sign_in();
    match e {
        Some(e) => {
            let mut text = e.to_string();
            if text.len() > 300 {
                let mut cut = 300;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            err.with_hint(format!("For the administrator: {text}."))
        }
        None => err
            .with_hint("If this keeps happening, give the reference below to your administrator."),
    }
}

#[derive(Debug, Deserialize)]
pub struct SloForm {
    #[serde(rename = "SAMLRequest")]
    saml_request: Option<String>,
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// Runs [`slo_inner`]; an answer to our LogoutRequest also clears the binding cookie.
async fn slo_answer(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    inbound: slo::Inbound,
) -> Response {
    let is_response = inbound.is_response();
    let mut resp = match slo_inner(state, rid, session, headers, inbound).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if is_response {
        clear_logout_cookie(
            &mut resp,
            state.saml.as_ref().is_some_and(|s| s.secure_cookie),
        );
    }
    no_store(resp)
}

/// `GET /saml/slo` (HTTP-Redirect binding).
pub async fn slo_get(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let inbound = slo::Inbound::Redirect(query.unwrap_or_default());
    slo_answer(&state, &rid, &session, &headers, inbound).await
}

/// `POST /saml/slo` (HTTP-POST binding).
pub async fn slo_post(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<SloForm>,
) -> Response {
    let inbound = match (form.saml_request, form.saml_response) {
        (Some(m), None) => slo::Inbound::Post {
            message: m,
            is_request: true,
            relay_state: form.relay_state,
        },
        (None, Some(m)) => slo::Inbound::Post {
            message: m,
            is_request: false,
            relay_state: form.relay_state,
        },
        _ => {
            return no_store(
                AppError::bad_request("The sign-out message is incomplete.", &rid).into_response(),
            );
        }
    };
    slo_answer(&state, &rid, &session, &headers, inbound).await
}

fn slo_refused(rid: &str, e: &SamlError) -> AppError {
    if let SamlError::Busy = e {
        return busy(rid);
    }
    AppError::new(
        StatusCode::BAD_REQUEST,
        "Sign-out message refused",
        "The sign-out message did not pass the gateway's checks; nothing was changed.",
        rid,
    )
    .with_hint(format!("For the administrator: {}.", short(&e.to_string())))
}

fn short(text: &str) -> String {
    let mut text = text.to_owned();
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A refused SLO message. A LogoutResponse answers a sign-out whose local part is already done:
/// when this browser sent that LogoutRequest, or holds no sign-in anyway, the person sees the
/// signed-out page with a note that the IdP's sign-out could not be confirmed (an IdP that
/// answers unsigned, as SimpleSAMLphp does by default, used to leave them on a 400 page). A
/// refused LogoutRequest, or a stray LogoutResponse in a signed-in browser, changes nothing: 400.
async fn slo_refusal(
    session: &Session,
    rid: &str,
    is_response: bool,
    sent_here: bool,
    e: &SamlError,
) -> Result<Response, AppError> {
    if is_response {
        let signed_in = read_signed_in(session)
            .await
            .map_err(|_| AppError::session_store(rid))?
            .is_some();
        if sent_here || !signed_in {
            return Ok(Answer::SignedOutUnconfirmed {
                reference: rid.to_owned(),
            }
            .into_response());
        }
    }
    Err(slo_refused(rid, e))
}

async fn slo_inner(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    inbound: slo::Inbound,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let is_response = inbound.is_response();
    let sent = match cookie_value(headers, LOGOUT_COOKIE).filter(|k| !k.is_empty()) {
        Some(binding) if is_response => sign_out::sent_logout(&state.gateway(), binding).await,
        _ => None,
    };
    let audit = |idp: Option<&str>, outcome: Outcome, reason: Option<&str>, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignOut, outcome);
        ev.idp = idp.map(str::to_owned);
        ev.reason = reason.map(str::to_owned);
        ev.detail = Some(detail);
        state.audit.record(ev);
    };
    let Some(saml) = &state.saml else {
        return Err(AppError::not_found(
            "SAML is not configured on this gateway.",
            rid,
        ));
    };
    // The (unverified) Issuer only picks whose keys verify the message; what the prescan refuses
    // ends here, with its reason.
    let issuer = match slo::unverified_issuer(&inbound) {
        Ok(issuer) => issuer,
        Err(e) => {
            audit(None, Outcome::Deny, Some(e.reason()), e.to_string());
            return Err(slo_refused(rid, &e));
        }
    };
    let Some(provider) = saml
        .providers
        .values()
        .find(|p| p.entity_id().is_some() && p.entity_id() == issuer)
    else {
        let e = SamlError::Issuer {
            got: issuer,
            expected: "a configured SAML IdP".into(),
        };
        audit(None, Outcome::Deny, Some(e.reason()), e.to_string());
        return slo_refusal(session, rid, is_response, sent.is_some(), &e).await;
    };
    let idp_id = provider.idp_id().to_string();
    let mut outcome = provider.verify_slo(inbound.clone(), now).await;
    if matches!(outcome, Err(SamlError::Signature)) && provider.refresh_for_unknown_key(now).await {
        outcome = provider.verify_slo(inbound, now).await;
    }
    let msg = match outcome {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(idp = %idp_id, reason = e.reason(), error = %e, "SAML logout message refused");
            audit(
                Some(&idp_id),
                Outcome::Deny,
                Some(e.reason()),
                e.to_string(),
            );
            return slo_refusal(session, rid, is_response, sent.is_some(), &e).await;
        }
    };
    match msg {
        slo::SloMessage::Response(r) => {
            // The local session ended before the LogoutRequest was sent; this only ends the flow,
            // and only as the answer to the request this browser sent.
            let sent_id = sent
                .as_ref()
                .filter(|s| s.idp == *provider.idp_id())
                .map(|s| s.request_id.as_str());
            if let Err(e) = r.confirms(sent_id) {
                tracing::warn!(idp = %idp_id, reason = e.reason(), error = %e, "SAML LogoutResponse refused");
                audit(
                    Some(&idp_id),
                    Outcome::Deny,
                    Some(e.reason()),
                    format!("SAML LogoutResponse: {e}"),
                );
                return slo_refusal(session, rid, true, sent.is_some(), &e).await;
            }
            audit(
                Some(&idp_id),
                Outcome::Allow,
                None,
                "SAML LogoutResponse: Success, answering this browser's LogoutRequest".to_owned(),
            );
            // On to the signed-out page, which also ends the storefront sessions the sign-out
            // remembered (`flows::sign_out`).
            let target = match sent.as_ref().and_then(|s| s.signed_out.as_deref()) {
                Some(k) => format!("/signed-out?state={}", crate::redirect::urlencode(k)),
                None => "/signed-out".to_owned(),
            };
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response())
        }
        slo::SloMessage::Request(req) => {
            let skew = state
                .config
                .idp(&idp_id)
                .and_then(|i| match &i.protocol {
                    crate::config::Protocol::Saml(s) => Some(s.clock_skew.as_secs() as i64),
                    _ => None,
                })
                .unwrap_or(60);
            // A LogoutRequest is acted on once (its IssueInstant bounds how long it could be replayed).
            let first = saml
                .one_time
                .claim(
                    &format!("slo:{idp_id}:{}", req.id),
                    now + slo::MAX_REQUEST_AGE + 2 * skew,
                    now,
                )
                .await
                .map_err(|_| AppError::session_store(rid))?;
            if !first {
                let e = SamlError::Replay;
                audit(
                    Some(&idp_id),
                    Outcome::Deny,
                    Some(e.reason()),
                    e.to_string(),
                );
                return Err(slo_refused(rid, &e));
            }
            // Sessions of this NameID (or SessionIndex) end at once on every replica through
            // the session index; this browser's, when its cookie came along, too.
            sign_out::record_idp_logout(&state.gateway(), saml, session, provider.idp_id(), &req)
                .await
                .map_err(|e| match e {
                    SignOutError::SessionStore | SignOutError::NotFromOurPage => {
                        AppError::session_store(rid)
                    }
                })?;
            audit(
                Some(&idp_id),
                Outcome::Allow,
                None,
                format!(
                    "SAML LogoutRequest from the IdP ({} session index(es))",
                    req.session_indexes.len()
                ),
            );
            let url = provider
                .logout_response_url(&req.id, req.relay_state.as_deref(), now)
                .map_err(|e| {
                    tracing::warn!(idp = %idp_id, error = %e, "cannot answer the LogoutRequest");
                    AppError::unavailable("The identity provider", rid)
                })?;
            Ok(Redirect::to(&url).into_response())
        }
    }
}

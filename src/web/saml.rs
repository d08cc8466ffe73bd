//! SAML endpoints: SP metadata, the assertion consumer service and single logout. (A SAML
//! sign-in starts at `/login`, `web::login`.)
//!
//! The ACS POST comes from the IdP's site, so the browser does not send the `SameSite=Lax` session
//! cookie with it. The pending request is therefore bound to the browser by its own short-lived
//! cookie, `SameSite=None` (and `Secure` unless `allow_insecure_http`), path `/saml/acs`, holding
//! only an opaque key to the server-side pending record; the record is taken once.
//!
//! The handlers only unpack the binding: the ACS is `flows::sign_in::saml_response` (which
//! request it answers, the protocol checks, then replay, leaver, session), `/saml/slo` is
//! `flows::sign_out::idp_message`; `web::answer` words the outcomes and refusals.
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

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::answer::{Answer, FlowFailed};
use super::cookies::{
    LOGOUT_COOKIE, PENDING_COOKIE, clear_logout_cookie, clear_pending_cookie, cookie_value,
};
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store};
use crate::federation::saml::slo;
use crate::flows::sign_in::{self, SamlPost};
use crate::flows::sign_out;

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

/// `POST /saml/acs` (HTTP-POST binding). The binding cookie is cleared whatever the outcome.
pub async fn acs(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<AcsForm>,
) -> Response {
    let post = SamlPost {
        binding: cookie_value(&headers, PENDING_COOKIE),
        response: form.saml_response,
        relay_state: form.relay_state,
    };
    let mut resp = match sign_in::saml_response(&state.gateway(), &session, &rid, post).await {
        Ok(return_to) => Answer::SignedInSaml { return_to }.into_response(),
        Err(e) => FlowFailed::new(e, &state, &rid).into_response(),
    };
    clear_pending_cookie(
        &mut resp,
        state.saml.as_ref().is_some_and(|s| s.secure_cookie),
    );
    no_store(resp)
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

/// Runs `flows::sign_out::idp_message`; an answer to our LogoutRequest also clears the binding
/// cookie.
async fn slo_answer(
    state: &AppState,
    rid: &str,
    session: &Session,
    headers: &HeaderMap,
    inbound: slo::Inbound,
) -> Response {
    let is_response = inbound.is_response();
    let binding = cookie_value(headers, LOGOUT_COOKIE);
    let mut resp =
        match sign_out::idp_message(&state.gateway(), session, rid, binding, inbound).await {
            Ok(answered) => Answer::IdpSignOut {
                answered,
                reference: rid.to_owned(),
            }
            .into_response(),
            Err(e) => FlowFailed::new(e, state, rid).into_response(),
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

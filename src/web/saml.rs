//! SAML endpoints: SP metadata, the start of a SAML sign-in (called from `/login`), and the
//! assertion consumer service.
//!
//! The ACS POST comes from the IdP's site, so the browser does not send the `SameSite=Lax` session
//! cookie with it. The pending request is therefore bound to the browser by its own short-lived
//! cookie, `SameSite=None` (and `Secure` unless `allow_insecure_http`), path `/saml/acs`, holding
//! only an opaque key to the server-side pending record; the record is taken once.
//!
//! Single logout (`/saml/slo`, see `federation::saml::slo`): an IdP LogoutRequest is recorded in
//! the shared one-time store by SessionIndex (or, without one, by NameID with its time) and every
//! replica checks that record when it loads a SAML session ([`ended_by_idp`]). That is how
//! sessions in other browsers end: the gateway keeps no NameID-to-session index, so they end at
//! their next request rather than being deleted from the session store at once. The browser
//! that carries the LogoutRequest (Redirect binding, with its Lax cookie) loses its session
//! immediately; a cross-site POST carries no session cookie.
//!
//! A LogoutRequest the gateway sends (from `/logout`) is bound to the browser the same way as a
//! pending sign-in: cookie [`LOGOUT_COOKIE`] (`SameSite=None`, path `/saml/slo`) keys a record
//! of its ID, and the IdP's LogoutResponse must name that ID in `InResponseTo`. The local session
//! has already ended by then, so a refused answer shows the signed-out page with a note that the
//! IdP's sign-out is unconfirmed rather than an error page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth::PENDING_TTL;
use super::errors::AppError;
use super::extract::RequestId;
use super::{AppState, no_store, random_token};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::config::Config;
use crate::federation::claims::map_identity;
use crate::federation::saml::sp::{SpKeys, metadata_xml};
use crate::federation::saml::{PendingSaml, SamlError, SamlProvider, prescan, slo};
use crate::redirect::LocalPath;
use crate::session::one_time::OneTimeStore;

/// Name of the cookie that binds a pending SAML request to the browser.
pub const PENDING_COOKIE: &str = "storegate_saml_pending";
/// Session key for what SLO needs (NameID, SessionIndex, IdP).
pub const SAML_SESSION_KEY: &str = "saml";
/// Name of the cookie that binds a LogoutRequest this gateway sent to the browser, so that the
/// IdP's LogoutResponse is accepted only as the answer to it (InResponseTo). `SameSite=None`,
/// path `/saml/slo`: the IdP may answer with a cross-site POST, which carries no Lax cookie.
pub const LOGOUT_COOKIE: &str = "storegate_saml_logout";

/// Everything SAML needs at run time, built once at start-up.
pub struct SamlState {
    pub providers: BTreeMap<String, Arc<SamlProvider>>,
    pub metadata: String,
    pub one_time: OneTimeStore,
    pub secure_cookie: bool,
}

impl SamlState {
    pub fn build(config: &Config, one_time: OneTimeStore) -> Result<Option<Self>, String> {
        let Some(spc) = &config.saml else {
            return Ok(None);
        };
        let keys = Arc::new(SpKeys::from_pem(spc.key_pem.expose(), &spc.cert_pem)?);
        let mut providers = BTreeMap::new();
        for idp in &config.idps {
            if let crate::config::Protocol::Saml(s) = &idp.protocol {
                let p = SamlProvider::new(idp, s, spc, Arc::clone(&keys))?;
                if s.dangerous_allow_sha1 {
                    tracing::warn!(idp = %idp.id, "DANGER: dangerous_allow_sha1 is on: RSA-SHA1 signatures are accepted from this IdP");
                }
                if s.allow_unsolicited {
                    tracing::warn!(idp = %idp.id, "DANGER: allow_unsolicited is on: IdP-initiated responses are accepted");
                }
                let p = Arc::new(p);
                p.spawn_refresh();
                providers.insert(idp.id.to_string(), p);
            }
        }
        let metadata = metadata_xml(spc, &keys)?;
        Ok(Some(SamlState {
            providers,
            metadata,
            one_time,
            secure_cookie: !config.allow_insecure_http,
        }))
    }
}

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

fn pending_key(k: &str) -> String {
    format!("saml-pending:{k}")
}

/// Starts a SAML sign-in: stores the pending request, sets the binding cookie, redirects.
pub async fn begin(
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
    let key = random_token();
    let value = serde_json::to_string(&pending).map_err(|_| AppError::session_store(rid))?;
    let stored = saml
        .one_time
        .put_nx(&pending_key(&key), &value, now + PENDING_TTL, now)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    if !stored {
        return Err(AppError::session_store(rid));
    }
    let secure = if saml.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{PENDING_COOKIE}={key}; Path=/saml/acs; HttpOnly; SameSite=None; Max-Age={PENDING_TTL}{secure}"
    );
    let mut resp = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(no_store(resp))
}

#[derive(Debug, Deserialize)]
pub struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn clear_pending_cookie(resp: &mut Response, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let c =
        format!("{PENDING_COOKIE}=; Path=/saml/acs; HttpOnly; SameSite=None; Max-Age=0{secure}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
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
        Some(k) if !k.is_empty() => {
            let raw = saml
                .one_time
                .take(&pending_key(k), now)
                .await
                .map_err(|_| AppError::session_store(rid))?;
            raw.and_then(|r| serde_json::from_str(&r).ok())
        }
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
    // SAML profiles 4.1.4.5: "the service provider MUST ensure that bearer assertions are not
    // replayed, by maintaining the set of used ID values for the length of time for which the
    // assertion would be considered valid based on the NotOnOrAfter attribute".
    let replay_key = format!("{idp_id}:{}", verified.assertion_id);
    let first = saml
        .one_time
        .claim(&replay_key, verified.replay_until, now)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    if !first {
        let e = SamlError::Replay;
        deny(Some(&idp_id), e.reason(), e.to_string());
        return Err(refused(rid, Some(&e)));
    }
    let Some(idp_cfg) = state.config.idp(&idp_id) else {
        return Err(AppError::not_found("There is no such sign-in method.", rid));
    };
    let identity = map_identity(&verified.claims, &idp_cfg.claims, now);
    super::login::establish(state, session, rid, identity, now, "SAML").await?;
    let slo = SamlSessionInfo {
        idp: idp_id.clone(),
        name_id: verified.name_id.clone(),
        name_id_format: verified.name_id_format.clone(),
        session_index: verified.session_index.clone(),
    };
    session
        .insert(SAML_SESSION_KEY, &slo)
        .await
        .map_err(|_| AppError::session_store(rid))?;
    // 303: the browser follows with a GET, which carries the (Lax) session cookie just set.
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, return_to.as_str().to_owned())],
    )
        .into_response())
}

/// What single logout needs to name the IdP session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SamlSessionInfo {
    pub idp: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
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

fn logout_key_index(idp: &str, index: &str) -> String {
    format!("saml-logout:{idp}:sidx:{index}")
}

fn logout_key_name_id(idp: &str, name_id: &str) -> String {
    format!("saml-logout:{idp}:nameid:{name_id}")
}

/// Whether the IdP has ended this (SAML) session with a LogoutRequest since it signed in: an IdP
/// logout arrives in whichever browser the IdP chooses (or none), so it is recorded in the shared
/// store by SessionIndex or NameID and every replica checks it on each request.
pub async fn ended_by_idp(
    state: &AppState,
    session: &Session,
    signed_in_at: crate::clock::UnixTime,
) -> Result<bool, String> {
    let Some(saml) = &state.saml else {
        return Ok(false);
    };
    let info: Option<SamlSessionInfo> = session
        .get(SAML_SESSION_KEY)
        .await
        .map_err(|e| e.to_string())?;
    let Some(info) = info else {
        return Ok(false);
    };
    let now = state.clock.now();
    if let Some(idx) = &info.session_index
        && saml
            .one_time
            .get(&logout_key_index(&info.idp, idx), now)
            .await?
            .is_some()
    {
        return Ok(true);
    }
    let by_name = saml
        .one_time
        .get(&logout_key_name_id(&info.idp, &info.name_id), now)
        .await?;
    Ok(by_name
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|at| at >= signed_in_at))
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

fn logout_sent_key(k: &str) -> String {
    format!("saml-logout-sent:{k}")
}

/// A LogoutRequest sent from a browser, kept server-side under the key in [`LOGOUT_COOKIE`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SentLogout {
    idp: String,
    request_id: String,
}

/// Remembers the LogoutRequest `request_id` just sent to `idp` and binds it to this browser
/// (the cookie goes on `resp`). Best effort: the local session has already ended, so a store
/// failure only means the IdP's answer will not be confirmed (the person is told so).
pub async fn remember_logout_request(
    state: &AppState,
    idp: &str,
    request_id: &str,
    resp: &mut Response,
) {
    let Some(saml) = &state.saml else { return };
    let now = state.clock.now();
    let key = random_token();
    let sent = SentLogout {
        idp: idp.to_owned(),
        request_id: request_id.to_owned(),
    };
    let Ok(value) = serde_json::to_string(&sent) else {
        return;
    };
    match saml
        .one_time
        .put_nx(&logout_sent_key(&key), &value, now + PENDING_TTL, now)
        .await
    {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!(
                idp,
                "cannot remember the SAML LogoutRequest; its answer will not be confirmed"
            );
            return;
        }
    }
    let secure = if saml.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{LOGOUT_COOKIE}={key}; Path=/saml/slo; HttpOnly; SameSite=None; Max-Age={PENDING_TTL}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The LogoutRequest this browser sent, if any. Read, not taken: an IdP that answers twice (or
/// a reload) sees the same outcome; the record expires with [`PENDING_TTL`].
async fn sent_logout(state: &AppState, headers: &HeaderMap) -> Option<SentLogout> {
    let saml = state.saml.as_ref()?;
    let key = cookie_value(headers, LOGOUT_COOKIE).filter(|k| !k.is_empty())?;
    let raw = saml
        .one_time
        .get(&logout_sent_key(key), state.clock.now())
        .await
        .ok()
        .flatten()?;
    serde_json::from_str(&raw).ok()
}

fn clear_logout_cookie(resp: &mut Response, state: &AppState) {
    let secure = if state.saml.as_ref().is_some_and(|s| s.secure_cookie) {
        "; Secure"
    } else {
        ""
    };
    let c = format!("{LOGOUT_COOKIE}=; Path=/saml/slo; HttpOnly; SameSite=None; Max-Age=0{secure}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
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
        clear_logout_cookie(&mut resp, state);
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
        let signed_in = super::auth::read_signed_in(session)
            .await
            .map_err(|_| AppError::session_store(rid))?
            .is_some();
        if sent_here || !signed_in {
            return Ok(super::login::signed_out_page(Some(rid)));
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
    let sent = if is_response {
        sent_logout(state, headers).await
    } else {
        None
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
                .filter(|s| s.idp == idp_id)
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
            Ok((
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/signed-out".to_owned())],
            )
                .into_response())
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
            // Sessions of this NameID in other browsers are found through the shared store (by
            // SessionIndex when the IdP names one, else every session of the NameID signed in
            // until now) and end at their next request, on any replica.
            let until = now + state.config.session.absolute_timeout.as_secs() as i64;
            if req.session_indexes.is_empty() {
                saml.one_time
                    .set(
                        &logout_key_name_id(&idp_id, &req.name_id),
                        &now.to_string(),
                        until,
                        now,
                    )
                    .await
                    .map_err(|_| AppError::session_store(rid))?;
            }
            for idx in &req.session_indexes {
                saml.one_time
                    .set(&logout_key_index(&idp_id, idx), "1", until, now)
                    .await
                    .map_err(|_| AppError::session_store(rid))?;
            }
            // This browser's session, when its cookie came along (Redirect binding; a cross-site
            // POST carries no SameSite=Lax cookie), ends right away.
            let here: Option<SamlSessionInfo> = session.get(SAML_SESSION_KEY).await.ok().flatten();
            if here.is_some_and(|h| h.idp == idp_id && h.name_id == req.name_id) {
                session
                    .flush()
                    .await
                    .map_err(|_| AppError::session_store(rid))?;
            }
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

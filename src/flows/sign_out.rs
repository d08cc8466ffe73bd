//! Signing out, the three ways it exists:
//!
//! - local (`POST /logout`, with the session's CSRF token): the session ends here, audited;
//! - then, for an OIDC sign-in, RP-initiated logout at the IdP's end-session endpoint (advertised,
//!   or `end_session_url`) with `id_token_hint`, `post_logout_redirect_uri` and `state`, which
//!   sends the browser back to `/signed-out?state=...`;
//! - or, for a SAML sign-in, a signed LogoutRequest to the IdP, remembered so that the IdP's
//!   LogoutResponse is accepted only as the answer to it (`web::saml`, `/saml/slo`).
//!
//! Every SAML message arriving at `/saml/slo` is answered by [`idp_message`]: the IdP's
//! LogoutResponse to our request (confirmed only as the answer to the request this browser
//! sent), or the IdP's own LogoutRequest (acted on once).
//!
//! Logouts the IdP starts (OIDC back-channel, SAML LogoutRequest) end the sessions they name on
//! every replica at once through the session index (`flows::idp_logout`). A SAML LogoutRequest
//! is also written down in the shared one-time store by SessionIndex (or, without one, by NameID
//! with its time), which [`ended_by_idp`] checks when a SAML session loads: that covers sessions
//! signed in before the index existed.
//!
//! A sign-out also ends the BigCommerce storefront sessions this session opened: the signed-out
//! page loads each store's logout URL ([`signed_out_stores`]).

use tower_sessions::Session;

use super::Gateway;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::federation::saml::slo::{self, LogoutRequestIn};
use crate::federation::saml::{SamlError, SamlState};
use crate::identity::IdpId;
use crate::session::browser::{
    OIDC_SESSION_KEY, OidcSessionInfo, PENDING_TTL, SAML_SESSION_KEY, SamlSessionInfo,
    SignedInState, read_signed_in,
};
use crate::session::index::IndexKey;

/// Where a sign-out leaves the browser.
#[derive(Debug)]
pub enum SignedOut {
    /// To `target`: the IdP's end-session endpoint (OIDC), or `/signed-out`.
    To { target: String },
    /// To the SAML IdP with a LogoutRequest, bound to this browser by `binding` (the key of the
    /// remembered request; `None` when it could not be remembered, so the answer will show as
    /// unconfirmed).
    SamlLogout {
        url: String,
        binding: Option<String>,
    },
}

/// Why nothing was signed out.
#[derive(Debug)]
pub enum SignOutError {
    /// The form did not carry this session's CSRF token: the request did not come from our page.
    NotFromOurPage,
    SessionStore,
    /// A SAML logout message arrived, but `[saml]` is not configured.
    SamlNotConfigured,
    /// The IdP's logout message did not pass the checks (or was replayed): nothing changed.
    SloRefused(SamlError),
    /// The IdP's LogoutRequest was recorded, but no LogoutResponse could be made for it.
    SloCannotAnswer,
}

/// How an IdP's message at `/saml/slo` was answered.
#[derive(Debug)]
pub enum SloAnswered {
    /// The IdP confirmed the LogoutRequest this browser sent: on to `/signed-out` (with the key
    /// of the storefronts to sign out of, when the sign-out remembered them).
    Confirmed { signed_out: Option<String> },
    /// A LogoutResponse that could not be confirmed, in a browser that sent the request or holds
    /// no sign-in: the signed-out page, noting the IdP's sign-out is unconfirmed.
    Unconfirmed,
    /// The IdP's LogoutRequest was recorded: back to the IdP with our LogoutResponse.
    Respond { url: String },
}

/// `POST /logout` for the browser signed in as `signed_in` (`None`: nothing to end).
pub async fn sign_out(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    signed_in: Option<std::sync::Arc<SignedInState>>,
    csrf: Option<&str>,
) -> Result<SignedOut, SignOutError> {
    let now = gw.now();
    let Some(signed_in) = signed_in else {
        return Ok(SignedOut::To {
            target: "/signed-out".into(),
        });
    };
    if !csrf.is_some_and(|t| crate::secret::ct_eq(t, &signed_in.csrf)) {
        return Err(SignOutError::NotFromOurPage);
    }

    // 1. The local session ends, whatever the IdP does next.
    let saml_info: Option<SamlSessionInfo> = session.get(SAML_SESSION_KEY).await.ok().flatten();
    let oidc_info: Option<OidcSessionInfo> = session.get(OIDC_SESSION_KEY).await.ok().flatten();
    session
        .flush()
        .await
        .map_err(|_| SignOutError::SessionStore)?;
    let stores = storefront_logouts(gw, &signed_in);
    let mut ev =
        AuditEvent::new(now, rid, EventKind::SignOut, Outcome::Allow).who(&signed_in.identity);
    if !stores.is_empty() {
        ev.detail = Some(format!(
            "storefront sign-out: {}",
            stores
                .iter()
                .map(|s| s.store.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    gw.audit.record(ev);

    // 2. What the signed-out page must do (the storefronts this session opened), under a key
    //    the browser brings back to /signed-out (in `state` through the IdP, RP-Initiated
    //    Logout 1.0 section 3). Best effort: without it the page names no store.
    let done = remember_signed_out(gw, &stores, now).await;
    let signed_out_page = match &done {
        Some(k) => format!("/signed-out?state={}", crate::redirect::urlencode(k)),
        None => "/signed-out".to_owned(),
    };

    // 3. SAML: tell the IdP with a signed LogoutRequest (its answer comes back to /saml/slo and
    //    ends at /signed-out).
    if let Some(info) = saml_info
        && let Some(saml) = gw.saml
        && let Some(p) = saml.providers.get(info.idp.as_str())
    {
        let sent = p.logout_request_url(
            &info.name_id,
            info.name_id_format.as_deref(),
            info.session_index.as_deref(),
            now,
        );
        return Ok(match sent {
            Ok(Some(req)) => {
                // Bound to this browser: the IdP's LogoutResponse must answer this very request.
                let binding =
                    remember_logout_request(saml, &info.idp, &req.id, done.as_deref(), now).await;
                SignedOut::SamlLogout {
                    url: req.url,
                    binding,
                }
            }
            Ok(None) => SignedOut::To {
                target: signed_out_page,
            },
            Err(e) => {
                tracing::warn!(idp = %info.idp, error = %e, "cannot build the SAML LogoutRequest");
                SignedOut::To {
                    target: signed_out_page,
                }
            }
        });
    }

    // 4. OIDC: RP-initiated logout (OIDC RP-Initiated Logout 1.0 section 2), back to /signed-out.
    let idp = signed_in.identity.idp.as_str();
    let Some(p) = gw.providers.get(idp) else {
        return Ok(SignedOut::To {
            target: signed_out_page,
        });
    };
    let Some(end) = p.end_session_url().await else {
        return Ok(SignedOut::To {
            target: signed_out_page,
        });
    };
    let hint = oidc_info
        .filter(|i| i.idp.as_str() == idp)
        .map(|i| i.id_token);
    Ok(SignedOut::To {
        target: end_session_target(
            end,
            p.client_id(),
            hint.as_deref(),
            &gw.config.logout_uri(),
            done.as_deref(),
        ),
    })
}

/// The end-session URL: `id_token_hint` (which session, and proof the request comes from this
/// client), `client_id`, `post_logout_redirect_uri` (registered with the IdP, exact match) and
/// `state`, which the IdP hands back to it.
pub fn end_session_target(
    mut end: url::Url,
    client_id: &str,
    id_token_hint: Option<&str>,
    back: &str,
    state: Option<&str>,
) -> String {
    {
        let mut q = end.query_pairs_mut();
        if let Some(hint) = id_token_hint {
            q.append_pair("id_token_hint", hint);
        }
        q.append_pair("client_id", client_id)
            .append_pair("post_logout_redirect_uri", back);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
    }
    end.to_string()
}

/// One storefront session the signed-out page ends: the store's name and its logout URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorefrontLogout {
    pub store: String,
    pub name: String,
    pub logout_url: String,
}

/// The storefronts this session opened that are still configured, with their logout URLs
/// (`{storefront}/login.php?action=logout`, BigCommerce's documented logout path).
fn storefront_logouts(gw: &Gateway<'_>, signed_in: &SignedInState) -> Vec<StorefrontLogout> {
    let snap = gw.policy();
    signed_in
        .launched
        .iter()
        .filter_map(|id| snap.store(&crate::identity::StoreId::new(id)))
        .map(|s| StorefrontLogout {
            store: s.id.to_string(),
            name: s.name.clone(),
            logout_url: storefront_logout_url(&s.url),
        })
        .collect()
}

pub fn storefront_logout_url(storefront: &url::Url) -> String {
    format!(
        "{}/login.php?action=logout",
        storefront.as_str().trim_end_matches('/')
    )
}

fn signed_out_key(k: &str) -> String {
    format!("signed-out:{k}")
}

/// Keeps what the signed-out page needs under a fresh random key, for [`PENDING_TTL`].
async fn remember_signed_out(
    gw: &Gateway<'_>,
    stores: &[StorefrontLogout],
    now: UnixTime,
) -> Option<String> {
    let key = crate::secret::random_token();
    let value = serde_json::to_string(stores).ok()?;
    match gw
        .one_time
        .put_nx(&signed_out_key(&key), &value, now + PENDING_TTL, now)
        .await
    {
        Ok(true) => Some(key),
        Ok(false) | Err(_) => {
            tracing::warn!("cannot remember the storefronts to sign out of");
            None
        }
    }
}

/// The storefronts the sign-out under `state` must end (read, not taken: a reload of the
/// signed-out page signs out again). Unknown or expired: none.
pub async fn signed_out_stores(gw: &Gateway<'_>, state: &str) -> Vec<StorefrontLogout> {
    let raw = gw
        .one_time
        .get(&signed_out_key(state), gw.now())
        .await
        .ok()
        .flatten();
    raw.and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default()
}

/// A LogoutRequest sent from a browser, kept server-side under the key in its binding cookie.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SentLogout {
    pub idp: IdpId,
    pub request_id: String,
    /// The key of what the signed-out page must do (storefront sign-outs), if any.
    #[serde(default)]
    pub signed_out: Option<String>,
}

fn logout_sent_key(k: &str) -> String {
    format!("saml-logout-sent:{k}")
}

/// Remembers the LogoutRequest `request_id` just sent to `idp`; the returned key binds it to this
/// browser. Best effort: the local session has already ended, so a store failure only means the
/// IdP's answer will not be confirmed (the person is told so).
async fn remember_logout_request(
    saml: &SamlState,
    idp: &IdpId,
    request_id: &str,
    signed_out: Option<&str>,
    now: UnixTime,
) -> Option<String> {
    let key = crate::secret::random_token();
    let sent = SentLogout {
        idp: idp.clone(),
        request_id: request_id.to_owned(),
        signed_out: signed_out.map(str::to_owned),
    };
    let value = serde_json::to_string(&sent).ok()?;
    match saml
        .one_time
        .put_nx(&logout_sent_key(&key), &value, now + PENDING_TTL, now)
        .await
    {
        Ok(true) => Some(key),
        Ok(false) | Err(_) => {
            tracing::warn!(
                idp = %idp,
                "cannot remember the SAML LogoutRequest; its answer will not be confirmed"
            );
            None
        }
    }
}

/// The LogoutRequest the browser holding `binding` sent, if any. Read, not taken: an IdP that
/// answers twice (or a reload) sees the same outcome; the record expires with [`PENDING_TTL`].
pub async fn sent_logout(gw: &Gateway<'_>, binding: &str) -> Option<SentLogout> {
    let saml = gw.saml?;
    let raw = saml
        .one_time
        .get(&logout_sent_key(binding), gw.now())
        .await
        .ok()
        .flatten()?;
    serde_json::from_str(&raw).ok()
}

fn logout_key_index(idp: &IdpId, index: &str) -> String {
    format!("saml-logout:{idp}:sidx:{index}")
}

fn logout_key_name_id(idp: &IdpId, name_id: &str) -> String {
    format!("saml-logout:{idp}:nameid:{name_id}")
}

/// Records a verified IdP LogoutRequest: sessions of this NameID in other browsers are found
/// through the shared store (by SessionIndex when the IdP names one, else every session of the
/// NameID signed in until now) and end at their next request, on any replica. This browser's
/// session, when its cookie came along (Redirect binding; a cross-site POST carries no
/// SameSite=Lax cookie), ends right away.
pub async fn record_idp_logout(
    gw: &Gateway<'_>,
    saml: &SamlState,
    session: &Session,
    idp_id: &IdpId,
    req: &LogoutRequestIn,
) -> Result<(), SignOutError> {
    let now = gw.now();
    let until = now + gw.config.session.absolute_timeout.as_secs() as i64;
    if req.session_indexes.is_empty() {
        saml.one_time
            .set(
                &logout_key_name_id(idp_id, &req.name_id),
                &now.to_string(),
                until,
                now,
            )
            .await
            .map_err(|_| SignOutError::SessionStore)?;
    }
    for idx in &req.session_indexes {
        saml.one_time
            .set(&logout_key_index(idp_id, idx), "1", until, now)
            .await
            .map_err(|_| SignOutError::SessionStore)?;
    }
    // Every session the IdP named ends now, on every replica: by SessionIndex when the IdP
    // names one (SAML core 3.7.1: only those sessions), else every session of the NameID.
    let mut keys: Vec<IndexKey> = req
        .session_indexes
        .iter()
        .cloned()
        .map(IndexKey::Sid)
        .collect();
    if keys.is_empty() {
        keys.push(IndexKey::Sub(req.name_id.clone()));
    }
    let ended = super::idp_logout::end_indexed(gw, idp_id, &keys)
        .await
        .map_err(|_| SignOutError::SessionStore)?;
    tracing::info!(idp = %idp_id, ended, "SAML IdP logout: sessions ended");
    let here: Option<SamlSessionInfo> = session.get(SAML_SESSION_KEY).await.ok().flatten();
    if here.is_some_and(|h| &h.idp == idp_id && h.name_id == req.name_id) {
        session
            .flush()
            .await
            .map_err(|_| SignOutError::SessionStore)?;
    }
    Ok(())
}

/// Whether the IdP has ended this (SAML) session with a LogoutRequest since it signed in: an IdP
/// logout arrives in whichever browser the IdP chooses (or none), so it is recorded in the shared
/// store by SessionIndex or NameID and every replica checks it on each request.
/// `info` is what the session recorded of its SAML sign-in (none for an OIDC one).
pub async fn ended_by_idp(
    gw: &Gateway<'_>,
    info: Option<&SamlSessionInfo>,
    signed_in_at: UnixTime,
) -> Result<bool, String> {
    let (Some(saml), Some(info)) = (gw.saml, info) else {
        return Ok(false);
    };
    let now = gw.now();
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

/// `/saml/slo`: an IdP's LogoutResponse or LogoutRequest (either binding). `binding` is the key
/// in this browser's logout cookie, when it came along. Every outcome is audited here.
pub async fn idp_message(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    binding: Option<&str>,
    inbound: slo::Inbound,
) -> Result<SloAnswered, SignOutError> {
    let now = gw.now();
    let is_response = inbound.is_response();
    let sent = match binding.filter(|k| !k.is_empty()) {
        Some(binding) if is_response => sent_logout(gw, binding).await,
        _ => None,
    };
    let audit = |idp: Option<&str>, outcome: Outcome, reason: Option<&str>, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignOut, outcome);
        ev.idp = idp.map(str::to_owned);
        ev.reason = reason.map(str::to_owned);
        ev.detail = Some(detail);
        gw.audit.record(ev);
    };
    let Some(saml) = gw.saml else {
        return Err(SignOutError::SamlNotConfigured);
    };
    // The (unverified) Issuer only picks whose keys verify the message; what the prescan refuses
    // ends here, with its reason.
    let issuer = match slo::unverified_issuer(&inbound) {
        Ok(issuer) => issuer,
        Err(e) => {
            audit(None, Outcome::Deny, Some(e.reason()), e.to_string());
            return Err(SignOutError::SloRefused(e));
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
        return slo_refusal(session, is_response, sent.is_some(), e).await;
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
            return slo_refusal(session, is_response, sent.is_some(), e).await;
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
                return slo_refusal(session, true, sent.is_some(), e).await;
            }
            audit(
                Some(&idp_id),
                Outcome::Allow,
                None,
                "SAML LogoutResponse: Success, answering this browser's LogoutRequest".to_owned(),
            );
            Ok(SloAnswered::Confirmed {
                signed_out: sent.and_then(|s| s.signed_out),
            })
        }
        slo::SloMessage::Request(req) => {
            let skew = gw
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
                .map_err(|_| SignOutError::SessionStore)?;
            if !first {
                let e = SamlError::Replay;
                audit(
                    Some(&idp_id),
                    Outcome::Deny,
                    Some(e.reason()),
                    e.to_string(),
                );
                return Err(SignOutError::SloRefused(e));
            }
            // Sessions of this NameID end at their next request, on any replica; this
            // browser's, when its cookie came along, right away.
            record_idp_logout(gw, saml, session, provider.idp_id(), &req)
                .await
                .map_err(|_| SignOutError::SessionStore)?;
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
                    SignOutError::SloCannotAnswer
                })?;
            Ok(SloAnswered::Respond { url })
        }
    }
}

/// A refused SLO message. A LogoutResponse answers a sign-out whose local part is already done:
/// when this browser sent that LogoutRequest, or holds no sign-in anyway, the person sees the
/// signed-out page with a note that the IdP's sign-out could not be confirmed (an IdP that
/// answers unsigned, as SimpleSAMLphp does by default, used to leave them on a 400 page). A
/// refused LogoutRequest, or a stray LogoutResponse in a signed-in browser, changes nothing.
async fn slo_refusal(
    session: &Session,
    is_response: bool,
    sent_here: bool,
    e: SamlError,
) -> Result<SloAnswered, SignOutError> {
    if is_response {
        let signed_in = read_signed_in(session)
            .await
            .map_err(|_| SignOutError::SessionStore)?
            .is_some();
        if sent_here || !signed_in {
            return Ok(SloAnswered::Unconfirmed);
        }
    }
    Err(SignOutError::SloRefused(e))
}

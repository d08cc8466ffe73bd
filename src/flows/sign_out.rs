//! Signing out, the three ways it exists:
//!
//! - local (`POST /logout`, with the session's CSRF token): the session ends here, audited;
//! - then, for an OIDC sign-in, RP-initiated logout at the IdP's `end_session_endpoint` (which
//!   sends the browser back to `/signed-out`);
//! - or, for a SAML sign-in, a signed LogoutRequest to the IdP, remembered so that the IdP's
//!   LogoutResponse is accepted only as the answer to it (`web::saml`, `/saml/slo`).
//!
//! SAML single logout started by the IdP arrives at `/saml/slo`: [`record_idp_logout`] writes it
//! down in the shared one-time store by SessionIndex (or, without one, by NameID with its time),
//! and every replica checks [`ended_by_idp`] when it loads a SAML session. That is how sessions in
//! other browsers end: the gateway keeps no NameID-to-session index, so they end at their next
//! request rather than being deleted from the session store at once.

use tower_sessions::Session;

use super::Gateway;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::federation::saml::SamlState;
use crate::federation::saml::slo::LogoutRequestIn;
use crate::identity::IdpId;
use crate::session::browser::{PENDING_TTL, SAML_SESSION_KEY, SamlSessionInfo, SignedInState};

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
}

/// `POST /logout` for the browser signed in as `signed_in` (`None`: nothing to end).
pub async fn sign_out(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    signed_in: Option<SignedInState>,
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
    session
        .flush()
        .await
        .map_err(|_| SignOutError::SessionStore)?;
    gw.audit.record(
        AuditEvent::new(now, rid, EventKind::SignOut, Outcome::Allow).who(&signed_in.identity),
    );

    // 2. SAML: tell the IdP with a signed LogoutRequest (its answer comes back to /saml/slo and
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
                let binding = remember_logout_request(saml, &info.idp, &req.id, now).await;
                SignedOut::SamlLogout {
                    url: req.url,
                    binding,
                }
            }
            Ok(None) => SignedOut::To {
                target: "/signed-out".into(),
            },
            Err(e) => {
                tracing::warn!(idp = %info.idp, error = %e, "cannot build the SAML LogoutRequest");
                SignedOut::To {
                    target: "/signed-out".into(),
                }
            }
        });
    }

    // 3. OIDC: RP-initiated logout, back to /signed-out.
    let back = gw.config.logout_uri();
    let target = match gw.providers.get(signed_in.identity.idp.as_str()) {
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
    Ok(SignedOut::To { target })
}

/// A LogoutRequest sent from a browser, kept server-side under the key in its binding cookie.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SentLogout {
    pub idp: IdpId,
    pub request_id: String,
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
    now: UnixTime,
) -> Option<String> {
    let key = crate::secret::random_token();
    let sent = SentLogout {
        idp: idp.clone(),
        request_id: request_id.to_owned(),
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
pub async fn ended_by_idp(
    gw: &Gateway<'_>,
    session: &Session,
    signed_in_at: UnixTime,
) -> Result<bool, String> {
    let Some(saml) = gw.saml else {
        return Ok(false);
    };
    let info: Option<SamlSessionInfo> = session
        .get(SAML_SESSION_KEY)
        .await
        .map_err(|e| e.to_string())?;
    let Some(info) = info else {
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

//! Logouts the identity provider starts, ending sessions in browsers that are not here:
//!
//! - OIDC Back-Channel Logout 1.0 (`POST /oidc/{idp}/backchannel-logout`): the IdP posts a
//!   signed `logout_token` naming a `sid` and/or `sub`; once it passes every check
//!   (`federation::logout_token`, signature with the IdP's keys) and its `jti` was never seen on
//!   any replica, every session that IdP session (or person) opened is deleted from the shared
//!   session store at once;
//! - SAML single logout started by the IdP (`web::saml`, `/saml/slo`) ends sessions through the
//!   same session index, by SessionIndex or NameID ([`end_indexed`]).
//!
//! Every refusal is audited with its reason code; nothing is ended by a refused token.

use super::Gateway;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::federation::logout_token::{LogoutOrder, LogoutTokenError};
use crate::identity::IdpId;
use crate::session::index::{IndexKey, end_sessions};

/// How old a logout token may be (its `iat`), beyond the IdP's clock skew. The OP sends it
/// when the person signs out; a token held back longer is refused rather than remembered for long.
pub const LOGOUT_TOKEN_MAX_AGE: i64 = 300;

/// A logout the IdP asked for, done.
#[derive(Debug)]
pub struct LoggedOut {
    /// Session records deleted.
    pub sessions: usize,
}

/// Why a back-channel logout was not done.
#[derive(Debug)]
pub enum BackChannelRefused {
    /// No OIDC IdP with this id.
    UnknownIdp,
    /// The logout token failed a check (audited with its reason).
    Token(LogoutTokenError),
    /// The session store could not record the jti or end the sessions (audited as an error).
    SessionStore,
}

impl BackChannelRefused {
    pub fn reason(&self) -> &'static str {
        match self {
            BackChannelRefused::UnknownIdp => "unknown_idp",
            BackChannelRefused::Token(e) => e.reason(),
            BackChannelRefused::SessionStore => "session_store_unavailable",
        }
    }
}

/// `POST /oidc/{idp}/backchannel-logout` with form field `logout_token` = `raw`.
pub async fn back_channel(
    gw: &Gateway<'_>,
    rid: &str,
    idp: &str,
    raw: Option<&str>,
) -> Result<LoggedOut, BackChannelRefused> {
    let now = gw.now();
    let refuse = |outcome: Outcome, reason: &str, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignOut, outcome);
        ev.idp = Some(idp.to_owned());
        ev.actor = Some("idp:backchannel".into());
        ev.reason = Some(reason.to_owned());
        ev.detail = Some(detail);
        gw.audit.record(ev);
    };
    let Some(provider) = gw.providers.get(idp) else {
        let r = BackChannelRefused::UnknownIdp;
        refuse(Outcome::Deny, r.reason(), "no OIDC IdP with this id".into());
        return Err(r);
    };
    let raw = raw.unwrap_or_default();
    // Section 2.6 steps 1-7 (signature, iss, aud, iat, exp, sid/sub, events, no nonce).
    let order = match provider
        .verify_logout_token(raw, LOGOUT_TOKEN_MAX_AGE)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let outcome = if matches!(e, LogoutTokenError::KeysUnavailable) {
                Outcome::Error
            } else {
                Outcome::Deny
            };
            refuse(outcome, e.reason(), e.to_string());
            return Err(BackChannelRefused::Token(e));
        }
    };
    // Step 8: "the RP MAY verify that the jti value was not already used" — here it must be: a
    // captured token replayed later would end the person's next sessions. Shared by every
    // replica (Redis when configured), remembered until the token's iat window closes.
    let idp_id = provider.id().clone();
    let first = gw
        .one_time
        .claim(
            &format!("bcl:{idp_id}:{}", order.jti),
            order.remember_until,
            now,
        )
        .await;
    match first {
        Ok(true) => {}
        Ok(false) => {
            let e = LogoutTokenError::Replay;
            refuse(Outcome::Deny, e.reason(), e.to_string());
            return Err(BackChannelRefused::Token(e));
        }
        Err(detail) => {
            let r = BackChannelRefused::SessionStore;
            refuse(Outcome::Error, r.reason(), detail);
            return Err(r);
        }
    }
    let ended = match end_ordered(gw, &idp_id, &order).await {
        Ok(n) => n,
        Err(detail) => {
            let r = BackChannelRefused::SessionStore;
            refuse(Outcome::Error, r.reason(), detail);
            return Err(r);
        }
    };
    let mut ev = AuditEvent::new(now, rid, EventKind::SignOut, Outcome::Allow);
    ev.idp = Some(idp_id.to_string());
    ev.subject = order.sub.clone();
    ev.actor = Some("idp:backchannel".into());
    // The IdP session (or person) by its value, so an administrator can find the same logout
    // in the IdP's own log. Neither is a credential: a logout needs a token the IdP signed.
    ev.detail = Some(match (&order.sid, &order.sub) {
        (Some(sid), _) => {
            format!("back-channel logout of IdP session sid {sid:?}: {ended} session(s) ended")
        }
        (None, sub) => format!(
            "back-channel logout of every session of sub {:?}: {ended} session(s) ended",
            sub.as_deref().unwrap_or_default()
        ),
    });
    gw.audit.record(ev);
    Ok(LoggedOut { sessions: ended })
}

/// Section 2.7: with a `sid`, the sessions of that IdP session; with only a `sub`, every
/// session of that person at this IdP.
async fn end_ordered(gw: &Gateway<'_>, idp: &IdpId, order: &LogoutOrder) -> Result<usize, String> {
    let key = match (&order.sid, &order.sub) {
        (Some(sid), _) => IndexKey::Sid(sid.clone()),
        (None, Some(sub)) => IndexKey::Sub(sub.clone()),
        (None, None) => return Ok(0),
    };
    end_indexed(gw, idp, &[key]).await
}

/// Deletes every session `idp` opened under any of `keys`, on every replica (the records are
/// in the shared store); returns how many were ended.
pub async fn end_indexed(
    gw: &Gateway<'_>,
    idp: &IdpId,
    keys: &[IndexKey],
) -> Result<usize, String> {
    let now = gw.now();
    let mut ids = Vec::new();
    for key in keys {
        ids.extend(gw.session_index.take(idp, key, now).await?);
    }
    ids.sort();
    ids.dedup();
    end_sessions(gw.sessions, &ids).await
}

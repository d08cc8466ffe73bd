//! The end every protocol's sign-in shares, once the protocol adapter has verified what the IdP
//! sent (`federation::oidc` for the OIDC callback, run by [`oidc_callback`] here;
//! `federation::saml` for the ACS, run by [`saml_response`] here):
//!
//! replay check (SAML) -> identity -> leaver check -> a fresh session -> audit.
//!
//! An OIDC callback ([`oidc_callback`]) first takes the sign-in this browser started (its
//! `state`, kept in the browser's session by `web::login`, used once and for at most
//! [`PENDING_TTL`]), then `federation::oidc` verifies the IdP's answer.
//!
//! A SAML response ([`saml_response`]) first finds the request it answers: the one pending in
//! this browser (its binding cookie keys a server-side record, taken once, whose RelayState must
//! come back unchanged), or, when none is, an IdP that allows unsolicited responses chosen by
//! the unverified Issuer. Then `federation::saml` verifies it with that IdP's keys (fetching the
//! metadata once when the signing key is unknown: rollover), checks the step-up class asked for,
//! and [`finish`] ends it.
//!
//! The session starts empty, with a new id (fixation defence): on a shared PC the previous
//! person's state must not survive into the next person's session (docs/security.md, "Identity
//! binding"). A SAML session's logout data left behind made B's sign-out send A's LogoutRequest
//! (never ending B's session at B's IdP), and let an IdP logout for A end B's session. Pending
//! logins of other tabs go too. The one thing kept is a step-up attempt of the *same* person
//! (same IdP and subject), which stops a launch from sending them round to the IdP in a loop
//! (`flows::launch`).

use std::sync::Arc;

use tower_sessions::Session;

use super::Gateway;
use super::leaver::{self, NotCleared};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::federation::VerifiedClaims;
use crate::federation::claims::map_identity;
use crate::federation::oidc::{CallbackParams, OidcError, PendingLogin};
use crate::federation::saml::{PendingSaml, SamlError, VerifiedAssertion, prescan};
use crate::identity::{Identity, IdpId};
use crate::redirect::LocalPath;
use crate::session::browser::{
    OIDC_SESSION_KEY, OidcSessionInfo, PENDING_KEY, PENDING_TTL, SAML_SESSION_KEY, STEP_UP_KEY,
    SamlSessionInfo, SignedInState, StepUpAttempt, read_signed_in, write_signed_in,
};
use crate::session::index::{IndexKey, with_index_on_create};

/// What the protocol adapter verified.
pub enum Proof {
    Oidc(VerifiedClaims),
    Saml(Box<VerifiedAssertion>),
}

impl Proof {
    fn protocol(&self) -> &'static str {
        match self {
            Proof::Oidc(_) => "OIDC",
            Proof::Saml(_) => "SAML",
        }
    }

    fn claims(&self) -> &VerifiedClaims {
        match self {
            Proof::Oidc(c) => c,
            Proof::Saml(a) => &a.claims,
        }
    }
}

/// A person is signed in.
#[derive(Debug)]
pub struct SignedIn {
    /// `"OIDC"` or `"SAML"`, as the audit event says.
    pub protocol: &'static str,
    /// How many stores the policy grants them now (audit detail).
    pub grants: usize,
}

/// Why a verified sign-in still gets no session. Every variant except the store failures was
/// audited by the flow.
#[derive(Debug)]
pub enum SignInError {
    /// SAML profiles 4.1.4.5: this assertion was already used.
    Replay,
    /// The IdP is no longer configured.
    UnknownIdp,
    /// The SCIM store could not say whether this person left (fail closed).
    LeaverUnknown,
    /// SCIM deprovisioned this person.
    Leaver,
    SessionStore,
    /// A SAML response arrived, but `[saml]` is not configured.
    SamlNotConfigured,
    /// The ACS POST carried no SAMLResponse.
    SamlResponseMissing,
    /// No sign-in is pending in this browser (missing, expired or already used), and no IdP
    /// accepts unsolicited responses from this issuer.
    SamlNotPending,
    /// The response did not pass the checks: `reason` as audited, `error` what the protocol
    /// check said (none for a wrong RelayState or an IdP no longer configured).
    SamlRefused {
        reason: &'static str,
        error: Option<SamlError>,
    },
    /// The OIDC callback carried no `state`.
    OidcStateMissing,
    /// The callback's `state` was not issued to this browser, or was already used.
    OidcStateUnknown,
    /// The sign-in took longer than [`PENDING_TTL`].
    OidcStateExpired,
    /// The IdP's answer did not pass the checks, or the IdP could not be reached.
    OidcRefused(OidcError),
}

impl SignInError {
    /// The audit reason, where the flow recorded one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            SignInError::Replay => Some(SamlError::Replay.reason()),
            SignInError::LeaverUnknown => Some("scim_store_unavailable"),
            SignInError::Leaver => Some("deprovisioned"),
            SignInError::SamlResponseMissing => Some("saml_response_missing"),
            SignInError::SamlNotPending => Some("saml_unsolicited"),
            SignInError::SamlRefused { reason, .. } => Some(reason),
            SignInError::OidcStateMissing => Some("state_missing"),
            SignInError::OidcStateUnknown => Some("state_unknown"),
            SignInError::OidcStateExpired => Some("state_expired"),
            SignInError::OidcRefused(e) => Some(e.reason()),
            SignInError::UnknownIdp
            | SignInError::SessionStore
            | SignInError::SamlNotConfigured => None,
        }
    }
}

/// Ends a verified sign-in at `idp_id`: on success the browser's session holds the new sign-in.
pub async fn finish(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    idp_id: &IdpId,
    proof: Proof,
) -> Result<SignedIn, SignInError> {
    let now = gw.now();

    // 1. SAML profiles 4.1.4.5: "the service provider MUST ensure that bearer assertions are not
    //    replayed, by maintaining the set of used ID values for the length of time for which the
    //    assertion would be considered valid based on the NotOnOrAfter attribute". (An OIDC code
    //    is single-use at the IdP, and its state was taken from this session.)
    if let Proof::Saml(assertion) = &proof {
        let Some(saml) = gw.saml else {
            return Err(SignInError::UnknownIdp);
        };
        let first = saml
            .one_time
            .claim(
                &format!("{idp_id}:{}", assertion.assertion_id),
                assertion.replay_until,
                now,
            )
            .await
            .map_err(|_| SignInError::SessionStore)?;
        if !first {
            let e = SamlError::Replay;
            let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny);
            ev.idp = Some(idp_id.to_string());
            ev.reason = Some(e.reason().to_owned());
            ev.detail = Some(e.to_string());
            gw.audit.record(ev);
            return Err(SignInError::Replay);
        }
    }

    // 2. The one normalized identity, from verified claims only.
    let Some(idp_cfg) = gw.config.idp(idp_id.as_str()) else {
        return Err(SignInError::UnknownIdp);
    };
    let identity = map_identity(proof.claims(), &idp_cfg.claims, now);

    // 3. A leaver gets no session at all, whatever the IdP says.
    if let Err(not_cleared) = leaver::check(gw.scim, &identity).await {
        let mut ev = match &not_cleared {
            NotCleared::Leaver => {
                let mut ev =
                    AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny).who(&identity);
                ev.rule = Some("deprovisioned".into());
                ev
            }
            NotCleared::Unknown { detail } => {
                let mut ev =
                    AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Error).who(&identity);
                ev.detail = Some(detail.clone());
                ev
            }
        };
        ev.reason = Some(not_cleared.reason().into());
        gw.audit.record(ev);
        return Err(match not_cleared {
            NotCleared::Leaver => SignInError::Leaver,
            NotCleared::Unknown { .. } => SignInError::LeaverUnknown,
        });
    }

    // 4. A fresh session, keeping only the same person's step-up attempt.
    establish(session, &identity).await?;
    let grants = gw.policy().policy.grants(&identity, now).len();
    let protocol = proof.protocol();
    let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Allow).who(&identity);
    ev.detail = Some(format!("{protocol}; {grants} store(s) granted"));
    let signed_in = SignedInState {
        identity,
        csrf: crate::secret::random_token(),
        last_seen: now,
        customers: Default::default(),
        launched: Default::default(),
    };
    write_signed_in(session, &signed_in)
        .await
        .map_err(|_| SignInError::SessionStore)?;

    // 5. Audit; the session remembers what logout needs to name the IdP session, and the
    //    session index learns which IdP session and subject opened it, so that the IdP's own
    //    logout (back-channel, SAML LogoutRequest) ends it on every replica at once.
    gw.audit.record(ev);
    let subject = proof.claims().subject().to_owned();
    let index_keys = match proof {
        Proof::Saml(assertion) => {
            let mut keys = vec![IndexKey::Sub(assertion.name_id.clone())];
            keys.extend(assertion.session_index.clone().map(IndexKey::Sid));
            let slo = SamlSessionInfo {
                idp: idp_id.clone(),
                name_id: assertion.name_id,
                name_id_format: assertion.name_id_format,
                session_index: assertion.session_index,
            };
            session
                .insert(SAML_SESSION_KEY, &slo)
                .await
                .map_err(|_| SignInError::SessionStore)?;
            keys
        }
        Proof::Oidc(claims) => {
            let sid = claims
                .claims()
                .get("sid")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let mut keys = vec![IndexKey::Sub(subject)];
            keys.extend(sid.clone().map(IndexKey::Sid));
            if let Some(id_token) = claims.id_token() {
                let info = OidcSessionInfo {
                    idp: idp_id.clone(),
                    id_token: id_token.expose().to_owned(),
                    sid,
                };
                session
                    .insert(OIDC_SESSION_KEY, &info)
                    .await
                    .map_err(|_| SignInError::SessionStore)?;
            }
            keys
        }
    };
    index_session(gw, session, idp_id, &index_keys).await?;
    Ok(SignedIn { protocol, grants })
}

/// Stores the session now (so it has its id) and records it under `keys` in the session index.
/// Fails closed: a session the IdP's logout could not find must not exist.
async fn index_session(
    gw: &Gateway<'_>,
    session: &Session,
    idp_id: &IdpId,
    keys: &[IndexKey],
) -> Result<(), SignInError> {
    let now = gw.now();
    let until = now + gw.config.session.absolute_timeout.as_secs() as i64;
    // On Redis the store writes the index entries with the record it creates (one round trip);
    // whatever it did not write is added below.
    let on_create = gw.session_index.on_create(idp_id, keys, until, now);
    let saved = match &on_create {
        Some(entries) => with_index_on_create(Arc::clone(entries), session.save()).await,
        None => session.save().await,
    };
    saved.map_err(|_| SignInError::SessionStore)?;
    let Some(id) = session.id() else {
        return Err(SignInError::SessionStore);
    };
    if on_create.is_some_and(|entries| entries.written()) {
        return Ok(());
    }
    if let Err(e) = gw
        .session_index
        .add(idp_id, keys, &id.to_string(), until, now)
        .await
    {
        tracing::warn!(error = %e, "cannot index the new session; sign-in refused");
        // Not left behind unindexed.
        let _ = session.flush().await;
        return Err(SignInError::SessionStore);
    }
    Ok(())
}

/// Empties the session and gives it a new id, carrying over a step-up attempt of the same person.
async fn establish(session: &Session, identity: &Identity) -> Result<(), SignInError> {
    let previous = read_signed_in(session)
        .await
        .map_err(|_| SignInError::SessionStore)?;
    let same_person = previous
        .is_some_and(|p| p.identity.idp == identity.idp && p.identity.subject == identity.subject);
    let step_up: Option<StepUpAttempt> = if same_person {
        session
            .get(STEP_UP_KEY)
            .await
            .map_err(|_| SignInError::SessionStore)?
    } else {
        None
    };
    session.clear().await;
    // A new id against session fixation, for a session the store holds (`read_signed_in` loaded
    // it, so an id here is a stored one). A browser without one gets a fresh id when the session
    // is first saved: cycling would only delete a random id that was never stored (one Redis
    // round trip per sign-in, issue 15).
    if session.id().is_some() {
        session
            .cycle_id()
            .await
            .map_err(|_| SignInError::SessionStore)?;
    }
    if let Some(attempt) = step_up {
        session
            .insert(STEP_UP_KEY, attempt)
            .await
            .map_err(|_| SignInError::SessionStore)?;
    }
    Ok(())
}

/// `GET /oidc/{idp}/callback`: takes the sign-in this browser started at `idp_id` (once), has
/// `federation::oidc` verify the IdP's answer, and signs the person in ([`finish`]); returns where
/// the browser goes next. Every refusal is audited here.
pub async fn oidc_callback(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    idp_id: &str,
    params: &CallbackParams,
) -> Result<LocalPath, SignInError> {
    let now = gw.now();
    let deny = |reason: &str, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny);
        ev.idp = Some(idp_id.to_owned());
        ev.reason = Some(reason.to_owned());
        ev.detail = Some(detail);
        gw.audit.record(ev);
    };
    let Some(provider) = gw.providers.get(idp_id) else {
        deny(
            "unknown_idp",
            "callback for an IdP that is not configured".into(),
        );
        return Err(SignInError::UnknownIdp);
    };
    let Some(got_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        deny("state_missing", "the callback carried no state".into());
        return Err(SignInError::OidcStateMissing);
    };
    // The pending login is looked up in this browser's own session: a state that is unknown here
    // was never issued to this browser, was already used, or belongs to someone else.
    let mut list: Vec<PendingLogin> = session
        .get(PENDING_KEY)
        .await
        .map_err(|_| SignInError::SessionStore)?
        .unwrap_or_default();
    let Some(pos) = list
        .iter()
        .position(|p| p.state == got_state && p.idp.as_str() == idp_id)
    else {
        deny(
            "state_unknown",
            "state not issued to this browser session, or already used".into(),
        );
        return Err(SignInError::OidcStateUnknown);
    };
    let pending = list.remove(pos);
    // One use: forget it before doing anything else.
    session
        .insert(PENDING_KEY, &list)
        .await
        .map_err(|_| SignInError::SessionStore)?;
    if now - pending.created_at >= PENDING_TTL {
        deny(
            "state_expired",
            "the sign-in took longer than 10 minutes".into(),
        );
        return Err(SignInError::OidcStateExpired);
    }

    let return_to = pending.return_to.clone();
    let started = std::time::Instant::now();
    let completed = provider.complete(pending, params).await;
    gw.metrics
        .observe_idp(idp_id, "callback", completed.is_ok(), started);
    let verified = match completed {
        Ok(v) => v,
        Err(e) => {
            // An IdP that cannot be reached is an error of ours to report, not a refusal.
            let unavailable = e.is_unavailable();
            tracing::warn!(idp = idp_id, reason = e.reason(), error = %e, "sign-in refused");
            let outcome = if unavailable {
                Outcome::Error
            } else {
                Outcome::Deny
            };
            let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, outcome);
            ev.idp = Some(idp_id.to_owned());
            ev.reason = Some(e.reason().to_owned());
            ev.detail = Some(e.to_string());
            gw.audit.record(ev);
            return Err(SignInError::OidcRefused(e));
        }
    };
    // The common ending: identity, leaver check, session, audit.
    finish(gw, session, rid, &IdpId::new(idp_id), Proof::Oidc(verified)).await?;
    Ok(return_to)
}

fn pending_key(k: &str) -> String {
    format!("saml-pending:{k}")
}

/// Keeps a SAML request the browser is about to carry to the IdP, until the ACS takes it (once)
/// or [`PENDING_TTL`] passes; the returned key goes in the browser's binding cookie.
pub async fn remember_saml_request(
    gw: &Gateway<'_>,
    pending: &PendingSaml,
) -> Result<String, SignInError> {
    let Some(saml) = gw.saml else {
        return Err(SignInError::UnknownIdp);
    };
    let now = gw.now();
    let key = crate::secret::random_token();
    let value = serde_json::to_string(pending).map_err(|_| SignInError::SessionStore)?;
    let stored = saml
        .one_time
        .put_nx(&pending_key(&key), &value, now + PENDING_TTL, now)
        .await
        .map_err(|_| SignInError::SessionStore)?;
    if !stored {
        return Err(SignInError::SessionStore);
    }
    Ok(key)
}

/// Takes (once) the SAML request kept under `key`; `None` when missing, expired, already taken
/// or unreadable.
pub async fn take_saml_request(
    gw: &Gateway<'_>,
    key: &str,
) -> Result<Option<PendingSaml>, SignInError> {
    let Some(saml) = gw.saml else {
        return Ok(None);
    };
    let raw = saml
        .one_time
        .take(&pending_key(key), gw.now())
        .await
        .map_err(|_| SignInError::SessionStore)?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// What the ACS received (HTTP-POST binding), unpacked by the handler.
pub struct SamlPost<'a> {
    /// The key in this browser's binding cookie, when it came along.
    pub binding: Option<&'a str>,
    pub response: Option<String>,
    pub relay_state: Option<String>,
}

/// `POST /saml/acs`: finds the request the response answers, verifies it, and signs the person
/// in ([`finish`]); returns where the browser goes next. Every refusal is audited here.
pub async fn saml_response(
    gw: &Gateway<'_>,
    session: &Session,
    rid: &str,
    post: SamlPost<'_>,
) -> Result<LocalPath, SignInError> {
    let now = gw.now();
    let deny = |idp: Option<&str>, reason: &str, detail: String| {
        let mut ev = AuditEvent::new(now, rid, EventKind::SignIn, Outcome::Deny);
        ev.idp = idp.map(str::to_owned);
        ev.reason = Some(reason.to_owned());
        ev.detail = Some(detail);
        gw.audit.record(ev);
    };
    let Some(saml) = gw.saml else {
        return Err(SignInError::SamlNotConfigured);
    };
    let Some(response) = post.response.filter(|s| !s.is_empty()) else {
        deny(
            None,
            "saml_response_missing",
            "no SAMLResponse in the POST".into(),
        );
        return Err(SignInError::SamlResponseMissing);
    };

    // The pending request of this browser, taken once.
    let pending: Option<PendingSaml> = match post.binding {
        Some(k) if !k.is_empty() => take_saml_request(gw, k).await?,
        _ => None,
    };

    let (provider, request_id, return_to, requested_acr) = match pending {
        Some(p) => {
            // RelayState is an opaque reference we issued with this very request.
            if post.relay_state.as_deref() != Some(p.relay_state.as_str()) {
                deny(
                    Some(&p.idp),
                    "saml_relay_state",
                    "RelayState is not the one sent with the request".into(),
                );
                return Err(SignInError::SamlRefused {
                    reason: "saml_relay_state",
                    error: None,
                });
            }
            let Some(provider) = saml.providers.get(&p.idp) else {
                deny(
                    Some(&p.idp),
                    "unknown_idp",
                    "pending request for an IdP that is no longer configured".into(),
                );
                return Err(SignInError::SamlRefused {
                    reason: "unknown_idp",
                    error: None,
                });
            };
            (provider.clone(), Some(p.request_id), p.return_to, p.acr)
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
                return Err(SignInError::SamlNotPending);
            };
            (provider.clone(), None, LocalPath::root(), None)
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
            return Err(SignInError::SamlRefused {
                reason: e.reason(),
                error: Some(e),
            });
        }
    };
    // The common ending: replay check, identity, leaver check, session, audit.
    finish(
        gw,
        session,
        rid,
        provider.idp_id(),
        Proof::Saml(Box::new(verified)),
    )
    .await?;
    Ok(return_to)
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

//! `GET /stores/{store}/launch?to=/path`: entitlement check -> ensure customer -> mint the
//! Customer Login JWT -> 302 to `{storefront}/login/token/{jwt}`.
//!
//! The whole launch reads top to bottom here. The entitlement is decided again at this moment (never
//! taken from the portal), and the token is minted only from the `LaunchDecision` that check
//! returned, at the moment of the redirect, never ahead of time, never cached, logged or shown.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth::{STEP_UP_KEY, SignedIn, StepUpAttempt, urlencode, write_signed_in};
use super::errors::AppError;
use super::extract::ClientIp;
use super::{AppState, no_store};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::bigcommerce::api::ApiError;
use crate::bigcommerce::b2b::ensure_company_user;
use crate::bigcommerce::customers::ensure_customer;
use crate::bigcommerce::login_jwt;
use crate::identity::Identity;
use crate::identity::StoreId;
use crate::policy::{DenyReason, LaunchRefusal};
use crate::redirect::LocalPath;

#[derive(Debug, Deserialize)]
pub struct LaunchQuery {
    to: Option<String>,
}

pub async fn launch(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    Query(q): Query<LaunchQuery>,
    ClientIp(client_ip): ClientIp,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let SignedIn {
        session,
        mut auth,
        request_id: rid,
    } = signed_in;
    let now = state.clock.now();
    let identity = &auth.identity;
    let audit = |outcome: Outcome| {
        let mut ev = AuditEvent::new(now, &rid, EventKind::Launch, outcome).who(identity);
        ev.store = Some(store_id.clone());
        ev
    };

    let store_key = StoreId::new(store_id.clone());
    let snap = state.policy();
    let Some(store) = snap.store(&store_key) else {
        let mut ev = audit(Outcome::Deny);
        ev.rule = Some(DenyReason::UnknownStore.rule_label().to_owned());
        ev.reason = Some("unknown_store".into());
        state.audit.record(ev);
        return Err(AppError::not_found(
            "There is no store with this name.",
            &rid,
        ));
    };
    let redirect_to = match q.to.as_deref() {
        None | Some("") => store.default_path.clone(),
        Some(raw) => match LocalPath::parse(raw) {
            Ok(p) => p,
            Err(e) => {
                let mut ev = audit(Outcome::Deny);
                ev.reason = Some("bad_redirect".into());
                ev.detail = Some(e.to_string());
                state.audit.record(ev);
                return Err(AppError::bad_request(
                    format!("The storefront page to open must be a path on the store: {e}."),
                    &rid,
                ));
            }
        },
    };

    // A leaver (deleted, or `active: false` through SCIM) is refused at once, whatever the
    // session or the policy says; the reconciler locks their BigCommerce customers separately.
    let deprovisioned = match &state.scim {
        None => false,
        Some(scim) => match scim
            .is_deprovisioned(&identity.subject, identity.email.as_deref())
            .await
        {
            Ok(d) => d,
            // Cannot tell whether this person is a leaver: no token (fail closed).
            Err(e) => {
                let mut ev = audit(Outcome::Error);
                ev.reason = Some("scim_store_unavailable".into());
                ev.detail = Some(e.detail);
                state.audit.record(ev);
                return Err(AppError::unavailable(
                    "The identity management data (SCIM store)",
                    &rid,
                ));
            }
        },
    };
    if deprovisioned {
        let mut ev = audit(Outcome::Deny);
        ev.rule = Some("deprovisioned".into());
        ev.reason = Some("deprovisioned".into());
        state.audit.record(ev);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "No access to this store",
            "Your account has been disabled by your organisation's identity management.",
            &rid,
        ));
    }

    // The reloadable policy snapshot, the same one the portal showed.
    let decision = match snap
        .policy
        .authorize_launch(identity, &store_key, now, &redirect_to)
    {
        Ok(d) => d,
        Err(refusal) => {
            let mut ev = audit(Outcome::Deny);
            ev.rule = Some(refusal.rule_label().to_owned());
            ev.reason = Some(refusal.code().to_owned());
            ev.detail = Some(refusal.explain());
            state.audit.record(ev);
            let here = launch_url(&store_id, q.to.as_deref());
            return refused(&state, &session, &rid, identity, store, here, refusal, now).await;
        }
    };

    let Some(account) = state.config.account(&store.account) else {
        return Err(AppError::not_found(
            "This store's BigCommerce account is not configured.",
            &rid,
        ));
    };
    let Some(api) = state.bigcommerce.get(&store.account) else {
        return Err(AppError::not_found(
            "This store's BigCommerce account is not configured.",
            &rid,
        ));
    };

    // The customer may log in to every channel of this store hash the user is entitled to.
    // Only this account's stores are decided (a policy with many accounts decides few stores).
    let same_account = |id: &StoreId| snap.store(id).is_some_and(|s| s.account == store.account);
    let mut channels: Vec<u64> = snap
        .policy
        .grants_where(identity, now, same_account)
        .iter()
        .filter_map(|g| snap.store(&g.store))
        .filter(|s| s.account == store.account)
        .map(|s| s.channel_id)
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let group_key = decision
        .grant()
        .customer_group
        .as_ref()
        .map(|g| format!("{g:?}"))
        .unwrap_or_default();
    let b2b_key = decision
        .grant()
        .b2b
        .map(|b| format!("|b2b:{}:{}", b.company_id, b.role))
        .unwrap_or_default();
    let cache_key = format!("{}|{:?}|{}{b2b_key}", store.account, channels, group_key);

    let upstream_failed = |e: ApiError, step: &str| {
        // An adoption refused for an unverified email is a decision, not a failure.
        let refused_adoption = matches!(e, ApiError::AdoptionNeedsVerifiedEmail { .. });
        let mut ev = if refused_adoption {
            let mut ev = audit(Outcome::Deny);
            ev.reason = Some("adoption_needs_verified_email".into());
            ev
        } else {
            let mut ev = audit(Outcome::Error);
            ev.reason = Some("bigcommerce_failed".into());
            ev
        };
        ev.rule = Some(decision.grant().rule.clone());
        ev.detail = Some(format!("{step}: {e}"));
        state.audit.record(ev);
        if refused_adoption {
            tracing::warn!(store = %store.id, step, error = %e, "launch refused: adoption needs a verified email");
            return AppError::new(
                StatusCode::CONFLICT,
                "The store account needs an administrator",
                format!(
                    "{} already has a customer account with your email address that is not linked to you yet, and your identity provider did not confirm that the address is yours, so the gateway will not sign you into it.",
                    store.name
                ),
                &rid,
            )
            .with_hint(format!(
                "Ask {} to link the account: the identity provider must release email_verified, or be marked trust_email in the gateway's configuration if its directory owns the addresses.",
                state.config.support_contact
            ));
        }
        tracing::warn!(store = %store.id, step, error = %e, "launch failed upstream");
        let unavailable = matches!(
            e,
            ApiError::Unreachable { .. } | ApiError::Timeout { .. } | ApiError::RateLimited { .. }
        );
        if let ApiError::B2bConflict { detail } = &e {
            return AppError::new(
                StatusCode::CONFLICT,
                "The store account needs an administrator",
                format!(
                    "Your B2B access to {} cannot be set up automatically: {detail}.",
                    store.name
                ),
                &rid,
            )
            .with_hint(format!(
                "Ask {} to check the company in B2B Edition.",
                state.config.support_contact
            ));
        }
        if let ApiError::SubjectConflict { .. } = e {
            return AppError::new(
                StatusCode::CONFLICT,
                "The store account needs an administrator",
                format!(
                    "{} already has a customer account with your email address that belongs to another identity, so the gateway will not sign you into it.",
                    store.name
                ),
                &rid,
            )
            .with_hint(format!(
                "Ask {} to resolve the duplicate account in BigCommerce.",
                state.config.support_contact
            ));
        }
        let status = if unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        };
        let err = AppError::new(
            status,
            "The store could not be opened",
            format!(
                "BigCommerce did not complete the sign-in to {}. You have access; please try again shortly.",
                store.name
            ),
            &rid,
        );
        if matches!(e, ApiError::MissingEmail) {
            err.with_hint(e.to_string())
        } else {
            err
        }
    };

    let customer_id = match auth.customers.get(&cache_key) {
        Some(id) => *id,
        None => {
            let id = ensure_customer(api.as_ref(), identity, &decision, &channels)
                .await
                .map_err(|e| upstream_failed(e, "ensure customer"))?;
            if decision.grant().b2b.is_some() {
                // Validation refuses B2B grants on accounts without B2B Edition access.
                let Some(b2b) = state.b2b.get(&store.account) else {
                    return Err(upstream_failed(
                        ApiError::B2bConflict {
                            detail: "no B2B Edition access is configured for this store".into(),
                        },
                        "B2B company user",
                    ));
                };
                let outcome = ensure_company_user(b2b.as_ref(), &decision, identity, id)
                    .await
                    .map_err(|e| upstream_failed(e, "B2B company user"))?;
                tracing::info!(store = %store.id, ?outcome, "B2B Edition membership ensured");
            }
            auth.customers.insert(cache_key, id);
            write_signed_in(&session, &auth)
                .await
                .map_err(|_| AppError::session_store(&rid))?;
            id
        }
    };
    let identity = &auth.identity;

    let store_now = state
        .store_clock
        .now(&account.store_hash, api.as_ref())
        .await
        .map_err(|e| upstream_failed(e, "read the store clock"))?;
    let request_ip = if store.bind_request_ip {
        client_ip
    } else {
        None
    };
    let token = login_jwt::mint(
        &decision,
        account,
        &account.store_hash,
        customer_id,
        store.channel_id,
        decision.path(),
        request_ip,
        store_now,
        uuid::Uuid::new_v4(),
    )
    .map_err(|e| {
        tracing::error!(store = %store.id, error = %e, "cannot mint a login token");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "The store could not be opened", "The gateway could not create the sign-in token; the administrator can find the details under this reference.", &rid)
    })?;

    let mut ev = AuditEvent::new(now, &rid, EventKind::Launch, Outcome::Allow).who(identity);
    ev.store = Some(store.id.to_string());
    ev.rule = Some(decision.grant().rule.clone());
    ev.role = Some(decision.grant().role.clone());
    ev.customer_id = Some(customer_id);
    state.audit.record(ev);
    super::portal::remember_opened(&state, &auth.identity, store.id.as_str());
    // 302 (the public contract) straight to the storefront: no intermediate page that could leak
    // the token via Referer.
    Ok(no_store(
        (
            StatusCode::FOUND,
            [(header::LOCATION, token.login_url(&store.url))],
        )
            .into_response(),
    ))
}

/// This launch's own URL, to come back to after signing in again.
fn launch_url(store_id: &str, to: Option<&str>) -> String {
    match to {
        Some(t) if !t.is_empty() => {
            format!("/stores/{}/launch?to={}", urlencode(store_id), urlencode(t))
        }
        _ => format!("/stores/{}/launch", urlencode(store_id)),
    }
}

/// Answers a refused launch: a step-up or a fresh sign-in where one can help, else the 403 page
/// with the policy's own explanation. No token is minted on any of these paths.
#[allow(clippy::too_many_arguments)]
async fn refused(
    state: &AppState,
    session: &Session,
    rid: &str,
    identity: &Identity,
    store: &crate::config::Store,
    here: String,
    refusal: LaunchRefusal,
    now: crate::clock::UnixTime,
) -> Result<Response, AppError> {
    let sign_in_again = |acr: Option<&str>| {
        let mut target = format!("/login?idp={}", urlencode(identity.idp.as_str()));
        if let Some(acr) = acr {
            target.push_str(&format!("&acr={}", urlencode(acr)));
        }
        target.push_str(&format!("&return_to={}", urlencode(&here)));
        target
    };
    let wanted_acr = match &refusal {
        LaunchRefusal::StepUpRequired { acr, .. } => Some(acr.as_str()),
        _ => None,
    };
    if matches!(
        refusal,
        LaunchRefusal::StepUpRequired { .. } | LaunchRefusal::SessionTooOld { .. }
    ) {
        // One round trip to the IdP per launch: if the sign-in we just asked for came back
        // without what the grant needs, say so instead of sending the browser round in a loop.
        let attempt: Option<StepUpAttempt> = session
            .remove(STEP_UP_KEY)
            .await
            .map_err(|_| AppError::session_store(rid))?;
        let just_tried = attempt.is_some_and(|a| {
            a.return_to == here
                && identity.signed_in_at >= a.at
                && now - a.at < super::auth::PENDING_TTL
        });
        if !just_tried {
            session
                .insert(
                    STEP_UP_KEY,
                    StepUpAttempt {
                        return_to: here.clone(),
                        at: now,
                    },
                )
                .await
                .map_err(|_| AppError::session_store(rid))?;
            return Ok(no_store(
                Redirect::to(&sign_in_again(wanted_acr)).into_response(),
            ));
        }
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "A stronger sign-in is needed",
            format!(
                "You cannot open {} yet: {}. The identity provider did not confirm it when you signed in again.",
                store.name,
                refusal.explain()
            ),
            rid,
        )
        .with_hint(format!(
            "Sign in again with the required method, or ask {}.",
            state.config.support_contact
        ))
        .offer_sign_in());
    }
    let (title, hint) = match &refusal {
        LaunchRefusal::Denied(DenyReason::Expired { .. }) => (
            "Your access has expired",
            format!("To renew it, ask {}.", state.config.support_contact),
        ),
        LaunchRefusal::PathNotAllowed { .. } => (
            "This page of the store is not open to you",
            format!(
                "Open the store from the portal, or ask {} for wider access.",
                state.config.support_contact
            ),
        ),
        _ => (
            "No access to this store",
            format!(
                "If you need this store, ask {}.",
                state.config.support_contact
            ),
        ),
    };
    Err(AppError::new(
        StatusCode::FORBIDDEN,
        title,
        format!("You cannot open {}: {}.", store.name, refusal.explain()),
        rid,
    )
    .with_hint(hint))
}

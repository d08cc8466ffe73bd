//! Opening a store: `GET /stores/{store}/launch?to=/path`.
//!
//! Store and page -> leaver check -> entitlement (decided again now, never taken from the
//! portal) -> the BigCommerce customer (and B2B company user) -> the Customer Login JWT, minted
//! only from the `LaunchDecision` that check returned, at the moment of the redirect: never
//! ahead of time, never cached, logged or shown.

use std::net::IpAddr;
use std::sync::Arc;

use tower_sessions::Session;

use super::Gateway;
use super::leaver::{self, NotCleared};
use crate::audit::{AuditEvent, EventKind, Outcome, correlation};
use crate::bigcommerce::api::ApiError;
use crate::bigcommerce::b2b::{B2bOutcome, ensure_company_user};
use crate::bigcommerce::customers::{CustomerChange, ensure_customer_reporting};
use crate::bigcommerce::login_jwt;
use crate::clock::UnixTime;
use crate::config::Store;
use crate::identity::{BoundSubject, Identity, StoreId};
use crate::policy::{DenyReason, Evaluation, LaunchDecision, LaunchRefusal};
use crate::redirect::{LocalPath, urlencode};
use crate::reload::PolicySnapshot;
use crate::session::browser::{
    PENDING_TTL, STEP_UP_KEY, SignedInState, StepUpAttempt, write_signed_in,
};

/// What was asked for.
pub struct LaunchRequest<'a> {
    pub store_id: &'a str,
    /// `?to=`: the storefront page to open (the store's default when absent or empty).
    pub to: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
}

/// A launch that went ahead.
#[derive(Debug)]
pub enum Launched {
    /// Straight to the storefront's login URL, which carries the token (a 302: no intermediate
    /// page that could leak it via Referer).
    Storefront { login_url: String },
    /// The grant needs a stronger or fresher sign-in: to the IdP once, then back here.
    SignInAgain { target: String },
}

/// Why a launch did not open the store. Every variant was audited by the flow.
#[derive(Debug)]
pub enum LaunchError {
    UnknownStore,
    BadRedirect {
        problem: String,
    },
    /// The SCIM store could not say whether this person left: no token (fail closed).
    LeaverUnknown,
    Leaver,
    /// The policy refused; `refusal` explains why.
    Refused {
        store: String,
        refusal: LaunchRefusal,
    },
    /// A step-up sign-in just came back without what the grant needs (no redirect loop).
    StepUpNotMet {
        store: String,
        refusal: LaunchRefusal,
    },
    AccountNotConfigured,
    /// BigCommerce refused or failed at `step`.
    Upstream {
        store: String,
        step: &'static str,
        failure: UpstreamFailure,
    },
    SessionStore,
    MintFailed,
}

impl LaunchError {
    /// The audit reason, where the launch recorded one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            LaunchError::UnknownStore => Some("unknown_store"),
            LaunchError::BadRedirect { .. } => Some("bad_redirect"),
            LaunchError::LeaverUnknown => Some("scim_store_unavailable"),
            LaunchError::Leaver => Some("deprovisioned"),
            LaunchError::Refused { refusal, .. } | LaunchError::StepUpNotMet { refusal, .. } => {
                Some(refusal.code())
            }
            LaunchError::Upstream { failure, .. } => Some(failure.reason()),
            LaunchError::AccountNotConfigured
            | LaunchError::SessionStore
            | LaunchError::MintFailed => None,
        }
    }
}

/// How a BigCommerce error during a launch is answered: a decision an administrator must act
/// on (409), the store being unreachable (503), or another failure (502).
#[derive(Debug)]
pub enum UpstreamFailure {
    /// An existing customer with this email would be adopted, but the IdP did not vouch for
    /// the address: a decision, not a failure.
    AdoptionNeedsVerifiedEmail,
    /// The B2B company cannot be set up automatically.
    B2bConflict { detail: String },
    /// The customer with this email is bound to another identity.
    SubjectConflict,
    /// Unreachable, timed out or rate limited: try again shortly.
    Unavailable,
    /// Anything else; `hint` is shown when it helps (no email released).
    Failed { hint: Option<String> },
}

impl UpstreamFailure {
    pub fn classify(e: &ApiError) -> Self {
        match e {
            ApiError::AdoptionNeedsVerifiedEmail { .. } => {
                UpstreamFailure::AdoptionNeedsVerifiedEmail
            }
            ApiError::B2bConflict { detail } => UpstreamFailure::B2bConflict {
                detail: detail.clone(),
            },
            ApiError::SubjectConflict { .. } => UpstreamFailure::SubjectConflict,
            ApiError::Unreachable { .. }
            | ApiError::Timeout { .. }
            | ApiError::RateLimited { .. } => UpstreamFailure::Unavailable,
            ApiError::MissingEmail => UpstreamFailure::Failed {
                hint: Some(e.to_string()),
            },
            _ => UpstreamFailure::Failed { hint: None },
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamFailure::AdoptionNeedsVerifiedEmail => "adoption_needs_verified_email",
            _ => "bigcommerce_failed",
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            UpstreamFailure::AdoptionNeedsVerifiedEmail => Outcome::Deny,
            _ => Outcome::Error,
        }
    }
}

/// Runs one launch for the signed-in person in `auth` (whose cache of ensured customers may grow;
/// it is copied first, `Arc::make_mut`, as it is shared with the session's decode cache).
pub async fn launch(
    gw: &Gateway<'_>,
    session: &Session,
    auth: &mut Arc<SignedInState>,
    req: LaunchRequest<'_>,
) -> Result<Launched, LaunchError> {
    let now = gw.now();
    let rid = req.request_id;
    let audit = |identity: &Identity, outcome: Outcome| {
        let mut ev = AuditEvent::new(now, rid, EventKind::Launch, outcome).who(identity);
        ev.store = Some(req.store_id.to_owned());
        ev
    };
    let identity = &auth.identity;

    // 1. The store and the page.
    let store_key = StoreId::new(req.store_id);
    let snap = gw.policy();
    let Some(store) = snap.store(&store_key) else {
        let mut ev = audit(identity, Outcome::Deny);
        ev.rule = Some(DenyReason::UnknownStore.rule_label().to_owned());
        ev.reason = Some("unknown_store".into());
        gw.audit.record(ev);
        return Err(LaunchError::UnknownStore);
    };
    let redirect_to = match req.to {
        None | Some("") => store.default_path.clone(),
        Some(raw) => match LocalPath::parse(raw) {
            Ok(p) => p,
            Err(e) => {
                let mut ev = audit(identity, Outcome::Deny);
                ev.reason = Some("bad_redirect".into());
                ev.detail = Some(e.to_string());
                gw.audit.record(ev);
                return Err(LaunchError::BadRedirect {
                    problem: e.to_string(),
                });
            }
        },
    };

    // 2. A leaver is refused at once, whatever the session or the policy says; the reconciler
    //    locks their BigCommerce customers separately.
    if let Err(not_cleared) = leaver::check(gw.scim, identity).await {
        let mut ev = match &not_cleared {
            NotCleared::Leaver => {
                let mut ev = audit(identity, Outcome::Deny);
                ev.rule = Some("deprovisioned".into());
                ev
            }
            NotCleared::Unknown { detail } => {
                let mut ev = audit(identity, Outcome::Error);
                ev.detail = Some(detail.clone());
                ev
            }
        };
        ev.reason = Some(not_cleared.reason().into());
        gw.audit.record(ev);
        return Err(match not_cleared {
            NotCleared::Leaver => LaunchError::Leaver,
            NotCleared::Unknown { .. } => LaunchError::LeaverUnknown,
        });
    }

    // 3. The entitlement, from the reloadable policy snapshot (the same one the portal showed).
    // One evaluation of this person's facts for the store and, below, its account's channels.
    let mut evaluation = snap.policy.evaluation(identity, now);
    let decision = match evaluation.authorize_launch(&store_key, &redirect_to) {
        Ok(d) => d,
        Err(refusal) => {
            let mut ev = audit(identity, Outcome::Deny);
            ev.rule = Some(refusal.rule_label().to_owned());
            ev.reason = Some(refusal.code().to_owned());
            ev.detail = Some(refusal.explain());
            gw.audit.record(ev);
            let here = launch_url(req.store_id, req.to);
            return refused(session, identity, store, here, refusal, now).await;
        }
    };

    let Some(account) = gw.config.account(&store.account) else {
        return Err(LaunchError::AccountNotConfigured);
    };
    let Some(api) = gw.bigcommerce.get(&store.account) else {
        return Err(LaunchError::AccountNotConfigured);
    };

    // Every BigCommerce failure below is audited and answered the same way.
    let upstream_failed = |identity: &Identity, e: ApiError, step: &'static str| {
        let failure = UpstreamFailure::classify(&e);
        let mut ev = audit(identity, failure.outcome());
        ev.reason = Some(failure.reason().into());
        ev.rule = Some(decision.grant().rule.clone());
        ev.detail = Some(format!("{step}: {e}"));
        gw.audit.record(ev);
        if let UpstreamFailure::AdoptionNeedsVerifiedEmail = failure {
            tracing::warn!(store = %store.id, step, error = %e, "launch refused: adoption needs a verified email");
        } else {
            tracing::warn!(store = %store.id, step, error = %e, "launch failed upstream");
        }
        LaunchError::Upstream {
            store: store.name.clone(),
            step,
            failure,
        }
    };

    // 4. The BigCommerce customer, ensured once per account, channel set and grant per session.
    //    Each write is audited under this request's id, and made on behalf of this person: the
    //    own-change record keeps both, so the webhook echoing the write joins this launch.
    let (channels, cache_key) = customer_scope(&snap, &mut evaluation, store, &decision);
    let change_event = |identity: &Identity, customer_id: u64, reason: &str| {
        let mut ev = audit(identity, Outcome::Allow);
        ev.event = EventKind::Provision;
        ev.actor = Some("launch".into());
        ev.rule = Some(decision.grant().rule.clone());
        ev.customer_id = Some(customer_id);
        ev.reason = Some(reason.to_owned());
        ev
    };
    let customer_id = match auth.customers.get(&cache_key) {
        Some(id) => *id,
        None => {
            let for_whom = BoundSubject::of(identity).into_string();
            let ensured = correlation::on_behalf_of(
                for_whom.clone(),
                ensure_customer_reporting(api.as_ref(), identity, &decision, &channels),
            )
            .await
            .map_err(|e| upstream_failed(identity, e, "ensure customer"))?;
            let id = ensured.id;
            if let Some(change) = &ensured.change {
                let mut ev = change_event(identity, id, change.reason());
                ev.target = Some(format!("customer {id} on {}", store.account));
                ev.after = change.update().and_then(|u| serde_json::to_value(u).ok());
                if let CustomerChange::Created = change {
                    ev.detail = Some(format!("created on the launch of {}", store.id));
                }
                gw.audit.record(ev);
            }
            if decision.grant().b2b.is_some() {
                // Validation refuses B2B grants on accounts without B2B Edition access.
                let Some(b2b) = gw.b2b.get(&store.account) else {
                    return Err(upstream_failed(
                        identity,
                        ApiError::B2bConflict {
                            detail: "no B2B Edition access is configured for this store".into(),
                        },
                        "B2B company user",
                    ));
                };
                let outcome = correlation::on_behalf_of(
                    for_whom.clone(),
                    ensure_company_user(b2b.as_ref(), &decision, identity, id),
                )
                .await
                .map_err(|e| upstream_failed(identity, e, "B2B company user"))?;
                tracing::info!(store = %store.id, ?outcome, "B2B Edition membership ensured");
                let written = match outcome {
                    Some(B2bOutcome::Created { user_id }) => Some(("b2b_create", user_id)),
                    Some(B2bOutcome::RoleChanged { user_id }) => Some(("b2b_role", user_id)),
                    Some(B2bOutcome::Unchanged { .. }) | None => None,
                };
                if let Some((reason, user_id)) = written {
                    let mut ev = change_event(identity, id, reason);
                    ev.target = Some(format!("company user {user_id} on {}", store.account));
                    gw.audit.record(ev);
                }
            }
            Arc::make_mut(auth).customers.insert(cache_key, id);
            write_signed_in(session, auth)
                .await
                .map_err(|_| LaunchError::SessionStore)?;
            id
        }
    };
    let identity = &auth.identity;

    // 5. The token, by the store's clock, for this request only.
    let store_now = gw
        .store_clock
        .now(&account.store_hash, api.as_ref())
        .await
        .map_err(|e| upstream_failed(identity, e, "read the store clock"))?;
    let request_ip = if store.bind_request_ip {
        req.client_ip
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
        LaunchError::MintFailed
    })?;

    let mut ev = AuditEvent::new(now, rid, EventKind::Launch, Outcome::Allow).who(identity);
    ev.store = Some(store.id.to_string());
    ev.rule = Some(decision.grant().rule.clone());
    ev.role = Some(decision.grant().role.clone());
    ev.customer_id = Some(customer_id);
    gw.audit.record(ev);
    // Remembered for sign-out, which ends the storefront sessions this session opened. Written
    // only on a store's first launch, so repeated launches cost no session write.
    if !auth.launched.contains(store.id.as_str()) {
        Arc::make_mut(auth).launched.insert(store.id.to_string());
        write_signed_in(session, auth)
            .await
            .map_err(|_| LaunchError::SessionStore)?;
    }
    Ok(Launched::Storefront {
        login_url: token.login_url(&store.url),
    })
}

/// The channels the customer may log in to (every channel of this store's account the person is
/// entitled to), and the key under which the session remembers the customer ensured for them.
/// Only this account's stores are decided (a policy with many accounts decides few stores).
fn customer_scope(
    snap: &PolicySnapshot,
    evaluation: &mut Evaluation<'_, '_>,
    store: &Store,
    decision: &LaunchDecision,
) -> (Vec<u64>, String) {
    let same_account = |id: &StoreId| snap.store(id).is_some_and(|s| s.account == store.account);
    let mut channels: Vec<u64> = evaluation
        .granted_stores_where(same_account)
        .into_iter()
        .filter_map(|id| snap.store(id))
        .filter(|s| s.account == store.account)
        .map(|s| s.channel_id)
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let cache_key = customer_cache_key(&store.account, &channels, decision.grant());
    (channels, cache_key)
}

/// `{account}|{channels:?}|{group:?}` and `|b2b:{company}:{role}` for a B2B grant: the key
/// sessions have stored their ensured customers under, so its text must not change. Written
/// piece by piece: a launch computes it every time, and `format!` with `{:?}` of the channel
/// list cost a third of the customer scope (issue 15).
fn customer_cache_key(account: &str, channels: &[u64], grant: &crate::policy::Grant) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(account.len() + 4 + channels.len() * 8);
    key.push_str(account);
    key.push_str("|[");
    for (i, channel) in channels.iter().enumerate() {
        if i > 0 {
            key.push_str(", ");
        }
        // Writing into a `String` cannot fail.
        let _ = write!(key, "{channel}");
    }
    key.push_str("]|");
    if let Some(g) = &grant.customer_group {
        let _ = write!(key, "{g:?}");
    }
    if let Some(b) = grant.b2b {
        let _ = write!(key, "|b2b:{}:{}", b.company_id, b.role);
    }
    key
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

/// A refused launch: a step-up or a fresh sign-in where one can help, else the refusal itself.
/// No token is minted on any of these paths.
async fn refused(
    session: &Session,
    identity: &Identity,
    store: &Store,
    here: String,
    refusal: LaunchRefusal,
    now: UnixTime,
) -> Result<Launched, LaunchError> {
    if !matches!(
        refusal,
        LaunchRefusal::StepUpRequired { .. } | LaunchRefusal::SessionTooOld { .. }
    ) {
        return Err(LaunchError::Refused {
            store: store.name.clone(),
            refusal,
        });
    }
    // One round trip to the IdP per launch: if the sign-in we just asked for came back without
    // what the grant needs, say so instead of sending the browser round in a loop.
    let attempt: Option<StepUpAttempt> = session
        .remove(STEP_UP_KEY)
        .await
        .map_err(|_| LaunchError::SessionStore)?;
    let just_tried = attempt.is_some_and(|a| {
        a.return_to == here && identity.signed_in_at >= a.at && now - a.at < PENDING_TTL
    });
    if just_tried {
        return Err(LaunchError::StepUpNotMet {
            store: store.name.clone(),
            refusal,
        });
    }
    let mut target = format!("/login?idp={}", urlencode(identity.idp.as_str()));
    if let LaunchRefusal::StepUpRequired { acr, .. } = &refusal {
        target.push_str(&format!("&acr={}", urlencode(acr)));
    }
    target.push_str(&format!("&return_to={}", urlencode(&here)));
    session
        .insert(
            STEP_UP_KEY,
            StepUpAttempt {
                return_to: here,
                at: now,
            },
        )
        .await
        .map_err(|_| LaunchError::SessionStore)?;
    Ok(Launched::SignInAgain { target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{B2bGrant, B2bRole, CustomerGroupRef, Grant};

    fn grant(customer_group: Option<CustomerGroupRef>, b2b: Option<B2bGrant>) -> Grant {
        Grant {
            store: StoreId::new("us"),
            role: "buyer".into(),
            customer_group,
            rule: "staff".into(),
            template: None,
            expires_at: None,
            b2b,
            allowed_paths: None,
            require_acr: None,
            max_session_age: None,
            control_panel: None,
        }
    }

    #[test]
    fn the_customer_cache_key_keeps_the_text_sessions_stored_it_under() {
        // Sessions hold ensured customers under this key: another text would turn every cached
        // customer into a miss (a BigCommerce call per session).
        assert_eq!(
            customer_cache_key("acct", &[1], &grant(None, None)),
            "acct|[1]|"
        );
        let b2b = Some(B2bGrant {
            company_id: 7,
            role: B2bRole::Admin,
        });
        for (channels, group, b2b) in [
            (vec![], None, None),
            (vec![1, 2, 30], None, None),
            (vec![5], Some(CustomerGroupRef::Id(4)), None),
            (
                vec![5, 6],
                Some(CustomerGroupRef::Name("VIP \"gold\"".into())),
                b2b,
            ),
        ] {
            let before = format!(
                "{}|{:?}|{}{}",
                "acct",
                channels,
                group.as_ref().map(|g| format!("{g:?}")).unwrap_or_default(),
                b2b.map(|b| format!("|b2b:{}:{}", b.company_id, b.role))
                    .unwrap_or_default()
            );
            let key = customer_cache_key("acct", &channels, &grant(group, b2b));
            assert_eq!(key, before);
        }
    }
}

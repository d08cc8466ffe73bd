//! Forward authentication: may this browser open this address of a `[[route]]`? Asked by a front
//! door (`GET /auth/verify`, `web::forward`) and by the built-in proxy before it forwards
//! (`web::proxy`), so both decide the same way and leave the same audit trail.
//!
//! The forwarded request (already read unambiguously, `forward::request`) -> the route that
//! covers it (none: deny by default) -> the browser's sign-in (none: sign in, then back) -> the
//! route's conditions, decided now (`policy::route`; a missing `require_acr` is one step-up
//! round trip, never a loop) -> an identity token for the upstream, signed with the current key.
//! Every outcome is audited (`forward_auth` events); a refusal carries its audit reason.
//!
//! The identity header of the request (`X-Storegate-Identity` or a route's own) is never read:
//! an identity is only ever the session's. See docs/reverse-proxy.md.

use axum::http::{HeaderName, HeaderValue};
use tower_sessions::Session;

use super::Gateway;
use super::signed_in;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::forward::keys::{KeyError, KeySet, SigningKey};
use crate::forward::request::{ForwardError, ForwardedRequest};
use crate::forward::return_url::RouteReturn;
use crate::forward::token;
use crate::identity::Identity;
use crate::policy::route::RouteRefusal;
use crate::redirect::urlencode;
use crate::session::browser::{PENDING_TTL, STEP_UP_KEY, StepUpAttempt};

/// The signing keys, built once at start when any `[[route]]` is configured.
#[derive(Debug)]
pub struct ForwardState {
    pub keys: KeySet,
}

impl ForwardState {
    pub fn build(config: &crate::config::Config) -> Result<Option<Self>, KeyError> {
        let fa = &config.forward_auth;
        if fa.routes.is_empty() {
            return Ok(None);
        }
        let current = match &fa.signing_key_pem {
            Some(pem) => {
                SigningKey::from_pem("forward_auth.signing_key_file", pem.expose().as_bytes())?
            }
            None => {
                tracing::warn!(
                    "[forward_auth] has no signing_key_file: identity tokens are signed with a key generated at start; replicas and restarts will not share it"
                );
                SigningKey::generate()?
            }
        };
        Ok(Some(ForwardState {
            keys: KeySet::new(current, fa.previous_keys.clone()),
        }))
    }
}

/// A request the route admits: the identity token for the upstream, in the route's header.
#[derive(Debug)]
pub struct Allowed {
    pub route: String,
    pub header: HeaderName,
    pub token: HeaderValue,
}

/// Why a request is not let through. The front door or the proxy says it its own way
/// (`web::answer::forward_refused`).
#[derive(Debug)]
pub enum Refused {
    /// No `[[route]]` is configured: there is nothing to decide.
    NotConfigured,
    /// The forwarded request cannot be read unambiguously (audited by [`unreadable`]).
    Unreadable(ForwardError),
    /// No route covers the address (deny by default; never a redirect).
    NoRoute,
    /// No usable sign-in: sign in at `sign_in` and come back. `None` when the address cannot be
    /// come back to (e.g. http while the gateway requires https).
    NotSignedIn {
        sign_in: Option<String>,
    },
    /// The route needs a stronger sign-in: at `target` (the IdP asked for the route's contract),
    /// then back to the tool.
    StepUp {
        target: String,
    },
    /// Signed in, and the route refuses (also a step-up that came back without the contract).
    Denied {
        route: String,
        refusal: RouteRefusal,
    },
    SessionStore,
    TokenMintFailed,
    /// The signed token is not a header value (cannot happen with a JWS; refused, not forwarded).
    TokenNotHeader,
}

impl Refused {
    /// The audit reason, where the decision recorded one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Refused::Unreadable(e) => Some(e.code()),
            Refused::NoRoute => Some("no_route"),
            Refused::StepUp { .. } => Some("step_up_required"),
            Refused::Denied { refusal, .. } => Some(refusal.code()),
            Refused::TokenMintFailed => Some("token_mint_failed"),
            Refused::NotConfigured
            | Refused::NotSignedIn { .. }
            | Refused::SessionStore
            | Refused::TokenNotHeader => None,
        }
    }
}

/// The decision for one request to a route: the route, the session, the conditions, then an
/// identity token. Every outcome is audited.
pub async fn decide(
    gw: &Gateway<'_>,
    session: &Session,
    req: &ForwardedRequest,
    rid: &str,
) -> Result<Allowed, Refused> {
    let Some(fwd) = gw.forward else {
        return Err(Refused::NotConfigured);
    };
    let fa = &gw.config.forward_auth;
    let asked = || format!("{} {}", req.method, req.original_url());

    // 1. The route that covers the address; none: deny by default.
    let Some(route) = fa.routes.find(&req.host, &req.uri) else {
        audit(
            gw,
            rid,
            Outcome::Deny,
            None,
            "default-deny",
            Some("no_route"),
            asked(),
        );
        return Err(Refused::NoRoute);
    };

    // 2. The browser's sign-in; none: sign in, then back to the address.
    let auth = match signed_in::load(gw, session).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => {
            return Err(Refused::NotSignedIn {
                sign_in: return_address(gw, req).map(|back| sign_in_url(gw, &back)),
            });
        }
        Err(signed_in::SessionStoreFailed) => return Err(Refused::SessionStore),
    };
    let id = &auth.identity;

    // 3. The route's conditions, decided now.
    let grant = match fa.routes.authorize(id, &req.host, &req.uri, gw.now()) {
        Ok(grant) => grant,
        Err(refusal) => {
            audit(
                gw,
                rid,
                Outcome::Deny,
                Some(id),
                refusal.rule_label(),
                Some(refusal.code()),
                asked(),
            );
            if let RouteRefusal::StepUpRequired { acr, .. } = &refusal
                && let Some(target) = step_up(gw, session, id, req, acr, rid).await
            {
                return Err(Refused::StepUp { target });
            }
            return Err(Refused::Denied {
                route: route.name.clone(),
                refusal,
            });
        }
    };

    // 4. The identity token, in the route's header.
    let lifetime = i64::try_from(fa.token_lifetime.as_secs()).unwrap_or(300);
    let jwt = match token::mint(
        fwd.keys.current(),
        gw.config.base_url(),
        &grant,
        id,
        lifetime,
    ) {
        Ok(t) => t,
        Err(e) => {
            let reason = Some("token_mint_failed");
            audit(
                gw,
                rid,
                Outcome::Error,
                Some(id),
                grant.route(),
                reason,
                e.to_string(),
            );
            return Err(Refused::TokenMintFailed);
        }
    };
    let header = fa
        .target(grant.route())
        .and_then(|t| HeaderName::from_bytes(t.identity_header.as_bytes()).ok())
        .unwrap_or(HeaderName::from_static("x-storegate-identity"));
    let Ok(token) = HeaderValue::from_str(&jwt) else {
        return Err(Refused::TokenNotHeader);
    };
    audit(
        gw,
        rid,
        Outcome::Allow,
        Some(id),
        grant.route(),
        None,
        asked(),
    );
    Ok(Allowed {
        route: grant.route().to_owned(),
        header,
        token,
    })
}

/// A forwarded request the gateway cannot read unambiguously: audited, no decision.
pub fn unreadable(gw: &Gateway<'_>, rid: &str, e: ForwardError) -> Refused {
    audit(
        gw,
        rid,
        Outcome::Deny,
        None,
        "default-deny",
        Some(e.code()),
        e.to_string(),
    );
    Refused::Unreadable(e)
}

/// The built-in proxy's upstream gave no usable answer (`reason`: `upstream_timeout`, ...).
pub fn upstream_failed(gw: &Gateway<'_>, rid: &str, route: &str, reason: &'static str) {
    let mut ev = AuditEvent::new(gw.now(), rid, EventKind::ForwardAuth, Outcome::Error);
    ev.rule = Some(route.to_owned());
    ev.reason = Some(reason.to_owned());
    gw.audit.record(ev);
}

/// Where a browser without a session signs in and comes back to `original`.
pub fn sign_in_url(gw: &Gateway<'_>, original: &RouteReturn) -> String {
    format!(
        "{}/auth/continue?rd={}",
        gw.config.base_url(),
        urlencode(original.as_str())
    )
}

/// The address asked for, if the browser may be sent back to it after signing in.
fn return_address(gw: &Gateway<'_>, req: &ForwardedRequest) -> Option<RouteReturn> {
    RouteReturn::parse(
        &req.original_url(),
        &gw.config.forward_auth.routes,
        gw.config.allow_insecure_http,
    )
    .ok()
}

/// A route's `require_acr` not met: the sign-in that asks the IdP for that contract, then back
/// to the tool. `None` (the 403) when the sign-in just asked for came back without it, so the
/// browser is not sent round in a loop, or when the address cannot be come back to.
async fn step_up(
    gw: &Gateway<'_>,
    session: &Session,
    id: &Identity,
    req: &ForwardedRequest,
    acr: &str,
    rid: &str,
) -> Option<String> {
    let back = return_address(gw, req)?;
    let now = gw.now();
    let attempt: Option<StepUpAttempt> = session.remove(STEP_UP_KEY).await.ok()?;
    let just_tried = attempt.is_some_and(|a| {
        a.return_to == back.as_str() && id.signed_in_at >= a.at && now - a.at < PENDING_TTL
    });
    if just_tried {
        tracing::info!(request_id = %rid, "a step-up sign-in came back without the route's acr");
        return None;
    }
    let attempt = StepUpAttempt {
        return_to: back.as_str().to_owned(),
        at: now,
    };
    session.insert(STEP_UP_KEY, attempt).await.ok()?;
    let continue_path = format!("/auth/continue?rd={}", urlencode(back.as_str()));
    Some(format!(
        "{}/login?idp={}&acr={}&return_to={}",
        gw.config.base_url(),
        urlencode(id.idp.as_str()),
        urlencode(acr),
        urlencode(&continue_path)
    ))
}

fn audit(
    gw: &Gateway<'_>,
    rid: &str,
    outcome: Outcome,
    id: Option<&Identity>,
    rule: &str,
    reason: Option<&str>,
    detail: String,
) {
    let mut ev = AuditEvent::new(gw.now(), rid, EventKind::ForwardAuth, outcome);
    if let Some(id) = id {
        ev = ev.who(id);
    }
    ev.rule = Some(rule.to_owned());
    ev.reason = reason.map(str::to_owned);
    ev.detail = Some(detail);
    gw.audit.record(ev);
}

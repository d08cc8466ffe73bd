//! The IT console under `/admin` (issue 13) and the gate in front of it.
//!
//! The gate is the [`Admin`] extractor: a handler that takes it runs only for a signed-in person
//! the `[admin]` rule admits (decided by `policy::admin`, not here). Without a sign-in the
//! browser is sent to sign in and back; signed in but not admitted gets a 403 page naming the
//! rule. Every use of the console, admitted or refused, is an `admin` audit event whose `target`
//! is the path asked for, so the trail shows who looked at what.
//!
//! With no `[admin]` table the routes are not mounted at all and `/admin...` answers 404.

pub mod access;
pub mod activity;
pub mod console;
pub mod fleet;
pub mod health;

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::SignedIn;
use super::errors::AppError;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::identity::Identity;
use crate::policy::admin::{AdminAccess, AdminDecision};

/// The reason code of a refused console request (audit `reason`, and the 403 page's wording).
pub const NOT_ADMIN: &str = "not_admin";

/// A request the `[admin]` rule admitted: who, by which rule, and the request id.
pub struct Admin {
    pub identity: Identity,
    pub access: AdminAccess,
    pub request_id: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        let path = parts.uri.path().to_owned();
        let rid = signed_in.request_id;
        let id = std::sync::Arc::unwrap_or_clone(signed_in.auth).identity;
        // The rule in force now (a reload may have changed it). The routes are mounted only
        // with `[admin]`; a missing rule here still fails closed.
        let snap = state.policy();
        let Some(rule) = snap.admin.as_ref() else {
            return Err(
                AppError::not_found("There is no admin console here.", &rid).into_response()
            );
        };
        let now = state.clock.now();
        let event = AuditEvent::new(now, &rid, EventKind::Admin, Outcome::Allow)
            .who(&id)
            .with_target(path);
        match rule.decide(&id) {
            AdminDecision::Allow(access) => {
                state.audit.record(event.with_rule(access.rule()));
                Ok(Admin {
                    identity: id,
                    access,
                    request_id: rid,
                })
            }
            AdminDecision::Deny { rule } => {
                let mut event = event.with_rule(&rule);
                event.outcome = Outcome::Deny;
                event.reason = Some(NOT_ADMIN.to_owned());
                state.audit.record(event);
                Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "Not an administrator",
                    format!("The admin console is for the people the rule \"{rule}\" admits, and you are not one of them."),
                    &rid,
                )
                .with_hint("If you need it, ask for the admin group in Identity Governance.")
                .into_response())
            }
        }
    }
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct Index<'a> {
    display_name: &'a str,
    rule: &'a str,
}

/// `GET /admin`: what the console offers.
async fn index(admin: Admin) -> Response {
    let page = Index {
        display_name: admin.identity.display_name(),
        rule: admin.access.rule(),
    };
    render(&page, &admin.request_id)
}

/// Renders an admin page, not cacheable (it shows who has access to what).
pub(crate) fn render(page: &impl Template, request_id: &str) -> Response {
    match page.render() {
        Ok(html) => super::no_store(Html(html).into_response()),
        Err(e) => {
            tracing::error!(request_id, error = %e, "cannot render an admin page");
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Page error",
                "The page could not be rendered.",
                request_id,
            )
            .into_response()
        }
    }
}

/// The console's routes; mounted by [`super::router`] only when `[admin]` is configured.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/status", get(console::status))
        .route("/admin/access", get(access::page))
        .route("/admin/access.csv", get(access::csv))
}

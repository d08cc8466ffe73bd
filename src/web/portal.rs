//! The portal (`GET /`) and `GET /api/me`: the same entitlements, as tiles and as JSON.

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use tower_sessions::Session;

use super::AppState;
use super::auth::{self, SignedIn};
use super::errors::AppError;
use super::extract::RequestId;
use crate::clock::UnixTime;
use crate::policy::Grant;

#[derive(Template)]
#[template(path = "portal.html")]
struct Portal<'a> {
    display_name: &'a str,
    email: Option<&'a str>,
    csrf: &'a str,
    support_contact: &'a str,
    tiles: Vec<Tile>,
}

struct Tile {
    name: String,
    role: String,
    description: Option<String>,
    launch_url: String,
    expires: Option<String>,
}

/// "in 3 days", "in 5 hours": how long until a grant lapses.
pub fn expires_in(now: UnixTime, at: UnixTime) -> String {
    let secs = (at - now).max(0);
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s => ((s / 60).max(1), "minute"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("in {n} {unit}{plural}")
}

pub async fn portal(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let id = &signed_in.auth.identity;
    let snap = state.policy();
    let tiles = snap
        .policy
        .grants(id, now)
        .into_iter()
        .filter_map(|g| {
            let store = snap.store(&g.store)?;
            Some(Tile {
                name: store.name.clone(),
                role: g.role.clone(),
                description: store.description.clone(),
                launch_url: format!("/stores/{}/launch", store.id),
                expires: g.expires_at.map(|t| expires_in(now, t)),
            })
        })
        .collect();
    let page = Portal {
        display_name: id.display_name(),
        email: id.email.as_deref(),
        csrf: &signed_in.auth.csrf,
        support_contact: &state.config.support_contact,
        tiles,
    };
    let html = page.render().map_err(|e| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Page error",
            format!("the portal could not be drawn: {e}"),
            &signed_in.request_id,
        )
    })?;
    Ok(super::no_store(Html(html).into_response()))
}

#[derive(Serialize)]
struct MeStore<'a> {
    id: &'a str,
    name: &'a str,
    role: &'a str,
    rule: &'a str,
    url: String,
    launch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<UnixTime>,
}

#[derive(Serialize)]
struct Me<'a> {
    subject: &'a str,
    idp: &'a str,
    email: Option<&'a str>,
    name: &'a str,
    groups: &'a [String],
    roles: &'a [String],
    acr: Option<&'a str>,
    signed_in_at: UnixTime,
    stores: Vec<MeStore<'a>>,
}

/// `GET /api/me`: 401 JSON without a session (an API never redirects to a login page).
pub async fn me(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    session: Session,
) -> Response {
    let auth = match auth::load(&session, &state, &rid).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => {
            return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "not_signed_in", "message": "sign in at /login first"}))).into_response();
        }
        Err(e) => {
            return (e.status, Json(serde_json::json!({"error": "unavailable", "message": e.message, "reference": rid}))).into_response();
        }
    };
    let now = state.clock.now();
    let id = &auth.identity;
    let snap = state.policy();
    let grants: Vec<Grant> = snap.policy.grants(id, now);
    let stores = grants
        .iter()
        .filter_map(|g| {
            let s = snap.store(&g.store)?;
            Some(MeStore {
                id: s.id.as_str(),
                name: &s.name,
                role: &g.role,
                rule: &g.rule,
                url: s.url.to_string(),
                launch: format!("/stores/{}/launch", s.id),
                expires_at: g.expires_at,
            })
        })
        .collect();
    let me = Me {
        subject: &id.subject,
        idp: id.idp.as_str(),
        email: id.email.as_deref(),
        name: id.display_name(),
        groups: &id.groups,
        roles: &id.roles,
        acr: id.auth.acr.as_deref(),
        signed_in_at: id.signed_in_at,
        stores,
    };
    super::no_store(Json(me).into_response())
}

#[cfg(test)]
mod tests {
    use super::expires_in;

    #[test]
    fn expiry_is_said_in_words() {
        assert_eq!(expires_in(0, 3 * 86_400), "in 3 days");
        assert_eq!(expires_in(0, 86_400 + 5), "in 1 day");
        assert_eq!(expires_in(0, 5 * 3_600), "in 5 hours");
        assert_eq!(expires_in(0, 3_600), "in 1 hour");
        assert_eq!(expires_in(0, 90), "in 1 minute");
        assert_eq!(expires_in(0, 600), "in 10 minutes");
    }
}

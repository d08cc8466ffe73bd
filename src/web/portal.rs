//! The portal (`GET /`) and `GET /api/me`: the same entitlements, as tiles and as JSON; pins
//! (`POST /portal/pins`) and logos served from configured SVG files.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::AppState;
use super::auth::{self, SignedIn};
use super::errors::AppError;
use super::extract::RequestId;
use super::portal_prefs::Prefs;
use super::portal_tiles::{self, Section, Tile};
use crate::clock::UnixTime;
use crate::config::Logo;
use crate::flows::control_panel;
use crate::identity::Identity;
use crate::policy::Grant;
use crate::reload::PolicySnapshot;

#[derive(Template)]
#[template(path = "portal.html")]
struct Portal<'a> {
    display_name: &'a str,
    email: Option<&'a str>,
    csrf: &'a str,
    support_contact: &'a str,
    /// The search as typed (`?q=`), put back in the box.
    query: &'a str,
    /// The tag kind the rest is grouped by (`?group=`), if any.
    group_by: Option<&'a str>,
    /// Tag kinds offered in the "Group by" list.
    group_kinds: Vec<String>,
    sections: Vec<Section>,
    total: usize,
    shown: usize,
    /// Set when the pin list could not be read: the page still works, in plain order.
    prefs_note: Option<&'a str>,
}

impl Portal<'_> {
    fn is_group(&self, kind: &str) -> bool {
        self.group_by == Some(kind)
    }
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

#[derive(Deserialize, Default)]
pub struct PortalQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    group: String,
}

/// The longest search kept: a store name, not a document.
const MAX_QUERY: usize = 100;

/// `GET /`: the person's stores as tiles (pinned and recent first, searchable, grouped by a tag).
pub async fn portal(
    State(state): State<AppState>,
    Query(query): Query<PortalQuery>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let id = &signed_in.auth.identity;
    let snap = state.policy();
    let tiles = tiles(&snap, id, state.clock.now());
    let q: String = query.q.trim().chars().take(MAX_QUERY).collect();
    let group_kinds = portal_tiles::group_kinds(&tiles);
    // Only a kind the tiles have: anything else in the URL is ignored, not echoed.
    let group_by = group_kinds.iter().find(|k| **k == query.group).cloned();
    let (prefs, prefs_note) = prefs(&state, &signed_in).await;
    let total = tiles.len();
    let sections = portal_tiles::arrange(tiles, &prefs, &q, group_by.as_deref());
    let shown = sections
        .iter()
        .flat_map(|s| s.tiles.iter())
        .filter(|t| !t.hidden)
        .count();
    let page = Portal {
        display_name: id.display_name(),
        email: id.email.as_deref(),
        csrf: &signed_in.auth.csrf,
        support_contact: &state.config.support_contact,
        query: &q,
        group_by: group_by.as_deref(),
        group_kinds,
        sections,
        total,
        shown,
        prefs_note,
    };
    render_portal(&page, &snap, &signed_in.request_id)
}

/// One tile per store the person is granted now. The control panel belongs to the store hash:
/// every tile of a granted hash offers it.
fn tiles(snap: &PolicySnapshot, id: &Identity, now: UnixTime) -> Vec<Tile> {
    let cp_grants = snap.policy.control_panel_grants(id, now);
    snap.policy
        .grants(id, now)
        .into_iter()
        .filter_map(|g| {
            let store = snap.store(&g.store)?;
            let mut tile = Tile::new(store, &g.role, g.expires_at.map(|t| expires_in(now, t)));
            if cp_grants.contains_key(&store.account) {
                tile.control_panel = Some(control_panel::entry_path(&store.account));
            }
            Some(tile)
        })
        .collect()
}

/// The person's pins and recent stores; when they cannot be read the page still works, in
/// plain order, with a note saying so.
async fn prefs(state: &AppState, signed_in: &SignedIn) -> (Prefs, Option<&'static str>) {
    match state.portal_prefs.get(&signed_in.auth.identity).await {
        Ok(p) => (p, None),
        Err(e) => {
            tracing::warn!(request_id = %signed_in.request_id, error = %e, "portal preferences unavailable; plain order");
            (
                Prefs::default(),
                Some(
                    "Pinned and recent stores cannot be shown right now; every store is listed below.",
                ),
            )
        }
    }
}

/// The page, not cacheable, with the portal's own Content-Security-Policy.
fn render_portal(
    page: &Portal<'_>,
    snap: &PolicySnapshot,
    rid: &str,
) -> Result<Response, AppError> {
    let html = page.render().map_err(|e| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Page error",
            format!("the portal could not be drawn: {e}"),
            rid,
        )
    })?;
    let mut resp = super::no_store(Html(html).into_response());
    // The portal alone runs a script (its own filter) and shows logos from configured origins.
    if let Ok(csp) = HeaderValue::from_str(&portal_csp(snap)) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(resp)
}

/// The portal's Content-Security-Policy: the site's own, plus `script-src 'self'` for
/// `/static/portal.js` and the origins of `https://` logos.
fn portal_csp(snap: &PolicySnapshot) -> String {
    let mut origins: Vec<String> = snap
        .stores
        .iter()
        .filter_map(|s| match &s.logo {
            Some(Logo::Url(u)) => Some(u.origin().ascii_serialization()),
            _ => None,
        })
        .collect();
    origins.sort();
    origins.dedup();
    let mut img = String::from("'self' data:");
    for o in origins {
        img.push(' ');
        img.push_str(&o);
    }
    format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src {img}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

#[derive(Deserialize)]
pub struct PinForm {
    csrf: Option<String>,
    store: String,
    /// "1" pins, "0" unpins.
    pin: String,
}

/// `POST /portal/pins`: pins or unpins one of the person's stores, then back to the portal (303).
/// Same-site forms only (the session's CSRF token); only a store the person has may be pinned.
pub async fn pin(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Form(form): Form<PinForm>,
) -> Result<Response, AppError> {
    let rid = &signed_in.request_id;
    let pinned = pin_request(&form, &signed_in)?;
    let id = &signed_in.auth.identity;
    let has_it = state
        .policy()
        .policy
        .grants(id, state.clock.now())
        .iter()
        .any(|g| g.store.as_str() == form.store);
    // Unpinning a store one has lost is allowed (it cleans the record); pinning needs a grant.
    if pinned && !has_it {
        return Err(AppError::not_found(
            "You have no store with this name to pin.",
            rid,
        ));
    }
    save_pin(&state, &signed_in, &form.store, pinned).await?;
    Ok(super::no_store(
        Redirect::to(&format!("/#tile-{}", form.store)).into_response(),
    ))
}

/// The form's CSRF token checked, and whether it pins (`true`) or unpins.
fn pin_request(form: &PinForm, signed_in: &SignedIn) -> Result<bool, AppError> {
    let rid = &signed_in.request_id;
    let token_ok = form
        .csrf
        .as_deref()
        .is_some_and(|t| crate::secret::ct_eq(t, &signed_in.auth.csrf));
    if !token_ok {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "Change refused",
            "The request to pin a store did not come from this site's own page.",
            rid,
        )
        .with_hint("Go back to your stores and use the pin button there."));
    }
    match form.pin.as_str() {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(AppError::bad_request(
            "The pin request must say pin (1) or unpin (0).",
            rid,
        )),
    }
}

/// Records the pin; a full pin list is a 409 that says so, an unreachable store a 503.
async fn save_pin(
    state: &AppState,
    signed_in: &SignedIn,
    store: &str,
    pinned: bool,
) -> Result<(), AppError> {
    let rid = &signed_in.request_id;
    match state
        .portal_prefs
        .update(&signed_in.auth.identity, |p| p.pin(store, pinned))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refused)) => Err(AppError::new(
            StatusCode::CONFLICT,
            "Not pinned",
            refused,
            rid,
        )),
        Err(e) => {
            tracing::warn!(request_id = %rid, error = %e, "cannot save portal preferences");
            Err(AppError::unavailable("The preference store", rid))
        }
    }
}

/// Puts `store` first among the person's recently opened stores, without holding up the launch
/// that called it (see `PrefsStore::opened`).
pub fn remember_opened(state: &AppState, id: &Identity, store: &str) {
    state.portal_prefs.opened(id, store);
}

/// `GET /static/logos/{store}.svg`: a logo configured as an SVG file. Served with a policy that
/// runs no script, should someone open it directly rather than as an image.
pub async fn logo(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let snap = state.policy();
    let svg = file
        .strip_suffix(".svg")
        .and_then(|id| snap.stores.iter().find(|s| s.id.as_str() == id))
        .and_then(|s| match &s.logo {
            Some(Logo::Svg(svg)) => Some(svg.clone()),
            _ => None,
        });
    match svg {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            svg.to_string(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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
    /// The "Control panel" entry, when the person holds a control-panel grant for the hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    control_panel: Option<String>,
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
    let cp_grants = snap.policy.control_panel_grants(id, now);
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
                control_panel: cp_grants
                    .contains_key(&s.account)
                    .then(|| control_panel::entry_path(&s.account)),
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

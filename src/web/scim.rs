//! `/scim/v2/...`: the HTTP edge of the SCIM service. Handlers unpack the request, call
//! [`ScimService`], and answer `application/scim+json`; every [`ScimError`] becomes a SCIM error
//! body here (RFC 7644 §3.12). Authentication is a middleware in front of every route: a bearer
//! token or HTTP Basic, compared in constant time, 401 with `WWW-Authenticate` otherwise.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::AppState;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::config::provisioning::ScimConfig;
use crate::provisioning::scim::store::Kind;
use crate::provisioning::scim::wire::{
    self, ErrorBody, ListQuery, PatchRequest, ScimType, SearchRequest,
};
use crate::provisioning::scim::{Change, ScimError, ScimService};
use crate::secret::ct_eq;

/// The routes, mounted at `/scim/v2` when SCIM is enabled.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", post(search_users))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/.search", post(search_groups))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/.search", post(root_search))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Who called, as recorded in audit events.
#[derive(Debug, Clone)]
struct Actor(String);

fn check_credentials(cfg: &ScimConfig, headers: &HeaderMap) -> Option<Actor> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        let want = cfg.bearer_token.as_ref()?;
        ct_eq(rest, want.expose()).then(|| Actor("scim:bearer".into()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let (user, password) = cfg.basic.as_ref()?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (u, p) = decoded.split_once(':')?;
        // Both compared, always, so a wrong user name takes as long as a wrong password.
        let ok = ct_eq(u, user) & ct_eq(p, password.expose());
        ok.then(|| Actor(format!("scim:basic:{user}")))
    } else {
        None
    }
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(cfg) = state.config.scim.as_ref() else {
        return error(&ScimError::status(404, "SCIM is not enabled"));
    };
    match check_credentials(cfg, req.headers()) {
        Some(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        None => {
            let mut resp = error(&ScimError::status(401, "authentication required"));
            let mut challenges = Vec::new();
            if cfg.bearer_token.is_some() {
                challenges.push("Bearer realm=\"storegate-scim\"");
            }
            if cfg.basic.is_some() {
                challenges.push("Basic realm=\"storegate-scim\", charset=\"UTF-8\"");
            }
            for c in challenges {
                resp.headers_mut()
                    .append(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
            }
            resp
        }
    }
}

/// Whether a request's path is a SCIM one, whose 413 [`too_large_as_scim_error`] rewrites.
pub(super) fn is_scim_path(path: &str) -> bool {
    path == "/scim/v2" || path.starts_with("/scim/v2/")
}

/// A 413 on a SCIM path, from the body limit in front of every route (an empty body) or from
/// reading a chunked body past it (plain text), becomes a SCIM error (RFC 7644 §3.12).
/// `web::edge::ScimTooLarge` calls this for SCIM paths only.
pub(super) fn too_large_as_scim_error(resp: Response) -> Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(&ScimError::status(
            413,
            format!(
                "the request body is larger than {} KiB",
                super::MAX_BODY / 1024
            ),
        ));
    }
    resp
}

fn scim_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE),
    );
    resp
}

/// The one translation of a [`ScimError`] into a response.
fn error(e: &ScimError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    scim_json(
        status,
        &ErrorBody {
            schemas: [wire::ERROR_SCHEMA],
            status: e.status.to_string(),
            scim_type: e.scim_type,
            detail: e.detail.clone(),
        },
    )
}

/// A resource with its `ETag` (RFC 7644 §3.14) and, when created, `Location`.
fn resource(status: StatusCode, v: &Value) -> Response {
    let mut resp = scim_json(status, v);
    if let Some(ver) = v.pointer("/meta/version").and_then(Value::as_str)
        && let Ok(h) = HeaderValue::from_str(ver)
    {
        resp.headers_mut().insert(header::ETAG, h);
    }
    if status == StatusCode::CREATED
        && let Some(loc) = v.pointer("/meta/location").and_then(Value::as_str)
        && let Ok(h) = HeaderValue::from_str(loc)
    {
        resp.headers_mut().insert(header::LOCATION, h);
    }
    resp
}

fn base(state: &AppState) -> String {
    format!("{}/scim/v2", state.config.base_url())
}

fn body_json(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|e| {
        ScimError::bad(
            ScimType::InvalidSyntax,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn service(state: &AppState) -> Result<&ScimService, ScimError> {
    state
        .scim
        .as_deref()
        .ok_or_else(|| ScimError::status(503, "the SCIM service is not running"))
}

/// Every change is an audit event: actor, target, before -> after, request id.
fn audit(state: &AppState, headers: &HeaderMap, actor: &Actor, change: &Change) {
    let mut ev = AuditEvent::new(
        state.clock.now(),
        &request_id(headers),
        EventKind::ScimChange,
        Outcome::Allow,
    );
    let kind = if change.kind == Kind::User {
        "User"
    } else {
        "Group"
    };
    ev.actor = Some(actor.0.clone());
    ev.target = Some(format!("{kind}/{} ({})", change.id, change.name));
    ev.reason = Some(change.action.to_owned());
    ev.before = change.before.clone();
    ev.after = change.after.clone();
    if change.kind == Kind::Group {
        ev.members_added = Some(change.members_added.clone());
        ev.members_removed = Some(change.members_removed.clone());
    }
    state.audit.record(ev);
}

fn answer(r: Result<Response, ScimError>) -> Response {
    r.unwrap_or_else(|e| error(&e))
}

async fn service_provider_config(State(state): State<AppState>) -> Response {
    scim_json(
        StatusCode::OK,
        &wire::service_provider_config(&base(&state)),
    )
}

fn list_of(items: Vec<Value>) -> Response {
    let n = items.len();
    scim_json(StatusCode::OK, &wire::ListResponse::new(n, 1, items))
}

async fn resource_types(State(state): State<AppState>) -> Response {
    list_of(wire::resource_types(&base(&state)))
}

fn by_id(items: Vec<Value>, id: &str, what: &str) -> Response {
    match items
        .into_iter()
        .find(|v| v.get("id").and_then(Value::as_str) == Some(id))
    {
        Some(v) => scim_json(StatusCode::OK, &v),
        None => error(&ScimError::status(404, format!("no {what} {id}"))),
    }
}

async fn resource_type(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    by_id(wire::resource_types(&base(&state)), &id, "resource type")
}

async fn schemas(State(state): State<AppState>) -> Response {
    list_of(wire::schemas(&base(&state)))
}

async fn schema(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    by_id(wire::schemas(&base(&state)), &id, "schema")
}

/// Searching several resource types at once (RFC 7644 §3.4.3 at the root) is not offered.
async fn root_search() -> Response {
    error(&ScimError::status(
        501,
        "search across resource types is not supported; search /Users or /Groups",
    ))
}

async fn not_found() -> Response {
    error(&ScimError::status(404, "no such SCIM endpoint"))
}

async fn list(state: &AppState, kind: Kind, q: ListQuery) -> Response {
    answer(
        async {
            let page = service(state)?.list(kind, &q, &base(state)).await?;
            Ok(scim_json(StatusCode::OK, &page))
        }
        .await,
    )
}

async fn search(state: &AppState, kind: Kind, body: Bytes) -> Response {
    answer(
        async {
            let req: SearchRequest = serde_json::from_value(body_json(&body)?)
                .map_err(|e| ScimError::bad(ScimType::InvalidSyntax, e.to_string()))?;
            Ok(list(state, kind, req.into()).await)
        }
        .await,
    )
}

async fn create(
    state: &AppState,
    kind: Kind,
    headers: &HeaderMap,
    actor: &Actor,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (v, change) = service(state)?
                .create(kind, body_json(&body)?, &base(state))
                .await?;
            audit(state, headers, actor, &change);
            Ok(resource(StatusCode::CREATED, &v))
        }
        .await,
    )
}

async fn fetch(
    state: &AppState,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    q: ListQuery,
) -> Response {
    answer(
        async {
            let v = service(state)?.get(kind, id, &base(state)).await?;
            let v = crate::provisioning::scim::project(
                v,
                q.attributes.as_deref(),
                q.excluded_attributes.as_deref(),
            );
            // RFC 7644 §3.14: If-None-Match with the current version answers 304.
            let current = v
                .pointer("/meta/version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(inm) = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|h| h.to_str().ok())
                && inm.split(',').any(|t| t.trim() == current)
            {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
            Ok(resource(StatusCode::OK, &v))
        }
        .await,
    )
}

async fn replace(
    state: &AppState,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    actor: &Actor,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (v, change) = service(state)?
                .replace(
                    kind,
                    id,
                    body_json(&body)?,
                    if_match(headers).as_deref(),
                    &base(state),
                )
                .await?;
            audit(state, headers, actor, &change);
            Ok(resource(StatusCode::OK, &v))
        }
        .await,
    )
}

async fn patch(
    state: &AppState,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    actor: &Actor,
    body: Bytes,
) -> Response {
    answer(
        async {
            let req: PatchRequest = serde_json::from_value(body_json(&body)?).map_err(|e| {
                ScimError::bad(
                    ScimType::InvalidSyntax,
                    format!("not a PatchOp message: {e}"),
                )
            })?;
            let (v, change) = service(state)?
                .patch(kind, id, req, if_match(headers).as_deref(), &base(state))
                .await?;
            audit(state, headers, actor, &change);
            Ok(resource(StatusCode::OK, &v))
        }
        .await,
    )
}

async fn remove(
    state: &AppState,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    actor: &Actor,
) -> Response {
    answer(
        async {
            let change = service(state)?
                .delete(kind, id, if_match(headers).as_deref())
                .await?;
            audit(state, headers, actor, &change);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

type Ext = axum::Extension<Actor>;

async fn list_users(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => list(&s, Kind::User, q).await,
        Err(e) => error(&ScimError::bad(ScimType::InvalidValue, e.body_text())),
    }
}
async fn list_groups(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => list(&s, Kind::Group, q).await,
        Err(e) => error(&ScimError::bad(ScimType::InvalidValue, e.body_text())),
    }
}
async fn search_users(State(s): State<AppState>, body: Bytes) -> Response {
    search(&s, Kind::User, body).await
}
async fn search_groups(State(s): State<AppState>, body: Bytes) -> Response {
    search(&s, Kind::Group, body).await
}
async fn create_user(State(s): State<AppState>, h: HeaderMap, a: Ext, body: Bytes) -> Response {
    create(&s, Kind::User, &h, &a.0, body).await
}
async fn create_group(State(s): State<AppState>, h: HeaderMap, a: Ext, body: Bytes) -> Response {
    create(&s, Kind::Group, &h, &a.0, body).await
}
async fn get_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: Query<ListQuery>,
) -> Response {
    fetch(&s, Kind::User, &id, &h, q.0).await
}
async fn get_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: Query<ListQuery>,
) -> Response {
    fetch(&s, Kind::Group, &id, &h, q.0).await
}
async fn put_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
    body: Bytes,
) -> Response {
    replace(&s, Kind::User, &id, &h, &a.0, body).await
}
async fn put_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
    body: Bytes,
) -> Response {
    replace(&s, Kind::Group, &id, &h, &a.0, body).await
}
async fn patch_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
    body: Bytes,
) -> Response {
    patch(&s, Kind::User, &id, &h, &a.0, body).await
}
async fn patch_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
    body: Bytes,
) -> Response {
    patch(&s, Kind::Group, &id, &h, &a.0, body).await
}
async fn delete_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
) -> Response {
    remove(&s, Kind::User, &id, &h, &a.0).await
}
async fn delete_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    a: Ext,
) -> Response {
    remove(&s, Kind::Group, &id, &h, &a.0).await
}

//! Simulated webhooks (`/stores/{hash}/v3/hooks`) and their delivery, as docs/bigcommerce.md
//! ("Webhooks and logs") describes them:
//! - `POST /v3/hooks` takes `{scope, destination, is_active, headers}`; the destination must be
//!   `https` on port 443 (a test may allow plain-http loopback destinations with
//!   [`SimHandle::dangerously_allow_loopback_http_hook_destinations`]);
//! - a delivery is a POST of `{scope, store_id, data{type,id}, hash, created_at, producer}` with the
//!   hook's own headers; a non-2xx answer is retried, and after the last retry the hook is
//!   deactivated (`is_active: false`). BigCommerce retries for 48 hours; the simulator compresses
//!   that schedule to [`RETRY_DELAYS`] so a test sees the whole life of a failing hook.

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use super::SimHandle;

/// Scopes the simulator knows (the customer and B2B company scopes docs/bigcommerce.md lists, with
/// their wildcards). Anything else is refused with 422, as an unknown scope is by BigCommerce.
pub const KNOWN_SCOPES: &[&str] = &[
    "store/customer/*",
    "store/customer/created",
    "store/customer/updated",
    "store/customer/deleted",
    "store/customer/channel/login/access/updated",
    "store/company/*",
    "store/company/created",
    "store/company/updated",
    "store/company/deleted",
    "store/company/statusUpdated",
    "store/company/user/*",
    "store/company/user/created",
    "store/company/user/updated",
    "store/company/user/deleted",
];

/// The simulator's compressed stand-in for BigCommerce's 48 hours of retries: the wait before
/// each retry; after the last one fails the hook is deactivated.
pub const RETRY_DELAYS: &[Duration] = &[
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimHook {
    pub id: u64,
    pub scope: String,
    pub destination: String,
    pub is_active: bool,
    pub headers: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SimHook {
    /// Whether an event of `scope` goes to this hook: the same scope, or a `.../*` wildcard
    /// covering it.
    pub fn covers(&self, scope: &str) -> bool {
        match self.scope.strip_suffix('*') {
            Some(prefix) => scope.starts_with(prefix),
            None => self.scope == scope,
        }
    }
}

/// One delivery attempt, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDelivery {
    pub hook_id: u64,
    pub scope: String,
    pub attempt: u32,
    /// The destination's answer; `None` when it could not be reached.
    pub status: Option<u16>,
    /// The body sent (a test replays it byte for byte, as BigCommerce's retry does).
    pub payload: Value,
}

/// The hook routes; [`super::api::router`] puts them behind its guard (token, quota).
pub(super) fn routes() -> Router<SimHandle> {
    Router::new()
        .route("/stores/{hash}/v3/hooks", get(list).post(create))
        .route(
            "/stores/{hash}/v3/hooks/{id}",
            get(one).put(update).delete(remove),
        )
}

fn error(status: StatusCode, title: &str) -> Response {
    (
        status,
        axum::Json(json!({ "status": status.as_u16(), "title": title, "errors": {} })),
    )
        .into_response()
}

/// Checks a destination against BigCommerce's rule: https on port 443.
fn check_destination(raw: &str, allow_loopback_http: bool) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("destination is not a URL: {e}"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() == "http" && allow_loopback_http && loopback {
        return Ok(());
    }
    if url.scheme() != "https" {
        return Err("destination must use https".into());
    }
    if url.port_or_known_default() != Some(443) {
        return Err("destination must be on port 443".into());
    }
    Ok(())
}

fn headers_of(v: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_owned())),
                None => Err(format!("header {k} must be a string")),
            })
            .collect(),
        Some(_) => Err("headers must be an object of strings".into()),
    }
}

async fn list(State(sim): State<SimHandle>, Path(hash): Path<String>) -> Response {
    let hooks = sim.hooks(&hash);
    axum::Json(json!({ "data": hooks, "meta": {} })).into_response()
}

async fn one(State(sim): State<SimHandle>, Path((hash, id)): Path<(String, u64)>) -> Response {
    match sim.hooks(&hash).into_iter().find(|h| h.id == id) {
        Some(h) => axum::Json(json!({ "data": h, "meta": {} })).into_response(),
        None => error(StatusCode::NOT_FOUND, "Webhook not found"),
    }
}

async fn create(State(sim): State<SimHandle>, Path(hash): Path<String>, body: Bytes) -> Response {
    let Ok(item) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "The body is not JSON");
    };
    let scope = item.get("scope").and_then(Value::as_str).unwrap_or("");
    if !KNOWN_SCOPES.contains(&scope) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Unknown scope \"{scope}\""),
        );
    }
    let destination = item
        .get("destination")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Err(e) = check_destination(destination, sim.loopback_hooks_allowed()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &e);
    }
    let headers = match headers_of(item.get("headers")) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let is_active = item
        .get("is_active")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let now = sim.store_now();
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return error(StatusCode::NOT_FOUND, "Store not found");
    };
    let id = store.next_id();
    let hook = SimHook {
        id,
        scope: scope.to_owned(),
        destination: destination.to_owned(),
        is_active,
        headers,
        created_at: now,
        updated_at: now,
    };
    store.hooks.insert(id, hook.clone());
    axum::Json(json!({ "data": hook, "meta": {} })).into_response()
}

async fn update(
    State(sim): State<SimHandle>,
    Path((hash, id)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    let Ok(item) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "The body is not JSON");
    };
    if let Some(d) = item.get("destination").and_then(Value::as_str)
        && let Err(e) = check_destination(d, sim.loopback_hooks_allowed())
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, &e);
    }
    let headers = match item.get("headers").map(|h| headers_of(Some(h))).transpose() {
        Ok(h) => h,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let now = sim.store_now();
    let mut st = sim.0.state.lock();
    let Some(hook) = st.stores.get_mut(&hash).and_then(|s| s.hooks.get_mut(&id)) else {
        return error(StatusCode::NOT_FOUND, "Webhook not found");
    };
    if let Some(d) = item.get("destination").and_then(Value::as_str) {
        hook.destination = d.to_owned();
    }
    if let Some(a) = item.get("is_active").and_then(Value::as_bool) {
        hook.is_active = a;
    }
    if let Some(h) = headers {
        hook.headers = h;
    }
    hook.updated_at = now;
    axum::Json(json!({ "data": hook.clone(), "meta": {} })).into_response()
}

async fn remove(State(sim): State<SimHandle>, Path((hash, id)): Path<(String, u64)>) -> Response {
    let mut st = sim.0.state.lock();
    match st.stores.get_mut(&hash).and_then(|s| s.hooks.remove(&id)) {
        Some(h) => axum::Json(json!({ "data": h, "meta": {} })).into_response(),
        None => error(StatusCode::NOT_FOUND, "Webhook not found"),
    }
}

/// SHA-256 hex of the data (BigCommerce uses SHA-1 of the JSON data; only "same event, same
/// hash" matters here).
fn data_hash(data: &Value) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends one event to every active hook of the store that covers `scope`, each in its own task
/// with retries. Called with the state unlocked.
pub(super) fn fire(sim: &SimHandle, hash: &str, scope: &str, kind: &str, id: u64) {
    let hooks: Vec<SimHook> = {
        let st = sim.0.state.lock();
        st.stores
            .get(hash)
            .map(|s| {
                s.hooks
                    .values()
                    .filter(|h| h.is_active && h.covers(scope))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    if hooks.is_empty() {
        return;
    }
    let data = json!({ "type": kind, "id": id });
    let payload = json!({
        "scope": scope,
        "store_id": sim.store_id(hash),
        "data": data,
        "hash": data_hash(&data),
        "created_at": sim.store_now(),
        "producer": format!("stores/{hash}"),
    });
    for hook in hooks {
        let sim = sim.clone();
        let hash = hash.to_owned();
        let payload = payload.clone();
        let scope = scope.to_owned();
        tokio::spawn(async move { deliver(sim, hash, hook, scope, payload).await });
    }
}

async fn deliver(sim: SimHandle, hash: String, hook: SimHook, scope: String, payload: Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let Ok(client) = client else { return };
    let mut attempt = 0u32;
    loop {
        let mut req = client.post(&hook.destination).json(&payload);
        for (k, v) in &hook.headers {
            req = req.header(k, v);
        }
        let status = req.send().await.ok().map(|r| r.status().as_u16());
        sim.0.state.lock().deliveries.push(HookDelivery {
            hook_id: hook.id,
            scope: scope.clone(),
            attempt,
            status,
            payload: payload.clone(),
        });
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(wait) = RETRY_DELAYS.get(attempt as usize) else {
            // Out of retries: BigCommerce deactivates the hook.
            let mut st = sim.0.state.lock();
            if let Some(h) = st
                .stores
                .get_mut(&hash)
                .and_then(|s| s.hooks.get_mut(&hook.id))
            {
                h.is_active = false;
            }
            return;
        };
        tokio::time::sleep(*wait).await;
        attempt += 1;
    }
}

/// A stable numeric store id per hash (BigCommerce's `store_id` is a number as a string).
pub(super) fn numeric_store_id(hash: &str) -> String {
    let n = hash
        .bytes()
        .fold(1_000_000u64, |acc, b| (acc * 31 + u64::from(b)) % 9_000_000);
    (1_000_000 + n).to_string()
}

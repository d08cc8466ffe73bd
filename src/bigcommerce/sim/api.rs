//! The simulated Management API under `/stores/{hash}/...`: authentication, rate limits, fault
//! injection (in [`guard`]), then customers v3 (with custom attributes and their values), customer
//! groups v2, time.

// Helpers answer early with a whole `Response`; boxing it would only add noise to a test double.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::SimHandle;
use super::state::{MAX_ATTRIBUTES, SimAttribute, SimCustomer, SimCustomerGroup, StoreData};

pub(super) fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/stores/{hash}/v2/time", get(time))
        .route(
            "/stores/{hash}/v3/customers",
            get(list_customers)
                .post(create_customers)
                .put(update_customers)
                .delete(delete_customers),
        )
        .route(
            "/stores/{hash}/v3/customers/attributes",
            get(list_attributes).post(create_attributes),
        )
        .route(
            "/stores/{hash}/v3/customers/attribute-values",
            get(list_attribute_values).put(upsert_attribute_values),
        )
        .route(
            "/stores/{hash}/v2/customer_groups",
            get(list_groups).post(create_group),
        )
        .merge(super::hooks::routes())
        .route_layer(from_fn_with_state(sim.clone(), guard))
        .with_state(sim)
}

/// A v3 error body, shaped like BigCommerce's.
fn v3_error(status: StatusCode, title: &str, errors: Value) -> Response {
    let body = json!({
        "status": status.as_u16(),
        "title": title,
        "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
        "errors": errors,
    });
    (status, axum::Json(body)).into_response()
}

/// A v2 error body: `[{"status", "message"}]`.
fn v2_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{ "status": status.as_u16(), "message": message }])),
    )
        .into_response()
}

/// Authentication, the per-store quota and injected failures; every answer carries the four
/// `X-Rate-Limit-*` headers.
async fn guard(State(sim): State<SimHandle>, req: Request, next: Next) -> Response {
    let hash = req
        .uri()
        .path()
        .strip_prefix("/stores/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let Some(store) = sim.store(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let authed = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        == Some(store.access_token.expose());
    let quota = sim.0.config.requests_per_window;
    let window_ms = sim.0.config.window_ms;

    let (verdict, left, reset_ms, after) = {
        let mut st = sim.0.state.lock();
        let missing_scope =
            required_scope(req.uri().path()).filter(|scope| st.revoked_scopes.contains(*scope));
        // An injected 429 comes first, spends no quota and leaves other injections pending.
        let throttled = if authed { st.take_throttle() } else { None };
        let injected = if authed && throttled.is_none() {
            st.take_failure()
        } else {
            None
        };
        let Some(data) = st.stores.get_mut(&hash) else {
            return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
        };
        data.api_calls += 1;
        if let Some(id) = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            data.request_ids.push(id.to_owned());
        }
        let elapsed = u64::try_from(data.window_start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if elapsed >= window_ms {
            data.window_start = std::time::Instant::now();
            data.used_in_window = 0;
        }
        let mut reset_ms = window_ms.saturating_sub(elapsed.min(window_ms));
        let too_many = || {
            v3_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                json!({}),
            )
        };
        let verdict = if !authed {
            Err(v3_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: missing or wrong X-Auth-Token",
                json!({}),
            ))
        } else if let Some(scope) = missing_scope {
            Err(v3_error(
                StatusCode::FORBIDDEN,
                "You don't have a required scope to access the endpoint",
                json!({ "scope": scope }),
            ))
        } else if let Some(injected_reset) = throttled {
            data.rate_limited += 1;
            reset_ms = injected_reset;
            Err(too_many())
        } else if data.used_in_window >= quota {
            data.rate_limited += 1;
            Err(too_many())
        } else {
            data.used_in_window += 1;
            match injected {
                Some(status) => Err(v3_error(status, "Simulated failure", json!({}))),
                None => Ok(()),
            }
        };
        let left = if throttled.is_some() {
            0
        } else {
            quota.saturating_sub(data.used_in_window)
        };
        let after = if verdict.is_ok() {
            st.take_failure_after()
        } else {
            None
        };
        (verdict, left, reset_ms, after)
    };

    let mut resp = match verdict {
        Ok(()) => {
            let done = next.run(req).await;
            match after {
                Some(status) => v3_error(status, "Simulated failure after the change", json!({})),
                None => done,
            }
        }
        Err(resp) => resp,
    };
    let h = resp.headers_mut();
    h.insert("x-rate-limit-time-window-ms", HeaderValue::from(window_ms));
    h.insert("x-rate-limit-time-reset-ms", HeaderValue::from(reset_ms));
    h.insert("x-rate-limit-requests-quota", HeaderValue::from(quota));
    h.insert("x-rate-limit-requests-left", HeaderValue::from(left));
    resp
}

/// The OAuth scope an endpoint needs (BigCommerce's API account scopes), `None` for `/v2/time`.
fn required_scope(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/stores/")?.split_once('/')?.1;
    if rest.starts_with("v3/customers") || rest.starts_with("v2/customer_groups") {
        Some("store_v2_customers")
    } else if rest.starts_with("v3/hooks") {
        Some("store_v2_information")
    } else {
        None
    }
}

async fn time(State(sim): State<SimHandle>) -> Response {
    axum::Json(json!({ "time": sim.store_now() })).into_response()
}

fn list_values(q: &HashMap<String, String>, key: &str) -> Option<Vec<String>> {
    q.get(key).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn pagination(total: usize, count: usize, per_page: usize, page: usize) -> Value {
    json!({
        "total": total,
        "count": count,
        "per_page": per_page,
        "current_page": page,
        "total_pages": total.div_ceil(per_page.max(1)),
    })
}

fn parse_ids(raw: Option<Vec<String>>) -> Result<Option<Vec<u64>>, Response> {
    raw.map(|v| {
        v.iter()
            .map(|s| s.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
    })
    .transpose()
    .map_err(|_| {
        v3_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid filter: ids must be integers",
            json!({}),
        )
    })
}

async fn list_customers(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let emails = list_values(&q, "email:in");
    let ids = match parse_ids(list_values(&q, "id:in")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = match parse_ids(list_values(&q, "customer_group_id:in")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let limit = q
        .get("limit")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 250);
    let st = sim.0.state.lock();
    let Some(store) = st.stores.get(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let matching: Vec<&SimCustomer> = store
        .customers
        .values()
        .filter(|c| {
            emails
                .as_ref()
                .is_none_or(|e| e.iter().any(|e| e.eq_ignore_ascii_case(&c.email)))
        })
        .filter(|c| ids.as_ref().is_none_or(|i| i.contains(&c.id)))
        .filter(|c| {
            groups
                .as_ref()
                .is_none_or(|g| g.contains(&c.customer_group_id))
        })
        .collect();
    let with_attributes =
        list_values(&q, "include").is_some_and(|i| i.iter().any(|v| v == "attributes"));
    let data: Vec<Value> = matching
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|c| {
            let mut v = json!(c);
            if with_attributes {
                v["attributes"] = json!(store.attribute_values_of(c.id));
            }
            v
        })
        .collect();
    axum::Json(json!({
        "data": data,
        "meta": { "pagination": pagination(matching.len(), data.len(), limit, page) },
    }))
    .into_response()
}

/// Validates `channel_ids`: absent or null keeps `current`, an empty array is invalid, and every
/// id must be a channel of this store.
fn channel_ids(
    item: &Value,
    known: &[u64],
    current: Option<Vec<u64>>,
) -> Result<Option<Vec<u64>>, String> {
    match item.get("channel_ids") {
        None => Ok(current),
        Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.is_empty() => {
            Err("channel_ids must not be an empty array (use null for all channels)".into())
        }
        Some(Value::Array(a)) => {
            let ids: Option<Vec<u64>> = a.iter().map(Value::as_u64).collect();
            let ids = ids.ok_or("channel_ids must be integers")?;
            match ids.iter().find(|id| !known.contains(id)) {
                Some(bad) => Err(format!("channel {bad} does not exist")),
                None => Ok(Some(ids)),
            }
        }
        Some(_) => Err("channel_ids must be an array or null".into()),
    }
}

fn required_text(item: &Value, field: &str) -> Result<String, String> {
    match item.get(field).and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{field} is required")),
    }
}

fn optional_text(item: &Value, field: &str, current: &str) -> Result<String, String> {
    match item.get(field) {
        None => Ok(current.to_owned()),
        Some(_) => required_text(item, field),
    }
}

fn group_id(item: &Value, store: &StoreData, current: u64) -> Result<u64, String> {
    match item.get("customer_group_id") {
        None => Ok(current),
        Some(v) => {
            let id = v.as_u64().ok_or("customer_group_id must be an integer")?;
            if id == 0 || store.groups.iter().any(|g| g.id == id) {
                Ok(id)
            } else {
                Err(format!("customer group {id} does not exist"))
            }
        }
    }
}

/// The body as an array of at most 10 items (413 above), as the v3 batch endpoints want.
fn batch(body: &Bytes) -> Result<Vec<Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) if items.len() > 10 => Err(v3_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request payload is too large: at most 10 items per request",
            json!({}),
        )),
        Ok(Value::Array(items)) if !items.is_empty() => Ok(items),
        _ => Err(v3_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The request body must be a non-empty JSON array",
            json!({}),
        )),
    }
}

fn invalid(title: &str, errors: HashMap<String, String>) -> Response {
    v3_error(StatusCode::UNPROCESSABLE_ENTITY, title, json!(errors))
}

async fn create_customers(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Response {
    let items = match batch(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let known: Vec<u64> = sim
        .store(&hash)
        .map(|s| s.channels.iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let mut errors = HashMap::new();
    let mut new = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| -> Result<(SimCustomer, InlineAttributes), (String, String)> {
            let email = required_text(item, "email").map_err(|e| ("email".into(), e))?;
            if !email.contains('@') {
                return Err(("email".into(), "email is not a valid address".into()));
            }
            let first_name =
                required_text(item, "first_name").map_err(|e| ("first_name".into(), e))?;
            let last_name =
                required_text(item, "last_name").map_err(|e| ("last_name".into(), e))?;
            let channels =
                channel_ids(item, &known, None).map_err(|e| ("channel_ids".into(), e))?;
            let group = group_id(item, store, 0).map_err(|e| ("customer_group_id".into(), e))?;
            let taken = store.email_taken(&email, None)
                || new
                    .iter()
                    .any(|(c, _): &(SimCustomer, _)| c.email.eq_ignore_ascii_case(&email));
            if taken {
                return Err((
                    "email".into(),
                    format!("The email address {email} is already in use by another customer."),
                ));
            }
            let attributes =
                inline_attributes(item, store).map_err(|e| ("attributes".into(), e))?;
            let origin = item
                .get("origin_channel_id")
                .and_then(Value::as_u64)
                .or_else(|| channels.as_ref().and_then(|c| c.first().copied()))
                .unwrap_or(1);
            Ok((
                SimCustomer {
                    id: 0,
                    email,
                    first_name,
                    last_name,
                    customer_group_id: group,
                    channel_ids: channels,
                    origin_channel_id: origin,
                },
                attributes,
            ))
        })();
        match parsed {
            Ok(c) => new.push(c),
            Err((field, message)) => {
                errors.insert(format!("{i}.{field}"), message);
            }
        }
    }
    if !errors.is_empty() {
        return invalid("Unable to create customers: the input is invalid", errors);
    }
    let created: Vec<Value> = new
        .into_iter()
        .filter_map(|(c, attributes)| {
            let id = store.insert_customer(c);
            for (attribute_id, value) in attributes {
                store.set_attribute_value(id, attribute_id, value);
            }
            let mut v = json!(store.customers.get(&id)?);
            v["attributes"] = json!(store.attribute_values_of(id));
            Some(v)
        })
        .collect();
    drop(st);
    for id in created.iter().filter_map(|c| c["id"].as_u64()) {
        sim.customer_changed(&hash, id, "store/customer/created");
    }
    axum::Json(json!({ "data": created, "meta": {} })).into_response()
}

async fn update_customers(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Response {
    let items = match batch(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let known: Vec<u64> = sim
        .store(&hash)
        .map(|s| s.channels.iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let mut errors = HashMap::new();
    let mut updated = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| -> Result<SimCustomer, (String, String)> {
            let id = item
                .get("id")
                .and_then(Value::as_u64)
                .ok_or(("id".into(), "id is required".into()))?;
            let current = store
                .customers
                .get(&id)
                .cloned()
                .ok_or(("id".into(), format!("customer {id} does not exist")))?;
            if let Some(origin) = item.get("origin_channel_id")
                && origin.as_u64() != Some(current.origin_channel_id)
            {
                return Err((
                    "origin_channel_id".into(),
                    "origin_channel_id cannot be changed".into(),
                ));
            }
            let email =
                optional_text(item, "email", &current.email).map_err(|e| ("email".into(), e))?;
            if store.email_taken(&email, Some(id)) {
                return Err((
                    "email".into(),
                    format!("The email address {email} is already in use by another customer."),
                ));
            }
            Ok(SimCustomer {
                id,
                first_name: optional_text(item, "first_name", &current.first_name)
                    .map_err(|e| ("first_name".into(), e))?,
                last_name: optional_text(item, "last_name", &current.last_name)
                    .map_err(|e| ("last_name".into(), e))?,
                customer_group_id: group_id(item, store, current.customer_group_id)
                    .map_err(|e| ("customer_group_id".into(), e))?,
                channel_ids: channel_ids(item, &known, current.channel_ids.clone())
                    .map_err(|e| ("channel_ids".into(), e))?,
                origin_channel_id: current.origin_channel_id,
                email,
            })
        })();
        match parsed {
            Ok(c) => updated.push(c),
            Err((field, message)) => {
                errors.insert(format!("{i}.{field}"), message);
            }
        }
    }
    if !errors.is_empty() {
        return invalid("Unable to update customers: the input is invalid", errors);
    }
    let mut channel_changes = Vec::new();
    for (c, item) in updated.iter().zip(items.iter()) {
        if store.customers.get(&c.id).map(|old| &old.channel_ids) != Some(&c.channel_ids) {
            channel_changes.push(c.id);
        }
        store.customers.insert(c.id, c.clone());
        // Write-only: BigCommerce never returns it; the simulator only counts changes.
        if item
            .pointer("/authentication/new_password")
            .and_then(Value::as_str)
            .is_some_and(|p| p.len() >= 7)
        {
            *store.password_changes.entry(c.id).or_default() += 1;
        }
    }
    drop(st);
    for c in &updated {
        sim.customer_changed(&hash, c.id, "store/customer/updated");
        if channel_changes.contains(&c.id) {
            sim.customer_changed(&hash, c.id, "store/customer/channel/login/access/updated");
        }
    }
    axum::Json(json!({ "data": updated, "meta": {} })).into_response()
}

async fn delete_customers(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Without the `id:in` filter BigCommerce answers 204 and deletes nothing.
    let ids = match parse_ids(list_values(&q, "id:in")) {
        Ok(v) => v.unwrap_or_default(),
        Err(r) => return r,
    };
    let mut deleted = Vec::new();
    {
        let mut st = sim.0.state.lock();
        if let Some(store) = st.stores.get_mut(&hash) {
            for id in ids {
                if store.customers.remove(&id).is_some() {
                    deleted.push(id);
                }
                store.attribute_values.retain(|(c, _), _| *c != id);
            }
        }
    }
    for id in deleted {
        sim.customer_changed(&hash, id, "store/customer/deleted");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_groups(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sim.0.state.lock();
    let groups: Vec<Value> = st
        .stores
        .get(&hash)
        .map(|s| s.groups.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|g| q.get("name").is_none_or(|n| n == &g.name))
        .map(group_json)
        .collect();
    // v2 collections answer 204 with no body when nothing matches.
    if groups.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    axum::Json(groups).into_response()
}

fn group_json(g: &SimCustomerGroup) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "is_default": false,
        "category_access": { "type": "all" },
        "discount_rules": [],
    })
}

async fn create_group(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return v2_error(StatusCode::BAD_REQUEST, "The field 'name' is invalid.");
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return v2_error(StatusCode::NOT_FOUND, "Store not found");
    };
    if store.groups.iter().any(|g| g.name == name) {
        return v2_error(
            StatusCode::CONFLICT,
            &format!("The customer group '{name}' already exists."),
        );
    }
    let group = SimCustomerGroup {
        id: store.next_id(),
        name: name.to_owned(),
    };
    store.groups.push(group.clone());
    (StatusCode::CREATED, axum::Json(group_json(&group))).into_response()
}

/// (attribute id, value) pairs given inline on a created customer.
type InlineAttributes = Vec<(u64, String)>;

/// `attributes` inline on a created customer: `[{"attribute_id", "attribute_value"}]`, each id
/// defined on the store and each value a string (an unknown id fails the whole batch).
fn inline_attributes(item: &Value, store: &StoreData) -> Result<InlineAttributes, String> {
    let Some(list) = item.get("attributes") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("attributes must be an array")?;
    list.iter()
        .map(|a| {
            let id = a
                .get("attribute_id")
                .and_then(Value::as_u64)
                .ok_or("attribute_id is required and must be an integer")?;
            if !store.attributes.iter().any(|d| d.id == id) {
                return Err(format!("attribute {id} does not exist"));
            }
            let value = a
                .get("attribute_value")
                .and_then(Value::as_str)
                .ok_or("attribute_value must be a string")?;
            Ok((id, value.to_owned()))
        })
        .collect()
}

fn page_and_limit(q: &HashMap<String, String>) -> (usize, usize) {
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let limit = q
        .get("limit")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 250);
    (page, limit)
}

/// `GET /v3/customers/attributes`, filtered by `name`.
async fn list_attributes(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sim.0.state.lock();
    let Some(store) = st.stores.get(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let data: Vec<&SimAttribute> = store
        .attributes
        .iter()
        .filter(|a| q.get("name").is_none_or(|n| n == &a.name))
        .collect();
    let n = data.len();
    axum::Json(json!({ "data": data, "meta": { "pagination": pagination(n, n, 250, 1) } }))
        .into_response()
}

const ATTRIBUTE_TYPES: [&str; 3] = ["string", "number", "date"];

/// `POST /v3/customers/attributes`: an array of `{name, type}`; at most 50 per store (422 past
/// it, for the whole request), names unique.
async fn create_attributes(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Response {
    let items = match batch(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let mut errors = HashMap::new();
    let mut new: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = match required_text(item, "name") {
            Ok(n) => n,
            Err(e) => {
                errors.insert(format!("{i}.name"), e);
                continue;
            }
        };
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        if !ATTRIBUTE_TYPES.contains(&kind) {
            errors.insert(
                format!("{i}.type"),
                "type must be string, number or date".into(),
            );
        } else if store.attributes.iter().any(|a| a.name == name)
            || new.iter().any(|(n, _)| *n == name)
        {
            errors.insert(
                format!("{i}.name"),
                format!("The attribute name {name} is already in use."),
            );
        } else {
            new.push((name, kind.to_owned()));
        }
    }
    if store.attributes.len() + new.len() > MAX_ATTRIBUTES {
        errors.insert(
            "attributes".into(),
            format!("A store can have at most {MAX_ATTRIBUTES} customer attributes."),
        );
    }
    if !errors.is_empty() {
        return invalid("Unable to create attributes: the input is invalid", errors);
    }
    let created: Vec<SimAttribute> = new
        .into_iter()
        .map(|(name, kind)| {
            let a = SimAttribute {
                id: store.next_id(),
                name,
                kind,
            };
            store.attributes.push(a.clone());
            a
        })
        .collect();
    axum::Json(json!({ "data": created, "meta": {} })).into_response()
}

/// `GET /v3/customers/attribute-values`, filtered by `attribute_id:in` and `customer_id:in`,
/// paginated (`page`, `limit` up to 250).
async fn list_attribute_values(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let attrs = match parse_ids(list_values(&q, "attribute_id:in")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let customers = match parse_ids(list_values(&q, "customer_id:in")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (page, limit) = page_and_limit(&q);
    let st = sim.0.state.lock();
    let Some(store) = st.stores.get(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let matching: Vec<_> = store
        .attribute_values
        .values()
        .filter(|v| attrs.as_ref().is_none_or(|a| a.contains(&v.attribute_id)))
        .filter(|v| {
            customers
                .as_ref()
                .is_none_or(|c| c.contains(&v.customer_id))
        })
        .collect();
    let total = matching.len();
    let data: Vec<_> = matching
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let n = data.len();
    axum::Json(json!({ "data": data, "meta": { "pagination": pagination(total, n, limit, page) } }))
        .into_response()
}

/// `PUT /v3/customers/attribute-values`: upsert of `{customer_id, attribute_id, value}`, at most
/// 10 per call (413 above); an unknown attribute or customer fails the whole batch (422).
async fn upsert_attribute_values(
    State(sim): State<SimHandle>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Response {
    let items = match batch(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return v3_error(StatusCode::NOT_FOUND, "Store not found", json!({}));
    };
    let mut errors = HashMap::new();
    let mut valid = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| -> Result<(u64, u64, String), (String, String)> {
            let customer = item
                .get("customer_id")
                .and_then(Value::as_u64)
                .ok_or(("customer_id".into(), "customer_id is required".into()))?;
            if !store.customers.contains_key(&customer) {
                return Err((
                    "customer_id".into(),
                    format!("customer {customer} does not exist"),
                ));
            }
            let attr = item
                .get("attribute_id")
                .and_then(Value::as_u64)
                .ok_or(("attribute_id".into(), "attribute_id is required".into()))?;
            if !store.attributes.iter().any(|a| a.id == attr) {
                return Err((
                    "attribute_id".into(),
                    format!("attribute {attr} does not exist"),
                ));
            }
            let value = item
                .get("value")
                .and_then(Value::as_str)
                .ok_or(("value".into(), "value must be a string".into()))?;
            Ok((customer, attr, value.to_owned()))
        })();
        match parsed {
            Ok(v) => valid.push(v),
            Err((field, message)) => {
                errors.insert(format!("{i}.{field}"), message);
            }
        }
    }
    if !errors.is_empty() {
        return invalid(
            "Unable to upsert attribute values: the input is invalid",
            errors,
        );
    }
    let data: Vec<_> = valid
        .into_iter()
        .filter_map(|(customer, attr, value)| {
            store.set_attribute_value(customer, attr, value);
            store.attribute_values.get(&(customer, attr)).cloned()
        })
        .collect();
    axum::Json(json!({ "data": data, "meta": {} })).into_response()
}

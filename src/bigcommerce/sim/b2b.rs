//! The simulated B2B Edition API under `/api/v3/io/...` (docs/bigcommerce.md): headers
//! `X-Auth-Token` + `X-Store-Hash`, `{code, data, meta}` envelopes, companies with a status and a
//! customer group, company users with `role` 0/1/2 or a custom `companyRoleId`.
//!
//! B2B Edition is an add-on: a store answers these routes only after [`SimHandle::enable_b2b`].
//! Enforced: the token belongs to the store; a user joins only an approved company; a custom role
//! must exist; a user is linked to the store customer with the same email (created when missing)
//! and takes the company's customer group; a user's company cannot be changed by `PUT`.
//!
//! Also: `GET /users?companyId=&offset=&limit=` lists users page by page (`meta.pagination`
//! `{totalCount, offset, limit}`; limit 10 by default, at most 250), `DELETE /users/{id}` removes
//! one, and [`SimHandle::fail_next_b2b`] injects failures (e.g. 429 with `Retry-After`).

// Helpers answer early with a whole `Response`, as in `api.rs`; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::SimHandle;
use super::b2b_state::{SimCompany, SimCompanyUser};
use super::state::SimCustomer;
use crate::secret::Secret;

pub(super) fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/api/v3/io/companies/{id}", get(company))
        .route(
            "/api/v3/io/users/customer/{customer_id}",
            get(user_by_customer),
        )
        .route("/api/v3/io/users", get(list_users).post(create_user))
        .route(
            "/api/v3/io/users/{id}",
            put(update_user).delete(delete_user),
        )
        .with_state(sim)
}

fn ok(data: Value) -> Response {
    Json(json!({"code": 200, "data": data, "meta": {"message": "SUCCESS"}})).into_response()
}

fn err(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "data": {"errMsg": msg}, "meta": {"message": msg}})),
    )
        .into_response()
}

/// The store whose B2B token this request carries, or the refusal.
fn authed(sim: &SimHandle, headers: &HeaderMap) -> Result<String, Response> {
    let hash = headers
        .get("x-store-hash")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return Err(err(StatusCode::UNAUTHORIZED, "unknown X-Store-Hash"));
    };
    store.b2b.calls += 1;
    match &store.b2b.token {
        None => return Err(err(StatusCode::FORBIDDEN, "B2B Edition is not installed")),
        Some(t) if Some(t.expose()) == token => {}
        Some(_) => return Err(err(StatusCode::UNAUTHORIZED, "invalid X-Auth-Token")),
    }
    if let Some((n, status, retry_after)) = store.b2b.fail_next {
        store.b2b.fail_next = (n > 1).then_some((n - 1, status, retry_after));
        let mut r = err(status, "injected failure");
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        return Err(r);
    }
    Ok(hash)
}

fn user_json(u: &SimCompanyUser) -> Value {
    json!({
        "id": u.id, "customerId": u.customer_id, "companyId": u.company_id,
        "role": u.role, "companyRoleId": u.company_role_id, "email": u.email,
    })
}

async fn company(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let st = sim.0.state.lock();
    let Some(c) = st
        .stores
        .get(&hash)
        .and_then(|s| s.b2b.companies.iter().find(|c| c.id == id))
    else {
        return err(StatusCode::NOT_FOUND, "company not found");
    };
    ok(json!({
        "companyId": c.id, "companyName": c.name, "companyStatus": c.status,
        "customerGroupId": c.customer_group_id,
    }))
}

async fn user_by_customer(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Path(customer_id): Path<u64>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let st = sim.0.state.lock();
    match st
        .stores
        .get(&hash)
        .and_then(|s| s.b2b.users.iter().find(|u| u.customer_id == customer_id))
    {
        Some(u) => ok(user_json(u)),
        None => err(StatusCode::NOT_FOUND, "user not found"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    company_id: Option<u64>,
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

async fn list_users(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(10).clamp(1, 250);
    let st = sim.0.state.lock();
    let mut users: Vec<&SimCompanyUser> = st
        .stores
        .get(&hash)
        .map(|s| {
            s.b2b
                .users
                .iter()
                .filter(|u| q.company_id.is_none_or(|c| u.company_id == c))
                .collect()
        })
        .unwrap_or_default();
    users.sort_by_key(|u| u.id);
    let total = users.len();
    let page: Vec<Value> = users
        .into_iter()
        .skip(usize::try_from(q.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(250))
        .map(user_json)
        .collect();
    Json(json!({
        "code": 200,
        "data": page,
        "meta": {"message": "SUCCESS", "pagination": {"totalCount": total, "offset": q.offset, "limit": limit}},
    }))
    .into_response()
}

async fn delete_user(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return err(StatusCode::NOT_FOUND, "store");
    };
    let before = store.b2b.users.len();
    store.b2b.users.retain(|u| u.id != id);
    if store.b2b.users.len() == before {
        return err(StatusCode::NOT_FOUND, "user not found");
    }
    ok(json!({}))
}

/// `role` 0..=2, or a `companyRoleId` the company defines; never both.
fn parse_role(body: &Value, company: &SimCompany) -> Result<(u8, Option<u64>), Response> {
    match (
        body.get("role").and_then(Value::as_u64),
        body.get("companyRoleId").and_then(Value::as_u64),
    ) {
        (Some(r), None) if r <= 2 => Ok((r as u8, None)),
        (Some(_), None) => Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "role must be 0, 1 or 2",
        )),
        (None, Some(id)) if company.custom_roles.contains(&id) => Ok((2, Some(id))),
        (None, Some(_)) => Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "companyRoleId not found",
        )),
        _ => Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give role or companyRoleId",
        )),
    }
}

async fn create_user(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return err(StatusCode::NOT_FOUND, "store");
    };
    let company_id = body.get("companyId").and_then(Value::as_u64).unwrap_or(0);
    let Some(company) = store
        .b2b
        .companies
        .iter()
        .find(|c| c.id == company_id)
        .cloned()
    else {
        return err(StatusCode::NOT_FOUND, "company not found");
    };
    if company.status != 1 {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "company is not approved");
    }
    let (role, company_role_id) = match parse_role(&body, &company) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let email = text("email");
    if email.is_empty() {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "email is required");
    }
    if store
        .b2b
        .users
        .iter()
        .any(|u| u.email.eq_ignore_ascii_case(&email))
    {
        return err(StatusCode::CONFLICT, "a user with this email exists");
    }
    // The company user is a store customer in the company's customer group.
    let existing = store
        .customers
        .values()
        .find(|c| c.email.eq_ignore_ascii_case(&email))
        .map(|c| c.id);
    let customer_id = match existing {
        Some(id) => id,
        None => store.insert_customer(SimCustomer {
            id: 0,
            email: email.clone(),
            first_name: text("firstName"),
            last_name: text("lastName"),
            customer_group_id: 0,
            channel_ids: None,
            origin_channel_id: 1,
        }),
    };
    if let Some(c) = store.customers.get_mut(&customer_id) {
        c.customer_group_id = company.customer_group_id;
    }
    store.b2b.next_user += 1;
    let id = store.b2b.next_user;
    store.b2b.users.push(SimCompanyUser {
        id,
        customer_id,
        company_id,
        role,
        company_role_id,
        email,
    });
    ok(json!({"userId": id, "customerId": customer_id}))
}

async fn update_user(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    let hash = match authed(&sim, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = sim.0.state.lock();
    let Some(store) = st.stores.get_mut(&hash) else {
        return err(StatusCode::NOT_FOUND, "store");
    };
    let Some(pos) = store.b2b.users.iter().position(|u| u.id == id) else {
        return err(StatusCode::NOT_FOUND, "user not found");
    };
    let company_id = store.b2b.users[pos].company_id;
    if body
        .get("companyId")
        .and_then(Value::as_u64)
        .is_some_and(|c| c != company_id)
    {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "companyId cannot be changed",
        );
    }
    let Some(company) = store
        .b2b
        .companies
        .iter()
        .find(|c| c.id == company_id)
        .cloned()
    else {
        return err(StatusCode::NOT_FOUND, "company not found");
    };
    let (role, company_role_id) = match parse_role(&body, &company) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let u = &mut store.b2b.users[pos];
    u.role = role;
    u.company_role_id = company_role_id;
    ok(json!({"userId": id}))
}

impl SimHandle {
    /// Installs B2B Edition on a store: its API token and companies.
    pub fn enable_b2b(&self, store_hash: &str, token: &str, companies: Vec<SimCompany>) {
        if let Some(s) = self.0.state.lock().stores.get_mut(store_hash) {
            s.b2b.token = Some(Secret::new(token));
            s.b2b.companies = companies;
        }
    }

    pub fn company_users(&self, store_hash: &str) -> Vec<SimCompanyUser> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.b2b.users.clone())
            .unwrap_or_default()
    }

    /// Seeds a company user (as if added in the B2B control panel).
    pub fn add_company_user(&self, store_hash: &str, user: SimCompanyUser) {
        if let Some(s) = self.0.state.lock().stores.get_mut(store_hash) {
            s.b2b.next_user = s.b2b.next_user.max(user.id);
            s.b2b.users.push(user);
        }
    }

    /// The next `n` authenticated B2B Edition requests to this store answer `status` (with
    /// `Retry-After: retry_after` seconds when given) and take no effect.
    pub fn fail_next_b2b(
        &self,
        store_hash: &str,
        n: u32,
        status: StatusCode,
        retry_after: Option<u64>,
    ) {
        if let Some(s) = self.0.state.lock().stores.get_mut(store_hash) {
            s.b2b.fail_next = (n > 0).then_some((n, status, retry_after));
        }
    }

    pub fn b2b_calls(&self, store_hash: &str) -> u64 {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.b2b.calls)
            .unwrap_or(0)
    }
}

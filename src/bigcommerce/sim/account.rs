//! The simulated GraphQL Account API: `POST /accounts/{uuid}/graphql` with an account-level
//! `X-Auth-Token`, the 70-per-hour limit per account (429 with `Retry-After`), the two reads and
//! four namespaced mutations of docs/control-panel.md, cursor pagination, and GraphQL `errors[]`
//! with HTTP 200 for bad input.
//!
//! Documents: the simulator serves the fixed documents storegate sends
//! ([`crate::bigcommerce::account_api::ops`], compared with whitespace collapsed) and the id form
//! of `addUserToStore` (refused, as BigCommerce refuses it for tokens made after its 2024 fix);
//! any other document is refused with `errors[]`, so a client change that the simulator does not
//! know fails loudly instead of passing against a lenient double.
//!
//! Permissions are readable per store and can be set only through
//! [`SimHandle::set_staff_permissions`] (an administrator in the control panel): no mutation
//! writes them.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::SimHandle;
use super::account_state::{
    AccountData, MAX_FIRST, NO_PERMISSION_REQUIRED, SimAccountCall, SimMembership, SimStaff,
    parse_user_node_id, user_node_id,
};
use crate::bigcommerce::account_api::ops;

/// The id form of `addUserToStore`, which the simulator knows only to refuse it.
const ADD_USER_TO_STORE_BY_ID: &str = "mutation AddUserToStore($userId: ID!, $storeId: String!) { user { addUserToStore(input: { user: { id: $userId }, storeId: $storeId }) { storeId } } }";

pub(super) fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/accounts/{uuid}/graphql", post(graphql))
        .with_state(sim)
}

fn normalized(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What one request did, for the call log.
struct Done {
    operation: &'static str,
    args: String,
    answer: Value,
    refused: bool,
}

fn refusal(operation: &'static str, args: String, path: &[&str], message: &str) -> Done {
    let mut data = Value::Null;
    // A failed mutation field is `null` under its namespace (the reads fail as a whole).
    if let [ns, field] = path {
        data = json!({ *ns: { *field: null } });
    }
    Done {
        operation,
        args,
        answer: json!({ "data": data, "errors": [{ "message": message, "path": path }] }),
        refused: true,
    }
}

async fn graphql(
    State(sim): State<SimHandle>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(account) = sim.0.config.accounts.iter().find(|a| a.uuid == uuid) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "errors": [{ "message": "Account not found" }] })),
        )
            .into_response();
    };
    let now = sim.0.clock.now();
    let authed = headers.get("x-auth-token").and_then(|v| v.to_str().ok())
        == Some(account.access_token.expose());
    let mut accounts = sim.0.accounts.lock();
    let Some(data) = accounts.get_mut(&uuid) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let log = |data: &mut AccountData, operation: &str, args: String, status: u16, refused| {
        data.calls.push(SimAccountCall {
            at: now,
            operation: operation.to_owned(),
            args,
            status,
            refused,
        });
    };
    if !authed {
        log(data, "unauthenticated", String::new(), 401, true);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "errors": [{ "message": "Invalid X-Auth-Token" }] })),
        )
            .into_response();
    }
    if let Err(retry_after) = data.admit(now) {
        log(data, "rate-limited", String::new(), 429, true);
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(
                json!({ "errors": [{ "message": "Too many requests: 70 per hour per account" }] }),
            ),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
        return resp;
    }
    let done = run(data, &uuid, &body);
    log(data, done.operation, done.args, 200, done.refused);
    axum::Json(done.answer).into_response()
}

fn run(data: &mut AccountData, uuid: &str, body: &[u8]) -> Done {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(query) = req.get("query").and_then(Value::as_str) else {
        return refusal("unknown", String::new(), &[], "Must provide a query string");
    };
    let empty = Map::new();
    let vars = match req.get("variables") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return refusal(
                "unknown",
                String::new(),
                &[],
                "`variables` must be an object",
            );
        }
    };
    let q = normalized(query);
    let result = if q == normalized(ops::ACCOUNT_USERS) {
        account_users(data, vars)
    } else if q == normalized(ops::STORE_USERS) {
        store_users(data, vars)
    } else if q == normalized(ops::ADD_USER_TO_ACCOUNT) {
        add_user_to_account(data, uuid, vars)
    } else if q == normalized(ops::REMOVE_USER_FROM_ACCOUNT) {
        remove_user_from_account(data, uuid, vars)
    } else if q == normalized(ops::ADD_USER_TO_STORE) {
        add_user_to_store(data, vars)
    } else if q == normalized(ops::REMOVE_USER_FROM_STORE) {
        remove_user_from_store(data, vars)
    } else if q == normalized(ADD_USER_TO_STORE_BY_ID) {
        let args = str_var(vars, "userId").unwrap_or_default();
        Err(refusal(
            "addUserToStore",
            args,
            &["user", "addUserToStore"],
            "Identify the user by email: the id form is only kept for API accounts created before the 2024 security fix",
        ))
    } else {
        Err(refusal(
            "unknown",
            String::new(),
            &[],
            "Cannot parse or validate the document: not an operation of this API",
        ))
    };
    result.unwrap_or_else(|d| d)
}

fn str_var(vars: &Map<String, Value>, name: &str) -> Option<String> {
    vars.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// A required `String!`/`ID!` variable, or the GraphQL refusal naming it.
fn required(
    vars: &Map<String, Value>,
    name: &str,
    op: &'static str,
    path: &[&str],
) -> Result<String, Done> {
    match vars.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(refusal(
            op,
            String::new(),
            path,
            &format!(
                "Variable \"${name}\" of required type was not provided or is not a non-empty string"
            ),
        )),
    }
}

/// `first` (1..=MAX_FIRST) and `after` of a connection.
fn window(
    vars: &Map<String, Value>,
    first: &str,
    after: &str,
    op: &'static str,
) -> Result<(usize, Option<String>), Done> {
    let n = match vars.get(first).and_then(Value::as_i64) {
        Some(n) if (1..=MAX_FIRST).contains(&n) => usize::try_from(n).unwrap_or(1),
        _ => {
            return Err(refusal(
                op,
                String::new(),
                &[],
                &format!("`{first}` must be an integer from 1 to {MAX_FIRST}"),
            ));
        }
    };
    let after = match vars.get(after) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(refusal(
                op,
                String::new(),
                &[],
                &format!("`{after}` must be a string"),
            ));
        }
    };
    Ok((n, after))
}

/// A connection of `(cursor, node)` pairs: `first` after `after`.
fn connection(
    items: Vec<(String, Value)>,
    first: usize,
    after: Option<&str>,
) -> Result<Value, String> {
    let total = items.len();
    let start = match after {
        None => 0,
        Some(c) => {
            items
                .iter()
                .position(|(k, _)| k == c)
                .ok_or_else(|| format!("Invalid cursor \"{c}\""))?
                + 1
        }
    };
    let page: Vec<&(String, Value)> = items.iter().skip(start).take(first).collect();
    let has_next = start + page.len() < total;
    Ok(json!({
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": start > 0,
            "startCursor": page.first().map(|(c, _)| c.clone()),
            "endCursor": page.last().map(|(c, _)| c.clone()),
        },
        "collectionInfo": { "totalItems": total },
        "edges": page.iter().map(|(c, n)| json!({ "cursor": c, "node": n })).collect::<Vec<_>>(),
    }))
}

fn account_users(data: &AccountData, vars: &Map<String, Value>) -> Result<Done, Done> {
    const OP: &str = "account.users";
    let (first, after) = window(vars, "first", "after", OP)?;
    let items = data
        .users
        .values()
        .map(|u| {
            (
                format!("u{}", u.id),
                json!({ "id": user_node_id(u.id), "email": u.email, "firstName": u.first_name, "lastName": u.last_name }),
            )
        })
        .collect();
    let args = format!("first {first} after {}", after.as_deref().unwrap_or("-"));
    let users = connection(items, first, after.as_deref())
        .map_err(|m| refusal(OP, args.clone(), &[], &m))?;
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "account": { "users": users } } }),
        refused: false,
    })
}

fn store_users(data: &AccountData, vars: &Map<String, Value>) -> Result<Done, Done> {
    const OP: &str = "account.stores.users";
    let (stores_first, stores_after) = window(vars, "stores", "storesAfter", OP)?;
    let (first, after) = window(vars, "first", "after", OP)?;
    let args = format!(
        "stores {stores_first} after {} users {first} after {}",
        stores_after.as_deref().unwrap_or("-"),
        after.as_deref().unwrap_or("-")
    );
    let mut stores = Vec::new();
    for (hash, members) in &data.members {
        let items = members
            .iter()
            .filter_map(|(id, m)| {
                let u = data.users.get(id)?;
                Some((
                    format!("m{id}"),
                    json!({ "id": user_node_id(*id), "email": u.email, "firstName": u.first_name, "lastName": u.last_name, "permissions": m.permissions, "status": "ACTIVE" }),
                ))
            })
            .collect::<Vec<_>>();
        stores.push((hash.clone(), items));
    }
    // The stores' page first, then each store's page of users (the same `first`/`after`).
    let store_items: Vec<(String, Value)> = stores
        .iter()
        .map(|(h, _)| (format!("s{h}"), Value::String(h.clone())))
        .collect();
    let page = connection(store_items, stores_first, stores_after.as_deref())
        .map_err(|m| refusal(OP, args.clone(), &[], &m))?;
    let mut edges = Vec::new();
    for edge in page["edges"].as_array().cloned().unwrap_or_default() {
        let hash = edge["node"].as_str().unwrap_or_default().to_owned();
        let members = stores
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        let users = connection(members, first, after.as_deref())
            .map_err(|m| refusal(OP, args.clone(), &[], &m))?;
        edges.push(json!({
            "cursor": edge["cursor"],
            "node": { "id": format!("bc/store/{hash}"), "name": hash, "storeHash": hash, "users": users },
        }));
    }
    let stores = json!({ "pageInfo": page["pageInfo"], "collectionInfo": page["collectionInfo"], "edges": edges });
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "account": { "stores": stores } } }),
        refused: false,
    })
}

fn add_user_to_account(
    data: &mut AccountData,
    uuid: &str,
    vars: &Map<String, Value>,
) -> Result<Done, Done> {
    const OP: &str = "addUserToAccount";
    let path = ["account", OP];
    let email = required(vars, "email", OP, &path)?;
    let args = email.clone();
    if !valid_email(&email) {
        return Err(refusal(OP, args, &path, "Invalid email address"));
    }
    if data.user_by_email(&email).is_some() {
        return Err(refusal(
            OP,
            args,
            &path,
            "The user is already in the account",
        ));
    }
    let local = email.split('@').next().unwrap_or_default().to_owned();
    data.insert_user(&email, &local, "");
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "account": { OP: { "account": { "id": format!("bc/account/account/{uuid}") } } } } }),
        refused: false,
    })
}

fn remove_user_from_account(
    data: &mut AccountData,
    uuid: &str,
    vars: &Map<String, Value>,
) -> Result<Done, Done> {
    const OP: &str = "removeUserFromAccount";
    let path = ["account", OP];
    let email = required(vars, "email", OP, &path)?;
    let args = email.clone();
    let Some(id) = data.user_by_email(&email).map(|u| u.id) else {
        return Err(refusal(
            OP,
            args,
            &path,
            "No user with this email in the account",
        ));
    };
    if data
        .members
        .values()
        .any(|m| m.get(&id).is_some_and(|x| x.owner))
    {
        return Err(refusal(
            OP,
            args,
            &path,
            "The store owner cannot be removed",
        ));
    }
    data.users.remove(&id);
    for m in data.members.values_mut() {
        m.remove(&id);
    }
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "account": { OP: { "accountId": format!("bc/account/account/{uuid}"), "userId": user_node_id(id) } } } }),
        refused: false,
    })
}

fn add_user_to_store(data: &mut AccountData, vars: &Map<String, Value>) -> Result<Done, Done> {
    const OP: &str = "addUserToStore";
    let path = ["user", OP];
    let email = required(vars, "email", OP, &path)?;
    let store = required(vars, "storeId", OP, &path)?;
    let args = format!("{email} {store}");
    let Some(id) = data.user_by_email(&email).map(|u| u.id) else {
        return Err(refusal(
            OP,
            args,
            &path,
            "No user with this email in the account: add them to the account first",
        ));
    };
    let Some(members) = data.members.get_mut(&store) else {
        return Err(refusal(OP, args, &path, "Store not found in this account"));
    };
    if members.contains_key(&id) {
        return Err(refusal(
            OP,
            args,
            &path,
            "The user already has access to this store",
        ));
    }
    members.insert(
        id,
        SimMembership {
            permissions: BTreeSet::from([NO_PERMISSION_REQUIRED.to_owned()]),
            owner: false,
        },
    );
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "user": { OP: { "storeId": store } } } }),
        refused: false,
    })
}

fn remove_user_from_store(data: &mut AccountData, vars: &Map<String, Value>) -> Result<Done, Done> {
    const OP: &str = "removeUserFromStore";
    let path = ["user", OP];
    let user = required(vars, "userId", OP, &path)?;
    let store = required(vars, "storeId", OP, &path)?;
    let args = format!("{user} {store}");
    let Some(id) = parse_user_node_id(&user) else {
        return Err(refusal(
            OP,
            args,
            &path,
            "`userId` is not a user id (bc/account/user/N)",
        ));
    };
    let Some(members) = data.members.get_mut(&store) else {
        return Err(refusal(OP, args, &path, "Store not found in this account"));
    };
    match members.get(&id) {
        None => {
            return Err(refusal(
                OP,
                args,
                &path,
                "The user has no access to this store",
            ));
        }
        Some(m) if m.owner => {
            return Err(refusal(
                OP,
                args,
                &path,
                "The store owner cannot be removed",
            ));
        }
        Some(_) => {}
    }
    members.remove(&id);
    let email = data.users.get(&id).map(|u| u.email.clone());
    Ok(Done {
        operation: OP,
        args,
        answer: json!({ "data": { "user": { OP: { "storeId": store, "user": { "id": user, "email": email } } } } }),
        refused: false,
    })
}

fn valid_email(e: &str) -> bool {
    let mut parts = e.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.'))
        && !e.chars().any(char::is_whitespace)
}

/// Inspection and control panel actions on the simulated accounts.
impl SimHandle {
    /// Every request to the account's endpoint, in order (refused and rate-limited ones too).
    pub fn account_calls(&self, uuid: &str) -> Vec<SimAccountCall> {
        self.0
            .accounts
            .lock()
            .get(uuid)
            .map(|a| a.calls.clone())
            .unwrap_or_default()
    }

    /// [`SimAccountCall::describe`] of each mutation (reads left out), in order.
    pub fn account_mutations(&self, uuid: &str) -> Vec<String> {
        self.account_calls(uuid)
            .iter()
            .filter(|c| !c.operation.starts_with("account."))
            .map(SimAccountCall::describe)
            .collect()
    }

    /// The account's users.
    pub fn staff(&self, uuid: &str) -> Vec<SimStaff> {
        self.0
            .accounts
            .lock()
            .get(uuid)
            .map(|a| a.users.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Email -> permissions of every user of a store.
    pub fn store_staff(&self, uuid: &str, store_hash: &str) -> BTreeMap<String, BTreeSet<String>> {
        let accounts = self.0.accounts.lock();
        let Some(a) = accounts.get(uuid) else {
            return BTreeMap::new();
        };
        a.members
            .get(store_hash)
            .map(|m| {
                m.iter()
                    .filter_map(|(id, mem)| {
                        Some((a.users.get(id)?.email.clone(), mem.permissions.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seeds a user (as if added in the control panel) with access to `stores`; `owner` makes
    /// them the stores' owner (never removable). Returns the user's node id.
    pub fn seed_staff(
        &self,
        uuid: &str,
        email: &str,
        stores: &[&str],
        owner: bool,
    ) -> Option<String> {
        let mut accounts = self.0.accounts.lock();
        let a = accounts.get_mut(uuid)?;
        let id = match a.user_by_email(email) {
            Some(u) => u.id,
            None => a.insert_user(email, "Seeded", "User"),
        };
        for s in stores {
            a.members.get_mut(*s)?.insert(
                id,
                SimMembership {
                    permissions: BTreeSet::from([NO_PERMISSION_REQUIRED.to_owned()]),
                    owner,
                },
            );
        }
        Some(user_node_id(id))
    }

    /// An administrator sets a user's permissions on a store in the control panel (the only way:
    /// the API has no mutation for it). `No_Permission_Required` is always kept. False when the
    /// user has no access to the store.
    pub fn set_staff_permissions(
        &self,
        uuid: &str,
        store_hash: &str,
        email: &str,
        permissions: &[&str],
    ) -> bool {
        let mut accounts = self.0.accounts.lock();
        let Some(a) = accounts.get_mut(uuid) else {
            return false;
        };
        let Some(id) = a.user_by_email(email).map(|u| u.id) else {
            return false;
        };
        let Some(m) = a.members.get_mut(store_hash).and_then(|m| m.get_mut(&id)) else {
            return false;
        };
        m.permissions = permissions.iter().map(|p| (*p).to_owned()).collect();
        m.permissions.insert(NO_PERMISSION_REQUIRED.to_owned());
        true
    }

    /// The next `n` requests to the account answer 429 (`Retry-After: 60`) without effect.
    pub fn throttle_account_next(&self, uuid: &str, n: u32) {
        if let Some(a) = self.0.accounts.lock().get_mut(uuid) {
            a.throttle_next = n;
        }
    }

    /// The largest number of requests the account admitted within any hour so far.
    pub fn account_peak_hourly_requests(&self, uuid: &str) -> usize {
        let accounts = self.0.accounts.lock();
        let Some(a) = accounts.get(uuid) else {
            return 0;
        };
        let admitted: Vec<i64> = a
            .calls
            .iter()
            .filter(|c| c.status != 429 && c.status != 401)
            .map(|c| c.at)
            .collect();
        let mut peak = 0;
        for (i, t) in admitted.iter().enumerate() {
            let n = admitted[i..].iter().take_while(|u| **u < t + 3600).count();
            peak = peak.max(n);
        }
        peak
    }
}
